"""Network money in millicents: planner rates and costs may have five decimals.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Node handling and storage costs and the rate card's base and per-kg prices
were stored in integer cents, so a storage cost of 0.004 per unit-day or a
per-kg price of 0.4636 could not be held. They are now integer millicents
(1e-5 currency units), the unit the engine computes in: existing values are
multiplied by 1000, exactly. Downgrading divides them back, rounding half up
any amount below a cent (the old schema cannot hold it).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: (table, money columns) whose unit changes from cents to millicents.
_MONEY = (("nodes", ("handling_cost", "storage_cost")), ("rates", ("base_price", "per_kg")))


def upgrade() -> None:
    for table, columns in _MONEY:
        op.execute(f"UPDATE {table} SET " + ", ".join(f"{c} = {c} * 1000" for c in columns))


def downgrade() -> None:
    for table, columns in _MONEY:
        # Integer division truncates on both backends; + 500 rounds half up (amounts >= 0).
        op.execute(f"UPDATE {table} SET " + ", ".join(f"{c} = ({c} + 500) / 1000" for c in columns))
