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
* **Adaptive LIFO** (Facebook's adaptive LIFO, with CoDel's question "is
  this queue standing?" asked of deadlines): while the oldest waiter has used
  less than :data:`LIFO_AFTER_BUDGET_SHARE` of the time it can wait, the
  queue is FIFO (fair; a queue that drains in time fails nobody). Beyond
  that, FIFO would serve calls about to miss their deadlines, so a freed
  slot goes to the newest waiter, which has the most time left; the oldest
  are the ones shed. A caller without a deadline waits at most
  :data:`MAX_WAIT_WITHOUT_DEADLINE_S` (its budget for this rule), then gets
  RESOURCE_EXHAUSTED (back off, retry).

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
#: A queue serves its newest waiter first once its oldest has used this share of its wait budget.
LIFO_AFTER_BUDGET_SHARE = 0.5
#: How long a caller without a deadline may wait for a slot before RESOURCE_EXHAUSTED.
MAX_WAIT_WITHOUT_DEADLINE_S = 2.0
#: Weight of the newest call in the moving average of service times.
EWMA_WEIGHT = 0.1


class _Waiter:
    __slots__ = ("budget", "enqueued", "granted", "ready")

    def __init__(self, enqueued: float, budget: float) -> None:
        self.ready = threading.Event()
        self.granted = False
        self.enqueued = enqueued
        self.budget = budget  # how long it may wait, s


def _lifo(now: float, oldest_enqueued: float, oldest_budget: float) -> bool:
    """Serve the newest first: the oldest waiter has used most of its wait budget."""
    return now - oldest_enqueued > LIFO_AFTER_BUDGET_SHARE * oldest_budget


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
        """Whether a freed slot now goes to the newest waiter (see the module doc)."""
        with self._lock:
            return self._serves_newest(self._clock())

    def _serves_newest(self, now: float) -> bool:
        if not self._waiters:
            return False
        oldest = self._waiters[0]
        return _lifo(now, oldest.enqueued, oldest.budget)

    # -- the queue -------------------------------------------------------------------

    def _acquire(self, timeout: float | None) -> bool:
        """Take a slot within ``timeout`` s (None: no deadline, at most
        :data:`MAX_WAIT_WITHOUT_DEADLINE_S`)."""
        budget = MAX_WAIT_WITHOUT_DEADLINE_S if timeout is None else max(0.0, timeout)
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            waiter = _Waiter(self._clock(), budget)
            self._waiters.append(waiter)
        waiter.ready.wait(budget)
        with self._lock:
            if waiter.granted:
                return True
            self._waiters.remove(waiter)
            return False

    def _release(self) -> None:
        with self._lock:
            if not self._waiters:
                self._free += 1
                return
            # FIFO while the queue drains in time; the newest first once it does not.
            if self._serves_newest(self._clock()):
                waiter = self._waiters.pop()
            else:
                waiter = self._waiters.popleft()
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


def _grpc_deadline(item: Any) -> float | None:
    """The epoch deadline of the grpc call a thread-pool work item serves, if it says.

    grpc submits ``(context.run, behaviour_in_pool, rpc_event, state, ...)``; the
    event's ``call_details.deadline`` is the caller's deadline (or far in the
    future without one). Anything else: None.
    """
    for arg in getattr(item, "args", ())[:3]:
        details = getattr(arg, "call_details", None)
        deadline = getattr(details, "deadline", None)
        if isinstance(deadline, float):
            return deadline
    return None


class AdaptiveLifoQueue:
    """The work queue of :class:`CallExecutor`, ordered like the slot queue: calls whose
    deadline has passed first (grpc discards them at once, freeing their memory), then
    FIFO while the oldest call has used less than :data:`LIFO_AFTER_BUDGET_SHARE`
    of its time, else the newest first.

    Implements what :class:`~concurrent.futures.ThreadPoolExecutor` asks of its
    queue (``put``, ``get``, ``get_nowait``). Its shutdown markers (``None``) are
    handed out only once no work is left, so a shutdown never strands a call.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        # (enqueued, monotonic deadline or None, item)
        self._items: deque[tuple[float, float | None, Any]] = deque()
        self._stops = 0
        self._ready = threading.Condition(threading.Lock())

    def qsize(self) -> int:
        with self._ready:
            return len(self._items)

    def overloaded(self) -> bool:
        """Whether the next call handed out is the newest."""
        with self._ready:
            return self._serves_newest(self._clock())

    def _serves_newest(self, now: float) -> bool:
        if not self._items:
            return False
        enqueued, deadline, _ = self._items[0]
        budget = MAX_WAIT_WITHOUT_DEADLINE_S if deadline is None else deadline - enqueued
        return _lifo(now, enqueued, budget)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        now = self._clock()
        if item is None:
            entry = None
        else:
            epoch = _grpc_deadline(item)
            left = None if epoch is None else epoch - self._wall_clock()
            deadline = None if left is None or left > NO_DEADLINE_S else now + left
            entry = (now, deadline, item)
        with self._ready:
            if entry is None:
                self._stops += 1
            else:
                self._items.append(entry)
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
            for k, (_, deadline, item) in enumerate(self._items):
                if deadline is not None and deadline <= now:
                    del self._items[k]
                    return item
            if self._serves_newest(now):
                return self._items.pop()[2]
            return self._items.popleft()[2]

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
