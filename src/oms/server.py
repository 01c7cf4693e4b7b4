"""The gRPC server: servicers, health, reflection, interceptors, and multi-process serving.

``build_server`` assembles one process's server (a sync grpc server with a
thread pool: CP-SAT and numpy release the GIL, and DESIGN section 8 measured
the sync server ahead of asyncio here). ``serve`` runs ``workers`` such
processes on one port with SO_REUSEPORT, the grpc multiprocessing pattern,
so both cores serve: the parent migrates the store and loads the demo
network first, then spawns the workers and (optionally) serves Prometheus
metrics aggregated over them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from oms import metrics
from oms.admission import CallExecutor
from oms.checkout import CheckoutServicer
from oms.credentials import read_node_tokens, redact_url
from oms.dashboard.config import DashboardConfig
from oms.dashboard.process import start_beside_service as start_dashboard
from oms.events import OrderEventServicer
from oms.fulfilment import FulfilmentServicer
from oms.health import StoreProbe
from oms.interceptors import (
    AuthInterceptor,
    InputInterceptor,
    ObservabilityInterceptor,
    StreamLimitInterceptor,
)
from oms.inventory import InventoryServicer
from oms.logging import configure_logging
from oms.receiving import start_sweeper
from oms.reflection import enable_server_reflection
from oms.settings import Settings
from oms.shipping import LateShipmentWatch
from oms.store import Store
from oms.supervisor import Supervisor
from oms.v1 import (
    checkout_pb2,
    checkout_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    fulfilment_pb2,
    fulfilment_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
)
from oms.validation import MAX_REQUEST_BYTES
from sourcing.solver import warm_up as warm_up_solver

log = logging.getLogger("oms.server")

#: Allocations (net of frees) between young-generation collections; Python's default is 700.
GC_THRESHOLD_0 = 20_000

SERVICE_NAMES = (
    checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name,
    fulfilment_pb2.DESCRIPTOR.services_by_name["FulfilmentService"].full_name,
    inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["OrderEventService"].full_name,
)


def _open_store(settings: Settings, *, pool_size: int) -> Store:
    """The store of ``settings`` (its URL and PostgreSQL connect timeout)."""
    return Store(
        settings.database_url, pool_size=pool_size, connect_timeout_s=settings.db_connect_timeout_s
    )


def prepare_store(settings: Settings, *, load_demo: bool = True) -> None:
    """Migrate the schema; load the demo network if the store has no nodes yet."""
    store = _open_store(settings, pool_size=2)
    try:
        store.migrate()
        if load_demo and store.is_empty():
            from sourcing.demo import demo_network

            store.load_network(demo_network(), reason="demo network")
            log.info("loaded the demo network into an empty store")
    finally:
        store.dispose()


def settle_heap(store: Store) -> None:
    """Warm the caches, then keep the start-up heap out of the garbage collector's way.

    The solver's compiled kernels are loaded (or, on a fresh install, compiled: seconds)
    here, before the port serves, not in the first checkout call that needs them.

    The start-up heap (ortools, protobuf descriptors, SQLAlchemy, the catalog:
    ~300k objects) never becomes garbage; ``gc.freeze`` moves it to a permanent
    generation so no full collection rescans it, and a larger first threshold
    lets each call's short-lived cycles die young in fewer passes. A precaution:
    measured under load, collections were not a significant cost either way.
    """
    store.catalog()
    warm_up_solver()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD_0, *gc.get_threshold()[1:])


def build_server(settings: Settings, store: Store) -> tuple[grpc.Server, int]:
    """One process's server, bound to ``settings.host:settings.port`` (0 picks a port)."""
    node_tokens = read_node_tokens(settings.node_tokens_file)
    server = grpc.server(
        # Calls waiting for a thread are served adaptive-LIFO under overload (oms.admission).
        CallExecutor(max_workers=settings.threads, thread_name_prefix="oms-rpc"),
        interceptors=[
            ObservabilityInterceptor(),
            AuthInterceptor(settings.admin_token, settings.checkout_token, node_tokens),
            StreamLimitInterceptor(settings.stream_slots),
            InputInterceptor(),
        ],
        options=[
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
            # A deliberate bound, not grpc's default of the day (oms.validation).
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ],
        maximum_concurrent_rpcs=settings.threads * 8,
    )
    checkout_pb2_grpc.add_CheckoutServiceServicer_to_server(
        CheckoutServicer(store, settings), server
    )
    fulfilment_pb2_grpc.add_FulfilmentServiceServicer_to_server(
        FulfilmentServicer(store, settings, node_tokens), server
    )
    events_pb2_grpc.add_OrderEventServiceServicer_to_server(
        OrderEventServicer(store, settings), server
    )
    inventory_pb2_grpc.add_InventoryServiceServicer_to_server(
        InventoryServicer(store, settings), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # SERVING only while the store answers (oms.health): probed now, then every few seconds.
    probe = StoreProbe(store, health_servicer, ("", *SERVICE_NAMES), settings.health_probe_s)
    probe.check()
    probe.run_while_serving(server)
    enable_server_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)  # v1 and v1alpha
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"could not bind {settings.host}:{settings.port}")
    return server, port


def _run_worker(settings: Settings, metrics_dir: str | None) -> None:
    """A worker process: its own store connections and server on the shared port."""
    if metrics_dir is not None:
        metrics.prepare_multiprocess(Path(metrics_dir))
    configure_logging(settings.log_level)
    store = _open_store(settings, pool_size=settings.threads)
    server, port = build_server(settings, store)
    settle_heap(store)
    server.start()
    sweeper = start_sweeper(store, settings)  # overdue inbound receipts (oms.receiving)
    late = LateShipmentWatch(store).start()  # the oms_late_shipments gauge
    log.info("worker %d serving on %s:%d", os.getpid(), settings.host, port)
    stop = signal.Signals.SIGTERM

    def _graceful(*_: Any) -> None:
        server.stop(grace=2.0)

    signal.signal(stop, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    parent = os.getppid()

    def _orphan_watch() -> None:
        # A parent killed outright cannot pass on SIGTERM: don't outlive it.
        while os.getppid() == parent:
            time.sleep(1.0)
        server.stop(grace=1.0)

    threading.Thread(target=_orphan_watch, name="oms-orphan-watch", daemon=True).start()
    server.wait_for_termination()
    if sweeper is not None:
        sweeper.stop()
    late.stop()
    store.dispose()


@contextlib.contextmanager
def _reserve_port(host: str, port: int) -> Iterator[int]:
    """Hold the port (SO_REUSEPORT) so workers can share it and nobody else takes it."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def serve(
    settings: Settings, *, load_demo: bool = True, dashboard: DashboardConfig | None = None
) -> int:
    """Run the service until SIGINT/SIGTERM; returns the exit status."""
    configure_logging(settings.log_level)
    prepare_store(settings, load_demo=load_demo)
    start_dashboard(dashboard, settings.log_level)  # its own process (oms.dashboard.process)
    if settings.workers <= 1:
        store = _open_store(settings, pool_size=settings.threads)
        if settings.metrics_port:
            metrics.start_metrics_server(settings.metrics_port, settings.host)
        server, port = build_server(settings, store)
        settle_heap(store)
        server.start()
        sweeper = start_sweeper(store, settings)  # overdue inbound receipts (oms.receiving)
        late = LateShipmentWatch(store).start()  # the oms_late_shipments gauge
        _announce(settings, port)
        done = False

        def _graceful(*_: Any) -> None:
            nonlocal done
            done = True
            server.stop(grace=2.0)

        signal.signal(signal.SIGTERM, _graceful)
        signal.signal(signal.SIGINT, _graceful)
        server.wait_for_termination()
        if sweeper is not None:
            sweeper.stop()
        late.stop()
        store.dispose()
        return 0

    metrics_dir = tempfile.mkdtemp(prefix="oms-metrics-") if settings.metrics_port else None
    if metrics_dir is not None:
        metrics.prepare_multiprocess(Path(metrics_dir))
        metrics.start_metrics_server(settings.metrics_port, settings.host)
    # Spawned (not forked) workers: grpc and SQLAlchemy must not cross a fork.
    ctx = multiprocessing.get_context("spawn")
    with _reserve_port(settings.host, settings.port) as port:
        worker_settings = replace(settings, port=port)
        supervisor = Supervisor(
            lambda: ctx.Process(
                target=_run_worker, args=(worker_settings, metrics_dir), daemon=False
            ),
            settings.workers,
            on_exit=metrics.mark_worker_dead,
        )
        _announce_when_serving(settings, port, supervisor)

        def _stop(*_: Any) -> None:
            supervisor.stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        return supervisor.run()  # respawns a worker that dies (oms.supervisor)


def _announce_when_serving(settings: Settings, port: int, supervisor: Supervisor) -> None:
    """Print the serving line once a worker answers health; if none does in time, the
    workers cannot start: stop them (``serve`` exits 1)."""

    def _watch() -> None:
        try:
            wait_until_serving(f"{settings.host}:{port}")
        except TimeoutError as exc:
            supervisor.fail(f"{exc}; stopping")
            return
        _announce(settings, port)

    threading.Thread(target=_watch, name="oms-announce", daemon=True).start()


def wait_until_serving(target: str, timeout_s: float = 60.0) -> None:
    """Poll the health service at ``target`` until it answers SERVING (or raise TimeoutError)."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no server answered on {target} within {timeout_s:.0f} s")
            time.sleep(0.1)


def _announce(settings: Settings, port: int) -> None:
    where = redact_url(settings.database_url)
    print(
        f"oms serving on {settings.host}:{port} ({max(settings.workers, 1)} worker(s), "
        f"store {where})",
        file=sys.stderr,
        flush=True,
    )
