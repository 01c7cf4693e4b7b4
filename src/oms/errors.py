"""What the service can tell a caller went wrong, independent of gRPC.

The server maps each class to its status code (DESIGN section 6, AIP-193)
with rich details; nothing a caller sent may surface as UNKNOWN or INTERNAL.
"""

from __future__ import annotations

from dataclasses import dataclass

from sourcing.errors import FieldViolation

#: Characters of a caller's value repeated in an error message.
ECHO_CHARS = 64


def echo(value: str) -> str:
    """``value`` quoted for an error message: at most :data:`ECHO_CHARS` characters of it.

    A longer value shows its start and its length, ``'abc…'…(1048576 chars)``; the
    quoting escapes control characters, so what a caller sent cannot break a log
    line or a terminal. Every caller-supplied string in an error goes through here.
    """
    if len(value) <= ECHO_CHARS:
        return repr(value)
    return f"{value[:ECHO_CHARS]!r}…({len(value)} chars)"


class OmsError(Exception):
    """Base of every error the service reports to its caller."""


class InvalidArgument(OmsError):
    """The request is malformed; each violation names the field and the reason.

    ``truncated``: validation stopped after these violations (there are more).
    ``reason``: the ErrorInfo reason (``MALFORMED_REQUEST`` for bytes that are not
    the method's message, whose ``message`` then says so without violations).
    """

    def __init__(
        self,
        violations: list[FieldViolation],
        *,
        truncated: bool = False,
        message: str | None = None,
        reason: str = "INVALID_REQUEST",
    ):
        self.violations = tuple(violations)
        self.truncated = truncated
        self.reason = reason
        if message is None:
            message = "; ".join(f"{v.field}: {v.reason}" for v in violations)
            if truncated:
                message += f"; and more (validation stopped after {len(violations)} problems)"
        super().__init__(message)


class NotFound(OmsError):
    def __init__(self, kind: str, key: str):
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {echo(key)} not found")


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


class PermissionDenied(OmsError):
    """The caller's credentials do not reach this resource (a node token, another node's
    shipment)."""


class Aborted(OmsError):
    """A concurrent writer won the race; retrying the whole call may succeed."""


class Unavailable(OmsError):
    """The store cannot be reached; retry later."""


class QuotaExceeded(OmsError):
    """The caller reached a limit (checkout holds per caller, open streams per process);
    ``subject`` names the caller or resource, ``description`` the limit, ``reason``
    the ErrorInfo reason."""

    def __init__(self, message: str, *, subject: str, description: str, reason: str = "HOLD_QUOTA"):
        self.subject = subject
        self.description = description
        self.reason = reason
        super().__init__(message)


class Cancelled(OmsError):
    """The caller went away before the work was written: nothing was."""


class DeadlineExceeded(OmsError):
    """The caller's deadline would pass before the work could be done: none was done."""
