"""What-if replays as independent tasks: serially here, or on a Dask cluster.

Every (variant, sweep point, policy) replay of a scenario is a pure function
of its inputs (network, orders, policy factory, replenishment): nothing is
shared between replays. :func:`run_replays` runs them one after another in
this process, or as Dask tasks through a ``distributed.Client`` (a
``LocalCluster`` of N worker processes, or an existing scheduler). The order
stream is scattered once to every worker rather than shipped with each task.
Results come back in task order whatever order they finish in, so the tables
are those of the serial run (the timing column aside).

Progress: serially, per order (the replay's own hook); on Dask, per replay
as it finishes (a worker cannot report into this process's bar).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sourcing.model import Network
from sourcing.whatif.simulate import Policy, Replenishment, SimOrder, SimulationResult, simulate

__all__ = ["ReplayTask", "run_replay", "run_replays"]


@dataclass(frozen=True, eq=False)
class ReplayTask:
    """One replay: ``key`` names it in the results (variant, policy...)."""

    index: int
    key: tuple[str, ...]
    network: Network
    policy: Callable[[], Policy]
    replenishment: Replenishment | None


def run_replay(
    task: ReplayTask,
    orders: Sequence[SimOrder],
    progress: Callable[[int], object] | None = None,
) -> tuple[int, SimulationResult]:
    """Replay ``orders`` through the task's network and a fresh policy."""
    result = simulate(task.network, orders, task.policy(), task.replenishment, progress)
    return task.index, result


def _on_worker(task: ReplayTask, orders: Sequence[SimOrder]) -> tuple[int, SimulationResult]:
    return run_replay(task, orders)


def run_replays(
    tasks: Sequence[ReplayTask],
    orders: Sequence[SimOrder],
    client: Any | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[SimulationResult]:
    """Every task's result, in task order; on ``client`` (Dask) when given."""
    results: dict[int, SimulationResult] = {}
    if client is None:
        for task in tasks:
            index, result = run_replay(task, orders, progress)
            results[index] = result
    else:
        from distributed import as_completed

        stream = client.scatter(list(orders), broadcast=True, hash=False)
        futures = [client.submit(_on_worker, task, stream, pure=False) for task in tasks]
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            index, result = future.result()
            results[index] = result
            if progress is not None:
                progress(len(orders))
    return [results[task.index] for task in tasks]
