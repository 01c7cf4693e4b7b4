"""Quotes hold no stock; checkout holds name the caller they count against.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

Every quote used to hold, for its whole life, the largest amount any of its
options needed, so browsing alone drained promisable stock. Holds are now
taken only by ``CheckoutService.StartCheckout``, for one option, briefly, and
capped per caller: ``reservations.holder`` names that caller. The quote-time
holds left from before are dropped (PlaceOrder re-checks stock under lock and
re-sources within the promise, so their quotes stay placeable).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reservations", sa.Column("holder", sa.String(160), nullable=True))
    op.create_index("ix_reservations_holder", "reservations", ["holder"])
    op.execute("DELETE FROM reservations WHERE order_id IS NULL AND quote_id IS NOT NULL")


def downgrade() -> None:
    op.drop_index("ix_reservations_holder", table_name="reservations")
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("holder")
