"""The dashboard's daily rollups, kept by triggers in the writing transaction, and backfilled.

Revision ID: 0011
Revises: 0012 (numbered before it, written beside it: 0012, shipments, landed first)
Create Date: 2026-12-06

The overview of 7 or 30 days used to aggregate every order, quote and event
of the period at each request (~33k orders, ~50k quotes and ~24k deliveries
for 30 days on the benchmark's store: 0.2 s idle, past 1 s on a loaded
machine). These tables hold the same sums per UTC day (``day``: days since
1970-01-01), so the overview reads a few hundred rows:

* ``dash_order_days``: orders by the day they were created and their current
  state, with their plan's shipping, handling, storage credit, parcels, split
  orders (two parcels or more) and option labels (one count per label);
* ``dash_quote_days``: quotes by the day they were created;
* ``dash_event_days``: ``delivered`` and ``flagged`` events by day, and of the
  deliveries those on or before the order's promised date (``kept``);
* ``dash_node_shipped_days``: units that left each node for an order (ledger
  rows with an order and a negative delta), by day;
* ``dash_open_dispatch``: each open order's planned dispatch day (the earliest
  of its parcels': plan start + arrival days - the service's transit days), so
  the orders at risk are an index range instead of parsing every open plan's
  JSON at each request (0.1-0.2 s for 2.5k open orders on a loaded machine).
  A change to the rate card recomputes it (transit days may have changed).

Triggers keep them in the transaction of every write (an order's state or
plan changing moves its counts and sums from its old row to its new one), so
every writer (PlaceOrder, the lifecycle, re-sourcing, receiving, the
re-optimiser, a bulk COPY) keeps them true without knowing they exist.

Contention (PostgreSQL): every write of a day adds to the same few rows. Each
row is split in ``shard``s (the writing backend's pid modulo 8; readers sum
them), and the triggers are deferred to commit (constraint triggers, INITIALLY
DEFERRED), so a rollup row stays locked only while its transaction commits,
not while the rest of it runs. SQLite serialises writers anyway (shard 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0012"
branch_labels = None
depends_on = None

SHARDS = 8
ROLLUP_TABLES = (
    "dash_order_days",
    "dash_quote_days",
    "dash_event_days",
    "dash_node_shipped_days",
    "dash_open_dispatch",
)
OPEN = "('PLACED', 'RELEASED')"
LABELS = ("CHEAPEST", "FASTEST", "SINGLE_PARCEL", "BALANCED", "COLLECT")
#: Event kinds the overview counts per day.
EVENT_KINDS = ("delivered", "flagged")
ORDER_SUMS = (
    "orders",
    "shipping",
    "handling",
    "storage_credit",
    "parcels",
    "split",
    *(label.lower() for label in LABELS),
)


def _key(name: str, type_: Any) -> sa.Column[Any]:
    return sa.Column(name, type_, primary_key=True, autoincrement=False)


def _sum(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def _create_tables() -> None:
    op.create_table(
        "dash_order_days",
        _key("day", sa.Integer()),
        _key("state", sa.String(24)),  # as orders.state (0012: PARTIALLY_DELIVERED)
        _key("shard", sa.SmallInteger()),
        *(_sum(name) for name in ORDER_SUMS),
    )
    op.create_table(
        "dash_quote_days",
        _key("day", sa.Integer()),
        _key("shard", sa.SmallInteger()),
        _sum("quotes"),
    )
    op.create_table(
        "dash_event_days",
        _key("day", sa.Integer()),
        _key("type", sa.String(32)),
        _key("shard", sa.SmallInteger()),
        _sum("events"),
        _sum("kept"),
    )
    op.create_table(
        "dash_node_shipped_days",
        _key("day", sa.Integer()),
        _key("node_id", sa.String(128)),
        _key("shard", sa.SmallInteger()),
        _sum("units"),
    )
    op.create_table(
        "dash_open_dispatch",
        sa.Column("order_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.Integer(), nullable=False),
    )
    op.create_index("ix_dash_open_dispatch_day", "dash_open_dispatch", ["day", "order_id"])


# -- the SQL both dialects share, written once with the few differences as functions ------


class Dialect:
    def __init__(self, name: str) -> None:
        self.pg = name == "postgresql"

    def day(self, epoch: str) -> str:
        """Days since 1970-01-01 (UTC) of an epoch-seconds expression."""
        if self.pg:
            return f"floor({epoch} / 86400)::integer"
        return f"CAST({epoch} / 86400 AS INTEGER)"

    def date_day(self, iso: str) -> str:
        """Days since 1970-01-01 of an ISO date (YYYY-MM-DD) expression."""
        if self.pg:
            return f"(({iso})::date - DATE '1970-01-01')"
        return f"CAST(julianday({iso}) - 2440587.5 AS INTEGER)"

    @property
    def shard(self) -> str:
        return f"(pg_backend_pid() % {SHARDS})" if self.pg else "0"


def _flag(condition: str) -> str:
    return f"(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def _order_values(d: Dialect, row: str) -> dict[str, str]:
    """Column -> expression of one order's contribution (``row``: NEW or OLD)."""
    values = {
        "day": d.day(f"{row}.created_at"),
        "state": f"{row}.state",
        "shard": d.shard,
        "orders": "1",
        "shipping": f"COALESCE({row}.shipping_cost, 0)",
        "handling": f"COALESCE({row}.handling_cost, 0)",
        "storage_credit": f"COALESCE({row}.storage_credit, 0)",
        "parcels": f"COALESCE({row}.parcel_count, 0)",
        "split": _flag(f"{row}.parcel_count > 1"),
    }
    for label in LABELS:
        values[label.lower()] = _flag(f"{row}.option_labels LIKE '%\"{label}\"%'")
    return values


def _kept(d: Dialect, row: str) -> str:
    promised = f"(SELECT promised_date FROM orders WHERE orders.order_id = {row}.order_id)"
    return _flag(f"{row}.type = 'delivered' AND {d.day(f'{row}.at')} <= {d.date_day(promised)}")


Rollup = tuple[tuple[str, ...], tuple[str, ...], Callable[[str], dict[str, str]]]


def _rollups(d: Dialect) -> dict[str, Rollup]:
    """Rollup table -> (key columns, summed columns, column -> expression of NEW or OLD)."""
    return {
        "dash_order_days": (("day", "state", "shard"), ORDER_SUMS, lambda r: _order_values(d, r)),
        "dash_quote_days": (
            ("day", "shard"),
            ("quotes",),
            lambda r: {"day": d.day(f"{r}.created_at"), "shard": d.shard, "quotes": "1"},
        ),
        "dash_event_days": (
            ("day", "type", "shard"),
            ("events", "kept"),
            lambda r: {
                "day": d.day(f"{r}.at"),
                "type": f"{r}.type",
                "shard": d.shard,
                "events": "1",
                "kept": _kept(d, r),
            },
        ),
        "dash_node_shipped_days": (
            ("day", "node_id", "shard"),
            ("units",),
            lambda r: {
                "day": d.day(f"{r}.at"),
                "node_id": f"{r}.node_id",
                "shard": d.shard,
                "units": f"(-{r}.delta)",
            },
        ),
    }


def _upsert(d: Dialect, table: str, row: str, sign: int) -> str:
    """Add (``sign`` 1) or take away (-1) ``row``'s contribution to its rollup row."""
    keys, sums, values_of = _rollups(d)[table]
    values = values_of(row)
    columns = [*keys, *sums]
    exprs = [values[c] if c in keys or sign > 0 else f"-({values[c]})" for c in columns]
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(exprs)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    )


def _dispatch_select(d: Dialect, row: str, where: str) -> str:
    """(order id, planned dispatch day) of ``row`` (``orders`` for every order, or a
    trigger's ``NEW``) where ``where`` holds: the earliest over its parcels."""
    if d.pg:
        doc = f"({row}.allocation_json::jsonb)"
        start = d.date_day(f"{doc} ->> 'start_date'")
        arrival, service, zone = (
            f"(p.value ->> '{k}')" for k in ("arrival_days", "service", "zone")
        )
        arrival = f"{arrival}::integer"
        parcels = f"jsonb_array_elements({doc} -> 'parcels') AS p(value)"
        source = f"orders CROSS JOIN LATERAL {parcels}" if row == "orders" else parcels
    else:
        start = d.date_day(f"json_extract({row}.allocation_json, '$.start_date')")
        arrival, service, zone = (
            f"json_extract(p.value, '$.{k}')" for k in ("arrival_days", "service", "zone")
        )
        parcels = f"json_each({row}.allocation_json, '$.parcels') AS p"
        source = f"orders, {parcels}" if row == "orders" else parcels
    return (
        f"SELECT {row}.order_id, MIN({start} + {arrival} - COALESCE(r.transit_days, 0)) "
        f"FROM {source} LEFT JOIN rates r ON r.service = {service} AND r.zone = {zone} "
        f"WHERE {where} GROUP BY {row}.order_id"
    )


def _fill_dispatch(d: Dialect) -> list[str]:
    """Every open order's dispatch day, again (after a change to the rate card)."""
    select = _dispatch_select(d, "orders", f"orders.state IN {OPEN}")
    return [
        "DELETE FROM dash_open_dispatch",
        f"INSERT INTO dash_open_dispatch (order_id, day) {select}",
    ]


class Trigger(NamedTuple):  # not a dataclass: Alembic loads this file outside sys.modules
    table: str
    event: str  # INSERT, UPDATE or DELETE
    when: str | None
    steps: tuple[str, ...]
    #: PostgreSQL: run at commit (rollup rows), else after each row (or statement).
    deferred: bool = True
    per_statement: bool = False

    @property
    def name(self) -> str:
        return f"dash_{self.table}_{self.event.lower()}"


def _triggers(d: Dialect) -> list[Trigger]:
    def roll(rollup: str, event: str) -> list[str]:
        steps = []
        if event in ("UPDATE", "DELETE"):
            steps.append(_upsert(d, rollup, "OLD", -1))
        if event in ("INSERT", "UPDATE"):
            steps.append(_upsert(d, rollup, "NEW", 1))
        return steps

    def dispatch(event: str) -> list[str]:
        steps = []
        if event in ("UPDATE", "DELETE"):
            steps.append("DELETE FROM dash_open_dispatch WHERE order_id = OLD.order_id")
        if event in ("INSERT", "UPDATE"):
            select = _dispatch_select(d, "NEW", f"NEW.state IN {OPEN}")
            steps.append(f"INSERT INTO dash_open_dispatch (order_id, day) {select}")
        return steps

    changed = " OR ".join(
        f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in ("state", "allocation_json", "created_at")
    )
    kinds = ", ".join(f"'{k}'" for k in EVENT_KINDS)
    found = [
        *(
            Trigger("orders", e, w, (*roll("dash_order_days", e), *dispatch(e)))
            for e, w in (("INSERT", None), ("UPDATE", changed), ("DELETE", None))
        ),
        *(
            Trigger("quotes", e, None, tuple(roll("dash_quote_days", e)))
            for e in ("INSERT", "DELETE")
        ),
        Trigger(
            "order_events",
            "INSERT",
            f"NEW.type IN ({kinds})",
            tuple(roll("dash_event_days", "INSERT")),
        ),
        Trigger(
            "stock_ledger",
            "INSERT",
            "NEW.order_id IS NOT NULL AND NEW.delta < 0",
            tuple(roll("dash_node_shipped_days", "INSERT")),
        ),
    ]
    # Transit days may change with the rate card: every open order's dispatch day again
    # (PostgreSQL: once per statement; SQLite has row triggers only: once per rate row).
    for event in ("INSERT", "UPDATE", "DELETE"):
        found.append(
            Trigger(
                "rates", event, None, tuple(_fill_dispatch(d)), deferred=False, per_statement=d.pg
            )
        )
    return found


def _create_triggers(d: Dialect) -> None:
    for trigger in _triggers(d):
        name = trigger.name
        if d.pg:
            body = "".join(f"    {s};\n" for s in trigger.steps)
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
                f"BEGIN\n{body}    RETURN NULL;\nEND $$"
            )
            condition = f" WHEN ({trigger.when})" if trigger.when else ""
            if trigger.per_statement:
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {trigger.event} ON {trigger.table} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
                )
            else:
                kind = "CONSTRAINT TRIGGER" if trigger.deferred else "TRIGGER"
                deferral = " DEFERRABLE INITIALLY DEFERRED" if trigger.deferred else ""
                op.execute(
                    f"CREATE {kind} {name} AFTER {trigger.event} ON {trigger.table}{deferral} "
                    f"FOR EACH ROW{condition} EXECUTE FUNCTION {name}()"
                )
        else:
            # SQLite: "IS DISTINCT FROM" is "IS NOT".
            when = trigger.when.replace("IS DISTINCT FROM", "IS NOT") if trigger.when else None
            condition = f" WHEN {when}" if when else ""
            body = "".join(f"  {s};\n" for s in trigger.steps)
            op.execute(
                f"CREATE TRIGGER {name} AFTER {trigger.event} ON {trigger.table} "
                f"FOR EACH ROW{condition}\nBEGIN\n{body}END"
            )


def _backfill(d: Dialect) -> None:
    """The rollups of the rows already stored (shard 0)."""
    order = _order_values(d, "orders")
    sums = ", ".join(f"SUM({order[c]})" for c in ORDER_SUMS)
    op.execute(
        f"INSERT INTO dash_order_days (day, state, shard, {', '.join(ORDER_SUMS)}) "
        f"SELECT {order['day']}, state, 0, {sums} FROM orders GROUP BY 1, 2"
    )
    op.execute(
        "INSERT INTO dash_quote_days (day, shard, quotes) "
        f"SELECT {d.day('created_at')}, 0, COUNT(*) FROM quotes GROUP BY 1"
    )
    kinds = ", ".join(f"'{k}'" for k in EVENT_KINDS)
    on_time = f"e.type = 'delivered' AND {d.day('e.at')} <= {d.date_day('o.promised_date')}"
    op.execute(
        "INSERT INTO dash_event_days (day, type, shard, events, kept) "
        f"SELECT {d.day('e.at')}, e.type, 0, COUNT(*), SUM({_flag(on_time)}) "
        "FROM order_events e JOIN orders o ON o.order_id = e.order_id "
        f"WHERE e.type IN ({kinds}) GROUP BY 1, 2"
    )
    op.execute(
        "INSERT INTO dash_node_shipped_days (day, node_id, shard, units) "
        f"SELECT {d.day('at')}, node_id, 0, -SUM(delta) FROM stock_ledger "
        "WHERE order_id IS NOT NULL AND delta < 0 GROUP BY 1, 2"
    )
    for statement in _fill_dispatch(d):
        op.execute(statement)


def upgrade() -> None:
    d = Dialect(op.get_bind().dialect.name)
    _create_tables()
    # Triggers first: creating them waits for the transactions writing these tables and
    # holds off new ones until this migration commits (PostgreSQL; SQLite's write lock
    # does the same), so the backfill's rows and the triggers' never miss or double a row.
    _create_triggers(d)
    _backfill(d)


def downgrade() -> None:
    d = Dialect(op.get_bind().dialect.name)
    for trigger in _triggers(d):
        op.execute(
            f"DROP TRIGGER IF EXISTS {trigger.name}" + (f" ON {trigger.table}" if d.pg else "")
        )
        if d.pg:
            op.execute(f"DROP FUNCTION IF EXISTS {trigger.name}()")
    op.drop_index("ix_dash_open_dispatch_day", "dash_open_dispatch")
    for table in reversed(ROLLUP_TABLES):
        op.drop_table(table)
