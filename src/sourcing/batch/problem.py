"""One sub-problem as plain arrays, and solving it: arrays in, arrays out.

:func:`solve_problem` is what a worker runs (a pure function of its
:class:`Problem`, cheap to pickle): the package docstring's model on the
sub-problem's slots and cells, solved by SCIP (default) or CP-SAT, hinted
with the current allocation; an answer is rounded and re-checked against
every row, and kept only if strictly cheaper.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ortools.linear_solver import pywraplp
from ortools.sat.python import cp_model

from sourcing.batch.instance import FEASIBLE, OPTIMAL
from sourcing.model import BoolArray, IntArray


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
    #: SCIP's node limit or CP-SAT's deterministic seconds instead of ``time_limit_s``
    #: (:class:`~sourcing.batch.instance.BatchSettings`); None: the wall clock.
    work_limit: float | None = None


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
    if problem.work_limit is None:
        solver.SetTimeLimit(max(10, int(problem.time_limit_s * 1000)))
    elif not solver.SetSolverSpecificParametersAsString(
        f"limits/totalnodes = {max(1, int(problem.work_limit))}\n"
    ):
        raise RuntimeError("SCIP rejected its node limit")
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
    if problem.work_limit is None:
        solver.parameters.max_time_in_seconds = max(0.01, problem.time_limit_s)
    else:
        solver.parameters.max_deterministic_time = problem.work_limit
    solver.parameters.random_seed = 0
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, FEASIBLE, float("-inf")
    solution = np.asarray(solver.response_proto.solution, dtype=np.int64)
    found = solution[n_slots : n_slots + n_cells]
    bound = float(solver.best_objective_bound)
    return found, OPTIMAL if status == cp_model.OPTIMAL else FEASIBLE, bound
