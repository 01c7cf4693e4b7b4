"""Sampled-future (order-level) opportunity costs, checked by hand on the two-node instance."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from sourcing.forward.pricer import ForwardPricer, ForwardSettings
from sourcing.forward.sampled import sample_future, sampled_prices
from sourcing.model import Allocation, Order, OrderLine, ParcelLine, ParcelPlan

from forward_support import R1, R2, T0, two_node_network


def _w(where: object) -> Order:
    return Order(where, (OrderLine("W", 1),))  # type: ignore[arg-type]


def test_the_held_order_leaves_the_near_unit_to_the_orders_that_need_it_more() -> None:
    # A holds 1 W, B 2. Held: o1 in R2 (A $5, B $8); expected after it: two orders in R1
    # (A $5, B $15). The master serves one R1 order from A and the other from B, each at
    # zero reduced cost, so lambda_A - lambda_B = $15 - $5 = $10 exactly; o1 priced costs
    # $5 + 10 at A against $8 at B: it stays at B.
    network = two_node_network(stock=(1, 2))
    prices = sampled_prices(network, [_w(R2)], [_w(R1), _w(R1)], T0)
    assert prices.status == "CONVERGED"
    assert prices.orders == 3
    lam = prices.opportunity[:, 0]
    assert int(lam[0] - lam[1]) == 1_000_000
    assert 800_000 + lam[1] < 500_000 + lam[0]
    assert (prices.opportunity[:, 1] == 0).all()  # V: nobody wants it


def test_stock_left_over_after_the_sample_is_worth_nothing() -> None:
    # Three units at A for o1 and one R1 order: both ship from A ($5 each) with a unit to
    # spare, so one more unit anywhere saves nothing.
    network = two_node_network(stock=(3, 1))
    prices = sampled_prices(network, [_w(R2)], [_w(R1)], T0)
    assert prices.status == "CONVERGED"
    assert (prices.opportunity == 0).all()


def test_orders_the_stock_cannot_serve_are_cut_in_turn_held_orders_first() -> None:
    # One W unit in all: the held order takes it, the sampled R1 orders are cut to
    # nothing (the replay ships what it can, in arrival order), so nothing is priced.
    network = two_node_network(stock=(1, 0))
    prices = sampled_prices(network, [_w(R2)], [_w(R1), _w(R1)], T0)
    assert prices.orders == 1
    assert (prices.opportunity == 0).all()


def test_the_sample_draws_past_baskets_only() -> None:
    past = [_w(R1), Order(R2, (OrderLine("V", 2),))]
    rng = np.random.default_rng(0)
    drawn = sample_future(past, 50, rng)
    assert len(drawn) == 50 and all(o in past for o in drawn)
    mixed = sample_future(past, 50, rng, mix_destinations=True)
    assert {o.lines for o in mixed} <= {o.lines for o in past}
    assert {o.destination for o in mixed} <= {R1, R2}
    assert sample_future([], 5, rng) == [] and sample_future(past, 0, rng) == []


def test_the_pricer_prices_a_held_order_from_history_and_gives_its_units_back() -> None:
    # History: 30 W orders from R1, then o1 from R2, held at B, which the believed stock
    # has already lost. Priced for the batch, B's unit is given back (A 1, B 2 for o1 and
    # the sampled orders, nearly all from R1): A's single unit is worth $10 more than B's,
    # kept for R1, and o1 stays at B.
    network = two_node_network(stock=(1, 2))
    settings = ForwardSettings(
        horizon_days=1.0, min_history_orders=1, batch_prices="sampled", dual_weight=1.0
    )
    pricer = ForwardPricer(network, T0, None, settings)
    for i in range(30):
        pricer.observe(T0 + timedelta(minutes=6 * i), _w(R1))
    o1 = _w(R2)
    pricer.observe(T0 + timedelta(hours=4), o1)
    at_b = Allocation((ParcelPlan("B", "ground", (ParcelLine(0, "W", 1),)),))
    pricer.take(at_b)
    assert pricer.on_hand[:, 0].tolist() == [1, 1]
    prices = pricer.price_held(T0 + timedelta(hours=5), [(o1, at_b)])
    assert prices is not None
    lam = prices.values[:, 0]
    assert int(lam[0] - lam[1]) == 1_000_000
    assert pricer.on_hand[:, 0].tolist() == [1, 1]  # its believed stock is left as it was
    assert pricer.prices is None  # and so are the scheduled prices
