"""Errors to gRPC statuses with rich details (AIP-193, DESIGN section 6).

Servicer methods raise :mod:`oms.errors` (or ``sourcing`` validation errors);
:func:`rpc` turns them into the status the caller sees, with a
``google.rpc.BadRequest`` (field violations), ``PreconditionFailure``,
``ResourceInfo`` or ``RetryInfo`` in the details, and an ``ErrorInfo``
whose reason is machine-readable. Anything else is a bug of ours: logged
with its traceback and answered INTERNAL without internals.
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

from oms.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, OmsError, Unavailable
from sourcing.errors import InvalidOrderError, ShortageError

log = logging.getLogger("oms.server")
DOMAIN = "oms.v1"

F = TypeVar("F", bound=Callable[..., Any])


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_for(exc: Exception) -> tuple[int, str, list[Message]]:
    """(google.rpc code, message, detail messages) for an error a caller can act on."""
    if isinstance(exc, InvalidArgument | InvalidOrderError):
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.reason)
                for v in exc.violations
            ]
        )
        info = error_details_pb2.ErrorInfo(reason="INVALID_REQUEST", domain=DOMAIN)
        return code_pb2.INVALID_ARGUMENT, str(exc), [bad, info]
    if isinstance(exc, NotFound):
        resource = error_details_pb2.ResourceInfo(
            resource_type=exc.kind, resource_name=exc.key, description=str(exc)
        )
        info = error_details_pb2.ErrorInfo(reason=f"{exc.kind.upper()}_NOT_FOUND", domain=DOMAIN)
        return code_pb2.NOT_FOUND, str(exc), [resource, info]
    if isinstance(exc, FailedPrecondition):
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=v.type, subject=v.subject, description=v.description
                )
                for v in exc.violations
            ]
        )
        reason = exc.violations[0].type if exc.violations else "FAILED_PRECONDITION"
        info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
        return code_pb2.FAILED_PRECONDITION, str(exc), [failure, info]
    if isinstance(exc, ShortageError):
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="STOCK",
                    subject=s.sku,
                    description=f"requested {s.requested}, available {s.available}",
                )
                for s in exc.shortages
            ]
        )
        info = error_details_pb2.ErrorInfo(reason="STOCK", domain=DOMAIN)
        return code_pb2.FAILED_PRECONDITION, str(exc), [failure, info]
    if isinstance(exc, Aborted):
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=50_000_000))
        info = error_details_pb2.ErrorInfo(reason="CONCURRENT_UPDATE", domain=DOMAIN)
        return code_pb2.ABORTED, str(exc), [retry, info]
    if isinstance(exc, Unavailable):
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1))
        return code_pb2.UNAVAILABLE, str(exc), [retry]
    raise TypeError(f"no status for {type(exc).__name__}")


def _abort(context: grpc.ServicerContext, exc: Exception) -> None:
    code, message, details = status_for(exc)
    status = status_pb2.Status(code=code, message=message, details=[_pack(d) for d in details])
    context.abort_with_status(rpc_status.to_status(status))


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
            _abort(context, exc)
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
            _abort(context, exc)
        except Exception:
            if context.code() is not None:
                raise
            _internal(context, method.__name__)

    return wrapper  # type: ignore[return-value]
