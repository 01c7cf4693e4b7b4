"""Every order's candidate parcels (slots) and (slot, SKU) cells: the batch model's columns.

Per order, the nodes that can meet its promise, pruned to the cheapest per
SKU and for the whole order plus the nodes of its current allocation; per
node the services not dearer in every respect than another (the package
docstring). Built in blocks on the runner. :func:`order_allocation` and
:func:`order_cost` read an order's cells back as a plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from sourcing.batch.instance import BatchInstance, BatchOrder, BatchSettings
from sourcing.batch.runners import Runner
from sourcing.costs import order_costs
from sourcing.evaluate import evaluate
from sourcing.model import Allocation, Evaluation, IntArray, Network, ParcelPlan
from sourcing.orders import lines_by_sku, spread_over_lines


@dataclass(frozen=True, eq=False)
class Catalogue:
    """Every order's candidate slots and cells, flat and sorted by order (CSR by order).

    Slots of one order are sorted by node, so slots of one (order, node) are adjacent.
    """

    slot_start: IntArray  # O + 1
    slot_order: IntArray
    slot_node: IntArray
    slot_service: IntArray
    slot_fixed: IntArray
    cell_start: IntArray  # O + 1
    cell_slot: IntArray  # global slot index
    cell_sku: IntArray
    cell_unit: IntArray
    cell_upper: IntArray
    demand_order: IntArray
    demand_sku: IntArray
    demand_qty: IntArray
    order_units: IntArray  # O: units each order ships
    order_bucket: IntArray  # O
    before: tuple[Evaluation, ...]
    pruned: int  # candidate nodes dropped by pruning, over all orders


def _order_rows(
    network: Network, pool: IntArray, batch_order: BatchOrder, settings: BatchSettings
) -> tuple[dict[str, IntArray], IntArray, Evaluation, int]:
    """Candidate slots and cells of one order, its current units per cell, its evaluation,
    and how many nodes that could serve it were pruned from its candidates."""
    order = batch_order.order
    before = evaluate(network, order, batch_order.current, allow_partial=True)
    if not before.is_feasible:
        raise ValueError(
            f"order {batch_order.order_id}: current allocation is infeasible on the pool: "
            + "; ".join(before.violations)
        )
    if before.delivery_days > batch_order.latest_day:
        raise ValueError(
            f"order {batch_order.order_id}: current allocation arrives on day "
            f"{before.delivery_days}, after its promise (day {batch_order.latest_day})"
        )
    current: dict[tuple[int, int, int], int] = {}  # (node, service, sku) -> units
    wanted: dict[int, int] = {}
    for parcel in batch_order.current.parcels:
        n = network.node_index[parcel.node_id]
        v = network.service_index[parcel.service]
        for line in parcel.lines:
            k = network.sku_index[line.sku]
            current[(n, v, k)] = current.get((n, v, k), 0) + line.qty
            wanted[k] = wanted.get(k, 0) + line.qty
    skus = np.array(sorted(wanted), dtype=np.int64)
    demand = np.array([wanted[k] for k in skus.tolist()], dtype=np.int64)
    empty: dict[str, IntArray] = {}
    if skus.size == 0:
        return empty, np.zeros(0, dtype=np.int64), before, 0
    dest = order.destination
    costs = order_costs(
        network, dest.lat, dest.lon, skus, demand, available=pool, opportunity=settings.opportunity
    )
    eligible = costs.usable & (costs.arrival <= batch_order.latest_day)
    # Cost-only dominance: with the promise enforced by eligibility, a service
    # that is no cheaper per parcel and per unit than another eligible one is
    # never needed (ties keep the lower index).
    n_services = eligible.shape[1]
    keep = eligible.copy()
    for b in range(n_services):
        for a in range(n_services):
            if a == b:
                continue
            no_dearer = (
                eligible[:, a]
                & (costs.fixed[:, a] <= costs.fixed[:, b])
                & np.all(costs.unit[:, a, :] <= costs.unit[:, b, :], axis=1)
            )
            strictly = (costs.fixed[:, a] < costs.fixed[:, b]) | np.any(
                costs.unit[:, a, :] < costs.unit[:, b, :], axis=1
            )
            keep[:, b] &= ~(no_dearer & (strictly | (a < b)))
    # The current parcels stay candidates whatever the pruning says.
    position = {int(n): c for c, n in enumerate(costs.nodes.tolist())}
    column = {int(v): j for j, v in enumerate(costs.services.tolist())}
    for n, v, _ in current:
        keep[position[n], column[v]] = True
    avail = costs.available  # C x K, clipped to the demand
    has_slot = keep.any(axis=1)
    big = np.iinfo(np.int64).max // 4
    # Per-unit price of each SKU from each node alone (its cheapest kept service).
    qty = np.maximum(avail, 1)
    per_unit = np.where(
        keep[:, :, None] & (avail[:, None, :] > 0),
        (costs.fixed[:, :, None] + costs.unit * avail[:, None, :]) / qty[:, None, :],
        np.inf,
    ).min(axis=1)  # C x K
    chosen = np.zeros(len(costs.nodes), dtype=np.bool_)
    for n, _, _ in current:
        chosen[position[n]] = True
    if settings.candidates_per_sku is None:
        chosen |= has_slot
    else:
        top = settings.candidates_per_sku
        ranked = np.argsort(per_unit, axis=0, kind="stable")[:top]  # top x K
        finite = np.isfinite(np.take_along_axis(per_unit, ranked, axis=0))
        chosen[ranked[finite]] = True
    covers = np.all(avail >= demand[None, :], axis=1) & has_slot
    if settings.whole_order_candidates is None:
        chosen |= covers
    elif settings.whole_order_candidates > 0 and covers.any():
        whole = np.where(keep & covers[:, None], costs.fixed + costs.unit @ demand, big).min(axis=1)
        ranked_whole = np.argsort(whole, kind="stable")[: settings.whole_order_candidates]
        chosen[ranked_whole[whole[ranked_whole] < big]] = True
    chosen &= has_slot
    pruned = int(np.count_nonzero(has_slot & ~chosen))
    rows_c, rows_v = np.nonzero(keep & chosen[:, None])
    # Slots sorted by network node (then service): one (order, node)'s slots are adjacent.
    by_node = np.lexsort((rows_v, costs.nodes[rows_c]))
    rows_c, rows_v = rows_c[by_node], rows_v[by_node]
    cell_slot, cell_k = np.nonzero(avail[rows_c] > 0)
    cell_c, cell_v = rows_c[cell_slot], rows_v[cell_slot]
    nodes = costs.nodes[rows_c]
    current_units = np.array(
        [
            current.get((int(costs.nodes[c]), int(costs.services[v]), int(skus[k])), 0)
            for c, v, k in zip(cell_c.tolist(), cell_v.tolist(), cell_k.tolist(), strict=True)
        ],
        dtype=np.int64,
    )
    rows = {
        "slot_node": nodes.astype(np.int64),
        "slot_service": costs.services[rows_v].astype(np.int64),
        "slot_fixed": costs.fixed[rows_c, rows_v].astype(np.int64),
        "cell_slot": cell_slot.astype(np.int64),
        "cell_sku": skus[cell_k],
        "cell_unit": costs.unit[cell_c, cell_v, cell_k].astype(np.int64),
        "cell_upper": avail[cell_c, cell_k].astype(np.int64),
        "demand_sku": skus,
        "demand_qty": demand,
    }
    if int(current_units.sum()) != int(demand.sum()):
        raise AssertionError(f"order {batch_order.order_id}: current units not all candidates")
    return rows, current_units, before, pruned


#: Orders per catalogue task (the per-order preparation runs on the runner too).
_CATALOGUE_BLOCK: Final = 4000


_ROW_NAMES: Final = (
    "slot_node", "slot_service", "slot_fixed", "cell_slot", "cell_sku", "cell_unit",
    "cell_upper", "demand_sku", "demand_qty",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class _Block:
    """Rows of a run of consecutive orders (``first`` onwards), order-local, flattened."""

    first: int
    rows: dict[str, IntArray]
    slot_counts: IntArray
    cell_counts: IntArray
    demand_counts: IntArray
    current: IntArray
    before: tuple[Evaluation, ...]
    pruned: int


def _catalogue_block(
    task: tuple[Network, int, tuple[BatchOrder, ...], BatchSettings],
) -> _Block:
    """A pure task: the candidate rows of a run of orders (see :func:`_order_rows`)."""
    network, first, orders, settings = task
    pool = network.available
    parts: dict[str, list[IntArray]] = {name: [] for name in _ROW_NAMES}
    counts: list[tuple[int, int, int]] = []
    currents: list[IntArray] = []
    befores: list[Evaluation] = []
    pruned = 0
    for batch_order in orders:
        rows, current, before, pruned_here = _order_rows(network, pool, batch_order, settings)
        pruned += pruned_here
        befores.append(before)
        currents.append(current)
        if not rows:
            counts.append((0, 0, 0))
            continue
        counts.append((rows["slot_node"].size, rows["cell_slot"].size, rows["demand_sku"].size))
        for name in _ROW_NAMES:
            parts[name].append(rows[name])
    empty = np.zeros(0, dtype=np.int64)
    slot_counts, cell_counts, demand_counts = (
        np.array(c, dtype=np.int64).reshape(-1) for c in zip(*counts, strict=True)
    ) if counts else (empty, empty, empty)  # fmt: skip
    return _Block(
        first=first,
        rows={n: np.concatenate(v) if v else empty for n, v in parts.items()},
        slot_counts=slot_counts,
        cell_counts=cell_counts,
        demand_counts=demand_counts,
        current=np.concatenate(currents) if currents else empty,
        before=tuple(befores),
        pruned=pruned,
    )


def build_catalogue(
    instance: BatchInstance, settings: BatchSettings, runner: Runner
) -> tuple[Catalogue, IntArray]:
    """Every order's rows, flattened in order; and the current units per cell (the warm start)."""
    tasks = [
        (instance.network, first, instance.orders[first : first + _CATALOGUE_BLOCK], settings)
        for first in range(0, len(instance.orders), _CATALOGUE_BLOCK)
    ]
    blocks = sorted(runner.map_unordered(_catalogue_block, tasks), key=lambda b: b.first)
    empty = np.zeros(0, dtype=np.int64)

    def joined(arrays: list[IntArray]) -> IntArray:
        return np.concatenate(arrays).astype(np.int64) if arrays else empty

    slot_counts = joined([b.slot_counts for b in blocks])
    cell_counts = joined([b.cell_counts for b in blocks])
    demand_counts = joined([b.demand_counts for b in blocks])
    rows = {name: joined([b.rows[name] for b in blocks]) for name in _ROW_NAMES}
    slot_start = np.concatenate(([0], np.cumsum(slot_counts))).astype(np.int64)
    cell_start = np.concatenate(([0], np.cumsum(cell_counts))).astype(np.int64)
    order_ids = np.arange(slot_counts.size, dtype=np.int64)
    # Cells name their order's slots locally: shift them to the global slot numbering.
    cell_slot = rows["cell_slot"] + np.repeat(slot_start[:-1], cell_counts)
    catalogue = Catalogue(
        slot_start=slot_start,
        slot_order=np.repeat(order_ids, slot_counts),
        slot_node=rows["slot_node"],
        slot_service=rows["slot_service"],
        slot_fixed=rows["slot_fixed"],
        cell_start=cell_start,
        cell_slot=cell_slot,
        cell_sku=rows["cell_sku"],
        cell_unit=rows["cell_unit"],
        cell_upper=rows["cell_upper"],
        demand_order=np.repeat(order_ids, demand_counts),
        demand_sku=rows["demand_sku"],
        demand_qty=rows["demand_qty"],
        order_units=np.bincount(
            np.repeat(order_ids, demand_counts),
            weights=rows["demand_qty"],
            minlength=order_ids.size,
        ).astype(np.int64),
        order_bucket=np.array([o.capacity_bucket for o in instance.orders], dtype=np.int64),
        before=tuple(e for b in blocks for e in b.before),
        pruned=sum(b.pruned for b in blocks),
    )
    return catalogue, joined([b.current for b in blocks])


def order_cost(cat: Catalogue, cells: IntArray, values: IntArray) -> int:
    opened = np.unique(cat.cell_slot[cells][values > 0])
    return int(cat.slot_fixed[opened].sum() + (cat.cell_unit[cells] * values).sum())


def order_allocation(
    instance: BatchInstance, cat: Catalogue, o: int, units: IntArray
) -> Allocation:
    """Order ``o``'s plan: one parcel per open slot, each SKU's units spread over its lines."""
    network = instance.network
    batch_order = instance.orders[o]
    cells = np.arange(cat.cell_start[o], cat.cell_start[o + 1])
    # What each line covers now: the new plan covers the same.
    remaining: dict[int, int] = {}
    for parcel in batch_order.current.parcels:
        for line in parcel.lines:
            remaining[line.line] = remaining.get(line.line, 0) + line.qty
    lines_of_sku = lines_by_sku(network, batch_order.order)
    parcels: list[ParcelPlan] = []
    used = cells[units[cells] > 0]
    for slot in np.unique(cat.cell_slot[used]).tolist():
        cells_of_slot = used[cat.cell_slot[used] == slot].tolist()
        contents = spread_over_lines(
            batch_order.order,
            lines_of_sku,
            remaining,
            ((int(cat.cell_sku[c]), int(units[c])) for c in cells_of_slot),
        )
        parcels.append(
            ParcelPlan(
                network.node_ids[int(cat.slot_node[slot])],
                network.service_ids[int(cat.slot_service[slot])],
                contents,
            )
        )
    return Allocation(tuple(parcels))
