"""Forward-looking prices: each ``oms reprice`` run and its opportunity costs per position.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reprice_runs",
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("computed_at", sa.Float(), nullable=False),
        sa.Column("horizon_days", sa.Float(), nullable=False),
        sa.Column("orders_seen", sa.Integer(), nullable=False),
        sa.Column("expected_units", sa.Float(), nullable=False),
        sa.Column("positions", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
    )
    op.create_table(
        "opportunity_costs",
        sa.Column(
            "run_id",
            sa.BigInteger(),
            sa.ForeignKey("reprice_runs.run_id"),
            primary_key=True,
        ),
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("sku", sa.String(128), primary_key=True),
        sa.Column("millicents", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("opportunity_costs")
    op.drop_table("reprice_runs")
