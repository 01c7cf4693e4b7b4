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

from sourcing.model import BoolArray, IntArray
from sourcing.solver.context import CHUNK_CELLS, INF, MAX_SUBSET_CELLS, Context, Plan
from sourcing.solver.lagrangian import Bound

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


def best_subset(
    ctx: Context,
    elig: np.ndarray,
    slots_ok: np.ndarray,
    size: int,
    bound: Bound | None = None,
    upper: int = INF,
) -> tuple[Plan | None, bool]:
    """Best plan with exactly ``size`` parcels among allowed slots, and whether that is exact.

    For a fixed set of parcels the best split is per SKU: cheapest unit cost
    first, up to each node's stock. Capacity can make that split infeasible;
    if such a set looks cheaper than the best valid one, a feasible re-split
    might be too, so the answer is not a proof. Too many sets, or the time
    budget spent: not (fully) attempted, not a proof. Sets are priced in
    chunks to bound memory.
    """
    costs, demand = ctx.costs, ctx.demand
    slot_n, slot_v = np.nonzero(elig & slots_ok)
    if slot_n.size < size:
        return None, True
    set_bound: np.ndarray | None  # per set, a bound on its cost (sets in ascending order)
    if bound is not None and bound.slot_terms is not None and upper < INF:
        # Only sets whose Lagrangian bound does not exceed the best plan can win:
        # generate just those, never the rest.
        slot_terms = bound.slot_terms[slot_n, slot_v]
        by_term = np.argsort(slot_terms, kind="stable")
        hopeful = _hopeful_sets(
            slot_terms[by_term],
            size,
            upper + 1e-6 - bound.priced_demand,
            MAX_SUBSET_CELLS // (size * demand.size),
        )
        if hopeful is None:
            return None, False
        # Most promising first: once a set's bound exceeds the best found, so do the rest.
        set_bound = bound.priced_demand + slot_terms[by_term][hopeful].sum(axis=1)
        by_bound = np.argsort(set_bound, kind="stable")
        sets, set_bound = by_term[hopeful[by_bound]], set_bound[by_bound]
    elif subset_cells(slot_n.size, size, demand.size) > MAX_SUBSET_CELLS:
        return None, False
    else:
        sets = _combinations(slot_n.size, size)
        set_bound = None  # no bound: every set is worth pricing
    # np.nonzero lists slots node by node: no node repeated means every set is distinct.
    one_slot_per_node = bool((slot_n[1:] != slot_n[:-1]).all())
    chunk = max(1, CHUNK_CELLS // (size * demand.size))
    best_key: tuple[int, int] = (INF, INF)
    best_set: tuple[IntArray, IntArray, IntArray] | None = None
    cheapest_invalid = INF
    for begin in range(0, sets.shape[0], chunk):
        if ctx.out_of_time():
            return (subset_plan(ctx, *best_set) if best_set else None), False
        chunk_sets = sets[begin : begin + chunk]
        if set_bound is not None:
            if set_bound[begin] > best_key[0] + 1e-6:
                break
            chunk_sets = chunk_sets[set_bound[begin : begin + chunk] <= best_key[0] + 1e-6]
        nodes, services = slot_n[chunk_sets], slot_v[chunk_sets]
        feasible = _covering(ctx, nodes)
        if not one_slot_per_node:
            ordered = np.sort(nodes, axis=1)
            feasible &= (ordered[:, 1:] != ordered[:, :-1]).all(axis=1)
        if not feasible.all():
            nodes, services = nodes[feasible], services[feasible]
            if nodes.shape[0] == 0:
                continue
        total, units, all_used, within_cap = split(ctx, nodes, services)
        if not within_cap.all():
            cheapest_invalid = min(cheapest_invalid, int(total[~within_cap].min()))
        valid = np.flatnonzero(all_used & within_cap)
        if valid.size == 0:
            continue
        arrival = _max_of_columns(costs.arrival[nodes[valid], services[valid]])
        first = np.lexsort((arrival, total[valid]))[0]
        pick = valid[first]
        key = (int(total[pick]), int(arrival[first]))
        if key < best_key:
            best_key, best_set = key, (nodes[pick], services[pick], units[pick])
    plan = subset_plan(ctx, *best_set) if best_set else None
    return plan, cheapest_invalid >= best_key[0]


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
