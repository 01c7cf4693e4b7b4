"""More ways to fulfil a cart: click & collect, and shipping later from inbound receipts.

The legs of these options, each solved by the delivery solver
(:func:`sourcing.solver.solve_costs`) on its own cost arrays;
:func:`sourcing.menu.quote` composes them with the delivery menu when its
settings ask for pickup stores or allow backorder. Every option is priced by
the reference rules of :mod:`sourcing.costs` and re-checked by the
independent :func:`~sourcing.evaluate.evaluate`.

**Click & collect** at store S (``QuoteSettings.pickup_stores``, or the
``nearest_stores`` stores nearest the destination): S's own units are ready
after its handling days; units elsewhere travel to S by the transfer lane (the
rate card's ``transfer`` service), priced and timed like a parcel from their
node to S; a node whose zone to S the lane does not offer cannot send. A
COLLECT option covers the same units as the delivery options (those in stock
now, plus those that wait for receipts); if S cannot gather them, S gets no
option. Per store, the collect plans form their own Pareto set over (cost,
ready day, parcels: picks and transfers), added to ``Quote.frontier``; the one
with the least ``cost + value_of_day * ready day`` (then earlier, then fewer
parcels) is labelled COLLECT in the menu.

**Backorder** (``allow_backorder``): when stock on hand (under today's
capacity) cannot cover a SKU, only the units short now may wait for inbound
receipts: the options take every unit they can from stock (as with
``allow_partial``) and the rest from receipts, grouped into one parcel per
(node, due day), arriving that many days later than the same parcel from
stock, with no storage credit. What receipts cannot cover either is a
shortage (or, with ``allow_partial``, the shortfall).

**Exactness.** An option with waiting units is a stock plan plus a receipts
plan. The two share nothing (different units, different parcels), the cost
and the parcel count add up and the day is the later one, so an option is
Pareto-optimal only if both halves are Pareto-optimal in their own leg: the
full frontier of each leg is solved (the same exact solver as delivery) and
the combinations' Pareto set is the answer. The caps (``max_parcels``,
``latest_day``) apply to the whole option, and to each leg, which is safe for
the same reason. Out of time, a leg may have proven some of its sub-problems
and not others: a labelled option (COLLECT included) is proven only if no
sub-problem cut short, in any leg, could hide a better one for its label.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from sourcing.costs import LegCosts, collect_costs, haversine_km, inbound_costs
from sourcing.errors import FieldViolation, InvalidOrderError, Shortage, ShortageError
from sourcing.evaluate import evaluate
from sourcing.model import (
    Allocation,
    IntArray,
    Label,
    Network,
    NodeKind,
    Option,
    Order,
    ParcelLine,
    ParcelPlan,
    Proof,
    Quote,
    QuoteSettings,
    QuoteStats,
    Shortfall,
)
from sourcing.orders import demand_by_sku
from sourcing.solver import OPTIMAL, Plan, quote_delivery, solve_costs

__all__ = [
    "Demand",
    "LegBudget",
    "backorder_menu",
    "collect_options",
    "collect_pick",
    "nearest_stores",
    "pickup_stores",
    "split_demand",
]


def nearest_stores(network: Network, lat: float, lon: float, count: int) -> tuple[str, ...]:
    """The ``count`` store nodes nearest (lat, lon), nearest first (ties by node order)."""
    stores = np.array([k is NodeKind.STORE for k in network.node_kinds], dtype=np.bool_)
    index = np.flatnonzero(stores)
    if count <= 0 or index.size == 0:
        return ()
    distance = haversine_km(network.lat[index], network.lon[index], lat, lon)
    order = np.argsort(distance, kind="stable")[:count]
    return tuple(network.node_ids[int(index[i])] for i in order)


def pickup_stores(network: Network, order: Order, settings: QuoteSettings) -> tuple[str, ...]:
    """The named pickup stores, then the nearest ones, without repeats.

    Raises :class:`InvalidOrderError` naming ``pickup_stores[i]`` for an
    unknown node or one that is not a store, and ``nearest_stores`` if negative.
    """
    violations: list[FieldViolation] = []
    for i, store in enumerate(settings.pickup_stores):
        n = network.node_index.get(store)
        if n is None:
            violations.append(FieldViolation(f"pickup_stores[{i}]", f"unknown node {store!r}"))
        elif network.node_kinds[n] is not NodeKind.STORE:
            violations.append(
                FieldViolation(f"pickup_stores[{i}]", f"node {store!r} is not a store")
            )
    if settings.nearest_stores < 0:
        violations.append(
            FieldViolation("nearest_stores", f"must not be negative, got {settings.nearest_stores}")
        )
    if violations:
        raise InvalidOrderError(violations)
    near = nearest_stores(
        network, order.destination.lat, order.destination.lon, settings.nearest_stores
    )
    return tuple(dict.fromkeys((*settings.pickup_stores, *near)))


@dataclass(frozen=True)
class _Part:
    """One leg's plan as parcels in network terms, with its cost, day and proof."""

    parcels: tuple[ParcelPlan, ...]
    cost: int
    day: int
    proof: Proof

    @property
    def count(self) -> int:
        return len(self.parcels)


_EMPTY = _Part((), 0, 0, Proof(OPTIMAL, 0.0, "nothing to ship"))


def _fill(order: Order, sku: str, qty: int, remaining: list[int]) -> tuple[ParcelLine, ...]:
    """``qty`` units of ``sku`` spread over the order's lines of that SKU, in line order."""
    lines: list[ParcelLine] = []
    for i, line in enumerate(order.lines):
        if qty == 0:
            break
        if line.sku == sku and remaining[i]:
            take = min(qty, remaining[i])
            lines.append(ParcelLine(i, sku, take))
            remaining[i] -= take
            qty -= take
    return tuple(lines)


def _parcels(
    network: Network, order: Order, leg: LegCosts, plan: Plan, remaining: list[int]
) -> tuple[ParcelPlan, ...]:
    """A leg plan's parcels; takes the units it covers off ``remaining`` (per order line)."""
    costs = leg.costs
    parcels: list[ParcelPlan] = []
    for c in np.flatnonzero(plan.service >= 0).tolist():
        contents: list[ParcelLine] = []
        for k in np.flatnonzero(plan.units[c] > 0).tolist():
            sku = network.sku_ids[int(costs.skus[k])]
            contents.extend(_fill(order, sku, int(plan.units[c, k]), remaining))
        contents.sort(key=lambda pl: pl.line)
        day = int(leg.inbound_day[c])
        parcels.append(
            ParcelPlan(
                network.node_ids[int(costs.nodes[c])],
                leg.service_ids[int(plan.service[c])],
                tuple(contents),
                None if day < 0 else day,
            )
        )
    return tuple(parcels)


def _parts(
    network: Network, order: Order, leg: LegCosts, plans: list[Plan], remaining: list[int]
) -> list[_Part]:
    result = []
    for plan in plans:
        left = list(remaining)
        result.append(
            _Part(
                _parcels(network, order, leg, plan, left),
                plan.cost,
                plan.day,
                Proof(plan.status, plan.gap, plan.method),
            )
        )
    return result


def _covers(leg: LegCosts, demand: IntArray) -> bool:
    usable = leg.costs.usable.any(axis=1)
    return bool(np.all(leg.costs.available[usable].sum(axis=0) >= demand))


def _proof(parts: Sequence[_Part]) -> Proof:
    parts = [p for p in parts if p.parcels] or list(parts)
    if all(p.proof.status == OPTIMAL for p in parts):
        return Proof(OPTIMAL, 0.0, " + ".join(p.proof.method for p in parts))
    gaps = [p.proof.gap for p in parts if p.proof.status != OPTIMAL]
    gap = max((g for g in gaps if math.isfinite(g)), default=float("nan"))
    return Proof("FEASIBLE", gap, " + ".join(p.proof.method for p in parts))


Point = tuple[int, int, int]
#: A leg's sub-problem cut short: (delivery day, parcel cap, lower bound on its cost).
Cut = tuple[int, int, int]
#: One leg of a menu: its plans as parts, and its sub-problems cut short.
Leg = tuple[list["_Part"], tuple[Cut, ...]]


def _pareto(points: list[Point]) -> list[int]:
    """Indices of the non-dominated points over (cost, day, parcels), one per distinct point."""
    best: dict[Point, int] = {}
    for i, p in enumerate(points):
        best.setdefault(p, i)
    distinct = sorted(best)
    keep = [
        p
        for p in distinct
        if not any(q != p and all(a <= b for a, b in zip(q, p, strict=True)) for q in distinct)
    ]
    return [best[p] for p in keep]


def _combine(
    first: list[_Part], second: list[_Part], settings: QuoteSettings
) -> list[tuple[_Part, _Part]]:
    """Pareto-optimal pairs (one plan of each leg) within the caps, cheapest first."""
    pairs: list[tuple[_Part, _Part]] = []
    points: list[Point] = []
    for a in first:
        for b in second:
            point = (a.cost + b.cost, max(a.day, b.day), a.count + b.count)
            if settings.max_parcels is not None and point[2] > settings.max_parcels:
                continue
            if settings.latest_day is not None and point[1] > settings.latest_day:
                continue
            pairs.append((a, b))
            points.append(point)
    return [pairs[i] for i in _pareto(points)]


def _option(
    network: Network,
    order: Order,
    parts: Sequence[_Part],
    labels: tuple[Label, ...],
    settings: QuoteSettings,
    pickup: str | None,
) -> Option:
    allocation = Allocation(tuple(p for part in parts for p in part.parcels), pickup)
    evaluation = evaluate(network, order, allocation, allow_partial=settings.allow_partial)
    cost = sum(p.cost for p in parts)
    if evaluation.cost != cost or not evaluation.is_feasible:
        # The legs and the reference evaluator disagree: a bug, never a caller error.
        raise AssertionError(
            f"plan cost {cost} != evaluated {evaluation.cost}: {evaluation.violations}"
        )
    return Option(labels, evaluation, _proof(parts))


def _label_proof(option: Option, labels: Sequence[Label], legs: Sequence[Leg], vod: int) -> Option:
    """``option`` as FEASIBLE if a leg's sub-problem cut short may hide a better one for a label.

    Each leg's plans are proven for their own sub-problems only (the rule of
    :func:`sourcing.solver.frontier._proofs`, across legs): a plan hidden in a
    leg's cut-short sub-problem costs at least that sub-problem's bound, and an
    option built on it at least that plus the other legs' least cost, arriving
    no later than the sub-problem's day (a FASTEST option arriving after that
    day is not proven at all). SINGLE_PARCEL is always enumerated exactly.
    """
    if option.proof.status != OPTIMAL or not any(cuts for _, cuts in legs):
        return option
    floors = [
        min([p.cost for p in parts] + [lower for _, _, lower in cuts]) for parts, cuts in legs
    ]
    value = option.cost + vod * option.delivery_days
    gaps: list[float] = []
    for x, (_, cuts) in enumerate(legs):
        others = sum(f for y, f in enumerate(floors) if y != x)
        for day, _, lower in cuts:
            hidden = lower + others  # the least cost of an option on a plan hidden there
            for label in labels:
                if label is Label.FASTEST and day < option.delivery_days:
                    gaps.append(1.0)
                elif label in (Label.CHEAPEST, Label.FASTEST) and hidden <= option.cost:
                    gaps.append((option.cost - hidden) / max(abs(option.cost), 1))
                elif label in (Label.BALANCED, Label.COLLECT) and hidden <= value:
                    gaps.append((value - hidden) / max(abs(value), 1))
    if not gaps:
        return option
    proof = Proof("FEASIBLE", min(max(gaps), 1.0), option.proof.method)
    return replace(option, proof=proof)


def _delivery_labels(options: list[Option], value_of_day: int) -> list[tuple[Label, ...]]:
    """The four delivery labels over ``options``, with the tie-breaks of the plain quote."""
    if not options:
        return []
    key = [(o.cost, o.delivery_days, o.num_parcels) for o in options]
    index = range(len(options))
    winners = {
        Label.CHEAPEST: min(index, key=lambda i: key[i]),
        Label.FASTEST: min(index, key=lambda i: (key[i][1], key[i][0], key[i][2])),
        Label.BALANCED: min(
            index, key=lambda i: (key[i][0] + value_of_day * key[i][1], key[i][1], key[i][2])
        ),
    }
    singles = [i for i in index if key[i][2] == 1]
    if singles:
        winners[Label.SINGLE_PARCEL] = min(singles, key=lambda i: key[i][:2])
    labels: list[tuple[Label, ...]] = [() for _ in options]
    for label in Label:
        if label in winners:
            labels[winners[label]] = (*labels[winners[label]], label)
    return labels


def collect_pick(options: list[Option], value_of_day: int) -> int | None:
    """The COLLECT option among one store's plans: least ``cost + value_of_day * ready day``."""
    if not options:
        return None
    return min(
        range(len(options)),
        key=lambda i: (
            options[i].cost + value_of_day * options[i].delivery_days,
            options[i].delivery_days,
            options[i].num_parcels,
        ),
    )


def _shortfall(order: Order, covered: dict[str, int]) -> tuple[Shortfall, ...]:
    left = dict(covered)
    result: list[Shortfall] = []
    for i, line in enumerate(order.lines):
        take = min(line.qty, left.get(line.sku, 0))
        left[line.sku] = left.get(line.sku, 0) - take
        if take < line.qty:
            result.append(Shortfall(i, line.sku, line.qty, take))
    return tuple(result)


@dataclass
class LegBudget:
    """One quote's solver time and counters, shared by the delivery quotes and the legs."""

    started: float
    settings: QuoteSettings
    stats: dict[str, int]

    @property
    def deadline(self) -> float:
        return self.started + self.settings.wall_budget_s

    def left(self) -> float:
        """Seconds of the quote's budget left (at least a millisecond); under a work limit
        the whole ``time_limit_s``, which then sizes CP-SAT's deterministic time."""
        if self.settings.work_limit is not None:
            return self.settings.time_limit_s
        return max(0.001, self.deadline - time.perf_counter())

    def solve(
        self, leg: LegCosts, demand: IntArray, *, full: bool
    ) -> tuple[list[Plan], tuple[Cut, ...]]:
        """The leg's Pareto plans, and its sub-problems cut short (see :func:`_label_proof`)."""
        settings = replace(self.settings, full_frontier=full or self.settings.full_frontier)
        plans, stats, cut_short = solve_costs(leg.costs, demand, settings, self.deadline)
        for name, value in stats.items():
            self.stats[name] = self.stats.get(name, 0) + value
        return plans, cut_short

    def add(self, q: Quote) -> None:
        self.stats["sub"] = self.stats.get("sub", 0) + q.stats.subproblems
        self.stats["bound"] = self.stats.get("bound", 0) + q.stats.closed_by_bound
        self.stats["cpsat"] = self.stats.get("cpsat", 0) + q.stats.cpsat_calls
        self.stats["resplit"] = self.stats.get("resplit", 0) + q.stats.resplits

    def quote_stats(self) -> QuoteStats:
        """The counters so far, and the seconds since the quote started."""
        return QuoteStats(
            subproblems=self.stats.get("sub", 0),
            closed_by_bound=self.stats.get("bound", 0),
            cpsat_calls=self.stats.get("cpsat", 0),
            resplits=self.stats.get("resplit", 0),
            seconds=time.perf_counter() - self.started,
        )


@dataclass(frozen=True)
class Demand:
    """What a cart's options must cover, per distinct SKU: units from stock now, units that wait.

    ``delivery`` is the plain delivery quote (None when stock is short and
    backorder is allowed); ``stock_quote``, with backorder and units short,
    every Pareto plan of what ships from stock now.
    """

    skus: IntArray
    names: tuple[str, ...]
    wanted: IntArray
    stock: IntArray
    inbound: IntArray
    delivery: Quote | None
    stock_quote: Quote | None

    @property
    def waits(self) -> bool:
        """Whether some units wait for inbound receipts."""
        return self.stock_quote is not None and bool(self.inbound.any())


def split_demand(network: Network, order: Order, budget: LegBudget) -> Demand:
    """The plain delivery menu first; with backorder, what it leaves short waits for receipts.

    Raises :class:`ShortageError` when stock (and receipts, with backorder)
    cannot cover the cart and ``allow_partial`` is off.
    """
    settings = budget.settings
    plain = replace(settings, pickup_stores=(), nearest_stores=0, allow_backorder=False)
    skus, wanted = demand_by_sku(network, order)
    sku_names = [network.sku_ids[int(s)] for s in skus]

    delivery: Quote | None = None
    try:
        delivery = quote_delivery(network, order, plain)
        budget.add(delivery)
        short = bool(delivery.shortfall)
    except ShortageError:
        if not settings.allow_backorder:
            raise
        short = True
    missing = dict.fromkeys(sku_names, 0)
    for s in delivery.shortfall if delivery is not None else ():
        missing[s.sku] += s.missing
    stock_quote: Quote | None = None
    inbound_demand = np.zeros_like(wanted)
    if short and settings.allow_backorder:
        # What can ship from stock now, and every Pareto plan of it.
        stock_quote = quote_delivery(
            network,
            order,
            replace(plain, allow_partial=True, full_frontier=True, time_limit_s=budget.left()),
        )
        budget.add(stock_quote)
        missing = dict.fromkeys(sku_names, 0)
        for s in stock_quote.shortfall:
            missing[s.sku] += s.missing
    stock_demand = wanted - np.array([missing[name] for name in sku_names], dtype=np.int64)
    if stock_quote is not None:
        free = inbound_costs(
            network, order.destination.lat, order.destination.lon, skus, wanted
        ).costs.available.sum(axis=0)
        inbound_demand = np.minimum(wanted - stock_demand, free)
        covered = stock_demand + inbound_demand
        if np.any(covered < wanted) and not settings.allow_partial:
            raise ShortageError(
                [
                    Shortage(sku_names[k], int(wanted[k]), int(covered[k]))
                    for k in np.flatnonzero(covered < wanted).tolist()
                ],
                reason="not enough available stock, even waiting for inbound receipts",
            )
    return Demand(
        skus, tuple(sku_names), wanted, stock_demand, inbound_demand, delivery, stock_quote
    )


def backorder_menu(
    network: Network, order: Order, demand: Demand, budget: LegBudget
) -> tuple[list[Option], list[Option], tuple[Shortfall, ...]]:
    """The delivery menu, frontier and shortfall when some units wait (``demand.waits``).

    Every Pareto plan from stock now combined with every Pareto plan of the
    receipts leg (the module docstring's exactness argument), labelled as the
    plain delivery menu is.
    """
    assert demand.stock_quote is not None
    settings = budget.settings
    remaining = [line.qty for line in order.lines]
    covered = demand.stock + demand.inbound
    shortfall = _shortfall(order, dict(zip(demand.names, covered.tolist(), strict=True)))
    stock_parts = [
        _Part(o.allocation.parcels, o.cost, o.delivery_days, o.proof)
        for o in demand.stock_quote.frontier
    ] or ([_EMPTY] if not demand.stock.any() else [])
    stock_cuts = demand.stock_quote.stats.cut_short
    after_stock = list(remaining)
    for k, name in enumerate(demand.names):
        _fill(order, name, int(demand.stock[k]), after_stock)
    leg = inbound_costs(
        network, order.destination.lat, order.destination.lon, demand.skus, demand.inbound
    )
    inbound_plans, inbound_cuts = budget.solve(leg, demand.inbound, full=True)
    inbound_parts = _parts(network, order, leg, inbound_plans, after_stock)
    combined = [
        _option(network, order, pair, (), settings, None)
        for pair in _combine(stock_parts, inbound_parts, settings)
    ]
    labels = _delivery_labels(combined, settings.value_of_day)
    legs: list[Leg] = [(stock_parts, stock_cuts), (inbound_parts, inbound_cuts)]
    combined = [
        _label_proof(replace(o, labels=lab), lab, legs, settings.value_of_day)
        for o, lab in zip(combined, labels, strict=True)
    ]
    order_of = {label: i for i, label in enumerate(Label)}
    options = sorted((o for o in combined if o.labels), key=lambda o: order_of[o.labels[0]])
    return options, combined, shortfall


def collect_options(
    network: Network, order: Order, store: str, demand: Demand, budget: LegBudget
) -> list[Option]:
    """The Pareto-optimal COLLECT plans at ``store`` (empty if it cannot gather the units)."""
    settings = budget.settings
    skus = demand.skus
    n = network.node_index[store]
    legs: list[Leg] = []
    left = [line.qty for line in order.lines]
    for units, inbound in ((demand.stock, False), (demand.inbound, True)):
        if not units.any():
            legs.append(([_EMPTY], ()))
            continue
        leg = collect_costs(network, n, skus, units, inbound=inbound)
        if not _covers(leg, units):
            return []
        plans, cuts = budget.solve(leg, units, full=bool(demand.inbound.any()))
        if not plans:
            return []
        legs.append((_parts(network, order, leg, plans, left), cuts))
        for k in range(skus.size):
            _fill(order, network.sku_ids[int(skus[k])], int(units[k]), left)
    pairs = _combine(legs[0][0], legs[1][0], settings)
    options = [_option(network, order, pair, (), settings, store) for pair in pairs]
    # The option labelled COLLECT (by sourcing.menu.quote) is proven only if no leg cut
    # short could hide a better one.
    pick = collect_pick(options, settings.value_of_day)
    if pick is not None:
        options[pick] = _label_proof(options[pick], (Label.COLLECT,), legs, settings.value_of_day)
    return options
