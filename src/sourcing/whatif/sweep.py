"""What-if replays as independent tasks: serially here, or on a Dask cluster.

Every (variant, sweep point, policy) replay of a scenario is a pure function
of its inputs (network, orders, policy factory, replenishment): nothing is
shared between replays. :func:`run_replays` runs them one after another in
this process, or as Dask tasks through a ``distributed.Client`` (a
``LocalCluster`` of N worker processes, or an existing scheduler). The order
stream is scattered once to every worker, as one object (one key, not one
per order; pickled bytes, :func:`pack_orders`, unpickled once per worker),
rather than shipped with each task; each replay's task (with its network)
is scattered once too.
Results come back in task order whatever order they finish in, so the tables
are those of the serial run (the timing column aside).

``run_replays_with`` also runs a ``finish`` function on each result where
the replay ran (a Dask worker, or here), right after it: work on one replay's
result that would otherwise wait for the last replay in this process (the
report's per-order file) then shares the workers with the replays.

Progress: serially, per order (the replay's own hook); on Dask, per replay
or piece of a replay (below) as it finishes (a worker cannot report into
this process's bar).

On Dask a replay of a policy that remembers nothing between orders runs as
pieces, one per span of the stream between two stock top-ups
(:mod:`sourcing.whatif.segments`: each span replays exactly as it does in the
whole replay), joined back into the whole replay's result; the others run
whole. The heaviest pieces go first (:attr:`ReplayTask.weight` times the
piece's share of the stream), so the short pieces come last and N workers
finish within a short piece of each other instead of one idling while the
other runs a whole replay (us_demo: 18 replays of two lengths, topped up
weekly over 15 days, became 54 pieces, the last 18 of them 6% of a replay).
:func:`replay_cluster` starts the ``LocalCluster`` of ``sourcing whatif
--workers N``: its workers are forked from a server process that imported
Dask and the replay engine once (:func:`start_worker_server`, started while
this process builds the inputs) and run without Dask's per-worker
instrumentation, which takes CPU from the replays on a machine with as many
cores as workers (see :data:`REPLAY_CLUSTER_CONFIG`).
"""

from __future__ import annotations

import contextlib
import gc
import pickle
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from sourcing.model import Network
from sourcing.whatif.segments import independent_spans, is_memoryless, join_results
from sourcing.whatif.simulate import Policy, Replenishment, SimOrder, SimulationResult, simulate

_T = TypeVar("_T")
_R = TypeVar("_R")

__all__ = [
    "REPLAY_CLUSTER_CONFIG",
    "WORKER_SERVER_MODULES",
    "ReplayTask",
    "pack_orders",
    "replay_cluster",
    "run_replay",
    "run_replays",
    "run_replays_with",
    "start_worker_server",
    "stop_worker_server",
    "submission_order",
    "unpack_orders",
]

#: Dask settings of :func:`replay_cluster`. The replays are long pure-Python
#: tasks on as many worker processes as there are cores, so every wake-up of
#: Dask's bookkeeping in a worker is taken from a replay: the statistical
#: profiler (the task's stack sampled every 10 ms, holding the GIL), the
#: event-loop health tick (every 20 ms, in each process), the system monitor
#: (500 ms) and the memory monitor (100 ms). None of them affects a result.
REPLAY_CLUSTER_CONFIG: Final[Mapping[str, object]] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
    # Worker processes forked from one server process that imported Dask, the
    # engine and the report once (start_worker_server), instead of each one
    # started afresh (spawn) and importing them all again.
    "distributed.worker.multiprocessing-method": "forkserver",
    # Imported by each worker as it starts, not by its first replay (the engine)
    # or the report's plots it draws at the end (matplotlib): nothing to do when
    # the fork server has them, the fallback when it was started without them.
    "distributed.worker.preload": [
        "sourcing.whatif.simulate",
        "sourcing.whatif.report",
        "matplotlib.figure",
        "matplotlib.backends.backend_agg",
    ],
}

#: What :func:`start_worker_server` imports in the fork server: Dask's worker
#: and what Dask's own fork server would import, the replay engine, the
#: report's plots (matplotlib), and this package's entry point, which each
#: forked worker runs as its main module.
WORKER_SERVER_MODULES: Final[tuple[str, ...]] = (
    "distributed",
    "dask",
    "msgpack",
    "cloudpickle",
    "tornado",
    "toolz",
    "numpy",
    "pandas",
    "lz4",
    "sourcing.whatif.simulate",
    "sourcing.whatif.report",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "sourcing.cli",
)


def start_worker_server() -> None:
    """Start the fork server :func:`replay_cluster`'s worker processes are forked from.

    It is a new Python process that imports :data:`WORKER_SERVER_MODULES`
    and then forks a worker per request, so each worker starts with Dask and
    the engine imported: they are imported once, by one process, not by
    every worker (1.3 s of CPU each with the engine alone), and a worker
    process is up in a fraction of a second. This returns at once (the
    imports run in that process): call it as early as possible, before the
    inputs are built. Nothing happens if the server runs already (this
    process's one fork server, as Python's ``multiprocessing`` keeps it;
    Dask's own, when it started it first, lacks the engine, which each
    worker then imports by ``distributed.worker.preload``).
    """
    import multiprocessing
    import multiprocessing.forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_SERVER_MODULES))
    multiprocessing.forkserver.ensure_running()


def stop_worker_server() -> None:
    """Stop the fork server of :func:`start_worker_server` and wait for it to exit.

    Waited for, its CPU and its workers' (it waits for each worker it forked)
    count in this process's children's, as ``/usr/bin/time`` or
    ``resource.getrusage(RUSAGE_CHILDREN)`` report them; left running, it
    would outlive its workers until this process exits, and their CPU would
    be nobody's. Python's ``multiprocessing`` has no public call for this;
    its own (used by its tests) is ``ForkServer._stop``, skipped if absent.
    """
    import multiprocessing.forkserver

    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if stop is not None:
        stop()


@dataclass(frozen=True, eq=False)
class ReplayTask:
    """One replay: ``key`` names it in the results (variant, policy...).

    ``weight``: its expected run time relative to the others (only the order
    matters): on Dask the heaviest are started first.
    """

    index: int
    key: tuple[str, ...]
    network: Network
    policy: Callable[[], Policy]
    replenishment: Replenishment | None
    weight: float = 1.0


class _Weighted(Protocol):
    @property
    def weight(self) -> float: ...


_W = TypeVar("_W", bound=_Weighted)


def submission_order(items: Sequence[_W]) -> list[_W]:
    """Heaviest first, ties in the given order (longest-processing-time-first).

    Replays (:class:`ReplayTask`) or the pieces they run as on Dask.
    """
    return sorted(items, key=lambda item: -item.weight)


def run_replay(
    task: ReplayTask,
    orders: Sequence[SimOrder],
    progress: Callable[[int], object] | None = None,
) -> tuple[int, SimulationResult]:
    """Replay ``orders`` through the task's network and a fresh policy."""
    result = simulate(task.network, orders, task.policy(), task.replenishment, progress)
    return task.index, result


def pack_orders(orders: Sequence[SimOrder]) -> bytes:
    """The order stream as one ``bytes`` object, for :func:`unpack_orders` on a worker.

    Dask sends bytes as they are; a tuple of 10,000 orders it serializes
    item by item (1.7 s to scatter it to 2 workers, against 0.1 s to pickle
    it here).
    """
    return pickle.dumps(tuple(orders), protocol=pickle.HIGHEST_PROTOCOL)


#: The last stream a worker unpacked, and its orders: every replay on that
#: worker reuses them (one unpickling per worker and stream, not per replay).
_unpacked: list[tuple[bytes, tuple[SimOrder, ...]]] = []
_unpacking = threading.Lock()  # a worker of several threads unpacks a stream once


def unpack_orders(packed: bytes) -> tuple[SimOrder, ...]:
    """The orders of :func:`pack_orders`, equal to those packed; the last stream's are kept.

    The cyclic garbage collector is paused while its tens of thousands of objects are
    made: it would scan the worker's whole heap (the engine, pandas,
    matplotlib) several times over, 3-8x the unpickling itself.
    """
    with _unpacking:
        if _unpacked and (_unpacked[0][0] is packed or _unpacked[0][0] == packed):
            return _unpacked[0][1]
        collecting = gc.isenabled()
        gc.disable()
        try:
            orders: tuple[SimOrder, ...] = pickle.loads(packed)
        finally:
            if collecting:
                gc.enable()
        _unpacked[:] = [(packed, orders)]
        return orders


def _on_worker(
    task: ReplayTask,
    packed: bytes,
    finish: Callable[[ReplayTask, SimulationResult], _R],
    span: tuple[int, int],
) -> tuple[int, int, SimulationResult, _R]:
    start, stop = span
    index, result = run_replay(task, unpack_orders(packed)[start:stop])
    return index, start, result, finish(task, result)


def _nothing(task: ReplayTask, result: SimulationResult) -> None:
    return None


@dataclass(frozen=True, eq=False)
class _Piece:
    """One task of a replay on Dask: the replay's orders ``span`` of the stream (in time order)."""

    task: ReplayTask
    number: int
    span: tuple[int, int]
    weight: float


def _pieces(tasks: Sequence[ReplayTask], stream: Sequence[SimOrder]) -> list[_Piece]:
    """Each task's replay as pieces that run independently (:mod:`sourcing.whatif.segments`).

    A memoryless policy's replay is cut at its stock top-ups; any other is one
    piece. A piece weighs its task's weight times its share of the stream.
    """
    pieces = []
    # The tasks of a scenario share one replenishment: its spans are found once.
    spans_of: dict[Replenishment | None, list[tuple[int, int]]] = {}
    for task in tasks:
        if is_memoryless(task.policy()):
            if task.replenishment not in spans_of:
                spans_of[task.replenishment] = independent_spans(stream, task.replenishment)
            spans = spans_of[task.replenishment]
        else:
            spans = [(0, len(stream))]
        for number, (start, stop) in enumerate(spans):
            share = (stop - start) / len(stream) if stream else 1.0
            pieces.append(_Piece(task, number, (start, stop), task.weight * share))
    return pieces


def run_replays(
    tasks: Sequence[ReplayTask],
    orders: Sequence[SimOrder],
    client: Any | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[SimulationResult]:
    """Every task's result, in task order; on ``client`` (Dask) when given."""
    return [result for result, _ in run_replays_with(tasks, orders, _nothing, client, progress)]


def run_replays_with(
    tasks: Sequence[ReplayTask],
    orders: Sequence[SimOrder],
    finish: Callable[[ReplayTask, SimulationResult], _R],
    client: Any | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[tuple[SimulationResult, tuple[_R, ...]]]:
    """Every task's result and what ``finish`` made of it, in task order.

    ``finish(task, result)`` runs where the replay ran, in the same task (on a
    Dask worker it must be picklable, e.g. a module-level function), so its
    work is spread over the workers while the other replays run instead of
    waiting for the last one. On Dask a replay may run as several pieces
    (spans of the stream between stock top-ups, see :func:`_pieces`):
    ``finish`` then runs on each piece's result, and its values come back in
    stream order, one per piece (serially: one, on the whole replay), while
    the result is the whole replay's (:func:`~sourcing.whatif.segments.join_results`).
    """
    if client is None:
        results: dict[int, tuple[SimulationResult, tuple[_R, ...]]] = {}
        for task in tasks:
            index, result = run_replay(task, orders, progress)
            results[index] = result, (finish(task, result),)
        return [results[task.index] for task in tasks]
    from distributed import as_completed

    # The replay's own order (stable: ties keep stream order), so a piece is a slice.
    stream = tuple(sorted(orders, key=lambda item: item.created_at))
    # One object: a list would be scattered item by item, making every
    # replay depend on one key per order (10,000 keys per task for the
    # scheduler and the worker to handle, all of it on the replays' cores);
    # and as bytes, which Dask sends as they are (pack_orders).
    [packed] = client.scatter([pack_orders(stream)], broadcast=True, hash=False)
    # Each task (its network: megabytes) sent once, however many pieces it runs as.
    sent = dict(zip((t.index for t in tasks), client.scatter(list(tasks), hash=False), strict=True))
    # Heaviest first (ties in task, then stream order): the short pieces come
    # last, so the workers finish within a short piece of each other.
    queue = submission_order(_pieces(tasks, stream))
    run = uuid.uuid4().hex[:12]
    futures = [
        client.submit(
            _on_worker,
            sent[piece.task.index],
            packed,
            finish,
            piece.span,
            # Readable on a dashboard: replay (task index), piece, run.
            key=f"whatif-replay-{piece.task.index}-{piece.number}-{run}",
            priority=len(queue) - rank,
        )
        for rank, piece in enumerate(queue)
    ]
    done: dict[int, dict[int, tuple[SimulationResult, _R]]] = {t.index: {} for t in tasks}
    for future in as_completed(futures):  # type: ignore[no-untyped-call]
        index, start, result, finished = future.result()
        done[index][start] = result, finished
        if progress is not None:
            progress(len(result.orders))
    joined = []
    for task in tasks:
        parts = [done[task.index][start] for start in sorted(done[task.index])]
        whole = join_results([result for result, _ in parts])
        joined.append((whole, tuple(finished for _, finished in parts)))
    return joined


@contextlib.contextmanager
def replay_cluster(workers: int, meanwhile: Callable[[], _T]) -> Iterator[tuple[Any, _T]]:
    """A ``LocalCluster`` of ``workers`` processes, and ``meanwhile()`` run as it starts.

    Yields the cluster's ``distributed.Client`` and what ``meanwhile``
    returned. ``meanwhile`` (building the replays' inputs) runs in a thread of
    this process while the cluster starts in this one (which mostly waits for
    the worker processes to start). The workers are forked from the server of
    :func:`start_worker_server` (started here unless it runs already, and
    stopped when the block is left). One thread per worker, no dashboard,
    :data:`REPLAY_CLUSTER_CONFIG`. If ``meanwhile`` raises, the cluster is
    closed and its exception raised; leaving the block closes the client, the
    cluster and the fork server.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, meanwhile()))
        except BaseException as exc:  # re-raised in the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="replay-inputs", daemon=True)
    with contextlib.ExitStack() as stack:
        # Last: once the cluster (and every worker forked from it) is closed.
        stack.callback(stop_worker_server)
        start_worker_server()  # before Dask's imports here; a no-op if already started
        import dask
        from distributed import Client, LocalCluster

        # Joined on every way out, so an exception here never leaves it running.
        stack.callback(thread.join)
        thread.start()
        with dask.config.set(dict(REPLAY_CLUSTER_CONFIG)):
            cluster = stack.enter_context(
                LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            )
        client = stack.enter_context(Client(cluster))  # type: ignore[no-untyped-call]
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        yield client, value
