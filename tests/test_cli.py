"""The ``sourcing`` command line: quote JSON against the library, demo network, error reports."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sourcing import QuoteSettings, evaluate, quote
from sourcing.cli import main
from sourcing.demo import demo_network
from sourcing.loader import read_network, write_network
from sourcing.model import (
    UNLIMITED_CAPACITY,
    Allocation,
    Network,
    NodeKind,
    Option,
    Order,
    ParcelLine,
    ParcelPlan,
    to_currency,
)
from sourcing.orders import order_from_dict

EXAMPLE_CART = Path(__file__).resolve().parents[1] / "examples" / "demo_cart.json"
CHICAGO = {"lat": 41.88, "lon": -87.63}


def small_network() -> Network:
    """Two nodes, two SKUs, two services, two zones; every figure chosen to be hand-checkable.

    From Chicago, A (41.0, -87.0) is ~110 km away (zone "near"), B (34, -118)
    ~2,800 km (zone "far"). A holds 1 LAMP only, so any cart with 2 LAMPs needs B.
    """
    return Network(
        node_ids=("A", "B"),
        node_kinds=(NodeKind.DC, NodeKind.STORE),
        lat=np.array([41.0, 34.0]),
        lon=np.array([-87.0, -118.0]),
        handling_days=np.array([1, 0]),
        handling_cost=np.array([150_000, 100_000]),  # millicents per parcel
        storage_cost=np.array([2_000, 5_000]),  # millicents per unit-day
        capacity=np.array([UNLIMITED_CAPACITY, 10]),
        sku_ids=("MUG", "LAMP"),
        weight_g=np.array([500, 2250]),
        daily_demand=np.array([2.0, 0.0]),
        on_hand=np.array([[10, 1], [4, 5]]),
        safety_stock=np.array([[0, 0], [0, 1]]),
        reserved=np.zeros((2, 2), dtype=np.int64),
        zone_ids=("near", "far"),
        zone_max_km=np.array([500.0, 20000.0]),
        service_ids=("ground", "express"),
        base_price=np.array([[500, 900], [1200, 2000]]) * 1000,
        per_kg=np.array([[100, 200], [300, 400]]) * 1000,
        transit_days=np.array([[2, 5], [1, 2]]),
        offered=np.ones((2, 2), dtype=np.bool_),
    )


def cart(*lines: tuple[str, int]) -> dict[str, Any]:
    return {"destination": CHICAGO, "lines": [{"sku": s, "qty": q} for s, q in lines]}


@pytest.fixture
def network_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "net"
    write_network(small_network(), folder)
    return folder


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def allocation_of(parcels: list[dict[str, Any]]) -> Allocation:
    return Allocation(
        tuple(
            ParcelPlan(
                p["node_id"],
                p["service"],
                tuple(ParcelLine(pl["line"], pl["sku"], pl["qty"]) for pl in p["lines"]),
            )
            for p in parcels
        )
    )


def cents(millicents: int) -> float:
    return float(to_currency(millicents))


def assert_option_matches(
    got: dict[str, Any], want: Option, network: Network, order: Order
) -> None:
    """One JSON option against the library's option, and re-priced by the reference evaluator."""
    assert got["labels"] == [label.value for label in want.labels]
    assert got["cost"] == cents(want.cost)
    assert got["delivery_days"] == want.delivery_days
    assert got["proof"] == want.proof.method
    assert got["breakdown"] == {
        "shipping": cents(want.evaluation.shipping),
        "handling": cents(want.evaluation.handling),
        "storage_credit": cents(want.evaluation.storage_credit),
    }
    assert allocation_of(got["parcels"]) == want.allocation
    for parcel, ref in zip(got["parcels"], want.evaluation.parcels, strict=True):
        assert parcel["zone"] == ref.zone
        assert parcel["distance_km"] == round(ref.distance_km, 1)
        assert parcel["weight_kg"] == ref.weight_g / 1000
        assert parcel["cost"] == cents(ref.cost)
        assert parcel["arrival_days"] == ref.arrival_days
    # The JSON alone is enough to re-price the option by the section 7 rules.
    again = evaluate(network, order, allocation_of(got["parcels"]))
    assert again.is_feasible
    assert cents(again.cost) == got["cost"]
    assert again.delivery_days == got["delivery_days"]


# --------------------------------------------------------------------------- quote


def test_quote_matches_the_library_and_hand_figures(
    capsys: pytest.CaptureFixture[str], network_dir: Path, tmp_path: Path
) -> None:
    data = cart(("MUG", 3), ("LAMP", 2))
    code, out, err = run(
        capsys, "quote", str(network_dir), str(write_json(tmp_path / "o.json", data))
    )
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert set(doc) == {"options", "shortfall", "stats"}
    assert doc["shortfall"] == []

    network, order = small_network(), order_from_dict(data)
    want = quote(network, order, QuoteSettings())
    assert len(doc["options"]) == len(want.options)
    for got, option in zip(doc["options"], want.options, strict=True):
        assert_option_matches(got, option, network, order)
        assert got["status"] == "OPTIMAL"

    by_label = {label: o for o in doc["options"] for label in o["labels"]}
    # Hand-computed: B ships everything by ground (the only one-parcel plan).
    # 6 kg: 9.00 + 2.00 x 6 shipping, 1.00 handling; credit 3 x 0.05 x 2 days + 2 x 0.05 x 30.
    cheapest = by_label["CHEAPEST"]
    assert cheapest["labels"] == ["CHEAPEST", "SINGLE_PARCEL", "BALANCED"]
    assert cheapest["cost"] == 18.70
    assert cheapest["breakdown"] == {"shipping": 21.0, "handling": 1.0, "storage_credit": 3.3}
    assert cheapest["delivery_days"] == 5
    [parcel] = cheapest["parcels"]
    assert (parcel["node_id"], parcel["service"], parcel["zone"]) == ("B", "ground", "far")
    assert parcel["weight_kg"] == 6.0
    assert parcel["lines"] == [
        {"line": 0, "sku": "MUG", "qty": 3},
        {"line": 1, "sku": "LAMP", "qty": 2},
    ]
    # B by express arrives on day 2 (A needs a handling day, so nothing beats it).
    assert by_label["FASTEST"]["cost"] == 41.70
    assert by_label["FASTEST"]["delivery_days"] == 2


def test_value_of_day_moves_balanced(
    capsys: pytest.CaptureFixture[str], network_dir: Path, tmp_path: Path
) -> None:
    order_file = write_json(tmp_path / "o.json", cart(("MUG", 3), ("LAMP", 2)))
    code, out, _ = run(capsys, "quote", str(network_dir), str(order_file), "--value-of-day", "10")
    assert code == 0
    labels = [o["labels"] for o in json.loads(out)["options"]]
    # 18.70 + 10 x 5 > 41.70 + 10 x 2: the fast plan is now also the balanced one.
    assert labels == [["CHEAPEST", "SINGLE_PARCEL"], ["FASTEST", "BALANCED"]]


@pytest.mark.parametrize(
    ("flags", "settings"),
    [
        (["--value-of-day", "0.05"], QuoteSettings(value_of_day=5_000)),
        (["--value-of-day", "12.5"], QuoteSettings(value_of_day=1_250_000)),
        (["--max-parcels", "1"], QuoteSettings(max_parcels=1)),
        (["--latest-day", "3"], QuoteSettings(latest_day=3)),
        (["--time-limit", "5"], QuoteSettings(time_limit_s=5.0)),
    ],
)
def test_flags_reach_the_settings(
    capsys: pytest.CaptureFixture[str],
    network_dir: Path,
    tmp_path: Path,
    flags: list[str],
    settings: QuoteSettings,
) -> None:
    data = cart(("MUG", 3), ("LAMP", 2))
    code, out, _ = run(
        capsys, "quote", str(network_dir), str(write_json(tmp_path / "o.json", data)), *flags
    )
    assert code == 0
    network, order = small_network(), order_from_dict(data)
    want = quote(network, order, settings)
    got = json.loads(out)["options"]
    assert len(got) == len(want.options)
    for g, w in zip(got, want.options, strict=True):
        assert_option_matches(g, w, network, order)


def test_frontier_only_when_asked(
    capsys: pytest.CaptureFixture[str], network_dir: Path, tmp_path: Path
) -> None:
    data = cart(("MUG", 3), ("LAMP", 2))
    order_file = str(write_json(tmp_path / "o.json", data))
    # Options may sit between the two paths.
    code, out, _ = run(capsys, "quote", str(network_dir), "--frontier", order_file)
    assert code == 0
    doc = json.loads(out)
    network, order = small_network(), order_from_dict(data)
    want = quote(network, order)
    assert len(doc["frontier"]) == len(want.frontier)
    for got, option in zip(doc["frontier"], want.frontier, strict=True):
        assert_option_matches(got, option, network, order)
    assert {o["cost"] for o in doc["options"]} <= {o["cost"] for o in doc["frontier"]}


def test_allow_partial_reports_the_shortfall(
    capsys: pytest.CaptureFixture[str], network_dir: Path, tmp_path: Path
) -> None:
    # 5 LAMPs available (A: 1, B: 5 - safety 1), 7 asked.
    order_file = str(write_json(tmp_path / "o.json", cart(("MUG", 1), ("LAMP", 7))))
    code, out, _ = run(capsys, "quote", str(network_dir), order_file, "--allow-partial")
    assert code == 0
    doc = json.loads(out)
    assert doc["shortfall"] == [{"line": 1, "sku": "LAMP", "requested": 7, "covered": 5}]
    for option in doc["options"]:
        shipped = sum(
            pl["qty"] for p in option["parcels"] for pl in p["lines"] if pl["sku"] == "LAMP"
        )
        assert shipped == 5


def test_order_from_stdin(
    capsys: pytest.CaptureFixture[str], network_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(cart(("MUG", 2)))))
    code, out, err = run(capsys, "quote", str(network_dir), "-")
    assert (code, err) == (0, "")
    assert json.loads(out)["options"]


def test_demo_cart_quotes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "quote", "--demo", str(EXAMPLE_CART))
    assert (code, err) == (0, "")
    doc = json.loads(out)
    data = json.loads(EXAMPLE_CART.read_text(encoding="utf-8"))
    assert len(data["lines"]) == 3
    network, order = demo_network(), order_from_dict(data)
    want = quote(network, order)
    labels = {label for o in doc["options"] for label in o["labels"]}
    assert {"CHEAPEST", "FASTEST", "BALANCED"} <= labels
    for got, option in zip(doc["options"], want.options, strict=True):
        assert_option_matches(got, option, network, order)


# --------------------------------------------------------------------------- demo-network


def test_demo_network_round_trips(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "demo-network", str(tmp_path / "demo"))
    assert (code, err) == (0, "")
    got, want = read_network(tmp_path / "demo"), demo_network()
    for name in ("node_ids", "node_kinds", "sku_ids", "zone_ids", "service_ids"):
        assert getattr(got, name) == getattr(want, name), name
    for name in (
        "lat", "lon", "handling_days", "handling_cost", "storage_cost", "capacity", "weight_g",
        "daily_demand", "on_hand", "safety_stock", "reserved", "zone_max_km", "base_price",
        "per_kg", "transit_days", "offered",
    ):  # fmt: skip
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_demo_network_seed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, _ = run(capsys, "demo-network", str(tmp_path / "demo3"), "--seed", "3")
    assert code == 0
    got = read_network(tmp_path / "demo3")
    np.testing.assert_array_equal(got.on_hand, demo_network(3).on_hand)
    assert not np.array_equal(got.on_hand, demo_network().on_hand)


# --------------------------------------------------------------------------- errors


def _bad_csv(network_dir: Path) -> Path:
    nodes = network_dir / "nodes.csv"
    rows = nodes.read_text(encoding="utf-8").splitlines()
    cells = rows[2].split(",")
    cells[2] = "north"  # lat of node B, data row 2 = file row 3
    rows[2] = ",".join(cells)
    nodes.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return network_dir


ERROR_CASES: list[tuple[str, Any, list[str]]] = [
    # (network: "ok" | "missing" | "bad-csv", order JSON or raw text, words the message holds)
    ("missing", cart(("MUG", 1)), ["network folder", "nope", "not found"]),
    ("bad-csv", cart(("MUG", 1)), ["nodes.csv", "row 3", "column 'lat'", "north"]),
    ("ok", cart(("MUG", 1), ("SOFA", 1)), ["lines[1].sku", "unknown SKU 'SOFA'"]),
    ("ok", cart(("MUG", 0)), ["lines[0].qty", "positive integer"]),
    ("ok", "{\"destination\": {\"lat\": 41.9, ", ["invalid JSON", "line 1"]),
    ("ok", "{\"destination\": NaN}", ["invalid JSON", "NaN"]),
    ("ok", [1, 2], ["order must be a JSON object"]),
    ("ok", {"destination": CHICAGO, "lines": [{"sku": "MUG"}]}, ["lines[0].qty"]),
    ("ok", cart(("MUG", 2), ("LAMP", 9)), ["not enough available stock", "LAMP", "requested 9"]),
    ("ok", cart(("MUG", 99), ("LAMP", 99)), ["MUG", "LAMP"]),
    ("ok", {"destination": {"lat": 95.0, "lon": 0}, "lines": [{"sku": "MUG", "qty": 1}]},
     ["destination.lat"]),
]  # fmt: skip


@pytest.mark.parametrize(("network", "order", "words"), ERROR_CASES)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    network_dir: Path,
    tmp_path: Path,
    network: str,
    order: Any,
    words: list[str],
) -> None:
    folder = {"ok": network_dir, "missing": tmp_path / "nope", "bad-csv": network_dir}[network]
    if network == "bad-csv":
        _bad_csv(network_dir)
    order_file = tmp_path / "order.json"
    if isinstance(order, str):
        order_file.write_text(order, encoding="utf-8")
    else:
        write_json(order_file, order)
    code, out, err = run(capsys, "quote", str(folder), str(order_file))
    assert code == 2
    assert out == ""
    assert err.startswith("sourcing: error: ")
    assert err.count("\n") == 1 and err.endswith("\n")
    assert "Traceback" not in err
    for word in words:
        assert word in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["quote", "{net}", "{tmp}/absent.json"], ["absent.json", "not found"]),
        (["quote", "{net}", "{tmp}"], ["is a directory"]),
        (["quote", "{net}", "{order}", "--value-of-day", "-1"], ["--value-of-day", ">= 0"]),
        (["quote", "{net}", "{order}", "--value-of-day", "1.234567"], ["at most 5 decimals"]),
        (["quote", "{net}", "{order}", "--value-of-day", "abc"], ["not an amount"]),
        (["quote", "{net}", "{order}", "--max-parcels", "0"], ["--max-parcels"]),
        (["quote", "{net}", "{order}", "--time-limit", "0"], ["--time-limit"]),
        (["quote", "--demo", "{net}", "{order}"], ["--demo"]),
        (["quote", "{order}"], ["NETWORK_DIR"]),
        (["quote", "{net}", "{order}", "--bogus"], ["unrecognized arguments: --bogus"]),
        (["frobnicate"], ["invalid choice"]),
        ([], ["required"]),
        (["demo-network", "{order}"], ["not a directory"]),
    ],
)
def test_bad_arguments(
    capsys: pytest.CaptureFixture[str],
    network_dir: Path,
    tmp_path: Path,
    argv: list[str],
    words: list[str],
) -> None:
    order_file = write_json(tmp_path / "order.json", cart(("MUG", 1)))
    paths = {"net": str(network_dir), "tmp": str(tmp_path), "order": str(order_file)}
    code, out, err = run(capsys, *(a.format(**paths) for a in argv))
    assert (code, out) == (2, "")
    assert err.startswith("sourcing: error: ") and err.count("\n") == 1
    for word in words:
        assert word in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "quote", "--help")
    assert code == 0
    assert "--value-of-day" in out and "--demo" in out


def _console_script() -> str:
    found = Path(sys.executable).parent / "sourcing"
    if found.exists():
        return str(found)
    which = shutil.which("sourcing")
    if which is None:
        pytest.skip("the sourcing console script is not installed")
    return which


def test_console_script_quotes_the_example_cart() -> None:
    done = subprocess.run(
        [_console_script(), "quote", "--demo", str(EXAMPLE_CART)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["options"] and doc["shortfall"] == []
    assert all(o["status"] == "OPTIMAL" for o in doc["options"])


def test_console_script_error_has_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [_console_script(), "quote", str(tmp_path / "none"), str(EXAMPLE_CART)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("sourcing: error: ") and done.stderr.count("\n") == 1
