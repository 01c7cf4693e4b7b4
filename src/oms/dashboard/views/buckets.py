"""A period's sums per bucket, which the overview draws: from the daily rollups, or from
the rows themselves for today's hours.

Periods of whole UTC days (7 and 30 days) read the rollups that migration
0011's triggers keep (``dash_*_days``): a few rows per day, whatever the
number of orders. Today, cut in hours, reads today's orders, quotes and events
by their time indexes: one day's rows. Both give the same shapes, so the
overview is assembled one way (:func:`oms.dashboard.views.summary.overview`),
and a test checks that the two agree on today.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.dashboard.views.common import (
    DAY_S,
    LABELS,
    STATES,
    Period,
    bucket_of,
    date_number,
    day_number,
)

#: The sums of orders kept per bucket and state, in the rollup's column order.
ORDER_SUMS = ("shipping", "handling", "storage_credit", "parcels", "split")


@dataclass
class Buckets:
    """Per bucket (index into ``period.labels``) of the period."""

    #: Orders created, by their current state.
    states: dict[str, list[int]]
    #: Over the orders not cancelled: their count, and the sums of :data:`ORDER_SUMS`
    #: (money in millicents) and of each label.
    costed: list[int]
    sums: dict[str, list[int]]
    labels: dict[str, list[int]]
    quotes: list[int]
    delivered: list[int]
    kept: list[int]
    flagged: list[int]

    @classmethod
    def empty(cls, n: int) -> Buckets:
        return cls(
            states={s: [0] * n for s in STATES},
            costed=[0] * n,
            sums={k: [0] * n for k in ORDER_SUMS},
            labels={label: [0] * n for label in LABELS},
            quotes=[0] * n,
            delivered=[0] * n,
            kept=[0] * n,
            flagged=[0] * n,
        )

    def add_orders(self, bucket: int, state: str, count: int, sums: list[int]) -> None:
        """``count`` orders of ``state`` with the sums of :data:`ORDER_SUMS` then the labels."""
        if not 0 <= bucket < len(self.costed) or state not in self.states:
            return
        self.states[state][bucket] += count
        if state == "CANCELLED":
            return
        self.costed[bucket] += count
        for key, value in zip((*ORDER_SUMS, *LABELS), sums, strict=True):
            (self.sums[key] if key in self.sums else self.labels[key])[bucket] += value

    def add_events(self, bucket: int, kind: str, count: int, kept: int) -> None:
        if not 0 <= bucket < len(self.costed):
            return
        if kind == "delivered":
            self.delivered[bucket] += count
            self.kept[bucket] += kept
        elif kind == "flagged":
            self.flagged[bucket] += count


def _int(value: Any) -> int:
    return int(value or 0)


def period_buckets(conn: Connection, period: Period) -> Buckets:
    """The period's sums per bucket: from the rollups for whole days, else from the rows."""
    if period.bucket_s == DAY_S:
        return from_rollups(conn, period)
    return from_rows(conn, period)


def from_rollups(conn: Connection, period: Period) -> Buckets:
    """Sums per day from the rollups (their shards added up)."""
    first = int(period.start // DAY_S)
    out = Buckets.empty(len(period.labels))
    od, qd, ed = t.order_days, t.quote_days, t.event_days
    summed = [*ORDER_SUMS, *t.ROLLUP_LABELS]
    rows = conn.execute(
        sa.select(od.c.day, od.c.state, func.sum(od.c.orders), *(func.sum(od.c[c]) for c in summed))
        .where(od.c.day >= first)
        .group_by(od.c.day, od.c.state)
    )
    for day, state, count, *sums in rows:
        out.add_orders(int(day) - first, state, _int(count), [_int(s) for s in sums])
    for day, count in conn.execute(
        sa.select(qd.c.day, func.sum(qd.c.quotes)).where(qd.c.day >= first).group_by(qd.c.day)
    ):
        if 0 <= int(day) - first < len(out.quotes):
            out.quotes[int(day) - first] += _int(count)
    for day, kind, count, kept in conn.execute(
        sa.select(ed.c.day, ed.c.type, func.sum(ed.c.events), func.sum(ed.c.kept))
        .where(ed.c.day >= first)
        .group_by(ed.c.day, ed.c.type)
    ):
        out.add_events(int(day) - first, kind, _int(count), _int(kept))
    return out


def from_rows(conn: Connection, period: Period) -> Buckets:
    """Sums per bucket from the period's own orders, quotes and events (by time indexes)."""
    o, q, e = t.orders, t.quotes, t.order_events
    out = Buckets.empty(len(period.labels))
    bucket = bucket_of(conn, o.c.created_at, period)
    flags = [
        sa.case((o.c.parcel_count > 1, 1), else_=0),
        *(sa.case((o.c.option_labels.like(f'%"{label}"%'), 1), else_=0) for label in LABELS),
    ]
    orders = sa.select(
        bucket,
        o.c.state,
        func.count(),
        func.sum(o.c.shipping_cost),
        func.sum(o.c.handling_cost),
        func.sum(o.c.storage_credit),
        func.sum(o.c.parcel_count),
        *(func.sum(flag) for flag in flags),
    ).where(o.c.created_at >= period.start)
    for b, state, count, *sums in conn.execute(orders.group_by(bucket, o.c.state)):
        out.add_orders(int(b), state, _int(count), [_int(s) for s in sums])

    quote_bucket = bucket_of(conn, q.c.created_at, period)
    for b, count in conn.execute(
        sa.select(quote_bucket, func.count())
        .where(q.c.created_at >= period.start)
        .group_by(quote_bucket)
    ):
        if 0 <= int(b) < len(out.quotes):
            out.quotes[int(b)] += _int(count)

    # SHIPMENTS: with per-shipment delivery, an order is delivered when its last
    # shipment is; read that time from the shipments table instead of the event.
    event_bucket = bucket_of(conn, e.c.at, period)
    on_time = sa.and_(
        e.c.type == "delivered",
        day_number(conn, e.c.at) <= date_number(conn, o.c.promised_date),
    )
    for b, kind, count, kept in conn.execute(
        sa.select(event_bucket, e.c.type, func.count(), func.sum(sa.case((on_time, 1), else_=0)))
        .join(o, o.c.order_id == e.c.order_id)
        .where(e.c.type.in_(("delivered", "flagged")), e.c.at >= period.start)
        .group_by(event_bucket, e.c.type)
    ):
        out.add_events(int(b), kind, _int(count), _int(kept))
    return out


def quotes_and_orders(conn: Connection, period: Period) -> tuple[list[int], list[int]]:
    """Quotes and orders created per bucket of ``period`` (the conversion's two series),
    alone: from the quote and order rollups for whole days, else from today's rows by
    their time indexes. A few rows either way, so it can follow quotes more often than
    the overview is recomputed."""
    n = len(period.labels)
    quotes, orders = [0] * n, [0] * n
    if period.bucket_s == DAY_S:
        first = int(period.start // DAY_S)
        qd, od = t.quote_days, t.order_days
        for series, day, count, table in (
            (quotes, qd.c.day, func.sum(qd.c.quotes), qd),
            (orders, od.c.day, func.sum(od.c.orders), od),
        ):
            for d, c in conn.execute(
                sa.select(day, count).select_from(table).where(day >= first).group_by(day)
            ):
                if 0 <= int(d) - first < n:
                    series[int(d) - first] += _int(c)
        return quotes, orders
    for series, column in ((quotes, t.quotes.c.created_at), (orders, t.orders.c.created_at)):
        bucket = bucket_of(conn, column, period)
        for b, c in conn.execute(
            sa.select(bucket, func.count()).where(column >= period.start).group_by(bucket)
        ):
            if 0 <= int(b) < n:
                series[int(b)] += _int(c)
    return quotes, orders
