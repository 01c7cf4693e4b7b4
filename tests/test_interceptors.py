"""Interceptors, JSON logging and metrics over real gRPC on loopback, with stand-in servicers."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from oms import metrics
from oms.interceptors import REQUEST_ID, AuthInterceptor, ObservabilityInterceptor
from oms.logging import JsonFormatter, configure_logging
from oms.v1 import (
    checkout_pb2,
    checkout_pb2_grpc,
    fulfilment_pb2,
    fulfilment_pb2_grpc,
    inventory_pb2,
    inventory_pb2_grpc,
)

ADMIN = "admin-secret"
CHECKOUT = "checkout-secret"
GET_AVAILABILITY = "/oms.v1.InventoryService/GetAvailability"
WATCH = "/oms.v1.InventoryService/WatchLowStockAlerts"
GET_ORDER = "/oms.v1.CheckoutService/GetOrder"
GetAvailabilityRequest = inventory_pb2.GetAvailabilityRequest
SRC = Path(__file__).resolve().parent.parent / "src"


class Inventory(inventory_pb2_grpc.InventoryServiceServicer):
    """GetAvailability answers empty; the watch yields ``alerts`` messages ``gap_s`` apart."""

    def __init__(self) -> None:
        self.seen_request_ids: list[str | None] = []
        self.alerts = 2
        self.gap_s = 0.0

    def GetAvailability(
        self, request: inventory_pb2.GetAvailabilityRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.GetAvailabilityResponse:
        self.seen_request_ids.append(REQUEST_ID.get())
        logging.getLogger("oms.test.servicer").info("looking up")
        return inventory_pb2.GetAvailabilityResponse()

    def WatchLowStockAlerts(
        self, request: inventory_pb2.WatchLowStockAlertsRequest, context: grpc.ServicerContext
    ) -> Iterator[inventory_pb2.WatchLowStockAlertsResponse]:
        self.seen_request_ids.append(REQUEST_ID.get())
        for i in range(self.alerts):
            if i:
                time.sleep(self.gap_s)
            yield inventory_pb2.WatchLowStockAlertsResponse()


class Checkout(checkout_pb2_grpc.CheckoutServiceServicer):
    """GetOrder: NOT_FOUND; ListOrders: empty; CancelOrder: a bug (plain exception);
    PlaceOrder: sets a code and returns instead of raising."""

    def PlaceOrder(
        self, request: checkout_pb2.PlaceOrderRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.PlaceOrderResponse:
        context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        context.set_details("stock gone")
        return checkout_pb2.PlaceOrderResponse()

    def GetOrder(
        self, request: checkout_pb2.GetOrderRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.GetOrderResponse:
        context.abort(grpc.StatusCode.NOT_FOUND, "order not found")

    def ListOrders(
        self, request: checkout_pb2.ListOrdersRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.ListOrdersResponse:
        return checkout_pb2.ListOrdersResponse()

    def CancelOrder(
        self, request: checkout_pb2.CancelOrderRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.CancelOrderResponse:
        raise RuntimeError("boom")


class Stubs:
    def __init__(self, channel: grpc.Channel, inventory: Inventory) -> None:
        self.channel = channel
        self.servicer = inventory
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        self.checkout = checkout_pb2_grpc.CheckoutServiceStub(channel)
        self.fulfilment = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)


ServeFn = Callable[..., Stubs]


@pytest.fixture
def serve() -> Iterator[ServeFn]:
    """Start a server with both interceptors, in the documented order, on a free port."""
    started: list[tuple[grpc.Server, grpc.Channel]] = []

    def start(admin_token: str | None = ADMIN, checkout_token: str | None = None) -> Stubs:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            interceptors=[ObservabilityInterceptor(), AuthInterceptor(admin_token, checkout_token)],
        )
        inventory = Inventory()
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server(inventory, server)
        checkout_pb2_grpc.add_CheckoutServiceServicer_to_server(Checkout(), server)
        # The generated base answers UNIMPLEMENTED: enough to tell "let through" from "refused".
        fulfilment_pb2_grpc.add_FulfilmentServiceServicer_to_server(
            fulfilment_pb2_grpc.FulfilmentServiceServicer(), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        reflection.enable_server_reflection(
            (
                "oms.v1.InventoryService",
                "oms.v1.CheckoutService",
                reflection.SERVICE_NAME,
            ),
            server,
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        started.append((server, channel))
        return Stubs(channel, inventory)

    yield start
    for server, channel in started:
        channel.close()
        server.stop(None)


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    """The JSON lines written to ``oms.access`` (and the test servicer's logger)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger("oms.access"), logging.getLogger("oms.test.servicer")]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield buffer
    for lg, level in zip(loggers, saved, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def lines(buffer: io.StringIO, logger: str = "oms.access") -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return [p for p in parsed if p["logger"] == logger]


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def error_of(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def requests_total(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value("oms_requests_total", {"method": method, "code": code})
    return value or 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ----------------------------------------------------------------------------- auth


def test_admin_call_without_token_is_unauthenticated(serve: ServeFn) -> None:
    stubs = serve()
    err = error_of(lambda: stubs.inventory.GetAvailability(inventory_pb2.GetAvailabilityRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == "missing bearer token for oms.v1.InventoryService"
    assert stubs.servicer.seen_request_ids == []


@pytest.mark.parametrize(
    "value", ["Basic YWRtaW46c2VjcmV0", "Bearer", "Bearer   ", f"Token {ADMIN}", ADMIN]
)
def test_malformed_authorization_is_unauthenticated(serve: ServeFn, value: str) -> None:
    stubs = serve()
    err = error_of(
        lambda: stubs.inventory.GetAvailability(
            inventory_pb2.GetAvailabilityRequest(), metadata=(("authorization", value),)
        )
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_admin_call_with_wrong_token_is_permission_denied(serve: ServeFn) -> None:
    stubs = serve()
    for token in ["nope", ADMIN + "x", ADMIN[:-1], f"{ADMIN} {ADMIN}"]:
        err = error_of(
            lambda t=token: stubs.inventory.GetAvailability(
                inventory_pb2.GetAvailabilityRequest(), metadata=bearer(t)
            )
        )
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == "token not valid for oms.v1.InventoryService"
    assert stubs.servicer.seen_request_ids == []


def test_admin_call_with_right_token_is_served(serve: ServeFn) -> None:
    stubs = serve()
    response = stubs.inventory.GetAvailability(
        inventory_pb2.GetAvailabilityRequest(), metadata=(("authorization", f"bearer  {ADMIN} "),)
    )
    assert response == inventory_pb2.GetAvailabilityResponse()
    assert len(stubs.servicer.seen_request_ids) == 1


def test_fulfilment_needs_the_admin_token(serve: ServeFn) -> None:
    stubs = serve(checkout_token=CHECKOUT)
    request = fulfilment_pb2.ReleaseOrderRequest()
    assert (
        error_of(lambda: stubs.fulfilment.ReleaseOrder(request)).code()
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        error_of(lambda: stubs.fulfilment.ReleaseOrder(request, metadata=bearer(CHECKOUT))).code()
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # Let through: the stand-in servicer's own answer.
    assert (
        error_of(lambda: stubs.fulfilment.ReleaseOrder(request, metadata=bearer(ADMIN))).code()
        == grpc.StatusCode.UNIMPLEMENTED
    )


@pytest.mark.parametrize("admin_token", [None, ""])
def test_admin_calls_refused_when_no_admin_token_is_set(
    serve: ServeFn, admin_token: str | None
) -> None:
    stubs = serve(admin_token=admin_token)
    for metadata in [(), bearer(""), bearer("anything"), bearer("None")]:
        err = error_of(
            lambda m=metadata: stubs.inventory.GetAvailability(
                inventory_pb2.GetAvailabilityRequest(), metadata=m
            )
        )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    # Checkout stays open: its token is not set either (GetOrder's own NOT_FOUND shows it),
    # except ListOrders, an admin call.
    err = error_of(lambda: stubs.checkout.GetOrder(checkout_pb2.GetOrderRequest()))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = error_of(lambda: stubs.checkout.ListOrders(checkout_pb2.ListOrdersRequest()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == (
        "oms.v1.CheckoutService/ListOrders (an admin call) is disabled: no admin token set"
    )


def test_checkout_is_open_without_a_checkout_token(serve: ServeFn) -> None:
    stubs = serve(checkout_token=None)
    # Even a wrong token is ignored; GetOrder's own NOT_FOUND shows the call got through.
    err = error_of(
        lambda: stubs.checkout.GetOrder(checkout_pb2.GetOrderRequest(), metadata=bearer("junk"))
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "order not found"


def test_list_orders_needs_the_admin_token_while_checkout_is_open(serve: ServeFn) -> None:
    """It lists every customer's orders and addresses (issue 13 item 14)."""
    stubs = serve(checkout_token=None)
    list_orders = stubs.checkout.ListOrders
    request = checkout_pb2.ListOrdersRequest()
    err = error_of(lambda: list_orders(request))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details() == (
        "missing bearer token for oms.v1.CheckoutService/ListOrders (an admin call)"
    )
    err = error_of(lambda: list_orders(request, metadata=bearer("junk")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert list_orders(request, metadata=bearer(ADMIN)) is not None


def test_checkout_is_closed_with_a_checkout_token(serve: ServeFn) -> None:
    stubs = serve(checkout_token=CHECKOUT)
    get_order = stubs.checkout.GetOrder
    request = checkout_pb2.GetOrderRequest()
    assert error_of(lambda: get_order(request)).code() == grpc.StatusCode.UNAUTHENTICATED
    err = error_of(lambda: get_order(request, metadata=bearer("junk")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.details() == "token not valid for oms.v1.CheckoutService"
    for token in (CHECKOUT, ADMIN):  # NOT_FOUND: the call got through to the servicer
        err = error_of(lambda t=token: get_order(request, metadata=bearer(t)))
        assert err.code() == grpc.StatusCode.NOT_FOUND
    # ListOrders is an admin call: the checkout token does not open it.
    listing = checkout_pb2.ListOrdersRequest()
    err = error_of(lambda: stubs.checkout.ListOrders(listing, metadata=bearer(CHECKOUT)))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stubs.checkout.ListOrders(listing, metadata=bearer(ADMIN)) is not None
    # The checkout token does not open admin calls.
    err = error_of(
        lambda: stubs.inventory.GetAvailability(
            inventory_pb2.GetAvailabilityRequest(), metadata=bearer(CHECKOUT)
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_stream_authorised_and_refused(serve: ServeFn) -> None:
    stubs = serve()
    request = inventory_pb2.WatchLowStockAlertsRequest()
    assert len(list(stubs.inventory.WatchLowStockAlerts(request, metadata=bearer(ADMIN)))) == 2
    for metadata, code in [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (bearer("junk"), grpc.StatusCode.PERMISSION_DENIED),
    ]:
        err = error_of(
            lambda m=metadata: list(stubs.inventory.WatchLowStockAlerts(request, metadata=m))
        )
        assert err.code() == code
    assert len(stubs.servicer.seen_request_ids) == 1


def test_health_and_reflection_are_always_open(serve: ServeFn) -> None:
    stubs = serve(admin_token=ADMIN, checkout_token=CHECKOUT)
    reply = stubs.health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # Reflection is a bidirectional stream: the other two handler kinds go through too.
    reflect = reflection_pb2_grpc.ServerReflectionStub(stubs.channel)
    replies = list(
        reflect.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
    )
    names = {s.name for s in replies[0].list_services_response.service}
    assert "oms.v1.CheckoutService" in names


# ---------------------------------------------------------------------- request id


def test_request_id_given_is_echoed_and_seen_by_the_servicer(serve: ServeFn) -> None:
    stubs = serve()
    _, call = stubs.inventory.GetAvailability.with_call(
        inventory_pb2.GetAvailabilityRequest(),
        metadata=(*bearer(ADMIN), ("x-request-id", "abc-123_X.y")),
    )
    assert dict(call.initial_metadata())["x-request-id"] == "abc-123_X.y"
    assert stubs.servicer.seen_request_ids == ["abc-123_X.y"]


@pytest.mark.parametrize("given", [None, "has space", "x" * 65, "semi;colon", ""])
def test_request_id_is_generated_when_absent_or_not_sane(serve: ServeFn, given: str | None) -> None:
    stubs = serve()
    metadata = bearer(ADMIN) if given is None else (*bearer(ADMIN), ("x-request-id", given))
    _, call = stubs.inventory.GetAvailability.with_call(
        inventory_pb2.GetAvailabilityRequest(), metadata=metadata
    )
    echoed = dict(call.initial_metadata())["x-request-id"]
    assert echoed != given
    assert len(echoed) == 32 and int(echoed, 16) >= 0
    assert stubs.servicer.seen_request_ids == [echoed]


def test_request_id_is_fresh_per_call_and_reaches_refused_calls(serve: ServeFn) -> None:
    stubs = serve()
    ids = set()
    for _ in range(3):
        err = error_of(
            lambda: stubs.inventory.GetAvailability(inventory_pb2.GetAvailabilityRequest())
        )
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        ids.add(dict(err.initial_metadata())["x-request-id"])
    assert len(ids) == 3


def test_request_id_on_a_stream(serve: ServeFn) -> None:
    stubs = serve()
    stream = stubs.inventory.WatchLowStockAlerts(
        inventory_pb2.WatchLowStockAlertsRequest(),
        metadata=(*bearer(ADMIN), ("x-request-id", "stream-1")),
    )
    assert len(list(stream)) == 2
    assert dict(stream.initial_metadata())["x-request-id"] == "stream-1"
    assert stubs.servicer.seen_request_ids == ["stream-1"]
    assert REQUEST_ID.get() is None  # nothing leaks into the caller's context


# ------------------------------------------------------------------------ access log


def test_access_log_has_one_json_line_per_call(serve: ServeFn, access_log: io.StringIO) -> None:
    stubs = serve()
    stubs.inventory.GetAvailability(
        inventory_pb2.GetAvailabilityRequest(),
        metadata=(*bearer(ADMIN), ("x-request-id", "req-ok")),
    )
    error_of(lambda: stubs.checkout.GetOrder(checkout_pb2.GetOrderRequest()))
    error_of(lambda: stubs.inventory.GetAvailability(inventory_pb2.GetAvailabilityRequest()))
    error_of(lambda: stubs.checkout.CancelOrder(checkout_pb2.CancelOrderRequest()))
    err = error_of(lambda: stubs.checkout.PlaceOrder(checkout_pb2.PlaceOrderRequest()))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

    logged = lines(access_log)
    assert [(r["method"], r["code"]) for r in logged] == [
        (GET_AVAILABILITY, "OK"),
        (GET_ORDER, "NOT_FOUND"),
        (GET_AVAILABILITY, "UNAUTHENTICATED"),
        ("/oms.v1.CheckoutService/CancelOrder", "UNKNOWN"),
        ("/oms.v1.CheckoutService/PlaceOrder", "FAILED_PRECONDITION"),
    ]
    first = logged[0]
    assert first["request_id"] == "req-ok"
    assert first["peer"].startswith("ipv4:127.0.0.1:")
    assert first["level"] == "INFO"
    assert isinstance(first["duration_ms"], float) and 0 <= first["duration_ms"] < 5000
    assert first["ts"].endswith("Z")
    assert {"ts", "request_id", "method", "code", "duration_ms", "peer"} <= set(first)
    assert logged[3]["level"] == "ERROR"  # an exception in the servicer is our fault
    assert len({r["request_id"] for r in logged}) == 5
    # A servicer's own log lines carry the call's request id.
    (inner,) = lines(access_log, "oms.test.servicer")
    assert inner["request_id"] == "req-ok"


def test_access_log_times_a_stream_until_it_ends(serve: ServeFn, access_log: io.StringIO) -> None:
    stubs = serve()
    stubs.servicer.alerts, stubs.servicer.gap_s = 3, 0.05
    stream = stubs.inventory.WatchLowStockAlerts(
        inventory_pb2.WatchLowStockAlertsRequest(), metadata=bearer(ADMIN)
    )
    assert len(list(stream)) == 3
    (record,) = lines(access_log)
    assert (record["method"], record["code"]) == (WATCH, "OK")
    assert record["duration_ms"] >= 100


def test_access_log_records_a_cancelled_stream(serve: ServeFn, access_log: io.StringIO) -> None:
    stubs = serve()
    stubs.servicer.alerts, stubs.servicer.gap_s = 1000, 0.01
    stream = stubs.inventory.WatchLowStockAlerts(
        inventory_pb2.WatchLowStockAlertsRequest(), metadata=bearer(ADMIN)
    )
    next(stream)
    stream.cancel()
    deadline = time.monotonic() + 5
    while not lines(access_log) and time.monotonic() < deadline:
        time.sleep(0.01)
    (record,) = lines(access_log)
    assert (record["method"], record["code"]) == (WATCH, "CANCELLED")


def test_access_log_records_a_deadline(serve: ServeFn, access_log: io.StringIO) -> None:
    stubs = serve()
    stubs.servicer.alerts, stubs.servicer.gap_s = 1000, 0.01
    stream = stubs.inventory.WatchLowStockAlerts(
        inventory_pb2.WatchLowStockAlertsRequest(), metadata=bearer(ADMIN), timeout=0.1
    )
    assert error_of(lambda: list(stream)).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 5
    while not lines(access_log) and time.monotonic() < deadline:
        time.sleep(0.01)
    (record,) = lines(access_log)
    assert (record["method"], record["code"]) == (WATCH, "DEADLINE_EXCEEDED")


# --------------------------------------------------------------------------- metrics


def test_request_counter_and_histogram_count_each_call(serve: ServeFn) -> None:
    stubs = serve()
    n = 5
    before_ok = requests_total(GET_AVAILABILITY, "OK")
    before_denied = requests_total(GET_AVAILABILITY, "UNAUTHENTICATED")
    before_not_found = requests_total(GET_ORDER, "NOT_FOUND")
    before_hist = (
        REGISTRY.get_sample_value(
            "oms_request_duration_seconds_count", {"method": GET_AVAILABILITY}
        )
        or 0.0
    )
    for _ in range(n):
        stubs.inventory.GetAvailability(
            inventory_pb2.GetAvailabilityRequest(), metadata=bearer(ADMIN)
        )
        error_of(lambda: stubs.checkout.GetOrder(checkout_pb2.GetOrderRequest()))
    error_of(lambda: stubs.inventory.GetAvailability(inventory_pb2.GetAvailabilityRequest()))
    assert requests_total(GET_AVAILABILITY, "OK") - before_ok == n
    assert requests_total(GET_ORDER, "NOT_FOUND") - before_not_found == n
    assert requests_total(GET_AVAILABILITY, "UNAUTHENTICATED") - before_denied == 1
    after_hist = REGISTRY.get_sample_value(
        "oms_request_duration_seconds_count", {"method": GET_AVAILABILITY}
    )
    assert after_hist == before_hist + n + 1


def test_unknown_methods_are_counted_under_one_label(serve: ServeFn) -> None:
    stubs = serve()
    before = requests_total("unknown", "UNIMPLEMENTED")
    for name in ["/oms.v1.Nope/A", "/x/y"]:
        call = stubs.channel.unary_unary(name)
        assert error_of(lambda c=call: c(b"")).code() == grpc.StatusCode.UNIMPLEMENTED
    assert requests_total("unknown", "UNIMPLEMENTED") - before == 2
    assert (
        REGISTRY.get_sample_value("oms_requests_total", {"method": "/x/y", "code": "UNIMPLEMENTED"})
        is None
    )


def test_solver_and_quote_helpers() -> None:
    count_before = REGISTRY.get_sample_value("oms_solver_duration_seconds_count") or 0.0
    le_10ms_before = (
        REGISTRY.get_sample_value("oms_solver_duration_seconds_bucket", {"le": "0.01"}) or 0.0
    )
    metrics.observe_solver(0.004)
    metrics.observe_solver(0.3)
    assert REGISTRY.get_sample_value("oms_solver_duration_seconds_count") == count_before + 2
    assert (
        REGISTRY.get_sample_value("oms_solver_duration_seconds_bucket", {"le": "0.01"})
        == le_10ms_before + 1
    )
    before = REGISTRY.get_sample_value("oms_quotes_total", {"outcome": "infeasible"}) or 0.0
    metrics.count_quote("infeasible")
    assert REGISTRY.get_sample_value("oms_quotes_total", {"outcome": "infeasible"}) == before + 1


def test_metrics_endpoint_serves_the_text_format(serve: ServeFn) -> None:
    stubs = serve()
    stubs.inventory.GetAvailability(inventory_pb2.GetAvailabilityRequest(), metadata=bearer(ADMIN))
    port = free_port()
    metrics.start_metrics_server(port, "127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        body = response.read().decode()
    for name, kind in [
        ("oms_requests_total", "counter"),
        ("oms_request_duration_seconds", "histogram"),
        ("oms_solver_duration_seconds", "histogram"),
        ("oms_quotes_total", "counter"),
        ("oms_admission_wait_seconds", "histogram"),
    ]:
        assert f"# TYPE {name} {kind}" in body
    assert f'oms_requests_total{{code="OK",method="{GET_AVAILABILITY}"}}' in body
    assert f'oms_request_duration_seconds_bucket{{le="0.001",method="{GET_AVAILABILITY}"}}' in body


def test_prepare_multiprocess_refuses_once_metrics_exist(tmp_path: Path) -> None:
    metrics.observe_solver(0.001)
    with pytest.raises(RuntimeError):
        metrics.prepare_multiprocess(tmp_path / "mp")
    assert metrics.multiprocess_dir() is None


MULTIPROCESS_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys, urllib.request
    from pathlib import Path
    from oms import metrics

    def work(directory, n):
        metrics.prepare_multiprocess(directory)  # as a spawned worker may: must not wipe
        for _ in range(n):
            metrics.observe_request("/oms.v1.X/Y", "OK", 0.002)
        metrics.count_quote("ok")

    if __name__ == "__main__":
        directory, port = Path(sys.argv[1]), int(sys.argv[2])
        (directory / "counter_99999.db").write_bytes(b"stale")  # a previous run's file
        metrics.prepare_multiprocess(directory)
        metrics.start_metrics_server(port, "127.0.0.1")
        ctx = multiprocessing.get_context(sys.argv[3])
        for n in (2, 3):  # one after the other: the second must keep the first's counts
            worker = ctx.Process(target=work, args=(directory, n))
            worker.start()
            worker.join()
            assert worker.exitcode == 0
            metrics.mark_worker_dead(worker.pid)
        url = f"http://127.0.0.1:{port}/metrics"
        print(urllib.request.urlopen(url, timeout=5).read().decode())
    """
)


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_metrics_are_summed_over_worker_processes(tmp_path: Path, start_method: str) -> None:
    """A fresh interpreter: multi-process mode must be chosen before any metric exists."""
    directory = tmp_path / "prom"
    directory.mkdir()
    script = tmp_path / "mp.py"
    script.write_text(MULTIPROCESS_SCRIPT)
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(script), str(directory), str(free_port()), start_method],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    body = result.stdout
    assert 'oms_requests_total{code="OK",method="/oms.v1.X/Y"} 5.0' in body
    assert 'oms_request_duration_seconds_count{method="/oms.v1.X/Y"} 5.0' in body
    assert 'oms_quotes_total{outcome="ok"} 2.0' in body
    assert not (directory / "counter_99999.db").exists()


# --------------------------------------------------------------------------- logging


def test_json_formatter_fields_extras_and_exceptions() -> None:
    logger = logging.getLogger("oms.test.formatter")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("no call %s", "here", extra={"order_id": 7, "where": Path("/x")})
        token = REQUEST_ID.set("rid-1")
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("failed")
        finally:
            REQUEST_ID.reset(token)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    first, second = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert first["message"] == "no call here"
    assert first["order_id"] == 7 and first["where"] == "/x"
    assert first["logger"] == "oms.test.formatter" and first["level"] == "INFO"
    assert "request_id" not in first
    assert second["request_id"] == "rid-1"
    assert second["level"] == "ERROR"
    assert "ValueError: bad" in second["exc_info"]


def test_configure_logging_writes_json_to_stderr_and_is_idempotent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        configure_logging("debug")
        configure_logging("WARNING")
        ours = [h for h in root.handlers if h not in saved_handlers]
        assert len(ours) == 1
        assert root.level == logging.WARNING
        logging.getLogger("oms.test.configure").warning("hello", extra={"n": 1})
        logging.getLogger("oms.test.configure").info("dropped")
        (line,) = capsys.readouterr().err.splitlines()
        assert json.loads(line)["message"] == "hello" and json.loads(line)["n"] == 1
        with pytest.raises(ValueError):
            configure_logging("LOUD")
    finally:
        for h in list(root.handlers):
            if h not in saved_handlers:
                root.removeHandler(h)
        root.setLevel(saved_level)


def test_concurrent_calls_keep_their_own_request_ids(serve: ServeFn) -> None:
    stubs = serve()
    echoed: dict[str, str] = {}

    def one(i: int) -> None:
        _, call = stubs.inventory.GetAvailability.with_call(
            inventory_pb2.GetAvailabilityRequest(),
            metadata=(*bearer(ADMIN), ("x-request-id", f"c{i}")),
        )
        echoed[f"c{i}"] = dict(call.initial_metadata())["x-request-id"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert echoed == {f"c{i}": f"c{i}" for i in range(8)}
    assert set(stubs.servicer.seen_request_ids) == set(echoed)
