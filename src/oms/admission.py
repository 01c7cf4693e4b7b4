"""Admission control: a few heavy calls run at once per process; the rest wait in line.

The solver and the store's Python work hold the GIL, so more than a couple of
them running at once in one process only take turns at the GIL, and a thread
holding the SQLite write lock waits its turn behind solver threads (a lock
convoy: throughput fell from 204 to 127 quotes/s going from 8 to 32 clients).
Heavy calls therefore take one of ``slots`` per process before they start;
callers beyond that queue on a semaphore, not on the GIL. A caller whose
deadline would pass while queued is answered DEADLINE_EXCEEDED when the time
comes, without doing the work: the caller has given up by then anyway, and
its slot goes to a call that can still be answered in time. Cheap calls
(reads, the alert stream) never wait here.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import grpc

from oms.metrics import observe_admission

#: The least time a heavy call needs to be worth starting (a 1-line quote takes ~3 ms).
MIN_WORK_S = 0.003


class Admission:
    """At most ``slots`` heavy calls at once in this process."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self._semaphore = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self, context: grpc.ServicerContext) -> Iterator[None]:
        """Hold a slot for the block; abort DEADLINE_EXCEEDED if the deadline comes first."""
        remaining = context.time_remaining()
        # A caller without a deadline reports ~9.2e18 s left, which no lock timeout
        # accepts (OverflowError): such a caller simply waits its turn.
        if remaining is None or remaining >= threading.TIMEOUT_MAX:
            timeout = None
        else:
            timeout = max(0.0, remaining - MIN_WORK_S)
        started = time.monotonic()
        admitted = self._semaphore.acquire(timeout=timeout)
        waited = time.monotonic() - started
        observe_admission(waited, admitted)
        if not admitted:
            waited_ms = 1000 * waited
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"waited {waited_ms:.0f} ms for one of this server's {self.slots} solver slots; "
                "the deadline leaves no time to solve",
            )
        try:
            yield
        finally:
            self._semaphore.release()


class _Admitted(Protocol):
    admission: Admission


S = TypeVar("S", bound=_Admitted)
R = TypeVar("R")


def admitted(
    method: Callable[[S, Any, grpc.ServicerContext], R],
) -> Callable[[S, Any, grpc.ServicerContext], R]:
    """Run a servicer method inside one of its servicer's admission slots."""

    @functools.wraps(method)
    def wrapper(self: S, request: Any, context: grpc.ServicerContext) -> R:
        with self.admission.slot(context):
            return method(self, request, context)

    return wrapper
