"""Live updates: the mark an open page polls to know when to fetch its parts again."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t

#: The parts of the change mark, one row (see :func:`change_mark`).
MARK_QUERY = sa.select(
    sa.select(func.max(t.order_events.c.seq)).scalar_subquery(),
    sa.select(func.max(t.stock_ledger.c.entry_id)).scalar_subquery(),
    sa.select(func.max(t.reservations.c.reservation_id)).scalar_subquery(),
    sa.select(func.count()).select_from(t.reservations).scalar_subquery(),
    sa.select(func.max(t.inbound_receipts.c.updated_at)).scalar_subquery(),
    sa.select(t.marks.c.value).where(t.marks.c.name == "stock_settings").scalar_subquery(),
)


def change_mark(conn: Connection) -> str:
    """A short text that changes whenever anything a page shows may have changed.

    The newest order event's sequence, ledger row, reservation and receipt change,
    the number of reservations (released ones take no new id), and the count of
    stock settings changes (safety stock and thresholds change without a ledger row;
    kept by triggers, migration 0013).

    Commit order: ids are handed out at insert, so on PostgreSQL a transaction with a
    smaller id can commit after a mark showing a bigger one was read. The events'
    ``seq`` is numbered in commit order (:mod:`oms.store.outbox`), and every order
    change (placing, releasing, re-sourcing, shipping, cancelling, returns, receipts
    allocated to orders) writes its ledger rows and reservations with an event in the
    same transaction, so the mark moves when any of those commits. What has no event,
    stock counts and adjustments, receipts' own changes and checkout holds, is followed
    by ids and times only: one of them committing late behind a bigger id is not seen
    until something else moves the mark or the figures turn ``unchanged_s`` old
    (:mod:`oms.dashboard.figures`, 30 s by default).

    Each is one index lookup (``ux_order_events_seq`` for the sequence) but the count
    of reservations (an index-only scan of the open ones); the dashboard reads it at
    most once per refresh interval for every open page.
    """
    marks = conn.execute(MARK_QUERY).one()
    return ".".join("-" if m is None else str(m) for m in marks)


def quote_mark(conn: Connection) -> str:
    """Changes whenever a quote is made: the newest quote's time (``ix_quotes_created``,
    one index lookup). Apart from :func:`change_mark`: quotes come all the time at
    checkout, and only the overview's conversion follows them."""
    newest = conn.execute(sa.select(func.max(t.quotes.c.created_at))).scalar()
    return "-" if newest is None else repr(float(newest))
