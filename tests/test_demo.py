"""The demo network: deterministic, plausibly shaped, internally consistent."""

from __future__ import annotations

import numpy as np
import pytest

from sourcing import QuoteSettings, quote
from sourcing.costs import haversine_km
from sourcing.demo import (
    CONTIGUOUS_BBOX,
    KM_PER_MILE,
    NUM_SKUS,
    NUM_STORES,
    build_demo_network,
    demo_network,
    demo_order,
)
from sourcing.evaluate import evaluate
from sourcing.model import UNLIMITED_CAPACITY, Location, Network, NodeKind, Order, OrderLine
from sourcing.orders import validate_order

from support import network_differences


@pytest.fixture(scope="module")
def net() -> Network:
    return demo_network()


def test_same_seed_rebuilds_identical_arrays(net: Network) -> None:
    rebuilt = build_demo_network(7)  # bypass the cache: a genuine second build
    assert rebuilt is not net
    assert network_differences(rebuilt, net) == []


def test_cached(net: Network) -> None:
    assert demo_network(7) is net
    assert demo_network() is net
    assert demo_network(seed=7) is net


def test_other_seed_differs(net: Network) -> None:
    other = demo_network(8)
    assert network_differences(other, net) != []
    assert not np.array_equal(other.on_hand, net.on_hand)
    assert not np.array_equal(other.weight_g, net.weight_g)
    # the stores move, the DCs stay where they are
    assert not np.array_equal(other.lat[10:], net.lat[10:])
    assert np.array_equal(other.lat[:10], net.lat[:10])


def test_sizes_and_ids(net: Network) -> None:
    kinds = np.array([k.value for k in net.node_kinds])
    assert (kinds == NodeKind.DC.value).sum() == 10
    assert (kinds == NodeKind.STORE.value).sum() == NUM_STORES == 300
    assert len(net.node_ids) == 310
    assert len(net.sku_ids) == NUM_SKUS == 300
    assert net.node_ids[0] == "DC-MEM"
    assert all(i.startswith("DC-") for i in net.node_ids[:10])
    assert net.node_ids[10:13] == ("ST-0001", "ST-0002", "ST-0003")
    assert net.node_ids[-1] == "ST-0300"
    assert net.sku_ids[0] == "SKU-0001" and net.sku_ids[-1] == "SKU-0300"
    assert net.service_ids == ("ground", "express", "transfer")
    assert net.zone_ids == tuple("12345678")


def test_nodes_inside_contiguous_us(net: Network) -> None:
    lat_min, lat_max, lon_min, lon_max = CONTIGUOUS_BBOX
    assert np.all((net.lat >= lat_min) & (net.lat <= lat_max))
    assert np.all((net.lon >= lon_min) & (net.lon <= lon_max))
    # stores are at distinct ZIPs (no duplicate coordinates among them)
    coords = set(zip(net.lat[10:].tolist(), net.lon[10:].tolist(), strict=True))
    assert len(coords) == NUM_STORES


@pytest.mark.parametrize(
    ("node_id", "lat", "lon"),
    [
        ("DC-MEM", 35.15, -90.05),  # Memphis
        ("DC-DFW", 32.78, -96.80),  # Dallas
        ("DC-ONT", 34.06, -117.65),  # Ontario CA
        ("DC-ABE", 40.60, -75.47),  # Allentown
        ("DC-ORD", 41.88, -87.63),  # Chicago
    ],
)
def test_dcs_sit_in_their_cities(net: Network, node_id: str, lat: float, lon: float) -> None:
    i = net.node_index[node_id]
    assert net.node_kinds[i] is NodeKind.DC
    assert float(haversine_km(net.lat[i], net.lon[i], lat, lon)) < 40.0


def test_zones_ascending_us_bands(net: Network) -> None:
    assert np.all(np.diff(net.zone_max_km) > 0)
    miles = [50, 150, 300, 600, 1000, 1400, 1800]
    assert np.allclose(net.zone_max_km[:-1], np.array(miles) * KM_PER_MILE)
    assert net.zone_max_km[-1] >= 20_000


def test_rate_card(net: Network) -> None:
    assert net.offered.all()
    ground, express = net.service_index["ground"], net.service_index["express"]
    for v in (ground, express):
        assert np.all(np.diff(net.base_price[v]) > 0)
        assert np.all(np.diff(net.per_kg[v]) >= 0)
        assert np.all(np.diff(net.transit_days[v]) >= 0)
    assert net.base_price[ground, 0] == 750_000 and net.base_price[ground, -1] == 1_300_000
    assert np.all(net.base_price[express] > net.base_price[ground])
    assert np.all(net.per_kg[express] > net.per_kg[ground])
    assert np.all(net.transit_days[express] <= net.transit_days[ground])
    assert net.transit_days[ground].tolist() == [1, 1, 2, 3, 4, 5, 5, 5]
    assert net.transit_days[express].tolist() == [1, 1, 1, 2, 2, 2, 2, 2]
    # The transfer lane (stock to a pickup store): cheaper than ground, never to customers.
    transfer = net.transfer_service
    assert transfer is not None and net.service_ids[transfer] == "transfer"
    assert np.all(np.diff(net.base_price[transfer]) > 0)
    assert np.all(net.base_price[transfer] < net.base_price[ground])
    assert np.all(net.per_kg[transfer] < net.per_kg[ground])
    assert net.customer_services.tolist() == [True, True, False]


def test_collect_at_a_store_brings_missing_units_by_the_transfer_lane(net: Network) -> None:
    """A store without the SKU still offers click & collect: other nodes send the units by
    the transfer lane, priced as the evaluator prices it; home delivery never uses it."""
    store = net.node_index["ST-0001"]
    sku = next(
        k
        for k in range(len(net.sku_ids))
        if net.available[store, k] == 0 and net.available[:10, k].max() >= 2
    )
    lat, lon = float(net.lat[store]), float(net.lon[store])
    order = Order(Location(lat, lon), (OrderLine(net.sku_ids[sku], 2),))
    collect = quote(net, order, QuoteSettings(pickup_stores=("ST-0001",), num_workers=1))
    options = [o for o in collect.options if o.pickup == "ST-0001"]
    assert options
    for option in options:
        assert {p.service for p in option.evaluation.parcels} == {"transfer"}
        # Sent from other nodes that hold the SKU (a DC or another store).
        assert all(
            p.node_id != "ST-0001" and net.available[net.node_index[p.node_id], sku] > 0
            for p in option.evaluation.parcels
        )
        again = evaluate(net, order, option.allocation)
        assert again.is_feasible and again.pickup == "ST-0001"
        assert again.cost == option.cost
    delivery = quote(net, order, QuoteSettings(num_workers=1))
    assert all(p.service != "transfer" for o in delivery.frontier for p in o.evaluation.parcels)


def test_skus(net: Network) -> None:
    assert net.weight_g.min() >= 100 and net.weight_g.max() <= 25_000
    assert 300 < np.median(net.weight_g) < 2_500
    assert np.all(net.daily_demand > 0)
    assert np.unique(net.weight_g).size > 100  # a spread, not a constant


def test_node_parameters(net: Network) -> None:
    dc = np.array([k is NodeKind.DC for k in net.node_kinds])
    st = ~dc
    # Money in millicents: storage 2-4 and 5-8 cents, handling $1.50-2.50 and $3-4.
    assert set(net.storage_cost[dc].tolist()) <= {2_000, 3_000, 4_000}
    assert set(net.storage_cost[st].tolist()) <= {5_000, 6_000, 7_000, 8_000}
    assert np.all((net.handling_cost[dc] >= 150_000) & (net.handling_cost[dc] <= 250_000))
    assert np.all((net.handling_cost[st] >= 300_000) & (net.handling_cost[st] <= 400_000))
    assert set(net.handling_days[dc].tolist()) <= {0, 1}
    assert set(net.handling_days[st].tolist()) == {1}
    assert np.all(net.capacity[dc] >= 50_000)
    assert np.all((net.capacity[st] >= 150) & (net.capacity[st] <= 400))
    assert np.all(net.capacity < UNLIMITED_CAPACITY)


def test_stock_pairs_valid(net: Network) -> None:
    assert np.all(net.on_hand >= 0)
    assert np.all(net.safety_stock >= 0)
    assert np.all(net.safety_stock <= net.on_hand)
    assert not net.reserved.any()
    assert np.all(net.available >= 0)
    assert np.all(net.available <= net.on_hand)
    dc = np.array([k is NodeKind.DC for k in net.node_kinds])
    dc_share = (net.on_hand[dc] > 0).mean()
    st_share = (net.on_hand[~dc] > 0).mean()
    assert 0.80 < dc_share < 0.90
    assert 0.12 < st_share < 0.18
    assert net.on_hand[~dc].max() <= 12
    assert set(np.unique(net.safety_stock[~dc]).tolist()) == {0, 1}
    assert not net.safety_stock[dc].any()
    # safety stock only where a store holds the SKU
    assert np.all(net.on_hand[net.safety_stock > 0] >= 2)
    # DCs cover weeks of demand: network DC stock >= 3 weeks of demand per SKU
    assert np.all(net.on_hand[dc].sum(axis=0) >= 21 * net.daily_demand * 0.9)
    # every SKU is stocked somewhere
    assert np.all(net.available.sum(axis=0) > 0)


def test_demo_order(net: Network) -> None:
    a = demo_order(net, np.random.default_rng(3), 6)
    b = demo_order(net, np.random.default_rng(3), 6)
    assert a == b
    assert len(a.lines) == 6
    assert len({line.sku for line in a.lines}) == 6
    lat_min, lat_max, lon_min, lon_max = CONTIGUOUS_BBOX
    rng = np.random.default_rng(11)
    for _ in range(50):
        order = demo_order(net, rng, int(rng.integers(1, 10)))
        validate_order(net, order)
        assert all(1 <= line.qty <= 3 for line in order.lines)
        assert len({line.sku for line in order.lines}) == len(order.lines)
        assert lat_min <= order.destination.lat <= lat_max
        assert lon_min <= order.destination.lon <= lon_max
        skus = [net.sku_index[line.sku] for line in order.lines]
        assert np.all(net.available[:, skus].sum(axis=0) >= 3)


def test_demo_order_rejects_impossible_sizes(net: Network) -> None:
    with pytest.raises(ValueError):
        demo_order(net, np.random.default_rng(0), 0)
    with pytest.raises(ValueError):
        demo_order(net, np.random.default_rng(0), NUM_SKUS + 1)
