"""Hostile input over a real loopback channel (issue 13, items 8-13).

What a caller sends is bounded before it reaches a servicer or the store, and
what the service says back is bounded too:

* every error (its message and all its details, as they travel in the HTTP/2
  trailer) stays under 8 KB, however many fields are wrong and however long
  the strings the caller sent: Python's grpcio refuses trailers over 16 KB and
  @grpc/grpc-js used to hang on them (``test_node_client.py``);
* every string field of every request is valid UTF-8, free of control
  characters and within its length (ids 64 or 128 characters, free text 1,000),
  answered INVALID_ARGUMENT naming the field, on SQLite and PostgreSQL alike
  (PostgreSQL refuses NUL bytes, which used to surface as INTERNAL);
* bytes that are not the method's protobuf message are INVALID_ARGUMENT with an
  access-log line, not INTERNAL with a traceback;
* numbers, page sizes and page tokens are bounded or checked strictly;
* a ReturnItems retry answers exactly what the first call answered.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from google.type import date_pb2, money_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from oms.v1 import checkout_pb2, common_pb2, events_pb2, fulfilment_pb2, inventory_pb2

from service_support import (
    ADMIN,
    NYC,
    Client,
    hand_network,
    postgres_database,
    running_server,
    sqlite_url,
)

TIMEOUT = 30.0
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
#: The promise: an error's trailer (status, message and details, as sent) stays under this.
MAX_TRAILER_BYTES = 8192
MB = 1 << 20
STOCK = {(node, sku): 500 for node in ("DC-NJ", "ST-PHL", "DC-CHI") for sku in ("A", "B")}
SERVICES = (
    checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"],
    fulfilment_pb2.DESCRIPTOR.services_by_name["FulfilmentService"],
    inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"],
    events_pb2.DESCRIPTOR.services_by_name["OrderEventService"],
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    with running_server(sqlite_url(tmp_path_factory.mktemp("inputs")), hand_network(STOCK)) as c:
        yield c


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    """One server per store backend (PostgreSQL skips with a reason when unreachable)."""
    if request.param == "sqlite":
        with running_server(
            sqlite_url(tmp_path_factory.mktemp("inputs-sqlite")), hand_network(STOCK)
        ) as c:
            yield c
        return
    databases = postgres_database()
    url = next(databases)
    try:
        with running_server(url, hand_network(STOCK)) as c:
            yield c
    finally:
        databases.close()


# --------------------------------------------------------------------------- helpers


def percent_encoded_length(message: str) -> int:
    """Bytes of ``grpc-message`` on the wire: gRPC percent-encodes all but printable ASCII."""
    return sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in message.encode())


def trailer_bytes(err: grpc.RpcError) -> int:
    """The trailer as sent: grpc-status, grpc-message and the (base64) binary details."""
    total = len("grpc-status") + len(str(err.code().value[0]))
    total += len("grpc-message") + percent_encoded_length(err.details() or "")
    for key, value in err.trailing_metadata() or ():
        size = 4 * math.ceil(len(value) / 3) if key.endswith("-bin") else len(value)
        total += len(key) + size
    return total


def failure(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def violations(err: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(err)
    assert status is not None, f"no rich status: {err.code().name}: {err.details()}"
    for packed in status.details:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            return [(v.field, v.description) for v in bad.field_violations]
    raise AssertionError(f"no BadRequest in {err.details()}")


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    assert status is not None
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {err.details()}")


def invalid(err: grpc.RpcError, *fields: str, word: str = "") -> list[tuple[str, str]]:
    """``err`` is INVALID_ARGUMENT naming exactly ``fields`` (each with ``word``), and small."""
    assert err.code() == INVALID_ARGUMENT, f"{err.code().name}: {err.details()}"
    got = violations(err)
    assert sorted({f for f, _ in got}) == sorted(set(fields)), got
    for field, description in got:
        assert word in description, (field, description)
    assert trailer_bytes(err) < MAX_TRAILER_BYTES, trailer_bytes(err)
    return got


def line(sku: str, quantity: int = 1) -> common_pb2.CartLine:
    return common_pb2.CartLine(sku=sku, quantity=quantity)


def quote_request(**fields: Any) -> checkout_pb2.QuoteDeliveryOptionsRequest:
    fields.setdefault("lines", [line("A")])
    return checkout_pb2.QuoteDeliveryOptionsRequest(destination=NYC, **fields)


def order(client: Client, state: str = "PLACED", lines: dict[str, int] | None = None) -> str:
    """A fresh order of ``lines`` moved to ``state`` (PLACED, RELEASED or SHIPPED)."""
    quote = client.quote(lines or {"A": 1})
    placed = client.place(quote.quote_id, quote.options[0].option_id).order
    if state in ("RELEASED", "SHIPPED"):
        client.fulfilment.ReleaseOrder(
            fulfilment_pb2.ReleaseOrderRequest(order_id=placed.order_id), metadata=ADMIN
        )
    if state == "SHIPPED":
        client.fulfilment.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(order_id=placed.order_id), metadata=ADMIN
        )
    return placed.order_id


def receipt(receipt_id: str, **fields: Any) -> inventory_pb2.InboundReceipt:
    values: dict[str, Any] = {
        "receipt_id": receipt_id,
        "node_id": "DC-NJ",
        "sku": "A",
        "quantity": 5,
        "expected_date": date_pb2.Date(year=2099, month=1, day=1),
    }
    values.update(fields)
    return inventory_pb2.InboundReceipt(**values)


# ------------------------------------------------------------- item 8: error size


def test_5000_unknown_skus_are_one_violation_not_5000(client: Client) -> None:
    request = quote_request(lines=[line(f"NOPE-{i}") for i in range(5000)])
    err = failure(lambda: client.checkout.QuoteDeliveryOptions(request, timeout=TIMEOUT))
    invalid(err, "lines", word="5000 lines exceed the limit of 200")


def test_200000_bad_lines_are_refused_by_count_in_a_small_error(client: Client) -> None:
    request = quote_request(lines=[line(f"NOPE-{i}", 0) for i in range(200_000)])
    err = failure(lambda: client.checkout.QuoteDeliveryOptions(request, timeout=60))
    invalid(err, "lines", word="200000")


def huge_sku_return(client: Client) -> Callable[[], Any]:
    order_id = order(client, "SHIPPED")
    request = fulfilment_pb2.ReturnItemsRequest(order_id=order_id, lines=[line("S" * MB)])
    return lambda: client.fulfilment.ReturnItems(request, metadata=ADMIN, timeout=TIMEOUT)


HUGE_STRINGS: dict[str, tuple[Callable[[Client], Callable[[], Any]], str, str]] = {
    # case: (call builder, field named, the bound in its description)
    "quote-sku": (
        lambda c: (
            lambda: c.checkout.QuoteDeliveryOptions(
                quote_request(lines=[line("S" * MB)]), timeout=TIMEOUT
            )
        ),
        "lines[0].sku",
        "128 characters",
    ),
    "return-sku": (huge_sku_return, "lines[0].sku", "128 characters"),
    "pickup-store": (
        lambda c: (
            lambda: c.checkout.QuoteDeliveryOptions(
                quote_request(pickup_store_ids=["P" * MB]), timeout=TIMEOUT
            )
        ),
        "pickup_store_ids[0]",
        "128 characters",
    ),
    "currency-code": (
        lambda c: (
            lambda: c.inventory.UpsertRateCard(
                inventory_pb2.UpsertRateCardRequest(
                    rates=[
                        inventory_pb2.Rate(
                            service="ground",
                            zone="1",
                            base_price=money_pb2.Money(currency_code="C" * MB, units=5),
                        )
                    ]
                ),
                metadata=ADMIN,
                timeout=TIMEOUT,
            )
        ),
        "rates[0].base_price.currency_code",
        "3 characters",
    ),
    "idempotency-key": (
        lambda c: (
            lambda: c.checkout.PlaceOrder(
                checkout_pb2.PlaceOrderRequest(
                    quote_id="q_x", option_id="opt-1", idempotency_key="K" * MB
                ),
                timeout=TIMEOUT,
            )
        ),
        "idempotency_key",
        "128 characters",
    ),
    "order-id": (
        lambda c: (
            lambda: c.checkout.GetOrder(
                checkout_pb2.GetOrderRequest(order_id="O" * MB), timeout=TIMEOUT
            )
        ),
        "order_id",
        "64 characters",
    ),
}


@pytest.mark.parametrize("case", sorted(HUGE_STRINGS))
def test_a_1mb_string_is_refused_by_length_and_never_echoed(client: Client, case: str) -> None:
    build, field, bound = HUGE_STRINGS[case]
    err = failure(build(client))
    invalid(err, field, word=bound)
    assert "1048576" in violations(err)[0][1]  # says how long it was, without repeating it
    assert "SSSS" * 30 not in (err.details() or "")


def test_echoed_values_are_cut_to_64_characters_with_their_length(client: Client) -> None:
    sku = "Z" * 100  # within the 128-character bound, but unknown
    err = failure(
        lambda: client.checkout.QuoteDeliveryOptions(
            quote_request(lines=[line(sku)]), timeout=TIMEOUT
        )
    )
    ((_, description),) = invalid(err, "lines[0].sku", word="unknown SKU")
    assert "Z" * 64 in description and "Z" * 65 not in description, description
    assert "(100 chars)" in description
    assert "Z" * 65 not in (err.details() or "")


def test_violations_are_capped_and_the_cut_is_said(client: Client) -> None:
    # 200 lines (the limit) each with an unknown SKU and a bad quantity: 400 problems.
    request = quote_request(lines=[line(f"NOPE-{i}", 0) for i in range(200)])
    err = failure(lambda: client.checkout.QuoteDeliveryOptions(request, timeout=TIMEOUT))
    assert err.code() == INVALID_ARGUMENT
    got = violations(err)
    assert 0 < len(got) <= 20, len(got)
    assert got[0] == ("lines[0].sku", "unknown SKU 'NOPE-0'")
    assert "more" in (err.details() or ""), err.details()
    info = error_info(err)
    assert info.metadata["violations_reported"] == str(len(got))
    assert info.metadata["truncated"] == "true"
    assert trailer_bytes(err) < MAX_TRAILER_BYTES


def test_a_request_over_the_receive_limit_is_resource_exhausted(client: Client) -> None:
    """The server reads at most 4 MiB per request, whatever the grpc default of the day."""
    request = quote_request(lines=[line("A" * 100) for _ in range(45_000)])  # ~4.7 MB
    assert request.ByteSize() > 4 * MB
    err = failure(lambda: client.checkout.QuoteDeliveryOptions(request, timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    assert client.quote({"A": 1}).options  # and the channel goes on serving


# ---------------------------------------------------------- item 9: free text


def free_text_calls(client: Client, reason: str) -> dict[str, Callable[[], Any]]:
    order_id = order(client)
    client.inventory.UpsertInboundReceipts(
        inventory_pb2.UpsertInboundReceiptsRequest(receipts=[receipt("R-text")]),
        metadata=ADMIN,
        timeout=TIMEOUT,
    )
    inventory = client.inventory
    return {
        "CancelOrder": lambda: client.checkout.CancelOrder(
            checkout_pb2.CancelOrderRequest(order_id=order_id, reason=reason), timeout=TIMEOUT
        ),
        "SetStock": lambda: inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="DC-NJ", sku="A", on_hand=500, reason=reason),
            metadata=ADMIN,
            timeout=TIMEOUT,
        ),
        "AdjustStock": lambda: inventory.AdjustStock(
            inventory_pb2.AdjustStockRequest(node_id="DC-NJ", sku="A", delta=1, reason=reason),
            metadata=ADMIN,
            timeout=TIMEOUT,
        ),
        "CancelInboundReceipt": lambda: inventory.CancelInboundReceipt(
            inventory_pb2.CancelInboundReceiptRequest(receipt_id="R-text", reason=reason),
            metadata=ADMIN,
            timeout=TIMEOUT,
        ),
        "UpsertInboundReceipts": lambda: inventory.UpsertInboundReceipts(
            inventory_pb2.UpsertInboundReceiptsRequest(
                receipts=[receipt("R-text-2")], reason=reason
            ),
            metadata=ADMIN,
            timeout=TIMEOUT,
        ),
        "RejectOrder": lambda: client.fulfilment.RejectOrder(
            fulfilment_pb2.RejectOrderRequest(order_id=order_id, node_id="DC-NJ", reason=reason),
            metadata=ADMIN,
            timeout=TIMEOUT,
        ),
    }


@pytest.mark.parametrize(
    "method",
    [
        "CancelOrder",
        "SetStock",
        "AdjustStock",
        "CancelInboundReceipt",
        "UpsertInboundReceipts",
        "RejectOrder",
    ],
)
@pytest.mark.parametrize("length", [1001, 3 * MB])
def test_free_text_over_1000_characters_is_refused(
    client: Client, method: str, length: int
) -> None:
    err = failure(free_text_calls(client, "r" * length)[method])
    invalid(err, "reason", word="1000 characters")


def test_free_text_of_1000_characters_any_script_is_kept(backend: Client) -> None:
    reason = ("Paket beschädigt — 破損 📦\n" * 50)[:1000]
    order_id = order(backend)
    cancelled = backend.checkout.CancelOrder(
        checkout_pb2.CancelOrderRequest(order_id=order_id, reason=reason), timeout=TIMEOUT
    ).order
    assert cancelled.events[-1].detail.startswith(reason)


# ------------------------------------------- item 10: every string, both backends

#: (request builder, the fields the violations must name).
CONTROL_CHARACTERS: dict[str, tuple[Callable[[Client], Callable[[], Any]], tuple[str, ...]]] = {
    "place-quote-id": (
        lambda c: (
            lambda: c.checkout.PlaceOrder(
                checkout_pb2.PlaceOrderRequest(
                    quote_id="q\0", option_id="opt-1", idempotency_key="k"
                ),
                timeout=TIMEOUT,
            )
        ),
        ("quote_id",),
    ),
    "place-idempotency-key": (
        lambda c: (
            lambda: c.checkout.PlaceOrder(
                checkout_pb2.PlaceOrderRequest(
                    quote_id="q_x", option_id="opt-1", idempotency_key="k\0k"
                ),
                timeout=TIMEOUT,
            )
        ),
        ("idempotency_key",),
    ),
    "get-order-id": (
        lambda c: (
            lambda: c.checkout.GetOrder(
                checkout_pb2.GetOrderRequest(order_id="o_\0"), timeout=TIMEOUT
            )
        ),
        ("order_id",),
    ),
    "cancel-reason": (
        lambda c: (
            lambda: c.checkout.CancelOrder(
                checkout_pb2.CancelOrderRequest(order_id=order(c), reason="late\0"), timeout=TIMEOUT
            )
        ),
        ("reason",),
    ),
    "cancel-reason-escape": (
        lambda c: (
            lambda: c.checkout.CancelOrder(
                checkout_pb2.CancelOrderRequest(order_id=order(c), reason="\x1b[2J"),
                timeout=TIMEOUT,
            )
        ),
        ("reason",),
    ),
    "quote-sku": (
        lambda c: (
            lambda: c.checkout.QuoteDeliveryOptions(
                quote_request(lines=[line("A\0")]), timeout=TIMEOUT
            )
        ),
        ("lines[0].sku",),
    ),
    "return-sku": (
        lambda c: (
            lambda: c.fulfilment.ReturnItems(
                fulfilment_pb2.ReturnItemsRequest(
                    order_id=order(c, "SHIPPED"), lines=[line("A\0")], idempotency_key="r\0"
                ),
                metadata=ADMIN,
                timeout=TIMEOUT,
            )
        ),
        ("lines[0].sku", "idempotency_key"),
    ),
    "release-order-id": (
        lambda c: (
            lambda: c.fulfilment.ReleaseOrder(
                fulfilment_pb2.ReleaseOrderRequest(order_id="o_\x07"),
                metadata=ADMIN,
                timeout=TIMEOUT,
            )
        ),
        ("order_id",),
    ),
    "set-stock-sku-and-reason": (
        lambda c: (
            lambda: c.inventory.SetStock(
                inventory_pb2.SetStockRequest(
                    node_id="DC-NJ", sku="A", on_hand=5, reason="count\0"
                ),
                metadata=ADMIN,
                timeout=TIMEOUT,
            )
        ),
        ("reason",),
    ),
    "upsert-node-id": (
        lambda c: (
            lambda: c.inventory.UpsertNodes(
                inventory_pb2.UpsertNodesRequest(
                    nodes=[
                        inventory_pb2.Node(
                            node_id="DC\0X",
                            kind=inventory_pb2.NODE_KIND_DC,
                            location=common_pb2.Location(latitude=40.0, longitude=-75.0),
                        )
                    ]
                ),
                metadata=ADMIN,
                timeout=TIMEOUT,
            )
        ),
        ("nodes[0].node_id",),
    ),
    "upsert-sku": (
        lambda c: (
            lambda: c.inventory.UpsertSkus(
                inventory_pb2.UpsertSkusRequest(skus=[inventory_pb2.Sku(sku="S\0", weight_kg=1.0)]),
                metadata=ADMIN,
                timeout=TIMEOUT,
            )
        ),
        ("skus[0].sku",),
    ),
    "receipt-id": (
        lambda c: (
            lambda: c.inventory.UpsertInboundReceipts(
                inventory_pb2.UpsertInboundReceiptsRequest(receipts=[receipt("R\0")]),
                metadata=ADMIN,
                timeout=TIMEOUT,
            )
        ),
        ("receipts[0].receipt_id",),
    ),
    "cancel-receipt-reason": (
        lambda c: (
            lambda: c.inventory.CancelInboundReceipt(
                inventory_pb2.CancelInboundReceiptRequest(receipt_id="R-nope", reason="\0"),
                metadata=ADMIN,
                timeout=TIMEOUT,
            )
        ),
        ("reason",),
    ),
    "rate-card-zone": (
        lambda c: (
            lambda: c.inventory.UpsertRateCard(
                inventory_pb2.UpsertRateCardRequest(
                    zones=[inventory_pb2.Zone(zone="1\0", max_km=1)]
                ),
                metadata=ADMIN,
                timeout=TIMEOUT,
            )
        ),
        ("zones[0].zone",),
    ),
    "list-page-token": (
        lambda c: (
            lambda: c.checkout.ListOrders(
                checkout_pb2.ListOrdersRequest(page_token="\0"), timeout=TIMEOUT, metadata=ADMIN
            )
        ),
        ("page_token",),
    ),
}


@pytest.mark.parametrize("case", sorted(CONTROL_CHARACTERS))
def test_control_characters_are_invalid_argument_on_both_backends(
    backend: Client, case: str
) -> None:
    build, fields = CONTROL_CHARACTERS[case]
    err = failure(build(backend))
    got = invalid(err, *fields, word="control character")
    assert "U+00" in got[0][1], got  # which character, escaped


#: Stored in columns of 64 characters (receipts, zones, services) or 128 (nodes, SKUs).
LONGEST = {
    "receipt_id": (64, lambda value: [receipt(value)], "receipts[0].receipt_id"),
    "node_id": (
        128,
        lambda value: [receipt("R-long-node", node_id=value)],
        "receipts[0].node_id",
    ),
}


@pytest.mark.parametrize("what", sorted(LONGEST))
def test_ids_are_bounded_by_what_the_store_keeps(backend: Client, what: str) -> None:
    bound, receipts, field = LONGEST[what]

    def upsert(value: str) -> Any:
        return backend.inventory.UpsertInboundReceipts(
            inventory_pb2.UpsertInboundReceiptsRequest(receipts=receipts(value)),
            metadata=ADMIN,
            timeout=TIMEOUT,
        )

    err = failure(lambda: upsert("x" * (bound + 1)))
    invalid(err, field, word=f"{bound} characters")
    if what == "receipt_id":
        assert upsert("x" * bound).receipts[0].receipt_id == "x" * bound
    else:  # a known node of the longest length is a NOT_FOUND, not a store error
        missing = failure(lambda: upsert("x" * bound))
        assert missing.code() == grpc.StatusCode.NOT_FOUND, missing.details()


def test_rate_card_names_longer_than_64_are_refused(backend: Client) -> None:
    request = inventory_pb2.UpsertRateCardRequest(
        zones=[inventory_pb2.Zone(zone="z" * 65, max_km=100.0)],
        rates=[inventory_pb2.Rate(service="s" * 65, zone="z" * 65, transit_days=1)],
    )
    err = failure(
        lambda: backend.inventory.UpsertRateCard(request, metadata=ADMIN, timeout=TIMEOUT)
    )
    invalid(err, "zones[0].zone", "rates[0].service", "rates[0].zone", word="64 characters")


def fill_strings(message: Message, value: str, depth: int = 0) -> list[str]:
    """Set every string field reachable from ``message`` (one element per list) to ``value``."""
    paths: list[str] = []
    for field in message.DESCRIPTOR.fields:
        repeated = field.is_repeated
        path = f"{field.name}[0]" if repeated else field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            if repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)
            paths.append(path)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and depth < 4:
            child = getattr(message, field.name).add() if repeated else getattr(message, field.name)
            inner = fill_strings(child, value, depth + 1)
            if not inner and not repeated:
                child.SetInParent()
            paths += [f"{path}.{p}" for p in inner]
    return paths


def has_strings(message: Message) -> bool:
    return bool(fill_strings(message, "x"))


#: Every method whose request holds a string (ResourceOverdueReceipts' holds nothing).
ALL_METHODS = [
    (service, method)
    for service in SERVICES
    for method in service.methods
    if has_strings(message_factory.GetMessageClass(method.input_type)())
]
# StartCheckout and AbandonCheckout too; issue 16's ListShipments, WatchShipments,
# AcceptShipment, RejectShipment and ListOrderEvents.
assert len(ALL_METHODS) == 30


def call_raw(client: Client, method: MethodDescriptor, request: Message) -> Any:
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.server_streaming:
        stream = client.channel.unary_stream(path, request_serializer=lambda m: m)
        return list(stream(request.SerializeToString(), metadata=ADMIN, timeout=TIMEOUT))
    unary = client.channel.unary_unary(path, request_serializer=lambda m: m)
    return unary(request.SerializeToString(), metadata=ADMIN, timeout=TIMEOUT)


@pytest.mark.parametrize("service, method", ALL_METHODS, ids=[m.name for _, m in ALL_METHODS])
def test_every_string_field_of_every_request_is_checked(
    backend: Client, service: Any, method: MethodDescriptor
) -> None:
    """A NUL in every string field of any request: INVALID_ARGUMENT naming string fields only."""
    request = message_factory.GetMessageClass(method.input_type)()
    paths = fill_strings(request, "x\0")
    err = failure(lambda: call_raw(backend, method, request))
    assert err.code() == INVALID_ARGUMENT, f"{err.code().name}: {err.details()}"
    got = violations(err)
    assert got and {f for f, _ in got} <= set(paths), (got, paths)
    assert all("control character" in d for _, d in got), got


# ------------------------------------------------- item 11: bytes that are not protobuf


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def raw_call(client: Client, path: str, payload: bytes, *, stream: bool = False) -> Any:
    if stream:
        call = client.channel.unary_stream(path, request_serializer=lambda m: m)
        return list(call(payload, metadata=ADMIN, timeout=TIMEOUT))
    unary = client.channel.unary_unary(path, request_serializer=lambda m: m)
    return unary(payload, metadata=ADMIN, timeout=TIMEOUT)


@pytest.mark.parametrize(
    "path, stream",
    [
        ("/oms.v1.CheckoutService/GetOrder", False),
        ("/oms.v1.CheckoutService/QuoteDeliveryOptions", False),
        ("/oms.v1.InventoryService/WatchLowStockAlerts", True),
        ("/grpc.health.v1.Health/Check", False),
    ],
)
def test_bytes_that_are_not_protobuf_are_invalid_argument_and_logged(
    client: Client, logged: pytest.LogCaptureFixture, path: str, stream: bool
) -> None:
    err = failure(lambda: raw_call(client, path, b"\xff\xff\xff\xff", stream=stream))
    assert err.code() == INVALID_ARGUMENT, f"{err.code().name}: {err.details()}"
    assert "not a valid" in (err.details() or ""), err.details()
    assert error_info(err).reason == "MALFORMED_REQUEST"
    access = [r for r in logged.records if r.name == "oms.access"]
    assert [(r.method, r.code) for r in access] == [(path, "INVALID_ARGUMENT")]  # type: ignore[attr-defined]
    assert [r.getMessage() for r in logged.records if r.levelno >= logging.ERROR] == []


def test_invalid_utf8_names_the_string_field(client: Client) -> None:
    # GetOrderRequest field 1 (order_id), length 2, bytes that are not UTF-8.
    err = failure(lambda: raw_call(client, "/oms.v1.CheckoutService/GetOrder", b"\x0a\x02\xff\xfe"))
    invalid(err, "order_id", word="UTF-8")
    nested = checkout_pb2.QuoteDeliveryOptionsRequest(lines=[line("A"), line("B")])
    payload = nested.SerializeToString().replace(b"\x0a\x01B", b"\x0a\x01\xc3")
    err = failure(lambda: raw_call(client, "/oms.v1.CheckoutService/QuoteDeliveryOptions", payload))
    invalid(err, "lines[1].sku", word="UTF-8")


def test_malformed_bytes_without_a_token_are_unauthenticated(client: Client) -> None:
    call = client.channel.unary_unary(
        "/oms.v1.InventoryService/SetStock", request_serializer=lambda m: m
    )
    err = failure(lambda: call(b"\xff\xff", timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


# -------------------------------------------- item 12: numbers, page sizes, tokens


@pytest.mark.parametrize(
    "fields, field, word",
    [
        ({"max_parcels": 2**31 - 1}, "max_parcels", "at most 100"),
        ({"max_parcels": 101}, "max_parcels", "at most 100"),
        ({"latest_delivery_days": 2**31 - 1}, "latest_delivery_days", "at most 365"),
        ({"latest_delivery_days": 366}, "latest_delivery_days", "at most 365"),
    ],
)
def test_quote_caps_are_bounded(
    client: Client, fields: dict[str, int], field: str, word: str
) -> None:
    err = failure(
        lambda: client.checkout.QuoteDeliveryOptions(quote_request(**fields), timeout=TIMEOUT)
    )
    invalid(err, field, word=word)


def test_quote_caps_at_their_bounds_are_served(client: Client) -> None:
    response = client.quote({"A": 1}, max_parcels=100, latest_delivery_days=365)
    assert response.options


def tokens_of(client: Client, **fields: Any) -> tuple[list[str], list[str]]:
    """Every order id listed page by page (and the tokens seen)."""
    ids: list[str] = []
    seen: list[str] = []
    token = ""
    for _ in range(1000):
        page = client.checkout.ListOrders(
            checkout_pb2.ListOrdersRequest(page_token=token, **fields),
            timeout=TIMEOUT,
            metadata=ADMIN,
        )
        ids += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            return ids, seen
        seen.append(token)
    raise AssertionError("ListOrders never ended")


@pytest.fixture(scope="module")
def listed(client: Client) -> list[str]:
    """At least five orders exist; the ids ListOrders shows in one page."""
    for _ in range(5):
        order(client)
    return [
        o.order_id
        for o in client.checkout.ListOrders(
            checkout_pb2.ListOrdersRequest(page_size=500), timeout=TIMEOUT, metadata=ADMIN
        ).orders
    ]


def test_pages_list_every_order_once(client: Client, listed: list[str]) -> None:
    ids, tokens = tokens_of(client, page_size=2)
    assert ids[: len(listed)] == listed
    assert len(set(ids)) == len(ids)
    assert tokens and all(len(t) <= 512 for t in tokens)


def forged(raw: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode()


def tampered(client: Client) -> str:
    token = client.checkout.ListOrders(
        checkout_pb2.ListOrdersRequest(page_size=1), timeout=TIMEOUT, metadata=ADMIN
    ).next_page_token
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode()


BAD_TOKENS: dict[str, Callable[[Client], str]] = {
    "nan": lambda c: base64.urlsafe_b64encode(b'[NaN, "o_x"]').decode(),
    "1e400": lambda c: base64.urlsafe_b64encode(b'[1e400, "o_x"]').decode(),
    "object": lambda c: forged({"created_at": 1.0, "order_id": "o_x"}),
    "plain-json-list": lambda c: forged([1.0, "o_x"]),
    "not-base64": lambda c: "!!!",
    "tampered": tampered,
    "too-long": lambda c: "A" * 513,
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_page_tokens_are_checked_strictly(client: Client, listed: list[str], case: str) -> None:
    token = BAD_TOKENS[case](client)
    err = failure(
        lambda: client.checkout.ListOrders(
            checkout_pb2.ListOrdersRequest(page_token=token), timeout=TIMEOUT, metadata=ADMIN
        )
    )
    assert err.code() == INVALID_ARGUMENT, f"{err.code().name}: {err.details()}"
    assert [f for f, _ in violations(err)] == ["page_token"]


def test_a_page_token_works_only_with_the_filter_it_was_issued_for(
    client: Client, listed: list[str]
) -> None:
    token = client.checkout.ListOrders(
        checkout_pb2.ListOrdersRequest(page_size=1), timeout=TIMEOUT, metadata=ADMIN
    ).next_page_token
    err = failure(
        lambda: client.checkout.ListOrders(
            checkout_pb2.ListOrdersRequest(
                page_token=token, state=common_pb2.ORDER_STATE_CANCELLED
            ),
            timeout=TIMEOUT,
            metadata=ADMIN,
        )
    )
    ((_, description),) = invalid(err, "page_token")
    assert "filter" in description


@pytest.mark.parametrize("size", [501, 2**31 - 1])
def test_page_size_over_the_maximum_is_coerced(
    client: Client, listed: list[str], monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """AIP-158: a page_size above the maximum is served at the maximum."""
    monkeypatch.setattr("oms.paging.MAX_PAGE_SIZE", 2)
    page = client.checkout.ListOrders(
        checkout_pb2.ListOrdersRequest(page_size=size), timeout=TIMEOUT, metadata=ADMIN
    )
    assert [o.order_id for o in page.orders] == listed[:2]
    assert page.next_page_token


def test_page_size_501_is_served(client: Client, listed: list[str]) -> None:
    page = client.checkout.ListOrders(
        checkout_pb2.ListOrdersRequest(page_size=501), timeout=TIMEOUT, metadata=ADMIN
    )
    assert [o.order_id for o in page.orders] == listed


def test_negative_page_size_stays_invalid(client: Client) -> None:
    err = failure(
        lambda: client.checkout.ListOrders(
            checkout_pb2.ListOrdersRequest(page_size=-1), timeout=TIMEOUT, metadata=ADMIN
        )
    )
    invalid(err, "page_size", word="negative")


def test_a_page_stops_before_it_outgrows_a_default_client(
    client: Client, listed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fewer orders than page_size when they would not fit the byte budget (AIP-158 allows it)."""
    first = client.checkout.GetOrder(
        checkout_pb2.GetOrderRequest(order_id=listed[0]), timeout=TIMEOUT
    ).order
    monkeypatch.setattr("oms.paging.MAX_PAGE_BYTES", int(first.ByteSize() * 2.5))
    page = client.checkout.ListOrders(
        checkout_pb2.ListOrdersRequest(page_size=50), timeout=TIMEOUT, metadata=ADMIN
    )
    assert 1 <= len(page.orders) <= 3 and page.next_page_token
    ids, _ = tokens_of(client, page_size=50)
    assert ids[: len(listed)] == listed and len(set(ids)) == len(ids)


# ------------------------------------------------ item 13: a ReturnItems retry


def expensive_newark(client: Client) -> None:
    """Make Newark the dearest node to send a return to, so the next return goes elsewhere."""
    client.inventory.UpsertNodes(
        inventory_pb2.UpsertNodesRequest(
            nodes=[
                inventory_pb2.Node(
                    node_id="DC-NJ",
                    kind=inventory_pb2.NODE_KIND_DC,
                    location=common_pb2.Location(latitude=40.7357, longitude=-74.1724),
                    handling_days=1,
                    handling_cost=money_pb2.Money(units=1_000, currency_code="USD"),
                )
            ]
        ),
        metadata=ADMIN,
        timeout=TIMEOUT,
    )


def test_a_return_retry_answers_exactly_what_the_first_call_did(
    tmp_path: Path, database_url: str
) -> None:
    with running_server(database_url, hand_network(STOCK)) as c:
        order_id = order(c, "SHIPPED", {"A": 2})

        def give_back(key: str, sku: str = "A") -> fulfilment_pb2.ReturnItemsResponse:
            return c.fulfilment.ReturnItems(
                fulfilment_pb2.ReturnItemsRequest(
                    order_id=order_id, lines=[line(sku)], idempotency_key=key
                ),
                metadata=ADMIN,
                timeout=TIMEOUT,
            )

        first = give_back("return-1")
        assert first.return_node_id == "DC-NJ" and first.HasField("return_cost")
        expensive_newark(c)
        second = give_back("return-2")
        assert second.return_node_id != "DC-NJ"
        retry = give_back("return-1")
        assert (retry.return_node_id, retry.return_cost) == (
            first.return_node_id,
            first.return_cost,
        )
        assert retry.HasField("return_cost")
        assert len(retry.order.returns) == 2  # nothing returned twice
        # The same key for other units is a different request, not a retry.
        err = failure(lambda: give_back("return-1", "B"))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        assert "return-1" in (err.details() or "")


def test_ids_in_errors_keep_the_error_small_even_when_the_store_is_asked(
    client: Client,
) -> None:
    """NOT_FOUND for the longest id a caller may send stays small and names the id."""
    missing = "o_" + "9" * 62
    err = failure(
        lambda: client.checkout.GetOrder(
            checkout_pb2.GetOrderRequest(order_id=missing), timeout=TIMEOUT
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert trailer_bytes(err) < 1024


def test_health_requests_are_checked_too(client: Client) -> None:
    call = client.channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    err = failure(lambda: call(health_pb2.HealthCheckRequest(service="x" * MB), timeout=TIMEOUT))
    invalid(err, "service", word="characters")
    ok = call(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    assert ok.status == health_pb2.HealthCheckResponse.SERVING
