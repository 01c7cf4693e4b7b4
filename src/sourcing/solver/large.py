"""Stage 4 on large residues: split by parcel count, each count bounded and searched apart.

When the bounds leave hundreds of slots open (fragmented stock, 50-line carts
on 500 nodes: optima of 5-10 parcels), one CP-SAT model over every slot and
every parcel count neither finds good plans nor proves them in the quote's
time: the strong formulation's LP bound is 8-11% below the optimum there, and
its relaxation opens fewer parcels (4.4-5.2 on such carts) than the optimum
has. Fixing the parcel count changes that: the bound on plans of exactly ``p``
parcels (:func:`lagrangian_bound` with ``at_least = at_most = p``, a
cardinality term) rises steeply away from the relaxation's own count, so most
counts close by their bound alone, and a count that stays open keeps only the
nodes its own reduced costs allow (reduced-cost fixing per count). In order:

1. a bound over every count, converged further than the stage-3 one;
2. per parcel count ``p`` from the fewest searched: the bound on plans of
   exactly ``p`` parcels; a count whose bound exceeds the best plan (or ties
   it with more parcels) is closed;
3. the counts still open are searched by a Lagrangian branch and bound
   (:func:`~sourcing.solver.branching.search_counts`: prices re-optimised per
   branch, reduced-cost fixing per branch, small branches' parcel sets priced
   whole), all counts in one best-first order, so a plan one count holds
   prunes the others' branches as soon as it is found (with
   :data:`COVER_PRICES`, a count with many nodes first gets prices that see
   the cover and its sets enumerated at them);
4. what that leaves open (out of its time) goes to CP-SAT count by count
   (``sum y == p`` on that count's nodes), fewest slots first.

Each open count's parcel sets were also enumerated (set-cover branching, at
its bound) before the branch and bound, while the best plan improved: once
the branch and bound's per-branch cost fell, that step cost more than it saved
(most counts overflowed the set limit after 5-7 ms each; dropping it took
0.84-0.93x the CPU of seed 0's slowest carts, sums over 20-30 carts 0.85-0.88x
on seeds 0-2, 20-line regimes unchanged).

The search is exact: a count is closed only by a bound above the best plan,
a complete branch and bound or a complete CP-SAT search; the proven lower
bound of the whole is the least over the counts not closed. It takes at most
:data:`LARGE_SHARE` of the quote's time left, so the sub-problems after it
(FASTEST's deadline) are still solved. Returns what
:func:`~sourcing.solver.cpsat.solve_cpsat` returns.
"""

from __future__ import annotations

import time
from typing import Final

import numpy as np

from sourcing.solver.branching import Count, search_counts
from sourcing.solver.context import INF, Context, Plan, ceil_bound, heuristics_pay, lexmin
from sourcing.solver.cpsat import solve_cpsat
from sourcing.solver.enumeration import best_subset
from sourcing.solver.heuristics import relaxation_plan
from sourcing.solver.lagrangian import Bound, lagrangian_bound
from sourcing.solver.strengthen import cover_prices, enumeration_bound

#: Below this many slots, one CP-SAT model over every count is the better tool...
LARGE_SLOTS: Final = 150
#: ... and below this many (slot x SKU) cells: CP-SAT's model grows with the SKUs, and on
#: 50-SKU carts residues of 60-150 slots took it 10-25 s without a proof, where the search
#: per count proved them in 3-10 s. With the relaxation plans (a near-optimal plan to start
#: each count from) smaller residues pay too: a 47-slot residue of a 50-SKU cart (fragmented
#: 50x500x2 seed 1 cart 1, FASTEST's deadline) took CP-SAT 1.1-2.4 s and the search per
#: count 0.6 s for the whole quote; at 1,000 cells instead of 3,000 seed 1's carts 0-7 took
#: 8.5 s of CPU instead of 9.5 (alternated in one process), and capacity-bound 20x200x2
#: carts (20 SKUs: residues of 50+ slots) were unchanged (30 carts, seeds 0 and 1).
LARGE_CELLS: Final = 1_000
#: Subgradient steps for the converged bound (the stage-3 bound takes 30), and for each
#: parcel count's bound (warm-started from the prices before it)...
ITERATIONS: Final = 200
COUNT_ITERATIONS: Final = 30
#: ... and for an open count's bound renewed at the best cost now known, from its own
#: prices, before CP-SAT searches it (step 4).
REBOUND_ITERATIONS: Final = 60
#: This search's share of the quote's time left: the sub-problems after it (FASTEST's
#: deadline, usually a small model) still get time to be proven.
LARGE_SHARE: Final = 0.6
#: A count whose bound leaves more nodes than this gets prices that see the cover
#: (:func:`~sourcing.solver.strengthen.cover_prices`, 20-400 ms on 50-line carts) once:
#: their covering sets, priced, are near-optimal plans (a low best fixes nodes for every
#: count after it and prunes the branch and bound), and the count's sets are enumerated at
#: them. On fragmented 50x500x2 carts the counts left with 25-60 nodes were enumerated in
#: under 10 ms; those with 160-500 overflowed the set limit at the plain prices.
COVER_NODES: Final = 100
#: Off: measured on the CHEAPEST residues of fragmented 50x500x2 carts (seed 0 carts 0-5,
#: seed 1 carts 2-5, one core, load ~7), the plain enumeration at the count's own prices
#: already finds the plans cover prices find, and the ascent (0.1-1.3 s) cost more than the
#: branches it saved (10 residues: 0.27-2.6 s of CPU without, 0.28-3.5 s with; branches
#: 0-1,102 without, the same but for two residues that needed none). Kept (exact, tested):
#: the place for a cheaper ascent.
COVER_PRICES: bool = False
#: Each count's relaxation repaired into a plan (:func:`~sourcing.solver.heuristics.repaired_plan`,
#: then local search) as soon as the count is bounded.
REPAIR: bool = True


def is_large(elig: np.ndarray, skus: int) -> bool:
    """Whether the residue over these slots, for a cart of ``skus`` SKUs, goes to
    :func:`solve_large`."""
    slots = int(np.count_nonzero(elig))
    return slots > LARGE_SLOTS or slots * skus > LARGE_CELLS


def solve_large(
    ctx: Context,
    elig: np.ndarray,
    min_parcels: int,
    max_parcels: int,
    lower_bound: int,
    upper: int,
    hint: Plan | None,
    arriving: int | None = None,
) -> tuple[Plan | None, int, bool]:
    """Least (cost, parcels) plan over ``elig``, min..max parcels, cost <= ``upper`` (with
    ``arriving``, a day: of the plans with a parcel arriving then), as
    :func:`~sourcing.solver.cpsat.solve_cpsat` returns it (plan, lower bound, complete)."""
    best = hint if hint is not None and min_parcels <= hint.parcels <= max_parcels else None
    stop = time.perf_counter() + LARGE_SHARE * max(ctx.deadline - time.perf_counter(), 0.0)

    def out_of_time() -> bool:
        return ctx.out_of_time() or time.perf_counter() > stop

    n_nodes = int(np.count_nonzero(elig.any(axis=1)))
    max_parcels = min(max_parcels, n_nodes)
    if min_parcels > max_parcels:
        return None, upper, True

    def cap() -> int:
        return min(upper, best.cost) if best is not None else upper

    # 1. A converged bound over all counts.
    bound = lagrangian_bound(ctx, elig, min_parcels, max_parcels, cap(), ITERATIONS)
    lower = max(lower_bound, ceil_bound(bound.value))
    if lower > cap():
        return None, lower, True

    # 2. Per parcel count: its own bound (and its prices, to warm-start it again).
    counts: dict[int, tuple[int, Bound, np.ndarray | None]] = {}  # parcels: (bound, it, prices)
    count_lower: dict[int, int] = {}
    for parcels in range(min_parcels, max_parcels + 1):
        if out_of_time():
            # Not bounded: the counts left are bounded only by the bound over all counts.
            for p in range(parcels, max_parcels + 1):
                count_lower[p] = lower
            break
        exact = lagrangian_bound(ctx, elig, parcels, parcels, cap(), COUNT_ITERATIONS)
        prices = ctx.prices
        best = _repaired(ctx, elig, exact, parcels, min_parcels, max_parcels, cap(), best)
        # The same prices bound every plan with this many parcels or more (one evaluation).
        if ceil_bound(lagrangian_bound(ctx, elig, parcels, max_parcels, cap(), 1).value) > cap():
            break  # every plan with this many parcels or more costs more than the best
        value = max(lower, ceil_bound(exact.value))
        if _closed(value, parcels, cap(), best):
            continue
        count_lower[parcels] = value
        counts[parcels] = (value, exact, prices)

    def fixed_out(parcels: int) -> np.ndarray:
        """C x 1: the nodes a plan of ``parcels`` parcels beating the best may open."""
        keep = counts[parcels][1].with_node <= cap() + 1e-6
        if best is not None and best.parcels == parcels:
            keep |= best.service >= 0
        return keep[:, None]

    def rebound(parcels: int) -> None:
        """Renew a count's bound at the best cost now known, from its own prices."""
        value, exact, prices = counts[parcels]
        ctx.prices = prices
        exact = lagrangian_bound(ctx, elig, parcels, parcels, cap(), REBOUND_ITERATIONS)
        value = max(value, ceil_bound(exact.value))
        counts[parcels] = (value, exact, ctx.prices)
        count_lower[parcels] = value

    # 3. A Lagrangian branch and bound on the counts still open, in one best-first order.
    searched: list[Count] = []
    for parcels in sorted(counts, key=lambda p: (counts[p][0], p)):
        if out_of_time():
            break  # the counts not searched stay open, at their bounds
        value, exact, prices = counts[parcels]
        if _closed(value, parcels, cap(), best):
            del counts[parcels], count_lower[parcels]
            continue
        start = prices if prices is not None else np.zeros(ctx.demand.size)
        if COVER_PRICES and int(np.count_nonzero(fixed_out(parcels))) > COVER_NODES:
            allowed = fixed_out(parcels)
            best, settled = _cover_first(ctx, elig, allowed, parcels, exact, start, cap(), best)
            if settled or _closed(value, parcels, cap(), best):
                del counts[parcels], count_lower[parcels]
                continue
        searched.append(Count(parcels, elig & fixed_out(parcels), start, float(value)))
    if searched and not out_of_time():
        best, outcomes = search_counts(ctx, searched, best, cap(), out_of_time, arriving)
        for count, outcome in zip(searched, outcomes, strict=True):
            if outcome.complete:
                del counts[count.parcels], count_lower[count.parcels]
            else:
                count_lower[count.parcels] = max(counts[count.parcels][0], outcome.lower)

    # 4. CP-SAT on each count still open, the fewest slots first, its bound renewed at the
    # best cost now known (warm-started from its own prices).
    for parcels in sorted(counts, key=lambda p: (int(np.count_nonzero(fixed_out(p))), p)):
        if out_of_time():
            break
        rebound(parcels)
        value = counts[parcels][0]
        if _closed(value, parcels, cap(), best):
            del count_lower[parcels]
            continue
        count_hint = best if best is not None and best.parcels == parcels else None
        found, proven, complete = solve_cpsat(
            ctx,
            elig & fixed_out(parcels),
            parcels,
            parcels,
            value,
            cap(),
            count_hint,
            time_limit=max(0.001, stop - time.perf_counter()),
            arriving=arriving,
        )
        best = lexmin(best, found)
        if complete:
            del count_lower[parcels]
        else:
            count_lower[parcels] = max(value, proven)
    if not count_lower:
        return best, best.cost if best is not None else upper, True
    proven_lower = min(count_lower.values())
    return best, min(proven_lower, best.cost if best is not None else INF), False


def _cover_first(
    ctx: Context,
    elig: np.ndarray,
    allowed: np.ndarray,
    parcels: int,
    exact: Bound,
    prices: np.ndarray,
    upper: int,
    best: Plan | None,
) -> tuple[Plan | None, bool]:
    """One count's prices that see the cover (from ``prices``), their plan, and its sets
    enumerated at them: the best plan now, and whether the count is settled."""
    found = cover_prices(ctx, elig & allowed, parcels, upper, prices)
    best = lexmin(best, found.plan)  # exactly `parcels` parcels, cost <= upper
    if ctx.out_of_time():
        return best, False
    cap = min(upper, best.cost) if best is not None else upper
    plan, through = best_subset(ctx, elig, allowed, parcels, enumeration_bound(exact, found), cap)
    return lexmin(best, plan), through >= parcels


def _repaired(
    ctx: Context,
    elig: np.ndarray,
    exact: Bound,
    parcels: int,
    min_parcels: int,
    max_parcels: int,
    upper: int,
    best: Plan | None,
) -> Plan | None:
    """The best plan, or the least of the plans this count's relaxation gives once repaired
    into covers, from its ``parcels`` - 1 to ``parcels`` + 1 cheapest nodes (a plan within
    the parcel limits and the cost limit only)."""
    if not REPAIR or ctx.out_of_time():
        return best
    if not heuristics_pay(best, upper):
        return best  # a cutoff sub-problem without a plan within it: no heuristic yet
    found = relaxation_plan(ctx, elig, exact, max_parcels, parcels + 1, parcels - 1)
    if found is None or found.parcels < min_parcels or found.cost > upper:
        return best
    return lexmin(best, found)


def _closed(value: int, parcels: int, upper: int, best: Plan | None) -> bool:
    """Whether plans of ``parcels`` parcels, bounded by ``value``, cannot beat the best plan
    (cost ties go to fewer parcels) or the cost limit."""
    if value > upper:
        return True
    return best is not None and value >= best.cost and best.parcels < parcels
