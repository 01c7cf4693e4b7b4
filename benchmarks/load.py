"""Load test of the gRPC service: closed-loop quotes and orders, and an open-loop half-rate check.

Run from the project root (a command, not a test)::

    .venv/bin/python benchmarks/load.py [--duration 10] [--warmup 2] [--clients 1,8,32,64]
        [--processes 1,2] [--stores sqlite,postgresql] [--only quotes|place|ship|all]
        [--seed 0] [--json PATH] [--smoke] [--baseline-src DIR]

Every cell starts the real server (``python -m oms.cli serve``) as a
subprocess on a free port, on a store prepared beforehand by this script
(a fresh SQLite file, or a freshly created PostgreSQL database
``--pg-database``, default ``oms_bench``, dropped first if present and at the
end): the schema migrated, and the demo network loaded with on-hand stock and
daily node capacity multiplied by ``--stock-scale`` (default 200) so that the
load never runs the network out of stock or capacity. The server runs with
``--quote-ttl 5 --solver-time-limit 0.2 --no-demo`` and no dashboard
(``--http-port 0``; ``--http-port`` gives it one: ``benchmarks/checkout_cost.py``
compares); its log goes to a file
whose ERROR lines are counted per cell. Readiness: every worker has logged
``worker ... serving`` and the health service answers SERVING; all client
connections are established before the clock starts. Stopped with SIGTERM.

Load (``clients`` closed-loop callers, split over ``--client-procs`` client
processes of threads, one channel and TCP connection each, so that the
kernel's SO_REUSEPORT balancing spreads the connections over the server's
processes): each caller sends carts from a pool of ``--pool`` seeded carts
``demo_order(demo_network(), rng, lines)`` with lines uniform in 1..5, with a
per-call deadline (``--deadline``, default 1 s), for ``--warmup`` + ``--duration``
seconds; only calls that complete inside the ``--duration`` window count.

* ``quotes``: QuoteDeliveryOptions in a loop. calls/s = successful quotes per second.
* ``place``: QuoteDeliveryOptions, then PlaceOrder on the first option with a
  fresh idempotency key. calls/s = placed orders per second; p50/p99 are of
  PlaceOrder alone, ``pair`` of quote + place.
* ``ship`` (``--only ship``; issue 16): QuoteDeliveryOptions, PlaceOrder, then
  ReleaseOrder and ConfirmShipment by order id (the order-level shortcut every version
  of the service has). calls/s = shipped orders per second; ``place`` and ``ship``
  columns are PlaceOrder's and ConfirmShipment's own latencies. With
  ``--baseline-src DIR`` (a checkout's root, e.g. ``git worktree add /tmp/before main``
  or ``git archive``), every place or ship cell runs twice, side by side in one run:
  the server (and the store's preparation, its migrations) from ``DIR/src`` first,
  then from this tree, so a change is judged by the ratio of neighbouring cells.
* ``open``: after the quotes matrix, an open-loop cell on SQLite with the
  largest process count: Poisson arrivals at half the best closed-loop quotes/s
  (``--open-rate`` overrides), sent asynchronously (grpc futures) over
  ``--open-channels`` connections; latency runs from each call's *scheduled*
  send time, so a late sender or a queue is charged to the service rather
  than hidden (no coordinated omission).

Per cell the machine's CPU use in the window is split from ``/proc``: the
server's processes, the load generator's, and everything else (``other``:
other engineers' tests, databases), in % of one core (2 cores = 200%).

Machine speed: before and after the cells, the in-process CPU time of one
solver quote over 200 demo carts (:func:`machine_speed`) is printed and kept in
the JSON. This machine's speed varies up to 3x between days, so compare runs
of different days only alongside it (or side by side in one run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tqdm import tqdm

from oms.server import wait_until_serving
from oms.v1 import checkout_pb2, checkout_pb2_grpc, common_pb2, fulfilment_pb2, fulfilment_pb2_grpc

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "load.json"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Targets: quotes/s with 2 server processes; p99 at half that rate; errors.
TARGET_QPS = 300.0
TARGET_HALF_RATE_P99_MS = 50.0
TARGET_PROCESSES = 2
#: Every client channel gets its own TCP connection (grpc shares subchannels
#: between identical channels of one process otherwise), so SO_REUSEPORT can
#: spread them over the server's processes.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- cells


@dataclass
class Cell:
    """One measurement: a kind of load on one store and server configuration."""

    kind: str  # "quotes", "place", "ship" or "open"
    store: str  # "sqlite" or "postgresql"
    processes: int  # server processes (``oms serve --workers``)
    clients: int  # closed-loop callers; for "open", connections
    client_procs: int
    rate: float | None = None  # "open": arrivals per second
    result: dict[str, Any] = field(default_factory=dict)
    #: "current" (this tree) or "baseline" (the server from --baseline-src).
    variant: str = "current"

    @property
    def name(self) -> str:
        rate = f" @{self.rate:.0f}/s" if self.rate is not None else ""
        variant = " baseline" if self.variant == "baseline" else ""
        return f"{self.kind}{variant} {self.store} p{self.processes} c{self.clients}{rate}"


# --------------------------------------------------------------------------- carts


def cart_pool(size: int, seed: int) -> list[bytes]:
    """``size`` serialized QuoteDeliveryOptionsRequests of 1-5 line demo carts (seeded)."""
    from sourcing.demo import demo_network, demo_order

    network = demo_network()
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(size):
        order = demo_order(network, rng, int(rng.integers(1, 6)))
        request = checkout_pb2.QuoteDeliveryOptionsRequest(
            destination=common_pb2.Location(
                latitude=order.destination.lat, longitude=order.destination.lon
            ),
            lines=[common_pb2.CartLine(sku=line.sku, quantity=line.qty) for line in order.lines],
        )
        pool.append(request.SerializeToString())
    return pool


def machine_speed(carts: int = 200, seed: int = 0, repeats: int = 3) -> float:
    """Thread CPU ms per ``sourcing.quote`` of ``carts`` pool-like demo carts, in-process.

    A yardstick printed with every run: this machine's speed has varied about 3x
    between days (the same code served 198 and 601 quotes/s), so tables of
    different runs compare only alongside it. Best of ``repeats`` passes.
    """
    from sourcing import QuoteSettings, quote
    from sourcing.demo import demo_network, demo_order

    network = demo_network()
    network = network.replace(on_hand=network.on_hand * 200)
    rng = np.random.default_rng(seed)
    orders = [demo_order(network, rng, int(rng.integers(1, 6))) for _ in range(carts)]
    settings = QuoteSettings(num_workers=1, time_limit_s=0.2)
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        for order in orders:
            quote(network, order, settings)
        best = min(best, time.thread_time() - start)
    return 1000.0 * best / carts


# --------------------------------------------------------------------------- stores


def _psycopg_conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def fresh_postgres(admin_url: str, database: str) -> str:
    """(Re)create ``database`` next to ``admin_url``'s and return its SQLAlchemy URL."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    with psycopg.connect(_psycopg_conninfo(admin_url), autocommit=True) as conn:
        name = sql.Identifier(database)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    return make_url(admin_url).set(database=database).render_as_string(hide_password=False)


def drop_postgres(admin_url: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(_psycopg_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


def variant_env(variant: str, args: argparse.Namespace) -> dict[str, str]:
    """The environment of a server (and its store's preparation) of ``variant``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    if variant == "baseline":
        env["PYTHONPATH"] = str(Path(args.baseline_src).resolve() / "src")
    return env


def prepare_variant_store(url: str, stock_scale: int, env: dict[str, str]) -> None:
    """:func:`prepare_store` in a subprocess with ``env`` (the baseline's own migrations)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from load import prepare_store; "
        "prepare_store(sys.argv[2], int(sys.argv[3]))"
    )
    here = str(Path(__file__).resolve().parent)
    subprocess.run([sys.executable, "-c", code, here, url, str(stock_scale)], env=env, check=True)


def prepare_store(url: str, stock_scale: int) -> None:
    """Migrate and load the demo network with on hand and capacity scaled by ``stock_scale``."""
    from oms.store import Store
    from sourcing.demo import demo_network
    from sourcing.model import UNLIMITED_CAPACITY

    network = demo_network()
    capacity = np.where(
        network.capacity < UNLIMITED_CAPACITY,
        np.minimum(network.capacity * stock_scale, UNLIMITED_CAPACITY),
        network.capacity,
    )
    scaled = network.replace(on_hand=network.on_hand * stock_scale, capacity=capacity)
    store = Store(url, pool_size=2)
    try:
        store.migrate()
        store.load_network(scaled, reason=f"load benchmark: demo network, stock x{stock_scale}")
    finally:
        store.dispose()


# --------------------------------------------------------------------------- CPU accounting


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/*/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        with suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with suppress(OSError), open(f"/proc/{p}/task/{task}/children") as handle:
                    todo.extend(int(c) for c in handle.read().split())
    return found


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as handle:
            values = [int(x) for x in handle.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


@dataclass
class CpuSnapshot:
    at: float
    machine: float
    server: dict[int, float]
    clients: dict[int, float]
    database: dict[int, float]


def cpu_snapshot(
    server_pid: int, client_pids: Sequence[int], db_pids: Sequence[int] = ()
) -> CpuSnapshot:
    return CpuSnapshot(
        time.monotonic(),
        _machine_busy_seconds(),
        {p: _cpu_seconds(p) for p in _descendants(server_pid)},
        {p: _cpu_seconds(p) for c in client_pids for p in _descendants(c)},
        {p: _cpu_seconds(p) for p in db_pids},
    )


def cpu_split(a: CpuSnapshot, b: CpuSnapshot) -> dict[str, Any]:
    """% of one core used between two snapshots by the server, the clients and the rest."""
    wall = max(b.at - a.at, 1e-9)
    per_server = {p: 100 * (b.server[p] - a.server.get(p, 0.0)) / wall for p in b.server}
    server = sum(per_server.values())
    clients = 100 * sum(b.clients[p] - a.clients.get(p, 0.0) for p in b.clients) / wall
    database = 100 * sum(b.database[p] - a.database.get(p, 0.0) for p in b.database) / wall
    machine = 100 * (b.machine - a.machine) / wall
    return {
        "server_pct": server,
        "server_pct_by_pid": {str(p): round(v, 1) for p, v in per_server.items()},
        "client_pct": clients,
        "db_pct": database if b.database else None,
        "other_pct": max(0.0, machine - server - clients - database),
        "machine_pct": machine,
    }


class PgActivity:
    """Samples ``pg_stat_activity`` of the benchmark database: backend pids, and what its
    active backends wait on (every 50 ms), to tell lock waits from work."""

    def __init__(self, admin_url: str, database: str) -> None:
        import psycopg

        self.database = database
        self.conn = psycopg.connect(_psycopg_conninfo(admin_url), autocommit=True)
        self.waits: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def pids(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,)
        ).fetchall()
        return [int(r[0]) for r in rows]

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            rows = self.conn.execute(
                "SELECT coalesce(wait_event_type || ':' || wait_event, 'running') "
                "FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                "AND pid <> pg_backend_pid()",
                (self.database,),
            ).fetchall()
            self.samples += 1
            self.waits.update(r[0] for r in rows)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self.conn.close()
        n = max(1, self.samples)
        return {
            "pg_samples": self.samples,
            "pg_active_backends_mean": sum(self.waits.values()) / n,
            "pg_active_by_wait": {k: round(v / n, 2) for k, v in self.waits.most_common()},
        }


# --------------------------------------------------------------------------- server


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    admin_token: str = ""

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_errors(self) -> list[str]:
        """The server log's ERROR/CRITICAL lines and tracebacks (JSON log lines)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [
            line
            for line in lines
            if '"level": "ERROR"' in line
            or '"level": "CRITICAL"' in line
            or line.startswith("Traceback")
        ]


def _wait_ready(server: Server, workers: int, timeout_s: float = 90.0) -> None:
    """Every worker logged that it serves, and the health service answers SERVING."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.process.returncode}:\n"
                + server.log_path.read_text(errors="replace")[-3000:]
            )
        text = server.log_path.read_text(errors="replace")
        announced = "oms serving on" in text
        serving = text.count('"message": "worker ') >= workers if workers > 1 else True
        if announced and serving:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not ready in {timeout_s:.0f} s:\n{text[-3000:]}")
        time.sleep(0.1)
    wait_until_serving(server.target, timeout_s=max(1.0, deadline - time.monotonic()))


@contextmanager
def running_server(
    url: str, workers: int, args: argparse.Namespace, log_path: Path, variant: str = "current"
) -> Iterator[Server]:
    """``oms serve`` on a free port; SIGTERM and wait when done."""
    port = free_port()
    token = uuid.uuid4().hex
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
        "--threads",
        str(args.server_threads),
        *(["--cpu-slots", str(args.server_cpu_slots)] if args.server_cpu_slots else []),
        "--admin-token",
        token,
        "--quote-ttl",
        f"{args.quote_ttl:g}",
        "--solver-time-limit",
        f"{args.solver_time_limit:g}",
        "--no-demo",
        "--no-demo-orders",
        # Explicit: `oms serve` starts a dashboard on 8080 unless told otherwise.
        "--http-port",
        str(args.http_port),
        *(["--viewer-token-file", args.viewer_token_file] if args.viewer_token_file else []),
    ]
    env = variant_env(variant, args)
    log = log_path.open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    server = Server(process, port, log_path, token)
    try:
        _wait_ready(server, workers)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # our own session, started above
                process.wait()
        log.close()


# --------------------------------------------------------------------------- clients


@dataclass
class ClientSpec:
    """What one client process does (pickled to a spawned process)."""

    target: str
    mode: str  # "quotes", "place" or "open"
    threads: int  # closed loop: callers; open: channels
    pool: list[bytes]
    seed: int
    index: int
    deadline_s: float
    warmup_s: float
    duration_s: float
    rate: float = 0.0  # open loop: arrivals per second of this process
    shared_channel: bool = False
    admin_token: str = ""  # "ship": ReleaseOrder and ConfirmShipment are admin calls


class Recorder:
    """One caller's measurements inside the window (no locks: one per thread)."""

    def __init__(self) -> None:
        self.quote_ms: list[float] = []
        self.place_ms: list[float] = []
        self.pair_ms: list[float] = []
        self.ship_ms: list[float] = []
        self.errors: Counter[str] = Counter()
        self.samples: dict[str, str] = {}
        self.warmup_errors = 0
        self.resourced = 0

    def error(self, call: str, exc: grpc.RpcError | str, in_window: bool) -> None:
        if isinstance(exc, str):
            key, message = f"{call}:{exc}", exc
        else:
            code = exc.code() if hasattr(exc, "code") else None
            key = f"{call}:{code.name if code is not None else type(exc).__name__}"
            message = exc.details() if hasattr(exc, "details") else str(exc)
        if not in_window:
            self.warmup_errors += 1
            return
        self.errors[key] += 1
        self.samples.setdefault(key, str(message)[:300])

    def merge(self, other: Recorder) -> None:
        self.quote_ms += other.quote_ms
        self.place_ms += other.place_ms
        self.pair_ms += other.pair_ms
        self.ship_ms += other.ship_ms
        self.errors.update(other.errors)
        for k, v in other.samples.items():
            self.samples.setdefault(k, v)
        self.warmup_errors += other.warmup_errors
        self.resourced += other.resourced


def _ship(
    fulfil: fulfilment_pb2_grpc.FulfilmentServiceStub,
    order_id: str,
    spec: ClientSpec,
    window: tuple[float, float],
    rec: Recorder,
) -> None:
    """Release the order, then ConfirmShipment by order id (timed alone)."""
    metadata = (("authorization", f"Bearer {spec.admin_token}"),)
    begin, end = window
    try:
        fulfil.ReleaseOrder(
            fulfilment_pb2.ReleaseOrderRequest(order_id=order_id),
            metadata=metadata,
            timeout=spec.deadline_s,
        )
    except grpc.RpcError as exc:
        rec.error("release", exc, begin <= time.monotonic() < end)
        return
    t0 = time.monotonic()
    try:
        fulfil.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(order_id=order_id),
            metadata=metadata,
            timeout=spec.deadline_s,
        )
    except grpc.RpcError as exc:
        rec.error("ship", exc, begin <= time.monotonic() < end)
        return
    t1 = time.monotonic()
    if begin <= t1 < end:
        rec.ship_ms.append(1000 * (t1 - t0))


def _closed_loop(
    channel: grpc.Channel,
    requests: list[checkout_pb2.QuoteDeliveryOptionsRequest],
    offset: int,
    spec: ClientSpec,
    window: tuple[float, float],
    rec: Recorder,
) -> None:
    stub = checkout_pb2_grpc.CheckoutServiceStub(channel)
    fulfil = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)
    begin, end = window
    i = offset
    while time.monotonic() < end:
        request = requests[i % len(requests)]
        i += 1
        t0 = time.monotonic()
        try:
            reply = stub.QuoteDeliveryOptions(request, timeout=spec.deadline_s)
        except grpc.RpcError as exc:
            t1 = time.monotonic()
            rec.error("quote", exc, begin <= t1 < end)
            continue
        t1 = time.monotonic()
        if not reply.options:
            rec.error("quote", "NO_OPTIONS", begin <= t1 < end)
            continue
        if spec.mode == "quotes":
            if begin <= t1 < end:
                rec.quote_ms.append(1000 * (t1 - t0))
            continue
        place = checkout_pb2.PlaceOrderRequest(
            quote_id=reply.quote_id,
            option_id=reply.options[0].option_id,
            idempotency_key=uuid.uuid4().hex,
        )
        try:
            placed = stub.PlaceOrder(place, timeout=spec.deadline_s)
        except grpc.RpcError as exc:
            t2 = time.monotonic()
            rec.error("place", exc, begin <= t2 < end)
            continue
        t2 = time.monotonic()
        if begin <= t2 < end:
            rec.quote_ms.append(1000 * (t1 - t0))
            rec.place_ms.append(1000 * (t2 - t1))
            rec.pair_ms.append(1000 * (t2 - t0))
            rec.resourced += int(placed.resourced)
        if spec.mode == "ship":
            _ship(
                fulfil,
                placed.order.order_id,
                spec,
                window,
                rec,
            )


def _open_loop(
    stubs: list[checkout_pb2_grpc.CheckoutServiceStub],
    requests: list[checkout_pb2.QuoteDeliveryOptionsRequest],
    spec: ClientSpec,
    start: float,
    window: tuple[float, float],
    rec: Recorder,
) -> dict[str, Any]:
    """Poisson arrivals at ``spec.rate``; latency from each call's scheduled send time."""
    begin, end = window
    rng = np.random.default_rng((spec.seed, spec.index, 7))
    lock = threading.Lock()
    idle = threading.Condition(lock)
    outstanding = 0
    lags: list[float] = []
    sent_in_window = 0
    max_outstanding = 0

    def done(scheduled: float, future: Any) -> None:
        nonlocal outstanding
        t1 = time.monotonic()
        in_window = begin <= scheduled < end
        exc = future.exception()
        with lock:
            if exc is not None:
                rec.error("quote", exc, in_window)
            elif not future.result().options:
                rec.error("quote", "NO_OPTIONS", in_window)
            elif in_window:
                rec.quote_ms.append(1000 * (t1 - scheduled))
            outstanding -= 1
            if outstanding == 0:
                idle.notify_all()

    scheduled = start
    k = int(rng.integers(len(requests)))
    while True:
        scheduled += float(rng.exponential(1.0 / spec.rate))
        if scheduled >= end:
            break
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        lag = time.monotonic() - scheduled
        with lock:
            outstanding += 1
            max_outstanding = max(max_outstanding, outstanding)
        if begin <= scheduled:
            lags.append(1000 * lag)
            sent_in_window += 1
        future = stubs[k % len(stubs)].QuoteDeliveryOptions.future(
            requests[k % len(requests)],
            timeout=spec.deadline_s,
            metadata=(
                ("authorization", f"Bearer {spec.token}"),
                ("x-client-id", f"shopper-{spec.index}-{k % len(stubs)}"),
            ),
        )
        k += 1
        future.add_done_callback(lambda f, s=scheduled: done(s, f))
    with lock:
        idle.wait_for(lambda: outstanding == 0, timeout=spec.deadline_s + 5)
    return {
        "sent_in_window": sent_in_window,
        "send_lag_ms_p99": float(np.percentile(lags, 99)) if lags else None,
        "send_lag_ms_max": max(lags) if lags else None,
        "max_outstanding": max_outstanding,
    }


def client_main(
    spec: ClientSpec,
    ready: Any,
    go: EventType,
    start_at: Any,
    results: Any,
) -> None:
    """A client process: connect, say ready, wait for the start time, run, send results back."""
    requests = [checkout_pb2.QuoteDeliveryOptionsRequest.FromString(b) for b in spec.pool]
    n_channels = 1 if spec.shared_channel else spec.threads
    channels = [
        grpc.insecure_channel(spec.target, options=CHANNEL_OPTIONS) for _ in range(n_channels)
    ]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=30)
    stubs = [checkout_pb2_grpc.CheckoutServiceStub(c) for c in channels]
    ready.put(spec.index)
    go.wait()
    start = float(start_at.value)
    window = (start + spec.warmup_s, start + spec.warmup_s + spec.duration_s)
    rng = np.random.default_rng((spec.seed, spec.index))
    recorders = [Recorder() for _ in range(spec.threads)]
    extra: dict[str, Any] = {}
    cpu: list[float] = []

    def cpu_probe() -> None:
        for when in window:
            time.sleep(max(0.0, when - time.monotonic()))
            t = os.times()
            cpu.append(t.user + t.system)

    probe = threading.Thread(target=cpu_probe, daemon=True)
    time.sleep(max(0.0, start - time.monotonic()))
    probe.start()
    if spec.mode == "open":
        extra = _open_loop(stubs, requests, spec, start, window, recorders[0])
    else:
        threads = [
            threading.Thread(
                target=_closed_loop,
                args=(
                    channels[0 if spec.shared_channel else j],
                    requests,
                    int(rng.integers(len(requests))),
                    spec,
                    window,
                    recorders[j],
                ),
                daemon=True,
            )
            for j in range(spec.threads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    probe.join(timeout=spec.deadline_s + 5)
    total = Recorder()
    for rec in recorders:
        total.merge(rec)
    for channel in channels:
        channel.close()
    results.put(
        {
            "index": spec.index,
            "quote_ms": total.quote_ms,
            "place_ms": total.place_ms,
            "pair_ms": total.pair_ms,
            "ship_ms": total.ship_ms,
            "errors": dict(total.errors),
            "samples": total.samples,
            "warmup_errors": total.warmup_errors,
            "resourced": total.resourced,
            "cpu_s": cpu[1] - cpu[0] if len(cpu) == 2 else None,
            **extra,
        }
    )


# --------------------------------------------------------------------------- one cell


def _pcts(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    p = np.percentile(values, [50, 90, 99])
    return {
        "p50": float(p[0]),
        "p90": float(p[1]),
        "p99": float(p[2]),
        "max": float(max(values)),
        "mean": float(np.mean(values)),
    }


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(cell: Cell, server: Server, pool: list[bytes], args: argparse.Namespace) -> None:
    """Run the client processes of ``cell`` against ``server``; fill ``cell.result``."""
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    if cell.kind == "open":
        assert cell.rate is not None
        shares = _split(cell.clients, cell.client_procs)
        rates = [cell.rate * s / cell.clients for s in shares]
    else:
        shares = _split(cell.clients, cell.client_procs)
        rates = [0.0] * len(shares)
    specs = [
        ClientSpec(
            target=server.target,
            mode=cell.kind,
            threads=threads,
            pool=pool,
            seed=args.seed,
            index=i,
            deadline_s=args.deadline,
            warmup_s=args.warmup,
            duration_s=args.duration,
            rate=rate,
            shared_channel=args.shared_channel,
            admin_token=server.admin_token,
        )
        for i, (threads, rate) in enumerate(zip(shares, rates, strict=True))
    ]
    procs = [
        ctx.Process(target=client_main, args=(s, ready, go, start_at, results), daemon=True)
        for s in specs
    ]
    for p in procs:
        p.start()
    pg = PgActivity(args.pg_url, args.pg_database) if cell.store == "postgresql" else None
    pg_stats: dict[str, Any] = {}
    try:
        for _ in procs:
            ready.get(timeout=120)
        start = time.monotonic() + 0.2
        start_at.value = start
        go.set()
        pids = [p.pid for p in procs if p.pid is not None]
        time.sleep(max(0.0, start + args.warmup - time.monotonic()))
        if pg is not None:
            pg.start()
        db_pids = pg.pids() if pg is not None else []
        before = cpu_snapshot(server.process.pid, pids, db_pids)
        time.sleep(max(0.0, start + args.warmup + args.duration - time.monotonic()))
        after = cpu_snapshot(server.process.pid, pids, db_pids)
        if pg is not None:
            pg_stats = pg.stop()
            pg = None
        parts = [results.get(timeout=args.deadline + 120) for _ in procs]
    finally:
        if pg is not None:
            pg.stop()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
    quote_ms = [x for r in parts for x in r["quote_ms"]]
    place_ms = [x for r in parts for x in r["place_ms"]]
    pair_ms = [x for r in parts for x in r["pair_ms"]]
    ship_ms = [x for r in parts for x in r["ship_ms"]]
    errors: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for r in parts:
        errors.update(r["errors"])
        for k, v in r["samples"].items():
            samples.setdefault(k, v)
    ok = {"place": len(place_ms), "ship": len(ship_ms)}.get(cell.kind, len(quote_ms))
    cpu = cpu_split(before, after)
    client_cpu = [r["cpu_s"] for r in parts if r["cpu_s"] is not None]
    cell.result = {
        "calls_per_s": ok / args.duration,
        "ok": ok,
        "latency_ms": _pcts({"place": place_ms, "ship": ship_ms}.get(cell.kind, quote_ms)),
        "placed_per_s": len(place_ms) / args.duration,
        "ship_ms": _pcts(ship_ms),
        "quote_ms": _pcts(quote_ms),
        "place_ms": _pcts(place_ms),
        "pair_ms": _pcts(pair_ms),
        "errors": sum(errors.values()),
        "errors_by_code": dict(sorted(errors.items())),
        "error_samples": samples,
        "warmup_errors": sum(r["warmup_errors"] for r in parts),
        "resourced": sum(r["resourced"] for r in parts),
        "client_cpu_ms_per_call": 1000 * sum(client_cpu) / max(1, ok + sum(errors.values())),
        **cpu,
        **pg_stats,
    }
    if cell.kind == "open":
        assert cell.rate is not None
        sent = sum(r["sent_in_window"] for r in parts)
        lag99 = [r["send_lag_ms_p99"] for r in parts if r["send_lag_ms_p99"] is not None]
        lagmax = [r["send_lag_ms_max"] for r in parts if r["send_lag_ms_max"] is not None]
        cell.result.update(
            {
                "target_rate": cell.rate,
                "sent_in_window": sent,
                "offered_per_s": sent / args.duration,
                "send_lag_ms_p99": max(lag99) if lag99 else None,
                "send_lag_ms_max": max(lagmax) if lagmax else None,
                "max_outstanding": max(r["max_outstanding"] for r in parts),
            }
        )


def run_cell(
    cell: Cell, pool: list[bytes], args: argparse.Namespace, workdir: Path, number: int
) -> None:
    """Fresh store, server up, load, server down; the outcome in ``cell.result``."""
    if cell.store == "sqlite":
        url = f"sqlite:///{workdir / f'cell{number:02d}.db'}"
    else:
        url = fresh_postgres(args.pg_url, args.pg_database)
    t0 = time.monotonic()
    if cell.variant == "baseline":
        prepare_variant_store(url, args.stock_scale, variant_env(cell.variant, args))
    else:
        prepare_store(url, args.stock_scale)
    prepared = time.monotonic() - t0
    log_path = workdir / f"cell{number:02d}-server.log"
    load_before = os.getloadavg()[0]
    with running_server(url, cell.processes, args, log_path, cell.variant) as server:
        run_load(cell, server, pool, args)
    log_errors = server.log_errors()
    cell.result.update(
        {
            "store_prepare_s": prepared,
            "loadavg_1m_before": load_before,
            "server_exit_code": server.process.returncode,
            "server_log_errors": len(log_errors),
            "server_log_error_samples": log_errors[:5],
        }
    )


# --------------------------------------------------------------------------- output


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _errors(result: dict[str, Any]) -> str:
    if not result["errors"]:
        return "0"
    parts = ", ".join(f"{k} {v}" for k, v in result["errors_by_code"].items())
    return f"{result['errors']} ({parts})"


def table(cells: list[Cell]) -> str:
    """Markdown table of closed-loop cells; place cells get the PlaceOrder and pair columns."""
    place = any(c.kind == "place" for c in cells)
    ship = any(c.kind == "ship" for c in cells)
    head = ["store", "server processes", "clients", "client procs"]
    if any(c.variant != "current" for c in cells):
        head.insert(0, "server")
    if ship:
        head += ["shipped/s", "ship p50 ms", "ship p99 ms", "placed/s", "place p50 ms"]
        head += ["place p99 ms"]
    elif place:
        head += ["placed/s", "place p50 ms", "place p99 ms", "pair p50 ms", "pair p99 ms"]
    else:
        head += ["quotes/s", "p50 ms", "p99 ms"]
    head += ["errors", "server CPU %", "client CPU %", "db CPU %", "other CPU %"]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in cells:
        r = c.result
        values = [c.store, str(c.processes), str(c.clients), str(c.client_procs)]
        if head[0] == "server":
            values.insert(0, c.variant)
        values.append(_fmt(r["calls_per_s"]))
        values += [_fmt(r["latency_ms"]["p50"]), _fmt(r["latency_ms"]["p99"])]
        if ship:
            values.append(_fmt(r["placed_per_s"]))
            values += [_fmt(r["place_ms"]["p50"]), _fmt(r["place_ms"]["p99"])]
        elif place:
            values += [_fmt(r["pair_ms"]["p50"]), _fmt(r["pair_ms"]["p99"])]
        values += [
            _errors(r),
            _fmt(r["server_pct"], ".0f"),
            _fmt(r["client_pct"], ".0f"),
            _fmt(r["db_pct"], ".0f"),
            _fmt(r["other_pct"], ".0f"),
        ]
        rows.append("| " + " | ".join(values) + " |")
    return "\n".join(rows)


def open_table(cells: list[Cell]) -> str:
    head = [
        "store",
        "server processes",
        "connections",
        "target /s",
        "offered /s",
        "quotes/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "send lag p99 ms",
        "server CPU %",
        "client CPU %",
        "other CPU %",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in cells:
        r = c.result
        rows.append(
            "| "
            + " | ".join(
                [
                    c.store,
                    str(c.processes),
                    str(c.clients),
                    _fmt(r["target_rate"]),
                    _fmt(r["offered_per_s"]),
                    _fmt(r["calls_per_s"]),
                    _fmt(r["latency_ms"]["p50"]),
                    _fmt(r["latency_ms"]["p99"]),
                    _fmt(r["latency_ms"]["max"]),
                    _errors(r),
                    _fmt(r["send_lag_ms_p99"], ".2f"),
                    _fmt(r["server_pct"], ".0f"),
                    _fmt(r["client_pct"], ".0f"),
                    _fmt(r["other_pct"], ".0f"),
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def best_quotes(cells: list[Cell], processes: int) -> Cell | None:
    """The closed-loop SQLite quotes cell with the most quotes/s at ``processes``."""
    candidates = [
        c
        for c in cells
        if c.kind == "quotes" and c.store == "sqlite" and c.processes == processes and c.result
    ]
    return max(candidates, key=lambda c: c.result["calls_per_s"], default=None)


#: Issue 16: a change may cost at most 15% of a call's throughput against its baseline.
TARGET_BASELINE_RATIO = 0.85


def baseline_verdicts(cells: list[Cell]) -> list[str]:
    """Per place/ship cell run beside its baseline: this tree's calls/s over the baseline's."""
    lines = []
    for c in cells:
        if c.variant != "current" or not c.result:
            continue
        twin = next(
            (
                b
                for b in cells
                if b.variant == "baseline"
                and b.result
                and (b.kind, b.store, b.processes, b.clients)
                == (c.kind, c.store, c.processes, c.clients)
            ),
            None,
        )
        if twin is None:
            continue
        measures = [("calls/s", "calls_per_s")]
        if c.kind == "ship":
            measures.append(("placed/s", "placed_per_s"))
        for label, key in measures:
            before, after = twin.result[key], c.result[key]
            ratio = after / before if before else float("nan")
            verdict = "PASS" if ratio >= TARGET_BASELINE_RATIO else "FAIL"
            lines.append(
                f"{c.name} {label} vs baseline >= {TARGET_BASELINE_RATIO:g}x: {after:.1f} / "
                f"{before:.1f} = {ratio:.2f}x {verdict}"
            )
    return lines


def targets(cells: list[Cell]) -> list[str]:
    lines = []
    best = best_quotes(cells, TARGET_PROCESSES)
    if best is None:
        lines.append(f"quotes/s >= {TARGET_QPS:g} with {TARGET_PROCESSES} processes: not run")
    else:
        qps = best.result["calls_per_s"]
        verdict = "PASS" if qps >= TARGET_QPS else "FAIL"
        lines.append(
            f"quotes/s >= {TARGET_QPS:g} with {TARGET_PROCESSES} server processes (SQLite, best "
            f"of the closed-loop cells: {best.clients} clients): {qps:.1f} {verdict}"
        )
    lines += baseline_verdicts(cells)
    opens = [c for c in cells if c.kind == "open" and c.result]
    if not opens:
        lines.append(f"p99 <= {TARGET_HALF_RATE_P99_MS:g} ms at half rate: not run")
    for c in opens:
        p99 = c.result["latency_ms"]["p99"]
        verdict = "PASS" if p99 is not None and p99 <= TARGET_HALF_RATE_P99_MS else "FAIL"
        lines.append(
            f"p99 <= {TARGET_HALF_RATE_P99_MS:g} ms at {c.rate:.1f} quotes/s open loop "
            f"({c.result.get('rate_basis', '')}): {_fmt(p99)} ms {verdict}"
        )
    total = sum(c.result.get("errors", 0) for c in cells)
    by_code: Counter[str] = Counter()
    for c in cells:
        by_code.update(c.result.get("errors_by_code", {}))
    detail = ", ".join(f"{k} {v}" for k, v in sorted(by_code.items()))
    lines.append(
        f"zero errors: {total} errors in {len(cells)} cells"
        + (f" ({detail})" if detail else "")
        + (" PASS" if total == 0 else " FAIL")
    )
    return lines


# --------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    names = [x.strip().lower() for x in text.split(",") if x.strip()]
    for n in names:
        if n not in ("sqlite", "postgresql"):
            raise argparse.ArgumentTypeError(f"unknown store {n!r}: sqlite or postgresql")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before it (2)")
    parser.add_argument("--clients", type=_ints, default=[1, 8, 32, 64], help="1,8,32,64")
    parser.add_argument("--processes", type=_ints, default=[1, 2], help="server processes: 1,2")
    parser.add_argument(
        "--stores", type=_names, default=["sqlite", "postgresql"], help="place cells: both"
    )
    parser.add_argument(
        "--quote-stores", type=_names, default=["sqlite"], help="quotes cells: sqlite"
    )
    parser.add_argument("--only", choices=("quotes", "place", "ship", "all"), default="all")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="a checkout of the code before a change: place/ship cells also run its server",
    )
    parser.add_argument("--seed", type=int, default=0, help="cart seed (0)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the JSON")
    parser.add_argument("--smoke", action="store_true", help="2 s cells, clients 1,8, SQLite only")
    parser.add_argument(
        "--client-procs",
        type=int,
        default=2,
        help="client processes for cells of >= 8 clients (2; 1-client cells use 1)",
    )
    parser.add_argument(
        "--shared-channel",
        action="store_true",
        help="one channel per client process instead of one per caller (all of a process's "
        "calls then go to one server process)",
    )
    parser.add_argument("--deadline", type=float, default=1.0, help="per-call deadline, s (1)")
    parser.add_argument("--pool", type=int, default=2000, help="carts in the seeded pool (2000)")
    parser.add_argument("--stock-scale", type=int, default=200, help="on hand x this (200)")
    parser.add_argument("--quote-ttl", type=float, default=5.0, help="server --quote-ttl (5)")
    parser.add_argument(
        "--solver-time-limit", type=float, default=0.2, help="server --solver-time-limit (0.2)"
    )
    parser.add_argument("--server-threads", type=int, default=16, help="server --threads (16)")
    parser.add_argument(
        "--server-cpu-slots",
        type=int,
        default=None,
        help="server --cpu-slots (default: the server's own, by store)",
    )
    parser.add_argument(
        "--open-rate", type=float, help="open-loop rate, /s (default: half the best quotes/s)"
    )
    parser.add_argument("--open-channels", type=int, default=32, help="open-loop connections")
    parser.add_argument("--no-open", action="store_true", help="skip the open-loop cell")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="an existing database's URL")
    parser.add_argument("--pg-database", default="oms_bench", help="database created for the run")
    parser.add_argument(
        "--http-port",
        type=int,
        default=0,
        help="the server's dashboard port (0, the default: no dashboard; benchmarks/"
        "checkout_cost.py compares with and without one)",
    )
    parser.add_argument("--viewer-token-file", help="the dashboard's viewer token, in a file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.duration, args.warmup = 2.0, 1.0
        args.clients = [1, 8]
        args.stores = args.quote_stores = ["sqlite"]
        args.pool = min(args.pool, 200)

    quote_cells = [
        Cell("quotes", store, p, c, 1 if c == 1 else args.client_procs)
        for store in args.quote_stores
        for p in args.processes
        for c in args.clients
    ]
    place_cells = [
        Cell("place", store, p, c, 1 if c == 1 else args.client_procs)
        for store in args.stores
        for p in args.processes
        for c in args.clients
    ]
    ship_cells = [
        Cell("ship", store, p, c, 1 if c == 1 else args.client_procs)
        for store in args.stores
        for p in args.processes
        for c in args.clients
    ]
    cells: list[Cell] = []
    if args.only in ("quotes", "all"):
        cells += quote_cells
    if args.only in ("place", "all"):
        cells += place_cells
    if args.only == "ship":
        cells += ship_cells
    if args.baseline_src is not None:  # each place/ship cell: the baseline's server, then ours
        cells = [
            variant
            for c in cells
            for variant in (
                [replace(c, variant="baseline"), c] if c.kind in ("place", "ship") else [c]
            )
        ]
    want_open = args.only in ("quotes", "all") and not args.no_open
    open_processes = max(args.processes)

    slots = f"--cpu-slots {args.server_cpu_slots} " if args.server_cpu_slots else ""
    print(
        f"load: {os.cpu_count()} cores; python {platform.python_version()}, grpcio "
        f"{grpc.__version__}; server: python -m oms.cli serve --threads {args.server_threads} "
        f"{slots}--quote-ttl {args.quote_ttl:g} --solver-time-limit {args.solver_time_limit:g} "
        f"--no-demo; fresh store per cell: demo network with on hand and daily capacity "
        f"x{args.stock_scale} (so the load never runs out of stock); carts: pool of "
        f"{args.pool} seeded demo_order carts, 1-5 lines; deadline {args.deadline:g} s; "
        f"{args.warmup:g} s warm-up + {args.duration:g} s per cell; client processes: 1 for "
        f"1 client, else {args.client_procs} "
        f"({'one shared channel each' if args.shared_channel else 'one connection per caller'})",
        flush=True,
    )
    t0 = time.monotonic()
    pool = cart_pool(args.pool, args.seed)
    print(f"cart pool: {len(pool)} carts in {time.monotonic() - t0:.1f} s", flush=True)
    speed_before = machine_speed()
    print(
        f"machine speed: {speed_before:.3f} ms of CPU per in-process solver quote of a demo cart "
        "(compare runs by this)",
        flush=True,
    )

    started = time.time()
    uses_pg = any(c.store == "postgresql" for c in cells)
    with tempfile.TemporaryDirectory(prefix="oms-load-") as tmp:
        workdir = Path(tmp)
        bar = tqdm(total=len(cells) + int(want_open), unit="cell", file=sys.stderr)
        try:
            number = 0
            for group in (
                [c for c in cells if c.kind == "quotes"],
                [c for c in cells if c.kind == "place"],
                [c for c in cells if c.kind == "ship"],
            ):
                for cell in group:
                    number += 1
                    bar.set_description(cell.name)
                    run_cell(cell, pool, args, workdir, number)
                    bar.update()
                    r = cell.result
                    tqdm.write(
                        f"  {cell.name}: {r['calls_per_s']:.1f}/s, p50 "
                        f"{_fmt(r['latency_ms']['p50'])} ms, p99 {_fmt(r['latency_ms']['p99'])} "
                        f"ms, errors {_errors(r)}; CPU server {r['server_pct']:.0f}% clients "
                        f"{r['client_pct']:.0f}% db {_fmt(r['db_pct'], '.0f')}% other "
                        f"{r['other_pct']:.0f}%",
                        file=sys.stdout,
                    )
                    sys.stdout.flush()
                if group and group[0].kind == "quotes" and want_open:
                    best = best_quotes(cells, open_processes)
                    rate = args.open_rate
                    basis = "--open-rate"
                    if rate is None and best is not None:
                        rate = best.result["calls_per_s"] / 2
                        basis = (
                            f"half of {best.result['calls_per_s']:.1f}/s, the best closed-loop "
                            f"cell with {open_processes} server processes"
                        )
                    if rate is None or rate <= 0:
                        tqdm.write("  open loop skipped: no rate", file=sys.stdout)
                        bar.update()
                        continue
                    cell = Cell("open", "sqlite", open_processes, args.open_channels, 1, rate=rate)
                    cells.append(cell)
                    number += 1
                    bar.set_description(cell.name)
                    run_cell(cell, pool, args, workdir, number)
                    cell.result["rate_basis"] = basis
                    bar.update()
                    r = cell.result
                    tqdm.write(
                        f"  {cell.name}: offered {r['offered_per_s']:.1f}/s, p50 "
                        f"{_fmt(r['latency_ms']['p50'])} ms, p99 {_fmt(r['latency_ms']['p99'])} "
                        f"ms, errors {_errors(r)}",
                        file=sys.stdout,
                    )
                    sys.stdout.flush()
        finally:
            bar.close()
            if uses_pg:
                with suppress(Exception):
                    drop_postgres(args.pg_url, args.pg_database)

    done = [c for c in cells if c.result]
    speed_after = machine_speed()
    print(
        f"\nmachine speed: {speed_before:.3f} ms per solver quote before the cells, "
        f"{speed_after:.3f} ms after"
    )
    print()
    for title, subset in (
        ("QuoteDeliveryOptions, closed loop", [c for c in done if c.kind == "quotes"]),
        (
            "QuoteDeliveryOptions + PlaceOrder, closed loop (placed orders/s; place = PlaceOrder "
            "alone, pair = quote + place)",
            [c for c in done if c.kind == "place"],
        ),
        (
            "QuoteDeliveryOptions + PlaceOrder + ReleaseOrder + ConfirmShipment, closed loop "
            "(shipped orders/s; ship = ConfirmShipment alone, place = PlaceOrder alone)",
            [c for c in done if c.kind == "ship"],
        ),
    ):
        if subset:
            print(f"### {title}\n\n{table(subset)}\n")
    opens = [c for c in done if c.kind == "open"]
    if opens:
        print(
            "### QuoteDeliveryOptions, open loop (Poisson arrivals; latency from the scheduled "
            f"send time)\n\n{open_table(opens)}\n"
        )
    print("targets:")
    for line in targets(done):
        print(f"  {line}")
    samples: dict[str, str] = {}
    for c in done:
        for k, v in c.result.get("error_samples", {}).items():
            samples.setdefault(k, f"{v} (first seen in {c.name})")
    if samples:
        print("\nerror messages (first of each kind):")
        for k, v in sorted(samples.items()):
            print(f"  {k}: {v}")
    pg_cells = [c for c in done if c.result.get("pg_samples")]
    if pg_cells:
        print("\nPostgreSQL: mean active backends of the benchmark database, by wait event:")
        for c in pg_cells:
            waits = ", ".join(f"{k} {v:g}" for k, v in c.result["pg_active_by_wait"].items())
            print(f"  {c.name}: {c.result['pg_active_backends_mean']:.2f} ({waits or 'none'})")
    logged = [
        (c.name, c.result["server_log_errors"]) for c in done if c.result["server_log_errors"]
    ]
    if logged:
        print("\nserver log ERROR lines: " + ", ".join(f"{n}: {k}" for n, k in logged))
    print(
        "\nCPU % is of one core over the measured window (2 cores = 200%): the server's "
        "processes, the load generator's, the PostgreSQL backends of the benchmark database "
        "('db', PostgreSQL cells only: SQLite runs inside the server), and 'other': everything "
        "else on the machine (other engineers' tests and tools, other databases)."
    )

    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "started": started,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "machine_speed_ms_per_solve": {"before": speed_before, "after": speed_after},
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("pg_url",)
        },
        "targets": {
            "quotes_per_s": TARGET_QPS,
            "processes": TARGET_PROCESSES,
            "half_rate_p99_ms": TARGET_HALF_RATE_P99_MS,
            "errors": 0,
        },
        "verdicts": targets(done),
        "cells": [asdict(c) for c in done],
    }
    args.json.write_text(json.dumps(payload, indent=1, default=float))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
