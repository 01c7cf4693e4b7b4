"""Errors the engine raises for bad input. Each names what is wrong and why.

The service maps them to gRPC statuses (INVALID_ARGUMENT with field
violations, FAILED_PRECONDITION for stock); the CLI prints their message on
one line.
"""

from __future__ import annotations

from dataclasses import dataclass


class SourcingError(Exception):
    """Base class of every error caused by the caller's input."""


class NetworkDataError(SourcingError):
    """A planner CSV file is missing, malformed, or holds a bad value."""

    def __init__(self, file: str, reason: str, row: int | None = None, column: str | None = None):
        self.file = file
        self.row = row
        self.column = column
        self.reason = reason
        where = file
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, named as a path (``lines[2].qty``)."""

    field: str
    reason: str


class InvalidOrderError(SourcingError):
    """The order itself is malformed: unknown SKU, qty <= 0, bad coordinates..."""

    def __init__(self, violations: list[FieldViolation]):
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.reason}" for v in violations))


@dataclass(frozen=True)
class Shortage:
    sku: str
    requested: int
    available: int


class ShortageError(SourcingError):
    """The network cannot cover the order (and partial fulfilment was not allowed)."""

    def __init__(self, shortages: list[Shortage], reason: str = "not enough available stock"):
        self.shortages = tuple(shortages)
        detail = ", ".join(
            f"{s.sku} (requested {s.requested}, available {s.available})" for s in shortages
        )
        super().__init__(f"{reason}: {detail}" if detail else reason)
