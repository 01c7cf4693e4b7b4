"""Order reservations name the day whose node capacity they used.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

Before this revision every order's units were booked and released on the day
the order was placed, even units re-sourced on a later day (booked on that
day) or received from a receipt (booked on none). Existing order reservations
get their order's placement day, which is what releasing them used.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: The UTC day (YYYY-MM-DD) of ``orders.created_at`` (epoch seconds), per dialect.
_CREATED_DAY = {
    "sqlite": "strftime('%Y-%m-%d', o.created_at, 'unixepoch')",
    "postgresql": "to_char(to_timestamp(o.created_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}


def upgrade() -> None:
    op.add_column("reservations", sa.Column("capacity_day", sa.String(10), nullable=True))
    day = _CREATED_DAY[op.get_bind().dialect.name]
    op.execute(
        f"UPDATE reservations SET capacity_day = (SELECT {day} FROM orders o"
        " WHERE o.order_id = reservations.order_id) WHERE order_id IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("capacity_day")
