"""The perfect-hindsight bound: hand-checked, and never above any policy or the true optimum."""

from __future__ import annotations

import itertools
from datetime import timedelta

import numpy as np
import pytest

from sourcing.forward.hindsight import HindsightSettings, hindsight_bound, lost_penalty
from sourcing.forward.pricer import ForwardSettings
from sourcing.model import UNLIMITED_CAPACITY, Network, Order, OrderLine
from sourcing.whatif.simulate import (
    PolicyOptions,
    Replenishment,
    SimOrder,
    make_policy,
    simulate,
)

from forward_support import R1, R2, T0, Timed, r2_then_r1, two_node_network
from support import all_allocations, random_order, tiny_network


def test_hand_instance_bound_is_13_and_the_plan_sends_the_first_order_from_b() -> None:
    # Module doc of forward_support: $8 (R2 from B) + $5 (R1 from A) = $13, nothing lost.
    bound = hindsight_bound(two_node_network(), r2_then_r1())
    assert bound.penalty == 1_600_000  # the dearest parcel ($15) + $1.00
    assert bound.lower == pytest.approx(1_300_000, abs=1e-3)
    assert bound.cost_bound(0) == pytest.approx(1_300_000, abs=1e-3)
    assert bound.plan_cost == 1_300_000 and bound.plan_lost == 0
    assert bound.gap == pytest.approx(0.0, abs=1e-9)
    period = bound.periods[0]
    assert period.plan is not None
    assert [p.node_id for a in period.plan for p in a.parcels] == ["B", "A"]


def test_hand_instance_with_one_unit_short_loses_the_unit_that_costs_most_to_serve() -> None:
    # Only A holds a unit: one order must lose its unit; serving either costs $5, so the
    # bound is $5 + one penalty, and with one unit lost the cost bound is $5.
    bound = hindsight_bound(two_node_network(stock=(1, 0)), r2_then_r1())
    assert bound.cost_bound(1) == pytest.approx(500_000, abs=1e-3)
    assert bound.plan_cost == 500_000 and bound.plan_lost == 1


def test_top_ups_split_the_stream_and_restore_the_stock() -> None:
    # Two R1 orders three days apart with A holding one unit and daily top-ups: both ship
    # from A ($5 each); without top-ups the second must come from B ($15).
    stream = [Timed("a", 1.0, R1), Timed("b", 73.0, R1)]
    network = two_node_network()
    topped = hindsight_bound(network, stream, top_up_every_days=1.0)
    assert len(topped.periods) == 2
    assert topped.cost_bound(0) == pytest.approx(1_000_000, abs=1e-3)
    once = hindsight_bound(network, stream)
    assert len(once.periods) == 1
    assert once.cost_bound(0) == pytest.approx(2_000_000, abs=1e-3)


def test_storage_credit_is_bounded_by_the_stock_on_hand_when_each_unit_leaves() -> None:
    # A holds 2 units, storage 10 cents/unit-day, demand 1/day: the first unit out earns
    # 0.10 x 2 days = 0.20, the second 0.10 x 1 day = 0.10 (the bound must not credit 0.20
    # twice). Two R1 orders of one unit: $5 + $5 - 0.30 = $9.70 from A; B (2 units) is dearer.
    network = two_node_network(stock=(2, 2), storage_cents=10)
    stream = [Timed("a", 1.0, R1), Timed("b", 2.0, R1)]
    bound = hindsight_bound(network, stream)
    assert bound.plan_cost == 970_000
    assert bound.cost_bound(0) == pytest.approx(970_000, abs=1.0)


# ------------------------------------------------------------- brute force


def _optimum(
    network: Network,
    orders: list[SimOrder],
    top_up: float | None,
    penalty: int,
    ship_what_it_can: bool = False,
) -> int:
    """The least cost + penalty x lost units over every sequence of allocations (a DP over
    the running stock and the day's capacity use), with the replay's rules; with
    ``ship_what_it_can`` each order ships all the network still holds of each SKU."""
    start = network.on_hand
    limited = network.capacity < UNLIMITED_CAPACITY
    t0 = orders[0].created_at.replace(hour=0, minute=0, second=0, microsecond=0)
    states: dict[tuple[bytes, bytes], int] = {
        (start.tobytes(), np.zeros(len(network.node_ids), dtype=np.int64).tobytes()): 0
    }
    period = 0
    day = orders[0].created_at.date()
    for item in orders:
        k = int((item.created_at - t0) / timedelta(days=top_up)) if top_up else 0
        new_day = item.created_at.date() != day
        nxt: dict[tuple[bytes, bytes], int] = {}
        for (stock_b, used_b), cost in states.items():
            on_hand = np.frombuffer(stock_b, dtype=np.int64).reshape(start.shape).copy()
            used = np.frombuffer(used_b, dtype=np.int64).copy()
            if k != period:
                on_hand = np.maximum(on_hand, start)
            if new_day:
                used[:] = 0
            view = network.replace(
                on_hand=on_hand,
                capacity=np.where(
                    limited, np.maximum(network.capacity - used, 0), network.capacity
                ),
            )
            wanted: dict[str, int] = {}
            for line in item.order.lines:
                wanted[line.sku] = wanted.get(line.sku, 0) + line.qty
            skus = sorted(wanted)
            most = {
                s: min(wanted[s], int(view.available[:, network.sku_index[s]].sum())) for s in skus
            }
            for sub in itertools.product(*(range(wanted[s] + 1) for s in skus)):
                if ship_what_it_can and any(q != most[s] for s, q in zip(skus, sub, strict=True)):
                    continue
                demand = dict(zip(skus, sub, strict=True))
                lost = sum(wanted.values()) - sum(sub)
                for evaluation in all_allocations(view, item.order, demand):
                    after, after_used = on_hand.copy(), used.copy()
                    for parcel in evaluation.parcels:
                        n = network.node_index[parcel.node_id]
                        for pl in parcel.lines:
                            after[n, network.sku_index[pl.sku]] -= pl.qty
                            after_used[n] += pl.qty
                    key = (after.tobytes(), after_used.tobytes())
                    value = cost + evaluation.cost + penalty * lost
                    if value < nxt.get(key, value + 1):
                        nxt[key] = value
        states = nxt
        period = k
        day = item.created_at.date()
    return min(states.values())


#: Forward prices from the first order on, re-solved before every order.
_EAGER = ForwardSettings(min_history_orders=1, reprice_every_orders=1, horizon_days=1.0)


def _penalised(network: Network, orders: list[SimOrder], policy: str, top_up: float | None) -> int:
    options = PolicyOptions(top_up_every_days=top_up, forward=_EAGER)
    result = simulate(
        network,
        orders,
        make_policy(policy, options),
        Replenishment(top_up_every_days=top_up) if top_up else None,
    )
    o = result.orders
    lost = int(o["units_ordered"].sum() - o["units_shipped"].sum())
    return int(o["cost"].sum()) + lost_penalty(network) * lost


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ship_what_it_can", [False, True])
def test_bound_never_above_the_true_optimum_nor_any_policy(
    seed: int, ship_what_it_can: bool
) -> None:
    rng = np.random.default_rng(1000 + seed)
    # With the rule, capacity stays unlimited: every order can ship all the stock it finds.
    network = tiny_network(
        rng,
        n_nodes=3,
        n_skus=2,
        n_services=1,
        max_stock=2,
        capacity_prob=0.0 if ship_what_it_can else 0.3,
    )
    network = network.replace(storage_cost=rng.integers(0, 30, len(network.node_ids)))
    n_orders = 3 if seed % 3 else 4
    top_up = 1.0 if seed % 2 else None
    orders = []
    for i in range(n_orders):
        order = random_order(rng, network, max_lines=2, max_qty=2)
        orders.append(SimOrder(f"o{i}", T0 + timedelta(hours=int(rng.integers(0, 40))), order))
    orders.sort(key=lambda o: o.created_at)
    settings = HindsightSettings(tolerance=0.0, ship_what_it_can=ship_what_it_can)
    bound = hindsight_bound(network, orders, top_up, settings)
    penalty = bound.penalty
    optimum = _optimum(network, orders, top_up, penalty, ship_what_it_can)
    forced = penalty * bound.forced_lost
    assert bound.lower + forced <= optimum + 1e-6, (bound.lower, forced, optimum)
    plan_cost, plan_lost = bound.plan_cost, bound.plan_lost
    assert plan_cost is not None and plan_lost is not None
    assert plan_cost + penalty * plan_lost >= optimum  # a real plan, replayed
    for policy in (
        "optimiser_cheapest",
        "greedy_nearest",
        "ship_complete_first",
        "optimiser_batch",
        "optimiser_forward",
        "optimiser_forward_batch",
    ):
        assert bound.lower + forced <= _penalised(network, orders, policy, top_up) + 1e-6, policy


def test_bound_is_tight_on_a_stream_the_myopic_optimiser_gets_wrong() -> None:
    orders = [SimOrder(t.order_id, t.created_at, t.order) for t in r2_then_r1()]
    network = two_node_network()
    myopic = _penalised(network, orders, "optimiser_cheapest", None)
    bound = hindsight_bound(network, orders)
    assert myopic == 2_000_000
    assert bound.lower == pytest.approx(_optimum(network, orders, None, bound.penalty))
    assert Order(R2, (OrderLine("W", 1),)) == orders[0].order
