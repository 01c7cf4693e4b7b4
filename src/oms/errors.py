"""What the service can tell a caller went wrong, independent of gRPC.

The server maps each class to its status code (DESIGN section 6, AIP-193)
with rich details; nothing a caller sent may surface as UNKNOWN or INTERNAL.
"""

from __future__ import annotations

from dataclasses import dataclass

from sourcing.errors import FieldViolation


class OmsError(Exception):
    """Base of every error the service reports to its caller."""


class InvalidArgument(OmsError):
    """The request is malformed; each violation names the field and the reason."""

    def __init__(self, violations: list[FieldViolation]):
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.reason}" for v in violations))


class NotFound(OmsError):
    def __init__(self, kind: str, key: str):
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {key!r} not found")


@dataclass(frozen=True)
class Precondition:
    """One unmet precondition: its type (STOCK, STATE, QUOTE...), subject and why."""

    type: str
    subject: str
    description: str


class FailedPrecondition(OmsError):
    """The request is valid but the system's state does not allow it (stock, order state)."""

    def __init__(self, message: str, violations: list[Precondition] | None = None):
        self.violations = tuple(violations or ())
        super().__init__(message)


class Aborted(OmsError):
    """A concurrent writer won the race; retrying the whole call may succeed."""


class Unavailable(OmsError):
    """The store cannot be reached; retry later."""
