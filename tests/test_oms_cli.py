"""The ``oms`` command in-process: load a planner CSV folder into a store, migrate, version.

``oms.cli.main`` returns the exit status; output is captured with capsys.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from oms.cli import DISTRIBUTION, main, package_version
from oms.store import Store
from sourcing.loader import write_network

from service_support import hand_network

# Settings read ``OMS_*`` variables; the tests pass everything on the command line.
pytestmark = pytest.mark.usefixtures("no_oms_environment")


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store' / 'oms.db'}"


@pytest.fixture
def network_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "network"
    write_network(hand_network(), folder)
    return folder


def stock_of(store: Store) -> dict[tuple[str, str], tuple[int, int]]:
    with store.read() as conn:
        return {(p.node_id, p.sku): (p.on_hand, p.safety_stock) for p in store.positions(conn)}


def test_load_puts_the_network_into_the_store(
    network_dir: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", str(network_dir), "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"loaded 3 nodes, 2 SKUs, 5 stock positions into {url}"
    assert err == ""

    network = hand_network()
    store = Store(url, pool_size=1)
    try:
        catalog = store.catalog()
        assert set(catalog.node_ids) == set(network.node_ids)
        assert set(catalog.sku_ids) == set(network.sku_ids)
        assert catalog.zone_ids == network.zone_ids
        assert catalog.service_ids == network.service_ids
        expected = {
            (node, sku): (int(network.on_hand[n, s]), int(network.safety_stock[n, s]))
            for n, node in enumerate(network.node_ids)
            for s, sku in enumerate(network.sku_ids)
            if network.on_hand[n, s] > 0
        }
        assert stock_of(store) == expected
        assert store.ledger_mismatches() == []
    finally:
        store.dispose()


def test_loading_twice_changes_nothing(
    network_dir: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", str(network_dir), "--database-url", url]) == 0
    store = Store(url, pool_size=1)
    try:
        before = stock_of(store)
        assert main(["load", str(network_dir), "--database-url", url]) == 0
        assert stock_of(store) == before
        assert store.ledger_mismatches() == []
    finally:
        store.dispose()
    capsys.readouterr()


def test_load_changed_stock_goes_through_the_ledger(
    network_dir: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", str(network_dir), "--database-url", url]) == 0
    write_network(hand_network({("DC-NJ", "A"): 9, ("ST-PHL", "A"): 0}), network_dir)
    assert main(["load", str(network_dir), "--database-url", url]) == 0
    store = Store(url, pool_size=1)
    try:
        stock = stock_of(store)
        assert stock[("DC-NJ", "A")] == (9, 0)
        assert stock[("ST-PHL", "A")] == (0, 0)
        assert store.ledger_mismatches() == []
    finally:
        store.dispose()
    capsys.readouterr()


def corrupt_latitude(folder: Path) -> None:
    path = folder / "nodes.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    rows[1][rows[0].index("lat")] = "north"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


@pytest.mark.parametrize(
    ("spoil", "file", "words"),
    [
        pytest.param(corrupt_latitude, "nodes.csv", ("row 2", "'lat'"), id="bad-value"),
        pytest.param(
            lambda folder: (folder / "rates.csv").unlink(),
            "rates.csv",
            ("file not found",),
            id="missing-file",
        ),
        pytest.param(
            lambda folder: (folder / "skus.csv").write_text("sku,daily_demand\nA,1\n"),
            "skus.csv",
            ("missing required column", "'weight_kg'"),
            id="missing-column",
        ),
    ],
)
def test_bad_csv_folder_exits_2_with_one_line(
    spoil: Callable[[Path], object],
    file: str,
    words: tuple[str, ...],
    network_dir: Path,
    url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spoil(network_dir)
    assert main(["load", str(network_dir), "--database-url", url]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"oms load: {file}")
    for word in words:
        assert word in lines[0]
    # Nothing was loaded.
    store = Store(url, pool_size=1)
    try:
        assert store.is_empty()
    finally:
        store.dispose()


@pytest.mark.parametrize(
    "args",
    [pytest.param([], id="neither-dir-nor-demo"), pytest.param(["DIR", "--demo"], id="both")],
)
def test_load_needs_exactly_one_source(
    args: list[str], url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["load", *(str(tmp_path) if a == "DIR" else a for a in args), "--database-url", url]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == "oms load: give a NETWORK_DIR or --demo (one of them)"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out, _ = capsys.readouterr()
    assert out.strip() == f"oms ({DISTRIBUTION}) {package_version()}"
    assert package_version() != "unknown", "the package is installed in the venv"


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    _, err = capsys.readouterr()
    assert "usage: oms" in err


def test_migrate_creates_an_empty_current_schema(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--database-url", url]) == 0
    assert main(["migrate", "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"schema up to date in {url}"] * 2
    assert err == ""
    store = Store(url, pool_size=1)
    try:
        assert store.is_empty()
        assert store.ledger_mismatches() == []
    finally:
        store.dispose()


def test_database_url_from_the_environment(
    network_dir: Path, url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OMS_DATABASE_URL", url)
    assert main(["load", str(network_dir)]) == 0
    assert url in capsys.readouterr().out
    store = Store(url, pool_size=1)
    try:
        assert not store.is_empty()
    finally:
        store.dispose()


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--cpu-slots", "0"], {}, "oms serve: cpu_slots must be at least 1, got 0"),
        (["--threads", "-2"], {}, "oms serve: threads must be at least 1, got -2"),
        (["--port", "70000"], {}, "oms serve: port must be in 0..65535, got 70000"),
        (["--quote-ttl", "0"], {}, "oms serve: quote_ttl_s must be positive, got 0.0"),
        ([], {"OMS_WORKERS": "two"}, "oms serve: OMS_WORKERS: 'two' is not a valid int"),
        ([], {"OMS_CPU_SLOTS": "1.5"}, "oms serve: OMS_CPU_SLOTS: '1.5' is not a valid int"),
        ([], {"OMS_CPU_SLOTS": "0"}, "oms serve: cpu_slots must be at least 1, got 0"),
    ],
)
def test_bad_serve_settings_exit_2_with_one_line(
    argv: list[str],
    env: dict[str, str],
    message: str,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--database-url", url, *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == message


def test_solver_slots_default_by_store_unless_set() -> None:
    from oms.settings import Settings

    assert Settings(database_url="sqlite:///oms.db").solver_slots == 1
    assert Settings(database_url="postgresql+psycopg://postgres@host/db").solver_slots == 2
    assert Settings(database_url="sqlite:///oms.db", cpu_slots=3).solver_slots == 3
    assert Settings.from_env({"OMS_CPU_SLOTS": "4"}).solver_slots == 4
    assert Settings.from_env({"OMS_ADMIN_TOKEN": "123"}).admin_token == "123"


def test_an_optional_float_setting_reads_as_a_number_and_is_checked() -> None:
    from oms.settings import Settings

    assert Settings.from_env({}).forward_prices_max_age_s is None
    age = Settings.from_env({"OMS_FORWARD_PRICES_MAX_AGE_S": "5400.5"}).forward_prices_max_age_s
    assert age == 5400.5 and isinstance(age, float)
    with pytest.raises(ValueError, match="MAX_AGE_S: 'soon' is not a valid float"):
        Settings.from_env({"OMS_FORWARD_PRICES_MAX_AGE_S": "soon"})
    with pytest.raises(ValueError, match=r"forward_prices_max_age_s must be positive, got 0\.0"):
        Settings.from_env({"OMS_FORWARD_PRICES_MAX_AGE_S": "0"})


@pytest.mark.parametrize(
    ("cart", "message"),
    [
        (
            '{"destination": {"lat": 40.7}, "lines": [{"sku": "A"}]}',
            "destination.lon: must be a number, got None; lines[0].qty: must be an integer, "
            "got None",
        ),
        (  # the contract's JSON form (QuoteDeliveryOptionsRequest)
            '{"destination": {"latitude": 40.7, "longitude": -74.0}, "lines": [{"sku": "A"}]}',
            "lines[0].quantity: must be a positive integer",
        ),
        (
            '{"destination": {"latitude": 40.7}, "lines": [{"sku": "A", "quantiti": 1}]}',
            'no field named "quantiti"',
        ),
        ('{"destination": {"lat": 40.7, "lon": -74.0}, "lines": [', "invalid JSON"),
    ],
)
def test_quote_names_the_bad_field_of_the_cart_file(
    cart: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cart is checked before any call: no server is needed to be told what is wrong."""
    path = tmp_path / "cart.json"
    path.write_text(cart, encoding="utf-8")
    assert main(["quote", str(path), "--target", "127.0.0.1:1", "--timeout", "0.2"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"oms quote: {path}: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_quote_of_a_missing_cart_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.json"
    assert main(["quote", str(missing), "--target", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err.strip() == f"oms quote: order file {str(missing)!r} not found"


@pytest.mark.parametrize(
    "cart",
    [
        # The contract's JSON form, as buf curl -d sends it, with a field of the request.
        {
            "destination": {"latitude": 40.7128, "longitude": -74.0060},
            "lines": [{"sku": "A", "quantity": 2}],
            "pickupStoreIds": ["ST-PHL"],
        },
        {"destination": {"lat": 40.7128, "lon": -74.0060}, "lines": [{"sku": "A", "qty": 2}]},
    ],
    ids=["contract", "sourcing"],
)
def test_quote_reads_the_contract_json_form_and_the_sourcing_form(
    cart: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from service_support import running_server, sqlite_url

    path = tmp_path / "cart.json"
    path.write_text(json.dumps(cart), encoding="utf-8")
    with running_server(sqlite_url(tmp_path)) as client:
        assert main(["quote", str(path), "--target", client.target]) == 0
    menu = json.loads(capsys.readouterr().out)
    units = {
        sum(int(line["quantity"]) for parcel in o["parcels"] for line in parcel["lines"])
        for o in menu["options"]
    }
    assert units == {2}
    collect = [o for o in menu["options"] if o.get("pickup_store_id") == "ST-PHL"]
    assert bool(collect) == ("pickupStoreIds" in cart)


def test_the_example_carts_are_the_same_cart() -> None:
    import json

    from oms.cli import _quote_request as quote_request
    from oms.cli import build_parser

    examples = Path(__file__).resolve().parents[1] / "examples"
    requests = [
        quote_request(build_parser().parse_args(["quote", str(examples / name)]))
        for name in ("demo_cart.json", "demo_quote_request.json")
    ]
    assert requests[0] == requests[1]
    assert json.loads((examples / "demo_quote_request.json").read_text())["lines"][0]["quantity"]
