"""Batch re-optimisation on generated open-order books (a command, not a test).

Run from the project root::

    .venv/bin/python benchmarks/batch.py [--sizes 1000,10000,100000] [--workers 1,2]
        [--label cheapest|balanced] [--seed 1] [--time-limit S] [--check] [--json PATH]

A book of N orders is the demo network (``sourcing.demo.demo_network()``)
with on-hand stock and daily node capacity scaled by ``N / 10,000`` (rounded;
a position or node that had any keeps at least one unit), so that every size
draws on its network about as hard as 10,000 orders draw on the unscaled one
(about 14% of its units), and N orders from the what-if generator
(``sourcing.whatif.inputs.generate_orders``, seed ``--seed``: population-like
destinations, SKUs by demand, 1-5 lines). They are allocated **one at a
time**, in arrival order, each by the optimiser (``quote``, one CP-SAT
worker) on the stock and capacity the earlier orders left, taking its
CHEAPEST (or BALANCED) option; its promise is that option's delivery day.
Orders the remaining stock cannot cover are not placed (column ``unplaced``).
All orders draw on one day's capacity.

Generating that book exactly but fast: orders are quoted in blocks of
``--block`` in parallel on the Dask workers against the stock at the start of
the block; then, in arrival order, a quote is kept only if what it depends on
is unchanged when the order's turn comes (its SKUs' availability per node
clipped to its demand, and those nodes' capacity clipped to its units: the
quote is a function of exactly these), and is otherwise quoted again on the
running stock. The book is therefore the sequential one-at-a-time book.

Then ``sourcing.batch.reoptimise`` re-assigns the book jointly on a Dask
``LocalCluster`` of 1 and of 2 worker processes (one thread each; the
cluster's start-up is not timed). Reported per size and worker count: run
time, cost and parcels before (one at a time) and after, the saving, orders
changed, share of promises kept, how the components were solved, and whether
the 1- and 2-worker answers are identical. ``--check`` re-checks every
answer with the independent evaluator (``BatchResult.check``). Timings are
wall clock on a shared 2-core machine: run it with ``nice`` and read them as
such.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sourcing import QuoteSettings, quote
from sourcing.batch import (
    BatchInstance,
    BatchOrder,
    BatchResult,
    BatchSettings,
    DaskRunner,
    reoptimise,
)
from sourcing.demo import demo_network
from sourcing.errors import ShortageError
from sourcing.model import (
    MILLICENTS_PER_UNIT,
    UNLIMITED_CAPACITY,
    Allocation,
    IntArray,
    Label,
    Network,
    Order,
)
from sourcing.whatif.inputs import GeneratedOrders, generate_orders

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "batch.json"
QUOTE_SETTINGS = QuoteSettings(num_workers=1, time_limit_s=1.0)


# ---------------------------------------------------------------------------- book


def scaled_network(size: int) -> tuple[Network, float]:
    """The demo network with stock and capacity x size / 10,000 (a position or node that
    had any keeps at least 1)."""
    base = demo_network()
    scale = size / 10_000

    def scaled(values: IntArray) -> IntArray:
        return np.where(values > 0, np.maximum(1, np.rint(values * scale)), 0).astype(np.int64)

    capacity = np.where(base.capacity < UNLIMITED_CAPACITY, scaled(base.capacity), base.capacity)
    safety = np.minimum(base.safety_stock, scaled(base.on_hand))
    network = base.replace(on_hand=scaled(base.on_hand), safety_stock=safety, capacity=capacity)
    return network, scale


@dataclass(frozen=True)
class _Cart:
    """One order in solver terms: distinct SKU indices and units per SKU."""

    order: Order
    skus: IntArray
    demand: IntArray


def _cart(network: Network, order: Order) -> _Cart:
    wanted: dict[int, int] = {}
    for line in order.lines:
        k = network.sku_index[line.sku]
        wanted[k] = wanted.get(k, 0) + line.qty
    skus = np.array(sorted(wanted), dtype=np.int64)
    return _Cart(order, skus, np.array([wanted[k] for k in skus.tolist()], dtype=np.int64))


def _inputs(cart: _Cart, available: IntArray, capacity: IntArray) -> tuple[bytes, bytes]:
    """Everything a quote of ``cart`` depends on that orders change: availability of its
    SKUs clipped to its demand, and those nodes' capacity clipped to its units."""
    clipped = np.minimum(available[:, cart.skus], cart.demand[None, :])
    nodes = np.flatnonzero(clipped.sum(axis=1) > 0)
    return clipped.tobytes(), np.minimum(capacity[nodes], int(cart.demand.sum())).tobytes()


def _view(network: Network, cart: _Cart, available: IntArray, capacity: IntArray) -> Network:
    """The network as the order sees it: its SKUs, the nodes with any of them free."""
    nodes = np.flatnonzero(available[:, cart.skus].sum(axis=1) > 0)
    skus = cart.skus
    on_hand = network.on_hand[np.ix_(nodes, skus)]
    safety = network.safety_stock[np.ix_(nodes, skus)]
    return Network(
        node_ids=tuple(network.node_ids[i] for i in nodes.tolist()),
        node_kinds=tuple(network.node_kinds[i] for i in nodes.tolist()),
        lat=network.lat[nodes],
        lon=network.lon[nodes],
        handling_days=network.handling_days[nodes],
        handling_cost=network.handling_cost[nodes],
        storage_cost=network.storage_cost[nodes],
        capacity=capacity[nodes],
        sku_ids=tuple(network.sku_ids[k] for k in skus.tolist()),
        weight_g=network.weight_g[skus],
        daily_demand=network.daily_demand[skus],
        on_hand=on_hand,
        safety_stock=safety,
        reserved=on_hand - safety - available[np.ix_(nodes, skus)],
        zone_ids=network.zone_ids,
        zone_max_km=network.zone_max_km,
        service_ids=network.service_ids,
        base_price=network.base_price,
        per_kg=network.per_kg,
        transit_days=network.transit_days,
        offered=network.offered,
        horizon_days=network.horizon_days,
    )


Decision = tuple[Allocation, int] | None


def _decide(
    network: Network, cart: _Cart, available: IntArray, capacity: IntArray, label: Label
) -> Decision:
    """The optimiser's ``label`` option for ``cart`` on this stock (None: not coverable)."""
    try:
        result = quote(_view(network, cart, available, capacity), cart.order, QUOTE_SETTINGS)
    except ShortageError:
        return None
    option = result.option(label)
    if option is None:
        return None
    return option.allocation, option.delivery_days


def _quote_block(
    args: tuple[Network, list[_Cart], IntArray, IntArray, Label],
) -> list[tuple[Decision, tuple[bytes, bytes]]]:
    """A Dask task: every cart of a block quoted on the block's starting stock."""
    network, carts, available, capacity, label = args
    return [
        (_decide(network, c, available, capacity, label), _inputs(c, available, capacity))
        for c in carts
    ]


def one_at_a_time_book(
    network: Network,
    count: int,
    seed: int,
    label: Label,
    client: Any,
    block: int,
) -> tuple[list[BatchOrder], dict[str, Any]]:
    """The sequential one-at-a-time book (see the module doc), quoted speculatively in parallel."""
    started = time.perf_counter()
    stream = generate_orders(network, GeneratedOrders(count=count, seed=seed))
    carts = [_cart(network, s.order) for s in stream]
    available = network.available.copy()
    capacity = network.capacity.copy()
    limited = capacity < UNLIMITED_CAPACITY
    book: list[BatchOrder] = []
    reused = requoted = unplaced = 0
    for first in range(0, len(carts), block):
        part = carts[first : first + block]
        size = max(1, -(-len(part) // (2 * max(1, len(client.scheduler_info()["workers"])))))
        pieces = [
            (network, part[i : i + size], available.copy(), capacity.copy(), label)
            for i in range(0, len(part), size)
        ]
        futures = client.map(_quote_block, client.scatter(pieces, hash=False), pure=False)
        speculated = [item for piece in client.gather(futures) for item in piece]
        for offset, (cart, (decision, inputs)) in enumerate(zip(part, speculated, strict=True)):
            if _inputs(cart, available, capacity) == inputs:
                reused += 1
            else:
                decision = _decide(network, cart, available, capacity, label)
                requoted += 1
            if decision is None:
                unplaced += 1
                continue
            allocation, days = decision
            for parcel in allocation.parcels:
                n = network.node_index[parcel.node_id]
                for line in parcel.lines:
                    available[n, network.sku_index[line.sku]] -= line.qty
                    if limited[n]:
                        capacity[n] -= line.qty
            order_id = stream[first + offset].order_id
            book.append(BatchOrder(order_id, cart.order, allocation, latest_day=days))
    stats = {
        "generate_s": time.perf_counter() - started,
        "placed": len(book),
        "unplaced": unplaced,
        "quotes_reused": reused,
        "quotes_redone": requoted,
    }
    return book, stats


# --------------------------------------------------------------------------- runs


@dataclass
class Row:
    size: int
    workers: int
    placed: int
    unplaced: int
    generate_s: float
    run_s: float
    cost_before: float
    cost_after: float
    saved: float
    saved_pct: float
    parcels_before: int
    parcels_after: int
    changed: int
    promises_kept_pct: float
    components: int
    largest_component: int
    problems_solved: int
    problems_skipped: int
    problems_proven: int
    status: str
    same_as_1_worker: bool | None
    check_violations: int | None


def _warm_up() -> None:
    """Load the solvers in a worker before anything is timed."""
    from ortools.linear_solver import pywraplp

    import sourcing.batch  # noqa: F401

    pywraplp.Solver.CreateSolver("SCIP")


def _cluster(workers: int) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    client.run(_warm_up)
    return cluster, client


def _row(
    size: int, workers: int, stats: dict[str, Any], result: BatchResult, seconds: float
) -> Row:
    before, after = result.cost_before, result.cost_after
    return Row(
        size=size,
        workers=workers,
        placed=stats["placed"],
        unplaced=stats["unplaced"],
        generate_s=stats["generate_s"],
        run_s=seconds,
        cost_before=before / MILLICENTS_PER_UNIT,
        cost_after=after / MILLICENTS_PER_UNIT,
        saved=(before - after) / MILLICENTS_PER_UNIT,
        saved_pct=100.0 * (before - after) / before if before else 0.0,
        parcels_before=result.parcels_before,
        parcels_after=result.parcels_after,
        changed=len(result.changed),
        promises_kept_pct=100.0 * result.promises_kept / max(1, len(result.outcomes)),
        components=result.components,
        largest_component=result.largest_component,
        problems_solved=len(result.problems),
        problems_skipped=result.skipped,
        problems_proven=sum(p.status == "OPTIMAL" for p in result.problems),
        status=result.status,
        same_as_1_worker=None,
        check_violations=None,
    )


def _print(rows: list[Row]) -> None:
    head = (
        f"{'orders':>7} {'workers':>7} {'run s':>7} {'gen s':>6} {'before $':>12} "
        f"{'after $':>12} {'saved $':>9} {'saved %':>7} {'parcels':>15} {'changed':>7} "
        f"{'kept %':>6} {'comp':>5} {'largest':>7} {'solved':>6} {'skip':>5} {'same':>5}"
    )
    print(head)
    for r in rows:
        same = "-" if r.same_as_1_worker is None else ("yes" if r.same_as_1_worker else "NO")
        print(
            f"{r.size:>7} {r.workers:>7} {r.run_s:>7.1f} {r.generate_s:>6.1f} "
            f"{r.cost_before:>12.2f} {r.cost_after:>12.2f} {r.saved:>9.2f} {r.saved_pct:>7.3f} "
            f"{f'{r.parcels_before} -> {r.parcels_after}':>15} {r.changed:>7} "
            f"{r.promises_kept_pct:>6.1f} {r.components:>5} {r.largest_component:>7} "
            f"{r.problems_solved:>6} {r.problems_skipped:>5} {same:>5}"
        )


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> int:
    # Closing a LocalCluster logs a heartbeat's closed stream: noise, not a fault.
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_ints, default=[1000, 10_000, 100_000])
    parser.add_argument("--workers", type=_ints, default=[1, 2], help="Dask workers: 1,2")
    parser.add_argument("--label", choices=("cheapest", "balanced"), default="cheapest")
    parser.add_argument("--seed", type=int, default=1, help="order generator seed (1)")
    parser.add_argument("--time-limit", type=float, help="solver s per sub-problem (default 60)")
    parser.add_argument("--rounds", type=int, help="chunking rounds (default 3)")
    parser.add_argument("--block", type=int, default=2000, help="orders quoted per block (2000)")
    parser.add_argument("--check", action="store_true", help="re-check with the evaluator")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    settings = BatchSettings()
    if args.time_limit is not None:
        settings = replace(settings, time_limit_s=args.time_limit)
    if args.rounds is not None:
        settings = replace(settings, rounds=args.rounds)
    label = Label.CHEAPEST if args.label == "cheapest" else Label.BALANCED
    rows: list[Row] = []
    workers = sorted(set(args.workers))
    for size in args.sizes:
        network, scale = scaled_network(size)
        cluster, client = _cluster(max(workers))
        try:
            book, stats = one_at_a_time_book(network, size, args.seed, label, client, args.block)
        finally:
            client.close()
            cluster.close()
        instance = BatchInstance(network, tuple(book))
        print(
            f"{size} orders (stock x{scale:g}): {stats['placed']} placed, "
            f"{stats['unplaced']} not coverable, book in {stats['generate_s']:.1f} s "
            f"({stats['quotes_reused']} parallel quotes kept, {stats['quotes_redone']} redone)",
            flush=True,
        )
        answers: dict[int, list[Allocation]] = {}
        for w in workers:
            cluster, client = _cluster(w)
            try:
                started = time.perf_counter()
                result = reoptimise(instance, settings, DaskRunner(client))
                seconds = time.perf_counter() - started
            finally:
                client.close()
                cluster.close()
            row = _row(size, w, stats, result, seconds)
            answers[w] = [o.allocation for o in result.outcomes]
            if w != workers[0]:
                row.same_as_1_worker = answers[w] == answers[workers[0]]
            if args.check:
                row.check_violations = len(result.check(instance))
            rows.append(row)
            print(
                f"  {w} worker(s): {seconds:.1f} s, saved {row.saved:.2f} "
                f"({row.saved_pct:.3f}%), parcels {row.parcels_before} -> {row.parcels_after}, "
                f"promises kept {row.promises_kept_pct:.1f}%"
                + ("" if row.check_violations is None else f", check: {row.check_violations}"),
                flush=True,
            )
    print()
    _print(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "settings": asdict(settings),
        "label": args.label,
        "seed": args.seed,
        "rows": [asdict(r) for r in rows],
    }  # fmt: skip
    args.json.write_text(json.dumps(payload, indent=1))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
