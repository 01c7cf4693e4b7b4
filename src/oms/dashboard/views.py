"""The dashboard's read side: every figure a page shows, as SQL over the store's tables.

Read-side views apart from the write model ("Architecture Patterns with
Python", chapter 12): plain SQLAlchemy Core over :mod:`oms.schema`, the same
on SQLite and PostgreSQL, each function one or a few indexed queries whose
result is bounded (aggregates, a page, a top-N), never every order loaded
into Python. The order's plan facts (labels, parcels, cost parts) are
generated columns of ``orders`` (migration 0007).

Definitions (the tests recompute each independently from the store):

* a period is ``today`` (UTC midnight to now, hourly buckets) or the last 7
  or 30 UTC days including today (daily buckets); orders, quotes and events
  belong to it by their own time;
* **orders by state**: orders created in the period, by current state;
* **cost per order**: over orders created in the period and not cancelled,
  the mean of their plan's shipping, handling and storage credit
  (cost = shipping + handling - storage credit), in currency units;
* **parcels per order** and **split rate** (share with two or more parcels),
  same orders;
* **option chosen**: those orders counted under each label of their option
  (an option can carry several: CHEAPEST and BALANCED at once);
* **conversion**: orders created / quotes created in the period;
* **promises kept**: of the orders delivered in the period (their
  ``delivered`` event), those delivered on or before their promised date
  (UTC day);
* **at risk**: open orders (PLACED, RELEASED) with a parcel whose planned
  dispatch day (quote day + its arrival day - its service's transit days) has
  passed without the order shipping; now, whatever the period;
* **needing attention**: open orders with a ``flagged`` event (re-sourcing
  could not keep the promise), as ``GetOrder``'s ``needs_attention``.

Shipments (issue 16) plug in where marked ``SHIPMENTS:``; until they land a
parcel is read from the order's allocation and moves with its order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t

DAY_S = 86_400.0
HOUR_S = 3_600.0
#: States an order can still be worked on in (ship, cancel, re-source).
OPEN_STATES = ("PLACED", "RELEASED")
STATES = ("PLACED", "RELEASED", "SHIPPED", "DELIVERED", "CANCELLED")
LABELS = ("CHEAPEST", "FASTEST", "SINGLE_PARCEL", "BALANCED", "COLLECT")
PERIODS = {"today": 0, "7d": 7, "30d": 30}
#: Largest page of rows any view returns.
MAX_PAGE = 200
#: Millicents per currency unit (the store's money).
MILLICENTS_PER_UNIT = 100_000


@dataclass(frozen=True)
class Period:
    """A reporting window: ``start`` to ``end`` (epoch s), cut into ``len(labels)`` buckets."""

    key: str
    start: float
    end: float
    bucket_s: float
    labels: tuple[str, ...]

    @classmethod
    def of(cls, key: str, now: float) -> Period:
        if key not in PERIODS:
            raise ValueError(f"unknown period {key!r}; one of {', '.join(PERIODS)}")
        today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        midnight = today.timestamp()
        if key == "today":
            hours = int((now - midnight) // HOUR_S) + 1
            return cls(key, midnight, now, HOUR_S, tuple(f"{h:02d}:00" for h in range(hours)))
        days = PERIODS[key]
        first = today - timedelta(days=days - 1)
        return cls(
            key,
            first.timestamp(),
            now,
            DAY_S,
            tuple((first + timedelta(days=d)).date().isoformat() for d in range(days)),
        )

    @property
    def first_day(self) -> str:
        return datetime.fromtimestamp(self.start, UTC).date().isoformat()


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _bucket(conn: Connection, column: Any, period: Period) -> Any:
    """The bucket index (0-based) of an epoch-seconds column in ``period``."""
    offset = (column - period.start) / period.bucket_s
    if is_postgresql(conn):
        return sa.cast(func.floor(offset), sa.Integer)
    return sa.cast(offset, sa.Integer)  # SQLite truncates; offsets are never negative here


def _day_number(conn: Connection, column: Any) -> Any:
    """Days since 1970-01-01 (UTC) of an epoch-seconds column: integer arithmetic, where
    formatting each row's day as text cost a third of the promises query."""
    if is_postgresql(conn):
        return sa.cast(func.floor(column / DAY_S), sa.Integer)
    return sa.cast(column / DAY_S, sa.Integer)  # epoch times here are positive


def _date_number(conn: Connection, column: Any) -> Any:
    """Days since 1970-01-01 of an ISO date (YYYY-MM-DD) column."""
    if is_postgresql(conn):
        return sa.cast(column, sa.Date) - sa.literal_column("DATE '1970-01-01'")
    return sa.cast(func.julianday(column) - 2440587.5, sa.Integer)


def _series(rows: Sequence[Any], buckets: int) -> list[int]:
    """(bucket, value) rows as a dense list of ``buckets`` values."""
    out = [0] * buckets
    for bucket, value in rows:
        if bucket is not None and 0 <= int(bucket) < buckets:
            out[int(bucket)] += int(value or 0)
    return out


# -- overview ---------------------------------------------------------------------


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
    at_risk: int
    attention: int
    flagged_series: list[int]

    @property
    def cost_per_order(self) -> float:
        return self.shipping + self.handling - self.storage_credit

    @property
    def kept_rate(self) -> float | None:
        return self.kept / self.delivered if self.delivered else None


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _per(totals: list[int], counts: list[int]) -> list[float | None]:
    return [None if not c else round(x / c, 3) for x, c in zip(totals, counts, strict=True)]


def overview(conn: Connection, period: Period, now: float) -> Overview:
    o = t.orders
    n = len(period.labels)
    in_period = o.c.created_at >= period.start
    bucket = _bucket(conn, o.c.created_at, period)

    by_state = dict.fromkeys(STATES, 0)
    state_series = {s: [0] * n for s in STATES}
    for state, b, count in conn.execute(
        sa.select(o.c.state, bucket, func.count()).where(in_period).group_by(o.c.state, bucket)
    ):
        by_state[state] = by_state.get(state, 0) + int(count)
        if state in state_series and 0 <= int(b) < n:
            state_series[state][int(b)] += int(count)
    orders = sum(by_state.values())

    # Cost, parcels and labels of the orders not cancelled.
    costed_q = sa.select(
        bucket,
        func.count(),
        func.sum(o.c.shipping_cost),
        func.sum(o.c.handling_cost),
        func.sum(o.c.storage_credit),
        func.sum(o.c.parcel_count),
        func.sum(sa.case((o.c.parcel_count > 1, 1), else_=0)),
        *(
            func.sum(sa.case((o.c.option_labels.like(f'%"{label}"%'), 1), else_=0))
            for label in LABELS
        ),
    ).where(in_period, o.c.state != "CANCELLED")
    counts = [0] * n
    sums = {k: [0] * n for k in ("shipping", "handling", "storage_credit", "parcels", "split")}
    label_series = {label: [0] * n for label in LABELS}
    for row in conn.execute(costed_q.group_by(bucket)):
        b = int(row[0])
        if not 0 <= b < n:
            continue
        counts[b] += int(row[1])
        for i, k in enumerate(("shipping", "handling", "storage_credit", "parcels", "split")):
            sums[k][b] += int(row[2 + i] or 0)
        for i, label in enumerate(LABELS):
            label_series[label][b] += int(row[7 + i] or 0)
    costed = sum(counts)

    def mean_units(key: str) -> float:
        return _ratio(sum(sums[key]), costed) / MILLICENTS_PER_UNIT

    # A bucket without orders has no mean (None: a gap in the chart, not a zero).
    cost_series: dict[str, list[float | None]] = {
        key: [
            None if not c else round(s / c / MILLICENTS_PER_UNIT, 2)
            for s, c in zip(sums[key], counts, strict=True)
        ]
        for key in ("shipping", "handling", "storage_credit")
    }
    cost_series["cost"] = [
        None if not c else round((ship + handle - credit) / c / MILLICENTS_PER_UNIT, 2)
        for ship, handle, credit, c in zip(
            sums["shipping"], sums["handling"], sums["storage_credit"], counts, strict=True
        )
    ]

    q = t.quotes
    quote_bucket = _bucket(conn, q.c.created_at, period)  # one object: one set of binds
    quote_series = _series(
        conn.execute(
            sa.select(quote_bucket, func.count())
            .where(q.c.created_at >= period.start)
            .group_by(quote_bucket)
        ).all(),
        n,
    )
    order_series = [sum(state_series[s][b] for s in STATES) for b in range(n)]

    delivered, kept, delivered_series, kept_series = _promises(conn, period)
    flagged_series = _event_series(conn, "flagged", period)
    return Overview(
        period=period,
        orders=orders,
        by_state=by_state,
        state_series=state_series,
        costed=costed,
        shipping=mean_units("shipping"),
        handling=mean_units("handling"),
        storage_credit=mean_units("storage_credit"),
        cost_series=cost_series,
        parcels_per_order=_ratio(sum(sums["parcels"]), costed),
        split_rate=_ratio(sum(sums["split"]), costed),
        parcels_series=[
            round(_ratio(p, c), 3) for p, c in zip(sums["parcels"], counts, strict=True)
        ],
        split_series=[round(_ratio(s, c), 3) for s, c in zip(sums["split"], counts, strict=True)],
        labels={label: sum(series) for label, series in label_series.items()},
        label_series=label_series,
        quotes=sum(quote_series),
        conversion=_ratio(orders, sum(quote_series)),
        quote_series=quote_series,
        order_series=order_series,
        delivered=delivered,
        kept=kept,
        kept_series=kept_series,
        delivered_series=delivered_series,
        at_risk=count_at_risk(conn, now),
        attention=count_attention(conn),
        flagged_series=flagged_series,
    )


def _promises(conn: Connection, period: Period) -> tuple[int, int, list[int], list[int]]:
    """Orders delivered in the period, and those on or before their promised day, per bucket.

    SHIPMENTS: with per-shipment delivery, an order is delivered when its last
    shipment is; read that time from the shipments table instead of the event.
    """
    e, o = t.order_events, t.orders
    bucket = _bucket(conn, e.c.at, period)
    kept = sa.case((_day_number(conn, e.c.at) <= _date_number(conn, o.c.promised_date), 1), else_=0)
    rows = conn.execute(
        sa.select(bucket, func.count(func.distinct(e.c.order_id)), func.sum(kept))
        .join(o, o.c.order_id == e.c.order_id)
        .where(e.c.type == "delivered", e.c.at >= period.start)
        .group_by(bucket)
    ).all()
    n = len(period.labels)
    delivered_series = _series([(b, d) for b, d, _ in rows], n)
    kept_series = _series([(b, k) for b, _, k in rows], n)
    return sum(delivered_series), sum(kept_series), delivered_series, kept_series


def _event_series(conn: Connection, kind: str, period: Period) -> list[int]:
    e = t.order_events
    bucket = _bucket(conn, e.c.at, period)
    return _series(
        conn.execute(
            sa.select(bucket, func.count())
            .where(e.c.type == kind, e.c.at >= period.start)
            .group_by(bucket)
        ).all(),
        len(period.labels),
    )


def _attention_clause() -> Any:
    e, o = t.order_events, t.orders
    return sa.exists().where(e.c.order_id == o.c.order_id, e.c.type == "flagged")


def count_attention(conn: Connection) -> int:
    o = t.orders
    return int(
        conn.execute(
            sa.select(func.count()).where(o.c.state.in_(OPEN_STATES), _attention_clause())
        ).scalar_one()
    )


# SHIPMENTS: the planned dispatch day of each parcel, until shipments carry it as
# a column (then: shipments not shipped whose planned dispatch < today, by index).
_DISPATCH = {
    "postgresql": """
        SELECT o.order_id, MIN((o.allocation_json::jsonb ->> 'start_date')::date
               + ((p.value ->> 'arrival_days')::int - COALESCE(r.transit_days, 0))) AS dispatch
        FROM orders o
        CROSS JOIN LATERAL jsonb_array_elements(o.allocation_json::jsonb -> 'parcels') AS p(value)
        LEFT JOIN rates r ON r.service = p.value ->> 'service' AND r.zone = p.value ->> 'zone'
        WHERE o.state IN ('PLACED', 'RELEASED')
        GROUP BY o.order_id
    """,
    "sqlite": """
        SELECT o.order_id, MIN(date(json_extract(o.allocation_json, '$.start_date'),
               printf('%+d days', json_extract(p.value, '$.arrival_days')
                                  - COALESCE(r.transit_days, 0)))) AS dispatch
        FROM orders o, json_each(o.allocation_json, '$.parcels') AS p
        LEFT JOIN rates r ON r.service = json_extract(p.value, '$.service')
                         AND r.zone = json_extract(p.value, '$.zone')
        WHERE o.state IN ('PLACED', 'RELEASED')
        GROUP BY o.order_id
    """,
}


def _late_dispatch_sql(conn: Connection) -> str:
    late = (
        "(dispatch::text) < :today" if is_postgresql(conn) else "dispatch < :today"
    )  # ISO dates compare as text
    return f"SELECT order_id, dispatch FROM ({_DISPATCH[conn.dialect.name]}) d WHERE {late}"


def count_at_risk(conn: Connection, now: float) -> int:
    return int(
        conn.execute(
            sa.text(f"SELECT COUNT(*) FROM ({_late_dispatch_sql(conn)}) late"),
            {"today": utc_day(now)},
        ).scalar_one()
    )


def at_risk(conn: Connection, now: float, limit: int = 20) -> list[tuple[str, str]]:
    """(order id, planned dispatch day) of open orders past their dispatch day, latest first."""
    rows = conn.execute(
        sa.text(
            f"SELECT order_id, dispatch FROM ({_late_dispatch_sql(conn)}) late "
            "ORDER BY dispatch, order_id LIMIT :limit"
        ),
        {"today": utc_day(now), "limit": min(limit, MAX_PAGE)},
    ).all()
    return [(order_id, str(dispatch)) for order_id, dispatch in rows]


def attention(conn: Connection, limit: int = 20) -> list[OrderSummary]:
    """Open orders needing attention, newest first."""
    return search_orders(conn, OrderQuery(attention=True), limit=limit).orders


# -- stock ------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    node_id: str
    sku: str
    on_hand: int
    safety_stock: int
    reserved: int
    held: int
    inbound: int
    inbound_reserved: int
    low_stock_threshold: int

    @property
    def available(self) -> int:
        return max(0, self.on_hand - self.safety_stock - self.reserved - self.held)

    @property
    def projected(self) -> int:
        return self.available + max(0, self.inbound - self.inbound_reserved)

    @property
    def is_low(self) -> bool:
        return self.low_stock_threshold > 0 and self.projected <= self.low_stock_threshold


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.total else None

    @property
    def prev_offset(self) -> int | None:
        return max(0, self.offset - self.limit) if self.offset > 0 else None


def _like(term: str) -> str:
    """``term`` as a LIKE pattern matching it anywhere, its wildcards escaped (ESCAPE '\\')."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


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
    and only the low ones; with the figures ``GetAvailability`` reports."""
    s = t.stock
    limit = max(1, min(limit, MAX_PAGE))
    joined, figures = _position_figures(now)
    inner = sa.select(
        s.c.node_id, s.c.sku, s.c.on_hand, s.c.safety_stock, s.c.low_stock_threshold, *figures
    ).select_from(joined)
    if search:
        pattern = _like(search)
        inner = inner.where(
            sa.or_(s.c.node_id.like(pattern, escape="\\"), s.c.sku.like(pattern, escape="\\"))
        )
    if low_only:
        inner = inner.where(s.c.low_stock_threshold > 0)
    sub = inner.subquery()
    query = sa.select(sub)
    if low_only:
        query = query.where(_projected_expr(sub) <= sub.c.low_stock_threshold)
    total = int(conn.execute(sa.select(func.count()).select_from(query.subquery())).scalar_one())
    order = (
        (_projected_expr(sub) - sub.c.low_stock_threshold, sub.c.node_id, sub.c.sku)
        if low_only
        else (sub.c.node_id, sub.c.sku)
    )
    rows = conn.execute(query.order_by(*order).offset(max(0, offset)).limit(limit)).all()
    return Page(
        [
            Position(
                r.node_id,
                r.sku,
                int(r.on_hand),
                int(r.safety_stock),
                int(r.reserved),
                int(r.held),
                int(r.inbound),
                int(r.inbound_reserved),
                int(r.low_stock_threshold),
            )
            for r in rows
        ],
        total,
        max(0, offset),
        limit,
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

    SHIPMENTS: "shipped" is the ledger's units out for an order (the partial index
    ``ix_stock_ledger_shipped``); per-shipment ledger rows keep it right.
    """
    n, u, ledger = t.nodes, t.node_day_usage, t.stock_ledger
    used = dict(
        conn.execute(sa.select(u.c.node_id, u.c.units).where(u.c.day == utc_day(now))).all()
    )
    shipped = dict(
        conn.execute(
            sa.select(ledger.c.node_id, -func.sum(ledger.c.delta))
            .where(
                ledger.c.at >= period.start,
                ledger.c.order_id.is_not(None),
                ledger.c.delta < 0,
            )
            .group_by(ledger.c.node_id)
        ).all()
    )
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


# -- orders -----------------------------------------------------------------------


@dataclass(frozen=True)
class OrderQuery:
    """Filters of the orders search; empty means any."""

    order_id: str = ""
    sku: str = ""
    node_id: str = ""
    state: str = ""
    attention: bool = False

    @property
    def empty(self) -> bool:
        return not (self.order_id or self.sku or self.node_id or self.state or self.attention)


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


def _labels(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _exists(conn: Connection, column: Any, value: str) -> bool:
    return conn.execute(sa.select(column).where(column == value)).first() is not None


def search_orders(
    conn: Connection,
    query: OrderQuery,
    *,
    after: tuple[float, str] | None = None,
    limit: int = 50,
) -> OrderPage:
    """Orders matching ``query``, newest first, a page at a time (keyset on creation time).

    SKU and node match the order's lines and its plan's parcels (JSON text, as
    written with ``separators=(",", ":")``). SHIPMENTS: match the node on the
    shipments table (indexed by node) instead of the plan's text.
    """
    o = t.orders
    limit = max(1, min(limit, MAX_PAGE))
    # An unknown node or SKU matches nothing: answer at once instead of scanning every plan.
    if query.node_id and not _exists(conn, t.nodes.c.node_id, query.node_id):
        return OrderPage([], None)
    if query.sku and not _exists(conn, t.skus.c.sku, query.sku):
        return OrderPage([], None)
    needs = _attention_clause()
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
            o.c.lines_json.like(_like('"sku":' + json.dumps(query.sku)), escape="\\")
        )
    if query.node_id:
        select = select.where(
            o.c.allocation_json.like(_like('"node_id":' + json.dumps(query.node_id)), escape="\\")
        )
    if query.attention:
        select = select.where(o.c.state.in_(OPEN_STATES), needs)
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
                _labels(row.option_labels),
                tuple(dict.fromkeys(str(line["sku"]) for line in lines)),
                sum(int(line["qty"]) for line in lines),
                bool(row.needs_attention),
            )
        )
    more = len(rows) > limit
    last = found[-1] if found else None
    return OrderPage(found, (last.created_at, last.order_id) if more and last else None)


@dataclass(frozen=True)
class ParcelView:
    """One parcel of the order's plan, with its planned dates and where it stands.

    SHIPMENTS: becomes a shipment (id, state, carrier, tracking number, actual
    dispatch and delivery times), read from the shipments table.
    """

    node_id: str
    service: str
    zone: str
    lines: list[dict[str, Any]]
    weight_kg: float
    shipping: float
    handling: float
    storage_credit: float
    cost: float
    planned_dispatch: str
    planned_arrival: str
    waiting_for: str | None
    status: str
    status_at: float | None


@dataclass(frozen=True)
class MenuOption:
    option_id: str
    labels: tuple[str, ...]
    cost: float
    shipping: float
    handling: float
    storage_credit: float
    delivery_date: str
    parcels: int
    nodes: tuple[str, ...]
    pickup: str | None
    status: str
    chosen: bool


@dataclass(frozen=True)
class Event:
    at: float
    kind: str
    detail: str


@dataclass(frozen=True)
class LedgerRow:
    at: float
    node_id: str
    sku: str
    delta: int
    reason: str


@dataclass(frozen=True)
class OrderDetail:
    order_id: str
    quote_id: str
    option_id: str
    state: str
    created_at: float
    updated_at: float
    promised_date: str
    destination: tuple[float, float]
    lines: list[dict[str, Any]]
    labels: tuple[str, ...]
    shipping: float
    handling: float
    storage_credit: float
    cost: float
    parcels: list[ParcelView]
    events: list[Event]
    ledger: list[LedgerRow]
    menu: list[MenuOption]
    quote_created_at: float | None
    needs_attention: bool
    waiting: dict[str, int] = field(default_factory=dict)


def _money(millicents: Any) -> float:
    return int(millicents or 0) / MILLICENTS_PER_UNIT


def _day_after(start: str, days: int) -> str:
    return (date.fromisoformat(start) + timedelta(days=int(days))).isoformat()


#: Which event marks where an order stands (until shipments carry their own times).
_STATUS_EVENT = {"RELEASED": "released", "SHIPPED": "shipped", "DELIVERED": "delivered"}


def order_detail(conn: Connection, order_id: str) -> OrderDetail | None:
    """One order: its plan's parcels, timeline, ledger rows, and the menu it was chosen from."""
    o, e, q, ledger, rr = (
        t.orders,
        t.order_events,
        t.quotes,
        t.stock_ledger,
        t.inbound_reservations,
    )
    row = conn.execute(sa.select(o).where(o.c.order_id == order_id)).first()
    if row is None:
        return None
    events = [
        Event(float(at), kind, detail)
        for at, kind, detail in conn.execute(
            sa.select(e.c.at, e.c.type, e.c.detail)
            .where(e.c.order_id == order_id)
            .order_by(e.c.event_id)
        )
    ]
    ledger_rows = [
        LedgerRow(float(r.at), r.node_id, r.sku, int(r.delta), r.reason)
        for r in conn.execute(
            sa.select(ledger.c.at, ledger.c.node_id, ledger.c.sku, ledger.c.delta, ledger.c.reason)
            .where(ledger.c.order_id == order_id)
            .order_by(ledger.c.entry_id)
            .limit(MAX_PAGE)
        )
    ]
    waiting = {
        receipt: int(qty)
        for receipt, qty in conn.execute(
            sa.select(rr.c.receipt_id, func.sum(rr.c.qty))
            .where(rr.c.order_id == order_id)
            .group_by(rr.c.receipt_id)
        )
    }
    allocation = json.loads(row.allocation_json)
    start = allocation.get("start_date") or utc_day(row.created_at)
    transit = {
        (service, zone): int(days)
        for service, zone, days in conn.execute(
            sa.select(t.rates.c.service, t.rates.c.zone, t.rates.c.transit_days)
        )
    }
    status_event = _STATUS_EVENT.get(row.state)
    status_at = next((ev.at for ev in reversed(events) if ev.kind == status_event), None)
    parcels = []
    for p in allocation.get("parcels", []):
        arrival = int(p.get("arrival_days", 0))
        inbound = p.get("inbound_day")
        parcels.append(
            ParcelView(
                node_id=p["node_id"],
                service=p["service"],
                zone=str(p.get("zone", "")),
                lines=list(p.get("lines", [])),
                weight_kg=int(p.get("weight_g", 0)) / 1000.0,
                shipping=_money(p.get("shipping")),
                handling=_money(p.get("handling")),
                storage_credit=_money(p.get("storage_credit")),
                cost=_money(p.get("cost")),
                planned_dispatch=_day_after(
                    start, arrival - transit.get((p["service"], str(p.get("zone", ""))), 0)
                ),
                planned_arrival=_day_after(start, arrival),
                waiting_for=None if inbound is None else _day_after(start, int(inbound)),
                status=row.state,
                status_at=status_at,
            )
        )
    menu: list[MenuOption] = []
    quote_created: float | None = None
    quote = conn.execute(
        sa.select(q.c.created_at, q.c.quote_date, q.c.options_json).where(
            q.c.quote_id == row.quote_id
        )
    ).first()
    if quote is not None:
        quote_created = float(quote.created_at)
        for doc in json.loads(quote.options_json):
            menu.append(
                MenuOption(
                    option_id=doc["option_id"],
                    labels=tuple(doc.get("labels", [])),
                    cost=_money(doc.get("cost")),
                    shipping=_money(doc.get("shipping")),
                    handling=_money(doc.get("handling")),
                    storage_credit=_money(doc.get("storage_credit")),
                    delivery_date=_day_after(quote.quote_date, int(doc.get("delivery_days", 0))),
                    parcels=len(doc.get("parcels", [])),
                    nodes=tuple(dict.fromkeys(p["node_id"] for p in doc.get("parcels", []))),
                    pickup=doc.get("pickup"),
                    status=str(doc.get("status", "")),
                    chosen=doc["option_id"] == row.option_id,
                )
            )
    return OrderDetail(
        order_id=row.order_id,
        quote_id=row.quote_id,
        option_id=row.option_id,
        state=row.state,
        created_at=float(row.created_at),
        updated_at=float(row.updated_at),
        promised_date=row.promised_date,
        destination=(float(row.dest_lat), float(row.dest_lon)),
        lines=json.loads(row.lines_json),
        labels=_labels(row.option_labels),
        shipping=_money(row.shipping_cost),
        handling=_money(row.handling_cost),
        storage_credit=_money(row.storage_credit),
        cost=_money(row.total_cost),
        parcels=parcels,
        events=events,
        ledger=ledger_rows,
        menu=menu,
        quote_created_at=quote_created,
        needs_attention=row.state in OPEN_STATES and any(ev.kind == "flagged" for ev in events),
        waiting=waiting,
    )


# -- live updates -----------------------------------------------------------------


def change_mark(conn: Connection) -> str:
    """A short text that changes whenever anything a page shows may have changed.

    The newest order event (the outbox every order change writes), ledger row,
    reservation and receipt change, and the sum of stock settings (safety stock
    and thresholds change without a ledger row). Each is one index lookup or a
    small scan; pages poll it and refresh only when it moves.
    """
    marks = conn.execute(
        sa.select(
            sa.select(func.max(t.order_events.c.event_id)).scalar_subquery(),
            sa.select(func.max(t.stock_ledger.c.entry_id)).scalar_subquery(),
            sa.select(func.max(t.reservations.c.reservation_id)).scalar_subquery(),
            sa.select(func.count()).select_from(t.reservations).scalar_subquery(),
            sa.select(func.max(t.inbound_receipts.c.updated_at)).scalar_subquery(),
            sa.select(
                func.sum(t.stock.c.safety_stock + t.stock.c.low_stock_threshold)
            ).scalar_subquery(),
        )
    ).one()
    return ".".join("-" if m is None else str(m) for m in marks)
