"""oms.convert: dates as the caller sees them (money: tests/test_contract_types.py)."""

from __future__ import annotations

from oms.convert import day_after, days_between


def test_days_round_trip() -> None:
    assert day_after("2026-02-27", 3) == "2026-03-02"
    assert days_between("2026-02-27", day_after("2026-02-27", 400)) == 400
