"""Rule baselines: hand-checked allocations on tiny networks, and sanity on demo carts."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from sourcing.baselines import POLICIES, greedy_nearest, priority_list, ship_complete_first
from sourcing.demo import demo_network, demo_order
from sourcing.errors import InvalidOrderError, Shortage, ShortageError
from sourcing.evaluate import evaluate
from sourcing.model import (
    UNLIMITED_CAPACITY,
    Allocation,
    Location,
    Network,
    NodeKind,
    Option,
    Order,
    OrderLine,
    ParcelLine,
    ParcelPlan,
)

NODES = ("A", "B", "C", "D")
SKUS = ("S1", "S2", "H")  # H is heavy: 30 kg
#: The destination sits just west of A; nodes lie east along latitude 40 about
#: 85 km apart, so distance (and nearness) grows A < B < C < D.
DEST = Location(40.0, -100.2)


def line_network(
    on_hand: dict[str, dict[str, int]],
    *,
    kinds: str = "SSSS",
    capacity: dict[str, int] | None = None,
    safety: dict[str, dict[str, int]] | None = None,
) -> Network:
    """Four nodes in a row; zone "1" up to 50 km (only A), zone "2" beyond.

    ground: zone 1 $5.00 + $1.00/kg, 3 days; zone 2 $9.00 + $2.00/kg, 4 days.
    express: zone 1 $15.00 + $0.50/kg, 1 day; zone 2 $25.00 + $1.00/kg, 2 days.
    Heavy parcels (over 20 kg in zone 1, 16 kg in zone 2) go cheaper by express.
    """
    stock = np.zeros((4, 3), dtype=np.int64)
    safe = np.zeros((4, 3), dtype=np.int64)
    for node, row in on_hand.items():
        for sku, qty in row.items():
            stock[NODES.index(node), SKUS.index(sku)] = qty
    for node, row in (safety or {}).items():
        for sku, qty in row.items():
            safe[NODES.index(node), SKUS.index(sku)] = qty
    cap = np.full(4, UNLIMITED_CAPACITY, dtype=np.int64)
    for node, c in (capacity or {}).items():
        cap[NODES.index(node)] = c
    return Network(
        node_ids=NODES,
        node_kinds=tuple(NodeKind.DC if k == "D" else NodeKind.STORE for k in kinds),
        lat=np.full(4, 40.0),
        lon=np.array([-100.0, -99.0, -98.0, -97.0]),
        handling_days=np.array([1, 1, 0, 0]),
        handling_cost=np.array([300, 300, 200, 200]) * 1000,  # millicents
        storage_cost=np.array([5, 5, 2, 2]) * 1000,
        capacity=cap,
        sku_ids=SKUS,
        weight_g=np.array([1000, 2000, 30000]),
        daily_demand=np.array([1.0, 2.0, 0.5]),
        on_hand=stock,
        safety_stock=safe,
        reserved=np.zeros((4, 3), dtype=np.int64),
        zone_ids=("1", "2"),
        zone_max_km=np.array([50.0, 20000.0]),
        service_ids=("ground", "express"),
        base_price=np.array([[500, 900], [1500, 2500]]) * 1000,
        per_kg=np.array([[100, 200], [50, 100]]) * 1000,
        transit_days=np.array([[3, 4], [1, 2]]),
        offered=np.ones((2, 2), dtype=np.bool_),
    )


def order(*lines: tuple[str, int]) -> Order:
    return Order(DEST, tuple(OrderLine(sku, qty) for sku, qty in lines))


def parcels(option: Option) -> list[tuple[str, str, list[tuple[int, str, int]]]]:
    """(node, service, [(line, sku, qty)]) per parcel, for compact comparison."""
    return [
        (p.node_id, p.service, [(pl.line, pl.sku, pl.qty) for pl in p.lines])
        for p in option.allocation.parcels
    ]


def check_option(network: Network, o: Order, option: Option, method: str) -> None:
    assert option.labels == ()
    assert option.proof.status == "HEURISTIC"
    assert math.isnan(option.proof.gap)
    assert option.proof.method == method
    assert option.evaluation.is_feasible, option.evaluation.violations
    again = evaluate(network, o, option.allocation, allow_partial=bool(option.evaluation.shortfall))
    assert again == option.evaluation
    assert option.cost == again.cost


def test_geometry_of_the_fixture() -> None:
    net = line_network({})
    zones = [
        evaluate(net, order(("S1", 1)), _one(node)).parcels[0].zone
        for node in NODES  # an allocation per node, only priced (stock is not there)
    ]
    assert zones == ["1", "2", "2", "2"]


def _one(node: str) -> Allocation:
    return Allocation((ParcelPlan(node, "ground", (ParcelLine(0, "S1", 1),)),))


def test_greedy_takes_the_nearest_node() -> None:
    net = line_network({"A": {"S1": 5}, "B": {"S1": 5}, "C": {"S1": 5}})
    o = order(("S1", 2))
    option = greedy_nearest(net, o)
    assert parcels(option) == [("A", "ground", [(0, "S1", 2)])]
    check_option(net, o, option, "greedy_nearest")
    # by hand: zone 1 ground $5 + $1/kg * 2 kg, handling $3, credit 2 x 5c x min(5/1, 30)
    assert option.cost == (500 + 200 + 300 - 2 * 25) * 1000
    assert option.delivery_days == 1 + 3


def test_greedy_skips_nodes_without_stock() -> None:
    net = line_network({"B": {"S1": 1}, "D": {"S1": 5}})
    option = greedy_nearest(net, order(("S1", 1)))
    assert parcels(option) == [("B", "ground", [(0, "S1", 1)])]


def test_greedy_splits_when_the_nearest_lacks_stock() -> None:
    net = line_network({"A": {"S1": 1}, "B": {"S1": 1}, "C": {"S1": 5}})
    o = order(("S1", 3), ("S2", 1))
    with pytest.raises(ShortageError):
        greedy_nearest(net, o)  # no S2 anywhere
    net = line_network({"A": {"S1": 1}, "B": {"S1": 1, "S2": 1}, "C": {"S1": 5}})
    option = greedy_nearest(net, o)
    assert parcels(option) == [
        ("A", "ground", [(0, "S1", 1)]),
        ("B", "ground", [(0, "S1", 1), (1, "S2", 1)]),
        ("C", "ground", [(0, "S1", 1)]),
    ]
    check_option(net, o, option, "greedy_nearest")


def test_lines_of_the_same_sku_share_stock() -> None:
    o = order(("S1", 1), ("S2", 1), ("S1", 2))
    net = line_network({"A": {"S1": 1}, "B": {"S1": 4, "S2": 1}})
    option = greedy_nearest(net, o)
    assert parcels(option) == [
        ("A", "ground", [(0, "S1", 1)]),
        ("B", "ground", [(1, "S2", 1), (2, "S1", 2)]),
    ]
    check_option(net, o, option, "greedy_nearest")


def test_safety_stock_is_not_available() -> None:
    net = line_network({"A": {"S1": 2}, "B": {"S1": 5}}, safety={"A": {"S1": 1}})
    option = greedy_nearest(net, order(("S1", 2)))
    assert parcels(option) == [("A", "ground", [(0, "S1", 1)]), ("B", "ground", [(0, "S1", 1)])]


def test_heavy_parcel_takes_the_cheaper_express() -> None:
    net = line_network({"A": {"H": 2}, "B": {"S1": 1}})
    o = order(("H", 1), ("S1", 1))
    option = greedy_nearest(net, o)
    # A, zone 1, 30 kg: ground 500 + 3000 > express 1500 + 1500; B, 1 kg: ground
    assert parcels(option) == [("A", "express", [(0, "H", 1)]), ("B", "ground", [(1, "S1", 1)])]
    check_option(net, o, option, "greedy_nearest")


def test_service_price_tie_goes_to_the_faster_one() -> None:
    net = line_network({"A": {"S1": 1}})
    net = net.replace(
        base_price=np.array([[500, 900], [500, 900]]) * 1000, per_kg=np.full((2, 2), 100_000)
    )
    option = greedy_nearest(net, order(("S1", 1)))
    assert parcels(option) == [("A", "express", [(0, "S1", 1)])]


def test_nodes_in_zones_without_service_are_not_used() -> None:
    net = line_network({"A": {"S1": 1}, "B": {"S1": 5}})
    net = net.replace(offered=np.array([[True, False], [True, False]]))
    o = order(("S1", 2))
    with pytest.raises(ShortageError) as err:
        greedy_nearest(net, o)
    assert err.value.shortages == (Shortage("S1", 2, 1),)
    option = greedy_nearest(net, o, allow_partial=True)
    assert parcels(option) == [("A", "ground", [(0, "S1", 1)])]


def test_capacity_is_respected() -> None:
    net = line_network({"A": {"S1": 5, "S2": 5}, "B": {"S1": 5, "S2": 5}}, capacity={"A": 2})
    o = order(("S1", 1), ("S2", 3))
    option = greedy_nearest(net, o)
    assert parcels(option) == [
        ("A", "ground", [(0, "S1", 1), (1, "S2", 1)]),
        ("B", "ground", [(1, "S2", 2)]),
    ]
    check_option(net, o, option, "greedy_nearest")


def test_capacity_shortage_is_reported() -> None:
    net = line_network({"A": {"S1": 5}}, capacity={"A": 1})
    o = order(("S1", 3))
    with pytest.raises(ShortageError) as err:
        greedy_nearest(net, o)
    assert err.value.shortages == (Shortage("S1", 3, 1),)
    assert "capacity" in str(err.value)
    option = greedy_nearest(net, o, allow_partial=True)
    assert parcels(option) == [("A", "ground", [(0, "S1", 1)])]
    assert option.evaluation.is_feasible


def test_shortage_lists_every_short_sku() -> None:
    net = line_network({"A": {"S1": 1, "H": 3}, "C": {"S1": 2}})
    o = order(("S1", 2), ("H", 1), ("S2", 1), ("S1", 2))
    for policy in (greedy_nearest, priority_list, ship_complete_first):
        with pytest.raises(ShortageError) as err:
            policy(net, o)
        assert err.value.shortages == (Shortage("S1", 4, 3), Shortage("S2", 1, 0))
        assert "S1 (requested 4, available 3)" in str(err.value)


def test_allow_partial_ships_what_exists() -> None:
    net = line_network({"A": {"S1": 1}, "C": {"S1": 2}})
    o = order(("S1", 2), ("S2", 1), ("S1", 2))
    option = greedy_nearest(net, o, allow_partial=True)
    assert parcels(option) == [
        ("A", "ground", [(0, "S1", 1)]),
        ("C", "ground", [(0, "S1", 1), (2, "S1", 1)]),
    ]
    assert option.evaluation.is_feasible
    missing = [(s.line, s.sku, s.requested, s.covered) for s in option.evaluation.shortfall]
    assert missing == [(1, "S2", 1, 0), (2, "S1", 2, 1)]
    check_option(net, o, option, "greedy_nearest")


def test_allow_partial_with_nothing_in_stock_is_an_empty_option() -> None:
    net = line_network({})
    option = ship_complete_first(net, order(("S1", 1)), allow_partial=True)
    assert option.num_parcels == 0 and option.cost == 0
    assert [s.missing for s in option.evaluation.shortfall] == [1]


def test_available_override() -> None:
    net = line_network({"A": {"S1": 5}, "B": {"S1": 5}})
    running = net.available.copy()
    running[0] = 0  # A sold out in the simulation
    option = greedy_nearest(net, order(("S1", 2)), available=running)
    assert parcels(option) == [("B", "ground", [(0, "S1", 2)])]
    with pytest.raises(ShortageError) as err:
        greedy_nearest(net, order(("S1", 6)), available=running)
    assert err.value.shortages == (Shortage("S1", 6, 5),)
    assert net.available[0, 0] == 5  # the network itself is untouched


def test_capacity_override() -> None:
    net = line_network({"A": {"S1": 5}, "B": {"S1": 5}})
    option = greedy_nearest(net, order(("S1", 2)), capacity=np.array([1, 10, 10, 10]))
    assert parcels(option) == [("A", "ground", [(0, "S1", 1)]), ("B", "ground", [(0, "S1", 1)])]


def test_priority_default_is_dcs_first_in_network_order() -> None:
    # A, B stores; C, D DCs. Everyone holds S1: the default list picks C.
    net = line_network({n: {"S1": 5} for n in NODES}, kinds="SSDD")
    o = order(("S1", 2))
    option = priority_list(net, o)
    assert parcels(option) == [("C", "ground", [(0, "S1", 2)])]
    check_option(net, o, option, "priority_list")
    # C short: the next DC (D), then the stores in network order (A)
    net = line_network(
        {"A": {"S1": 5}, "B": {"S1": 5}, "C": {"S1": 1}, "D": {"S1": 1}}, kinds="SSDD"
    )
    option = priority_list(net, order(("S1", 4)))
    assert parcels(option) == [
        ("C", "ground", [(0, "S1", 1)]),
        ("D", "ground", [(0, "S1", 1)]),
        ("A", "ground", [(0, "S1", 2)]),
    ]


def test_priority_explicit_list() -> None:
    net = line_network({n: {"S1": 2} for n in NODES})
    o = order(("S1", 3))
    option = priority_list(net, o, ["D", "B"])
    assert parcels(option) == [("D", "ground", [(0, "S1", 2)]), ("B", "ground", [(0, "S1", 1)])]
    check_option(net, o, option, "priority_list")
    # only listed nodes are used
    with pytest.raises(ShortageError) as err:
        priority_list(net, o, ["D"])
    assert err.value.shortages == (Shortage("S1", 3, 2),)
    with pytest.raises(ValueError, match="unknown"):
        priority_list(net, o, ["D", "Z"])
    with pytest.raises(ValueError, match="more than once"):
        priority_list(net, o, ["D", "D"])


def test_ship_complete_first_prefers_one_node_even_if_farther() -> None:
    net = line_network(
        {"A": {"S1": 1}, "B": {"S2": 1}, "C": {"S1": 1, "S2": 1}, "D": {"S1": 1, "S2": 1}}
    )
    o = order(("S1", 1), ("S2", 1))
    assert len(greedy_nearest(net, o).allocation.parcels) == 2
    option = ship_complete_first(net, o)
    assert parcels(option) == [("C", "ground", [(0, "S1", 1), (1, "S2", 1)])]
    check_option(net, o, option, "ship_complete_first")


def test_ship_complete_first_needs_capacity_for_the_whole_cart() -> None:
    net = line_network(
        {"A": {"S1": 1}, "C": {"S1": 2, "S2": 1}, "D": {"S1": 2, "S2": 1}}, capacity={"C": 2}
    )
    option = ship_complete_first(net, order(("S1", 2), ("S2", 1)))
    assert parcels(option) == [("D", "ground", [(0, "S1", 2), (1, "S2", 1)])]


def test_ship_complete_first_falls_back_to_greedy() -> None:
    net = line_network({"A": {"S1": 1}, "B": {"S2": 1}, "C": {"S1": 1}})
    o = order(("S1", 2), ("S2", 1))
    option = ship_complete_first(net, o)
    assert parcels(option) == parcels(greedy_nearest(net, o))
    assert parcels(option) == [
        ("A", "ground", [(0, "S1", 1)]),
        ("C", "ground", [(0, "S1", 1)]),
        ("B", "ground", [(1, "S2", 1)]),
    ]
    check_option(net, o, option, "ship_complete_first")


def test_invalid_order_is_rejected_first() -> None:
    net = line_network({"A": {"S1": 1}})
    for policy in POLICIES.values():
        with pytest.raises(InvalidOrderError):
            policy(net, order(("NOPE", 1)))
        with pytest.raises(InvalidOrderError):
            policy(net, order(("S1", 0)))


def test_bad_override_shapes() -> None:
    net = line_network({"A": {"S1": 1}})
    with pytest.raises(ValueError):
        greedy_nearest(net, order(("S1", 1)), available=np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError):
        greedy_nearest(net, order(("S1", 1)), capacity=np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_demo_carts_are_feasible_and_priced_right(name: str) -> None:
    policy: Callable[..., Option] = POLICIES[name]
    net = demo_network()
    rng = np.random.default_rng(2024)
    single = 0
    for _ in range(200):
        o = demo_order(net, rng, int(rng.integers(1, 9)))
        option = policy(net, o)
        check_option(net, o, option, name)
        fresh = evaluate(net, o, option.allocation)
        assert fresh.is_feasible and fresh.cost == option.cost
        assert fresh.delivery_days == option.delivery_days
        shipped = sum(pl.qty for p in option.allocation.parcels for pl in p.lines)
        assert shipped == sum(line.qty for line in o.lines)
        if name == "ship_complete_first":
            wanted: dict[int, int] = {}
            for line in o.lines:
                k = net.sku_index[line.sku]
                wanted[k] = wanted.get(k, 0) + line.qty
            ks, qs = list(wanted), list(wanted.values())
            can_alone = np.all(net.available[:, ks] >= qs, axis=1).any()
            assert (option.num_parcels == 1) == bool(can_alone)
            single += option.num_parcels == 1
    if name == "ship_complete_first":
        assert single > 0


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_transfer_lane_never_ships_to_a_customer(policy: str) -> None:
    """A network with a (far cheaper) transfer lane: baselines still pick a customer service."""
    net = line_network({"A": {"S1": 2}, "C": {"S2": 1}})
    net = net.replace(
        service_ids=("ground", "express", "transfer"),
        base_price=np.array([[500, 900], [1500, 2500], [1, 1]]) * 1000,
        per_kg=np.array([[100, 200], [50, 100], [0, 0]]) * 1000,
        transit_days=np.array([[3, 4], [1, 2], [1, 1]]),
        offered=np.ones((3, 2), dtype=np.bool_),
    )
    o = order(("S1", 2), ("S2", 1))
    option = POLICIES[policy](net, o)
    assert {p.service for p in option.allocation.parcels} <= {"ground", "express"}
    # The evaluator accepts it and prices it as the policy said.
    assert evaluate(net, o, option.allocation).is_feasible
    assert evaluate(net, o, option.allocation).cost == option.cost
