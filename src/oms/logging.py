"""Structured logging: one JSON object per line, so log shippers need no parsing rules.

Every line carries ``ts``, ``level``, ``logger`` and ``message``; ``request_id``
when the line is written while serving a call (see :data:`REQUEST_ID`); and any
``extra=`` fields the caller passed, so ``log.info("placed", extra={"order_id": i})``
becomes a queryable field rather than text inside the message. The password of
any URL in a line is masked (:func:`oms.credentials.redact_text`).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

from oms.credentials import redact_text

__all__ = ["REQUEST_ID", "JsonFormatter", "configure_logging"]

REQUEST_ID: ContextVar[str | None] = ContextVar("oms_request_id", default=None)
"""The id of the call being served; set by ``oms.interceptors.ObservabilityInterceptor``.

It lives here rather than in ``oms.interceptors`` so that logging needs no gRPC import.
"""

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


#: One encoder for every line: ``json.dumps`` with options builds a new one per call,
#: which cost as much as encoding an access-log line.
_ENCODE = json.JSONEncoder(default=str, ensure_ascii=False).encode


def _utc_timestamp(created: float) -> str:
    """``created`` as ISO 8601 UTC to the millisecond, e.g. ``2026-11-25T12:00:00.123Z``."""
    stamp = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    return stamp[:-6] + "Z"  # "+00:00"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON; values JSON cannot hold are written with ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            payload["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in payload:
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        # A URL's password may hide in any message or traceback (a driver's error text).
        return redact_text(_ENCODE(payload))


class _JsonStreamHandler(logging.StreamHandler[TextIO]):
    """Marks the handler :func:`configure_logging` owns, so a second call replaces it."""


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every logger's records as JSON lines to ``stream`` (default: stderr).

    Idempotent: a previous handler installed here is replaced; handlers others
    installed (pytest's, say) are left alone. Raises ValueError for an unknown level.
    """
    numeric = logging.getLevelNamesMapping().get(level.strip().upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _JsonStreamHandler):
            root.removeHandler(handler)
            handler.close()
    handler = _JsonStreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(numeric)
