"""Hand-solved cases: every expected figure below is worked out in the comments.

One zone covers every distance, so a parcel costs base + per_kg * kg +
handling, whatever the coordinates. Rate card:
    ground:  base $5.00, $1.00/kg, 3 days
    express: base $15.00, $2.00/kg, 1 day
Nodes A and B: handling $1.00 per parcel, 0 handling days. SKUs P and Q weigh 1 kg.
"""

from __future__ import annotations

import numpy as np
import pytest

from sourcing import QuoteSettings, quote
from sourcing.demo import demo_network, demo_order
from sourcing.errors import InvalidOrderError
from sourcing.evaluate import evaluate
from sourcing.model import (
    UNLIMITED_CAPACITY,
    Label,
    Location,
    Network,
    NodeKind,
    Order,
    OrderLine,
)

from networks import random_cart, regime_network

DEST = Location(40.0, -90.0)
DOLLAR = 100_000  # millicents


def network(
    on_hand: list[list[int]],
    storage_cost_cents: tuple[int, int] = (0, 0),
    capacity: tuple[int, int] = (UNLIMITED_CAPACITY, UNLIMITED_CAPACITY),
) -> Network:
    return Network(
        node_ids=("A", "B"),
        node_kinds=(NodeKind.DC, NodeKind.STORE),
        lat=np.array([41.0, 39.0]),
        lon=np.array([-88.0, -92.0]),
        handling_days=np.array([0, 0]),
        handling_cost=np.array([100_000, 100_000]),  # millicents
        storage_cost=np.array(storage_cost_cents) * 1000,
        capacity=np.array(capacity),
        sku_ids=("P", "Q"),
        weight_g=np.array([1000, 1000]),
        daily_demand=np.array([1.0, 1.0]),
        on_hand=np.array(on_hand),
        safety_stock=np.zeros((2, 2), dtype=np.int64),
        reserved=np.zeros((2, 2), dtype=np.int64),
        zone_ids=("1",),
        zone_max_km=np.array([20_000.0]),
        service_ids=("ground", "express"),
        base_price=np.array([[500_000], [1_500_000]]),
        per_kg=np.array([[100_000], [200_000]]),
        transit_days=np.array([[3], [1]]),
        offered=np.ones((2, 1), dtype=bool),
    )


def order(*lines: tuple[str, int]) -> Order:
    return Order(DEST, tuple(OrderLine(sku, qty) for sku, qty in lines))


def parcels(option: object) -> set[tuple[str, str, tuple[tuple[str, int], ...]]]:
    return {
        (p.node_id, p.service, tuple((pl.sku, pl.qty) for pl in p.lines))
        for p in option.evaluation.parcels  # type: ignore[attr-defined]
    }


def test_split_wins_when_storage_credit_pays_for_the_second_parcel() -> None:
    # A holds P and Q; B holds 100 Q and stores at $0.25/unit/day. Q sells 1/day,
    # so B's cover is 100 days, capped at 30: credit 0.25 * 30 = $7.50 per Q shipped from B.
    #   one parcel from A, ground:  5 + 2 kg * 1 + 1          = $8.00, day 3
    #   A ships P, B ships Q, ground: (5+1+1) + (5+1+1) - 7.50 = $6.50, day 3
    #   one parcel from A, express: 15 + 2 kg * 2 + 1         = $20.00, day 1
    net = network([[5, 5], [0, 100]], storage_cost_cents=(0, 25))
    q = quote(net, order(("P", 1), ("Q", 1)), QuoteSettings(value_of_day=1 * DOLLAR))

    cheapest = q.option(Label.CHEAPEST)
    assert cheapest is not None
    assert cheapest.cost == 650 * 1000 and cheapest.delivery_days == 3
    assert parcels(cheapest) == {("A", "ground", (("P", 1),)), ("B", "ground", (("Q", 1),))}
    assert cheapest.evaluation.storage_credit == 750 * 1000
    # BALANCED at $1/day: 6.50 + 3 < 8 + 3 < 20 + 1, so the split wins it too.
    assert set(cheapest.labels) == {Label.CHEAPEST, Label.BALANCED}

    single = q.option(Label.SINGLE_PARCEL)
    assert single is not None and single.cost == 8 * DOLLAR
    assert parcels(single) == {("A", "ground", (("P", 1), ("Q", 1)))}

    fastest = q.option(Label.FASTEST)
    assert fastest is not None and (fastest.cost, fastest.delivery_days) == (20 * DOLLAR, 1)
    assert parcels(fastest) == {("A", "express", (("P", 1), ("Q", 1)))}
    assert len(q.options) == 3
    assert all(o.proof.status == "OPTIMAL" for o in q.options)


def test_one_parcel_wins_without_the_credit() -> None:
    # Same stock, no storage cost: the split costs 7 + 7 = $14 > $8 for one parcel.
    net = network([[5, 5], [0, 100]])
    q = quote(net, order(("P", 1), ("Q", 1)), QuoteSettings(value_of_day=1 * DOLLAR))
    cheapest = q.option(Label.CHEAPEST)
    assert cheapest is not None and cheapest.cost == 8 * DOLLAR
    assert set(cheapest.labels) == {Label.CHEAPEST, Label.SINGLE_PARCEL, Label.BALANCED}
    assert parcels(cheapest) == {("A", "ground", (("P", 1), ("Q", 1)))}


@pytest.mark.parametrize(
    ("value_of_day", "service", "cost", "day"),
    [
        # ground $8 on day 3 vs express $20 on day 1: 8 + 3v against 20 + 1v.
        (1 * DOLLAR, "ground", 8 * DOLLAR, 3),  # ground 11 < express 21
        # 26 vs 26: the tie goes to the earlier day, express's day 1.
        (6 * DOLLAR, "express", 20 * DOLLAR, 1),
        (7 * DOLLAR, "express", 20 * DOLLAR, 1),  # ground 29 > express 27
    ],
)
def test_balanced_trades_express_for_ground_by_value_of_day(
    value_of_day: int, service: str, cost: int, day: int
) -> None:
    net = network([[5, 5], [0, 0]])
    q = quote(net, order(("P", 1), ("Q", 1)), QuoteSettings(value_of_day=value_of_day))
    balanced = q.option(Label.BALANCED)
    assert balanced is not None
    assert {p.service for p in balanced.evaluation.parcels} == {service}
    assert (balanced.cost, balanced.delivery_days) == (cost, day)


def test_lines_of_one_sku_share_stock_and_split_across_nodes() -> None:
    # 3 units of P over two lines; A and B hold 2 each: 2 parcels are unavoidable.
    # A ships 2 (5 + 2 + 1 = $8), B ships 1 (5 + 1 + 1 = $7): $15, either way round.
    net = network([[2, 0], [2, 0]])
    o = order(("P", 2), ("P", 1))
    q = quote(net, o)
    cheapest = q.option(Label.CHEAPEST)
    assert cheapest is not None and cheapest.cost == 15 * DOLLAR
    assert cheapest.num_parcels == 2
    check = evaluate(net, o, cheapest.allocation)
    assert check.is_feasible and check.cost == 15 * DOLLAR
    assert q.option(Label.SINGLE_PARCEL) is None


def test_capacity_forces_a_split() -> None:
    # A could ship both units in one $8 parcel but may ship only 1 unit today.
    net = network([[5, 5], [5, 5]], capacity=(1, UNLIMITED_CAPACITY))
    q = quote(net, order(("P", 1), ("Q", 1)))
    cheapest = q.option(Label.CHEAPEST)
    assert cheapest is not None
    # B alone (also $8) is as cheap and needs no capacity from A.
    assert parcels(cheapest) == {("B", "ground", (("P", 1), ("Q", 1)))}
    net = network([[5, 5], [5, 0]], capacity=(1, UNLIMITED_CAPACITY))
    q = quote(net, order(("P", 1), ("Q", 1)))
    cheapest = q.option(Label.CHEAPEST)
    assert cheapest is not None and cheapest.cost == 14 * DOLLAR
    assert parcels(cheapest) == {("A", "ground", (("Q", 1),)), ("B", "ground", (("P", 1),))}


def test_bad_order_names_every_bad_field() -> None:
    net = network([[5, 5], [5, 5]])
    bad = Order(Location(95.0, -90.0), (OrderLine("P", 0), OrderLine("NOPE", 1)))
    with pytest.raises(InvalidOrderError) as info:
        quote(net, bad)
    fields = {v.field: v.reason for v in info.value.violations}
    assert set(fields) == {"destination.lat", "lines[0].qty", "lines[1].sku"}
    assert "NOPE" in fields["lines[1].sku"]
    with pytest.raises(InvalidOrderError, match="lines: the cart is empty"):
        quote(net, Order(DEST, ()))


def test_a_transfer_lane_first_on_the_rate_card_changes_no_option() -> None:
    """A transfer lane cheaper and faster than both services, listed first: deliveries never
    use it, and every option names its service by the network's index, so the menu is
    the one without the lane."""
    plain = network([[2, 0], [0, 2]])
    lane = plain.replace(
        service_ids=("transfer", *plain.service_ids),
        base_price=np.vstack([[[100_000]], plain.base_price]),
        per_kg=np.vstack([[[10_000]], plain.per_kg]),
        transit_days=np.vstack([[[0]], plain.transit_days]),
        offered=np.ones((3, 1), dtype=bool),
    )
    cart = order(("P", 1), ("Q", 1))
    settings = QuoteSettings(value_of_day=200 * 1000, num_workers=1)
    expected = quote(plain, cart, settings)
    got = quote(lane, cart, settings)
    assert [(o.labels, o.cost, o.delivery_days, parcels(o)) for o in got.options] == [
        (o.labels, o.cost, o.delivery_days, parcels(o)) for o in expected.options
    ]
    assert {p.service for o in got.frontier for p in o.evaluation.parcels} <= {"ground", "express"}
    for option in got.options:
        assert evaluate(lane, cart, option.allocation).is_feasible


def test_max_parcels_caps_every_option_of_demo_carts() -> None:
    # A warm start built from the Lagrangian relaxation's open nodes (the drop
    # heuristic) may keep more parcels than the cap: it must never become an option.
    network = demo_network()
    settings = QuoteSettings(num_workers=1, max_parcels=2, latest_day=3)
    rng = np.random.default_rng((0, 10))
    for _ in range(40):
        q = quote(network, demo_order(network, rng, 10), settings)
        assert all(o.num_parcels <= 2 for o in (*q.options, *q.frontier))


def test_options_cut_short_never_claim_a_proof_they_lack() -> None:
    # A quote stopped early (should_stop after a few polls) may answer with
    # unproven options, but a label marked OPTIMAL must be the true optimum
    # for that label, even when the sub-problem that holds it was cut short.
    network = regime_network("fragmented", 60, 100, seed=3)
    vod = QuoteSettings().value_of_day
    value = {
        Label.CHEAPEST: lambda o: (o.cost,),
        Label.FASTEST: lambda o: (o.delivery_days, o.cost),
        Label.BALANCED: lambda o: (o.cost + vod * o.delivery_days,),
        Label.SINGLE_PARCEL: lambda o: (o.cost,),
    }
    claims = 0
    for i in range(6):
        order = random_cart(network, np.random.default_rng((3, i)), 12)
        truth = quote(network, order, QuoteSettings(num_workers=1, time_limit_s=60))
        for polls in (5, 20, 60, 150, 400):
            count = iter(range(polls))
            cut = quote(
                network,
                order,
                QuoteSettings(num_workers=1, should_stop=lambda c=count: next(c, None) is None),
            )
            for option in cut.options:
                if option.proof.status != "OPTIMAL":
                    continue
                for label in option.labels:
                    best = truth.option(label)
                    assert best is not None and value[label](option) == value[label](best), (
                        i,
                        polls,
                        label,
                    )
                    claims += 1
    assert claims > 0


def test_set_work_between_deadline_checks_stays_within_one_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Checkout callers have a latency budget: a quote must stop soon after its deadline.
    # What it does between two checks of the deadline runs past it when the deadline falls
    # inside, so that work is bounded in cells (pricing chunks, set-cover branching slices),
    # not in wall-clock time: counted between consecutive checks over whole quotes of
    # fragmented 50-line carts on 500 nodes, the route where millions of cells per step
    # ran unchecked (~30 ms of CPU per million, 4x under load).
    from sourcing.solver.context import DEADLINE_CELLS, Context

    network = regime_network("fragmented", 500, 150, 0)
    checked = Context.out_of_time
    since: dict[int, int] = {}
    most = total = 0

    def counted(self: Context) -> bool:
        nonlocal most, total
        cells = self.stats.get("cells", 0)
        most = max(most, cells - since.get(id(self), 0))
        total += cells - since.get(id(self), 0)
        since[id(self)] = cells
        return checked(self)

    monkeypatch.setattr(Context, "out_of_time", counted)
    for cart in range(2):
        order = random_cart(network, np.random.default_rng([0, cart]), 50)
        quote(network, order, QuoteSettings(num_workers=1, time_limit_s=1.0))
    assert total >= 20 * DEADLINE_CELLS, total  # the quotes did set work worth bounding
    assert most <= 2 * DEADLINE_CELLS, most
