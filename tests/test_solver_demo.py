"""The optimiser on the demo network: self-consistent, never beaten by a rule policy."""

from __future__ import annotations

import numpy as np
import pytest

from sourcing import QuoteSettings, quote
from sourcing.baselines import greedy_nearest, priority_list, ship_complete_first
from sourcing.demo import demo_network, demo_order
from sourcing.model import Label

from networks import generated_network, random_cart
from reference import assert_priced_as_reference


@pytest.mark.parametrize("lines", [1, 3, 6])
def test_demo_carts_are_optimal_and_beat_every_baseline(lines: int) -> None:
    network = demo_network()
    rng = np.random.default_rng(lines)
    for _ in range(40):
        order = demo_order(network, rng, lines)
        q = quote(network, order)
        assert q.options, order
        for option in q.options:
            assert option.proof.status == "OPTIMAL"
            assert_priced_as_reference(network, order, option)
        cheapest, fastest = q.option(Label.CHEAPEST), q.option(Label.FASTEST)
        assert cheapest is not None and fastest is not None
        for policy in (greedy_nearest, priority_list, ship_complete_first):
            baseline = policy(network, order)
            # Any rule's allocation is a feasible plan, so it can never beat the optimum.
            assert cheapest.cost <= baseline.cost
            assert fastest.delivery_days <= baseline.delivery_days
            if baseline.num_parcels == 1:
                single = q.option(Label.SINGLE_PARCEL)
                assert single is not None and single.cost <= baseline.cost


def test_a_tight_time_limit_still_answers_with_feasible_options() -> None:
    # A 50-line cart on 500 nodes with a millisecond: no proof, but never nothing.
    network = generated_network(500, 150, seed=1)
    order = random_cart(network, np.random.default_rng(5), 50)
    q = quote(network, order, QuoteSettings(time_limit_s=0.001))
    assert q.options
    for option in q.options:
        assert option.proof.status in {"OPTIMAL", "FEASIBLE"}
        assert 0.0 <= option.proof.gap <= 1.0 or option.proof.status == "OPTIMAL"
        assert_priced_as_reference(network, order, option)
    relaxed = quote(network, order, QuoteSettings(time_limit_s=10.0))
    relaxed_cheapest = relaxed.option(Label.CHEAPEST)
    rushed_cheapest = q.option(Label.CHEAPEST)
    assert relaxed_cheapest is not None and rushed_cheapest is not None
    assert relaxed_cheapest.cost <= rushed_cheapest.cost
