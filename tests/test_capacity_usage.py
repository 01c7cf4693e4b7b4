"""Daily node capacity use (``node_day_usage``) under concurrent writers, on SQLite and
PostgreSQL: the first units a node promises on a day, written by two transactions at once,
add up; neither fails.

PostgreSQL did not: each transaction's UPDATE found no row for the new day (the other's
insert was not yet committed), so both INSERTed, and the second failed on the primary key
once the first committed (an IntegrityError surfacing as an internal error of PlaceOrder)
for nodes without a capacity limit, whose rows no lock orders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from oms import schema as t
from oms.store import Store

from service_support import hand_network, prepared_store


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = prepared_store(database_url, hand_network())
    try:
        yield store
    finally:
        store.dispose()


def units(store: Store, node: str, day: str) -> int | None:
    u = t.node_day_usage
    with store.read() as conn:
        found = conn.execute(
            sa.select(u.c.units).where(u.c.node_id == node, u.c.day == day)
        ).scalar_one_or_none()
    return None if found is None else int(found)


def test_the_first_units_of_a_day_from_two_writers_at_once_add_up(store: Store) -> None:
    day = "2031-01-02"
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with store.write() as conn:
                store.capacity.use(conn, {"DC-NJ": 3, "ST-PHL": 1}, day)
        except BaseException as exc:  # reported below, with its type
            errors.append(exc)

    with store.write() as conn:
        store.capacity.use(conn, {"DC-NJ": 2}, day)
        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.5)  # the second writer now waits on this one's new row (or lock)
    other.join(timeout=30)
    assert not other.is_alive()
    assert errors == []
    assert units(store, "DC-NJ", day) == 5
    assert units(store, "ST-PHL", day) == 1
