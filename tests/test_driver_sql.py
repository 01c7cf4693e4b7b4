"""oms.driver_sql: hot-path statements run on the driver inside SQLAlchemy's transaction."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from oms import schema as t
from oms.driver_sql import Statement, execute, execute_many, fetch
from oms.errors import Aborted
from oms.store import Store

_NODES = Statement(
    sqlite="SELECT node_id, kind FROM nodes WHERE node_id IN ({ids}) ORDER BY node_id",
    postgresql="SELECT node_id, kind FROM nodes WHERE node_id = ANY(%(ids)s) ORDER BY node_id",
)
_SKUS_HEAVIER = Statement(
    sqlite="SELECT sku FROM skus WHERE weight_g > :grams AND sku IN ({skus}) ORDER BY sku",
    postgresql="SELECT sku FROM skus WHERE weight_g > %(grams)s AND sku = ANY(%(skus)s) "
    "ORDER BY sku",
)
_INSERT_SKU = Statement(
    sqlite="INSERT INTO skus (sku, weight_g, daily_demand) VALUES (:sku, :weight_g, 0)",
    postgresql="INSERT INTO skus (sku, weight_g, daily_demand) VALUES (%(sku)s, %(weight_g)s, 0)",
)


@pytest.fixture
def store(database_url: str) -> Store:
    store = Store(database_url, pool_size=2)
    store.migrate()
    with store.write() as conn:
        conn.execute(
            sa.insert(t.nodes),
            [
                {
                    "node_id": n,
                    "kind": k,
                    "lat": 40.0,
                    "lon": -74.0,
                    "handling_days": 0,
                    "handling_cost": 0,
                    "storage_cost": 0,
                }
                for n, k in (("A", "DC"), ("B", "STORE"), ("C", "STORE"))
            ],
        )
        conn.execute(
            sa.insert(t.skus),
            [{"sku": s, "weight_g": w, "daily_demand": 0} for s, w in (("s1", 100), ("s2", 900))],
        )
    return store


def test_lists_expand_for_any_length_and_scalars_bind(store: Store) -> None:
    with store.read() as conn:
        assert fetch(conn, _NODES, ids=["C", "A"]) == [("A", "DC"), ("C", "STORE")]
        assert fetch(conn, _NODES, ids=["B"]) == [("B", "STORE")]
        assert fetch(conn, _NODES, ids=[]) == []
        assert fetch(conn, _NODES, ids=["A", "B", "C", "nope"]) == [
            ("A", "DC"),
            ("B", "STORE"),
            ("C", "STORE"),
        ]
        assert fetch(conn, _SKUS_HEAVIER, grams=500, skus=["s1", "s2"]) == [("s2",)]
        assert fetch(conn, _SKUS_HEAVIER, grams=50, skus=["s1"]) == [("s1",)]


def test_writes_join_the_callers_transaction(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as conn:
        execute_many(
            conn, _INSERT_SKU, [{"sku": "s3", "weight_g": 1}, {"sku": "s4", "weight_g": 2}]
        )
        # SQLAlchemy sees the driver's uncommitted rows: the same transaction.
        assert conn.execute(sa.select(sa.func.count()).select_from(t.skus)).scalar() == 4
        raise RuntimeError("roll back")
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.skus)).scalar() == 2
    with store.write() as conn:
        assert execute(conn, _INSERT_SKU, sku="s3", weight_g=3) == 1
    with store.read() as conn:
        assert fetch(conn, _SKUS_HEAVIER, grams=0, skus=["s3"]) == [("s3",)]


def test_driver_errors_surface_as_sqlalchemy_errors(store: Store) -> None:
    with pytest.raises(IntegrityError, match="s1"), store.write() as conn:
        execute(conn, _INSERT_SKU, sku="s1", weight_g=1)
    bad = Statement(sqlite="SELECT nonsense FROM skus", postgresql="SELECT nonsense FROM skus")
    with store.engine.connect() as conn, conn.begin(), pytest.raises(DBAPIError, match="nonsense"):
        fetch(conn, bad)


def test_a_lost_race_on_the_driver_is_aborted(store: Store) -> None:
    """The store's translation applies: losing a lock to another writer is ABORTED."""
    holder = store.engine.connect().execution_options(sqlite_immediate=True)
    try:
        holder.begin()  # BEGIN IMMEDIATE on SQLite: it holds the write lock
        if store.is_sqlite:
            # Ours gives up at once instead of waiting for it.
            setup = Statement(sqlite="PRAGMA busy_timeout = 0", postgresql="")
            write = _INSERT_SKU
            params = {"sku": "s9", "weight_g": 1}
        else:
            holder.execute(sa.select(t.skus).where(t.skus.c.sku == "s1").with_for_update())
            setup = Statement(sqlite="", postgresql="SET LOCAL lock_timeout = '50ms'")
            write = Statement(
                sqlite="", postgresql="SELECT sku FROM skus WHERE sku = 's1' FOR UPDATE"
            )
            params = {}
        with pytest.raises(Aborted, match="lost a race"), store.read() as conn:
            execute(conn, setup)
            execute(conn, write, **params)
    finally:
        holder.rollback()
        holder.close()


def test_portable_statements_derive_postgresql_text() -> None:
    statement = Statement.portable(
        "SELECT a FROM t WHERE x IN ({skus}) AND y = :now AND z::text = 'k:v' ORDER BY a",
        for_update=True,
    )
    assert statement.sqlite == (
        "SELECT a FROM t WHERE x IN ({skus}) AND y = :now AND z::text = 'k:v' ORDER BY a"
    )
    assert statement.postgresql == (
        "SELECT a FROM t WHERE x = ANY(%(skus)s) AND y = %(now)s AND z::text = 'k:v' "
        "ORDER BY a FOR UPDATE"
    )
