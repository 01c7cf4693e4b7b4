"""The order event feed (issue 16): gapless, in order, and whole across a SIGKILL.

A real ``oms serve`` process on each store (SQLite file; the real PostgreSQL,
skipped with a reason when unreachable). 20 client threads place, release,
ship and cancel orders while a reader follows ``WatchOrderEvents``:

* the reader sees sequences 1, 2, 3... exactly, no gap, no repeat, and at the
  end every event the store holds (all of them numbered: the outbox numbers an
  event in the transaction that writes it);
* the server is then killed with SIGKILL in the middle of the same load and
  started again; the reader resumes after the last sequence it saw and again
  gets the rest with no gap, and every event of every committed change.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import sqlalchemy as sa

from oms import schema as t
from oms.server import wait_until_serving
from oms.v1 import (
    checkout_pb2,
    checkout_pb2_grpc,
    common_pb2,
    events_pb2,
    events_pb2_grpc,
    fulfilment_pb2,
    fulfilment_pb2_grpc,
)

from service_support import ADMIN, ADMIN_TOKEN, hand_network, prepared_store

CLIENTS = 20
PLENTY = {(n, sku): 100_000 for n in ("DC-NJ", "ST-PHL", "DC-CHI") for sku in ("A", "B")}
#: Statuses a shopper may meet: a lost race, or the server being killed under it.
EXPECTED = (
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
)
ERRORS: list[str] = []


@contextmanager
def killable_server(url: str, port: int) -> Iterator[subprocess.Popen[str]]:
    command = [
        sys.executable,
        "-m",
        "oms.cli",
        "serve",
        "--database-url",
        url,
        "--port",
        str(port),
        "--no-demo",
        "--http-port",
        "0",
    ]
    env = {**os.environ, "OMS_ADMIN_TOKEN": ADMIN_TOKEN, "OMS_ALERT_POLL_S": "0.05"}
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - read after the process ends
    process = subprocess.Popen(command, stderr=log, text=True, env=env)
    try:
        wait_until_serving(f"127.0.0.1:{port}", timeout_s=90.0)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()


def shopper(target: str, stop: threading.Event, i: int) -> None:
    """Place orders, release and ship some, cancel others, until told to stop."""
    with grpc.insecure_channel(target) as channel:
        checkout = checkout_pb2_grpc.CheckoutServiceStub(channel)
        fulfil = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)
        n = 0
        while not stop.is_set():
            n += 1
            try:
                quote = checkout.QuoteDeliveryOptions(
                    checkout_pb2.QuoteDeliveryOptionsRequest(
                        destination=common_pb2.Location(latitude=40.7, longitude=-74.0),
                        lines=[common_pb2.CartLine(sku="A", quantity=1 + n % 2)],
                    ),
                    timeout=10,
                )
                order = checkout.PlaceOrder(
                    checkout_pb2.PlaceOrderRequest(
                        quote_id=quote.quote_id,
                        option_id=quote.options[0].option_id,
                        idempotency_key=uuid.uuid4().hex,
                    ),
                    timeout=10,
                ).order
                if (i + n) % 3 == 0:
                    checkout.CancelOrder(
                        checkout_pb2.CancelOrderRequest(order_id=order.order_id), timeout=10
                    )
                else:
                    fulfil.ReleaseOrder(
                        fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id),
                        metadata=ADMIN,
                        timeout=10,
                    )
                    fulfil.ConfirmShipment(
                        fulfilment_pb2.ConfirmShipmentRequest(order_id=order.order_id),
                        metadata=ADMIN,
                        timeout=10,
                    )
            except grpc.RpcError as exc:
                if exc.code() not in EXPECTED:
                    ERRORS.append(f"{exc.code()}: {exc.details()}")
                if exc.code() != grpc.StatusCode.ABORTED:
                    time.sleep(0.05)


class Reader:
    """Follows WatchOrderEvents from a cursor, reconnecting after the server goes away."""

    def __init__(self) -> None:
        self.sequences: list[int] = []
        self.stop = threading.Event()

    @property
    def cursor(self) -> int:
        return self.sequences[-1] if self.sequences else 0

    def _cancel_on_stop(self, stream: grpc.Future) -> None:
        self.stop.wait()
        stream.cancel()

    def follow(self, target: str) -> None:
        while not self.stop.is_set():
            try:
                with grpc.insecure_channel(target) as channel:
                    stub = events_pb2_grpc.OrderEventServiceStub(channel)
                    stream = stub.WatchOrderEvents(
                        events_pb2.WatchOrderEventsRequest(after_sequence=self.cursor),
                        metadata=ADMIN,
                    )
                    watcher = threading.Thread(
                        target=self._cancel_on_stop, args=(stream,), daemon=True
                    )
                    watcher.start()
                    for message in stream:
                        self.sequences.append(message.event.sequence)
            except grpc.RpcError:
                time.sleep(0.1)


def committed(url: str) -> tuple[int, int, int]:
    """(events, highest sequence, events without a sequence) in the store."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            e = t.order_events
            count = conn.execute(sa.select(sa.func.count()).select_from(e)).scalar() or 0
            top = conn.execute(sa.select(sa.func.max(e.c.seq))).scalar() or 0
            unnumbered = (
                conn.execute(sa.select(sa.func.count()).where(e.c.seq.is_(None))).scalar() or 0
            )
    finally:
        engine.dispose()
    return int(count), int(top), int(unnumbered)


def run_load(target: str, seconds: float) -> None:
    stop = threading.Event()
    threads = [
        threading.Thread(target=shopper, args=(target, stop, i), daemon=True)
        for i in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)


def wait_for(reader: Reader, sequence: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while reader.cursor < sequence and time.monotonic() < deadline:
        time.sleep(0.05)


def test_feed_is_gapless_under_load_and_across_sigkill(database_url: str) -> None:
    from service_support import free_port

    ERRORS.clear()
    store = prepared_store(database_url, hand_network(on_hand=PLENTY))
    store.dispose()
    port = free_port()
    target = f"127.0.0.1:{port}"
    reader = Reader()
    follower = threading.Thread(target=reader.follow, args=(target,), daemon=True)
    try:
        with killable_server(database_url, port):
            follower.start()
            run_load(target, 4.0)
            count, top, unnumbered = committed(database_url)
            wait_for(reader, top)
            assert count > CLIENTS * 3 and unnumbered == 0
            assert reader.sequences == list(range(1, top + 1))
            assert top == count

        # Again, with the server killed in the middle of the load.
        with killable_server(database_url, port) as process:
            load = threading.Thread(target=run_load, args=(target, 4.0))
            load.start()
            time.sleep(2.0)
            process.send_signal(signal.SIGKILL)
            process.wait()
            load.join()
        killed_at = reader.cursor
        with killable_server(database_url, port):
            run_load(target, 1.5)
            count, top, unnumbered = committed(database_url)
            wait_for(reader, top)
        assert killed_at > count // 3  # the reader had followed the load before the kill
        assert unnumbered == 0 and top == count
        assert reader.sequences == list(range(1, top + 1))
        assert ERRORS == []
    finally:
        reader.stop.set()
        follower.join(timeout=10)
