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
found by the epsilon-constraint method: ``P(D, p)``, the least (cost, then
parcels) plan delivering by day D in at most p parcels, is solved for the
candidate delivery days D (the distinct arrival days). CHEAPEST, FASTEST,
SINGLE_PARCEL and BALANCED are read off the results; a deadline that cannot
win any label is skipped. With ``full_frontier`` every deadline is solved and,
below each optimum's parcel count, every smaller cap p too: the whole
frontier.

Each ``P(D, p)`` is closed by the cheapest means that proves it (DESIGN
section 8), in this order:

1. dominated services are dropped (per node: no dearer and no slower, or
   strictly cheaper per parcel);
2. plans are enumerated exactly by parcel count (one parcel, two, three...)
   while the sets to try stay few: for a fixed set of parcels the best split
   is cheapest unit first, so pricing a set is a few numpy operations;
3. between rounds, a bound on plans with more parcels settles the question:
   the cheapest fixed costs plus the cheapest units, then a Lagrangian bound
   (demand rows relaxed; LP strength, tightened by the parcel count) whose
   reduced costs also prune nodes; a drop heuristic from the relaxation's
   open nodes and an add/drop/swap local search tighten the best plan;
4. only what is left goes to CP-SAT: the model above on the surviving nodes
   and parcel counts, hinted with the best plan and given the bound.

Each option's :class:`~sourcing.model.Proof` names the step that proved it.
Every option is re-priced by the independent evaluator before it is returned.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Final

import numpy as np
from ortools.sat.python import cp_model

from sourcing.costs import OrderCosts, order_costs
from sourcing.errors import Shortage, ShortageError
from sourcing.evaluate import evaluate
from sourcing.model import (
    Allocation,
    BoolArray,
    FloatArray,
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

OPTIMAL: Final = "OPTIMAL"
FEASIBLE: Final = "FEASIBLE"
# Subset enumeration is skipped above this many (set x member x SKU) cells.
_MAX_SUBSET_CELLS: Final = 16_000_000
# ... and priced this many cells at a time, to bound memory.
_CHUNK_CELLS: Final = 1_000_000
# Below this many cells, enumerating beats computing a bound first.
_CHEAP_CELLS: Final = 40_000
_INF: Final = np.iinfo(np.int64).max // 4


@dataclass(frozen=True, eq=False)
class _Plan:
    """An allocation in solver coordinates: service per candidate (-1 unused), units per SKU."""

    service: IntArray  # C
    units: IntArray  # C x K
    cost: int
    day: int
    parcels: int
    # A plan proves nothing until a bound or a complete search says so (_proven).
    status: str = FEASIBLE
    gap: float = float("nan")
    method: str = "heuristic"

    def key(self) -> bytes:
        return self.service.tobytes() + self.units.tobytes()

    @cached_property
    def slots(self) -> tuple[IntArray, IntArray]:
        """(nodes, services) of the parcels it opens."""
        nodes = np.flatnonzero(self.service >= 0)
        return nodes, self.service[nodes]


def _plan_from(costs: OrderCosts, service: IntArray, units: IntArray) -> _Plan:
    used = np.flatnonzero(service >= 0)
    sv = service[used]
    cost = int(costs.fixed[used, sv].sum() + (costs.unit[used, sv, :] * units[used]).sum())
    day = int(costs.arrival[used, sv].max()) if used.size else 0
    return _Plan(service, units, cost, day, int(used.size))


@dataclass(frozen=True, eq=False)
class _Deadline:
    """What every sub-problem ``P(D, p)`` of one deadline D shares: computed once per D."""

    day: int
    #: C x V: the (node, service) slots usable by D, dominated services removed.
    elig: BoolArray
    #: C x V: a parcel's fixed cost on eligible slots, ``_INF`` elsewhere.
    fixed: IntArray
    #: Per node with an eligible slot, its cheapest parcel, ascending; and the prefix sums from 0.
    sorted_fixed: IntArray
    fixed_prefix: IntArray
    #: C x K: each node's cheapest eligible unit cost per SKU (inf: no eligible slot).
    unit_min: FloatArray
    transport_lb: int
    #: The best one-parcel plan (least cost, then earliest), if any.
    single: _Plan | None


@dataclass
class _Context:
    """One order's solve: its arrays, settings, caches and statistics.

    Several arrays are kept transposed, nodes last (K x V x C, V x C, K x C):
    numpy pays per step of the innermost axis, and reductions or elementwise
    work over the short service (V) and SKU (K) axes are several times
    slower with those innermost than over the long node axis.
    """

    costs: OrderCosts
    demand: IntArray
    settings: QuoteSettings
    deadline: float
    stats: dict[str, int] = field(default_factory=lambda: {"sub": 0, "bound": 0, "cpsat": 0})
    cache: dict[tuple[int, int], _Plan | None] = field(default_factory=dict)
    known: list[_Plan] = field(default_factory=list)
    #: The Lagrangian prices last found: a warm start for the next bound.
    prices: np.ndarray | None = None
    #: Per deadline day, what its sub-problems share (None: the demand cannot be covered by then).
    deadlines: dict[int, _Deadline | None] = field(default_factory=dict)

    def out_of_time(self) -> bool:
        stop = self.settings.should_stop
        return time.perf_counter() > self.deadline or (stop is not None and stop())

    @cached_property
    def dominance(self) -> list[tuple[int, int, BoolArray]]:
        """Deadline-independent service dominance (:func:`_dominance`), once per order."""
        return _dominance(self)

    @cached_property
    def unit_kvc(self) -> IntArray:
        """``costs.unit`` as K x V x C."""
        return np.ascontiguousarray(self.costs.unit.transpose(2, 1, 0))

    @cached_property
    def unit_kvc_float(self) -> FloatArray:
        """``costs.unit`` as K x V x C floats, for the bounds."""
        return self.unit_kvc.astype(np.float64)

    @cached_property
    def available_kc(self) -> IntArray:
        """``costs.available`` as K x C."""
        return np.ascontiguousarray(self.costs.available.T)

    @cached_property
    def fixed_vc(self) -> IntArray:
        """``costs.fixed`` as V x C."""
        return np.ascontiguousarray(self.costs.fixed.T)

    @cached_property
    def usable_vc(self) -> BoolArray:
        """``costs.usable`` as V x C."""
        return np.ascontiguousarray(self.costs.usable.T)

    @cached_property
    def arrival_vc(self) -> IntArray:
        """``costs.arrival`` as V x C."""
        return np.ascontiguousarray(self.costs.arrival.T)

    @cached_property
    def single_slots(self) -> tuple[IntArray, IntArray, IntArray]:
        """(nodes, services, costs) of the slots that can ship the whole demand as one parcel.

        Ranked by cost, then arrival, then node and service: for any deadline
        the first eligible one is the best single parcel.
        """
        costs, demand = self.costs, self.demand
        covers = (self.available_kc >= demand[:, None]).all(axis=0)
        covers &= costs.capacity >= demand.sum()
        nodes, services = np.nonzero(costs.usable & covers[:, None])
        total = costs.fixed[nodes, services] + demand @ self.unit_kvc[:, services, nodes]
        # Stable: equal (cost, arrival) keep np.nonzero's (node, service) order.
        rank = np.lexsort((costs.arrival[nodes, services], total))
        return nodes[rank], services[rank], total[rank]


def _min_of_rows(rows: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """``np.min(rows, axis=0)`` as elementwise minimums: faster over a short first axis."""
    least: np.ndarray = rows[0]
    for row in rows[1:]:
        least = np.minimum(least, row)
    return least


def _dominance(ctx: _Context) -> list[tuple[int, int, BoolArray]]:
    """Per ordered service pair (b, a): the nodes where a, when usable, makes b unneeded.

    Service b of a node is dropped when another service a of the same node is
    no dearer per parcel, per unit of every SKU, and no slower (ties keep the
    lower index), or strictly cheaper per parcel and no dearer per unit
    whatever its speed: some optimal plan of the sub-problem never needs b.
    None of this depends on the deadline, so it is computed once per order.
    """
    fixed, arrival, unit = ctx.fixed_vc, ctx.arrival_vc, ctx.unit_kvc
    pairs = []
    n_services = fixed.shape[0]
    for b in range(n_services):
        for a in range(n_services):
            if a == b:
                continue
            units_not_dearer = (unit[:, a] <= unit[:, b]).all(axis=0)
            not_worse = (fixed[a] <= fixed[b]) & (arrival[a] <= arrival[b]) & units_not_dearer
            strictly = (
                (fixed[a] < fixed[b])
                | (arrival[a] < arrival[b])
                | (unit[:, a] < unit[:, b]).any(axis=0)
            )
            # A strictly cheaper parcel beats b in every plan, whatever the speed.
            cheaper = (fixed[a] < fixed[b]) & units_not_dearer
            pairs.append((b, a, (not_worse & (strictly | (a < b))) | cheaper))
    return pairs


def _eligible(ctx: _Context, day: int) -> BoolArray:
    """V x C: slots usable by ``day``, dominated services removed (:func:`_dominance`)."""
    elig: BoolArray = ctx.usable_vc & (ctx.arrival_vc <= day)
    # Same order as pruning pair by pair: a service pruned earlier no longer prunes others.
    for b, a, beaten in ctx.dominance:
        elig[b] &= ~(beaten & elig[a])
    return elig


def _deadline(ctx: _Context, day: int) -> _Deadline | None:
    """What the sub-problems of deadline ``day`` share (cached); None: it cannot meet the demand."""
    if day in ctx.deadlines:
        return ctx.deadlines[day]
    demand = ctx.demand
    elig_vc = _eligible(ctx, day)
    node_ok = elig_vc.any(axis=0)
    result: _Deadline | None = None
    if (ctx.available_kc @ node_ok >= demand).all():  # the usable nodes hold the demand
        fixed_vc = np.where(elig_vc, ctx.fixed_vc, _INF)
        fixed_min = _min_of_rows(fixed_vc)  # per node, its cheapest eligible parcel
        sorted_fixed = np.sort(fixed_min[fixed_min < _INF])
        unit_min_kc = _min_of_rows(  # per SKU and node, its cheapest eligible unit (K x C)
            [
                np.where(elig_vc[v], ctx.unit_kvc_float[:, v], np.inf)
                for v in range(elig_vc.shape[0])
            ]
        )
        elig = np.ascontiguousarray(elig_vc.T)
        result = _Deadline(
            day=day,
            elig=elig,
            fixed=np.ascontiguousarray(fixed_vc.T),
            sorted_fixed=sorted_fixed,
            fixed_prefix=np.concatenate(([0], np.cumsum(sorted_fixed))),
            unit_min=unit_min_kc.T,
            transport_lb=_transport_lower_bound(unit_min_kc, ctx.available_kc, demand),
            single=_best_single(ctx, elig),
        )
    ctx.deadlines[day] = result
    return result


def _transport_lower_bound(
    unit_min_kc: np.ndarray, available_kc: IntArray, demand: IntArray
) -> int:
    """Least unit cost of covering the demand if every node could open: per SKU, cheapest first.

    Arrays are K x C (SKUs by nodes).
    """
    skus = np.arange(demand.size)
    # Usually one node holds a SKU's whole demand at its least unit cost: then
    # that node alone is the bound's choice (equal costs give the same sum).
    held = np.where(available_kc > 0, unit_min_kc, np.inf)
    cheapest_node = held.argmin(axis=1)
    if (available_kc[skus, cheapest_node] >= demand).all():
        cheapest = held[skus, cheapest_node]
        return int(np.where(np.isfinite(cheapest), cheapest, 0.0) @ demand)
    unit_min, available = unit_min_kc.T, available_kc.T
    order = np.argsort(unit_min, axis=0, kind="stable")
    u = unit_min[order, skus]
    a = available[order, skus]
    before = np.cumsum(a, axis=0) - a
    take = np.minimum(np.maximum(demand - before, 0), a)
    take = np.where(np.isfinite(u), take, 0)
    return int(np.where(take > 0, take * np.where(np.isfinite(u), u, 0), 0).sum())


def _best_single(ctx: _Context, elig: BoolArray) -> _Plan | None:
    """The least-cost (then earliest, lowest node and service) one-parcel plan within ``elig``."""
    nodes, services, totals = ctx.single_slots
    usable_now = elig[nodes, services]
    if not usable_now.any():
        return None
    first = int(usable_now.argmax())
    n, v = int(nodes[first]), int(services[first])
    costs = ctx.costs
    service = np.full(len(costs.nodes), -1, dtype=np.int64)
    service[n] = v
    units = np.zeros_like(costs.available)
    units[n] = ctx.demand
    # Its cost is what _plan_from would add up: the parcel plus the demand's unit costs.
    return _Plan(service, units, int(totals[first]), int(costs.arrival[n, v]), 1)


def _greedy_plan(
    ctx: _Context, elig: np.ndarray, unit_min: np.ndarray, max_parcels: int
) -> _Plan | None:
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
    return _plan_from(costs, service, units)


def _local_search(
    ctx: _Context, elig: np.ndarray, plan: _Plan, max_parcels: int, rounds: int = 8
) -> _Plan:
    """Improve a plan by the best of: add a parcel, drop one, or swap one for another.

    Every neighbour is priced at once with :func:`_split` (cheapest units
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
            if nodes.shape[1] > max_parcels or nodes.size * demand.size > _CHUNK_CELLS:
                continue
            covers = np.all(costs.available[nodes].sum(axis=1) >= demand, axis=1)
            if not covers.any():
                continue
            nodes, services = nodes[covers], services[covers]
            total, units, _, within_cap = _split(ctx, nodes, services)
            total = np.where(within_cap, total, _INF)
            i = int(np.argmin(total))
            if total[i] < best_cost:
                best_cost, best_pick = int(total[i]), (nodes[i], services[i], units[i])
        if best_pick is None:
            break
        current = _subset_plan(ctx, *best_pick)
    return current


#: Small subset tables by (count, size): the same few recur in every quote.
_COMBINATIONS_CACHE: dict[tuple[int, int], IntArray] = {}
_CACHED_COMBINATION_ROWS: Final = 4096


def _combinations(count: int, size: int) -> IntArray:
    """All ``size``-subsets of ``range(count)`` as read-only rows (pairs vectorised)."""
    cached = _COMBINATIONS_CACHE.get((count, size))
    if cached is not None:
        return cached
    if size == 2:
        sets = np.stack(np.triu_indices(count, 1), axis=1).astype(np.int64)
    else:
        flat = np.fromiter(
            itertools.chain.from_iterable(itertools.combinations(range(count), size)),
            dtype=np.int64,
        )
        sets = flat.reshape(-1, size)
    if sets.shape[0] <= _CACHED_COMBINATION_ROWS:
        sets.setflags(write=False)
        _COMBINATIONS_CACHE[count, size] = sets
    return sets


def _max_of_columns(values: np.ndarray) -> np.ndarray:
    """``values.max(axis=1)`` as elementwise maximums: faster over a short second axis."""
    most: np.ndarray = values[:, 0]
    for j in range(1, values.shape[1]):
        most = np.maximum(most, values[:, j])
    return most


def _covering(ctx: _Context, nodes: IntArray) -> BoolArray:
    """Per row of ``nodes`` (T x m): whether those nodes together hold the whole demand."""
    available = ctx.available_kc
    held = available.take(nodes[:, 0], axis=1)  # K x T: summed column by column, SKUs by sets
    for j in range(1, nodes.shape[1]):
        held = held + available.take(nodes[:, j], axis=1)
    covers: BoolArray = np.asarray((held >= ctx.demand[:, None]).all(axis=0))
    return covers


def _split(
    ctx: _Context, nodes: IntArray, services: IntArray
) -> tuple[IntArray, IntArray, np.ndarray, np.ndarray]:
    """Best split of the demand over each row's parcels (T x m slots that cover it).

    Per SKU, cheapest unit cost first up to each node's stock: optimal when
    capacity does not bind. Returns cost per row, units (T x m x K), whether
    every parcel carries something, and whether capacities hold.
    """
    if nodes.shape[1] == 2:
        return _split_pairs(ctx, nodes, services)
    costs, demand = ctx.costs, ctx.demand
    avail = costs.available[nodes]
    unit = costs.unit[nodes, services, :]  # T x m x K
    order = np.argsort(unit, axis=1, kind="stable")
    # Index grids rather than take/put_along_axis: the same gather and scatter, less overhead.
    rows = np.arange(nodes.shape[0])[:, None, None]
    skus = np.arange(demand.size)
    a_sorted = avail[rows, order, skus]
    before = np.cumsum(a_sorted, axis=1) - a_sorted
    take_sorted = np.minimum(np.maximum(demand - before, 0), a_sorted)
    units = np.empty_like(take_sorted)
    units[rows, order, skus] = take_sorted
    total = costs.fixed[nodes, services].sum(axis=1) + (units * unit).sum(axis=(1, 2))
    carried = units.sum(axis=2)
    return (
        total,
        units,
        (carried > 0).all(axis=1),
        (carried <= costs.capacity[nodes]).all(axis=1),
    )


def _split_pairs(
    ctx: _Context, nodes: IntArray, services: IntArray
) -> tuple[IntArray, IntArray, np.ndarray, np.ndarray]:
    """:func:`_split` for sets of two parcels: no sort, SKUs by sets (K x T) to vectorise well."""
    costs, demand = ctx.costs, ctx.demand[:, None]
    n0, n1 = nodes[:, 0], nodes[:, 1]
    # Slot (n, v) is column v * C + n of the V x C arrays flattened (np.take beats fancy indexing).
    slot0, slot1 = services[:, 0] * costs.nodes.size + n0, services[:, 1] * costs.nodes.size + n1
    unit = ctx.unit_kvc.reshape(demand.size, -1)
    u0, u1 = unit.take(slot0, axis=1), unit.take(slot1, axis=1)
    a0, a1 = ctx.available_kc.take(n0, axis=1), ctx.available_kc.take(n1, axis=1)
    # Per SKU the cheaper parcel goes first; on equal cost the first one (a stable sort's order).
    first_is_0 = u0 <= u1
    a_first = np.where(first_is_0, a0, a1)
    take_first = np.minimum(np.maximum(demand, 0), a_first)
    take_second = np.minimum(np.maximum(demand - a_first, 0), np.where(first_is_0, a1, a0))
    units0 = np.where(first_is_0, take_first, take_second)
    units1 = np.where(first_is_0, take_second, take_first)
    fixed = ctx.fixed_vc.reshape(-1)
    total = fixed.take(slot0) + fixed.take(slot1) + (units0 * u0 + units1 * u1).sum(axis=0)
    carried0, carried1 = units0.sum(axis=0), units1.sum(axis=0)
    capacity = costs.capacity
    return (
        total,
        np.stack((units0.T, units1.T), axis=1),  # T x 2 x K
        (carried0 > 0) & (carried1 > 0),
        (carried0 <= capacity.take(n0)) & (carried1 <= capacity.take(n1)),
    )


def _drop_heuristic(ctx: _Context, nodes: IntArray, services: IntArray) -> _Plan | None:
    """From a covering set of parcels, drop the parcel whose removal saves most, while any does."""
    costs, demand = ctx.costs, ctx.demand
    if not np.all(costs.available[nodes].sum(axis=0) >= demand):
        return None
    total, units, _, within_cap = _split(ctx, nodes[None, :], services[None, :])
    if not within_cap[0]:
        return None
    current = int(total[0])
    while nodes.size > 1:
        keep = ~np.eye(nodes.size, dtype=bool)
        cand_nodes = np.broadcast_to(nodes, keep.shape)[keep].reshape(nodes.size, -1)
        cand_services = np.broadcast_to(services, keep.shape)[keep].reshape(nodes.size, -1)
        covers = np.all(costs.available[cand_nodes].sum(axis=1) >= demand, axis=1)
        cand_total, cand_units, _, cand_cap = _split(ctx, cand_nodes, cand_services)
        cand_total = np.where(covers & cand_cap, cand_total, _INF)
        pick = int(np.argmin(cand_total))
        if cand_total[pick] >= current:
            break
        nodes, services, current = cand_nodes[pick], cand_services[pick], int(cand_total[pick])
        units = cand_units[pick : pick + 1]
    return _subset_plan(ctx, nodes, services, units[0])


def _subset_cells(slots: int, size: int, skus: int) -> int:
    """Array cells that enumerating every ``size``-set of ``slots`` slots takes."""
    return math.comb(slots, size) * size * skus


def _hopeful_sets(terms: np.ndarray, size: int, budget: float, limit: int) -> IntArray | None:
    """Every ``size``-set of indices into ascending ``terms`` whose terms sum to <= ``budget``.

    Built element by element: a partial set with sum s and r elements to go
    can continue with index k only if ``s + terms[k] + ... + terms[k+r-1]``
    (the cheapest completion from k) fits, and that window sum grows with k,
    so the valid k are one range found by binary search. Returns None if
    more than ``limit`` sets qualify.
    """
    count = terms.size
    if size > count:
        return np.zeros((0, size), dtype=np.int64)
    prefix = np.concatenate(([0.0], np.cumsum(terms)))
    window = prefix[size:] - prefix[:-size]  # cheapest completion of `size` from k
    first = np.arange(int(np.searchsorted(window, budget, side="right")), dtype=np.int64)
    partial, sums = first[:, None], terms[first]
    for placed in range(1, size):
        left = size - placed
        window = prefix[left:] - prefix[:-left]
        hi = np.searchsorted(window, budget - sums, side="right")
        lo = partial[:, -1] + 1
        counts = np.clip(hi - lo, 0, None)
        total = int(counts.sum())
        if total > limit:
            return None
        rows = np.repeat(np.arange(partial.shape[0]), counts)
        offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        nxt = np.repeat(lo, counts) + offsets
        partial = np.column_stack([partial[rows], nxt])
        sums = sums[rows] + terms[nxt]
    if partial.shape[0] > limit:
        return None
    return partial.astype(np.int64)


def _best_subset(
    ctx: _Context,
    elig: np.ndarray,
    slots_ok: np.ndarray,
    size: int,
    bound: _Bound | None = None,
    upper: int = _INF,
) -> tuple[_Plan | None, bool]:
    """Best plan with exactly ``size`` parcels among allowed slots, and whether that is exact.

    For a fixed set of parcels the best split is per SKU: cheapest unit cost
    first, up to each node's stock. Capacity can make that split infeasible;
    if such a set looks cheaper than the best valid one, a feasible re-split
    might be too, so the answer is not a proof. Too many sets, or the time
    budget spent: not (fully) attempted, not a proof. Sets are priced in
    chunks to bound memory.
    """
    costs, demand = ctx.costs, ctx.demand
    slot_n, slot_v = np.nonzero(elig & slots_ok)
    if slot_n.size < size:
        return None, True
    set_bound: np.ndarray | None  # per set, a bound on its cost (sets in ascending order)
    if bound is not None and bound.slot_terms is not None and upper < _INF:
        # Only sets whose Lagrangian bound does not exceed the best plan can win:
        # generate just those, never the rest.
        slot_terms = bound.slot_terms[slot_n, slot_v]
        by_term = np.argsort(slot_terms, kind="stable")
        hopeful = _hopeful_sets(
            slot_terms[by_term],
            size,
            upper + 1e-6 - bound.priced_demand,
            _MAX_SUBSET_CELLS // (size * demand.size),
        )
        if hopeful is None:
            return None, False
        # Most promising first: once a set's bound exceeds the best found, so do the rest.
        set_bound = bound.priced_demand + slot_terms[by_term][hopeful].sum(axis=1)
        by_bound = np.argsort(set_bound, kind="stable")
        sets, set_bound = by_term[hopeful[by_bound]], set_bound[by_bound]
    elif _subset_cells(slot_n.size, size, demand.size) > _MAX_SUBSET_CELLS:
        return None, False
    else:
        sets = _combinations(slot_n.size, size)
        set_bound = None  # no bound: every set is worth pricing
    # np.nonzero lists slots node by node: no node repeated means every set is distinct.
    one_slot_per_node = bool((slot_n[1:] != slot_n[:-1]).all())
    chunk = max(1, _CHUNK_CELLS // (size * demand.size))
    best_key: tuple[int, int] = (_INF, _INF)
    best_set: tuple[IntArray, IntArray, IntArray] | None = None
    cheapest_invalid = _INF
    for begin in range(0, sets.shape[0], chunk):
        if ctx.out_of_time():
            return (_subset_plan(ctx, *best_set) if best_set else None), False
        chunk_sets = sets[begin : begin + chunk]
        if set_bound is not None:
            if set_bound[begin] > best_key[0] + 1e-6:
                break
            chunk_sets = chunk_sets[set_bound[begin : begin + chunk] <= best_key[0] + 1e-6]
        nodes, services = slot_n[chunk_sets], slot_v[chunk_sets]
        feasible = _covering(ctx, nodes)
        if not one_slot_per_node:
            ordered = np.sort(nodes, axis=1)
            feasible &= (ordered[:, 1:] != ordered[:, :-1]).all(axis=1)
        if not feasible.all():
            nodes, services = nodes[feasible], services[feasible]
            if nodes.shape[0] == 0:
                continue
        total, units, all_used, within_cap = _split(ctx, nodes, services)
        if not within_cap.all():
            cheapest_invalid = min(cheapest_invalid, int(total[~within_cap].min()))
        valid = np.flatnonzero(all_used & within_cap)
        if valid.size == 0:
            continue
        arrival = _max_of_columns(costs.arrival[nodes[valid], services[valid]])
        first = np.lexsort((arrival, total[valid]))[0]
        pick = valid[first]
        key = (int(total[pick]), int(arrival[first]))
        if key < best_key:
            best_key, best_set = key, (nodes[pick], services[pick], units[pick])
    plan = _subset_plan(ctx, *best_set) if best_set else None
    return plan, cheapest_invalid >= best_key[0]


def _subset_plan(ctx: _Context, nodes: IntArray, services: IntArray, units: IntArray) -> _Plan:
    """The plan shipping ``units`` (m x K) by parcels (nodes, services); empty parcels dropped."""
    costs = ctx.costs
    carried = units.sum(axis=1) > 0
    if not carried.all():
        nodes, services, units = nodes[carried], services[carried], units[carried]
    service = np.full(len(costs.nodes), -1, dtype=np.int64)
    service[nodes] = services
    plan_units = np.zeros_like(costs.available)
    plan_units[nodes] = units
    # What _plan_from would add up, from the parcels at hand (distinct nodes).
    cost = int(costs.fixed[nodes, services].sum() + (costs.unit[nodes, services] * units).sum())
    day = int(costs.arrival[nodes, services].max()) if nodes.size else 0
    return _Plan(service, plan_units, cost, day, int(nodes.size))


def _select(sorted_terms: np.ndarray, at_least: int, at_most: int) -> float:
    """Least sum of between ``at_least`` and ``at_most`` of the (ascending) terms."""
    if at_least > sorted_terms.size:
        return np.inf
    negatives = int(np.count_nonzero(sorted_terms < 0))
    count = max(at_least, min(at_most, negatives))
    return float(sorted_terms[:count].sum())


@dataclass(frozen=True)
class _Bound:
    """A Lagrangian bound for plans with ``at_least``..``at_most`` parcels.

    ``value`` bounds every such plan; ``with_node[n]`` bounds every such plan
    that opens node n (reduced-cost fixing: a node whose bound exceeds the
    best known cost cannot be in a better plan).
    """

    value: float
    with_node: np.ndarray
    #: The nodes the relaxation opens at its best prices, with their service:
    #: a good start for a plan (see :func:`_drop_heuristic`).
    service: IntArray
    #: At those prices, a plan opening exactly the parcels (n, v) in S costs
    #: at least ``priced_demand + sum(slot_terms[S])``: a filter before pricing sets.
    priced_demand: float = -np.inf
    slot_terms: np.ndarray | None = None


def _lagrangian_bound(
    ctx: _Context,
    elig: np.ndarray,
    at_least: int,
    at_most: int,
    upper: int,
    iterations: int = 40,
) -> _Bound:
    """Lower bound by relaxing the demand rows with prices ``lam`` (subgradient ascent).

    For any prices, a plan costs at least ``sum_k lam[k] Q[k] + sum over its open
    nodes of t[n]``, where ``t[n] = min_v (F[n,v] + sum_k a[n,k] min(0, u[n,v,k] -
    lam[k]))``. With between ``at_least`` and ``at_most`` open nodes, the least
    such sum takes the ``at_least`` smallest terms plus further negative ones.
    Without parcel limits its maximum over prices is the LP bound of the strong
    formulation; the limits make it stronger.
    """
    costs, demand = ctx.costs, ctx.demand
    n_all = elig.shape[0]
    # Work on the nodes with an eligible parcel only; expand the answers at the end.
    live = np.flatnonzero(elig.any(axis=1))
    live_elig = elig[live]
    avail = costs.available[live].astype(np.float64)
    unit = np.where(live_elig[:, :, None], costs.unit[live], 0).astype(np.float64)
    fixed = np.where(live_elig, costs.fixed[live], np.inf).astype(np.float64)
    q = demand.astype(np.float64)
    n_nodes = live.size
    nothing = _Bound(np.inf, np.full(n_all, np.inf), np.full(n_all, -1, dtype=np.int64))
    if n_nodes == 0 or at_least > n_nodes:
        return nothing  # too few nodes: no plan, every selection below would be infinite
    if ctx.prices is not None:
        lam = ctx.prices  # the last sub-problem's prices: usually close to this one's
    else:
        # Each SKU's cheapest unit cost, each parcel spread over what its node could carry.
        amortised = unit + fixed[:, :, None] / np.maximum(avail.sum(axis=1), 1.0)[:, None, None]
        lam = np.where(live_elig[:, :, None], amortised, np.inf).min(axis=(0, 1))
        lam = np.where(np.isfinite(lam), lam, 0.0)
    target = float(upper) if upper < _INF else None
    best_value = -np.inf
    step_scale, stall = 1.0, 0
    rows = np.arange(n_nodes)
    for _ in range(iterations):
        per_service = fixed + np.einsum("cvk,ck->cv", np.minimum(unit - lam, 0.0), avail)
        choice = np.argmin(per_service, axis=1)
        terms = per_service[rows, choice]
        order = np.argsort(terms, kind="stable")
        sorted_terms = terms[order]
        # The selection of _select, inlined: its open nodes drive the gradient.
        negatives = int(np.count_nonzero(sorted_terms < 0))
        opened = order[: max(at_least, min(at_most, negatives))]
        value = float(lam @ q) + float(sorted_terms[: opened.size].sum())
        if not np.isfinite(value):
            return nothing
        if value > best_value + 1e-9:
            best_value, best_terms, best_lam, stall = value, terms, lam, 0
            best_service = np.full(n_nodes, -1, dtype=np.int64)
            best_service[opened] = choice[opened]
            best_slot_terms = per_service
        else:
            stall += 1
            if stall >= 5:
                step_scale, stall = step_scale / 2, 0
        if target is not None and np.ceil(best_value - 1e-6) >= target:
            break
        # Units the open nodes take at these prices (whole numbers: the sum is exact in any order).
        taken = np.where(unit[opened, choice[opened]] < lam, avail[opened], 0.0).sum(axis=0)
        gradient = q - taken
        norm = float(gradient @ gradient)
        if norm == 0 or step_scale < 1e-3 or ctx.out_of_time():
            break  # converged, or out of time: the best prices so far give a valid bound
        gap = (target - value) if target is not None else max(abs(value) * 0.05, 1000.0)
        lam = lam + step_scale * max(gap, 1.0) / norm * gradient
    ctx.prices = best_lam
    # Opening n on top of the best selection for one parcel fewer bounds every plan using n.
    without_one = float(best_lam @ q) + _select(np.sort(best_terms), at_least - 1, at_most - 1)
    with_node = np.full(n_all, np.inf)
    with_node[live] = np.maximum(best_value, without_one + best_terms)
    service = np.full(n_all, -1, dtype=np.int64)
    service[live] = best_service
    slot_terms = np.full(elig.shape, np.inf)
    slot_terms[live] = best_slot_terms
    return _Bound(best_value, with_node, service, float(best_lam @ q), slot_terms)


def _solve_cpsat(
    ctx: _Context,
    elig: np.ndarray,
    min_parcels: int,
    max_parcels: int,
    lower_bound: int,
    upper: int,
    hint: _Plan | None,
) -> tuple[_Plan | None, int, bool]:
    """CP-SAT over the eligible slots: least (cost, parcels), min..max parcels, cost <= upper.

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
    parcels = sum(ys)
    model.add(parcels >= min_parcels)
    model.add(parcels <= max_parcels)
    cost = cp_model.LinearExpr.weighted_sum(
        [*cost_vars, *ys], [*cost_coefs, *costs.fixed[slot_n, slot_v].tolist()]
    )
    model.add(cost >= lower_bound)
    if upper < _INF:
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
    solver.parameters.max_time_in_seconds = max(0.001, ctx.deadline - time.perf_counter())
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
    plan = _plan_from(costs, service, units)
    optimal = status == cp_model.OPTIMAL
    return plan, plan.cost if optimal else proven_bound, optimal


def _min_cost(ctx: _Context, day: int, max_parcels: int) -> _Plan | None:
    """The least (cost, parcels) plan delivering by ``day`` in at most ``max_parcels`` parcels."""
    key = (day, max_parcels)
    if key in ctx.cache:
        return ctx.cache[key]
    ctx.stats["sub"] += 1
    deadline = _deadline(ctx, day)
    plan = _bound_and_solve(ctx, deadline, max_parcels) if deadline is not None else None
    ctx.cache[key] = plan
    if plan is not None:
        ctx.known.append(plan)
    return plan


def _ceil(value: float) -> int:
    """Round a float bound up to whole millicents (infinite: no plan)."""
    return int(np.ceil(value - 1e-6)) if np.isfinite(value) else _INF


def _lexmin(*plans: _Plan | None) -> _Plan | None:
    found = [p for p in plans if p is not None]
    return min(found, key=lambda p: (p.cost, p.parcels, p.day)) if found else None


def _proven(plan: _Plan, method: str) -> _Plan:
    # Built directly: dataclasses.replace costs more than the rest of a small sub-problem.
    return _Plan(plan.service, plan.units, plan.cost, plan.day, plan.parcels, OPTIMAL, 0.0, method)


def _bound_and_solve(ctx: _Context, deadline: _Deadline, max_parcels: int) -> _Plan | None:
    """Solve one ``P(D, p)``: enumerate small plans, bound the rest, call CP-SAT if still open."""
    demand = ctx.demand
    elig, fixed, transport_lb = deadline.elig, deadline.fixed, deadline.transport_lb
    sorted_fixed, fixed_prefix = deadline.sorted_fixed, deadline.fixed_prefix
    max_parcels = min(max_parcels, sorted_fixed.size)

    def simple_bound(parcels: int) -> int:
        """Plans with >= ``parcels`` parcels: that many cheapest fixed costs + cheapest units."""
        return int(fixed_prefix[min(parcels, sorted_fixed.size)]) + transport_lb

    # Plans found for other deadlines or caps that fit here are upper bounds.
    best = deadline.single
    for known in ctx.known:
        # A plan arriving after the deadline uses a slot it excludes: skip the array test.
        fits = known.parcels <= max_parcels and known.day <= deadline.day
        if fits and bool(elig[known.slots].all()):
            best = _lexmin(best, known)
    if best is None:
        best = _greedy_plan(ctx, elig, deadline.unit_min, max_parcels)

    # Enumerate plans by parcel count while the sets to try stay few: every
    # plan with up to ``enumerated`` parcels is then known exactly. Between
    # rounds a bound on plans with more parcels may settle the question (cost
    # ties go to fewer parcels, so a bound equal to the best cost settles it
    # when the best plan is an enumerated one), and prunes the nodes that
    # cannot be in a better plan.
    enumerated = 1
    bound: _Bound | None = None
    lower = 0
    while True:
        upper = best.cost if best is not None else _INF
        searched = enumerated + 1
        if searched > max_parcels:
            if best is not None:
                ctx.stats["bound"] += 1
            return _proven(best, "enumeration") if best is not None else None
        settles = best is not None and best.parcels <= enumerated
        if settles and simple_bound(searched) >= upper:
            ctx.stats["bound"] += 1
            return _proven(best, "bound+enumeration")  # type: ignore[arg-type]
        # A slot is worth trying only if its parcel, the cheapest others and
        # the cheapest units do not already cost more than the best plan.
        others = int(fixed_prefix[min(searched - 1, sorted_fixed.size)])
        slots_ok = (fixed + others + transport_lb <= upper) | (upper == _INF)
        if (
            _subset_cells(int(np.count_nonzero(elig & slots_ok)), searched, demand.size)
            <= _CHEAP_CELLS
        ):
            bound = None  # enumerating is cheaper than bounding
        else:
            bound = _lagrangian_bound(ctx, elig, searched, max_parcels, upper)
            lower = max(simple_bound(searched), _ceil(bound.value))
            if settles and lower >= upper:
                ctx.stats["bound"] += 1
                return _proven(best, "lagrangian bound")  # type: ignore[arg-type]
            # Not settled: a plan built from the relaxation's open nodes may lower the best cost.
            start = bound.service.copy()
            if best is not None:
                start[best.service >= 0] = best.service[best.service >= 0]
            opened = np.flatnonzero(start >= 0)
            best = _lexmin(best, _drop_heuristic(ctx, opened, start[opened]))
            upper = best.cost if best is not None else _INF
            settles = best is not None and best.parcels <= enumerated
            if settles and lower >= upper:
                ctx.stats["bound"] += 1
                return _proven(best, "lagrangian bound")  # type: ignore[arg-type]
            slots_ok = np.broadcast_to((bound.with_node <= upper + 1e-6)[:, None], elig.shape)
        found, exact = _best_subset(ctx, elig, slots_ok, searched, bound, upper)
        best = _lexmin(best, found)
        if not exact:
            break
        enumerated = searched

    if bound is None:
        bound = _lagrangian_bound(ctx, elig, searched, max_parcels, upper)
        lower = max(simple_bound(searched), _ceil(bound.value))
    upper = best.cost if best is not None else _INF

    if best is not None:
        best = _local_search(ctx, elig, best, max_parcels)
        upper = best.cost

    # Fewer parcels make a much easier model: raise the parcel count until the
    # bound on plans with that many or more exceeds the best known plan.
    most = max_parcels
    if best is not None:
        for parcels in range(searched + 1, min(max_parcels, searched + 4) + 1):
            beyond = max(
                simple_bound(parcels),
                _ceil(_lagrangian_bound(ctx, elig, parcels, max_parcels, upper).value),
            )
            if beyond > upper or (beyond == upper and best.parcels < parcels):
                most = parcels - 1
                break

    # CP-SAT searches the plans with more parcels, on the nodes the bound leaves possible.
    node_keep = bound.with_node <= upper + 1e-6
    if best is not None:
        node_keep |= best.service >= 0
    found, proven_lower, complete = _solve_cpsat(
        ctx, elig & node_keep[:, None], searched, most, lower, upper, best
    )
    result = _lexmin(best, found)
    if result is None:
        return None
    if complete:
        return _proven(result, "cp-sat")
    # Out of time: the best plan stands, with the gap to what is proven about the rest.
    # Enumerated plans are known exactly, so only the searched ones can lie below.
    gap = max(result.cost - proven_lower, 0) / max(abs(result.cost), 1)
    return replace(result, status=FEASIBLE, gap=gap, method="cp-sat")


def _lines_of(order: Order, costs: OrderCosts, plan: _Plan, network: Network) -> Allocation:
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


def _dominates(a: _Plan, b: _Plan) -> bool:
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
    costs = order_costs(network, order.destination.lat, order.destination.lon, skus, wanted)
    demand = _covered_demand(network, costs, settings.allow_partial)
    ctx = _Context(costs, demand, settings, started + settings.time_limit_s)

    plans: list[_Plan] = []
    if demand.sum() > 0:
        plans = _frontier(ctx)
    labels = _labels(plans, settings)
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
        seconds=time.perf_counter() - started,
    )
    return Quote(options, frontier, shortfall, stats)


def _frontier(ctx: _Context) -> list[_Plan]:
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
    cheapest = _min_cost(ctx, days[-1], cap)
    if cheapest is None:
        return []
    single = _min_cost(ctx, days[-1], 1)
    found = [p for p in (cheapest, single) if p is not None]
    vod = settings.value_of_day
    balanced = (cheapest.cost + vod * cheapest.day, cheapest.day)
    fastest_found = False
    for day in days:
        # Beyond the cheapest plan's own day, no deadline makes it cheaper;
        # fewer parcels may still cost less later (full frontier only).
        if day >= cheapest.day:
            plan: _Plan | None = cheapest
        elif (
            settings.full_frontier
            or not fastest_found
            or (cheapest.cost + vod * day, day) <= balanced
        ):
            plan = _min_cost(ctx, day, cap)
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


def _labels(plans: list[_Plan], settings: QuoteSettings) -> dict[bytes, tuple[Label, ...]]:
    """The labels each plan wins (by plan key), in the order of :class:`Label`."""
    if not plans:
        return {}
    vod = settings.value_of_day
    winners: dict[Label, _Plan] = {
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


#: The solver's plan in its own coordinates (service column per candidate, units C x K).
Plan = _Plan


def solve_costs(
    costs: OrderCosts, demand: IntArray, settings: QuoteSettings, deadline: float
) -> tuple[list[Plan], dict[str, int]]:
    """The Pareto plans of prebuilt cost arrays (a leg of :mod:`sourcing.fulfil`), and stats.

    The same sub-problems and proofs as :func:`quote_delivery` (the menu's, or every
    one with ``settings.full_frontier``), on any candidates and service
    columns; ``demand`` must be coverable by the usable candidates.
    """
    ctx = _Context(costs, demand, settings, deadline)
    plans = _frontier(ctx) if demand.sum() > 0 else []
    return plans, ctx.stats
