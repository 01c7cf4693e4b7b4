"""The input rules and the error bounds, without a server (the gRPC side is
``test_service_inputs.py``): string rules per field, statuses bounded whatever
raised them, page tokens that refuse any edit."""

from __future__ import annotations

import base64

import pytest
import sqlalchemy as sa
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2

from oms import paging, schema
from oms.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Precondition,
    echo,
)
from oms.status import to_status
from oms.v1 import checkout_pb2, common_pb2, fulfilment_pb2, inventory_pb2
from oms.validation import (
    FREE_TEXT,
    ID,
    MAX_VIOLATIONS,
    STRING_RULES,
    MalformedRequest,
    Violations,
    check_request,
    parse_request,
    string_violation,
)
from sourcing.errors import FieldViolation, Shortage, ShortageError

MB = 1 << 20
SERVICES = (
    checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"],
    fulfilment_pb2.DESCRIPTOR.services_by_name["FulfilmentService"],
    inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"],
)


def string_fields(descriptor: Descriptor, seen: set[str] | None = None) -> set[str]:
    """Names of the string fields reachable from a message type."""
    seen = set() if seen is None else seen
    if descriptor.full_name in seen:
        return set()
    seen.add(descriptor.full_name)
    names = set()
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            names.add(field.name)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            names |= string_fields(field.message_type, seen)
    return names


def test_every_request_string_field_of_the_contract_has_a_rule() -> None:
    """A new string field must be given a rule on purpose, not fall to the default."""
    fields = set()
    for service in SERVICES:
        for method in service.methods:
            fields |= string_fields(method.input_type)
    assert fields - STRING_RULES.keys() == set()


def test_no_rule_lets_through_more_than_the_store_keeps() -> None:
    checked = 0
    for table in schema.metadata.tables.values():
        for column in table.columns:
            rule = STRING_RULES.get(column.name)
            if rule is None or not isinstance(column.type, sa.String):
                continue
            if column.type.length is not None:
                assert rule.max_chars <= column.type.length, (table.name, column.name)
                checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    "value, rule, word",
    [
        ("SKU-0001", ID, None),
        ("Größe 42 📦", ID, None),
        ("x" * 128, ID, None),
        ("x" * 129, ID, "longer than 128 characters (it has 129)"),
        ("a\0b", ID, "control character (U+0000 at position 1)"),
        ("a\tb", ID, "control character (U+0009"),
        ("a\u00a0b", ID, "invisible character (U+00A0"),  # no-break space
        ("a\u202eb", ID, "invisible character (U+202E"),  # right-to-left override
        ("line one\nline two\ttab\r\n", FREE_TEXT, None),
        ("family 👨\u200d👩\u200d👧", FREE_TEXT, None),
        ("bell\x07", FREE_TEXT, "control character (U+0007"),
        ("\x1b[2J", FREE_TEXT, "control character (U+001B"),
        ("del\x7f", FREE_TEXT, "control character (U+007F"),
        ("c1\x85", FREE_TEXT, "control character (U+0085"),
        ("r" * 1001, FREE_TEXT, "longer than 1000 characters"),
    ],
)
def test_string_rules(value: str, rule: object, word: str | None) -> None:
    problem = string_violation(value, rule)  # type: ignore[arg-type]
    if word is None:
        assert problem is None
    else:
        assert problem is not None and word in problem, problem


def test_echo_shows_the_start_and_the_length() -> None:
    assert echo("SKU-1") == "'SKU-1'"
    assert echo("a\0") == "'a\\x00'"
    long = echo("x" * MB)
    assert long == f"'{'x' * 64}'…(1048576 chars)"


def test_violations_stop_at_the_cap() -> None:
    v = Violations()
    with pytest.raises(InvalidArgument) as caught:
        for i in range(10_000):
            v.add(f"lines[{i}].sku", "unknown")
    assert len(caught.value.violations) == MAX_VIOLATIONS
    assert caught.value.truncated
    assert "stopped after 20 problems" in str(caught.value)


def test_check_request_walks_nested_and_repeated_fields() -> None:
    request = inventory_pb2.UpsertInboundReceiptsRequest(
        receipts=[
            inventory_pb2.InboundReceipt(receipt_id="R-1", sku="A"),
            inventory_pb2.InboundReceipt(receipt_id="R\0", node_id="N" * 129, sku="B"),
        ],
        reason="ok\n",
    )
    with pytest.raises(InvalidArgument) as caught:
        check_request(request)
    assert [v.field for v in caught.value.violations] == [
        "receipts[1].receipt_id",
        "receipts[1].node_id",
    ]


def test_check_request_counts_a_list_before_walking_it() -> None:
    request = inventory_pb2.GetAvailabilityRequest(skus=["\0"] * 10_001)
    with pytest.raises(InvalidArgument) as caught:
        check_request(request)
    ((violation),) = caught.value.violations
    assert violation == FieldViolation("skus", "10001 items exceed the limit of 10000")


def test_parse_request_names_the_field_that_is_not_utf8() -> None:
    good = checkout_pb2.QuoteDeliveryOptionsRequest(
        lines=[common_pb2.CartLine(sku="A"), common_pb2.CartLine(sku="B")],
        pickup_store_ids=["ST-1"],
    ).SerializeToString()
    bad = good.replace(b"\x0a\x01B", b"\x0a\x01\xc3").replace(b"ST-1", b"ST\xff1")
    result = parse_request(checkout_pb2.QuoteDeliveryOptionsRequest, bad)
    assert isinstance(result, MalformedRequest)
    assert [v.field for v in result.violations] == ["lines[1].sku", "pickup_store_ids[0]"]
    assert isinstance(parse_request(checkout_pb2.QuoteDeliveryOptionsRequest, good), object)


def test_parse_request_of_garbage_says_what_was_expected() -> None:
    result = parse_request(checkout_pb2.GetOrderRequest, b"\xff\xff\xff")
    assert isinstance(result, MalformedRequest) and result.violations == ()
    error = result.error()
    assert error.reason == "MALFORMED_REQUEST"
    assert "not a valid oms.v1.GetOrderRequest" in str(error)


# ------------------------------------------------------------------ bounded statuses


def wire_bytes(status: object) -> int:
    """Trailer bytes as sent, computed independently of oms.status."""
    message = status.message  # type: ignore[attr-defined]
    encoded = sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in message.encode())
    details = len(base64.b64encode(status.SerializeToString()))  # type: ignore[attr-defined]
    return encoded + details + len("grpc-status: 9grpc-message: grpc-status-details-bin: ")


KB64 = "k" * (64 << 10)
NON_ASCII = "破損📦" * (16 << 10)
HUGE_ERRORS = {
    "many-long-violations": InvalidArgument(
        [FieldViolation(f"lines[{i}].sku{KB64}", KB64) for i in range(200)]
    ),
    "one-1mb-violation": InvalidArgument([FieldViolation("x" * MB, "y" * MB)]),
    "many-long-preconditions": FailedPrecondition(
        "z" * MB, [Precondition("STOCK", KB64, KB64) for _ in range(10_000)]
    ),
    "many-non-ascii": FailedPrecondition(
        NON_ASCII, [Precondition("STOCK", NON_ASCII, NON_ASCII) for _ in range(100)]
    ),
    "not-found-long-key": NotFound("order", "o" * MB),
    "aborted-long-message": Aborted("a" * MB),
    "shortage-many-skus": ShortageError([Shortage("S" * 1000, 5, 1) for _ in range(5000)]),
}
#: Errors whose violations must be cut (the others have one or none).
CUT = {"many-long-violations", "many-long-preconditions", "many-non-ascii", "shortage-many-skus"}


@pytest.mark.parametrize("case", sorted(HUGE_ERRORS))
def test_every_status_fits_8kb_as_sent(case: str) -> None:
    status = to_status(HUGE_ERRORS[case])
    assert wire_bytes(status) < 8192, wire_bytes(status)
    assert status.message  # a message survives, cut with a marker
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            if case in CUT:
                assert info.metadata["truncated"] == "true"
                assert int(info.metadata["violations_reported"]) >= 1


def test_a_small_status_is_left_whole() -> None:
    error = InvalidArgument([FieldViolation("lines[0].sku", "unknown SKU 'X'")])
    status = to_status(error)
    assert status.message == "lines[0].sku: unknown SKU 'X'"
    bad = error_details_pb2.BadRequest()
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(bad)
    status.details[1].Unpack(info)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("lines[0].sku", "unknown SKU 'X'")
    ]
    assert dict(info.metadata) == {}


# ---------------------------------------------------------------------- page tokens


def test_page_token_round_trip() -> None:
    token = paging.encode_token((1733430000.123456, "o_abc"), "state=PLACED")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert paging.decode_token(token, "state=PLACED") == (1733430000.123456, "o_abc")


def test_every_single_bit_flip_of_a_token_is_refused() -> None:
    token = paging.encode_token((1733430000.5, "o_" + "f" * 32), "state=")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for i in range(len(raw)):
        for bit in range(8):
            edited = bytearray(raw)
            edited[i] ^= 1 << bit
            forged = base64.urlsafe_b64encode(bytes(edited)).decode()
            with pytest.raises(InvalidArgument):
                paging.decode_token(forged, "state=")


def test_a_token_for_another_filter_is_refused() -> None:
    token = paging.encode_token((1.0, "o_a"), "state=PLACED")
    with pytest.raises(InvalidArgument, match="another filter"):
        paging.decode_token(token, "state=")


@pytest.mark.parametrize(
    "requested, served", [(0, 50), (1, 1), (500, 500), (501, 500), (2**31 - 1, 500)]
)
def test_page_size_is_coerced(requested: int, served: int) -> None:
    v = Violations()
    assert paging.page_size(requested, v) == served
    assert v.items == []


def test_fill_stops_before_the_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [common_pb2.OrderEvent(type="x", detail="d" * 100) for _ in range(10)]
    size = rows[0].ByteSize() + 8
    monkeypatch.setattr(paging, "MAX_PAGE_BYTES", size * 3)
    items, more = paging.fill(rows, 5, lambda row: row)
    assert (len(items), more) == (3, True)
    items, more = paging.fill(rows[:2], 5, lambda row: row)
    assert (len(items), more) == (2, False)
    monkeypatch.setattr(paging, "MAX_PAGE_BYTES", 1)
    items, more = paging.fill(rows, 5, lambda row: row)
    assert (len(items), more) == (1, True)  # never an empty page while items remain
