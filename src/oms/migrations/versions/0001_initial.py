"""The first schema: network, stock ledger, reservations, quotes, orders and their history.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Auto-increment keys: BIGINT on PostgreSQL, INTEGER (the rowid) on SQLite.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "network_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("handling_days", sa.Integer(), nullable=False),
        sa.Column("handling_cost", sa.BigInteger(), nullable=False),
        sa.Column("storage_cost", sa.BigInteger(), nullable=False),
        sa.Column("daily_capacity_units", sa.BigInteger(), nullable=True),
    )
    op.create_table(
        "skus",
        sa.Column("sku", sa.String(128), primary_key=True),
        sa.Column("weight_g", sa.BigInteger(), nullable=False),
        sa.Column("daily_demand", sa.Float(), nullable=False),
    )
    op.create_table(
        "zones",
        sa.Column("zone", sa.String(64), primary_key=True),
        sa.Column("max_km", sa.Float(), nullable=False),
    )
    op.create_table(
        "rates",
        sa.Column("service", sa.String(64), primary_key=True),
        sa.Column("zone", sa.String(64), primary_key=True),
        sa.Column("base_price", sa.BigInteger(), nullable=False),
        sa.Column("per_kg", sa.BigInteger(), nullable=False),
        sa.Column("transit_days", sa.Integer(), nullable=False),
    )
    op.create_table(
        "stock",
        sa.Column("node_id", sa.String(128), sa.ForeignKey("nodes.node_id"), primary_key=True),
        sa.Column("sku", sa.String(128), sa.ForeignKey("skus.sku"), primary_key=True),
        sa.Column("on_hand", sa.BigInteger(), nullable=False),
        sa.Column("safety_stock", sa.BigInteger(), nullable=False),
        sa.Column("low_stock_threshold", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_stock_sku", "stock", ["sku"])
    op.create_table(
        "stock_ledger",
        sa.Column("entry_id", _ID, primary_key=True),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("sku", sa.String(128), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
    )
    op.create_index("ix_stock_ledger_position", "stock_ledger", ["node_id", "sku"])
    op.create_table(
        "reservations",
        sa.Column("reservation_id", _ID, primary_key=True),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("sku", sa.String(128), nullable=False),
        sa.Column("qty", sa.BigInteger(), nullable=False),
        sa.Column("quote_id", sa.String(64), nullable=True),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_reservations_position", "reservations", ["sku", "node_id"])
    op.create_index("ix_reservations_quote", "reservations", ["quote_id"])
    op.create_index("ix_reservations_order", "reservations", ["order_id"])
    op.create_table(
        "node_day_usage",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("units", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "quotes",
        sa.Column("quote_id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("quote_date", sa.String(10), nullable=False),
        sa.Column("request_json", sa.Text(), nullable=False),
        sa.Column("options_json", sa.Text(), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("quote_id", sa.String(64), nullable=False),
        sa.Column("option_id", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("dest_lat", sa.Float(), nullable=False),
        sa.Column("dest_lon", sa.Float(), nullable=False),
        sa.Column("lines_json", sa.Text(), nullable=False),
        sa.Column("allocation_json", sa.Text(), nullable=False),
        sa.Column("promised_date", sa.String(10), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.UniqueConstraint("idempotency_key", name="uq_orders_idempotency_key"),
    )
    op.create_index("ix_orders_state_created", "orders", ["state", "created_at"])
    op.create_table(
        "order_events",
        sa.Column("event_id", _ID, primary_key=True),
        sa.Column("order_id", sa.String(64), sa.ForeignKey("orders.order_id"), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_order_events_order", "order_events", ["order_id"])
    op.create_table(
        "order_returns",
        sa.Column("return_id", _ID, primary_key=True),
        sa.Column("order_id", sa.String(64), sa.ForeignKey("orders.order_id"), nullable=False),
        sa.Column("sku", sa.String(128), nullable=False),
        sa.Column("qty", sa.BigInteger(), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
    )
    op.create_index("ix_order_returns_order", "order_returns", ["order_id"])


def downgrade() -> None:
    for table in (
        "order_returns",
        "order_events",
        "orders",
        "quotes",
        "node_day_usage",
        "reservations",
        "stock_ledger",
        "stock",
        "rates",
        "zones",
        "skus",
        "nodes",
        "network_meta",
    ):
        op.drop_table(table)
