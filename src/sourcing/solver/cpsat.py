"""Stage 4: the CP-SAT model of what the bounds could not close.

The package docstring's model on the surviving slots and parcel counts,
hinted with the best plan and given the bound; least cost, then fewest
parcels.
"""

from __future__ import annotations

import math
import time

import numpy as np
from ortools.sat.python import cp_model

from sourcing.solver.context import INF, Context, Plan, plan_from


def solve_cpsat(
    ctx: Context,
    elig: np.ndarray,
    min_parcels: int,
    max_parcels: int,
    lower_bound: int,
    upper: int,
    hint: Plan | None,
    time_limit: float | None = None,
    arriving: int | None = None,
) -> tuple[Plan | None, int, bool]:
    """CP-SAT over the eligible slots: least (cost, parcels), min..max parcels, cost <= upper;
    with ``arriving`` (a day), only plans with a parcel arriving then.

    It runs until the quote's deadline, or for ``time_limit`` seconds if that is sooner.
    Returns the best plan found (or None), the proven lower bound on cost,
    and whether the search was complete (optimal or proven infeasible).
    """
    costs, demand = ctx.costs, ctx.demand
    ctx.stats["cpsat"] += 1
    model = cp_model.CpModel()
    slot_n, slot_v = np.nonzero(elig)
    ys = [
        model.new_bool_var(f"y{n}_{v}")
        for n, v in zip(slot_n.tolist(), slot_v.tolist(), strict=True)
    ]
    per_node: dict[int, list[int]] = {}
    for s, n in enumerate(slot_n.tolist()):
        per_node.setdefault(n, []).append(s)
    by_sku: list[list[cp_model.IntVar]] = [[] for _ in range(demand.size)]
    cost_vars: list[cp_model.IntVar] = []
    cost_coefs: list[int] = []
    x_index: list[tuple[int, int, cp_model.IntVar]] = []
    avail = costs.available
    for n, slots in per_node.items():
        node_x: list[cp_model.IntVar] = []
        stock_groups: dict[int, list[cp_model.IntVar]] = {}
        for s in slots:
            v = int(slot_v[s])
            slot_x: list[cp_model.IntVar] = []
            for k in np.flatnonzero(avail[n] > 0).tolist():
                a = int(avail[n, k])
                x = model.new_int_var(0, a, f"x{n}_{v}_{k}")
                model.add(x <= a * ys[s])
                by_sku[k].append(x)
                slot_x.append(x)
                stock_groups.setdefault(k, []).append(x)
                cost_vars.append(x)
                cost_coefs.append(int(costs.unit[n, v, k]))
                x_index.append((s, k, x))
            model.add(sum(slot_x) >= ys[s])
            node_x.extend(slot_x)
        if len(slots) > 1:
            model.add_at_most_one(ys[s] for s in slots)
            for k, xs in stock_groups.items():
                model.add(sum(xs) <= int(avail[n, k]))
        if costs.capacity[n] < avail[n].sum():
            model.add(sum(node_x) <= int(costs.capacity[n]))
    for k, xs in enumerate(by_sku):
        model.add(sum(xs) == int(demand[k]))
    if arriving is not None:
        on_day = np.flatnonzero(costs.arrival[slot_n, slot_v] == arriving)
        if on_day.size == 0:
            return None, upper, True
        model.add_bool_or([ys[s] for s in on_day.tolist()])
    parcels = sum(ys)
    model.add(parcels >= min_parcels)
    model.add(parcels <= max_parcels)
    cost = cp_model.LinearExpr.weighted_sum(
        [*cost_vars, *ys], [*cost_coefs, *costs.fixed[slot_n, slot_v].tolist()]
    )
    model.add(cost >= lower_bound)
    if upper < INF:
        model.add(cost <= upper)
    # Least cost first, then fewest parcels: the parcel count breaks cost ties exactly.
    weight = max_parcels + 1
    model.minimize(cost * weight + parcels)
    if hint is not None and min_parcels <= hint.parcels <= max_parcels:
        for s, (n, v) in enumerate(zip(slot_n.tolist(), slot_v.tolist(), strict=True)):
            model.add_hint(ys[s], int(hint.service[n] == v))
        for s, k, x in x_index:
            n, v = int(slot_n[s]), int(slot_v[s])
            model.add_hint(x, int(hint.units[n, k]) if hint.service[n] == v else 0)

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = ctx.settings.num_workers
    # These models are small and already reduced by the bounds; CP-SAT's
    # presolve cost more than it saved (about 2x on 10-line carts), and the
    # stronger LP with probing off was measured best of a handful of settings.
    solver.parameters.cp_model_presolve = False
    solver.parameters.linearization_level = 2
    solver.parameters.cp_model_probing_level = 0
    if ctx.settings.work_limit is not None:
        # Replays: CP-SAT's deterministic time, so the search does not depend on the machine.
        solver.parameters.max_deterministic_time = ctx.settings.time_limit_s
        solver.parameters.random_seed = 0
    else:
        left = ctx.deadline - time.perf_counter()
        if time_limit is not None:
            left = min(left, time_limit)
        solver.parameters.max_time_in_seconds = max(0.001, left)
    status = solver.solve(model)
    if status == cp_model.INFEASIBLE:
        return None, upper, True
    # The bound is on cost * weight + parcels; an unknown status may leave it infinite.
    proven_bound = lower_bound
    if np.isfinite(solver.best_objective_bound):
        proven_bound = max(lower_bound, math.floor(solver.best_objective_bound) // weight)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, proven_bound, False
    service = np.full(len(costs.nodes), -1, dtype=np.int64)
    units = np.zeros_like(avail)
    for s, (n, v) in enumerate(zip(slot_n.tolist(), slot_v.tolist(), strict=True)):
        if solver.boolean_value(ys[s]):
            service[n] = v
    for s, k, x in x_index:
        value = solver.value(x)
        if value:
            units[int(slot_n[s]), k] += value
    plan = plan_from(costs, service, units)
    optimal = status == cp_model.OPTIMAL
    return plan, plan.cost if optimal else proven_bound, optimal
