"""The overview page's figures: orders, cost, parcels, options chosen, conversion, promises."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.dashboard.views.common import (
    LABELS,
    MAX_PAGE,
    MILLICENTS_PER_UNIT,
    OPEN_STATES,
    STATES,
    Period,
    bucket_of,
    date_number,
    day_number,
    dense_series,
    is_postgresql,
    needs_attention,
    ratio,
    utc_day,
)
from oms.dashboard.views.orders import OrderQuery, OrderSummary, search_orders


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


def overview(conn: Connection, period: Period, now: float) -> Overview:
    o = t.orders
    n = len(period.labels)
    in_period = o.c.created_at >= period.start
    bucket = bucket_of(conn, o.c.created_at, period)

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
        return ratio(sum(sums[key]), costed) / MILLICENTS_PER_UNIT

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
    quote_bucket = bucket_of(conn, q.c.created_at, period)  # one object: one set of binds
    quote_series = dense_series(
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
        parcels_per_order=ratio(sum(sums["parcels"]), costed),
        split_rate=ratio(sum(sums["split"]), costed),
        parcels_series=[
            round(ratio(p, c), 3) for p, c in zip(sums["parcels"], counts, strict=True)
        ],
        split_series=[round(ratio(s, c), 3) for s, c in zip(sums["split"], counts, strict=True)],
        labels={label: sum(series) for label, series in label_series.items()},
        label_series=label_series,
        quotes=sum(quote_series),
        conversion=ratio(orders, sum(quote_series)),
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
    bucket = bucket_of(conn, e.c.at, period)
    kept = sa.case((day_number(conn, e.c.at) <= date_number(conn, o.c.promised_date), 1), else_=0)
    rows = conn.execute(
        sa.select(bucket, func.count(func.distinct(e.c.order_id)), func.sum(kept))
        .join(o, o.c.order_id == e.c.order_id)
        .where(e.c.type == "delivered", e.c.at >= period.start)
        .group_by(bucket)
    ).all()
    n = len(period.labels)
    delivered_series = dense_series([(b, d) for b, d, _ in rows], n)
    kept_series = dense_series([(b, k) for b, _, k in rows], n)
    return sum(delivered_series), sum(kept_series), delivered_series, kept_series


def _event_series(conn: Connection, kind: str, period: Period) -> list[int]:
    e = t.order_events
    bucket = bucket_of(conn, e.c.at, period)
    return dense_series(
        conn.execute(
            sa.select(bucket, func.count())
            .where(e.c.type == kind, e.c.at >= period.start)
            .group_by(bucket)
        ).all(),
        len(period.labels),
    )


def count_attention(conn: Connection) -> int:
    o = t.orders
    return int(
        conn.execute(
            sa.select(func.count()).where(o.c.state.in_(OPEN_STATES), needs_attention())
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
