"""Click & collect and backorder on a network small enough to price by hand.

The network (``hand``): a Midtown store ``ST-MID`` (handling $1.00, 0 days)
holding one ``X`` (1 kg) and one ``Y`` (2 kg); ``DC-NJ`` in Newark (16 km
from the store, 20 km from the Brooklyn customer; handling $2.00, 1 day)
holding ``Z`` (0.5 kg); ``DC-CHI`` (Chicago, handling $1.50, 0 days). Zones:
"1" up to 100 km, "2" up to 1,000 km, "3" beyond. Services: ``ground`` $5/$7/$9
+ $1.00/kg, 1/2/3 days; the ``transfer`` lane $2/$3/$4 + $0.50/kg, 1/2/3 days.
No storage cost, so no storage credit. Money below in millicents ($1 = 100,000).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sourcing import QuoteSettings, quote
from sourcing.errors import InvalidOrderError, NetworkDataError, ShortageError
from sourcing.evaluate import evaluate
from sourcing.fulfil import nearest_stores
from sourcing.loader import read_network, write_network
from sourcing.model import (
    UNLIMITED_CAPACITY,
    Allocation,
    Label,
    Location,
    Network,
    NodeKind,
    Order,
    OrderLine,
    ParcelLine,
    ParcelPlan,
    Receipt,
)

from support import network_differences

BROOKLYN = Location(40.6782, -73.9442)
DOLLAR = 100_000


def hand(*, lane: bool = True, z_at_nj: int = 5, receipts: tuple[Receipt, ...] = ()) -> Network:
    services = ("ground", "transfer") if lane else ("ground",)
    v = len(services)
    return Network(
        node_ids=("ST-MID", "DC-NJ", "DC-CHI"),
        node_kinds=(NodeKind.STORE, NodeKind.DC, NodeKind.DC),
        lat=np.array([40.7580, 40.7357, 41.8781]),
        lon=np.array([-73.9855, -74.1724, -87.6298]),
        handling_days=np.array([0, 1, 0]),
        handling_cost=np.array([100_000, 200_000, 150_000]),  # millicents
        storage_cost=np.zeros(3, dtype=np.int64),
        capacity=np.full(3, UNLIMITED_CAPACITY),
        sku_ids=("X", "Y", "Z"),
        weight_g=np.array([1000, 2000, 500]),
        daily_demand=np.ones(3),
        on_hand=np.array([[1, 1, 0], [0, 0, z_at_nj], [0, 0, 0]]),
        safety_stock=np.zeros((3, 3), dtype=np.int64),
        reserved=np.zeros((3, 3), dtype=np.int64),
        zone_ids=("1", "2", "3"),
        zone_max_km=np.array([100.0, 1000.0, 20000.0]),
        service_ids=services,
        base_price=np.array([[500, 700, 900], [200, 300, 400]])[:v] * 1000,
        per_kg=np.array([[100, 100, 100], [50, 50, 50]])[:v] * 1000,
        transit_days=np.array([[1, 2, 3], [1, 2, 3]])[:v],
        offered=np.ones((v, 3), dtype=np.bool_),
        receipts=receipts,
    )


CART = Order(BROOKLYN, (OrderLine("X", 1), OrderLine("Y", 1), OrderLine("Z", 1)))


def test_collect_at_a_store_holding_two_of_three_items() -> None:
    q = quote(hand(), CART, QuoteSettings(pickup_stores=("ST-MID",)))
    (collect,) = [o for o in q.options if Label.COLLECT in o.labels]
    assert collect.pickup == "ST-MID"
    parcels = {p.node_id: p for p in collect.evaluation.parcels}
    # X and Y are picked at the store: no shipping, $1.00 handling, ready on day 0.
    mid = parcels["ST-MID"]
    assert (mid.service, mid.cost, mid.arrival_days) == ("pickup", 1 * DOLLAR, 0)
    assert sorted((pl.sku, pl.qty) for pl in mid.lines) == [("X", 1), ("Y", 1)]
    # Z comes from Newark by the lane, zone 1: $2.00 + 0.5 kg x $0.50 + $2.00 = $4.25,
    # handling 1 day + transit 1 day = ready on day 2.
    nj = parcels["DC-NJ"]
    assert (nj.service, nj.zone, nj.arrival_days) == ("transfer", "1", 2)
    assert nj.cost == 425_000
    assert collect.cost == 525_000 and collect.delivery_days == 2
    assert collect.proof.status == "OPTIMAL"
    # The delivery menu is unchanged by asking for a pickup store: X+Y from the store
    # ($5 + 3 kg + $1 = $9.00, day 1) and Z from Newark ($5 + $0.50 + $2 = $7.50, day 2).
    plain = quote(hand(), CART)
    delivery = [o for o in q.options if Label.COLLECT not in o.labels]
    assert [(o.cost, o.delivery_days, o.labels) for o in delivery] == [
        (o.cost, o.delivery_days, o.labels) for o in plain.options
    ]
    assert delivery[0].cost == 1_650_000
    again = evaluate(hand(), CART, collect.allocation)
    assert again.is_feasible and again.cost == collect.cost


def test_no_lane_no_collect() -> None:
    q = quote(hand(lane=False), CART, QuoteSettings(pickup_stores=("ST-MID",)))
    assert all(o.pickup is None for o in q.options)
    assert q.options  # delivery is still offered
    # The store alone can gather a cart of its own units: ready after its handling day 0.
    own = Order(BROOKLYN, (OrderLine("X", 1), OrderLine("Y", 1)))
    q = quote(hand(lane=False), own, QuoteSettings(pickup_stores=("ST-MID",)))
    (collect,) = [o for o in q.options if o.pickup == "ST-MID"]
    assert (collect.cost, collect.delivery_days, collect.num_parcels) == (1 * DOLLAR, 0, 1)


def test_nearest_stores_and_bad_pickup_stores() -> None:
    network = hand()
    assert nearest_stores(network, BROOKLYN.lat, BROOKLYN.lon, 3) == ("ST-MID",)
    q = quote(network, CART, QuoteSettings(nearest_stores=1))
    assert [o.pickup for o in q.options if Label.COLLECT in o.labels] == ["ST-MID"]
    with pytest.raises(InvalidOrderError) as info:
        quote(network, CART, QuoteSettings(pickup_stores=("DC-NJ", "NOPE")))
    assert [v.field for v in info.value.violations] == ["pickup_stores[0]", "pickup_stores[1]"]


def test_backorder_waits_only_for_the_short_units() -> None:
    receipt = Receipt("R1", "DC-NJ", "Z", 10, 3)
    network = hand(z_at_nj=0, receipts=(receipt,))
    with pytest.raises(ShortageError):
        quote(network, CART)  # not allowed to wait
    q = quote(network, CART, QuoteSettings(allow_backorder=True))
    (option,) = q.options
    assert set(option.labels) == {Label.CHEAPEST, Label.FASTEST, Label.BALANCED}
    # X+Y from the store now ($9.00, day 1); Z waits for R1 (day 3) at Newark, then
    # ships like any Newark parcel: $7.50, 3 + 1 + 1 = day 5. No single parcel exists.
    (waiting,) = option.waiting
    assert (waiting.node_id, waiting.inbound_day, waiting.arrival_days) == ("DC-NJ", 3, 5)
    assert waiting.lines == (ParcelLine(2, "Z", 1),)
    assert waiting.cost == 750_000 and waiting.storage_credit == 0
    assert (option.cost, option.delivery_days) == (1_650_000, 5)
    assert q.shortfall == ()
    # Collect waits the same way: Z reaches the store on day 3 + 1 + 1 = 5, for $4.25.
    q = quote(network, CART, QuoteSettings(allow_backorder=True, pickup_stores=("ST-MID",)))
    (collect,) = [o for o in q.options if o.pickup]
    assert (collect.cost, collect.delivery_days) == (525_000, 5)


def test_backorder_is_a_shortage_when_receipts_are_short_too() -> None:
    network = hand(z_at_nj=0, receipts=(Receipt("R1", "DC-NJ", "Z", 1, 3),))
    big = Order(BROOKLYN, (OrderLine("Z", 2),))
    with pytest.raises(ShortageError) as info:
        quote(network, big, QuoteSettings(allow_backorder=True))
    (short,) = info.value.shortages
    assert (short.sku, short.requested, short.available) == ("Z", 2, 1)
    q = quote(network, big, QuoteSettings(allow_backorder=True, allow_partial=True))
    (option,) = q.options
    assert [s.missing for s in q.shortfall] == [1]
    assert option.waiting[0].lines == (ParcelLine(0, "Z", 1),)


def test_evaluate_rejects_misused_lanes_and_receipts() -> None:
    network = hand(receipts=(Receipt("R1", "DC-NJ", "Z", 1, 3),))
    transfer_to_customer = Allocation((ParcelPlan("DC-NJ", "transfer", (ParcelLine(2, "Z", 1),)),))
    shipped_from_store = Allocation(
        (ParcelPlan("ST-MID", "ground", (ParcelLine(0, "X", 1),)),), pickup="ST-MID"
    )
    ground_to_store = Allocation(
        (ParcelPlan("DC-NJ", "ground", (ParcelLine(2, "Z", 1),)),), pickup="ST-MID"
    )
    at_a_dc = Allocation((ParcelPlan("DC-NJ", "pickup", (ParcelLine(2, "Z", 1),)),), "DC-NJ")
    too_many_waiting = Allocation((ParcelPlan("DC-NJ", "ground", (ParcelLine(0, "Z", 2),), 3),))
    cart_z = Order(BROOKLYN, (OrderLine("Z", 2),))
    for allocation, order, word in (
        (transfer_to_customer, CART, "does not ship to customers"),
        (shipped_from_store, CART, "picked there"),
        (ground_to_store, CART, "transfer"),
        (at_a_dc, CART, "not a store"),
        (too_many_waiting, cart_z, "wait for day 3, 1 free"),
    ):
        ev = evaluate(network, order, allocation, allow_partial=True)
        assert any(word in v for v in ev.violations), (word, ev.violations)


def test_inbound_csv_round_trip_and_errors(tmp_path: Path) -> None:
    network = hand(
        receipts=(Receipt("PO-1", "DC-NJ", "Z", 4, 2), Receipt("PO-2", "ST-MID", "X", 1, 0))
    )
    write_network(network, tmp_path / "net")
    assert network_differences(read_network(tmp_path / "net"), network) == []
    # Optional: a folder without inbound.csv loads with no receipts.
    (tmp_path / "net" / "inbound.csv").unlink()
    assert read_network(tmp_path / "net").receipts == ()
    # Without receipt_id the rows are named by row number.
    (tmp_path / "net" / "inbound.csv").write_text("node_id,sku,qty,expected_day\nDC-NJ,Z,3,4\n")
    assert read_network(tmp_path / "net").receipts == (Receipt("inbound-2", "DC-NJ", "Z", 3, 4),)
    (tmp_path / "net" / "inbound.csv").write_text("node_id,sku,qty,expected_day\nDC-NJ,Q,3,4\n")
    with pytest.raises(NetworkDataError) as info:
        read_network(tmp_path / "net")
    assert (info.value.file, info.value.row, info.value.column) == ("inbound.csv", 2, "sku")
    (tmp_path / "net" / "inbound.csv").write_text("node_id,sku,qty\nDC-NJ,Z,3\n")
    with pytest.raises(NetworkDataError) as info:
        read_network(tmp_path / "net")
    assert info.value.column == "expected_day"


def test_cli_quotes_collect_and_backorder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from sourcing.cli import main

    write_network(hand(z_at_nj=0, receipts=(Receipt("PO-1", "DC-NJ", "Z", 4, 3),)), tmp_path)
    order = tmp_path / "order.json"
    order.write_text(
        json.dumps(
            {
                "destination": {"lat": BROOKLYN.lat, "lon": BROOKLYN.lon},
                "lines": [{"sku": "X", "qty": 1}, {"sku": "Z", "qty": 1}],
            }
        )
    )
    args = ["quote", str(tmp_path), str(order), "--pickup-store", "ST-MID", "--allow-backorder"]
    assert main(args) == 0
    options = json.loads(capsys.readouterr().out)["options"]
    # X from the store by ground ($5 + $1 + $1.00 = $7.00, day 1); Z waits for PO-1 (day 3)
    # at Newark: $7.50, day 5. Collect: X picked ($1.00), Z by the lane ($4.25), day 5.
    summary = [(o["cost"], o["delivery_days"], o.get("pickup_store")) for o in options]
    assert summary == [(14.5, 5, None), (5.25, 5, "ST-MID")]
    assert [p.get("inbound_day") for p in options[0]["parcels"]] == [None, 3]
