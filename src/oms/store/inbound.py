"""Inbound receipts and the units orders wait for on them (backorder).

Units of a receipt an order waits for (``inbound_reservations``) never count
against on hand: they are promises on stock still to come. Receiving puts the
units on hand by a ledger row, and the waiting orders' units become stock reservations.

May import :mod:`oms.store.database`, ``stock``, ``records``, :mod:`oms.schema`,
:mod:`oms.errors` and :mod:`sourcing.model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.errors import FailedPrecondition, NotFound, Precondition
from oms.store.database import Database
from oms.store.records import Position, ReceiptRow
from oms.store.stock import StockRepository
from sourcing.model import Network, Receipt


class InboundRepository:
    """Inbound receipts (OPEN, CANCELLED, RECEIVED) and the orders waiting on them."""

    def __init__(self, db: Database, stock: StockRepository) -> None:
        self.db = db
        self.stock = stock

    def receipts(
        self,
        conn: Connection,
        skus: Sequence[str] = (),
        node_ids: Sequence[str] = (),
        *,
        receipt_ids: Sequence[str] = (),
        open_only: bool = True,
        for_update: bool = False,
    ) -> list[ReceiptRow]:
        """Inbound receipts (filtered when given) with the units orders wait for."""
        r = t.inbound_receipts
        query = sa.select(r).order_by(r.c.receipt_id)
        if skus:
            query = query.where(r.c.sku.in_(list(skus)))
        if node_ids:
            query = query.where(r.c.node_id.in_(list(node_ids)))
        if receipt_ids:
            query = query.where(r.c.receipt_id.in_(list(receipt_ids)))
        if open_only:
            query = query.where(r.c.state == "OPEN")
        rows = conn.execute(self.db.lock(query) if for_update else query).all()
        ir = t.inbound_reservations
        reserved = {
            a: int(b)
            for a, b in conn.execute(
                sa.select(ir.c.receipt_id, func.sum(ir.c.qty))
                .where(ir.c.receipt_id.in_([row.receipt_id for row in rows]))
                .group_by(ir.c.receipt_id)
            )
        }
        return [
            ReceiptRow(
                row.receipt_id,
                row.node_id,
                row.sku,
                int(row.qty),
                row.expected_date,
                row.state,
                reserved.get(row.receipt_id, 0),
                None if row.received_qty is None else int(row.received_qty),
            )
            for row in rows
        ]

    def with_receipts(self, conn: Connection, network: Network, today: str) -> Network:
        """``network`` with the free units of open receipts due today or later.

        Receipts already overdue are not promised again (they are late).
        """

        start = date.fromisoformat(today)
        found = []
        for row in self.receipts(conn, network.sku_ids, network.node_ids):
            free = row.qty - row.reserved
            day = (date.fromisoformat(row.expected_date) - start).days
            if free > 0 and day >= 0 and row.node_id in network.node_index:
                found.append(Receipt(row.receipt_id, row.node_id, row.sku, free, day))
        return network.replace(receipts=tuple(found))

    def upsert(
        self, conn: Connection, receipt_id: str, node_id: str, sku: str, qty: int, date: str
    ) -> ReceiptRow | None:
        """Create or update an open receipt; returns the previous state (None if new).

        Raises FAILED_PRECONDITION for a cancelled receipt or one moved to another position.
        """
        self.stock.require_position_keys(conn, node_id, sku)
        before = self.receipts(conn, receipt_ids=[receipt_id], open_only=False, for_update=True)
        now = self.db.clock()
        values = {"qty": qty, "expected_date": date, "updated_at": now}
        if not before:
            conn.execute(
                sa.insert(t.inbound_receipts).values(
                    receipt_id=receipt_id, node_id=node_id, sku=sku, state="OPEN", **values
                )
            )
            return None
        old = before[0]
        if old.state != "OPEN" or (old.node_id, old.sku) != (node_id, sku):
            why = (
                f"is {old.state.lower()}"
                if old.state != "OPEN"
                else f"is for {old.node_id}/{old.sku}"
            )
            raise FailedPrecondition(
                f"receipt {receipt_id!r} {why}", [Precondition("RECEIPT", receipt_id, why)]
            )
        conn.execute(
            sa.update(t.inbound_receipts)
            .where(t.inbound_receipts.c.receipt_id == receipt_id)
            .values(**values)
        )
        return old

    def cancel(self, conn: Connection, receipt_id: str) -> ReceiptRow:
        rows = self.receipts(conn, receipt_ids=[receipt_id], open_only=False, for_update=True)
        if not rows:
            raise NotFound("receipt", receipt_id)
        conn.execute(
            sa.update(t.inbound_receipts)
            .where(t.inbound_receipts.c.receipt_id == receipt_id)
            .values(state="CANCELLED", updated_at=self.db.clock())
        )
        return rows[0]

    def waiting_orders(
        self, conn: Connection, receipt_id: str, *, oldest_first: bool = False
    ) -> list[tuple[str, int]]:
        """(order id, units) waiting for ``receipt_id``, newest order first (or oldest)."""
        ir, o = t.inbound_reservations, t.orders
        order = (
            (o.c.created_at, ir.c.order_id)
            if oldest_first
            else (o.c.created_at.desc(), ir.c.order_id.desc())
        )
        return [
            (a, int(b))
            for a, b in conn.execute(
                sa.select(ir.c.order_id, func.sum(ir.c.qty))
                .join(o, o.c.order_id == ir.c.order_id)
                .where(ir.c.receipt_id == receipt_id)
                .group_by(ir.c.order_id, o.c.created_at)
                .order_by(*order)
            )
        ]

    def of_order(self, conn: Connection, order_id: str) -> dict[str, int]:
        """Units per receipt an order waits for."""
        ir = t.inbound_reservations
        return {
            a: int(b)
            for a, b in conn.execute(
                sa.select(ir.c.receipt_id, func.sum(ir.c.qty))
                .where(ir.c.order_id == order_id)
                .group_by(ir.c.receipt_id)
            )
        }

    def reserve(self, conn: Connection, order_id: str, units: Mapping[str, int]) -> None:
        rows = [
            {"receipt_id": rid, "order_id": order_id, "qty": qty}
            for rid, qty in sorted(units.items())
            if qty > 0
        ]
        if rows:
            conn.execute(sa.insert(t.inbound_reservations), rows)

    def release(self, conn: Connection, order_id: str, receipt_id: str | None = None) -> None:
        ir = t.inbound_reservations
        where = [ir.c.order_id == order_id]
        if receipt_id is not None:
            where.append(ir.c.receipt_id == receipt_id)
        conn.execute(sa.delete(ir).where(*where))

    def totals(
        self, conn: Connection, skus: Sequence[str] = (), node_ids: Sequence[str] = ()
    ) -> dict[Position, tuple[int, int]]:
        """(inbound units, units orders wait for) per position, over open receipts."""
        totals: dict[Position, tuple[int, int]] = {}
        for row in self.receipts(conn, skus, node_ids):
            a, b = totals.get((row.node_id, row.sku), (0, 0))
            totals[(row.node_id, row.sku)] = (a + row.qty, b + row.reserved)
        return totals

    def receive(self, conn: Connection, receipt: ReceiptRow, qty: int, reason: str) -> None:
        """Put ``qty`` units of an open receipt on hand (one ledger row) and mark it RECEIVED.

        The caller holds the position's lock (:meth:`StockRepository.lock_positions`)
        and the receipt's.
        """
        # A new position (ON CONFLICT: a concurrent receipt may create it too).
        conn.execute(
            self.db.insert(t.stock)
            .values(
                node_id=receipt.node_id,
                sku=receipt.sku,
                on_hand=0,
                safety_stock=0,
                low_stock_threshold=0,
            )
            .on_conflict_do_nothing(index_elements=["node_id", "sku"])
        )
        self.stock.ledger(
            conn, receipt.node_id, receipt.sku, qty, f"receipt {receipt.receipt_id}: {reason}", None
        )
        now = self.db.clock()
        conn.execute(
            sa.update(t.inbound_receipts)
            .where(t.inbound_receipts.c.receipt_id == receipt.receipt_id)
            .values(state="RECEIVED", received_qty=qty, received_at=now, updated_at=now)
        )

    def to_stock(self, conn: Connection, order_id: str, receipt: ReceiptRow, qty: int) -> None:
        """An order's units waiting for ``receipt`` become an ordinary stock reservation.

        They use no daily capacity: units from receipts never did (they leave later).
        """
        self.release(conn, order_id, receipt.receipt_id)
        conn.execute(
            sa.insert(t.reservations).values(
                node_id=receipt.node_id,
                sku=receipt.sku,
                qty=qty,
                quote_id=None,
                order_id=order_id,
                expires_at=None,
                capacity_day=None,
            )
        )

    def overdue(self, conn: Connection, today: str) -> list[ReceiptRow]:
        """Open receipts expected before ``today`` with orders waiting that are not marked yet."""
        r, ir = t.inbound_receipts, t.inbound_reservations
        ids = [
            row.receipt_id
            for row in conn.execute(
                sa.select(r.c.receipt_id)
                .where(
                    r.c.state == "OPEN",
                    r.c.expected_date < today,
                    sa.exists().where(
                        ir.c.receipt_id == r.c.receipt_id, ir.c.resource_kind.is_(None)
                    ),
                )
                .order_by(r.c.expected_date, r.c.receipt_id)
            )
        ]
        if not ids:
            return []
        rows = {
            row.receipt_id: row for row in self.receipts(conn, receipt_ids=ids, open_only=False)
        }
        return [rows[i] for i in ids if i in rows]
