"""Quote latency of two versions of the engine side by side, alternated cart by cart.

Run from the project root, with a second copy of ``src/`` to compare against
(for instance ``git archive main src | tar -x -C /tmp/main``)::

    .venv/bin/python benchmarks/ab_latency.py --baseline /tmp/main/src \\
        [--sizes 20x200x2,fragmented:20x200x2] [--carts N] [--seed S] [--json PATH]

Two worker processes import ``sourcing`` from the baseline's ``src`` (A) and
from this checkout (B); both are pinned to the same core and build the same
networks and carts (``networks.regime_network`` and ``random_cart`` of this
checkout, as in ``quote_latency.py``). Each cart is quoted by A then B, or B
then A (alternating; with ``--repeat N`` N times, each side keeping its least
time), so both see the same machine load; each worker times
its own ``quote`` call, in wall-clock and CPU time (``time.process_time``: on
a loaded machine the wall clock also counts the time others held the core).
Per size it prints p50/p90/p99/max per side, the ratio B/A of each, the
share of quotes with every option proven and of options proven, per label
the carts where B's option is better, worse or equal by the label's value
(what a time limit costs the shopper), and the options compared: where both
sides proved a label, its value (cost for CHEAPEST and SINGLE_PARCEL, (day,
cost) for FASTEST, cost + value_of_day x day for BALANCED) must be equal;
where one side proved it, the other must not beat it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_SIZES = "10x50x2,20x200x2,50x500x2,fragmented:20x200x2,credits:20x200x2"
LABELS = ("CHEAPEST", "FASTEST", "SINGLE_PARCEL", "BALANCED")


def _worker() -> None:
    """Quote the carts the parent sends (one JSON line each); answer one JSON line each."""
    sys.path.insert(0, str(HERE))
    from sourcing import QuoteSettings, quote
    from sourcing.errors import ShortageError

    from networks import random_cart, regime_network, warm_up_solver

    warm_up_solver()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    networks: dict[tuple[str, int, int, int], Any] = {}
    for raw in sys.stdin:
        job = json.loads(raw)
        key = (job["regime"], job["nodes"], job["skus"], job["seed"])
        if key not in networks:
            networks[key] = regime_network(*key)
        network = networks[key]
        order = random_cart(network, np.random.default_rng(job["cart"]), job["lines"])
        settings = QuoteSettings(num_workers=1, time_limit_s=job["time_limit"])
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            q = quote(network, order, settings)
        except ShortageError:
            print(json.dumps({"shortage": True}), flush=True)
            continue
        ms = (time.perf_counter() - started) * 1000
        cpu_ms = (time.process_time() - cpu_started) * 1000
        options = [
            {
                "labels": [label.value for label in o.labels],
                "cost": o.cost,
                "day": o.delivery_days,
                "status": o.proof.status,
            }
            for o in q.options
        ]
        answer = {"ms": ms, "cpu_ms": cpu_ms, "options": options, "vod": settings.value_of_day}
        print(json.dumps(answer), flush=True)


def _value(label: str, option: dict[str, Any], vod: int) -> tuple[int, ...]:
    if label == "FASTEST":
        return (option["day"], option["cost"])
    if label == "BALANCED":
        return (option["cost"] + vod * option["day"],)
    return (option["cost"],)


def _disagreements(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Labels where A and B contradict each other's proofs."""
    problems = []
    for label in LABELS:
        oa = next((o for o in a["options"] if label in o["labels"]), None)
        ob = next((o for o in b["options"] if label in o["labels"]), None)
        if oa is None or ob is None:
            if (oa is None) != (ob is None):
                problems.append(f"{label}: only {'A' if ob is None else 'B'} has it")
            continue
        va, vb = _value(label, oa, a["vod"]), _value(label, ob, b["vod"])
        pa, pb = oa["status"] == "OPTIMAL", ob["status"] == "OPTIMAL"
        if (pa and pb and va != vb) or (pa and vb < va) or (pb and va < vb):
            problems.append(f"{label}: A {va} {oa['status']} vs B {vb} {ob['status']}")
    return problems


def _label_value(label: str, answer: dict[str, Any]) -> tuple[int, ...] | None:
    option = next((o for o in answer["options"] if label in o["labels"]), None)
    return None if option is None else _value(label, option, answer["vod"])


def _start(src: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(src))
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _ask(proc: subprocess.Popen[str], job: dict[str, Any]) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.flush()
    answer: dict[str, Any] = json.loads(proc.stdout.readline())
    return answer


def _pcts(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    return {p: float(np.percentile(arr, q)) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))} | {
        "max": float(arr.max())
    }


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    sides = {"A": _start(args.baseline.resolve()), "B": _start(HERE.parent / "src")}
    results = []
    try:
        for spec in [s.strip().lower() for s in args.sizes.split(",") if s.strip()]:
            regime, _, size = spec.rpartition(":")
            regime = regime or "standard"
            lines, nodes, _ = (int(x) for x in size.split("x"))
            base = {
                "regime": regime,
                "nodes": nodes,
                "skus": max(100, 3 * lines),
                "seed": args.seed,
                "lines": lines,
                "time_limit": args.time_limit,
            }
            _ask(sides["A"], base | {"cart": [args.seed, 10**6]})  # warm-up, untimed
            _ask(sides["B"], base | {"cart": [args.seed, 10**6]})
            ms: dict[str, list[float]] = {"A": [], "B": []}
            cpu: dict[str, list[float]] = {"A": [], "B": []}
            proven = {"A": 0, "B": 0}
            options_proven = {"A": [0, 0], "B": [0, 0]}  # proven, returned
            # Per label: carts where B's option is better, worse, equal (by the label's value).
            versus = {label: [0, 0, 0] for label in LABELS}
            problems: list[str] = []
            for i in range(args.carts):
                job = base | {"cart": [args.seed, i]}
                answers: dict[str, dict[str, Any]] = {}
                for rep in range(args.repeat):
                    order = ("A", "B") if (i + rep) % 2 == 0 else ("B", "A")
                    for side in order:
                        answer = _ask(sides[side], job)
                        if side in answers and not answer.get("shortage"):
                            # The least time of the repeats: one cart's noise does not set a p99.
                            for key in ("ms", "cpu_ms"):
                                answer[key] = min(answer[key], answers[side][key])
                        answers[side] = answer
                if any(a.get("shortage") for a in answers.values()):
                    continue
                for side, answer in answers.items():
                    ms[side].append(answer["ms"])
                    cpu[side].append(answer["cpu_ms"])
                    proven[side] += all(o["status"] == "OPTIMAL" for o in answer["options"])
                    options_proven[side][0] += sum(
                        o["status"] == "OPTIMAL" for o in answer["options"]
                    )
                    options_proven[side][1] += len(answer["options"])
                for label, tally in versus.items():
                    va, vb = (_label_value(label, answers[side]) for side in ("A", "B"))
                    if va is not None and vb is not None:
                        tally[0 if vb < va else 1 if va < vb else 2] += 1
                problems += [f"cart {i}: {p}" for p in _disagreements(answers["A"], answers["B"])]
            n = len(ms["A"])
            stats = {side: _pcts(v) for side, v in ms.items()} if n else {}
            cpu_stats = {side: _pcts(v) for side, v in cpu.items()} if n else {}
            result = {
                "spec": f"{regime}:{size}",
                "carts": n,
                "ms": stats,
                "ratio_b_over_a": {p: stats["B"][p] / stats["A"][p] for p in stats["A"]}
                if n
                else {},
                "cpu_ms": cpu_stats,
                "cpu_ratio_b_over_a": {
                    p: cpu_stats["B"][p] / cpu_stats["A"][p] for p in cpu_stats["A"]
                }
                if n
                else {},
                "proven_quote_share": {side: proven[side] / max(n, 1) for side in proven},
                "proven_option_share": {
                    side: done / max(total, 1) for side, (done, total) in options_proven.items()
                },
                "b_better_worse_equal": versus,
                "disagreements": problems,
                "load_average": os.getloadavg(),
            }
            results.append(result)
            print(_line(result), flush=True)
    finally:
        for proc in sides.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=30)
    return results


def _line(r: dict[str, Any]) -> str:
    if not r["carts"]:
        return f"{r['spec']:<22} no carts"
    a, b, ratio = r["ms"]["A"], r["ms"]["B"], r["ratio_b_over_a"]
    ca, cb, cpu_ratio = r["cpu_ms"]["A"], r["cpu_ms"]["B"], r["cpu_ratio_b_over_a"]
    proven = r["proven_quote_share"]
    options = r["proven_option_share"]
    versus = r["b_better_worse_equal"]
    return (
        f"{r['spec']:<22} {r['carts']:>5} | A p50 {a['p50']:8.2f} p99 {a['p99']:8.2f} "
        f"| B p50 {b['p50']:8.2f} p99 {b['p99']:8.2f} | B/A p50 {ratio['p50']:5.2f} "
        f"p99 {ratio['p99']:5.2f} | CPU A p50 {ca['p50']:8.2f} p99 {ca['p99']:8.2f} "
        f"B p50 {cb['p50']:8.2f} p99 {cb['p99']:8.2f} B/A p50 {cpu_ratio['p50']:5.2f} "
        f"p99 {cpu_ratio['p99']:5.2f} | proven A {100 * proven['A']:5.1f}% "
        f"B {100 * proven['B']:5.1f}% | disagree {len(r['disagreements'])} "
        f"| load {r['load_average'][0]:.2f}"
        f"\n{'':<22} options proven A {100 * options['A']:5.1f}% B {100 * options['B']:5.1f}% "
        "| B better/worse/equal: "
        + ", ".join(f"{label} {b}/{w}/{e}" for label, (b, w, e) in versus.items())
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline", type=Path, help="the src/ directory of the version A")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"default {DEFAULT_SIZES}")
    parser.add_argument("--carts", type=int, default=40, help="carts per size (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="network and cart seed (default 0)")
    parser.add_argument("--time-limit", type=float, default=2.0, help="quote time limit (s)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="quote each cart this many times per side, alternating who goes first, and keep "
        "each side's least wall and CPU time (the options of its last quote; default 1)",
    )
    parser.add_argument("--json", type=Path, default=HERE / "results" / "ab_latency.json")
    args = parser.parse_args(argv)
    if args.worker:
        _worker()
        return 0
    if args.baseline is None or not (args.baseline / "sourcing").is_dir():
        parser.error("--baseline must name a src/ directory holding the sourcing package")
    print(f"A = {args.baseline.resolve()}, B = {HERE.parent / 'src'}; both pinned to CPU 0")
    results = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"baseline": str(args.baseline), "results": results}, indent=1))
    print(f"JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
