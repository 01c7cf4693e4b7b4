"""Stage 4 on large residues: split by parcel count, each count bounded and searched apart.

When the bounds leave hundreds of slots open (fragmented stock, 50-line carts
on 500 nodes: optima of 5-10 parcels), one CP-SAT model over every slot and
every parcel count neither finds good plans nor proves them in the quote's
time: its LP bound is the strong formulation's, 8-11% below the optimum, and
the relaxation spreads over about as many parcels as the optimum has, or
fewer. Fixing the parcel count changes that: the bound on plans of exactly
``p`` parcels (a Lagrangian bound with a cardinality term, :func:`lagrangian_bound`
with ``at_least = at_most = p``) rises steeply away from the relaxation's own
count, so most counts close by their bound alone, and a count that stays open
keeps only the nodes its own reduced costs allow. In order:

1. the bound is converged further than the cheap stage-3 one (warm-started
   from its prices) and a *core* model (CP-SAT on the nodes of least
   reduced-cost bound and those of the best plan, a short time limit) lowers
   the best plan: a better upper bound fixes more nodes below;
2. per parcel count ``p`` from the fewest searched: a bound on plans of
   exactly ``p`` parcels; a count whose bound exceeds the best plan (or ties
   it with more parcels) is closed;
3. the open counts go to CP-SAT one by one (``sum y == p``, the nodes of that
   count's reduced-cost fixing), fewest slots first.

The search is exact: a count is closed only by a bound above the best plan
or by a complete CP-SAT search; the proven lower bound of the whole is the
least over the counts not closed. Returns what :func:`solve_cpsat` returns.
"""

from __future__ import annotations

import time
from typing import Final

import numpy as np

from sourcing.solver.context import INF, Context, Plan
from sourcing.solver.cpsat import solve_cpsat
from sourcing.solver.enumeration import best_subset
from sourcing.solver.lagrangian import Bound, lagrangian_bound

#: Below this many slots, one CP-SAT model over every count is the better tool.
LARGE_SLOTS: Final = 150
#: Subgradient steps for the converged bound (the stage-3 bound takes 30), and for each
#: parcel count's bound (warm-started from the prices before it).
ITERATIONS: Final = 200
COUNT_ITERATIONS: Final = 60
#: The core model: this many nodes of least bound, and its share of this search's time.
CORE_NODES: Final = 40
CORE_SHARE: Final = 0.3
#: This search's share of the quote's time left: the sub-problems after it (FASTEST's
#: deadline, usually a small model) still get time to be proven.
LARGE_SHARE: Final = 0.6


def is_large(elig: np.ndarray) -> bool:
    """Whether the residue over these slots goes to :func:`solve_large`."""
    return int(np.count_nonzero(elig)) > LARGE_SLOTS


def _lexmin(*plans: Plan | None) -> Plan | None:
    found = [p for p in plans if p is not None]
    return min(found, key=lambda p: (p.cost, p.parcels, p.day)) if found else None


def _ceil(value: float) -> int:
    return int(np.ceil(value - 1e-6)) if np.isfinite(value) else INF


def solve_large(
    ctx: Context,
    elig: np.ndarray,
    min_parcels: int,
    max_parcels: int,
    lower_bound: int,
    upper: int,
    hint: Plan | None,
) -> tuple[Plan | None, int, bool]:
    """Least (cost, parcels) plan over ``elig`` with min..max parcels and cost <= ``upper``.

    As :func:`~sourcing.solver.cpsat.solve_cpsat`: the best plan found (or
    None), the proven lower bound on cost, and whether the search was complete.
    """
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
    lower = max(lower_bound, _ceil(bound.value))
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
        if lower_of_rest(ctx, elig, parcels, max_parcels, cap()) > cap():
            break  # every plan with this many parcels or more costs more than the best
        exact = lagrangian_bound(ctx, elig, parcels, parcels, cap(), COUNT_ITERATIONS)
        value = max(lower, _ceil(exact.value))
        if _closed(value, parcels, cap(), best):
            continue
        count_lower[parcels] = value
        counts[parcels] = (value, exact, ctx.prices)

    def fixed_out(parcels: int) -> np.ndarray:
        """C x 1: the nodes a plan of ``parcels`` parcels beating the best may open."""
        keep = counts[parcels][1].with_node <= cap() + 1e-6
        if best is not None and best.parcels == parcels:
            keep |= best.service >= 0
        return keep[:, None]

    # 3. The parcel sets each count's bound admits, by set-cover branching, the least bound
    # first (its plans are the likeliest to lower the best); again while the best improves,
    # since a lower best admits fewer sets.
    def rebound(parcels: int) -> None:
        """Renew a count's bound at the best cost now known, from its own prices."""
        value, exact, prices = counts[parcels]
        ctx.prices = prices
        exact = lagrangian_bound(ctx, elig, parcels, parcels, cap(), COUNT_ITERATIONS)
        value = max(value, _ceil(exact.value))
        counts[parcels] = (value, exact, ctx.prices)
        count_lower[parcels] = value

    improved, first = True, True
    while improved and counts and not out_of_time():
        improved = False
        for parcels in sorted(counts, key=lambda p: (counts[p][0], p)):
            if not first:
                rebound(parcels)
            value, exact, _ = counts[parcels]
            if not _closed(value, parcels, cap(), best):
                if out_of_time():
                    break
                before = cap()
                found, complete = best_subset(ctx, elig, fixed_out(parcels), parcels, exact, cap())
                best = _lexmin(best, found)
                improved |= cap() < before
                if not complete:
                    continue
            del counts[parcels], count_lower[parcels]
        first = False

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
        )
        best = _lexmin(best, found)
        if complete:
            del count_lower[parcels]
        else:
            count_lower[parcels] = max(value, proven)
    if not count_lower:
        return best, best.cost if best is not None else upper, True
    proven_lower = min(count_lower.values())
    return best, min(proven_lower, best.cost if best is not None else INF), False


def _closed(value: int, parcels: int, upper: int, best: Plan | None) -> bool:
    """Whether plans of ``parcels`` parcels, bounded by ``value``, cannot beat the best plan
    (cost ties go to fewer parcels) or the cost limit."""
    if value > upper:
        return True
    return best is not None and value >= best.cost and best.parcels < parcels


def lower_of_rest(ctx: Context, elig: np.ndarray, parcels: int, most: int, upper: int) -> int:
    """A bound on every plan with ``parcels`` to ``most`` parcels (cheap: warm prices)."""
    return _ceil(lagrangian_bound(ctx, elig, parcels, most, upper, COUNT_ITERATIONS // 2).value)
