"""``sourcing.orders``: the cart loader and validator, and the helpers that read an order.

The contract (module docstring): every problem is a field violation with a path the
caller recognises (``lines[1].qty``), all reported at once; ``order_from_dict``
checks only the shape, ``validate_order`` the values against a network. The exact
reasons are checked because they are what a CLI user or a gRPC client reads.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import pytest

from sourcing.errors import FieldViolation, InvalidOrderError
from sourcing.model import Location, Network, Order, OrderLine, ParcelLine
from sourcing.orders import (
    MAX_ORDER_LINES,
    demand_by_sku,
    order_from_dict,
    spread_over_lines,
    validate_order,
)

from support import tiny_network

GOOD_DEST = {"lat": 41.88, "lon": -87.63}
GOOD_LINES = [{"sku": "S0", "qty": 2}]


def violations_of(call: Any, *args: Any) -> tuple[FieldViolation, ...]:
    with pytest.raises(InvalidOrderError) as caught:
        call(*args)
    # The message is the violations on one line, in order (what the CLI prints).
    assert str(caught.value) == "; ".join(f"{v.field}: {v.reason}" for v in caught.value.violations)
    return caught.value.violations


@pytest.fixture
def network() -> Network:
    # SKUs S0 and S1; nothing else of the network matters to these rules.
    return tiny_network(np.random.default_rng(0), n_skus=2)


def order(lat: float = 41.88, lon: float = -87.63, lines: tuple[Any, ...] = ()) -> Order:
    return Order(Location(lat, lon), tuple(OrderLine(sku, qty) for sku, qty in lines))


# --- order_from_dict: the shape -------------------------------------------------------


def test_a_well_formed_cart_parses_to_floats_and_the_lines_in_order() -> None:
    parsed = order_from_dict(
        {
            "destination": {"lat": 41, "lon": -87.5},
            "lines": [{"sku": "S1", "qty": 3}, {"sku": "S0", "qty": 1}, {"sku": "S1", "qty": 2}],
            "note": "ignored",
        }
    )
    assert parsed == Order(
        Location(41.0, -87.5),
        (OrderLine("S1", 3), OrderLine("S0", 1), OrderLine("S1", 2)),
    )
    assert type(parsed.destination.lat) is float and type(parsed.destination.lon) is float


def test_values_are_left_to_validate_order() -> None:
    # Only the shape is checked here: a zero or negative qty, an out-of-range latitude
    # and an empty cart parse, and validate_order refuses them.
    parsed = order_from_dict(
        {"destination": {"lat": 95, "lon": 0}, "lines": [{"sku": "S0", "qty": 0}]}
    )
    assert parsed.lines == (OrderLine("S0", 0),)
    assert parsed.destination == Location(95.0, 0.0)
    assert order_from_dict({"destination": GOOD_DEST, "lines": []}).lines == ()


@pytest.mark.parametrize("data", [[GOOD_DEST], "order", None, 3])
def test_an_order_that_is_not_an_object(data: Any) -> None:
    assert violations_of(order_from_dict, data) == (
        FieldViolation("", "the order must be a JSON object"),
    )


@pytest.mark.parametrize("dest", ["absent", None, [41.88, -87.63], "Chicago"])
def test_a_destination_that_is_not_an_object(dest: Any) -> None:
    data: dict[str, Any] = {"lines": GOOD_LINES}
    if dest != "absent":
        data["destination"] = dest
    assert violations_of(order_from_dict, data) == (
        FieldViolation("destination", "must be an object with lat and lon"),
    )


@pytest.mark.parametrize(
    ("dest", "expected"),
    [
        (
            {"lat": "41.88", "lon": True},
            (
                FieldViolation("destination.lat", "must be a number, got '41.88'"),
                FieldViolation("destination.lon", "must be a number, got True"),
            ),
        ),
        ({"lat": 41.88}, (FieldViolation("destination.lon", "must be a number, got None"),)),
        ({"lon": -87.63}, (FieldViolation("destination.lat", "must be a number, got None"),)),
        (
            {"lat": False, "lon": [1]},
            (
                FieldViolation("destination.lat", "must be a number, got False"),
                FieldViolation("destination.lon", "must be a number, got [1]"),
            ),
        ),
    ],
)
def test_coordinates_that_are_not_numbers(
    dest: dict[str, Any], expected: tuple[FieldViolation, ...]
) -> None:
    assert violations_of(order_from_dict, {"destination": dest, "lines": GOOD_LINES}) == expected


@pytest.mark.parametrize("lines", ["absent", None, {"sku": "S0", "qty": 1}, "S0"])
def test_lines_that_are_not_a_list(lines: Any) -> None:
    data: dict[str, Any] = {"destination": GOOD_DEST}
    if lines != "absent":
        data["lines"] = lines
    assert violations_of(order_from_dict, data) == (
        FieldViolation("lines", "must be a list of {sku, qty}"),
    )


def test_every_bad_line_is_reported_not_only_the_first() -> None:
    lines = [
        {"sku": "S0", "qty": 1},
        "S0",  # not an object: reported, and the lines after it are still checked
        {"sku": "", "qty": "2"},
        {"sku": 7, "qty": 1.0},
        {"qty": False},
        ["S1", 1],
    ]
    assert violations_of(order_from_dict, {"destination": GOOD_DEST, "lines": lines}) == (
        FieldViolation("lines[1]", "must be an object with sku and qty"),
        FieldViolation("lines[2].sku", "must be a non-empty string, got ''"),
        FieldViolation("lines[2].qty", "must be an integer, got '2'"),
        FieldViolation("lines[3].sku", "must be a non-empty string, got 7"),
        FieldViolation("lines[3].qty", "must be an integer, got 1.0"),
        FieldViolation("lines[4].sku", "must be a non-empty string, got None"),
        FieldViolation("lines[4].qty", "must be an integer, got False"),
        FieldViolation("lines[5]", "must be an object with sku and qty"),
    )


def test_destination_and_line_problems_come_together() -> None:
    data = {"destination": {"lat": "x", "lon": 0}, "lines": [{"sku": "S0"}]}
    assert violations_of(order_from_dict, data) == (
        FieldViolation("destination.lat", "must be a number, got 'x'"),
        FieldViolation("lines[0].qty", "must be an integer, got None"),
    )
    assert violations_of(order_from_dict, {}) == (
        FieldViolation("destination", "must be an object with lat and lon"),
        FieldViolation("lines", "must be a list of {sku, qty}"),
    )


def test_an_integer_coordinate_too_large_for_a_float_is_a_violation_not_a_traceback() -> None:
    # JSON allows a 400-digit integer; float() of it raised OverflowError (a traceback from
    # `sourcing quote`). The reason says why without echoing the 400 digits.
    huge = 10**400
    data = {"destination": {"lat": huge, "lon": -huge}, "lines": GOOD_LINES}
    assert violations_of(order_from_dict, data) == (
        FieldViolation("destination.lat", "must be a number, got an integer too large"),
        FieldViolation("destination.lon", "must be a number, got an integer too large"),
    )
    # The largest float's own integer still converts: a shape error it is not (validate_order
    # refuses it as off the globe).
    edge = int(sys.float_info.max)
    parsed = order_from_dict({"destination": {"lat": edge, "lon": -edge}, "lines": GOOD_LINES})
    assert parsed.destination == Location(sys.float_info.max, -sys.float_info.max)


# --- validate_order: the values against a network ---------------------------------------


@pytest.mark.parametrize(("lat", "lon"), [(-90, -180), (90, 180), (0, 0), (-90.0, 180.0)])
def test_coordinates_on_the_bounds_are_accepted(network: Network, lat: float, lon: float) -> None:
    validate_order(network, order(lat, lon, (("S0", 1),)))  # raises nothing


@pytest.mark.parametrize("lat", [-90.5, 90.5, -91, 91, math.nan, math.inf, -math.inf])
def test_a_latitude_outside_the_globe(network: Network, lat: float) -> None:
    assert violations_of(validate_order, network, order(lat, 0.0, (("S0", 1),))) == (
        FieldViolation("destination.lat", f"must be a number in [-90, 90], got {lat!r}"),
    )


@pytest.mark.parametrize("lon", [-180.5, 180.5, -181, 181, 200.0, math.nan, math.inf])
def test_a_longitude_outside_the_globe(network: Network, lon: float) -> None:
    assert violations_of(validate_order, network, order(0.0, lon, (("S0", 1),))) == (
        FieldViolation("destination.lon", f"must be a number in [-180, 180], got {lon!r}"),
    )


def test_an_empty_cart(network: Network) -> None:
    assert violations_of(validate_order, network, order()) == (
        FieldViolation("lines", "the cart is empty"),
    )


def test_the_line_limit_is_inclusive(network: Network) -> None:
    # README: "a cart 200 lines" at most.
    assert MAX_ORDER_LINES == 200
    validate_order(network, order(lines=(("S0", 1),) * MAX_ORDER_LINES))  # raises nothing
    too_many = order(lines=(("S0", 1),) * (MAX_ORDER_LINES + 1))
    assert violations_of(validate_order, network, too_many) == (
        FieldViolation("lines", "201 lines exceed the limit of 200"),
    )


@pytest.mark.parametrize("qty", [0, -1, True, False, 2.0, "3", None])
def test_a_quantity_that_is_not_a_positive_integer(network: Network, qty: Any) -> None:
    # bool is an int in Python, but True is not "one unit": a caller's flag, refused.
    assert violations_of(validate_order, network, order(lines=(("S1", 1), ("S0", qty)))) == (
        FieldViolation("lines[1].qty", f"must be a positive integer, got {qty!r}"),
    )


def test_a_quantity_beyond_the_contracts_int32_is_refused(network: Network) -> None:
    # CartLine.quantity is an int32 in the contract; past int64 demand_by_sku raised
    # OverflowError (a traceback from `sourcing quote`), and 200 lines of at most
    # 2**31 - 1 units add up within int64.
    largest = 2**31 - 1
    validate_order(network, order(lines=(("S0", largest),) * MAX_ORDER_LINES))  # raises nothing
    wanted = demand_by_sku(network, order(lines=(("S0", largest),) * MAX_ORDER_LINES))[1]
    assert wanted.tolist() == [largest * MAX_ORDER_LINES]
    for qty in (largest + 1, 10**20):
        assert violations_of(validate_order, network, order(lines=(("S0", qty),))) == (
            # Not echoed: a caller's integer may run to thousands of digits.
            FieldViolation("lines[0].qty", f"must be at most {largest} units"),
        )


def test_every_bad_value_is_reported_at_once(network: Network) -> None:
    bad = order(95.0, -200.0, (("S0", 1), ("NOPE", 0), ("S1", 2)))
    assert violations_of(validate_order, network, bad) == (
        FieldViolation("destination.lat", "must be a number in [-90, 90], got 95.0"),
        FieldViolation("destination.lon", "must be a number in [-180, 180], got -200.0"),
        FieldViolation("lines[1].sku", "unknown SKU 'NOPE'"),
        FieldViolation("lines[1].qty", "must be a positive integer, got 0"),
    )


# --- demand_by_sku and spread_over_lines ---------------------------------------------------


def test_demand_adds_lines_of_one_sku_and_lists_skus_ascending(network: Network) -> None:
    skus, wanted = demand_by_sku(network, order(lines=(("S1", 2), ("S0", 1), ("S1", 5))))
    assert skus.tolist() == [0, 1] and wanted.tolist() == [1, 7]
    assert network.on_hand[:, skus].shape == (network.on_hand.shape[0], 2)


def test_demand_of_an_empty_order_is_still_integer_arrays(network: Network) -> None:
    # Callers index network arrays with the SKUs: an empty float array (what
    # np.array([]) gives) would raise IndexError there instead of selecting nothing.
    skus, wanted = demand_by_sku(network, order())
    assert skus.dtype == np.int64 and wanted.dtype == np.int64
    assert network.on_hand[:, skus].shape == (network.on_hand.shape[0], 0)
    assert int(wanted.sum()) == 0


def test_units_go_to_a_skus_lines_in_line_order_and_come_back_sorted() -> None:
    cart = order(lines=(("S0", 2), ("S1", 1), ("S0", 3)))
    lines_of_sku = {0: [0, 2], 1: [1]}
    remaining = {0: 2, 1: 1, 2: 3}
    # 4 units of S0 fill line 0 (2) then 2 of line 2's 3; S1's unit goes to line 1.
    parcel = spread_over_lines(cart, lines_of_sku, remaining, [(1, 1), (0, 4)])
    assert parcel == (ParcelLine(0, "S0", 2), ParcelLine(1, "S1", 1), ParcelLine(2, "S0", 2))
    assert remaining == {0: 0, 1: 0, 2: 1}
    # The next parcel takes what line 2 still needs.
    assert spread_over_lines(cart, lines_of_sku, remaining, [(0, 1)]) == (ParcelLine(2, "S0", 1),)
    assert remaining == {0: 0, 1: 0, 2: 0}


def test_a_line_missing_from_remaining_needs_nothing() -> None:
    # The batch job fills `remaining` from the lines the current plan covers: a line it
    # does not cover is absent, and must get no unit.
    cart = order(lines=(("S0", 2), ("S0", 3)))
    remaining = {1: 3}
    parcel = spread_over_lines(cart, {0: [0, 1]}, remaining, [(0, 3)])
    assert parcel == (ParcelLine(1, "S0", 3),)
    assert remaining == {1: 0}
