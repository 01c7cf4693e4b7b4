"""What every dashboard view shares: periods and their buckets, pages, and small SQL helpers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t

DAY_S = 86_400.0
HOUR_S = 3_600.0
#: States of an order with parts that may not have left yet (to ship, cancel, re-source):
#: a flagged one needs attention. A PARTIALLY_SHIPPED order whose remaining parcel a node
#: refused is flagged too (and PARTIALLY_DELIVERED: a delivered parcel says nothing of the rest).
OPEN_STATES = ("PLACED", "RELEASED", "PARTIALLY_SHIPPED", "PARTIALLY_DELIVERED")
#: Shipment states not yet left their node (``oms.store.shipment_records.OPEN``): past its
#: planned dispatch day, such a shipment is late.
OPEN_SHIPMENT_STATES = ("PENDING", "REQUESTED", "ACCEPTED")
#: Shipment states that left their node (``shipment_records.LEFT``: at ``shipped_at``) and
#: that ended without leaving (``GONE``: cancelled or refused, at ``updated_at``).
LEFT_SHIPMENT_STATES = ("SHIPPED", "READY_FOR_PICKUP", "DELIVERED", "PICKED_UP")
GONE_SHIPMENT_STATES = ("CANCELLED", "REJECTED")
STATES = (
    "PLACED",
    "RELEASED",
    "PARTIALLY_SHIPPED",
    "SHIPPED",
    "PARTIALLY_DELIVERED",
    "DELIVERED",
    "CANCELLED",
)
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


def bucket_of(conn: Connection, column: Any, period: Period) -> Any:
    """The bucket index (0-based) of an epoch-seconds column in ``period``."""
    offset = (column - period.start) / period.bucket_s
    if is_postgresql(conn):
        return sa.cast(func.floor(offset), sa.Integer)
    return sa.cast(offset, sa.Integer)  # SQLite truncates; offsets are never negative here


def day_number(conn: Connection, column: Any) -> Any:
    """Days since 1970-01-01 (UTC) of an epoch-seconds column: integer arithmetic, where
    formatting each row's day as text cost a third of the promises query."""
    if is_postgresql(conn):
        return sa.cast(func.floor(column / DAY_S), sa.Integer)
    return sa.cast(column / DAY_S, sa.Integer)  # epoch times here are positive


def date_number(conn: Connection, column: Any) -> Any:
    """Days since 1970-01-01 of an ISO date (YYYY-MM-DD) column."""
    if is_postgresql(conn):
        return sa.cast(column, sa.Date) - sa.literal_column("DATE '1970-01-01'")
    return sa.cast(func.julianday(column) - 2440587.5, sa.Integer)


def dense_series(rows: Sequence[Any], buckets: int) -> list[int]:
    """(bucket, value) rows as a dense list of ``buckets`` values."""
    out = [0] * buckets
    for bucket, value in rows:
        if bucket is not None and 0 <= int(bucket) < buckets:
            out[int(bucket)] += int(value or 0)
    return out


def ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


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


def like_pattern(term: str) -> str:
    """``term`` as a LIKE pattern matching it anywhere, its wildcards escaped (ESCAPE '\\')."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def labels_of(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def money_units(millicents: Any) -> float:
    return int(millicents or 0) / MILLICENTS_PER_UNIT


def day_after(start: str, days: int) -> str:
    return (date.fromisoformat(start) + timedelta(days=int(days))).isoformat()


#: Which event marks where an order stands (until shipments carry their own times).


def needs_attention() -> Any:
    e, o = t.order_events, t.orders
    return sa.exists().where(e.c.order_id == o.c.order_id, e.c.type == "flagged")


def late_shipments(now: float) -> Any:
    """Shipments not yet left their node and past their planned dispatch day (UTC) at
    ``now``: a range of ``ix_shipments_state_dispatch`` per open state."""
    s = t.shipments
    return sa.and_(s.c.state.in_(OPEN_SHIPMENT_STATES), s.c.planned_dispatch < utc_day(now))
