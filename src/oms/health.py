"""Health that tells the truth: NOT_SERVING while this process cannot reach its store.

A load balancer routes by ``grpc.health.v1``; a process that answers SERVING
while every call fails UNAVAILABLE keeps receiving traffic it cannot serve.
:class:`StoreProbe` runs ``SELECT 1`` through the store (its pool, its driver)
every ``interval_s`` and sets every health service name to SERVING or
NOT_SERVING from the answer; a probe that does not answer within
``timeout_s`` (a store host that drops packets) counts as a failure. The
driver's text goes to the log (passwords masked by :mod:`oms.logging`),
never to a client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import grpc
import sqlalchemy as sa
from grpc_health.v1 import health, health_pb2

from oms.store import Store

log = logging.getLogger("oms.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StoreProbe:
    """Sets ``names`` on ``servicer`` from periodic probes of ``store``."""

    def __init__(
        self,
        store: Store,
        servicer: health.HealthServicer,
        names: Sequence[str],
        interval_s: float,
        timeout_s: float | None = None,
    ) -> None:
        self._store = store
        self._servicer = servicer
        self._names = tuple(names)
        self.interval_s = interval_s
        self.timeout_s = timeout_s if timeout_s is not None else max(1.0, interval_s)
        self._serving: bool | None = None
        self._pending: threading.Thread | None = None

    def check(self) -> bool:
        """Probe once and set the health status; True if the store answered."""
        ok = self._probe()
        if ok != self._serving:
            if ok and self._serving is not None:
                log.info("the store answers again: SERVING")
            for name in self._names:
                self._servicer.set(name, SERVING if ok else NOT_SERVING)
            self._serving = ok
        return ok

    def run_while_serving(self, server: grpc.Server) -> None:
        """Probe every ``interval_s`` in a daemon thread until ``server`` stops."""

        def loop() -> None:
            # wait_for_termination answers True when the timeout passed (still serving).
            while server.wait_for_termination(timeout=self.interval_s):
                self.check()

        threading.Thread(target=loop, name="oms-store-probe", daemon=True).start()

    def _probe(self) -> bool:
        if self._pending is not None and self._pending.is_alive():
            return False  # the last probe still hangs
        failure: list[str] = []
        done = threading.Event()

        def run() -> None:
            try:
                with self._store.read() as conn:
                    conn.execute(sa.text("SELECT 1"))
            except Exception as exc:  # any failure to answer is "not serving"
                cause = exc.__cause__ or exc
                first_line = (str(cause).strip().splitlines() or [""])[0]
                failure.append(f"{type(cause).__name__}: {first_line}")
            finally:
                done.set()

        self._pending = threading.Thread(target=run, name="oms-store-probe-call", daemon=True)
        self._pending.start()
        if not done.wait(self.timeout_s):
            failure.append(f"no answer within {self.timeout_s:.1f} s")
        if failure and self._serving is not False:
            log.error("the store does not answer (%s): NOT_SERVING", failure[0])
        return not failure
