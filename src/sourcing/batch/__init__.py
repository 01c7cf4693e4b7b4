"""Batch re-optimisation: re-assign many open orders jointly, within their promises.

DESIGN section 5. Orders placed one at a time are allocated greedily in time:
an early order may take the last units at a node that a later order needed
more. Re-assigning the orders not yet released, together, lowers the total
reference cost (DESIGN section 7) without breaking any promise.

Model (solved per independent piece, see *Decomposition*), on arrays built
by :func:`sourcing.costs.order_costs` so that every price is the reference one:

* data: orders o, each with demand ``Q[o, k]`` units of SKU k (what its
  current allocation covers, line by line), a promise ``L[o]`` (latest
  delivery day) and a capacity bucket ``b(o)`` (the day whose node capacity
  it draws on); candidate parcels ("slots") ``p = (o, n, v)``: order o ships
  from node n by service v, with fixed cost ``F[p]`` (base price + handling),
  cost per unit ``u[p, k]`` (per-kg price x weight - storage credit) and
  arrival ``eta[p]``; stock ``A[n, k]`` free for the batch (what is
  available plus what the batch's own orders hold now, their reservations
  being released into the pool); capacity ``C[b, n]`` left per bucket and node
  (likewise with the batch's own usage given back);
* variables: ``x[p, k]`` integer units of SKU k in parcel p; ``y[p]``
  binary, parcel p is sent;
* constraints: ``sum_{p of o} x[p, k] == Q[o, k]`` (each order covered as
  now); ``x[p, k] <= min(Q[o, k], A[n, k]) * y[p]``; at most one parcel per
  (order, node); ``sum_{p at n} x[p, k] <= A[n, k]`` (shared stock);
  ``sum_{p at n, b(o) = b} x[p, k] <= C[b, n]`` (shared daily capacity); a
  slot exists only if ``eta[p] <= L[o]``, so every promise is kept;
* objective: minimise ``sum F[p] y[p] + sum u[p, k] x[p, k]``, the total
  reference cost in integer millicents.

Solved as a MIP by SCIP through OR-Tools' linear-solver wrapper (default;
``backend="cp-sat"`` builds the same model for CP-SAT): on these models the
LP relaxation is strong and SCIP closes 4,000-order sub-problems at the root
node in 10-20 s, where CP-SAT stayed at a 20-30% gap after 10 s on 400 orders
(see :data:`BACKENDS`). A solver's answer is rounded and re-checked against
every row before it is used.

Candidate slots are kept small: per order, the nodes that can meet its
promise, pruned to the ``candidates_per_sku`` cheapest per unit for each SKU,
the ``whole_order_candidates`` cheapest that can ship the whole order alone,
and the nodes of its current allocation; per node only services that are not
dearer in every respect than another service meeting the promise.

Who can gain: an order's cost can never fall below its own optimum with
the whole pool to itself, so only an order whose plan costs more than that
(*unhappy*; tested with cheap bounds, see :func:`_unhappy`) can get cheaper,
and a sub-problem without one cannot save anything: it is not solved. The
orders free to move are the unhappy ones and, up to ``reach`` levels, the
orders holding contended stock or capacity a free order could use (a move
of theirs may make room); the others keep their plans and their units are
out of the pool (``reach=None``: everyone is free, the exact model).

Decomposition: a stock position (n, k) is *contended* when the free orders
that could draw on it want more than it holds (likewise a capacity (b, n)).
Free orders linked through contended positions form a component
(union-find); orders that share none are independent and solved apart,
small components bundled into one model up to ``max_orders_per_problem``
orders. A larger component is
solved in *chunks*: each chunk keeps the stock its orders hold now plus a
share of the free stock (in proportion to what its orders could use), so the
chunks are independent and their union stays feasible. The chunking is
redone in further rounds with other groupings (orders wanting the same
contended position, then those sharing a current position, then at random)
so that orders split in one round can trade in the next.

Warm start and never worse: every sub-problem is hinted with the current
allocation (a feasible solution, so SCIP starts with it as its incumbent;
CP-SAT also gets its cost as an upper bound) and given a time limit; if the
solver returns nothing strictly cheaper, the current allocation stands. So
the answer is always feasible and never dearer.
A last pass gives back to an order its current allocation when that costs
it no more and still fits, so no order changes for nothing.

Each sub-problem is a pure function of its data (:func:`solve_problem`:
arrays in, arrays out), which is what a Dask worker runs (:class:`DaskRunner`).
Every final allocation is re-priced by the independent evaluator
(:func:`sourcing.evaluate.evaluate`), and :meth:`BatchResult.check` re-checks
the whole answer with it: per-order cost, promise and coverage, joint stock
and capacity, and the total never above the start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

import numpy as np
from ortools.linear_solver import pywraplp
from ortools.sat.python import cp_model

from sourcing.costs import order_costs
from sourcing.evaluate import evaluate
from sourcing.model import (
    UNLIMITED_CAPACITY,
    Allocation,
    BoolArray,
    Evaluation,
    IntArray,
    Network,
    Order,
    ParcelLine,
    ParcelPlan,
)
from sourcing.orders import lines_by_sku, spread_over_lines

__all__ = [
    "BatchInstance",
    "BatchOrder",
    "BatchResult",
    "BatchSettings",
    "DaskRunner",
    "LocalRunner",
    "OrderOutcome",
    "Problem",
    "ProblemReport",
    "ProblemSolution",
    "Runner",
    "reoptimise",
    "solve_problem",
]

OPTIMAL: Final = "OPTIMAL"
#: Sub-problem solvers. Measured on chunks of the demo network's 10k book
#: (benchmarks/batch.py): SCIP, hinted with the current allocation, proved
#: 2,000-order chunks optimal in 4-9 s; CP-SAT was left at a 20-30% gap after
#: 10 s on 400-order ones; HiGHS through the same wrapper was as fast as SCIP
#: when it worked, but crashed (segfault) when given the hint and once found
#: no solution within 10 s without it, so it is not offered.
BACKENDS: Final = ("scip", "cp-sat")
FEASIBLE: Final = "FEASIBLE"
_ROUND_KEYS: Final = ("wanted", "current", "random")


# --------------------------------------------------------------------------- data


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
    ``seed``: the random chunking round.
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


# ------------------------------------------------------------------ sub-problems


@dataclass(frozen=True, eq=False)
class Problem:
    """One sub-problem, as plain arrays (cheap to pickle to a Dask worker).

    Local indices: O orders, P slots, X (slot, SKU) cells, D demand rows.

    * ``slot_order`` (P, local order), ``slot_node`` (P, network node),
      ``slot_fixed`` (P, millicents);
    * ``cell_slot`` (X, local slot), ``cell_sku`` (X, network SKU),
      ``cell_unit`` (X, millicents per unit), ``cell_upper`` (X, most units);
    * ``demand_cells``: the cells of each demand row, as a CSR pair
      (``demand_start`` (D + 1), ``demand_cell`` (X)) with ``demand_qty`` (D);
    * ``limits``: shared rows ``sum x[cells] <= limit``, CSR too
      (``limit_start``, ``limit_cell``, ``limit_value``): stock and capacity;
    * ``current_units`` (X) and ``current_open`` (P): the warm start.
    """

    key: int
    round: int
    chunked: bool
    orders: IntArray
    slot_order: IntArray
    slot_node: IntArray
    slot_fixed: IntArray
    cell_slot: IntArray
    cell_sku: IntArray
    cell_unit: IntArray
    cell_upper: IntArray
    demand_start: IntArray
    demand_cell: IntArray
    demand_qty: IntArray
    limit_start: IntArray
    limit_cell: IntArray
    limit_value: IntArray
    current_units: IntArray
    current_open: BoolArray
    time_limit_s: float
    num_workers: int
    backend: str = "scip"
    mip_gap: float = 1e-6


@dataclass(frozen=True, eq=False)
class ProblemSolution:
    """What :func:`solve_problem` returns: units per cell and open slots, and how it ended."""

    key: int
    units: IntArray
    opened: BoolArray
    cost_before: int
    cost_after: int
    status: str
    bound: float
    seconds: float


def _cost(problem: Problem, units: IntArray) -> int:
    carried = np.bincount(problem.cell_slot, weights=units, minlength=problem.slot_order.size)
    opened = carried > 0
    return int(problem.slot_fixed[opened].sum()) + int((problem.cell_unit * units).sum())


def solve_problem(problem: Problem) -> ProblemSolution:
    """Solve one sub-problem (the module's model); never worse than its warm start.

    A pure function: arrays in, arrays out; safe to run on any Dask worker.
    The solver gets the current allocation as a hint and its cost as an
    upper bound; whatever it returns that is not strictly cheaper (nothing in
    time, an equal plan) leaves the current allocation in place.
    """
    started = time.perf_counter()
    before = _cost(problem, problem.current_units)
    if problem.cell_slot.size == 0:
        found: IntArray | None = None
        status, bound = OPTIMAL, float(before)
    elif problem.backend == "cp-sat":
        found, status, bound = _solve_cpsat(problem, before)
    else:
        found, status, bound = _solve_scip(problem, before)
    if found is not None and _satisfies(problem, found):
        after = _cost(problem, found)
        if after < before:
            carried = np.bincount(
                problem.cell_slot, weights=found, minlength=problem.slot_order.size
            )
            return ProblemSolution(
                problem.key, found, carried > 0, before, after, status, bound,
                time.perf_counter() - started,
            )  # fmt: skip
    # Nothing cheaper: the warm start stands (proven optimal if the bound says so).
    proven = status == OPTIMAL or bound >= before
    return ProblemSolution(
        problem.key, problem.current_units, problem.current_open, before, before,
        OPTIMAL if proven else FEASIBLE, bound, time.perf_counter() - started,
    )  # fmt: skip


def _satisfies(problem: Problem, units: IntArray) -> bool:
    """Whether ``units`` meets every row of the model exactly (a solver's answer is re-checked)."""
    if np.any(units < 0) or np.any(units > problem.cell_upper):
        return False
    demand = np.add.reduceat(units[problem.demand_cell], problem.demand_start[:-1])
    if not np.array_equal(demand, problem.demand_qty):
        return False
    if problem.limit_value.size:
        used = np.add.reduceat(units[problem.limit_cell], problem.limit_start[:-1])
        if np.any(used > problem.limit_value):
            return False
    carried = np.bincount(problem.cell_slot, weights=units, minlength=problem.slot_order.size)
    return all(np.count_nonzero(carried[g]) <= 1 for g in _same_node_groups(problem))


def _same_node_groups(problem: Problem) -> list[IntArray]:
    """Slots of one (order, node) with more than one service (they are adjacent)."""
    pair = problem.slot_order * (int(problem.slot_node.max()) + 1) + problem.slot_node
    groups = np.split(np.arange(pair.size), np.flatnonzero(np.diff(pair)) + 1)
    return [g for g in groups if g.size > 1]


def _solve_scip(problem: Problem, before: int) -> tuple[IntArray | None, str, float]:
    """The model as a MIP for SCIP (OR-Tools' linear-solver wrapper), hinted with the warm start."""
    solver = pywraplp.Solver.CreateSolver("SCIP")
    if solver is None:  # pragma: no cover - OR-Tools always bundles SCIP
        raise RuntimeError("OR-Tools was built without SCIP")
    infinity = solver.infinity()
    n_slots = problem.slot_order.size
    opens = [solver.BoolVar(f"y{p}") for p in range(n_slots)]
    uppers = problem.cell_upper.tolist()
    units = [solver.IntVar(0, upper, f"x{c}") for c, upper in enumerate(uppers)]
    for c, slot in enumerate(problem.cell_slot.tolist()):
        link = solver.Constraint(-infinity, 0)
        link.SetCoefficient(units[c], 1)
        link.SetCoefficient(opens[slot], -uppers[c])
    rows = (
        (problem.demand_start, problem.demand_cell, problem.demand_qty, True),
        (problem.limit_start, problem.limit_cell, problem.limit_value, False),
    )
    for start_array, cell_array, value_array, exact in rows:
        start, cells = start_array.tolist(), cell_array.tolist()
        for row, value in enumerate(value_array.tolist()):
            constraint = solver.Constraint(value if exact else -infinity, value)
            for c in cells[start[row] : start[row + 1]]:
                constraint.SetCoefficient(units[c], 1)
    for group in _same_node_groups(problem):
        constraint = solver.Constraint(-infinity, 1)
        for p in group.tolist():
            constraint.SetCoefficient(opens[p], 1)
    # No cutoff row: the hint is an incumbent of cost ``before`` already, and a
    # dense row over every variable slowed SCIP's LP down.
    objective = solver.Objective()
    for p, fixed in enumerate(problem.slot_fixed.tolist()):
        objective.SetCoefficient(opens[p], fixed)
    for c, unit in enumerate(problem.cell_unit.tolist()):
        objective.SetCoefficient(units[c], unit)
    objective.SetMinimization()
    solver.SetHint(
        [*opens, *units],
        [float(v) for v in problem.current_open.tolist()]
        + [float(v) for v in problem.current_units.tolist()],
    )
    solver.SetTimeLimit(max(10, int(problem.time_limit_s * 1000)))
    solver.SetNumThreads(problem.num_workers)
    parameters = pywraplp.MPSolverParameters()
    parameters.SetDoubleParam(parameters.RELATIVE_MIP_GAP, problem.mip_gap)
    status = solver.Solve(parameters)
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        return None, FEASIBLE, float("-inf")
    found = np.rint([v.solution_value() for v in units]).astype(np.int64)
    bound = float(objective.BestBound())
    return found, OPTIMAL if status == pywraplp.Solver.OPTIMAL else FEASIBLE, bound


def _solve_cpsat(problem: Problem, before: int) -> tuple[IntArray | None, str, float]:
    """The model for CP-SAT, hinted with the warm start."""
    n_slots, n_cells = problem.slot_order.size, problem.cell_slot.size
    model = cp_model.CpModel()
    opens = [model.new_bool_var(f"y{p}") for p in range(n_slots)]
    uppers = problem.cell_upper.tolist()
    units = [model.new_int_var(0, uppers[c], f"x{c}") for c in range(n_cells)]
    cell_slot = problem.cell_slot.tolist()
    for c in range(n_cells):
        model.add(units[c] <= uppers[c] * opens[cell_slot[c]])
    start, cells, qty = (
        problem.demand_start.tolist(),
        problem.demand_cell.tolist(),
        problem.demand_qty.tolist(),
    )
    for row in range(len(qty)):
        model.add(sum(units[c] for c in cells[start[row] : start[row + 1]]) == qty[row])
    for group in _same_node_groups(problem):
        model.add_at_most_one(opens[p] for p in group.tolist())
    start, cells, value = (
        problem.limit_start.tolist(),
        problem.limit_cell.tolist(),
        problem.limit_value.tolist(),
    )
    for row in range(len(value)):
        model.add(sum(units[c] for c in cells[start[row] : start[row + 1]]) <= value[row])
    cost = cp_model.LinearExpr.weighted_sum(
        [*opens, *units], [*problem.slot_fixed.tolist(), *problem.cell_unit.tolist()]
    )
    model.add(cost <= before)
    model.minimize(cost)
    current_open = problem.current_open.tolist()
    current_units = problem.current_units.tolist()
    for p in range(n_slots):
        model.add_hint(opens[p], bool(current_open[p]))
    for c in range(n_cells):
        model.add_hint(units[c], current_units[c])
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = problem.num_workers
    solver.parameters.max_time_in_seconds = max(0.01, problem.time_limit_s)
    solver.parameters.random_seed = 0
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, FEASIBLE, float("-inf")
    solution = np.asarray(solver.response_proto.solution, dtype=np.int64)
    found = solution[n_slots : n_slots + n_cells]
    bound = float(solver.best_objective_bound)
    return found, OPTIMAL if status == cp_model.OPTIMAL else FEASIBLE, bound


# ------------------------------------------------------------------------ runners

_P = TypeVar("_P")
_S = TypeVar("_S")


class Runner(Protocol):
    """Runs a pure function over many inputs, yielding results as they finish (any order)."""

    def map_unordered(self, function: Callable[[_P], _S], items: Sequence[_P]) -> Iterator[_S]: ...


class LocalRunner:
    """In this process, one after another."""

    def map_unordered(self, function: Callable[[_P], _S], items: Sequence[_P]) -> Iterator[_S]:
        return (function(item) for item in items)


class DaskRunner:
    """On a Dask cluster through a ``distributed.Client`` (results as they complete)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def map_unordered(self, function: Callable[[_P], _S], items: Sequence[_P]) -> Iterator[_S]:
        from distributed import as_completed

        if not items:
            return iter(())
        # Inputs go to the workers directly (scattered), not inside the task graph.
        # (hash=False: tokenizing large inputs to name them cost about a second each.)
        data = self.client.scatter(list(items), hash=False)
        futures = self.client.map(function, data, pure=False)
        return (future.result() for future in as_completed(futures))  # type: ignore[no-untyped-call]


# ------------------------------------------------------------------ preparation


@dataclass(frozen=True, eq=False)
class _Catalogue:
    """Every order's candidate slots and cells, flat and sorted by order (CSR by order).

    Slots of one order are sorted by node, so slots of one (order, node) are adjacent.
    """

    slot_start: IntArray  # O + 1
    slot_order: IntArray
    slot_node: IntArray
    slot_service: IntArray
    slot_fixed: IntArray
    cell_start: IntArray  # O + 1
    cell_slot: IntArray  # global slot index
    cell_sku: IntArray
    cell_unit: IntArray
    cell_upper: IntArray
    demand_order: IntArray
    demand_sku: IntArray
    demand_qty: IntArray
    order_units: IntArray  # O: units each order ships
    order_bucket: IntArray  # O
    before: tuple[Evaluation, ...]
    pruned: int  # candidate nodes dropped by pruning, over all orders


def _order_rows(
    network: Network, pool: IntArray, batch_order: BatchOrder, settings: BatchSettings
) -> tuple[dict[str, IntArray], IntArray, Evaluation, int]:
    """Candidate slots and cells of one order, its current units per cell, its evaluation,
    and how many nodes that could serve it were pruned from its candidates."""
    order = batch_order.order
    before = evaluate(network, order, batch_order.current, allow_partial=True)
    if not before.is_feasible:
        raise ValueError(
            f"order {batch_order.order_id}: current allocation is infeasible on the pool: "
            + "; ".join(before.violations)
        )
    if before.delivery_days > batch_order.latest_day:
        raise ValueError(
            f"order {batch_order.order_id}: current allocation arrives on day "
            f"{before.delivery_days}, after its promise (day {batch_order.latest_day})"
        )
    current: dict[tuple[int, int, int], int] = {}  # (node, service, sku) -> units
    wanted: dict[int, int] = {}
    for parcel in batch_order.current.parcels:
        n = network.node_index[parcel.node_id]
        v = network.service_index[parcel.service]
        for line in parcel.lines:
            k = network.sku_index[line.sku]
            current[(n, v, k)] = current.get((n, v, k), 0) + line.qty
            wanted[k] = wanted.get(k, 0) + line.qty
    skus = np.array(sorted(wanted), dtype=np.int64)
    demand = np.array([wanted[k] for k in skus.tolist()], dtype=np.int64)
    empty: dict[str, IntArray] = {}
    if skus.size == 0:
        return empty, np.zeros(0, dtype=np.int64), before, 0
    dest = order.destination
    costs = order_costs(network, dest.lat, dest.lon, skus, demand, available=pool)
    eligible = costs.usable & (costs.arrival <= batch_order.latest_day)
    # Cost-only dominance: with the promise enforced by eligibility, a service
    # that is no cheaper per parcel and per unit than another eligible one is
    # never needed (ties keep the lower index).
    n_services = eligible.shape[1]
    keep = eligible.copy()
    for b in range(n_services):
        for a in range(n_services):
            if a == b:
                continue
            no_dearer = (
                eligible[:, a]
                & (costs.fixed[:, a] <= costs.fixed[:, b])
                & np.all(costs.unit[:, a, :] <= costs.unit[:, b, :], axis=1)
            )
            strictly = (costs.fixed[:, a] < costs.fixed[:, b]) | np.any(
                costs.unit[:, a, :] < costs.unit[:, b, :], axis=1
            )
            keep[:, b] &= ~(no_dearer & (strictly | (a < b)))
    # The current parcels stay candidates whatever the pruning says.
    position = {int(n): c for c, n in enumerate(costs.nodes.tolist())}
    column = {int(v): j for j, v in enumerate(costs.services.tolist())}
    for n, v, _ in current:
        keep[position[n], column[v]] = True
    avail = costs.available  # C x K, clipped to the demand
    has_slot = keep.any(axis=1)
    big = np.iinfo(np.int64).max // 4
    # Per-unit price of each SKU from each node alone (its cheapest kept service).
    qty = np.maximum(avail, 1)
    per_unit = np.where(
        keep[:, :, None] & (avail[:, None, :] > 0),
        (costs.fixed[:, :, None] + costs.unit * avail[:, None, :]) / qty[:, None, :],
        np.inf,
    ).min(axis=1)  # C x K
    chosen = np.zeros(len(costs.nodes), dtype=np.bool_)
    for n, _, _ in current:
        chosen[position[n]] = True
    if settings.candidates_per_sku is None:
        chosen |= has_slot
    else:
        top = settings.candidates_per_sku
        ranked = np.argsort(per_unit, axis=0, kind="stable")[:top]  # top x K
        finite = np.isfinite(np.take_along_axis(per_unit, ranked, axis=0))
        chosen[ranked[finite]] = True
    covers = np.all(avail >= demand[None, :], axis=1) & has_slot
    if settings.whole_order_candidates is None:
        chosen |= covers
    elif settings.whole_order_candidates > 0 and covers.any():
        whole = np.where(keep & covers[:, None], costs.fixed + costs.unit @ demand, big).min(axis=1)
        ranked_whole = np.argsort(whole, kind="stable")[: settings.whole_order_candidates]
        chosen[ranked_whole[whole[ranked_whole] < big]] = True
    chosen &= has_slot
    pruned = int(np.count_nonzero(has_slot & ~chosen))
    rows_c, rows_v = np.nonzero(keep & chosen[:, None])
    # Slots sorted by network node (then service): one (order, node)'s slots are adjacent.
    by_node = np.lexsort((rows_v, costs.nodes[rows_c]))
    rows_c, rows_v = rows_c[by_node], rows_v[by_node]
    cell_slot, cell_k = np.nonzero(avail[rows_c] > 0)
    cell_c, cell_v = rows_c[cell_slot], rows_v[cell_slot]
    nodes = costs.nodes[rows_c]
    current_units = np.array(
        [
            current.get((int(costs.nodes[c]), int(costs.services[v]), int(skus[k])), 0)
            for c, v, k in zip(cell_c.tolist(), cell_v.tolist(), cell_k.tolist(), strict=True)
        ],
        dtype=np.int64,
    )
    rows = {
        "slot_node": nodes.astype(np.int64),
        "slot_service": costs.services[rows_v].astype(np.int64),
        "slot_fixed": costs.fixed[rows_c, rows_v].astype(np.int64),
        "cell_slot": cell_slot.astype(np.int64),
        "cell_sku": skus[cell_k],
        "cell_unit": costs.unit[cell_c, cell_v, cell_k].astype(np.int64),
        "cell_upper": avail[cell_c, cell_k].astype(np.int64),
        "demand_sku": skus,
        "demand_qty": demand,
    }
    if int(current_units.sum()) != int(demand.sum()):
        raise AssertionError(f"order {batch_order.order_id}: current units not all candidates")
    return rows, current_units, before, pruned


#: Orders per catalogue task (the per-order preparation runs on the runner too).
_CATALOGUE_BLOCK: Final = 4000

_ROW_NAMES: Final = (
    "slot_node", "slot_service", "slot_fixed", "cell_slot", "cell_sku", "cell_unit",
    "cell_upper", "demand_sku", "demand_qty",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class _Block:
    """Rows of a run of consecutive orders (``first`` onwards), order-local, flattened."""

    first: int
    rows: dict[str, IntArray]
    slot_counts: IntArray
    cell_counts: IntArray
    demand_counts: IntArray
    current: IntArray
    before: tuple[Evaluation, ...]
    pruned: int


def _catalogue_block(
    task: tuple[Network, int, tuple[BatchOrder, ...], BatchSettings],
) -> _Block:
    """A pure task: the candidate rows of a run of orders (see :func:`_order_rows`)."""
    network, first, orders, settings = task
    pool = network.available
    parts: dict[str, list[IntArray]] = {name: [] for name in _ROW_NAMES}
    counts: list[tuple[int, int, int]] = []
    currents: list[IntArray] = []
    befores: list[Evaluation] = []
    pruned = 0
    for batch_order in orders:
        rows, current, before, pruned_here = _order_rows(network, pool, batch_order, settings)
        pruned += pruned_here
        befores.append(before)
        currents.append(current)
        if not rows:
            counts.append((0, 0, 0))
            continue
        counts.append((rows["slot_node"].size, rows["cell_slot"].size, rows["demand_sku"].size))
        for name in _ROW_NAMES:
            parts[name].append(rows[name])
    empty = np.zeros(0, dtype=np.int64)
    slot_counts, cell_counts, demand_counts = (
        np.array(c, dtype=np.int64).reshape(-1) for c in zip(*counts, strict=True)
    ) if counts else (empty, empty, empty)  # fmt: skip
    return _Block(
        first=first,
        rows={n: np.concatenate(v) if v else empty for n, v in parts.items()},
        slot_counts=slot_counts,
        cell_counts=cell_counts,
        demand_counts=demand_counts,
        current=np.concatenate(currents) if currents else empty,
        before=tuple(befores),
        pruned=pruned,
    )


def _catalogue(
    instance: BatchInstance, settings: BatchSettings, runner: Runner
) -> tuple[_Catalogue, IntArray]:
    """Every order's rows, flattened in order; and the current units per cell (the warm start)."""
    tasks = [
        (instance.network, first, instance.orders[first : first + _CATALOGUE_BLOCK], settings)
        for first in range(0, len(instance.orders), _CATALOGUE_BLOCK)
    ]
    blocks = sorted(runner.map_unordered(_catalogue_block, tasks), key=lambda b: b.first)
    empty = np.zeros(0, dtype=np.int64)

    def joined(arrays: list[IntArray]) -> IntArray:
        return np.concatenate(arrays).astype(np.int64) if arrays else empty

    slot_counts = joined([b.slot_counts for b in blocks])
    cell_counts = joined([b.cell_counts for b in blocks])
    demand_counts = joined([b.demand_counts for b in blocks])
    rows = {name: joined([b.rows[name] for b in blocks]) for name in _ROW_NAMES}
    slot_start = np.concatenate(([0], np.cumsum(slot_counts))).astype(np.int64)
    cell_start = np.concatenate(([0], np.cumsum(cell_counts))).astype(np.int64)
    order_ids = np.arange(slot_counts.size, dtype=np.int64)
    # Cells name their order's slots locally: shift them to the global slot numbering.
    cell_slot = rows["cell_slot"] + np.repeat(slot_start[:-1], cell_counts)
    catalogue = _Catalogue(
        slot_start=slot_start,
        slot_order=np.repeat(order_ids, slot_counts),
        slot_node=rows["slot_node"],
        slot_service=rows["slot_service"],
        slot_fixed=rows["slot_fixed"],
        cell_start=cell_start,
        cell_slot=cell_slot,
        cell_sku=rows["cell_sku"],
        cell_unit=rows["cell_unit"],
        cell_upper=rows["cell_upper"],
        demand_order=np.repeat(order_ids, demand_counts),
        demand_sku=rows["demand_sku"],
        demand_qty=rows["demand_qty"],
        order_units=np.bincount(
            np.repeat(order_ids, demand_counts),
            weights=rows["demand_qty"],
            minlength=order_ids.size,
        ).astype(np.int64),
        order_bucket=np.array([o.capacity_bucket for o in instance.orders], dtype=np.int64),
        before=tuple(e for b in blocks for e in b.before),
        pruned=sum(b.pruned for b in blocks),
    )
    return catalogue, joined([b.current for b in blocks])


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union_all(self, members: Iterable[int]) -> None:
        it = iter(members)
        first = next(it, None)
        if first is None:
            return
        root = self.find(first)
        for other in it:
            r = self.find(other)
            if r != root:
                self.parent[r] = root


@dataclass(frozen=True, eq=False)
class _Limits:
    """Shared rows of the whole instance: stock per (node, SKU), capacity per (bucket, node).

    Each cell of the catalogue belongs to one stock row and one capacity row;
    a row is *contended* when the most its cells could take exceeds its limit.
    """

    cell_stock_row: IntArray
    cell_once: IntArray
    stock_limit: IntArray
    stock_contended: BoolArray
    cell_capacity_row: IntArray
    capacity_limit: IntArray
    capacity_contended: BoolArray


def _limits(
    instance: BatchInstance, cat: _Catalogue, active: BoolArray, units: IntArray
) -> _Limits:
    """Shared rows and their limits for the ``active`` orders (the others stay as they are:
    what they hold is taken out of the limits)."""
    network = instance.network
    n_skus, n_nodes = len(network.sku_ids), len(network.node_ids)
    cell_node = cat.slot_node[cat.cell_slot]
    cell_order = cat.slot_order[cat.cell_slot]
    stock_keys, cell_stock_row = np.unique(cell_node * n_skus + cat.cell_sku, return_inverse=True)
    bucket_node = cat.order_bucket[cell_order] * n_nodes + cell_node
    capacity_keys, cell_capacity_row = np.unique(bucket_node, return_inverse=True)
    cell_active = active[cell_order]
    fixed_units = np.where(cell_active, 0, units)
    # The most an order can take from a position is its demand there, counted
    # once per (order, position) however many services could carry it.
    once = _once_per_position(cat, cell_order, cell_stock_row)
    active_once = np.where(cell_active, once, 0)
    stock_wanted = np.bincount(cell_stock_row, weights=active_once, minlength=stock_keys.size)
    capacity_wanted = np.bincount(
        cell_capacity_row, weights=active_once, minlength=capacity_keys.size
    )
    stock_limit = network.available.reshape(-1)[stock_keys].astype(np.int64) - np.bincount(
        cell_stock_row, weights=fixed_units, minlength=stock_keys.size
    ).astype(np.int64)
    capacity_limit = instance.capacity_left.reshape(-1)[capacity_keys].astype(
        np.int64
    ) - np.bincount(cell_capacity_row, weights=fixed_units, minlength=capacity_keys.size).astype(
        np.int64
    )
    return _Limits(
        cell_stock_row=cell_stock_row.astype(np.int64),
        cell_once=once,
        stock_limit=stock_limit,
        stock_contended=stock_wanted > stock_limit,
        cell_capacity_row=cell_capacity_row.astype(np.int64),
        capacity_limit=capacity_limit,
        capacity_contended=(capacity_wanted > capacity_limit)
        & (capacity_limit < UNLIMITED_CAPACITY // 2),
    )


def _unhappy(cat: _Catalogue, units: IntArray) -> BoolArray:
    """Orders whose plan may cost more than their own optimum with the whole pool to themselves.

    Only such an order can get cheaper in any re-assignment (an order's cost
    never falls below that optimum), so a sub-problem without one cannot
    save anything. Tested by bounds: an order is content when its cost is at
    most both its best single parcel and a lower bound on any plan of two or
    more parcels (its two cheapest parcel fixed costs plus, per SKU, the
    cheapest unit cost times the demand). Conservative: an order flagged may
    still be at its optimum.
    """
    n_orders = cat.order_units.size
    n_skus = int(cat.cell_sku.max(initial=0)) + 1
    cell_order = cat.slot_order[cat.cell_slot]
    # Current cost per order.
    carried = np.bincount(cat.cell_slot, weights=units, minlength=cat.slot_order.size) > 0
    now = np.bincount(
        cat.slot_order, weights=np.where(carried, cat.slot_fixed, 0), minlength=n_orders
    ) + np.bincount(cell_order, weights=cat.cell_unit * units, minlength=n_orders)
    # Demand of each cell's (order, SKU).
    demand_key = cat.demand_order * n_skus + cat.demand_sku
    cell_key = cell_order * n_skus + cat.cell_sku
    at = np.searchsorted(demand_key, cell_key)
    cell_demand = cat.demand_qty[at]
    # Best single parcel: slots whose cells cover every SKU of the order in full.
    full = cat.cell_upper >= cell_demand
    skus_covered = np.bincount(cat.cell_slot, weights=full, minlength=cat.slot_order.size)
    skus_wanted = np.bincount(cat.demand_order, minlength=n_orders)
    covers = skus_covered == skus_wanted[cat.slot_order]
    single = cat.slot_fixed + np.bincount(
        cat.cell_slot, weights=cat.cell_unit * cell_demand, minlength=cat.slot_order.size
    )
    best_single = np.full(n_orders, np.inf)
    np.minimum.at(best_single, cat.slot_order[covers], single[covers])
    # Two or more parcels: the two least fixed costs plus the least unit cost per SKU.
    by_fixed = np.lexsort((cat.slot_fixed, cat.slot_order))
    rank = np.arange(by_fixed.size) - np.repeat(cat.slot_start[:-1], np.diff(cat.slot_start))
    two = np.bincount(
        cat.slot_order[by_fixed],
        weights=np.where(rank < 2, cat.slot_fixed[by_fixed], 0),
        minlength=n_orders,
    )
    least_unit = np.full(demand_key.size, np.inf)
    np.minimum.at(least_unit, at, cat.cell_unit.astype(np.float64))
    units_bound = np.bincount(
        cat.demand_order, weights=least_unit * cat.demand_qty, minlength=n_orders
    )
    has_two = np.diff(cat.slot_start) >= 2
    bound = np.minimum(best_single, np.where(has_two, two + units_bound, np.inf))
    unhappy: BoolArray = now > bound
    return unhappy


def _movable(
    cat: _Catalogue, limits: _Limits, units: IntArray, unhappy: BoolArray, reach: int | None
) -> tuple[BoolArray, bool]:
    """The orders free to move: those that could gain, and ``reach`` levels of holders.

    A holder is an order holding units of a contended position (stock or
    capacity) that a free order could draw on: the unhappy order may need it
    to move away, and its move may in turn need another holder to move. The
    rest keep their plans (what they hold is out of the pool). None: all.

    Also returns whether the set is closed (no holder left out): then holding
    the rest fixed loses nothing.
    """
    if reach is None:
        return np.ones(cat.order_units.size, dtype=np.bool_), True
    cell_order = cat.slot_order[cat.cell_slot]
    movable = unhappy.copy()
    holding = units > 0
    for level in range(reach + 1):
        grown = movable.copy()
        for rows, contended, n_rows in (
            (limits.cell_stock_row, limits.stock_contended, limits.stock_limit.size),
            (limits.cell_capacity_row, limits.capacity_contended, limits.capacity_limit.size),
        ):
            wanted = np.zeros(n_rows, dtype=np.bool_)
            wanted[rows[movable[cell_order] & contended[rows]]] = True
            grown[cell_order[wanted[rows] & holding]] = True
        if np.array_equal(grown, movable):
            return movable, True
        if level == reach:
            break
        movable = grown
    return movable, False


def _once_per_position(cat: _Catalogue, cell_order: IntArray, cell_stock_row: IntArray) -> IntArray:
    """Each cell's upper bound, counted once per (order, stock row): other services' cells get 0."""
    key = cell_order * (int(cell_stock_row.max(initial=0)) + 1) + cell_stock_row
    _, first = np.unique(key, return_index=True)
    weights = np.zeros(cell_order.size, dtype=np.int64)
    weights[first] = cat.cell_upper[first]
    return weights


def _components(
    n_orders: int, cat: _Catalogue, limits: _Limits, active: BoolArray
) -> list[IntArray]:
    """Active orders linked through contended stock or capacity rows (sorted index arrays)."""
    uf = _UnionFind(n_orders)
    cell_order = cat.slot_order[cat.cell_slot]
    for rows, contended in (
        (limits.cell_stock_row, limits.stock_contended),
        (limits.cell_capacity_row, limits.capacity_contended),
    ):
        hot = contended[rows] & active[cell_order]
        if not hot.any():
            continue
        row, orders = rows[hot], cell_order[hot]
        order_by = np.lexsort((orders, row))
        row, orders = row[order_by], orders[order_by]
        for group in np.split(orders, np.flatnonzero(np.diff(row)) + 1):
            uf.union_all(np.unique(group).tolist())
    members = np.flatnonzero(active)
    if members.size == 0:
        return []
    roots = np.array([uf.find(o) for o in members.tolist()], dtype=np.int64)
    by_root = np.argsort(roots, kind="stable")
    return np.split(members[by_root], np.flatnonzero(np.diff(roots[by_root])) + 1)


def _csr(groups: IntArray, members: IntArray, n_groups: int) -> tuple[IntArray, IntArray]:
    """(start, members sorted by group) for rows ``groups`` of ``members``."""
    order = np.argsort(groups, kind="stable")
    counts = np.bincount(groups, minlength=n_groups)
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64), members[order]


def _problem(
    key: int,
    round_: int,
    chunked: bool,
    orders: IntArray,
    cat: _Catalogue,
    limits: _Limits,
    units: IntArray,
    settings: BatchSettings,
    shares: tuple[_Share, _Share] | None = None,
) -> Problem:
    """The sub-problem of ``orders`` (sorted).

    Shared rows keep the instance's limits, except those in ``shares`` (a
    chunk's share of the contended stock and capacity rows).
    """
    slots = np.concatenate(
        [np.arange(cat.slot_start[o], cat.slot_start[o + 1]) for o in orders.tolist()]
    ).astype(np.int64)
    cells = np.concatenate(
        [np.arange(cat.cell_start[o], cat.cell_start[o + 1]) for o in orders.tolist()]
    ).astype(np.int64)
    local_slot = np.full(cat.slot_order.size, -1, dtype=np.int64)
    local_slot[slots] = np.arange(slots.size)
    local_order = np.searchsorted(orders, cat.slot_order[slots])
    cell_slot = local_slot[cat.cell_slot[cells]]
    cell_upper = cat.cell_upper[cells].copy()
    # Demand rows: (local order, SKU), one per distinct pair.
    cell_order = local_order[cell_slot]
    row_key = cell_order * (int(cat.cell_sku.max()) + 1) + cat.cell_sku[cells]
    row_ids, cell_row = np.unique(row_key, return_inverse=True)
    demand_start, demand_cell = _csr(cell_row, np.arange(cells.size), row_ids.size)
    dem_rows = np.concatenate(
        [
            np.arange(
                np.searchsorted(cat.demand_order, o), np.searchsorted(cat.demand_order, o, "right")
            )
            for o in orders.tolist()
        ]
    ).astype(np.int64)
    dem_key = (
        np.searchsorted(orders, cat.demand_order[dem_rows]) * (int(cat.cell_sku.max()) + 1)
        + cat.demand_sku[dem_rows]
    )
    qty_by_key = dict(zip(dem_key.tolist(), cat.demand_qty[dem_rows].tolist(), strict=True))
    demand_qty = np.array([qty_by_key[k] for k in row_ids.tolist()], dtype=np.int64)
    # Shared rows that could bind inside this sub-problem.
    limit_groups: list[IntArray] = []
    limit_values: list[int] = []
    for rows, limit, share in (
        (limits.cell_stock_row[cells], limits.stock_limit, shares[0] if shares else None),
        (limits.cell_capacity_row[cells], limits.capacity_limit, shares[1] if shares else None),
    ):
        ids, inverse = np.unique(rows, return_inverse=True)
        most = np.bincount(inverse, weights=cell_upper, minlength=ids.size)
        values = limit[ids].copy()
        if share is not None and share.rows.size:
            at = np.searchsorted(share.rows, ids)
            hit = (at < share.rows.size) & (share.rows[np.minimum(at, share.rows.size - 1)] == ids)
            values[hit] = share.values[at[hit]]
        np.minimum(cell_upper, values[inverse], out=cell_upper)
        binding = np.flatnonzero(most > values)
        if binding.size == 0:
            continue
        member = np.isin(inverse, binding)
        start, grouped = _csr(
            np.searchsorted(binding, inverse[member]), np.flatnonzero(member), binding.size
        )
        for r in range(binding.size):
            limit_groups.append(grouped[start[r] : start[r + 1]])
        limit_values.extend(values[binding].tolist())
    limit_start = np.concatenate(([0], np.cumsum([g.size for g in limit_groups]))).astype(np.int64)
    limit_cell = (
        np.concatenate(limit_groups).astype(np.int64)
        if limit_groups
        else np.zeros(0, dtype=np.int64)
    )
    current_units = units[cells].copy()
    carried = np.bincount(cell_slot, weights=current_units, minlength=slots.size)
    return Problem(
        key=key,
        round=round_,
        chunked=chunked,
        orders=orders,
        slot_order=local_order.astype(np.int64),
        slot_node=cat.slot_node[slots],
        slot_fixed=cat.slot_fixed[slots],
        cell_slot=cell_slot,
        cell_sku=cat.cell_sku[cells],
        cell_unit=cat.cell_unit[cells],
        cell_upper=cell_upper,
        demand_start=demand_start,
        demand_cell=demand_cell.astype(np.int64),
        demand_qty=demand_qty,
        limit_start=limit_start,
        limit_cell=limit_cell,
        limit_value=np.array(limit_values, dtype=np.int64),
        current_units=current_units,
        current_open=carried > 0,
        time_limit_s=settings.time_limit_s,
        num_workers=settings.num_workers,
        backend=settings.backend,
        mip_gap=settings.mip_gap,
    )


def _bins(components: list[IntArray], size: int) -> list[IntArray]:
    """Small components bundled (first fit, in order) into groups of at most ``size`` orders."""
    bins: list[list[IntArray]] = []
    counts: list[int] = []
    for component in components:
        if bins and counts[-1] + component.size <= size:
            bins[-1].append(component)
            counts[-1] += component.size
        else:
            bins.append([component])
            counts.append(component.size)
    return [np.sort(np.concatenate(b)) for b in bins]


def _chunk_keys(
    component: IntArray,
    cat: _Catalogue,
    limits: _Limits,
    units: IntArray,
    how: str,
    rng: np.random.Generator,
) -> IntArray:
    """A grouping key per order of the component: orders with equal keys go in one chunk."""
    if how == "random":
        return rng.permutation(component.size).astype(np.int64)
    key = np.full(component.size, -1, dtype=np.int64)
    for i, o in enumerate(component.tolist()):
        cells = np.arange(cat.cell_start[o], cat.cell_start[o + 1])
        rows = limits.cell_stock_row[cells]
        hot = limits.stock_contended[rows]
        if not hot.any():
            continue
        if how == "current":
            held = hot & (units[cells] > 0)
            if held.any():
                key[i] = int(rows[held][np.argmax(units[cells][held])])
                continue
        # The contended position it could take most cheaply per unit.
        cheapest = np.argmin(np.where(hot, cat.cell_unit[cells], np.iinfo(np.int64).max))
        key[i] = int(rows[cheapest])
    return key


def _chunks(component: IntArray, keys: IntArray, size: int) -> list[IntArray]:
    order = np.argsort(keys, kind="stable")
    ordered = component[order]
    return [np.sort(ordered[i : i + size]) for i in range(0, ordered.size, size)]


@dataclass(frozen=True, eq=False)
class _Share:
    """A chunk's limits on some shared rows: ``rows`` (sorted row ids) and their ``values``."""

    rows: IntArray
    values: IntArray


def _shares(
    chunk_of_cell: IntArray,
    row_of_cell: IntArray,
    want: IntArray,
    held: IntArray,
    limit: IntArray,
    contended: BoolArray,
    n_chunks: int,
) -> list[_Share]:
    """Per chunk, for each contended row its cells touch: what the chunk holds there now
    plus its share of the row's free units, in proportion to what it could take.

    Every order drawing on a contended row is in the component being chunked,
    so the shares of all chunks add up to at most the row's limit.
    """
    hot = contended[row_of_cell]
    chunk, row = chunk_of_cell[hot], row_of_cell[hot]
    pairs, inverse = np.unique(chunk * limit.size + row, return_inverse=True)
    pair_held = np.bincount(inverse, weights=held[hot], minlength=pairs.size)
    pair_want = np.bincount(inverse, weights=want[hot], minlength=pairs.size)
    pair_chunk, pair_row = pairs // limit.size, pairs % limit.size
    row_held = np.bincount(pair_row, weights=pair_held, minlength=limit.size)
    row_want = np.bincount(pair_row, weights=pair_want, minlength=limit.size)
    free = np.maximum(limit - row_held, 0)
    fraction = pair_want / np.maximum(row_want[pair_row], 1.0)
    values = (pair_held + np.floor(fraction * free[pair_row])).astype(np.int64)
    result = []
    starts = np.searchsorted(pair_chunk, np.arange(n_chunks + 1))
    for i in range(n_chunks):
        part = slice(int(starts[i]), int(starts[i + 1]))
        result.append(_Share(pair_row[part].astype(np.int64), values[part]))
    return result


def _apply(cat: _Catalogue, units: IntArray, problem: Problem, solution: ProblemSolution) -> None:
    cells = np.concatenate(
        [np.arange(cat.cell_start[o], cat.cell_start[o + 1]) for o in problem.orders.tolist()]
    )
    units[cells] = solution.units


def _give_back(
    instance: BatchInstance,
    cat: _Catalogue,
    limits: _Limits,
    active: BoolArray,
    units: IntArray,
    start: IntArray,
) -> None:
    """Orders whose new plan costs them no less than their old one get the old one back, if it fits.

    Keeps the answer's changes to those that pay; never raises the total.
    """
    n_orders = len(instance.orders)
    active_units = np.where(active[cat.slot_order[cat.cell_slot]], units, 0)
    taken = np.bincount(
        limits.cell_stock_row, weights=active_units, minlength=limits.stock_limit.size
    )
    shipped = np.bincount(
        limits.cell_capacity_row, weights=active_units, minlength=limits.capacity_limit.size
    )
    for o in range(n_orders):
        cells = np.arange(cat.cell_start[o], cat.cell_start[o + 1])
        if cells.size == 0 or np.array_equal(units[cells], start[cells]):
            continue
        if _order_cost(cat, cells, start[cells]) > _order_cost(cat, cells, units[cells]):
            continue
        delta = start[cells] - units[cells]
        new_taken = taken.copy()
        np.add.at(new_taken, limits.cell_stock_row[cells], delta)
        new_shipped = shipped.copy()
        np.add.at(new_shipped, limits.cell_capacity_row[cells], delta)
        rows = limits.cell_stock_row[cells]
        crow = limits.cell_capacity_row[cells]
        if np.all(new_taken[rows] <= limits.stock_limit[rows]) and np.all(
            new_shipped[crow] <= limits.capacity_limit[crow]
        ):
            units[cells] = start[cells]
            taken, shipped = new_taken, new_shipped


def _order_cost(cat: _Catalogue, cells: IntArray, values: IntArray) -> int:
    opened = np.unique(cat.cell_slot[cells][values > 0])
    return int(cat.slot_fixed[opened].sum() + (cat.cell_unit[cells] * values).sum())


def _allocation(instance: BatchInstance, cat: _Catalogue, o: int, units: IntArray) -> Allocation:
    """Order ``o``'s plan: one parcel per open slot, each SKU's units spread over its lines."""
    network = instance.network
    batch_order = instance.orders[o]
    cells = np.arange(cat.cell_start[o], cat.cell_start[o + 1])
    # What each line covers now: the new plan covers the same.
    remaining: dict[int, int] = {}
    for parcel in batch_order.current.parcels:
        for line in parcel.lines:
            remaining[line.line] = remaining.get(line.line, 0) + line.qty
    lines_of_sku = lines_by_sku(network, batch_order.order)
    parcels: list[ParcelPlan] = []
    used = cells[units[cells] > 0]
    for slot in np.unique(cat.cell_slot[used]).tolist():
        cells_of_slot = used[cat.cell_slot[used] == slot].tolist()
        contents = spread_over_lines(
            batch_order.order,
            lines_of_sku,
            remaining,
            ((int(cat.cell_sku[c]), int(units[c])) for c in cells_of_slot),
        )
        parcels.append(
            ParcelPlan(
                network.node_ids[int(cat.slot_node[slot])],
                network.service_ids[int(cat.slot_service[slot])],
                contents,
            )
        )
    return Allocation(tuple(parcels))


# ------------------------------------------------------------------------- driver


def reoptimise(
    instance: BatchInstance,
    settings: BatchSettings | None = None,
    runner: Runner | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> BatchResult:
    """Re-assign ``instance``'s orders jointly; never dearer, every promise kept.

    ``runner`` solves the sub-problems (default: in this process; a
    :class:`DaskRunner` spreads them over a cluster; the answer is the same).
    ``progress(done, known)`` is called as sub-problems finish (``known``
    grows when a chunking round starts).
    """
    settings = settings or BatchSettings()
    runner = runner or LocalRunner()
    started = time.perf_counter()
    cat, start_units = _catalogue(instance, settings, runner)
    units = start_units.copy()
    n_orders = len(instance.orders)
    reports: list[ProblemReport] = []
    components: list[IntArray] = []
    skipped = 0
    # Exact so far if no candidate was pruned; reach and chunking may still cut the model.
    exact = cat.pruned == 0
    if cat.cell_slot.size:
        everyone = np.ones(n_orders, dtype=np.bool_)
        unhappy = _unhappy(cat, units)
        active, closed = _movable(
            cat, _limits(instance, cat, everyone, units), units, unhappy, settings.reach
        )
        exact = exact and closed
        limits = _limits(instance, cat, active, units)
        components = _components(n_orders, cat, limits, active)
        size = settings.max_orders_per_problem
        # Only a sub-problem holding an order that could gain can save anything.
        hopeful = [c for c in components if unhappy[c].any()]
        skipped = len(components) - len(hopeful)
        small = [c for c in hopeful if c.size <= size]
        large = [c for c in hopeful if c.size > size]
        rng = np.random.default_rng(settings.seed)
        done = known = 0
        for round_ in range(max(1, settings.rounds) if large else 1):
            problems: list[Problem] = []
            if round_ == 0:
                problems = [
                    _problem(key, 0, False, orders, cat, limits, units, settings)
                    for key, orders in enumerate(_bins(small, size))
                ]
            else:
                unhappy = _unhappy(cat, units)
            how = _ROUND_KEYS[round_ % len(_ROUND_KEYS)]
            for component in large:
                keys = _chunk_keys(component, cat, limits, units, how, rng)
                chunks = _chunk_problems(
                    component, keys, cat, limits, units, unhappy, settings, round_, len(problems)
                )
                skipped += len(chunks[1])
                problems.extend(chunks[0])
            known += len(problems)
            if progress is not None:
                progress(done, known)
            by_key = {p.key: p for p in problems}
            for solution in runner.map_unordered(solve_problem, problems):
                problem = by_key[solution.key]
                _apply(cat, units, problem, solution)
                reports.append(
                    ProblemReport(
                        round=round_,
                        orders=problem.orders.size,
                        chunked=problem.chunked,
                        status=solution.status,
                        cost_before=solution.cost_before,
                        cost_after=solution.cost_after,
                        bound=solution.bound,
                        seconds=solution.seconds,
                    )
                )
                done += 1
                if progress is not None:
                    progress(done, known)
            round_saving = sum(r.cost_before - r.cost_after for r in reports if r.round == round_)
            if round_ > 0 and round_saving == 0:
                break
        _give_back(instance, cat, limits, active, units, start_units)
    component_of = np.full(n_orders, -1, dtype=np.int64)
    for index, component in enumerate(components):
        component_of[component] = index
    outcomes = []
    for o, batch_order in enumerate(instance.orders):
        cells = slice(int(cat.cell_start[o]), int(cat.cell_start[o + 1]))
        before = cat.before[o]
        if np.array_equal(units[cells], start_units[cells]):
            after = before
        else:
            allocation = _allocation(instance, cat, o, units)
            after = evaluate(instance.network, batch_order.order, allocation, allow_partial=True)
            if not after.is_feasible:  # a model bug, never the caller's
                raise AssertionError(f"order {batch_order.order_id}: {after.violations}")
        outcomes.append(
            OrderOutcome(
                batch_order.order_id,
                before,
                after,
                batch_order.latest_day,
                int(component_of[o]),
            )
        )
    return BatchResult(
        outcomes=tuple(outcomes),
        problems=tuple(reports),
        components=len(components),
        largest_component=max((c.size for c in components), default=0),
        skipped=skipped,
        exact=exact,
        seconds=time.perf_counter() - started,
    )


def _chunk_problems(
    component: IntArray,
    keys: IntArray,
    cat: _Catalogue,
    limits: _Limits,
    units: IntArray,
    unhappy: BoolArray,
    settings: BatchSettings,
    round_: int,
    first_key: int,
) -> tuple[list[Problem], list[IntArray]]:
    """A large component cut into independent chunks, each with its share of the contended rows.

    Returns the chunks to solve and those skipped (no order in them could gain).
    """
    chunks = _chunks(component, keys, settings.max_orders_per_problem)
    chunk_of_order = np.full(cat.order_units.size, -1, dtype=np.int64)
    for i, chunk in enumerate(chunks):
        chunk_of_order[chunk] = i
    cells = np.concatenate(
        [np.arange(cat.cell_start[o], cat.cell_start[o + 1]) for o in component.tolist()]
    )
    cell_chunk = chunk_of_order[cat.slot_order[cat.cell_slot[cells]]]
    want, held = limits.cell_once[cells], units[cells]
    stock = _shares(
        cell_chunk, limits.cell_stock_row[cells], want, held,
        limits.stock_limit, limits.stock_contended, len(chunks),
    )  # fmt: skip
    capacity = _shares(
        cell_chunk, limits.cell_capacity_row[cells], want, held,
        limits.capacity_limit, limits.capacity_contended, len(chunks),
    )  # fmt: skip
    solve = [i for i, chunk in enumerate(chunks) if unhappy[chunk].any()]
    problems = [
        _problem(
            first_key + n, round_, True, chunks[i], cat, limits, units, settings,
            (stock[i], capacity[i]),
        )
        for n, i in enumerate(solve)
    ]  # fmt: skip
    return problems, [c for i, c in enumerate(chunks) if i not in set(solve)]
