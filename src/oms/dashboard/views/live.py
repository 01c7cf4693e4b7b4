"""Live updates: the mark an open page polls to know when to fetch its parts again."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t


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
