"""Turning caller input into a checked :class:`~sourcing.model.Order`.

Every problem is reported as a field violation with a path the caller
recognises (``lines[1].qty``), all at once rather than first-error-only.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import numpy as np

from sourcing.errors import FieldViolation, InvalidOrderError
from sourcing.model import IntArray, Location, Network, Order, OrderLine, ParcelLine

#: Carts larger than this are refused: the checkout path must stay fast.
MAX_ORDER_LINES = 200
#: Units of one line at most: the contract's ``CartLine.quantity`` is an int32, and
#: MAX_ORDER_LINES lines of it add up within the engine's int64 arrays.
MAX_LINE_QTY = 2**31 - 1


#: The largest float, as an exact integer: an int beyond it has no float value.
_FLOAT_MAX = int(sys.float_info.max)


def demand_by_sku(network: Network, order: Order) -> tuple[IntArray, IntArray]:
    """The order's distinct SKUs (network indices, ascending) and the units wanted of each.

    Lines of the same SKU add up, in exact integers.
    """
    wanted: dict[int, int] = {}
    for line in order.lines:
        sku = network.sku_index[line.sku]
        wanted[sku] = wanted.get(sku, 0) + line.qty
    skus = sorted(wanted)
    return np.array(skus, dtype=np.int64), np.array([wanted[k] for k in skus], dtype=np.int64)


def lines_by_sku(network: Network, order: Order) -> dict[int, list[int]]:
    """The order's line indices per network SKU index, in line order."""
    lines: dict[int, list[int]] = {}
    for i, line in enumerate(order.lines):
        lines.setdefault(network.sku_index[line.sku], []).append(i)
    return lines


def spread_over_lines(
    order: Order,
    lines_of_sku: Mapping[int, list[int]],
    remaining: MutableMapping[int, int],
    units: Iterable[tuple[int, int]],
) -> tuple[ParcelLine, ...]:
    """One parcel's ``units`` ((network SKU index, qty) pairs) as lines of ``order``.

    Each SKU's units go to that SKU's lines in line order, each line taking up
    to what it still needs (``remaining`` per line index, updated in place).
    Returns the parcel's lines sorted by line index.
    """
    contents: list[ParcelLine] = []
    for sku, qty in units:
        for i in lines_of_sku[sku]:
            if qty <= 0:
                break
            take = min(qty, remaining.get(i, 0))
            if take:
                contents.append(ParcelLine(i, order.lines[i].sku, take))
                remaining[i] -= take
                qty -= take
    contents.sort(key=lambda pl: pl.line)
    return tuple(contents)


def validate_order(network: Network, order: Order) -> None:
    """Raise :class:`InvalidOrderError` listing every bad field of ``order``."""
    violations: list[FieldViolation] = []
    lat, lon = order.destination.lat, order.destination.lon
    if not (isinstance(lat, int | float) and math.isfinite(lat) and -90 <= lat <= 90):
        violations.append(
            FieldViolation("destination.lat", f"must be a number in [-90, 90], got {lat!r}")
        )
    if not (isinstance(lon, int | float) and math.isfinite(lon) and -180 <= lon <= 180):
        violations.append(
            FieldViolation("destination.lon", f"must be a number in [-180, 180], got {lon!r}")
        )
    if not order.lines:
        violations.append(FieldViolation("lines", "the cart is empty"))
    if len(order.lines) > MAX_ORDER_LINES:
        violations.append(
            FieldViolation(
                "lines", f"{len(order.lines)} lines exceed the limit of {MAX_ORDER_LINES}"
            )
        )
    for i, line in enumerate(order.lines):
        if line.sku not in network.sku_index:
            violations.append(FieldViolation(f"lines[{i}].sku", f"unknown SKU {line.sku!r}"))
        if isinstance(line.qty, bool) or not isinstance(line.qty, int) or line.qty <= 0:
            violations.append(
                FieldViolation(f"lines[{i}].qty", f"must be a positive integer, got {line.qty!r}")
            )
        elif line.qty > MAX_LINE_QTY:  # not echoed: it may run to thousands of digits
            violations.append(
                FieldViolation(f"lines[{i}].qty", f"must be at most {MAX_LINE_QTY} units")
            )
    if violations:
        raise InvalidOrderError(violations)


def order_from_dict(data: Any) -> Order:
    """Parse ``{"destination": {"lat", "lon"}, "lines": [{"sku", "qty"}]}``.

    Only the shape is checked here; :func:`validate_order` checks the values
    against a network.
    """
    violations: list[FieldViolation] = []
    if not isinstance(data, Mapping):
        raise InvalidOrderError([FieldViolation("", "the order must be a JSON object")])
    dest = data.get("destination")
    lat: Any = math.nan
    lon: Any = math.nan
    if not isinstance(dest, Mapping):
        violations.append(FieldViolation("destination", "must be an object with lat and lon"))
    else:
        lat, lon = dest.get("lat"), dest.get("lon")
        for name, value in (("lat", lat), ("lon", lon)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                violations.append(
                    FieldViolation(f"destination.{name}", f"must be a number, got {value!r}")
                )
            elif isinstance(value, int) and not -_FLOAT_MAX <= value <= _FLOAT_MAX:
                # JSON allows any integer; float() of a huge one raises OverflowError.
                violations.append(
                    FieldViolation(
                        f"destination.{name}", "must be a number, got an integer too large"
                    )
                )
    raw_lines = data.get("lines")
    lines: list[OrderLine] = []
    if not isinstance(raw_lines, list):
        violations.append(FieldViolation("lines", "must be a list of {sku, qty}"))
    else:
        for i, raw in enumerate(raw_lines):
            if not isinstance(raw, Mapping):
                violations.append(
                    FieldViolation(f"lines[{i}]", "must be an object with sku and qty")
                )
                continue
            sku, qty = raw.get("sku"), raw.get("qty")
            if not isinstance(sku, str) or not sku:
                violations.append(
                    FieldViolation(f"lines[{i}].sku", f"must be a non-empty string, got {sku!r}")
                )
            if isinstance(qty, bool) or not isinstance(qty, int):
                violations.append(
                    FieldViolation(f"lines[{i}].qty", f"must be an integer, got {qty!r}")
                )
            lines.append(OrderLine(str(sku), qty if isinstance(qty, int) else 0))
    if violations:
        raise InvalidOrderError(violations)
    return Order(Location(float(lat), float(lon)), tuple(lines))
