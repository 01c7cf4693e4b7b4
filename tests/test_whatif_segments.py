"""A replay cut at its stock top-ups: the spans replayed alone give the whole replay."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from sourcing.model import Label
from sourcing.whatif.scenario import PreparedScenario, load_scenario, prepare_scenario
from sourcing.whatif.segments import independent_spans, is_memoryless, join_results
from sourcing.whatif.simulate import (
    DEFAULT_SIM_SETTINGS,
    OptimiserPolicy,
    Receipt,
    Replenishment,
    SimOrder,
    SimulationResult,
    make_policy,
    simulate,
)

#: 150 orders over about four days of one day's stock (set_cover), topped up daily: the
#: stock runs short within each day, so what a span starts with decides what it ships.
SCENARIO = """
[scenario]
name = "spans"

[network]
demo = true

[orders]
generate = true
count = 150
seed = 5
per_day = 40
start = 2024-03-04T00:00:00

[replenishment]
top_up_every_days = 1

[policies]
run = ["greedy_nearest", "ship_complete_first", "optimiser_cheapest", "optimiser_balanced"]

[[variants]]
name = "scarce"
edits = [{ type = "set_cover", days = 0.25 }, { type = "close_node", node = "DC-ORD" }]
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PreparedScenario:
    path = tmp_path_factory.mktemp("spans") / "spans.toml"
    path.write_text(SCENARIO)
    return prepare_scenario(load_scenario(path))


def _stream(prepared: PreparedScenario) -> list[SimOrder]:
    return sorted(prepared.orders, key=lambda o: o.created_at)


def _at(orders: list[SimOrder], times: list[datetime]) -> list[SimOrder]:
    return [replace(order, created_at=t) for order, t in zip(orders, times, strict=False)]


def test_spans_run_from_one_top_up_to_the_next(prepared: PreparedScenario) -> None:
    """Top-ups every 2 days from midnight of the first order; one at an order's time comes first."""
    day0 = datetime(2024, 3, 4)
    times = [
        day0 + timedelta(hours=10),  # span [day 0, day 2)
        day0 + timedelta(days=1, hours=23, minutes=59),
        day0 + timedelta(days=2),  # the top-up at this very moment: a new span
        day0 + timedelta(days=3, hours=5),
        day0 + timedelta(days=7),  # days 4-6 have no orders: span [day 6, day 8)
        day0 + timedelta(days=7, hours=1),
    ]
    stream = _at(_stream(prepared), times)
    every_2 = Replenishment(top_up_every_days=2)
    assert independent_spans(stream, every_2) == [(0, 2), (2, 4), (4, 6)]
    daily = Replenishment(top_up_every_days=1)
    assert independent_spans(stream, daily) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 6)]


@pytest.mark.parametrize(
    "replenishment",
    [
        None,
        Replenishment(),
        Replenishment(top_up_every_days=1.5),  # top-ups mid-day: the day's capacity carries on
        Replenishment(top_up_every_days=0.5),
        Replenishment(
            receipts=(Receipt(datetime(2024, 3, 5), "DC-DFW", "SKU-0001", 5),),
            top_up_every_days=1,
        ),  # a receipt lifts stock above what a top-up restores
    ],
)
def test_a_replay_that_cannot_be_cut_is_one_span(
    prepared: PreparedScenario, replenishment: Replenishment | None
) -> None:
    stream = _stream(prepared)
    assert independent_spans(stream, replenishment) == [(0, len(stream))]
    assert independent_spans([], Replenishment(top_up_every_days=1)) == [(0, 0)]


def _rows(result: SimulationResult) -> pd.DataFrame:
    return result.orders.drop(columns=["decide_seconds"])


@pytest.mark.parametrize(
    "policy", ["greedy_nearest", "ship_complete_first", "optimiser_cheapest", "optimiser_balanced"]
)
def test_a_replay_cut_at_its_top_ups_equals_the_whole_replay(
    prepared: PreparedScenario, policy: str
) -> None:
    (_, network), *_ = prepared.networks
    stream = _stream(prepared)
    replenishment = prepared.replenishment
    spans = independent_spans(stream, replenishment)
    assert len(spans) == 4 and spans[0][0] == 0 and spans[-1][1] == len(stream)
    whole = simulate(network, stream, make_policy(policy), replenishment)
    # The stock ran short in every span: what a span starts with matters.
    rows = whole.orders
    for start, stop in spans:
        assert (rows["units_shipped"][start:stop] < rows["units_ordered"][start:stop]).any()
    parts = [simulate(network, stream[a:b], make_policy(policy), replenishment) for a, b in spans]
    joined = join_results(parts)
    pd.testing.assert_frame_equal(_rows(joined), _rows(whole))
    pd.testing.assert_frame_equal(joined.parcels, whole.parcels)
    np.testing.assert_array_equal(joined.on_hand_end, whole.on_hand_end)
    assert joined.kpis() | {"solver_ms_per_order": 0} == whole.kpis() | {"solver_ms_per_order": 0}
    assert joined.node_volume().equals(whole.node_volume())
    # Cut anywhere else, the second half starts from stock it did not have.
    middle = (spans[1][0] + spans[1][1]) // 2
    elsewhere = simulate(network, stream[middle:], make_policy(policy), replenishment)
    assert not _rows(elsewhere).equals(_rows(whole)[middle:].reset_index(drop=True))


def test_only_policies_that_remember_nothing_are_cut(prepared: PreparedScenario) -> None:
    for name in ("greedy_nearest", "priority_list", "ship_complete_first"):
        assert is_memoryless(make_policy(name))
    for name in ("optimiser_cheapest", "optimiser_fastest", "optimiser_balanced"):
        assert is_memoryless(make_policy(name))
    # The batch holds a day's orders; forward pricing learns from the orders seen.
    for name in ("optimiser_batch", "optimiser_forward", "optimiser_forward_batch"):
        assert not is_memoryless(make_policy(name))

    class Remembers(OptimiserPolicy):
        pass

    assert not is_memoryless(Remembers("mine", Label.CHEAPEST, DEFAULT_SIM_SETTINGS))


def test_joining_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no results"):
        join_results([])
