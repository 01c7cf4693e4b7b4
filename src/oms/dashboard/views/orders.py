"""The orders search: by id, SKU, node, state and needing attention, newest first."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.dashboard.views.common import (
    MAX_PAGE,
    MILLICENTS_PER_UNIT,
    OPEN_STATES,
    labels_of,
    late_shipments,
    like_pattern,
    needs_attention,
)


@dataclass(frozen=True)
class OrderQuery:
    """Filters of the orders search; empty means any."""

    order_id: str = ""
    sku: str = ""
    node_id: str = ""
    state: str = ""
    attention: bool = False
    #: Only orders with a late shipment (at risk: not left its node, past planned dispatch).
    late: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.order_id or self.sku or self.node_id or self.state or self.attention or self.late
        )


@dataclass(frozen=True)
class OrderSummary:
    order_id: str
    created_at: float
    state: str
    promised_date: str
    parcels: int
    cost: float
    labels: tuple[str, ...]
    skus: tuple[str, ...]
    units: int
    needs_attention: bool


@dataclass(frozen=True)
class OrderPage:
    orders: list[OrderSummary]
    #: Keyset cursor (created_at, order_id) of the next page, newest first; None at the end.
    after: tuple[float, str] | None


def search_orders(
    conn: Connection,
    query: OrderQuery,
    *,
    after: tuple[float, str] | None = None,
    limit: int = 50,
    now: float | None = None,
) -> OrderPage:
    """Orders matching ``query``, newest first, a page at a time (keyset on creation time).

    SKU matches the order's lines (JSON text, as written with ``separators=(",", ":")``).
    Node matches the order's shipments (any state: also a node that refused its part,
    re-sourced elsewhere), a semi-join on the node's rows of ``ix_shipments_node_state``
    rather than a LIKE over every order's plan (which read every order for a node with few).
    ``late`` keeps the orders among the late shipments' (as of ``now``, default the
    wall clock): a semi-join on that small set (:func:`late_shipments`, an index
    range), not a probe of every order.
    """
    o = t.orders
    limit = max(1, min(limit, MAX_PAGE))
    # An unknown node or SKU matches nothing: answer at once instead of scanning every plan.
    if query.node_id and not _exists(conn, t.nodes.c.node_id, query.node_id):
        return OrderPage([], None)
    if query.sku and not _exists(conn, t.skus.c.sku, query.sku):
        return OrderPage([], None)
    needs = needs_attention()
    select = sa.select(
        o.c.order_id,
        o.c.created_at,
        o.c.state,
        o.c.promised_date,
        o.c.parcel_count,
        o.c.total_cost,
        o.c.option_labels,
        o.c.lines_json,
        needs.label("needs_attention"),
    )
    if query.order_id:  # the exact id (a primary-key lookup; a substring would scan)
        select = select.where(o.c.order_id == query.order_id)
    if query.state:
        select = select.where(o.c.state == query.state)
    if query.sku:
        select = select.where(
            o.c.lines_json.like(like_pattern('"sku":' + json.dumps(query.sku)), escape="\\")
        )
    if query.node_id:  # the node's shipments by ix_shipments_node_state, not every plan
        s = t.shipments
        select = select.where(
            o.c.order_id.in_(sa.select(s.c.order_id).where(s.c.node_id == query.node_id))
        )
    if query.attention:
        select = select.where(o.c.state.in_(OPEN_STATES), needs)
    if query.late:
        late = late_shipments(time.time() if now is None else now)
        select = select.where(o.c.order_id.in_(sa.select(t.shipments.c.order_id).where(late)))
    if after is not None:
        select = select.where(
            sa.or_(
                o.c.created_at < after[0],
                sa.and_(o.c.created_at == after[0], o.c.order_id < after[1]),
            )
        )
    rows = conn.execute(
        select.order_by(o.c.created_at.desc(), o.c.order_id.desc()).limit(limit + 1)
    ).all()
    found = []
    for row in rows[:limit]:
        lines = json.loads(row.lines_json)
        found.append(
            OrderSummary(
                row.order_id,
                float(row.created_at),
                row.state,
                row.promised_date,
                int(row.parcel_count or 0),
                (row.total_cost or 0) / MILLICENTS_PER_UNIT,
                labels_of(row.option_labels),
                tuple(dict.fromkeys(str(line["sku"]) for line in lines)),
                sum(int(line["qty"]) for line in lines),
                bool(row.needs_attention),
            )
        )
    more = len(rows) > limit
    last = found[-1] if found else None
    return OrderPage(found, (last.created_at, last.order_id) if more and last else None)


def _exists(conn: Connection, column: Any, value: str) -> bool:
    return conn.execute(sa.select(column).where(column == value)).first() is not None
