"""The contract in ``proto/``: generated code is current, buf lints it, and real clients see it.

* regenerating with ``scripts/gen_proto.py`` reproduces ``src/oms/v1`` byte for byte
  (no stale, missing or extra file);
* ``buf lint proto`` passes (the STANDARD rules of ``proto/buf.yaml``);
* server reflection over a real channel lists the three ``oms.v1`` services and health;
* ``buf curl`` (an external gRPC client that knows nothing of this code base) finds the
  methods by reflection and gets delivery options from the hand network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service_support import ADMIN_TOKEN, Client, hand_network, running_server, sqlite_url

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "src" / "oms" / "v1"
GEN_PROTO = ROOT / "scripts" / "gen_proto.py"
BUF = Path(sys.executable).parent / "buf"
OMS_SERVICES = {"oms.v1.CheckoutService", "oms.v1.FulfilmentService", "oms.v1.InventoryService"}
HEALTH = "grpc.health.v1.Health"
CART = {
    "destination": {"latitude": 40.71, "longitude": -74.0},
    "lines": [{"sku": "A", "quantity": 1}],
}


def generate(out_dir: Path) -> list[str]:
    """``generate(out_dir)`` of ``scripts/gen_proto.py``; returns the names of the files written.

    It runs in a fresh interpreter: grpc_tools' protoc, run in-process after ortools has
    been imported (as it is in any test session that quotes), aborts the process with
    heap corruption ("Invalid package name: google.protobuf", "corrupted size vs.
    prev_size"): the two bundled copies of libprotobuf clash.
    """
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        from pathlib import Path
        spec = importlib.util.spec_from_file_location("gen_proto", {str(GEN_PROTO)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        written = module.generate(Path({str(out_dir)!r}))
        print(json.dumps([p.name for p in written]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.splitlines()[-1]))


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file directly in ``folder`` (bytecode caches are not part of the package)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def differences(committed: dict[str, bytes], fresh: dict[str, bytes]) -> list[str]:
    """What makes ``committed`` differ from a fresh generation, one line per file."""
    return [
        *(f"missing: {name}" for name in sorted(fresh.keys() - committed.keys())),
        *(f"extra: {name}" for name in sorted(committed.keys() - fresh.keys())),
        *(
            f"stale: {name}"
            for name in sorted(fresh.keys() & committed.keys())
            if fresh[name] != committed[name]
        ),
    ]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("generated")
    written = generate(out)
    files = files_of(out / "oms" / "v1")
    assert sorted(written) == sorted(files)
    return files


def test_generated_code_is_current(fresh: dict[str, bytes]) -> None:
    problems = differences(files_of(GENERATED), fresh)
    assert not problems, "src/oms/v1 is not what proto/ generates; run " + (
        "`python scripts/gen_proto.py`:\n" + "\n".join(problems)
    )
    # Every proto file has its four generated modules, plus the package marker.
    expected = {"__init__.py"} | {
        f"{proto.stem}{suffix}"
        for proto in (ROOT / "proto" / "oms" / "v1").glob("*.proto")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
    }
    assert set(fresh) == expected


def test_staleness_check_catches_each_kind_of_drift(fresh: dict[str, bytes]) -> None:
    """The comparison above is not vacuous: an edit, a lost file and a stray file all show."""
    tampered = dict(fresh)
    tampered["common_pb2.py"] += b"\n"
    del tampered["checkout_pb2.pyi"]
    tampered["old_pb2.py"] = b""
    assert differences(tampered, fresh) == [
        "missing: checkout_pb2.pyi",
        "extra: old_pb2.py",
        "stale: common_pb2.py",
    ]
    assert differences(dict(fresh), fresh) == []


def test_vendored_google_types_are_googleapis_own() -> None:
    """proto/google/type holds copies for buf to resolve offline; they must be, byte for
    byte, the files googleapis-common-protos installs (whose Python code the service runs)."""
    import google.type.money_pb2

    installed = Path(google.type.money_pb2.__file__).parent
    vendored = ROOT / "proto" / "google" / "type"
    names = sorted(p.name for p in vendored.glob("*.proto"))
    assert names == ["date.proto", "money.proto"]
    for name in names:
        assert (vendored / name).read_bytes() == (installed / name).read_bytes(), name


def buf_env(tmp_path: Path) -> dict[str, str]:
    """buf with its cache in the test's folder, so the run leaves nothing behind."""
    return {**os.environ, "BUF_CACHE_DIR": str(tmp_path / "buf-cache"), "NO_COLOR": "1"}


@pytest.fixture
def buf() -> Path:
    if not BUF.exists():
        pytest.skip(f"no buf binary at {BUF} (install the dev extra: buf-bin)")
    return BUF


def test_buf_lint(buf: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(buf), "lint", "proto"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=buf_env(tmp_path),
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with running_server(sqlite_url(tmp_path_factory.mktemp("contract")), hand_network()) as client:
        yield client


def reflect(client: Client, **request: str) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    (response,) = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=10
    )
    return response


def test_reflection_lists_the_services(server: Client) -> None:
    listed = {s.name for s in reflect(server, list_services="").list_services_response.service}
    assert OMS_SERVICES | {HEALTH} <= listed, listed


def test_reflection_describes_the_contract(server: Client) -> None:
    """The descriptors the server hands out are the ones in ``proto/`` (all methods present)."""
    response = reflect(server, file_containing_symbol="oms.v1.CheckoutService")
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    checkout = next(f for f in files if f.name == "oms/v1/checkout.proto")
    (service,) = checkout.service
    assert [m.name for m in service.method] == [
        "QuoteDeliveryOptions",
        "StartCheckout",
        "AbandonCheckout",
        "PlaceOrder",
        "GetOrder",
        "ListOrders",
        "CancelOrder",
    ]


def test_unknown_method_is_unimplemented(server: Client) -> None:
    call = server.channel.unary_unary("/oms.v1.CheckoutService/NoSuchMethod")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def buf_curl(buf: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(buf), "curl", "--protocol", "grpc", "--http2-prior-knowledge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=buf_env(tmp_path),
    )


def test_buf_curl_lists_methods_by_reflection(buf: Path, server: Client, tmp_path: Path) -> None:
    done = buf_curl(buf, tmp_path, "--list-methods", f"http://{server.target}")
    assert done.returncode == 0, done.stderr
    methods = set(done.stdout.split())
    assert "oms.v1.CheckoutService/QuoteDeliveryOptions" in methods
    assert "oms.v1.InventoryService/WatchLowStockAlerts" in methods
    assert "oms.v1.FulfilmentService/ReturnItems" in methods


def test_buf_curl_quotes_delivery_options(buf: Path, server: Client, tmp_path: Path) -> None:
    url = f"http://{server.target}/oms.v1.CheckoutService/QuoteDeliveryOptions"
    done = buf_curl(buf, tmp_path, "-d", json.dumps(CART), url)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["quoteId"].startswith("q_")
    assert reply["options"], reply
    nodes = set(hand_network().node_ids)
    for option in reply["options"]:
        assert option["parcels"]
        for parcel in option["parcels"]:
            assert parcel["nodeId"] in nodes
            assert parcel["lines"] == [{"sku": "A", "quantity": 1}]
    assert any(p["nodeId"] == "DC-NJ" for o in reply["options"] for p in o["parcels"])


def test_buf_curl_speaks_money_and_dates(buf: Path, server: Client, tmp_path: Path) -> None:
    """The README's admin example: google.type.Money and google.type.Date in the JSON form."""
    url = f"http://{server.target}/oms.v1.InventoryService/UpsertRateCard"
    rate = {
        "service": "ground",
        "zone": "1",
        "basePrice": {"currencyCode": "USD", "units": "5"},
        "perKg": {"currencyCode": "USD", "nanos": 463600000},
        "transitDays": 1,
    }
    done = buf_curl(
        buf,
        tmp_path,
        "-H",
        f"authorization: Bearer {ADMIN_TOKEN}",
        "-d",
        json.dumps({"rates": [rate]}),
        url,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"rates": 1}
    url = f"http://{server.target}/oms.v1.CheckoutService/QuoteDeliveryOptions"
    done = buf_curl(buf, tmp_path, "-d", json.dumps(CART), url)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    year, month, day = (reply["quoteDate"][k] for k in ("year", "month", "day"))
    assert year > 2000 and 1 <= month <= 12 and 1 <= day <= 31
    # 1 x A (1 kg) from Newark: $5 + 0.4636 + $2.00 handling = $7.4636, exactly.
    cost = reply["options"][0]["cost"]
    assert cost == {"currencyCode": "USD", "units": "7", "nanos": 463600000}


def test_buf_curl_sees_rich_errors(buf: Path, server: Client, tmp_path: Path) -> None:
    """An empty cart: buf exits with the gRPC code << 3 and shows the google.rpc details."""
    url = f"http://{server.target}/oms.v1.CheckoutService/QuoteDeliveryOptions"
    done = buf_curl(buf, tmp_path, "-d", json.dumps({"lines": []}), url)
    assert done.returncode == grpc.StatusCode.INVALID_ARGUMENT.value[0] << 3, done.stderr
    error = json.loads(done.stderr)
    assert error["code"] == "invalid_argument"
    assert "lines: the cart is empty" in error["message"]
    assert {d["type"] for d in error["details"]} == {
        "google.rpc.BadRequest",
        "google.rpc.ErrorInfo",
    }
