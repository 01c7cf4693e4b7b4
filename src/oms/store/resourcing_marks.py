"""Re-sourcing marks: orders a receipt failed, still to be re-sourced.

A mark (``inbound_reservations.resource_kind``) commits with the receipt's
change; re-sourcing then runs per order (:mod:`oms.resourcing`).

May import :mod:`oms.store.database`, ``records`` and :mod:`oms.schema`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.store.database import Database
from oms.store.records import PendingResourcing, ReceiptRow


class ResourcingMarks:
    """Marks on (order, receipt) pairs: the durable record of re-sourcing still to do."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def mark(
        self,
        conn: Connection,
        receipt: ReceiptRow,
        order_ids: Iterable[str],
        kind: str,
        reason: str,
    ) -> None:
        """Mark, in the caller's transaction, that ``receipt`` failed these waiting orders.

        The mark is the durable record of work still to do (re-sourcing runs in
        each order's own transaction afterwards, or in a later sweep if that was
        cut short). An order already marked keeps its first mark: its plan still
        has the date and reason of that one.
        """
        ids = sorted(set(order_ids))
        if not ids:
            return
        r = t.inbound_reservations
        conn.execute(
            sa.update(r)
            .where(
                r.c.receipt_id == receipt.receipt_id,
                r.c.order_id.in_(ids),
                r.c.resource_kind.is_(None),
            )
            .values(resource_kind=kind, resource_reason=reason, resource_due=receipt.expected_date)
        )

    def pending(
        self, conn: Connection, receipt_ids: Sequence[str] | None = None
    ) -> list[PendingResourcing]:
        """Marked (order, receipt) pairs still waiting, oldest order first per receipt."""
        r, ir, o = t.inbound_reservations, t.inbound_receipts, t.orders
        query = (
            sa.select(
                r.c.order_id,
                r.c.receipt_id,
                ir.c.node_id,
                ir.c.sku,
                r.c.resource_due,
                r.c.resource_kind,
                r.c.resource_reason,
                # Selected for ORDER BY, which PostgreSQL requires with DISTINCT.
                ir.c.expected_date,
                o.c.created_at,
            )
            .join(ir, ir.c.receipt_id == r.c.receipt_id)
            .join(o, o.c.order_id == r.c.order_id)
            .where(r.c.resource_kind.is_not(None))
            .distinct()  # one per (order, receipt), however many rows they share
            .order_by(ir.c.expected_date, r.c.receipt_id, o.c.created_at, r.c.order_id)
        )
        if receipt_ids is not None:
            query = query.where(r.c.receipt_id.in_(list(receipt_ids)))
        return [PendingResourcing(*row[:7]) for row in conn.execute(query)]
