"""Shipments (one per parcel, each with its own life) and the numbered order event feed.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-06

* ``shipments``: one row per parcel of every order's allocation. Orders placed
  before this revision get theirs from their allocation: each parcel gets a
  ``shipment_id`` (written into ``allocation_json`` too) and a state from the
  order's: PLACED -> PENDING, RELEASED -> REQUESTED, SHIPPED -> SHIPPED (ship
  time: the order's last update), DELIVERED -> DELIVERED, CANCELLED -> CANCELLED.
  Planned dispatch: the parcel's arrival less its service's transit days for its
  zone (the node's handling days when the rate card has no such lane).
* ``order_events`` gains ``seq`` (the outbox feed's gapless sequence: existing
  events are numbered in their insertion order), ``shipment_id`` and ``node_id``;
  ``event_counter`` holds the last sequence handed out.
* ``stock_ledger`` and ``order_returns`` gain ``shipment_id``; ``orders.state`` widens to
  24 characters for the derived states (PARTIALLY_DELIVERED).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None

_STATE = {
    "PLACED": "PENDING",
    "RELEASED": "REQUESTED",
    "SHIPPED": "SHIPPED",
    "DELIVERED": "DELIVERED",
    "CANCELLED": "CANCELLED",
}


def _widen_state(old: int, new: int) -> None:
    """``orders.state`` from VARCHAR(old) to VARCHAR(new): PARTIALLY_DELIVERED is 19 long.

    SQLite ignores the length (both are TEXT affinity, stored alike), so only the declared
    type changes: rewritten in ``sqlite_master`` as SQLite's ALTER TABLE documentation
    allows for changes that leave the stored format as it is. Rebuilding the table
    (batch mode) is not possible here: SQLAlchemy misreads the generated columns that
    migration 0007 added with ALTER TABLE.
    """
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        op.alter_column("orders", "state", type_=sa.String(new), existing_nullable=False)
        return
    version = conn.exec_driver_sql("PRAGMA schema_version").scalar() or 0
    conn.exec_driver_sql("PRAGMA writable_schema = ON")
    conn.execute(
        sa.text(
            "UPDATE sqlite_master SET sql = replace(sql, :old, :new)"
            " WHERE type = 'table' AND name = 'orders'"
        ),
        {"old": f"state VARCHAR({old}) NOT NULL", "new": f"state VARCHAR({new}) NOT NULL"},
    )
    conn.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    conn.exec_driver_sql("PRAGMA writable_schema = OFF")


def _schema() -> None:
    op.create_table(
        "shipments",
        sa.Column("shipment_id", sa.String(64), primary_key=True),
        sa.Column("order_id", sa.String(64), sa.ForeignKey("orders.order_id"), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("lines_json", sa.Text(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("planned_dispatch", sa.String(10), nullable=False),
        sa.Column("planned_arrival", sa.String(10), nullable=False),
        sa.Column("carrier", sa.String(64), nullable=True),
        sa.Column("tracking_number", sa.String(128), nullable=True),
        sa.Column("shipped_at", sa.Float(), nullable=True),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("replaces", sa.String(64), nullable=True),
    )
    op.create_index("ix_shipments_order", "shipments", ["order_id"])
    op.create_index(
        "ix_shipments_node_state", "shipments", ["node_id", "state", "created_at", "shipment_id"]
    )
    op.create_index("ix_shipments_state_dispatch", "shipments", ["state", "planned_dispatch"])
    op.create_table(
        "event_counter",
        sa.Column("feed", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.add_column("order_events", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.add_column("order_events", sa.Column("shipment_id", sa.String(64), nullable=True))
    op.add_column("order_events", sa.Column("node_id", sa.String(128), nullable=True))
    op.add_column("stock_ledger", sa.Column("shipment_id", sa.String(64), nullable=True))
    op.add_column("order_returns", sa.Column("shipment_id", sa.String(64), nullable=True))


def _indexes() -> None:
    op.create_index("ux_order_events_seq", "order_events", ["seq"], unique=True)
    op.create_index(
        "ix_order_events_unsequenced",
        "order_events",
        ["event_id"],
        sqlite_where=sa.text("seq IS NULL"),
        postgresql_where=sa.text("seq IS NULL"),
    )
    op.create_index(
        "ix_order_events_node_seq",
        "order_events",
        ["node_id", "seq"],
        sqlite_where=sa.text("node_id IS NOT NULL"),
        postgresql_where=sa.text("node_id IS NOT NULL"),
    )


def _backfill_shipments(conn: sa.Connection) -> None:
    transit = {
        (service, zone): int(days)
        for service, zone, days in conn.execute(
            sa.text("SELECT service, zone, transit_days FROM rates")
        )
    }
    handling = {
        node: int(days)
        for node, days in conn.execute(sa.text("SELECT node_id, handling_days FROM nodes"))
    }
    orders = conn.execute(
        sa.text(
            "SELECT o.order_id, o.state, o.allocation_json, o.created_at, o.updated_at,"
            " q.quote_date FROM orders o LEFT JOIN quotes q ON q.quote_id = o.quote_id"
        )
    ).all()
    for order_id, state, document, created_at, updated_at, quote_date in orders:
        allocation = json.loads(document)
        if not allocation.get("parcels"):
            continue  # nothing allocated (or a document this revision cannot read): no shipment
        # Days count from the quote's date (documents before 0009 did not repeat it).
        start = date.fromisoformat(
            allocation.get("start_date")
            or quote_date
            or datetime.fromtimestamp(created_at, UTC).date().isoformat()
        )
        rows = []
        for parcel in allocation["parcels"]:
            parcel["shipment_id"] = "s_" + uuid.uuid4().hex
            arrival = int(parcel["arrival_days"])
            lane = transit.get((parcel["service"], str(parcel.get("zone"))))
            dispatch = (
                max(0, arrival - lane)
                if lane is not None
                else max(0, min(arrival, handling.get(parcel["node_id"], 0)))
            )
            shipped = state in ("SHIPPED", "DELIVERED")
            rows.append(
                {
                    "shipment_id": parcel["shipment_id"],
                    "order_id": order_id,
                    "node_id": parcel["node_id"],
                    "service": parcel["service"],
                    "lines_json": json.dumps(
                        [
                            {"line": pl["line"], "sku": pl["sku"], "qty": int(pl["qty"])}
                            for pl in parcel["lines"]
                        ],
                        separators=(",", ":"),
                    ),
                    "state": _STATE.get(state, "PENDING"),
                    "planned_dispatch": (start + timedelta(days=dispatch)).isoformat(),
                    "planned_arrival": (start + timedelta(days=arrival)).isoformat(),
                    "shipped_at": updated_at if shipped else None,
                    "delivered_at": updated_at if state == "DELIVERED" else None,
                    "created_at": created_at,
                    "updated_at": updated_at,
                    "reason": "created from the order's allocation (migration 0012)",
                }
            )
        if rows:
            conn.execute(
                sa.text(
                    "INSERT INTO shipments (shipment_id, order_id, node_id, service, lines_json,"
                    " state, planned_dispatch, planned_arrival, shipped_at, delivered_at,"
                    " created_at, updated_at, reason) VALUES (:shipment_id, :order_id, :node_id,"
                    " :service, :lines_json, :state, :planned_dispatch, :planned_arrival,"
                    " :shipped_at, :delivered_at, :created_at, :updated_at, :reason)"
                ),
                rows,
            )
            conn.execute(
                sa.text("UPDATE orders SET allocation_json = :doc WHERE order_id = :order_id"),
                {"doc": json.dumps(allocation, separators=(",", ":")), "order_id": order_id},
            )


def upgrade() -> None:
    _widen_state(16, 24)
    _schema()
    conn = op.get_bind()
    _backfill_shipments(conn)
    conn.execute(
        sa.text(
            "UPDATE order_events SET seq = numbered.rn FROM"
            " (SELECT event_id, ROW_NUMBER() OVER (ORDER BY event_id) AS rn FROM order_events)"
            " AS numbered WHERE order_events.event_id = numbered.event_id"
        )
    )
    conn.execute(
        sa.text(
            "INSERT INTO event_counter (feed, value)"
            " SELECT 'order_events', COUNT(*) FROM order_events"
        )
    )
    _indexes()


def downgrade() -> None:
    _widen_state(24, 16)
    op.drop_index("ix_order_events_node_seq", "order_events")
    op.drop_index("ix_order_events_unsequenced", "order_events")
    op.drop_index("ux_order_events_seq", "order_events")
    with op.batch_alter_table("order_returns") as batch:
        batch.drop_column("shipment_id")
    with op.batch_alter_table("stock_ledger") as batch:
        batch.drop_column("shipment_id")
    with op.batch_alter_table("order_events") as batch:
        batch.drop_column("node_id")
        batch.drop_column("shipment_id")
        batch.drop_column("seq")
    op.drop_table("event_counter")
    op.drop_table("shipments")
