"""List pagination as AIP-158 has it: page sizes, byte-bounded pages and opaque page tokens.

* ``page_size``: 0 means :data:`DEFAULT_PAGE_SIZE`; above :data:`MAX_PAGE_SIZE`
  is served at the maximum (coerced, not refused); negative is INVALID_ARGUMENT.
* A page may hold fewer items than asked for: it stops before its items pass
  :data:`MAX_PAGE_BYTES`, so that it always fits a default client's 4 MiB
  receive limit (:func:`fill`). Only an empty ``next_page_token`` ends a list.
* A page token is opaque: a version, the position after which the next page
  starts, and the request's filter, followed by a keyed BLAKE2b digest of them,
  in unpadded URL-safe base64. A token that was edited, cut, built by hand or
  issued for another filter is INVALID_ARGUMENT. The digest makes tampering
  evident; it authorises nothing (a token only says where a listing the caller
  may read anyway goes on), so its key is fixed rather than a deployment secret,
  and every replica and worker reads every other's tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from oms.errors import InvalidArgument
from oms.validation import Violations
from sourcing.errors import FieldViolation

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
#: Serialized items per page: half the 4 MiB a default client accepts.
MAX_PAGE_BYTES = 2 * 1024 * 1024

_VERSION = 1
_KEY = b"oms.v1 page token"
_DIGEST_BYTES = 16

M = TypeVar("M", bound=Message)
R = TypeVar("R")


def page_size(requested: int, v: Violations) -> int:
    """The number of items to serve for ``page_size`` (AIP-158); negative is a violation."""
    if requested < 0:
        v.add("page_size", f"must not be negative, got {requested}")
        return DEFAULT_PAGE_SIZE
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def fill(rows: Sequence[R], size: int, to_proto: Callable[[R], M]) -> tuple[list[M], bool]:
    """The first up to ``size`` rows as items, fewer if more would pass :data:`MAX_PAGE_BYTES`
    (never none), and whether a next page follows them.

    ``rows`` should hold one row more than ``size`` when there is a next page.
    """
    items: list[M] = []
    used = 0
    for row in rows[:size]:
        item = to_proto(row)
        used += item.ByteSize() + 8  # the repeated field's tag and length prefix
        if items and used > MAX_PAGE_BYTES:
            return items, True
        items.append(item)
    return items, len(rows) > len(items)


def page(
    rows: Sequence[R],
    size: int,
    to_proto: Callable[[R], M],
    position: Callable[[R], tuple[float, str]],
    filter_: str,
) -> tuple[list[M], str]:
    """:func:`fill`'s items and the token of the page after them ("" on the last page):
    ``position`` names a row's place in the listing's order."""
    items, more = fill(rows, size, to_proto)
    if not more:
        return items, ""
    return items, encode_token(position(rows[len(items) - 1]), filter_)


def encode_token(position: tuple[float, str], filter_: str) -> str:
    """The opaque token for the page after ``position`` of a listing filtered by ``filter_``."""
    payload = json.dumps([_VERSION, position[0], position[1], filter_], separators=(",", ":"))
    raw = payload.encode()
    return base64.urlsafe_b64encode(raw + _digest(raw)).rstrip(b"=").decode()


def decode_token(token: str, filter_: str) -> tuple[float, str]:
    """The position a token of :func:`encode_token` names; INVALID_ARGUMENT if it is not one,
    or if it was issued for another filter."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise _bad("is not a token this service issued") from None
    payload, digest = raw[:-_DIGEST_BYTES], raw[-_DIGEST_BYTES:]
    if len(raw) <= _DIGEST_BYTES or not hmac.compare_digest(digest, _digest(payload)):
        raise _bad("is not a token this service issued (or it was altered)")
    try:
        version, after, key, issued_for = json.loads(payload, parse_constant=_refuse_constant)
    except (ValueError, TypeError):
        raise _bad("is not a token this service issued") from None
    if version != _VERSION or not isinstance(key, str) or not isinstance(issued_for, str):
        raise _bad("is not a token this version issued; list again from the first page")
    if isinstance(after, bool) or not isinstance(after, float | int) or not math.isfinite(after):
        raise _bad("is not a token this service issued")
    if issued_for != filter_:
        raise _bad(
            "was issued for another filter; keep the request's other fields the same "
            "while paging, or list again from the first page"
        )
    return float(after), key


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, key=_KEY, digest_size=_DIGEST_BYTES).digest()


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a token holds")


def _bad(reason: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", reason)])
