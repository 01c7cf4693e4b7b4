"""Cross-check the optimiser's labels against SCIP on large carts (a command, not a test).

For each size LxN, carts as in quote_latency.py (generated network, seed 0);
CHEAPEST, FASTEST (day, then cost at that day) and BALANCED must equal the
optimum of the plain MIP in mip_oracle.py. Prints a table and writes JSON.

    python benchmarks/verify_mip.py [--sizes 20x200,50x500] [--carts 25]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from sourcing import QuoteSettings, quote
from sourcing.errors import ShortageError
from sourcing.model import Label

from mip_oracle import mip_optimum
from networks import generated_network, random_cart

VALUE_OF_DAY = 100_000  # millicents: $1.00 a day


def check_size(lines: int, nodes: int, carts: int, seed: int) -> dict[str, Any]:
    network = generated_network(nodes, max(100, 3 * lines), seed=seed)
    started = time.perf_counter()
    mismatches: list[dict[str, Any]] = []
    checked = skipped = 0
    for i in range(carts):
        order = random_cart(network, np.random.default_rng((seed, i)), lines)
        try:
            q = quote(network, order, QuoteSettings(value_of_day=VALUE_OF_DAY))
        except ShortageError:
            skipped += 1
            continue
        cheapest, fastest, balanced = (
            q.option(label) for label in (Label.CHEAPEST, Label.FASTEST, Label.BALANCED)
        )
        assert cheapest is not None and fastest is not None and balanced is not None
        cost = mip_optimum(network, order, time_limit_s=300)
        day = mip_optimum(network, order, minimise_day=True, time_limit_s=300)
        assert cost is not None and day is not None
        at_day = mip_optimum(network, order, deadline=day[0], time_limit_s=300)
        value = mip_optimum(network, order, value_of_day=VALUE_OF_DAY, time_limit_s=300)
        assert at_day is not None and value is not None
        ours = {
            "cheapest": cheapest.cost,
            "fastest": (fastest.delivery_days, fastest.cost),
            "balanced": balanced.cost + VALUE_OF_DAY * balanced.delivery_days,
        }
        mip = {"cheapest": cost[0], "fastest": (day[0], at_day[0]), "balanced": value[0]}
        if ours != mip:
            mismatches.append({"cart": [seed, i], "optimiser": ours, "mip": mip})
        checked += 1
        print(f"  {lines}x{nodes} cart {i}: {'ok' if ours == mip else 'MISMATCH'}", flush=True)
    return {
        "size": f"{lines}x{nodes}",
        "carts_checked": checked,
        "skipped_shortage": skipped,
        "mismatches": mismatches,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20x200,50x500")
    parser.add_argument("--carts", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", default=str(Path(__file__).parent / "results" / "verify_mip.json")
    )
    args = parser.parse_args(argv)
    results = []
    for size in args.sizes.split(","):
        lines, nodes = (int(x) for x in size.split("x"))
        results.append(check_size(lines, nodes, args.carts, args.seed))
    print(f"\n{'size':<8} {'checked':>7} {'skipped':>7} {'mismatches':>10} {'seconds':>8}")
    for r in results:
        print(
            f"{r['size']:<8} {r['carts_checked']:>7} {r['skipped_shortage']:>7} "
            f"{len(r['mismatches']):>10} {r['seconds']:>8.0f}"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nJSON: {args.json}")
    return 1 if any(r["mismatches"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
