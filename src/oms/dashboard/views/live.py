"""Live updates: the mark an open page polls to know when to fetch its parts again."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t

#: The parts of the change mark, one row (see :func:`change_mark`).
MARK_QUERY = sa.select(
    sa.select(func.max(t.order_events.c.event_id)).scalar_subquery(),
    sa.select(func.max(t.stock_ledger.c.entry_id)).scalar_subquery(),
    sa.select(func.max(t.reservations.c.reservation_id)).scalar_subquery(),
    sa.select(func.count()).select_from(t.reservations).scalar_subquery(),
    sa.select(func.max(t.inbound_receipts.c.updated_at)).scalar_subquery(),
    sa.select(t.marks.c.value).where(t.marks.c.name == "stock_settings").scalar_subquery(),
)


def change_mark(conn: Connection) -> str:
    """A short text that changes whenever anything a page shows may have changed.

    The newest order event (the outbox every order change writes), ledger row,
    reservation and receipt change, the number of reservations (released ones
    take no new id), and the count of stock settings changes (safety stock and
    thresholds change without a ledger row; kept by triggers, migration 0013).
    Each is one index lookup but the count of reservations (an index-only scan of
    the open ones); the dashboard reads it at most once per refresh interval
    for every open page (:mod:`oms.dashboard.figures`).
    """
    marks = conn.execute(MARK_QUERY).one()
    return ".".join("-" if m is None else str(m) for m in marks)


def quote_mark(conn: Connection) -> str:
    """Changes whenever a quote is made: the newest quote's time (``ix_quotes_created``,
    one index lookup). Apart from :func:`change_mark`: quotes come all the time at
    checkout, and only the overview's conversion follows them."""
    newest = conn.execute(sa.select(func.max(t.quotes.c.created_at))).scalar()
    return "-" if newest is None else repr(float(newest))
