"""The batch job's guards against a solver that answers badly (``sourcing.batch``).

Every sub-problem is hinted with the current plan, so a real solver always
hands back something at least as good and valid: the guards in
:func:`sourcing.batch.problem.solve_problem` (take an answer only if it meets every
row of the model and is strictly cheaper; otherwise keep the current plan)
never see work. Here the solver is replaced by one that answers with a
dearer plan, or with a cheaper plan that breaks one rule at a time.

The hand-made sub-problem (one order, two SKUs; money in millicents)::

    slot p0: node 0, ground   fixed 10   units: k0 5, k1 50    (the current plan: 2 k0 + 1 k1)
    slot p1: node 0, express  fixed 10   units: k0 50, k1 5
    slot p2: node 1, ground   fixed 10   units: k0 30, k1 1    (node 1 holds no k1: upper 0)
    demand: k0 2, k1 1; every other cell holds at most 3 units

    current  p0 2 k0 + 1 k1               10 + 10 + 50        = 70
    valid:   p1 2 k0 + 1 k1               10 + 100 + 5        = 115
             p0 2 k0, p2... k1 not there; p2 2 k0 + p0 1 k1   10 + 60 + 10 + 50 = 130
             p2 2 k0 + p1 1 k1            10 + 60 + 10 + 5    = 85
    so 70 is the optimum; every cheaper answer below breaks exactly one rule.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import sourcing.batch.problem as batch
from sourcing.batch import (
    BatchInstance,
    OrderOutcome,
    Problem,
    reoptimise,
    solve_problem,
)
from sourcing.batch.instance import FEASIBLE, OPTIMAL
from sourcing.evaluate import evaluate
from sourcing.model import Allocation, ParcelLine, ParcelPlan
from test_batch import EXACT, swap_instance


def _ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def hand_problem(**changes: Any) -> Problem:
    problem = Problem(
        key=7,
        round=0,
        chunked=False,
        orders=_ints(0),
        slot_order=_ints(0, 0, 0),
        slot_node=_ints(0, 0, 1),
        slot_fixed=_ints(10, 10, 10),
        # cells: (p0, k0) (p0, k1) (p1, k0) (p1, k1) (p2, k0) (p2, k1)
        cell_slot=_ints(0, 0, 1, 1, 2, 2),
        cell_sku=_ints(0, 1, 0, 1, 0, 1),
        cell_unit=_ints(5, 50, 50, 5, 30, 1),
        cell_upper=_ints(3, 3, 3, 3, 3, 0),
        demand_start=_ints(0, 3, 6),
        demand_cell=_ints(0, 2, 4, 1, 3, 5),
        demand_qty=_ints(2, 1),
        limit_start=_ints(0),
        limit_cell=_ints(),
        limit_value=_ints(),
        current_units=_ints(2, 1, 0, 0, 0, 0),
        current_open=np.array([True, False, False]),
        time_limit_s=1.0,
        num_workers=1,
    )
    return replace(problem, **changes)


def plan_cost(problem: Problem, units: np.ndarray) -> int:
    """Fixed cost of every slot that carries a unit, plus units x cost per unit (scalar)."""
    carried = [0] * problem.slot_order.size
    total = 0
    for cell, qty in enumerate(units.tolist()):
        carried[int(problem.cell_slot[cell])] += qty
        total += qty * int(problem.cell_unit[cell])
    return total + sum(int(f) for f, c in zip(problem.slot_fixed, carried, strict=True) if c > 0)


def answering(
    monkeypatch: pytest.MonkeyPatch, units: np.ndarray | None, status: str, bound: float
) -> list[int]:
    """Replace both solvers by one that answers ``units``; returns the costs it was told."""
    told: list[int] = []

    def solver(problem: Problem, before: int) -> tuple[np.ndarray | None, str, float]:
        told.append(before)
        return (None if units is None else units.copy()), status, bound

    monkeypatch.setattr(batch, "_solve_scip", solver)
    monkeypatch.setattr(batch, "_solve_cpsat", solver)
    return told


def assert_current_plan_stands(problem: Problem, status: str, cost: int = 70) -> None:
    solution = solve_problem(problem)
    assert solution.key == problem.key
    assert solution.units.tolist() == problem.current_units.tolist()
    assert solution.opened.tolist() == problem.current_open.tolist()
    assert (solution.cost_before, solution.cost_after) == (cost, cost)
    assert solution.status == status
    assert 0.0 <= solution.seconds < 60.0


def test_the_hand_problem_is_as_worked_out() -> None:
    problem = hand_problem()
    assert plan_cost(problem, problem.current_units) == 70
    # The real solvers agree that the current plan is the optimum.
    for backend in ("scip", "cp-sat"):
        solution = solve_problem(replace(problem, backend=backend))
        assert (solution.cost_before, solution.cost_after, solution.status) == (70, 70, OPTIMAL)
        assert solution.units.tolist() == [2, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("backend", ["scip", "cp-sat"])
def test_a_dearer_answer_is_refused(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    dearer = _ints(0, 0, 2, 1, 0, 0)  # all from p1: valid, 115
    assert plan_cost(hand_problem(), dearer) == 115
    told = answering(monkeypatch, dearer, OPTIMAL, 115.0)
    assert_current_plan_stands(hand_problem(backend=backend), OPTIMAL)
    assert told == [70]  # the solver is told the current plan's cost


@pytest.mark.parametrize(
    ("answer", "cost", "rule"),
    [
        (_ints(0, 0, 0, 0, 0, 0), 0, "each SKU's demand covered exactly"),
        (_ints(2, 0, 0, 1, 0, 0), 35, "one parcel per (order, node)"),
        (_ints(3, 1, 0, 0, -1, 0), 45, "no negative units"),
        (_ints(2, 0, 0, 0, 0, 1), 31, "no more units in a cell than its upper bound"),
    ],
)
def test_a_cheaper_answer_that_breaks_a_rule_is_refused(
    monkeypatch: pytest.MonkeyPatch, answer: np.ndarray, cost: int, rule: str
) -> None:
    assert plan_cost(hand_problem(), answer) == cost < 70, rule
    answering(monkeypatch, answer, FEASIBLE, float(cost))
    # The answer is thrown out: the current plan stands, not proven (the bound is below it).
    assert_current_plan_stands(hand_problem(), FEASIBLE)


def test_an_answer_over_a_shared_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stock row: node 0 has 1 k0 for every order of the problem (cells c0 and c2). The
    # current plan takes none there (p2 2 k0 + p1 1 k1, 85); the answer takes 2 (70).
    problem = hand_problem(
        limit_start=_ints(0, 2),
        limit_cell=_ints(0, 2),
        limit_value=_ints(1),
        current_units=_ints(0, 0, 0, 1, 2, 0),
        current_open=np.array([False, True, True]),
    )
    answering(monkeypatch, _ints(2, 1, 0, 0, 0, 0), FEASIBLE, 70.0)
    assert_current_plan_stands(problem, FEASIBLE, cost=85)
    # Within the row (1 k0 at node 0, 1 at node 1: 10 + 5 + 50 + 10 + 30 = 105): no cheaper.
    answering(monkeypatch, _ints(1, 1, 0, 0, 1, 0), FEASIBLE, 70.0)
    assert_current_plan_stands(problem, FEASIBLE, cost=85)


@pytest.mark.parametrize(
    ("status", "bound", "expected"),
    [
        (OPTIMAL, 0.0, OPTIMAL),  # no answer, but a proof: the current plan is optimal
        (FEASIBLE, 70.0, OPTIMAL),  # the bound reaches the current cost
        (FEASIBLE, 69.5, FEASIBLE),  # a gap is left
        (FEASIBLE, float("-inf"), FEASIBLE),  # the solver gave up
    ],
)
def test_no_answer_keeps_the_current_plan_and_says_how_sure(
    monkeypatch: pytest.MonkeyPatch, status: str, bound: float, expected: str
) -> None:
    answering(monkeypatch, None, status, bound)
    assert_current_plan_stands(hand_problem(), expected)
    assert solve_problem(hand_problem()).bound == bound


def test_a_cheaper_valid_answer_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same problem with the current plan at p2 + p1 (85): the optimum, 70, is an answer.
    problem = hand_problem(
        current_units=_ints(0, 0, 0, 1, 2, 0), current_open=np.array([False, True, True])
    )
    answering(monkeypatch, _ints(2, 1, 0, 0, 0, 0), OPTIMAL, 70.0)
    solution = solve_problem(problem)
    assert (solution.cost_before, solution.cost_after, solution.status) == (85, 70, OPTIMAL)
    assert solution.units.tolist() == [2, 1, 0, 0, 0, 0]
    assert solution.opened.tolist() == [True, False, False]
    assert solution.bound == 70.0 and 0.0 <= solution.seconds < 60.0
    # From all at p1 (115) to p2's 2 k0 + p1's 1 k1 (85): p1 stays open with its one unit.
    dearer = hand_problem(
        current_units=_ints(0, 0, 2, 1, 0, 0), current_open=np.array([False, True, False])
    )
    answering(monkeypatch, _ints(0, 0, 0, 1, 2, 0), FEASIBLE, 80.0)
    solution = solve_problem(dearer)
    assert (solution.cost_before, solution.cost_after, solution.status) == (115, 85, FEASIBLE)
    assert solution.opened.tolist() == [False, True, True] and solution.bound == 80.0


def test_an_equally_cheap_answer_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # With k0 at 25 from p1, all from p1 costs 10 + 50 + 10 = 70 too: no order changes for it.
    problem = hand_problem(cell_unit=_ints(5, 50, 25, 10, 30, 1))
    answering(monkeypatch, _ints(0, 0, 2, 1, 0, 0), OPTIMAL, 70.0)
    assert_current_plan_stands(problem, OPTIMAL)


def test_the_job_never_applies_a_bad_answer_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """reoptimise() on the hand-solved swap (test_batch), with a solver that answers the
    dearest valid plan, or the cheapest one that ignores stock: nothing changes."""
    instance = swap_instance()
    real = batch._solve_scip

    def dearest(problem: Problem, before: int) -> tuple[np.ndarray | None, str, float]:
        worst = replace(problem, cell_unit=-problem.cell_unit, slot_fixed=-problem.slot_fixed)
        units, _, _ = real(worst, -before)
        assert units is not None and plan_cost(problem, units) > before
        return units, OPTIMAL, float(before)

    def overdrawn(problem: Problem, before: int) -> tuple[np.ndarray | None, str, float]:
        free = replace(problem, limit_value=problem.limit_value + 100)
        units, _, _ = real(free, before)
        assert units is not None and plan_cost(problem, units) < before
        return units, OPTIMAL, float(plan_cost(problem, units))

    for solver in (dearest, overdrawn):
        monkeypatch.setattr(batch, "_solve_scip", solver)
        result = reoptimise(instance, EXACT)
        assert result.check(instance) == []
        assert (result.cost_before, result.cost_after) == (2_800_000, 2_800_000), solver
        assert not result.changed
        assert [o.allocation for o in result.outcomes] == [o.current for o in instance.orders]


def test_check_reports_an_answer_that_breaks_the_rules() -> None:
    """BatchResult.check, the job's independent re-check, on answers that break each rule
    (the hand-solved swap of test_batch: o1 1 x A; o2 1 x A + 1 x B; NJ holds one A)."""
    instance = swap_instance()
    good = reoptimise(instance, EXACT)
    assert good.check(instance) == []
    o1, o2 = good.outcomes
    first, second = instance.orders

    def moved(outcome: OrderOutcome, *parcels: ParcelPlan) -> OrderOutcome:
        order = first if outcome.order_id == "o1" else second
        after = evaluate(instance.network, order.order, Allocation(parcels), allow_partial=True)
        return replace(outcome, after=after)

    def problems(*outcomes: OrderOutcome, on: BatchInstance = instance) -> list[str]:
        return replace(good, outcomes=outcomes).check(on)

    nj_a = ParcelPlan("DC-NJ", "ground", (ParcelLine(0, "A", 1),))
    chi_a = ParcelPlan("DC-CHI", "ground", (ParcelLine(0, "A", 1),))
    # Both orders take NJ's only A.
    assert problems(moved(o1, nj_a), o2) == [
        "new allocations: 2 units of A at DC-NJ, 1 in the pool"
    ]
    # o1 from Chicago arrives on day 3; promised by day 2 it is late.
    strict = BatchInstance(instance.network, (replace(first, latest_day=2), second))
    assert problems(moved(o1, chi_a), o2, on=strict) == [
        "order o1: arrives on day 3, promised by day 2"
    ]
    # o2 ships its A but drops its B: its lines are no longer covered as they were.
    assert problems(o1, moved(o2, nj_a)) == ["order o2: covers {0: 1}, before {0: 1, 1: 1}"]
    # o1 moves to Chicago and o2 keeps its old plan: $11.50 + $20.00 > $28.00.
    kept = replace(o2, after=o2.before)
    assert problems(moved(o1, chi_a), kept) == ["total cost rose from 2800000 to 3150000"]
    # A reported cost that is not the evaluator's.
    priced_wrong = replace(o1, before=o2.before)
    assert problems(priced_wrong, o2)[0] == "order o1: reported costs differ from the evaluator's"
    assert problems(o2, o1) == ["the outcomes do not list the instance's orders in order"]


def test_an_empty_sub_problem_is_its_own_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    # No slot, no cell (nothing to move): no solver is asked, the answer is proven at once.
    told = answering(monkeypatch, _ints(), FEASIBLE, 0.0)
    empty = hand_problem(
        orders=_ints(),
        slot_order=_ints(),
        slot_node=_ints(),
        slot_fixed=_ints(),
        cell_slot=_ints(),
        cell_sku=_ints(),
        cell_unit=_ints(),
        cell_upper=_ints(),
        demand_start=_ints(0),
        demand_cell=_ints(),
        demand_qty=_ints(),
        current_units=_ints(),
        current_open=np.array([], dtype=np.bool_),
    )
    solution = solve_problem(empty)
    assert (solution.cost_before, solution.cost_after, solution.status) == (0, 0, OPTIMAL)
    assert solution.bound == 0.0 and solution.units.tolist() == [] and told == []


@pytest.mark.parametrize("backend", ["scip", "cp-sat"])
def test_the_backend_chooses_the_solver(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    asked: list[str] = []

    def stand_in(name: str) -> Any:
        def solver(problem: Problem, before: int) -> tuple[np.ndarray | None, str, float]:
            asked.append(name)
            return None, FEASIBLE, float("-inf")

        return solver

    monkeypatch.setattr(batch, "_solve_scip", stand_in("scip"))
    monkeypatch.setattr(batch, "_solve_cpsat", stand_in("cp-sat"))
    solve_problem(hand_problem(backend=backend))
    assert asked == [backend]
