"""What a request may hold, checked in one place before any servicer sees it.

Two layers:

* :func:`check_request` runs on every request of every method (the server's
  :class:`~oms.interceptors.InputInterceptor` calls it): each string field,
  at any depth, must be within its length (:data:`STRING_RULES`, by field name:
  ids as long as the store keeps them, free text 1,000 characters) and free
  of control characters (PostgreSQL refuses NUL; escapes and bells have no
  place in ids or in what an operator reads), and each list at most
  :data:`MAX_REPEATED` items. Bytes that are not the method's protobuf
  message (:func:`parse_request`) are refused the same way, naming the string
  field when the fault is invalid UTF-8.
* :class:`Violations` collects the semantic checks of one servicer method
  (required fields, ranges, known ids) and raises them once.

Errors stay small whatever the caller sent: a value is echoed through
:func:`oms.errors.echo` (its first 64 characters and its length), and at
most :data:`MAX_VIOLATIONS` violations are collected before validation stops;
:mod:`oms.status` bounds the final status again as a last line of defence.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.type import date_pb2, money_pb2

from oms.errors import InvalidArgument, echo
from oms.v1 import common_pb2
from sourcing.errors import FieldViolation
from sourcing.model import MAX_MONEY_UNITS, MILLICENTS_PER_UNIT, MONEY_DECIMALS

#: The longest request the server reads (``grpc.max_receive_message_length``). The
#: largest legitimate requests are admin batches of MAX_REPEATED items: 10,000
#: receipts take 0.54 MB with realistic ids and 3.5 MB with every id at its longest
#: (nodes: 1.9 MB). Longer is RESOURCE_EXHAUSTED, before anything is parsed.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: Items in any one list of a request (servicers set tighter limits: 200 cart lines).
MAX_REPEATED = 10_000
#: Violations collected before validation stops (the error says it stopped).
MAX_VIOLATIONS = 20
#: Bounds that keep every stored number far inside int64 / float ranges.
MAX_UNITS = 10**12
#: google.type.Money's nanos per millicent: money takes at most five decimals.
NANOS_PER_MILLICENT = 10_000
MAX_NANOS = 999_999_999


@dataclass(frozen=True)
class StringRule:
    """The longest value of a string field and whether it is free text."""

    max_chars: int
    #: Free text may hold tabs and line breaks; ids and codes only printable characters.
    free_text: bool = False
    #: What the bound means, said after it ("an ISO date").
    hint: str = ""


#: Ids the store keeps in 64-character columns (orders, quotes, receipts, zones, services).
SHORT_ID = StringRule(64)
#: Ids the store keeps in 128-character columns (nodes, SKUs, idempotency keys).
ID = StringRule(128)
FREE_TEXT = StringRule(1000, free_text=True)

#: Every string field of the contract's requests, by field name. A field not named
#: here gets :data:`ID`; ``test_validation`` checks every field of ``oms.v1`` is named.
STRING_RULES: dict[str, StringRule] = {
    "order_id": SHORT_ID,
    "quote_id": SHORT_ID,
    "option_id": SHORT_ID,
    "receipt_id": SHORT_ID,
    "zone": SHORT_ID,
    "service": SHORT_ID,
    "node_id": ID,
    "shipment_id": SHORT_ID,
    "shipment_ids": SHORT_ID,
    "carrier": StringRule(64),
    "tracking_number": StringRule(128),
    "drop_off_store_id": ID,
    "node_ids": ID,
    "sku": ID,
    "skus": ID,
    "pickup_store_ids": ID,
    "idempotency_key": ID,
    "reason": FREE_TEXT,
    "page_token": StringRule(512),
    "currency_code": StringRule(3, hint="an ISO 4217 code"),
}

# Control characters (Unicode category Cc) except tab, line feed and carriage return.
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def string_violation(value: str, rule: StringRule) -> str | None:
    """Why ``value`` breaks ``rule``, or None."""
    if len(value) > rule.max_chars:
        hint = f"; {rule.hint}" if rule.hint else ""
        return f"is longer than {rule.max_chars} characters (it has {len(value)}){hint}"
    if rule.free_text:
        bad = _TEXT_CONTROL.search(value)
        if bad is None:
            return None
        at = bad.start()
    else:
        if value.isprintable():
            return None
        at = next(i for i, c in enumerate(value) if not c.isprintable())
    char = value[at]
    kind = "a control character" if unicodedata.category(char) == "Cc" else "an invisible character"
    allowed = "" if rule.free_text else "; ids hold printable characters only"
    return f"contains {kind} (U+{ord(char):04X} at position {at}){allowed}"


class Violations:
    """Field violations of one request; :meth:`raise_if_any` raises INVALID_ARGUMENT.

    Collecting stops at :data:`MAX_VIOLATIONS`: the next :meth:`add` raises at
    once (marked truncated), so a request with 10,000 bad items costs no more
    than one with 21.
    """

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, reason: str) -> None:
        if len(self.items) >= MAX_VIOLATIONS:
            raise InvalidArgument(self.items, truncated=True)
        self.items.append(FieldViolation(field, reason))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)

    def require_id(self, field: str, value: str) -> None:
        """A required id (its length and characters are :func:`check_request`'s)."""
        if not value:
            self.add(field, "is required")

    def location(self, field: str, present: bool, loc: common_pb2.Location) -> None:
        if not present:
            self.add(field, "is required")
            return
        if not (math.isfinite(loc.latitude) and -90 <= loc.latitude <= 90):
            self.add(f"{field}.latitude", f"must be in [-90, 90], got {loc.latitude!r}")
        if not (math.isfinite(loc.longitude) and -180 <= loc.longitude <= 180):
            self.add(f"{field}.longitude", f"must be in [-180, 180], got {loc.longitude!r}")

    def money(
        self, field: str, value: money_pb2.Money, currency: str, *, negative_ok: bool = False
    ) -> int:
        """The amount in millicents (0 when it is refused, with the reasons recorded).

        google.type.Money's own rules (nanos within +-999,999,999, of the sign of
        units), at most five decimals (the engine's millicents), the network's
        currency (an empty code means it), not negative, at most a million units.
        """
        ok = True
        if value.currency_code and value.currency_code != currency:
            self.add(
                f"{field}.currency_code",
                f"must be {currency} (the network's currency), got {echo(value.currency_code)}",
            )
        if not -MAX_NANOS <= value.nanos <= MAX_NANOS:
            self.add(f"{field}.nanos", f"must be within +-999,999,999, got {value.nanos}")
            ok = False
        elif (value.units > 0 and value.nanos < 0) or (value.units < 0 and value.nanos > 0):
            self.add(f"{field}.nanos", "must have the sign of units (google.type.Money)")
            ok = False
        elif value.nanos % NANOS_PER_MILLICENT:
            self.add(
                f"{field}.nanos",
                f"at most {MONEY_DECIMALS} decimals: a multiple of {NANOS_PER_MILLICENT} "
                f"nanos, got {value.nanos}",
            )
            ok = False
        if abs(value.units) >= MAX_MONEY_UNITS:
            self.add(field, f"must be below {MAX_MONEY_UNITS} in magnitude, got {value.units}")
            ok = False
        if not ok:
            return 0
        amount = value.units * MILLICENTS_PER_UNIT + value.nanos // NANOS_PER_MILLICENT
        if amount < 0 and not negative_ok:
            self.add(field, "must not be negative")
            return 0
        return int(amount)

    def date(self, field: str, present: bool, value: date_pb2.Date) -> str:
        """A full, valid calendar date as ISO text ("" when refused, with the reason)."""
        if not present:
            self.add(field, "is required")
            return ""
        try:
            return date(value.year, value.month, value.day).isoformat()
        except ValueError:
            self.add(
                field,
                f"must be a full calendar date, got year {value.year}, month {value.month}, "
                f"day {value.day}",
            )
            return ""

    def units(self, field: str, value: int, *, allow_negative: bool = False) -> None:
        if value < 0 and not allow_negative:
            self.add(field, f"must not be negative, got {value}")
        if abs(value) > MAX_UNITS:
            self.add(field, f"must be at most {MAX_UNITS} in magnitude")


# --------------------------------------------------------------- every string, any depth


@dataclass(frozen=True)
class _Field:
    name: str
    repeated: bool
    #: The rule of a string field; None for a message field.
    rule: StringRule | None
    #: A map field: its entries' key and value are checked as ``name[key]``.
    is_map: bool = False
    #: The type of a message field (None for strings and other scalars).
    message_type: Descriptor | None = None


@functools.cache
def _fields(descriptor: Descriptor) -> tuple[_Field, ...]:
    """The fields of a message type that hold strings or lists, at any depth (once per type)."""
    found = []
    for f in descriptor.fields:
        repeated = f.is_repeated
        if f.type == FieldDescriptor.TYPE_STRING:
            found.append(_Field(f.name, repeated, STRING_RULES.get(f.name, ID)))
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            inner: Descriptor = f.message_type  # type: ignore[assignment]
            if repeated or _holds_strings(inner, frozenset()):
                found.append(_Field(f.name, repeated, None, _is_map(f), inner))
        elif repeated:
            found.append(_Field(f.name, repeated, None))  # counted, nothing to walk
    return tuple(found)


def _holds_strings(descriptor: Descriptor, seen: frozenset[str]) -> bool:
    if descriptor.full_name in seen:
        return True  # a recursive type: walk it (depth is bounded by the parser)
    seen = seen | {descriptor.full_name}
    for f in descriptor.fields:
        if f.type == FieldDescriptor.TYPE_STRING or f.is_repeated:
            return True
        if f.type == FieldDescriptor.TYPE_MESSAGE and _holds_strings(f.message_type, seen):  # type: ignore[arg-type]
            return True
    return False


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def check_request(message: Message) -> None:
    """Raise INVALID_ARGUMENT naming each string field that breaks its rule, and each
    list longer than :data:`MAX_REPEATED`; at most :data:`MAX_VIOLATIONS` of them.

    Costs a few microseconds for a cart: a first pass only asks whether all is
    well; the second, which names the fields, runs only when something is not.
    """
    if _clean(message):
        return
    v = Violations()
    _walk(message, "", v)
    v.raise_if_any()


def _fits(text: str, rule: StringRule) -> bool:
    if len(text) > rule.max_chars:
        return False
    if rule.free_text:
        return _TEXT_CONTROL.search(text) is None
    return text.isprintable()


def _clean(message: Message, fields: tuple[_Field, ...] | None = None) -> bool:
    for f in _fields(message.DESCRIPTOR) if fields is None else fields:
        value = getattr(message, f.name)
        if f.repeated and len(value) > MAX_REPEATED:
            return False
        rule = f.rule
        if rule is not None:
            if f.repeated:
                if not all(_fits(text, rule) for text in value):
                    return False
            elif value and not _fits(value, rule):
                return False
        elif f.is_map:
            if value:
                return False  # no request has a map today: let the naming pass look
        elif f.message_type is None:
            continue  # a list of numbers: counted above
        elif f.repeated:
            if value:
                inner = _fields(f.message_type)  # once per list, not per item
                for item in value:
                    if not _clean(item, inner):
                        return False
        elif message.HasField(f.name) and not _clean(value):
            return False
    return True


def _walk(message: Message, prefix: str, v: Violations) -> None:
    for f in _fields(message.DESCRIPTOR):
        value = getattr(message, f.name)
        if f.repeated and len(value) > MAX_REPEATED:
            v.add(prefix + f.name, f"{len(value)} items exceed the limit of {MAX_REPEATED}")
            continue
        if f.rule is not None:
            values = value if f.repeated else (value,)
            for i, text in enumerate(values):
                problem = string_violation(text, f.rule)
                if problem is not None:
                    path = f"{prefix}{f.name}[{i}]" if f.repeated else prefix + f.name
                    v.add(path, problem)
        elif f.is_map:
            _walk_map(value, f"{prefix}{f.name}", v)
        elif f.message_type is None:
            continue
        elif f.repeated:
            for i, item in enumerate(value):
                _walk(item, f"{prefix}{f.name}[{i}].", v)
        elif message.HasField(f.name):
            _walk(value, f"{prefix}{f.name}.", v)


def _walk_map(entries: Iterable[object], path: str, v: Violations) -> None:
    for key in entries:
        if isinstance(key, str) and (problem := string_violation(key, ID)) is not None:
            v.add(f"{path}[{echo(key)}]", problem)
        value = entries[key]  # type: ignore[index]
        if isinstance(value, str):
            if (problem := string_violation(value, ID)) is not None:
                v.add(f"{path}[{echo(str(key))}]", problem)
        elif isinstance(value, Message):
            _walk(value, f"{path}[{echo(str(key))}].", v)


# ------------------------------------------------------------------ bytes that do not parse


@dataclass(frozen=True)
class MalformedRequest:
    """What :func:`parse_request` returns for bytes that are not the expected message."""

    type_name: str
    #: String fields whose bytes are not UTF-8, when that is the fault; else empty.
    violations: tuple[FieldViolation, ...]

    def error(self) -> InvalidArgument:
        if self.violations:
            return InvalidArgument(list(self.violations))
        return InvalidArgument(
            [],
            message=f"the request body is not a valid {self.type_name} (protobuf)",
            reason="MALFORMED_REQUEST",
        )


def parse_request(message_type: type[Message], data: bytes) -> Message | MalformedRequest:
    """``data`` parsed as ``message_type``, or why not (never raises)."""
    try:
        return message_type.FromString(data)
    except Exception:  # DecodeError, and anything else a hostile payload provokes
        name = message_type.DESCRIPTOR.full_name
        descriptor: Descriptor = message_type.DESCRIPTOR  # type: ignore[assignment]
        return MalformedRequest(name, tuple(_utf8_violations(descriptor, data)))


def _utf8_violations(descriptor: Descriptor, data: bytes) -> list[FieldViolation]:
    """The string fields of ``data`` that are not UTF-8 (empty when the fault is elsewhere).

    The bytes are parsed again as a twin of the type whose string fields are
    ``bytes`` (which protobuf does not check), and each is decoded by hand.
    """
    try:
        twin = _bytes_twin(descriptor).FromString(data)
    except Exception:
        return []
    found: list[FieldViolation] = []
    _find_bad_utf8(twin, descriptor, "", found)
    return found[:MAX_VIOLATIONS]


def _find_bad_utf8(
    twin: Message, descriptor: Descriptor, prefix: str, found: list[FieldViolation]
) -> None:
    for f in descriptor.fields:
        repeated = f.is_repeated
        value = getattr(twin, f.name)
        if f.type == FieldDescriptor.TYPE_STRING:
            for i, raw in enumerate(value if repeated else (value,)):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    path = f"{prefix}{f.name}[{i}]" if repeated else prefix + f.name
                    found.append(
                        FieldViolation(path, f"is not valid UTF-8 (byte {exc.start} of the value)")
                    )
        elif f.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(f):
            inner: Descriptor = f.message_type  # type: ignore[assignment]
            if repeated:
                for i, item in enumerate(value):
                    _find_bad_utf8(item, inner, f"{prefix}{f.name}[{i}].", found)
            elif twin.HasField(f.name):
                _find_bad_utf8(value, inner, f"{prefix}{f.name}.", found)


@functools.cache
def _bytes_twin(descriptor: Descriptor) -> type[Message]:
    """A message class shaped like ``descriptor`` whose string fields are bytes."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: object) -> None:
        name: str = file.name  # type: ignore[attr-defined]
        if name in added:
            return
        added.add(name)
        for dependency in file.dependencies:  # type: ignore[attr-defined]
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)  # type: ignore[attr-defined]
        for message in proto.message_type:
            _strings_to_bytes(message)
        pool.Add(proto)

    add(descriptor.file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.full_name))


def _strings_to_bytes(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    for nested in message.nested_type:
        _strings_to_bytes(nested)
