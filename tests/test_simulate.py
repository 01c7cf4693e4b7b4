"""The replay engine: hand-computed KPIs, stock invariants, replenishment, hooks, edits."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sourcing.loader import read_network
from sourcing.model import (
    UNLIMITED_CAPACITY,
    Allocation,
    Location,
    Network,
    Option,
    Order,
    OrderLine,
    ParcelLine,
    ParcelPlan,
)
from sourcing.whatif.edits import CloseNode, ScaleRates
from sourcing.whatif.inputs import GeneratedOrders, generate_orders, read_orders
from sourcing.whatif.simulate import (
    KPI_COLUMNS,
    POLICY_FACTORIES,
    BasePolicy,
    PolicyError,
    Receipt,
    Replenishment,
    SimOrder,
    SimulationResult,
    Snapshot,
    make_policy,
    simulate,
)

from support import random_order, tiny_network

TINY = Path(__file__).parent / "scenarios" / "tiny"
DEST = Location(40.0, -100.1)
T0 = datetime(2024, 1, 1)


def tiny() -> Network:
    """A (store, 8.5 km away, zone 1) and B (DC, 853 km, zone 2); one 2 kg SKU W."""
    return read_network(TINY / "network")


def tiny_orders() -> list[SimOrder]:
    return read_orders(TINY / "orders.csv")


def order_at(hours: float, qty: int, order_id: str = "x", sku: str = "W") -> SimOrder:
    return SimOrder(order_id, T0 + timedelta(hours=hours), Order(DEST, (OrderLine(sku, qty),)))


def money(result: SimulationResult, column: str) -> list[float]:
    return [v / 100_000 for v in result.orders[column].tolist()]


def test_greedy_on_the_tiny_stream_matches_the_hand_computation() -> None:
    # A parcel from A: 5.00 + 1.00/kg x 2 kg + 0.50 handling = 7.50, arrives day 1 + 1 = 2.
    # From B (zone 2): 9.00 + 2.00/kg x weight + 1.00, day 0 + 3 = 3, credit per unit
    # 0.10 x min(on hand at B / 1 per day, 30).
    started = time.perf_counter()
    result = simulate(tiny(), tiny_orders(), make_policy("greedy_nearest"))
    wall_s = time.perf_counter() - started
    o = result.orders
    assert o["order_id"].tolist() == ["o1", "o2", "o3", "o4", "o5"]
    assert o["units_ordered"].tolist() == [1, 2, 1, 5, 1]
    assert o["units_shipped"].tolist() == [1, 2, 1, 3, 0]
    assert o["parcels"].tolist() == [1, 2, 1, 1, 0]
    # o2: A's last unit (7.50) + one unit from B (9 + 4 + 1 = 14.00, credit 0.10 x 5 = 0.50);
    # o3: B (14.00, credit 0.40: 4 left); o4: B's last 3 units, 6 kg (9 + 12 + 1 = 22.00,
    # credit 3 x 0.30); o5: nothing left.
    assert money(result, "shipping") == [7.0, 20.0, 13.0, 21.0, 0.0]
    assert money(result, "storage_credit") == [0.0, 0.5, 0.4, 0.9, 0.0]
    assert money(result, "cost") == [7.5, 21.0, 13.6, 21.1, 0.0]
    assert o["delivery_days"].tolist() == [2, 3, 3, 3, 0]
    assert result.on_hand_end.tolist() == [[0], [0]]

    k = result.kpis()
    assert k["orders"] == 5
    assert k["fill_rate"] == pytest.approx(3 / 5)
    assert k["unit_fill_rate"] == pytest.approx(7 / 10)
    assert k["ship_cost_per_order"] == pytest.approx(65.0 / 4)
    assert k["storage_credit_per_order"] == pytest.approx(1.8 / 4)
    assert k["net_cost_per_order"] == pytest.approx(63.2 / 4)
    assert k["parcels_per_order"] == pytest.approx(5 / 4)
    assert k["split_rate"] == pytest.approx(1 / 4)
    assert k["mean_delivery_days"] == pytest.approx(11 / 4)
    assert k["p95_delivery_days"] == 3
    # The mean decision time per order, in ms: every decision took some time, all of
    # them together no more than the whole replay.
    decided = o["decide_seconds"].to_numpy()
    assert np.all(decided > 0) and decided.sum() <= wall_s
    assert k["solver_ms_per_order"] == pytest.approx(decided.sum() / 5 * 1000)
    assert list(k) == list(KPI_COLUMNS)

    volume = result.node_volume()
    assert volume.loc["A"].tolist() == [2, 2]  # parcels, units
    assert volume.loc["B"].tolist() == [3, 5]


def test_optimiser_on_the_tiny_stream_matches_the_hand_computation() -> None:
    # o2: both units from B cost 9 + 2 x 4 + 1 - 2 x 0.50 = 17.00, less than splitting
    # (7.50 + 14.00 - 0.50 = 21.00);
    # then A still holds a unit for o3 (7.50).
    result = simulate(tiny(), tiny_orders(), make_policy("optimiser_cheapest"))
    assert result.orders["parcels"].tolist() == [1, 1, 1, 1, 0]
    assert money(result, "cost") == [7.5, 17.0, 7.5, 21.1, 0.0]
    assert result.orders["status"].tolist()[:4] == ["OPTIMAL"] * 4
    k = result.kpis()
    assert k["net_cost_per_order"] == pytest.approx(53.1 / 4)
    assert k["split_rate"] == 0
    assert k["mean_delivery_days"] == pytest.approx(10 / 4)
    assert k["fill_rate"] == pytest.approx(3 / 5)


def test_orders_are_replayed_in_time_order_whatever_the_input_order() -> None:
    forward = simulate(tiny(), tiny_orders(), make_policy("greedy_nearest"))
    backward = simulate(tiny(), tiny_orders()[::-1], make_policy("greedy_nearest"))
    pd.testing.assert_frame_equal(
        forward.orders.drop(columns="decide_seconds"),
        backward.orders.drop(columns="decide_seconds"),
    )


def test_daily_capacity_binds_within_a_day_and_resets_at_midnight() -> None:
    network = tiny().replace(
        on_hand=np.array([[0], [9]]), capacity=np.array([UNLIMITED_CAPACITY, 2])
    )
    orders = [order_at(1, 2, "a"), order_at(2, 1, "b"), order_at(25, 2, "c")]
    result = simulate(network, orders, make_policy("greedy_nearest"))
    # B ships 2 on day 1 (its whole capacity), nothing more that day, 2 again on day 2.
    assert result.orders["units_shipped"].tolist() == [2, 0, 2]
    result = simulate(network, orders, make_policy("optimiser_cheapest"))
    assert result.orders["units_shipped"].tolist() == [2, 0, 2]


def test_receipts_and_top_ups_replenish_stock() -> None:
    network = tiny().replace(on_hand=np.array([[1], [0]]))
    orders = [order_at(1, 1, "a"), order_at(2, 1, "b"), order_at(30, 1, "c"), order_at(75, 1, "d")]
    plain = simulate(network, orders, make_policy("greedy_nearest"))
    assert plain.orders["units_shipped"].tolist() == [1, 0, 0, 0]

    receipt = Replenishment(receipts=(Receipt(T0 + timedelta(hours=29), "B", "W", 1),))
    got = simulate(network, orders, make_policy("greedy_nearest"), receipt)
    assert got.orders["units_shipped"].tolist() == [1, 0, 1, 0]
    assert got.parcels["node_id"].tolist() == ["A", "B"]

    # Every 2 days (from midnight of the first order) A is topped up to its starting 1 unit.
    top_up = simulate(
        network, orders, make_policy("greedy_nearest"), Replenishment(top_up_every_days=2)
    )
    assert top_up.orders["units_shipped"].tolist() == [1, 0, 0, 1]


def test_receipts_naming_unknown_nodes_are_rejected() -> None:
    bad = Replenishment(receipts=(Receipt(T0, "Z", "W", 1),))
    with pytest.raises(ValueError, match="unknown node 'Z'"):
        simulate(tiny(), tiny_orders(), make_policy("greedy_nearest"), bad)


@pytest.mark.parametrize("name", list(POLICY_FACTORIES))
def test_stock_never_goes_below_its_floor_and_is_conserved(name: str) -> None:
    for seed in range(4):
        rng = np.random.default_rng(seed)
        network = tiny_network(rng, n_nodes=4, n_skus=3, max_stock=4, capacity_prob=0.4)
        orders = [
            SimOrder(f"o{i}", T0 + timedelta(hours=5 * i), random_order(rng, network))
            for i in range(25)
        ]
        result = simulate(network, orders, make_policy(name))
        floor = np.minimum(network.on_hand, network.safety_stock + network.reserved)
        assert np.all(result.on_hand_end >= floor)
        assert np.all(result.on_hand_end >= 0)
        # Every unit that left a node is in a parcel of the records, and nowhere else.
        shipped = network.on_hand - result.on_hand_end
        assert np.all(shipped >= 0)
        assert (result.parcels["units"] > 0).all()
        assert shipped.sum() == result.orders["units_shipped"].sum()
        assert shipped.sum(axis=1).tolist() == [
            int(result.parcels.loc[result.parcels["node_id"] == node, "units"].sum())
            for node in network.node_ids
        ]
        assert np.all(result.orders["units_shipped"] <= result.orders["units_ordered"])
        # Daily capacity: units per node per calendar day never exceed it.
        days = result.orders["created_at"].dt.date.to_numpy()[result.parcels["order"]]
        per_day = result.parcels.assign(day=days).groupby(["node_id", "day"])["units"].sum()
        for (node, _), units in per_day.items():
            assert units <= network.capacity[network.node_index[node]]


class _Recorder(BasePolicy):
    """Greedy nearest that records what the hooks saw."""

    period_days = 1.0

    def __init__(self) -> None:
        super().__init__("recorder")
        self.inner = make_policy("greedy_nearest")
        self.stream: Sequence[SimOrder] = ()
        self.snapshots: list[Snapshot] = []

    def begin(self, network: Network, orders: Sequence[SimOrder]) -> None:
        self.stream = orders

    def decide(self, network: Network, order: SimOrder) -> Allocation | Option:
        return self.inner.decide(network, order)

    def end_period(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)


def test_policies_see_the_whole_stream_and_a_periodic_hook() -> None:
    policy = _Recorder()
    orders = tiny_orders()
    simulate(tiny(), orders[::-1], policy)
    assert [o.order_id for o in policy.stream] == ["o1", "o2", "o3", "o4", "o5"]
    # One boundary (midnight of day 2) before o3, and one at the end of the stream.
    assert [s.at for s in policy.snapshots] == [datetime(2024, 1, 2), orders[-1].created_at]
    assert [s.decided for s in policy.snapshots] == [2, 5]
    assert policy.snapshots[0].on_hand.tolist() == [[0], [4]]
    assert not policy.snapshots[0].on_hand.flags.writeable


class _Overseller(BasePolicy):
    def decide(self, network: Network, order: SimOrder) -> Allocation | Option:
        lines = tuple(ParcelLine(i, line.sku, line.qty) for i, line in enumerate(order.order.lines))
        return Allocation((ParcelPlan("A", "ground", lines),))


def test_an_infeasible_decision_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="policy oversell chose an infeasible allocation"):
        simulate(tiny(), tiny_orders(), _Overseller("oversell"))


def test_unknown_skus_are_rejected_before_replaying() -> None:
    from sourcing.errors import InvalidOrderError

    with pytest.raises(InvalidOrderError, match="unknown SKU 'Q'"):
        simulate(tiny(), [order_at(1, 1, "a", sku="Q")], make_policy("greedy_nearest"))


def test_unknown_policy_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        make_policy("nope")


# ------------------------------------------------------------- demo network runs


@pytest.fixture(scope="module")
def demo_stream() -> tuple[Network, list[SimOrder]]:
    from sourcing.demo import demo_network

    network = demo_network()
    return network, generate_orders(network, GeneratedOrders(count=150, seed=3))


def _table(network: Network, orders: list[SimOrder], names: Sequence[str]) -> pd.DataFrame:
    rows = [{"policy": n, **simulate(network, orders, make_policy(n)).kpis()} for n in names]
    return pd.DataFrame(rows).drop(columns="solver_ms_per_order")


def test_same_seed_gives_the_same_table(demo_stream: tuple[Network, list[SimOrder]]) -> None:
    network, orders = demo_stream
    names = ["greedy_nearest", "optimiser_balanced"]
    again = generate_orders(network, GeneratedOrders(count=150, seed=3))
    assert again == orders
    pd.testing.assert_frame_equal(_table(network, orders, names), _table(network, again, names))
    other = generate_orders(network, GeneratedOrders(count=150, seed=4))
    assert not _table(network, orders, names).equals(_table(network, other, names))


def test_closing_a_node_sends_it_no_orders(demo_stream: tuple[Network, list[SimOrder]]) -> None:
    network, orders = demo_stream
    for name in ("greedy_nearest", "optimiser_cheapest"):
        base = simulate(network, orders, make_policy(name)).node_volume()
        busiest = str(base["units"].idxmax())
        assert base.loc[busiest, "units"] > 0
        closed = CloseNode(busiest).apply(network)
        after = simulate(closed, orders, make_policy(name))
        assert busiest not in set(after.parcels["node_id"])
        assert after.node_volume().loc[busiest, "units"] == 0
        assert after.kpis()["unit_fill_rate"] > 0.9


def test_doubling_the_rate_card_raises_cost(demo_stream: tuple[Network, list[SimOrder]]) -> None:
    network, orders = demo_stream
    doubled = ScaleRates(2.0).apply(network)
    # Greedy's allocation does not depend on prices: its carrier charges double exactly.
    before = simulate(network, orders, make_policy("greedy_nearest"))
    after = simulate(doubled, orders, make_policy("greedy_nearest"))
    assert (after.orders["shipping"] == 2 * before.orders["shipping"]).all()
    assert (after.orders["handling"] == before.orders["handling"]).all()
    assert after.kpis()["net_cost_per_order"] > before.kpis()["net_cost_per_order"]
    opt_before = simulate(network, orders, make_policy("optimiser_cheapest")).kpis()
    opt_after = simulate(doubled, orders, make_policy("optimiser_cheapest")).kpis()
    assert opt_after["net_cost_per_order"] > opt_before["net_cost_per_order"]
    assert opt_after["ship_cost_per_order"] > 1.5 * opt_before["ship_cost_per_order"]


def test_the_optimiser_is_never_dearer_than_greedy_on_the_same_stock(
    demo_stream: tuple[Network, list[SimOrder]],
) -> None:
    # Order by order on the same starting stock: CHEAPEST is optimal for each order.
    network, orders = demo_stream
    policy, greedy = make_policy("optimiser_cheapest"), make_policy("greedy_nearest")
    from sourcing.evaluate import evaluate

    for item in orders[:40]:
        opt = policy.decide(network, item)
        base = greedy.decide(network, item)
        assert isinstance(opt, Option) and isinstance(base, Option)
        assert evaluate(network, item.order, opt.allocation).cost <= base.cost


def test_a_replay_without_periods_keeps_no_decided_order_alive() -> None:
    """Memory per replay stays flat: only a periodic policy's open period is kept.

    Every decided order used to be kept (allocation, units taken) for a period
    end that policies without periods never reach: 8-9 objects per order for
    the collector to scan again and again, the whole replay long.
    """
    import gc

    from sourcing.demo import demo_network

    network = demo_network()
    orders = generate_orders(network, GeneratedOrders(count=400, seed=3))
    tracked: dict[int, int] = {}
    decided = 0

    def count(_: int) -> None:
        nonlocal decided
        decided += 1
        if decided in (100, 400):
            gc.collect()
            tracked[decided] = len(gc.get_objects())

    simulate(network, orders, make_policy("greedy_nearest"), None, count)
    # 300 more orders decided: before, some 2,500 more objects; now a handful.
    assert tracked[400] - tracked[100] < 100
