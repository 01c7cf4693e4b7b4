"""Kernels of parcel sets: set-cover branching's steps, a set's cheapest-first split, and a
leaf's sets priced without building them (:mod:`~sourcing.solver.enumeration`)."""

from __future__ import annotations

import numpy as np

from sourcing.model import BoolArray, FloatArray, IntArray
from sourcing.solver.kernels._typed import _bits, _compiled, _floats, _ints
from sourcing.solver.kernels.bounds import _insert


@_compiled
def _cover_groups(stock: IntArray, terms: FloatArray) -> tuple[IntArray, IntArray, IntArray]:
    n_skus, n_slots = stock.shape
    everyone = np.argsort(terms, kind="mergesort")
    group_start = np.zeros(n_skus + 2, dtype=np.int64)
    for k in range(n_skus):
        group_start[k + 1] = group_start[k] + np.count_nonzero(stock[k] > 0)
    group_start[n_skus + 1] = group_start[n_skus] + n_slots
    candidates = np.empty(group_start[n_skus + 1], dtype=np.int64)
    position = np.full((n_skus, n_slots), n_slots, dtype=np.int64)
    filled = np.zeros(n_skus, dtype=np.int64)
    for i in range(n_slots):
        slot = everyone[i]
        candidates[group_start[n_skus] + i] = slot
        for k in range(n_skus):
            if stock[k, slot] > 0:
                candidates[group_start[k] + filled[k]] = slot
                position[k, slot] = filled[k]
                filled[k] += 1
    return candidates, group_start, position


def cover_groups(stock: IntArray, terms: FloatArray) -> tuple[IntArray, IntArray, IntArray]:
    """Set-cover branching's candidates (:func:`~sourcing.solver.enumeration._covering_sets`)
    over S slots, ``stock`` K x S: per SKU k its holders by ascending term (equal terms by
    slot), then (group K) every slot so; the groups' starts (K + 2); and each slot's place
    among each SKU's holders (K x S, S where it holds none)."""
    out: tuple[IntArray, IntArray, IntArray] = _cover_groups(_ints(stock), _floats(terms))
    return out


@_compiled
def _cover_level(
    remaining: IntArray,
    rank: IntArray,
    room: FloatArray,
    sorted_terms: FloatArray,
    keys: IntArray,
    group_start: IntArray,
    last_free: IntArray,
    want_mask: bool,
) -> tuple[IntArray, IntArray, IntArray, np.ndarray]:
    n_sets, n_skus = remaining.shape
    n_slots = sorted_terms.size
    branch = np.empty(n_sets, dtype=np.int64)
    counts = np.empty(n_sets, dtype=np.int64)
    starts = np.empty(n_sets, dtype=np.int64)
    short_mask = np.zeros(n_sets if want_mask else 0, dtype=np.uint64)
    for i in range(n_sets):
        b = -1
        for k in rank:
            if remaining[i, k] > 0:
                b = k
                break
        group = n_skus if b < 0 else b
        fits = np.searchsorted(sorted_terms, room[i], side="right")  # terms <= room
        ends = np.searchsorted(keys, group * (n_slots + 1) + fits) - group_start[group]
        start = last_free[i] + 1 if b < 0 else 0
        branch[i], starts[i], counts[i] = b, start, max(ends - start, 0)
        if want_mask:
            mask = np.uint64(0)
            for k in range(n_skus):
                if remaining[i, k] > 0:
                    mask |= np.uint64(1) << np.uint64(k)
            short_mask[i] = mask
    return branch, starts, counts, short_mask


def cover_level(
    remaining: IntArray,
    rank: IntArray,
    room: FloatArray,
    sorted_terms: FloatArray,
    keys: IntArray,
    group_start: IntArray,
    last_free: IntArray,
    want_mask: bool,
) -> tuple[IntArray, IntArray, IntArray, np.ndarray]:
    """One step of set-cover branching, per partial set: the SKU it branches on (the first
    in ``rank`` it is short of; -1: covered, a free pick), where its candidates start in
    their group, how many fit its ``room`` (by ascending term: ``keys`` are group * (S + 1)
    + the slot's rank by term), and with ``want_mask`` the SKUs it is short of as bits
    (at most 64 SKUs)."""
    out: tuple[IntArray, IntArray, IntArray, np.ndarray] = _cover_level(
        _ints(remaining), _ints(rank), _floats(room), _floats(sorted_terms), _ints(keys),
        _ints(group_start), _ints(last_free), bool(want_mask),
    )  # fmt: skip
    return out


@_compiled
def _cover_children(
    parent: IntArray,
    slot: IntArray,
    sets: IntArray,
    branched: IntArray,
    taken_at: IntArray,
    remaining: IntArray,
    slot_node: IntArray,
    position: IntArray,
    stock: IntArray,
    short_mask: np.ndarray,
    slot_mask: np.ndarray,
    use_mask: bool,
) -> tuple[IntArray, IntArray, int]:
    depth = sets.shape[1]
    n_skus = remaining.shape[1]
    keep = np.empty(parent.size, dtype=np.int64)
    kept = 0
    masked = 0
    for i in range(parent.size):
        r, c = parent[i], slot[i]
        if use_mask and (slot_mask[c] & short_mask[r]) != short_mask[r]:
            continue
        masked += 1
        ok = True
        for d in range(depth):
            if slot_node[sets[r, d]] == slot_node[c]:
                ok = False  # one parcel per node
                break
            k = branched[r, d]
            if k >= 0 and position[k, c] < taken_at[r, d]:
                ok = False  # a holder an earlier branch left to its siblings
                break
        if ok:
            keep[kept] = i
            kept += 1
    left = np.empty((kept, n_skus), dtype=np.int64)
    for j in range(kept):
        r, c = parent[keep[j]], slot[keep[j]]
        for k in range(n_skus):
            left[j, k] = max(remaining[r, k] - stock[c, k], 0)
    return keep[:kept], left, masked


def cover_children(
    parent: IntArray,
    slot: IntArray,
    sets: IntArray,
    branched: IntArray,
    taken_at: IntArray,
    remaining: IntArray,
    slot_node: IntArray,
    position: IntArray,
    stock: IntArray,
    masks: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[IntArray, IntArray, int]:
    """Set-cover branching's children (:func:`~sourcing.solver.enumeration._covering_sets`):
    child i adds ``slot[i]`` to partial set ``parent[i]`` (rows of ``sets``, with the SKU
    each step branched on and the holder's position taken). Kept: with ``masks`` (per
    partial set the SKUs it is short of, per slot those it holds, as bits) only children
    holding every SKU short; a child whose node is already in its set, or that is a holder
    of a SKU an earlier step branched on placed before the one taken there, is dropped.
    Returns the kept children's positions, their shortfall per SKU, and how many passed the
    masks (the cells counted)."""
    use_mask = masks is not None
    short_mask, slot_mask = masks if masks is not None else (np.zeros(1, np.uint64),) * 2

    keep, left, masked = _cover_children(
        _ints(parent), _ints(slot), _ints(sets), _ints(branched), _ints(taken_at),
        _ints(remaining), _ints(slot_node), _ints(position), _ints(stock), _bits(short_mask),
        _bits(slot_mask), use_mask,
    )  # fmt: skip
    return keep, left, int(masked)


@_compiled
def _split_row(
    nodes: IntArray,
    services: IntArray,
    unit: IntArray,
    avail: IntArray,
    fixed: IntArray,
    capacity: IntArray,
    demand: IntArray,
    units: IntArray,
) -> tuple[int, bool, bool]:
    """One parcel set's cheapest-first split into ``units`` (m x K): its cost, whether
    every parcel carries something, whether every node's capacity holds."""
    m = nodes.size
    total = 0
    for j in range(m):
        total += fixed[nodes[j], services[j]]
    order = np.empty(m, dtype=np.int64)
    cost = np.empty(m, dtype=np.int64)
    for k in range(demand.size):
        # The parcels by unit cost (equal ones in set order), by insertion: a set has a few.
        for j in range(m):
            _insert(cost, order, j, unit[nodes[j], services[j], k], j)
        left = demand[k]  # the demand less what the parcels before take at most (their stock)
        for i in range(m):
            j = order[i]
            stock = avail[nodes[j], k]
            take = min(max(left, 0), stock)
            units[j, k] = take
            total += take * cost[i]
            left -= stock
    all_used, within = True, True
    for j in range(m):
        load = 0
        for k in range(demand.size):
            load += units[j, k]
        all_used &= load > 0
        within &= load <= capacity[nodes[j]]
    return total, all_used, within


@_compiled
def _split(
    nodes: IntArray,
    services: IntArray,
    unit: IntArray,
    avail: IntArray,
    fixed: IntArray,
    capacity: IntArray,
    demand: IntArray,
) -> tuple[IntArray, IntArray, BoolArray, BoolArray]:
    n_sets, m = nodes.shape
    total = np.zeros(n_sets, dtype=np.int64)
    units = np.zeros((n_sets, m, demand.size), dtype=np.int64)
    all_used = np.ones(n_sets, dtype=np.bool_)
    within = np.ones(n_sets, dtype=np.bool_)
    for t in range(n_sets):
        total[t], all_used[t], within[t] = _split_row(
            nodes[t], services[t], unit, avail, fixed, capacity, demand, units[t]
        )
    return total, units, all_used, within


def split(
    nodes: IntArray,
    services: IntArray,
    unit: IntArray,
    avail: IntArray,
    fixed: IntArray,
    capacity: IntArray,
    demand: IntArray,
) -> tuple[IntArray, IntArray, BoolArray, BoolArray]:
    """Per row of parcels (``nodes``, ``services``: T x m), the demand split cheapest unit
    first per SKU (equal costs: the earlier parcel first), each parcel up to its node's
    stock: the cost per row, the units (T x m x K), whether every parcel carries something
    and whether every node's capacity holds. ``unit`` C x V x K, ``avail`` C x K, ``fixed``
    C x V, ``capacity`` C, ``demand`` K: whole numbers, so the costs are exact."""
    out: tuple[IntArray, IntArray, BoolArray, BoolArray] = _split(
        _ints(nodes), _ints(services), _ints(unit), _ints(avail), _ints(fixed), _ints(capacity),
        _ints(demand),
    )  # fmt: skip
    return out


@_compiled
def _price_product(
    group_ptr: IntArray,
    group_n: IntArray,
    group_v: IntArray,
    free_n: IntArray,
    free_v: IntArray,
    free_count: int,
    unit: IntArray,
    avail: IntArray,
    fixed: IntArray,
    capacity: IntArray,
    arrival: IntArray,
    demand: IntArray,
) -> tuple[int, int, IntArray, IntArray, IntArray, IntArray, IntArray, IntArray]:
    n_groups = group_ptr.size - 1
    m = n_groups + free_count
    n_skus = demand.size
    n_free = free_n.size
    big = np.iinfo(np.int64).max
    best_total, best_arrival = big, big
    best_n = np.empty(m, dtype=np.int64)
    best_v = np.empty(m, dtype=np.int64)
    best_units = np.zeros((m, n_skus), dtype=np.int64)
    over_n = np.empty((16, m), dtype=np.int64)
    over_v = np.empty((16, m), dtype=np.int64)
    over_lower = np.empty(16, dtype=np.int64)
    n_over = 0
    nodes = np.empty(m, dtype=np.int64)
    services = np.empty(m, dtype=np.int64)
    units = np.zeros((m, n_skus), dtype=np.int64)
    pick = np.zeros(n_groups, dtype=np.int64)  # per group, its slot (mixed radix)
    comb = np.arange(free_count)
    if free_count > n_free:
        return best_total, best_arrival, best_n, best_v, best_units, over_n[:0], over_v[:0], \
            over_lower[:0]  # fmt: skip
    while True:
        for g in range(n_groups):
            nodes[g] = group_n[group_ptr[g] + pick[g]]
            services[g] = group_v[group_ptr[g] + pick[g]]
        for i in range(free_count):
            nodes[n_groups + i] = free_n[comb[i]]
            services[n_groups + i] = free_v[comb[i]]
        distinct = True
        for i in range(m):
            for j in range(i):
                if nodes[i] == nodes[j]:
                    distinct = False
        covers = distinct
        if covers:
            for k in range(n_skus):
                held = 0
                for i in range(m):
                    held += avail[nodes[i], k]
                if held < demand[k]:
                    covers = False
                    break
        if covers:
            total, all_used, within = _split_row(
                nodes, services, unit, avail, fixed, capacity, demand, units
            )
            latest = 0
            for i in range(m):
                latest = max(latest, arrival[nodes[i], services[i]])
            if not within:
                if n_over == over_lower.size:  # grow
                    over_n = np.concatenate((over_n, np.empty_like(over_n)))
                    over_v = np.concatenate((over_v, np.empty_like(over_v)))
                    over_lower = np.concatenate((over_lower, np.empty_like(over_lower)))
                over_n[n_over] = nodes
                over_v[n_over] = services
                over_lower[n_over] = total
                n_over += 1
            elif all_used and (
                total < best_total or (total == best_total and latest < best_arrival)
            ):
                best_total, best_arrival = total, latest
                best_n[:] = nodes
                best_v[:] = services
                best_units[:] = units
        # Next: the free slots' combination (lexicographic), then the groups' slots.
        i = free_count - 1
        while i >= 0 and comb[i] == n_free - free_count + i:
            i -= 1
        if i >= 0:
            comb[i] += 1
            for j in range(i + 1, free_count):
                comb[j] = comb[j - 1] + 1
            continue
        comb = np.arange(free_count)
        g = n_groups - 1
        while g >= 0 and pick[g] == group_ptr[g + 1] - group_ptr[g] - 1:
            pick[g] = 0
            g -= 1
        if g < 0:
            break
        pick[g] += 1
    return best_total, best_arrival, best_n, best_v, best_units, over_n[:n_over], \
        over_v[:n_over], over_lower[:n_over]  # fmt: skip


def price_product(
    group_ptr: IntArray,
    group_n: IntArray,
    group_v: IntArray,
    free_n: IntArray,
    free_v: IntArray,
    free_count: int,
    unit: IntArray,
    avail: IntArray,
    fixed: IntArray,
    capacity: IntArray,
    arrival: IntArray,
    demand: IntArray,
) -> tuple[
    tuple[int, int], tuple[IntArray, IntArray, IntArray] | None, tuple[IntArray, IntArray, IntArray]
]:
    """Every parcel set of one slot per group (slots ``group_ptr[g]:group_ptr[g+1]`` of
    ``group_n``, ``group_v``) and ``free_count`` of the free slots, on distinct nodes, that
    holds the demand, split cheapest first (:func:`split`), in order (groups' slots as
    ``itertools.product``, free ones as ``itertools.combinations``): the least (cost,
    arrival) key among those within every capacity with no empty parcel, first found on
    ties, its (nodes, services, units); and the sets whose split breaks a capacity (nodes,
    services, that split's cost: a lower bound), for an exact re-split."""
    total, latest, nodes, services, units, over_n, over_v, over_lower = _price_product(
        _ints(group_ptr), _ints(group_n), _ints(group_v), _ints(free_n), _ints(free_v),
        int(free_count), _ints(unit), _ints(avail), _ints(fixed), _ints(capacity),
        _ints(arrival), _ints(demand),
    )  # fmt: skip
    found = (nodes, services, units) if total < np.iinfo(np.int64).max else None
    return (int(total), int(latest)), found, (over_n, over_v, over_lower)
