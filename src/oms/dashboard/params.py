"""The dashboard's query parameters: read, bounded and checked, or refused naming the field.

A refusal is :class:`BadQuery`, answered 400 with its message (never the caller's value
echoed back whole).
"""

from __future__ import annotations

import math

from starlette.requests import Request

from oms.dashboard import views

#: Longest search term or id accepted in a query string.
MAX_QUERY_LENGTH = 128


class BadQuery(ValueError):
    """A query parameter the dashboard refuses (answered 400, naming it)."""


def text_param(request: Request, name: str) -> str:
    value = request.query_params.get(name, "").strip()
    if len(value) > MAX_QUERY_LENGTH:
        raise BadQuery(f"{name} is longer than {MAX_QUERY_LENGTH} characters")
    if any(not c.isprintable() for c in value):
        raise BadQuery(f"{name} has control characters")
    return value


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise BadQuery(f"{name} must be between {low} and {high}")
    return value


def period(request: Request) -> str:
    key = request.query_params.get("period", "7d")
    if key not in views.PERIODS:
        raise BadQuery(f"period must be one of {', '.join(views.PERIODS)}")
    return key


def cursor(request: Request) -> tuple[float, str] | None:
    raw = text_param(request, "after")
    if not raw:
        return None
    created, _, order_id = raw.partition("~")
    try:
        at = float(created)
    except ValueError:
        raise BadQuery("after is not a cursor this page made") from None
    if not order_id or not math.isfinite(at):
        raise BadQuery("after is not a cursor this page made")
    return at, order_id


def order_query(request: Request) -> views.OrderQuery:
    state = text_param(request, "state").upper()
    if state and state not in views.STATES:
        raise BadQuery(f"state must be one of {', '.join(views.STATES)}")
    return views.OrderQuery(
        order_id=text_param(request, "order_id"),
        sku=text_param(request, "sku"),
        node_id=text_param(request, "node"),
        state=state,
        attention=request.query_params.get("attention") in ("1", "on", "true"),
        late=request.query_params.get("late") in ("1", "on", "true"),
    )
