"""The demo orders a fresh `oms serve` places: they must move through their whole life.

The seeder drives the real checkout and fulfilment servicers in-process, on a
clock set back over 30 days. Its refused calls are only logged, so a call the
service starts refusing (as ship and deliver did once they became admin calls)
would leave a first look of orders that never ship; this checks the store.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from oms import schema as t
from oms.dashboard import demo
from oms.store import Store
from sourcing.demo import demo_network

NOW = time.mktime((2026, 11, 20, 12, 0, 0, 0, 0, 0))


def _fresh_store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'oms.db'}"
    store = Store(url)
    try:
        store.migrate()
        store.load_network(demo_network(), reason="test")
    finally:
        store.dispose()
    return url


def test_demo_orders_are_shipped_and_delivered_as_their_age_says(tmp_path: Path) -> None:
    url = _fresh_store(tmp_path)
    placed = demo.seed(url, 80, now=NOW)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            orders = Counter(r[0] for r in conn.execute(sa.select(t.orders.c.state)))
            shipments = Counter(r[0] for r in conn.execute(sa.select(t.shipments.c.state)))
            today = time.strftime("%Y-%m-%d", time.gmtime(NOW))
            late = conn.execute(
                sa.select(sa.func.count())
                .select_from(t.shipments)
                .where(
                    t.shipments.c.state.in_(["PENDING", "REQUESTED", "ACCEPTED"]),
                    t.shipments.c.planned_dispatch < today,
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert placed == sum(orders.values()) > 40
    # Orders spread over 30 days, most older than their delivery: most are delivered,
    # their shipments too; the few still open are the last days' orders.
    assert orders["DELIVERED"] > placed / 2, orders
    assert shipments["DELIVERED"] > placed / 2, shipments
    open_orders = orders["PLACED"] + orders["RELEASED"]
    assert open_orders < placed / 4, orders
    # A shipment still open past its planned dispatch is the exception, not the rule.
    assert late <= max(2, placed // 20), (late, shipments)


def test_demo_orders_are_placed_once_per_store(tmp_path: Path) -> None:
    url = _fresh_store(tmp_path)
    assert demo.seed(url, 5, now=NOW) > 0
    assert demo.seed(url, 5, now=NOW) == 0
