"""The what-if policy ``optimiser_batch`` (sourcing.whatif.simulate.BatchPolicy) and the replay's
handling of revised allocations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pytest

from sourcing.model import (
    Allocation,
    Label,
    Location,
    Order,
    OrderLine,
    ParcelLine,
    ParcelPlan,
)
from sourcing.whatif.simulate import (
    DEFAULT_SIM_SETTINGS,
    BatchPolicy,
    PolicyError,
    PolicyOptions,
    SimOrder,
    Snapshot,
    make_policy,
    simulate,
)

from service_support import hand_network
from support import random_order, tiny_network

NYC = Location(40.7128, -74.0060)
T0 = datetime(2024, 3, 4, 9, 0)
#: As in test_batch_store: DC-NJ holds no A, ST-PHL 1 A and 5 B, DC-CHI 50 A and no B.
NETWORK = hand_network(
    {("DC-NJ", "A"): 0, ("ST-PHL", "A"): 1, ("ST-PHL", "B"): 5, ("DC-CHI", "B"): 0}
)


def swap_stream() -> list[SimOrder]:
    return [
        SimOrder("o1", T0, Order(NYC, (OrderLine("A", 1),))),
        SimOrder("o2", T0 + timedelta(hours=2), Order(NYC, (OrderLine("A", 1), OrderLine("B", 1)))),
    ]


def test_the_day_batch_swaps_sources_where_one_at_a_time_cannot() -> None:
    one_at_a_time = simulate(NETWORK, swap_stream(), make_policy("optimiser_cheapest"))
    # o1 takes PHL's only A ($7.00 + $1.00 + $3.00 = $11.00, day 3); o2 then ships B
    # from NJ ($5.00 + $2.00 + $2.00 = $9.00) and A from CHI ($9.00 + $1.00 + $1.50 =
    # $11.50): $20.50 in 2 parcels. Day total $31.50, 3 parcels.
    assert one_at_a_time.orders["cost"].tolist() == [1_100_000, 2_050_000]
    assert one_at_a_time.orders["parcels"].tolist() == [1, 2]

    batch = simulate(NETWORK, swap_stream(), make_policy("optimiser_batch"))
    # At the day's end: o1 from CHI ($11.50, day 3, its promise), o2 from PHL in one
    # 3 kg parcel ($7.00 + $3.00 + $3.00 = $13.00, day 3): $24.50 in 2 parcels.
    assert batch.orders["cost"].tolist() == [1_150_000, 1_300_000]
    assert batch.orders["parcels"].tolist() == [1, 1]
    assert batch.orders["delivery_days"].tolist() == [3, 3]
    assert batch.parcels["node_id"].tolist() == ["DC-CHI", "ST-PHL"]
    assert batch.orders["units_shipped"].tolist() == [1, 2]
    # Stock left: CHI gave one A, PHL its A and one B; NJ kept its B.
    end = {
        (node, sku): int(batch.on_hand_end[n, k])
        for n, node in enumerate(NETWORK.node_ids)
        for k, sku in enumerate(NETWORK.sku_ids)
    }
    assert end[("DC-CHI", "A")] == 49 and end[("ST-PHL", "A")] == 0
    assert end[("ST-PHL", "B")] == 4 and end[("DC-NJ", "B")] == 5
    assert batch.kpis()["net_cost_per_order"] == pytest.approx(12.25)


def test_orders_of_different_days_are_not_batched_together() -> None:
    # o2 a day later: o1 was shipped from PHL at the end of its day, so o2 splits.
    stream = swap_stream()
    stream[1] = SimOrder("o2", T0 + timedelta(days=1), stream[1].order)
    batch = simulate(NETWORK, stream, make_policy("optimiser_batch"))
    assert batch.orders["cost"].tolist() == [1_100_000, 2_050_000]


def test_a_single_day_never_costs_more_than_one_at_a_time() -> None:
    """One period, no storage credit: the batch starts from the optimiser's own decisions."""
    compared = cheaper = 0
    for seed in range(25):
        rng = np.random.default_rng(seed)
        network = tiny_network(rng, n_nodes=4, n_skus=3, max_stock=4, capacity_prob=0.4)
        network = network.replace(storage_cost=np.zeros(len(network.node_ids), dtype=np.int64))
        stream = [
            SimOrder(f"o{i}", T0 + timedelta(minutes=20 * i), random_order(rng, network))
            for i in range(8)
        ]
        # Both runs must make the same one-at-a-time decisions: time to prove every quote
        # optimal even on a loaded machine (the 1 s default can cut a proof short).
        proven = PolicyOptions(settings=replace(DEFAULT_SIM_SETTINGS, time_limit_s=30.0))
        greedy = simulate(network, stream, make_policy("optimiser_cheapest", proven))
        batch = simulate(network, stream, make_policy("optimiser_batch", proven))
        assert batch.orders["cost"].sum() <= greedy.orders["cost"].sum(), seed
        # Same units, each order no later than its promise (the one-at-a-time day).
        assert batch.orders["units_shipped"].tolist() == greedy.orders["units_shipped"].tolist()
        assert np.all(batch.orders["delivery_days"] <= greedy.orders["delivery_days"]), seed
        compared += 1
        cheaper += batch.orders["cost"].sum() < greedy.orders["cost"].sum()
    assert compared == 25 and cheaper >= 2


@pytest.mark.parametrize("period", [0.0, 0.4, 2.0])
def test_the_period_must_divide_a_day(period: float) -> None:
    with pytest.raises(ValueError, match="must divide a day"):
        BatchPolicy("b", Label.CHEAPEST, DEFAULT_SIM_SETTINGS, period_days=period)


class _Reviser(BatchPolicy):
    """Returns a fixed revision at the end of the first period."""

    def __init__(self, revision: Mapping[str, Allocation]) -> None:
        super().__init__("reviser", Label.CHEAPEST, DEFAULT_SIM_SETTINGS)
        self.revision = revision

    def end_period(self, snapshot: Snapshot) -> Mapping[str, Allocation] | None:
        revision, self.revision = self.revision, {}
        return revision


def test_a_revision_must_keep_the_promise_and_the_units() -> None:
    # With an A at DC-NJ, o1 is promised NJ's day 2; CHI arrives on day 3.
    network = hand_network({("DC-NJ", "A"): 1})
    late = Allocation((ParcelPlan("DC-CHI", "ground", (ParcelLine(0, "A", 1),)),))
    stream = [SimOrder("o1", T0, Order(NYC, (OrderLine("A", 1),)))]
    with pytest.raises(PolicyError, match="it promised"):
        simulate(network, stream, _Reviser({"o1": late}))
    short = Allocation(())
    with pytest.raises(PolicyError, match="it promised"):
        simulate(network, stream, _Reviser({"o1": short}))
    with pytest.raises(PolicyError, match="outside the period"):
        simulate(network, stream, _Reviser({"nope": late}))
