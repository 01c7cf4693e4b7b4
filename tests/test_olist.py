"""The Olist loader and rate-card fit: a hand-made folder, then the real data when present.

The real data lives in ../shared/data/olist beside the repository and is read
in place; those tests skip where it is absent (and fail where OMS_REQUIRE_REAL_DATA
is set, as in CI). The hand-made folder is written into ``tmp_path`` by the test itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sourcing.whatif.edits import PoolStock
from sourcing.whatif.olist import HistoricalPolicy, OlistData, load_olist
from sourcing.whatif.scenario import load_scenario, prepare_scenario
from sourcing.whatif.simulate import make_policy, simulate

from support import REQUIRE_REAL_DATA, unavailable

OLIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "olist"
SCENARIO = Path(__file__).resolve().parents[1] / "benchmarks" / "scenarios" / "olist.toml"

# Sellers s1 (Sao Paulo) and s2 (Rio, ~360 km away); customers c1 (7 km from s1),
# c2 (Recife, ~2,100 km) and c3 (a zip prefix without coordinates).
FILES = {
    "geolocation.csv": (
        "geolocation_zip_code_prefix,geolocation_lat,geolocation_lng\n"
        "1000,-23.50,-46.60\n2000,-22.90,-43.20\n1001,-23.55,-46.65\n3000,-8.05,-34.90\n"
    ),
    "sellers.csv": "seller_id,seller_zip_code_prefix\ns1,1000\ns2,02000\n",
    "customers.csv": (
        "customer_id,customer_zip_code_prefix\nc1,1001\nc2,3000\nc3,9999\nc4,01001\n"
    ),
    "products.csv": "product_id,product_weight_g\np1,1000\np2,3000\np3,\n",
    "orders.csv": (
        "order_id,customer_id,order_status,order_purchase_timestamp,"
        "order_delivered_carrier_date,order_delivered_customer_date\n"
        "o1,c1,delivered,2017-01-10 00:00:00,2017-01-12 00:00:00,2017-01-14 00:00:00\n"
        "o2,c4,delivered,2017-02-01 00:00:00,2017-02-05 00:00:00,2017-02-07 00:00:00\n"
        "o3,c2,delivered,2017-03-01 00:00:00,2017-03-04 00:00:00,2017-03-20 00:00:00\n"
        "o4,c1,delivered,2017-11-01 00:00:00,2017-11-03 00:00:00,2017-11-07 00:00:00\n"
        "o5,c1,delivered,2016-12-30 00:00:00,2017-01-02 00:00:00,2017-01-04 00:00:00\n"
        "o6,c1,canceled,2017-04-01 00:00:00,,\n"
        "o7,c3,delivered,2017-05-01 00:00:00,2017-05-02 00:00:00,2017-05-09 00:00:00\n"
    ),
    "order_items.csv": (
        "order_id,order_item_id,product_id,seller_id,freight_value\n"
        "o1,1,p1,s1,10.00\n"
        "o2,1,p2,s1,14.00\n"
        "o3,1,p1,s1,30.00\no3,2,p3,s2,20.00\no3,3,p3,s2,20.00\n"
        "o4,1,p1,s1,12.00\n"
        "o5,1,p1,s1,10.00\no6,1,p1,s1,10.00\no7,1,p2,s2,10.00\n"
    ),
}


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_hand_made_folder(folder: Path) -> None:
    data = load_olist(folder)
    net = data.network
    # o5 is from 2016, o6 was cancelled, o7's customer has no coordinates.
    assert [o.order_id for o in data.orders] == ["o1", "o2", "o3", "o4"]
    assert net.node_ids == ("S-s1", "S-s2")
    assert net.sku_ids == ("P-p1", "P-p2", "P-p3")
    assert net.weight_g.tolist() == [1000, 3000, 2000]  # p3: the median weight
    # Each seller holds what it shipped: s1 three p1 and one p2, s2 two p3.
    assert net.on_hand.tolist() == [[3, 1, 0], [0, 0, 2]]
    assert data.orders[2].order.lines[1].qty == 2
    assert data.history["o3"] == ("S-s1", "S-s2")
    # Band 1 (<= 100 km) before October: (1 kg, 10.00) and (3 kg, 14.00): 8.00 + 2.00/kg.
    fit = data.fit
    assert (fit.base_cents[0], fit.per_kg_cents[0]) == (800, 200)
    assert fit.transit_days[0] == 2  # carrier -> delivery: 2 and 2 days
    # Handling (purchase -> carrier) of s1: 2, 4 and 3 days -> 3; s2: 3.
    assert net.handling_days.tolist() == [3, 3]
    # Held back: o4 (1 kg, 12.00 actual vs 10.00 fitted; 6 days actual vs 3 + 2).
    assert fit.freight_holdout.n == 1
    assert fit.freight_holdout.mae == pytest.approx(2.0)
    assert fit.freight_holdout.bias == pytest.approx(-2.0)
    assert fit.days_holdout.mae == pytest.approx(1.0)
    assert data.summary["orders_dropped_no_coordinates"] == 1
    assert data.summary["historical_split_rate"] == 0.25

    result = simulate(net, data.orders, HistoricalPolicy(data.history))
    assert result.orders["parcels"].tolist() == [1, 1, 2, 1]
    assert result.on_hand_end.sum() == 0
    # o1 priced by the fitted card: 8.00 + 2.00 x 1 kg, no handling or storage cost.
    assert result.orders["cost"].iloc[0] == 1_000_000


def test_missing_files_and_columns_are_reported(folder: Path) -> None:
    (folder / "sellers.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"sellers\.csv"):
        load_olist(folder)
    (folder / "sellers.csv").write_text("seller_id,zip\ns1,1000\n")
    with pytest.raises(ValueError, match="missing column 'seller_zip_code_prefix'"):
        load_olist(folder)


# ------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def olist_dir() -> Path:
    """The real data, read in place; skips where absent (fails where CI requires it)."""
    if not OLIST.is_dir():
        unavailable(
            f"Olist data not found at {OLIST} (../shared/data is absent)", REQUIRE_REAL_DATA
        )
    return OLIST


needs_data = pytest.mark.usefixtures("olist_dir")


@pytest.fixture(scope="module")
def real(olist_dir: Path) -> OlistData:
    return load_olist(olist_dir)


@needs_data
def test_real_data_network_and_fit(real: OlistData) -> None:
    net = real.network
    assert len(real.orders) > 9_000
    assert real.summary["units"] == int(net.on_hand.sum())
    assert sum(line.qty for o in real.orders for line in o.order.lines) == net.on_hand.sum()
    # Most products are sold by one seller only.
    assert real.summary["products_with_several_sellers"] < 0.05 * len(net.sku_ids)
    fit = real.fit
    assert fit.freight_holdout.n > 1_000
    assert fit.freight_holdout.r2 > 0.3
    assert fit.freight_holdout.mae < 10.0
    assert fit.days_holdout.mae < 10.0
    # Farther takes longer and costs more.
    assert fit.transit_days[0] < fit.transit_days[-1]
    assert fit.base_cents[0] < fit.base_cents[-1]


@needs_data
def test_real_data_historical_replay_and_optimiser(real: OlistData) -> None:
    orders = real.orders[:1500]
    history = simulate(real.network, orders, HistoricalPolicy(real.history))
    k = history.kpis()
    assert k["fill_rate"] == 1.0
    assert history.orders["parcels"].tolist() == [
        len(set(real.history[o.order_id])) for o in orders
    ]
    # The fitted card prices the real assignment near the real freight.
    actual = real.summary["actual_freight_per_order_brl"]
    assert 0.75 * actual < k["net_cost_per_order"] < 1.25 * actual
    # With pooled stock every historical choice stays feasible, so the per-order
    # optimum is never dearer in total.
    pooled = PoolStock().apply(real.network)
    opt = simulate(pooled, orders, make_policy("optimiser_cheapest"))
    hist = simulate(pooled, orders, HistoricalPolicy(real.history))
    assert opt.orders["cost"].sum() <= hist.orders["cost"].sum()
    assert (opt.orders["cost"] <= hist.orders["cost"]).all()


@needs_data
def test_the_olist_scenario_file_points_at_the_data() -> None:
    scenario = load_scenario(SCENARIO)
    assert scenario.olist is not None
    assert scenario.olist.data_dir.resolve() == OLIST.resolve()
    prepared = prepare_scenario(scenario, max_orders=50, policies=["historical"])
    assert prepared.decisions == len(scenario.variants) * 50
