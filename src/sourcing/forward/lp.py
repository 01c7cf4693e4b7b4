"""A sparse linear program handed to OR-Tools in one call, with its dual values.

The forward-looking models are transportation-like LPs of tens or hundreds of
thousands of columns, rebuilt often. Building them term by term from Python
costs more than solving them, so the model is given as arrays (bounds, costs
and a CSR matrix) to ``ModelBuilderHelper.fill_model_from_sparse_data`` and
solved by GLOP (primal simplex, exact duals) or PDLP (first-order, for very
large models).

Sign convention of :class:`LpSolution.duals`: the derivative of the optimal
objective (minimised) with respect to each row's bound, as the solver reports
it: a binding ``<=`` row has a dual <= 0, a binding ``>=`` row a dual >= 0.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import scipy.sparse as sp

from sourcing.model import FloatArray, IntArray

# Imported by name: its pybind stubs lead mypy into ortools' untyped packages.
mb: Any = importlib.import_module("ortools.linear_solver.python.model_builder")
mbh: Any = importlib.import_module("ortools.linear_solver.python.model_builder_helper")

OPTIMAL: Final = "OPTIMAL"
BACKENDS: Final = ("glop", "pdlp")


@dataclass(frozen=True, eq=False)
class SparseLp:
    """minimise ``cost @ x``, ``row_lower <= matrix @ x <= row_upper``, ``lower <= x <= upper``."""

    cost: FloatArray
    lower: FloatArray
    upper: FloatArray
    matrix: sp.csr_matrix
    row_lower: FloatArray
    row_upper: FloatArray

    def __post_init__(self) -> None:
        rows, cols = self.matrix.shape
        if not (self.cost.size == self.lower.size == self.upper.size == cols):
            raise ValueError("cost, lower and upper need one entry per column")
        if not (self.row_lower.size == self.row_upper.size == rows):
            raise ValueError("row_lower and row_upper need one entry per row")


@dataclass(frozen=True, eq=False)
class LpSolution:
    status: str
    objective: float
    values: FloatArray
    duals: FloatArray
    seconds: float


def csr(
    rows: IntArray, cols: IntArray, values: FloatArray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """A CSR matrix from (row, column, value) triplets (duplicates are summed)."""
    matrix = sp.coo_matrix((values, (rows, cols)), shape=shape).tocsr()
    matrix.sum_duplicates()
    return matrix


def _model(lp: SparseLp) -> Any:
    model = mb.Model()
    model.helper.fill_model_from_sparse_data(
        np.ascontiguousarray(lp.lower, dtype=np.float64),
        np.ascontiguousarray(lp.upper, dtype=np.float64),
        np.ascontiguousarray(lp.cost, dtype=np.float64),
        np.ascontiguousarray(lp.row_lower, dtype=np.float64),
        np.ascontiguousarray(lp.row_upper, dtype=np.float64),
        lp.matrix.astype(np.float64),
    )
    return model


def solve_lp(lp: SparseLp, backend: str = "glop", time_limit_s: float | None = None) -> LpSolution:
    """Solve ``lp``; ``status`` is ``OPTIMAL`` or the solver's word for what went wrong."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown LP backend {backend!r} (known: {', '.join(BACKENDS)})")
    started = time.perf_counter()
    rows, cols = lp.matrix.shape
    if cols == 0:
        return LpSolution(OPTIMAL, 0.0, np.zeros(0), np.zeros(rows), 0.0)
    model = _model(lp)
    # The helper itself, not mb.Solver: its values and duals come back as whole arrays
    # (mb.Solver builds a pandas Series through one Python object per row and column,
    # which cost more than GLOP's solve on the fluid LP).
    solver = mbh.ModelSolverHelper(backend)
    if time_limit_s is not None:
        solver.set_time_limit_in_seconds(time_limit_s)
    solver.solve(model.helper)
    status = mb.SolveStatus(solver.status())
    seconds = time.perf_counter() - started
    if status != mb.SolveStatus.OPTIMAL:
        return LpSolution(str(status.name), float("nan"), np.zeros(cols), np.zeros(rows), seconds)
    values = np.asarray(solver.variable_values(), dtype=np.float64)
    duals = np.asarray(solver.dual_values(), dtype=np.float64) if rows else np.zeros(0)
    return LpSolution(OPTIMAL, float(solver.objective_value()), values, duals, seconds)


def solve_mip(lp: SparseLp, integer: IntArray, time_limit_s: float) -> FloatArray | None:
    """Solve ``lp`` with the columns ``integer`` integral (SCIP, time-limited).

    Returns the best solution found (optimal or not), None if none was found.
    """
    model = _model(lp)
    for j in integer.tolist():
        model.helper.set_var_integrality(int(j), True)
    solver = mbh.ModelSolverHelper("scip")
    solver.set_time_limit_in_seconds(time_limit_s)
    solver.solve(model.helper)
    status = mb.SolveStatus(solver.status())
    if status not in (mb.SolveStatus.OPTIMAL, mb.SolveStatus.FEASIBLE):
        return None
    return np.asarray(solver.variable_values(), dtype=np.float64)
