"""The fluid LP's opportunity costs, checked by hand on the two-node, two-region instance."""

from __future__ import annotations

import numpy as np
import pytest

from sourcing.forward.fluid import (
    Committed,
    DemandForecast,
    OrderHistory,
    Regions,
    forecast_demand,
    solve_fluid,
    unit_costs,
)

from forward_support import R1, R2, two_node_network


def _forecast(r1_units: float, r2_units: float) -> DemandForecast:
    regions = Regions(
        lat=np.array([R1.lat, R2.lat]),
        lon=np.array([R1.lon, R2.lon]),
        point_lat=np.array([R1.lat, R2.lat]),
        point_lon=np.array([R1.lon, R2.lon]),
        point_region=np.array([0, 1]),
        point_weight=np.array([1.0, 1.0]),
    )
    return DemandForecast(regions, np.array([[r1_units, 0.0], [r2_units, 0.0]]), 1.0, 1.0)


def test_a_unit_at_a_is_worth_ten_dollars_more_when_r1_wants_more_than_a_holds() -> None:
    # Demand 1.2 in R1 and 0.6 in R2; A and B hold one unit each. The LP serves R1 from A
    # ($5) and from B ($15) and R2 from B ($8): serving R1 from A instead of B saves $10, so
    # lambda_A - lambda_B = $10 exactly (both arcs into R1 are in the basis); B has 0.2 left,
    # so lambda_B = 0.
    network = two_node_network()
    solution = solve_fluid(network, network.available, _forecast(1.2, 0.6))
    assert solution.status == "OPTIMAL"
    lam = solution.opportunity[:, 0]
    assert lam.tolist() == [1_000_000, 0]
    assert solution.objective == pytest.approx(5e5 + 0.2 * 15e5 + 0.6 * 8e5)
    assert solution.lost_units == pytest.approx(0.0)
    # Priced, the R2 order prefers B: $8 + lambda_B < $5 + lambda_A.
    assert 800_000 + lam[1] < 500_000 + lam[0]


def test_a_short_sku_is_rationed_over_every_region_not_lost_where_dearest() -> None:
    # 3 + 1 units expected, 2 in stock: each region gets 2 x 0.98 / 4 of its demand
    # (R1 1.47, R2 0.49), so R1 still needs B, and nothing is lost.
    network = two_node_network()
    solution = solve_fluid(network, network.available, _forecast(3.0, 1.0))
    assert solution.lost_units == pytest.approx(0.0, abs=1e-9)
    assert solution.expected_units == pytest.approx(4.0)
    assert solution.objective == pytest.approx(5e5 + 0.47 * 15e5 + 0.49 * 8e5)
    lam = solution.opportunity[:, 0]
    assert lam[0] - lam[1] == 1_000_000


def test_stock_left_over_is_worth_nothing() -> None:
    network = two_node_network(stock=(5, 5))
    solution = solve_fluid(network, network.available, _forecast(1.5, 0.5))
    assert solution.opportunity.tolist() == [[0, 0], [0, 0]]


def test_a_held_order_is_priced_beside_the_expected_demand_with_its_unit_given_back() -> None:
    # The day put o1 (R2) on A's only unit; the batch prices it. Given back, A 1 and B 2
    # serve o1 (never rationed) and R1's 3 expected units rationed to 3 x 0.98 - 1 = 1.94:
    # R1 takes A's unit ($5 against $15, saving $10; o1 would save $3), B serves o1 ($8)
    # and R1's other 0.94 with 0.06 to spare. So lambda_A = $10, lambda_B = 0: o1 priced
    # at A costs $15 against $8 at B, and the batch moves it.
    network = two_node_network(stock=(1, 2))
    held = Committed(np.array([R2.lat]), np.array([R2.lon]), np.array([[1.0, 0.0]]))
    solution = solve_fluid(network, network.available, _forecast(3.0, 0.0), committed=held)
    assert solution.opportunity[:, 0].tolist() == [1_000_000, 0]
    assert solution.objective == pytest.approx(5e5 + 0.94 * 15e5 + 8e5)
    # Re-solved on the stock the day left (A 0, B 1 after o1), A's unit is not priced at
    # all: given back to the batch, it looks spare.
    after = two_node_network(stock=(0, 2))
    stale = solve_fluid(after, after.available, _forecast(3.0, 0.0))
    assert stale.opportunity[0, 0] == 0


def test_the_forecast_blends_the_planning_rate_with_history_and_shares_by_region() -> None:
    network = two_node_network()  # daily_demand 1.0
    history = OrderHistory(2)
    # Three units to R1 and one to R2 over 2 days of history.
    for at, where in ((0.0, R1), (0.5, R1), (1.0, R2), (2.0, R1)):
        history.add(where.lat, where.lon, at, {0: 1})
    forecast = forecast_demand(network, history, now_days=2.0, horizon_days=3.0)
    assert forecast is not None
    # rate = (4 observed + 7 days x 1.0) / (2 days + 7) = 11/9 per day; 3 days ahead.
    total = forecast.units[:, 0].sum()
    assert total == pytest.approx(3.0 * 11 / 9)
    r1 = int(
        np.argmin(np.abs(forecast.regions.lat - R1.lat) + np.abs(forecast.regions.lon - R1.lon))
    )
    # One SKU: its own shares and the pooled ones are both 3/4 in R1.
    assert forecast.units[r1, 0] / total == pytest.approx(0.75)
    assert forecast.units_per_parcel == 1.0


def test_no_history_no_forecast() -> None:
    assert forecast_demand(two_node_network(), OrderHistory(2), 0.0, 7.0) is None


# ------------------------------------------------- opportunity costs in a quote


def test_a_priced_quote_reports_the_reference_cost_and_the_opportunity_cost_apart() -> None:
    from sourcing.evaluate import evaluate
    from sourcing.menu import quote
    from sourcing.model import Label, OpportunityCosts, Order, OrderLine, QuoteSettings
    from sourcing.report import option_to_json

    network = two_node_network()
    order = Order(R2, (OrderLine("W", 1),))
    plain = quote(network, order).option(Label.CHEAPEST)
    assert plain is not None and plain.allocation.parcels[0].node_id == "A"
    assert plain.cost == 500_000 and plain.opportunity == 0
    # A's unit is worth $10 to R1's orders: the R2 order now takes B's ($8 < $5 + $10).
    prices = OpportunityCosts(("A", "B"), ("W",), np.array([[1_000_000], [0]]))  # no V: 0
    priced = quote(network, order, QuoteSettings(opportunity=prices))
    cheapest = priced.option(Label.CHEAPEST)
    assert cheapest is not None and cheapest.allocation.parcels[0].node_id == "B"
    assert cheapest.cost == 800_000 == evaluate(network, order, cheapest.allocation).cost
    assert cheapest.opportunity == 0 and cheapest.priced_cost == 800_000
    # Every option of the priced menu: reference cost from the evaluator, opportunity apart.
    for option in priced.frontier:
        units_at_a = sum(
            line.qty for p in option.allocation.parcels if p.node_id == "A" for line in p.lines
        )
        assert option.opportunity == 1_000_000 * units_at_a
        assert option.cost == evaluate(network, order, option.allocation).cost
    fastest = priced.option(Label.FASTEST)  # A: day 1, B: day 2
    assert fastest is not None and fastest.allocation.parcels[0].node_id == "A"
    document = option_to_json(fastest)
    assert document["cost"] == 5.0
    assert document["breakdown"]["opportunity_cost"] == 10.0


def test_opportunity_costs_follow_ids_not_positions() -> None:
    from sourcing.model import OpportunityCosts

    network = two_node_network()
    prices = OpportunityCosts(("B", "Z", "A"), ("Q", "W"), np.array([[1, 2], [3, 4], [5, 6]]))
    columns = prices.columns(network, np.array([0, 1]), np.array([0]))
    assert columns.tolist() == [[6], [2]]
    with pytest.raises(ValueError, match="shape"):
        OpportunityCosts(("A",), ("W",), np.array([[1, 2]]))


def test_unit_costs_of_the_stock_holders_alone_are_those_rows_of_every_node() -> None:
    # The fluid LP computes the (node, region) costs only for nodes holding stock.
    network = two_node_network()
    regions = _forecast(1.0, 1.0).regions
    fixed, per_g = unit_costs(network, regions, 1.0)
    only_b = unit_costs(network, regions, 1.0, np.array([1]))
    assert only_b[0][1].tolist() == fixed[1].tolist() == [1_500_000, 800_000]
    assert only_b[1][1].tolist() == per_g[1].tolist()
    assert only_b[0][0].tolist() == [0.0, 0.0]
    # And the prices do not depend on it: B empty, A's unit serves R1 ($5 vs nothing).
    empty_b = two_node_network(stock=(1, 0))
    assert solve_fluid(empty_b, empty_b.available, _forecast(1.2, 0.6)).opportunity[1, 0] == 0
