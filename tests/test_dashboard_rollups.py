"""The dashboard's rollups (migration 0011) against the rows they sum, on SQLite and PostgreSQL.

Orders go through the real checkout over gRPC (from several threads at once:
on PostgreSQL, several backends and so several shards), then through the
lifecycle (released, shipped, delivered, cancelled), a flag and a change of
the rate card. After each step every rollup equals what plain Python computes
from the store's rows, and the overview of 7 days (rollups) agrees with today's
(rows) on today. Downgrading to 0012 (before 0011) and upgrading again backfills
the same figures from the rows. (Migration 0011 revises 0012: the shipments'
migration landed first.)

Migration 0013 dropped 0011's unused ``dash_open_dispatch`` and the trigger work
that kept it: after upgrade no table, trigger or trigger function names it;
downgrading to 0011 brings it back filled with the open orders' planned
dispatch days (computed here from their plans and the rate card) and kept again.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import oms
from oms import schema as t
from oms.dashboard import views
from oms.store import Store
from oms.v1 import checkout_pb2, fulfilment_pb2

from service_support import ADMIN, Client, hand_network, running_server

DAY = 86_400
LABELS = ("CHEAPEST", "FASTEST", "SINGLE_PARCEL", "BALANCED", "COLLECT")
EPOCH = date(1970, 1, 1)
# Enough B at Newark for concurrent orders to keep their quoted node; A spread thin.
NETWORK = hand_network({("DC-NJ", "B"): 40, ("DC-CHI", "A"): 2})


def day_of(ts: float) -> int:
    return int(ts // DAY)


def date_day(iso: str) -> int:
    return (date.fromisoformat(iso) - EPOCH).days


def expected_rollups(store: Store) -> dict[str, dict[tuple[Any, ...], tuple[int, ...]]]:
    """Each rollup as plain Python computes it from the rows: key -> sums."""
    with store.read() as conn:
        orders = conn.execute(
            sa.select(
                t.orders.c.order_id,
                t.orders.c.state,
                t.orders.c.created_at,
                t.orders.c.allocation_json,
                t.orders.c.promised_date,
            )
        ).all()
        quotes = conn.execute(sa.select(t.quotes.c.created_at)).scalars().all()
        events = conn.execute(
            sa.select(t.order_events.c.order_id, t.order_events.c.at, t.order_events.c.type)
        ).all()
        ledger = conn.execute(
            sa.select(t.stock_ledger.c.node_id, t.stock_ledger.c.delta, t.stock_ledger.c.at).where(
                t.stock_ledger.c.order_id.is_not(None)
            )
        ).all()
    sums: dict[str, dict[tuple[Any, ...], list[int]]] = defaultdict(dict)

    def add(table: str, key: tuple[Any, ...], values: list[int]) -> None:
        row = sums[table].setdefault(key, [0] * len(values))
        for i, v in enumerate(values):
            row[i] += v

    promised = {o.order_id: o.promised_date for o in orders}
    for o in orders:
        doc = json.loads(o.allocation_json)
        parcels = len(doc["parcels"])
        add(
            "dash_order_days",
            (day_of(o.created_at), o.state),
            [
                1,
                doc["shipping"],
                doc["handling"],
                doc["storage_credit"],
                parcels,
                int(parcels > 1),
                *(int(label in doc["labels"]) for label in LABELS),
            ],
        )
    for created in quotes:
        add("dash_quote_days", (day_of(created),), [1])
    for order_id, at, kind in events:
        if kind in ("delivered", "flagged"):
            on_time = kind == "delivered" and day_of(at) <= date_day(promised[order_id])
            add("dash_event_days", (day_of(at), kind), [1, int(on_time)])
    for node_id, delta, at in ledger:
        if delta < 0:
            add("dash_node_shipped_days", (day_of(at), node_id), [-delta])
    return {table: {k: tuple(v) for k, v in rows.items() if any(v)} for table, rows in sums.items()}


def stored_rollups(store: Store) -> dict[str, dict[tuple[Any, ...], tuple[int, ...]]]:
    """Each rollup as stored, its shards added up (rows summing to nothing left out)."""
    found = {}
    with store.read() as conn:
        for table in ROLLUPS:
            keys = [c for c in table.primary_key.columns if c.name != "shard"]
            values = [c for c in table.columns if not c.primary_key]
            rows = conn.execute(
                sa.select(*keys, *(sa.func.sum(c) for c in values)).group_by(*keys)
            ).all()
            found[table.name] = {
                tuple(r[: len(keys)]): tuple(int(v) for v in r[len(keys) :])
                for r in rows
                if any(r[len(keys) :])
            }
    return found


ROLLUPS = (t.order_days, t.quote_days, t.event_days, t.node_shipped_days)


def expected_dispatch(store: Store) -> dict[str, int]:
    """Open orders' planned dispatch days: plan start + arrival days - transit days, earliest."""
    with store.read() as conn:
        transit = {
            (s, z): d
            for s, z, d in conn.execute(
                sa.select(t.rates.c.service, t.rates.c.zone, t.rates.c.transit_days)
            )
        }
        rows = conn.execute(
            sa.select(t.orders.c.order_id, t.orders.c.allocation_json).where(
                t.orders.c.state.in_(("PLACED", "RELEASED"))
            )
        ).all()
    out = {}
    for order_id, raw in rows:
        doc = json.loads(raw)
        start = date_day(doc["start_date"])
        out[order_id] = min(
            start + p["arrival_days"] - transit.get((p["service"], p["zone"]), 0)
            for p in doc["parcels"]
        )
    return out


def stored_dispatch(store: Store) -> dict[str, int]:
    """``dash_open_dispatch`` as 0011 keeps it (the code's schema no longer names it)."""
    with store.read() as conn:
        rows = conn.execute(sa.text("SELECT order_id, day FROM dash_open_dispatch"))
        return {order_id: int(day) for order_id, day in rows}


def dispatch_mentions(store: Store) -> list[str]:
    """Tables, triggers and trigger functions whose name or code names the dropped rollup."""
    with store.read() as conn:
        if store.is_sqlite:
            query = "SELECT name FROM sqlite_master WHERE name LIKE :p OR sql LIKE :p"
        else:
            query = (
                "SELECT tgname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
                "WHERE NOT t.tgisinternal AND (p.prosrc LIKE :p OR tgname LIKE :p) "
                "UNION ALL SELECT proname FROM pg_proc WHERE prosrc LIKE :p "
                "UNION ALL SELECT relname FROM pg_class WHERE relname LIKE :p"
            )
        return [r[0] for r in conn.execute(sa.text(query), {"p": "%open_dispatch%"})]


def rate_triggers(store: Store) -> list[str]:
    with store.read() as conn:
        if store.is_sqlite:
            query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'rates'"
        else:
            query = (
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                "AND tgrelid = 'rates'::regclass"
            )
        return [r[0] for r in conn.execute(sa.text(query))]


def migrate_to(store: Store, revision: str, *, down: bool) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(oms.__file__).parent / "migrations"))
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)


def check(store: Store, *, written: tuple[str, ...] = ()) -> None:
    expected = expected_rollups(store)
    stored = stored_rollups(store)
    for table in written:
        assert expected.get(table), f"the scenario wrote nothing to {table}"
    for table in stored:
        assert stored[table] == expected.get(table, {}), table


def today_agrees_with_the_week(store: Store) -> None:
    """Today's figures from the rows equal the last day of the 7 days' from the rollups."""
    now = time.time()
    with store.read() as conn:
        today = views.overview(conn, views.Period.of("today", now), now)
        week = views.overview(conn, views.Period.of("7d", now), now)
    assert {s: series[-1] for s, series in week.state_series.items()} == today.by_state
    assert week.quote_series[-1] == today.quotes
    assert week.delivered_series[-1] == today.delivered
    assert week.kept_series[-1] == today.kept
    assert week.flagged_series[-1] == sum(today.flagged_series)
    assert {k: v[-1] for k, v in week.label_series.items()} == today.labels
    assert week.cost_series["cost"][-1] == round(today.cost_per_order, 2)
    assert week.at_risk == today.at_risk


def place(client: Client, lines: dict[str, int]) -> str:
    quote = client.quote(lines)
    return client.place(quote.quote_id, quote.options[0].option_id).order.order_id


def scenario(client: Client) -> list[str]:
    """Orders from 4 threads at once, then each step of an order's life; checked at each."""
    # 7 A: no node has them all (a split). A is scarce: those orders go one at a time.
    placed = [place(client, {"A": 7}), place(client, {"A": 1, "B": 1})]
    carts = [{"B": 1}, {"B": 2}, {"B": 1}, {"B": 3}, {"B": 2}, {"B": 1}]
    with ThreadPoolExecutor(4) as pool:
        placed += list(pool.map(lambda cart: place(client, cart), carts))
    client.quote({"B": 1})  # a quote nobody orders
    check(client.store)
    shipped, delivered, cancelled, flagged = placed[:4]  # the split order ships
    for order_id, calls in (
        (shipped, ("ReleaseOrder", "ConfirmShipment")),
        (delivered, ("ReleaseOrder", "ConfirmShipment", "ConfirmDelivery")),
    ):
        for call in calls:
            request = getattr(fulfilment_pb2, f"{call}Request")(order_id=order_id)
            getattr(client.fulfilment, call)(request, metadata=ADMIN, timeout=10)
    client.checkout.CancelOrder(
        checkout_pb2.CancelOrderRequest(order_id=cancelled, reason="test"), timeout=10
    )
    with client.store.write() as conn:
        client.store.add_event(conn, flagged, "flagged", "promise at risk")
    check(client.store, written=tuple(t.name for t in ROLLUPS))
    today_agrees_with_the_week(client.store)
    return placed


def test_rollups_follow_every_write(database_url: str) -> None:
    with running_server(database_url, NETWORK) as client:
        scenario(client)
        # A change to the rate card moves no rollup (0013 dropped its only trigger work).
        with client.store.write() as conn:
            conn.execute(sa.update(t.rates).values(transit_days=t.rates.c.transit_days + 1))
        check(client.store)
        assert dispatch_mentions(client.store) == []
        assert rate_triggers(client.store) == []


def test_0013_drops_the_dispatch_rollup_and_downgrade_brings_it_back(database_url: str) -> None:
    with running_server(database_url, NETWORK) as client:
        store = client.store
        assert dispatch_mentions(store) == []
        placed = scenario(client)
        migrate_to(store, "0011", down=True)
        # 0011 again: the table is filled from the open orders and kept by the triggers.
        assert stored_dispatch(store) == expected_dispatch(store)
        open_before = set(expected_dispatch(store))
        assert open_before and open_before <= set(placed)
        with store.write() as conn:  # a slower ground service: a day earlier for every order
            conn.execute(sa.update(t.rates).values(transit_days=t.rates.c.transit_days + 1))
        assert stored_dispatch(store) == expected_dispatch(store)
        place(client, {"A": 1})
        assert stored_dispatch(store) == expected_dispatch(store)
        assert len(stored_dispatch(store)) == len(open_before) + 1
        check(store)
        migrate_to(store, "head", down=False)
        assert dispatch_mentions(store) == []
        assert rate_triggers(store) == []
        # The order rollups still follow every write after the triggers were replaced.
        place(client, {"B": 1})
        check(store)


def test_the_migration_backfills_existing_rows(database_url: str) -> None:
    with running_server(database_url, NETWORK) as client:
        scenario(client)
        expected = stored_rollups(client.store)
        migrate_to(client.store, "0012", down=True)
        with client.store.read() as conn:
            assert "dash_order_days" not in sa.inspect(conn).get_table_names()
        client.store.migrate()
        assert stored_rollups(client.store) == expected
        check(client.store)
        # And the triggers are back: the next order counts.
        place(client, {"A": 1})
        check(client.store)
