"""A return keeps what its call answered, so a retry answers the same.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

``order_returns.return_cost`` is what sending the units of the ReturnItems call
that wrote the row to its node cost, in millicents (the same value on each SKU
row of one call). Rows written before this revision have none: a retry of such
a return answers without ``return_cost``, as it did before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("order_returns", sa.Column("return_cost", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("order_returns") as batch:
        batch.drop_column("return_cost")
