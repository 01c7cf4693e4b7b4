"""The Alembic migrations build exactly the schema the code uses, on SQLite and PostgreSQL.

``oms.schema.metadata`` is what every query is written against; the migrations
in ``oms/migrations`` are written by hand. After ``Store.migrate()`` on a fresh
database, Alembic's autogenerate comparison between the two must find nothing.
Migrating again changes nothing; downgrading to base and upgrading again works.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import oms
from oms import schema
from oms.store import Store

from service_support import hand_network, postgres_database

MIGRATIONS = Path(oms.__file__).parent / "migrations"


def alembic_config() -> Config:
    """The configuration ``Store.migrate`` builds."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each backend (PostgreSQL skips when none is reachable)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        yield from postgres_database()


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    store = Store(url, pool_size=2)
    try:
        yield store
    finally:
        store.dispose()


def schema_diff(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, schema.metadata))


def revision(store: Store) -> str | None:
    with store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def tables(store: Store) -> set[str]:
    with store.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def downgrade_to_base(store: Store) -> None:
    config = alembic_config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")


def test_migrations_have_one_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == [HEAD]


def test_migrated_schema_matches_the_code(store: Store) -> None:
    assert tables(store) == set()
    store.migrate()
    assert revision(store) == HEAD
    assert tables(store) == set(schema.metadata.tables) | {"alembic_version"}
    assert schema_diff(store) == []


def test_migrate_twice_is_idempotent(store: Store) -> None:
    store.migrate()
    store.load_network(hand_network(), reason="before the second migrate")
    with store.read() as conn:
        before = store.positions(conn)
    store.migrate()
    assert revision(store) == HEAD
    assert schema_diff(store) == []
    with store.read() as conn:
        assert store.positions(conn) == before
    assert store.ledger_mismatches() == []


def test_downgrade_to_base_then_upgrade_again(store: Store) -> None:
    store.migrate()
    store.load_network(hand_network(), reason="to be dropped")
    downgrade_to_base(store)
    assert revision(store) is None
    # Alembic keeps its (now empty) version table; every table of ours is gone.
    assert tables(store) - {"alembic_version"} == set()
    store.migrate()
    assert revision(store) == HEAD
    assert schema_diff(store) == []
    assert store.is_empty()
    store.load_network(hand_network(), reason="after the round trip")
    assert store.ledger_mismatches() == []


def test_comparison_notices_a_drifted_schema(tmp_path: Path) -> None:
    """The empty diff above means something: a dropped index or column does show."""
    store = Store(f"sqlite:///{tmp_path / 'drift.db'}", pool_size=1)
    try:
        store.migrate()
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_stock_sku")
            conn.exec_driver_sql("ALTER TABLE quotes DROP COLUMN order_id")
        diff = schema_diff(store)
    finally:
        store.dispose()
    kinds = {(d[0], getattr(d[1], "name", None)) for d in diff if isinstance(d, tuple)}
    assert ("add_index", "ix_stock_sku") in kinds
    assert any(d[0] == "add_column" and d[2] == "quotes" for d in diff if isinstance(d, tuple))


#: 2030-03-04T23:59:59.5Z: the last half second of its UTC day.
LATE_IN_THE_DAY = 1_898_899_199.5


def test_upgrade_marks_waiting_orders_and_dates_order_reservations(store: Store) -> None:
    """0004 marks the orders still waiting on RECEIVED or CANCELLED receipts (re-sourcing
    cut short before the marks existed), so the sweep finishes them; OPEN ones stay.
    0005 dates each order reservation's capacity by its order's placement day (UTC);
    quote holds use none."""
    store.migrate()
    store.load_network(hand_network(), reason="receipts")
    with store.engine.begin() as conn:
        for receipt_id, state in (("PO-R", "RECEIVED"), ("PO-C", "CANCELLED"), ("PO-O", "OPEN")):
            conn.execute(
                sa.insert(schema.inbound_receipts).values(
                    receipt_id=receipt_id,
                    node_id="DC-NJ",
                    sku="A",
                    qty=5,
                    expected_date="2030-01-02",
                    state=state,
                    updated_at=0.0,
                )
            )
            order_id = f"o-{receipt_id}"
            conn.execute(
                sa.insert(schema.orders).values(
                    order_id=order_id,
                    quote_id="q",
                    option_id="opt-1",
                    idempotency_key=order_id,
                    state="PLACED",
                    dest_lat=40.7,
                    dest_lon=-74.0,
                    lines_json="[]",
                    allocation_json="{}",
                    promised_date="2030-01-05",
                    created_at=LATE_IN_THE_DAY,
                    updated_at=0.0,
                    version=1,
                )
            )
            conn.execute(
                sa.insert(schema.inbound_reservations).values(
                    receipt_id=receipt_id, order_id=order_id, qty=1
                )
            )
        reservation = {"node_id": "DC-NJ", "sku": "A", "qty": 1}
        conn.execute(sa.insert(schema.reservations).values(order_id="o-PO-O", **reservation))
        conn.execute(
            sa.insert(schema.reservations).values(quote_id="q", expires_at=9e9, **reservation)
        )
    config = alembic_config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    store.migrate()
    assert schema_diff(store) == []
    with store.read() as conn:
        pending = store.pending_resourcing(conn)
    assert [(p.receipt_id, p.order_id, p.kind, p.due) for p in pending] == [
        ("PO-C", "o-PO-C", "receipt_cancelled", "2030-01-02"),
        ("PO-R", "o-PO-R", "receipt_short", "2030-01-02"),
    ]
    r = schema.reservations
    with store.read() as conn:
        days = conn.execute(sa.select(r.c.order_id, r.c.quote_id, r.c.capacity_day)).all()
    # 0009 then drops the quote hold: quotes hold no stock any more.
    assert sorted(days, key=str) == [("o-PO-O", None, "2030-03-04")]


def test_upgrade_turns_network_money_from_cents_into_millicents(store: Store) -> None:
    """0008: node and rate money was whole cents; it becomes millicents, exactly, and a
    downgrade gives back the cents (rounding half up what a cent cannot hold)."""
    config = alembic_config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0007")
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(schema.nodes).values(
                node_id="N",
                kind="dc",
                lat=40.0,
                lon=-74.0,
                handling_days=1,
                handling_cost=212,  # $2.12 in cents, as 0007 stored it
                storage_cost=3,
                daily_capacity_units=None,
            )
        )
        conn.execute(sa.insert(schema.zones).values(zone="1", max_km=20_000.0))
        conn.execute(
            sa.insert(schema.rates).values(
                service="ground", zone="1", base_price=500, per_kg=46, transit_days=2
            )
        )
    store.migrate()
    assert schema_diff(store) == []

    def money() -> tuple[Any, ...]:
        with store.engine.connect() as conn:
            node = conn.execute(
                sa.select(schema.nodes.c.handling_cost, schema.nodes.c.storage_cost)
            )
            rate = conn.execute(sa.select(schema.rates.c.base_price, schema.rates.c.per_kg))
            return (*node.one(), *rate.one())

    assert money() == (212_000, 3_000, 500_000, 46_000)
    catalog = store.catalog()
    assert int(catalog.handling_cost[0]) == 212_000 and int(catalog.per_kg[0, 0]) == 46_000
    with store.engine.begin() as conn:  # a 5-decimal price, then back to cents
        conn.execute(sa.update(schema.rates).values(per_kg=46_360))
        config.attributes["connection"] = conn
        command.downgrade(config, "0007")
    assert money() == (212, 3, 500, 46)


def test_upgrade_drops_quote_time_holds_and_keeps_order_reservations(store: Store) -> None:
    """0009: quotes no longer hold stock; the holds they took before are released at once,
    while order reservations stay; checkout holds then name their holder."""
    store.migrate()
    store.load_network(hand_network(), reason="holds")
    config = alembic_config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0008")
    with store.engine.begin() as conn:
        r = sa.table(
            "reservations",
            *(
                sa.column(c)
                for c in ("node_id", "sku", "qty", "quote_id", "order_id", "expires_at")
            ),
        )
        conn.execute(
            sa.insert(r).values(node_id="DC-NJ", sku="A"),
            [
                {"qty": 3, "quote_id": "q-old", "order_id": None, "expires_at": 9e9},
                {"qty": 1, "quote_id": None, "order_id": "o-1", "expires_at": None},
            ],
        )
    store.migrate()
    assert schema_diff(store) == []
    with store.read() as conn:
        rows = conn.execute(
            sa.select(schema.reservations.c.order_id, schema.reservations.c.qty)
        ).all()
        (position,) = store.positions(conn, ["A"], ["DC-NJ"])
    assert [tuple(row) for row in rows] == [("o-1", 1)]
    assert (position.reserved, position.held) == (1, 0)


def test_upgrade_gives_existing_orders_shipments_and_numbers_their_events(store: Store) -> None:
    """0012: an order placed before shipments existed gets one per parcel of its allocation
    (state from the order's, planned dispatch = arrival - the lane's transit days), the
    parcels name them, and existing events are numbered 1..n in insertion order; the next
    event written continues the sequence."""
    import json

    from oms.store import outbox

    store.migrate()
    store.load_network(hand_network(), reason="shipments")
    parcel = {"service": "ground", "lines": [{"line": 0, "sku": "A", "qty": 1}]}
    orders = {
        "o-rel": ("RELEASED", [("DC-NJ", "1", 2), ("ST-PHL", "2", 3)]),
        "o-shp": ("SHIPPED", [("DC-CHI", "3", 3)]),
    }
    with store.engine.begin() as conn:
        for order_id, (state, parcels) in orders.items():
            allocation = {
                "start_date": "2030-01-01",
                "parcels": [dict(parcel, node_id=n, zone=z, arrival_days=d) for n, z, d in parcels],
            }
            conn.execute(
                sa.insert(schema.orders).values(
                    order_id=order_id,
                    quote_id="q",
                    option_id="opt-1",
                    idempotency_key=order_id,
                    state=state,
                    dest_lat=40.7,
                    dest_lon=-74.0,
                    lines_json='[{"sku": "A", "qty": 2}]',
                    allocation_json=json.dumps(allocation),
                    promised_date="2030-01-04",
                    created_at=1.0,
                    updated_at=7.0,
                    version=1,
                )
            )
            for kind in ("placed", state.lower()):
                conn.execute(
                    sa.insert(schema.order_events).values(
                        order_id=order_id, at=1.0, type=kind, detail=kind
                    )
                )
    config = alembic_config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0010")
    store.migrate()
    assert schema_diff(store) == []
    s = schema.shipments
    with store.read() as conn:
        rows = conn.execute(
            sa.select(
                s.c.order_id,
                s.c.node_id,
                s.c.state,
                s.c.planned_dispatch,
                s.c.planned_arrival,
                s.c.shipped_at,
                s.c.shipment_id,
            ).order_by(s.c.order_id, s.c.node_id)
        ).all()
        documents = {
            order_id: json.loads(doc)
            for order_id, doc in conn.execute(
                sa.select(schema.orders.c.order_id, schema.orders.c.allocation_json)
            )
        }
        events = conn.execute(
            sa.select(schema.order_events.c.order_id, schema.order_events.c.seq).order_by(
                schema.order_events.c.event_id
            )
        ).all()
    assert [tuple(r)[:6] for r in rows] == [
        ("o-rel", "DC-NJ", "REQUESTED", "2030-01-02", "2030-01-03", None),
        ("o-rel", "ST-PHL", "REQUESTED", "2030-01-02", "2030-01-04", None),
        ("o-shp", "DC-CHI", "SHIPPED", "2030-01-01", "2030-01-04", 7.0),
    ]
    named = {p["shipment_id"] for d in documents.values() for p in d["parcels"]}
    assert named == {r.shipment_id for r in rows}
    assert [seq for _, seq in events] == [1, 2, 3, 4]
    with store.write() as conn:
        store.add_event(conn, "o-rel", "note", "after the upgrade")
    with store.read() as conn:
        assert [e.sequence for e in outbox.events_after(conn, 3, 10)] == [4, 5]
