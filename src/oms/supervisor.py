"""Keep N worker processes running: respawn one that dies, give up on a crash loop.

``oms serve --workers N`` runs N server processes on one port (SO_REUSEPORT).
One of them dying (a segfault in a native library, the OOM killer, ``kill -9``)
must not take the others down: the kernel stops handing the dead one new
connections, the others keep serving the calls they have, and the supervisor
starts a replacement. A worker that keeps dying (a bad setting, a store that
refuses every connection at start-up) is not respawned forever: each rapid
death waits longer before the next start (exponential backoff), and after
:attr:`RestartPolicy.max_deaths` deaths within :attr:`RestartPolicy.window_s`
the supervisor stops the rest and ``serve`` exits 1 with one clear log line.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

log = logging.getLogger("oms.server")


@dataclass(frozen=True)
class RestartPolicy:
    """When to respawn a dead worker, and when to stop trying."""

    #: This many deaths within ``window_s`` is a crash loop: stop everything.
    max_deaths: int = 5
    window_s: float = 60.0
    #: The wait before a respawn doubles with each death in the window, up to ``max_delay_s``.
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0

    def delay(self, recent_deaths: int) -> float:
        return min(self.first_delay_s * 2.0 ** max(recent_deaths - 1, 0), self.max_delay_s)


class Supervisor:
    """Runs ``count`` processes made by ``make_worker`` until :meth:`stop` (or a crash loop).

    ``on_exit(pid)`` is called for every worker that has exited (to drop its metrics).
    :meth:`run` blocks in the calling thread; :meth:`stop` may be called from a
    signal handler or another thread.
    """

    def __init__(
        self,
        make_worker: Callable[[], BaseProcess],
        count: int,
        policy: RestartPolicy | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self._make_worker = make_worker
        self._count = count
        self._policy = policy or RestartPolicy()
        self._on_exit = on_exit
        self._workers: list[BaseProcess] = []
        self._deaths: deque[float] = deque()
        self._respawn_at: list[float] = []
        self._stopping = threading.Event()
        self.gave_up = False

    def stop(self) -> None:
        """Ask every worker to finish its calls and exit (SIGTERM); start no more."""
        self._stopping.set()
        for worker in list(self._workers):
            if worker.pid is not None and worker.is_alive():
                with suppress(ProcessLookupError):  # it exited meanwhile
                    os.kill(worker.pid, signal.SIGTERM)

    def fail(self, reason: str) -> None:
        """Give up (:meth:`run` returns 1): log ``reason`` and stop every worker."""
        log.error("%s", reason)
        self.gave_up = True
        self.stop()

    def run(self) -> int:
        """Supervise until stopped; 0 after a stop, 1 after giving up on a crash loop."""
        for _ in range(self._count):
            self._start_one()
        while self._workers or (self._respawn_at and not self._stopping.is_set()):
            now = time.monotonic()
            timeout = min([0.5, *(max(0.0, t - now) for t in self._respawn_at)])
            wait([w.sentinel for w in self._workers], timeout=timeout)
            for worker in [w for w in self._workers if not w.is_alive()]:
                self._reap(worker)
            now = time.monotonic()
            due = [t for t in self._respawn_at if t <= now]
            for t in due:
                self._respawn_at.remove(t)
                self._start_one()
        return 1 if self.gave_up else 0

    def _start_one(self) -> None:
        if self._stopping.is_set():
            return
        worker = self._make_worker()
        worker.start()
        self._workers.append(worker)
        if self._stopping.is_set() and worker.pid is not None:  # stop() came meanwhile
            with suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)

    def _reap(self, worker: BaseProcess) -> None:
        self._workers.remove(worker)
        worker.join()
        if worker.pid is not None and self._on_exit is not None:
            self._on_exit(worker.pid)
        if self._stopping.is_set():
            return
        how = _exit_text(worker.exitcode)
        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] < now - self._policy.window_s:
            self._deaths.popleft()
        recent = len(self._deaths)
        if recent >= self._policy.max_deaths:
            self.fail(
                f"worker {worker.pid} exited ({how}): {recent} worker deaths within "
                f"{self._policy.window_s:.0f} s is a crash loop; stopping the other workers "
                "and giving up"
            )
            return
        delay = self._policy.delay(recent)
        log.warning(
            "worker %s exited (%s); the other workers keep serving; starting a new one in %.1f s",
            worker.pid,
            how,
            delay,
            extra={"exit": how, "recent_deaths": recent},
        )
        self._respawn_at.append(now + delay)


def _exit_text(code: int | None) -> str:
    """``exit code 3``, ``signal SIGKILL``: how a process ended."""
    if code is None or code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:  # a real-time signal has no name
        return f"signal {-code}"
