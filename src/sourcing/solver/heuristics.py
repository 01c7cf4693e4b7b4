"""Warm starts that tighten the best plan, so the bounds prune more (stage 3's heuristics).

Not proofs: a greedy plan when no one-parcel plan exists, a drop heuristic
from the Lagrangian relaxation's open nodes, and an add/drop/swap local
search. Each neighbour is priced with :func:`~sourcing.solver.enumeration.split`.
"""

from __future__ import annotations

import numpy as np

from sourcing.model import IntArray
from sourcing.solver.context import CHUNK_CELLS, INF, Context, Plan, plan_from
from sourcing.solver.enumeration import capacitated_split, split, subset_plan


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
    ctx: Context, elig: np.ndarray, plan: Plan, max_parcels: int, rounds: int = 8
) -> Plan:
    """Improve a plan by the best of: add a parcel, drop one, or swap one for another.

    Every neighbour is priced at once with :func:`split` (cheapest units
    first); the best improving one is taken until none improves. A warm start
    for the exact stages, so a tighter upper bound prunes more.
    """
    costs, demand = ctx.costs, ctx.demand
    slot_n, slot_v = np.nonzero(elig)
    current = plan
    for _ in range(rounds):
        if ctx.out_of_time():
            break
        used = np.flatnonzero(current.service >= 0)
        used_v = current.service[used]
        outside = ~np.isin(slot_n, used)
        add_n, add_v = slot_n[outside], slot_v[outside]
        m = used.size
        neighbours: list[tuple[IntArray, IntArray]] = []
        if add_n.size:
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
            if add_n.size:
                swap_n = np.column_stack([np.repeat(drop_n, add_n.size, axis=0), np.tile(add_n, m)])
                swap_v = np.column_stack([np.repeat(drop_v, add_n.size, axis=0), np.tile(add_v, m)])
                neighbours.append((swap_n, swap_v))
        best_cost, best_pick = current.cost, None
        for nodes, services in neighbours:
            if nodes.shape[1] > max_parcels or nodes.size * demand.size > CHUNK_CELLS:
                continue
            covers = np.all(costs.available[nodes].sum(axis=1) >= demand, axis=1)
            if not covers.any():
                continue
            nodes, services = nodes[covers], services[covers]
            total, units, _, within_cap = split(ctx, nodes, services)
            total = np.where(within_cap, total, INF)
            i = int(np.argmin(total))
            if total[i] < best_cost:
                best_cost, best_pick = int(total[i]), (nodes[i], services[i], units[i])
        if best_pick is None:
            break
        current = subset_plan(ctx, *best_pick)
    return current


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
