"""``Store``: the database and its repositories, as one object per process.

Use cases take the repositories they need (``store.orders.get(conn, ...)``)
inside one transaction (``with store.write() as conn``, the unit of work).
The aliases below keep the pre-split names (``store.get_order``) working while
callers move to the repositories; each is the repository's bound method.

A new aggregate (shipments, say) is a module beside the others with one
repository class, built from the :class:`Database` and the lower repositories
it uses, constructed in :meth:`Store.__init__` and named in the store's layers
contract in ``pyproject.toml`` (``scripts/check_layout.py`` checks it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from oms.store.capacity import CapacityRepository
from oms.store.catalog import NetworkRepository
from oms.store.database import Database
from oms.store.inbound import InboundRepository
from oms.store.orders import OrderRepository
from oms.store.quotes import QuoteRepository
from oms.store.resourcing_marks import ResourcingMarks
from oms.store.shipments import ShipmentRepository
from oms.store.stock import StockRepository


class Store:
    """All persistence of the service. Thread-safe; one per process."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 16,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
        session_settings: Mapping[str, str] | None = None,
        connect_timeout_s: float | None = None,
    ) -> None:
        self.db = db = Database(
            url,
            pool_size=pool_size,
            clock=clock,
            read_only=read_only,
            session_settings=session_settings,
            connect_timeout_s=connect_timeout_s,
        )
        self.url, self.engine, self.is_sqlite, self.clock = db.url, db.engine, db.is_sqlite, clock
        self.read, self.write, self.migrate, self.dispose = (
            db.read,
            db.write,
            db.migrate,
            db.dispose,
        )

        # One repository per aggregate, all working in the caller's transaction.
        self.capacity = CapacityRepository(db)
        self.stock = StockRepository(db, self.capacity)
        self.network = NetworkRepository(db, self.stock, self.capacity)
        self.quotes = QuoteRepository(db, self.stock)
        self.inbound = InboundRepository(db, self.stock)
        self.shipments = ShipmentRepository(db, self.stock, self.network)
        self.orders = OrderRepository(db, self.stock, self.capacity, self.inbound, self.shipments)
        self.resourcing = ResourcingMarks(db)

        # The pre-split API (callers move to the repositories above progressively).
        network, stock, quotes, orders, inbound = (
            self.network,
            self.stock,
            self.quotes,
            self.orders,
            self.inbound,
        )
        self.is_empty, self.load_network = network.is_empty, network.load
        self.upsert_nodes, self.upsert_skus = network.upsert_nodes, network.upsert_skus
        self.replace_rate_card, self.catalog = network.replace_rate_card, network.catalog
        self.network_for = network.for_skus
        self.positions, self.set_stock, self.adjust_stock = (
            stock.positions,
            stock.set_stock,
            stock.adjust_stock,
        )
        self.shortages, self.lock_free_units = stock.shortages, stock.lock_free_units
        self.lock_positions, self.ledger_mismatches = stock.lock_positions, stock.ledger_mismatches
        self.use_capacity = self.capacity.use
        self.give_back_capacity = self.capacity.give_back
        self.save_quote, self.get_quote = quotes.save, quotes.get
        self.hold_option, self.release_holds = quotes.hold_option, quotes.release_holds
        self.find_order_by_key = orders.find_by_key
        self.lock_idempotency_key = orders.lock_idempotency_key
        self.insert_order, self.add_event = orders.insert, orders.add_event
        self.get_order, self.list_orders = orders.get, orders.page
        self.set_state, self.update_allocation = orders.set_state, orders.update_allocation
        self.release_reservations = orders.release_reservations
        self.consume_reservations = orders.consume_reservations
        self.order_reservations = orders.reservations
        self.release_order_units = orders.release_units
        self.reserve_order_units = orders.reserve_units
        self.returned_units, self.return_by_key = orders.returned_units, orders.return_by_key
        self.record_return = orders.record_return
        self.returned_by_shipment = orders.returned_by_shipment
        self.refresh_state = self.shipments.refresh_state
        self.consume_shipment = self.shipments.consume
        self.receipts, self.with_receipts = inbound.receipts, inbound.with_receipts
        self.upsert_receipt, self.cancel_receipt = inbound.upsert, inbound.cancel
        self.receipt_orders, self.order_inbound = inbound.waiting_orders, inbound.of_order
        self.reserve_inbound, self.release_inbound = inbound.reserve, inbound.release
        self.inbound_totals, self.receive_receipt = inbound.totals, inbound.receive
        self.inbound_to_stock, self.overdue_receipts = inbound.to_stock, inbound.overdue
        self.mark_for_resourcing = self.resourcing.mark
        self.pending_resourcing = self.resourcing.pending
