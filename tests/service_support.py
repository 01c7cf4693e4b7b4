"""Service test support: a hand-checkable network, in-process and multi-process servers,
and a throwaway PostgreSQL database per test module.

Every server here is real: a grpc server on a loopback port, a real store
(SQLite file or the PostgreSQL at 127.0.0.1:5432), real channels.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import numpy as np
from google.type import date_pb2, money_pb2

from oms.convert import iso_of, millicents_of
from oms.server import build_server, wait_until_serving
from oms.settings import Settings
from oms.store import Store
from oms.v1 import (
    checkout_pb2,
    checkout_pb2_grpc,
    common_pb2,
    fulfilment_pb2_grpc,
    inventory_pb2_grpc,
)
from sourcing.model import UNLIMITED_CAPACITY, Network, NodeKind

from support import REQUIRE_PG, unavailable

ADMIN_TOKEN = "test-admin-token"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
PG_SERVER_URL = os.environ.get("OMS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

#: The customer in the hand-checked cases: Manhattan.
NYC = common_pb2.Location(latitude=40.7128, longitude=-74.0060)


def cents(value: money_pb2.Money) -> int:
    """A google.type.Money the hand computations expect in whole cents, as cents."""
    amount = millicents_of(value)
    assert amount % 1000 == 0, f"{amount} millicents is not a whole number of cents"
    return amount // 1000


def iso(value: date_pb2.Date) -> str:
    """A google.type.Date as ISO text (``2030-03-08``), for comparing with hand dates."""
    return iso_of(value)


def hand_network(
    on_hand: dict[tuple[str, str], int] | None = None,
    safety: dict[tuple[str, str], int] | None = None,
) -> Network:
    """Three nodes, two SKUs, one ground service: small enough to check by hand.

    * ``DC-NJ`` (Newark, 14 km from NYC): zone "1" (<= 100 km), handling $2.00, 1 day;
    * ``ST-PHL`` (Philadelphia, 130 km): zone "2" (<= 1000 km), handling $3.00, 1 day;
    * ``DC-CHI`` (Chicago, 1145 km): zone "3", handling $1.50, 0 days.
    Ground: zone 1 $5.00 + $1.00/kg, 1 day; zone 2 $7.00 + $1.00/kg, 2 days;
    zone 3 $9.00 + $1.00/kg, 3 days. SKUs: ``A`` 1 kg, ``B`` 2 kg. Storage
    cost 0, so no storage credit: every cost below is parcel base + kg + handling.
    Chicago keeps a safety stock of 2 units of each SKU (``safety`` changes any
    position's), so it can promise 48 of its 50.
    """
    stock = {
        ("DC-NJ", "A"): 5,
        ("DC-NJ", "B"): 5,
        ("ST-PHL", "A"): 5,
        ("DC-CHI", "A"): 50,
        ("DC-CHI", "B"): 50,
    }
    stock.update(on_hand or {})
    kept = {("DC-CHI", "A"): 2, ("DC-CHI", "B"): 2}
    kept.update(safety or {})
    nodes = ("DC-NJ", "ST-PHL", "DC-CHI")
    skus = ("A", "B")
    grid = np.zeros((3, 2), dtype=np.int64)
    for (node, sku), qty in stock.items():
        grid[nodes.index(node), skus.index(sku)] = qty
    safety_grid = np.zeros((3, 2), dtype=np.int64)
    for (node, sku), qty in kept.items():
        safety_grid[nodes.index(node), skus.index(sku)] = qty
    return Network(
        node_ids=nodes,
        node_kinds=(NodeKind.DC, NodeKind.STORE, NodeKind.DC),
        lat=np.array([40.7357, 39.9526, 41.8781]),
        lon=np.array([-74.1724, -75.1652, -87.6298]),
        handling_days=np.array([1, 1, 0]),
        handling_cost=np.array([200_000, 300_000, 150_000]),  # millicents: $2.00, $3.00, $1.50
        storage_cost=np.zeros(3, dtype=np.int64),
        capacity=np.full(3, UNLIMITED_CAPACITY, dtype=np.int64),
        sku_ids=skus,
        weight_g=np.array([1000, 2000]),
        daily_demand=np.array([1.0, 1.0]),
        on_hand=grid,
        safety_stock=safety_grid,
        reserved=np.zeros((3, 2), dtype=np.int64),
        zone_ids=("1", "2", "3"),
        zone_max_km=np.array([100.0, 1000.0, 20000.0]),
        service_ids=("ground",),
        base_price=np.array([[500_000, 700_000, 900_000]]),
        per_kg=np.array([[100_000, 100_000, 100_000]]),
        transit_days=np.array([[1, 2, 3]]),
        offered=np.ones((1, 3), dtype=np.bool_),
    )


@dataclass
class Client:
    """Stubs over one channel, plus the store behind the server for checking invariants."""

    channel: grpc.Channel
    store: Store
    target: str

    @property
    def checkout(self) -> checkout_pb2_grpc.CheckoutServiceStub:
        return checkout_pb2_grpc.CheckoutServiceStub(self.channel)

    @property
    def fulfilment(self) -> fulfilment_pb2_grpc.FulfilmentServiceStub:
        return fulfilment_pb2_grpc.FulfilmentServiceStub(self.channel)

    @property
    def inventory(self) -> inventory_pb2_grpc.InventoryServiceStub:
        return inventory_pb2_grpc.InventoryServiceStub(self.channel)

    def quote(
        self, lines: dict[str, int], destination: common_pb2.Location = NYC, **fields: object
    ) -> checkout_pb2.QuoteDeliveryOptionsResponse:
        request = checkout_pb2.QuoteDeliveryOptionsRequest(
            destination=destination,
            lines=[common_pb2.CartLine(sku=s, quantity=q) for s, q in lines.items()],
            **fields,  # type: ignore[arg-type]
        )
        return self.checkout.QuoteDeliveryOptions(request, timeout=10)

    def place(
        self, quote_id: str, option_id: str, key: str | None = None
    ) -> checkout_pb2.PlaceOrderResponse:
        return self.checkout.PlaceOrder(
            checkout_pb2.PlaceOrderRequest(
                quote_id=quote_id, option_id=option_id, idempotency_key=key or uuid.uuid4().hex
            ),
            timeout=10,
        )


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'oms.db'}"


def prepared_store(url: str, network: Network, clock: Callable[[], float] | None = None) -> Store:
    store = Store(url, pool_size=4) if clock is None else Store(url, pool_size=4, clock=clock)
    store.migrate()
    store.load_network(network, reason="test network")
    return store


@contextmanager
def running_server(
    url: str,
    network: Network | None = None,
    clock: Callable[[], float] | None = None,
    **overrides: object,
) -> Iterator[Client]:
    """An in-process server on a free loopback port over ``url`` (loaded with ``network``).

    ``clock``: the store's clock (epoch seconds), for tests that move time on.
    """
    settings = replace(
        Settings(
            database_url=url,
            port=0,
            admin_token=ADMIN_TOKEN,
            threads=16,
            solver_time_limit_s=2.0,
            alert_poll_s=0.1,
        ),
        **overrides,  # type: ignore[arg-type]
    )
    store = prepared_store(url, network if network is not None else hand_network(), clock)
    server, port = build_server(settings, store)
    server.start()
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target)
    try:
        yield Client(channel, store, target)
    finally:
        channel.close()
        server.stop(grace=None).wait()
        store.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server_processes(url: str, workers: int, *extra: str) -> Iterator[str]:
    """``oms serve --workers N`` as a subprocess on a free port; yields the target."""
    with server_process(url, workers, *extra) as (target, _):
        yield target


@contextmanager
def server_process(
    url: str, workers: int, *extra: str
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """As :func:`server_processes`, also yielding the ``oms serve`` process (the parent)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "oms.cli",
        "serve",
        "--database-url",
        url,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-demo",
        "--http-port",  # no dashboard beside these servers (tests/test_dashboard_*.py test it)
        "0",
        *extra,
    ]
    # Logs go to a file: a pipe nobody reads fills up and blocks the workers' logging.
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - outlives this block's scope
    # The token from the environment: on the command line every local user could read it.
    env = {**os.environ, "OMS_ADMIN_TOKEN": ADMIN_TOKEN}
    process = subprocess.Popen(command, stderr=log, text=True, env=env)
    target = f"127.0.0.1:{port}"
    try:
        wait_until_serving(target, timeout_s=90.0)
        yield target, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.seek(0)
        err = log.read()
        log.close()
        if process.returncode not in (0, -signal.SIGTERM):
            raise AssertionError(f"server exited with {process.returncode}: {err[-2000:]}")


def postgres_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards; skips if none is
    reachable (fails instead where ``OMS_REQUIRE_PG`` is set, as in CI)."""
    import psycopg

    base = PG_SERVER_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"no PostgreSQL reachable at {base}: {exc}".splitlines()[0], REQUIRE_PG)
    name = f"oms_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_SERVER_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def oversell_violations(store: Store) -> list[str]:
    """Positions that promise more than the documented rule lets them:
    on hand - safety stock - order reservations - live checkout holds < 0.

    A stock count that finds fewer units may legitimately push a position with
    safety stock below zero (it is a fact, refused only below what orders
    reserve): callers that race counts keep safety stock off the counted positions.
    """
    with store.read() as conn:
        positions = store.positions(conn)
    return [
        f"{p.node_id}/{p.sku}: on_hand {p.on_hand}, safety {p.safety_stock}, "
        f"reserved {p.reserved}, held {p.held}"
        for p in positions
        if p.on_hand - p.safety_stock - p.reserved - p.held < 0
    ]
