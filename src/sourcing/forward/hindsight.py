"""The perfect-hindsight bound of a replayed stream: the least cost any policy could reach.

A policy decides each order when it arrives; a clairvoyant planner knows the
whole stream and assigns every order at once. What the planner reaches, with
the same stock, replenishment and daily capacity, bounds every policy from
below; the distance between a policy and it is what foresight could still win.

Rules (those of the replay, :mod:`sourcing.simulate`): stock runs down
order by order from the network's ``on_hand``, every ``top_up_every_days``
(from midnight of the first order) each (node, SKU) is topped back up to its
starting level, a node ships at most ``capacity`` units per calendar day, an
order may ship only part of its units (the rest is lost), and each shipped
unit's storage credit uses the node's on-hand stock when its order is decided.

The replay's policies ship every unit they can when an order arrives (the
rest is lost), so with ``ship_what_it_can`` (default) the bound keeps that
rule: which units are served is then fixed by the arrival order, not by the
plan (per SKU, the period's stock serves the orders in turn until it runs
out), and the bound only decides where each served unit ships from. Without
the rule a clairvoyant planner could also choose *whom* to serve (lose a dear
early order to serve a cheap later one), which no replayed policy can do.

Since nothing carries over a top-up (stock is back at its starting level, and
never above it), the periods between top-ups are independent problems: each
is solved alone (on Dask when a runner is given).

Model of one period (money in millicents):

* data: orders o; each order's feasible allocations X_o (any plan the
  single-order model allows on the period's starting stock, units may be
  lost at a penalty ``P`` per unit, see :attr:`HindsightBound.penalty`);
  stock ``A[n, s]`` (available at the period's start); capacity
  ``cap[n]`` per day; the shipping cost (carrier + handling) of a plan,
  ``ship_o(x)``;
* storage credit: a unit of s leaving n with ``L`` units on hand earns
  ``g(L) = round(h_n * min(L / d_s, H))``. If m units of (n, s) ship in a
  period, in any order of any sizes up to ``q`` units of s per order, their
  total credit is at most ``F(m) = sum_{i < m} g(min(L0, L0 + q - 1 - i))``
  (unit i's order started at most ``q - 1`` units above it), concave in m;
* the bound: minimise ``sum_o ship_o(x_o) + P * lost_o(x_o) - sum_{n,s} F(m[n, s])``
  with ``m[n, s] = sum_o x_o[n, s] <= A[n, s]`` and units per (n, day) <= cap[n].

It is solved by column generation (Dantzig-Wolfe): a master LP picks a
convex combination of known plans per order (start: every order loses
everything), with ``F`` as tangent cuts; its duals price stock
(``lambda[n, s]``), capacity (``mu[n, day]``) and credit (``rho[n, s]``);
each order's cheapest plan under those prices (the single-order solver's
exact CHEAPEST on ``shipping + lambda - rho + mu`` per unit) is a new column
if it is cheaper than the order's dual. Whatever the prices, Lagrangian
duality gives a valid lower bound from the same pricing::

    LB = sum_o min_x [ship_o(x) + P lost_o(x) + sum (lambda - rho + mu) x]
         - sum lambda A - sum mu cap - sum_{n,s} max_{m <= M} (F(m) - rho m)

(exact minima per order: the solver's proofs; the last term is computed
exactly over integers). The best LB over the rounds is reported; the rounds
stop when the master LP and the LB meet within ``tolerance``.

A clairvoyant plan shows how tight the bound is: the master restricted to
the generated plans is solved as a MIP (SCIP, time-limited) and its plan is
replayed order by order with the independent evaluator (true credits, true
stock), so ``plan_cost`` is a cost a planner knowing the future could
really reach. The bound's own gap is ``(plan - LB) / plan``.

Comparing with a policy that lost ``u`` units: every policy satisfies
``cost + P u >= LB``, so ``LB - P u`` (:meth:`HindsightBound.cost_bound`)
bounds the cost of any policy losing at most u units. When every policy
ships all it can (the built-in ones do), ``u`` is the same for all.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

import numpy as np

from sourcing.costs import OrderCosts, order_costs
from sourcing.errors import ShortageError
from sourcing.evaluate import evaluate
from sourcing.forward.lp import OPTIMAL, LpSolution, SparseLp, csr, solve_lp, solve_mip
from sourcing.menu import quote
from sourcing.model import (
    MILLICENTS_PER_UNIT,
    UNLIMITED_CAPACITY,
    Allocation,
    FloatArray,
    IntArray,
    Label,
    Network,
    Order,
    OrderLine,
    ParcelPlan,
    QuoteSettings,
)
from sourcing.orders import demand_by_sku, lines_by_sku, spread_over_lines
from sourcing.solver import Plan, cheapest_plan

__all__ = [
    "HindsightBound",
    "HindsightSettings",
    "PeriodBound",
    "PeriodProblem",
    "TimedOrder",
    "hindsight_bound",
    "period_problems",
    "solve_period",
]

_SCALE: Final = float(MILLICENTS_PER_UNIT)  # the LPs work in currency units
_log = logging.getLogger(__name__)


class TimedOrder(Protocol):
    """An order of a replayed stream (``sourcing.simulate.SimOrder`` is one)."""

    @property
    def order_id(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def order(self) -> Order: ...


class _Runner(Protocol):
    def map_unordered(
        self, function: Callable[[PeriodProblem], PeriodBound], items: Sequence[PeriodProblem]
    ) -> Sequence[PeriodBound] | object: ...


@dataclass(frozen=True)
class HindsightSettings:
    """Knobs of the bound.

    ``max_rounds`` and ``time_limit_s`` cap the column generation per period;
    ``tolerance`` stops it once (master LP - LB) <= tolerance x |LP|;
    ``tangents``: initial cuts per stock position for the credit;
    ``pricing_time_limit_s``: the single-order solver's budget per order;
    ``mip_time_limit_s``: the clairvoyant plan's MIP (0: no plan).
    """

    #: The replay's rule that every order ships all it can while stock lasts (module doc).
    ship_what_it_can: bool = True
    max_rounds: int = 40
    time_limit_s: float = 1800.0
    tolerance: float = 2e-4
    tangents: int = 4
    pricing_time_limit_s: float = 1.0
    mip_time_limit_s: float = 60.0


@dataclass(frozen=True, eq=False)
class PeriodProblem:
    """One period between top-ups: its orders and the stock at its start (``network``)."""

    index: int
    network: Network
    orders: tuple[tuple[str, datetime, Order], ...]
    penalty: int
    settings: HindsightSettings
    #: Units no plan can ship under the replay's rule (the stock ran out before them).
    forced_lost: int = 0


@dataclass(frozen=True, eq=False)
class PeriodBound:
    """The bound of one period (money in millicents)."""

    index: int
    orders: int
    units: int
    #: Lagrangian lower bound of ship - credit + penalty x lost (the best of the rounds).
    lower: float
    #: The last restricted master LP's value (an upper end for the LP bound).
    master: float
    lost_lp: float
    rounds: int
    columns: int
    seconds: float
    #: The clairvoyant plan replayed by the evaluator: cost, lost units, per-order allocations.
    plan_cost: int | None
    plan_lost: int | None
    plan: tuple[Allocation, ...] | None
    status: str
    forced_lost: int = 0


@dataclass(frozen=True, eq=False)
class HindsightBound:
    """The bound of a whole stream: its periods added up."""

    periods: tuple[PeriodBound, ...]
    #: Millicents per lost unit in the bound's objective.
    penalty: int

    @property
    def lower(self) -> float:
        """Lower bound on ``cost + penalty x lost units`` of any policy (millicents)."""
        return sum(p.lower for p in self.periods)

    @property
    def plan_cost(self) -> int | None:
        costs = [p.plan_cost for p in self.periods]
        return None if any(c is None for c in costs) else sum(c or 0 for c in costs)

    @property
    def plan_lost(self) -> int | None:
        """Units of the stream the clairvoyant plan did not ship (the rule's own included)."""
        lost = [p.plan_lost for p in self.periods]
        if any(u is None for u in lost):
            return None
        return sum(u or 0 for u in lost) + self.forced_lost

    @property
    def forced_lost(self) -> int:
        """Units lost by the rule whatever the plan (0 without ``ship_what_it_can``)."""
        return sum(p.forced_lost for p in self.periods)

    def cost_bound(self, lost_units: int) -> float:
        """Lower bound on the cost (millicents) of any policy losing at most ``lost_units``."""
        return self.lower - self.penalty * max(lost_units - self.forced_lost, 0)

    @property
    def gap(self) -> float:
        """The bound's own gap: (clairvoyant plan - bound) / plan, on cost at the plan's losses."""
        cost, lost = self.plan_cost, self.plan_lost
        if cost is None or lost is None:
            return math.nan
        return (cost - self.cost_bound(lost)) / max(abs(cost), 1)

    def summary(self) -> dict[str, float]:
        """Numbers for reports (currency units)."""
        cost, lost = self.plan_cost, self.plan_lost
        return {
            "periods": float(len(self.periods)),
            "lower_bound_penalised": self.lower / _SCALE,
            "penalty_per_lost_unit": self.penalty / _SCALE,
            "plan_cost": math.nan if cost is None else cost / _SCALE,
            "plan_lost_units": math.nan if lost is None else float(lost),
            "forced_lost_units": float(self.forced_lost),
            "gap": self.gap,
            "rounds_max": float(max((p.rounds for p in self.periods), default=0)),
            "seconds": sum(p.seconds for p in self.periods),
        }


def lost_penalty(network: Network) -> int:
    """A lost unit's price: more than any unit could cost shipped alone, plus 1.00.

    The dearest customer parcel (base price + handling) + per-kg x the heaviest
    SKU + the largest storage credit; with it, losing a unit that some node
    could ship never pays.
    """
    rates = network.delivery_rates
    base = int(np.where(rates.offered, rates.base_price, 0).max())
    per_kg = int(np.where(rates.offered, rates.per_kg, 0).max())
    handling = int(network.handling_cost.max(initial=0))
    heaviest = int(network.weight_g.max(initial=0))
    credit = int(network.storage_cost.max(initial=0)) * network.horizon_days
    # Network money is in millicents (per kg for per_kg).
    return int(base + handling + credit + per_kg * heaviest / 1000 + MILLICENTS_PER_UNIT)


def period_problems(
    network: Network,
    orders: Sequence[TimedOrder],
    top_up_every_days: float | None,
    settings: HindsightSettings | None = None,
) -> list[PeriodProblem]:
    """The stream cut at its top-ups (one period without them), each with its starting stock."""
    settings = settings or HindsightSettings()
    stream = sorted(orders, key=lambda o: o.created_at)
    if not stream:
        return []
    t0 = stream[0].created_at.replace(hour=0, minute=0, second=0, microsecond=0)
    groups: dict[int, list[tuple[str, datetime, Order]]] = {}
    for item in stream:
        k = 0
        if top_up_every_days is not None:
            k = int((item.created_at - t0) / timedelta(days=top_up_every_days))
        groups.setdefault(k, []).append((item.order_id, item.created_at, item.order))
    penalty = lost_penalty(network)
    problems = []
    for k, group in sorted(groups.items()):
        forced = 0
        if settings.ship_what_it_can:
            group, forced = _served(network, group)
        problems.append(PeriodProblem(k, network, tuple(group), penalty, settings, forced))
    return problems


def _served(
    network: Network, group: list[tuple[str, datetime, Order]]
) -> tuple[list[tuple[str, datetime, Order]], int]:
    """Each order cut to what the replay's rule ships, and the units it cannot ship.

    Every order takes all it can of each SKU while the network has any left
    (any node can ship to any customer), so the units served are fixed by
    the arrival order, not by the policy: per SKU, the period's stock serves
    the orders in turn until it runs out. (Daily capacity can make a policy
    ship less; a plan then pays the penalty for what it cannot ship.)
    """
    left = network.available.sum(axis=0).astype(np.int64)
    served: list[tuple[str, datetime, Order]] = []
    lost = 0
    for order_id, at, order in group:
        lines = []
        for line in order.lines:
            k = network.sku_index[line.sku]
            take = min(line.qty, int(left[k]))
            left[k] -= take
            lost += line.qty - take
            if take:
                lines.append(OrderLine(line.sku, take))
        if lines:
            served.append((order_id, at, Order(order.destination, tuple(lines))))
    return served, lost


def hindsight_bound(
    network: Network,
    orders: Sequence[TimedOrder],
    top_up_every_days: float | None = None,
    settings: HindsightSettings | None = None,
    runner: object | None = None,
    progress: Callable[[int], object] | None = None,
) -> HindsightBound:
    """The perfect-hindsight bound of ``orders`` (module doc).

    ``runner`` (``sourcing.batch.LocalRunner`` or ``DaskRunner``) runs the
    periods; by default one after another here. ``progress`` is called with
    each period's order count as it finishes.
    """
    problems = period_problems(network, orders, top_up_every_days, settings)
    if runner is None:
        results = (solve_period(p) for p in problems)
    else:
        results = runner.map_unordered(solve_period, problems)  # type: ignore[attr-defined]
    periods: list[PeriodBound] = []
    for result in results:
        periods.append(result)
        if progress is not None:
            progress(result.orders)
    periods.sort(key=lambda p: p.index)
    penalty = problems[0].penalty if problems else lost_penalty(network)
    return HindsightBound(tuple(periods), penalty)


# ------------------------------------------------------------------ one period


@dataclass(frozen=True, eq=False)
class _Priced:
    """One order's pricing arrays: its candidates plus a last, 'lost' pseudo-candidate."""

    costs: OrderCosts
    node: IntArray  # C (the lost row: -1)
    cell: IntArray  # C x K: node * S + sku (lost row: -1)
    demand: IntArray
    day: int
    units: int


def _priced(network: Network, free: Network, order: Order, day: int, penalty: int) -> _Priced:
    skus, demand = demand_by_sku(network, order)
    base = order_costs(free, order.destination.lat, order.destination.lon, skus, demand)
    c, v, k = base.unit.shape
    s_count = len(network.sku_ids)

    def grow(array: np.ndarray, row: np.ndarray) -> np.ndarray:
        return np.concatenate([array, row[None]], axis=0)

    usable = np.zeros(v, dtype=np.bool_)
    usable[0] = True
    costs = OrderCosts(
        skus=base.skus,
        demand=base.demand,
        nodes=grow(base.nodes, np.array(-1)),
        available=grow(base.available, demand),
        capacity=grow(base.capacity, np.array(int(demand.sum()))),
        distance_km=grow(base.distance_km, np.array(0.0)),
        zone=grow(base.zone, np.array(0)),
        usable=grow(base.usable, usable),
        fixed=grow(base.fixed, np.zeros(v, dtype=np.int64)),
        unit=grow(base.unit, np.full((v, k), penalty, dtype=np.int64)),
        arrival=grow(base.arrival, np.zeros(v, dtype=np.int64)),
        credit=grow(base.credit, np.zeros(k, dtype=np.int64)),
        per_unit_shipping=grow(base.per_unit_shipping, np.full((v, k), penalty, dtype=np.int64)),
        services=base.services,
    )
    cell = np.full((c + 1, k), -1, dtype=np.int64)
    cell[:c] = base.nodes[:, None] * s_count + skus[None, :]
    return _Priced(costs, costs.nodes, cell, demand, day, int(demand.sum()))


@dataclass
class _Columns:
    """The master's columns so far; their nonzeros kept flat (stock rows, capacity rows)."""

    order: list[int] = field(default_factory=list)
    cost: list[int] = field(default_factory=list)  # ship + penalty x lost, millicents
    service: list[IntArray] = field(default_factory=list)  # per candidate, -1 unused
    units: list[IntArray] = field(default_factory=list)  # C x K
    lost: list[int] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)
    stock: list[tuple[IntArray, IntArray, IntArray]] = field(default_factory=list)
    capacity: list[tuple[IntArray, IntArray, IntArray]] = field(default_factory=list)

    def flat(self, which: str) -> tuple[IntArray, IntArray, IntArray]:
        """(column, row, qty) of every nonzero of the stock or capacity rows."""
        parts = self.stock if which == "stock" else self.capacity
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        return (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
        )


@dataclass(frozen=True, eq=False)
class _Credit:
    """Per stock position with a storage credit: F(m) for m = 0..M (cumulative, millicents)."""

    cells: IntArray  # positions (node * S + sku)
    top: list[FloatArray]  # per position: F(0..M)


def _credit_curves(
    network: Network, cells: IntArray, most: IntArray, biggest: IntArray
) -> list[FloatArray]:
    """F(0..M) per position (module doc), M = ``most``, q = ``biggest`` units in one order."""
    s_count = len(network.sku_ids)
    curves: list[FloatArray] = []
    horizon = network.horizon_days
    for cell, m_most, q in zip(cells.tolist(), most.tolist(), biggest.tolist(), strict=True):
        n, s = divmod(cell, s_count)
        start = int(network.on_hand[n, s])
        demand = float(network.daily_demand[s])
        i = np.arange(m_most, dtype=np.float64)
        level = np.minimum(start, start + q - 1 - i)
        cover = level / demand if demand > 0 else np.full(m_most, horizon)
        unit = np.rint(int(network.storage_cost[n]) * np.minimum(cover, horizon))
        curves.append(np.concatenate([[0.0], np.cumsum(np.maximum(unit, 0.0))]))
    return curves


def _conjugate(curve: FloatArray, price: float) -> float:
    """max over whole m of F(m) - price x m."""
    return float((curve - price * np.arange(curve.size)).max())


def _tangent(curve: FloatArray, m: int) -> tuple[float, float]:
    """(intercept, slope) of the cut through F at m with F's slope to the right of m."""
    m = min(max(m, 0), curve.size - 2)
    slope = float(curve[m + 1] - curve[m])
    return float(curve[m] - slope * m), slope


def _allocation(
    network: Network, order: Order, priced: _Priced, service: IntArray, units: IntArray
) -> Allocation:
    lines_of_sku = lines_by_sku(network, order)
    remaining = {i: line.qty for i, line in enumerate(order.lines)}
    skus = priced.costs.skus.tolist()
    parcels: list[ParcelPlan] = []
    for c in np.flatnonzero(service[:-1] >= 0).tolist():
        contents = spread_over_lines(
            order, lines_of_sku, remaining, zip(skus, units[c].tolist(), strict=True)
        )
        n = int(priced.node[c])
        v = int(priced.costs.services[int(service[c])])
        parcels.append(ParcelPlan(network.node_ids[n], network.service_ids[v], contents))
    return Allocation(tuple(parcels))


@dataclass(frozen=True)
class _RoundPrices:
    """What one round of column generation priced (:meth:`_Period.column_round`)."""

    #: Stock prices per position, whole millicents per unit.
    lam: FloatArray
    #: Plans that priced below their order's dual, added as columns.
    added: int
    #: The Lagrangian bound at these prices.
    lower: float


class _Period:
    """Column generation on one period (see the module doc)."""

    def __init__(self, problem: PeriodProblem) -> None:
        self.problem = problem
        network = problem.network
        self.network = network
        self.s_count = len(network.sku_ids)
        free = network.replace(storage_cost=np.zeros(len(network.node_ids), dtype=np.int64))
        days = sorted({at.date() for _, at, _ in problem.orders})
        day_of = {d: i for i, d in enumerate(days)}
        self.orders = [order for _, _, order in problem.orders]
        self.priced = [
            _priced(network, free, order, day_of[at.date()], problem.penalty)
            for _, at, order in problem.orders
        ]
        self.available = network.available.reshape(-1)
        self._positions()
        self._capacity_rows(len(days))
        self.columns = _Columns()
        #: Per order: the prices it was last priced at, its bound and plan (reused if unchanged).
        self.last: dict[int, tuple[bytes, float, Plan]] = {}
        self.priced_count = 0
        for o, p in enumerate(self.priced):  # start: every order loses everything
            c, k = p.costs.available.shape
            service = np.full(c, -1, dtype=np.int64)
            service[-1] = 0
            units = np.zeros((c, k), dtype=np.int64)
            units[-1] = p.demand
            self.add(o, service, units)

    def _positions(self) -> None:
        """Stock positions any order could draw on; their most units and credit curves."""
        none = np.zeros(0, dtype=np.int64)
        cells = np.concatenate([p.cell[:-1].reshape(-1) for p in self.priced] or [none])
        wants = np.concatenate(
            [np.broadcast_to(p.demand, p.cell[:-1].shape).reshape(-1) for p in self.priced]
            or [none]
        ).astype(np.int64)
        ok = cells >= 0
        cells, wants = cells[ok], wants[ok]
        self.cells, inverse = np.unique(cells, return_inverse=True)
        total = np.bincount(inverse, weights=wants, minlength=self.cells.size).astype(np.int64)
        biggest = np.zeros(self.cells.size, dtype=np.int64)
        np.maximum.at(biggest, inverse, wants)
        avail = self.available[self.cells]
        self.most = np.minimum(total, avail)
        nodes = self.cells // self.s_count
        has_credit = (self.network.storage_cost[nodes] > 0) & (self.most > 0)
        self.credit_index = np.flatnonzero(has_credit)
        self.curves = _credit_curves(
            self.network,
            self.cells[self.credit_index],
            self.most[self.credit_index],
            np.minimum(biggest[self.credit_index], avail[self.credit_index]),
        )
        t = max(self.problem.settings.tangents, 1)
        self.tangents: list[set[int]] = []
        for curve in self.curves:
            top = curve.size - 2
            self.tangents.append({round(top * j / max(t - 1, 1)) for j in range(t)})

    def _capacity_rows(self, n_days: int) -> None:
        """(node, day) pairs whose daily capacity could bind: what could be asked exceeds it."""
        network = self.network
        limited = network.capacity < UNLIMITED_CAPACITY
        ask = np.zeros((len(network.node_ids), n_days), dtype=np.int64)
        for p in self.priced:
            nodes = p.node[:-1]
            if nodes.size:
                ask[nodes, p.day] += p.costs.available[:-1].sum(axis=1)
        n, d = np.nonzero(limited[:, None] & (ask > network.capacity[:, None]))
        self.cap_lookup = np.full(ask.shape, -1, dtype=np.int64)
        self.cap_lookup[n, d] = np.arange(n.size)
        self.cap_node, self.cap_day = n, d
        self.cap_limit = network.capacity[n].astype(np.float64)

    def add(self, o: int, service: IntArray, units: IntArray) -> bool:
        """Add order o's plan as a column (False if it is there already)."""
        cols = self.columns
        key = o.to_bytes(4, "little") + service.tobytes() + units.tobytes()
        if key in cols.seen:
            return False
        cols.seen.add(key)
        p = self.priced[o]
        costs = p.costs
        used = np.flatnonzero(service >= 0)
        sv = service[used]
        j = len(cols.order)
        cols.order.append(o)
        cols.cost.append(
            int(costs.fixed[used, sv].sum() + (costs.unit[used, sv, :] * units[used]).sum())
        )
        cols.service.append(service.copy())
        cols.units.append(units.copy())
        cols.lost.append(int(units[-1].sum()))
        c_idx, k_idx = np.nonzero(units[:-1])
        rows = np.searchsorted(self.cells, p.cell[c_idx, k_idx])
        cols.stock.append((np.full(rows.size, j, dtype=np.int64), rows, units[c_idx, k_idx]))
        per_node = units[:-1].sum(axis=1)
        nodes = np.flatnonzero(per_node)
        cap_rows = self.cap_lookup[p.node[nodes], p.day] if nodes.size else nodes
        keep = cap_rows >= 0
        cols.capacity.append(
            (np.full(int(keep.sum()), j, dtype=np.int64), cap_rows[keep], per_node[nodes][keep])
        )
        return True

    # -------------------------------------------------------------- master LP

    def cuts(self) -> tuple[IntArray, FloatArray, FloatArray]:
        """Every credit cut: (credit variable, intercept, slope), grouped by variable."""
        owner: list[int] = []
        intercept: list[float] = []
        slope: list[float] = []
        for i, points in enumerate(self.tangents):
            for m in sorted(points):
                a, b = _tangent(self.curves[i], m)
                owner.append(i)
                intercept.append(a)
                slope.append(b)
        return (
            np.asarray(owner, dtype=np.int64),
            np.asarray(intercept, dtype=np.float64),
            np.asarray(slope, dtype=np.float64),
        )

    def master(self) -> tuple[SparseLp, int, int, tuple[IntArray, FloatArray, FloatArray]]:
        """The restricted master (module doc), in currency units.

        Columns: the plans (w), then one credit variable C_i per credit position.
        Rows: one convexity row per order, stock per position, capacity per
        (node, day) that could bind, then the credit cuts C_i - b m_i <= a.
        """
        cols = self.columns
        n_orders, n_cols = len(self.priced), len(cols.order)
        n_stock, n_cap = self.cells.size, len(self.cap_limit)
        stock0, cap0, cut0 = n_orders, n_orders + n_stock, n_orders + n_stock + n_cap
        owner, intercept, slope = self.cuts()
        n_cuts, n_credit = owner.size, len(self.curves)
        s_col, s_row, s_qty = cols.flat("stock")
        c_col, c_row, c_qty = cols.flat("capacity")
        rows = [np.asarray(cols.order, dtype=np.int64), stock0 + s_row, cap0 + c_row]
        index = [np.arange(n_cols, dtype=np.int64), s_col, c_col]
        values = [np.ones(n_cols), s_qty.astype(np.float64), c_qty.astype(np.float64)]
        if n_cuts:
            rows.append(cut0 + np.arange(n_cuts))
            index.append(n_cols + owner)
            values.append(np.ones(n_cuts))
            # -b m_i: every stock nonzero at a credit position, once per cut of that position.
            credit_of_row = np.full(n_stock, -1, dtype=np.int64)
            credit_of_row[self.credit_index] = np.arange(n_credit)
            ci = credit_of_row[s_row]
            has = ci >= 0
            ci, col, qty = ci[has], s_col[has], s_qty[has]
            first = np.searchsorted(owner, np.arange(n_credit + 1))
            count = first[ci + 1] - first[ci]
            rep = np.repeat(np.arange(ci.size), count)
            offset = np.arange(rep.size) - np.repeat(np.cumsum(count) - count, count)
            cut = first[ci][rep] + offset
            rows.append(cut0 + cut)
            index.append(col[rep])
            values.append(-slope[cut] * qty[rep] / _SCALE)
        n_vars = n_cols + n_credit
        matrix = csr(
            np.concatenate(rows),
            np.concatenate(index),
            np.concatenate(values),
            (cut0 + n_cuts, n_vars),
        )
        lp = SparseLp(
            cost=np.concatenate(
                [np.asarray(cols.cost, dtype=np.float64) / _SCALE, -np.ones(n_credit)]
            ),
            lower=np.concatenate([np.zeros(n_cols), np.full(n_credit, -np.inf)]),
            upper=np.full(n_vars, np.inf),
            matrix=matrix,
            row_lower=np.concatenate(
                [np.ones(n_orders), np.full(n_stock + n_cap + n_cuts, -np.inf)]
            ),
            row_upper=np.concatenate(
                [
                    np.ones(n_orders),
                    self.available[self.cells].astype(np.float64),
                    self.cap_limit,
                    intercept / _SCALE,
                ]
            ),
        )
        return lp, n_cols, cut0, (owner, intercept, slope)

    # ---------------------------------------------------------------- pricing

    def price(self, adjust: IntArray, cap_price: IntArray, duals: FloatArray) -> tuple[float, int]:
        """Price every order: add the columns with a negative reduced cost.

        ``adjust`` (per stock position) and ``cap_price`` (per capacity row)
        are whole millicents per unit. Returns (sum over orders of a proven
        lower bound on the priced minimum, columns added).
        """
        settings = QuoteSettings(time_limit_s=self.problem.settings.pricing_time_limit_s)
        by_node_day = np.zeros(self.cap_lookup.shape, dtype=np.int64)
        by_node_day[self.cap_node, self.cap_day] = cap_price
        total = 0.0
        added = 0
        for o, p in enumerate(self.priced):
            costs = p.costs
            extra = np.zeros(p.cell.shape, dtype=np.int64)
            real = p.cell >= 0
            rows = np.searchsorted(self.cells, np.where(real, p.cell, 0))
            extra[real] = adjust[rows[real]]
            extra[:-1] += by_node_day[p.node[:-1], p.day][:, None]
            key = extra.tobytes()
            cached = self.last.get(o)
            if cached is not None and cached[0] == key:
                # Same prices on every candidate as last round: the same minimum (and
                # its column is in the master already).
                _, floor, plan = cached
            else:
                priced_costs = OrderCosts(
                    skus=costs.skus,
                    demand=costs.demand,
                    nodes=costs.nodes,
                    available=costs.available,
                    capacity=costs.capacity,
                    distance_km=costs.distance_km,
                    zone=costs.zone,
                    usable=costs.usable,
                    fixed=costs.fixed,
                    unit=costs.unit + extra[:, None, :],
                    arrival=costs.arrival,
                    credit=costs.credit,
                    per_unit_shipping=costs.per_unit_shipping,
                    services=costs.services,
                )
                deadline = time.perf_counter() + settings.time_limit_s
                found = cheapest_plan(priced_costs, p.demand, settings, deadline)
                if found is None:  # cannot happen: the lost row covers everything
                    raise AssertionError("an order without any plan")
                plan = found
                floor = float(plan.cost)
                if plan.status != OPTIMAL:
                    gap = 1.0 if math.isnan(plan.gap) else plan.gap
                    floor = plan.cost - gap * max(abs(plan.cost), 1)
                self.last[o] = (key, floor, plan)
                self.priced_count += 1
            total += floor
            if plan.cost / _SCALE < duals[o] - 1e-7 and self.add(o, plan.service, plan.units):
                added += 1
        return total, added

    def duals(
        self, y: FloatArray, cut0: int, owner: IntArray, slope: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The master's duals ``y`` as prices in whole millicents per unit: (lambda per stock
        position, mu per capacity row, rho per stock position: the credit cuts' slopes)."""
        n_orders, n_stock = len(self.priced), self.cells.size
        lam = np.rint(np.maximum(-y[n_orders : n_orders + n_stock], 0.0) * _SCALE)
        cap = np.rint(np.maximum(-y[n_orders + n_stock : cut0], 0.0) * _SCALE)
        theta = np.maximum(-y[cut0 : cut0 + owner.size], 0.0)
        rho_credit = np.bincount(owner, weights=theta * slope, minlength=len(self.curves))
        rho = np.zeros(n_stock)
        rho[self.credit_index] = np.rint(rho_credit)
        return lam, cap, rho

    def lagrangian(self, total: float, lam: FloatArray, cap: FloatArray, rho: FloatArray) -> float:
        """The Lagrangian bound (module doc) from the priced minima's sum ``total``."""
        available = self.available[self.cells].astype(np.float64)
        lower = total - float(lam @ available) - float(cap @ self.cap_limit)
        return lower - sum(
            _conjugate(curve, float(rho[self.credit_index[i]]))
            for i, curve in enumerate(self.curves)
        )

    def column_round(
        self, price_capacity: bool = True
    ) -> tuple[LpSolution, int, _RoundPrices | None]:
        """One round of column generation: the restricted master solved (and its column
        count); when it is optimal, every order priced at its duals (capacity at zero
        unless ``price_capacity``), the plans that pay added as columns, and the
        Lagrangian bound at those prices. None in place of the prices: the master was not
        solved to optimality."""
        lp, n_cols, cut0, (owner, _, slope) = self.master()
        solution = solve_lp(lp)
        if solution.status != OPTIMAL:
            return solution, n_cols, None
        y = solution.duals
        lam, cap, rho = self.duals(y, cut0, owner, slope)
        if not price_capacity:
            cap = np.zeros_like(cap)
        total, added = self.price(
            (lam - rho).astype(np.int64), cap.astype(np.int64), y[: len(self.priced)]
        )
        return solution, n_cols, _RoundPrices(lam, added, self.lagrangian(total, lam, cap, rho))

    def position_units(self, weights: FloatArray) -> FloatArray:
        """m per stock position under the column weights (columns added since weigh 0)."""
        col, row, qty = self.columns.flat("stock")
        weights = np.concatenate([weights, np.zeros(len(self.columns.order) - weights.size)])
        m = np.bincount(row, weights=weights[col] * qty, minlength=self.cells.size)
        return m.astype(np.float64)


def solve_period(problem: PeriodProblem) -> PeriodBound:
    """Column generation, the Lagrangian bound and the clairvoyant plan of one period."""
    started = time.perf_counter()
    period = _Period(problem)
    settings = problem.settings
    n_orders = len(period.priced)
    best_lower = -math.inf
    master_value = math.nan
    lost_lp = math.nan
    rounds = 0
    status = "ROUND_LIMIT"
    solution = None
    while rounds < settings.max_rounds:
        rounds += 1
        solution, n_cols, prices = period.column_round()
        if prices is None:
            status = f"MASTER_{solution.status}"
            break
        master_value = solution.objective * _SCALE
        added = prices.added
        best_lower = max(best_lower, prices.lower)
        # Tighter credit cuts where the LP's credit sits above F's interpolation at m.
        credit_values = solution.values[n_cols:] * _SCALE
        m_now = period.position_units(solution.values[:n_cols])
        cut_added = 0
        for i, curve in enumerate(period.curves):
            m = float(m_now[period.credit_index[i]])
            lo = min(math.floor(m + 1e-9), curve.size - 1)
            hi = min(lo + 1, curve.size - 1)
            interp = curve[lo] + (m - lo) * (curve[hi] - curve[lo])
            if credit_values[i] > interp + 1.0:
                before = len(period.tangents[i])
                period.tangents[i].update({max(lo - 1, 0), min(lo, curve.size - 2)})
                cut_added += len(period.tangents[i]) - before
        gap = (master_value - best_lower) / max(abs(master_value), 1.0)
        _log.info(
            "period %d round %d: master %.2f, bound %.2f (gap %.4f%%), %d columns added, "
            "%d cuts, %d orders priced so far, %.1f s",
            problem.index,
            rounds,
            master_value / _SCALE,
            best_lower / _SCALE,
            100 * gap,
            added,
            cut_added,
            period.priced_count,
            time.perf_counter() - started,
        )
        if gap <= settings.tolerance or (added == 0 and cut_added == 0):
            status = "CONVERGED"
            break
        if time.perf_counter() - started > settings.time_limit_s:
            status = "TIME_LIMIT"
            break
    if solution is not None and solution.status == OPTIMAL:
        lost = np.asarray(period.columns.lost, dtype=np.float64)
        lost_lp = float(lost @ solution.values[: lost.size])
    weights = None
    if solution is not None and solution.status == OPTIMAL:
        weights = np.concatenate([solution.values[: len(period.columns.order)], np.zeros(0)])[
            : len(period.columns.order)
        ]
        if weights.size < len(period.columns.order):
            weights = np.concatenate([weights, np.zeros(len(period.columns.order) - weights.size)])
    plan, plan_cost, plan_lost = _clairvoyant(period, settings.mip_time_limit_s, weights)
    return PeriodBound(
        index=problem.index,
        orders=n_orders,
        units=sum(p.units for p in period.priced),
        lower=best_lower,
        master=master_value,
        lost_lp=lost_lp,
        rounds=rounds,
        columns=len(period.columns.order),
        seconds=time.perf_counter() - started,
        plan_cost=plan_cost,
        plan_lost=plan_lost,
        plan=plan,
        status=status,
        forced_lost=problem.forced_lost,
    )


def _clairvoyant(
    period: _Period, time_limit_s: float, weights: FloatArray | None
) -> tuple[tuple[Allocation, ...] | None, int | None, int | None]:
    """A real plan knowing the period's orders: the better of two, each replayed by the
    evaluator on the running stock.

    * the master on the generated plans as a MIP (SCIP, ``time_limit_s``);
    * the LP's plans in time order: each order takes its heaviest plan in the
      last master LP that still fits the running stock and capacity, or else
      the cheapest plan of what is left (the optimiser, partial allowed).
    """
    if time_limit_s <= 0:
        return None, None, None
    by_order: dict[int, list[int]] = {}
    if weights is not None:
        ranked = np.argsort(-weights, kind="stable")
        for j in ranked[weights[ranked] > 1e-6].tolist():
            by_order.setdefault(period.columns.order[j], []).append(j)
    plans = [_replay_plan(period, by_order)]
    lp, n_cols, _, _ = period.master()
    solution = solve_mip(lp, np.arange(n_cols, dtype=np.int64), time_limit_s)
    if solution is not None:
        chosen: dict[int, list[int]] = {}
        for j in np.flatnonzero(solution[:n_cols] > 0.5).tolist():
            chosen.setdefault(period.columns.order[j], [j])
        plans.append(_replay_plan(period, chosen))
    penalty = period.problem.penalty
    return min(plans, key=lambda plan: plan[1] + penalty * plan[2])


def _replay_plan(
    period: _Period, choices: dict[int, list[int]]
) -> tuple[tuple[Allocation, ...], int, int]:
    """Replay each order's first fitting choice (else its cheapest plan on what is left)."""
    network = period.network
    on_hand = np.array(network.on_hand, dtype=np.int64)  # a writable copy
    used: dict[tuple[int, int], int] = {}
    limited = network.capacity < UNLIMITED_CAPACITY
    allocations: list[Allocation] = []
    total = lost = 0
    for o, order in enumerate(period.orders):
        p = period.priced[o]
        left = np.array(network.capacity, dtype=np.int64)
        for n in np.flatnonzero(limited).tolist():
            left[n] = max(int(left[n]) - used.get((n, p.day), 0), 0)
        view = network.replace(on_hand=on_hand.copy(), capacity=left)
        evaluation = None
        for j in choices.get(o, []):
            allocation = _allocation(
                network, order, p, period.columns.service[j], period.columns.units[j]
            )
            trial = evaluate(view, order, allocation, allow_partial=True)
            if trial.is_feasible:
                evaluation = trial
                break
        if evaluation is None:
            try:
                option = quote(view, order, QuoteSettings(allow_partial=True)).option(
                    Label.CHEAPEST
                )
            except ShortageError:
                option = None
            allocation = option.allocation if option is not None else Allocation(())
            evaluation = evaluate(view, order, allocation, allow_partial=True)
        for parcel in evaluation.parcels:
            n = network.node_index[parcel.node_id]
            units = sum(line.qty for line in parcel.lines)
            used[(n, p.day)] = used.get((n, p.day), 0) + units
            for line in parcel.lines:
                on_hand[n, network.sku_index[line.sku]] -= line.qty
        total += evaluation.cost
        lost += sum(s.missing for s in evaluation.shortfall)
        allocations.append(allocation)
    return tuple(allocations), total, lost


# The column generation's parts, for the sampled-future prices (sourcing.forward.sampled).
Period = _Period
served_in_turn = _served
