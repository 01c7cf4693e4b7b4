"""The dashboard's server time per page on a large PostgreSQL store, and a poller for measuring
what an open dashboard costs checkout.

Run from the project root (commands, not tests)::

    .venv/bin/python benchmarks/dashboard.py pages [--orders 100000] [--ledger 1000000]
        [--repeat 30] [--keep] [--json PATH]
    .venv/bin/python benchmarks/dashboard.py poll --base http://127.0.0.1:8080 --token T
        [--tabs 3] [--every 1.0] [--duration 60] [--always]
    .venv/bin/python benchmarks/dashboard.py cpu --database oms_dash_bench
        [--modes moving idle unshared] [--rounds 3] [--duration 30]

``pages`` creates a PostgreSQL database (``--database``, by default
``oms_dash_bench``, dropped first and at the end unless ``--keep``), migrates
it, loads the demo network, and bulk-loads (COPY) ``--orders`` orders over the
last 90 days with their quotes (1.5 per order), events (placed, released,
shipped, delivered, cancelled, flagged), a shipment per parcel (half the
released split orders partly shipped), reservations for the open ones, and
``--ledger`` stock-ledger rows (a shipment row per shipped parcel line, the rest
counts and receipts), then VACUUM
ANALYZE. It serves the dashboard (``oms dashboard``, its own process, as in
production) and requests every page, fragment and data endpoint ``--repeat``
times, in rotation, reading the server's own time from the ``Server-Timing``
header; it prints p50/p95/max per endpoint and the target (p95 <= 300 ms).

``poll`` signs in and keeps ``--tabs`` pages open the way a browser does: each
asks ``/api/changes`` every ``--every`` seconds and, when the mark moved,
fetches the page's fragments again (``--always``: at every poll).
``benchmarks/checkout_cost.py`` runs it beside ``load.py``'s quote cell and
compares quotes/s with and without the dashboard.

``cpu`` serves the dashboard on a store ``pages --keep`` left, in each mode of
sharing its figures (``moving``: recomputed every 5 s interval, as on a store
that moves all the time; ``idle``: the mark stands still, figures live up to
30 s; ``unshared``: every request computes, as before), polled by ``poll
--always`` (at niceness 19), and reads the CPU the dashboard's process and its
PostgreSQL backends used over ``--duration`` seconds (``/proc``), alternated
over ``--rounds``: what an open dashboard takes from the cores checkout runs on.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

try:  # the dev extra installs httpx2 (Starlette's TestClient transport); httpx works too
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

DEFAULT_JSON = Path(__file__).parent / "results" / "dashboard.json"
PG = os.environ.get("OMS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
TOKEN = "bench-viewer-token"
DAY = 86_400.0
ORDER_COLUMNS = [
    "order_id",
    "quote_id",
    "option_id",
    "idempotency_key",
    "state",
    "dest_lat",
    "dest_lon",
    "lines_json",
    "allocation_json",
    "promised_date",
    "created_at",
    "updated_at",
    "version",
]
QUOTE_COLUMNS = [
    "quote_id",
    "created_at",
    "expires_at",
    "quote_date",
    "request_json",
    "options_json",
    "order_id",
]
LABEL_SETS = (
    ["CHEAPEST", "BALANCED"],
    ["CHEAPEST", "SINGLE_PARCEL", "BALANCED"],
    ["FASTEST"],
    ["SINGLE_PARCEL"],
    ["COLLECT"],
)


def _copy(
    conn: psycopg.Connection[Any], table: str, columns: list[str], rows: list[tuple[Any, ...]]
) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


#: Each parcel's shipment state by its order's (issue 16's derivation, read backwards).
SHIPMENT_STATE = {
    "PLACED": "PENDING",
    "RELEASED": "REQUESTED",
    "SHIPPED": "SHIPPED",
    "DELIVERED": "DELIVERED",
    "CANCELLED": "CANCELLED",
}
SHIPMENT_COLUMNS = [
    "shipment_id", "order_id", "node_id", "service", "lines_json", "state",
    "planned_dispatch", "planned_arrival", "carrier", "tracking_number",
    "shipped_at", "delivered_at", "created_at", "updated_at",
]  # fmt: skip


def build(url: str, orders: int, ledger: int, seed: int = 1) -> dict[str, Any]:
    """Migrate, load the demo network, and bulk-load the orders, quotes, events and ledger."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "src"))
    from oms.store import Store
    from sourcing.demo import demo_network

    network = demo_network()
    store = Store("postgresql+psycopg://" + url.split("://", 1)[1], pool_size=2)
    store.migrate()
    store.load_network(network, reason="bench")
    store.dispose()
    rng = random.Random(seed)
    now = time.time()
    nodes = list(network.node_ids)
    dcs = [n for n in nodes if n.startswith("DC")]
    skus = list(network.sku_ids)
    started = time.perf_counter()
    order_rows, quote_rows, event_rows, ledger_rows, reservation_rows = [], [], [], [], []
    shipment_rows: list[tuple[Any, ...]] = []
    for i in range(orders):
        created = now - (1 - rng.random() ** 1.3) * 90 * DAY
        age_days = (now - created) / DAY
        day = datetime.fromtimestamp(created, UTC).date()
        order_id = f"o_{i:08d}"
        quote_id = f"q_{i:08d}"
        n_lines = rng.choice((1, 1, 2, 3))
        lines = [{"sku": rng.choice(skus), "qty": rng.randint(1, 3)} for _ in range(n_lines)]
        n_parcels = 1 if rng.random() < 0.85 else min(n_lines + 1, 3)
        parcels = []
        for p in range(n_parcels):
            node = rng.choice(dcs) if rng.random() < 0.6 else rng.choice(nodes)
            parcel_lines = [
                {"line": j, "sku": line["sku"], "qty": line["qty"]}
                for j, line in enumerate(lines)
                if j % n_parcels == p
            ] or [{"line": 0, "sku": lines[0]["sku"], "qty": 1}]
            shipping, handling, credit = (
                rng.randint(600_000, 2_000_000),
                200_000,
                rng.randint(0, 90_000),
            )
            parcels.append(
                {
                    "node_id": node,
                    "service": "ground",
                    "zone": str(rng.randint(2, 8)),
                    "distance_km": 500.0,
                    "weight_g": 1200,
                    "shipping": shipping,
                    "handling": handling,
                    "storage_credit": credit,
                    "cost": shipping + handling - credit,
                    "arrival_days": rng.randint(2, 6),
                    "inbound_day": None,
                    "lines": parcel_lines,
                }
            )
        doc = {
            "option_id": "opt-1",
            "labels": rng.choice(LABEL_SETS),
            "cost": sum(p["cost"] for p in parcels),
            "shipping": sum(p["shipping"] for p in parcels),
            "handling": sum(p["handling"] for p in parcels),
            "storage_credit": sum(p["storage_credit"] for p in parcels),
            "delivery_days": max(p["arrival_days"] for p in parcels),
            "status": "OPTIMAL",
            "gap": None,
            "method": "enumeration",
            "stock_held": True,
            "pickup": None,
            "parcels": parcels,
            "start_date": day.isoformat(),
        }
        promised = (day + timedelta(days=doc["delivery_days"])).isoformat()
        if rng.random() < 0.04:
            state = "CANCELLED"
        elif age_days > 6:
            state = "DELIVERED"
        elif age_days > 3:
            state = "SHIPPED"
        elif age_days > 1:
            state = "RELEASED"
        else:
            state = "PLACED"
        # Half the released split orders have shipped their first parcel: PARTIALLY_SHIPPED,
        # the rest still at their nodes (late once their planned dispatch has passed).
        partial = state == "RELEASED" and n_parcels > 1 and rng.random() < 0.5
        if partial:
            state = "PARTIALLY_SHIPPED"
        order_rows.append(
            (
                order_id, quote_id, "opt-1", uuid.uuid4().hex, state, 40.0, -90.0,
                json.dumps(lines, separators=(",", ":")),
                json.dumps(doc, separators=(",", ":")),
                promised, created, created, 1,
            )
        )  # fmt: skip
        options = json.dumps([doc, dict(doc, option_id="opt-2", labels=["FASTEST"])])
        quote_rows.append(
            (quote_id, created - 30, created + 870, day.isoformat(), "{}", options, order_id)
        )
        event_rows.append((order_id, created, "placed", "opt-1: placed"))
        steps = {"CANCELLED": ("cancelled",), "PLACED": (), "RELEASED": ("released",)}
        steps["PARTIALLY_SHIPPED"] = ("released",)
        steps |= {
            "SHIPPED": ("released", "shipped"),
            "DELIVERED": ("released", "shipped", "delivered"),
        }
        for k, kind in enumerate(steps[state]):
            at = created + (0.3 + k * (doc["delivery_days"] / 2.5)) * DAY
            event_rows.append((order_id, min(at, now), kind, kind))
            if kind == "shipped":
                for p in parcels:
                    for line in p["lines"]:
                        ledger_rows.append(
                            (
                                p["node_id"],
                                line["sku"],
                                -line["qty"],
                                "shipment",
                                order_id,
                                min(at, now),
                            )
                        )
        for p_i, p in enumerate(parcels):
            left = state in ("SHIPPED", "DELIVERED") or (partial and p_i == 0)
            shipped_at = min(created + 0.3 * DAY, now) if left else None
            shipment_rows.append(
                (
                    f"s_{i:08d}_{p_i}", order_id, p["node_id"], p["service"],
                    json.dumps(p["lines"], separators=(",", ":")),
                    SHIPMENT_STATE.get(state, "SHIPPED" if left else "REQUESTED"),
                    (day + timedelta(days=max(0, p["arrival_days"] - 2))).isoformat(),
                    (day + timedelta(days=p["arrival_days"])).isoformat(),
                    "UPS" if left else None, f"1Z{i:08d}{p_i}" if left else None,
                    shipped_at, min(created + 3 * DAY, now) if state == "DELIVERED" else None,
                    created, created,
                )
            )  # fmt: skip
        if rng.random() < 0.01:
            event_rows.append((order_id, created + 3600, "flagged", "promise at risk"))
        if state in ("PLACED", "RELEASED"):
            for p in parcels:
                for line in p["lines"]:
                    reservation_rows.append(
                        (
                            p["node_id"],
                            line["sku"],
                            line["qty"],
                            None,
                            order_id,
                            None,
                            day.isoformat(),
                        )
                    )
        if rng.random() < 0.5:  # a browsed quote nobody ordered
            quote_rows.append(
                (f"qb_{i:08d}", created - 60, created + 840, day.isoformat(), "{}", options, None)
            )
    while len(ledger_rows) < ledger:
        at = now - rng.random() * 90 * DAY
        ledger_rows.append(
            (rng.choice(nodes), rng.choice(skus), rng.randint(-5, 20), "count", None, at)
        )
    with psycopg.connect(url, autocommit=True) as conn:
        _copy(
            conn,
            "orders",
            ORDER_COLUMNS,
            order_rows,
        )
        _copy(
            conn,
            "quotes",
            QUOTE_COLUMNS,
            quote_rows,
        )
        _copy(conn, "order_events", ["order_id", "at", "type", "detail"], event_rows)
        _copy(conn, "shipments", SHIPMENT_COLUMNS, shipment_rows)
        _copy(
            conn,
            "stock_ledger",
            ["node_id", "sku", "delta", "reason", "order_id", "at"],
            ledger_rows,
        )
        _copy(
            conn,
            "reservations",
            ["node_id", "sku", "qty", "quote_id", "order_id", "expires_at", "capacity_day"],
            reservation_rows,
        )
        conn.execute("VACUUM ANALYZE")
    return {
        "orders": len(order_rows),
        "quotes": len(quote_rows),
        "events": len(event_rows),
        "ledger_rows": len(ledger_rows),
        "reservations": len(reservation_rows),
        "shipments": len(shipment_rows),
        "build_s": round(time.perf_counter() - started, 1),
    }


def endpoints(order_id: str, sku: str, node: str) -> list[tuple[str, str]]:
    return [
        ("overview today", "/?period=today"),
        ("overview 7d", "/?period=7d"),
        ("overview 30d", "/?period=30d"),
        ("overview fragment 30d", "/fragments/overview?period=30d"),
        ("stock", "/stock"),
        ("stock search", "/stock?q=SKU-001"),
        ("stock low only", "/stock?low=1"),
        ("stock table page 20", "/fragments/stock-table?offset=1000"),
        ("alerts fragment", "/fragments/alerts"),
        ("receipts fragment", "/fragments/receipts"),
        ("nodes fragment 30d", "/fragments/nodes?period=30d"),
        ("orders", "/orders"),
        ("orders by id", f"/orders?order_id={order_id}"),
        ("orders by sku", f"/orders?sku={sku}"),
        ("orders by node", f"/orders?node={node}"),
        ("orders by state", "/orders?state=SHIPPED"),
        ("orders attention", "/orders?attention=1"),
        ("orders late", "/orders?late=1"),
        ("orders partially shipped", "/orders?state=PARTIALLY_SHIPPED"),
        ("order page", f"/orders/{order_id}"),
        ("changes", "/api/changes"),
    ]


def measure(base: str, repeat: int, order_id: str) -> list[dict[str, Any]]:
    client = httpx.Client(base_url=base, timeout=60, follow_redirects=False)
    assert client.get("/login", params={"token": TOKEN}).status_code == 303
    targets = endpoints(order_id, "SKU-0003", "DC-MEM")
    server: dict[str, list[float]] = {name: [] for name, _ in targets}
    wall: dict[str, list[float]] = {name: [] for name, _ in targets}
    for name, path in targets:  # warm-up (connection pool, plan cache)
        assert client.get(path).status_code == 200, (name, path)
    for _ in range(repeat):
        for name, path in targets:
            t0 = time.perf_counter()
            reply = client.get(path)
            wall[name].append((time.perf_counter() - t0) * 1000)
            assert reply.status_code == 200, (name, reply.status_code)
            server[name].append(float(reply.headers["server-timing"].split("dur=")[1]))
    rows = []
    for name, path in targets:
        s = sorted(server[name])
        rows.append(
            {
                "endpoint": name,
                "path": path,
                "p50_ms": round(statistics.median(s), 1),
                "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))], 1),
                "max_ms": round(s[-1], 1),
                "client_p50_ms": round(statistics.median(wall[name]), 1),
            }
        )
    return rows


def pages(args: argparse.Namespace) -> int:
    name = args.database
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG}/{name}"
    try:
        sizes = build(url, args.orders, args.ledger)
        print(f"built: {sizes}", flush=True)
        port = args.port
        # Every request computes its figures (none shared): the server time of the queries.
        env = dict(
            os.environ,
            OMS_VIEWER_TOKEN=TOKEN,
            OMS_DEMO_ORDERS="0",
            OMS_DASHBOARD_REFRESH_S="0",
            OMS_DASHBOARD_UNCHANGED_S="0",
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "oms.cli", "dashboard", "--database-url", url,
             "--http-port", str(port)],
            env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(200):
                try:
                    httpx.get(base + "/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            rows = measure(base, args.repeat, f"o_{args.orders // 2:08d}")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=20)
    finally:
        if not args.keep:
            with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    load = os.getloadavg()
    print(f"\n{'endpoint':26} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'client p50':>10}")
    for r in rows:
        print(
            f"{r['endpoint']:26} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['max_ms']:8.1f} "
            f"{r['client_p50_ms']:10.1f}"
        )
    worst = max(r["p95_ms"] for r in rows)
    print(f"\nworst p95 {worst:.1f} ms (target 300 ms): {'met' if worst <= 300 else 'MISSED'}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"sizes": sizes, "rows": rows, "worst_p95_ms": worst, "loadavg": load}, indent=2)
    )
    return 0 if worst <= 300 else 1


TABS = {
    "overview": ["/fragments/overview?period=7d"],
    "stock": [
        "/fragments/alerts",
        "/fragments/receipts",
        "/fragments/stock-table",
        "/fragments/nodes",
    ],
    "orders": ["/fragments/orders"],
}


class Tab:
    """One keep-alive HTTP connection with the session cookie: what a poll costs the
    poller is a request line and a read, not an HTTP library's machinery (the poller
    shares the 2 cores with checkout; a real browser would not)."""

    def __init__(self, base: str) -> None:
        url = urllib.parse.urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.cookie = ""

    def get(self, path: str) -> tuple[int, bytes]:
        headers = {"Cookie": self.cookie} if self.cookie else {}
        self.conn.request("GET", path, headers=headers)
        reply = self.conn.getresponse()
        body = reply.read()
        cookie = reply.getheader("set-cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        return reply.status, body


class Stopped(Exception):
    """SIGTERM: the load cell ended; the poller reports what it did."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped


def poll(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _stop)
    tab = Tab(args.base)
    # load.py prepares its store before the server (and so the dashboard) starts: wait.
    deadline = time.monotonic() + args.wait
    login = "/login?" + urllib.parse.urlencode({"token": args.token})
    while True:
        try:
            if tab.get(login)[0] in (200, 303):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            tab = Tab(args.base)
            time.sleep(0.2)
    assert tab.get("/api/changes")[0] == 200, "could not sign in"
    tabs = list(TABS.values()) * ((args.tabs + len(TABS) - 1) // len(TABS))
    tabs = tabs[: args.tabs]
    marks: list[str | None] = [None] * len(tabs)
    end = time.monotonic() + args.duration
    requests = failed = 0
    started = time.monotonic()
    try:
        while time.monotonic() < end:
            tick = time.monotonic()
            for i, paths in enumerate(tabs):
                status, body = tab.get("/api/changes")
                requests += 1
                failed += status != 200
                mark = json.loads(body)["mark"] if status == 200 else None
                if mark != marks[i] or args.always:
                    for path in paths:
                        failed += tab.get(path)[0] != 200
                        requests += 1
                    marks[i] = mark
            time.sleep(max(0.0, args.every - (time.monotonic() - tick)))
    except (OSError, http.client.HTTPException, Stopped):  # the cell ended: report so far
        pass
    polled = max(time.monotonic() - started, 1e-9)
    cpu = time.process_time()
    print(
        json.dumps(
            {
                "requests": requests,
                "failed": failed,
                "per_s": round(requests / polled, 1),
                "poller_cpu_pct": round(100 * cpu / polled, 1),
            }
        )
    )
    return 0


#: ``cpu``'s dashboards: (refresh, unchanged) seconds. "moving": figures due every interval,
#: as on a store whose mark moves all the time; "unshared": every request computes.
CPU_MODES = {"moving": (5.0, 5.0), "idle": (5.0, 30.0), "unshared": (0.0, 0.0)}


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _backends(admin: psycopg.Connection[Any], database: str) -> dict[int, int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'",
        (database,),
    ).fetchall()
    return {pid: _cpu_ticks(pid) for (pid,) in rows}


def cpu(args: argparse.Namespace) -> int:
    """What the dashboard and its PostgreSQL backends use of the CPU while ``--tabs`` tabs
    poll with ``--always``, by mode, alternated: a direct measure of an open dashboard's
    cost, less noisy on a shared machine than checkout's quotes/s."""
    url = f"{PG}/{args.database}"
    hz = os.sysconf("SC_CLK_TCK")
    rows: list[dict[str, Any]] = []
    modes = list(args.modes)
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        for round_ in range(args.rounds):
            for mode in modes[round_ % len(modes) :] + modes[: round_ % len(modes)]:
                refresh, unchanged = CPU_MODES[mode]
                env = dict(
                    os.environ,
                    OMS_VIEWER_TOKEN=TOKEN,
                    OMS_DEMO_ORDERS="0",
                    OMS_DASHBOARD_REFRESH_S=f"{refresh:g}",
                    OMS_DASHBOARD_UNCHANGED_S=f"{unchanged:g}",
                )
                server = subprocess.Popen(
                    [sys.executable, "-m", "oms.cli", "dashboard", "--database-url", url,
                     "--http-port", str(args.port)],
                    env=env, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                base = f"http://127.0.0.1:{args.port}"
                poller = subprocess.Popen(
                    [sys.executable, __file__, "poll", "--base", base, "--token", TOKEN,
                     "--tabs", str(args.tabs), "--every", "1", "--always",
                     "--duration", f"{args.duration + args.warmup + 5:g}"],
                    stdout=subprocess.PIPE, preexec_fn=lambda: os.nice(19),
                )  # fmt: skip
                try:
                    while True:  # signed in and polling
                        try:
                            httpx.get(base + "/healthz", timeout=1)
                            break
                        except httpx.HTTPError:
                            time.sleep(0.1)
                    time.sleep(args.warmup)
                    load = os.getloadavg()[0]
                    server0, backends0 = _cpu_ticks(server.pid), _backends(admin, args.database)
                    t0 = time.monotonic()
                    time.sleep(args.duration)
                    server1, backends1 = _cpu_ticks(server.pid), _backends(admin, args.database)
                    wall = time.monotonic() - t0
                finally:
                    server.send_signal(signal.SIGTERM)
                    server.wait(timeout=20)
                    out = poller.communicate(timeout=30)[0].decode().strip()
                backend = sum(v - backends0.get(pid, 0) for pid, v in backends1.items())
                row = {
                    "round": round_,
                    "mode": mode,
                    "dashboard_cpu_ms_per_s": round(1000 * (server1 - server0) / hz / wall, 1),
                    "backends_cpu_ms_per_s": round(1000 * backend / hz / wall, 1),
                    "poller": json.loads(out.splitlines()[-1]) if out else None,
                    "loadavg_1m": load,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n{'mode':10} {'dashboard ms/s':>15} {'backends ms/s':>14} {'total ms/s':>11}")
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        dash = statistics.median(r["dashboard_cpu_ms_per_s"] for r in mine)
        pg = statistics.median(r["backends_cpu_ms_per_s"] for r in mine)
        print(f"{mode:10} {dash:15.1f} {pg:14.1f} {dash + pg:11.1f}")
    print("(medians over rounds; ms of CPU per second of wall time: 10 ms/s is 1% of a core)")
    load_end = os.getloadavg()
    print(f"load average {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "loadavg_end": load_end}, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pages")
    p.add_argument("--orders", type=int, default=100_000)
    p.add_argument("--ledger", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--port", type=int, default=18181)
    p.add_argument(
        "--database", default="oms_dash_bench", help="the scratch database (dropped first)"
    )
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    q = sub.add_parser("poll")
    q.add_argument("--base", required=True)
    q.add_argument("--token", default=os.environ.get("OMS_VIEWER_TOKEN", ""))
    q.add_argument("--tabs", type=int, default=3)
    q.add_argument("--every", type=float, default=1.0)
    q.add_argument("--duration", type=float, default=60.0)
    q.add_argument("--wait", type=float, default=300.0, help="for the dashboard to come up, s")
    q.add_argument(
        "--always",
        action="store_true",
        help="fetch every tab's fragments at every poll, as if the store moved every second",
    )
    c = sub.add_parser("cpu")
    c.add_argument("--database", default="oms_dash_bench", help="a store `pages --keep` built")
    c.add_argument("--modes", nargs="+", choices=tuple(CPU_MODES), default=list(CPU_MODES))
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--tabs", type=int, default=3)
    c.add_argument("--duration", type=float, default=30.0)
    c.add_argument("--warmup", type=float, default=5.0)
    c.add_argument("--port", type=int, default=18182)
    c.add_argument("--json", type=Path, default=DEFAULT_JSON.with_name("dashboard_cpu.json"))
    args = parser.parse_args()
    commands = {"pages": pages, "poll": poll, "cpu": cpu}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
