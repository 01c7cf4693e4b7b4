"""The tests' own reference cost (``reference.py``) against hand-worked prices, then
``sourcing.evaluate`` and ``sourcing.costs`` against it on random allocations.

The solver tests compare every option with the reference; this file is what
makes the reference itself trustworthy (hand-worked figures), and what catches
a change in the evaluator's or the cost arrays' rules directly, parcel by
parcel, including the allocations they must refuse.
"""

from __future__ import annotations

import numpy as np
import pytest

from sourcing.costs import OrderCosts, collect_costs, inbound_costs, order_costs
from sourcing.evaluate import evaluate
from sourcing.model import (
    UNLIMITED_CAPACITY,
    Allocation,
    Location,
    Network,
    NodeKind,
    Order,
    OrderLine,
    ParcelLine,
    ParcelPlan,
    Receipt,
)

from reference import great_circle_km, reference_price, unit_credit, unit_shipping, zone_name
from service_support import hand_network
from support import free_units, tiny_network

NYC = Location(40.7128, -74.0060)


def _parcel(node: str, service: str, *lines: tuple[int, str, int], wait: int | None = None):  # type: ignore[no-untyped-def]
    return ParcelPlan(node, service, tuple(ParcelLine(*line) for line in lines), wait)


def _with_lane(network: Network) -> Network:
    """``network`` plus a transfer lane: zone 1 $1.00 + $0.50/kg, 1 day; zone 2 $2.00 +
    $0.50/kg, 2 days; none in zone 3."""
    return network.replace(
        service_ids=(*network.service_ids, "transfer"),
        base_price=np.vstack([network.base_price, [[100_000, 200_000, 300_000]]]),
        per_kg=np.vstack([network.per_kg, [[50_000, 50_000, 50_000]]]),
        transit_days=np.vstack([network.transit_days, [[1, 2, 3]]]),
        offered=np.vstack([network.offered, [[True, True, False]]]),
    )


# ---------------------------------------------------------------- hand-worked prices


def test_the_reference_prices_the_hand_network_as_worked_out() -> None:
    # service_support.hand_network's docstring: ground zone 1 $5.00 + $1.00/kg, 1 day; zone 2
    # $7.00 + $1.00/kg, 2 days; zone 3 $9.00 + $1.00/kg, 3 days. A 1 kg, B 2 kg.
    net = hand_network()
    order = Order(NYC, (OrderLine("A", 2), OrderLine("B", 1)))
    one = Allocation((_parcel("DC-NJ", "ground", (0, "A", 2), (1, "B", 1)),))
    # NJ (14 km, zone 1): $5.00 + 4 kg x $1.00 + $2.00 handling = $11.00; 1 + 1 days.
    price = reference_price(net, order, one)
    assert (price.cost, price.delivery_days, price.problems) == (1_100_000, 2, ())
    split = Allocation(
        (
            _parcel("ST-PHL", "ground", (0, "A", 2)),
            _parcel("DC-CHI", "ground", (1, "B", 1)),
        )
    )
    # PHL (130 km, zone 2): $7.00 + $2.00 + $3.00 = $12.00, day 1 + 2 = 3;
    # CHI (1,145 km, zone 3): $9.00 + $2.00 + $1.50 = $12.50, day 0 + 3 = 3.
    price = reference_price(net, order, split)
    assert [(p.zone, p.cost, p.arrival_days) for p in price.parcels] == [
        ("2", 1_200_000, 3),
        ("3", 1_250_000, 3),
    ]
    assert (price.cost, price.delivery_days, price.problems) == (2_450_000, 3, ())
    assert 13 < great_circle_km(40.7357, -74.1724, NYC.lat, NYC.lon) < 15
    assert 1140 < great_circle_km(41.8781, -87.6298, NYC.lat, NYC.lon) < 1150


def test_the_storage_credit_is_cover_capped_by_the_horizon_and_rounded_half_to_even() -> None:
    net = hand_network({("DC-NJ", "A"): 12, ("DC-NJ", "B"): 1}).replace(
        storage_cost=np.array([3_000, 0, 0]), daily_demand=np.array([0.64, 0.0])
    )
    # A: 12 / 0.64 = 18.75 days of cover: 3 cents x 18.75 = 56.25 cents = 56,250 millicents.
    assert unit_credit(net, "DC-NJ", "A") == 56_250
    # B sells nothing: the whole 30-day horizon, 3 x 30 = 90 cents.
    assert unit_credit(net, "DC-NJ", "B") == 90_000
    # A horizon of 7 days caps A's cover too: 21 cents.
    assert unit_credit(net.replace(horizon_days=7.0), "DC-NJ", "A") == 21_000
    # One unit on hand: 1 / 0.64 = 1.5625 days, 3 x 1.5625 = 4.6875 cents = 4,687.5
    # millicents, a tie: half to even, 4,688.
    assert unit_credit(net.replace(on_hand=np.array([[1, 1], [5, 0], [50, 50]])), "DC-NJ", "A") == (
        4_688
    )
    order = Order(NYC, (OrderLine("A", 2),))
    price = reference_price(net, order, Allocation((_parcel("DC-NJ", "ground", (0, "A", 2)),)))
    # $5.00 + 2 kg x $1.00 + $2.00 - 2 x 56.25 cents = $7.875 = 787,500 millicents.
    assert (price.cost, price.problems) == (787_500, ())


def test_the_reference_prices_collect_and_waiting_units_as_worked_out() -> None:
    net = _with_lane(hand_network()).replace(
        receipts=(Receipt("R1", "DC-CHI", "B", 2, 4), Receipt("R2", "DC-CHI", "B", 1, 4))
    )
    order = Order(NYC, (OrderLine("A", 1), OrderLine("B", 3)))
    collect = Allocation(
        (
            _parcel("ST-PHL", "pickup", (0, "A", 1)),
            _parcel("DC-NJ", "transfer", (1, "B", 2)),
            _parcel("DC-CHI", "transfer", (1, "B", 1), wait=4),
        ),
        pickup="ST-PHL",
    )
    price = reference_price(net, order, collect)
    # PHL picks its own A: $3.00 handling, ready after 1 day. NJ -> PHL (about 130 km, zone 2)
    # by the lane: $2.00 + 4 kg x $0.50 + $2.00 = $6.00, 1 + 2 = day 3. CHI -> PHL (about
    # 1,050 km, zone 3): no lane row there, so the allocation breaks a rule; priced anyway:
    # $3.00 + 2 kg x $0.50 + $1.50, ready 4 + 0 + 3 = day 7 (waiting units: no credit).
    assert [(p.zone, p.cost, p.arrival_days) for p in price.parcels] == [
        ("", 300_000, 1),
        ("2", 600_000, 3),
        ("3", 550_000, 7),
    ]
    assert price.problems == ("DC-CHI: no transfer rate row in zone 3",)
    delivered = Allocation(
        (
            _parcel("DC-NJ", "ground", (0, "A", 1), (1, "B", 2)),
            _parcel("DC-CHI", "ground", (1, "B", 1), wait=4),
        )
    )
    price = reference_price(net, order, delivered)
    # NJ: $5.00 + 5 kg + $2.00 = $12.00, day 2; CHI waits for day 4: $9.00 + 2 kg + $1.50
    # = $12.50, day 4 + 0 + 3 = 7.
    assert (price.cost, price.delivery_days, price.problems) == (2_450_000, 7, ())
    too_many = Allocation((_parcel("DC-CHI", "ground", (0, "B", 4), wait=4),))
    assert reference_price(net, Order(NYC, (OrderLine("B", 4),)), too_many).problems == (
        "DC-CHI/B: 4 units wait for day 4, 3 due",
    )


def test_the_reference_refuses_what_may_not_be_promised() -> None:
    net = hand_network({("DC-NJ", "A"): 5}).replace(
        safety_stock=np.array([[2, 0], [0, 0], [0, 0]]),
        reserved=np.array([[1, 0], [0, 0], [0, 0]]),
        capacity=np.array([UNLIMITED_CAPACITY, 1, UNLIMITED_CAPACITY]),
    )
    order = Order(NYC, (OrderLine("A", 3),))
    # 5 on hand - 2 safety - 1 reserved = 2 free at NJ; PHL ships at most 1 unit a day.
    assert reference_price(
        net, order, Allocation((_parcel("DC-NJ", "ground", (0, "A", 3)),))
    ).problems == ("DC-NJ/A: 3 units, more than it may promise",)
    assert reference_price(
        net, order, Allocation((_parcel("ST-PHL", "ground", (0, "A", 3)),))
    ).problems == ("ST-PHL: 3 units, over its daily capacity 1",)
    assert reference_price(
        net, order, Allocation((_parcel("DC-NJ", "ground", (0, "A", 2)),))
    ).problems == ("line 0: 2 of 3 units",)
    assert (
        reference_price(
            net,
            order,
            Allocation((_parcel("DC-NJ", "ground", (0, "A", 2)),)),
            allow_partial=True,
        ).problems
        == ()
    )
    assert reference_price(
        net,
        order,
        Allocation(
            (_parcel("DC-NJ", "ground", (0, "A", 2)), _parcel("DC-NJ", "ground", (0, "A", 1)))
        ),
    ).problems == (
        "two parcels from DC-NJ (inbound day None)",
        "DC-NJ/A: 3 units, more than it may promise",
    )


def test_a_distance_on_a_band_edge_is_in_that_band_and_past_the_last_in_the_last() -> None:
    # DESIGN 7: the first zone whose max_km >= the distance; the last covers everything beyond.
    from sourcing.costs import zone_of
    from sourcing.evaluate import _zone_index

    net = hand_network()  # bands: 100, 1000, 20000 km
    distances = [0.0, 99.9, 100.0, 100.1, 1000.0, 19_999.0, 20_000.0, 20_015.1]
    expected = [0, 0, 0, 1, 1, 2, 2, 2]
    assert [network_zone for network_zone in zone_of(net, np.array(distances))] == expected
    assert [_zone_index(net, km) for km in distances] == expected
    assert [net.zone_ids.index(zone_name(net, km)) for km in distances] == expected


def test_antipodes_are_half_the_circumference_apart() -> None:
    # Rounding lifts the haversine's sine term to 1 + 2**-52 here; the clamp keeps asin defined.
    from sourcing.costs import haversine_km
    from sourcing.evaluate import _great_circle_km

    half = np.pi * 6371.0
    assert (
        abs(float(haversine_km(np.array([-87.5]), np.array([0.0]), 87.5, 180.0)[0]) - half) < 1e-6
    )
    assert abs(_great_circle_km(-87.5, 0.0, 87.5, 180.0) - half) < 1e-6
    assert abs(great_circle_km(-87.5, 0.0, 87.5, 180.0) - half) < 1e-6


def test_the_evaluator_refuses_a_partial_allocation_unless_asked() -> None:
    net = hand_network()
    order = Order(NYC, (OrderLine("A", 2),))
    one = Allocation((_parcel("DC-NJ", "ground", (0, "A", 1)),))
    assert evaluate(net, order, one).violations == ("line 0 (A): 1 of 2 units covered",)
    partial = evaluate(net, order, one, allow_partial=True)
    assert partial.is_feasible
    assert [(s.line, s.sku, s.requested, s.covered) for s in partial.shortfall] == [(0, "A", 2, 1)]


def _case(*parcels: ParcelPlan, pickup: str | None = None) -> Allocation:
    return Allocation(parcels, pickup)


_A1 = (0, "A", 1)
_BROKEN: list[tuple[str, tuple[tuple[str, int], ...], Allocation, tuple[str, ...]]] = [
    (
        "unknown pickup store",
        (("A", 1),),
        _case(_parcel("DC-NJ", "ground", _A1), pickup="NOPE"),
        ("pickup store 'NOPE': unknown node",),
    ),
    (
        "pickup at a DC",
        (("A", 1),),
        _case(_parcel("DC-NJ", "pickup", _A1), pickup="DC-NJ"),
        ("pickup node 'DC-NJ' is not a store",),
    ),
    (
        "unknown node",
        (("A", 2),),
        _case(_parcel("XX", "ground", _A1), _parcel("DC-NJ", "ground", _A1)),
        ("parcel 0 (XX): unknown node",),
    ),
    (
        "unknown service",
        (("A", 2),),
        _case(_parcel("DC-NJ", "air", _A1), _parcel("ST-PHL", "ground", _A1)),
        ("parcel 0 (DC-NJ): unknown service 'air'",),
    ),
    (
        "the pickup store's own units shipped",
        (("A", 1),),
        _case(_parcel("ST-PHL", "ground", _A1), pickup="ST-PHL"),
        (
            "parcel 0 (ST-PHL): units at the pickup store are picked there "
            "(service 'pickup'), not 'ground'",
        ),
    ),
    (
        "a collect parcel by ground",
        (("A", 1),),
        _case(_parcel("DC-NJ", "ground", _A1), pickup="ST-PHL"),
        ("parcel 0 (DC-NJ): must travel to the pickup store by 'transfer'",),
    ),
    (
        "a delivery by the lane",
        (("A", 1),),
        _case(_parcel("DC-NJ", "transfer", _A1)),
        ("parcel 0 (DC-NJ): the transfer lane does not ship to customers",),
    ),
    (
        "a negative inbound day",
        (("A", 1),),
        _case(_parcel("DC-NJ", "ground", _A1, wait=-1)),
        (
            "parcel 0 (DC-NJ): inbound day -1 is negative",
            "node DC-NJ: 1 units of A wait for day -1, 0 free in its receipts due then",
        ),
    ),
    (
        "two parcels from one node",
        (("A", 2),),
        _case(_parcel("DC-NJ", "ground", _A1), _parcel("DC-NJ", "ground", _A1)),
        ("parcel 1 (DC-NJ): a second parcel from the same node",),
    ),
    (
        "an empty parcel",
        (("A", 1),),
        _case(_parcel("DC-NJ", "ground")),
        ("parcel 0 (DC-NJ): empty parcel",),
    ),
    (
        "no lane in that zone",
        (("A", 1),),
        _case(_parcel("DC-CHI", "transfer", _A1), pickup="ST-PHL"),
        ("parcel 0 (DC-CHI): service transfer not offered in zone 3",),
    ),
    # Each bad line is skipped, and the parcel's next line still counts.
    (
        "no such line",
        (("A", 1), ("B", 1)),
        _case(_parcel("DC-NJ", "ground", (2, "A", 1), (0, "A", 1), (1, "B", 1))),
        ("parcel 0 (DC-NJ): no order line 2",),
    ),
    (
        "the line's SKU differs",
        (("A", 1), ("B", 1)),
        _case(_parcel("DC-NJ", "ground", (0, "B", 1), (0, "A", 1), (1, "B", 1))),
        ("parcel 0 (DC-NJ): line 0 is A, not B",),
    ),
    (
        "no units",
        (("A", 1), ("B", 1)),
        _case(_parcel("DC-NJ", "ground", (0, "A", 0), (0, "A", 1), (1, "B", 1))),
        ("parcel 0 (DC-NJ): line 0 has qty 0",),
    ),
    (
        "two lines of one SKU over the stock",
        (("A", 3), ("A", 3)),
        _case(_parcel("DC-NJ", "ground", (0, "A", 3), (1, "A", 3))),
        ("node DC-NJ: 6 units of A taken, 5 available",),
    ),
    (
        "two lines of one SKU over the receipts",
        (("B", 1), ("B", 2)),
        _case(_parcel("DC-CHI", "ground", (0, "B", 1), (1, "B", 2), wait=4)),
        ("node DC-CHI: 3 units of B wait for day 4, 2 free in its receipts due then",),
    ),
    (
        "over the daily capacity",
        (("A", 2),),
        _case(_parcel("ST-PHL", "ground", (0, "A", 2))),
        ("parcel 0 (ST-PHL): 2 units exceed daily capacity 1",),
    ),
    (
        "more than the receipts bring",
        (("B", 3),),
        _case(_parcel("DC-CHI", "ground", (0, "B", 3), wait=4)),
        ("node DC-CHI: 3 units of B wait for day 4, 2 free in its receipts due then",),
    ),
    (
        "more than on hand",
        (("A", 6),),
        _case(_parcel("DC-NJ", "ground", (0, "A", 6))),
        ("node DC-NJ: 6 units of A taken, 5 available",),
    ),
    (
        "more than ordered",
        (("A", 1),),
        _case(_parcel("DC-NJ", "ground", (0, "A", 2))),
        ("line 0 (A): 2 units shipped, 1 ordered",),
    ),
]


@pytest.mark.parametrize(
    ("lines", "allocation", "expected"), [c[1:] for c in _BROKEN], ids=[c[0] for c in _BROKEN]
)
def test_the_evaluator_names_each_rule_an_allocation_breaks(
    lines: tuple[tuple[str, int], ...], allocation: Allocation, expected: tuple[str, ...]
) -> None:
    # The hand network with a lane (none in zone 3), 2 B due at Chicago on day 4, and
    # Philadelphia shipping at most 1 unit a day.
    net = _with_lane(hand_network()).replace(
        receipts=(Receipt("R1", "DC-CHI", "B", 2, 4),),
        capacity=np.array([UNLIMITED_CAPACITY, 1, UNLIMITED_CAPACITY]),
    )
    order = Order(NYC, tuple(OrderLine(sku, qty) for sku, qty in lines))
    got = evaluate(net, order, allocation, allow_partial=True)
    assert got.violations == expected
    assert not got.is_feasible and got.pickup == allocation.pickup
    # Every parcel with a known node and service is priced, and only those.
    known = [
        p.node_id
        for p in allocation.parcels
        if p.node_id in net.node_ids and p.service in (*net.service_ids, "pickup")
    ]
    if allocation.pickup != "NOPE":
        assert [p.node_id for p in got.parcels] == known
    if expected[0].startswith("parcel 0 (DC-NJ): ") and "line" in expected[0]:
        assert got.shortfall == ()  # the good lines after the bad one were counted
    if allocation.pickup == "NOPE":  # nothing can be priced without the store
        assert (got.parcels, got.shortfall) == ((), ())


# ---------------------------------------------------------- the engine against it


def _random_network(rng: np.random.Generator) -> Network:
    base = tiny_network(
        rng,
        n_nodes=int(rng.integers(2, 5)),
        n_skus=int(rng.integers(1, 4)),
        n_services=int(rng.integers(1, 4)),
        max_stock=4,
        capacity_prob=0.4,
    )
    z = len(base.zone_ids)
    receipts = tuple(
        Receipt(
            f"R{i}",
            base.node_ids[int(rng.integers(len(base.node_ids)))],
            base.sku_ids[int(rng.integers(len(base.sku_ids)))],
            int(rng.integers(1, 4)),
            int(rng.integers(0, 4)),
        )
        for i in range(int(rng.integers(0, 4)))
    )
    return base.replace(
        service_ids=(*base.service_ids, "transfer"),
        base_price=np.vstack([base.base_price, rng.integers(100, 600, (1, z)) * 1000]),
        # Sub-cent per-kg prices too: each unit's charge is rounded to the millicent.
        per_kg=np.vstack([base.per_kg, rng.integers(0, 150_000, (1, z))]),
        transit_days=np.vstack([base.transit_days, rng.integers(0, 3, (1, z))]),
        offered=np.vstack([base.offered, rng.random((1, z)) < 0.7]),
        receipts=receipts,
        horizon_days=float(rng.choice([7.0, 30.0, 90.0])),
        # Sometimes bands that end before the farthest US distances: the last covers the rest.
        zone_max_km=[
            np.array([800.0, 2000.0, 20000.0]),
            np.array([300.0, 1200.0, 2500.0]),
            np.array([150.0, 600.0, 1000.0]),
        ][int(rng.integers(3))],
        safety_stock=base.safety_stock + (rng.random(base.safety_stock.shape) < 0.2),
    )


def _random_allocation(
    rng: np.random.Generator, network: Network, order: Order
) -> tuple[Allocation, bool]:
    """A well-formed allocation (known names, matching SKUs, positive quantities) and whether
    it is partial. Mostly drawn from what is free (stock first, then receipts), so it is often
    feasible; sometimes drawn at random, breaking any rule: stock, capacity, receipts,
    coverage, services, one parcel per source."""
    stores = [n for n, k in zip(network.node_ids, network.node_kinds, strict=True) if k == "store"]
    pickup = None
    if rng.random() < 0.35:
        pickup = network.node_ids[int(rng.integers(len(network.node_ids)))]
        if stores and rng.random() < 0.85:
            pickup = stores[int(rng.integers(len(stores)))]
    customer = [s for s in network.service_ids if s != "transfer"]
    contents: dict[tuple[str, int | None], list[ParcelLine]] = {}
    partial = False
    if rng.random() < 0.7:
        free = {
            (node, sku): int(free_units(network)[n, k])
            for n, node in enumerate(network.node_ids)
            for k, sku in enumerate(network.sku_ids)
        }
        due: dict[tuple[str, str, int], int] = {}
        for r in network.receipts:
            due[(r.node_id, r.sku, r.expected_day)] = (
                due.get((r.node_id, r.sku, r.expected_day), 0) + r.qty
            )
        for i, line in enumerate(order.lines):
            left = line.qty
            for n in rng.permutation(len(network.node_ids)).tolist():
                node = network.node_ids[n]
                take = min(left, free[(node, line.sku)])
                if take:
                    contents.setdefault((node, None), []).append(ParcelLine(i, line.sku, take))
                    free[(node, line.sku)] -= take
                    left -= take
            for (node, sku, day), qty in sorted(due.items()):
                take = min(left, qty) if sku == line.sku else 0
                if take:
                    contents.setdefault((node, day), []).append(ParcelLine(i, line.sku, take))
                    due[(node, sku, day)] -= take
                    left -= take
            partial = partial or left > 0
    else:
        for node in network.node_ids:
            for wait in (None, int(rng.integers(0, 4))):
                if rng.random() > (0.6 if wait is None else 0.25):
                    continue
                picks = rng.permutation(len(order.lines))[: int(rng.integers(1, 3))].tolist()
                contents[(node, wait)] = [
                    ParcelLine(i, order.lines[i].sku, int(rng.integers(1, 4))) for i in picks
                ]
        partial = bool(rng.random() < 0.3)
    parcels = []
    for (node, wait), lines in contents.items():
        if pickup is not None and node == pickup:
            service = "pickup"
        elif pickup is not None:
            service = "transfer" if rng.random() < 0.95 else customer[0]
        else:
            service = customer[int(rng.integers(len(customer)))]
            if rng.random() < 0.03:
                service = "transfer"
        parcels.append(ParcelPlan(node, service, tuple(sorted(lines, key=lambda x: x.line)), wait))
    if parcels and rng.random() < 0.03:
        parcels.append(parcels[0])  # two parcels from one source
    return Allocation(tuple(parcels), pickup), partial


@pytest.mark.parametrize("block", range(4))
def test_the_evaluator_agrees_with_the_reference_parcel_by_parcel(block: int) -> None:
    feasible = infeasible = collect = waiting = credited = 0
    for seed in range(block * 250, (block + 1) * 250):
        rng = np.random.default_rng(70_000 + seed)
        network = _random_network(rng)
        order = Order(
            Location(float(rng.uniform(28, 47)), float(rng.uniform(-122, -72))),
            tuple(
                OrderLine(network.sku_ids[int(rng.integers(len(network.sku_ids)))], int(q))
                for q in rng.integers(1, 5, int(rng.integers(1, 4)))
            ),
        )
        allocation, partial = _random_allocation(rng, network, order)
        if not allocation.parcels:
            continue
        got = evaluate(network, order, allocation, allow_partial=partial)
        want = reference_price(network, order, allocation, allow_partial=partial)
        assert [(p.node_id, p.zone, p.cost, p.arrival_days) for p in got.parcels] == [
            (p.node_id, p.zone, p.cost, p.arrival_days) for p in want.parcels
        ], seed
        assert [round(p.distance_km, 6) for p in got.parcels] == [
            round(p.distance_km, 6) for p in want.parcels
        ], seed
        assert (got.cost, got.delivery_days) == (want.cost, want.delivery_days), seed
        assert got.is_feasible == (want.problems == ()), (seed, got.violations, want.problems)
        feasible += got.is_feasible
        infeasible += not got.is_feasible
        collect += allocation.pickup is not None
        waiting += any(p.inbound_day is not None for p in allocation.parcels)
        credited += got.storage_credit > 0
    # Both verdicts, every way to fulfil and the credit must keep coming up.
    assert min(feasible, infeasible, collect, waiting, credited) >= 50, (
        feasible,
        infeasible,
        collect,
        waiting,
        credited,
    )


INT_FIELDS = (
    "skus", "demand", "nodes", "available", "capacity", "zone", "fixed", "unit", "arrival",
    "credit", "per_unit_shipping", "services",
)  # fmt: skip


def _check_arrays(
    network: Network,
    order: Order,
    arrays: OrderCosts,
    *,
    to: tuple[float, float],
    pickup: str | None,
    service_names: list[str],
    days: list[int | None],
    units_at: dict[tuple[int, int | None], list[int]],
) -> int:
    """Every field of one leg's (or delivery's) cost arrays against the reference rules.

    ``units_at[(node, inbound day)]``: what that source may give of each SKU, before the
    clip to the demand. Returns how many (candidate, service) prices were compared.
    """
    # Integer money and units throughout (exact arithmetic, CP-SAT's integer coefficients).
    for name in INT_FIELDS:
        assert getattr(arrays, name).dtype == np.int64, name
    assert arrays.usable.dtype == np.bool_ and arrays.distance_km.dtype == np.float64
    k = len(network.sku_ids)
    assert arrays.skus.tolist() == list(range(k))
    wanted = [sum(line.qty for line in order.lines if line.sku == s) for s in network.sku_ids]
    assert arrays.demand.tolist() == wanted
    expected_sources = sorted(key for key, units in units_at.items() if any(units))
    got_sources = sorted(
        zip(arrays.nodes.tolist(), days, strict=True), key=lambda x: (x[0], x[1] or -1)
    )
    assert got_sources == sorted(expected_sources, key=lambda x: (x[0], x[1] or -1))
    compared = 0
    for c, n in enumerate(arrays.nodes.tolist()):
        node = network.node_ids[n]
        wait = days[c]
        stock = wait is None
        units = arrays.available[c]
        assert units.tolist() == np.minimum(units_at[(n, wait)], wanted).tolist()
        limit = int(network.capacity[n]) if stock else UNLIMITED_CAPACITY
        assert int(arrays.capacity[c]) == min(limit, sum(wanted))
        km = great_circle_km(float(network.lat[n]), float(network.lon[n]), *to)
        assert abs(float(arrays.distance_km[c]) - km) < 1e-6
        z = network.zone_ids.index(zone_name(network, km))
        assert int(arrays.zone[c]) == z
        credits = [unit_credit(network, node, s) if stock else 0 for s in network.sku_ids]
        assert arrays.credit[c].tolist() == credits
        lines = tuple(
            ParcelLine(i, network.sku_ids[i], int(units[i])) for i in range(k) if units[i] > 0
        )
        for v, name in enumerate(service_names):
            at_store = pickup is not None and node == pickup
            if name == "pickup":
                usable, per_kg = at_store, 0
            else:
                row = network.service_ids.index(name)
                lane_ok = (name == "transfer") == (pickup is not None)
                usable = bool(network.offered[row, z]) and lane_ok and not at_store
                per_kg = int(network.per_kg[row, z])
            assert bool(arrays.usable[c, v]) == usable, (node, name)
            if not usable:
                continue
            weights = [unit_shipping(per_kg, int(g)) for g in network.weight_g]
            assert arrays.per_unit_shipping[c, v].tolist() == weights, (node, name)
            parcel = ParcelPlan(node, name, lines, wait)
            price = reference_price(
                network, order, Allocation((parcel,), pickup), allow_partial=True
            )
            fixed = int(arrays.fixed[c, v])
            assert fixed + int(arrays.unit[c, v] @ units) == price.cost, (node, name, wait)
            assert int(arrays.arrival[c, v]) == price.delivery_days, (node, name, wait)
            compared += 1
    return compared


@pytest.mark.parametrize("block", range(3))
def test_the_cost_arrays_agree_with_the_reference(block: int) -> None:
    """Every field of ``order_costs`` (delivery), ``inbound_costs`` (receipts) and
    ``collect_costs`` (pickup + lane, from stock or receipts), against the reference: the
    candidates and their units, distance, zone, credit, usable services, per-unit shipping,
    and each candidate's fixed + per-unit cost and arrival as a one-parcel price."""
    compared = 0
    for seed in range(block * 100, (block + 1) * 100):
        rng = np.random.default_rng(90_000 + seed)
        network = _random_network(rng)
        k = len(network.sku_ids)
        skus = np.arange(k, dtype=np.int64)
        demand = rng.integers(1, 6, k).astype(np.int64)
        lat, lon = float(rng.uniform(28, 47)), float(rng.uniform(-122, -72))
        order = Order(
            Location(lat, lon),
            tuple(OrderLine(s, int(q)) for s, q in zip(network.sku_ids, demand, strict=True)),
        )
        free = free_units(network)
        on_shelf = {(n, None): free[n].tolist() for n in range(len(network.node_ids))}
        due: dict[tuple[int, int | None], list[int]] = {}
        for r in network.receipts:
            row = due.setdefault((network.node_ids.index(r.node_id), r.expected_day), [0] * k)
            row[network.sku_ids.index(r.sku)] += r.qty
        customer = [s for s in network.service_ids if s != "transfer"]

        costs = order_costs(network, lat, lon, skus, demand)
        assert [network.service_ids[v] for v in costs.services] == customer
        compared += _check_arrays(
            network, order, costs, to=(lat, lon), pickup=None, service_names=customer,
            days=[None] * costs.nodes.size, units_at=on_shelf,
        )  # fmt: skip
        # A caller's own running stock (the simulator's, the batch job's) replaces the network's.
        running = np.maximum(free - 1, 0)
        mine = order_costs(network, lat, lon, skus, demand, available=running)
        compared += _check_arrays(
            network, order, mine, to=(lat, lon), pickup=None, service_names=customer,
            days=[None] * mine.nodes.size,
            units_at={(n, None): running[n].tolist() for n in range(len(network.node_ids))},
        )  # fmt: skip

        inbound = inbound_costs(network, lat, lon, skus, demand)
        assert inbound.service_ids == network.service_ids and inbound.pickup is None
        assert inbound.inbound_day.dtype == np.int64
        assert inbound.costs.services.tolist() == list(range(len(network.service_ids)))
        compared += _check_arrays(
            network, order, inbound.costs, to=(lat, lon), pickup=None,
            service_names=list(network.service_ids), days=inbound.inbound_day.tolist(),
            units_at=due,
        )  # fmt: skip

        stores = [i for i, kind in enumerate(network.node_kinds) if kind is NodeKind.STORE]
        if not stores:
            continue
        store = stores[int(rng.integers(len(stores)))]
        to = (float(network.lat[store]), float(network.lon[store]))
        legs = [
            (collect_costs(network, store, skus, demand), on_shelf),  # from stock, by default
            (collect_costs(network, store, skus, demand, inbound=True), due),
            (
                collect_costs(network, store, skus, demand, available=running),
                {(n, None): running[n].tolist() for n in range(len(network.node_ids))},
            ),
        ]
        for leg, units_at in legs:
            assert leg.service_ids == ("pickup", "transfer") and leg.pickup == store
            assert leg.costs.services.tolist() == [0, 1] and leg.inbound_day.dtype == np.int64
            days = [None if d == -1 else int(d) for d in leg.inbound_day.tolist()]
            if units_at is not due:
                assert leg.inbound_day.tolist() == [-1] * leg.costs.nodes.size
            compared += _check_arrays(
                network, order, leg.costs, to=to, pickup=network.node_ids[store],
                service_names=list(leg.service_ids), days=days, units_at=units_at,
            )  # fmt: skip
    assert compared >= 1000, compared
