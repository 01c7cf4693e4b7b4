"""Receiving inbound receipts: the units that arrived and when.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inbound_receipts", sa.Column("received_qty", sa.BigInteger(), nullable=True))
    op.add_column("inbound_receipts", sa.Column("received_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbound_receipts") as batch:
        batch.drop_column("received_at")
        batch.drop_column("received_qty")
