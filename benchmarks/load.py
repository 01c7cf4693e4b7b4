"""Load test of the gRPC service under the product's own settings: closed-loop quotes and
orders, an open-loop half-rate check, overload at tight deadlines, callers without
deadlines, and a browsing soak.

Run from the project root (a command, not a test)::

    .venv/bin/python benchmarks/load.py [--duration 10] [--warmup 2] [--clients 1,8,32,64]
        [--processes 1,2] [--stores sqlite,postgresql]
        [--only quotes|place|ship|overload|browse|all] [--seed 0] [--json PATH] [--smoke]
        [--baseline-src DIR]

Every cell starts the real server (``python -m oms.cli serve``) as a
subprocess on a free port, on a store prepared beforehand by this script
(a fresh SQLite file, or a freshly created PostgreSQL database
``--pg-database``, default ``oms_bench_<pid>``, dropped first if present and at
the end): the schema migrated, and the demo network loaded. **By default the
server runs with the product's settings**: the demo network's own stock and
daily capacity (``--stock-scale 1``), the default quote TTL (900 s) and solver
limit (0.5 s), and the default holds policy (quotes hold nothing; StartCheckout
holds the chosen option for 180 s, capped per caller). The older, friendlier
settings remain options (``--stock-scale 200 --quote-ttl 5 --solver-time-limit
0.2``). The clients are a checkout service: the checkout token (given to the
server in ``OMS_CHECKOUT_TOKEN``) and an ``x-client-id`` per caller. The
server's log goes to a file whose ERROR lines and access-log lines are read
per cell. No dashboard (``--http-port 0``; ``--http-port`` gives it one:
``benchmarks/checkout_cost.py`` compares). Readiness: every worker has logged
``worker ... serving`` and the health service answers SERVING; all client
connections are established before the clock starts. Stopped with SIGTERM.

Load (``clients`` closed-loop callers, split over ``--client-procs`` client
processes of threads, one channel and TCP connection each, so that the
kernel's SO_REUSEPORT balancing spreads the connections over the server's
processes): each caller sends carts from a pool of ``--pool`` seeded carts
``demo_order(demo_network(), rng, lines)`` with lines uniform in 1..5, with a
per-call deadline (``--deadline``, default 1 s), for ``--warmup`` +
``--duration`` seconds. **Every call counts**: a call belongs to the window
by when it was sent; one still in flight when the window closes is waited
for and counted by its outcome (``late`` says how many ended after it);
errors during the warm-up are counted too.

* ``quotes``: QuoteDeliveryOptions in a loop. calls/s = successful quotes per second.
* ``place``: QuoteDeliveryOptions, StartCheckout on the first option, then
  PlaceOrder with a fresh idempotency key. calls/s = placed orders per
  second; p50/p99 are of PlaceOrder alone, ``pair`` of the whole checkout.
* ``ship`` (``--only ship``; issue 16): the checkout as in ``place``, then
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
* ``overload``: quotes at ``--overload-clients`` (16,32,64,128) with
  ``--overload-deadline`` (200 ms), per store, largest process count. The
  saturating count is the fewest clients reaching 90% of the peak goodput;
  the verdict reads goodput and client-seen p99 at twice that count (target:
  at least 90% of the peak). One more cell of ``--no-deadline-clients`` (128)
  callers that set no deadline at all.
* ``browse``: a browsing soak, quotes only for ``--soak`` seconds
  (``--soak-clients``), sampling every second the share of promisable stock
  (on hand - safety - order reservations) held by checkout holds; its end and
  peak. With holds taken only by StartCheckout it must stay 0.

Every cell also compares the server's access log with its clients over the
whole cell: OK calls logged per OK call received, and logged p99 per
client-seen p99 (the log times calls from their arrival, queue included).

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
from contextlib import closing, contextmanager, suppress
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
#: The checkout token the benchmark's server is started with and its clients send.
CHECKOUT_TOKEN = uuid.uuid4().hex


# --------------------------------------------------------------------------- cells


@dataclass
class Cell:
    """One measurement: a kind of load on one store and server configuration."""

    kind: str  # "quotes", "place", "ship", "open", "overload" or "browse"
    store: str  # "sqlite" or "postgresql"
    processes: int  # server processes (``oms serve --workers``)
    clients: int  # closed-loop callers; for "open", connections
    client_procs: int
    deadline_s: float | None = 1.0  # per-call deadline; None: callers set none
    rate: float | None = None  # "open": arrivals per second
    duration_s: float | None = None  # the window, when not --duration ("browse")
    result: dict[str, Any] = field(default_factory=dict)
    #: "current" (this tree) or "baseline" (the server from --baseline-src).
    variant: str = "current"

    @property
    def name(self) -> str:
        rate = f" @{self.rate:.0f}/s" if self.rate is not None else ""
        deadline = (
            " no-deadline"
            if self.deadline_s is None
            else (f" d{1000 * self.deadline_s:.0f}ms" if self.kind == "overload" else "")
        )
        variant = " baseline" if self.variant == "baseline" else ""
        return (
            f"{self.kind}{variant} {self.store} p{self.processes} c{self.clients}{rate}{deadline}"
        )


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


def access_log_summary(log_path: Path) -> dict[str, Any]:
    """Per checkout method, the server's access log over the whole cell: calls by code,
    and the p99 of the logged duration of its OK calls (to compare with what clients saw)."""
    by_method: dict[str, dict[str, Any]] = {}
    ok_ms: dict[str, list[float]] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if '"oms.access"' not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        method = str(record.get("method", "")).rsplit("/", 1)[-1]
        entry = by_method.setdefault(method, {"codes": Counter()})
        entry["codes"][record.get("code")] += 1
        if record.get("code") == "OK":
            ok_ms.setdefault(method, []).append(float(record.get("duration_ms", 0.0)))
    return {
        method: {
            "codes": dict(entry["codes"]),
            "ok": len(ok_ms.get(method, [])),
            "ok_p99_ms": float(np.percentile(ok_ms[method], 99)) if ok_ms.get(method) else None,
        }
        for method, entry in by_method.items()
    }


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
        *(["--quote-ttl", f"{args.quote_ttl:g}"] if args.quote_ttl is not None else []),
        *(
            ["--solver-time-limit", f"{args.solver_time_limit:g}"]
            if args.solver_time_limit is not None
            else []
        ),
        "--no-demo",
        "--no-demo-orders",
        # Explicit: `oms serve` starts a dashboard on 8080 unless told otherwise.
        "--http-port",
        str(args.http_port),
        *(["--viewer-token-file", args.viewer_token_file] if args.viewer_token_file else []),
    ]
    env = variant_env(variant, args)
    # Tokens the product's way (the environment): the clients are a checkout
    # service with the checkout token and an x-client-id per shopper, so each
    # shopper's checkout holds count against its own cap.
    env["OMS_ADMIN_TOKEN"] = token
    env["OMS_CHECKOUT_TOKEN"] = CHECKOUT_TOKEN
    for item in args.server_env:
        name, _, value = item.partition("=")
        env[name] = value
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
    deadline_s: float | None  # None: no deadline
    warmup_s: float
    duration_s: float
    rate: float = 0.0  # open loop: arrivals per second of this process
    shared_channel: bool = False
    token: str = ""  # the checkout token
    admin_token: str = ""  # "ship": ReleaseOrder and ConfirmShipment are admin calls


class Recorder:
    """One caller's measurements (no locks: one per thread).

    A call counts in the window by when it was *sent*, whatever its outcome and
    however late it ends: a call still in flight when the window closes is
    waited for (up to its deadline) and counted, and ``late`` says how many
    ended after the window. Errors before the window (warm-up) are kept too.
    """

    def __init__(self) -> None:
        self.quote_ms: list[float] = []
        self.place_ms: list[float] = []
        self.pair_ms: list[float] = []
        self.ship_ms: list[float] = []
        self.errors: Counter[str] = Counter()
        self.samples: dict[str, str] = {}
        self.warmup_errors: Counter[str] = Counter()
        self.resourced = 0
        self.held = 0  # StartCheckout answers with stock_held
        self.sent = 0  # calls sent in the window (first call of each iteration)
        self.late = 0  # of those, ended after the window closed
        #: Every successful call of the whole run (warm-up included) by method, in ms:
        #: compared with the server's access log, which logs them all.
        self.ok_all_ms: dict[str, list[float]] = {}

    def error(self, call: str, exc: grpc.RpcError | str, in_window: bool) -> None:
        if isinstance(exc, str):
            key, message = f"{call}:{exc}", exc
        else:
            code = exc.code() if hasattr(exc, "code") else None
            key = f"{call}:{code.name if code is not None else type(exc).__name__}"
            message = exc.details() if hasattr(exc, "details") else str(exc)
        if not in_window:
            self.warmup_errors[key] += 1
            return
        self.errors[key] += 1
        self.samples.setdefault(key, str(message)[:300])

    def ok(self, method: str, ms: float) -> None:
        self.ok_all_ms.setdefault(method, []).append(ms)

    def merge(self, other: Recorder) -> None:
        self.quote_ms += other.quote_ms
        self.place_ms += other.place_ms
        self.pair_ms += other.pair_ms
        self.ship_ms += other.ship_ms
        self.errors.update(other.errors)
        for k, v in other.samples.items():
            self.samples.setdefault(k, v)
        self.warmup_errors.update(other.warmup_errors)
        self.resourced += other.resourced
        self.held += other.held
        self.sent += other.sent
        self.late += other.late
        for method, values in other.ok_all_ms.items():
            self.ok_all_ms.setdefault(method, []).extend(values)


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
    metadata: tuple[tuple[str, str], ...] = (),
) -> None:
    """Quote, and in "place"/"ship" mode StartCheckout + PlaceOrder (+ release and ship),
    in a loop until the window ends."""
    stub = checkout_pb2_grpc.CheckoutServiceStub(channel)
    fulfil = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)
    begin, end = window
    i = offset
    timeout = spec.deadline_s
    while time.monotonic() < end:
        request = requests[i % len(requests)]
        i += 1
        t0 = time.monotonic()
        counted = begin <= t0 < end  # by when it was sent
        rec.sent += counted
        try:
            reply = stub.QuoteDeliveryOptions(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            t1 = time.monotonic()
            rec.error("quote", exc, counted)
            rec.late += counted and t1 >= end
            continue
        t1 = time.monotonic()
        rec.ok("QuoteDeliveryOptions", 1000 * (t1 - t0))
        if not reply.options:
            rec.error("quote", "NO_OPTIONS", counted)
            rec.late += counted and t1 >= end
            continue
        if spec.mode == "quotes":
            if counted:
                rec.quote_ms.append(1000 * (t1 - t0))
                rec.late += t1 >= end
            continue
        option_id = reply.options[0].option_id
        try:
            started = stub.StartCheckout(
                checkout_pb2.StartCheckoutRequest(quote_id=reply.quote_id, option_id=option_id),
                timeout=timeout,
                metadata=metadata,
            )
        except grpc.RpcError as exc:
            t2 = time.monotonic()
            rec.error("checkout", exc, counted)
            rec.late += counted and t2 >= end
            continue
        rec.held += counted and started.stock_held
        t2 = time.monotonic()
        place = checkout_pb2.PlaceOrderRequest(
            quote_id=reply.quote_id, option_id=option_id, idempotency_key=uuid.uuid4().hex
        )
        try:
            placed = stub.PlaceOrder(place, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            t3 = time.monotonic()
            rec.error("place", exc, counted)
            rec.late += counted and t3 >= end
            continue
        t3 = time.monotonic()
        rec.ok("PlaceOrder", 1000 * (t3 - t2))
        if counted:
            rec.quote_ms.append(1000 * (t1 - t0))
            rec.place_ms.append(1000 * (t3 - t2))
            rec.pair_ms.append(1000 * (t3 - t0))
            rec.resourced += int(placed.resourced)
            rec.late += t3 >= end
        if spec.mode == "ship":
            _ship(fulfil, placed.order.order_id, spec, window, rec)


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
        idle.wait_for(lambda: outstanding == 0, timeout=(spec.deadline_s or 30.0) + 5)
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
                    (
                        ("authorization", f"Bearer {spec.token}"),
                        ("x-client-id", f"shopper-{spec.index}-{j}"),
                    ),
                ),
                daemon=True,
            )
            for j in range(spec.threads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    probe.join(timeout=(spec.deadline_s or 30.0) + 5)
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
            "warmup_errors": dict(total.warmup_errors),
            "resourced": total.resourced,
            "held": total.held,
            "sent": total.sent,
            "late": total.late,
            "ok_all_ms": total.ok_all_ms,
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


class HeldStockSampler:
    """Every second, the share of promisable stock held by checkout holds, read from the store.

    promisable = sum over positions of max(0, on hand - safety stock), less the units
    reserved by orders; held = units in unexpired holds (reservations of no order).
    """

    SQL = (
        "SELECT (SELECT COALESCE(SUM(qty), 0) FROM reservations "
        "WHERE order_id IS NULL AND expires_at > {now}), "
        "(SELECT COALESCE(SUM(CASE WHEN on_hand > safety_stock THEN on_hand - safety_stock "
        "ELSE 0 END), 0) FROM stock), "
        "(SELECT COALESCE(SUM(qty), 0) FROM reservations WHERE order_id IS NOT NULL)"
    )

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, int, int]] = []  # (t, held, promisable)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="held-sampler", daemon=True)

    def _query(self) -> tuple[int, int]:
        sql = self.SQL.format(now=repr(time.time()))
        if self.url.startswith("sqlite"):
            import sqlite3

            path = self.url.split("///", 1)[1]
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                held, free, reserved = conn.execute(sql).fetchone()
        else:
            import psycopg

            with psycopg.connect(_psycopg_conninfo(self.url)) as conn:
                row = conn.execute(sql).fetchone()
                assert row is not None
                held, free, reserved = row
        return int(held), int(free) - int(reserved)

    def _run(self) -> None:
        while not self._stop.is_set():
            with suppress(Exception):  # a busy store: skip the sample
                held, promisable = self._query()
                self.samples.append((time.monotonic(), held, promisable))
            self._stop.wait(1.0)

    def __enter__(self) -> HeldStockSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with suppress(Exception):
            held, promisable = self._query()
            self.samples.append((time.monotonic(), held, promisable))

    def summary(self) -> dict[str, Any]:
        shares = [
            held / promisable if promisable > 0 else 1.0 for _, held, promisable in self.samples
        ]
        return {
            "held_samples": len(self.samples),
            "held_share_end": shares[-1] if shares else None,
            "held_share_peak": max(shares) if shares else None,
            "held_units_end": self.samples[-1][1] if self.samples else None,
            "held_units_peak": max((h for _, h, _ in self.samples), default=None),
            "promisable_units_start": self.samples[0][2] if self.samples else None,
        }


def run_load(
    cell: Cell, server: Server, pool: list[bytes], args: argparse.Namespace, url: str
) -> None:
    """Run the client processes of ``cell`` against ``server``; fill ``cell.result``."""
    ctx = multiprocessing.get_context("spawn")
    duration = cell.duration_s or args.duration
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
            mode="quotes" if cell.kind in ("overload", "browse") else cell.kind,
            threads=threads,
            pool=pool,
            seed=args.seed,
            index=i,
            deadline_s=cell.deadline_s,
            warmup_s=args.warmup,
            duration_s=duration,
            rate=rate,
            shared_channel=args.shared_channel,
            token=CHECKOUT_TOKEN,
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
    sampler = HeldStockSampler(url) if cell.kind in ("browse", "place") else None
    try:
        for _ in procs:
            ready.get(timeout=120)
        if sampler is not None:
            sampler.__enter__()
        start = time.monotonic() + 0.2
        start_at.value = start
        go.set()
        pids = [p.pid for p in procs if p.pid is not None]
        time.sleep(max(0.0, start + args.warmup - time.monotonic()))
        if pg is not None:
            pg.start()
        db_pids = pg.pids() if pg is not None else []
        before = cpu_snapshot(server.process.pid, pids, db_pids)
        time.sleep(max(0.0, start + args.warmup + duration - time.monotonic()))
        after = cpu_snapshot(server.process.pid, pids, db_pids)
        if pg is not None:
            pg_stats = pg.stop()
            pg = None
        parts = [results.get(timeout=(cell.deadline_s or 30.0) + 120) for _ in procs]
    finally:
        if sampler is not None:
            sampler.__exit__()
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
    warmup_errors: Counter[str] = Counter()
    samples: dict[str, str] = {}
    ok_all: dict[str, list[float]] = {}
    for r in parts:
        errors.update(r["errors"])
        warmup_errors.update(r["warmup_errors"])
        for k, v in r["samples"].items():
            samples.setdefault(k, v)
        for method, values in r.get("ok_all_ms", {}).items():
            ok_all.setdefault(method, []).extend(values)
    ok = {"place": len(place_ms), "ship": len(ship_ms)}.get(cell.kind, len(quote_ms))
    cpu = cpu_split(before, after)
    client_cpu = [r["cpu_s"] for r in parts if r["cpu_s"] is not None]
    sent = sum(r.get("sent", 0) for r in parts)
    cell.result = {
        "duration_s": duration,
        "deadline_s": cell.deadline_s,
        "calls_per_s": ok / duration,
        "ok": ok,
        "sent": sent,
        "late": sum(r.get("late", 0) for r in parts),
        "latency_ms": _pcts({"place": place_ms, "ship": ship_ms}.get(cell.kind, quote_ms)),
        "placed_per_s": len(place_ms) / duration,
        "ship_ms": _pcts(ship_ms),
        "quote_ms": _pcts(quote_ms),
        "place_ms": _pcts(place_ms),
        "pair_ms": _pcts(pair_ms),
        "errors": sum(errors.values()),
        "errors_by_code": dict(sorted(errors.items())),
        "error_samples": samples,
        "warmup_errors": sum(warmup_errors.values()),
        "warmup_errors_by_code": dict(sorted(warmup_errors.items())),
        "resourced": sum(r["resourced"] for r in parts),
        "held": sum(r.get("held", 0) for r in parts),
        "client_ok_all": {m: len(v) for m, v in ok_all.items()},
        "client_ok_all_p99_ms": {m: float(np.percentile(v, 99)) for m, v in ok_all.items() if v},
        "client_cpu_ms_per_call": 1000 * sum(client_cpu) / max(1, ok + sum(errors.values())),
        **cpu,
        **pg_stats,
        **(sampler.summary() if sampler is not None else {}),
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
                "offered_per_s": sent / duration,
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
        run_load(cell, server, pool, args, url)
    log_errors = server.log_errors()
    cell.result.update(
        {
            "access_log": access_log_summary(log_path),
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


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.3f}"


def saturation(cells: list[Cell]) -> dict[str, Any]:
    """Of one store's overload cells with a deadline: peak goodput, the saturating client
    count (the fewest reaching 90% of the peak) and the cell at twice that count."""
    timed = sorted((c for c in cells if c.deadline_s is not None), key=lambda c: c.clients)
    if not timed:
        return {}
    peak = max(c.result["calls_per_s"] for c in timed)
    saturating = next(c for c in timed if c.result["calls_per_s"] >= 0.9 * peak)
    twice = next((c for c in timed if c.clients == 2 * saturating.clients), None)
    return {"peak": peak, "saturating": saturating, "twice": twice}


def overload_table(cells: list[Cell]) -> str:
    head = [
        "store",
        "clients",
        "deadline",
        "goodput /s",
        "of peak",
        "client p50 ms",
        "client p99 ms",
        "sent",
        "errors",
        "ended after window",
        "server CPU %",
        "db CPU %",
        "other CPU %",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for store in dict.fromkeys(c.store for c in cells):
        mine = [c for c in cells if c.store == store]
        peak = saturation(mine).get("peak")
        for c in mine:
            r = c.result
            deadline = "none" if c.deadline_s is None else f"{1000 * c.deadline_s:.0f} ms"
            rows.append(
                "| "
                + " | ".join(
                    [
                        store,
                        str(c.clients),
                        deadline,
                        _fmt(r["calls_per_s"]),
                        _ratio(r["calls_per_s"], peak) if c.deadline_s is not None else "-",
                        _fmt(r["latency_ms"]["p50"]),
                        _fmt(r["latency_ms"]["p99"]),
                        str(r["sent"]),
                        _errors(r),
                        str(r["late"]),
                        _fmt(r["server_pct"], ".0f"),
                        _fmt(r["db_pct"], ".0f"),
                        _fmt(r["other_pct"], ".0f"),
                    ]
                )
                + " |"
            )
    return "\n".join(rows)


def browse_table(cells: list[Cell]) -> str:
    head = [
        "store",
        "clients",
        "seconds",
        "quotes/s",
        "quotes",
        "promisable units",
        "held units end / peak",
        "held share end / peak",
        "errors",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in cells:
        r = c.result
        rows.append(
            "| "
            + " | ".join(
                [
                    c.store,
                    str(c.clients),
                    _fmt(r["duration_s"], ".0f"),
                    _fmt(r["calls_per_s"]),
                    str(r["ok"]),
                    str(r.get("promisable_units_start")),
                    f"{r.get('held_units_end')} / {r.get('held_units_peak')}",
                    f"{_fmt(r.get('held_share_end'), '.4f')} / "
                    f"{_fmt(r.get('held_share_peak'), '.4f')}",
                    _errors(r),
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def log_table(cells: list[Cell]) -> str:
    """The server's access log against its clients over each whole cell (warm-up included):
    OK calls logged per OK call received, and the logged p99 per client-seen p99."""
    head = ["cell", "method", "client OK", "logged OK", "logged/client", "client p99 ms",
            "logged p99 ms", "logged/client p99"]  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for c in cells:
        r = c.result
        for method, count in sorted(r.get("client_ok_all", {}).items()):
            logged = r.get("access_log", {}).get(method, {})
            client_p99 = r["client_ok_all_p99_ms"].get(method)
            rows.append(
                "| "
                + " | ".join(
                    [
                        c.name,
                        method,
                        str(count),
                        str(logged.get("ok", 0)),
                        _ratio(logged.get("ok", 0), count),
                        _fmt(client_p99),
                        _fmt(logged.get("ok_p99_ms")),
                        _ratio(logged.get("ok_p99_ms"), client_p99),
                    ]
                )
                + " |"
            )
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
    overloads = [c for c in cells if c.kind == "overload" and c.result]
    for store in dict.fromkeys(c.store for c in overloads):
        mine = [c for c in overloads if c.store == store]
        sat = saturation(mine)
        if not sat:
            continue
        twice = sat["twice"]
        head = (
            f"{store}: goodput at twice the saturating client count "
            f"(2 x {sat['saturating'].clients}) >= 90% of the peak {sat['peak']:.1f}/s"
        )
        if twice is None:
            lines.append(f"{head}: not run (add {2 * sat['saturating'].clients} clients)")
        else:
            share = twice.result["calls_per_s"] / sat["peak"]
            lines.append(
                f"{head}: {twice.result['calls_per_s']:.1f}/s = {100 * share:.0f}%, client p99 "
                f"{_fmt(twice.result['latency_ms']['p99'])} ms "
                + ("PASS" if share >= 0.9 else "FAIL")
            )
        for c in mine:
            if c.deadline_s is None:
                faults = {
                    k: v
                    for k, v in c.result["errors_by_code"].items()
                    if k.split(":")[1] in ("INTERNAL", "UNKNOWN")
                }
                lines.append(
                    f"{store}: callers without deadlines ({c.clients}) get no INTERNAL/UNKNOWN: "
                    f"{sum(faults.values())} ({_errors(c.result)} errors in all) "
                    + ("PASS" if not faults else "FAIL")
                )
    for c in cells:
        if c.kind == "browse" and c.result:
            peak = c.result.get("held_share_peak")
            lines.append(
                f"{c.store}: a browsing-only load holds no promisable stock: peak share "
                f"{_fmt(peak, '.4f')} " + ("PASS" if peak == 0 else "FAIL")
            )
    # Every error counts (warm-up too) outside the overload cells, where shedding is the point.
    counted = [c for c in cells if c.kind != "overload" and c.result]
    total = sum(c.result.get("errors", 0) + c.result.get("warmup_errors", 0) for c in counted)
    by_code: Counter[str] = Counter()
    for c in counted:
        by_code.update(c.result.get("errors_by_code", {}))
        by_code.update(
            {f"warm-up {k}": v for k, v in c.result.get("warmup_errors_by_code", {}).items()}
        )
    detail = ", ".join(f"{k} {v}" for k, v in sorted(by_code.items()))
    late = sum(c.result.get("late", 0) for c in counted)
    lines.append(
        f"zero errors: {total} errors in {len(counted)} cells (overload cells apart)"
        + (f" ({detail})" if detail else "")
        + (" PASS" if total == 0 else " FAIL")
        + f"; {late} calls ended after their window (counted by outcome)"
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
        "--quote-stores",
        type=_names,
        default=["sqlite", "postgresql"],
        help="quotes cells: both",
    )
    parser.add_argument(
        "--only",
        choices=("quotes", "place", "ship", "overload", "browse", "all"),
        default="all",
        help="one group of cells (default all: quotes + open loop, place, overload, browse; "
        "ship only when asked)",
    )
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
    parser.add_argument(
        "--stock-scale",
        type=int,
        default=1,
        help="on hand and daily capacity x this (1: the demo network's own)",
    )
    parser.add_argument(
        "--quote-ttl", type=float, help="server --quote-ttl (default: the server's, 900 s)"
    )
    parser.add_argument(
        "--solver-time-limit",
        type=float,
        help="server --solver-time-limit (default: the server's, 0.5 s)",
    )
    parser.add_argument(
        "--overload-clients",
        type=_ints,
        default=[16, 32, 64, 128],
        help="overload cells' clients (16,32,64,128): the saturating count is the smallest "
        "reaching 90%% of the peak goodput; the verdict reads the cell at twice it",
    )
    parser.add_argument(
        "--overload-deadline", type=float, default=0.2, help="overload cells' deadline, s (0.2)"
    )
    parser.add_argument(
        "--overload-stores", type=_names, default=["sqlite", "postgresql"], help="both"
    )
    parser.add_argument(
        "--no-deadline-clients",
        type=int,
        default=128,
        help="clients of the overload group's cell whose callers set no deadline (128; 0: none)",
    )
    parser.add_argument(
        "--soak", type=float, default=30.0, help="browsing soak: seconds of quote-only load (30)"
    )
    parser.add_argument("--soak-clients", type=int, default=16, help="browsing soak clients (16)")
    parser.add_argument("--soak-stores", type=_names, default=["sqlite", "postgresql"], help="both")
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
    parser.add_argument(
        "--pg-database",
        default=f"oms_bench_{os.getpid()}",
        help="database created for the run (oms_bench_<pid>: runs side by side never share one)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=0,
        help="the server's dashboard port (0, the default: no dashboard; benchmarks/"
        "checkout_cost.py compares with and without one)",
    )
    parser.add_argument("--viewer-token-file", help="the dashboard's viewer token, in a file")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable for the server (the others named OMS_* are dropped); repeatable",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.duration, args.warmup = 2.0, 1.0
        args.clients = [1, 8]
        args.stores = args.quote_stores = args.overload_stores = args.soak_stores = ["sqlite"]
        args.overload_clients = [4, 8]
        args.no_deadline_clients = 8
        args.soak, args.soak_clients = 3.0, 4
        args.pool = min(args.pool, 200)

    procs = lambda c: 1 if c == 1 else args.client_procs  # noqa: E731
    top = max(args.processes)
    nd = args.no_deadline_clients
    groups: dict[str, list[Cell]] = {
        "quotes": [
            Cell("quotes", store, p, c, procs(c), args.deadline)
            for store in args.quote_stores
            for p in args.processes
            for c in args.clients
        ],
        "place": [
            Cell("place", store, p, c, procs(c), args.deadline)
            for store in args.stores
            for p in args.processes
            for c in args.clients
        ],
        "ship": [
            Cell("ship", store, p, c, procs(c), args.deadline)
            for store in args.stores
            for p in args.processes
            for c in args.clients
        ],
        "overload": [
            cell
            for store in args.overload_stores
            for cell in [
                *(
                    Cell("overload", store, top, c, procs(c), args.overload_deadline)
                    for c in args.overload_clients
                ),
                *([Cell("overload", store, top, nd, procs(nd), None)] if nd else []),
            ]
        ],
        "browse": [
            Cell(
                "browse",
                store,
                top,
                args.soak_clients,
                procs(args.soak_clients),
                args.deadline,
                duration_s=args.soak,
            )
            for store in args.soak_stores
        ],
    }
    cells: list[Cell] = [
        c
        for name, group in groups.items()
        if args.only == name or (args.only == "all" and name != "ship")
        for c in group
    ]
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
    ttl = f"--quote-ttl {args.quote_ttl:g} " if args.quote_ttl is not None else ""
    limit = (
        f"--solver-time-limit {args.solver_time_limit:g} "
        if args.solver_time_limit is not None
        else ""
    )
    defaults = (
        "the product's defaults otherwise (quote TTL 900 s, solver limit 0.5 s, "
        "StartCheckout holds stock, 200 units per caller)"
    )
    print(
        f"load: {os.cpu_count()} cores; python {platform.python_version()}, grpcio "
        f"{grpc.__version__}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"server: python -m oms.cli serve --threads {args.server_threads} {slots}{ttl}{limit}"
        f"--no-demo, {defaults}; fresh store per cell: demo network with on hand and daily "
        f"capacity x{args.stock_scale}; clients: a checkout service (checkout token, one "
        f"x-client-id per caller); carts: pool of {args.pool} seeded demo_order carts, 1-5 "
        f"lines; deadline {args.deadline:g} s (overload cells {args.overload_deadline:g} s, and "
        f"none for the no-deadline cell); {args.warmup:g} s warm-up + {args.duration:g} s per "
        f"cell (browse: {args.soak:g} s); a call counts by when it was sent, and calls in flight "
        f"at the window's end are waited for and counted; client processes: 1 for 1 client, "
        f"else {args.client_procs} "
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
                [c for c in cells if c.kind == kind]
                for kind in ("quotes", "place", "ship", "overload", "browse")
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
                        f"{r['other_pct']:.0f}%"
                        + (
                            f"; held share end {r['held_share_end']:.4f} peak "
                            f"{r['held_share_peak']:.4f}"
                            if r.get("held_share_end") is not None
                            else ""
                        ),
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
                    cell = Cell(
                        "open",
                        "sqlite",
                        open_processes,
                        args.open_channels,
                        1,
                        args.deadline,
                        rate=rate,
                    )
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
    overloads = [c for c in done if c.kind == "overload"]
    if overloads:
        print(
            "### Overload: QuoteDeliveryOptions, closed loop, tight deadlines (goodput = OK/s "
            "of calls sent in the window; latency as the client saw it)\n\n"
            f"{overload_table(overloads)}\n"
        )
    browses = [c for c in done if c.kind == "browse"]
    if browses:
        print(
            "### Browsing soak: quotes only; share of promisable stock held by checkout holds "
            f"(sampled every second)\n\n{browse_table(browses)}\n"
        )
    print(f"### Access log against the clients\n\n{log_table(done)}\n")
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
