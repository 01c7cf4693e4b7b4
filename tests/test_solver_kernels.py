"""The compiled bound kernels (sourcing.solver.kernels) against plain numpy references.

Each reference is the textbook form of the computation, written for clarity: dense
arrays, a Python loop for the capacity-bound knapsack, and brute force for the least
parcel sets. The kernels must give the same numbers on random instances that hit every
path: nodes with several services, SKUs out of stock, capacities that bind and ties.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pytest

from sourcing.model import BoolArray
from sourcing.solver import kernels
from sourcing.solver.kernels import bounds, sets


def _instance(rng: np.random.Generator, rows: int, services: int, skus: int):  # type: ignore[no-untyped-def]
    elig = rng.random((rows, services)) < 0.7
    elig[np.arange(rows), rng.integers(0, services, rows)] = True  # every row has a slot
    # Whole-number costs, as the solver's are: equal reduced costs happen.
    unit = rng.integers(1, 9, (rows, services, skus)).astype(np.float64)
    fixed = rng.integers(5, 40, (rows, services)).astype(np.float64)
    avail = np.where(rng.random((rows, skus)) < 0.4, rng.integers(1, 6, (rows, skus)), 0)
    avail = avail.astype(np.float64)
    capacity = np.where(rng.random(rows) < 0.5, rng.integers(1, 8, rows), 10_000).astype(np.float64)
    return elig, unit, fixed, avail, capacity


def _reference_slot(
    unit: np.ndarray, avail: np.ndarray, capacity: float, fixed: float, lam: np.ndarray
) -> tuple[float, np.ndarray]:
    """One slot's term and the units it takes, most negative reduced cost first."""
    reduced = np.minimum(unit - lam, 0.0)
    taken = np.zeros_like(avail)
    room = capacity
    for k in sorted(range(lam.size), key=lambda k: (reduced[k], k)):
        if reduced[k] >= 0 or room <= 0:
            break
        taken[k] = min(avail[k], room)
        room -= taken[k]
    return fixed + float(taken @ reduced), taken


@pytest.mark.parametrize("seed", range(12))
def test_row_terms_match_the_plain_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, services, skus = 9, 3, 7
    elig, unit, fixed, avail, capacity = _instance(rng, rows, services, skus)
    slots = kernels.slots_of(elig, unit, fixed, avail, capacity)
    lam = rng.integers(0, 10, skus).astype(np.float64)
    step = kernels.row_terms(slots, rows, lam)

    expected_terms = np.full(rows, np.inf)
    expected_slot = np.full(rows, -1)
    for s, (r, v) in enumerate(zip(slots.row.tolist(), slots.service.tolist(), strict=True)):
        term, taken = _reference_slot(unit[r, v], avail[r], capacity[r], fixed[r, v], lam)
        assert step.slot_terms[s] == pytest.approx(term, abs=1e-9)
        got = bounds._taken_by_sku(
            slots.ptr, slots.sku, slots.unit, slots.avail, slots.capacity, lam,
            np.array([s]), skus,
        )  # fmt: skip
        np.testing.assert_array_equal(got, taken)
        if term < expected_terms[r] - 1e-12:  # the first of equal slots
            expected_terms[r], expected_slot[r] = term, s
    np.testing.assert_allclose(step.terms, expected_terms, atol=1e-9)
    np.testing.assert_array_equal(step.best_slot, expected_slot)

    opened = np.array([0, 3, 5])
    by_sku = np.zeros(skus)
    for r in opened.tolist():
        s = int(expected_slot[r])
        by_sku += _reference_slot(
            unit[r, slots.service[s]], avail[r], capacity[r], fixed[r, slots.service[s]], lam
        )[1]
    np.testing.assert_array_equal(step.taken_by_sku(slots, opened, skus), by_sku)


def test_a_binding_capacity_takes_the_most_profitable_units_first() -> None:
    """Hand-solved: prices 10 for both SKUs, unit costs 2 and 7 (reduced -8 and -3), 3 of
    each in stock, capacity 4: the node takes 3 of the first and 1 of the second."""
    elig = np.ones((1, 1), dtype=np.bool_)
    slots = kernels.slots_of(
        elig, np.array([[[2.0, 7.0]]]), np.array([[5.0]]), np.array([[3.0, 3.0]]), np.array([4.0])
    )
    step = kernels.row_terms(slots, 1, np.array([10.0, 10.0]))
    assert step.terms[0] == 5.0 - 3 * 8 - 1 * 3
    np.testing.assert_array_equal(step.taken_by_sku(slots, np.array([0]), 2), [3.0, 1.0])


def _row_sets(
    rows: int, parcels: int, forced: np.ndarray, closed: np.ndarray
) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Every set of ``parcels`` of ``rows`` rows that holds the forced ones and no closed
    one: its rows, and as a mask."""
    for chosen in itertools.combinations(range(rows), parcels):
        picked = np.zeros(rows, dtype=np.bool_)
        picked[list(chosen)] = True
        if not (forced & ~picked).any() and not (closed & picked).any():
            yield chosen, picked


def _reference_bound(
    slots: kernels.Slots,
    rows: int,
    lam: np.ndarray,
    demand: np.ndarray,
    parcels: int,
    forced: np.ndarray,
    closed: np.ndarray,
    on_day: np.ndarray | None = None,
) -> float:
    """``lam . Q`` + the least sum of terms over every row set of ``parcels`` rows that holds
    the forced ones and no closed one (brute force); with ``on_day`` (per slot), one row of
    each set on one of those slots (inf: no set can)."""
    step = kernels.row_terms(slots, rows, lam)
    if on_day is None:
        sums = (float(step.terms[p].sum()) for _, p in _row_sets(rows, parcels, forced, closed))
        return float(lam @ demand) + min(sums, default=np.inf)
    day_terms = np.full(rows, np.inf)
    np.minimum.at(day_terms, slots.row[on_day], step.slot_terms[on_day])
    return float(lam @ demand) + _on_day_value(step.terms, day_terms, parcels, forced, closed)


@pytest.mark.parametrize("scale", [1.0, 1.5])
@pytest.mark.parametrize("seed", range(8))
def test_the_branch_ascent_reports_the_bound_of_its_own_prices(seed: int, scale: float) -> None:
    """The value the ascent returns is the bound at the prices it returns (recomputed by
    brute force over the row sets), it opens the forced rows and no closed one, and a
    target below its first bound stops it at once."""
    rng = np.random.default_rng(100 + seed)
    rows, services, skus, parcels = 8, 2, 6, 3
    elig, unit, fixed, avail, capacity = _instance(rng, rows, services, skus)
    slots = kernels.slots_of(elig, unit, fixed, avail, capacity)
    forced = np.zeros(rows, dtype=np.bool_)
    closed = np.zeros(rows, dtype=np.bool_)
    forced[rng.integers(0, rows)] = True
    closed[np.flatnonzero(~forced)[rng.integers(0, rows - 1)]] = True
    # What the rows left hold (the branch has no plan otherwise: tested below).
    demand = np.minimum(avail[~closed].sum(axis=0), rng.integers(1, 4, skus)).astype(np.float64)
    start = rng.integers(0, 5, skus).astype(np.float64)

    ascent = kernels.branch_ascent(
        slots, avail, closed, forced, start, demand, parcels, 25, np.inf, 0.7, scale=scale
    )
    assert ascent is not None
    expected = _reference_bound(slots, rows, ascent.prices, demand, parcels, forced, closed)
    assert ascent.value == pytest.approx(expected, abs=1e-6)
    opened = set(ascent.opened.tolist())
    assert len(opened) == parcels
    assert set(np.flatnonzero(forced).tolist()) <= opened
    assert not opened & set(np.flatnonzero(closed).tolist())
    # The services it reports are each opened row's least slot at those prices.
    step = kernels.row_terms(slots, rows, ascent.prices)
    np.testing.assert_array_equal(ascent.services, slots.service[step.best_slot[ascent.opened]])
    # It says whether the rows it opens hold the demand (a plan can then be built of them).
    assert ascent.covers == bool((avail[ascent.opened].sum(axis=0) >= demand).all())
    # More steps never lower the best bound (it keeps the best prices seen).
    first = kernels.branch_ascent(
        slots, avail, closed, forced, start, demand, parcels, 1, np.inf, 0.7
    )
    assert first is not None
    assert ascent.value >= first.value - 1e-9
    stopped = kernels.branch_ascent(
        slots, avail, closed, forced, start, demand, parcels, 25, first.value - 1.0, 0.7
    )
    assert stopped is not None
    assert stopped.value == first.value
    np.testing.assert_array_equal(stopped.prices, start)


@pytest.mark.parametrize("seed", range(12))
def test_the_branch_ascent_with_a_day_to_arrive_on_reports_the_bound_of_its_prices(
    seed: int,
) -> None:
    """With ``on_day`` slots (one must open): the value is the bound of that constraint at
    the prices returned (brute force over row sets and the row on its day's slot), and
    ``plain`` the bound without it there; one row opened is on such a slot; a branch whose
    rows left have none has no plan."""
    rng = np.random.default_rng(700 + seed)
    rows, services, skus, parcels = 8, 2, 6, int(rng.integers(1, 4))
    elig, unit, fixed, avail, capacity = _instance(rng, rows, services, skus)
    slots = kernels.slots_of(elig, unit, fixed, avail, capacity)
    on_day = rng.random(slots.row.size) < 0.25
    on_day[rng.integers(0, on_day.size)] = True
    forced = np.zeros(rows, dtype=np.bool_)
    closed = np.zeros(rows, dtype=np.bool_)
    if parcels > 1:
        forced[rng.integers(0, rows)] = True
    closed[np.flatnonzero(~forced)[rng.integers(0, rows - 1)]] = True
    # A row left with an on-day slot (the branch has no plan otherwise: tested below).
    closed[slots.row[np.flatnonzero(on_day)[0]]] = False
    demand = np.minimum(avail[~closed].sum(axis=0), rng.integers(1, 4, skus)).astype(np.float64)
    start = rng.integers(0, 5, skus).astype(np.float64)

    ascent = kernels.branch_ascent(
        slots, avail, closed, forced, start, demand, parcels, 25, np.inf, 0.7, None, on_day
    )
    assert ascent is not None
    expected = _reference_bound(slots, rows, ascent.prices, demand, parcels, forced, closed, on_day)
    assert ascent.value == pytest.approx(expected, abs=1e-6)
    plain = _reference_bound(slots, rows, ascent.prices, demand, parcels, forced, closed)
    assert ascent.plain == pytest.approx(plain, abs=1e-6)
    assert ascent.value >= ascent.plain - 1e-9
    opened = set(ascent.opened.tolist())
    assert len(opened) == parcels and set(np.flatnonzero(forced).tolist()) <= opened
    taken = {(int(r), int(v)) for r, v in zip(ascent.opened, ascent.services, strict=True)}
    on_day_slots = {(int(slots.row[s]), int(slots.service[s])) for s in np.flatnonzero(on_day)}
    assert taken & on_day_slots
    # Without the constraint the same call's value is its plain bound.
    free = kernels.branch_ascent(
        slots, avail, closed, forced, start, demand, parcels, 25, np.inf, 0.7
    )
    assert free is not None and free.plain == free.value and free.day_terms.size == 0
    # Every row with an on-day slot closed: no plan.
    shut = closed | np.isin(np.arange(rows), slots.row[on_day])
    if not (forced & shut).any():
        none = kernels.branch_ascent(
            slots, avail, shut, forced, start, np.zeros(skus), parcels, 25, np.inf, 0.7, None,
            on_day,
        )  # fmt: skip
        assert none is None


def _reference_count_bound(
    slots: kernels.Slots, rows: int, lam: np.ndarray, demand: np.ndarray, least: int, most: int
) -> float:
    """``lam . Q`` + the least sum of terms over every set of ``least``..``most`` rows
    (brute force)."""
    terms = kernels.row_terms(slots, rows, lam).terms
    best = np.inf
    for count in range(least, most + 1):
        for chosen in itertools.combinations(range(rows), count):
            best = min(best, float(terms[list(chosen)].sum()))
    return float(lam @ demand) + best


@pytest.mark.parametrize("seed", range(10))
def test_the_bound_ascent_reports_the_bound_of_its_own_prices(seed: int) -> None:
    """lagrangian_bound's compiled ascent: its value is the bound at the prices it returns
    (brute force over every row set of an allowed size), it opens rows of least terms, its
    slot terms and least slots are those prices', more steps never lower it, and a target
    below its first bound stops it at once."""
    rng = np.random.default_rng(300 + seed)
    rows, services, skus = 8, 2, 6
    elig, unit, fixed, avail, capacity = _instance(rng, rows, services, skus)
    slots = kernels.slots_of(elig, unit, fixed, avail, capacity)
    demand = rng.integers(1, 4, skus).astype(np.float64)
    least = int(rng.integers(0, 3))
    most = least + int(rng.integers(0, 4))
    start = rng.integers(0, 6, skus).astype(np.float64)

    ascent = kernels.bound_ascent(slots, rows, start, demand, least, most, 25, 2, 3e-3, np.inf)
    assert ascent is not None
    expected = _reference_count_bound(slots, rows, ascent.prices, demand, least, most)
    assert ascent.value == pytest.approx(expected, abs=1e-6)
    step = kernels.row_terms(slots, rows, ascent.prices)
    np.testing.assert_allclose(ascent.terms, step.terms, atol=1e-9)
    np.testing.assert_allclose(ascent.slot_terms, step.slot_terms, atol=1e-9)
    np.testing.assert_array_equal(ascent.best_slot, step.best_slot)
    assert least <= ascent.opened.size <= most
    assert float(ascent.prices @ demand + step.terms[ascent.opened].sum()) == pytest.approx(
        ascent.value, abs=1e-6
    )
    first = kernels.bound_ascent(slots, rows, start, demand, least, most, 1, 1, 3e-3, np.inf)
    assert first is not None
    assert ascent.value >= first.value - 1e-9
    stopped = kernels.bound_ascent(
        slots, rows, start, demand, least, most, 25, 2, 3e-3, float(np.floor(first.value))
    )
    assert stopped is not None
    assert stopped.value == first.value
    np.testing.assert_array_equal(stopped.prices, start)


def test_the_bound_ascent_reaches_the_hand_solved_bound() -> None:
    """The hand-solved cart below (one parcel: only row 0, at 12): the bound over plans of
    exactly one parcel climbs to 12 and no further; with no parcel limit (0..3 rows) the
    LP bound is lower (rows 1 and 2 together cost 8)."""
    elig = np.ones((3, 1), dtype=np.bool_)
    avail = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    fixed = np.array([[10.0], [3.0], [3.0]])
    slots = kernels.slots_of(elig, np.ones((3, 1, 2)), fixed, avail, np.full(3, 100.0))
    demand = np.ones(2)
    one = kernels.bound_ascent(slots, 3, np.zeros(2), demand, 1, 1, 200, 2, 3e-3, 12.0)
    assert one is not None and 12.0 - 1e-6 <= one.value <= 12.0 + 1e-9
    free = kernels.bound_ascent(slots, 3, np.zeros(2), demand, 0, 3, 200, 2, 3e-3, np.inf)
    assert free is not None and free.value <= 8.0 + 1e-9


def test_the_branch_ascent_bounds_the_cheapest_plan_from_below() -> None:
    """Hand-solved: two SKUs, one unit each; row 0 holds both (parcel 10, units 1 and 1),
    rows 1 and 2 one each (parcel 3, unit 1). With one parcel the only plan is row 0 at 12;
    the bound may not exceed it, and with prices high enough it reaches it."""
    elig = np.ones((3, 1), dtype=np.bool_)
    unit = np.ones((3, 1, 2))
    avail = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    fixed = np.array([[10.0], [3.0], [3.0]])
    slots = kernels.slots_of(elig, unit, fixed, avail, np.full(3, 100.0))
    nothing = np.zeros(3, dtype=np.bool_)
    demand = np.ones(2)
    ascent = kernels.branch_ascent(
        slots, avail, nothing, nothing, np.zeros(2), demand, 1, 200, 12.0, 0.7
    )
    assert ascent is not None
    assert ascent.value <= 12.0 + 1e-9
    # At prices (a, a) the bound is min(12, a + 4): the ascent reaches the plan's cost.
    assert ascent.value >= 12.0 - 1e-6


def test_the_ascent_says_whether_its_rows_hold_the_demand() -> None:
    """Hand-solved: row 0 holds both SKUs, rows 1 and 2 one each. One parcel must be row 0
    (it holds the demand); of two parcels the cheapest pair is rows 1 and 2 (they do), and
    forced to rows 0 and 1 they do too; with row 0 closed and one parcel, there is no plan."""
    elig = np.ones((3, 1), dtype=np.bool_)
    avail = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    fixed = np.array([[10.0], [3.0], [3.0]])
    slots = kernels.slots_of(elig, np.ones((3, 1, 2)), fixed, avail, np.full(3, 100.0))
    none = np.zeros(3, dtype=np.bool_)
    demand = np.ones(2)

    def ascent(parcels: int, forced: BoolArray = none, start: float = 0.0):  # type: ignore[no-untyped-def]
        found = kernels.branch_ascent(
            slots, avail, none, forced, np.full(2, start), demand, parcels, 1, np.inf, 0.7
        )
        assert found is not None
        return found

    # At prices 0 every term is the parcel's cost: the least one is row 1 or 2, which alone
    # holds one SKU; at prices 20 row 0's term (10 - 40) is the least, and it holds both.
    assert not ascent(1).covers
    assert ascent(1, start=20.0).covers
    assert ascent(2).covers
    assert ascent(2, forced=np.array([True, True, False])).covers
    assert sorted(ascent(2).opened.tolist()) == [1, 2]


def test_an_ascent_of_no_steps_bounds_nothing() -> None:
    """No iterations: no step priced a row, so there is no bound (None), and the check of
    the rows opened reads none (it once read an unset index: a crash)."""
    elig = np.ones((3, 1), dtype=np.bool_)
    avail = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    slots = kernels.slots_of(elig, np.ones((3, 1, 2)), np.ones((3, 1)), avail, np.full(3, 9.0))
    none = np.zeros(3, dtype=np.bool_)
    for _ in range(50):
        ascent = kernels.branch_ascent(
            slots, avail, none, none, np.zeros(2), np.ones(2), 2, 0, np.inf, 0.7
        )
        assert ascent is None


def test_a_branch_without_a_plan_is_none() -> None:
    """No plan: a forced row with no slot (every term infinite), more rows forced than
    parcels, fewer rows left than parcels, or rows left that do not hold the demand."""
    elig = np.array([[True], [False], [True]])
    avail = np.array([[1.0], [1.0], [2.0]])
    slots = kernels.slots_of(elig, np.ones((3, 1, 1)), np.ones((3, 1)), avail, np.full(3, 9.0))
    none = np.zeros(3, dtype=np.bool_)

    def ascent(forced: list[bool], closed: list[bool], parcels: int, demand: float):  # type: ignore[no-untyped-def]
        return kernels.branch_ascent(
            slots, avail, np.array(closed), np.array(forced), np.zeros(1), np.array([demand]),
            parcels, 5, np.inf, 0.7,
        )  # fmt: skip

    assert ascent([False, False, False], [False, False, False], 1, 1.0) is not None
    assert ascent([False, True, False], [False, False, False], 1, 1.0) is None
    assert ascent([True, False, True], [False, False, False], 1, 1.0) is None
    assert ascent([False, False, False], [True, True, False], 2, 1.0) is None
    assert ascent([False, False, False], [False, False, True], 1, 3.0) is None
    assert ascent(list(none), list(none), 1, 4.0) is not None


def _reference_fix_and_pick(  # type: ignore[no-untyped-def]
    ascent, forced, closed, parcels, threshold, slots_per_row, max_sets
):
    """Reduced-cost fixing as written before it was compiled (numpy), then the move."""
    terms, value = ascent.terms, ascent.value
    free = np.flatnonzero(~(forced | closed))
    free_count = parcels - int(np.count_nonzero(forced))
    order = free[np.argsort(terms[free], kind="stable")]
    inside, outside = order[:free_count], order[free_count:]
    closed, forced = closed.copy(), forced.copy()

    def above(values: np.ndarray) -> np.ndarray:
        return np.asarray(np.ceil(values - 1e-6) > threshold)

    if free_count == 0:
        closed[outside] = True
    else:
        closed[outside[above(value - terms[inside[-1]] + terms[outside])]] = True
        if outside.size:
            forced[inside[above(value - terms[inside] + terms[outside[0]])]] = True
        else:
            forced[inside] = True
        if int(np.count_nonzero(forced)) > parcels:
            return kernels.NO_PLAN, None, None, -1
    free = np.flatnonzero(~(forced | closed))
    free_count = parcels - int(np.count_nonzero(forced))
    free_slots = int(slots_per_row[free].sum())
    if free_count > free_slots:
        return kernels.NO_PLAN, None, None, -1
    sets = math.prod(slots_per_row[forced].tolist()) * math.comb(free_slots, free_count)
    if free.size == 0 or sets <= max_sets:
        return kernels.LEAF, forced, closed, -1
    return kernels.SPLIT, forced, closed, int(free[np.argmax(ascent.chosen[free])])


@pytest.mark.parametrize("seed", range(40))
def test_fixing_and_the_next_move_match_the_plain_rules(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    rows, parcels = 12, int(rng.integers(1, 5))
    terms = rng.integers(-20, 20, rows).astype(np.float64)  # ties
    forced = np.zeros(rows, dtype=np.bool_)
    closed = np.zeros(rows, dtype=np.bool_)
    pos = rng.permutation(rows)
    forced[pos[: rng.integers(0, parcels)]] = True
    closed[pos[parcels : parcels + rng.integers(0, 4)]] = True
    terms[closed] = np.inf
    chosen = rng.random(rows).round(1)
    free_count = parcels - int(forced.sum())
    least = np.sort(terms[~(forced | closed)])[:free_count].sum()
    value = float(terms[forced].sum() + least)
    ascent = kernels.Ascent(
        value, np.zeros(1), terms, np.zeros(0, np.int64), np.zeros(0, np.int64), chosen, False,
        value, np.empty(0),
    )  # fmt: skip
    slots_per_row = rng.integers(1, 3, rows)
    for threshold in (value, value + 3, value + 15, value + 1000):
        for max_sets in (1.0, 30.0, 1e9):
            got = kernels.fix_and_pick(
                ascent, forced, closed, parcels, int(np.floor(threshold)), slots_per_row, max_sets
            )
            want = _reference_fix_and_pick(
                ascent, forced, closed, parcels, int(np.floor(threshold)), slots_per_row, max_sets
            )
            assert got[0] == want[0]
            if want[0] != kernels.NO_PLAN:
                np.testing.assert_array_equal(got[1], want[1])
                np.testing.assert_array_equal(got[2], want[2])
                assert got[3] == want[3]
    # The caller's masks are not changed.
    assert not (forced & closed).any()


@pytest.mark.parametrize("seed", range(6))
def test_the_least_values_are_picked_with_ties_in_position_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 4, 15).astype(np.float64)  # many ties
    values[rng.integers(0, 15)] = np.inf
    for count in range(1, values.size + 1):
        out = np.full(count, -1, dtype=np.int64)
        bounds._least(values, count, out)
        # The positions a stable sort puts first, listed as the kernel lists them: those
        # below the count-th least value, then the equal ones, each by position.
        first = np.argsort(values, kind="stable")[:count]
        kth = values[first].max()
        below = [i for i in range(values.size) if values[i] < kth]
        equal = [i for i in range(values.size) if values[i] == kth][: count - len(below)]
        assert out.tolist() == below + equal
        assert sorted(out.tolist()) == sorted(first.tolist())


@pytest.mark.parametrize("seed", range(6))
def test_leaf_slots_match_the_plain_selection(seed: int) -> None:
    """A leaf's slots: one group per forced row, the free rows' slots, in row then
    service order, as np.nonzero lists them."""
    rng = np.random.default_rng(400 + seed)
    rows, services = 12, 3
    elig = rng.random((rows, services)) < 0.6
    nodes = np.sort(rng.choice(100, rows, replace=False))
    forced = rng.random(rows) < 0.3
    closed = ~forced & (rng.random(rows) < 0.3)
    group_ptr, group_n, group_v, free_n, free_v = kernels.leaf_slots(elig, nodes, forced, closed)

    forced_rows = np.flatnonzero(forced)
    assert group_ptr.tolist() == [0, *np.cumsum(elig[forced_rows].sum(axis=1)).tolist()]
    at, v = np.nonzero(elig[forced_rows])
    assert group_n.tolist() == nodes[forced_rows[at]].tolist()
    assert group_v.tolist() == v.tolist()
    free_rows = np.flatnonzero(~(forced | closed))
    at, v = np.nonzero(elig[free_rows])
    assert free_n.tolist() == nodes[free_rows[at]].tolist()
    assert free_v.tolist() == v.tolist()


def test_split_gives_each_sku_to_the_cheapest_parcel_first_and_ties_to_the_earlier() -> None:
    """Hand-solved: nodes 0, 1, 2 (one service), demand 3 of SKU 0 and 1 of SKU 1. SKU 0
    costs 5 at node 0, 2 at node 1 and 2 at node 2, each node stocks 2: node 1 (the earlier
    of the two cheapest in the row) takes 2, node 2 takes 1, node 0 none. SKU 1 costs the
    same everywhere: the row's first parcel takes it."""
    unit = np.array([[[5, 1]], [[2, 1]], [[2, 1]]])
    avail = np.array([[2, 1], [2, 1], [2, 1]])
    fixed = np.array([[10], [20], [30]])
    capacity = np.array([9, 9, 1])
    demand = np.array([3, 1])
    nodes = np.array([[1, 2, 0], [2, 1, 0], [0, 1, 2]])
    total, units, all_used, within = kernels.split(
        nodes, np.zeros_like(nodes), unit, avail, fixed, capacity, demand
    )
    np.testing.assert_array_equal(units[0], [[2, 1], [1, 0], [0, 0]])
    np.testing.assert_array_equal(units[1], [[2, 1], [1, 0], [0, 0]])  # node 2 first now
    np.testing.assert_array_equal(units[2], [[0, 1], [2, 0], [1, 0]])
    assert total.tolist() == [60 + 2 * 2 + 1 + 2, 60 + 2 * 2 + 1 + 2, 60 + 1 + 2 * 2 + 2]
    assert all_used.tolist() == [False, False, True]
    # Node 2's capacity is 1: it carries 3 units in the second row, 1 in the others.
    assert within.tolist() == [True, False, True]


def test_price_product_keeps_the_first_of_equal_sets_and_skips_repeated_nodes() -> None:
    """Hand-solved: four identical nodes (parcel 10, unit 1, one of the single SKU each),
    demand 2, node 0 forced with its two services (the second dearer) and one free slot
    among nodes 0, 1, 2, 3: every set {0 by service 0, x} costs 10 + 10 + 2 = 22 and
    arrives on day 3; the first in order (x = node 1) is kept, and no set names node 0
    twice."""
    unit = np.ones((4, 2, 1), dtype=np.int64)
    avail = np.ones((4, 1), dtype=np.int64)
    fixed = np.array([[10, 15]] * 4)
    arrival = np.full((4, 2), 3)
    key, found, over = kernels.price_product(
        np.array([0, 2]), np.array([0, 0]), np.array([0, 1]), np.array([0, 1, 2, 3]),
        np.zeros(4, dtype=np.int64), 1, unit, avail, fixed, np.full(4, 9), arrival,
        np.array([2]),
    )  # fmt: skip
    assert key == (22, 3)
    assert found is not None
    assert found[0].tolist() == [0, 1] and found[1].tolist() == [0, 0]
    np.testing.assert_array_equal(found[2], [[1], [1]])
    assert over[2].size == 0


def test_quotes_after_the_warm_up_compile_nothing() -> None:
    """numba compiles a kernel once per argument type (a strided view, such as np.nonzero's
    output, is a type of its own), for seconds. After warm_up, which oms serve runs before
    it serves, quotes that reach every kernel (fragmented 50-line carts on 500 nodes: the
    branch and bound, its leaves, set-cover branching; capacity-bound, credit and standard
    20-line carts) must find every kernel compiled for what they pass: no checkout call
    compiles. Strided views once reached two kernels and compiled in the middle of quotes."""
    from sourcing import QuoteSettings, quote
    from sourcing.errors import ShortageError
    from sourcing.solver import warm_up

    from networks import random_cart, regime_network

    def compiled() -> dict[str, int]:
        return {
            f"{module.__name__}.{name}": len(kernel.signatures)
            for module in (bounds, sets)
            for name, kernel in vars(module).items()
            if hasattr(kernel, "signatures")
        }

    warm_up()
    before = compiled()
    # The kernels the wrappers call are compiled (those only called by kernels are not
    # dispatched, and list none).
    assert sum(1 for count in before.values() if count) >= 8, before
    quoted = 0
    for regime, nodes, lines, carts in (
        ("fragmented", 500, 50, 3),
        ("capacity", 200, 20, 4),
        ("credits", 200, 20, 2),
        ("standard", 200, 20, 2),
    ):
        network = regime_network(regime, nodes, max(100, 3 * lines), 1)
        for cart in range(carts):
            order = random_cart(network, np.random.default_rng([1, cart]), lines)
            try:
                quote(network, order, QuoteSettings(num_workers=1, time_limit_s=20))
            except ShortageError:
                continue
            quoted += 1
    assert quoted >= 8
    assert compiled() == before


def _on_day_value(
    terms: np.ndarray, day_terms: np.ndarray, parcels: int, forced: np.ndarray, closed: np.ndarray
) -> float:
    """The least sum of ``terms`` over every set of ``parcels`` rows holding the forced ones
    and no closed one, one row of it at its ``day_terms`` instead (brute force)."""
    best = np.inf
    for chosen, picked in _row_sets(terms.size, parcels, forced, closed):
        total = float(terms[picked].sum())
        best = min(best, min(total - terms[r] + day_terms[r] for r in chosen))
    return best


@pytest.mark.parametrize("seed", range(60))
def test_fixing_under_a_day_to_arrive_on_matches_each_childs_bound(seed: int) -> None:
    """With per-row terms on a day's slots (one opened row must take one), a free row is
    closed (forced open) exactly when the bound of the branch opening (closing) it, that
    constraint included, rounds up above the threshold: every child's bound by brute force.
    Rows in the relaxation's choice are only ever forced, rows out of it only closed."""
    rng = np.random.default_rng(3000 + seed)
    rows, parcels = 9, int(rng.integers(1, 5))
    terms = rng.integers(-20, 20, rows).astype(np.float64)
    rise = rng.choice([0.0, 1.0, 4.0, 9.0, np.inf], rows, p=[0.2, 0.2, 0.2, 0.2, 0.2])
    day_terms = terms + rise
    forced = np.zeros(rows, dtype=np.bool_)
    closed = np.zeros(rows, dtype=np.bool_)
    pos = rng.permutation(rows)
    forced[pos[: rng.integers(0, parcels)]] = True
    closed[pos[parcels : parcels + rng.integers(0, 3)]] = True
    terms[closed] = day_terms[closed] = np.inf
    value = _on_day_value(terms, day_terms, parcels, forced, closed)
    if not np.isfinite(value):
        pytest.skip("this draw's branch has no plan (the ascent returns None there)")
    free = np.flatnonzero(~(forced | closed))
    free_count = parcels - int(forced.sum())
    order = free[np.argsort(terms[free], kind="stable")]
    inside, outside = order[:free_count], order[free_count:]
    plain = float(terms[forced].sum() + terms[inside].sum())
    ascent = kernels.Ascent(
        value, np.zeros(1), terms, np.zeros(0, np.int64), np.zeros(0, np.int64),
        np.zeros(rows), False, plain, day_terms,
    )  # fmt: skip
    slots_per_row = np.full(rows, 2)
    for threshold in {int(np.floor(value)) + gap for gap in (0, 1, 3, 6, 12, 40)}:
        move, got_forced, got_closed, _ = kernels.fix_and_pick(
            ascent, forced, closed, parcels, threshold, slots_per_row, 0.5
        )
        want_forced, want_closed = forced.copy(), closed.copy()
        for r in outside:
            child = _on_day_value(
                terms, day_terms, parcels, forced | (np.arange(rows) == r), closed
            )
            want_closed[r] = np.ceil(child - 1e-6) > threshold
        for r in inside if outside.size else ():
            child = _on_day_value(
                terms, day_terms, parcels, forced, closed | (np.arange(rows) == r)
            )
            want_forced[r] = np.ceil(child - 1e-6) > threshold
        if free_count > 0 and not outside.size:
            want_forced[inside] = True
        if free_count == 0:
            want_closed[outside] = True
        if move == kernels.NO_PLAN:
            assert (
                want_forced.sum() > parcels or free_count > 2 * (~(want_forced | want_closed)).sum()
            )
            continue
        np.testing.assert_array_equal(got_forced, want_forced, err_msg=f"threshold {threshold}")
        np.testing.assert_array_equal(got_closed, want_closed, err_msg=f"threshold {threshold}")
