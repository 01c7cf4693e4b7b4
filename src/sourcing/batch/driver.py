"""The batch run: :func:`reoptimise` from the catalogue through rounds of sub-problems to
the result, every changed order re-priced by the independent evaluator."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import numpy as np

from sourcing.batch.build import Limits, build_problem, shared_limits
from sourcing.batch.catalogue import Catalogue, build_catalogue, order_allocation, order_cost
from sourcing.batch.decompose import (
    bundle_components,
    chunk_keys,
    chunk_problems,
    find_components,
    find_unhappy,
    free_orders,
)
from sourcing.batch.instance import (
    BatchInstance,
    BatchResult,
    BatchSettings,
    OrderOutcome,
    ProblemReport,
)
from sourcing.batch.problem import Problem, ProblemSolution, solve_problem
from sourcing.batch.runners import LocalRunner, Runner
from sourcing.evaluate import evaluate
from sourcing.model import BoolArray, IntArray

_ROUND_KEYS: Final = ("wanted", "current", "random")


def _apply(cat: Catalogue, units: IntArray, problem: Problem, solution: ProblemSolution) -> None:
    cells = np.concatenate(
        [np.arange(cat.cell_start[o], cat.cell_start[o + 1]) for o in problem.orders.tolist()]
    )
    units[cells] = solution.units


def _give_back(
    instance: BatchInstance,
    cat: Catalogue,
    limits: Limits,
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
        if order_cost(cat, cells, start[cells]) > order_cost(cat, cells, units[cells]):
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
    cat, start_units = build_catalogue(instance, settings, runner)
    units = start_units.copy()
    n_orders = len(instance.orders)
    reports: list[ProblemReport] = []
    components: list[IntArray] = []
    skipped = 0
    # Exact so far if no candidate was pruned; reach and chunking may still cut the model.
    exact = cat.pruned == 0
    if cat.cell_slot.size:
        everyone = np.ones(n_orders, dtype=np.bool_)
        unhappy = find_unhappy(cat, units)
        active, closed = free_orders(
            cat, shared_limits(instance, cat, everyone, units), units, unhappy, settings.reach
        )
        exact = exact and closed
        limits = shared_limits(instance, cat, active, units)
        components = find_components(n_orders, cat, limits, active)
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
                    build_problem(key, 0, False, orders, cat, limits, units, settings)
                    for key, orders in enumerate(bundle_components(small, size))
                ]
            else:
                unhappy = find_unhappy(cat, units)
            how = _ROUND_KEYS[round_ % len(_ROUND_KEYS)]
            for component in large:
                keys = chunk_keys(component, cat, limits, units, how, rng)
                chunks = chunk_problems(
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
            allocation = order_allocation(instance, cat, o, units)
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
