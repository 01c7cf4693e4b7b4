# mypy: allow-subclassing-any, disable-error-code="import-untyped"
# (grpc ships no types: without types-grpcio its classes are Any; both lines are harmless with it.)
"""gRPC server interceptors: a request id, access log and metrics per call; bearer-token
auth; and bounded, well-formed input.

Wire them outermost first, so that refused calls are still logged, counted and
given a request id, and an unauthenticated caller learns nothing about its fields::

    server = grpc.server(
        executor,
        interceptors=[
            ObservabilityInterceptor(),
            AuthInterceptor(settings.admin_token, settings.checkout_token),
            StreamLimitInterceptor(settings.stream_slots),
            InputInterceptor(),
        ],
    )

All wrap the handler the server found rather than answering themselves, so the
call keeps its kind (unary or streaming) and its serialiser; only
:class:`InputInterceptor` replaces the request deserialiser.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import grpc
from google.protobuf.message import Message

from oms import metrics
from oms.deadlines import call_scope
from oms.errors import InvalidArgument, PermissionDenied, QuotaExceeded
from oms.logging import REQUEST_ID
from oms.status import abort
from oms.validation import MalformedRequest, check_request, parse_request

__all__ = [
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "AuthInterceptor",
    "InputInterceptor",
    "ObservabilityInterceptor",
    "StreamLimitInterceptor",
    "bearer_token",
]

REQUEST_ID_HEADER = "x-request-id"

if TYPE_CHECKING:  # grpc's classes are not subscriptable at run time
    _Behaviour: TypeAlias = Callable[[Any, grpc.ServicerContext], Any]
    _Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    _Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], _Handler | None]

_CHECKOUT_SERVICE = "oms.v1.CheckoutService"
#: Checkout methods that read every customer's data: admin (or dashboard) calls.
_ADMIN_ONLY_METHODS = frozenset({"/oms.v1.CheckoutService/ListOrders"})
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
#: FulfilmentService calls a node token may make (for its own node's shipments only: the
#: servicer checks which shipment; :func:`node_scope`).
NODE_METHODS = frozenset(
    f"/oms.v1.FulfilmentService/{name}"
    for name in (
        "ListShipments",
        "WatchShipments",
        "AcceptShipment",
        "RejectShipment",
        "ConfirmShipment",
        "ConfirmDelivery",
    )
)


def _rebuild(
    handler: _Handler,
    unary_response: Callable[[_Behaviour], _Behaviour],
    stream_response: Callable[[_Behaviour], _Behaviour],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> _Handler:
    """A handler of the same kind and (de)serialisers whose behaviour is wrapped
    (and whose request deserialiser is replaced, if one is given).

    Whether the request is a message or an iterator does not matter to a
    wrapper; whether the response is one message or an iterator does.
    """
    des = request_deserializer or handler.request_deserializer
    ser = handler.response_serializer
    behaviour: Any
    if handler.request_streaming and handler.response_streaming:
        behaviour = handler.stream_stream
        return grpc.stream_stream_rpc_method_handler(stream_response(behaviour), des, ser)
    if handler.request_streaming:
        behaviour = handler.stream_unary
        return grpc.stream_unary_rpc_method_handler(unary_response(behaviour), des, ser)
    if handler.response_streaming:
        behaviour = handler.unary_stream
        return grpc.unary_stream_rpc_method_handler(stream_response(behaviour), des, ser)
    behaviour = handler.unary_unary
    return grpc.unary_unary_rpc_method_handler(unary_response(behaviour), des, ser)


def _service(method: str) -> str:
    """``/pkg.Service/Method`` -> ``pkg.Service``."""
    return method.split("/")[1] if method.count("/") >= 2 else method


# --------------------------------------------------------------------------- auth


def _as_token(value: str | None) -> bytes | None:
    """An empty configured token would let ``Bearer `` through: treat it as unset."""
    return value.encode() if value else None


def bearer_token(metadata: Any) -> bytes | None:
    """The token of the first ``authorization: Bearer <token>`` entry, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            if not isinstance(value, str):
                return None
            scheme, _, token = value.strip().partition(" ")
            token = token.strip()
            return token.encode() if scheme.lower() == "bearer" and token else None
    return None


def node_scope(
    metadata: Any, admin_token: str | None, node_tokens: Mapping[bytes, str]
) -> str | None:
    """The node a call's token is limited to; None for the admin token (every node).

    Only for calls :class:`AuthInterceptor` already let through with one of the two.
    """
    token = bearer_token(metadata)
    admin = _as_token(admin_token)
    if token is not None and admin is not None and hmac.compare_digest(token, admin):
        return None
    for good, node in node_tokens.items():
        if token is not None and hmac.compare_digest(token, good):
            return node
    raise PermissionDenied("no token valid for this call")


class AuthInterceptor(grpc.ServerInterceptor):
    """Bearer-token check per service (DESIGN section 6: admin calls need a token).

    * InventoryService, FulfilmentService, and any other service not named
      below (fail closed): the admin token; with no admin token configured they
      are all refused.
    * CheckoutService: open when no checkout token is configured; otherwise the
      checkout token or the admin token. Except ``ListOrders``, which lists every
      customer's orders and addresses: the admin token only, even while checkout is
      open. A checkout caller reads an order by its id, a capability only the caller
      that placed it was given (``CheckoutService.GetOrder`` in the contract).
    * The per-shipment FulfilmentService calls (:data:`NODE_METHODS`) also take a
      node token (issue 16), limited by the servicer to that node's shipments.
    * Health and reflection: always open (load balancers and grpcurl carry no token).

    No ``authorization: Bearer`` entry gives UNAUTHENTICATED, a token that does
    not match gives PERMISSION_DENIED. Tokens are compared in constant time.
    """

    def __init__(
        self,
        admin_token: str | None,
        checkout_token: str | None,
        node_tokens: Mapping[bytes, str] | None = None,
    ) -> None:
        self._admin = _as_token(admin_token)
        self._checkout = _as_token(checkout_token)
        self._nodes = tuple((node_tokens or {}).keys())

    def intercept_service(
        self, continuation: _Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> _Handler | None:
        refusal = self._refusal(
            handler_call_details.method, handler_call_details.invocation_metadata
        )
        handler = continuation(handler_call_details)
        if refusal is None or handler is None:
            return handler
        code, details = refusal

        def refuse(_request: Any, context: grpc.ServicerContext) -> NoReturn:
            context.abort(code, details)
            raise AssertionError("ServicerContext.abort returned")  # it raises

        return _rebuild(handler, lambda _: refuse, lambda _: refuse)

    def _refusal(self, method: str, metadata: Any) -> tuple[grpc.StatusCode, str] | None:
        """None if the call may proceed, else the status code and message to abort with."""
        if method.startswith(_OPEN_PREFIXES):
            return None
        service = _service(method)
        accepted: tuple[bytes | None, ...]
        if service == _CHECKOUT_SERVICE and method not in _ADMIN_ONLY_METHODS:
            if self._checkout is None:
                return None
            accepted = (self._checkout, self._admin)
            what = service
        else:
            what = service if service != _CHECKOUT_SERVICE else f"{method[1:]} (an admin call)"
            nodes = self._nodes if method in NODE_METHODS else ()
            if self._admin is None and not nodes:
                return grpc.StatusCode.UNAUTHENTICATED, f"{what} is disabled: no admin token set"
            accepted = (self._admin, *nodes)
        token = bearer_token(metadata)
        if token is None:
            return grpc.StatusCode.UNAUTHENTICATED, f"missing bearer token for {what}"
        # Compare against every accepted token so timing does not tell which one matched.
        matches = [hmac.compare_digest(token, good) for good in accepted if good is not None]
        if not any(matches):
            return grpc.StatusCode.PERMISSION_DENIED, f"token not valid for {what}"
        return None


# ------------------------------------------------------------------ observability

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SERVER_FAULTS = frozenset({"UNKNOWN", "INTERNAL", "DATA_LOSS"})
_ACCESS_LOG = logging.getLogger("oms.access")
_LOG = logging.getLogger(__name__)


def _request_id(metadata: Any) -> str:
    """The caller's ``x-request-id`` if short and plain (it goes into logs), else a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER:
            if isinstance(value, str) and _SANE_REQUEST_ID.fullmatch(value):
                return value
            break
    return uuid.uuid4().hex


def _context_code(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The code the handler set or aborted with (``code()`` is in grpcio's sync context)."""
    code = getattr(context, "code", None)
    return code() if callable(code) else None


def _ended_early(context: grpc.ServicerContext) -> grpc.StatusCode:
    """Why a call whose client went away ended: its deadline, or a cancel."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _code_after_return(context: grpc.ServicerContext) -> grpc.StatusCode:
    if not context.is_active():
        return _ended_early(context)
    return _context_code(context) or grpc.StatusCode.OK


def _code_after_raise(context: grpc.ServicerContext, exc: BaseException) -> grpc.StatusCode:
    """What grpc will send for ``exc``: the aborted/set code, else UNKNOWN (or a cancel)."""
    code = _context_code(context)
    if code is not None:
        return code
    if isinstance(exc, grpc.RpcError) or not context.is_active():
        # grpc raises a bare RpcError into the handler when the client has gone.
        return _ended_early(context)
    return grpc.StatusCode.UNKNOWN


class _Call:
    """One observed call: its id, arrival, and the single record made when it ends.

    Timed from the call's arrival (when grpc's polling thread handed it to the
    interceptors), not from when a thread picked it up: the wait for a thread is
    part of what the caller sees, and under overload the largest part.
    """

    __slots__ = ("_arrived", "_method", "_queued", "_reset", "context", "request_id")

    def __init__(self, method: str, context: grpc.ServicerContext, arrived: float) -> None:
        self._method = method
        self._arrived = arrived
        self._queued = time.monotonic() - arrived
        self.context = context
        self.request_id = _request_id(context.invocation_metadata())
        self._reset = REQUEST_ID.set(self.request_id)
        # Initial metadata, so that the id reaches the caller on errors too. It can
        # be sent once only (ValueError after), so servicers must not send their own;
        # RpcError: the client has gone.
        with suppress(ValueError, grpc.RpcError):
            context.send_initial_metadata(((REQUEST_ID_HEADER, self.request_id),))

    def finish(self, code: grpc.StatusCode) -> None:
        """Record metrics and the access log line; never let them fail the call."""
        seconds = time.monotonic() - self._arrived
        try:
            REQUEST_ID.reset(self._reset)
        except ValueError:  # a stream closed from another context
            REQUEST_ID.set(None)
        try:
            metrics.observe_request(self._method, code.name, seconds, self._queued)
            level = logging.ERROR if code.name in _SERVER_FAULTS else logging.INFO
            if _ACCESS_LOG.isEnabledFor(level):
                duration_ms = round(seconds * 1000.0, 3)
                queue_ms = round(self._queued * 1000.0, 3)
                _ACCESS_LOG.log(
                    level,
                    "%s %s %.1fms (queued %.1fms)",
                    self._method,
                    code.name,
                    duration_ms,
                    queue_ms,
                    extra={
                        "request_id": self.request_id,
                        "method": self._method,
                        "code": code.name,
                        "duration_ms": duration_ms,
                        "queue_ms": queue_ms,
                        "peer": self.context.peer(),
                    },
                )
        except Exception:
            _LOG.exception("recording call %s failed", self._method)


class ObservabilityInterceptor(grpc.ServerInterceptor):
    """Per call: a request id (``x-request-id`` in, initial metadata out, ``REQUEST_ID``
    for the servicer and its log lines), one JSON line on ``oms.access`` and the
    ``oms_requests_total``/``oms_request_duration_seconds`` metrics, timed from the
    call's arrival (``queue_ms``/``oms_request_queue_seconds``: the part spent
    waiting for a thread). The servicer sees the call's deadline and arrival in
    :mod:`oms.deadlines`.

    The final code is the one grpc sends: OK, the code the handler aborted with
    or set, UNKNOWN for an exception, CANCELLED/DEADLINE_EXCEEDED when the client
    went away. A server stream is timed until it ends. Calls to methods that do
    not exist are counted under ``method="unknown"`` (callers choose those names).
    """

    def intercept_service(
        self, continuation: _Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> _Handler | None:
        # Runs on grpc's polling thread as the call arrives, before it queues for a
        # thread: stamp the arrival here, do the work in the behaviour.
        arrived = time.monotonic()
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None:
            metrics.observe_request("unknown", grpc.StatusCode.UNIMPLEMENTED.name, 0.0)
            return None
        return _rebuild(
            handler,
            lambda behaviour: _observe_unary(method, arrived, behaviour),
            lambda behaviour: _observe_stream(method, arrived, behaviour),
        )


def _observe_unary(method: str, arrived: float, behaviour: _Behaviour) -> _Behaviour:
    def observed(request: Any, context: grpc.ServicerContext) -> Any:
        call = _Call(method, context, arrived)
        try:
            with call_scope(context.time_remaining(), arrived):
                response = behaviour(request, context)
        except BaseException as exc:
            call.finish(_code_after_raise(context, exc))
            raise
        call.finish(_code_after_return(context))
        return response

    return observed


def _observe_stream(method: str, arrived: float, behaviour: _Behaviour) -> _Behaviour:
    def observed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        # Everything happens inside the generator, i.e. while grpc iterates it.
        call = _Call(method, context, arrived)
        try:
            with call_scope(context.time_remaining(), arrived):
                yield from behaviour(request, context)
        except GeneratorExit:  # grpc stopped iterating: the client cancelled or timed out
            call.finish(_ended_early(context))
            raise
        except BaseException as exc:
            call.finish(_code_after_raise(context, exc))
            raise
        call.finish(_code_after_return(context))

    return observed


# ------------------------------------------------------------------------ streams


class StreamLimitInterceptor(grpc.ServerInterceptor):
    """At most ``slots`` server streams at once in this process; more are RESOURCE_EXHAUSTED.

    grpc's sync server runs each call on a thread of the process's pool, and a
    stream (``WatchLowStockAlerts``, health ``Watch``) keeps its thread until it
    ends: 16 open streams took all 16 threads, and quotes and health checks then
    timed out. Capping streams below the pool keeps ``threads - slots`` threads
    for unary calls whatever stream clients do. A refused stream is told so
    at once (ErrorInfo reason ``STREAM_LIMIT``), so a watcher can back off or try
    another server.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._open = threading.BoundedSemaphore(slots) if slots > 0 else None

    def intercept_service(
        self, continuation: _Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> _Handler | None:
        handler = continuation(handler_call_details)
        if handler is None or not handler.response_streaming:
            return handler
        return _rebuild(handler, lambda behaviour: behaviour, self._limited)

    def _limited(self, behaviour: _Behaviour) -> _Behaviour:
        def limited(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if self._open is None or not self._open.acquire(blocking=False):
                abort(
                    context,
                    QuotaExceeded(
                        f"this server process already serves {self.slots} streams, its limit "
                        "(streams must leave threads for unary calls); retry later",
                        subject="streams",
                        description=f"at most {self.slots} open streams per server process",
                        reason="STREAM_LIMIT",
                    ),
                )
            try:
                yield from behaviour(request, context)
            finally:
                assert self._open is not None
                self._open.release()

        return limited


# -------------------------------------------------------------------------- input


class InputInterceptor(grpc.ServerInterceptor):
    """Bad input is INVALID_ARGUMENT before any servicer runs (:mod:`oms.validation`).

    * Bytes that do not parse as the method's request: grpc would log a
      traceback and answer INTERNAL "Exception deserializing request!", without
      an access-log line. The request deserialiser is replaced by one that never
      raises (:func:`~oms.validation.parse_request`); the behaviour then refuses
      the :class:`~oms.validation.MalformedRequest` it receives, so the call is
      logged and counted like any other.
    * Every string field (length, control characters) and every list (length),
      at any depth: :func:`~oms.validation.check_request`.

    Innermost of the interceptors, so that auth refuses a caller first. Methods
    whose requests stream (none in ``oms.v1``; reflection's) are left as they are.
    """

    def intercept_service(
        self, continuation: _Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> _Handler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        # Generated code passes ``RequestType.FromString``: its class is the message type.
        message_type = getattr(handler.request_deserializer, "__self__", None)
        if not (isinstance(message_type, type) and issubclass(message_type, Message)):
            return handler
        return _rebuild(
            handler,
            _checked_unary,
            _checked_stream,
            request_deserializer=functools.partial(parse_request, message_type),
        )


def _refuse_bad_input(request: Any, context: grpc.ServicerContext) -> None:
    if isinstance(request, MalformedRequest):
        abort(context, request.error())
    try:
        check_request(request)
    except InvalidArgument as exc:
        abort(context, exc)


def _checked_unary(behaviour: _Behaviour) -> _Behaviour:
    def checked(request: Any, context: grpc.ServicerContext) -> Any:
        _refuse_bad_input(request, context)
        return behaviour(request, context)

    return checked


def _checked_stream(behaviour: _Behaviour) -> _Behaviour:
    def checked(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        _refuse_bad_input(request, context)
        yield from behaviour(request, context)

    return checked
