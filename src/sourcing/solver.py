"""Exact delivery options for one order: the Pareto set and its labels.

Model (DESIGN section 3), on the arrays of :class:`~sourcing.costs.OrderCosts`:

* data: K distinct SKUs with demand ``Q[k]``; C candidate nodes with
  available units ``a[n, k]`` and capacity ``cap[n]``; per (node, service)
  a parcel's fixed cost ``F[n, v]`` (base price + handling), a cost per unit
  ``u[n, v, k]`` (per-kg price x weight - storage credit) and an arrival day
  ``eta[n, v]``;
* variables: ``x[n, v, k]`` integer units of SKU k shipped from node n by
  service v; ``y[n, v]`` binary, a parcel leaves n by v;
* constraints: ``sum_{n,v} x[n,v,k] == Q[k]``; ``sum_v x[n,v,k] <= a[n,k]``;
  ``x[n,v,k] <= a[n,k] * y[n,v]``; ``sum_v y[n,v] <= 1`` (one parcel per node);
  ``sum_{v,k} x[n,v,k] <= cap[n]``; ``y[n,v] <= sum_k x[n,v,k]`` (no empty
  parcel); and, per sub-problem ``P(D, p)``, ``y[n,v] = 0`` when
  ``eta[n,v] > D`` and ``sum y <= p``;
* objective: ``sum F y + sum u x`` (millicents, so CP-SAT is exact).

The options are the Pareto set over (cost, delivery day, parcels). They are
found by the epsilon-constraint method: ``P(D, p)`` is solved for every
candidate delivery day D (the distinct arrival days) and, below each
unconstrained optimum's parcel count, for every smaller parcel cap p. The
non-dominated results form the frontier; CHEAPEST, FASTEST, SINGLE_PARCEL
and BALANCED are read off it.

Each ``P(D, p)`` is first attacked with numpy (DESIGN section 8): dominated
services are dropped; every one-parcel plan and every two-parcel plan (with
its optimal split) is enumerated; a lower bound for plans with m parcels
(the m smallest fixed costs + the cheapest possible unit costs, ignoring
which nodes open) shows when no plan with more parcels can beat the best
enumerated one. That closes most carts without CP-SAT. Otherwise CP-SAT
solves the model above, restricted to nodes and parcel counts that the bound
leaves possible, hinted with the best known plan and told the lower bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from ortools.sat.python import cp_model

from sourcing.costs import OrderCosts, order_costs
from sourcing.errors import Shortage, ShortageError
from sourcing.evaluate import evaluate
from sourcing.model import (
    Allocation,
    IntArray,
    Label,
    Network,
    Option,
    Order,
    ParcelLine,
    ParcelPlan,
    Proof,
    Shortfall,
)
from sourcing.orders import validate_order

OPTIMAL: Final = "OPTIMAL"
FEASIBLE: Final = "FEASIBLE"
# Pair enumeration is skipped above this many (pair x SKU) cells (memory, time).
_MAX_PAIR_CELLS: Final = 4_000_000
_INF: Final = np.iinfo(np.int64).max // 4


@dataclass(frozen=True)
class QuoteSettings:
    """Knobs of one quote.

    ``value_of_day`` (millicents per day of delivery) prices time for
    BALANCED; ``max_parcels`` and ``latest_day`` cap every option;
    ``time_limit_s`` is the whole quote's solver budget (a timed-out
    sub-problem returns its best plan with the gap); ``num_workers`` is
    CP-SAT's thread count, set explicitly (DESIGN section 8).
    """

    value_of_day: int = 100_000
    allow_partial: bool = False
    max_parcels: int | None = None
    latest_day: int | None = None
    time_limit_s: float = 2.0
    num_workers: int = 1


@dataclass(frozen=True)
class QuoteStats:
    subproblems: int
    closed_by_bound: int
    cpsat_calls: int
    seconds: float


@dataclass(frozen=True)
class Quote:
    """The menu (labelled options), the whole frontier, and any shortfall."""

    options: tuple[Option, ...]
    frontier: tuple[Option, ...]
    shortfall: tuple[Shortfall, ...]
    stats: QuoteStats

    def option(self, label: Label) -> Option | None:
        return next((o for o in self.options if label in o.labels), None)


@dataclass(frozen=True, eq=False)
class _Plan:
    """An allocation in solver coordinates: service per candidate (-1 unused), units per SKU."""

    service: IntArray  # C
    units: IntArray  # C x K
    cost: int
    day: int
    parcels: int
    status: str = OPTIMAL
    gap: float = 0.0
    method: str = "bound+enumeration"

    def key(self) -> bytes:
        return self.service.tobytes() + self.units.tobytes()


def _plan_from(costs: OrderCosts, service: IntArray, units: IntArray, **proof: object) -> _Plan:
    used = np.flatnonzero(service >= 0)
    sv = service[used]
    cost = int(costs.fixed[used, sv].sum() + (costs.unit[used, sv, :] * units[used]).sum())
    day = int(costs.arrival[used, sv].max()) if used.size else 0
    return _Plan(service, units, cost, day, int(used.size), **proof)  # type: ignore[arg-type]


@dataclass
class _Context:
    costs: OrderCosts
    demand: IntArray
    settings: QuoteSettings
    deadline: float
    stats: dict[str, int] = field(default_factory=lambda: {"sub": 0, "bound": 0, "cpsat": 0})
    cache: dict[tuple[int, int], _Plan | None] = field(default_factory=dict)
    known: list[_Plan] = field(default_factory=list)


def _eligible(costs: OrderCosts, day: int) -> np.ndarray:
    """(node, service) pairs usable by ``day``, with dominated services removed.

    Service b of a node is dropped when another service a of the same node is
    no dearer per parcel, per unit of every SKU, and no slower (ties keep the
    lower index), so some optimal plan never needs b.
    """
    elig = costs.usable & (costs.arrival <= day)
    n_services = elig.shape[1]
    for b in range(n_services):
        for a in range(n_services):
            if a == b:
                continue
            not_worse = (
                elig[:, a]
                & (costs.fixed[:, a] <= costs.fixed[:, b])
                & (costs.arrival[:, a] <= costs.arrival[:, b])
                & np.all(costs.unit[:, a, :] <= costs.unit[:, b, :], axis=1)
            )
            strictly = (
                (costs.fixed[:, a] < costs.fixed[:, b])
                | (costs.arrival[:, a] < costs.arrival[:, b])
                | np.any(costs.unit[:, a, :] < costs.unit[:, b, :], axis=1)
            )
            elig[:, b] &= ~(not_worse & (strictly | (a < b)))
    return elig


def _transport_lower_bound(unit_min: np.ndarray, available: IntArray, demand: IntArray) -> int:
    """Least unit cost of covering the demand if every node could open: per SKU, cheapest first."""
    order = np.argsort(unit_min, axis=0, kind="stable")
    u = np.take_along_axis(unit_min, order, axis=0)
    a = np.take_along_axis(available, order, axis=0)
    before = np.cumsum(a, axis=0) - a
    take = np.clip(demand[None, :] - before, 0, a)
    take = np.where(np.isfinite(u), take, 0)
    return int(np.where(take > 0, take * np.where(np.isfinite(u), u, 0), 0).sum())


def _best_single(ctx: _Context, elig: np.ndarray) -> _Plan | None:
    costs, demand = ctx.costs, ctx.demand
    covers = np.all(costs.available >= demand[None, :], axis=1) & (costs.capacity >= demand.sum())
    ok = elig & covers[:, None]
    if not ok.any():
        return None
    total = costs.fixed + np.einsum("cvk,k->cv", costs.unit, demand)
    # Least cost, then earliest arrival: the later tie-break matters for FASTEST/CHEAPEST ties.
    score = np.where(ok, total, _INF)
    cands = np.argwhere(score == score.min())
    n, v = min(cands.tolist(), key=lambda nv: (int(costs.arrival[nv[0], nv[1]]), nv[0], nv[1]))
    service = np.full(len(costs.nodes), -1, dtype=np.int64)
    service[n] = v
    units = np.zeros_like(costs.available)
    units[n] = demand
    return _plan_from(costs, service, units, method="enumeration")


def _greedy_plan(ctx: _Context, elig: np.ndarray, unit_min: np.ndarray, max_parcels: int) -> _Plan | None:
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
    service = np.where(used, np.argmin(np.where(elig, total, _INF), axis=1), -1).astype(np.int64)
    return _plan_from(costs, service, units, status=FEASIBLE, gap=float("nan"), method="greedy")


def _best_pair(ctx: _Context, elig: np.ndarray, slots_ok: np.ndarray) -> tuple[_Plan | None, bool]:
    """Best plan with exactly two parcels among allowed slots, and whether the search was exact."""
    costs, demand = ctx.costs, ctx.demand
    sn, sv = np.nonzero(elig & slots_ok)
    if sn.size < 2:
        return None, True
    ii, jj = np.triu_indices(sn.size, 1)
    keep = sn[ii] != sn[jj]
    ii, jj = ii[keep], jj[keep]
    n_skus = demand.size
    if ii.size * n_skus > _MAX_PAIR_CELLS:
        return None, False
    ni, vi, nj, vj = sn[ii], sv[ii], sn[jj], sv[jj]
    ai, aj = costs.available[ni], costs.available[nj]
    feasible = np.all(ai + aj >= demand[None, :], axis=1)
    ni, vi, nj, vj, ai, aj = ni[feasible], vi[feasible], nj[feasible], vj[feasible], ai[feasible], aj[feasible]
    if ni.size == 0:
        return None, True
    ui, uj = costs.unit[ni, vi, :], costs.unit[nj, vj, :]
    # Per SKU the cheaper side takes all it can; the other side takes the rest.
    i_first = ui <= uj
    xi = np.where(i_first, np.minimum(ai, demand), demand - np.minimum(aj, demand))
    xj = demand[None, :] - xi
    total = costs.fixed[ni, vi] + costs.fixed[nj, vj] + (xi * ui + xj * uj).sum(axis=1)
    both_used = (xi.sum(axis=1) > 0) & (xj.sum(axis=1) > 0)
    within_cap = (xi.sum(axis=1) <= costs.capacity[ni]) & (xj.sum(axis=1) <= costs.capacity[nj])
    valid = both_used & within_cap
    exact = True
    if not valid.any():
        best_valid = _INF
    else:
        best_valid = int(total[valid].min())
    # A capacity-violating split that looks cheaper might hide a feasible
    # cheaper re-split: then the enumeration is not a proof.
    if np.any(~within_cap & (total < best_valid)):
        exact = False
    if best_valid == _INF:
        return None, exact
    cands = np.flatnonzero(valid & (total == best_valid))
    arrival = np.maximum(costs.arrival[ni, vi], costs.arrival[nj, vj])
    pick = int(cands[np.argmin(arrival[cands])])
    service = np.full(len(costs.nodes), -1, dtype=np.int64)
    service[ni[pick]] = vi[pick]
    service[nj[pick]] = vj[pick]
    units = np.zeros_like(costs.available)
    units[ni[pick]] = xi[pick]
    units[nj[pick]] = xj[pick]
    return _plan_from(costs, service, units), exact


def _solve_cpsat(
    ctx: _Context,
    elig: np.ndarray,
    max_parcels: int,
    lower_bound: int,
    hint: _Plan | None,
) -> _Plan | None:
    costs, demand = ctx.costs, ctx.demand
    ctx.stats["cpsat"] += 1
    model = cp_model.CpModel()
    slot_n, slot_v = np.nonzero(elig)
    ys = [model.new_bool_var(f"y{n}_{v}") for n, v in zip(slot_n.tolist(), slot_v.tolist(), strict=True)]
    per_node: dict[int, list[int]] = {}
    for s, n in enumerate(slot_n.tolist()):
        per_node.setdefault(n, []).append(s)
    by_sku: list[list[cp_model.IntVar]] = [[] for _ in range(demand.size)]
    obj_vars: list[cp_model.IntVar] = []
    obj_coefs: list[int] = []
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
                obj_vars.append(x)
                obj_coefs.append(int(costs.unit[n, v, k]))
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
    model.add(sum(ys) <= max_parcels)
    obj_vars.extend(ys)
    obj_coefs.extend(costs.fixed[slot_n, slot_v].tolist())
    objective = cp_model.LinearExpr.weighted_sum(obj_vars, obj_coefs)
    model.add(objective >= lower_bound)
    model.minimize(objective)
    if hint is not None:
        for s, (n, v) in enumerate(zip(slot_n.tolist(), slot_v.tolist(), strict=True)):
            model.add_hint(ys[s], int(hint.service[n] == v))
        for s, k, x in x_index:
            n, v = int(slot_n[s]), int(slot_v[s])
            model.add_hint(x, int(hint.units[n, k]) if hint.service[n] == v else 0)

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = ctx.settings.num_workers
    solver.parameters.max_time_in_seconds = max(0.001, ctx.deadline - time.perf_counter())
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        if status == cp_model.INFEASIBLE or hint is None:
            return None
        # Timed out before improving on the hint: it stands, with the bound's gap.
        gap = (hint.cost - lower_bound) / max(abs(hint.cost), 1)
        return _Plan(hint.service, hint.units, hint.cost, hint.day, hint.parcels, FEASIBLE, gap, "cp-sat")
    service = np.full(len(costs.nodes), -1, dtype=np.int64)
    units = np.zeros_like(avail)
    for s, (n, v) in enumerate(zip(slot_n.tolist(), slot_v.tolist(), strict=True)):
        if solver.boolean_value(ys[s]):
            service[n] = v
    for s, k, x in x_index:
        value = solver.value(x)
        if value:
            units[int(slot_n[s]), k] += value
    objective_value = int(round(solver.objective_value))
    bound = max(lower_bound, int(np.ceil(solver.best_objective_bound)))
    proven = status == cp_model.OPTIMAL
    gap = 0.0 if proven else (objective_value - bound) / max(abs(objective_value), 1)
    return _plan_from(
        costs,
        service,
        units,
        status=OPTIMAL if proven else FEASIBLE,
        gap=gap,
        method="cp-sat",
    )


def _min_cost(ctx: _Context, day: int, max_parcels: int) -> _Plan | None:
    """The least-cost plan delivering by ``day`` in at most ``max_parcels`` parcels."""
    key = (day, max_parcels)
    if key in ctx.cache:
        return ctx.cache[key]
    ctx.stats["sub"] += 1
    costs, demand = ctx.costs, ctx.demand
    elig = _eligible(costs, day)
    node_ok = elig.any(axis=1)
    plan: _Plan | None = None
    if np.all(costs.available[node_ok].sum(axis=0) >= demand):
        plan = _bound_and_solve(ctx, elig, max_parcels)
    ctx.cache[key] = plan
    if plan is not None:
        ctx.known.append(plan)
    return plan


def _bound_and_solve(ctx: _Context, elig: np.ndarray, max_parcels: int) -> _Plan | None:
    costs, demand = ctx.costs, ctx.demand
    fixed = np.where(elig, costs.fixed, _INF)
    fixed_min = fixed.min(axis=1)  # per node, its cheapest eligible parcel
    unit_min = np.where(elig[:, :, None], costs.unit.astype(np.float64), np.inf).min(axis=1)
    transport_lb = _transport_lower_bound(unit_min, costs.available, demand)
    sorted_fixed = np.sort(fixed_min[fixed_min < _INF])
    fixed_prefix = np.concatenate(([0], np.cumsum(sorted_fixed)))

    single = _best_single(ctx, elig)
    min_parcels = 1 if single is not None else 2
    if max_parcels < min_parcels:
        return None

    # Best known plan that fits this sub-problem: a warm start and an upper bound.
    best = single
    for known in ctx.known:
        fits = known.parcels <= max_parcels and bool(
            np.all(elig[known.service >= 0, known.service[known.service >= 0]])
        )
        if fits and (best is None or known.cost < best.cost):
            best = known
    upper = best.cost if best is not None else _INF

    def lower_bound(parcels: int) -> int:
        return int(fixed_prefix[min(parcels, len(sorted_fixed))]) + transport_lb

    def most_parcels_worth_trying() -> int:
        top = min(max_parcels, len(sorted_fixed))
        m = min_parcels
        while m < top and lower_bound(m + 1) <= upper:
            m += 1
        return m

    if best is None:
        best = _greedy_plan(ctx, elig, unit_min, max_parcels)
        upper = best.cost if best is not None else _INF

    exact_pairs = True
    pair: _Plan | None = None
    if max_parcels >= 2 and lower_bound(2) <= upper:
        # Slots worth pairing: their parcel plus the cheapest other one and
        # the transport bound must not already exceed the best known plan.
        second = sorted_fixed[0] if sorted_fixed.size else 0
        slots_ok = (fixed + second + transport_lb) <= upper
        pair, exact_pairs = _best_pair(ctx, elig, slots_ok[:, :] | (upper == _INF))
        if pair is not None and (best is None or pair.cost < best.cost):
            best = pair
            upper = pair.cost

    worth = most_parcels_worth_trying()
    if best is not None and exact_pairs and (worth <= 2 or lower_bound(3) > upper):
        ctx.stats["bound"] += 1
        if best.method == "cp-sat" and best.status == OPTIMAL:
            return best
        return _Plan(best.service, best.units, best.cost, best.day, best.parcels, OPTIMAL, 0.0,
                     "bound+enumeration")
    if best is not None and worth <= 1:
        ctx.stats["bound"] += 1
        return best

    # CP-SAT on the nodes the bound leaves possible.
    others_min = fixed_prefix[min(min_parcels - 1, len(sorted_fixed))]
    node_keep = (fixed_min + others_min + transport_lb <= upper) | (upper == _INF)
    if best is not None:
        node_keep |= best.service >= 0
    sub_elig = elig & node_keep[:, None]
    result = _solve_cpsat(
        ctx, sub_elig, min(max_parcels, worth), lower_bound(min_parcels), best
    )
    if result is None:
        return best
    if best is not None and best.cost < result.cost:
        return best
    return result


def _lines_of(order: Order, costs: OrderCosts, plan: _Plan, network: Network) -> Allocation:
    """Spread each node's units of a SKU over the order lines of that SKU, in line order."""
    remaining = {i: line.qty for i, line in enumerate(order.lines)}
    lines_of_sku: dict[int, list[int]] = {}
    for i, line in enumerate(order.lines):
        lines_of_sku.setdefault(network.sku_index[line.sku], []).append(i)
    parcels: list[ParcelPlan] = []
    for c in np.flatnonzero(plan.service >= 0).tolist():
        contents: list[ParcelLine] = []
        for k in np.flatnonzero(plan.units[c] > 0).tolist():
            qty = int(plan.units[c, k])
            sku_idx = int(costs.skus[k])
            for i in lines_of_sku[sku_idx]:
                take = min(qty, remaining[i])
                if take:
                    contents.append(ParcelLine(i, order.lines[i].sku, take))
                    remaining[i] -= take
                    qty -= take
                if qty == 0:
                    break
        contents.sort(key=lambda pl: pl.line)
        node = int(costs.nodes[c])
        parcels.append(
            ParcelPlan(network.node_ids[node], network.service_ids[int(plan.service[c])], tuple(contents))
        )
    return Allocation(tuple(parcels))


def _dominates(a: _Plan, b: _Plan) -> bool:
    le = a.cost <= b.cost and a.day <= b.day and a.parcels <= b.parcels
    return le and (a.cost < b.cost or a.day < b.day or a.parcels < b.parcels)


def _covered_demand(network: Network, costs: OrderCosts, order: Order, allow_partial: bool) -> IntArray:
    """Demand per SKU the options must cover; raise ShortageError if short and not partial."""
    reachable = costs.usable.any(axis=1)
    total = costs.available[reachable].sum(axis=0)
    capacity_total = costs.capacity[reachable].sum()
    short = total < costs.demand
    if short.any() and not allow_partial:
        raise ShortageError(
            [
                Shortage(network.sku_ids[int(costs.skus[k])], int(costs.demand[k]), int(total[k]))
                for k in np.flatnonzero(short).tolist()
            ]
        )
    demand = np.minimum(costs.demand, total)
    if capacity_total < demand.sum() or np.any(costs.capacity[reachable] < costs.available[reachable].sum(axis=1)):
        demand = _max_shippable(costs, reachable, demand)
        if demand.sum() < costs.demand.sum() and not allow_partial:
            raise ShortageError(
                [
                    Shortage(network.sku_ids[int(costs.skus[k])], int(costs.demand[k]), int(demand[k]))
                    for k in np.flatnonzero(demand < costs.demand).tolist()
                ],
                reason="not enough daily capacity at the nodes holding the stock",
            )
    return demand


def _max_shippable(costs: OrderCosts, reachable: np.ndarray, demand: IntArray) -> IntArray:
    """Most units per SKU the nodes can ship together under their capacities (a max flow)."""
    model = cp_model.CpModel()
    by_sku: list[list[cp_model.IntVar]] = [[] for _ in range(demand.size)]
    for n in np.flatnonzero(reachable).tolist():
        xs = []
        for k in np.flatnonzero(costs.available[n] > 0).tolist():
            x = model.new_int_var(0, int(costs.available[n, k]), f"x{n}_{k}")
            xs.append(x)
            by_sku[k].append(x)
        model.add(sum(xs) <= int(costs.capacity[n]))
    for k, xs in enumerate(by_sku):
        model.add(sum(xs) <= int(demand[k]))
    model.maximize(sum(x for xs in by_sku for x in xs))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = 5.0
    solver.solve(model)
    return np.array([sum(solver.value(x) for x in xs) for xs in by_sku], dtype=np.int64)


def quote(network: Network, order: Order, settings: QuoteSettings | None = None) -> Quote:
    """All delivery options for ``order``: the Pareto frontier and its labelled menu.

    Raises :class:`~sourcing.errors.InvalidOrderError` for a malformed order
    and :class:`~sourcing.errors.ShortageError` when stock (or capacity) is
    short and ``settings.allow_partial`` is off.
    """
    settings = settings or QuoteSettings()
    started = time.perf_counter()
    validate_order(network, order)
    sku_of_line = np.array([network.sku_index[line.sku] for line in order.lines], dtype=np.int64)
    skus, inverse = np.unique(sku_of_line, return_inverse=True)
    wanted = np.bincount(inverse, weights=[line.qty for line in order.lines]).astype(np.int64)
    costs = order_costs(network, order.destination.lat, order.destination.lon, skus, wanted)
    demand = _covered_demand(network, costs, order, settings.allow_partial)
    ctx = _Context(costs, demand, settings, started + settings.time_limit_s)

    plans: list[_Plan] = []
    if demand.sum() > 0:
        plans = _frontier(ctx)
    options = _options_from(network, order, costs, plans, settings)
    frontier = tuple(_option(network, order, costs, p, (), settings) for p in plans)
    shortfall = _shortfall(order, demand, costs, network)
    stats = QuoteStats(
        subproblems=ctx.stats["sub"],
        closed_by_bound=ctx.stats["bound"],
        cpsat_calls=ctx.stats["cpsat"],
        seconds=time.perf_counter() - started,
    )
    return Quote(options, frontier, shortfall, stats)


def _frontier(ctx: _Context) -> list[_Plan]:
    costs, settings = ctx.costs, ctx.settings
    days = np.unique(costs.arrival[costs.usable])
    if settings.latest_day is not None:
        days = days[days <= settings.latest_day]
    cap = settings.max_parcels or len(costs.nodes)
    found: list[_Plan] = []
    if days.size == 0:
        return found
    cheapest = _min_cost(ctx, int(days[-1]), cap)
    if cheapest is None:
        return found
    for day in days.tolist():
        # Beyond the cheapest plan's own day, no deadline makes it cheaper;
        # fewer parcels may still cost less later, so those are still solved.
        plan = cheapest if day >= cheapest.day else _min_cost(ctx, day, cap)
        if plan is None:
            continue
        found.append(plan)
        for parcels in range(plan.parcels - 1, 0, -1):
            fewer = _min_cost(ctx, day, parcels)
            if fewer is None:
                break
            found.append(fewer)
    unique: dict[bytes, _Plan] = {}
    for plan in found:
        unique.setdefault(plan.key(), plan)
    candidates = list(unique.values())
    pareto = [p for p in candidates if not any(_dominates(q, p) for q in candidates)]
    # Equal (cost, day, parcels) points are interchangeable: keep one of each.
    seen: set[tuple[int, int, int]] = set()
    result = []
    for p in sorted(pareto, key=lambda p: (p.cost, p.day, p.parcels)):
        if (p.cost, p.day, p.parcels) not in seen:
            seen.add((p.cost, p.day, p.parcels))
            result.append(p)
    return result


def _options_from(
    network: Network, order: Order, costs: OrderCosts, plans: list[_Plan], settings: QuoteSettings
) -> tuple[Option, ...]:
    if not plans:
        return ()
    winners: dict[Label, _Plan] = {
        Label.CHEAPEST: min(plans, key=lambda p: (p.cost, p.day, p.parcels)),
        Label.FASTEST: min(plans, key=lambda p: (p.day, p.cost, p.parcels)),
        Label.BALANCED: min(plans, key=lambda p: (p.cost + settings.value_of_day * p.day, p.day, p.parcels)),
    }
    singles = [p for p in plans if p.parcels == 1]
    if singles:
        winners[Label.SINGLE_PARCEL] = min(singles, key=lambda p: (p.cost, p.day))
    labels_of: dict[bytes, list[Label]] = {}
    plan_of: dict[bytes, _Plan] = {}
    for label in Label:
        if label in winners:
            plan = winners[label]
            labels_of.setdefault(plan.key(), []).append(label)
            plan_of[plan.key()] = plan
    return tuple(
        _option(network, order, costs, plan_of[key], tuple(labels), settings)
        for key, labels in labels_of.items()
    )


def _option(
    network: Network,
    order: Order,
    costs: OrderCosts,
    plan: _Plan,
    labels: tuple[Label, ...],
    settings: QuoteSettings,
) -> Option:
    allocation = _lines_of(order, costs, plan, network)
    evaluation = evaluate(network, order, allocation, allow_partial=settings.allow_partial)
    if evaluation.cost != plan.cost or not evaluation.is_feasible:
        # The solver and the reference evaluator disagree: a bug, never a caller error.
        raise AssertionError(
            f"solver plan cost {plan.cost} != evaluated {evaluation.cost}: {evaluation.violations}"
        )
    return Option(labels, evaluation, Proof(plan.status, plan.gap, plan.method))


def _shortfall(order: Order, demand: IntArray, costs: OrderCosts, network: Network) -> tuple[Shortfall, ...]:
    covered = dict(zip(costs.skus.tolist(), demand.tolist(), strict=True))
    result: list[Shortfall] = []
    for i, line in enumerate(order.lines):
        sku = network.sku_index[line.sku]
        take = min(line.qty, covered[sku])
        covered[sku] -= take
        if take < line.qty:
            result.append(Shortfall(i, line.sku, line.qty, take))
    return tuple(result)
