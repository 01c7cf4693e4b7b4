"""Inbound receipts and the order reservations against them (backorder).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "inbound_receipts",
        sa.Column("receipt_id", sa.String(64), primary_key=True),
        sa.Column("node_id", sa.String(128), sa.ForeignKey("nodes.node_id"), nullable=False),
        sa.Column("sku", sa.String(128), sa.ForeignKey("skus.sku"), nullable=False),
        sa.Column("qty", sa.BigInteger(), nullable=False),
        sa.Column("expected_date", sa.String(10), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_inbound_receipts_position", "inbound_receipts", ["sku", "node_id"])
    op.create_table(
        "inbound_reservations",
        sa.Column("reservation_id", _ID, primary_key=True),
        sa.Column(
            "receipt_id",
            sa.String(64),
            sa.ForeignKey("inbound_receipts.receipt_id"),
            nullable=False,
        ),
        sa.Column("order_id", sa.String(64), sa.ForeignKey("orders.order_id"), nullable=False),
        sa.Column("qty", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_inbound_reservations_receipt", "inbound_reservations", ["receipt_id"])
    op.create_index("ix_inbound_reservations_order", "inbound_reservations", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_inbound_reservations_order", table_name="inbound_reservations")
    op.drop_index("ix_inbound_reservations_receipt", table_name="inbound_reservations")
    op.drop_table("inbound_reservations")
    op.drop_index("ix_inbound_receipts_position", table_name="inbound_receipts")
    op.drop_table("inbound_receipts")
