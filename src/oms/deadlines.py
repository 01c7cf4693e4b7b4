"""The current call's deadline and arrival, for waits far below the servicer.

A store lock, the solver's budget or a queue for a solver slot must never
wait past the moment the caller gives up. The observability interceptor
(:mod:`oms.interceptors`) sets both values for the thread that runs a call;
code that waits asks :func:`remaining_s` instead of being handed the grpc
context through every layer. Outside a call (CLI, batch jobs, tests of the
store) nothing is set and nothing is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["NO_DEADLINE_S", "arrived_at", "bounded", "call_scope", "remaining_s", "solver_budget"]

#: ``time.monotonic()`` when the caller's deadline passes; None: no deadline.
_DEADLINE: ContextVar[float | None] = ContextVar("oms_call_deadline", default=None)
#: ``time.monotonic()`` when grpc handed the call to the server (before it queued for a thread).
_ARRIVED: ContextVar[float | None] = ContextVar("oms_call_arrived", default=None)

#: grpc reports ~9.2e18 s left for a call without a deadline: anything beyond a day is none.
NO_DEADLINE_S = 86_400.0


def remaining_s() -> float | None:
    """Seconds until the current call's deadline (negative once passed); None without one."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def arrived_at() -> float | None:
    """``time.monotonic()`` of the current call's arrival, if a call is being served."""
    return _ARRIVED.get()


def bounded(timeout_s: float | None) -> float | None:
    """``timeout_s`` cut to the current call's remaining time (None: unbounded)."""
    remaining = remaining_s()
    if remaining is None:
        return timeout_s
    remaining = max(0.0, remaining)
    return remaining if timeout_s is None else min(timeout_s, remaining)


@contextmanager
def call_scope(time_remaining: float | None, arrived: float) -> Iterator[None]:
    """Set the call's deadline (from grpc's ``context.time_remaining()``) and arrival."""
    deadline = (
        None
        if time_remaining is None or time_remaining > NO_DEADLINE_S
        else time.monotonic() + time_remaining
    )
    deadline_token = _DEADLINE.set(deadline)
    arrived_token = _ARRIVED.set(arrived)
    try:
        yield
    finally:
        try:
            _DEADLINE.reset(deadline_token)
            _ARRIVED.reset(arrived_token)
        except ValueError:  # a stream's generator closed from another context
            _DEADLINE.set(None)
            _ARRIVED.set(None)


def solver_budget(limit_s: float, reserve_s: float) -> float:
    """The solver's time limit inside the current call: ``limit_s``, cut to the
    remaining deadline less ``reserve_s`` for the store work after the solve.

    Never zero: with no time for a proof the solver still returns its best
    feasible options, marked with their gap.
    """
    remaining = remaining_s()
    if remaining is None:
        return limit_s
    return max(0.001, min(limit_s, remaining - reserve_s))
