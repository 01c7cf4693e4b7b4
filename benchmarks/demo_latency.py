"""Quote latency on the demo network, the checkout's view (a command, not a test).

Carts of 1, 3, 5 and 10 lines from ``demo_order`` (SKUs weighted by demand,
destinations weighted like the stores) against the 310-node demo network;
one CP-SAT worker, the process pinned to one core where possible.

    python benchmarks/demo_latency.py [--carts 200] [--lines 1,3,5,10] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from sourcing import QuoteSettings, quote
from sourcing.baselines import greedy_nearest
from sourcing.demo import demo_network, demo_order
from sourcing.model import Label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carts", type=int, default=200)
    parser.add_argument("--lines", default="1,3,5,10")
    parser.add_argument(
        "--json", default=str(Path(__file__).parent / "results" / "demo_latency.json")
    )
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    network = demo_network()
    settings = QuoteSettings(num_workers=1)
    rows = []
    for lines in (int(x) for x in args.lines.split(",")):
        rng = np.random.default_rng(lines)
        ms, optimal, extra = [], 0, []
        for _ in range(args.carts):
            order = demo_order(network, rng, lines)
            started = time.perf_counter()
            q = quote(network, order, settings)
            ms.append((time.perf_counter() - started) * 1000)
            optimal += all(o.proof.status == "OPTIMAL" for o in q.options)
            cheapest = q.option(Label.CHEAPEST)
            assert cheapest is not None
            extra.append((greedy_nearest(network, order).cost - cheapest.cost) / 100_000)
        p = np.percentile(ms, [50, 99])
        rows.append(
            {
                "lines": lines,
                "carts": args.carts,
                "p50_ms": float(p[0]),
                "p99_ms": float(p[1]),
                "max_ms": float(max(ms)),
                "all_optimal_share": optimal / args.carts,
                "greedy_extra_cost_mean": float(np.mean(extra)),
            }
        )
        print(f"  done {lines} lines", flush=True)
    print(f"\n{'lines':>5} {'carts':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}", end="")
    print(f" {'OPT%':>6} {'greedy +$':>9}")
    for r in rows:
        print(
            f"{r['lines']:>5} {r['carts']:>5} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['max_ms']:>8.2f} {100 * r['all_optimal_share']:>6.1f} "
            f"{r['greedy_extra_cost_mean']:>9.2f}"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
