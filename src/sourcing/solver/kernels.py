"""The solver's inner loops, compiled (numba).

Every subgradient step of :func:`~sourcing.solver.lagrangian.lagrangian_bound`
and of the branch and bound's ascents (:mod:`~sourcing.solver.branching`)
prices each slot (node n, service v) at prices ``lam``::

    t[n,v] = F[n,v] + sum_k taken[n,v,k] * min(0, u[n,v,k] - lam[k])

where ``taken`` is the node's stock of every SKU with a negative reduced cost,
or, at a node whose capacity is below those units, the most negative ones
first up to the capacity (a greedy knapsack of unit weights, exact). On
fragmented carts (50 SKUs, 500 nodes) a branch's eight steps are a few
hundred slots each, and numpy spent most of the time in per-call overhead and
temporaries: here a step is one loop over sparse rows (a slot's entries are
only the SKUs its node stocks, about a third of a fragmented cart's). The same
holds for the rest of the module, each the numpy version's rule as a loop:

* :func:`row_terms` (a step's terms) and :func:`branch_ascent` (a branch's
  whole ascent), then :func:`fix_and_pick` (reduced-cost fixing, the leaf
  test, the node to branch on);
* :func:`split` (a parcel set's cheapest-first split) and
  :func:`price_product` (a leaf's sets, priced without building them);
* :func:`cover_groups`, :func:`cover_level` and :func:`cover_children`
  (set-cover branching's candidates, steps and children).

Each public function is a typed wrapper that hands its kernel the argument
types it was compiled for (:func:`_as`). Compiled on first use and cached on
disk (numba's ``cache=True``, beside this file or in numba's user cache): a
cold compile takes about 13 s, so the service calls :func:`warm_up` before it
serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import numpy as np
from numba import njit

from sourcing.model import BoolArray, FloatArray, IntArray

_F = TypeVar("_F", bound=Callable[..., Any])


def _compiled(fn: _F) -> _F:
    return cast(_F, njit(cache=True, nogil=True)(fn))


def _as(a: np.ndarray | float, dtype: type) -> np.ndarray:
    """An argument as the kernels' arrays are typed: ``dtype``, C-contiguous, writeable.

    numba compiles one version per argument type, and a strided view (np.nonzero's
    output) or a read-only array is a type of its own: passed one, a kernel would compile
    again, for seconds, inside a checkout call. Every wrapper hands its kernel these (a
    copy only where the array is not so already; the check is cheap, the hot path passes
    arrays that already are).
    """
    if (
        isinstance(a, np.ndarray)
        and a.dtype == dtype
        and a.flags.c_contiguous
        and a.flags.writeable
    ):
        return a
    return np.require(a, dtype=dtype, requirements=["C", "W"])


def _ints(a: np.ndarray | int) -> IntArray:
    return _as(a, np.int64)


def _floats(a: np.ndarray | float) -> FloatArray:
    return _as(a, np.float64)


def _bools(a: np.ndarray) -> BoolArray:
    return _as(a, np.bool_)


def _bits(a: np.ndarray) -> np.ndarray:
    return _as(a, np.uint64)


@dataclass(frozen=True)
class Slots:
    """Slots as sparse rows: slot s's entries ``ptr[s]:ptr[s+1]`` are the SKUs its node
    stocks, with their unit cost and stock; and the same dense, which a step sums
    vectorised (the sparse entries' gather does not vectorise; a capacity that binds takes
    the sparse rows' knapsack)."""

    row: IntArray  # S: the slot's row (its node's position in the caller's list)
    service: IntArray  # S
    fixed: FloatArray  # S: the parcel's cost
    capacity: FloatArray  # S: the node's capacity, inf where it cannot bind
    ptr: IntArray  # S + 1
    sku: IntArray  # E
    unit: FloatArray  # E
    avail: FloatArray  # E
    #: The same entries dense, S x K: unit cost (NOT_HELD where the node has none), stock (0).
    dense_unit: FloatArray
    dense_avail: FloatArray


def slots_of(
    elig: BoolArray, unit: np.ndarray, fixed: np.ndarray, avail: np.ndarray, capacity: np.ndarray
) -> Slots:
    """The eligible slots of R rows: ``elig`` R x V, ``unit`` R x V x K, ``fixed`` R x V,
    ``avail`` R x K, ``capacity`` R."""
    row, service = np.nonzero(elig)
    stock = avail[row]
    held_s, held_k = np.nonzero(stock > 0)
    ptr = np.zeros(row.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(held_s, minlength=row.size), out=ptr[1:])
    binds = capacity < avail.sum(axis=1)
    dense_unit = np.full(stock.shape, NOT_HELD)
    dense_unit[held_s, held_k] = unit[row[held_s], service[held_s], held_k]
    dense_avail = np.zeros(stock.shape)
    dense_avail[held_s, held_k] = stock[held_s, held_k]
    return Slots(
        row=_ints(row),
        service=_ints(service),
        fixed=_floats(fixed[row, service]),
        capacity=_floats(np.where(binds[row], capacity[row], np.inf)),
        ptr=_ints(ptr),
        sku=_ints(held_k),
        unit=_floats(unit[row[held_s], service[held_s], held_k]),
        avail=_floats(stock[held_s, held_k]),
        dense_unit=dense_unit,
        dense_avail=dense_avail,
    )


#: A unit cost no price reaches: an entry of a SKU the node does not hold.
NOT_HELD: Final = 1e300


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _dense_sums(unit: FloatArray, avail: FloatArray, lam: FloatArray) -> tuple[float, float]:
    """A slot's term without its parcel, and the units it takes, capacity ignored; summed in
    any order (vectorised)."""
    total = 0.0
    units = 0.0
    for k in range(lam.size):
        r = min(unit[k] - lam[k], 0.0)
        total += avail[k] * r
        units += avail[k] if r < 0.0 else 0.0
    return total, units


@_compiled
def _slot_term(
    s: int,
    ptr: IntArray,
    sku: IntArray,
    unit: FloatArray,
    avail: FloatArray,
    fixed: float,
    capacity: float,
    lam: FloatArray,
    taken: FloatArray,
    add_taken: bool,
) -> float:
    """Slot s's term at prices ``lam``; with ``add_taken``, the units it takes are added to
    ``taken`` (per SKU)."""
    lo, hi = ptr[s], ptr[s + 1]
    units = 0.0
    total = 0.0
    for e in range(lo, hi):
        # Branch-free (adding 0.0 where the reduced cost is not negative changes nothing):
        # the sign is unpredictable, and a mispredicted branch cost more than the sums.
        r = min(unit[e] - lam[sku[e]], 0.0)
        units += avail[e] if r < 0.0 else 0.0
        total += avail[e] * r
    if units <= capacity:
        if add_taken:
            for e in range(lo, hi):
                if unit[e] < lam[sku[e]]:
                    taken[sku[e]] += avail[e]
        return fixed + total
    # The most negative first (equal ones in SKU order), up to the capacity: an insertion
    # sort of the entries, a node stocks a few dozen SKUs at most.
    n = hi - lo
    order = np.empty(n, dtype=np.int64)
    reduced = np.empty(n)
    for i in range(n):
        r = min(unit[lo + i] - lam[sku[lo + i]], 0.0)
        j = i
        while j > 0 and reduced[j - 1] > r:
            reduced[j] = reduced[j - 1]
            order[j] = order[j - 1]
            j -= 1
        reduced[j] = r
        order[j] = i
    room = capacity
    total = 0.0
    for i in range(n):
        if reduced[i] >= 0.0 or room <= 0.0:
            break
        e = lo + order[i]
        take = min(avail[e], room)
        room -= take
        total += take * reduced[i]
        if add_taken:
            taken[sku[e]] += take
    return fixed + total


@_compiled
def _slot_terms(
    ptr: IntArray,
    sku: IntArray,
    unit: FloatArray,
    avail: FloatArray,
    fixed: FloatArray,
    capacity: FloatArray,
    live: BoolArray,
    lam: FloatArray,
    terms: FloatArray,
    dense_unit: FloatArray,
    dense_avail: FloatArray,
) -> None:
    """Per live slot its term at prices ``lam`` into ``terms`` (inf: not live)."""
    nothing = np.empty(0)
    for s in range(ptr.size - 1):
        if not live[s]:
            terms[s] = np.inf
            continue
        total, units = _dense_sums(dense_unit[s], dense_avail[s], lam)
        if units <= capacity[s]:
            terms[s] = fixed[s] + total
        else:
            terms[s] = _slot_term(
                s, ptr, sku, unit, avail, fixed[s], capacity[s], lam, nothing, False
            )


@_compiled
def _taken_by_sku(
    ptr: IntArray,
    sku: IntArray,
    unit: FloatArray,
    avail: FloatArray,
    fixed: FloatArray,
    capacity: FloatArray,
    lam: FloatArray,
    slots: IntArray,
    n_skus: int,
) -> FloatArray:
    """Units per SKU the given slots take at prices ``lam``."""
    taken = np.zeros(n_skus)
    for s in slots:
        _slot_term(s, ptr, sku, unit, avail, fixed[s], capacity[s], lam, taken, True)
    return taken


@_compiled
def _row_terms(
    ptr: IntArray,
    sku: IntArray,
    unit: FloatArray,
    avail: FloatArray,
    fixed: FloatArray,
    capacity: FloatArray,
    live: BoolArray,
    slot_row: IntArray,
    lam: FloatArray,
    slot_terms: FloatArray,
    terms: FloatArray,
    best_slot: IntArray,
    dense_unit: FloatArray,
    dense_avail: FloatArray,
) -> None:
    """As :func:`_slot_terms`, and per row its least slot (the first of equal ones)."""
    _slot_terms(
        ptr, sku, unit, avail, fixed, capacity, live, lam, slot_terms, dense_unit, dense_avail
    )
    terms[:] = np.inf
    best_slot[:] = -1
    for s in range(slot_row.size):
        r = slot_row[s]
        if slot_terms[s] < terms[r]:
            terms[r] = slot_terms[s]
            best_slot[r] = s


@_compiled
def _least(values: FloatArray, count: int, out: IntArray) -> None:
    """Positions of the ``count`` least values (0 < count <= size) into ``out``: those
    below the count-th least, then equal ones in position order."""
    # The count-th least by insertion into the `count` least so far: a parcel count is a
    # few, so most values fail the first comparison (no copy, no partition of them all).
    least = np.full(count, np.inf)
    for value in values:
        if value < least[count - 1]:
            j = count - 1
            while j > 0 and least[j - 1] > value:
                least[j] = least[j - 1]
                j -= 1
            least[j] = value
    kth = least[count - 1]  # inf if fewer values are finite: the inf ones then complete it
    n = 0
    for i in range(values.size):
        if values[i] < kth:
            out[n] = i
            n += 1
    for i in range(values.size):
        if n == count:
            break
        if values[i] == kth:
            out[n] = i
            n += 1


@_compiled
def _branch_ascent(
    ptr: IntArray,
    sku: IntArray,
    unit: FloatArray,
    avail: FloatArray,
    fixed: FloatArray,
    capacity: FloatArray,
    slot_row: IntArray,
    slot_service: IntArray,
    n_rows: int,
    row_avail: FloatArray,
    closed: BoolArray,
    forced: BoolArray,
    prices: FloatArray,
    demand: FloatArray,
    parcels: int,
    iterations: int,
    target: float,
    decay: float,
    dense_unit: FloatArray,
    dense_avail: FloatArray,
) -> tuple[bool, float, FloatArray, FloatArray, IntArray, IntArray, FloatArray, bool]:
    # The branch's nodes must hold the demand, and have room for its parcels.
    n_free = 0
    for r in range(n_rows):
        if not forced[r] and not closed[r]:
            n_free += 1
    n_forced = int(np.count_nonzero(forced))
    free_count = parcels - n_forced
    held = np.zeros(demand.size)
    for r in range(n_rows):
        if not closed[r]:
            held += row_avail[r]
    if free_count < 0 or free_count > n_free or (held < demand).any():
        return (
            False,
            -np.inf,
            prices,
            np.empty(0),
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0),
            False,
        )
    n_slots = slot_row.size
    live = np.empty(n_slots, dtype=np.bool_)
    for s in range(n_slots):
        live[s] = not closed[slot_row[s]]
    forced_at = np.flatnonzero(forced)
    free_at = np.flatnonzero(~(forced | closed))
    slot_terms = np.empty(n_slots)
    terms = np.empty(n_rows)
    best_slot = np.empty(n_rows, dtype=np.int64)
    free_terms = np.empty(free_at.size)
    picked = np.empty(max(free_count, 0), dtype=np.int64)
    opened = np.empty(parcels, dtype=np.int64)
    chosen = np.zeros(n_rows)
    best_value = -np.inf
    best_prices = prices.copy()
    best_terms = np.empty(n_rows)
    best_opened = np.empty(parcels, dtype=np.int64)
    best_services = np.empty(parcels, dtype=np.int64)
    lam = prices.copy()
    scale, stall, found = 1.0, 0, False
    for _ in range(iterations):
        _row_terms(
            ptr, sku, unit, avail, fixed, capacity, live, slot_row, lam, slot_terms, terms,
            best_slot, dense_unit, dense_avail,
        )  # fmt: skip
        opened[:n_forced] = forced_at
        if free_count > 0:
            for i in range(free_at.size):
                free_terms[i] = terms[free_at[i]]
            _least(free_terms, free_count, picked)
            for i in range(free_count):
                opened[n_forced + i] = free_at[picked[i]]
        value = 0.0
        for k in range(demand.size):
            value += lam[k] * demand[k]
        for i in range(parcels):
            value += terms[opened[i]]
        if not np.isfinite(value):
            return (
                False, best_value, best_prices, best_terms, best_opened, best_services, chosen,
                False,
            )  # fmt: skip
        chosen *= decay
        for i in range(parcels):
            chosen[opened[i]] += 1.0 - decay
        if not found or value > best_value + 1e-9:
            found, best_value, stall = True, value, 0
            best_prices = lam.copy()
            best_terms[:] = terms
            best_opened[:] = opened
            for i in range(parcels):
                best_services[i] = slot_service[best_slot[opened[i]]]
        else:
            stall += 1
            if stall >= 5:
                scale, stall = scale / 2.0, 0
        if value >= target - 1e-6:
            break
        taken = _taken_by_sku(
            ptr, sku, unit, avail, fixed, capacity, lam, best_slot[opened], demand.size
        )
        gradient = demand - taken
        norm = 0.0
        for k in range(demand.size):
            norm += gradient[k] * gradient[k]
        if norm == 0.0 or scale < 1e-3:
            break
        # Polyak's step towards the target (without one, 5% above the bound).
        gap = target - value if target < np.inf else max(abs(value) * 0.05, 1000.0)
        lam = lam + scale * max(gap, 1.0) / norm * gradient
    # Whether the rows opened at the best prices hold the demand (a plan may be built).
    held[:] = 0.0
    for i in range(parcels):
        held += row_avail[best_opened[i]]
    covers = found and not (held < demand).any()
    return found, best_value, best_prices, best_terms, best_opened, best_services, chosen, covers


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
            u_j = unit[nodes[j], services[j], k]
            i = j
            while i > 0 and cost[i - 1] > u_j:
                cost[i] = cost[i - 1]
                order[i] = order[i - 1]
                i -= 1
            cost[i] = u_j
            order[i] = j
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


@_compiled
def _leaf_slots(
    elig: BoolArray, nodes: IntArray, forced: BoolArray, closed: BoolArray
) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray]:
    n_rows, n_services = elig.shape
    group_ptr = np.zeros(int(np.count_nonzero(forced)) + 1, dtype=np.int64)
    n_group = n_free = 0
    g = 0
    for r in range(n_rows):
        slots = 0
        for v in range(n_services):
            slots += elig[r, v]
        if forced[r]:
            n_group += slots
            group_ptr[g + 1] = n_group
            g += 1
        elif not closed[r]:
            n_free += slots
    group_n = np.empty(n_group, dtype=np.int64)
    group_v = np.empty(n_group, dtype=np.int64)
    free_n = np.empty(n_free, dtype=np.int64)
    free_v = np.empty(n_free, dtype=np.int64)
    i = j = 0
    for r in range(n_rows):
        for v in range(n_services):
            if not elig[r, v]:
                continue
            if forced[r]:
                group_n[i], group_v[i] = nodes[r], v
                i += 1
            elif not closed[r]:
                free_n[j], free_v[j] = nodes[r], v
                j += 1
    return group_ptr, group_n, group_v, free_n, free_v


def leaf_slots(
    elig: BoolArray, nodes: IntArray, forced: BoolArray, closed: BoolArray
) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray]:
    """A branch's parcel slots as :func:`price_product` takes them, over R rows (``elig``
    R x V, ``nodes`` R): one group per ``forced`` row (pointers, then nodes and services,
    rows and services in order), and the slots of the rows neither forced nor ``closed``."""
    out: tuple[IntArray, IntArray, IntArray, IntArray, IntArray] = _leaf_slots(
        _bools(elig), _ints(nodes), _bools(forced), _bools(closed)
    )
    return out


#: What :func:`fix_and_pick` leaves of a branch.
NO_PLAN, LEAF, SPLIT = 0, 1, 2


@_compiled
def _fix_and_pick(
    terms: FloatArray,
    chosen: FloatArray,
    value: float,
    forced: BoolArray,
    closed: BoolArray,
    parcels: int,
    threshold: float,
    slots_per_row: IntArray,
    max_sets: float,
) -> tuple[int, BoolArray, BoolArray, int]:
    forced = forced.copy()
    closed = closed.copy()
    free = np.flatnonzero(~(forced | closed))
    free_count = parcels - int(np.count_nonzero(forced))
    order = free[np.argsort(terms[free], kind="mergesort")]
    inside, outside = order[:free_count], order[free_count:]
    if free_count == 0:
        closed[outside] = True
    else:
        # Opening an outside row takes the place of the dearest inside one; closing an
        # inside row lets the cheapest outside one in.
        dearest = terms[inside[-1]]
        for r in outside:
            if np.ceil(value - dearest + terms[r] - 1e-6) > threshold:
                closed[r] = True
        if outside.size:
            cheapest = terms[outside[0]]
            for r in inside:
                if np.ceil(value - terms[r] + cheapest - 1e-6) > threshold:
                    forced[r] = True
        else:
            forced[inside] = True
        if np.count_nonzero(forced) > parcels:
            return NO_PLAN, forced, closed, -1
    # The parcel sets left: one slot per forced row, free_count of the free rows' slots.
    free = np.flatnonzero(~(forced | closed))
    free_count = parcels - int(np.count_nonzero(forced))
    free_slots = 0
    for r in free:
        free_slots += slots_per_row[r]
    if free_count > free_slots:
        return NO_PLAN, forced, closed, -1
    sets = 1.0
    for r in np.flatnonzero(forced):
        sets *= slots_per_row[r]
    for i in range(free_count):  # times comb(free_slots, free_count)
        sets = sets * (free_slots - i) / (i + 1)
    if free.size == 0 or sets <= max_sets:
        return LEAF, forced, closed, -1
    pick = free[np.argmin(np.abs(chosen[free] - 0.5))]
    return SPLIT, forced, closed, pick


def fix_and_pick(
    ascent: Ascent,
    forced: BoolArray,
    closed: BoolArray,
    parcels: int,
    threshold: int,
    slots_per_row: IntArray,
    max_sets: float,
) -> tuple[int, BoolArray, BoolArray, int]:
    """A bounded branch's next move: reduced-cost fixing at its best prices (free rows whose
    opening, or closing, alone lifts the bound above ``threshold`` are closed, or forced
    open), then :data:`NO_PLAN` (none left), :data:`LEAF` (at most ``max_sets`` parcel sets
    left, or no free row: price them) or :data:`SPLIT` with the free row to branch on (the
    one the relaxation opened closest to half of its last steps). Returns (move, forced,
    closed, row)."""
    move, forced, closed, pick = _fix_and_pick(
        _floats(ascent.terms), _floats(ascent.chosen), float(ascent.value), _bools(forced),
        _bools(closed), int(parcels), float(threshold), _ints(slots_per_row), float(max_sets),
    )  # fmt: skip
    return int(move), forced, closed, int(pick)


@dataclass(frozen=True)
class StepTerms:
    """One step's prices applied to every slot."""

    prices: FloatArray
    terms: FloatArray  # per row: its least slot's term (inf: no live slot)
    best_slot: IntArray  # per row: that slot (-1: none)
    slot_terms: FloatArray  # per slot

    def taken_by_sku(self, slots: Slots, rows: IntArray, n_skus: int) -> FloatArray:
        """Units per SKU the given rows' least slots take at these prices."""
        taken: FloatArray = _taken_by_sku(
            slots.ptr, slots.sku, slots.unit, slots.avail, slots.fixed, slots.capacity,
            self.prices, _ints(self.best_slot[rows]), int(n_skus),
        )  # fmt: skip
        return taken


def row_terms(slots: Slots, n_rows: int, lam: FloatArray) -> StepTerms:
    """Every slot's term at prices ``lam``, and each row's least."""
    prices = _floats(lam)
    terms = np.empty(n_rows)
    best_slot = np.empty(n_rows, dtype=np.int64)
    slot_terms = np.empty(slots.row.size)
    live = np.ones(slots.row.size, dtype=np.bool_)
    _row_terms(
        slots.ptr, slots.sku, slots.unit, slots.avail, slots.fixed, slots.capacity, live,
        slots.row, prices, slot_terms, terms, best_slot, slots.dense_unit, slots.dense_avail,
    )  # fmt: skip
    return StepTerms(prices, terms, best_slot, slot_terms)


@dataclass(frozen=True)
class Ascent:
    """A branch's best bound, its prices and row terms there, the rows it opens with
    their services, each row's running share of the steps it was opened in, and whether
    the rows opened hold the demand."""

    value: float
    prices: FloatArray
    terms: FloatArray
    opened: IntArray
    services: IntArray
    chosen: FloatArray
    covers: bool


def branch_ascent(
    slots: Slots,
    row_avail: FloatArray,
    closed: BoolArray,
    forced: BoolArray,
    prices: FloatArray,
    demand: FloatArray,
    parcels: int,
    iterations: int,
    target: float,
    decay: float,
) -> Ascent | None:
    """Subgradient ascent of the bound on plans of exactly ``parcels`` parcels opening every
    ``forced`` row and no ``closed`` one: ``lam . Q`` + the forced rows' terms + the least
    free ones'. Stops at ``target``. None: the branch has no plan (too many rows forced,
    too few left, the rows left do not hold the demand (``row_avail``: R x K), or no
    finite bound)."""
    found, value, lam, terms, opened, services, chosen, covers = _branch_ascent(
        slots.ptr, slots.sku, slots.unit, slots.avail, slots.fixed, slots.capacity, slots.row,
        slots.service, row_avail.shape[0], _floats(row_avail), _bools(closed), _bools(forced),
        _floats(prices), _floats(demand), int(parcels), int(iterations), float(target),
        float(decay), slots.dense_unit, slots.dense_avail,
    )  # fmt: skip
    if not found:
        return None
    return Ascent(value, lam, terms, opened, services, chosen, covers)


def warm_up() -> None:
    """Compile (or load from the disk cache) every kernel on a tiny instance."""
    elig = np.ones((3, 1), dtype=np.bool_)
    unit = np.array([[[1.0, 2.0]], [[3.0, 1.0]], [[2.0, 2.0]]])
    avail = np.array([[2.0, 1.0], [1.0, 2.0], [1.0, 1.0]])
    slots = slots_of(elig, unit, np.full((3, 1), 5.0), avail, np.array([1.0, 9.0, 9.0]))
    row_terms(slots, 3, np.array([4.0, 4.0])).taken_by_sku(slots, np.array([0, 1]), 2)
    nothing = np.zeros(3, dtype=np.bool_)
    demand = np.array([1.0, 1.0])
    ascent = branch_ascent(slots, avail, nothing, nothing, np.zeros(2), demand, 2, 3, np.inf, 0.7)
    assert ascent is not None
    fix_and_pick(ascent, nothing, nothing, 2, 100, np.ones(3, dtype=np.int64), 1.0)
    leaf_slots(elig, np.arange(3), nothing, nothing)
    one = np.zeros(1, dtype=np.int64)
    sets = np.zeros((1, 1), dtype=np.int64)
    split(sets, sets, np.ones((1, 1, 1), np.int64), sets, sets, one, one)
    candidates, group_start, _ = cover_groups(sets, np.zeros(1))
    two = np.array([0, 1])
    price_product(two, one, one, one, one, 1, np.ones((1, 1, 1), np.int64), sets, sets, one,
                  sets, one)  # fmt: skip
    for want_mask in (False, True):
        cover_level(sets, one, np.zeros(1), np.zeros(1), candidates, group_start, one, want_mask)
    for masks in (None, (np.zeros(1, np.uint64), np.ones(1, np.uint64))):
        cover_children(one, one, sets, sets, sets, sets, one, sets, sets, masks)
