"""Lagrangian branch and bound over plans of exactly ``p`` parcels (stage 4 on large residues).

A parcel count that :mod:`~sourcing.solver.large` could not close by its
bound or by enumerating its parcel sets (the count at the relaxation's own
cardinality, 8-11% below the optimum on fragmented 50-line carts) is
searched here. A branch fixes some nodes open (``forced``) and some closed;
its bound is the Lagrangian of :mod:`~sourcing.solver.lagrangian` with the
demand rows relaxed, for prices ``lam``::

    lam . Q + sum of t[n] over forced n + least (p - |forced|) of t[n] over free n,
    t[n] = min_v (F[n,v] + sum_k a[n,k] min(0, u[n,v,k] - lam[k]))   (capacity-aware)

re-optimised per branch by a few subgradient steps warm-started from its
parent's prices (the root's own bound sits at the LP bound with ``sum y ==
p``; fixing nodes moves it). Then, per branch:

* reduced-cost fixing: at the branch's best prices, a free node whose
  opening (in place of the dearest chosen one) or whose closing (in place of
  the cheapest unchosen one) lifts the bound above the best plan is fixed;
* an incumbent: the relaxation's chosen parcels, when they cover the demand,
  improved by the drop heuristic, may lower the best plan (and so prune);
* once the parcel sets a branch leaves are few (``LEAF_CELLS``), they are all
  priced exactly (:func:`~sourcing.solver.enumeration.price_product`): a leaf;
* otherwise it branches on the free node the relaxation opened most over its
  last steps (open / closed): 4-8% less CPU to a proof than the one it opened
  about half of the time (fragmented 50x500x2, seeds 0-2, 20 carts each).

Where the caller has proven that every plan arriving before the sub-problem's
day costs more than its limit (BALANCED's cutoff days, FASTEST's first day:
``arriving``), each branch's bound also asks that one parcel be on a slot
arriving that day: one row's term is replaced by its least on-day slot's, or
a row left out comes in on one (on cart 22 of fragmented 50x500x2 seed 0,
when it landed: BALANCED's day 7 took 271 branches instead of 1,209, day 6
1,223 instead of 1,723). Reduced-cost fixing bounds each child with that
constraint too.

The ascent, fixing, the leaf test and the pick, and a leaf's pricing are
compiled (:mod:`~sourcing.solver.kernels`); this module keeps the search.

Best first: the least bound of the open branches is a valid lower bound on
the count's plans at any moment, so a search cut short still proves a gap.
The count is closed only when every branch is pruned by its bound or
priced exactly; nothing is dropped on a guess. :func:`search_counts` takes
the open counts of one residue in a single best-first order (the plan one
count holds then prunes the others' branches as soon as it is found).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from sourcing.model import BoolArray
from sourcing.solver import kernels
from sourcing.solver.context import INF, Context, Plan, ceil_bound, lexmin
from sourcing.solver.enumeration import price_product, subset_plan
from sourcing.solver.heuristics import drop_heuristic
from sourcing.solver.strengthen import cover_bound

#: Subgradient steps at the root (warm-started from the count's own prices) and per branch
#: (from its parent's). Per branch, 8 took 6.3 s of CPU where 15 took 8.2 s and 30 took
#: 11.8 s, over the open counts of six fragmented 50x500x2 carts (seed 0): a few more
#: branches, each much cheaper.
ROOT_ITERATIONS: Final = 60
BRANCH_ITERATIONS: Final = 8
#: The ascent's steps at a branch: Polyak's length towards the bound that would close it,
#: times this (halved after five steps without a better bound). A branch starts from its
#: parent's prices and has few steps: longer first steps reach a higher bound sooner.
#: Alternated per cart in one process (fragmented 50x500x2, min of 2-3 runs): 1.5 against
#: 1.0 took 0.81-0.91x the CPU of seed 0's six slowest carts, p99 over 100 carts of seed 0
#: 495 -> 426 ms, sums over 20 carts of seeds 0-2 0.94-0.98x; 1.25 and 1.75 gained less,
#: 2.0 less again, 3.0 tripled cart 22's branches; 20-line regimes unchanged.
STEP_SCALE: Final = 1.5
#: A branch whose parcel sets, priced exactly, take at most this many (set x parcel x SKU)
#: cells is a leaf.
LEAF_CELLS: Final = 300_000
#: Weight of the last step in the running share of steps a node was chosen (branching).
CHOICE_DECAY: Final = 0.7
#: Whether a branch that its plain bound, fixing and leaf test leave open is tried once more
#: by the cover bound at its prices (:func:`~sourcing.solver.strengthen.cover_bound`)
#: before it is split, generating at most ``COVER_SETS`` partial parcel sets (more: split).
#: Off: on the CHEAPEST residues of fragmented 50x500x2 carts (10 residues of seeds 0 and
#: 1, one core, load ~7) it cut the branches by 25-75% (280 -> 146, 1,102 -> 390, 818 ->
#: 458) but not the CPU: 8.8 s without, 9.4 s with over the 10 (at the enumeration's own
#: set limit, 16 ms per call and 8.3 s on one residue alone).
COVER_BRANCHES: bool = False
COVER_SETS: Final = 4096


class _Relaxation:
    """The count's nodes (live rows only) and their slots, as the compiled ascent takes them."""

    def __init__(
        self, ctx: Context, elig: np.ndarray, parcels: int, arriving: int | None = None
    ) -> None:
        costs = ctx.costs
        self.nodes = np.flatnonzero(elig.any(axis=1))
        self.elig = elig[self.nodes]
        self.avail = costs.available[self.nodes].astype(np.float64)
        self.total_avail = self.avail.sum(axis=0)
        self.demand = ctx.demand.astype(np.float64)
        self.slots_per_row = np.count_nonzero(self.elig, axis=1)
        # A branch whose parcel sets take at most LEAF_CELLS (set x parcel x SKU) cells.
        self.leaf_sets = LEAF_CELLS / (parcels * ctx.demand.size)
        self.slots = kernels.slots_of(
            self.elig,
            costs.unit[self.nodes],
            costs.fixed[self.nodes],
            self.avail,
            costs.capacity[self.nodes].astype(np.float64),
        )
        # The slots arriving on the sub-problem's own day, of which a plan must open one.
        self.on_day = (
            None
            if arriving is None
            else costs.arrival[self.nodes[self.slots.row], self.slots.service] == arriving
        )


@dataclass(slots=True)
class _Branch:
    bound: float
    depth: int
    count: int  # the parcel count's position in the search
    forced: BoolArray
    closed: BoolArray
    prices: np.ndarray


#: The heap's entries: (bound, -depth, sequence, branch): the least bound first, deeper first
#: among equal bounds, then first in, first out (tuples compare in C; the branch never).
_Entry = tuple[float, int, int, _Branch]


@dataclass(frozen=True)
class Count:
    """One parcel count to search: its slots, its prices to start from, and a proven lower
    bound on its plans (``-inf``: none yet)."""

    parcels: int
    elig: np.ndarray
    prices: np.ndarray
    bound: float = -np.inf


@dataclass(frozen=True)
class Searched:
    """A parcel count's outcome: a proven lower bound on its plans that could still beat
    the best one, and whether its search was complete."""

    lower: int
    complete: bool


def search_counts(
    ctx: Context,
    counts: list[Count],
    best: Plan | None,
    upper: int,
    out_of_time: Callable[[], bool],
    arriving: int | None = None,
) -> tuple[Plan | None, list[Searched]]:
    """The least (cost, parcels) plan of exactly ``count.parcels`` parcels over ``count.elig``,
    for each count given, beating ``best`` and costing at most ``upper``: the counts in one
    best-first order.

    Searched one after another, a count holding no better plan is searched
    against the best plan known before it: every branch whose bound lies
    below that is expanded, though a later count may hold a plan far below.
    In one order over all counts, no branch bounded above the optimum is
    expanded once the optimum is found, and it is found before any such branch
    is taken (its own branches are bounded below it). Returns the best plan known
    at the end (``best`` or better) and each count's outcome (a proven lower bound on
    its plans that could still beat it, and whether its search was complete), in the
    order given.
    """
    relaxations = [_Relaxation(ctx, c.elig, c.parcels, arriving) for c in counts]
    sequence = itertools.count()

    def limit() -> int:
        return min(upper, best.cost) if best is not None else upper

    def threshold(parcels: int) -> int:
        """A branch of this many parcels whose bound rounds up above this holds no plan
        beating the best one: none cheaper, nor as cheap with fewer parcels (ties go to
        fewer parcels)."""
        if best is not None and best.parcels <= parcels:
            return min(limit(), best.cost - 1)
        return limit()

    def hopeless(value: float, parcels: int) -> bool:
        # -inf (a branch not bounded yet) is never hopeless; +inf (no plan) always is.
        return value > -np.inf and ceil_bound(value) > threshold(parcels)

    heap: list[_Entry] = []
    for i, (count, relax) in enumerate(zip(counts, relaxations, strict=True)):
        nothing = np.zeros(relax.nodes.size, dtype=np.bool_)
        root = _Branch(count.bound, 0, i, nothing, nothing, count.prices)
        heapq.heappush(heap, (root.bound, 0, next(sequence), root))
    unsettled: list[list[float]] = [[] for _ in counts]  # leaves whose pricing was cut short
    while heap and not out_of_time():
        branch = heapq.heappop(heap)[3]
        relax, parcels = relaxations[branch.count], counts[branch.count].parcels
        if hopeless(branch.bound, parcels):
            continue
        ctx.stats["branch"] = ctx.stats.get("branch", 0) + 1
        # The bound that makes this branch hopeless: an ascent stopped at the cost limit
        # itself (no plan within it known yet: BALANCED's cutoffs) closes nothing.
        goal = float(threshold(parcels) + 1) if limit() < INF else np.inf
        depth = branch.depth
        ascent = kernels.branch_ascent(
            relax.slots, relax.avail, branch.closed, branch.forced, branch.prices, relax.demand,
            parcels, ROOT_ITERATIONS if depth == 0 else BRANCH_ITERATIONS, goal, CHOICE_DECAY,
            relax.total_avail, relax.on_day, STEP_SCALE,
        )  # fmt: skip
        if ascent is None:
            continue  # no plan in this branch
        value = max(ascent.value, branch.bound)
        best = lexmin(best, _incumbent(ctx, relax, ascent, limit()))
        if hopeless(value, parcels):
            continue
        move, forced, closed, pick = kernels.fix_and_pick(
            ascent, branch.forced, branch.closed, parcels, threshold(parcels),
            relax.slots_per_row, relax.leaf_sets,
        )  # fmt: skip
        if move == kernels.NO_PLAN:
            continue
        if move == kernels.LEAF:
            found, exact = _leaf(ctx, relax, parcels, forced, closed, limit())
            best = lexmin(best, found)
            if not exact:
                unsettled[branch.count].append(value)
            continue
        if COVER_BRANCHES and _covered_above(
            ctx, counts[branch.count].elig, relax, parcels, forced, closed, ascent.prices,
            threshold(parcels),
        ):  # fmt: skip
            continue
        for side in (True, False):
            child_forced, child_closed = forced.copy(), closed.copy()
            (child_forced if side else child_closed)[pick] = True
            child = _Branch(
                value, depth + 1, branch.count, child_forced, child_closed, ascent.prices
            )
            heapq.heappush(heap, (value, -depth - 1, next(sequence), child))
    outcomes = []
    for i, count in enumerate(counts):
        open_bounds = [
            b.bound for *_, b in heap if b.count == i and not hopeless(b.bound, count.parcels)
        ] + unsettled[i]
        if not open_bounds:
            outcomes.append(Searched(best.cost if best is not None else upper, True))
        else:
            least = min(open_bounds)
            outcomes.append(Searched(ceil_bound(least) if np.isfinite(least) else -INF, False))
    return best, outcomes


def _covered_above(
    ctx: Context,
    elig: np.ndarray,
    relax: _Relaxation,
    parcels: int,
    forced: BoolArray,
    closed: BoolArray,
    prices: np.ndarray,
    threshold: int,
) -> bool:
    """Whether the branch's cover bound at its prices (its plans must hold the demand: the
    least *covering* free nodes' terms, not the least terms) rounds up above ``threshold``."""
    ctx.stats["coverbound"] = ctx.stats.get("coverbound", 0) + 1
    value = cover_bound(
        ctx, elig, parcels, prices, threshold, relax.nodes[forced], relax.nodes[closed], COVER_SETS
    )
    above = ceil_bound(value) > threshold if np.isfinite(value) else value > 0
    ctx.stats["coverclosed"] = ctx.stats.get("coverclosed", 0) + int(above)
    return bool(above)


def _incumbent(ctx: Context, relax: _Relaxation, ascent: kernels.Ascent, limit: int) -> Plan | None:
    """A plan from the parcels the relaxation opens, if they cover the demand (drop heuristic)."""
    # Rarely do they (31 of 10,560 branches on four fragmented 50-line carts): the ascent
    # says so, where the heuristic's own check cost 12 us a branch.
    if ascent.opened.size == 0 or not ascent.covers:
        return None
    plan = drop_heuristic(ctx, relax.nodes[ascent.opened], ascent.services.astype(np.int64))
    return plan if plan is not None and plan.cost <= limit else None


def _leaf(
    ctx: Context,
    relax: _Relaxation,
    parcels: int,
    forced: BoolArray,
    closed: BoolArray,
    limit: int,
) -> tuple[Plan | None, bool]:
    """Price every parcel set a leaf leaves (:data:`~sourcing.solver.kernels.LEAF`): the
    best plan among them within ``limit``, and whether the pricing was exact."""
    free_count = parcels - int(np.count_nonzero(forced))
    # One group per forced node (its slots left), and the free nodes' slots.
    group_ptr, group_n, group_v, free_n, free_v = kernels.leaf_slots(
        relax.elig, relax.nodes, forced, closed
    )
    key, found, exact = price_product(
        ctx, group_ptr, group_n, group_v, free_n, free_v, free_count, limit + 1e-6
    )
    if found is None or key[0] > limit:
        return None, exact
    return subset_plan(ctx, *found), exact
