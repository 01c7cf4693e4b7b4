"""The OMS store: one repository per aggregate over one database, SQLite or PostgreSQL.

* :mod:`~oms.store.database`: the engine, transactions (a use case's unit of
  work is one ``write()`` transaction, handed to every repository it calls)
  and the SQLite writer queue;
* :mod:`~oms.store.catalog` (nodes, SKUs, zones, rates; the live network a
  quote solves on), :mod:`~oms.store.stock` (positions, ledger, the locks of
  the no-oversell rule), :mod:`~oms.store.capacity` (daily capacity),
  :mod:`~oms.store.quotes` (quotes, checkout holds), :mod:`~oms.store.orders`
  (orders, events, returns, their reservations), :mod:`~oms.store.inbound`
  (receipts and the orders waiting on them), :mod:`~oms.store.resourcing_marks`
  (orders a receipt failed): the repositories, each documenting its SQL and locks;
* :mod:`~oms.store.records`, :mod:`~oms.store.plans`: the frozen records handed to
  the service (a quote's request and options, an order's allocation: :class:`Plan`);
* :mod:`~oms.store.facade`: :class:`Store`, the database and its repositories.

The store may import :mod:`oms.schema`, :mod:`oms.driver_sql`, :mod:`oms.errors`
and the engine's :mod:`sourcing.model`; never the servicers or any other part of
:mod:`oms` (checked by ``scripts/check_layout.py``). The schema lives in
:mod:`oms.schema`; Alembic migrations in :mod:`oms.migrations`.
"""

from oms.store.catalog import Catalog
from oms.store.database import Database, make_engine, normalise_url, utc_day
from oms.store.facade import Store
from oms.store.plans import CartLine, Plan, PlanLine, PlannedParcel, QuoteRequest
from oms.store.quotes import PURGE_EVERY_S
from oms.store.records import (
    Availability,
    Hold,
    OrderRow,
    PendingResourcing,
    Position,
    QuoteRow,
    ReceiptRow,
    RecordedReturn,
    check_placeable,
    order_reservation_rows,
    units_by_node,
    units_of,
)
from oms.store.stock import MAX_UNITS

__all__ = [
    "MAX_UNITS",
    "PURGE_EVERY_S",
    "Availability",
    "CartLine",
    "Catalog",
    "Database",
    "Hold",
    "OrderRow",
    "PendingResourcing",
    "Plan",
    "PlanLine",
    "PlannedParcel",
    "Position",
    "QuoteRequest",
    "QuoteRow",
    "ReceiptRow",
    "RecordedReturn",
    "Store",
    "check_placeable",
    "make_engine",
    "normalise_url",
    "order_reservation_rows",
    "units_by_node",
    "units_of",
    "utc_day",
]
