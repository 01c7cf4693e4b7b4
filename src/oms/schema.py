"""The store's tables (SQLAlchemy Core), shared by the store and its migrations' check.

Money is integer millicents (1e-5 currency units, the engine's unit: planner
money has up to five decimals; cents before migration 0008); times are UTC
epoch seconds (float) so SQLite and PostgreSQL compare them the same way.

* ``network_meta``: one row per key; ``network_version`` is bumped by every
  change to nodes, SKUs, zones or rates, so servers know when to reload them.
* ``nodes``, ``skus``, ``zones``, ``rates``: the network (DESIGN section 7).
* ``stock``: one row per (node, SKU) position: ``on_hand`` is the running sum
  of ``stock_ledger`` (kept in the same transaction as each ledger row),
  ``safety_stock`` and ``low_stock_threshold`` are settings. Availability is
  derived: on_hand - safety_stock - the live ``reservations``.
* ``reservations``: units promised out of a position, either held for a
  checkout in progress (``quote_id`` set, ``expires_at`` set: ignored once
  expired; ``holder`` the caller it counts against, migration 0009) or reserved
  by an order (``order_id`` set, no expiry) until it ships or is cancelled.
  Quotes themselves hold nothing.
* ``node_day_usage``: units orders promised out of a node on a UTC day,
  checked against its daily capacity (checkout holds do not count); each order
  reservation names the day it counts on (``capacity_day``).
* ``quotes``: the options a quote offered (JSON) and the order that used it.
* ``orders``, ``order_events``, ``order_returns``: order state and history.
  ``shipments`` (migration 0012): one per parcel, each with its own life; the
  order's ``state`` is derived from them and rewritten with every change.
  ``order_events`` is also the outbox feed, numbered by ``event_counter``.
  The order's plan facts the dashboard aggregates (labels, parcel count,
  shipping, handling, storage credit, cost) are generated columns read from
  ``allocation_json`` by the database itself (migration 0007), so every writer
  of an allocation keeps them true without knowing they exist; inserts name
  only the other columns (:data:`WRITABLE`).
* ``inbound_receipts``: units a node expects on a date (OPEN, CANCELLED or
  RECEIVED, with ``received_qty``: receiving puts those units on hand by a ledger row);
  ``inbound_reservations``: units of a receipt an order waits for (backorder).
  They never count against on hand: they are promises on stock still to come.
  A row marked ``resource_kind`` is an order the receipt failed, still to be
  re-sourced (the mark commits with the receipt's change; see :mod:`oms.receiving`).
* ``reprice_runs``, ``opportunity_costs``: the forward-looking prices ``oms
  reprice`` writes (:mod:`oms.reprice`); quotes read the latest run.
* ``dash_*_days``: the dashboard's daily rollups of orders, quotes, events and
  units shipped, kept by triggers (migration 0011); read-only to the code.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Computed,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnElement

metadata = MetaData()


class AllocationField(ColumnElement[Any]):
    """A field of ``orders.allocation_json`` as the database reads it (a generated column).

    ``kind``: ``number`` (an integer field), ``length`` (the length of an array
    field) or ``json`` (the field as JSON text, e.g. ``["CHEAPEST","BALANCED"]``).
    """

    inherit_cache = True

    def __init__(self, key: str, kind: str) -> None:
        self.key = key
        self.kind = kind


@compiles(AllocationField, "postgresql")
def _allocation_field_postgresql(element: AllocationField, compiler: SQLCompiler, **kw: Any) -> str:
    doc = "(allocation_json::jsonb)"
    if element.kind == "length":
        return f"jsonb_array_length({doc} -> '{element.key}')"
    if element.kind == "json":
        return f"(({doc} -> '{element.key}')::text)"
    return f"(({doc} ->> '{element.key}')::bigint)"


@compiles(AllocationField, "sqlite")
def _allocation_field_sqlite(element: AllocationField, compiler: SQLCompiler, **kw: Any) -> str:
    if element.kind == "length":
        return f"json_array_length(allocation_json, '$.{element.key}')"
    return f"json_extract(allocation_json, '$.{element.key}')"


def _generated(name: str, type_: Any, key: str, kind: str = "number") -> Column[Any]:
    # persisted=None: each dialect's default (PostgreSQL: STORED; SQLite: VIRTUAL);
    # migration 0007 says which explicitly.
    return Column(name, type_, Computed(AllocationField(key, kind)), nullable=True)


network_meta = Table(
    "network_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

nodes = Table(
    "nodes",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("lat", Float, nullable=False),
    Column("lon", Float, nullable=False),
    Column("handling_days", Integer, nullable=False),
    Column("handling_cost", BigInteger, nullable=False),
    Column("storage_cost", BigInteger, nullable=False),
    # NULL: unlimited.
    Column("daily_capacity_units", BigInteger, nullable=True),
)

skus = Table(
    "skus",
    metadata,
    Column("sku", String(128), primary_key=True),
    Column("weight_g", BigInteger, nullable=False),
    Column("daily_demand", Float, nullable=False),
)

zones = Table(
    "zones",
    metadata,
    Column("zone", String(64), primary_key=True),
    Column("max_km", Float, nullable=False),
)

rates = Table(
    "rates",
    metadata,
    Column("service", String(64), primary_key=True),
    Column("zone", String(64), primary_key=True),
    Column("base_price", BigInteger, nullable=False),
    Column("per_kg", BigInteger, nullable=False),
    Column("transit_days", Integer, nullable=False),
)

stock = Table(
    "stock",
    metadata,
    Column("node_id", String(128), ForeignKey("nodes.node_id"), primary_key=True),
    Column("sku", String(128), ForeignKey("skus.sku"), primary_key=True),
    Column("on_hand", BigInteger, nullable=False),
    Column("safety_stock", BigInteger, nullable=False),
    Column("low_stock_threshold", BigInteger, nullable=False),
    Index("ix_stock_sku", "sku"),
)

stock_ledger = Table(
    "stock_ledger",
    metadata,
    Column("entry_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("node_id", String(128), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("order_id", String(64), nullable=True),
    Column("at", Float, nullable=False),
    # The shipment that took the units off on hand, or that returned units came from
    # (migration 0012).
    Column("shipment_id", String(64), nullable=True),
    Index("ix_stock_ledger_position", "node_id", "sku"),
    # An order's stock movements (the dashboard's order page).
    Index(
        "ix_stock_ledger_order",
        "order_id",
        sqlite_where=text("order_id IS NOT NULL"),
        postgresql_where=text("order_id IS NOT NULL"),
    ),
    # Units that left a node for an order (shipments), by time: the dashboard's
    # volume shipped per node, read from this index alone.
    Index(
        "ix_stock_ledger_shipped",
        "at",
        "node_id",
        "delta",
        sqlite_where=text("order_id IS NOT NULL AND delta < 0"),
        postgresql_where=text("order_id IS NOT NULL AND delta < 0"),
    ),
)

reservations = Table(
    "reservations",
    metadata,
    Column("reservation_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("node_id", String(128), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("qty", BigInteger, nullable=False),
    Column("quote_id", String(64), nullable=True),
    Column("order_id", String(64), nullable=True),
    Column("expires_at", Float, nullable=True),
    # The UTC day whose node capacity (node_day_usage) these order units used
    # (migration 0005): the day they were promised out of the node, at placement
    # or at re-sourcing. NULL for checkout holds and for units that came from a
    # receipt, which use none. Releasing units gives back that day's capacity.
    Column("capacity_day", String(10), nullable=True),
    # The caller a checkout hold counts against (migration 0009): "anon:<address>" or
    # "token:<kind>/<x-client-id>", capped per caller. NULL for order reservations.
    Column("holder", String(160), nullable=True),
    Index("ix_reservations_position", "sku", "node_id"),
    Index("ix_reservations_quote", "quote_id"),
    Index("ix_reservations_order", "order_id"),
    Index("ix_reservations_holder", "holder"),
)

node_day_usage = Table(
    "node_day_usage",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("units", BigInteger, nullable=False),
)

quotes = Table(
    "quotes",
    metadata,
    Column("quote_id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("quote_date", String(10), nullable=False),
    Column("request_json", Text, nullable=False),
    Column("options_json", Text, nullable=False),
    Column("order_id", String(64), nullable=True),
    # Quotes per period (the dashboard's quote-to-order conversion).
    Index("ix_quotes_created", "created_at"),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("quote_id", String(64), nullable=False),
    Column("option_id", String(64), nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    # Derived from the order's shipments (migration 0012 widened it for PARTIALLY_DELIVERED).
    Column("state", String(24), nullable=False),
    Column("dest_lat", Float, nullable=False),
    Column("dest_lon", Float, nullable=False),
    Column("lines_json", Text, nullable=False),
    Column("allocation_json", Text, nullable=False),
    Column("promised_date", String(10), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Bumped by every change: the batch job writes only orders still at the version it read.
    Column("version", Integer, nullable=False),
    # Generated from allocation_json (migration 0007), for the dashboard's aggregates.
    _generated("option_labels", Text, "labels", "json"),
    _generated("parcel_count", Integer, "parcels", "length"),
    _generated("shipping_cost", BigInteger, "shipping"),
    _generated("handling_cost", BigInteger, "handling"),
    _generated("storage_credit", BigInteger, "storage_credit"),
    _generated("total_cost", BigInteger, "cost"),
    UniqueConstraint("idempotency_key", name="uq_orders_idempotency_key"),
    Index("ix_orders_state_created", "state", "created_at"),
    # Newest first with the id as tiebreak (the orders search's keyset), and periods.
    Index("ix_orders_created", "created_at", "order_id"),
)

#: The columns of each table a writer names (generated columns are the database's).
WRITABLE: dict[str, tuple[str, ...]] = {}

order_events = Table(
    "order_events",
    metadata,
    Column("event_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.order_id"), nullable=False),
    Column("at", Float, nullable=False),
    Column("type", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    # The outbox feed's sequence (migration 0012): gapless, allocated from
    # ``event_counter`` in commit order (PostgreSQL: just before the writing transaction
    # commits, so NULL only inside it; SQLite: at insert). See :mod:`oms.store.outbox`.
    Column("seq", BigInteger, nullable=True),
    # Set for an event about one shipment, and its node (a node's work feed).
    Column("shipment_id", String(64), nullable=True),
    Column("node_id", String(128), nullable=True),
    Index("ix_order_events_order", "order_id"),
    # The dashboard counts events of a kind over a period (deliveries, flags).
    Index("ix_order_events_type_at", "type", "at"),
    Index("ux_order_events_seq", "seq", unique=True),
    # The writing transaction's own events still to number (tiny: empty between writes).
    Index(
        "ix_order_events_unsequenced",
        "event_id",
        sqlite_where=text("seq IS NULL"),
        postgresql_where=text("seq IS NULL"),
    ),
    Index(
        "ix_order_events_node_seq",
        "node_id",
        "seq",
        sqlite_where=text("node_id IS NOT NULL"),
        postgresql_where=text("node_id IS NOT NULL"),
    ),
)

#: The outbox's sequence counter (migration 0012): one row per feed, ``value`` the last
#: sequence handed out. Its row lock orders the event-writing transactions' commits.
event_counter = Table(
    "event_counter",
    metadata,
    Column("feed", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

#: One row per parcel of an order's allocation (migration 0012): the unit of fulfilment.
#: ``allocation_json``'s parcels carry their ``shipment_id``; ``lines_json`` repeats the
#: parcel's lines (``[{"line", "sku", "qty"}]``) so a shipment that left keeps its contents
#: when the allocation changes later. Days are ISO dates (UTC).
shipments = Table(
    "shipments",
    metadata,
    Column("shipment_id", String(64), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.order_id"), nullable=False),
    Column("node_id", String(128), nullable=False),
    Column("service", String(64), nullable=False),
    Column("lines_json", Text, nullable=False),
    Column("state", String(20), nullable=False),
    Column("planned_dispatch", String(10), nullable=False),
    Column("planned_arrival", String(10), nullable=False),
    Column("carrier", String(64), nullable=True),
    Column("tracking_number", String(128), nullable=True),
    Column("shipped_at", Float, nullable=True),
    Column("delivered_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("reason", Text, nullable=True),
    Column("replaces", String(64), nullable=True),
    Index("ix_shipments_order", "order_id"),
    # A node's work by state (ListShipments), in creation order.
    Index("ix_shipments_node_state", "node_id", "state", "created_at", "shipment_id"),
    # Late shipments: open ones by planned dispatch day.
    Index("ix_shipments_state_dispatch", "state", "planned_dispatch"),
)

order_returns = Table(
    "order_returns",
    metadata,
    Column("return_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.order_id"), nullable=False),
    Column("sku", String(128), nullable=False),
    Column("qty", BigInteger, nullable=False),
    Column("node_id", String(128), nullable=False),
    Column("at", Float, nullable=False),
    Column("idempotency_key", String(128), nullable=True),
    # What the call's return cost (millicents), repeated on each SKU row of the call:
    # a retry with the same key answers it again (migration 0006; older rows: NULL).
    Column("return_cost", BigInteger, nullable=True),
    # The shipment the units came from (migration 0012; older rows: NULL).
    Column("shipment_id", String(64), nullable=True),
    Index("ix_order_returns_order", "order_id"),
)

inbound_receipts = Table(
    "inbound_receipts",
    metadata,
    Column("receipt_id", String(64), primary_key=True),
    Column("node_id", String(128), ForeignKey("nodes.node_id"), nullable=False),
    Column("sku", String(128), ForeignKey("skus.sku"), nullable=False),
    Column("qty", BigInteger, nullable=False),
    Column("expected_date", String(10), nullable=False),
    Column("state", String(16), nullable=False),
    Column("updated_at", Float, nullable=False),
    # Set when the receipt is RECEIVED (migration 0003): the units that arrived, and when.
    Column("received_qty", BigInteger, nullable=True),
    Column("received_at", Float, nullable=True),
    Index("ix_inbound_receipts_position", "sku", "node_id"),
    # The newest receipt change (the dashboard's change mark, migration 0013).
    Index("ix_inbound_receipts_updated", "updated_at"),
)

inbound_reservations = Table(
    "inbound_reservations",
    metadata,
    Column("reservation_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("receipt_id", String(64), ForeignKey("inbound_receipts.receipt_id"), nullable=False),
    Column("order_id", String(64), ForeignKey("orders.order_id"), nullable=False),
    Column("qty", BigInteger, nullable=False),
    # Set (migration 0004) in the transaction that made the receipt fail this
    # order (cut, moved later, overdue, cancelled, arrived short): the order's
    # units must be re-sourced, with this event kind and reason, off the
    # expected date the order was planned on. Re-sourcing deletes the row, so a
    # marked row is work still to do, whichever process crashed.
    Column("resource_kind", String(32), nullable=True),
    Column("resource_reason", Text, nullable=True),
    Column("resource_due", String(10), nullable=True),
    Index("ix_inbound_reservations_receipt", "receipt_id"),
    Index("ix_inbound_reservations_order", "order_id"),
)

#: ``oms reprice`` (migration 0010): each run of the forward-looking prices, and per
#: (node, SKU) the opportunity cost of one unit in millicents (only positions priced
#: above zero), which quotes add to a unit's cost when ``forward_prices`` is on.
reprice_runs = Table(
    "reprice_runs",
    metadata,
    Column("run_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("computed_at", Float, nullable=False),
    Column("horizon_days", Float, nullable=False),
    Column("orders_seen", Integer, nullable=False),
    Column("expected_units", Float, nullable=False),
    Column("positions", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
)

opportunity_costs = Table(
    "opportunity_costs",
    metadata,
    Column("run_id", BigInteger, ForeignKey("reprice_runs.run_id"), primary_key=True),
    Column("node_id", String(128), primary_key=True),
    Column("sku", String(128), primary_key=True),
    Column("millicents", BigInteger, nullable=False),
)

#: The dashboard's daily rollups (migration 0011): sums per UTC day (``day``: days since
#: 1970-01-01) that triggers keep in every writing transaction, so a period's overview
#: reads a few hundred rows. Each row is split in ``shard``s (PostgreSQL: the writing
#: backend's pid modulo 8; SQLite: 0) that readers add up. Nothing else writes them.
ROLLUP_LABELS = ("cheapest", "fastest", "single_parcel", "balanced", "collect")


def _rollup(name: str, keys: list[Column[Any]], sums: tuple[str, ...]) -> Table:
    return Table(
        name,
        metadata,
        Column("day", Integer, primary_key=True, autoincrement=False),
        *keys,
        Column("shard", SmallInteger, primary_key=True, autoincrement=False),
        *(Column(s, BigInteger, nullable=False) for s in sums),
    )


#: Orders by the day they were created and their current state, with their plan's sums.
order_days = _rollup(
    "dash_order_days",
    [Column("state", String(24), primary_key=True)],
    ("orders", "shipping", "handling", "storage_credit", "parcels", "split", *ROLLUP_LABELS),
)
#: Quotes by the day they were created.
quote_days = _rollup("dash_quote_days", [], ("quotes",))
#: ``delivered`` and ``flagged`` events by day; ``kept``: deliveries on or before the promise.
event_days = _rollup(
    "dash_event_days", [Column("type", String(32), primary_key=True)], ("events", "kept")
)
#: Units that left each node for an order (ledger rows with an order and delta < 0), by day.
node_shipped_days = _rollup(
    "dash_node_shipped_days", [Column("node_id", String(128), primary_key=True)], ("units",)
)
#: Named counters of the dashboard's change mark (migration 0013): ``stock_settings``
#: counts changes of a position's safety stock or threshold (triggers on ``stock``).
marks = Table(
    "dash_marks",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

WRITABLE.update(
    {
        table.name: tuple(c.name for c in table.columns if c.computed is None)
        for table in metadata.sorted_tables
    }
)
