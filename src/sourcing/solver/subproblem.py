"""One sub-problem ``P(D, p)``: the least (cost, parcels) plan by day D in at most p parcels.

:func:`min_cost` closes it by the cheapest means that proves it, in the
order of the package docstring: enumerate small plans
(:mod:`~sourcing.solver.enumeration`), bound the rest
(:mod:`~sourcing.solver.lagrangian`; warm starts from
:mod:`~sourcing.solver.heuristics`), and hand what is still open to CP-SAT
(:mod:`~sourcing.solver.cpsat`). Each plan it returns names the step that
proved it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Final

import numpy as np

from sourcing.solver.context import (
    CHEAP_CELLS,
    FEASIBLE,
    INF,
    OPTIMAL,
    Context,
    Deadline,
    Plan,
    ceil_bound,
    deadline_for,
    heuristics_pay,
    lexmin,
)
from sourcing.solver.cpsat import solve_cpsat
from sourcing.solver.enumeration import best_subset, subset_cells
from sourcing.solver.heuristics import (
    cover_plan,
    drop_heuristic,
    greedy_plan,
    local_search,
    relaxation_plan,
)
from sourcing.solver.lagrangian import Bound, lagrangian_bound
from sourcing.solver.large import is_large, solve_large

#: Plans from the relaxation's cheapest nodes repaired into covers
#: (:func:`~sourcing.solver.heuristics.relaxation_plan`) at every bound of the enumeration,
#: on orders of at least ``REPAIR_CELLS`` (candidate node x SKU) cells, every deadline of
#: them. On fragmented 50-line carts over 500 nodes (25,000 cells) the plans held there
#: were 7-80% above the optimum and the repaired ones 0-8%; on 20-line carts over 200
#: nodes (4,000) the enumeration found as good plans soon enough and the repair added
#: 25-70% to the quote's CPU (standard, credits and fragmented regimes, 30 carts each,
#: alternated in one process).
REPAIR: bool = True
REPAIR_CELLS: Final = 10_000


def min_cost(
    ctx: Context, day: int, max_parcels: int, cutoff: int = INF, on_day: bool = False
) -> Plan | None:
    """The least (cost, parcels) plan delivering by ``day`` in at most ``max_parcels`` parcels.

    With a ``cutoff``, only a plan costing at most that much is wanted: None
    then also means that no plan does, and the search stops as soon as a
    bound shows it (a plan it returns is still the sub-problem's optimum).

    ``on_day``: the caller has proven that no plan arriving before ``day``
    costs at most ``cutoff`` (with no cutoff: that none exists). Every plan
    that can be the answer then has a parcel arriving on ``day``, and the
    search for plans beyond the bounds (stage 4) asks that of its plans:
    its bounds rise, the answer does not change.
    """
    key = (day, max_parcels)
    if key in ctx.cache:
        return ctx.cache[key]
    ctx.stats["sub"] += 1
    fits = [p for p in ctx.known if p.day <= day and p.parcels <= max_parcels]
    if fits and ctx.out_of_time():
        return _out_of_time(ctx, day, max_parcels, cutoff, fits)
    deadline = deadline_for(ctx, day)
    arriving = day if on_day else None
    plan = (
        _bound_and_solve(ctx, deadline, max_parcels, cutoff, arriving)
        if deadline is not None
        else None
    )
    if plan is None and cutoff < INF:
        return None  # nothing within the cutoff: not an answer to P(day, max_parcels) itself
    ctx.cache[key] = plan
    if plan is not None:
        ctx.known.append(plan)
    return plan


def _out_of_time(
    ctx: Context, day: int, max_parcels: int, cutoff: int, fits: list[Plan]
) -> Plan | None:
    """``P(day, max_parcels)`` once the caller's time is up: the best known plan that fits,
    its gap measured against the proven optimum of a looser sub-problem (100% without one)."""
    looser = [
        p.cost
        for (d, cap), p in ctx.cache.items()
        if p is not None and p.status == OPTIMAL and d >= day and cap >= max_parcels
    ]
    ctx.unproven.append((day, max_parcels, max(looser) if looser else -INF))
    best = lexmin(*fits)
    if best is None or best.cost > cutoff:
        return None
    gap = max(best.cost - max(looser), 0) / max(abs(best.cost), 1) if looser else 1.0
    return replace(best, status=FEASIBLE, gap=gap, method="heuristic")


def _proven(plan: Plan, method: str) -> Plan:
    # Built directly: dataclasses.replace costs more than the rest of a small sub-problem.
    return Plan(plan.service, plan.units, plan.cost, plan.day, plan.parcels, OPTIMAL, 0.0, method)


def _warm_start(
    ctx: Context, deadline: Deadline, max_parcels: int, build: bool = True
) -> Plan | None:
    """The best plan to start ``P(D, p)`` from: a known one that fits, or (``build``) a
    greedy one."""
    elig = deadline.elig
    # Plans found for other deadlines or caps that fit here are upper bounds.
    best = deadline.single
    for known in ctx.known:
        # A plan arriving after the deadline uses a slot it excludes: skip the array test.
        fits = known.parcels <= max_parcels and known.day <= deadline.day
        if fits and bool(elig[known.slots].all()):
            best = lexmin(best, known)
    if best is None and not build:
        return None
    if best is None:
        best = greedy_plan(ctx, elig, deadline.unit_min, max_parcels)
    if best is None:
        best = cover_plan(ctx, elig, max_parcels)
        if best is not None and not ctx.out_of_time():
            best = local_search(ctx, elig, best, max_parcels)
    return best


def _bound_and_solve(
    ctx: Context,
    deadline: Deadline,
    max_parcels: int,
    cutoff: int = INF,
    arriving: int | None = None,
) -> Plan | None:
    """Solve one ``P(D, p)``: enumerate small plans, bound the rest, call CP-SAT if still open.

    Plans costing more than ``cutoff`` are not wanted: the search treats the
    cutoff as a known plan's cost and returns None if nothing is within it.
    With ``arriving`` (a day), stage 4 searches only plans with a parcel
    arriving then (:func:`min_cost`'s ``on_day``).
    """
    demand = ctx.demand
    elig, fixed, transport_lb = deadline.elig, deadline.fixed, deadline.transport_lb
    sorted_fixed, fixed_prefix = deadline.sorted_fixed, deadline.fixed_prefix
    max_parcels = min(max_parcels, sorted_fixed.size)

    def simple_bound(parcels: int) -> int:
        """Plans with >= ``parcels`` parcels: that many cheapest fixed costs + cheapest units."""
        return int(fixed_prefix[min(parcels, sorted_fixed.size)]) + transport_lb

    # Under a cutoff only a plan within it is of use, and the heuristics' plans (greedy,
    # cover, local search, drop) are dearer than the enumeration's: on fragmented 20-line
    # carts 0 of 153 warm starts and 4 of 211 drops were within the cutoff, for ~2 ms of
    # CPU a quote. There they run only once a plan within the cutoff is known.
    best = _warm_start(ctx, deadline, max_parcels, build=cutoff == INF)
    if ctx.out_of_time():
        # The caller's time is up: the best plan at hand, with its gap to the simplest bound.
        ctx.unproven.append((deadline.day, max_parcels, simple_bound(1)))
        if best is None or best.cost > cutoff:
            return None
        gap = max(best.cost - simple_bound(1), 0) / max(abs(best.cost), 1)
        return replace(best, status=FEASIBLE, gap=gap, method="heuristic")

    def upper_of(best: Plan | None) -> int:
        return min(best.cost if best is not None else INF, cutoff)

    def beyond_cutoff(best: Plan | None, lower: int) -> bool:
        """Whether every plan left to search costs more than the cutoff, and none is known."""
        return (best is None or best.cost > cutoff) and lower > cutoff

    # Enumerate plans by parcel count while the sets to try stay few: every
    # plan with up to ``enumerated`` parcels is then known exactly. Between
    # rounds a bound on plans with more parcels may settle the question (cost
    # ties go to fewer parcels, so a bound equal to the best cost settles it
    # when the best plan is an enumerated one), and prunes the nodes that
    # cannot be in a better plan.
    enumerated = 1
    bound: Bound | None = None
    lower = 0
    day = deadline.day
    while True:
        upper = upper_of(best)
        # What a looser sub-problem proved (floors per parcel count, from this deadline or a
        # later one): counts whose every plan costs more than the best plan need no search.
        floor = ctx.floor_at(day)
        if floor is not None:
            while enumerated < max_parcels and floor[enumerated + 1] > upper:
                enumerated += 1
                ctx.stats["floored"] = ctx.stats.get("floored", 0) + 1
        searched = enumerated + 1
        if searched > max_parcels:
            if best is None or best.cost > cutoff:
                return None
            ctx.stats["bound"] += 1
            return _proven(best, "enumeration")
        rest = simple_bound(searched)
        if floor is not None:
            rest = max(rest, int(floor[searched : max_parcels + 1].min()))
        if beyond_cutoff(best, rest):
            return None
        settles = best is not None and best.parcels <= enumerated and best.cost <= cutoff
        if settles and rest >= upper:
            ctx.stats["bound"] += 1
            return _proven(best, "bound+enumeration")  # type: ignore[arg-type]
        # A slot is worth trying only if its parcel, the cheapest others and
        # the cheapest units do not already cost more than the best plan.
        others = int(fixed_prefix[min(searched - 1, sorted_fixed.size)])
        slots_ok = (fixed + others + transport_lb <= upper) | (upper == INF)
        if (
            subset_cells(int(np.count_nonzero(elig & slots_ok)), searched, demand.size)
            <= CHEAP_CELLS
        ):
            bound = None  # enumerating is cheaper than bounding
        else:
            # Counts above ``most_open`` cost more than the best plan (floors): the bound
            # need not cover them, and is tighter without them.
            most_open = max_parcels
            if floor is not None:
                open_counts = np.flatnonzero(floor[searched : max_parcels + 1] <= upper)
                most_open = searched + int(open_counts[-1]) if open_counts.size else searched
            bound = lagrangian_bound(ctx, elig, searched, most_open, upper)
            lower = max(simple_bound(searched), ceil_bound(bound.value))
            ctx.raise_floor(day, searched, most_open, lower)
            if beyond_cutoff(best, lower):
                return None
            if settles and lower >= upper:
                ctx.stats["bound"] += 1
                return _proven(best, "lagrangian bound")  # type: ignore[arg-type]
            # Not settled: a plan built from the relaxation's open nodes may lower the best cost.
            # Under a cutoff, the heuristics wait for a plan within it (their own plans almost
            # never are; on fragmented 50-line carts they took 2-4% of the CPU to a proof there).
            # A drop only lowers the best cost, so it cannot change this answer for the repair.
            heuristics = heuristics_pay(best, cutoff)
            if heuristics:
                start = bound.service.copy()
                if best is not None:
                    start[best.service >= 0] = best.service[best.service >= 0]
                opened = np.flatnonzero(start >= 0)
                dropped = drop_heuristic(ctx, opened, start[opened])
                if dropped is not None and dropped.parcels <= max_parcels:  # may keep too many
                    best = lexmin(best, dropped)
            if REPAIR and heuristics and ctx.costs.available.size >= REPAIR_CELLS:
                best = lexmin(best, relaxation_plan(ctx, elig, bound, max_parcels))
            upper = upper_of(best)
            settles = best is not None and best.parcels <= enumerated and best.cost <= cutoff
            if settles and lower >= upper:
                ctx.stats["bound"] += 1
                return _proven(best, "lagrangian bound")  # type: ignore[arg-type]
            slots_ok = np.broadcast_to((bound.with_node <= upper + 1e-6)[:, None], elig.shape)
        # With a bound, one parcel more is searched alongside: its cheap plans prune.
        more = min(1, most_open - searched) if bound is not None else 0
        found, through = best_subset(ctx, elig, slots_ok, searched, bound, upper, more)
        best = lexmin(best, found)
        if through < searched:
            break
        enumerated = through
        # Every plan of up to that many parcels costs at least the best plan (or the cutoff).
        ctx.raise_floor(day, 1, enumerated, upper_of(best))

    if bound is None:
        bound = lagrangian_bound(ctx, elig, searched, max_parcels, upper)
        lower = max(simple_bound(searched), ceil_bound(bound.value))
        ctx.raise_floor(day, searched, max_parcels, lower)
    if best is not None and best.cost <= cutoff:
        best = local_search(ctx, elig, best, max_parcels)
    if beyond_cutoff(best, lower):
        return None
    return _search_residue(
        ctx, deadline, bound, best, searched, max_parcels, lower, cutoff, simple_bound, arriving
    )


def _search_residue(
    ctx: Context,
    deadline: Deadline,
    bound: Bound,
    best: Plan | None,
    searched: int,
    max_parcels: int,
    lower: int,
    cutoff: int,
    simple_bound: Callable[[int], int],
    arriving: int | None,
) -> Plan | None:
    """Stage 4 of :func:`_bound_and_solve`: the plans of ``searched`` parcels or more (every
    plan with fewer is known), on the nodes ``bound`` leaves possible, by CP-SAT or per
    parcel count (:func:`~sourcing.solver.large.solve_large`); ``lower`` bounds them so far."""
    elig, demand = deadline.elig, ctx.demand
    upper = min(best.cost if best is not None else INF, cutoff)
    # Fewer parcels make a much easier model: raise the parcel count until the
    # bound on plans with that many or more exceeds the best known plan.
    most = max_parcels
    if best is not None:
        for parcels in range(searched + 1, min(max_parcels, searched + 4) + 1):
            beyond = max(
                simple_bound(parcels),
                ceil_bound(lagrangian_bound(ctx, elig, parcels, max_parcels, upper).value),
            )
            ties = beyond == upper == best.cost and best.parcels < parcels
            if beyond > upper or ties:
                most = parcels - 1
                break

    # CP-SAT searches the plans with more parcels, on the nodes the bound leaves possible.
    node_keep = bound.with_node <= upper + 1e-6
    if best is not None:
        node_keep |= best.service >= 0
    skipped = ctx.out_of_time()
    residue = elig & node_keep[:, None]
    # Hundreds of slots left (50-line carts on 500 nodes): searched per parcel count instead.
    solve, method = (
        (solve_large, "parcel counts")
        if is_large(residue, demand.size)
        else (solve_cpsat, "cp-sat")
    )
    if skipped:
        # Building the CP-SAT model alone takes hundreds of ms on a large cart: out of time
        # (or the caller gone), the best plan stands with its gap to the bound.
        found, proven_lower, complete = None, lower, False
    else:
        found, proven_lower, complete = solve(
            ctx, residue, searched, most, lower, upper, best, arriving=arriving
        )
    result = lexmin(best, found)
    if not complete:
        # Enumerated plans are known exactly: only the searched ones can lie below.
        cost = result.cost if result is not None else INF
        ctx.unproven.append((deadline.day, max_parcels, min(proven_lower, cost)))
    if result is None or result.cost > cutoff:
        return None
    if complete:
        return _proven(result, method)
    # Out of time: the best plan stands, with the gap to what is proven about the rest.
    # Enumerated plans are known exactly, so only the searched ones can lie below.
    gap = max(result.cost - proven_lower, 0) / max(abs(result.cost), 1)
    return replace(result, status=FEASIBLE, gap=gap, method="out of time" if skipped else method)
