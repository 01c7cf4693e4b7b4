"""The dashboard's read side: an order's plan facts as generated columns, and indexes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

``orders`` gains columns the database computes from ``allocation_json``
(labels, parcel count, shipping, handling, storage credit, cost): every
writer of an allocation (PlaceOrder, re-sourcing, receiving, the
re-optimiser) keeps them true with no code of its own, and the dashboard
sums them with plain SQL instead of parsing each order's JSON. PostgreSQL
stores them (computed at write, a few microseconds per order write); SQLite
adds them VIRTUAL (computed when read; ``ALTER TABLE`` cannot add stored ones).

Indexes for the dashboard's period queries: orders (newest first, id as
tiebreak) and quotes by creation time, order events by kind and time,
shipped units by time (a partial index over the ledger rows that took units
out for an order), and an order's ledger rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from oms.schema import AllocationField

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: (column, type, allocation field, kind): see :class:`oms.schema.AllocationField`.
GENERATED = (
    ("option_labels", sa.Text(), "labels", "json"),
    ("parcel_count", sa.Integer(), "parcels", "length"),
    ("shipping_cost", sa.BigInteger(), "shipping", "number"),
    ("handling_cost", sa.BigInteger(), "handling", "number"),
    ("storage_credit", sa.BigInteger(), "storage_credit", "number"),
    ("total_cost", sa.BigInteger(), "cost", "number"),
)
SHIPPED = "order_id IS NOT NULL AND delta < 0"


def upgrade() -> None:
    stored = op.get_bind().dialect.name == "postgresql"
    for name, type_, key, kind in GENERATED:
        op.add_column(
            "orders",
            sa.Column(
                name,
                type_,
                sa.Computed(AllocationField(key, kind), persisted=stored),
                nullable=True,
            ),
        )
    op.create_index("ix_orders_created", "orders", ["created_at", "order_id"])
    op.create_index("ix_quotes_created", "quotes", ["created_at"])
    op.create_index("ix_order_events_type_at", "order_events", ["type", "at"])
    op.create_index(
        "ix_stock_ledger_shipped",
        "stock_ledger",
        ["at", "node_id", "delta"],
        sqlite_where=sa.text(SHIPPED),
        postgresql_where=sa.text(SHIPPED),
    )
    op.create_index(
        "ix_stock_ledger_order",
        "stock_ledger",
        ["order_id"],
        sqlite_where=sa.text("order_id IS NOT NULL"),
        postgresql_where=sa.text("order_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_stock_ledger_order", "stock_ledger")
    op.drop_index("ix_stock_ledger_shipped", "stock_ledger")
    op.drop_index("ix_order_events_type_at", "order_events")
    op.drop_index("ix_quotes_created", "quotes")
    op.drop_index("ix_orders_created", "orders")
    # Plain DROP COLUMN on both (SQLite >= 3.35): a batch copy of ``orders`` would
    # drop the table other tables' foreign keys point at.
    for name, *_ in reversed(GENERATED):
        op.execute(f"ALTER TABLE orders DROP COLUMN {name}")
