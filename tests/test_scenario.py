"""Scenario files, edits, order sources and the ``sourcing whatif`` command end to end."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sourcing.cli import main
from sourcing.loader import read_network
from sourcing.model import UNLIMITED_CAPACITY, Network, NodeKind
from sourcing.whatif.edits import (
    AddNode,
    CloseNode,
    NodeSelector,
    PoolStock,
    ScaleRates,
    SetCapacity,
    SetStorageCost,
)
from sourcing.whatif.inputs import (
    CsvOrders,
    GeneratedOrders,
    ScenarioError,
    generate_orders,
    read_orders,
)
from sourcing.whatif.scenario import load_scenario, prepare_scenario

TINY = Path(__file__).parent / "scenarios" / "tiny"


def tiny_network() -> Network:
    return read_network(TINY / "network")


# ------------------------------------------------------------------------ edits


def test_close_node_empties_it_and_can_move_its_stock() -> None:
    net = tiny_network()
    closed = CloseNode("A").apply(net)
    assert closed.on_hand.tolist() == [[0], [5]]
    assert closed.capacity[0] == 0
    moved = CloseNode("A", transfer_to="B").apply(net)
    assert moved.on_hand.tolist() == [[0], [7]]
    assert net.on_hand.tolist() == [[2], [5]]  # the original is untouched


def test_add_node_copies_or_moves_a_share_of_stock() -> None:
    net = tiny_network()
    edit = AddNode(
        "C", NodeKind.DC, 41.0, -95.0, 2, 150_000, 400, 40, stock_from="B", stock_share=0.5
    )
    added = edit.apply(net)
    assert added.node_ids == ("A", "B", "C")
    assert added.on_hand.tolist() == [[2], [5], [2]]  # floor(5 x 0.5), copied
    assert added.handling_cost[2] == 150_000 and added.storage_cost[2] == 400
    assert "1.50 per parcel, storage 0.004 per unit-day" in edit.describe()
    assert added.capacity[2] == 40 and added.node_kinds[2] == NodeKind.DC
    moved = AddNode("C", NodeKind.DC, 41.0, -95.0, stock_from="B", move_stock=True).apply(net)
    assert moved.on_hand.tolist() == [[2], [0], [5]]
    assert moved.capacity[2] == UNLIMITED_CAPACITY


def test_scale_rates_set_storage_cost_and_capacity() -> None:
    net = tiny_network()
    scaled = ScaleRates(1.5, zone="2").apply(net)
    # Money in millicents: $5.00 and $9.00 base, $1.00 and $2.00 per kg, storage $0.10.
    assert scaled.base_price.tolist() == [[500_000, 1_350_000]]
    assert scaled.per_kg.tolist() == [[100_000, 300_000]]
    assert ScaleRates(2.0).apply(net).base_price.tolist() == [[1_000_000, 1_800_000]]
    assert ScaleRates(1.000013).apply(net).base_price.tolist() == [[500_006, 900_012]]
    assert SetStorageCost(NodeSelector(kind=NodeKind.STORE), millicents=400).apply(
        net
    ).storage_cost.tolist() == [400, 10_000]
    assert SetStorageCost(factor=3.0).apply(net).storage_cost.tolist() == [0, 30_000]
    capped = SetCapacity(NodeSelector(node="B"), 4).apply(net)
    assert capped.capacity.tolist() == [UNLIMITED_CAPACITY, 4]
    assert SetCapacity(units=None).apply(capped).capacity.tolist() == [UNLIMITED_CAPACITY] * 2


def test_pool_stock_gives_every_holder_the_network_total() -> None:
    net = tiny_network().replace(on_hand=np.array([[2], [0]]))
    assert PoolStock().apply(net).on_hand.tolist() == [[2], [0]]
    assert PoolStock().apply(tiny_network()).on_hand.tolist() == [[7], [7]]


# ---------------------------------------------------------------- order sources


def test_read_orders_groups_lines_and_names_bad_rows(tmp_path: Path) -> None:
    orders = read_orders(TINY / "orders.csv", ["W"])
    assert [o.order_id for o in orders] == ["o1", "o2", "o3", "o4", "o5"]
    assert orders[3].order.lines[0].qty == 5
    assert orders[0].created_at == datetime(2024, 1, 1, 10)

    path = tmp_path / "orders.csv"
    header = "order_id,created_at,dest_lat,dest_lon,sku,qty\n"
    path.write_text(
        header + "a,2024-01-01T00:00:00Z,40,-100,W,1\na,2024-01-01T00:00:00Z,40,-100,W,2\n"
    )
    (two_lines,) = read_orders(path)
    assert [line.qty for line in two_lines.order.lines] == [1, 2]
    assert two_lines.created_at == datetime(2024, 1, 1)  # aware -> naive UTC

    cases = {
        "a,2024-01-01,40,-100,W,0\n": "row 2, column 'qty': not a positive whole number: '0'",
        "a,yesterday,40,-100,W,1\n": "row 2, column 'created_at': not an ISO date-time",
        "a,2024-01-01,95,-100,W,1\n": "row 2, column 'dest_lat'",
        "a,2024-01-01,40,-100,Q,1\n": "row 2, column 'sku': unknown SKU 'Q'",
        "a,2024-01-01,40,-100,W,1\na,2024-01-02,40,-100,W,1\n": (
            "row 3, column 'created_at': order 'a' has a different created_at than at row 2"
        ),
    }
    for body, message in cases.items():
        path.write_text(header + body)
        with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_orders(path, ["W"])
    path.write_text("order_id,created_at,dest_lat,sku,qty\n")
    with pytest.raises(ScenarioError, match="column 'dest_lon': missing required column"):
        read_orders(path)


def test_generated_orders_are_deterministic_and_follow_the_weights() -> None:
    from sourcing.demo import demo_network

    network = demo_network()
    spec = GeneratedOrders(count=400, seed=5, line_weights=(0, 1), qty_weights=(1,))
    orders = generate_orders(network, spec)
    assert orders == generate_orders(network, spec)
    assert orders != generate_orders(network, GeneratedOrders(count=400, seed=6))
    assert len(orders) == 400
    assert all(len(o.order.lines) == 2 for o in orders)
    assert all(line.qty == 1 for o in orders for line in o.order.lines)
    assert all(len({line.sku for line in o.order.lines}) == 2 for o in orders)
    times = [o.created_at for o in orders]
    assert times == sorted(times) and times[0] > spec.start
    # Arrival rate: sum(daily_demand) / (2 lines x 1 unit) orders per day, Poisson.
    days = (times[-1] - spec.start).total_seconds() / 86_400
    expected = 400 / (float(network.daily_demand.sum()) / 2)
    assert 0.8 * expected < days < 1.2 * expected
    lats = np.array([o.order.destination.lat for o in orders])
    assert np.all((lats > 24) & (lats < 50))


# ----------------------------------------------------------------- scenario files


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


NETWORK = f'[network]\npath = "{TINY / "network"}"\n[orders]\ncsv = "{TINY / "orders.csv"}"\n'


def test_load_the_tiny_scenario() -> None:
    scenario = load_scenario(TINY / "tiny.toml")
    assert scenario.name == "tiny"
    assert scenario.policies == ("greedy_nearest", "optimiser_cheapest")
    assert [v.name for v in scenario.variants] == ["base", "close_a"]
    assert scenario.variants[1].edits == (CloseNode("A"),)
    assert isinstance(scenario.orders, CsvOrders)
    assert scenario.orders.path == TINY / "orders.csv"
    prepared = prepare_scenario(scenario)
    assert prepared.decisions == 2 * 2 * 5
    assert [v.name for v, _ in prepared.networks] == ["base", "close_a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[network\n", "s.toml: invalid TOML"),
        (NETWORK + "[policies]\nrun = ['nope']\n", "policies.run: unknown policy 'nope'"),
        (NETWORK + "[policies]\ntime_limit = 1\n", "policies.time_limit: unknown key"),
        (NETWORK + "[policies]\nvalue_of_day = 1.000005\n", "value_of_day: at most 5 decimals"),
        (NETWORK + "[policies]\nrun = ['historical']\n", "'historical' needs an \\[olist\\]"),
        ("[orders]\ncsv = 'o.csv'\n", "network: required table is missing"),
        (
            NETWORK + "[[variants]]\nname = 'x'\nedits = [{ type = 'explode' }]\n",
            "variants\\[0\\].edits\\[0\\].type: unknown edit 'explode'",
        ),
        (
            NETWORK + "[[variants]]\nname = 'x'\nedits = [{ type = 'close_node' }]\n",
            "variants\\[0\\].edits\\[0\\].node: required key is missing",
        ),
        (
            NETWORK + "[[variants]]\nname = 'x'\n[[variants]]\nname = 'x'\n",
            "variants: two variants share a name",
        ),
        (
            NETWORK.replace("[orders]", "[orders]\ngenerate = true"),
            "orders: give exactly one of csv and generate = true",
        ),
    ],
)
def test_scenario_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        load_scenario(write(tmp_path, text))


def test_edits_that_do_not_fit_the_network_name_their_key(tmp_path: Path) -> None:
    text = NETWORK + "[[variants]]\nname = 'x'\nedits = [{ type = 'close_node', node = 'Z' }]\n"
    scenario = load_scenario(write(tmp_path, text))
    with pytest.raises(ScenarioError, match=r"variants\[0\].edits\[0\]: unknown node 'Z'"):
        prepare_scenario(scenario)


def test_missing_files_are_scenario_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "absent.toml")
    scenario = load_scenario(write(tmp_path, NETWORK.replace("orders.csv", "gone.csv")))
    with pytest.raises(ScenarioError, match=r"gone\.csv: file not found"):
        prepare_scenario(scenario)


# ------------------------------------------------------------------------- CLI


def test_whatif_cli_writes_every_output_with_hand_checked_kpis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["whatif", str(TINY / "tiny.toml"), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    names = {p.name for p in out.iterdir()}
    assert names == {
        "kpis.csv",
        "kpis.json",
        "savings.csv",
        "node_volume.csv",
        "orders.csv.gz",
        "cost_vs_days.png",
        "split_rate.png",
        "node_volume.png",
        "report.html",
    }
    kpis = pd.read_csv(out / "kpis.csv").set_index(["variant", "policy"])
    # Hand computation: see tests/test_simulate.py (same network and orders).
    greedy = kpis.loc[("base", "greedy_nearest")]
    assert greedy["net_cost_per_order"] == pytest.approx(15.80)
    assert greedy["split_rate"] == pytest.approx(0.25)
    assert greedy["fill_rate"] == pytest.approx(0.6)
    optimiser = kpis.loc[("base", "optimiser_cheapest")]
    assert optimiser["net_cost_per_order"] == pytest.approx(53.1 / 4, abs=0.005)  # to the cent
    # Closing A: every order goes to B (5 units: o1 1 + o2 2 + o3 1 + o4 1 of 5).
    closed = kpis.loc[("close_a", "greedy_nearest")]
    assert closed["unit_fill_rate"] == pytest.approx(0.5)
    assert closed["mean_delivery_days"] == 3
    volume = pd.read_csv(out / "node_volume.csv")
    assert volume[(volume["variant"] == "close_a") & (volume["node_id"] == "A")]["units"].sum() == 0

    document = json.loads((out / "kpis.json").read_text())
    assert document["scenario"] == "tiny"
    assert document["variants"][1]["edits"] == ["close A, stock dropped"]
    rows = {(r["variant"], r["policy"]): r for r in document["kpis"]}
    assert rows[("base", "greedy_nearest")]["net_cost_per_order"] == pytest.approx(63.2 / 4)
    saving = document["savings"][0]
    assert (saving["optimiser"], saving["baseline"]) == ("optimiser_cheapest", "greedy_nearest")
    assert saving["saving_per_order"] == pytest.approx((63.2 - 53.1) / 4)

    for png in ("cost_vs_days.png", "split_rate.png", "node_volume.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "greedy_nearest" in page and "close A, stock dropped" in page
    records = pd.read_csv(out / "orders.csv.gz")
    assert len(records) == 2 * 2 * 5
    assert "net_cost" in captured.out and "optimiser_cheapest" in captured.out


def test_whatif_cli_overrides_and_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["whatif", str(TINY / "tiny.toml"), "--out", str(out), "--no-progress"]
    assert main([*args, "--orders", "2", "--policies", "greedy_nearest", "--variants", "base"]) == 0
    kpis = pd.read_csv(out / "kpis.csv")
    assert kpis[["variant", "policy", "orders"]].values.tolist() == [["base", "greedy_nearest", 2]]
    capsys.readouterr()

    for bad, message in [
        (["--policies", "nope"], "unknown policy 'nope'"),
        (["--variants", "nope"], "unknown variant 'nope'"),
        (["--orders", "0"], "must be >= 1"),
    ]:
        assert main([*args, *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("sourcing: error: ") and message in err
        assert err.count("\n") == 1
    assert main(["whatif", str(tmp_path / "absent.toml")]) == 2
    assert "absent.toml: file not found" in capsys.readouterr().err
