"""Decomposition: who can gain, which orders move, independent components, chunks.

An order can get cheaper only if its plan costs more than its own optimum
with the pool to itself (:func:`find_unhappy`); the orders free to move are
those and, up to ``reach`` levels, the holders of contended rows they could
use (:func:`free_orders`). Free orders linked through contended rows form
components (union-find, :func:`find_components`), bundled when small
(:func:`bundle_components`) and cut into chunks with their shares of the
contended rows when large (:func:`chunk_problems`), grouped differently in
each round (:func:`chunk_keys`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sourcing.batch.build import Limits, Share, build_problem
from sourcing.batch.catalogue import Catalogue
from sourcing.batch.instance import BatchSettings
from sourcing.batch.problem import Problem
from sourcing.model import BoolArray, IntArray


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    def union_all(self, members: Iterable[int]) -> None:
        it = iter(members)
        first = next(it, None)
        if first is None:
            return
        root = self.find(first)
        for other in it:
            r = self.find(other)
            if r != root:
                self.parent[r] = root


def find_unhappy(cat: Catalogue, units: IntArray) -> BoolArray:
    """Orders whose plan may cost more than their own optimum with the whole pool to themselves.

    Only such an order can get cheaper in any re-assignment (an order's cost
    never falls below that optimum), so a sub-problem without one cannot
    save anything. Tested by bounds: an order is content when its cost is at
    most both its best single parcel and a lower bound on any plan of two or
    more parcels (its two cheapest parcel fixed costs plus, per SKU, the
    cheapest unit cost times the demand). Conservative: an order flagged may
    still be at its optimum.
    """
    n_orders = cat.order_units.size
    n_skus = int(cat.cell_sku.max(initial=0)) + 1
    cell_order = cat.slot_order[cat.cell_slot]
    # Current cost per order.
    carried = np.bincount(cat.cell_slot, weights=units, minlength=cat.slot_order.size) > 0
    now = np.bincount(
        cat.slot_order, weights=np.where(carried, cat.slot_fixed, 0), minlength=n_orders
    ) + np.bincount(cell_order, weights=cat.cell_unit * units, minlength=n_orders)
    # Demand of each cell's (order, SKU).
    demand_key = cat.demand_order * n_skus + cat.demand_sku
    cell_key = cell_order * n_skus + cat.cell_sku
    at = np.searchsorted(demand_key, cell_key)
    cell_demand = cat.demand_qty[at]
    # Best single parcel: slots whose cells cover every SKU of the order in full.
    full = cat.cell_upper >= cell_demand
    skus_covered = np.bincount(cat.cell_slot, weights=full, minlength=cat.slot_order.size)
    skus_wanted = np.bincount(cat.demand_order, minlength=n_orders)
    covers = skus_covered == skus_wanted[cat.slot_order]
    single = cat.slot_fixed + np.bincount(
        cat.cell_slot, weights=cat.cell_unit * cell_demand, minlength=cat.slot_order.size
    )
    best_single = np.full(n_orders, np.inf)
    np.minimum.at(best_single, cat.slot_order[covers], single[covers])
    # Two or more parcels: the two least fixed costs plus the least unit cost per SKU.
    by_fixed = np.lexsort((cat.slot_fixed, cat.slot_order))
    rank = np.arange(by_fixed.size) - np.repeat(cat.slot_start[:-1], np.diff(cat.slot_start))
    two = np.bincount(
        cat.slot_order[by_fixed],
        weights=np.where(rank < 2, cat.slot_fixed[by_fixed], 0),
        minlength=n_orders,
    )
    least_unit = np.full(demand_key.size, np.inf)
    np.minimum.at(least_unit, at, cat.cell_unit.astype(np.float64))
    units_bound = np.bincount(
        cat.demand_order, weights=least_unit * cat.demand_qty, minlength=n_orders
    )
    has_two = np.diff(cat.slot_start) >= 2
    bound = np.minimum(best_single, np.where(has_two, two + units_bound, np.inf))
    unhappy: BoolArray = now > bound
    return unhappy


def free_orders(
    cat: Catalogue, limits: Limits, units: IntArray, unhappy: BoolArray, reach: int | None
) -> tuple[BoolArray, bool]:
    """The orders free to move: those that could gain, and ``reach`` levels of holders.

    A holder is an order holding units of a contended position (stock or
    capacity) that a free order could draw on: the unhappy order may need it
    to move away, and its move may in turn need another holder to move. The
    rest keep their plans (what they hold is out of the pool). None: all.

    Also returns whether the set is closed (no holder left out): then holding
    the rest fixed loses nothing.
    """
    if reach is None:
        return np.ones(cat.order_units.size, dtype=np.bool_), True
    cell_order = cat.slot_order[cat.cell_slot]
    movable = unhappy.copy()
    holding = units > 0
    for level in range(reach + 1):
        grown = movable.copy()
        for rows, contended, n_rows in (
            (limits.cell_stock_row, limits.stock_contended, limits.stock_limit.size),
            (limits.cell_capacity_row, limits.capacity_contended, limits.capacity_limit.size),
        ):
            wanted = np.zeros(n_rows, dtype=np.bool_)
            wanted[rows[movable[cell_order] & contended[rows]]] = True
            grown[cell_order[wanted[rows] & holding]] = True
        if np.array_equal(grown, movable):
            return movable, True
        if level == reach:
            break
        movable = grown
    return movable, False


def find_components(
    n_orders: int, cat: Catalogue, limits: Limits, active: BoolArray
) -> list[IntArray]:
    """Active orders linked through contended stock or capacity rows (sorted index arrays)."""
    uf = _UnionFind(n_orders)
    cell_order = cat.slot_order[cat.cell_slot]
    for rows, contended in (
        (limits.cell_stock_row, limits.stock_contended),
        (limits.cell_capacity_row, limits.capacity_contended),
    ):
        hot = contended[rows] & active[cell_order]
        if not hot.any():
            continue
        row, orders = rows[hot], cell_order[hot]
        order_by = np.lexsort((orders, row))
        row, orders = row[order_by], orders[order_by]
        for group in np.split(orders, np.flatnonzero(np.diff(row)) + 1):
            uf.union_all(np.unique(group).tolist())
    members = np.flatnonzero(active)
    if members.size == 0:
        return []
    roots = np.array([uf.find(o) for o in members.tolist()], dtype=np.int64)
    by_root = np.argsort(roots, kind="stable")
    return np.split(members[by_root], np.flatnonzero(np.diff(roots[by_root])) + 1)


def bundle_components(components: list[IntArray], size: int) -> list[IntArray]:
    """Small components bundled (first fit, in order) into groups of at most ``size`` orders."""
    bins: list[list[IntArray]] = []
    counts: list[int] = []
    for component in components:
        if bins and counts[-1] + component.size <= size:
            bins[-1].append(component)
            counts[-1] += component.size
        else:
            bins.append([component])
            counts.append(component.size)
    return [np.sort(np.concatenate(b)) for b in bins]


def chunk_keys(
    component: IntArray,
    cat: Catalogue,
    limits: Limits,
    units: IntArray,
    how: str,
    rng: np.random.Generator,
) -> IntArray:
    """A grouping key per order of the component: orders with equal keys go in one chunk."""
    if how == "random":
        return rng.permutation(component.size).astype(np.int64)
    key = np.full(component.size, -1, dtype=np.int64)
    for i, o in enumerate(component.tolist()):
        cells = np.arange(cat.cell_start[o], cat.cell_start[o + 1])
        rows = limits.cell_stock_row[cells]
        hot = limits.stock_contended[rows]
        if not hot.any():
            continue
        if how == "current":
            held = hot & (units[cells] > 0)
            if held.any():
                key[i] = int(rows[held][np.argmax(units[cells][held])])
                continue
        # The contended position it could take most cheaply per unit.
        cheapest = np.argmin(np.where(hot, cat.cell_unit[cells], np.iinfo(np.int64).max))
        key[i] = int(rows[cheapest])
    return key


def _chunks(component: IntArray, keys: IntArray, size: int) -> list[IntArray]:
    order = np.argsort(keys, kind="stable")
    ordered = component[order]
    return [np.sort(ordered[i : i + size]) for i in range(0, ordered.size, size)]


def _shares(
    chunk_of_cell: IntArray,
    row_of_cell: IntArray,
    want: IntArray,
    held: IntArray,
    limit: IntArray,
    contended: BoolArray,
    n_chunks: int,
) -> list[Share]:
    """Per chunk, for each contended row its cells touch: what the chunk holds there now
    plus its share of the row's free units, in proportion to what it could take.

    Every order drawing on a contended row is in the component being chunked,
    so the shares of all chunks add up to at most the row's limit.
    """
    hot = contended[row_of_cell]
    chunk, row = chunk_of_cell[hot], row_of_cell[hot]
    pairs, inverse = np.unique(chunk * limit.size + row, return_inverse=True)
    pair_held = np.bincount(inverse, weights=held[hot], minlength=pairs.size)
    pair_want = np.bincount(inverse, weights=want[hot], minlength=pairs.size)
    pair_chunk, pair_row = pairs // limit.size, pairs % limit.size
    row_held = np.bincount(pair_row, weights=pair_held, minlength=limit.size)
    row_want = np.bincount(pair_row, weights=pair_want, minlength=limit.size)
    free = np.maximum(limit - row_held, 0)
    fraction = pair_want / np.maximum(row_want[pair_row], 1.0)
    values = (pair_held + np.floor(fraction * free[pair_row])).astype(np.int64)
    result = []
    starts = np.searchsorted(pair_chunk, np.arange(n_chunks + 1))
    for i in range(n_chunks):
        part = slice(int(starts[i]), int(starts[i + 1]))
        result.append(Share(pair_row[part].astype(np.int64), values[part]))
    return result


def chunk_problems(
    component: IntArray,
    keys: IntArray,
    cat: Catalogue,
    limits: Limits,
    units: IntArray,
    unhappy: BoolArray,
    settings: BatchSettings,
    round_: int,
    first_key: int,
) -> tuple[list[Problem], list[IntArray]]:
    """A large component cut into independent chunks, each with its share of the contended rows.

    Returns the chunks to solve and those skipped (no order in them could gain).
    """
    chunks = _chunks(component, keys, settings.max_orders_per_problem)
    chunk_of_order = np.full(cat.order_units.size, -1, dtype=np.int64)
    for i, chunk in enumerate(chunks):
        chunk_of_order[chunk] = i
    cells = np.concatenate(
        [np.arange(cat.cell_start[o], cat.cell_start[o + 1]) for o in component.tolist()]
    )
    cell_chunk = chunk_of_order[cat.slot_order[cat.cell_slot[cells]]]
    want, held = limits.cell_once[cells], units[cells]
    stock = _shares(
        cell_chunk, limits.cell_stock_row[cells], want, held,
        limits.stock_limit, limits.stock_contended, len(chunks),
    )  # fmt: skip
    capacity = _shares(
        cell_chunk, limits.cell_capacity_row[cells], want, held,
        limits.capacity_limit, limits.capacity_contended, len(chunks),
    )  # fmt: skip
    solve = [i for i, chunk in enumerate(chunks) if unhappy[chunk].any()]
    problems = [
        build_problem(
            first_key + n, round_, True, chunks[i], cat, limits, units, settings,
            (stock[i], capacity[i]),
        )
        for n, i in enumerate(solve)
    ]  # fmt: skip
    return problems, [c for i, c in enumerate(chunks) if i not in set(solve)]
