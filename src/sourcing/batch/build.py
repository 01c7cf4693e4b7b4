"""Model building: the shared stock and capacity rows, and a sub-problem's arrays.

:func:`shared_limits` gives every cell its stock row (node, SKU) and
capacity row (bucket, node) with their limits for the orders free to move,
and marks the contended rows; :func:`build_problem` cuts the
:class:`~sourcing.batch.problem.Problem` of a set of orders out of the
catalogue, with a chunk's :class:`Share` of the contended rows where given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sourcing.batch.catalogue import Catalogue
from sourcing.batch.instance import BatchInstance, BatchSettings
from sourcing.batch.problem import Problem
from sourcing.model import UNLIMITED_CAPACITY, BoolArray, IntArray


@dataclass(frozen=True, eq=False)
class Limits:
    """Shared rows of the whole instance: stock per (node, SKU), capacity per (bucket, node).

    Each cell of the catalogue belongs to one stock row and one capacity row;
    a row is *contended* when the most its cells could take exceeds its limit.
    """

    cell_stock_row: IntArray
    cell_once: IntArray
    stock_limit: IntArray
    stock_contended: BoolArray
    cell_capacity_row: IntArray
    capacity_limit: IntArray
    capacity_contended: BoolArray


def shared_limits(
    instance: BatchInstance, cat: Catalogue, active: BoolArray, units: IntArray
) -> Limits:
    """Shared rows and their limits for the ``active`` orders (the others stay as they are:
    what they hold is taken out of the limits)."""
    network = instance.network
    n_skus, n_nodes = len(network.sku_ids), len(network.node_ids)
    cell_node = cat.slot_node[cat.cell_slot]
    cell_order = cat.slot_order[cat.cell_slot]
    stock_keys, cell_stock_row = np.unique(cell_node * n_skus + cat.cell_sku, return_inverse=True)
    bucket_node = cat.order_bucket[cell_order] * n_nodes + cell_node
    capacity_keys, cell_capacity_row = np.unique(bucket_node, return_inverse=True)
    cell_active = active[cell_order]
    fixed_units = np.where(cell_active, 0, units)
    # The most an order can take from a position is its demand there, counted
    # once per (order, position) however many services could carry it.
    once = _once_per_position(cat, cell_order, cell_stock_row)
    active_once = np.where(cell_active, once, 0)
    stock_wanted = np.bincount(cell_stock_row, weights=active_once, minlength=stock_keys.size)
    capacity_wanted = np.bincount(
        cell_capacity_row, weights=active_once, minlength=capacity_keys.size
    )
    stock_limit = network.available.reshape(-1)[stock_keys].astype(np.int64) - np.bincount(
        cell_stock_row, weights=fixed_units, minlength=stock_keys.size
    ).astype(np.int64)
    capacity_limit = instance.capacity_left.reshape(-1)[capacity_keys].astype(
        np.int64
    ) - np.bincount(cell_capacity_row, weights=fixed_units, minlength=capacity_keys.size).astype(
        np.int64
    )
    return Limits(
        cell_stock_row=cell_stock_row.astype(np.int64),
        cell_once=once,
        stock_limit=stock_limit,
        stock_contended=stock_wanted > stock_limit,
        cell_capacity_row=cell_capacity_row.astype(np.int64),
        capacity_limit=capacity_limit,
        capacity_contended=(capacity_wanted > capacity_limit)
        & (capacity_limit < UNLIMITED_CAPACITY // 2),
    )


def _once_per_position(cat: Catalogue, cell_order: IntArray, cell_stock_row: IntArray) -> IntArray:
    """Each cell's upper bound, counted once per (order, stock row): other services' cells get 0."""
    key = cell_order * (int(cell_stock_row.max(initial=0)) + 1) + cell_stock_row
    _, first = np.unique(key, return_index=True)
    weights = np.zeros(cell_order.size, dtype=np.int64)
    weights[first] = cat.cell_upper[first]
    return weights


def _csr(groups: IntArray, members: IntArray, n_groups: int) -> tuple[IntArray, IntArray]:
    """(start, members sorted by group) for rows ``groups`` of ``members``."""
    order = np.argsort(groups, kind="stable")
    counts = np.bincount(groups, minlength=n_groups)
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64), members[order]


@dataclass(frozen=True, eq=False)
class Share:
    """A chunk's limits on some shared rows: ``rows`` (sorted row ids) and their ``values``."""

    rows: IntArray
    values: IntArray


def build_problem(
    key: int,
    round_: int,
    chunked: bool,
    orders: IntArray,
    cat: Catalogue,
    limits: Limits,
    units: IntArray,
    settings: BatchSettings,
    shares: tuple[Share, Share] | None = None,
) -> Problem:
    """The sub-problem of ``orders`` (sorted).

    Shared rows keep the instance's limits, except those in ``shares`` (a
    chunk's share of the contended stock and capacity rows).
    """
    slots = np.concatenate(
        [np.arange(cat.slot_start[o], cat.slot_start[o + 1]) for o in orders.tolist()]
    ).astype(np.int64)
    cells = np.concatenate(
        [np.arange(cat.cell_start[o], cat.cell_start[o + 1]) for o in orders.tolist()]
    ).astype(np.int64)
    local_slot = np.full(cat.slot_order.size, -1, dtype=np.int64)
    local_slot[slots] = np.arange(slots.size)
    local_order = np.searchsorted(orders, cat.slot_order[slots])
    cell_slot = local_slot[cat.cell_slot[cells]]
    cell_upper = cat.cell_upper[cells].copy()
    # Demand rows: (local order, SKU), one per distinct pair.
    cell_order = local_order[cell_slot]
    row_key = cell_order * (int(cat.cell_sku.max()) + 1) + cat.cell_sku[cells]
    row_ids, cell_row = np.unique(row_key, return_inverse=True)
    demand_start, demand_cell = _csr(cell_row, np.arange(cells.size), row_ids.size)
    dem_rows = np.concatenate(
        [
            np.arange(
                np.searchsorted(cat.demand_order, o), np.searchsorted(cat.demand_order, o, "right")
            )
            for o in orders.tolist()
        ]
    ).astype(np.int64)
    dem_key = (
        np.searchsorted(orders, cat.demand_order[dem_rows]) * (int(cat.cell_sku.max()) + 1)
        + cat.demand_sku[dem_rows]
    )
    qty_by_key = dict(zip(dem_key.tolist(), cat.demand_qty[dem_rows].tolist(), strict=True))
    demand_qty = np.array([qty_by_key[k] for k in row_ids.tolist()], dtype=np.int64)
    # Shared rows that could bind inside this sub-problem.
    limit_groups: list[IntArray] = []
    limit_values: list[int] = []
    for rows, limit, share in (
        (limits.cell_stock_row[cells], limits.stock_limit, shares[0] if shares else None),
        (limits.cell_capacity_row[cells], limits.capacity_limit, shares[1] if shares else None),
    ):
        ids, inverse = np.unique(rows, return_inverse=True)
        most = np.bincount(inverse, weights=cell_upper, minlength=ids.size)
        values = limit[ids].copy()
        if share is not None and share.rows.size:
            at = np.searchsorted(share.rows, ids)
            hit = (at < share.rows.size) & (share.rows[np.minimum(at, share.rows.size - 1)] == ids)
            values[hit] = share.values[at[hit]]
        np.minimum(cell_upper, values[inverse], out=cell_upper)
        binding = np.flatnonzero(most > values)
        if binding.size == 0:
            continue
        member = np.isin(inverse, binding)
        start, grouped = _csr(
            np.searchsorted(binding, inverse[member]), np.flatnonzero(member), binding.size
        )
        for r in range(binding.size):
            limit_groups.append(grouped[start[r] : start[r + 1]])
        limit_values.extend(values[binding].tolist())
    limit_start = np.concatenate(([0], np.cumsum([g.size for g in limit_groups]))).astype(np.int64)
    limit_cell = (
        np.concatenate(limit_groups).astype(np.int64)
        if limit_groups
        else np.zeros(0, dtype=np.int64)
    )
    current_units = units[cells].copy()
    carried = np.bincount(cell_slot, weights=current_units, minlength=slots.size)
    return Problem(
        key=key,
        round=round_,
        chunked=chunked,
        orders=orders,
        slot_order=local_order.astype(np.int64),
        slot_node=cat.slot_node[slots],
        slot_fixed=cat.slot_fixed[slots],
        cell_slot=cell_slot,
        cell_sku=cat.cell_sku[cells],
        cell_unit=cat.cell_unit[cells],
        cell_upper=cell_upper,
        demand_start=demand_start,
        demand_cell=demand_cell.astype(np.int64),
        demand_qty=demand_qty,
        limit_start=limit_start,
        limit_cell=limit_cell,
        limit_value=np.array(limit_values, dtype=np.int64),
        current_units=current_units,
        current_open=carried > 0,
        time_limit_s=settings.time_limit_s,
        num_workers=settings.num_workers,
        backend=settings.backend,
        mip_gap=settings.mip_gap,
        work_limit=settings.work_limit,
    )
