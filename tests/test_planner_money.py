"""Planner money has up to five decimals, exact in millicents (issue 13 item 20, DESIGN 7).

A storage cost of $0.004 per unit-day (typical for small items) and a per-kg rate
of 0.4636 load exactly; a sixth decimal is an error naming the file, row and column;
a quote on such a network costs what the hand computation below says, to the
millicent, and its total is the exact sum of its parts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sourcing import Location, Order, OrderLine, QuoteSettings, evaluate, quote
from sourcing.errors import NetworkDataError
from sourcing.loader import read_network, write_network
from sourcing.model import per_kg_charge
from sourcing.whatif.edits import SetStorageCost
from sourcing.whatif.scenario import load_scenario

FILES = {
    "nodes.csv": (
        "node_id,kind,lat,lon,handling_days,handling_cost,storage_cost_per_unit_day,"
        "daily_capacity_units\n"
        "DC1,dc,40.7357,-74.1724,1,2.12345,0.004,\n"
    ),
    "skus.csv": "sku,weight_kg,daily_demand\nSMALL,0.123,1\n",
    "stock.csv": "node_id,sku,on_hand,safety_stock\nDC1,SMALL,10,0\n",
    "zones.csv": "zone,max_km\n1,20000\n",
    "rates.csv": "service,zone,base_price,per_kg,transit_days\nground,1,5,0.4636,2\n",
}


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_five_decimals_load_exactly_and_round_trip(tmp_path: Path) -> None:
    net = read_network(write_folder(tmp_path / "in", FILES))
    assert int(net.handling_cost[0]) == 212_345  # $2.12345 in millicents
    assert int(net.storage_cost[0]) == 400  # $0.004 per unit-day
    assert int(net.per_kg[0, 0]) == 46_360  # $0.4636 per kg
    write_network(net, tmp_path / "out")
    text = (tmp_path / "out" / "nodes.csv").read_text()
    assert ",2.12345,0.004," in text
    assert ",0.4636," in (tmp_path / "out" / "rates.csv").read_text()
    again = read_network(tmp_path / "out")
    assert int(again.per_kg[0, 0]) == 46_360 and int(again.storage_cost[0]) == 400


@pytest.mark.parametrize(
    ("file", "line", "column"),
    [
        ("nodes.csv", "DC1,dc,40.7,-74.1,1,2.12345,0.0040001,\n", "storage_cost_per_unit_day"),
        ("nodes.csv", "DC1,dc,40.7,-74.1,1,2.123456,0.004,\n", "handling_cost"),
        ("rates.csv", "ground,1,5,0.463601,2\n", "per_kg"),
        ("rates.csv", "ground,1,5.000001,0.4636,2\n", "base_price"),
    ],
)
def test_a_sixth_decimal_names_file_row_and_column(
    tmp_path: Path, file: str, line: str, column: str
) -> None:
    header = FILES[file].splitlines(keepends=True)[0]
    files = {**FILES, file: header + line}
    with pytest.raises(NetworkDataError) as caught:
        read_network(write_folder(tmp_path, files))
    error = caught.value
    assert (error.file, error.row, error.column) == (file, 2, column)
    assert "at most 5 decimals" in error.reason


def test_quote_costs_are_exact_to_the_millicent(tmp_path: Path) -> None:
    """2 x SMALL (123 g) from DC1 to Manhattan, by hand:

    * base $5 = 500,000; handling $2.12345 = 212,345;
    * per kg: 46,360 millicents/kg x 123 g / 1000 = 5,702.28 -> 5,702 per unit, x 2 = 11,404;
    * storage credit: 400 x min(10 on hand / 1 a day, 30) = 4,000 per unit, x 2 = 8,000;
    * cost = 500,000 + 11,404 + 212,345 - 8,000 = 715,749 millicents ($7.15749).
    """
    net = read_network(write_folder(tmp_path, FILES))
    order = Order(Location(40.7128, -74.0060), (OrderLine("SMALL", 2),))
    (option,) = quote(net, order, QuoteSettings()).options
    ev = option.evaluation
    assert (ev.shipping, ev.handling, ev.storage_credit) == (511_404, 212_345, 8_000)
    assert option.cost == ev.cost == 715_749
    assert ev.shipping + ev.handling - ev.storage_credit == ev.cost
    assert evaluate(net, order, option.allocation).cost == 715_749
    assert int(per_kg_charge(46_360, 123)) == 5_702


@pytest.mark.parametrize(
    ("per_kg", "grams", "charge"),
    [
        (46_360, 123, 5_702),  # 5,702.28 rounds down
        (1_500, 1, 2),  # 1.5: half to even, up
        (2_500, 1, 2),  # 2.5: half to even, down
        (100_000, 1_000, 100_000),  # whole cents per kg: exact, no rounding
        (0, 25_000, 0),
    ],
)
def test_per_kg_charge_rounds_half_to_even_per_unit(per_kg: int, grams: int, charge: int) -> None:
    assert int(per_kg_charge(per_kg, grams)) == charge


def test_scenario_money_takes_five_decimals(tmp_path: Path) -> None:
    network = write_folder(tmp_path / "net", FILES)
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        f'[network]\npath = "{network}"\n'
        "[orders]\ngenerate = true\ncount = 3\n"
        '[[variants]]\nname = "cheap storage"\n'
        'edits = [{ type = "set_storage_cost", cost = 0.0004 }]\n'
        "[policies]\nvalue_of_day = 0.12345\n",
        encoding="utf-8",
    )
    loaded = load_scenario(scenario)
    (edit,) = loaded.variants[-1].edits
    assert isinstance(edit, SetStorageCost) and edit.millicents == 40
    assert int(edit.apply(read_network(network)).storage_cost[0]) == 40
    assert loaded.options.settings.value_of_day == 12_345
