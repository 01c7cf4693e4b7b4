"""Kernels of the bounds: slot terms at given prices, a branch's ascent, fixing and next move.

:func:`row_terms` (one step's terms) serves :func:`~sourcing.solver.lagrangian.lagrangian_bound`;
:func:`branch_ascent`, :func:`fix_and_pick` and :func:`leaf_slots` serve the branch and bound
(:mod:`~sourcing.solver.branching`). See the package docstring for the term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
from numba import njit

from sourcing.model import BoolArray, FloatArray, IntArray
from sourcing.solver.kernels._typed import _bools, _compiled, _floats, _ints


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
def _insert(keys: np.ndarray, items: IntArray, n: int, key: float, item: int) -> None:
    """Insert ``key`` (and ``item`` alongside) into the ascending ``keys[:n]``, after the
    keys equal to it (a stable insertion sort's step)."""
    j = n
    while j > 0 and keys[j - 1] > key:
        keys[j] = keys[j - 1]
        items[j] = items[j - 1]
        j -= 1
    keys[j] = key
    items[j] = item


@_compiled
def _knapsack(
    lo: int,
    hi: int,
    sku: IntArray,
    unit: FloatArray,
    avail: FloatArray,
    capacity: float,
    lam: FloatArray,
    taken: FloatArray,
    add_taken: bool,
    order: IntArray,
    reduced: FloatArray,
) -> float:
    """The entries lo:hi's best use of ``capacity`` units at prices ``lam``: the most
    negative reduced costs first (equal ones in SKU order), each up to its stock; the sum
    of take x reduced cost. ``order`` and ``reduced`` are scratch (hi - lo at least)."""
    # An insertion sort of the negative entries only (the others take nothing): a node
    # stocks a few dozen SKUs at most, about half of them below their price.
    n = 0
    for e in range(lo, hi):
        r = unit[e] - lam[sku[e]]
        if r < 0.0:
            _insert(reduced, order, n, r, e)
            n += 1
    room = capacity
    total = 0.0
    for i in range(n):
        if room <= 0.0:
            break
        e = order[i]
        take = min(avail[e], room)
        room -= take
        total += take * reduced[i]
        if add_taken:
            taken[sku[e]] += take
    return total


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
    # Scratch for the knapsacks: a slot's entries are distinct SKUs.
    order = np.empty(lam.size, dtype=np.int64)
    reduced = np.empty(lam.size)
    for s in range(ptr.size - 1):
        if not live[s]:
            terms[s] = np.inf
            continue
        total, units = _dense_sums(dense_unit[s], dense_avail[s], lam)
        if units > capacity[s]:
            total = _knapsack(
                ptr[s], ptr[s + 1], sku, unit, avail, capacity[s], lam, nothing, False, order,
                reduced,
            )  # fmt: skip
        terms[s] = fixed[s] + total


@_compiled
def _taken_by_sku(
    ptr: IntArray,
    sku: IntArray,
    unit: FloatArray,
    avail: FloatArray,
    capacity: FloatArray,
    lam: FloatArray,
    slots: IntArray,
    n_skus: int,
) -> FloatArray:
    """Units per SKU the given slots take at prices ``lam``: every unit below its price,
    or, where those break the slot's capacity, :func:`_knapsack`'s."""
    taken = np.zeros(n_skus)
    order = np.empty(n_skus, dtype=np.int64)
    reduced = np.empty(n_skus)
    for s in slots:
        lo, hi = ptr[s], ptr[s + 1]
        units = 0.0
        for e in range(lo, hi):
            if unit[e] < lam[sku[e]]:
                units += avail[e]
        if units > capacity[s]:
            _knapsack(lo, hi, sku, unit, avail, capacity[s], lam, taken, True, order, reduced)
            continue
        for e in range(lo, hi):
            if unit[e] < lam[sku[e]]:
                taken[sku[e]] += avail[e]
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
def _step(
    lam: FloatArray,
    demand: FloatArray,
    taken: FloatArray,
    value: float,
    target: float,
    scale: float,
) -> tuple[FloatArray, bool]:
    """Both ascents' subgradient step at bound ``value``: along ``demand - taken``, Polyak's
    length towards ``target`` (without one, 5% above the bound), times ``scale``. Returns
    the new prices, and True (prices unchanged) to stop: a zero gradient, or a scale
    halved below 1e-3."""
    gradient = demand - taken
    norm = 0.0
    for k in range(demand.size):
        norm += gradient[k] * gradient[k]
    if norm == 0.0 or scale < 1e-3:
        return lam, True
    gap = target - value if target < np.inf else max(abs(value) * 0.05, 1000.0)
    return lam + scale * max(gap, 1.0) / norm * gradient, False


@_compiled
def _arrive_on_day(
    slot_terms: FloatArray,
    slot_row: IntArray,
    on_day: BoolArray,
    terms: FloatArray,
    opened: IntArray,
    opened_slot: IntArray,
    n_forced: int,
    free_at: IntArray,
    day_terms: FloatArray,
    day_slot: IntArray,
    is_open: BoolArray,
) -> float:
    """The least the opened rows' terms rise by if one of them takes an ``on_day`` slot:
    a row opened switches to its least such slot, or a free row not opened takes one in
    place of the dearest free row opened. ``opened`` and ``opened_slot`` are changed to
    that choice; inf: no row can."""
    day_terms[:] = np.inf
    for s in range(slot_row.size):
        if on_day[s] and slot_terms[s] < day_terms[slot_row[s]]:
            day_terms[slot_row[s]] = slot_terms[s]
            day_slot[slot_row[s]] = s
    rise, at, row = np.inf, -1, -1
    dearest = -1
    is_open[:] = False
    for i in range(opened.size):
        r = opened[i]
        is_open[r] = True
        if day_terms[r] - terms[r] < rise:
            rise, at, row = day_terms[r] - terms[r], i, r
        if i >= n_forced and (dearest < 0 or terms[r] > terms[opened[dearest]]):
            dearest = i
    if dearest >= 0:
        for r in free_at:
            if not is_open[r] and day_terms[r] - terms[opened[dearest]] < rise:
                rise, at, row = day_terms[r] - terms[opened[dearest]], dearest, r
    if at >= 0:
        opened[at] = row
        opened_slot[at] = day_slot[row]
    return rise


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
    total_avail: FloatArray,
    on_day: BoolArray,
    first_scale: float,
) -> tuple[
    bool, float, float, FloatArray, FloatArray, FloatArray, IntArray, IntArray, FloatArray, bool
]:
    # The branch's nodes must hold the demand, and have room for its parcels.
    n_free = 0
    for r in range(n_rows):
        if not forced[r] and not closed[r]:
            n_free += 1
    n_forced = int(np.count_nonzero(forced))
    free_count = parcels - n_forced
    # What the rows left hold: all rows' stock less the closed ones' (fewer, usually).
    held = total_avail.copy()
    for r in range(n_rows):
        if closed[r]:
            held -= row_avail[r]
    # With ``on_day`` slots (S; none: no such constraint), one of them must be opened: a
    # forced row's, or a free row's if any free row opens.
    reachable = on_day.size == 0
    for s in range(on_day.size):
        r = slot_row[s]
        if on_day[s] and (forced[r] or (free_count > 0 and not closed[r])):
            reachable = True
            break
    if free_count < 0 or free_count > n_free or (held < demand).any() or not reachable:
        return (
            False,
            -np.inf,
            -np.inf,
            prices,
            np.empty(0),
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
    opened_slot = np.empty(parcels, dtype=np.int64)
    day_terms = np.empty(n_rows if on_day.size else 0)
    day_slot = np.empty(n_rows if on_day.size else 0, dtype=np.int64)
    is_open = np.empty(n_rows if on_day.size else 0, dtype=np.bool_)
    best_value, best_plain = -np.inf, -np.inf
    best_prices = prices.copy()
    best_terms = np.empty(n_rows)
    best_day_terms = np.empty(day_terms.size)
    best_opened = np.empty(parcels, dtype=np.int64)
    best_services = np.empty(parcels, dtype=np.int64)
    lam = prices.copy()
    scale, stall, found = first_scale, 0, False
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
        for i in range(parcels):
            opened_slot[i] = best_slot[opened[i]]
        value = 0.0
        for k in range(demand.size):
            value += lam[k] * demand[k]
        for i in range(parcels):
            value += terms[opened[i]]
        plain = value
        if on_day.size:
            value += _arrive_on_day(
                slot_terms, slot_row, on_day, terms, opened, opened_slot, n_forced, free_at,
                day_terms, day_slot, is_open,
            )  # fmt: skip
        if not np.isfinite(value):
            return (
                False, best_value, best_plain, best_prices, best_terms, best_day_terms,
                best_opened, best_services, chosen, False,
            )  # fmt: skip
        chosen *= decay
        for i in range(parcels):
            chosen[opened[i]] += 1.0 - decay
        if not found or value > best_value + 1e-9:
            found, best_value, best_plain, stall = True, value, plain, 0
            best_prices = lam.copy()
            best_terms[:] = terms
            best_day_terms[:] = day_terms
            best_opened[:] = opened
            for i in range(parcels):
                best_services[i] = slot_service[opened_slot[i]]
        else:
            stall += 1
            if stall >= 5:
                scale, stall = scale / 2.0, 0
        if value >= target - 1e-6:
            break
        taken = _taken_by_sku(ptr, sku, unit, avail, capacity, lam, opened_slot, demand.size)
        lam, stop = _step(lam, demand, taken, value, target, scale)
        if stop:
            break
    # Whether the rows opened at the best prices hold the demand (a plan may be built);
    # without a step (no iterations) none were opened.
    covers = found
    if found:
        held[:] = 0.0
        for i in range(parcels):
            held += row_avail[best_opened[i]]
        covers = not (held < demand).any()
    return (
        found, best_value, best_plain, best_prices, best_terms, best_day_terms, best_opened,
        best_services, chosen, covers,
    )  # fmt: skip


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
def _least_two(values: FloatArray, rows: IntArray) -> tuple[float, int, float]:
    """The least of ``values`` over ``rows``, its row, and the second least (inf: none)."""
    first, at, second = np.inf, -1, np.inf
    for r in rows:
        if values[r] < first:
            first, at, second = values[r], r, first
        elif values[r] < second:
            second = values[r]
    return first, at, second


@_compiled
def _fix_and_pick(
    terms: FloatArray,
    day_terms: FloatArray,
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
        # inside row lets the cheapest outside one in. With ``day_terms``, one row opened
        # must take its on-day slot: each child's bound adds the least that costs (as
        # :func:`_arrive_on_day`: an opened row switches, or a row left out comes in on it
        # in place of the dearest free one opened), from the two least rises of the rows
        # opened and the least on-day term outside. (That least may be the child's own
        # row: the row's own rise, also counted, is never more.)
        dated = day_terms.size > 0
        w = inside[-1]
        dearest = terms[w]
        rise_in, rise_in_at, rise_in_2, day_out = np.inf, -1, np.inf, np.inf
        if dated:
            opened = np.concatenate((np.flatnonzero(forced), inside))
            rise_in, rise_in_at, rise_in_2 = _least_two(day_terms - terms, opened)
            for r in outside:
                day_out = min(day_out, day_terms[r])
        for r in outside:
            child = value - dearest + terms[r]
            if dated:
                kept = rise_in if rise_in_at != w else rise_in_2
                # The dearest free row opened is the second dearest inside, if any.
                swap = np.inf
                if free_count > 1:
                    left = min(day_out, day_terms[w])
                    swap = left - terms[inside[-2]]
                child += min(kept, day_terms[r] - terms[r], swap)
            if np.ceil(child - 1e-6) > threshold:
                closed[r] = True
        if outside.size:
            c = outside[0]
            cheapest = terms[c]
            for r in inside:
                child = value - terms[r] + cheapest
                if dated:
                    kept = rise_in if rise_in_at != r else rise_in_2
                    child += min(kept, day_out - cheapest)  # c is the dearest free one
                if np.ceil(child - 1e-6) > threshold:
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
    pick = free[np.argmax(chosen[free])]
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
    open; with the ascent's ``day_terms``, that bound has one row on an on-day slot), then
    :data:`NO_PLAN` (none left), :data:`LEAF` (at most ``max_sets`` parcel sets left, or
    no free row: price them) or :data:`SPLIT` with the free row to branch on (the one the
    relaxation opened most over its last steps, the first of equal ones). Returns (move,
    forced, closed, row)."""
    move, forced, closed, pick = _fix_and_pick(
        _floats(ascent.terms), _floats(ascent.day_terms), _floats(ascent.chosen),
        float(ascent.plain), _bools(forced), _bools(closed), int(parcels), float(threshold),
        _ints(slots_per_row), float(max_sets),
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
            slots.ptr, slots.sku, slots.unit, slots.avail, slots.capacity, self.prices,
            _ints(self.best_slot[rows]), int(n_skus),
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


@_compiled
def _bound_ascent(
    ptr: IntArray,
    sku: IntArray,
    unit: FloatArray,
    avail: FloatArray,
    fixed: FloatArray,
    capacity: FloatArray,
    slot_row: IntArray,
    n_rows: int,
    prices: FloatArray,
    demand: FloatArray,
    at_least: int,
    at_most: int,
    iterations: int,
    extra_factor: int,
    climb: float,
    target: float,
    dense_unit: FloatArray,
    dense_avail: FloatArray,
) -> tuple[bool, float, FloatArray, FloatArray, IntArray, FloatArray, IntArray]:
    n_slots = slot_row.size
    live = np.ones(n_slots, dtype=np.bool_)
    slot_terms = np.empty(n_slots)
    terms = np.empty(n_rows)
    best_slot = np.empty(n_rows, dtype=np.int64)
    picked = np.empty(n_rows, dtype=np.int64)
    best_value = -np.inf
    best_prices = prices.copy()
    best_terms = np.empty(n_rows)
    best_best_slot = np.empty(n_rows, dtype=np.int64)
    best_slot_terms = np.empty(n_slots)
    best_opened = np.empty(0, dtype=np.int64)
    history = np.empty(extra_factor * iterations)
    lam = prices.copy()
    scale, stall = 1.0, 0
    for step in range(extra_factor * iterations):
        # history[:step] holds the best bound after each step so far.
        if step >= iterations and (
            step < 6
            or history[step - 1] - history[step - 6] <= climb * max(abs(history[step - 1]), 1.0)
        ):
            break  # past the usual steps, go on only while the bound still climbs
        _row_terms(
            ptr, sku, unit, avail, fixed, capacity, live, slot_row, lam, slot_terms, terms,
            best_slot, dense_unit, dense_avail,
        )  # fmt: skip
        negatives = 0
        for r in range(n_rows):
            negatives += terms[r] < 0.0
        count = max(at_least, min(at_most, negatives))
        if count >= n_rows:
            count = n_rows
            for r in range(n_rows):
                picked[r] = r
        elif count > 0:
            _least(terms, count, picked)
        opened = picked[:count]
        value = 0.0
        for k in range(demand.size):
            value += lam[k] * demand[k]
        for r in opened:
            value += terms[r]
        if not np.isfinite(value):
            return (
                False, best_value, best_prices, best_terms, best_best_slot, best_slot_terms,
                best_opened,
            )  # fmt: skip
        if value > best_value + 1e-9:
            best_value, stall = value, 0
            best_prices = lam.copy()
            best_terms[:] = terms
            best_best_slot[:] = best_slot
            best_slot_terms[:] = slot_terms
            best_opened = opened.copy()
        else:
            stall += 1
            if stall >= 5:
                scale, stall = scale / 2.0, 0
        history[step] = best_value
        if target < np.inf and np.ceil(best_value - 1e-6) >= target:
            break
        taken = _taken_by_sku(ptr, sku, unit, avail, capacity, lam, best_slot[opened], demand.size)
        lam, stop = _step(lam, demand, taken, value, target, scale)
        if stop:
            break  # converged: the best prices so far give a valid bound
    return (
        True, best_value, best_prices, best_terms, best_best_slot, best_slot_terms, best_opened,
    )  # fmt: skip


@dataclass(frozen=True)
class BoundAscent:
    """The best of a bound's steps: its value and prices, the terms there (per row and per
    slot) with each row's least slot, and the rows the relaxation opens."""

    value: float
    prices: FloatArray
    terms: FloatArray
    best_slot: IntArray
    slot_terms: FloatArray
    opened: IntArray


def bound_ascent(
    slots: Slots,
    n_rows: int,
    prices: FloatArray,
    demand: FloatArray,
    at_least: int,
    at_most: int,
    iterations: int,
    extra_factor: int,
    climb: float,
    target: float,
) -> BoundAscent | None:
    """Subgradient ascent of the bound on plans of ``at_least``..``at_most`` parcels over
    every row: ``lam . Q`` + the ``at_least`` least row terms and any further negative ones
    (ties in row order), Polyak steps towards ``target`` (inf: 5% above the bound), the
    step halved after five without a gain. ``iterations`` steps, up to ``extra_factor``
    times as many while the best bound still climbs by more than ``climb`` of itself over
    five steps; it stops once the bound rounds up to ``target``. None: no finite bound."""
    found, value, lam, terms, best_slot, slot_terms, opened = _bound_ascent(
        slots.ptr, slots.sku, slots.unit, slots.avail, slots.fixed, slots.capacity, slots.row,
        int(n_rows), _floats(prices), _floats(demand), int(at_least), int(at_most),
        int(iterations), int(extra_factor), float(climb), float(target), slots.dense_unit,
        slots.dense_avail,
    )  # fmt: skip
    if not found:
        return None
    return BoundAscent(value, lam, terms, best_slot, slot_terms, opened)


class Ascent(NamedTuple):
    """A branch's best bound, its prices and row terms there, the rows it opens with
    their services, each row's running share of the steps it was opened in, and whether
    the rows opened hold the demand. (A named tuple: built once a branch, where a frozen
    dataclass took four times as long.)"""

    value: float
    prices: FloatArray
    terms: FloatArray
    opened: IntArray
    services: IntArray
    chosen: FloatArray
    covers: bool
    #: The bound at the same prices without the ``on_day`` constraint (``value`` without
    #: one), and per row its least ``on_day`` slot's term there (inf: none; empty: no
    #: constraint): what fixing needs to bound a branch's children under it.
    plain: float
    day_terms: FloatArray


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
    total_avail: FloatArray | None = None,
    on_day: BoolArray | None = None,
    scale: float = 1.0,
) -> Ascent | None:
    """Subgradient ascent of the bound on plans of exactly ``parcels`` parcels opening every
    ``forced`` row and no ``closed`` one: ``lam . Q`` + the forced rows' terms + the least
    free ones'. With ``on_day`` (per slot), one row opened must be on one of those slots:
    the bound adds the least that costs (:func:`_arrive_on_day`). Stops at ``target``.
    None: the branch has no plan (too many rows forced, too few left, the rows left do not
    hold the demand (``row_avail``: R x K, all of them ``total_avail``, summed here if not
    given), none of them has an ``on_day`` slot, or no finite bound). Each step is
    Polyak's length times ``scale`` (halved after five steps without a better bound)."""
    found, value, plain, lam, terms, day_terms, opened, services, chosen, covers = _branch_ascent(
        slots.ptr, slots.sku, slots.unit, slots.avail, slots.fixed, slots.capacity, slots.row,
        slots.service, row_avail.shape[0], _floats(row_avail), _bools(closed), _bools(forced),
        _floats(prices), _floats(demand), int(parcels), int(iterations), float(target),
        float(decay), slots.dense_unit, slots.dense_avail,
        _floats(row_avail.sum(axis=0) if total_avail is None else total_avail),
        _bools(np.empty(0, np.bool_) if on_day is None else on_day), float(scale),
    )  # fmt: skip
    if not found:
        return None
    return Ascent(value, lam, terms, opened, services, chosen, covers, plain, day_terms)
