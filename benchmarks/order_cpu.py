"""CPU time per PlaceOrder, ReleaseOrder and ConfirmShipment, in process, beside a baseline.

Run from the project root (a command, not a test)::

    .venv/bin/python benchmarks/order_cpu.py [--orders 200] [--rounds 3]
        [--baseline-src DIR] [--database-url URL] [--json PATH]

The servicers are called directly (no gRPC, no network): a fresh SQLite store
(or ``--database-url``, e.g. PostgreSQL) with the demo network, stock x200;
``--orders`` seeded demo carts (1-5 lines) are quoted first, then each is
placed, released and shipped (ConfirmShipment by order id), and the process's
CPU time (``time.process_time``) of each call is summed. CPU per call is what
a loaded machine cannot hide: unlike throughput on this shared 2-core box, it
does not depend on what else runs. With ``--baseline-src DIR`` (a checkout of
the code before a change, e.g. ``git archive main | tar -x -C DIR``) each
round runs the baseline's code (``PYTHONPATH=DIR/src``) and then this tree's,
in fresh processes, alternating, and the table shows both and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

CALLS = ("place", "release", "ship")


def measure(orders: int, url: str | None, seed: int) -> dict[str, Any]:
    """CPU ms per call of this interpreter's ``oms`` (one fresh store)."""
    import numpy as np

    from oms.checkout import CheckoutServicer
    from oms.fulfilment import FulfilmentServicer
    from oms.settings import Settings
    from oms.store import Store
    from oms.v1 import checkout_pb2, common_pb2, fulfilment_pb2
    from sourcing.demo import demo_network, demo_order
    from sourcing.model import UNLIMITED_CAPACITY

    network = demo_network()
    capacity = np.where(
        network.capacity < UNLIMITED_CAPACITY,
        np.minimum(network.capacity * 200, UNLIMITED_CAPACITY),
        network.capacity,
    )
    network = network.replace(on_hand=network.on_hand * 200, capacity=capacity)
    url = url or f"sqlite:///{tempfile.mkdtemp(prefix='oms-cpu-')}/oms.db"
    store = Store(url, pool_size=4)
    store.migrate()
    store.load_network(network, reason="order_cpu benchmark")
    settings = Settings(database_url=url, admin_token="bench", solver_time_limit_s=0.2)
    checkout, fulfil = CheckoutServicer(store, settings), FulfilmentServicer(store, settings)
    context = mock.MagicMock()
    context.time_remaining.return_value = 10.0
    context.invocation_metadata.return_value = (("authorization", "Bearer bench"),)
    rng = np.random.default_rng(seed)
    quotes = []
    for _ in range(orders):
        order = demo_order(network, rng, int(rng.integers(1, 6)))
        request = checkout_pb2.QuoteDeliveryOptionsRequest(
            destination=common_pb2.Location(
                latitude=order.destination.lat, longitude=order.destination.lon
            ),
            lines=[common_pb2.CartLine(sku=x.sku, quantity=x.qty) for x in order.lines],
        )
        quotes.append(checkout.QuoteDeliveryOptions(request, context))
    cpu = dict.fromkeys(CALLS, 0.0)
    parcels = 0
    for quote in quotes:
        t0 = time.process_time()
        placed = checkout.PlaceOrder(
            checkout_pb2.PlaceOrderRequest(
                quote_id=quote.quote_id,
                option_id=quote.options[0].option_id,
                idempotency_key=uuid.uuid4().hex,
            ),
            context,
        ).order
        t1 = time.process_time()
        fulfil.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=placed.order_id), context)
        t2 = time.process_time()
        fulfil.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(order_id=placed.order_id), context
        )
        t3 = time.process_time()
        cpu["place"] += t1 - t0
        cpu["release"] += t2 - t1
        cpu["ship"] += t3 - t2
        parcels += len(placed.allocation.parcels)
    store.dispose()
    return {
        "ms_per_call": {k: 1000 * v / orders for k, v in cpu.items()},
        "parcels_per_order": parcels / orders,
    }


def run(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh process (the baseline's code on its PYTHONPATH)."""
    env = dict(os.environ)
    if variant == "baseline":
        env["PYTHONPATH"] = str(Path(args.baseline_src).resolve() / "src")
    command = [sys.executable, __file__, "--child", "--orders", str(args.orders)]
    command += ["--seed", str(args.seed)]
    if args.database_url:
        command += ["--database-url", args.database_url]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--database-url", help="default: a fresh SQLite file per run")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.orders, args.database_url, args.seed)))
        return 0
    variants = ["baseline", "current"] if args.baseline_src else ["current"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        for variant in variants:
            result = run(variant, args)
            runs[variant].append(result)
            shown = ", ".join(f"{k} {v:.2f}" for k, v in result["ms_per_call"].items())
            print(f"round {round_ + 1} {variant}: {shown} ms CPU per call", flush=True)
    mean = {
        v: {c: sum(r["ms_per_call"][c] for r in rs) / len(rs) for c in CALLS}
        for v, rs in runs.items()
    }
    head = ["call", *[f"{v} ms CPU" for v in variants]]
    if args.baseline_src:
        head.append("current / baseline")
    print(f"\n{args.orders} orders x {args.rounds} rounds, mean CPU ms per call:\n")
    print("| " + " | ".join(head) + " |\n|" + "|".join("---" for _ in head) + "|")
    for call in CALLS:
        row = [call, *[f"{mean[v][call]:.2f}" for v in variants]]
        if args.baseline_src:
            row.append(f"{mean['current'][call] / mean['baseline'][call]:.2f}x")
        print("| " + " | ".join(row) + " |")
    parcels = runs[variants[-1]][0]["parcels_per_order"]
    print(f"\n{parcels:.2f} parcels per order (demo carts)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs, "mean_ms": mean}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
