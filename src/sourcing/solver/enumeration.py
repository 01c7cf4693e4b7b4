"""Stage 2: plans enumerated exactly by parcel count.

For a fixed set of parcels the best split of the demand is per SKU, cheapest
unit first up to each node's stock (:func:`split`), so pricing a set is a few
numpy operations. :func:`best_subset` prices every set of ``size`` parcels
among the allowed slots, or, given a Lagrangian bound, generates only the
sets whose bound does not exceed the best plan (:func:`_hopeful_sets`), best
first.
"""

from __future__ import annotations

import itertools
import math
from typing import Final

import numpy as np
from ortools.graph.python import min_cost_flow

from sourcing.model import BoolArray, IntArray
from sourcing.solver.context import CHUNK_CELLS, INF, MAX_SUBSET_CELLS, Context, Plan
from sourcing.solver.lagrangian import Bound

#: Sets whose cheapest-first split breaks a capacity are re-split exactly (a min-cost
#: flow each, 20-70 us) up to this many per call; beyond it the enumeration is not a
#: proof. At 400, capacity-bound 20-line carts that needed ~1,000-2,500 re-splits fell
#: to CP-SAT, which then took 1-4 s and often could not prove them at all.
MAX_RESPLITS: Final = 5000

#: Small subset tables by (count, size): the same few recur in every quote.
_COMBINATIONS_CACHE: dict[tuple[int, int], IntArray] = {}


_CACHED_COMBINATION_ROWS: Final = 4096


def _combinations(count: int, size: int) -> IntArray:
    """All ``size``-subsets of ``range(count)`` as read-only rows (pairs vectorised)."""
    cached = _COMBINATIONS_CACHE.get((count, size))
    if cached is not None:
        return cached
    if size == 2:
        sets = np.stack(np.triu_indices(count, 1), axis=1).astype(np.int64)
    else:
        flat = np.fromiter(
            itertools.chain.from_iterable(itertools.combinations(range(count), size)),
            dtype=np.int64,
        )
        sets = flat.reshape(-1, size)
    if sets.shape[0] <= _CACHED_COMBINATION_ROWS:
        sets.setflags(write=False)
        _COMBINATIONS_CACHE[count, size] = sets
    return sets


def stable_argsort(values: np.ndarray) -> IntArray:
    """``np.argsort(values, kind="stable")`` of a 1-D array, several times faster on floats.

    numpy's stable sort of float64 is a timsort, 10-15x slower than its
    quicksort on the tens of thousands of set bounds a step can generate.
    Quicksort first, then order each run of equal values by index: the keys
    (run, index) are distinct, so any sort of them is the stable order.
    """
    order = np.argsort(values)
    if order.size < 2:
        return order
    ordered = values[order]
    run = np.concatenate(([0], np.cumsum(ordered[1:] != ordered[:-1])))
    if run[-1] == order.size - 1:
        return order  # no ties
    stable: IntArray = order[np.argsort(run * order.size + order)]
    return stable


def _max_of_columns(values: np.ndarray) -> np.ndarray:
    """``values.max(axis=1)`` as elementwise maximums: faster over a short second axis."""
    most: np.ndarray = values[:, 0]
    for j in range(1, values.shape[1]):
        most = np.maximum(most, values[:, j])
    return most


def _covering(ctx: Context, nodes: IntArray) -> BoolArray:
    """Per row of ``nodes`` (T x m): whether those nodes together hold the whole demand."""
    available = ctx.available_kc
    held = available.take(nodes[:, 0], axis=1)  # K x T: summed column by column, SKUs by sets
    for j in range(1, nodes.shape[1]):
        held = held + available.take(nodes[:, j], axis=1)
    covers: BoolArray = np.asarray((held >= ctx.demand[:, None]).all(axis=0))
    return covers


def split(
    ctx: Context, nodes: IntArray, services: IntArray
) -> tuple[IntArray, IntArray, np.ndarray, np.ndarray]:
    """Best split of the demand over each row's parcels (T x m slots that cover it).

    Per SKU, cheapest unit cost first up to each node's stock: optimal when
    capacity does not bind. Returns cost per row, units (T x m x K), whether
    every parcel carries something, and whether capacities hold.
    """
    if nodes.shape[1] == 2:
        return _split_pairs(ctx, nodes, services)
    costs, demand = ctx.costs, ctx.demand
    avail = costs.available[nodes]
    unit = costs.unit[nodes, services, :]  # T x m x K
    order = np.argsort(unit, axis=1, kind="stable")
    # Index grids rather than take/put_along_axis: the same gather and scatter, less overhead.
    rows = np.arange(nodes.shape[0])[:, None, None]
    skus = np.arange(demand.size)
    a_sorted = avail[rows, order, skus]
    before = np.cumsum(a_sorted, axis=1) - a_sorted
    take_sorted = np.minimum(np.maximum(demand - before, 0), a_sorted)
    units = np.empty_like(take_sorted)
    units[rows, order, skus] = take_sorted
    total = costs.fixed[nodes, services].sum(axis=1) + (units * unit).sum(axis=(1, 2))
    carried = units.sum(axis=2)
    return (
        total,
        units,
        (carried > 0).all(axis=1),
        (carried <= costs.capacity[nodes]).all(axis=1),
    )


def _split_pairs(
    ctx: Context, nodes: IntArray, services: IntArray
) -> tuple[IntArray, IntArray, np.ndarray, np.ndarray]:
    """:func:`split` for sets of two parcels: no sort, SKUs by sets (K x T) to vectorise well."""
    costs, demand = ctx.costs, ctx.demand[:, None]
    n0, n1 = nodes[:, 0], nodes[:, 1]
    # Slot (n, v) is column v * C + n of the V x C arrays flattened (np.take beats fancy indexing).
    slot0, slot1 = services[:, 0] * costs.nodes.size + n0, services[:, 1] * costs.nodes.size + n1
    unit = ctx.unit_kvc.reshape(demand.size, -1)
    u0, u1 = unit.take(slot0, axis=1), unit.take(slot1, axis=1)
    a0, a1 = ctx.available_kc.take(n0, axis=1), ctx.available_kc.take(n1, axis=1)
    # Per SKU the cheaper parcel goes first; on equal cost the first one (a stable sort's order).
    first_is_0 = u0 <= u1
    a_first = np.where(first_is_0, a0, a1)
    take_first = np.minimum(np.maximum(demand, 0), a_first)
    take_second = np.minimum(np.maximum(demand - a_first, 0), np.where(first_is_0, a1, a0))
    units0 = np.where(first_is_0, take_first, take_second)
    units1 = np.where(first_is_0, take_second, take_first)
    fixed = ctx.fixed_vc.reshape(-1)
    total = fixed.take(slot0) + fixed.take(slot1) + (units0 * u0 + units1 * u1).sum(axis=0)
    carried0, carried1 = units0.sum(axis=0), units1.sum(axis=0)
    capacity = costs.capacity
    return (
        total,
        np.stack((units0.T, units1.T), axis=1),  # T x 2 x K
        (carried0 > 0) & (carried1 > 0),
        (carried0 <= capacity.take(n0)) & (carried1 <= capacity.take(n1)),
    )


def subset_cells(slots: int, size: int, skus: int) -> int:
    """Array cells that enumerating every ``size``-set of ``slots`` slots takes."""
    return math.comb(slots, size) * size * skus


def _hopeful_sets(terms: np.ndarray, size: int, budget: float, limit: int) -> IntArray | None:
    """Every ``size``-set of indices into ascending ``terms`` whose terms sum to <= ``budget``.

    Built element by element: a partial set with sum s and r elements to go
    can continue with index k only if ``s + terms[k] + ... + terms[k+r-1]``
    (the cheapest completion from k) fits, and that window sum grows with k,
    so the valid k are one range found by binary search. Returns None if
    more than ``limit`` sets qualify.
    """
    count = terms.size
    if size > count:
        return np.zeros((0, size), dtype=np.int64)
    prefix = np.concatenate(([0.0], np.cumsum(terms)))
    window = prefix[size:] - prefix[:-size]  # cheapest completion of `size` from k
    first = np.arange(int(np.searchsorted(window, budget, side="right")), dtype=np.int64)
    partial, sums = first[:, None], terms[first]
    for placed in range(1, size):
        left = size - placed
        window = prefix[left:] - prefix[:-left]
        hi = np.searchsorted(window, budget - sums, side="right")
        lo = partial[:, -1] + 1
        counts = np.clip(hi - lo, 0, None)
        total = int(counts.sum())
        if total > limit:
            return None
        rows = np.repeat(np.arange(partial.shape[0]), counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        nxt = np.repeat(lo, counts) + offsets
        partial = np.column_stack([partial[rows], nxt])
        sums = sums[rows] + terms[nxt]
    if partial.shape[0] > limit:
        return None
    return partial.astype(np.int64)


def _covering_sets(
    ctx: Context, slot_n: IntArray, terms: np.ndarray, size: int, budget: float, limit: int
) -> IntArray | None:
    """Every ``size``-set of slots (distinct nodes) that covers the demand with terms <= ``budget``.

    Rows index ``slot_n``, each set once (sorted rows, in lexicographic order).
    Built slot by slot, branching on the rarest SKU still short: any covering
    set holds a holder of it, so each step tries only that SKU's holders
    (set-cover branching). The branches partition the sets: the child that
    takes the holder at position i (by term) excludes the holders before it
    from the rest of the set, whose sets belong to those earlier children.
    Once a partial set covers the demand, the remaining slots are free (a
    parcel that is not needed for cover may still pay by its cheap units),
    taken in ascending order. A partial set whose terms plus the cheapest
    terms left exceed ``budget`` is dropped. Returns None if more than
    ``limit`` partial sets qualify.
    """
    demand = ctx.demand
    avail = ctx.available_kc.take(slot_n, axis=1)  # K x S: each slot's node's stock
    avail_sk = np.ascontiguousarray(avail.T)
    holders = [np.flatnonzero(row > 0) for row in avail]
    rank = np.argsort([h.size for h in holders], kind="stable")  # rarest SKU first
    # Candidates by ascending term: those that fit a partial set's room are a prefix.
    holders = [h[np.argsort(terms[h], kind="stable")] for h in holders]
    everyone = np.argsort(terms, kind="stable")
    # position[k, slot]: the slot's place among SKU k's holders (past the end if none).
    position = np.full((len(holders), terms.size), terms.size, dtype=np.int64)
    for k, h in enumerate(holders):
        position[k, h] = np.arange(h.size)
    prefix = np.concatenate(([0.0], np.cumsum(np.sort(terms))))
    sets = np.zeros((1, 0), dtype=np.int64)
    # Per partial set and step: the SKU branched on (-1: a free slot) and the holder's
    # position taken; and the position in `everyone` of its last free slot.
    branched = np.zeros((1, 0), dtype=np.int64)
    taken_at = np.zeros((1, 0), dtype=np.int64)
    last_free = np.full(1, -1, dtype=np.int64)
    remaining = demand[None, :].astype(np.int64)
    sums = np.zeros(1)
    for depth in range(size):
        if sets.shape[0] == 0:
            return np.zeros((0, size), dtype=np.int64)
        if ctx.out_of_time():
            return None
        left = size - depth - 1
        short = remaining > 0
        covered = ~short.any(axis=1)
        branch = np.where(covered, -1, rank[short[:, rank].argmax(axis=1)])
        parts_r: list[IntArray] = []
        parts_p: list[IntArray] = []
        parts_c: list[IntArray] = []
        expanded = 0
        for k in np.unique(branch).tolist():
            rows = np.flatnonzero(branch == k)
            cand = everyone if k < 0 else holders[k]
            room = budget - sums[rows] - prefix[min(left, prefix.size - 1)]
            ends = np.searchsorted(terms[cand], room, side="right")
            starts = last_free[rows] + 1 if k < 0 else np.zeros(rows.size, dtype=np.int64)
            counts = np.maximum(ends - starts, 0)
            total = int(counts.sum())
            expanded += total
            if expanded > limit:
                return None
            at = np.arange(total) - np.repeat(np.cumsum(counts) - counts - starts, counts)
            parts_r.append(np.repeat(rows, counts))
            parts_p.append(at)
            parts_c.append(cand[at])
        r, p, c = np.concatenate(parts_r), np.concatenate(parts_p), np.concatenate(parts_c)
        if depth:
            keep = (slot_n[sets[r]] != slot_n[c][:, None]).all(axis=1)  # distinct nodes
            for d in range(depth):  # not a holder an earlier branch left to its siblings
                k_d = branched[r, d]
                keep &= (k_d < 0) | (position[np.maximum(k_d, 0), c] >= taken_at[r, d])
            r, p, c = r[keep], p[keep], c[keep]
        step_branch = branch[r]
        remaining = np.maximum(remaining[r] - avail_sk[c], 0)
        sets = np.column_stack([sets[r], c])
        branched = np.column_stack([branched[r], step_branch])
        taken_at = np.column_stack([taken_at[r], p])
        last_free = np.where(step_branch < 0, p, last_free[r])
        sums = sums[r] + terms[c]
        if left == 0:
            done = ~(remaining > 0).any(axis=1)
            sets = sets[done]
    return np.unique(np.sort(sets, axis=1), axis=0) if sets.shape[0] else sets


def best_subset(
    ctx: Context,
    elig: np.ndarray,
    slots_ok: np.ndarray,
    size: int,
    bound: Bound | None = None,
    upper: int = INF,
    more: int = 0,
) -> tuple[Plan | None, int]:
    """Best plan with ``size`` to ``size + more`` parcels among allowed slots, and the parcel
    count it is exact through: no plan with ``size`` to that many parcels beats it (``size -
    1``: not even ``size`` was searched completely). ``more`` needs a bound.

    For a fixed set of parcels the best split is per SKU: cheapest unit cost
    first, up to each node's stock; where that breaks a capacity, a min-cost
    flow re-splits the set exactly. Too many sets, or the time budget spent:
    not (fully) attempted, not a proof. Sets are priced in chunks to bound
    memory.

    With a Lagrangian bound, only the sets whose bound fits a budget are
    generated, and the budget grows from just above the least bound of any
    set towards the best cost known (``upper``, then the best found): once
    the best plan costs no more than the budget, every set left out costs
    more (a proof). So a poor ``upper`` (or none) no longer floods the
    enumeration with hopeless sets, and a cheap plan with one parcel more,
    found at a low budget, prunes the sets with fewer. The extra parcel count is
    only a help: where its sets are too many (or their re-splits), it is
    dropped and ``size`` alone is searched on.
    """
    slot_n, slot_v = np.nonzero(elig & slots_ok)
    if bound is None or bound.slot_terms is None:
        if slot_n.size < size:
            return None, size
        if subset_cells(slot_n.size, size, ctx.demand.size) > MAX_SUBSET_CELLS:
            return None, size - 1
        _, every_best, exact = _price_sets(
            ctx, slot_n, slot_v, _combinations(slot_n.size, size), None
        )
        return (subset_plan(ctx, *every_best) if every_best else None), size - 1 + exact
    # Too few slots for a size: no plan has that many parcels (exact by emptiness).
    sizes = [m for m in range(size, size + more + 1) if m <= slot_n.size]
    if not sizes:
        return None, size + more
    slot_terms = bound.slot_terms[slot_n, slot_v]
    ascending = np.sort(slot_terms)
    floor = bound.priced_demand + min(float(ascending[:m].sum()) for m in sizes)
    if not np.isfinite(floor):
        return None, size + more
    cap = upper + 1e-6
    if upper >= INF:
        steps = [floor + max(abs(floor), 1e5) * f for f in (0.02, 0.08, 0.32, 1.28)]
    else:
        steps = [floor + (cap - floor) * f for f in (1 / 16, 1 / 4, 1.0)]
    best_key: tuple[int, int] = (INF, INF)
    best_set: tuple[IntArray, IntArray, IntArray] | None = None
    priced_up_to = dict.fromkeys(sizes, -np.inf)  # per size: every set up to here is priced

    top = size + more  # exact through this count once the budget passes the best found

    def answer(through: int) -> tuple[Plan | None, int]:
        return (subset_plan(ctx, *best_set) if best_set else None), through

    for step in steps:
        if ctx.out_of_time():
            return answer(size - 1)
        cap = min(cap, best_key[0] + 1e-6)
        budget = min(step, cap)
        for m in list(sizes):
            generated = _bounded_sets(ctx, slot_n, slot_terms, m, budget - bound.priced_demand)
            exact = generated is not None
            if generated is not None:
                set_bound = bound.priced_demand + slot_terms[generated].sum(axis=1)
                fresh = set_bound > priced_up_to[m]
                sets, set_bound = generated[fresh], set_bound[fresh]
                # Most promising first: once a set's bound exceeds the best found, so do the rest.
                by_bound = stable_argsort(set_bound)
                key, found, exact = _price_sets(
                    ctx, slot_n, slot_v, sets[by_bound], set_bound[by_bound], cap
                )
                if key < best_key:
                    best_key, best_set = key, found
            if not exact:
                if m == size or ctx.out_of_time():
                    return answer(size - 1)
                sizes, top = [k for k in sizes if k < m], m - 1  # the helper overflowed: drop it
                break
            priced_up_to[m] = budget
        if best_key[0] <= budget or budget >= cap:
            return answer(top)
    return answer(size - 1)


def _bounded_sets(
    ctx: Context, slot_n: IntArray, slot_terms: np.ndarray, size: int, budget: float
) -> IntArray | None:
    """``size``-sets of slots whose terms sum to <= ``budget`` (None: too many), that may cover.

    Plain enumeration by terms (:func:`_hopeful_sets`) when few sets qualify,
    else the covering sets only (:func:`_covering_sets`).
    """
    limit = MAX_SUBSET_CELLS // (size * ctx.demand.size)
    by_term = np.argsort(slot_terms, kind="stable")
    hopeful = _hopeful_sets(slot_terms[by_term], size, budget, limit)
    if hopeful is not None:
        return by_term[hopeful]
    return _covering_sets(ctx, slot_n, slot_terms, size, budget, limit)


def _price_sets(
    ctx: Context,
    slot_n: IntArray,
    slot_v: IntArray,
    sets: IntArray,
    set_bound: np.ndarray | None,
    limit: float = np.inf,
) -> tuple[tuple[int, int], tuple[IntArray, IntArray, IntArray] | None, bool]:
    """Price ``sets`` (rows of slot indices; ascending ``set_bound`` if given): the best
    (cost, arrival) key, its (nodes, services, units), and whether that is exact.

    Sets that cannot cost ``limit`` or less (a plan of that cost is known) are skipped.
    """
    costs, demand = ctx.costs, ctx.demand
    size = sets.shape[1]
    # np.nonzero lists slots node by node: no node repeated means every set is distinct.
    one_slot_per_node = bool((slot_n[1:] != slot_n[:-1]).all())
    chunk = max(1, CHUNK_CELLS // (size * demand.size))
    best_key: tuple[int, int] = (INF, INF)
    best_set: tuple[IntArray, IntArray, IntArray] | None = None
    over_sets: list[tuple[IntArray, IntArray, IntArray]] = []
    for begin in range(0, sets.shape[0], chunk):
        if ctx.out_of_time():
            return best_key, best_set, False
        chunk_sets = sets[begin : begin + chunk]
        chunk_bound = None
        if set_bound is not None:
            threshold = min(best_key[0] + 1e-6, limit)
            if set_bound[begin] > threshold:
                break
            chunk_bound = set_bound[begin : begin + chunk]
            wanted = chunk_bound <= threshold
            chunk_sets, chunk_bound = chunk_sets[wanted], chunk_bound[wanted]
        nodes, services = slot_n[chunk_sets], slot_v[chunk_sets]
        feasible = _covering(ctx, nodes)
        if not one_slot_per_node:
            ordered = np.sort(nodes, axis=1)
            feasible &= (ordered[:, 1:] != ordered[:, :-1]).all(axis=1)
        if not feasible.all():
            nodes, services = nodes[feasible], services[feasible]
            chunk_bound = chunk_bound[feasible] if chunk_bound is not None else None
            if nodes.shape[0] == 0:
                continue
        total, units, all_used, within_cap = split(ctx, nodes, services)
        if not within_cap.all():
            over = ~within_cap
            # Two lower bounds on the exact split: the split ignoring capacity, and the
            # set's Lagrangian bound (capacity-aware); the larger prunes more re-splits.
            lower = total[over]
            if chunk_bound is not None:
                lower = np.maximum(lower, np.ceil(chunk_bound[over] - 1e-6).astype(np.int64))
            over_sets.append((nodes[over], services[over], lower))
        valid = np.flatnonzero(all_used & within_cap)
        if valid.size == 0:
            continue
        arrival = _max_of_columns(costs.arrival[nodes[valid], services[valid]])
        first = np.lexsort((arrival, total[valid]))[0]
        pick = valid[first]
        key = (int(total[pick]), int(arrival[first]))
        if key < best_key:
            best_key, best_set = key, (nodes[pick], services[pick], units[pick])
    if not over_sets:
        return best_key, best_set, True
    return _resplit(ctx, over_sets, best_key, best_set, limit)


def _resplit(
    ctx: Context,
    over_sets: list[tuple[IntArray, IntArray, IntArray]],
    best_key: tuple[int, int],
    best_set: tuple[IntArray, IntArray, IntArray] | None,
    limit: float = np.inf,
) -> tuple[tuple[int, int], tuple[IntArray, IntArray, IntArray] | None, bool]:
    """Sets whose cheapest-first split broke a capacity: that split (or the set's Lagrangian
    bound, if larger) is a lower bound; where it still beats the best (and ``limit``), the
    exact split (a min-cost flow) decides, cheapest first."""
    over_n = np.concatenate([o[0] for o in over_sets])
    over_v = np.concatenate([o[1] for o in over_sets])
    over_total = np.concatenate([o[2] for o in over_sets])  # a lower bound per set
    hopeful = np.flatnonzero((over_total < best_key[0]) & (over_total <= limit))
    hopeful = hopeful[stable_argsort(over_total[hopeful])]
    for tried, i in enumerate(hopeful.tolist()):
        if over_total[i] >= best_key[0]:
            break
        if tried >= MAX_RESPLITS or ctx.out_of_time():
            return best_key, best_set, False
        resplit = capacitated_split(ctx, over_n[i], over_v[i])
        if resplit is None:
            continue
        cost, units = resplit
        if not (units.sum(axis=1) > 0).all():
            continue  # an empty parcel: that plan has fewer parcels, enumerated already
        key = (cost, int(ctx.costs.arrival[over_n[i], over_v[i]].max()))
        if key < best_key:
            best_key, best_set = key, (over_n[i], over_v[i], units)
    return best_key, best_set, True


def capacitated_split(
    ctx: Context, nodes: IntArray, services: IntArray
) -> tuple[int, IntArray] | None:
    """Least-cost split of the demand over parcels (nodes, services) within stock and capacity.

    A transportation problem (SKUs to parcels), solved as a min-cost flow:
    exact and integral. Returns (cost with the parcels' fixed costs, units
    m x K), or None if the parcels cannot carry the demand.
    """
    costs, demand = ctx.costs, ctx.demand
    ctx.stats["resplit"] += 1
    m, n_skus = nodes.size, demand.size
    unit = costs.unit[nodes, services, :]  # m x K
    avail = costs.available[nodes]  # m x K
    slot, sku = np.nonzero(avail > 0)
    flow = min_cost_flow.SimpleMinCostFlow()
    # Graph nodes: SKUs 0..K-1, parcels K..K+m-1, sink K+m. Costs shifted to >= 0:
    # every unit crosses one SKU-to-parcel arc, so the shift adds a constant.
    shift = int(unit.min())
    flow.add_arcs_with_capacity_and_unit_cost(
        sku, n_skus + slot, avail[slot, sku], unit[slot, sku] - shift
    )
    flow.add_arcs_with_capacity_and_unit_cost(
        n_skus + np.arange(m), np.full(m, n_skus + m), costs.capacity[nodes], np.zeros(m, np.int64)
    )
    flow.set_nodes_supplies(
        np.arange(n_skus + m + 1), np.concatenate([demand, np.zeros(m, np.int64), [-demand.sum()]])
    )
    if flow.solve() != flow.OPTIMAL:
        return None
    units = np.zeros((m, n_skus), dtype=np.int64)
    units[slot, sku] = flow.flows(np.arange(slot.size))
    total = int(costs.fixed[nodes, services].sum() + (unit * units).sum())
    return total, units


def subset_plan(ctx: Context, nodes: IntArray, services: IntArray, units: IntArray) -> Plan:
    """The plan shipping ``units`` (m x K) by parcels (nodes, services); empty parcels dropped."""
    costs = ctx.costs
    carried = units.sum(axis=1) > 0
    if not carried.all():
        nodes, services, units = nodes[carried], services[carried], units[carried]
    service = np.full(len(costs.nodes), -1, dtype=np.int64)
    service[nodes] = services
    plan_units = np.zeros_like(costs.available)
    plan_units[nodes] = units
    # What plan_from would add up, from the parcels at hand (distinct nodes).
    cost = int(costs.fixed[nodes, services].sum() + (costs.unit[nodes, services] * units).sum())
    day = int(costs.arrival[nodes, services].max()) if nodes.size else 0
    return Plan(service, plan_units, cost, day, int(nodes.size))
