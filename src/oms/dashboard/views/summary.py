"""The overview page's figures: orders, cost, parcels, options chosen, conversion, promises."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.dashboard.views.buckets import period_buckets, quotes_and_orders
from oms.dashboard.views.common import (
    DAY_S,
    GONE_SHIPMENT_STATES,
    LEFT_SHIPMENT_STATES,
    MAX_PAGE,
    MILLICENTS_PER_UNIT,
    OPEN_SHIPMENT_STATES,
    OPEN_STATES,
    STATES,
    Period,
    date_number,
    dense_series,
    late_shipments,
    needs_attention,
    ratio,
    utc_day,
)
from oms.dashboard.views.orders import OrderQuery, OrderSummary, search_orders

#: An order with a late shipment: (order id, its earliest late planned dispatch day).
Late = tuple[str, str]


@dataclass(frozen=True)
class LateShipment:
    """A shipment not yet left its node past its planned dispatch day (``Shipment.late``)."""

    shipment_id: str
    order_id: str
    node_id: str
    state: str
    planned_dispatch: str
    #: Whole days past the planned dispatch day (1: it should have left yesterday).
    days_late: int


@dataclass(frozen=True)
class Overview:
    period: Period
    orders: int
    by_state: dict[str, int]
    state_series: dict[str, list[int]]
    #: Orders (not cancelled) whose cost and parcels are averaged.
    costed: int
    shipping: float
    handling: float
    storage_credit: float
    cost_series: dict[str, list[float | None]]
    parcels_per_order: float
    split_rate: float
    parcels_series: list[float | None]
    split_series: list[float | None]
    labels: dict[str, int]
    label_series: dict[str, list[int]]
    quotes: int
    conversion: float
    quote_series: list[int]
    order_series: list[int]
    delivered: int
    kept: int
    kept_series: list[int]
    delivered_series: list[int]
    #: Orders with a late shipment now.
    at_risk: int
    #: Late shipments now, the first of them (longest late first), and per bucket how many
    #: were late at its end (the last bucket's end is now: it equals ``late_shipments``).
    late_shipments: int
    late_rows: list[LateShipment]
    late_series: list[int]
    attention: int
    flagged_series: list[int]

    @property
    def cost_per_order(self) -> float:
        return self.shipping + self.handling - self.storage_credit

    @property
    def kept_rate(self) -> float | None:
        return self.kept / self.delivered if self.delivered else None


def _means(totals: list[int], counts: list[int]) -> list[float | None]:
    return [round(ratio(x, c), 3) for x, c in zip(totals, counts, strict=True)]


def overview(conn: Connection, period: Period, now: float, *, risky: int = 10) -> Overview:
    """The period's figures (from :func:`period_buckets`), now's orders at risk (counted)
    and late shipments (``risky`` of them listed) with the late shipments over the period,
    and the orders needing attention."""
    n = len(period.labels)
    b = period_buckets(conn, period)
    by_state = {s: sum(series) for s, series in b.states.items()}
    orders = sum(by_state.values())
    costed = sum(b.costed)

    def mean_units(key: str) -> float:
        return ratio(sum(b.sums[key]), costed) / MILLICENTS_PER_UNIT

    # A bucket without orders has no mean (None: a gap in the chart, not a zero).
    cost_series: dict[str, list[float | None]] = {
        key: [
            None if not c else round(s / c / MILLICENTS_PER_UNIT, 2)
            for s, c in zip(b.sums[key], b.costed, strict=True)
        ]
        for key in ("shipping", "handling", "storage_credit")
    }
    cost_series["cost"] = [
        None if not c else round((ship + handle - credit) / c / MILLICENTS_PER_UNIT, 2)
        for ship, handle, credit, c in zip(
            b.sums["shipping"], b.sums["handling"], b.sums["storage_credit"], b.costed, strict=True
        )
    ]
    quotes = sum(b.quotes)
    late_total, late_list = late_shipment_rows(conn, now, limit=risky)
    return Overview(
        period=period,
        orders=orders,
        by_state=by_state,
        state_series=b.states,
        costed=costed,
        shipping=mean_units("shipping"),
        handling=mean_units("handling"),
        storage_credit=mean_units("storage_credit"),
        cost_series=cost_series,
        parcels_per_order=ratio(sum(b.sums["parcels"]), costed),
        split_rate=ratio(sum(b.sums["split"]), costed),
        parcels_series=_means(b.sums["parcels"], b.costed),
        split_series=_means(b.sums["split"], b.costed),
        labels={label: sum(series) for label, series in b.labels.items()},
        label_series=b.labels,
        quotes=quotes,
        conversion=ratio(orders, quotes),
        quote_series=b.quotes,
        order_series=[sum(b.states[s][i] for s in STATES) for i in range(n)],
        delivered=sum(b.delivered),
        kept=sum(b.kept),
        kept_series=b.kept,
        delivered_series=b.delivered,
        at_risk=count_at_risk(conn, now),
        late_shipments=late_total,
        late_rows=late_list,
        late_series=late_series(conn, period, now, now_late=late_total),
        attention=count_attention(conn),
        flagged_series=b.flagged,
    )


@dataclass(frozen=True)
class Conversion:
    """Quote-to-order conversion over a period: the overview's card, which a page also
    refreshes alone when only quotes moved (quotes do not move the change mark)."""

    period: Period
    quotes: int
    orders: int
    quote_series: list[int]
    order_series: list[int]

    @property
    def rate(self) -> float:
        return ratio(self.orders, self.quotes)

    @classmethod
    def of(cls, ov: Overview) -> Conversion:
        return cls(ov.period, ov.quotes, ov.orders, ov.quote_series, ov.order_series)


def conversion(conn: Connection, period: Period) -> Conversion:
    """The period's quotes and orders per bucket, alone (:func:`quotes_and_orders`)."""
    quotes, orders = quotes_and_orders(conn, period)
    return Conversion(period, sum(quotes), sum(orders), quotes, orders)


def count_attention(conn: Connection) -> int:
    o = t.orders
    return int(
        conn.execute(
            sa.select(func.count()).where(o.c.state.in_(OPEN_STATES), needs_attention())
        ).scalar_one()
    )


def late_dispatches(conn: Connection, now: float, limit: int = 20) -> tuple[int, list[Late]]:
    """How many orders have a shipment not yet left its node and past its planned dispatch
    day (as ``Shipment.late``), and the first ``limit`` of them (earliest late dispatch
    first). A PARTIALLY_SHIPPED order whose other parcel is late counts.

    Both queries read only the late shipments: a range of ``ix_shipments_state_dispatch``
    per open state (state equal, planned dispatch before today), never every order.
    """
    s = t.shipments
    late = late_shipments(now)
    first = func.min(s.c.planned_dispatch)
    rows = conn.execute(
        sa.select(s.c.order_id, first)
        .where(late)
        .group_by(s.c.order_id)
        .order_by(first, s.c.order_id)
        .limit(max(1, min(limit, MAX_PAGE)))
    ).all()
    return count_at_risk(conn, now), [(order_id, str(day)) for order_id, day in rows]


def late_shipment_rows(
    conn: Connection, now: float, limit: int = 20
) -> tuple[int, list[LateShipment]]:
    """How many shipments are late now (``Shipment.late``), and the first ``limit`` of them,
    longest late first: the same index range as :func:`late_dispatches`."""
    s = t.shipments
    late = late_shipments(now)
    count = conn.execute(sa.select(func.count()).where(late)).scalar_one()
    today = date.fromisoformat(utc_day(now))
    rows = conn.execute(
        sa.select(s.c.shipment_id, s.c.order_id, s.c.node_id, s.c.state, s.c.planned_dispatch)
        .where(late)
        .order_by(s.c.planned_dispatch, s.c.shipment_id)
        .limit(max(1, min(limit, MAX_PAGE)))
    ).all()
    return int(count), [
        LateShipment(
            r.shipment_id,
            r.order_id,
            r.node_id,
            r.state,
            r.planned_dispatch,
            (today - date.fromisoformat(r.planned_dispatch)).days,
        )
        for r in rows
    ]


def late_series(
    conn: Connection, period: Period, now: float, *, now_late: int | None = None
) -> list[int]:
    """Per bucket of ``period``, the shipments late at its end (now for the last one): not
    left their node then (still open, or left or ended after it) though their planned
    dispatch day had passed, counting those created by then.

    The last bucket's end is now: the late shipments now (an index range of
    ``ix_shipments_state_dispatch``). The closed buckets' figures are facts that no later
    write changes (who was late at a past instant), computed once per process and kept
    (:func:`closed_late`), so an overview pays their scan once an hour (today) or a day.
    ``now_late``: the late shipments now, when the caller already counted them at ``now``
    (:func:`late_shipment_rows`), so the same count is not run twice.
    """
    n = len(period.labels)
    ends = tuple(min(period.start + (i + 1) * period.bucket_s, now) for i in range(n))
    if now_late is None:
        now_late = conn.execute(sa.select(func.count()).where(late_shipments(now))).scalar_one()
    # A write stamped before a bucket's end may commit just after it: a bucket's count is
    # kept once it ended SETTLE_S ago, and computed afresh until then.
    closed = ends[:-1]
    settled = tuple(at for at in closed if at <= now - SETTLE_S)
    recent = closed[len(settled) :]
    return [
        *closed_late(conn, period.start, settled),
        *(_late_at(conn, period.start, recent) if recent else ()),
        int(now_late),
    ]


#: Seconds after its end before a bucket's late count is kept (a write's transaction
#: commits after the time it is stamped with).
SETTLE_S = 120.0


#: Closed buckets' late counts by (store, period start, bucket ends); a few periods a day.
_CLOSED: OrderedDict[tuple[str, float, tuple[float, ...]], tuple[int, ...]] = OrderedDict()
_CLOSED_LOCK = threading.Lock()
_CLOSED_KEPT = 64


def closed_late(conn: Connection, start: float, ends: tuple[float, ...]) -> tuple[int, ...]:
    """The shipments late at each of ``ends`` (instants in the past, after ``start``), kept
    per store once computed (see :func:`late_series`)."""
    if not ends:
        return ()
    key = (conn.engine.url.render_as_string(hide_password=True), start, ends)
    with _CLOSED_LOCK:
        if key in _CLOSED:
            _CLOSED.move_to_end(key)
            return _CLOSED[key]
    counts = _late_at(conn, start, ends)
    with _CLOSED_LOCK:
        _CLOSED[key] = counts
        while len(_CLOSED) > _CLOSED_KEPT:
            _CLOSED.popitem(last=False)
    return counts


def _late_at(conn: Connection, start: float, ends: tuple[float, ...]) -> tuple[int, ...]:
    """One query over the shipments ever late after ``start`` (open and past their day, or
    left or ended after ``start`` and after their day: a filter over the shipments table,
    which has no index on when a shipment left), materialised, each checked at every end."""
    s = t.shipments
    # After its planned dispatch day: from the next UTC midnight on.
    overdue_from = (sa.type_coerce(date_number(conn, s.c.planned_dispatch), sa.Integer) + 1) * DAY_S

    def left_late(at: Any, states: tuple[str, ...]) -> Any:
        # Cheap comparisons first: most rows left before the period and stop there.
        return sa.and_(s.c.state.in_(states), at >= start, at >= overdue_from)

    ever_late = (
        sa.select(
            s.c.planned_dispatch.label("planned"),
            s.c.created_at.label("created"),
            sa.case(
                (s.c.state.in_(LEFT_SHIPMENT_STATES), s.c.shipped_at),
                (s.c.state.in_(GONE_SHIPMENT_STATES), s.c.updated_at),
                else_=None,
            ).label("left_at"),
        )
        .where(
            s.c.planned_dispatch < utc_day(ends[-1]),
            sa.or_(
                s.c.state.in_(OPEN_SHIPMENT_STATES),
                left_late(s.c.shipped_at, LEFT_SHIPMENT_STATES),
                left_late(s.c.updated_at, GONE_SHIPMENT_STATES),
            ),
        )
        # Computed once (a few thousand rows at most), then checked at each end.
        .cte("ever_late")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    # The ends as rows (a UNION ALL: SQLite has no named VALUES list).
    ends_t = sa.union_all(
        *(
            sa.select(
                sa.literal(i, sa.Integer).label("i"),
                sa.literal(at, sa.Float).label("at"),
                sa.literal(utc_day(at), sa.String).label("day"),
            )
            for i, at in enumerate(ends)
        )
    ).subquery("bucket_ends")
    rows = conn.execute(
        sa.select(ends_t.c.i, func.count())
        .select_from(ever_late.join(ends_t, sa.true()))
        .where(
            ever_late.c.planned < ends_t.c.day,
            ever_late.c.created <= ends_t.c.at,
            sa.or_(ever_late.c.left_at.is_(None), ever_late.c.left_at > ends_t.c.at),
        )
        .group_by(ends_t.c.i)
    ).all()
    return tuple(dense_series(rows, len(ends)))


def count_at_risk(conn: Connection, now: float) -> int:
    """How many orders have a late shipment now (the count of :func:`late_dispatches`)."""
    s = t.shipments
    return int(
        conn.execute(
            sa.select(func.count(sa.distinct(s.c.order_id))).where(late_shipments(now))
        ).scalar_one()
    )


def at_risk(conn: Connection, now: float, limit: int = 20) -> list[Late]:
    """(order id, earliest late dispatch day) of orders with a late shipment, earliest first."""
    return late_dispatches(conn, now, limit)[1]


def attention(conn: Connection, limit: int = 20) -> list[OrderSummary]:
    """Open orders needing attention, newest first."""
    return search_orders(conn, OrderQuery(attention=True), limit=limit).orders
