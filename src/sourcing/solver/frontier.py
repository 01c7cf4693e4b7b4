"""The delivery menu of one order: the Pareto set over sub-problems, and its labels.

:func:`quote_delivery` builds the order's cost arrays, settles the demand
the options must cover (or raises a shortage), solves the sub-problems
``P(D, p)`` the menu needs (epsilon-constraint over the candidate delivery
days; every one with ``full_frontier``), labels the winners and re-prices
every option with the independent evaluator. :func:`solve_costs` does the
same on prebuilt cost arrays, for the legs of :mod:`sourcing.fulfil`.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from ortools.graph.python import max_flow
from ortools.sat.python import cp_model

from sourcing.costs import OrderCosts, order_costs
from sourcing.errors import Shortage, ShortageError
from sourcing.evaluate import evaluate
from sourcing.model import (
    Allocation,
    BoolArray,
    IntArray,
    Label,
    Network,
    Option,
    Order,
    ParcelPlan,
    Proof,
    Quote,
    QuoteSettings,
    QuoteStats,
    Shortfall,
)
from sourcing.orders import demand_by_sku, lines_by_sku, spread_over_lines, validate_order
from sourcing.solver.context import FEASIBLE, OPTIMAL, Context, Plan
from sourcing.solver.subproblem import min_cost


def quote_delivery(network: Network, order: Order, settings: QuoteSettings) -> Quote:
    """The delivery options for ``order``: the Pareto frontier and its labelled menu.

    Delivery only: click & collect and backorder are composed around this by
    :func:`sourcing.menu.quote`, which callers use; settings asking for them
    are a ValueError here. Raises :class:`~sourcing.errors.InvalidOrderError`
    for a malformed order and :class:`~sourcing.errors.ShortageError` when
    stock (or capacity) is short and ``settings.allow_partial`` is off.
    """
    if settings.pickup_stores or settings.nearest_stores or settings.allow_backorder:
        raise ValueError("collect and backorder are composed by sourcing.menu.quote")
    started = time.perf_counter()
    validate_order(network, order)
    skus, wanted = demand_by_sku(network, order)
    costs = order_costs(
        network,
        order.destination.lat,
        order.destination.lon,
        skus,
        wanted,
        opportunity=settings.opportunity,
    )
    demand = _covered_demand(network, costs, settings.allow_partial)
    ctx = Context(costs, demand, settings, started + settings.wall_budget_s)

    plans: list[Plan] = []
    if demand.sum() > 0:
        plans = _frontier(ctx)
    labels = _labels(plans, settings)
    plans = _proofs(ctx, plans, labels)
    frontier = tuple(
        _option(network, order, costs, p, labels.get(p.key(), ()), settings) for p in plans
    )
    # The menu: labelled options, deduplicated, in the order of their first label.
    order_of = {label: i for i, label in enumerate(Label)}
    options = tuple(sorted((o for o in frontier if o.labels), key=lambda o: order_of[o.labels[0]]))
    shortfall = _shortfall(order, demand, costs, network)
    stats = QuoteStats(
        subproblems=ctx.stats["sub"],
        closed_by_bound=ctx.stats["bound"],
        cpsat_calls=ctx.stats["cpsat"],
        resplits=ctx.stats["resplit"],
        seconds=time.perf_counter() - started,
        cut_short=tuple(ctx.unproven),
    )
    return Quote(options, frontier, shortfall, stats)


def _frontier(ctx: Context) -> list[Plan]:
    """Solve the sub-problems the menu (or, with ``full_frontier``, the whole frontier) needs.

    The menu needs: the cheapest plan (no deadline); the least-cost plan at
    each earlier deadline that could still win FASTEST or BALANCED (a deadline
    D can only win BALANCED if ``cheapest cost + value_of_day * D`` beats the
    best seen, because no plan is cheaper than the cheapest); and the best
    single parcel. The full frontier adds, at every deadline, the least-cost
    plan for every parcel count below the unconstrained optimum's.
    """
    costs, settings = ctx.costs, ctx.settings
    days = sorted(set(costs.arrival[costs.usable].tolist()))
    if settings.latest_day is not None:
        days = [day for day in days if day <= settings.latest_day]
    cap = settings.max_parcels or len(costs.nodes)
    if not days:
        return []
    cheapest = min_cost(ctx, days[-1], cap)
    if cheapest is None:
        return []
    single = min_cost(ctx, days[-1], 1)
    found = [p for p in (cheapest, single) if p is not None]
    vod = settings.value_of_day
    balanced = (cheapest.cost + vod * cheapest.day, cheapest.day)
    fastest_found = False
    for day in days:
        # Every plan arriving before this day is proven dearer than the cutoff (or, before
        # FASTEST's day, not to exist), unless a sub-problem was cut short: only plans with
        # a parcel arriving on it need searching.
        on_day = not ctx.unproven
        # Beyond the cheapest plan's own day, no deadline makes it cheaper;
        # fewer parcels may still cost less later (full frontier only).
        if day >= cheapest.day:
            plan: Plan | None = cheapest
        elif settings.full_frontier or not fastest_found:
            plan = min_cost(ctx, day, cap, on_day=on_day and not fastest_found)
        elif (cheapest.cost + vod * day, day) <= balanced:
            # Only a plan arriving on this very day can improve BALANCED (one arriving
            # earlier was a candidate at its own day): plans dearer than that are not wanted.
            plan = min_cost(ctx, day, cap, cutoff=balanced[0] - vod * day, on_day=on_day)
        else:
            continue
        if plan is None:
            continue
        fastest_found = True
        found.append(plan)
        balanced = min(balanced, (plan.cost + vod * plan.day, plan.day))
        if not settings.full_frontier:
            if day >= cheapest.day:
                break
            continue
        for parcels in range(plan.parcels - 1, 0, -1):
            fewer = min_cost(ctx, day, parcels)
            if fewer is None:
                break
            found.append(fewer)
    unique: dict[bytes, Plan] = {}
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


def _labels(plans: list[Plan], settings: QuoteSettings) -> dict[bytes, tuple[Label, ...]]:
    """The labels each plan wins (by plan key), in the order of :class:`Label`."""
    if not plans:
        return {}
    vod = settings.value_of_day
    winners: dict[Label, Plan] = {
        Label.CHEAPEST: min(plans, key=lambda p: (p.cost, p.day, p.parcels)),
        Label.FASTEST: min(plans, key=lambda p: (p.day, p.cost, p.parcels)),
        Label.BALANCED: min(plans, key=lambda p: (p.cost + vod * p.day, p.day, p.parcels)),
    }
    singles = [p for p in plans if p.parcels == 1]
    if singles:
        winners[Label.SINGLE_PARCEL] = min(singles, key=lambda p: (p.cost, p.day))
    labels: dict[bytes, tuple[Label, ...]] = {}
    for label in Label:
        if label in winners:
            key = winners[label].key()
            labels[key] = (*labels.get(key, ()), label)
    return labels


def _proofs(ctx: Context, plans: list[Plan], labels: dict[bytes, tuple[Label, ...]]) -> list[Plan]:
    """Plans whose labels a sub-problem cut short may hide a better plan for: FEASIBLE.

    A plan proven optimal for its own sub-problem wins a label only among the
    plans found; if a sub-problem that was cut short (``ctx.unproven``, with a
    lower bound on its cost) might hold a plan beating it for that label, the
    label is not proven: the option is FEASIBLE, its gap measured against
    that bound (SINGLE_PARCEL is always enumerated exactly).
    """
    if not ctx.unproven:
        return plans
    vod = ctx.settings.value_of_day
    costs = ctx.costs
    first_day = int(costs.arrival[costs.usable].min()) if costs.usable.any() else 0
    cap = ctx.settings.max_parcels or len(costs.nodes)
    result = []
    for plan in plans:
        gaps: list[float] = []
        # FASTEST's own deadline solved and proven with every parcel count allowed: no plan
        # arriving by then costs less, so a later deadline cut short hides nothing that beats it.
        own = ctx.cache.get((plan.day, cap))
        own_proven = own is not None and own.status == OPTIMAL and own.cost == plan.cost
        for label in labels.get(plan.key(), ()) if plan.status == OPTIMAL else ():
            for day, _, lower in ctx.unproven:
                if label is Label.CHEAPEST and lower <= plan.cost:
                    gaps.append((plan.cost - lower) / max(abs(plan.cost), 1))
                elif label is Label.FASTEST and day < plan.day:
                    gaps.append(1.0)  # an earlier plan may exist: the day itself is unproven
                elif label is Label.FASTEST and own_proven:
                    continue
                elif label is Label.FASTEST and lower <= plan.cost:
                    gaps.append((plan.cost - lower) / max(abs(plan.cost), 1))
                elif (
                    label is Label.BALANCED
                    and lower + vod * first_day <= plan.cost + vod * plan.day
                ):
                    value = plan.cost + vod * plan.day
                    gaps.append((value - lower - vod * first_day) / max(abs(value), 1))
        if gaps:
            plan = replace(plan, status=FEASIBLE, gap=min(max(gaps), 1.0))
        result.append(plan)
    return result


def _option(
    network: Network,
    order: Order,
    costs: OrderCosts,
    plan: Plan,
    labels: tuple[Label, ...],
    settings: QuoteSettings,
) -> Option:
    allocation = _lines_of(order, costs, plan, network)
    evaluation = evaluate(network, order, allocation, allow_partial=settings.allow_partial)
    opportunity = 0
    if costs.opportunity is not None:
        opportunity = int((costs.opportunity * plan.units).sum())
    if evaluation.cost + opportunity != plan.cost or not evaluation.is_feasible:
        # The solver and the reference evaluator disagree: a bug, never a caller error.
        raise AssertionError(
            f"solver plan cost {plan.cost} != evaluated {evaluation.cost} + opportunity "
            f"{opportunity}: {evaluation.violations}"
        )
    return Option(labels, evaluation, Proof(plan.status, plan.gap, plan.method), opportunity)


def _shortfall(
    order: Order, demand: IntArray, costs: OrderCosts, network: Network
) -> tuple[Shortfall, ...]:
    covered = dict(zip(costs.skus.tolist(), demand.tolist(), strict=True))
    result: list[Shortfall] = []
    for i, line in enumerate(order.lines):
        sku = network.sku_index[line.sku]
        take = min(line.qty, covered[sku])
        covered[sku] -= take
        if take < line.qty:
            result.append(Shortfall(i, line.sku, line.qty, take))
    return tuple(result)


def _lines_of(order: Order, costs: OrderCosts, plan: Plan, network: Network) -> Allocation:
    """Spread each node's units of a SKU over the order lines of that SKU, in line order."""
    remaining = {i: line.qty for i, line in enumerate(order.lines)}
    lines_of_sku = lines_by_sku(network, order)
    skus = costs.skus.tolist()
    nodes, services = plan.slots
    parcels: list[ParcelPlan] = []
    # Plain Python on the few opened parcels: cheaper than numpy calls per element.
    for c, v, units in zip(
        nodes.tolist(), services.tolist(), plan.units[nodes].tolist(), strict=True
    ):
        contents = spread_over_lines(order, lines_of_sku, remaining, zip(skus, units, strict=True))
        parcels.append(
            ParcelPlan(
                network.node_ids[int(costs.nodes[c])],
                network.service_ids[int(costs.services[v])],
                contents,
            )
        )
    return Allocation(tuple(parcels))


def _dominates(a: Plan, b: Plan) -> bool:
    le = a.cost <= b.cost and a.day <= b.day and a.parcels <= b.parcels
    return le and (a.cost < b.cost or a.day < b.day or a.parcels < b.parcels)


def _covered_demand(network: Network, costs: OrderCosts, allow_partial: bool) -> IntArray:
    """Demand per SKU the options must cover; raise ShortageError if short and not partial."""
    reachable: BoolArray = np.asarray(costs.usable.any(axis=1))
    available, capacity = costs.available[reachable], costs.capacity[reachable]
    total = available.sum(axis=0)
    capacity_total = capacity.sum()
    short = total < costs.demand
    if short.any() and not allow_partial:
        raise ShortageError(
            [
                Shortage(network.sku_ids[int(costs.skus[k])], int(costs.demand[k]), int(total[k]))
                for k in np.flatnonzero(short).tolist()
            ]
        )
    demand = np.minimum(costs.demand, total)
    if capacity_total < demand.sum() or (capacity < available.sum(axis=1)).any():
        demand = _max_shippable(costs, reachable, demand)
        if demand.sum() < costs.demand.sum() and not allow_partial:
            raise ShortageError(
                [
                    Shortage(
                        network.sku_ids[int(costs.skus[k])], int(costs.demand[k]), int(demand[k])
                    )
                    for k in np.flatnonzero(demand < costs.demand).tolist()
                ],
                reason="not enough daily capacity at the nodes holding the stock",
            )
    return np.asarray(demand, dtype=np.int64)


def _max_shippable(costs: OrderCosts, reachable: np.ndarray, demand: IntArray) -> IntArray:
    """Most units per SKU the nodes can ship together under their capacities (a max flow).

    Usually the whole demand fits: a max flow (SKUs to nodes, stock per arc,
    capacity per node) says so in well under a millisecond. Otherwise the
    CP-SAT model below picks the units per SKU.
    """
    nodes = np.flatnonzero(reachable)
    node, sku = np.nonzero(costs.available[nodes] > 0)
    n_skus = demand.size
    flow = max_flow.SimpleMaxFlow()
    # Graph nodes: source, SKUs 1..K, candidates K+1..K+C, sink K+C+1.
    source, sink = 0, n_skus + nodes.size + 1
    flow.add_arcs_with_capacity(np.zeros(n_skus, np.int64), 1 + np.arange(n_skus), demand)
    flow.add_arcs_with_capacity(1 + sku, 1 + n_skus + node, costs.available[nodes[node], sku])
    flow.add_arcs_with_capacity(
        1 + n_skus + np.arange(nodes.size), np.full(nodes.size, sink), costs.capacity[nodes]
    )
    if flow.solve(source, sink) == flow.OPTIMAL and flow.optimal_flow() == int(demand.sum()):
        return demand
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


def solve_costs(
    costs: OrderCosts, demand: IntArray, settings: QuoteSettings, deadline: float
) -> tuple[list[Plan], dict[str, int], tuple[tuple[int, int, int], ...]]:
    """The Pareto plans of prebuilt cost arrays (a leg of :mod:`sourcing.fulfil`), stats, and
    the sub-problems cut short (as ``QuoteStats.cut_short``).

    The same sub-problems as :func:`quote_delivery` (the menu's, or every one
    with ``settings.full_frontier``), on any candidates and service columns;
    ``demand`` must be coverable by the usable candidates. Each plan's proof
    is for its own sub-problem: a caller labelling options built from these
    plans must check the cut-short ones could not hide a better plan.
    """
    ctx = Context(costs, demand, settings, deadline)
    plans = _frontier(ctx) if demand.sum() > 0 else []
    return plans, ctx.stats, tuple(ctx.unproven)


def cheapest_plan(
    costs: OrderCosts, demand: IntArray, settings: QuoteSettings, deadline: float
) -> Plan | None:
    """The least-cost plan of prebuilt cost arrays, alone (no other sub-problem), proven as
    :func:`quote_delivery` proves CHEAPEST; None if no usable candidates cover ``demand``.

    For callers that only need that one number per order, many times over (the
    perfect-hindsight bound prices thousands of orders per round).
    """
    ctx = Context(costs, demand, settings, deadline)
    days = sorted(set(costs.arrival[costs.usable].tolist()))
    if not days or demand.sum() == 0:
        return None
    return min_cost(ctx, days[-1], settings.max_parcels or len(costs.nodes))
