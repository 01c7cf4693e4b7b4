"""Warm starts that tighten the best plan, so the bounds prune more (stage 3's heuristics).

Not proofs: a greedy plan when no one-parcel plan exists, a drop heuristic
from the Lagrangian relaxation's open nodes, and an add/drop/swap local
search. Each neighbour is priced with :func:`~sourcing.solver.enumeration.split`.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from sourcing.model import IntArray
from sourcing.solver.context import (
    CHUNK_CELLS,
    DEADLINE_CELLS,
    INF,
    Context,
    Plan,
    lexmin,
    plan_from,
)
from sourcing.solver.enumeration import capacitated_split, split, subset_plan
from sourcing.solver.lagrangian import Bound

#: Local search: rounds (one move each) at most, and the slots outside the plan it tries
#: to add or swap in per round.
LOCAL_ROUNDS: Final = 8
LOCAL_CANDIDATES: Final = 48
#: Parcel counts :func:`relaxation_plan` starts from.
RELAX_COUNTS: Final = 8


def greedy_plan(
    ctx: Context, elig: np.ndarray, unit_min: np.ndarray, max_parcels: int
) -> Plan | None:
    """A feasible plan to start from when no one- or two-parcel plan exists.

    Per SKU, units come from the nodes with the cheapest unit cost first (the
    transport bound's assignment); each opened node then ships by the service
    that is cheapest for what it carries. Not optimal, only a warm start.
    """
    costs, demand = ctx.costs, ctx.demand
    order = np.argsort(unit_min, axis=0, kind="stable")
    a = np.take_along_axis(costs.available, order, axis=0)
    a = np.where(np.isfinite(np.take_along_axis(unit_min, order, axis=0)), a, 0)
    before = np.cumsum(a, axis=0) - a
    take = np.clip(demand[None, :] - before, 0, a)
    units = np.zeros_like(costs.available)
    np.put_along_axis(units, order, take, axis=0)
    used = units.sum(axis=1) > 0
    if used.sum() > max_parcels or np.any(units.sum(axis=1) > costs.capacity):
        return None
    total = costs.fixed + np.einsum("cvk,ck->cv", costs.unit, units)
    service = np.where(used, np.argmin(np.where(elig, total, INF), axis=1), -1).astype(np.int64)
    return plan_from(costs, service, units)


def local_search(
    ctx: Context,
    elig: np.ndarray,
    plan: Plan,
    max_parcels: int,
    rounds: int = LOCAL_ROUNDS,
    candidates: int = LOCAL_CANDIDATES,
) -> Plan:
    """Improve a plan by the best of: add a parcel, drop one, or swap one for another.

    Every slot outside the plan is tried as an added (or swapped-in) parcel while a
    round's swaps take at most :data:`CHUNK_CELLS` cells; beyond that (hundreds of slots,
    50-SKU carts), the ``candidates`` slots with the least Lagrangian term at the last
    prices (:func:`_slot_terms`), where all of them would take 25-30 ms a round on
    fragmented 50x500 carts (such rounds were skipped before). Neighbours that cannot
    cover the demand are left out before pricing, and the rest are priced with
    :func:`split` (cheapest units first) :data:`DEADLINE_CELLS` cells at a time, the
    deadline checked between slices. The best improving one is taken until none
    improves. A warm start for the exact stages, so a tighter upper bound prunes more.
    """
    costs, demand = ctx.costs, ctx.demand
    slot_n, slot_v = np.nonzero(elig)
    terms = _slot_terms(ctx, plan)[slot_n, slot_v]
    current = plan
    for _ in range(rounds):
        if ctx.out_of_time():
            break
        used = np.flatnonzero(current.service >= 0)
        used_v = current.service[used]
        outside = np.flatnonzero(~np.isin(slot_n, used))
        m = used.size
        whole = m * outside.size * max(m, 1) * demand.size  # the swaps' cells, all slots
        if whole > CHUNK_CELLS and outside.size > candidates:
            outside = outside[np.argpartition(terms[outside], candidates - 1)[:candidates]]
        add_n, add_v = slot_n[outside], slot_v[outside]
        neighbours: list[tuple[IntArray, IntArray]] = []
        if add_n.size and m < max_parcels:
            neighbours.append(
                (
                    np.column_stack([np.broadcast_to(used, (add_n.size, m)), add_n]),
                    np.column_stack([np.broadcast_to(used_v, (add_n.size, m)), add_v]),
                )
            )
        if m > 1:
            keep = ~np.eye(m, dtype=bool)
            drop_n = np.broadcast_to(used, (m, m))[keep].reshape(m, m - 1)
            drop_v = np.broadcast_to(used_v, (m, m))[keep].reshape(m, m - 1)
            neighbours.append((drop_n, drop_v))
            if add_n.size:  # a swap: the plan less one parcel, plus one from outside
                swap_n = np.column_stack([np.repeat(drop_n, add_n.size, axis=0), np.tile(add_n, m)])
                swap_v = np.column_stack([np.repeat(drop_v, add_n.size, axis=0), np.tile(add_v, m)])
                neighbours.append((swap_n, swap_v))
        best_cost, best_pick = current.cost, None
        for nodes, services in neighbours:
            covers = np.all(costs.available[nodes].sum(axis=1) >= demand, axis=1)
            nodes, services = nodes[covers], services[covers]
            per_slice = max(1, DEADLINE_CELLS // max(nodes.shape[1] * demand.size, 1))
            for lo in range(0, nodes.shape[0], per_slice):
                if ctx.out_of_time():
                    break
                ctx.stats["cells"] = ctx.stats.get("cells", 0) + (
                    min(per_slice, nodes.shape[0] - lo) * nodes.shape[1] * demand.size
                )
                chunk_n, chunk_v = nodes[lo : lo + per_slice], services[lo : lo + per_slice]
                total, units, _, within_cap = split(ctx, chunk_n, chunk_v)
                total = np.where(within_cap, total, INF)
                i = int(np.argmin(total))
                if total[i] < best_cost:
                    best_cost, best_pick = int(total[i]), (chunk_n[i], chunk_v[i], units[i])
        if best_pick is None:
            break
        current = subset_plan(ctx, *best_pick)
    return current


def _slot_terms(ctx: Context, plan: Plan) -> np.ndarray:
    """C x V: each slot's Lagrangian term at the last prices (the plan's dearest unit per SKU
    without prices): its parcel plus what its stock, up to the demand, saves at them."""
    costs, demand = ctx.costs, ctx.demand
    prices = ctx.prices
    if prices is None or prices.shape != demand.shape:
        nodes, services = plan.slots
        dearest = np.where(plan.units[nodes] > 0, costs.unit[nodes, services], -np.inf)
        prices = dearest.max(axis=0) if nodes.size else np.zeros(demand.size)
        prices = np.where(np.isfinite(prices), prices, 0.0)
    useful = np.minimum(costs.available, demand[None, :]).astype(np.float64)
    saving = np.minimum(costs.unit - prices[None, None, :], 0.0)
    terms: np.ndarray = costs.fixed + np.einsum("cvk,ck->cv", saving, useful)
    return terms


def drop_heuristic(ctx: Context, nodes: IntArray, services: IntArray) -> Plan | None:
    """From a covering set of parcels, drop the parcel whose removal saves most, while any does."""
    costs, demand = ctx.costs, ctx.demand
    if not np.all(costs.available[nodes].sum(axis=0) >= demand):
        return None
    total, units, _, within_cap = split(ctx, nodes[None, :], services[None, :])
    if not within_cap[0]:
        return None
    current = int(total[0])
    # Each pass prices every one-parcel-fewer plan; out of time, the current plan stands.
    while nodes.size > 1 and not ctx.out_of_time():
        keep = ~np.eye(nodes.size, dtype=bool)
        cand_nodes = np.broadcast_to(nodes, keep.shape)[keep].reshape(nodes.size, -1)
        cand_services = np.broadcast_to(services, keep.shape)[keep].reshape(nodes.size, -1)
        covers = np.all(costs.available[cand_nodes].sum(axis=1) >= demand, axis=1)
        cand_total, cand_units, _, cand_cap = split(ctx, cand_nodes, cand_services)
        cand_total = np.where(covers & cand_cap, cand_total, INF)
        pick = int(np.argmin(cand_total))
        if cand_total[pick] >= current:
            break
        nodes, services, current = cand_nodes[pick], cand_services[pick], int(cand_total[pick])
        units = cand_units[pick : pick + 1]
    return subset_plan(ctx, nodes, services, units[0])


def relaxation_plan(
    ctx: Context,
    elig: np.ndarray,
    bound: Bound,
    max_parcels: int,
    counts: int = RELAX_COUNTS,
    least: int = 1,
) -> Plan | None:
    """The least of the plans :func:`repaired_plan` makes from the ``p`` nodes with the least
    Lagrangian terms at ``bound``'s prices, for ``p`` = ``least``..``counts`` (at most
    ``max_parcels`` parcels).

    One set of prices, many starts: the relaxation opens as many nodes as its parcel
    limits say, while the optimum's count is unknown; the repaired plans of several counts
    differ, and on fragmented 50-line carts their least was 3-14% above the optimum where
    the plans the earlier stages held were 13-50% above (about 5 ms of CPU).
    """
    if bound.slot_terms is None:
        return None
    terms = np.where(elig, bound.slot_terms, np.inf)
    node_terms = terms.min(axis=1)
    node_service = terms.argmin(axis=1)
    live = int(np.count_nonzero(np.isfinite(node_terms)))
    counts = min(counts, max_parcels, live)
    if counts <= 0:
        return None
    order = np.argpartition(node_terms, counts - 1)[:counts]
    order = order[np.argsort(node_terms[order], kind="stable")]
    best: Plan | None = None
    seen: set[bytes] = set()
    for p in range(max(least, 1), counts + 1):
        if ctx.out_of_time():
            break
        service = np.full(elig.shape[0], -1, dtype=np.int64)
        service[order[:p]] = node_service[order[:p]]
        plan = repaired_plan(ctx, elig, service)
        if plan is None or plan.parcels > max_parcels or plan.key() in seen:
            continue
        seen.add(plan.key())
        best = lexmin(best, plan)
    return best


def repaired_plan(ctx: Context, elig: np.ndarray, service: IntArray) -> Plan | None:
    """A plan from the parcels a Lagrangian relaxation opens (``service``, -1 closed): the
    SKUs they leave short covered greedily, then parcels dropped while that saves.

    The relaxation's open parcels are cheap at its prices but on fragmented stock miss a
    few SKUs (a random 6-node set of 500 holds all 50 SKUs about once in 500). Each step
    opens the slot in ``elig`` with the least cost per unit of shortfall it covers (its
    parcel plus those units, greedy set cover); then :func:`drop_heuristic`, or, where the
    cheapest-first split breaks a capacity, the exact split of the covering set.
    """
    costs, demand = ctx.costs, ctx.demand
    service = service.copy()
    opened = service >= 0
    usable = elig.any(axis=1)
    fixed = np.where(elig, costs.fixed, INF)
    while True:
        short = np.maximum(demand - costs.available[opened].sum(axis=0), 0)
        wanted = np.flatnonzero(short)
        if not wanted.size:
            break
        # Only the usable nodes outside the plan that hold something short can help.
        rows = np.flatnonzero(usable & ~opened & (costs.available[:, wanted] > 0).any(axis=1))
        if not rows.size:
            return None  # the slots left cannot cover the demand
        take = np.minimum(costs.available[rows][:, wanted], short[wanted])
        price = fixed[rows] + np.einsum("rvk,rk->rv", costs.unit[rows][:, :, wanted], take)
        per_unit = price / take.sum(axis=1)[:, None]
        r, v = divmod(int(np.argmin(per_unit)), price.shape[1])
        service[rows[r]], opened[rows[r]] = v, True
    nodes = np.flatnonzero(opened)
    key = nodes.tobytes() + service[nodes].tobytes()
    if key in ctx.repairs:  # the same cover from another count or an earlier bound
        return ctx.repairs[key]
    plan = drop_heuristic(ctx, nodes, service[nodes])
    if plan is None:
        resplit = capacitated_split(ctx, nodes, service[nodes])
        plan = None if resplit is None else subset_plan(ctx, nodes, service[nodes], resplit[1])
    ctx.repairs[key] = plan
    return plan


def cover_plan(ctx: Context, elig: np.ndarray, max_parcels: int) -> Plan | None:
    """A feasible plan by greedy set cover, capacity-aware: a warm start where others fail.

    Repeatedly opens the node whose cheapest eligible parcel costs least per
    unit it can still carry (its stock of what is short, up to its capacity),
    then splits the demand over the opened parcels exactly (a min-cost flow).
    Not optimal, only a start for the local search and the bounds.
    """
    costs, demand = ctx.costs, ctx.demand
    fixed = np.where(elig, costs.fixed, INF)
    cheapest_service = fixed.argmin(axis=1)
    node_fixed = fixed.min(axis=1).astype(np.float64)
    open_ok = node_fixed < INF
    remaining = demand.copy()
    capacity = costs.capacity.copy()
    chosen: list[int] = []
    while remaining.sum() > 0 and len(chosen) < max_parcels:
        gain = np.minimum(np.minimum(costs.available, remaining).sum(axis=1), capacity)
        gain = np.where(open_ok, gain, 0)
        if gain.max() <= 0:
            return None
        n = int(np.argmin(np.where(gain > 0, node_fixed / np.maximum(gain, 1), np.inf)))
        chosen.append(n)
        open_ok[n] = False
        room = int(capacity[n])
        for k in np.flatnonzero(np.minimum(costs.available[n], remaining) > 0).tolist():
            take = min(int(costs.available[n, k]), int(remaining[k]), room)
            remaining[k] -= take
            room -= take
    if remaining.sum() > 0:
        return None
    nodes = np.array(chosen, dtype=np.int64)
    services = cheapest_service[nodes].astype(np.int64)
    resplit = capacitated_split(ctx, nodes, services)
    if resplit is None:
        return None
    return subset_plan(ctx, nodes, services, resplit[1])
