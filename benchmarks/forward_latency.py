"""Quote latency with forward-looking opportunity costs on and off, side by side.

```sh
.venv/bin/python benchmarks/forward_latency.py                   # 1,000 demo carts x 3 rounds
.venv/bin/python benchmarks/forward_latency.py --carts 200 --rounds 1 --json /tmp/f.json
```

The demo network (stock as built, or with ``--scarce`` the scarce scenario's:
one week of demand per SKU at the DCs) and prices from the fluid LP
(:mod:`sourcing.forward.fluid`) over a week, on a history of 2,000 generated
orders. Each demo cart (1-5 lines, ``demo_order``) is quoted with prices and
without, in alternating order per cart (so both see the same machine), on
the thread's CPU clock and the wall clock; the table gives per-quote p50,
p99 and mean, and the ratio on / off. Both menus are checked: every option's
reference cost is re-priced by the evaluator. Target: on within 10% of off.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from sourcing.demo import demo_network, demo_order
from sourcing.evaluate import evaluate
from sourcing.forward.fluid import OrderHistory, forecast_demand, solve_fluid
from sourcing.menu import quote
from sourcing.model import Network, NodeKind, OpportunityCosts, QuoteSettings
from sourcing.whatif.edits import NodeSelector, SetCover
from sourcing.whatif.inputs import GeneratedOrders, generate_orders


def _network(scarce: bool) -> Network:
    network = demo_network()
    if scarce:  # the scarce scenario's network: one week of demand per SKU, at the DCs
        network = SetCover(7.0, NodeSelector(kind=NodeKind.DC)).apply(network)
    return network


def _prices(network: Network, history_orders: int) -> tuple[OpportunityCosts, dict[str, Any]]:
    stream = generate_orders(
        network, GeneratedOrders(count=history_orders, seed=11, start=datetime(2024, 3, 4))
    )
    history = OrderHistory(len(network.sku_ids))
    t0 = stream[0].created_at
    for item in stream:
        units: dict[int, int] = {}
        for line in item.order.lines:
            k = network.sku_index[line.sku]
            units[k] = units.get(k, 0) + line.qty
        days = (item.created_at - t0).total_seconds() / 86_400
        history.add(item.order.destination.lat, item.order.destination.lon, days, units)
    forecast = forecast_demand(network, history, history.last_at or 0.0, 7.0)
    assert forecast is not None
    solution = solve_fluid(network, network.available, forecast)
    prices = OpportunityCosts(network.node_ids, network.sku_ids, solution.opportunity)
    info = {
        "priced_positions": int(np.count_nonzero(solution.opportunity)),
        "mean_price": float(solution.opportunity[solution.opportunity > 0].mean() / 1e5)
        if np.any(solution.opportunity > 0)
        else 0.0,
        "lp_seconds": solution.seconds,
    }
    return prices, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="benchmarks/results/forward_latency.json")
    parser.add_argument(
        "--scarce", action="store_true", help="on the scarce scenario's network (DC stock, 1 week)"
    )
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    network = _network(args.scarce)
    prices, info = _prices(network, 2000)
    rng = np.random.default_rng(args.seed)
    carts = [demo_order(network, rng, int(rng.integers(1, 6))) for _ in range(args.carts)]
    plain = QuoteSettings(num_workers=1)
    priced = QuoteSettings(num_workers=1, opportunity=prices)
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    wall: dict[str, list[float]] = {"off": [], "on": []}
    changed = 0
    for r in range(args.rounds):
        for i, cart in enumerate(carts):
            order = ("off", "on") if (i + r) % 2 == 0 else ("on", "off")
            menus = {}
            for mode in order:
                settings = priced if mode == "on" else plain
                c0, w0 = time.thread_time(), time.perf_counter()
                menus[mode] = quote(network, cart, settings)
                cpu[mode].append(time.thread_time() - c0)
                wall[mode].append(time.perf_counter() - w0)
            if r == 0:
                for option in menus["on"].options:
                    assert evaluate(network, cart, option.allocation).cost == option.cost
                a = [o.allocation for o in menus["off"].options]
                b = [o.allocation for o in menus["on"].options]
                changed += a != b
    rows = []
    for name, data in (("cpu", cpu), ("wall", wall)):
        off, on = np.array(data["off"]) * 1e3, np.array(data["on"]) * 1e3
        rows.append(
            {
                "clock": name,
                "off_p50_ms": float(np.median(off)),
                "on_p50_ms": float(np.median(on)),
                "off_p99_ms": float(np.percentile(off, 99)),
                "on_p99_ms": float(np.percentile(on, 99)),
                "off_mean_ms": float(off.mean()),
                "on_mean_ms": float(on.mean()),
                "ratio_mean": float(on.mean() / off.mean()),
                "ratio_p50": float(np.median(on) / np.median(off)),
            }
        )
    where = "scarce" if args.scarce else "as built"
    print(
        f"{args.carts} demo carts x {args.rounds} rounds, stock {where}, load "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(f"prices: {info}; menus changed by the prices: {changed} of {args.carts}")
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print(
            "| "
            + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values())
            + " |"
        )
    target = rows[0]["ratio_mean"] <= 1.10
    print(f"target: on within 10% of off (CPU, mean): {'PASS' if target else 'MISS'}")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"rows": rows, "prices": info, "changed": changed, "load": os.getloadavg()}, indent=2
        )
    )


if __name__ == "__main__":
    main()
