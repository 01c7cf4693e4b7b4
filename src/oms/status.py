"""Errors to gRPC statuses with rich details (AIP-193, DESIGN section 6).

Servicer methods raise :mod:`oms.errors` (or ``sourcing`` validation errors);
:func:`rpc` turns them into the status the caller sees, with a
``google.rpc.BadRequest`` (field violations), ``PreconditionFailure``,
``ResourceInfo`` or ``RetryInfo`` in the details, and an ``ErrorInfo``
whose reason is machine-readable. Anything else is a bug of ours: logged
with its traceback and answered INTERNAL without internals.

Every status is bounded here, whatever raised it (:func:`to_status`): the
message and every string of the details are cut with a marker, and trailing
violations are dropped (ErrorInfo ``truncated: true`` and
``violations_reported: N`` say so) until the trailer as sent, the
percent-encoded ``grpc-message`` plus the base64 ``grpc-status-details-bin``,
fits :data:`MAX_TRAILER_BYTES`. Python's grpcio refuses trailers over 16 KB
and @grpc/grpc-js used to hang its channel on them; we promise under 8 KB.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from oms.errors import (
    Aborted,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OmsError,
    PermissionDenied,
    QuotaExceeded,
    Unavailable,
)
from sourcing.errors import InvalidOrderError, ShortageError

log = logging.getLogger("oms.server")
DOMAIN = "oms.v1"

#: The percent-encoded message plus the base64 details; grpc-status and the header
#: names take the rest of the 8 KB we promise.
MAX_TRAILER_BYTES = 7 * 1024
#: The message as sent (percent-encoded): a summary; the details carry every violation.
MAX_MESSAGE_WIRE_BYTES = 1024
#: Characters of one string in the details (a field path, a subject, a description).
MAX_DETAIL_CHARS = 512
#: Violations put in the details before the size cut (which usually leaves fewer).
MAX_DETAIL_ITEMS = 50

F = TypeVar("F", bound=Callable[..., Any])


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_for(exc: Exception) -> tuple[int, str, list[Message]]:
    """(google.rpc code, message, detail messages) for an error a caller can act on.

    At most :data:`MAX_DETAIL_ITEMS` violations, each string cut to
    :data:`MAX_DETAIL_CHARS`, whatever the error holds (:func:`to_status` bounds
    the rest); an ErrorInfo ``truncated`` says when some were left out.
    """
    c = _clip
    if isinstance(exc, InvalidArgument | InvalidOrderError):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=c(v.field), description=c(v.reason)
                )
                for v in exc.violations[:MAX_DETAIL_ITEMS]
            ]
        )
        info = error_details_pb2.ErrorInfo(
            reason=getattr(exc, "reason", None) or "INVALID_REQUEST", domain=DOMAIN
        )
        truncated = getattr(exc, "truncated", False) or len(exc.violations) > MAX_DETAIL_ITEMS
        return _with_cut(code_pb2.INVALID_ARGUMENT, exc, [bad, info], truncated)
    if isinstance(exc, NotFound):
        resource = error_details_pb2.ResourceInfo(
            resource_type=c(exc.kind), resource_name=c(exc.key), description=c(str(exc))
        )
        info = error_details_pb2.ErrorInfo(reason=c(f"{exc.kind.upper()}_NOT_FOUND"), domain=DOMAIN)
        return _with_cut(code_pb2.NOT_FOUND, exc, [resource, info], False)
    if isinstance(exc, FailedPrecondition):
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=c(v.type), subject=c(v.subject), description=c(v.description)
                )
                for v in exc.violations[:MAX_DETAIL_ITEMS]
            ]
        )
        reason = c(exc.violations[0].type) if exc.violations else "FAILED_PRECONDITION"
        info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
        truncated = len(exc.violations) > MAX_DETAIL_ITEMS
        return _with_cut(code_pb2.FAILED_PRECONDITION, exc, [failure, info], truncated)
    if isinstance(exc, ShortageError):
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="STOCK",
                    subject=c(s.sku),
                    description=f"requested {s.requested}, available {s.available}",
                )
                for s in exc.shortages[:MAX_DETAIL_ITEMS]
            ]
        )
        info = error_details_pb2.ErrorInfo(reason="STOCK", domain=DOMAIN)
        truncated = len(exc.shortages) > MAX_DETAIL_ITEMS
        return _with_cut(code_pb2.FAILED_PRECONDITION, exc, [failure, info], truncated)
    if isinstance(exc, Aborted):
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=50_000_000))
        info = error_details_pb2.ErrorInfo(reason="CONCURRENT_UPDATE", domain=DOMAIN)
        return _with_cut(code_pb2.ABORTED, exc, [retry, info], False)
    if isinstance(exc, Unavailable):
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1))
        return _with_cut(code_pb2.UNAVAILABLE, exc, [retry], False)
    if isinstance(exc, QuotaExceeded):
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=exc.subject, description=exc.description
                )
            ]
        )
        info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN)
        return _with_cut(code_pb2.RESOURCE_EXHAUSTED, exc, [quota, info], False)
    if isinstance(exc, Cancelled):
        return _with_cut(code_pb2.CANCELLED, exc, [], False)
    if isinstance(exc, PermissionDenied):
        info = error_details_pb2.ErrorInfo(reason="NODE_SCOPE", domain=DOMAIN)
        return _with_cut(code_pb2.PERMISSION_DENIED, exc, [info], False)
    if isinstance(exc, DeadlineExceeded):
        return _with_cut(code_pb2.DEADLINE_EXCEEDED, exc, [], False)
    raise TypeError(f"no status for {type(exc).__name__}")


def _with_cut(
    code: int, exc: Exception, details: list[Message], truncated: bool
) -> tuple[int, str, list[Message]]:
    if truncated:
        for detail in details:
            if isinstance(detail, error_details_pb2.ErrorInfo):
                detail.metadata["truncated"] = "true"
    # A first cut by characters keeps the encoded-size cut of to_status cheap.
    return code, _clip(str(exc), 4 * MAX_MESSAGE_WIRE_BYTES), details


def to_status(exc: Exception) -> status_pb2.Status:
    """The bounded ``google.rpc.Status`` for an error a caller can act on (module docstring)."""
    code, message, details = status_for(exc)
    message = _clip_wire(message, MAX_MESSAGE_WIRE_BYTES)
    for limit in (MAX_DETAIL_CHARS, 128, 32):
        for detail in details:
            _clip_strings(detail, limit)
        while True:
            _count_reported(details)
            status = status_pb2.Status(
                code=code, message=message, details=[_pack(d) for d in details]
            )
            if trailer_bytes(status) <= MAX_TRAILER_BYTES:
                return status
            if not _drop_last_violation(details):
                break
        message = _clip_wire(message, 256)
    # A last resort no error of ours reaches (test_validation tries the largest).
    return status_pb2.Status(code=code, message=message)


def trailer_bytes(status: status_pb2.Status) -> int:
    """Bytes of ``grpc-message`` (percent-encoded) and ``grpc-status-details-bin`` (base64)."""
    return _wire_length(status.message) + 4 * -(-int(status.ByteSize()) // 3)


def _wire_length(text: str) -> int:
    """gRPC percent-encodes every byte of grpc-message but printable ASCII other than '%'."""
    return sum(1 if 0x20 <= b <= 0x7E and b != 0x25 else 3 for b in text.encode())


def _clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


def _clip_wire(text: str, limit: int) -> str:
    """``text`` cut (with a marker) so that it is at most ``limit`` bytes percent-encoded."""
    if _wire_length(text) <= limit:
        return text
    marker = f"…({len(text)} chars; see the details)"
    budget, kept = limit - _wire_length(marker), 0
    for char in text:
        budget -= _wire_length(char)
        if budget < 0:
            break
        kept += 1
    return text[:kept] + marker


def _clip_strings(detail: Message, limit: int) -> None:
    """Cut every string of a detail message (and of its repeated violations) to ``limit``."""
    items: list[Message] = [detail]
    for name in ("field_violations", "violations"):
        if name in detail.DESCRIPTOR.fields_by_name:
            items.extend(getattr(detail, name))
    for item in items:
        for field in item.DESCRIPTOR.fields:
            if field.type == field.TYPE_STRING and not field.is_repeated:
                value = getattr(item, field.name)
                if len(value) > limit:
                    setattr(item, field.name, _clip(value, limit))


def _violations(details: list[Message]) -> Any:
    for detail in details:
        if isinstance(detail, error_details_pb2.BadRequest):
            return detail.field_violations
        if isinstance(detail, error_details_pb2.PreconditionFailure):
            return detail.violations
    return None


def _drop_last_violation(details: list[Message]) -> bool:
    violations = _violations(details)
    if not violations:
        return False
    del violations[-1]
    for detail in details:
        if isinstance(detail, error_details_pb2.ErrorInfo):
            detail.metadata["truncated"] = "true"
    return True


def _count_reported(details: list[Message]) -> None:
    """A cut list says how many violations it still reports (ErrorInfo metadata)."""
    violations = _violations(details)
    for detail in details:
        if isinstance(detail, error_details_pb2.ErrorInfo) and "truncated" in detail.metadata:
            detail.metadata["violations_reported"] = str(len(violations or ()))


def abort(context: grpc.ServicerContext, exc: Exception) -> None:
    """End the call with ``exc``'s bounded status (raises, as ``context.abort`` does)."""
    context.abort_with_status(rpc_status.to_status(to_status(exc)))


_CALLER_ERRORS = (OmsError, InvalidOrderError, ShortageError)


def _internal(context: grpc.ServicerContext, method: str) -> None:
    log.exception("unexpected error in %s", method)
    context.abort(grpc.StatusCode.INTERNAL, "internal error; it has been logged")


def rpc(method: F) -> F:
    """Map errors of a unary servicer method to statuses (see the module docstring)."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except _CALLER_ERRORS as exc:
            abort(context, exc)
        except Exception:
            if context.code() is not None:  # context.abort() already chose the status
                raise
            _internal(context, method.__name__)
        return None  # unreachable: abort raises

    return wrapper  # type: ignore[return-value]


def rpc_stream(method: F) -> F:
    """As :func:`rpc`, for server-streaming methods (generators)."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except _CALLER_ERRORS as exc:
            abort(context, exc)
        except Exception:
            if context.code() is not None:
                raise
            _internal(context, method.__name__)

    return wrapper  # type: ignore[return-value]
