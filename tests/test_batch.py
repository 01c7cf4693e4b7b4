"""Batch re-optimisation (``sourcing.batch``): a hand-solved swap, random instances
checked by the independent evaluator, brute-force optima, and Dask = in-process.

Every check of a result goes through ``sourcing.evaluate`` (``BatchResult.check``
re-prices each allocation with it) or through scalar sums written here, never
through the model's own arrays.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from sourcing.batch import (
    BatchInstance,
    BatchOrder,
    BatchSettings,
    DaskRunner,
    reoptimise,
)
from sourcing.evaluate import evaluate
from sourcing.model import (
    UNLIMITED_CAPACITY,
    Allocation,
    Evaluation,
    Location,
    Network,
    Order,
    OrderLine,
    ParcelLine,
    ParcelPlan,
)

from service_support import hand_network
from support import all_allocations, free_units, random_order, tiny_network

NYC = Location(40.7128, -74.0060)
#: The exact model: no candidate pruning, every order free to move, a tight gap.
EXACT = BatchSettings(candidates_per_sku=None, whole_order_candidates=None, reach=None, mip_gap=0.0)


def parcel(node: str, *lines: tuple[int, str, int]) -> ParcelPlan:
    return ParcelPlan(node, "ground", tuple(ParcelLine(*line) for line in lines))


def swap_instance() -> BatchInstance:
    """Two orders to Manhattan on the hand network (service_support.hand_network).

    DC-NJ holds 1 A and 5 B; ST-PHL 5 A; DC-CHI 50 A and no B. Order o1 (1 x A)
    came first and took NJ's only A; o2 (1 x A + 1 x B) then had to split.
    Both were promised delivery by day 3.
    """
    network = hand_network({("DC-NJ", "A"): 1, ("DC-CHI", "B"): 0})
    o1 = Order(NYC, (OrderLine("A", 1),))
    o2 = Order(NYC, (OrderLine("A", 1), OrderLine("B", 1)))
    return BatchInstance(
        network,
        (
            BatchOrder("o1", o1, Allocation((parcel("DC-NJ", (0, "A", 1)),)), latest_day=3),
            BatchOrder(
                "o2",
                o2,
                Allocation((parcel("DC-NJ", (1, "B", 1)), parcel("ST-PHL", (0, "A", 1)))),
                latest_day=3,
            ),
        ),
    )


@pytest.mark.parametrize("backend", ["scip", "cp-sat"])
def test_two_orders_swap_sources_and_save_a_parcel(backend: str) -> None:
    instance = swap_instance()
    result = reoptimise(instance, replace(EXACT, backend=backend))
    # Ground from NJ (zone 1): $5.00 + $1.00/kg + $2.00 handling, arrives day 1 + 1 = 2.
    # Ground from PHL (zone 2): $7.00 + $1.00/kg + $3.00 handling, day 1 + 2 = 3.
    # Ground from CHI (zone 3): $9.00 + $1.00/kg + $1.50 handling, day 0 + 3 = 3.
    # Before: o1 NJ 1 kg = $8.00; o2 NJ B 2 kg = $9.00 + PHL A 1 kg = $11.00.
    # Total $28.00 in 3 parcels.
    assert (result.cost_before, result.parcels_before) == (2_800_000, 3)
    # After: o1 takes A from PHL ($11.00, day 3 <= 3) and o2 gets NJ's A with its B
    # in one 3 kg parcel ($5.00 + $3.00 + $2.00 = $10.00, day 2): $21.00 in 2 parcels.
    # Nothing is cheaper: o1 keeping NJ's A leaves o2 at $20.00 ($28.00), and o1 from
    # CHI ($11.50) with o2 from NJ makes $21.50.
    assert (result.cost_after, result.parcels_after) == (2_100_000, 2)
    o1, o2 = result.outcomes
    assert o1.allocation == Allocation((parcel("ST-PHL", (0, "A", 1)),))
    assert o2.allocation == Allocation((parcel("DC-NJ", (0, "A", 1), (1, "B", 1)),))
    assert (o1.after.cost, o1.after.delivery_days) == (1_100_000, 3)
    assert (o2.after.cost, o2.after.delivery_days) == (1_000_000, 2)
    assert (o1.saving, o2.saving) == (-300_000, 1_000_000)
    assert [o.changed for o in result.outcomes] == [True, True]
    assert result.promises_kept == 2
    assert result.status == "OPTIMAL"
    assert result.check(instance) == []


@pytest.mark.parametrize("backend", ["scip", "cp-sat"])
def test_a_transfer_lane_changes_no_delivery(backend: str) -> None:
    """The swap again on a rate card whose first service is the transfer lane (cheaper
    than ground, so using it would pay): deliveries never use it, and services are
    named by the network's index, not the cost arrays' column."""
    instance = swap_instance()
    net = instance.network
    lane = net.replace(
        service_ids=("transfer", *net.service_ids),
        base_price=np.vstack([[[100_000, 100_000, 100_000]], net.base_price]),
        per_kg=np.vstack([[[10_000, 10_000, 10_000]], net.per_kg]),
        transit_days=np.vstack([[[1, 1, 1]], net.transit_days]),
        offered=np.ones((2, 3), dtype=np.bool_),
    )
    plain = reoptimise(instance, replace(EXACT, backend=backend))
    with_lane = BatchInstance(lane, instance.orders)
    result = reoptimise(with_lane, replace(EXACT, backend=backend))
    assert [o.allocation for o in result.outcomes] == [o.allocation for o in plain.outcomes]
    assert (result.cost_before, result.cost_after) == (2_800_000, 2_100_000)
    assert all(p.service == "ground" for o in result.outcomes for p in o.allocation.parcels)
    assert result.check(with_lane) == []


def test_a_promise_that_forbids_the_swap_keeps_the_allocation() -> None:
    instance = swap_instance()
    # o1 promised by day 2: only NJ (day 2) can serve it; nothing may change.
    strict = replace(
        instance, orders=(replace(instance.orders[0], latest_day=2), instance.orders[1])
    )
    result = reoptimise(strict, EXACT)
    assert result.cost_after == result.cost_before == 2_800_000
    assert not result.changed
    assert result.check(strict) == []


def test_an_infeasible_warm_start_is_refused() -> None:
    instance = swap_instance()
    taken_twice = replace(instance.orders[1], current=instance.orders[0].current)
    with pytest.raises(ValueError, match="warm start is infeasible"):
        BatchInstance(instance.network, (instance.orders[0], replace(taken_twice, order_id="o3")))
    late = replace(instance.orders[1], latest_day=2)
    with pytest.raises(ValueError, match="after its promise"):
        reoptimise(BatchInstance(instance.network, (instance.orders[0], late)))


# ------------------------------------------------------------------ random instances


def greedy_book(
    rng: np.random.Generator, network: Network, n_orders: int
) -> tuple[Network, list[BatchOrder]]:
    """Orders allocated one at a time, each by a random feasible plan on the running stock.

    Returns the pool (the network as it was before any order: the orders'
    units released) and the orders, each promised its plan's day plus 0-2 days.
    """
    free = free_units(network)
    available = free.copy()
    capacity = network.capacity.copy()
    orders: list[BatchOrder] = []
    for i in range(n_orders * 4):
        if len(orders) == n_orders:
            break
        order = random_order(rng, network, max_lines=2, max_qty=2)
        view = network.replace(
            reserved=network.reserved + (free - available), capacity=capacity.copy()
        )
        plans = [e for e in all_allocations(view, order) if e.num_parcels <= 3]
        if not plans:
            continue
        pick = plans[int(rng.integers(len(plans)))]
        for p in pick.parcels:
            n = network.node_index[p.node_id]
            for line in p.lines:
                available[n, network.sku_index[line.sku]] -= line.qty
                if capacity[n] < UNLIMITED_CAPACITY:
                    capacity[n] -= line.qty
        allocation = Allocation(
            tuple(ParcelPlan(p.node_id, p.service, p.lines) for p in pick.parcels)
        )
        slack = int(rng.integers(0, 3))
        orders.append(BatchOrder(f"o{i}", order, allocation, pick.delivery_days + slack))
    return network, orders


def joint_use(
    network: Network, orders: list[BatchOrder], evaluations: list[Evaluation]
) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    taken: dict[tuple[str, str], int] = {}
    shipped: dict[str, int] = {}
    for _, evaluation in zip(orders, evaluations, strict=True):
        for p in evaluation.parcels:
            for line in p.lines:
                taken[(p.node_id, line.sku)] = taken.get((p.node_id, line.sku), 0) + line.qty
                shipped[p.node_id] = shipped.get(p.node_id, 0) + line.qty
    return taken, shipped


def fits(network: Network, taken: dict[tuple[str, str], int], shipped: dict[str, int]) -> bool:
    available = free_units(network)
    for (node, sku), qty in taken.items():
        if qty > available[network.node_index[node], network.sku_index[sku]]:
            return False
    return all(qty <= network.capacity[network.node_index[node]] for node, qty in shipped.items())


def brute_force_optimum(network: Network, orders: list[BatchOrder]) -> int:
    """Least total cost over every joint choice of per-order allocations (evaluator-priced)."""
    choices: list[list[Evaluation]] = []
    for o in orders:
        covered: dict[str, int] = {}
        for p in o.current.parcels:
            for line in p.lines:
                covered[line.sku] = covered.get(line.sku, 0) + line.qty
        options = [
            e
            for e in all_allocations(network, o.order, covered)
            if e.delivery_days <= o.latest_day and not e.shortfall
        ]
        choices.append(options)
    best = None
    for combo in itertools.product(*choices):
        total = sum(e.cost for e in combo)
        if best is not None and total >= best:
            continue
        if fits(network, *joint_use(network, orders, list(combo))):
            best = total
    assert best is not None
    return best


def random_instances(
    count: int, n_orders: int, **network_args: int
) -> Iterator[tuple[int, BatchInstance]]:
    for seed in range(count):
        rng = np.random.default_rng(seed)
        network = tiny_network(rng, **network_args)  # type: ignore[arg-type]
        pool, orders = greedy_book(rng, network, n_orders)
        if len(orders) >= 2:
            yield seed, BatchInstance(pool, tuple(orders))


@pytest.mark.parametrize("backend", ["scip", "cp-sat"])
def test_random_books_never_get_worse_and_keep_every_promise(backend: str) -> None:
    improved = 0
    for seed, instance in random_instances(
        30, 6, n_nodes=4, n_skus=3, max_stock=5, capacity_prob=0.4
    ):
        result = reoptimise(instance, replace(BatchSettings(), backend=backend))
        problems = result.check(instance)
        assert problems == [], (seed, problems)
        assert result.cost_after <= result.cost_before, seed
        assert result.promises_kept == len(instance.orders), seed
        # Independently of check(): re-price every new allocation and add up the stock.
        evaluations = [
            evaluate(instance.network, o.order, out.allocation, allow_partial=True)
            for o, out in zip(instance.orders, result.outcomes, strict=True)
        ]
        assert all(e.is_feasible for e in evaluations), seed
        assert sum(e.cost for e in evaluations) == result.cost_after, seed
        assert fits(
            instance.network, *joint_use(instance.network, list(instance.orders), evaluations)
        )
        improved += result.cost_after < result.cost_before
    assert improved >= 5, "random plans leave room: the batch should find some of it"


def test_tiny_books_reach_the_brute_force_optimum() -> None:
    checked = 0
    for seed, instance in random_instances(40, 3, n_nodes=3, n_skus=2, max_stock=3):
        optimum = brute_force_optimum(instance.network, list(instance.orders))
        result = reoptimise(instance, EXACT)
        assert result.check(instance) == [], seed
        assert result.cost_after == optimum, seed
        assert result.status == "OPTIMAL", seed
        checked += 1
    assert checked >= 20


def test_the_default_settings_stay_within_the_exact_optimum_on_tiny_books() -> None:
    for seed, instance in random_instances(20, 3, n_nodes=3, n_skus=2, max_stock=3):
        exact = reoptimise(instance, EXACT)
        pruned = reoptimise(instance)
        assert exact.cost_after <= pruned.cost_after <= pruned.cost_before, seed
        assert pruned.check(instance) == [], seed


def test_chunked_components_stay_feasible_and_never_worse() -> None:
    """Tiny chunks force the shares of contended stock between chunks, and several rounds."""
    settings = BatchSettings(max_orders_per_problem=3, rounds=3)
    chunked = 0
    for seed, instance in random_instances(
        15, 14, n_nodes=4, n_skus=2, max_stock=6, capacity_prob=0.5
    ):
        result = reoptimise(instance, settings)
        assert result.check(instance) == [], seed
        chunked += any(p.chunked for p in result.problems)
    assert chunked >= 3


# --------------------------------------------------------------------------- Dask


def test_a_dask_local_cluster_gives_the_in_process_answer() -> None:
    from distributed import Client, LocalCluster

    settings = BatchSettings(max_orders_per_problem=4, rounds=2)
    instances = [
        instance
        for _, instance in random_instances(
            12, 14, n_nodes=4, n_skus=2, max_stock=6, capacity_prob=0.5
        )
    ]
    local = [reoptimise(instance, settings) for instance in instances]
    assert sum(len(r.problems) for r in local) >= 10, "several sub-problems per run"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        runner = DaskRunner(client)
        on_dask = [reoptimise(instance, settings, runner) for instance in instances]
    for instance, a, b in zip(instances, local, on_dask, strict=True):
        assert [o.allocation for o in a.outcomes] == [o.allocation for o in b.outcomes]
        assert (a.cost_after, a.parcels_after) == (b.cost_after, b.parcels_after)
        assert b.check(instance) == []
