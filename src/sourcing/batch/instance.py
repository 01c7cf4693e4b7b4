"""A batch's instance, settings and result: open orders in, new allocations out.

:class:`BatchInstance` (the open orders with their promises, the shared pool
of stock and capacity) and :class:`BatchSettings` go into
:func:`sourcing.batch.reoptimise`; :class:`BatchResult` comes out, every
order's outcome priced by the independent evaluator, and can re-check itself
(:meth:`BatchResult.check`, :func:`joint_violations`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from sourcing.evaluate import evaluate
from sourcing.model import (
    UNLIMITED_CAPACITY,
    Allocation,
    Evaluation,
    IntArray,
    Network,
    OpportunityCosts,
    Order,
    ParcelLine,
    ParcelPlan,
)

OPTIMAL: Final = "OPTIMAL"
#: Sub-problem solvers. Measured on chunks of the demo network's 10k book
#: (benchmarks/batch.py): SCIP, hinted with the current allocation, proved
#: 2,000-order chunks optimal in 4-9 s; CP-SAT was left at a 20-30% gap after
#: 10 s on 400-order ones; HiGHS through the same wrapper was as fast as SCIP
#: when it worked, but crashed (segfault) when given the hint and once found
#: no solution within 10 s without it, so it is not offered.
BACKENDS: Final = ("scip", "cp-sat")
FEASIBLE: Final = "FEASIBLE"


@dataclass(frozen=True)
class BatchOrder:
    """One open order: its cart, its current allocation and its promise.

    ``latest_day``: the delivery day (days counted like the network's
    arrival days, from when the new allocation would start) it must not be
    later than. ``capacity_bucket``: index into
    :attr:`BatchInstance.capacity_left` (e.g. the day it drew capacity from).
    The units to ship are those ``current`` covers, line by line.
    """

    order_id: str
    order: Order
    current: Allocation
    latest_day: int
    capacity_bucket: int = 0


@dataclass(frozen=True, eq=False)
class BatchInstance:
    """Open orders sharing one pool of stock and capacity.

    ``network.available`` must be the stock the batch may use *with the batch
    orders' own units released* (their reservations given back to the pool);
    ``capacity_left`` (B x N) the units each node may still ship per capacity
    bucket, likewise with the batch orders' own usage given back (default:
    one bucket with ``network.capacity``). The current allocations must fit
    this pool together (checked here: the warm start must be feasible).
    """

    network: Network
    orders: tuple[BatchOrder, ...]
    capacity_left: IntArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    def __post_init__(self) -> None:
        n_nodes = len(self.network.node_ids)
        capacity = np.asarray(self.capacity_left, dtype=np.int64)
        if capacity.size == 0:
            capacity = self.network.capacity[None, :].copy()
        if capacity.ndim != 2 or capacity.shape[1] != n_nodes:
            raise ValueError(f"capacity_left must be B x {n_nodes}, got {capacity.shape}")
        capacity.setflags(write=False)
        object.__setattr__(self, "capacity_left", capacity)
        ids = [o.order_id for o in self.orders]
        if len(set(ids)) != len(ids):
            raise ValueError("BatchInstance.orders holds duplicate order ids")
        for o in self.orders:
            if not 0 <= o.capacity_bucket < capacity.shape[0]:
                raise ValueError(f"order {o.order_id}: no capacity bucket {o.capacity_bucket}")
            if o.current.pickup is not None or any(
                p.inbound_day is not None for p in o.current.parcels
            ):
                raise ValueError(
                    f"order {o.order_id}: click & collect and backordered allocations are not "
                    "re-optimised; leave the order out of the batch (its units stay reserved)"
                )
        problems = joint_violations(
            self, [o.current for o in self.orders], what="current allocations"
        )
        if problems:
            raise ValueError("the warm start is infeasible: " + "; ".join(problems[:5]))


@dataclass(frozen=True)
class BatchSettings:
    """Knobs of one batch run.

    ``time_limit_s``: CP-SAT's budget per sub-problem (the current allocation
    stands wherever it finds nothing better in time); ``num_workers``:
    CP-SAT threads per sub-problem (DESIGN section 8: set explicitly);
    ``max_orders_per_problem``: the largest model solved at once (bigger
    components are chunked); ``rounds``: chunking rounds for big components
    (a round that saves nothing ends them);
    ``candidates_per_sku`` / ``whole_order_candidates``: candidate pruning
    (None keeps every node that can meet the promise: exact, for small
    instances); ``backend``: ``scip`` (OR-Tools' linear-solver wrapper; takes
    the current allocation as a solution hint) or ``cp-sat``; ``mip_gap``:
    the relative gap at which ``scip`` stops (OPTIMAL means within it);
    ``reach``: how far from the orders that could gain the model looks (see
    :func:`reoptimise`; None: every order is free to move, the exact model);
    ``seed``: the random chunking round; ``work_limit`` (what-if replays)
    replaces the wall clock by a budget of work, so the result depends on
    the input alone, not on how busy the machine is: SCIP stops after that
    many branch-and-bound nodes, CP-SAT after that many deterministic
    seconds, and ``time_limit_s`` is not applied (None, the service's
    default: the wall clock, as ``oms reoptimise`` has always had it);
    ``opportunity``: forward-looking prices (:mod:`sourcing.forward`) added
    to each unit's cost in the model, so the batch re-assigns at the priced
    cost (reference + opportunity) and "never dearer" holds for that cost;
    the outcomes still report reference costs (None: the reference cost alone).
    """

    time_limit_s: float = 60.0
    num_workers: int = 1
    max_orders_per_problem: int = 4000
    rounds: int = 3
    candidates_per_sku: int | None = 2
    whole_order_candidates: int | None = 2
    backend: str = "scip"
    mip_gap: float = 1e-4
    reach: int | None = 2
    seed: int = 0
    opportunity: OpportunityCosts | None = field(default=None, compare=False)
    work_limit: float | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r} (known: {', '.join(BACKENDS)})")


@dataclass(frozen=True)
class OrderOutcome:
    """One order before and after, both priced by the independent evaluator."""

    order_id: str
    before: Evaluation
    after: Evaluation
    latest_day: int
    #: The component of orders it was solved with (-1: it was not free to move).
    #: Changes in one component depend on each other: apply them together.
    component: int = -1

    @property
    def changed(self) -> bool:
        return _plan_key(self.before) != _plan_key(self.after)

    @property
    def allocation(self) -> Allocation:
        return _allocation_of(self.after)

    @property
    def saving(self) -> int:
        return self.before.cost - self.after.cost

    @property
    def promise_kept(self) -> bool:
        return self.after.delivery_days <= self.latest_day


@dataclass(frozen=True)
class ProblemReport:
    """One solved sub-problem: size, how it ended, what it saved."""

    round: int
    orders: int
    chunked: bool
    status: str
    cost_before: int
    cost_after: int
    bound: float
    seconds: float


@dataclass(frozen=True)
class BatchResult:
    """The new allocation of every order, with totals before and after.

    ``status`` is OPTIMAL only when the answer is proven optimal for the whole
    model: no candidate pruned and no chain cut by ``reach`` (:attr:`exact`),
    no component chunked (chunks are optimal within their share of the
    stock, not necessarily jointly), every sub-problem proven.
    """

    outcomes: tuple[OrderOutcome, ...]
    problems: tuple[ProblemReport, ...]
    components: int
    largest_component: int
    #: Sub-problems not solved because none of their orders could gain.
    skipped: int
    seconds: float
    #: Whether the model covered every candidate: no node pruned from an order's
    #: candidates, no chain of holders cut by ``reach``.
    exact: bool = True

    @property
    def status(self) -> str:
        """OPTIMAL when the model was exact, no component was chunked and every part proven."""
        proven = all(p.status == OPTIMAL and not p.chunked for p in self.problems)
        return OPTIMAL if proven and self.exact else FEASIBLE

    @property
    def cost_before(self) -> int:
        return sum(o.before.cost for o in self.outcomes)

    @property
    def cost_after(self) -> int:
        return sum(o.after.cost for o in self.outcomes)

    @property
    def parcels_before(self) -> int:
        return sum(o.before.num_parcels for o in self.outcomes)

    @property
    def parcels_after(self) -> int:
        return sum(o.after.num_parcels for o in self.outcomes)

    @property
    def changed(self) -> tuple[OrderOutcome, ...]:
        return tuple(o for o in self.outcomes if o.changed)

    @property
    def promises_kept(self) -> int:
        return sum(o.promise_kept for o in self.outcomes)

    def check(self, instance: BatchInstance) -> list[str]:
        """Every rule the answer breaks, found by the independent evaluator (empty: valid).

        Per order: the new allocation is feasible on the pool, priced as
        reported, covers each line exactly as before and arrives by the
        promise; jointly: stock per (node, SKU) and capacity per (bucket,
        node) within the pool; and the total cost is not above the start.
        """
        problems: list[str] = []
        if [o.order_id for o in self.outcomes] != [o.order_id for o in instance.orders]:
            return ["the outcomes do not list the instance's orders in order"]
        allocations = [o.allocation for o in self.outcomes]
        for batch_order, outcome, allocation in zip(
            instance.orders, self.outcomes, allocations, strict=True
        ):
            where = f"order {batch_order.order_id}"
            after = evaluate(instance.network, batch_order.order, allocation, allow_partial=True)
            before = evaluate(
                instance.network, batch_order.order, batch_order.current, allow_partial=True
            )
            if not after.is_feasible:
                problems.append(f"{where}: {'; '.join(after.violations)}")
            if after.cost != outcome.after.cost or before.cost != outcome.before.cost:
                problems.append(f"{where}: reported costs differ from the evaluator's")
            if after.delivery_days > batch_order.latest_day:
                problems.append(
                    f"{where}: arrives on day {after.delivery_days}, "
                    f"promised by day {batch_order.latest_day}"
                )
            if _coverage(after) != _coverage(before):
                problems.append(f"{where}: covers {_coverage(after)}, before {_coverage(before)}")
        problems.extend(joint_violations(instance, allocations, what="new allocations"))
        if self.cost_after > self.cost_before:
            problems.append(f"total cost rose from {self.cost_before} to {self.cost_after}")
        return problems


def joint_violations(
    instance: BatchInstance, allocations: Sequence[Allocation], *, what: str
) -> list[str]:
    """Stock per (node, SKU) and capacity per (bucket, node) that ``allocations`` overdraw together.

    Scalar code over the allocations' parcels, independent of the model.
    """
    network = instance.network
    taken: dict[tuple[int, int], int] = {}
    shipped: dict[tuple[int, int], int] = {}
    for batch_order, allocation in zip(instance.orders, allocations, strict=True):
        for parcel in allocation.parcels:
            node = network.node_index.get(parcel.node_id)
            if node is None:
                return [f"{what}: order {batch_order.order_id} names unknown node {parcel.node_id}"]
            for line in parcel.lines:
                sku = network.sku_index.get(line.sku)
                if sku is None:
                    return [f"{what}: order {batch_order.order_id} names unknown SKU {line.sku}"]
                taken[(node, sku)] = taken.get((node, sku), 0) + line.qty
                key = (batch_order.capacity_bucket, node)
                shipped[key] = shipped.get(key, 0) + line.qty
    problems = []
    available = network.available
    for (node, sku), qty in sorted(taken.items()):
        if qty > int(available[node, sku]):
            problems.append(
                f"{what}: {qty} units of {network.sku_ids[sku]} at {network.node_ids[node]}, "
                f"{int(available[node, sku])} in the pool"
            )
    for (bucket, node), qty in sorted(shipped.items()):
        limit = int(instance.capacity_left[bucket, node])
        if limit < UNLIMITED_CAPACITY and qty > limit:
            problems.append(
                f"{what}: {qty} units from {network.node_ids[node]} in capacity bucket "
                f"{bucket}, {limit} left"
            )
    return problems


def _coverage(evaluation: Evaluation) -> dict[int, int]:
    covered: dict[int, int] = {}
    for parcel in evaluation.parcels:
        for line in parcel.lines:
            covered[line.line] = covered.get(line.line, 0) + line.qty
    return dict(sorted(covered.items()))


def _plan_key(evaluation: Evaluation) -> tuple[tuple[str, str, tuple[ParcelLine, ...]], ...]:
    return tuple(sorted((p.node_id, p.service, p.lines) for p in evaluation.parcels))


def _allocation_of(evaluation: Evaluation) -> Allocation:
    return Allocation(tuple(ParcelPlan(p.node_id, p.service, p.lines) for p in evaluation.parcels))
