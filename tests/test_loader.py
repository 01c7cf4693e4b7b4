"""The planner CSV loader: field-by-field reading, round trips and error reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sourcing.errors import NetworkDataError
from sourcing.loader import read_network, write_network
from sourcing.model import UNLIMITED_CAPACITY, Network, NodeKind

from support import network_differences, tiny_network

GOOD = {
    "nodes.csv": (
        "node_id,kind,lat,lon,handling_days,handling_cost,storage_cost_per_unit_day,"
        "daily_capacity_units,note\n"
        "DC1,dc,40.5,-74.25,1,12.34,0.05,,main\n"
        "ST1,store,34.0,-118.0,0,3,0.5,25,\n"
    ),
    "skus.csv": "sku,weight_kg,daily_demand,colour\nA,1.5,2.5,red\nB,0.05,0,blue\n",
    "stock.csv": "node_id,sku,on_hand,safety_stock\nDC1,A,10,2\nST1,B,4,\n",
    "zones.csv": "zone,max_km\nZ1,100\nZ2,500.5\nZ3,20000\n",
    "rates.csv": (
        "service,zone,base_price,per_kg,transit_days\n"
        "ground,Z1,5,1.25,3\n"
        "express,Z1,9.99,2,1\n"
        "ground,Z3,7.10,0,5\n"
    ),
}


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_reads_every_field(tmp_path: Path) -> None:
    net = read_network(write_folder(tmp_path, GOOD), horizon_days=14)

    assert net.node_ids == ("DC1", "ST1")
    assert net.node_kinds == (NodeKind.DC, NodeKind.STORE)
    assert net.lat.tolist() == [40.5, 34.0]
    assert net.lon.tolist() == [-74.25, -118.0]
    assert net.handling_days.tolist() == [1, 0]
    assert net.handling_cost.tolist() == [1_234_000, 300_000]  # millicents
    assert net.storage_cost.tolist() == [5_000, 50_000]
    assert net.capacity.tolist() == [UNLIMITED_CAPACITY, 25]

    assert net.sku_ids == ("A", "B")
    assert net.weight_g.tolist() == [1500, 50]
    assert net.daily_demand.tolist() == [2.5, 0.0]

    assert net.on_hand.tolist() == [[10, 0], [0, 4]]
    assert net.safety_stock.tolist() == [[2, 0], [0, 0]]
    assert net.reserved.tolist() == [[0, 0], [0, 0]]

    assert net.zone_ids == ("Z1", "Z2", "Z3")
    assert net.zone_max_km.tolist() == [100.0, 500.5, 20000.0]
    assert net.service_ids == ("ground", "express")
    assert net.offered.tolist() == [[True, False, True], [True, False, False]]
    assert net.base_price.tolist() == [[500_000, 0, 710_000], [999_000, 0, 0]]
    assert net.per_kg.tolist() == [[125_000, 0, 0], [200_000, 0, 0]]
    assert net.transit_days.tolist() == [[3, 0, 5], [1, 0, 0]]
    assert net.horizon_days == 14


def test_tolerates_bom_blank_lines_and_column_order(tmp_path: Path) -> None:
    files = dict(GOOD)
    files["zones.csv"] = "\ufeffmax_km,zone\n100,Z1\n\n500.5,Z2\n20000,Z3\n\n"
    net = read_network(write_folder(tmp_path, files))
    assert net.zone_ids == ("Z1", "Z2", "Z3")
    assert net.zone_max_km.tolist() == [100.0, 500.5, 20000.0]


def assert_same_network(got: Network, want: Network) -> None:
    assert network_differences(got, want) == []


def test_round_trip_of_the_hand_written_folder(tmp_path: Path) -> None:
    net = read_network(write_folder(tmp_path / "in", GOOD))
    write_network(net, tmp_path / "out")
    assert_same_network(read_network(tmp_path / "out"), net)
    stock = (tmp_path / "out" / "stock.csv").read_text(encoding="utf-8").splitlines()
    assert stock == ["node_id,sku,on_hand,safety_stock", "DC1,A,10,2", "ST1,B,4,0"]
    skus = (tmp_path / "out" / "skus.csv").read_text(encoding="utf-8").splitlines()
    assert skus[1:] == ["A,1.5,2.5", "B,0.05,0.0"]
    nodes = (tmp_path / "out" / "nodes.csv").read_text(encoding="utf-8").splitlines()
    assert nodes[1] == "DC1,dc,40.5,-74.25,1,12.34,0.05,"


@pytest.mark.parametrize("seed", range(20))
def test_round_trip_of_random_networks(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    net = tiny_network(rng, n_nodes=4, n_skus=3, n_services=3, capacity_prob=0.5)
    # The format has no reservations (orders live in the service's store).
    net = net.replace(reserved=np.zeros_like(net.reserved))
    # The format cannot name a service without any rate row; keep one per service.
    offered = net.offered.copy()
    offered[:, 0] = True
    net = net.replace(offered=offered, base_price=net.base_price * offered)
    net = net.replace(per_kg=net.per_kg * offered, transit_days=net.transit_days * offered)
    write_network(net, tmp_path)
    assert_same_network(read_network(tmp_path), net)


def test_write_rejects_a_service_without_rates(tmp_path: Path) -> None:
    net = read_network(write_folder(tmp_path / "in", GOOD))
    offered = net.offered.copy()
    offered[1] = False
    with pytest.raises(ValueError, match="express"):
        write_network(net.replace(offered=offered), tmp_path / "out")


def replace_line(file: str, line: int, text: str) -> dict[str, str]:
    """GOOD with one line (0 = header) of ``file`` replaced."""
    lines = GOOD[file].splitlines()
    lines[line] = text
    return {**GOOD, file: "\n".join(lines) + "\n"}


NODE_HEADER = (
    "node_id,kind,lat,lon,handling_days,handling_cost,storage_cost_per_unit_day,"
    "daily_capacity_units"
)

BAD_INPUTS = [
    pytest.param(
        {k: v for k, v in GOOD.items() if k != "stock.csv"},
        ("stock.csv", None, None, "file not found"),
        id="missing-file",
    ),
    pytest.param(
        replace_line("skus.csv", 0, "sku,weight,daily_demand"),
        ("skus.csv", None, "weight_kg", "missing required column"),
        id="missing-column",
    ),
    pytest.param(
        replace_line("nodes.csv", 2, "ST1,warehouse,34,-118,0,3,0.5,25"),
        ("nodes.csv", 3, "kind", "must be 'dc' or 'store'"),
        id="bad-kind",
    ),
    pytest.param(
        replace_line("nodes.csv", 1, "DC1,dc,95,-74.25,1,12.34,0.05,"),
        ("nodes.csv", 2, "lat", "within [-90, 90]"),
        id="lat-95",
    ),
    pytest.param(
        replace_line("nodes.csv", 1, "DC1,dc,nan,-74.25,1,12.34,0.05,"),
        ("nodes.csv", 2, "lat", "within [-90, 90]"),
        id="lat-nan",
    ),
    pytest.param(
        replace_line("stock.csv", 2, "ST1,B,abc,"),
        ("stock.csv", 3, "on_hand", "not a whole number"),
        id="on-hand-abc",
    ),
    pytest.param(
        replace_line("stock.csv", 1, "DC1,A,-1,2"),
        ("stock.csv", 2, "on_hand", "must be >= 0"),
        id="on-hand-negative",
    ),
    pytest.param(
        replace_line("rates.csv", 2, "express,Z1,9.999991,2,1"),
        ("rates.csv", 3, "base_price", "at most 5 decimals"),
        id="money-6-decimals",
    ),
    pytest.param(
        replace_line("nodes.csv", 2, "ST1,store,34,-118,0,-3,0.5,25"),
        ("nodes.csv", 3, "handling_cost", "must be >= 0"),
        id="money-negative",
    ),
    pytest.param(
        replace_line("rates.csv", 1, "ground,Z1,five,1.25,3"),
        ("rates.csv", 2, "base_price", "not an amount of money"),
        id="money-not-a-number",
    ),
    pytest.param(
        replace_line("stock.csv", 2, "XX,B,4,"),
        ("stock.csv", 3, "node_id", "unknown node_id 'XX'"),
        id="unknown-node-in-stock",
    ),
    pytest.param(
        replace_line("stock.csv", 2, "DC1,A,4,"),
        ("stock.csv", 3, "sku", "duplicate stock row"),
        id="duplicate-stock-pair",
    ),
    pytest.param(
        replace_line("rates.csv", 3, "ground,Z9,7.10,0,5"),
        ("rates.csv", 4, "zone", "unknown zone 'Z9'"),
        id="unknown-zone-in-rates",
    ),
    pytest.param(
        replace_line("rates.csv", 3, "ground,Z1,7.10,0,5"),
        ("rates.csv", 4, "zone", "duplicate rate"),
        id="duplicate-rate",
    ),
    pytest.param(
        replace_line("nodes.csv", 2, "DC1,store,34,-118,0,3,0.5,25"),
        ("nodes.csv", 3, "node_id", "duplicate node_id 'DC1'"),
        id="duplicate-node-id",
    ),
    pytest.param(
        replace_line("zones.csv", 3, "Z3,500.5"),
        ("zones.csv", 4, "max_km", "strictly ascending"),
        id="zones-not-ascending",
    ),
    pytest.param(
        replace_line("skus.csv", 2, "B,,0"),
        ("skus.csv", 3, "weight_kg", "empty value"),
        id="empty-weight",
    ),
    pytest.param(
        replace_line("skus.csv", 2, "B,0.0004,0"),
        ("skus.csv", 3, "weight_kg", "1 g"),
        id="weight-below-a-gram",
    ),
    pytest.param(
        replace_line("nodes.csv", 2, "ST1,store,34,-118,0.5,3,0.5,25"),
        ("nodes.csv", 3, "handling_days", "not a whole number"),
        id="fractional-days",
    ),
    pytest.param(
        {**GOOD, "zones.csv": "zone,max_km\n"},
        ("zones.csv", None, None, "no zones"),
        id="no-zones",
    ),
]


@pytest.mark.parametrize(("files", "expected"), BAD_INPUTS)
def test_bad_input_names_file_row_and_column(
    tmp_path: Path, files: dict[str, str], expected: tuple[str, int | None, str | None, str]
) -> None:
    file, row, column, reason = expected
    with pytest.raises(NetworkDataError) as caught:
        read_network(write_folder(tmp_path, files))
    error = caught.value
    assert (error.file, error.row, error.column) == (file, row, column)
    assert reason in error.reason
    assert str(error).startswith(file)


def test_missing_folder_reports_the_first_file(tmp_path: Path) -> None:
    with pytest.raises(NetworkDataError) as caught:
        read_network(tmp_path / "nowhere")
    assert (caught.value.file, caught.value.reason) == ("nodes.csv", "file not found")


@pytest.mark.parametrize(
    ("text", "millicents"),
    [
        ("12.34", 1_234_000),
        ("3", 300_000),
        ("0.5", 50_000),
        ("0", 0),
        ("1.230", 123_000),
        (" 7.1 ", 710_000),
        ("0.004", 400),
        ("0.4636", 46_360),
        ("2.12345", 212_345),
        ("1.2345600", 123_456),
    ],
)
def test_money_to_millicents(tmp_path: Path, text: str, millicents: int) -> None:
    files = replace_line("nodes.csv", 1, f"DC1,dc,40.5,-74.25,1,{text!r},0.05,".replace("'", '"'))
    net = read_network(write_folder(tmp_path, files))
    assert int(net.handling_cost[0]) == millicents
