"""Durable re-sourcing work: inbound reservations marked when their receipt fails the order.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

Orders still waiting on a RECEIVED or CANCELLED receipt are marked on upgrade:
before this revision such rows were left only when re-sourcing after the
receipt's change was cut short.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("inbound_reservations", sa.Column("resource_kind", sa.String(32), nullable=True))
    op.add_column("inbound_reservations", sa.Column("resource_reason", sa.Text(), nullable=True))
    op.add_column("inbound_reservations", sa.Column("resource_due", sa.String(10), nullable=True))
    for state, kind, reason in (
        ("RECEIVED", "receipt_short", "arrived short"),
        ("CANCELLED", "receipt_cancelled", "was cancelled"),
    ):
        op.execute(
            sa.text(
                "UPDATE inbound_reservations SET resource_kind = :kind, resource_reason = :reason,"
                " resource_due = (SELECT r.expected_date FROM inbound_receipts r"
                " WHERE r.receipt_id = inbound_reservations.receipt_id)"
                " WHERE receipt_id IN"
                " (SELECT receipt_id FROM inbound_receipts WHERE state = :state)"
            ).bindparams(kind=kind, reason=reason, state=state)
        )


def downgrade() -> None:
    with op.batch_alter_table("inbound_reservations") as batch:
        batch.drop_column("resource_due")
        batch.drop_column("resource_reason")
        batch.drop_column("resource_kind")
