"""Drop the unused rollup ``dash_open_dispatch``; make the dashboard's change mark cheap.

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

It also makes the dashboard's change mark (``oms.dashboard.views.live``) index
lookups only: it summed every stock position's safety stock and threshold
(settings change without a ledger row: a scan of 16k rows, 3-14 ms, on
``load.py``'s store) and took the newest receipt change by a scan of every
receipt ever expected. Now

* ``dash_marks``: named counters; ``stock_settings`` counts changes of a
  position's safety stock or threshold, bumped by triggers on ``stock`` only
  when one of them changes (never by checkout, which moves on hand alone);
* ``ix_inbound_receipts_updated``: the newest receipt change by index.
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


#: When a position's settings changed (a row with settings 0 coming or going changes none).
SETTINGS_CHANGED = {
    "INSERT": "NEW.safety_stock <> 0 OR NEW.low_stock_threshold <> 0",
    "UPDATE": "OLD.safety_stock IS DISTINCT FROM NEW.safety_stock "
    "OR OLD.low_stock_threshold IS DISTINCT FROM NEW.low_stock_threshold",
    "DELETE": "OLD.safety_stock <> 0 OR OLD.low_stock_threshold <> 0",
}
BUMP = "UPDATE dash_marks SET value = value + 1 WHERE name = 'stock_settings'"


def _create_marks(d: Any) -> None:
    op.create_table(
        "dash_marks",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO dash_marks (name, value) VALUES ('stock_settings', 0)")
    if d.pg:
        op.execute(
            "CREATE FUNCTION dash_stock_settings() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n    {BUMP};\n    RETURN NULL;\nEND $$"
        )
    for event, when in SETTINGS_CHANGED.items():
        # UPDATE OF: PlaceOrder's and the ledger's updates of on hand never fire it.
        what = "UPDATE OF safety_stock, low_stock_threshold" if event == "UPDATE" else event
        name = f"dash_stock_settings_{event.lower()}"
        if d.pg:
            op.execute(
                f"CREATE TRIGGER {name} AFTER {what} ON stock FOR EACH ROW WHEN ({when}) "
                "EXECUTE FUNCTION dash_stock_settings()"
            )
        else:
            when = when.replace("IS DISTINCT FROM", "IS NOT")
            op.execute(
                f"CREATE TRIGGER {name} AFTER {what} ON stock FOR EACH ROW WHEN {when}\n"
                f"BEGIN\n  {BUMP};\nEND"
            )
    op.create_index("ix_inbound_receipts_updated", "inbound_receipts", ["updated_at"])


def _drop_marks(d: Any) -> None:
    op.drop_index("ix_inbound_receipts_updated", "inbound_receipts")
    for event in SETTINGS_CHANGED:
        name = f"dash_stock_settings_{event.lower()}"
        op.execute(f"DROP TRIGGER {name}" + (" ON stock" if d.pg else ""))
    if d.pg:
        op.execute("DROP FUNCTION dash_stock_settings()")
    op.drop_table("dash_marks")


def upgrade() -> None:
    d = rollups.Dialect(op.get_bind().dialect.name)
    # Triggers first (they write the table), then the table.
    _replace_order_triggers(d, with_dispatch=False)
    _drop_rate_triggers(d)
    op.drop_index("ix_dash_open_dispatch_day", DISPATCH)
    op.drop_table(DISPATCH)
    _create_marks(d)


def downgrade() -> None:
    d = rollups.Dialect(op.get_bind().dialect.name)
    _drop_marks(d)
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
