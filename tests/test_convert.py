"""oms.convert: money rounding and dates as the caller sees them."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import given
from hypothesis import strategies as st

from oms.convert import cents, day_after, days_between


def _cents_by_decimal(millicents: int) -> int:
    return int((Decimal(millicents) / 1000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def test_cents_round_half_to_even_by_hand() -> None:
    assert [cents(m) for m in (0, 499, 500, 501, 1500, 2500, 2501)] == [0, 0, 0, 1, 2, 2, 3]
    assert [cents(m) for m in (-499, -500, -501, -1500, -2500, -2501)] == [0, 0, -1, -2, -2, -3]


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_cents_match_decimal_half_even(millicents: int) -> None:
    assert cents(millicents) == _cents_by_decimal(millicents)


def test_days_round_trip() -> None:
    assert day_after("2026-02-27", 3) == "2026-03-02"
    assert days_between("2026-02-27", day_after("2026-02-27", 400)) == 400
