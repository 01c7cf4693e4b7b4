"""optimiser_forward on the hand-made instance, and what it may know."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np

from sourcing.forward.fluid import FluidSettings
from sourcing.forward.hindsight import hindsight_bound
from sourcing.forward.pricer import ForwardSettings
from sourcing.whatif.edits import SetCover
from sourcing.whatif.simulate import (
    PolicyOptions,
    SimOrder,
    SimulationResult,
    make_policy,
    simulate,
)

from forward_support import R1, R2, Timed, two_node_network

#: Reprice before every order; the SKU rate is the network's forecast (1.8 a day over a
#: one-day horizon), the regions' shares are what history shows.
FORWARD = ForwardSettings(
    horizon_days=1.0,
    min_history_orders=1,
    reprice_every_orders=1,
    fluid=FluidSettings(rate_memory_days=1e9),
)


def _stream() -> list[SimOrder]:
    """Four orders of V (3 from R1, 1 from R2: where customers are), then W from R2, R1."""
    timed = [
        Timed("v1", 0.5, R1, sku="V"),
        Timed("v2", 1.0, R1, sku="V"),
        Timed("v3", 1.5, R1, sku="V"),
        Timed("v4", 2.0, R2, sku="V"),
        Timed("o1", 3.0, R2),
        Timed("o2", 4.0, R1),
    ]
    return [SimOrder(t.order_id, t.created_at, t.order) for t in timed]


def _w_orders(result: SimulationResult) -> tuple[list[str], int]:
    """(node of each W order's parcel, their total cost in millicents)."""
    o, p = result.orders, result.parcels
    rows = [i for i, oid in enumerate(o["order_id"]) if oid in ("o1", "o2")]
    nodes = [p[p["order"] == i]["node_id"].tolist() for i in rows]
    return [n for ns in nodes for n in ns], int(o.loc[rows, "cost"].sum())


def _run(policy: str, orders: list[SimOrder]) -> SimulationResult:
    network = two_node_network(daily_demand=1.8)
    return simulate(network, orders, make_policy(policy, PolicyOptions(forward=FORWARD)))


def test_myopic_sends_the_first_order_to_the_node_the_second_needs_forward_does_not() -> None:
    # Expected W demand: 1.8 x (3/4 in R1, 1/4 in R2) = 1.35 and 0.45. A's one unit is worth
    # $10 more than B's (forward_support): the R2 order pays $8 at B rather than $5 + $10 at A.
    myopic = _run("optimiser_cheapest", _stream())
    forward = _run("optimiser_forward", _stream())
    assert _w_orders(myopic) == (["A", "B"], 2_000_000)
    assert _w_orders(forward) == (["B", "A"], 1_300_000)
    # Same fill, and the bound (V orders: 4 x $5 from A) is met by forward exactly.
    assert forward.orders["units_shipped"].sum() == myopic.orders["units_shipped"].sum() == 6
    bound = hindsight_bound(two_node_network(daily_demand=1.8), _stream())
    assert bound.cost_bound(0) == forward.orders["cost"].sum() == 1_300_000 + 4 * 500_000
    assert myopic.orders["cost"].sum() > bound.cost_bound(0)


def test_forward_decisions_never_depend_on_orders_still_to_come() -> None:
    # A policy that peeked would decide o1 differently with o2 in the stream or without.
    full = _run("optimiser_forward", _stream())
    cut = _run("optimiser_forward", _stream()[:-1])
    assert cut.parcels["node_id"].tolist() == full.parcels["node_id"].tolist()[:-1]


def test_without_history_forward_is_the_myopic_optimiser() -> None:
    stream = _stream()[4:]  # no V orders: nothing known about where customers are
    options = PolicyOptions(forward=ForwardSettings(min_history_orders=50))
    network = two_node_network(daily_demand=1.8)
    forward = simulate(network, stream, make_policy("optimiser_forward", options))
    myopic = simulate(network, stream, make_policy("optimiser_cheapest"))
    assert forward.parcels["node_id"].tolist() == myopic.parcels["node_id"].tolist()


def test_set_cover_scales_each_sku_to_days_of_demand_keeping_shares() -> None:
    network = two_node_network(stock=(3, 1), daily_demand=1.8)
    # W: 2 days x 1.8 = 3.6 -> 4 units, shared 3:1 -> 3 and 1; V has no demand -> 0.
    covered = SetCover(2.0).apply(network)
    assert covered.on_hand.tolist() == [[3, 0], [1, 0]]
    # 1 day -> 2 units: exact shares 1.5 and 0.5; the larger remainder goes first (A).
    assert SetCover(1.0).apply(network).on_hand[:, 0].tolist() == [2, 0]
    assert (SetCover(1.0).apply(network).on_hand.sum(axis=0) == np.array([2, 0])).all()


def test_forward_with_the_daily_batch_keeps_the_forward_choice_and_its_promises() -> None:
    result = _run("optimiser_forward_batch", _stream())
    assert _w_orders(result) == (["B", "A"], 1_300_000)
    # The replay raises PolicyError if a revision broke a promise; none did.
    assert result.orders["units_shipped"].sum() == 6


def _overnight_stream() -> list[SimOrder]:
    """The V orders and o1 (R2) on day 0, o2 (R1) the next day: the day-0 batch sees o1 alone."""
    stream = _stream()
    o2 = stream[-1]
    return [*stream[:-1], SimOrder(o2.order_id, o2.created_at + timedelta(hours=26), o2.order)]


def test_the_priced_batch_keeps_the_unit_the_prices_reserve_the_reference_batch_does_not() -> None:
    # o1 (R2) is quoted at B ($8; A's unit is priced $10 for R1). At day 0's end the batch
    # sees o1 alone, with both units given back: at the reference cost it moves o1 to A
    # ($5, promise kept: 1 day < 2), and o2 (R1, day 1) must come from B ($15): $20. At the
    # priced cost A still costs $5 + $10, so o1 stays at B and o2 ships from A: $13.
    priced = _run("optimiser_forward_batch", _overnight_stream())
    assert _w_orders(priced) == (["B", "A"], 1_300_000)
    reference = simulate(
        two_node_network(daily_demand=1.8),
        _overnight_stream(),
        make_policy(
            "optimiser_forward_batch",
            PolicyOptions(forward=replace(FORWARD, priced_batch=False)),
        ),
    )
    assert _w_orders(reference) == (["A", "B"], 2_000_000)
    assert priced.orders["units_shipped"].sum() == reference.orders["units_shipped"].sum() == 6


def _stale_prices_stream() -> list[SimOrder]:
    """V from R1 (the first re-solve), then W from R1 and R2 on day 0, W from R1 on day 1."""
    timed = [
        Timed("v1", 0.5, R1, sku="V"),
        Timed("w1", 1.0, R1),
        Timed("o1", 2.0, R2),
        Timed("w2", 26.0, R1),
    ]
    return [SimOrder(t.order_id, t.created_at, t.order) for t in timed]


def test_the_batch_priced_with_the_days_orders_in_the_lp_moves_the_order_stale_prices_keep() -> (
    None
):
    # A and B hold 2 W each; every zone delivers in 2 days (a move keeps its promise).
    # Prices are solved once, at v1: 1.8 W expected in R1 against 2 at A, so nothing is
    # priced, and w1 and o1 both take A ($5 each). At day 0's end:
    # - "scheduled": the batch sees those zero prices and keeps both at A; w2 (day 1, R1)
    #   must ship from B: $15. W costs $25.
    # - "fluid": w1 and o1 in the LP with their units given back (A 2, B 2) beside R1's
    #   1.8: R1 needs 2.8 and A has 2, so A's unit is worth $10 (lambda_B = 0, B has spare);
    #   o1 priced costs $15 at A against $8 at B and moves; w2 ships from A: W costs $18.
    network = two_node_network(stock=(2, 2), daily_demand=1.8).replace(
        transit_days=np.array([[2, 2, 2]])
    )
    once = replace(FORWARD, reprice_every_orders=1000, reprice_every_hours=1000.0)
    costs = {}
    for prices in ("scheduled", "fluid"):
        options = PolicyOptions(forward=replace(once, batch_prices=prices))
        result = simulate(
            network, _stale_prices_stream(), make_policy("optimiser_forward_batch", options)
        )
        o, p = result.orders, result.parcels
        rows = [i for i, oid in enumerate(o["order_id"]) if oid != "v1"]
        nodes = [p[p["order"] == i]["node_id"].tolist() for i in rows]
        costs[prices] = ([n for ns in nodes for n in ns], int(o.loc[rows, "cost"].sum()))
        assert result.orders["units_shipped"].sum() == 4  # promises kept (else PolicyError)
    assert costs["scheduled"] == (["A", "A", "B"], 2_500_000)
    assert costs["fluid"] == (["A", "B", "A"], 1_800_000)
