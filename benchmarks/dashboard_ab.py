"""The dashboard's page times before and after a change, side by side on one store.

Run from the project root on a store kept by ``dashboard.py pages --keep`` (100,000 orders
on PostgreSQL)::

    .venv/bin/python benchmarks/dashboard_ab.py --database oms_dash_bench
        [--baseline 0e91c6d] [--rounds 4] [--repeat 10] [--json PATH]

"Before" serves the dashboard from ``--baseline``'s source (``git archive`` into a
temporary directory, first on ``PYTHONPATH``); "after" from the working tree. Each round
starts one server per side, in alternating order, and requests every endpoint of
``dashboard.py``'s list (plus the orders of the least busy node, and the endpoints only
one side has) ``--repeat`` times, reading the server's own time from ``Server-Timing``.
It prints p50/p95 per endpoint and side, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import psycopg

from dashboard import PG, TOKEN, endpoints, httpx

ROOT = Path(__file__).resolve().parent.parent


def baseline_tree(ref: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", ref, "src"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def targets(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        order_id = conn.execute("SELECT order_id FROM orders ORDER BY order_id LIMIT 1").fetchone()
        quiet = conn.execute(
            "SELECT node_id FROM shipments GROUP BY node_id ORDER BY count(*), node_id LIMIT 1"
        ).fetchone()
    assert order_id and quiet
    return [
        *endpoints(order_id[0], "SKU-0003", "DC-MEM"),
        ("orders by quiet node", f"/orders?node={quiet[0]}"),
        ("conversion fragment 30d", "/fragments/conversion?period=30d"),
    ]


def serve(url: str, port: int, pythonpath: Path | None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, OMS_VIEWER_TOKEN=TOKEN, OMS_DEMO_ORDERS="0")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    server = subprocess.Popen(
        [sys.executable, "-m", "oms.cli", "dashboard", "--database-url", url,
         "--http-port", str(port)],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the dashboard did not start")


def run_side(
    base: str, paths: list[tuple[str, str]], repeat: int, into: dict[str, list[float]]
) -> None:
    client = httpx.Client(base_url=base, timeout=60, follow_redirects=False)
    assert client.get("/login", params={"token": TOKEN}).status_code == 303
    live = [(n, p) for n, p in paths if client.get(p).status_code == 200]  # + warm-up
    for _ in range(repeat):
        for name, path in live:
            reply = client.get(path)
            assert reply.status_code == 200, (name, reply.status_code)
            into.setdefault(name, []).append(float(reply.headers["server-timing"].split("=")[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database", default="oms_dash_bench")
    p.add_argument("--baseline", default="0e91c6d")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--port", type=int, default=18191)
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "ab.json")
    args = p.parse_args()
    url = f"{PG}/{args.database}"
    paths = targets(url)
    times: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        old = baseline_tree(args.baseline, Path(tmp))
        for r in range(args.rounds):
            sides = [("before", old), ("after", None)]
            for side, pythonpath in sides if r % 2 == 0 else reversed(sides):
                server = serve(url, args.port, pythonpath)
                try:
                    run_side(f"http://127.0.0.1:{args.port}", paths, args.repeat, times[side])
                finally:
                    server.send_signal(signal.SIGTERM)
                    server.wait(timeout=20)
                loads.append(os.getloadavg()[0])

    def stats(values: list[float] | None) -> tuple[float, float] | None:
        if not values:
            return None
        s = sorted(values)
        return statistics.median(s), s[min(len(s) - 1, int(0.95 * len(s)))]

    rows: list[dict[str, Any]] = []
    print(f"\n{'endpoint':26} {'before p50':>10} {'p95':>7} {'after p50':>10} {'p95':>7}")
    for name, _ in paths:
        row: dict[str, Any] = {"endpoint": name}
        cells = []
        for side in ("before", "after"):
            got = stats(times[side].get(name))
            row[side] = None if got is None else {"p50_ms": got[0], "p95_ms": got[1]}
            cells.append("         -       -" if got is None else f"{got[0]:10.1f} {got[1]:7.1f}")
        rows.append(row)
        print(f"{name:26} {cells[0]} {cells[1]}")
    worst = max(r["after"]["p95_ms"] for r in rows if r["after"])
    print(f"\nafter: worst p95 {worst:.1f} ms (target 300 ms)")
    print(f"load average (1 min) over the run: {min(loads):.2f} to {max(loads):.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "loads": loads, "worst": worst}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
