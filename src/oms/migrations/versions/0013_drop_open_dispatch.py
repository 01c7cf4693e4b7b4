"""Drop the unused rollup ``dash_open_dispatch`` and the trigger work that kept it.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-06

Migration 0011 kept each open order's planned dispatch day in
``dash_open_dispatch`` for the overview's "at risk"; since the shipments landed
(0012) that figure is read from ``shipments`` (``ix_shipments_state_dispatch``),
and nothing reads the table. Its upkeep still ran in every writing transaction:
a JSON walk over the order's parcels joined with the rate card in the orders'
insert and update triggers, and a rewrite of the whole table at every change to
the rate card. This revision keeps the order triggers' day rollups
(``dash_order_days``), removes the dispatch steps from them, drops the rate
card's triggers (they only refilled the table) and the table.

PostgreSQL: the orders' triggers keep their definitions (deferred constraint
triggers with the same WHEN); only their functions are replaced. SQLite: the
triggers are dropped and created again without the dispatch steps. Downgrade
puts 0011's triggers back and refills the table from the open orders.
"""

from __future__ import annotations

import importlib
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None

# 0011's trigger definitions, so both directions write exactly its SQL (its module name
# starts with a digit: imported by name).
rollups: Any = importlib.import_module("oms.migrations.versions.0011_dashboard_rollups")

DISPATCH = "dash_open_dispatch"


def _order_triggers(d: Any, *, with_dispatch: bool) -> list[Any]:
    """0011's triggers on ``orders``, with or without their dispatch-day steps."""
    found = [tr for tr in rollups._triggers(d) if tr.table == "orders"]
    if with_dispatch:
        return found
    return [tr._replace(steps=tuple(s for s in tr.steps if DISPATCH not in s)) for tr in found]


def _rate_triggers(d: Any) -> list[Any]:
    return [tr for tr in rollups._triggers(d) if tr.table == "rates"]


def _function(trigger: Any) -> str:
    body = "".join(f"    {s};\n" for s in trigger.steps)
    return (
        f"CREATE OR REPLACE FUNCTION {trigger.name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n{body}    RETURN NULL;\nEND $$"
    )


def _sqlite_trigger(trigger: Any) -> str:
    when = trigger.when.replace("IS DISTINCT FROM", "IS NOT") if trigger.when else None
    condition = f" WHEN {when}" if when else ""
    body = "".join(f"  {s};\n" for s in trigger.steps)
    return (
        f"CREATE TRIGGER {trigger.name} AFTER {trigger.event} ON {trigger.table} "
        f"FOR EACH ROW{condition}\nBEGIN\n{body}END"
    )


def _replace_order_triggers(d: Any, *, with_dispatch: bool) -> None:
    for trigger in _order_triggers(d, with_dispatch=with_dispatch):
        if d.pg:
            op.execute(_function(trigger))  # the trigger itself is unchanged
        else:
            op.execute(f"DROP TRIGGER {trigger.name}")
            op.execute(_sqlite_trigger(trigger))


def _drop_rate_triggers(d: Any) -> None:
    for trigger in _rate_triggers(d):
        if d.pg:
            op.execute(f"DROP TRIGGER {trigger.name} ON {trigger.table}")
            op.execute(f"DROP FUNCTION {trigger.name}()")
        else:
            op.execute(f"DROP TRIGGER {trigger.name}")


def _create_rate_triggers(d: Any) -> None:
    for trigger in _rate_triggers(d):
        if d.pg:
            op.execute(_function(trigger))
            scope = "STATEMENT" if trigger.per_statement else "ROW"
            op.execute(
                f"CREATE TRIGGER {trigger.name} AFTER {trigger.event} ON {trigger.table} "
                f"FOR EACH {scope} EXECUTE FUNCTION {trigger.name}()"
            )
        else:
            op.execute(_sqlite_trigger(trigger))


def upgrade() -> None:
    d = rollups.Dialect(op.get_bind().dialect.name)
    # Triggers first (they write the table), then the table.
    _replace_order_triggers(d, with_dispatch=False)
    _drop_rate_triggers(d)
    op.drop_index("ix_dash_open_dispatch_day", DISPATCH)
    op.drop_table(DISPATCH)


def downgrade() -> None:
    d = rollups.Dialect(op.get_bind().dialect.name)
    op.create_table(
        DISPATCH,
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.Integer(), nullable=False),
    )
    op.create_index("ix_dash_open_dispatch_day", DISPATCH, ["day", "order_id"])
    # As 0011: triggers before the fill, so no order written meanwhile is missed.
    _replace_order_triggers(d, with_dispatch=True)
    _create_rate_triggers(d)
    for statement in rollups._fill_dispatch(d):
        op.execute(statement)
