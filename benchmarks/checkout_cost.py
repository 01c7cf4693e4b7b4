"""What an open dashboard costs checkout: quotes/s of ``load.py``'s quote cell with the
dashboard off, and with it on and polled the way browsers poll it, alternated, as a ratio.

Run from the project root (a command, not a test)::

    .venv/bin/python benchmarks/checkout_cost.py [--rounds 3] [--store sqlite|postgresql]
        [--clients 32] [--processes 2] [--duration 20] [--tabs 3] [--every 1.0] [--json PATH]

Each round runs two cells of :mod:`load` (a fresh store, ``oms serve`` with
``--processes`` workers, ``--clients`` closed-loop callers of
QuoteDeliveryOptions), in alternating order so a drift in the machine's load
(other engineers' work) falls on both sides:

* **off**: ``oms serve --http-port 0``: no dashboard process;
* **on**: ``oms serve --http-port P``: the dashboard's own process beside the
  workers, signed into by ``dashboard.py poll`` with ``--tabs`` pages open
  (overview, stock, orders), each asking ``/api/changes`` every ``--every``
  seconds and fetching its fragments again whenever the mark moved. Quotes
  alone do not move the mark (it follows orders, stock and receipts), so
  ``--always`` makes every tab fetch its fragments at every poll, as if orders
  were placed every second: the most an open dashboard asks of the store.

It prints quotes/s per cell, the ratio on/off per round and overall (sums of
calls over sums of time), the poller's requests, and the load average; the
target is on/off >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import load

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "checkout_cost.json"
TOKEN = "checkout-cost-viewer-token"


def poller(port: int, args: argparse.Namespace, out: Path) -> subprocess.Popen[bytes]:
    """``dashboard.py poll`` against the cell's dashboard; it waits for the server to come up
    (the cell prepares its store first) and polls past the end of the load window."""
    window = args.warmup + args.duration + 5
    command = [
        sys.executable, str(HERE / "dashboard.py"), "poll",
        "--base", f"http://127.0.0.1:{port}", "--token", TOKEN,
        "--tabs", str(args.tabs), "--every", f"{args.every:g}", "--duration", f"{window:g}",
        *(["--always"] if args.always else []),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=out.open("wb"), stderr=subprocess.STDOUT)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="oms-checkout-cost-") as tmp:
        workdir = Path(tmp)
        token_file = workdir / "viewer-token"
        token_file.write_text(TOKEN)
        load_args = load.build_parser().parse_args(
            [
                "--duration", f"{args.duration:g}", "--warmup", f"{args.warmup:g}",
                "--pool", str(args.pool), "--pg-database", "oms_checkout_cost",
                "--viewer-token-file", str(token_file),
            ]
        )  # fmt: skip
        pool = load.cart_pool(load_args.pool, load_args.seed)
        cells: list[dict[str, Any]] = []
        number = 0
        for round_ in range(args.rounds):
            order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
            for side in order:
                number += 1
                port = load.free_port() if side == "on" else 0
                load_args.http_port = port
                client_procs = 1 if args.clients == 1 else load_args.client_procs
                cell = load.Cell("quotes", args.store, args.processes, args.clients, client_procs)
                polled = None
                out = workdir / f"poll{number:02d}.json"
                if side == "on":
                    polled = poller(port, args, out)
                started = time.monotonic()
                try:
                    load.run_cell(cell, pool, load_args, workdir, number)
                finally:
                    if polled is not None:
                        polled.send_signal(signal.SIGTERM)
                        polled.wait(timeout=30)
                poll_text = out.read_text().strip() if out.exists() else ""
                r = cell.result
                row = {
                    "round": round_,
                    "side": side,
                    "quotes_per_s": r["calls_per_s"],
                    "ok": r["ok"],
                    "errors": r["errors"],
                    "errors_by_code": r.get("errors_by_code", {}),
                    "p50_ms": r["latency_ms"]["p50"],
                    "p99_ms": r["latency_ms"]["p99"],
                    "server_pct": r["server_pct"],
                    "other_pct": r.get("other_pct"),
                    "loadavg_1m_before": r["loadavg_1m_before"],
                    "poller": poll_text.splitlines()[-1] if poll_text else None,
                    "seconds": round(time.monotonic() - started, 1),
                }
                cells.append(row)
                print(
                    f"round {round_} {side:3}: {row['quotes_per_s']:.1f} quotes/s, p50 "
                    f"{load._fmt(row['p50_ms'])} ms, p99 {load._fmt(row['p99_ms'])} ms, errors "
                    f"{row['errors']}, load {row['loadavg_1m_before']:.1f}"
                    + (f", poller {row['poller']}" if side == "on" else ""),
                    flush=True,
                )
    return summarise(cells, args)


def summarise(cells: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    rounds = []
    for round_ in range(args.rounds):
        by_side = {c["side"]: c for c in cells if c["round"] == round_}
        rounds.append(by_side["on"]["quotes_per_s"] / by_side["off"]["quotes_per_s"])
    total = {
        side: sum(c["quotes_per_s"] for c in cells if c["side"] == side) for side in ("on", "off")
    }
    ratio = total["on"] / total["off"]
    return {
        "store": args.store,
        "clients": args.clients,
        "processes": args.processes,
        "duration_s": args.duration,
        "tabs": args.tabs,
        "every_s": args.every,
        "always": args.always,
        "cells": cells,
        "ratio_by_round": [round(r, 3) for r in rounds],
        "ratio": round(ratio, 3),
        "target_ratio": 0.95,
        "loadavg_end": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--tabs", type=int, default=3)
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument(
        "--always",
        action="store_true",
        help="the poller fetches every tab's fragments at every poll (a store that moves "
        "every second; quotes alone do not move the change mark)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    summary = run(args)
    print(
        f"\non/off quotes/s by round: {summary['ratio_by_round']}; overall "
        f"{summary['ratio']:.3f} (target >= 0.95): "
        f"{'met' if summary['ratio'] >= 0.95 else 'MISSED'}"
    )
    load_end = summary["loadavg_end"]
    print(f"load average at the end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
