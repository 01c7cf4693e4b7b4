"""sourcing.forward.lp: values, duals (their documented signs) and the MIP, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sourcing.forward.lp import OPTIMAL, SparseLp, csr, solve_lp, solve_mip


def _lp(row_upper_x1: float = 0.5) -> SparseLp:
    # minimise x1 + 2 x2 subject to x1 + x2 = 1 and x1 <= row_upper_x1, x >= 0.
    return SparseLp(
        cost=np.array([1.0, 2.0]),
        lower=np.zeros(2),
        upper=np.full(2, np.inf),
        matrix=csr(np.array([0, 0, 1]), np.array([0, 1, 0]), np.ones(3), (2, 2)),
        row_lower=np.array([1.0, -np.inf]),
        row_upper=np.array([1.0, row_upper_x1]),
    )


def test_values_and_duals_of_a_hand_solved_lp() -> None:
    # x1 = 0.5, x2 = 0.5, cost 1.5. One more unit of demand costs 2 (x2): dual +2. Raising
    # x1's bound by one saves 2 - 1 = 1: the binding <= row's dual is -1.
    solution = solve_lp(_lp())
    assert solution.status == OPTIMAL
    assert solution.objective == pytest.approx(1.5)
    assert solution.values.tolist() == pytest.approx([0.5, 0.5])
    assert solution.duals.tolist() == pytest.approx([2.0, -1.0])
    # The duals are the derivatives: check them against a re-solve.
    assert solve_lp(_lp(0.6)).objective == pytest.approx(1.5 - 0.1)


def test_an_infeasible_lp_says_so() -> None:
    lp = _lp()
    infeasible = SparseLp(
        lp.cost, lp.lower, np.array([0.2, 0.2]), lp.matrix, lp.row_lower, lp.row_upper
    )
    solution = solve_lp(infeasible)
    assert solution.status != OPTIMAL
    assert np.isnan(solution.objective)


def test_the_mip_rounds_where_the_lp_would_not() -> None:
    # x1 + x2 = 1 with x1 <= 0.5: the LP takes half of each, integers must take x2 = 1.
    values = solve_mip(_lp(), np.array([0, 1]), time_limit_s=10.0)
    assert values is not None
    assert values.tolist() == pytest.approx([0.0, 1.0])
