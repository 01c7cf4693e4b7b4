"""Prometheus metrics of the service, in one process or aggregated over several workers.

prometheus_client picks single- or multi-process storage when a metric object
is *created*, from ``PROMETHEUS_MULTIPROC_DIR``. The metric objects here are
therefore created lazily, on first use, and the server must decide the mode
before that:

* one process: nothing to call; :func:`start_metrics_server` serves the default registry.
* several worker processes sharing one gRPC port (``grpc.so_reuseport``): in the
  parent, before any worker is started and before any call is served, call
  ``prepare_multiprocess(dir)``; workers inherit the variable (fork or spawn),
  and may call it again with the same directory.
  The parent (not a worker, which would race for the port) then calls
  ``start_metrics_server(port, host)``, which aggregates every worker's files,
  and ``mark_worker_dead(pid)`` when it reaps a worker.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)

__all__ = [
    "REQUEST_BUCKETS",
    "SOLVER_BUCKETS",
    "count_quote",
    "exposition_registry",
    "mark_worker_dead",
    "multiprocess_dir",
    "observe_admission",
    "observe_request",
    "observe_solver",
    "prepare_multiprocess",
    "set_late_shipments",
    "start_metrics_server",
]

_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Fine below 50 ms, where the checkout budget (tens of ms) is decided; coarse up to 5 s.
REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
# The solver's own budget defaults to 0.5 s (Settings.solver_time_limit_s).
SOLVER_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0,
)  # fmt: skip


@dataclass(frozen=True)
class _Metrics:
    directory: Path | None  # multi-process directory when created, None in one-process mode
    requests: Counter
    request_duration: Histogram
    request_queue: Histogram
    solver_duration: Histogram
    quotes: Counter
    admission_wait: Histogram
    late_shipments: Gauge


_metrics: _Metrics | None = None
_lock = threading.Lock()


def _get() -> _Metrics:
    """The metric objects, created on first use (after the mode is decided)."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _Metrics(
                    directory=multiprocess_dir(),
                    requests=Counter(
                        "oms_requests",
                        "gRPC calls served, by full method name and final status code.",
                        ["method", "code"],
                    ),
                    request_duration=Histogram(
                        "oms_request_duration_seconds",
                        "Time from a call's arrival at the server (before it waits for a "
                        "thread) to its end (a server stream is timed until it ends).",
                        ["method"],
                        buckets=REQUEST_BUCKETS,
                    ),
                    request_queue=Histogram(
                        "oms_request_queue_seconds",
                        "Time a call waited for a thread after its arrival.",
                        ["method"],
                        buckets=REQUEST_BUCKETS,
                    ),
                    solver_duration=Histogram(
                        "oms_solver_duration_seconds",
                        "Wall time of one optimiser run.",
                        buckets=SOLVER_BUCKETS,
                    ),
                    quotes=Counter(
                        "oms_quotes",
                        "Delivery quotes, by outcome.",
                        ["outcome"],
                    ),
                    admission_wait=Histogram(
                        "oms_admission_wait_seconds",
                        "Time a quote or order waited for a solver slot, by outcome "
                        "(admitted, or refused because its deadline would pass).",
                        ["outcome"],
                        buckets=REQUEST_BUCKETS,
                    ),
                    late_shipments=Gauge(
                        "oms_late_shipments",
                        "Shipments not yet left their node and past their planned dispatch day "
                        "(as of each worker's last count; the highest across workers).",
                        multiprocess_mode="max",
                    ),
                )
    return _metrics


def multiprocess_dir() -> Path | None:
    """The directory worker processes write their metrics to, or None in one-process mode."""
    value = os.environ.get(_ENV)
    return Path(value) if value else None


def prepare_multiprocess(directory: Path) -> None:
    """Switch this process, and the workers it will start, to multi-process metrics.

    Call in the parent before any worker starts and before any metric is used
    (RuntimeError otherwise: counts already kept in memory would never reach
    ``/metrics``). There it deletes ``*.db`` files a previous run left, which
    would otherwise be added to this run's counts. A worker may call it again
    with the same directory (forked or spawned, it inherits the variable): that
    deletes nothing, since its siblings are already writing there.
    """
    if _metrics is not None:
        if _metrics.directory == directory:
            return  # a forked worker: already set up, and its siblings are writing there
        raise RuntimeError("prepare_multiprocess() must be called before any metric is used")
    inherited = multiprocess_dir() == directory
    directory.mkdir(parents=True, exist_ok=True)
    if not inherited:
        for stale in directory.glob("*.db"):
            stale.unlink()
    os.environ[_ENV] = str(directory)
    # prometheus_client chose its value class when it was imported, possibly
    # before the variable was set; choose again so that our metrics use files.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def exposition_registry() -> CollectorRegistry:
    """The registry ``/metrics`` serves: every worker's files in multi-process mode."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    return registry


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    """Serve the Prometheus text format at ``http://host:port/metrics`` from a daemon thread.

    In multi-process mode call it in the parent only: a worker's own registry
    would show that worker alone.
    """
    _get()  # so that the metric names are listed before the first call
    start_http_server(port, addr=host, registry=exposition_registry())


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live-gauge files (its counters stay, so totals never go back)."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def observe_request(method: str, code: str, seconds: float, queued: float = 0.0) -> None:
    """Count one finished call, its duration from arrival, and the part of it spent
    waiting for a thread; ``code`` is a grpc.StatusCode name."""
    metrics = _get()
    metrics.requests.labels(method=method, code=code).inc()
    metrics.request_duration.labels(method=method).observe(seconds)
    metrics.request_queue.labels(method=method).observe(queued)


def observe_solver(seconds: float) -> None:
    """Record the wall time of one optimiser run."""
    _get().solver_duration.observe(seconds)


def observe_admission(seconds: float, admitted: bool) -> None:
    """Record how long a heavy call waited for a solver slot (:mod:`oms.admission`)."""
    outcome = "admitted" if admitted else "refused"
    _get().admission_wait.labels(outcome=outcome).observe(seconds)


def set_late_shipments(count: int) -> None:
    """The number of late shipments the store holds (:class:`oms.shipping.LateShipmentWatch`)."""
    _get().late_shipments.set(count)


def count_quote(outcome: str) -> None:
    """Count one quote by outcome (keep outcomes to a small fixed set: ok, infeasible, ...)."""
    _get().quotes.labels(outcome=outcome).inc()
