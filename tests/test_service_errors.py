"""Bad requests over a real loopback channel: exact status codes and rich error details.

One table, one row per bad request. Each row names the status code the caller
must see and what the google.rpc details must say: the ``BadRequest`` field
violations (field path and a word of the description), the
``PreconditionFailure`` violations (type, subject, a word), or the
``ResourceInfo`` of what was not found; plus the ``ErrorInfo`` reason. No row
may ever come back UNKNOWN or INTERNAL: those mean a bug escaped
``oms.status``.

Rows that document a bug in the service are marked ``xfail(strict=True)``
with what was sent, what is expected and what comes back.
"""

from __future__ import annotations

import base64
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from google.type import date_pb2, money_pb2
from grpc_status import rpc_status

from oms import schema
from oms.convert import date_proto
from oms.v1 import checkout_pb2, common_pb2, fulfilment_pb2, inventory_pb2
from sourcing.model import Network

from service_support import ADMIN, NYC, Client, hand_network, running_server, sqlite_url

DOMAIN = "oms.v1"
TIMEOUT = 10.0
SERVER_FAULTS = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
OK = grpc.StatusCode.OK
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
#: What a caller error may come back as when the exact code is a matter of design.
CALLER_ERRORS = (INVALID_ARGUMENT, FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE)

#: Every position well stocked, so quote holds left by earlier rows never run the
#: shared server out of stock (the network holds 1,500 units of each SKU).
STOCK = {(node, sku): 500 for node in ("DC-NJ", "ST-PHL", "DC-CHI") for sku in ("A", "B")}


def network() -> Network:
    return hand_network(STOCK)


# --------------------------------------------------------------------------- the harness


class Env:
    """One row's view of the server: stubs, and the ids its setup created (for expectations)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.names: dict[str, str] = {}

    def quote(
        self, lines: dict[str, int] | None = None
    ) -> checkout_pb2.QuoteDeliveryOptionsResponse:
        response = self.client.quote(lines or {"A": 1})
        assert response.options, "the hand network must offer an option for this cart"
        self.names["quote"] = response.quote_id
        self.names["option"] = response.options[0].option_id
        return response

    def order(self, state: str = "PLACED", lines: dict[str, int] | None = None) -> common_pb2.Order:
        """A fresh order moved to ``state`` (PLACED, RELEASED or SHIPPED)."""
        quote = self.quote(lines)
        key = "key-" + uuid.uuid4().hex
        order = self.client.place(quote.quote_id, quote.options[0].option_id, key).order
        self.names["key"] = key
        fulfilment = self.client.fulfilment
        if state in ("RELEASED", "SHIPPED"):
            order = fulfilment.ReleaseOrder(
                fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id),
                metadata=ADMIN,
                timeout=TIMEOUT,
            ).order
        if state == "SHIPPED":
            order = fulfilment.ConfirmShipment(
                fulfilment_pb2.ConfirmShipmentRequest(order_id=order.order_id),
                metadata=ADMIN,
                timeout=TIMEOUT,
            ).order
        assert order.state == getattr(common_pb2, f"ORDER_STATE_{state}")
        self.names["order"] = order.order_id
        parcel = order.allocation.parcels[0]
        self.names["node"] = parcel.node_id
        self.names["sku"] = parcel.lines[0].sku
        return order


@dataclass(frozen=True)
class Case:
    """One bad request and what the caller must see.

    * ``fields``: the complete list of BadRequest violations as (field, word in
      its description), in any order;
    * ``preconditions``: the complete list of PreconditionFailure violations as
      (type, subject, word); ``{order}``-style placeholders name ids the setup made;
    * ``resource``: the ResourceInfo (type, name) of a NOT_FOUND;
    * ``message``: a word of the status message;
    * ``check``: for OK rows, what the response must satisfy.
    """

    call: Callable[[Env], Any]
    code: grpc.StatusCode | tuple[grpc.StatusCode, ...]
    fields: tuple[tuple[str, str], ...] = ()
    preconditions: tuple[tuple[str, str, str], ...] = ()
    resource: tuple[str, str] | None = None
    message: str = ""
    setup: Callable[[Env], Any] | None = None
    check: Callable[[Env, Any], None] | None = None
    #: Runs on a server of its own: the request may corrupt the store (a documented bug).
    own_server: bool = False
    expect_details: bool = True


DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.ResourceInfo,
    error_details_pb2.ErrorInfo,
    error_details_pb2.RetryInfo,
)


def rich_details(err: grpc.RpcError) -> dict[type[Message], Any]:
    """The google.rpc detail messages of a failed call, by type (empty without a rich status)."""
    status = rpc_status.from_call(err)
    if status is None:
        return {}
    assert status.code == err.code().value[0]
    assert status.message == err.details()
    found: dict[type[Message], Any] = {}
    for packed in status.details:
        for kind in DETAIL_TYPES:
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                assert kind not in found, f"two {kind.__name__} details"
                found[kind] = message
                break
        else:
            raise AssertionError(f"unexpected detail type {packed.type_url}")
    return found


def verify(case: Case, env: Env) -> None:
    """Run ``case`` against ``env``'s server and check the status and every detail."""
    if case.setup is not None:
        case.setup(env)
    try:
        response = case.call(env)
    except grpc.RpcError as exc:
        err: grpc.RpcError | None = exc
        code = exc.code()
    else:
        err, code = None, OK
    what = f"{code.name}: {err.details() if err is not None else ''}"
    assert code not in SERVER_FAULTS, f"server fault for a caller's request: {what}"
    if isinstance(case.code, tuple):
        assert code in case.code, what
        return
    assert code == case.code, what
    if err is None:
        if case.check is not None:
            case.check(env, response)
        return
    message = err.details() or ""
    assert case.message in message, what
    details = rich_details(err)
    if not case.expect_details:
        return
    info = details.get(error_details_pb2.ErrorInfo)
    assert info is not None, f"no ErrorInfo in {what}"
    assert info.domain == DOMAIN

    if code == INVALID_ARGUMENT:
        bad = details.get(error_details_pb2.BadRequest)
        assert bad is not None, f"no BadRequest in {what}"
        got = sorted((v.field, v.description) for v in bad.field_violations)
        assert sorted(f for f, _ in got) == sorted(f for f, _ in case.fields), got
        for want_field, word in case.fields:
            assert any(f == want_field and word in d for f, d in got), (want_field, word, got)
        assert info.reason == "INVALID_REQUEST"
    elif code == NOT_FOUND:
        resource = details.get(error_details_pb2.ResourceInfo)
        assert resource is not None and case.resource is not None, what
        kind, name = case.resource
        assert (resource.resource_type, resource.resource_name) == (kind, name.format(**env.names))
        assert info.reason == f"{kind.upper()}_NOT_FOUND"
    elif code == FAILED_PRECONDITION:
        failure = details.get(error_details_pb2.PreconditionFailure)
        assert failure is not None, f"no PreconditionFailure in {what}"
        got_v = [(v.type, v.subject, v.description) for v in failure.violations]
        assert len(got_v) == len(case.preconditions), got_v
        for kind, subject, word in case.preconditions:
            want_subject = subject.format(**env.names)
            assert any(t == kind and s == want_subject and word in d for t, s, d in got_v), (
                kind,
                want_subject,
                word,
                got_v,
            )
        assert info.reason == case.preconditions[0][0]


# --------------------------------------------------------------------------- requests


def line(sku: str, quantity: int) -> common_pb2.CartLine:
    return common_pb2.CartLine(sku=sku, quantity=quantity)


def quote_request(
    lines: list[common_pb2.CartLine] | None = None,
    destination: common_pb2.Location | None = NYC,
    **fields: Any,
) -> checkout_pb2.QuoteDeliveryOptionsRequest:
    request = checkout_pb2.QuoteDeliveryOptionsRequest(
        lines=[line("A", 1)] if lines is None else lines, **fields
    )
    if destination is not None:
        request.destination.CopyFrom(destination)
    return request


def quote(request: checkout_pb2.QuoteDeliveryOptionsRequest) -> Callable[[Env], Any]:
    return lambda env: env.client.checkout.QuoteDeliveryOptions(request, timeout=TIMEOUT)


def at(latitude: float, longitude: float) -> common_pb2.Location:
    return common_pb2.Location(latitude=latitude, longitude=longitude)


def place(
    quote_id: str = "{quote}", option_id: str = "{option}", key: str = ""
) -> Callable[[Env], Any]:
    """PlaceOrder with placeholders filled from the row's setup; ``key`` "" means a new key."""

    def call(env: Env) -> Any:
        request = checkout_pb2.PlaceOrderRequest(
            quote_id=quote_id.format(**env.names),
            option_id=option_id.format(**env.names),
            idempotency_key=key.format(**env.names) if key else uuid.uuid4().hex,
        )
        return env.client.checkout.PlaceOrder(request, timeout=TIMEOUT)

    return call


def place_raw(quote_id: str, option_id: str, key: str) -> Callable[[Env], Any]:
    request = checkout_pb2.PlaceOrderRequest(
        quote_id=quote_id, option_id=option_id, idempotency_key=key
    )
    return lambda env: env.client.checkout.PlaceOrder(request, timeout=TIMEOUT)


def list_orders(**fields: Any) -> Callable[[Env], Any]:
    request = checkout_pb2.ListOrdersRequest(**fields)
    return lambda env: env.client.checkout.ListOrders(request, timeout=TIMEOUT, metadata=ADMIN)


def token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def fulfil(method: str, request_type: type[Message], **fields: Any) -> Callable[[Env], Any]:
    def call(env: Env) -> Any:
        values = {k: v.format(**env.names) if isinstance(v, str) else v for k, v in fields.items()}
        stub = getattr(env.client.fulfilment, method)
        return stub(request_type(**values), metadata=ADMIN, timeout=TIMEOUT)

    return call


def returns(*lines: tuple[str, int]) -> Callable[[Env], Any]:
    def call(env: Env) -> Any:
        return env.client.fulfilment.ReturnItems(
            fulfilment_pb2.ReturnItemsRequest(
                order_id=env.names["order"], lines=[line(s, q) for s, q in lines]
            ),
            metadata=ADMIN,
            timeout=TIMEOUT,
        )

    return call


def admin(method: str, request: Message, metadata: Any = ADMIN) -> Callable[[Env], Any]:
    def call(env: Env) -> Any:
        stub = getattr(env.client.inventory, method)
        return stub(request, metadata=metadata, timeout=TIMEOUT)

    return call


def release_twice(env: Env) -> tuple[common_pb2.Order, common_pb2.Order]:
    release = fulfilment_pb2.ReleaseOrderRequest(order_id=env.names["order"])
    first = env.client.fulfilment.ReleaseOrder(release, metadata=ADMIN, timeout=TIMEOUT).order
    second = env.client.fulfilment.ReleaseOrder(release, metadata=ADMIN, timeout=TIMEOUT).order
    return first, second


def check_release_twice(env: Env, response: tuple[common_pb2.Order, common_pb2.Order]) -> None:
    first, second = response
    assert first.state == second.state == common_pb2.ORDER_STATE_RELEASED
    # A no-op: no second "released" event, nothing else changed.
    assert [e.type for e in second.events] == ["placed", "released"]
    assert second.update_time == first.update_time


def adjust_below_reserved(env: Env) -> Any:
    """Take on hand at the order's node to one unit below what orders reserve there."""
    node, sku = env.names["node"], env.names["sku"]
    position = env.client.inventory.GetAvailability(
        inventory_pb2.GetAvailabilityRequest(skus=[sku], node_ids=[node]),
        metadata=ADMIN,
        timeout=TIMEOUT,
    ).positions[0]
    assert position.reserved >= 1
    delta = position.reserved - 1 - position.on_hand
    return env.client.inventory.AdjustStock(
        inventory_pb2.AdjustStockRequest(node_id=node, sku=sku, delta=delta, reason="recount"),
        metadata=ADMIN,
        timeout=TIMEOUT,
    )


def set_stock(**fields: Any) -> Message:
    values: dict[str, Any] = {"node_id": "DC-NJ", "sku": "A", "on_hand": 5, "reason": "recount"}
    values.update(fields)
    return inventory_pb2.SetStockRequest(**values)


def adjust_stock(**fields: Any) -> Message:
    values: dict[str, Any] = {"node_id": "DC-NJ", "sku": "A", "delta": 1, "reason": "recount"}
    values.update(fields)
    return inventory_pb2.AdjustStockRequest(**values)


def node(**fields: Any) -> inventory_pb2.Node:
    values: dict[str, Any] = {
        "node_id": "DC-NEW",
        "kind": inventory_pb2.NODE_KIND_DC,
        "location": at(40.0, -75.0),
        "handling_days": 1,
    }
    values.update(fields)
    return inventory_pb2.Node(**values)


#: A date every receipt of the table is expected on: well in the future.
DUE = date_proto((date.today() + timedelta(days=30)).isoformat())


def receipt(receipt_id: str, **fields: Any) -> inventory_pb2.InboundReceipt:
    values: dict[str, Any] = {
        "receipt_id": receipt_id,
        "node_id": "DC-NJ",
        "sku": "A",
        "quantity": 5,
        "expected_date": DUE,
    }
    values.update(fields)
    return inventory_pb2.InboundReceipt(**values)


def upsert_receipts(*receipts: inventory_pb2.InboundReceipt) -> Callable[[Env], Any]:
    return admin(
        "UpsertInboundReceipts", inventory_pb2.UpsertInboundReceiptsRequest(receipts=receipts)
    )


def cancel_receipt(receipt_id: str, reason: str = "supplier") -> Callable[[Env], Any]:
    return admin(
        "CancelInboundReceipt",
        inventory_pb2.CancelInboundReceiptRequest(receipt_id=receipt_id, reason=reason),
    )


def receive(receipt_id: str, qty: int, reason: str = "truck") -> Callable[[Env], Any]:
    return admin(
        "ReceiveInboundReceipt",
        inventory_pb2.ReceiveInboundReceiptRequest(
            receipt_id=receipt_id, received_quantity=qty, reason=reason
        ),
    )


def check_received_once(env: Env, response: inventory_pb2.ReceiveInboundReceiptResponse) -> None:
    """The retry returned the receipt as received, and put nothing on hand a second time."""
    assert response.receipt.state == inventory_pb2.INBOUND_RECEIPT_STATE_RECEIVED
    assert response.receipt.received_quantity == 4
    assert list(response.covered_order_ids) == []
    assert env.client.store.ledger_mismatches() == []
    t = schema.stock_ledger
    with env.client.store.read() as conn:
        rows = conn.execute(
            sa.select(t.c.delta).where(t.c.reason == "receipt R-received-twice: truck")
        ).all()
    assert [r.delta for r in rows] == [4]


def bug(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"BUG: {reason}")


# --------------------------------------------------------------------------- the table

CASES = [
    # -- QuoteDeliveryOptions ----------------------------------------------------------
    pytest.param(
        Case(
            quote(quote_request([line("NOPE", 1)])),
            INVALID_ARGUMENT,
            fields=(("lines[0].sku", "unknown"),),
        ),
        id="quote-unknown-sku",
    ),
    pytest.param(
        Case(
            quote(quote_request([line("", 1)])),
            INVALID_ARGUMENT,
            fields=(("lines[0].sku", "required"),),
        ),
        id="quote-empty-sku",
    ),
    pytest.param(
        Case(
            quote(quote_request([line("A", 0)])),
            INVALID_ARGUMENT,
            fields=(("lines[0].quantity", "positive"),),
        ),
        id="quote-quantity-zero",
    ),
    pytest.param(
        Case(
            quote(quote_request([line("A", 1), line("B", -2)])),
            INVALID_ARGUMENT,
            fields=(("lines[1].quantity", "positive"),),
        ),
        id="quote-quantity-negative",
    ),
    pytest.param(
        Case(
            quote(quote_request(destination=at(91.0, -74.0))),
            INVALID_ARGUMENT,
            fields=(("destination.latitude", "[-90, 90]"),),
        ),
        id="quote-latitude-91",
    ),
    pytest.param(
        Case(
            quote(quote_request(destination=at(40.7, -181.0))),
            INVALID_ARGUMENT,
            fields=(("destination.longitude", "[-180, 180]"),),
        ),
        id="quote-longitude-minus-181",
    ),
    pytest.param(
        Case(
            quote(quote_request(destination=at(math.nan, -74.0))),
            INVALID_ARGUMENT,
            fields=(("destination.latitude", "nan"),),
        ),
        id="quote-latitude-nan",
    ),
    pytest.param(
        Case(
            quote(quote_request(destination=at(40.7, math.inf))),
            INVALID_ARGUMENT,
            fields=(("destination.longitude", "inf"),),
        ),
        id="quote-longitude-inf",
    ),
    pytest.param(
        Case(
            quote(quote_request(destination=None)),
            INVALID_ARGUMENT,
            fields=(("destination", "required"),),
        ),
        id="quote-missing-destination",
    ),
    pytest.param(
        Case(quote(quote_request([])), INVALID_ARGUMENT, fields=(("lines", "empty"),)),
        id="quote-empty-cart",
    ),
    pytest.param(
        Case(
            quote(quote_request([line("A", 1)] * 201)),
            INVALID_ARGUMENT,
            fields=(("lines", "201 lines exceed the limit of 200"),),
        ),
        id="quote-201-lines",
    ),
    pytest.param(
        Case(
            quote(quote_request(max_parcels=-1)),
            INVALID_ARGUMENT,
            fields=(("max_parcels", "negative"),),
        ),
        id="quote-negative-max-parcels",
    ),
    pytest.param(
        Case(
            quote(quote_request(latest_delivery_days=-3)),
            INVALID_ARGUMENT,
            fields=(("latest_delivery_days", "negative"),),
        ),
        id="quote-negative-latest-delivery-days",
    ),
    pytest.param(
        Case(
            quote(quote_request(value_of_day=money_pb2.Money(units=1, currency_code="EUR"))),
            INVALID_ARGUMENT,
            fields=(("value_of_day.currency_code", "USD"),),
        ),
        id="quote-value-of-day-other-currency",
    ),
    pytest.param(
        Case(
            quote(quote_request(value_of_day=money_pb2.Money(nanos=-10_000))),
            INVALID_ARGUMENT,
            fields=(("value_of_day", "negative"),),
        ),
        id="quote-value-of-day-negative",
    ),
    pytest.param(
        Case(
            quote(
                quote_request(
                    [line("NOPE", 0), line("", -1), line("B", 2)],
                    destination=at(91.0, 200.0),
                    max_parcels=-1,
                    value_of_day=money_pb2.Money(nanos=50_000_000, currency_code="GBP"),
                )
            ),
            INVALID_ARGUMENT,
            fields=(
                ("max_parcels", "negative"),
                ("value_of_day.currency_code", "GBP"),
                ("destination.latitude", "91"),
                ("destination.longitude", "200"),
                ("lines[0].sku", "unknown"),
                ("lines[0].quantity", "positive"),
                ("lines[1].sku", "required"),
                ("lines[1].quantity", "positive"),
            ),
        ),
        id="quote-several-violations-all-reported",
    ),
    pytest.param(
        Case(
            quote(quote_request([line("A", 1_000_000)])),
            FAILED_PRECONDITION,
            preconditions=(("STOCK", "A", "requested 1000000, available"),),
            message="not enough",
        ),
        id="quote-shortage-names-the-sku",
    ),
    pytest.param(
        Case(
            quote(quote_request([line("A", 2**31 - 1), line("B", 1)])),
            INVALID_ARGUMENT,
            fields=(("lines[0].quantity", "at most 1000000"),),
        ),
        id="quote-int32-max-quantity-is-over-the-line-limit",
    ),
    pytest.param(
        Case(
            quote(quote_request([line("A" * 10_000, 1)])),
            INVALID_ARGUMENT,
            fields=(("lines[0].sku", ""),),
        ),
        id="quote-10000-char-sku",
    ),
    # -- PlaceOrder --------------------------------------------------------------------
    pytest.param(
        Case(
            place_raw("", "opt-1", "key-1"),
            INVALID_ARGUMENT,
            fields=(("quote_id", "required"),),
        ),
        id="place-empty-quote-id",
    ),
    pytest.param(
        Case(
            place_raw("q_1", "", "key-1"),
            INVALID_ARGUMENT,
            fields=(("option_id", "required"),),
        ),
        id="place-empty-option-id",
    ),
    pytest.param(
        Case(
            place_raw("q_1", "opt-1", ""),
            INVALID_ARGUMENT,
            fields=(("idempotency_key", "required"),),
        ),
        id="place-empty-idempotency-key",
    ),
    pytest.param(
        Case(
            place_raw("", "", ""),
            INVALID_ARGUMENT,
            fields=(
                ("quote_id", "required"),
                ("option_id", "required"),
                ("idempotency_key", "required"),
            ),
        ),
        id="place-all-empty",
    ),
    pytest.param(
        Case(
            place_raw("q_1", "opt-1", "k" * 129),
            INVALID_ARGUMENT,
            fields=(("idempotency_key", "128"),),
        ),
        id="place-idempotency-key-too-long",
    ),
    pytest.param(
        Case(
            place_raw("q_does_not_exist", "opt-1", uuid.uuid4().hex),
            NOT_FOUND,
            resource=("quote", "q_does_not_exist"),
        ),
        id="place-unknown-quote",
    ),
    pytest.param(
        Case(
            place(option_id="opt-99"),
            NOT_FOUND,
            resource=("option", "{quote}/opt-99"),
            setup=lambda env: env.quote(),
        ),
        id="place-unknown-option-on-real-quote",
    ),
    pytest.param(
        Case(
            place(key="{key}"),
            FAILED_PRECONDITION,
            preconditions=(("IDEMPOTENCY_KEY", "{key}", "another order"),),
            setup=lambda env: (env.order(), env.quote()),
        ),
        id="place-idempotency-key-reused-for-another-quote",
    ),
    pytest.param(
        Case(
            place(quote_id="{quote}", option_id="{option}"),
            FAILED_PRECONDITION,
            preconditions=(("QUOTE", "{quote}", "already used"),),
            message="already used",
            setup=lambda env: env.order(),
        ),
        id="place-quote-twice-with-different-keys",
    ),
    # -- GetOrder / ListOrders / CancelOrder -------------------------------------------
    pytest.param(
        Case(
            lambda env: env.client.checkout.GetOrder(
                checkout_pb2.GetOrderRequest(order_id="o_nope"), timeout=TIMEOUT
            ),
            NOT_FOUND,
            resource=("order", "o_nope"),
        ),
        id="get-unknown-order",
    ),
    pytest.param(
        Case(
            lambda env: env.client.checkout.GetOrder(
                checkout_pb2.GetOrderRequest(), timeout=TIMEOUT
            ),
            INVALID_ARGUMENT,
            fields=(("order_id", "required"),),
        ),
        id="get-empty-order-id",
    ),
    pytest.param(
        Case(
            list_orders(page_token="not-a-token!!"),
            INVALID_ARGUMENT,
            fields=(("page_token", "not a token"),),
        ),
        id="list-garbage-page-token",
    ),
    pytest.param(
        Case(
            list_orders(page_token=token(b"5")),
            INVALID_ARGUMENT,
            fields=(("page_token", "not a token"),),
        ),
        id="list-page-token-wrong-json-shape",
    ),
    pytest.param(
        Case(
            list_orders(page_token=token(b"\xff\xfe\x00")),
            INVALID_ARGUMENT,
            fields=(("page_token", "not a token"),),
        ),
        id="list-page-token-not-utf8",
    ),
    pytest.param(
        Case(
            list_orders(page_token=token(b"[" * 300)),
            INVALID_ARGUMENT,
            fields=(("page_token", "not a token"),),
        ),
        id="list-page-token-deeply-nested-json",
    ),
    pytest.param(
        Case(
            list_orders(page_token=token(b"[" * 5000)),
            INVALID_ARGUMENT,
            fields=(("page_token", "512 characters"),),
        ),
        id="list-page-token-longer-than-512",
    ),
    pytest.param(
        # AIP-158: a page size above the maximum is served at the maximum.
        Case(list_orders(page_size=501), OK),  # test_service_inputs checks the coercion
        id="list-page-size-501-is-coerced",
    ),
    pytest.param(
        Case(list_orders(page_size=-1), INVALID_ARGUMENT, fields=(("page_size", "negative"),)),
        id="list-page-size-negative",
    ),
    pytest.param(
        Case(list_orders(state=99), INVALID_ARGUMENT, fields=(("state", "unknown"),)),
        id="list-unknown-state",
    ),
    pytest.param(
        Case(
            lambda env: env.client.checkout.CancelOrder(
                checkout_pb2.CancelOrderRequest(order_id=env.names["order"]), timeout=TIMEOUT
            ),
            FAILED_PRECONDITION,
            preconditions=(("STATE", "{order}", "SHIPPED"),),
            setup=lambda env: env.order("SHIPPED"),
        ),
        id="cancel-shipped-order",
    ),
    pytest.param(
        Case(
            lambda env: env.client.checkout.CancelOrder(
                checkout_pb2.CancelOrderRequest(order_id="o_nope"), timeout=TIMEOUT
            ),
            NOT_FOUND,
            resource=("order", "o_nope"),
        ),
        id="cancel-unknown-order",
    ),
    # -- FulfilmentService -------------------------------------------------------------
    pytest.param(
        Case(release_twice, OK, setup=lambda env: env.order(), check=check_release_twice),
        id="release-twice-is-a-no-op",
    ),
    pytest.param(
        Case(
            fulfil("ConfirmShipment", fulfilment_pb2.ConfirmShipmentRequest, order_id="{order}"),
            FAILED_PRECONDITION,
            preconditions=(("STATE", "{order}", "PLACED"),),
            setup=lambda env: env.order(),
        ),
        id="ship-placed-order",
    ),
    pytest.param(
        Case(
            fulfil("ConfirmDelivery", fulfilment_pb2.ConfirmDeliveryRequest, order_id="{order}"),
            FAILED_PRECONDITION,
            preconditions=(("STATE", "{order}", "RELEASED"),),
            setup=lambda env: env.order("RELEASED"),
        ),
        id="deliver-released-order",
    ),
    pytest.param(
        Case(
            fulfil("ReleaseOrder", fulfilment_pb2.ReleaseOrderRequest, order_id="o_nope"),
            NOT_FOUND,
            resource=("order", "o_nope"),
        ),
        id="release-unknown-order",
    ),
    pytest.param(
        Case(
            returns(("A", 2)),
            FAILED_PRECONDITION,
            preconditions=(("RETURN", "A", "returning 2 but 1"),),
            setup=lambda env: env.order("SHIPPED", {"A": 1}),
        ),
        id="return-more-than-shipped",
    ),
    pytest.param(
        Case(
            returns(("B", 1)),
            FAILED_PRECONDITION,
            preconditions=(("RETURN", "B", "but 0"),),
            setup=lambda env: env.order("SHIPPED", {"A": 1}),
        ),
        id="return-sku-not-in-order",
    ),
    pytest.param(
        Case(
            returns(("A", 1)),
            FAILED_PRECONDITION,
            preconditions=(("STATE", "{order}", "PLACED"),),
            setup=lambda env: env.order("PLACED", {"A": 1}),
        ),
        id="return-from-placed-order",
    ),
    pytest.param(
        Case(
            returns(),
            INVALID_ARGUMENT,
            fields=(("lines", "at least one"),),
            setup=lambda env: env.names.update(order="o_any"),
        ),
        id="return-no-lines",
    ),
    pytest.param(
        Case(
            returns(("", 0)),
            INVALID_ARGUMENT,
            fields=(("lines[0].sku", "required"), ("lines[0].quantity", "positive")),
            setup=lambda env: env.names.update(order="o_any"),
        ),
        id="return-bad-line",
    ),
    # -- InventoryService --------------------------------------------------------------
    pytest.param(
        Case(
            admin("SetStock", set_stock(on_hand=-1)),
            INVALID_ARGUMENT,
            fields=(("on_hand", "negative"),),
        ),
        id="set-stock-negative-on-hand",
    ),
    pytest.param(
        Case(
            admin("SetStock", set_stock(reason="")),
            INVALID_ARGUMENT,
            fields=(("reason", "required"),),
        ),
        id="set-stock-missing-reason",
    ),
    pytest.param(
        Case(
            admin("SetStock", set_stock(reason="   ")),
            INVALID_ARGUMENT,
            fields=(("reason", "required"),),
        ),
        id="set-stock-blank-reason",
    ),
    pytest.param(
        Case(
            admin("SetStock", set_stock(node_id="", sku="", safety_stock=-1, reason="")),
            INVALID_ARGUMENT,
            fields=(
                ("node_id", "required"),
                ("sku", "required"),
                ("reason", "required"),
                ("safety_stock", "negative"),
            ),
        ),
        id="set-stock-several-violations",
    ),
    pytest.param(
        Case(
            admin("SetStock", set_stock(node_id="NOWHERE")),
            NOT_FOUND,
            resource=("node", "NOWHERE"),
        ),
        id="set-stock-unknown-node",
    ),
    pytest.param(
        Case(
            admin("SetStock", set_stock(sku="NOPE")),
            NOT_FOUND,
            resource=("SKU", "NOPE"),
        ),
        id="set-stock-unknown-sku",
    ),
    pytest.param(
        Case(
            admin("AdjustStock", adjust_stock(delta=0)),
            INVALID_ARGUMENT,
            fields=(("delta", "zero"),),
        ),
        id="adjust-stock-delta-zero",
    ),
    pytest.param(
        Case(
            adjust_below_reserved,
            FAILED_PRECONDITION,
            preconditions=(("STOCK", "{node}/{sku}", "reserved"),),
            setup=lambda env: env.order(),
        ),
        id="adjust-stock-below-reserved",
    ),
    pytest.param(
        Case(
            admin("AdjustStock", adjust_stock(delta=2**63 - 1)),
            CALLER_ERRORS,
            own_server=True,
        ),
        id="adjust-stock-int64-overflow",
    ),
    pytest.param(
        Case(
            admin("UpsertNodes", inventory_pb2.UpsertNodesRequest(nodes=[])),
            INVALID_ARGUMENT,
            fields=(("nodes", "between 1"),),
        ),
        id="upsert-nodes-empty",
    ),
    pytest.param(
        Case(
            admin(
                "UpsertNodes",
                inventory_pb2.UpsertNodesRequest(
                    nodes=[node(kind=inventory_pb2.NODE_KIND_UNSPECIFIED, location=at(95.0, 0.0))]
                ),
            ),
            INVALID_ARGUMENT,
            fields=(("nodes[0].kind", "NODE_KIND_DC"), ("nodes[0].location.latitude", "95")),
        ),
        id="upsert-nodes-bad-kind-and-latitude",
    ),
    pytest.param(
        Case(
            admin(
                "UpsertNodes",
                inventory_pb2.UpsertNodesRequest(
                    nodes=[
                        node(),
                        node(
                            node_id="",
                            location=None,
                            handling_days=-1,
                            handling_cost=money_pb2.Money(nanos=10_000, currency_code="EUR"),
                        ),
                    ]
                ),
            ),
            INVALID_ARGUMENT,
            fields=(
                ("nodes[1].node_id", "required"),
                ("nodes[1].location", "required"),
                ("nodes[1].handling_days", "negative"),
                ("nodes[1].handling_cost.currency_code", "USD"),
            ),
        ),
        id="upsert-nodes-second-node-bad",
    ),
    pytest.param(
        Case(
            admin(
                "UpsertSkus",
                inventory_pb2.UpsertSkusRequest(skus=[inventory_pb2.Sku(sku="C", weight_kg=0)]),
            ),
            INVALID_ARGUMENT,
            fields=(("skus[0].weight_kg", "between 0.001"),),
        ),
        id="upsert-skus-weight-zero",
    ),
    pytest.param(
        Case(
            admin(
                "UpsertSkus",
                inventory_pb2.UpsertSkusRequest(
                    skus=[inventory_pb2.Sku(sku="C", weight_kg=math.nan, daily_demand=-1.0)]
                ),
            ),
            INVALID_ARGUMENT,
            fields=(("skus[0].weight_kg", "nan"), ("skus[0].daily_demand", "[0, 1e9]")),
        ),
        id="upsert-skus-weight-nan-negative-demand",
    ),
    pytest.param(
        Case(
            admin(
                "UpsertSkus",
                inventory_pb2.UpsertSkusRequest(skus=[inventory_pb2.Sku(sku="C", weight_kg=1e30)]),
            ),
            INVALID_ARGUMENT,
            fields=(("skus[0].weight_kg", ""),),
        ),
        id="upsert-skus-weight-1e30",
    ),
    pytest.param(
        Case(
            admin(
                "UpsertRateCard",
                inventory_pb2.UpsertRateCardRequest(
                    zones=[
                        inventory_pb2.Zone(zone="near", max_km=100.0),
                        inventory_pb2.Zone(zone="far", max_km=50.0),
                    ]
                ),
            ),
            INVALID_ARGUMENT,
            fields=(("zones[1].max_km", "ascending"),),
        ),
        id="upsert-rate-card-zones-not-ascending",
    ),
    pytest.param(
        Case(
            admin("UpsertRateCard", inventory_pb2.UpsertRateCardRequest()),
            INVALID_ARGUMENT,
            fields=(("rates", "zones, rates or both"),),
        ),
        id="upsert-rate-card-empty",
    ),
    pytest.param(
        Case(
            admin(
                "UpsertRateCard",
                inventory_pb2.UpsertRateCardRequest(
                    rates=[inventory_pb2.Rate(service="air", zone="9", transit_days=1)]
                ),
            ),
            FAILED_PRECONDITION,
            preconditions=(("ZONE", "9", "not a zone"),),
        ),
        id="upsert-rate-card-rate-for-unknown-zone",
    ),
    pytest.param(
        Case(
            admin("GetAvailability", inventory_pb2.GetAvailabilityRequest()),
            INVALID_ARGUMENT,
            fields=(("skus", "at least one"),),
        ),
        id="get-availability-no-skus",
    ),
    # -- RejectOrder / ReportShortage ----------------------------------------------------
    pytest.param(
        Case(
            fulfil("RejectOrder", fulfilment_pb2.RejectOrderRequest, reason="  "),
            INVALID_ARGUMENT,
            fields=(("order_id", "required"), ("node_id", "required"), ("reason", "required")),
        ),
        id="reject-empty",
    ),
    pytest.param(
        Case(
            fulfil(
                "RejectOrder",
                fulfilment_pb2.RejectOrderRequest,
                order_id="o_x",
                node_id="DC-NJ",
                reason="x" * 1001,
            ),
            INVALID_ARGUMENT,
            fields=(("reason", "1000"),),
        ),
        id="reject-reason-too-long",
    ),
    pytest.param(
        Case(
            fulfil(
                "RejectOrder",
                fulfilment_pb2.RejectOrderRequest,
                order_id="o_nope",
                node_id="DC-NJ",
                reason="no picker",
            ),
            NOT_FOUND,
            resource=("order", "o_nope"),
        ),
        id="reject-unknown-order",
    ),
    pytest.param(
        Case(
            fulfil(
                "RejectOrder",
                fulfilment_pb2.RejectOrderRequest,
                order_id="{order}",
                node_id="ST-PHL",
                reason="no picker",
            ),
            FAILED_PRECONDITION,
            preconditions=(("NODE", "ST-PHL", "not in the order"),),
            setup=lambda env: env.order(),  # one A from Newark
        ),
        id="reject-by-a-node-that-ships-nothing",
    ),
    pytest.param(
        Case(
            fulfil(
                "RejectOrder",
                fulfilment_pb2.RejectOrderRequest,
                order_id="{order}",
                node_id="{node}",
                reason="no picker",
            ),
            FAILED_PRECONDITION,
            preconditions=(("STATE", "{order}", "SHIPPED"),),
            setup=lambda env: env.order("SHIPPED"),
        ),
        id="reject-shipped-order",
    ),
    pytest.param(
        Case(
            fulfil(
                "ReportShortage",
                fulfilment_pb2.ReportShortageRequest,
                order_id="{order}",
                node_id="{node}",
                reason="bin empty",
            ),
            INVALID_ARGUMENT,
            fields=(("lines", "at least one"),),
            setup=lambda env: env.names.update(order="o_any", node="DC-NJ"),
        ),
        id="shortage-no-lines",
    ),
    pytest.param(
        Case(
            fulfil(
                "ReportShortage",
                fulfilment_pb2.ReportShortageRequest,
                order_id="o_any",
                node_id="DC-NJ",
                reason="bin empty",
                lines=[line("", 0), line("A", -1)],
            ),
            INVALID_ARGUMENT,
            fields=(
                ("lines[0].sku", "required"),
                ("lines[0].quantity", "positive"),
                ("lines[1].quantity", "positive"),
            ),
        ),
        id="shortage-bad-lines",
    ),
    pytest.param(
        Case(
            fulfil(
                "ReportShortage",
                fulfilment_pb2.ReportShortageRequest,
                order_id="{order}",
                node_id="{node}",
                reason="bin empty",
                lines=[line("A", 2), line("B", 1)],
            ),
            FAILED_PRECONDITION,
            preconditions=(
                ("SHORTAGE", "{node}/A", "reports 2 missing, but the order takes 1"),
                ("SHORTAGE", "{node}/B", "takes 0"),
            ),
            setup=lambda env: env.order("PLACED", {"A": 1}),
        ),
        id="shortage-more-than-the-node-ships",
    ),
    pytest.param(
        Case(
            fulfil(
                "ReportShortage",
                fulfilment_pb2.ReportShortageRequest,
                order_id="o_nope",
                node_id="DC-NJ",
                reason="bin empty",
                lines=[line("A", 1)],
            ),
            NOT_FOUND,
            resource=("order", "o_nope"),
        ),
        id="shortage-unknown-order",
    ),
    # -- inbound receipts ----------------------------------------------------------------
    pytest.param(
        Case(
            admin("UpsertInboundReceipts", inventory_pb2.UpsertInboundReceiptsRequest()),
            INVALID_ARGUMENT,
            fields=(("receipts", "between 1"),),
        ),
        id="upsert-receipts-empty",
    ),
    pytest.param(
        Case(
            upsert_receipts(
                receipt(
                    "R-1", quantity=-1, expected_date=date_pb2.Date(year=2030, month=2, day=30)
                ),
                receipt("R-1", node_id="", sku=""),
            ),
            INVALID_ARGUMENT,
            fields=(
                ("receipts[0].quantity", "positive"),
                ("receipts[0].quantity", "negative"),
                ("receipts[0].expected_date", "full calendar date"),
                ("receipts[1].receipt_id", "duplicate"),
                ("receipts[1].node_id", "required"),
                ("receipts[1].sku", "required"),
            ),
        ),
        id="upsert-receipts-bad-fields",
    ),
    pytest.param(
        Case(
            upsert_receipts(receipt("R-unknown-sku", sku="NOPE")),
            NOT_FOUND,
            resource=("SKU", "NOPE"),
        ),
        id="upsert-receipt-unknown-sku",
    ),
    pytest.param(
        Case(
            upsert_receipts(receipt("R-moved", node_id="ST-PHL")),
            FAILED_PRECONDITION,
            preconditions=(("RECEIPT", "R-moved", "DC-NJ/A"),),
            setup=lambda env: upsert_receipts(receipt("R-moved"))(env),
        ),
        id="upsert-receipt-to-another-position",
    ),
    pytest.param(
        Case(
            upsert_receipts(receipt("R-upsert-cancelled")),
            FAILED_PRECONDITION,
            preconditions=(("RECEIPT", "R-upsert-cancelled", "cancelled"),),
            setup=lambda env: (
                upsert_receipts(receipt("R-upsert-cancelled"))(env),
                cancel_receipt("R-upsert-cancelled")(env),
            ),
        ),
        id="upsert-cancelled-receipt",
    ),
    pytest.param(
        Case(
            admin(
                "ListInboundReceipts",
                inventory_pb2.ListInboundReceiptsRequest(skus=["A"] * 1001),
            ),
            INVALID_ARGUMENT,
            fields=(("skus", "at most 1000"),),
        ),
        id="list-receipts-1001-skus",
    ),
    pytest.param(
        Case(
            admin("ListInboundReceipts", inventory_pb2.ListInboundReceiptsRequest(), ()),
            UNAUTHENTICATED,
            expect_details=False,
        ),
        id="list-receipts-without-token",
    ),
    pytest.param(
        Case(
            admin("CancelInboundReceipt", inventory_pb2.CancelInboundReceiptRequest()),
            INVALID_ARGUMENT,
            fields=(("receipt_id", "required"), ("reason", "required")),
        ),
        id="cancel-receipt-empty",
    ),
    pytest.param(
        Case(cancel_receipt("R-nope"), NOT_FOUND, resource=("receipt", "R-nope")),
        id="cancel-unknown-receipt",
    ),
    pytest.param(
        Case(
            cancel_receipt("R-cancel-twice"),
            FAILED_PRECONDITION,
            preconditions=(("RECEIPT", "R-cancel-twice", "CANCELLED"),),
            setup=lambda env: (
                upsert_receipts(receipt("R-cancel-twice"))(env),
                cancel_receipt("R-cancel-twice")(env),
            ),
        ),
        id="cancel-receipt-twice",
    ),
    pytest.param(
        Case(
            cancel_receipt("R-cancel-received"),
            FAILED_PRECONDITION,
            preconditions=(("RECEIPT", "R-cancel-received", "RECEIVED"),),
            setup=lambda env: (
                upsert_receipts(receipt("R-cancel-received"))(env),
                receive("R-cancel-received", 5)(env),
            ),
        ),
        id="cancel-received-receipt",
    ),
    pytest.param(
        Case(
            admin("ReceiveInboundReceipt", inventory_pb2.ReceiveInboundReceiptRequest()),
            INVALID_ARGUMENT,
            fields=(
                ("receipt_id", "required"),
                ("received_quantity", "positive"),
                ("reason", "required"),
            ),
        ),
        id="receive-empty",
    ),
    pytest.param(
        Case(
            receive("R-any", -3),
            INVALID_ARGUMENT,
            fields=(("received_quantity", "positive"), ("received_quantity", "negative")),
        ),
        id="receive-negative-quantity",
    ),
    pytest.param(
        Case(
            receive("R-any", 10**13, reason="   "),
            INVALID_ARGUMENT,
            fields=(("received_quantity", "at most"), ("reason", "required")),
        ),
        id="receive-huge-quantity-blank-reason",
    ),
    pytest.param(
        Case(receive("R-nope", 1), NOT_FOUND, resource=("receipt", "R-nope")),
        id="receive-unknown-receipt",
    ),
    pytest.param(
        Case(
            receive("R-receive-cancelled", 5),
            FAILED_PRECONDITION,
            preconditions=(("RECEIPT", "R-receive-cancelled", "cancelled"),),
            setup=lambda env: (
                upsert_receipts(receipt("R-receive-cancelled"))(env),
                cancel_receipt("R-receive-cancelled")(env),
            ),
        ),
        id="receive-cancelled-receipt",
    ),
    pytest.param(
        Case(
            receive("R-received-other", 3),
            FAILED_PRECONDITION,
            preconditions=(("RECEIPT", "R-received-other", "received (4 unit(s))"),),
            setup=lambda env: (
                upsert_receipts(receipt("R-received-other"))(env),
                receive("R-received-other", 4)(env),
            ),
        ),
        id="receive-again-with-another-quantity",
    ),
    pytest.param(
        Case(
            receive("R-received-twice", 4),
            OK,
            setup=lambda env: (
                upsert_receipts(receipt("R-received-twice"))(env),
                receive("R-received-twice", 4)(env),
            ),
            check=check_received_once,
        ),
        id="receive-twice-is-a-no-op",
    ),
    pytest.param(
        Case(
            admin("ReceiveInboundReceipt", inventory_pb2.ReceiveInboundReceiptRequest(), ()),
            UNAUTHENTICATED,
            expect_details=False,
        ),
        id="receive-without-token",
    ),
    pytest.param(
        Case(
            admin(
                "ResourceOverdueReceipts",
                inventory_pb2.ResourceOverdueReceiptsRequest(),
                (("authorization", "Bearer wrong"),),
            ),
            PERMISSION_DENIED,
            expect_details=False,
        ),
        id="resource-overdue-with-wrong-token",
    ),
    # -- auth --------------------------------------------------------------------------
    pytest.param(
        Case(
            admin("GetAvailability", inventory_pb2.GetAvailabilityRequest(skus=["A"]), ()),
            UNAUTHENTICATED,
            message="missing bearer token",
            expect_details=False,
        ),
        id="inventory-without-token",
    ),
    pytest.param(
        Case(
            admin(
                "GetAvailability",
                inventory_pb2.GetAvailabilityRequest(skus=["A"]),
                (("authorization", "Bearer wrong"),),
            ),
            PERMISSION_DENIED,
            message="not valid",
            expect_details=False,
        ),
        id="inventory-with-wrong-token",
    ),
    pytest.param(
        Case(
            lambda env: list(
                env.client.inventory.WatchLowStockAlerts(
                    inventory_pb2.WatchLowStockAlertsRequest(), timeout=TIMEOUT
                )
            ),
            UNAUTHENTICATED,
            expect_details=False,
        ),
        id="inventory-stream-without-token",
    ),
    pytest.param(
        Case(
            lambda env: env.client.fulfilment.ReleaseOrder(
                fulfilment_pb2.ReleaseOrderRequest(order_id="o_nope"), timeout=TIMEOUT
            ),
            UNAUTHENTICATED,
            expect_details=False,
        ),
        id="fulfilment-without-token",
    ),
]


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """One server for the table: rows only add quotes and orders, never break the network."""
    with running_server(sqlite_url(tmp_path_factory.mktemp("errors")), network()) as client:
        yield client


@pytest.mark.parametrize("case", CASES)
def test_bad_request(case: Case, shared: Client, tmp_path: Path) -> None:
    if not case.own_server:
        verify(case, Env(shared))
        return
    with running_server(sqlite_url(tmp_path), network()) as client:
        verify(case, Env(client))


def test_table_has_no_duplicate_ids() -> None:
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids))


def test_set_stock_sets_exactly_the_requested_on_hand(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), network()) as client:
        response = client.inventory.SetStock(set_stock(on_hand=7), metadata=ADMIN, timeout=TIMEOUT)
        assert response.availability.on_hand == 7
        assert client.store.ledger_mismatches() == []
