"""Dump the optimiser's answers on seeded demo quotes, to show a change leaves them alone.

A command for refactors and speed work (not a test): run it before the change,
keep the file, run it after, and compare::

    .venv/bin/python benchmarks/quote_dump.py --out /tmp/before.jsonl
    # ... change the code ...
    .venv/bin/python benchmarks/quote_dump.py --out /tmp/after.jsonl --compare /tmp/before.jsonl

Each line is one quote: its case name, the cart, and the whole answer (every
frontier option with its labels, parcels, lines, cost breakdown, arrival and
proof; the shortfall; the solver's counters; or the error it raised), so the
comparison is exact. Only the wall-clock ``seconds`` is left out. Cases, all on
the demo network (``sourcing.demo``) with carts of 1, 3, 5 and 10 lines from
``demo_order`` on the network as built (seeded; the same carts in every case):

* ``plenty``: stock x200 (the load benchmark's network), the checkout menu;
* ``demo``: the network as built, the menu, and the full frontier;
* ``scarce``: on hand // 20, partial fulfilment allowed;
* ``caps``: at most 2 parcels, delivery by day 3;
* ``capacity``: node capacity cut to 8 units a day (CP-SAT decides; 1-5 lines only,
  since 10-line carts take seconds each);
* ``collect``: the 2 nearest stores' COLLECT options, plus one named store;
* ``backorder``: on hand // 20 with seeded inbound receipts, backorder allowed
  (with and without partial fulfilment).

The time limit is generous (``--time-limit``, 30 s) so every proof completes
and the answers do not depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sourcing import QuoteSettings, SourcingError, quote
from sourcing.demo import demo_network, demo_order
from sourcing.model import UNLIMITED_CAPACITY, Network, Order, Receipt

LINES = (1, 3, 5, 10)


def _receipts(network: Network, seed: int) -> tuple[Receipt, ...]:
    """Seeded inbound receipts: 600 at random DCs and stores, 1-20 units due in 1-10 days."""
    rng = np.random.default_rng(seed)
    nodes = rng.integers(0, len(network.node_ids), size=600)
    skus = rng.integers(0, len(network.sku_ids), size=600)
    return tuple(
        Receipt(
            f"R-{i}",
            network.node_ids[int(n)],
            network.sku_ids[int(k)],
            int(rng.integers(1, 21)),
            int(rng.integers(1, 11)),
        )
        for i, (n, k) in enumerate(zip(nodes, skus, strict=True))
    )


def cases(time_limit_s: float) -> Iterator[tuple[str, Network, QuoteSettings, tuple[int, ...]]]:
    base = demo_network()
    menu = QuoteSettings(num_workers=1, time_limit_s=time_limit_s)
    plenty = base.replace(on_hand=base.on_hand * 200)
    scarce = base.replace(
        on_hand=base.on_hand // 20, safety_stock=np.minimum(base.safety_stock, base.on_hand // 20)
    )
    capacity = base.replace(
        capacity=np.where(base.capacity < UNLIMITED_CAPACITY, 8, base.capacity).astype(np.int64)
    )
    inbound = scarce.replace(receipts=_receipts(base, 5))
    store = next(n for n, k in zip(base.node_ids, base.node_kinds, strict=True) if k == "store")
    yield "plenty", plenty, menu, LINES
    yield "demo", base, menu, LINES
    yield "demo-frontier", base, dataclasses.replace(menu, full_frontier=True), LINES
    yield "scarce-partial", scarce, dataclasses.replace(menu, allow_partial=True), LINES
    yield "caps", base, dataclasses.replace(menu, max_parcels=2, latest_day=3), LINES
    yield "capacity", capacity, menu, (1, 3, 5)
    yield (
        "collect",
        base,
        dataclasses.replace(menu, nearest_stores=2, pickup_stores=(store,)),
        LINES,
    )
    yield "backorder", inbound, dataclasses.replace(menu, allow_backorder=True), LINES
    yield (
        "backorder-partial-collect",
        inbound,
        dataclasses.replace(menu, allow_backorder=True, allow_partial=True, nearest_stores=1),
        LINES,
    )


def _plain(value: Any) -> Any:
    """Dataclasses to dicts, enums to their values, NaN kept as a string (JSON has none)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "seconds"
        }
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"
    if hasattr(value, "value") and isinstance(value.value, str):
        return value.value
    return value


def answer(network: Network, order: Order, settings: QuoteSettings) -> dict[str, Any]:
    try:
        q = quote(network, order, settings)
    except SourcingError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {
        "options": _plain(q.options),
        "frontier": _plain(q.frontier),
        "shortfall": _plain(q.shortfall),
        "stats": _plain(q.stats),
    }


def dump(carts: int, time_limit_s: float, seed: int) -> Iterator[dict[str, Any]]:
    base = demo_network()
    for name, network, settings, sizes in cases(time_limit_s):
        for lines in sizes:
            rng = np.random.default_rng((seed, lines))
            for i in range(carts):
                # Carts are drawn on the network as built, so scarce cases do run short.
                order = demo_order(base, rng, lines)
                yield {
                    "case": name,
                    "lines": lines,
                    "cart": i,
                    "order": _plain(order),
                    "answer": answer(network, order, settings),
                }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON lines to write")
    parser.add_argument("--compare", type=Path, help="an earlier dump: exit 1 on any difference")
    parser.add_argument("--carts", type=int, default=40, help="carts per case and size (40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=30.0)
    args = parser.parse_args(argv)
    count = 0
    with args.out.open("w", encoding="utf-8") as out:
        for record in dump(args.carts, args.time_limit, args.seed):
            out.write(json.dumps(record, sort_keys=True) + "\n")
            count += 1
    print(f"wrote {count} quotes to {args.out}", file=sys.stderr)
    if args.compare is None:
        return 0
    before = args.compare.read_text(encoding="utf-8").splitlines()
    after = args.out.read_text(encoding="utf-8").splitlines()
    differ = [i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b]
    if len(before) != len(after) or differ:
        for i in differ[:5]:
            record = json.loads(after[i])
            print(f"differs: {record['case']} lines={record['lines']} cart={record['cart']}")
        print(
            f"DIFFERENT: {len(differ)} of {min(len(before), len(after))} quotes differ "
            f"({len(before)} before, {len(after)} after)"
        )
        return 1
    print(f"identical: {count} quotes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
