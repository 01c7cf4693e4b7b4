"""Dashboard test support: the dashboard served by uvicorn on a loopback port, in a thread,
and the figures the overview shows computed independently from the store's rows."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import uvicorn

from oms import schema as t
from oms.dashboard.app import create_app
from oms.dashboard.config import DashboardConfig
from oms.store import Store

from service_support import free_port

VIEWER = "viewer-token-for-tests"
ADMIN_DASH = "admin-token-for-tests"


def config(url: str, **overrides: Any) -> DashboardConfig:
    return replace(
        DashboardConfig(
            database_url=url,
            port=0,
            viewer_token=VIEWER,
            admin_token=ADMIN_DASH,
            demo_orders=0,
            poll_s=0.5,
            # Every request reads the store (tests write, then look); the shared figures
            # are tested in test_dashboard_figures.py and in the browser test.
            refresh_s=0.0,
            unchanged_s=0.0,
        ),
        **overrides,
    )


@contextmanager
def dashboard_server(
    url: str, clock: Callable[[], float] = time.time, **overrides: Any
) -> Iterator[str]:
    """The dashboard app under uvicorn on a free port (its clock ``clock``); yields its
    base URL."""
    port = free_port()
    store = Store(url, pool_size=4)
    app = create_app(config(url, port=port, **overrides), store, clock=clock)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.dispose()


@dataclass(frozen=True)
class Expected:
    """The overview's figures for today, computed from raw rows with plain Python."""

    orders: int
    by_state: dict[str, int]
    cost: float
    shipping: float
    handling: float
    storage_credit: float
    parcels: float
    split_rate: float
    labels: dict[str, int]
    quotes: int
    delivered: int
    kept: int


def expected_today(store: Store, now: float) -> Expected:
    midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return expected_since(store, midnight.timestamp())


#: Shipment states that reached the customer (``oms.store.shipment_records.DONE``).
ARRIVED = ("DELIVERED", "PICKED_UP")


def expected_since(store: Store, start: float) -> Expected:
    """The overview's figures over orders, quotes and deliveries since ``start``.

    Orders, not shipments: an order is counted once in every figure whatever its parcels.
    It is delivered when its state is DELIVERED, at the time its last shipment arrived
    (read from the shipments table, not from the order events the dashboard counts), and
    kept when that UTC day is on or before its promised date.
    """
    with store.read() as conn:
        orders = [
            (row.order_id, row.state, json.loads(row.allocation_json), row.promised_date)
            for row in conn.execute(
                sa.select(
                    t.orders.c.order_id,
                    t.orders.c.state,
                    t.orders.c.allocation_json,
                    t.orders.c.promised_date,
                ).where(t.orders.c.created_at >= start)
            )
        ]
        quotes = conn.execute(
            sa.select(sa.func.count()).where(t.quotes.c.created_at >= start)
        ).scalar_one()
        s, o = t.shipments, t.orders
        arrived: dict[str, float] = {}
        for order_id, at in conn.execute(
            sa.select(s.c.order_id, s.c.delivered_at)
            .join(o, o.c.order_id == s.c.order_id)
            .where(o.c.state == "DELIVERED", s.c.state.in_(ARRIVED))
        ):
            arrived[order_id] = max(arrived.get(order_id, 0.0), float(at))
        promised = dict(
            conn.execute(sa.select(t.orders.c.order_id, t.orders.c.promised_date)).all()
        )
    deliveries = {order_id: at for order_id, at in arrived.items() if at >= start}
    by_state: dict[str, int] = {}
    for _, state, _, _ in orders:
        by_state[state] = by_state.get(state, 0) + 1
    live = [doc for _, state, doc, _ in orders if state != "CANCELLED"]
    n = len(live) or 1
    unit = 100_000.0
    labels = {
        label: sum(1 for doc in live if label in doc["labels"])
        for label in ("CHEAPEST", "FASTEST", "SINGLE_PARCEL", "BALANCED", "COLLECT")
    }
    kept = sum(
        1
        for order_id, at in deliveries.items()
        if datetime.fromtimestamp(at, UTC).date().isoformat() <= promised[order_id]
    )
    return Expected(
        orders=len(orders),
        by_state=by_state,
        cost=sum(doc["cost"] for doc in live) / n / unit,
        shipping=sum(doc["shipping"] for doc in live) / n / unit,
        handling=sum(doc["handling"] for doc in live) / n / unit,
        storage_credit=sum(doc["storage_credit"] for doc in live) / n / unit,
        parcels=sum(len(doc["parcels"]) for doc in live) / n,
        split_rate=sum(1 for doc in live if len(doc["parcels"]) > 1) / n,
        labels=labels,
        quotes=int(quotes),
        delivered=len(deliveries),
        kept=kept,
    )
