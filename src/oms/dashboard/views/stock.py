"""The stock page: positions, low-stock alerts, inbound receipts, and the nodes' use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.dashboard.views.common import DAY_S, MAX_PAGE, Page, Period, like_pattern, utc_day
from oms.store.records import Availability

#: A page row: the store's availability record, so the page applies the very rule
#: (on hand - safety - reserved - held, plus what inbound receipts still free) that
#: PlaceOrder locks on.
Position = Availability


def _position_figures(now: float) -> tuple[Any, list[Any]]:
    """``stock`` joined with its reserved, held, inbound and inbound-reserved units.

    Each side is aggregated once per (node, SKU) and hash-joined: one pass over
    the live reservations and the open receipts, whatever the number of positions
    (correlated sums per position cost 0.7 s at the demo network's size).
    """
    s, r, ir, rr = t.stock, t.reservations, t.inbound_receipts, t.inbound_reservations
    held = sa.case((r.c.order_id.is_(None), r.c.qty), else_=0)
    reserved = sa.case((r.c.order_id.is_not(None), r.c.qty), else_=0)
    res = (
        sa.select(
            r.c.node_id, r.c.sku, func.sum(reserved).label("qty"), func.sum(held).label("held")
        )
        .where(sa.or_(r.c.expires_at.is_(None), r.c.expires_at > now))
        .group_by(r.c.node_id, r.c.sku)
        .subquery("res")
    )
    inbound = (
        sa.select(ir.c.node_id, ir.c.sku, func.sum(ir.c.qty).label("qty"))
        .where(ir.c.state == "OPEN")
        .group_by(ir.c.node_id, ir.c.sku)
        .subquery("inb")
    )
    waited = (
        sa.select(ir.c.node_id, ir.c.sku, func.sum(rr.c.qty).label("qty"))
        .join(ir, ir.c.receipt_id == rr.c.receipt_id)
        .where(ir.c.state == "OPEN")
        .group_by(ir.c.node_id, ir.c.sku)
        .subquery("waited")
    )

    def at(sub: Any) -> Any:
        return sa.and_(sub.c.node_id == s.c.node_id, sub.c.sku == s.c.sku)

    joined = s.outerjoin(res, at(res)).outerjoin(inbound, at(inbound)).outerjoin(waited, at(waited))
    return joined, [
        func.coalesce(res.c.qty, 0).label("reserved"),
        func.coalesce(res.c.held, 0).label("held"),
        func.coalesce(inbound.c.qty, 0).label("inbound"),
        func.coalesce(waited.c.qty, 0).label("inbound_reserved"),
    ]


def _projected_expr(sub: Any) -> Any:
    free = sub.c.on_hand - sub.c.safety_stock - sub.c.reserved - sub.c.held
    waiting = sub.c.inbound - sub.c.inbound_reserved
    return sa.case((free > 0, free), else_=0) + sa.case((waiting > 0, waiting), else_=0)


def _page_figures(now: float, page: Any) -> Any:
    """``stock`` of the positions in ``page`` (node_id, sku) with their reserved, held,
    inbound and inbound-reserved units: correlated sums, each an index lookup per position,
    so a page costs the same whatever the number of positions and reservations."""
    s, r, ir, rr = t.stock, t.reservations, t.inbound_receipts, t.inbound_reservations
    live = sa.or_(r.c.expires_at.is_(None), r.c.expires_at > now)
    at_r = sa.and_(r.c.node_id == s.c.node_id, r.c.sku == s.c.sku, live)
    at_ir = sa.and_(ir.c.node_id == s.c.node_id, ir.c.sku == s.c.sku, ir.c.state == "OPEN")

    def total(select: Any) -> Any:
        return func.coalesce(select.scalar_subquery(), 0)

    return (
        sa.select(
            s.c.node_id,
            s.c.sku,
            s.c.on_hand,
            s.c.safety_stock,
            s.c.low_stock_threshold,
            total(sa.select(func.sum(r.c.qty)).where(at_r, r.c.order_id.is_not(None))).label(
                "reserved"
            ),
            total(sa.select(func.sum(r.c.qty)).where(at_r, r.c.order_id.is_(None))).label("held"),
            total(sa.select(func.sum(ir.c.qty)).where(at_ir)).label("inbound"),
            total(
                sa.select(func.sum(rr.c.qty))
                .join(ir, ir.c.receipt_id == rr.c.receipt_id)
                .where(at_ir)
            ).label("inbound_reserved"),
        )
        .join(page, sa.and_(page.c.node_id == s.c.node_id, page.c.sku == s.c.sku))
        .order_by(s.c.node_id, s.c.sku)
    )


def positions(
    conn: Connection,
    now: float,
    *,
    search: str = "",
    low_only: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> Page[Position]:
    """Stock positions by (node, SKU), optionally those whose node or SKU contains ``search``
    and only the low ones; with the figures ``GetAvailability`` reports.

    All positions (or a search): the page's keys first (the stock table in key order),
    then the figures of those positions only. Low ones: every position with a threshold
    needs its figures to be judged, so they are aggregated once for all (one pass, the
    count beside the rows).
    """
    s = t.stock
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    matching: Any = sa.true()
    if search:
        pattern = like_pattern(search)
        matching = sa.or_(
            s.c.node_id.like(pattern, escape="\\"), s.c.sku.like(pattern, escape="\\")
        )
    if low_only:
        total, rows = _low_positions(conn, now, matching, offset, limit)
    else:
        total = int(
            conn.execute(sa.select(func.count()).select_from(s).where(matching)).scalar_one()
        )
        page = (
            sa.select(s.c.node_id, s.c.sku)
            .where(matching)
            .order_by(s.c.node_id, s.c.sku)
            .offset(offset)
            .limit(limit)
            .subquery("page")
        )
        rows = list(conn.execute(_page_figures(now, page)))
    return Page([_position(r) for r in rows], total, offset, limit)


def _low_positions(
    conn: Connection, now: float, matching: Any, offset: int, limit: int
) -> tuple[int, list[Any]]:
    s = t.stock
    joined, figures = _position_figures(now)
    inner = (
        sa.select(
            s.c.node_id, s.c.sku, s.c.on_hand, s.c.safety_stock, s.c.low_stock_threshold, *figures
        )
        .select_from(joined)
        .where(matching, s.c.low_stock_threshold > 0)
        .subquery()
    )
    query = sa.select(inner, func.count().over().label("total")).where(
        _projected_expr(inner) <= inner.c.low_stock_threshold
    )
    order = (_projected_expr(inner) - inner.c.low_stock_threshold, inner.c.node_id, inner.c.sku)
    rows = list(conn.execute(query.order_by(*order).offset(offset).limit(limit)))
    if rows:
        return int(rows[0].total), rows
    if offset == 0:
        return 0, []
    # Past the last page: the count alone.
    counted = conn.execute(sa.select(func.count()).select_from(query.subquery())).scalar_one()
    return int(counted), []


def _position(r: Any) -> Position:
    return Position(
        node_id=r.node_id,
        sku=r.sku,
        on_hand=int(r.on_hand),
        safety_stock=int(r.safety_stock),
        reserved=int(r.reserved),
        held=int(r.held),
        inbound=int(r.inbound),
        inbound_reserved=int(r.inbound_reserved),
        low_stock_threshold=int(r.low_stock_threshold),
    )


def low_stock(conn: Connection, now: float, limit: int = 50) -> Page[Position]:
    """Low-stock alerts (projected at or below the threshold), most short first."""
    return positions(conn, now, low_only=True, limit=limit)


@dataclass(frozen=True)
class Receipt:
    receipt_id: str
    node_id: str
    sku: str
    qty: int
    expected_date: str
    waiting_units: int
    waiting_orders: tuple[str, ...]
    overdue: bool


def open_receipts(conn: Connection, now: float, limit: int = 100) -> Page[Receipt]:
    """Open inbound receipts by expected date, with the orders waiting for them."""
    r, rr = t.inbound_receipts, t.inbound_reservations
    limit = max(1, min(limit, MAX_PAGE))
    total = int(conn.execute(sa.select(func.count()).where(r.c.state == "OPEN")).scalar_one())
    rows = conn.execute(
        sa.select(r.c.receipt_id, r.c.node_id, r.c.sku, r.c.qty, r.c.expected_date)
        .where(r.c.state == "OPEN")
        .order_by(r.c.expected_date, r.c.receipt_id)
        .limit(limit)
    ).all()
    waiting: dict[str, list[tuple[str, int]]] = {}
    if rows:
        for receipt_id, order_id, qty in conn.execute(
            sa.select(rr.c.receipt_id, rr.c.order_id, func.sum(rr.c.qty))
            .where(rr.c.receipt_id.in_([row.receipt_id for row in rows]))
            .group_by(rr.c.receipt_id, rr.c.order_id)
            .order_by(rr.c.receipt_id, rr.c.order_id)
        ):
            waiting.setdefault(receipt_id, []).append((order_id, int(qty)))
    today = utc_day(now)
    return Page(
        [
            Receipt(
                row.receipt_id,
                row.node_id,
                row.sku,
                int(row.qty),
                row.expected_date,
                sum(q for _, q in waiting.get(row.receipt_id, [])),
                tuple(o for o, _ in waiting.get(row.receipt_id, [])),
                row.expected_date < today,
            )
            for row in rows
        ],
        total,
        0,
        limit,
    )


@dataclass(frozen=True)
class NodeUse:
    node_id: str
    kind: str
    lat: float
    lon: float
    capacity: int | None
    used_today: int
    shipped: int

    @property
    def capacity_share(self) -> float | None:
        return self.used_today / self.capacity if self.capacity else None


def nodes(conn: Connection, period: Period, now: float) -> list[NodeUse]:
    """Every node with today's capacity use and the units it shipped in the period.

    SHIPMENTS: "shipped" is the ledger's units out for an order: for whole days
    from the daily rollup ``dash_node_shipped_days`` (migration 0011), for today
    from the ledger rows by the partial index ``ix_stock_ledger_shipped``;
    per-shipment ledger rows keep both right.
    """
    n, u, ledger, days = t.nodes, t.node_day_usage, t.stock_ledger, t.node_shipped_days
    used = dict(
        conn.execute(sa.select(u.c.node_id, u.c.units).where(u.c.day == utc_day(now))).all()
    )
    if period.bucket_s == DAY_S:
        shipped_query = (
            sa.select(days.c.node_id, func.sum(days.c.units))
            .where(days.c.day >= int(period.start // DAY_S))
            .group_by(days.c.node_id)
        )
    else:
        shipped_query = (
            sa.select(ledger.c.node_id, -func.sum(ledger.c.delta))
            .where(
                ledger.c.at >= period.start,
                ledger.c.order_id.is_not(None),
                ledger.c.delta < 0,
            )
            .group_by(ledger.c.node_id)
        )
    shipped = dict(conn.execute(shipped_query).all())
    return [
        NodeUse(
            row.node_id,
            row.kind,
            float(row.lat),
            float(row.lon),
            None if row.daily_capacity_units is None else int(row.daily_capacity_units),
            int(used.get(row.node_id, 0)),
            int(shipped.get(row.node_id, 0) or 0),
        )
        for row in conn.execute(
            sa.select(n.c.node_id, n.c.kind, n.c.lat, n.c.lon, n.c.daily_capacity_units).order_by(
                n.c.node_id
            )
        )
    ]
