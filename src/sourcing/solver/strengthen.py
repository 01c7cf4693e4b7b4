"""Prices that see the cover: a stronger bound and good plans for one parcel count.

For any prices ``lam`` a plan with exactly ``p`` parcels costs at least
``lam . Q + sum over its nodes of t[n](lam)`` (:func:`lagrangian_bound`'s
node terms). :func:`lagrangian_bound` minimises that over *any* ``p`` nodes;
but a plan's nodes must also hold the demand, and on fragmented stock (each
SKU at a third of the nodes, 50-line carts) the ``p`` cheapest terms almost
never do: a random 6-node set holds all 50 SKUs about once in 500. So

    cover bound(lam) = lam . Q + min over covering p-sets S of sum_{n in S} t[n](lam)

is a valid bound for every ``lam`` and much stronger (measured on fragmented
50x500x2 carts: 23-77% of the gap between the plain bound and the optimum
closed at the count left open). It is what set-cover branching
(:func:`~sourcing.solver.enumeration._covering_sets`) computes exactly while
it generates the sets, so it needs no new proof machinery; but the prices that
maximise the plain bound are poor for it. :func:`cover_prices` re-optimises the
prices with the least-term *covering* set as the subgradient's minimiser
(found by a beam search over the same branching), and prices those sets
exactly on the way: they are near-optimal plans. :func:`cover_bound` computes
the bound itself (exact, with nodes forced in or out for a branch and bound).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from sourcing.model import IntArray
from sourcing.solver import kernels
from sourcing.solver.context import INF, MAX_SUBSET_CELLS, Context, Plan, lexmin
from sourcing.solver.enumeration import _covering_sets, price_sets, subset_plan, unique_rows
from sourcing.solver.lagrangian import Bound, lagrangian_bound

#: Subgradient steps of :func:`cover_prices`, and their decay: each step moves
#: ``DECAY ** i * (cap - plain bound) / |g|^2`` along the gradient (15 steps at 0.85
#: measured on fragmented 50x500x2 carts; a Polyak step with a heuristic minimiser
#: overshoots and stalls).
STEPS: Final = 15
DECAY: Final = 0.85
#: Beam search: partial sets kept per depth, and holders (cheapest terms) tried per branch.
BEAM_WIDTH: Final = 64
BEAM_BRANCH: Final = 16
#: ... both this many times wider where the beam finds no covering set.
WIDE: Final = 4


@dataclass(frozen=True)
class NodeTerms:
    """Per node with an eligible slot (``nodes``): its least term at ``prices`` and that
    slot's service; ``priced_demand = prices . Q``; ``bound`` carries the slot terms."""

    nodes: IntArray
    terms: np.ndarray
    services: IntArray
    priced_demand: float
    bound: Bound


def node_terms(ctx: Context, elig: np.ndarray, parcels: int, prices: np.ndarray) -> NodeTerms:
    """The Lagrangian terms at ``prices`` (one evaluation of :func:`lagrangian_bound`)."""
    saved = ctx.prices
    ctx.prices = prices
    try:
        bound = lagrangian_bound(ctx, elig, parcels, parcels, INF, iterations=1)
    finally:
        ctx.prices = saved
    slot_terms = bound.slot_terms
    if slot_terms is None:  # no plan: too few nodes
        empty = np.zeros(0, dtype=np.int64)
        return NodeTerms(empty, np.zeros(0), empty, float(prices @ ctx.demand), bound)
    nodes = np.flatnonzero(elig.any(axis=1))
    services = slot_terms[nodes].argmin(axis=1)
    terms = slot_terms[nodes, services]
    return NodeTerms(nodes, terms, services, bound.priced_demand, bound)


def units_taken(
    ctx: Context, nodes: IntArray, services: IntArray, prices: np.ndarray
) -> np.ndarray:
    """Units (K) the parcels (nodes, services) take at ``prices`` in the relaxation:
    every unit cheaper than its price, up to stock, the most profitable first up to capacity."""
    costs = ctx.costs
    one_slot = np.zeros((nodes.size, costs.fixed.shape[1]), dtype=np.bool_)
    one_slot[np.arange(nodes.size), services] = True
    slots = kernels.slots_of(
        one_slot,
        costs.unit[nodes],
        costs.fixed[nodes],
        costs.available[nodes],
        costs.capacity[nodes].astype(np.float64),
    )
    at = kernels.row_terms(slots, nodes.size, prices)
    return at.taken_by_sku(slots, np.arange(nodes.size), ctx.demand.size)


def least_covering_sets(
    stock: np.ndarray,
    need: np.ndarray,
    terms: np.ndarray,
    size: int,
    width: int = BEAM_WIDTH,
    branch: int = BEAM_BRANCH,
) -> tuple[IntArray, np.ndarray]:
    """Cheap ``size``-sets of rows of ``stock`` (N x K) that hold ``need`` (K), by beam search.

    A heuristic (no optimality claim): set-cover branching on the rarest SKU
    still short, its ``branch`` cheapest holders by term, the ``width`` partial
    sets of least terms (plus a penalty per unit short) kept per depth. Returns
    the covering sets of the last depth (rows of indices) and their term sums,
    possibly none.
    """
    n_rows, n_skus = stock.shape
    none = (np.zeros((0, size), dtype=np.int64), np.zeros(0))
    if size == 0 or size > n_rows:
        return (np.zeros((1, 0), dtype=np.int64), np.zeros(1)) if (need <= 0).all() else none
    holders = [np.flatnonzero(stock[:, k] > 0) for k in range(n_skus)]
    holders = [h[np.argsort(terms[h], kind="stable")] for h in holders]
    rarity = np.argsort([h.size for h in holders], kind="stable")
    everyone = np.argsort(terms, kind="stable")
    # A unit short costs about what a cheap parcel pays per unit it carries.
    cheap = terms[everyone[: 4 * size]]
    penalty = max(float(np.median(cheap)) / max(float(np.median(stock.sum(axis=1))), 1.0), 0.0)
    sets = np.zeros((1, 0), dtype=np.int64)
    short = np.maximum(need, 0)[None, :].astype(np.float64)
    sums = np.zeros(1)
    for depth in range(size):
        missing = short > 0
        branch_on = np.where(missing.any(axis=1), rarity[missing[:, rarity].argmax(axis=1)], -1)
        rows_parts, cand_parts = [], []
        for k in np.unique(branch_on).tolist():
            rows = np.flatnonzero(branch_on == k)
            cand = (everyone if k < 0 else holders[k])[: branch + depth]
            rows_parts.append(np.repeat(rows, cand.size))
            cand_parts.append(np.tile(cand, rows.size))
        r, c = np.concatenate(rows_parts), np.concatenate(cand_parts)
        keep = (sets[r] != c[:, None]).all(axis=1)
        r, c = r[keep], c[keep]
        if r.size == 0:
            return none
        sets = np.sort(np.column_stack([sets[r], c]), axis=1)
        sets, first = unique_rows(sets)
        r, c = r[first], c[first]
        short = np.maximum(short[r] - stock[c], 0)
        sums = sums[r] + terms[c]
        if depth < size - 1:
            top = np.argsort(sums + penalty * short.sum(axis=1), kind="stable")[:width]
            sets, short, sums = sets[top], short[top], sums[top]
    done = ~(short > 0).any(axis=1)
    return sets[done], sums[done]


@dataclass(frozen=True)
class CoverPrices:
    """What :func:`cover_prices` found: the prices, a bound whose slot terms are taken at
    them (for :func:`~sourcing.solver.enumeration.best_subset`), and the best plan priced."""

    prices: np.ndarray
    bound: Bound
    plan: Plan | None


def cover_prices(
    ctx: Context,
    elig: np.ndarray,
    parcels: int,
    upper: int,
    prices: np.ndarray,
    steps: int = STEPS,
) -> CoverPrices:
    """Prices for plans of exactly ``parcels`` parcels over ``elig``, ascended with the least
    covering set (:func:`least_covering_sets`) as the minimiser, starting at ``prices``.

    The sets met on the way are priced exactly; the least plan among them (cost <= ``upper``)
    is returned. The bound's ``value`` and ``with_node`` are the plain relaxation's at the
    final prices (valid, usually weaker than the plain optimum's: keep that one's); its slot
    terms are the point: the covering sets they admit below a cost are far fewer.
    """
    demand = ctx.demand.astype(np.float64)
    best: Plan | None = None
    lam = np.asarray(prices, dtype=np.float64).copy()
    start = node_terms(ctx, elig, parcels, lam)
    if start.nodes.size < parcels:
        return CoverPrices(lam, start.bound, None)
    plain = start.priced_demand + float(np.sort(start.terms)[:parcels].sum())
    at = start
    for step in range(steps + 1):
        if step:
            at = node_terms(ctx, elig, parcels, lam)
        stock = ctx.costs.available[at.nodes]
        sets, sums = least_covering_sets(stock, ctx.demand, at.terms, parcels)
        if sets.shape[0] == 0:  # rare covers (fewer parcels): a wider beam before giving up
            sets, sums = least_covering_sets(
                stock, ctx.demand, at.terms, parcels, WIDE * BEAM_WIDTH, WIDE * BEAM_BRANCH
            )
        if sets.shape[0] == 0:
            break
        # Price every covering set met, cheapest terms first (a plan beating the cap is kept).
        order = np.argsort(sums, kind="stable")
        cap = min(upper, best.cost) if best is not None else upper
        (cost, _), found, _ = price_sets(ctx, at.nodes, at.services, sets[order], None, float(cap))
        if found is not None and cost <= cap:
            best = lexmin(best, subset_plan(ctx, *found))
        if step == steps or ctx.out_of_time():
            break
        target = float(min(upper, best.cost) if best is not None else upper)
        if target >= INF:
            target = plain + max(abs(plain) * 0.05, 1000.0)
        chosen = sets[order[0]]
        gradient = demand - units_taken(ctx, at.nodes[chosen], at.services[chosen], lam)
        norm = float(gradient @ gradient)
        if norm == 0:
            break
        lam = lam + DECAY**step * max(target - plain, 1.0) / norm * gradient
    return CoverPrices(lam, at.bound, best)


def cover_bound(
    ctx: Context,
    elig: np.ndarray,
    parcels: int,
    prices: np.ndarray,
    upper: int,
    forced_in: IntArray | None = None,
    forced_out: IntArray | None = None,
    limit: int | None = None,
) -> float:
    """A lower bound on every plan over ``elig`` with exactly ``parcels`` parcels that opens
    the nodes ``forced_in`` and none of ``forced_out``: the cover bound at ``prices``.

    Exact (the least covering set's terms, by set-cover branching) when some
    covering set's bound is at most ``upper``; ``upper + 1`` when none is (every
    such plan costs more); the plain bound at these prices (the least terms, cover
    ignored) when the sets are too many to generate (more than ``limit`` partial sets;
    default the enumeration's own limit). ``inf``: no such plan.
    """
    if forced_out is not None and forced_out.size:
        elig = elig.copy()
        elig[forced_out] = False
    forced = np.zeros(0, dtype=np.int64) if forced_in is None else np.unique(forced_in)
    if forced.size and not elig[forced].any(axis=1).all():
        return np.inf  # a node forced in with no slot left
    at = node_terms(ctx, elig, max(parcels, 1), prices)
    in_forced = np.isin(at.nodes, forced)
    fixed_part = at.priced_demand + float(at.terms[in_forced].sum())
    free_nodes, free_terms = at.nodes[~in_forced], at.terms[~in_forced]
    size = parcels - forced.size
    if size < 0 or size > free_nodes.size:
        return np.inf
    need = np.maximum(ctx.demand - ctx.costs.available[forced].sum(axis=0), 0)
    if size == 0:
        return fixed_part if (need <= 0).all() else np.inf
    plain = fixed_part + float(np.sort(free_terms)[:size].sum())
    sub = Context(ctx.costs, need, ctx.settings, ctx.deadline)
    if limit is None:
        limit = MAX_SUBSET_CELLS // (parcels * max(ctx.demand.size, 1))
    sets = _covering_sets(sub, free_nodes, free_terms, size, upper - fixed_part, limit)
    if sets is None:
        return plain
    if sets.shape[0] == 0:
        return max(plain, float(upper) + 1.0)
    return max(plain, fixed_part + float(free_terms[sets].sum(axis=1).min()))


def enumeration_bound(plain: Bound, found: CoverPrices) -> Bound:
    """The bound to enumerate a count's sets with: the plain optimum's value and node bounds
    (stronger for those), the cover prices' slot terms (far fewer sets admitted)."""
    if found.bound.slot_terms is None:
        return plain
    return replace(
        plain,
        with_node=np.maximum(plain.with_node, found.bound.with_node),
        priced_demand=found.bound.priced_demand,
        slot_terms=found.bound.slot_terms,
    )
