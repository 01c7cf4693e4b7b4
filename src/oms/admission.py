"""Admission control: a few heavy calls at once per process, the rest queue; under
overload the newest go first and calls that can no longer finish in time are shed.

The solver and the store's Python work hold the GIL, so more than a couple of
them running at once in one process only take turns at the GIL, and a thread
holding the SQLite write lock waits its turn behind solver threads (a lock
convoy: throughput fell from 204 to 127 quotes/s going from 8 to 32 clients).
Heavy calls therefore take one of ``slots`` per process before they start;
callers beyond that queue here, not on the GIL. Cheap calls (reads, the alert
stream) never wait here.

Goodput under overload (more callers than the slots can serve within their
deadlines) is what this module protects. A FIFO queue serves the call that
has waited longest, the one most likely to miss its deadline while it runs,
and every queued call's wait grows with the queue: goodput collapsed (355 to
182 OK/s on SQLite from 64 to 128 clients with 200 ms deadlines). So:

* **Deadline-aware shedding.** A call is turned away (DEADLINE_EXCEEDED, at
  once, without its handler running) when its remaining time is less than
  the time such a call takes here (a moving average per method). A queued
  call gives up its place as soon as its remaining time could no longer
  cover that, rather than at the deadline itself.
* **Adaptive LIFO** (CoDel's idea of a standing queue, Facebook's adaptive
  LIFO): while the queue has been empty at some moment of the last
  :data:`OVERLOAD_INTERVAL_S`, it is FIFO (fair; nobody waits long). Once a
  queue has stood longer than that, a freed slot goes to the newest waiter,
  which has the most time left; the oldest are the ones shed. A caller
  without a deadline in a standing queue waits at most
  :data:`MAX_OVERLOAD_WAIT_S`, then gets RESOURCE_EXHAUSTED (back off, retry).

The same policy orders grpc's own queue of calls waiting for a thread
(:class:`CallExecutor`): a call's wait there counts against its deadline too,
and the access log times every call from its arrival (:mod:`oms.deadlines`).
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import grpc

from oms.deadlines import NO_DEADLINE_S
from oms.metrics import observe_admission

#: The least time a heavy call needs to be worth starting (a 1-line quote takes ~3 ms).
MIN_WORK_S = 0.003
#: A queue that has not been empty for this long is a standing queue: overload (CoDel's interval).
OVERLOAD_INTERVAL_S = 0.1
#: How long a caller without a deadline may wait in a standing queue before RESOURCE_EXHAUSTED.
MAX_OVERLOAD_WAIT_S = 2.0
#: Weight of the newest call in the moving average of service times.
EWMA_WEIGHT = 0.1


class _Waiter:
    __slots__ = ("granted", "ready")

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.granted = False


class Admission:
    """At most ``slots`` heavy calls at once in this process, admitted by deadline."""

    def __init__(self, slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots = slots
        self._clock = clock
        self._lock = threading.Lock()
        self._free = slots
        self._waiters: deque[_Waiter] = deque()
        self._last_idle = clock()  # the last moment nobody was waiting
        self._service_s: dict[str, float] = {}

    # -- what a call costs ------------------------------------------------------------

    def expected_service_s(self, method: str) -> float:
        """The moving average of ``method``'s time in a slot (at least :data:`MIN_WORK_S`)."""
        return max(MIN_WORK_S, self._service_s.get(method, MIN_WORK_S))

    def _observe_service(self, method: str, seconds: float) -> None:
        previous = self._service_s.get(method)
        self._service_s[method] = (
            seconds if previous is None else previous + EWMA_WEIGHT * (seconds - previous)
        )

    def overloaded(self) -> bool:
        """A standing queue: someone has been waiting, without a break, for a whole interval."""
        with self._lock:
            return self._standing(self._clock())

    def _standing(self, now: float) -> bool:
        return bool(self._waiters) and now - self._last_idle > OVERLOAD_INTERVAL_S

    # -- the queue -------------------------------------------------------------------

    def _acquire(self, timeout: float | None) -> bool:
        """Take a slot within ``timeout`` s; None (no deadline): while the queue drains,
        or for at most :data:`MAX_OVERLOAD_WAIT_S` once it stands."""
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            if not self._waiters:
                self._last_idle = self._clock()
            waiter = _Waiter()
            self._waiters.append(waiter)
        if timeout is not None:
            waiter.ready.wait(timeout)
        else:
            # Keep its place in the queue while checking, now and then, for a standing queue.
            started = self._clock()
            while not waiter.ready.wait(OVERLOAD_INTERVAL_S):
                if self._clock() - started >= MAX_OVERLOAD_WAIT_S and self.overloaded():
                    break
        with self._lock:
            if waiter.granted:
                return True
            self._waiters.remove(waiter)
            if not self._waiters:
                self._last_idle = self._clock()
            return False

    def _release(self) -> None:
        with self._lock:
            if not self._waiters:
                self._free += 1
                return
            now = self._clock()
            # FIFO while the queue comes and goes; the newest first once it stands.
            waiter = self._waiters.pop() if self._standing(now) else self._waiters.popleft()
            if not self._waiters:
                self._last_idle = now
            waiter.granted = True  # the slot passes straight to it
            waiter.ready.set()

    # -- a call ------------------------------------------------------------------------

    @contextmanager
    def slot(self, context: grpc.ServicerContext, method: str = "call") -> Iterator[None]:
        """Hold a slot for the block, or abort: DEADLINE_EXCEEDED when the deadline
        cannot be met, RESOURCE_EXHAUSTED when a caller without one waited too long."""
        remaining = context.time_remaining()
        if remaining is not None and remaining > NO_DEADLINE_S:
            remaining = None  # no deadline (grpc reports ~9.2e18 s)
        expected = self.expected_service_s(method)
        if remaining is not None and remaining < expected:
            observe_admission(0.0, False)
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{1000 * max(0.0, remaining):.0f} ms left, and a call takes about "
                f"{1000 * expected:.0f} ms here: not started",
            )
        started = self._clock()
        admitted = self._acquire(None if remaining is None else remaining - expected)
        waited = self._clock() - started
        observe_admission(waited, admitted)
        if not admitted:
            if remaining is None:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"overloaded: waited {1000 * waited:.0f} ms for one of this server's "
                    f"{self.slots} solver slots; retry with backoff",
                )
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"waited {1000 * waited:.0f} ms for one of this server's {self.slots} "
                "solver slots; the deadline leaves no time to solve",
            )
        begun = self._clock()
        try:
            yield
        finally:
            self._observe_service(method, self._clock() - begun)
            self._release()


class _Admitted(Protocol):
    admission: Admission


S = TypeVar("S", bound=_Admitted)
R = TypeVar("R")


def admitted(
    method: Callable[[S, Any, grpc.ServicerContext], R],
) -> Callable[[S, Any, grpc.ServicerContext], R]:
    """Run a servicer method inside one of its servicer's admission slots."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: S, request: Any, context: grpc.ServicerContext) -> R:
        with self.admission.slot(context, name):
            return method(self, request, context)

    return wrapper


# ------------------------------------------------------------- grpc's queue of calls


class AdaptiveLifoQueue:
    """The work queue of :class:`CallExecutor`: FIFO, or LIFO while a queue stands.

    Implements what :class:`~concurrent.futures.ThreadPoolExecutor` asks of its
    queue (``put``, ``get``, ``get_nowait``). Its shutdown markers (``None``) are
    handed out only once no work is left, so a shutdown never strands a call.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._items: deque[Any] = deque()
        self._stops = 0
        self._ready = threading.Condition(threading.Lock())
        self._last_idle = clock()

    def qsize(self) -> int:
        with self._ready:
            return len(self._items)

    def overloaded(self) -> bool:
        with self._ready:
            return bool(self._items) and self._clock() - self._last_idle > OVERLOAD_INTERVAL_S

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self._ready:
            if item is None:
                self._stops += 1
            else:
                if not self._items:
                    self._last_idle = self._clock()
                self._items.append(item)
            self._ready.notify()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        with self._ready:
            if not self._ready.wait_for(
                lambda: self._items or self._stops, timeout=timeout if block else 0
            ):
                raise queue.Empty
            if not self._items:
                self._stops -= 1
                return None
            now = self._clock()
            standing = now - self._last_idle > OVERLOAD_INTERVAL_S
            item = self._items.pop() if standing else self._items.popleft()
            if not self._items:
                self._last_idle = now
            return item

    def get_nowait(self) -> Any:
        return self.get(block=False)


class CallExecutor(ThreadPoolExecutor):
    """grpc's thread pool, whose waiting calls are served adaptive-LIFO (see the module doc).

    Under overload the newest call gets the next free thread; older ones, nearer
    their deadlines, are shed cheaply when they are picked up (or discarded by
    grpc if their caller has gone).
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "") -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        # Replaced before any thread exists (threads start on the first submit).
        self._work_queue = AdaptiveLifoQueue()  # type: ignore[assignment]
