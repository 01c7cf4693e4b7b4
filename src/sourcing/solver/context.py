"""One order's solve: the plan type, the shared context, and what each deadline shares.

:class:`Context` holds the order's cost arrays (some transposed, nodes last),
its settings, caches and counters; :func:`deadline_for` computes once per
deadline day what all of its sub-problems ``P(D, p)`` share: the usable
slots with dominated services dropped (stage 1 of the package docstring),
the cheapest parcels, the transport bound and the best single parcel.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Final

import numpy as np

from sourcing.costs import OrderCosts
from sourcing.model import BoolArray, FloatArray, IntArray, QuoteSettings

OPTIMAL: Final = "OPTIMAL"
FEASIBLE: Final = "FEASIBLE"
# Subset enumeration is skipped above this many (set x member x SKU) cells.
MAX_SUBSET_CELLS: Final = 16_000_000
# ... and priced this many cells at a time, to bound memory.
CHUNK_CELLS: Final = 1_000_000
# Set work (pricing, set-cover branching) done between two checks of the deadline, in
# cells: a million took ~30 ms of CPU on 50-SKU parcel sets (4x that under load), past the
# deadline when it fell inside. A quarter of that prices sets as fast, within the noise
# (3.6-6M cells of 3- and 4-parcel sets on standard 20- and 50-line carts, side by side).
DEADLINE_CELLS: Final = 250_000
# Below this many cells, enumerating beats computing a bound first.
CHEAP_CELLS: Final = 40_000
INF: Final = np.iinfo(np.int64).max // 4


@dataclass(frozen=True, eq=False)
class Plan:
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


def lexmin(*plans: Plan | None) -> Plan | None:
    """The least (cost, parcels, day) of the plans given (None: none given)."""
    found = [p for p in plans if p is not None]
    return min(found, key=lambda p: (p.cost, p.parcels, p.day)) if found else None


def heuristics_pay(best: Plan | None, cutoff: int) -> bool:
    """Whether a sub-problem with this cost limit runs its heuristics: always without one,
    and under a cutoff only once a plan within it is known (the heuristics' own plans are
    almost never within it)."""
    return cutoff == INF or (best is not None and best.cost <= cutoff)


#: Where a finite bound's ceiling is cut: above :data:`INF` (so above every limit, INF
#: included, as the uncut value was), within an int64. A relaxation of too few parcels to
#: hold the cart has prices that climb without end: its bound passes any int64.
BOUND_CEILING: Final = 2 * INF


def ceil_bound(value: float) -> int:
    """Round a float bound up to whole millicents, at most :data:`BOUND_CEILING` (infinite:
    no plan, INF)."""
    # math, not numpy: the same rounding, a quarter of the time (branch and bound: per branch).
    return min(math.ceil(value - 1e-6), BOUND_CEILING) if math.isfinite(value) else INF


def plan_from(costs: OrderCosts, service: IntArray, units: IntArray) -> Plan:
    used = np.flatnonzero(service >= 0)
    sv = service[used]
    cost = int(costs.fixed[used, sv].sum() + (costs.unit[used, sv, :] * units[used]).sum())
    day = int(costs.arrival[used, sv].max()) if used.size else 0
    return Plan(service, units, cost, day, int(used.size))


@dataclass(frozen=True, eq=False)
class Deadline:
    """What every sub-problem ``P(D, p)`` of one deadline D shares: computed once per D."""

    day: int
    #: C x V: the (node, service) slots usable by D, dominated services removed.
    elig: BoolArray
    #: C x V: a parcel's fixed cost on eligible slots, ``INF`` elsewhere.
    fixed: IntArray
    #: Per node with an eligible slot, its cheapest parcel, ascending; and the prefix sums from 0.
    sorted_fixed: IntArray
    fixed_prefix: IntArray
    #: C x K: each node's cheapest eligible unit cost per SKU (inf: no eligible slot).
    unit_min: FloatArray
    transport_lb: int
    #: The best one-parcel plan (least cost, then earliest), if any.
    single: Plan | None


@dataclass
class Context:
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
    stats: dict[str, int] = field(
        default_factory=lambda: {"sub": 0, "bound": 0, "cpsat": 0, "resplit": 0, "checks": 0}
    )
    cache: dict[tuple[int, int], Plan | None] = field(default_factory=dict)
    known: list[Plan] = field(default_factory=list)
    #: Sub-problems cut short (day, parcel cap, a lower bound on their cost): a plan they
    #: hide may beat a label's winner, whose proof then does not stand (frontier._proofs).
    unproven: list[tuple[int, int, int]] = field(default_factory=list)
    #: The Lagrangian prices last found: a warm start for the next bound.
    prices: np.ndarray | None = None
    #: Covers repaired from relaxations (nodes and services as bytes) and the plans they
    #: gave (heuristics.repaired_plan): the same cover recurs across counts and bounds.
    repairs: dict[bytes, Plan | None] = field(default_factory=dict)
    #: Per deadline day, what its sub-problems share (None: the demand cannot be covered by then).
    deadlines: dict[int, Deadline | None] = field(default_factory=dict)
    #: Per deadline day D, per parcel count p: a proven lower bound on the cost of every plan
    #: delivering by D in exactly p parcels (:meth:`raise_floor`, :meth:`floor_at`).
    floors: dict[int, IntArray] = field(default_factory=dict)

    def out_of_time(self) -> bool:
        stop = self.settings.should_stop
        if stop is not None and stop():
            return True
        limit = self.settings.work_limit
        if limit is None:
            return time.perf_counter() > self.deadline
        # A work budget (replays): a count of these polls, never the clock.
        self.stats["checks"] += 1
        return self.stats["checks"] > limit

    def raise_floor(self, day: int, fewest: int, most: int, value: int) -> None:
        """Record that every plan delivering by ``day`` with ``fewest`` to ``most`` parcels
        costs at least ``value`` (proven by a bound or a complete enumeration)."""
        floor = self.floors.get(day)
        if floor is None:
            floor = self.floors[day] = np.full(len(self.costs.nodes) + 1, -INF, dtype=np.int64)
        part = floor[fewest : most + 1]
        np.maximum(part, value, out=part)

    def floor_at(self, day: int) -> IntArray | None:
        """Per parcel count, the best lower bound proven at ``day`` or any later deadline.

        A plan delivering by ``day`` is a plan of any later deadline too, with the same
        parcels: its slots stay usable, and a slot that a later deadline drops as dominated
        has a kept service at the same node, no dearer (:func:`_eligible`). So what was
        proven for a later deadline (a looser sub-problem) bounds this one. None: nothing
        recorded.
        """
        found = [floor for d, floor in self.floors.items() if d >= day]
        if not found:
            return None
        return _max_of_rows(found) if len(found) > 1 else found[0]

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
    def holds_mask(self) -> np.ndarray | None:
        """Per node, the SKUs it holds as bits of a uint64 (None beyond 64 SKUs): a cheap
        first test of whether parcels can cover the demand (see ``enumeration._covering``).
        A SKU not in demand counts as held everywhere (its stock is clipped to 0)."""
        n_skus = self.costs.available.shape[1]
        if n_skus > 64:
            return None
        bits = np.left_shift(np.uint64(1), np.arange(n_skus, dtype=np.uint64))
        held = (self.costs.available > 0) | (self.demand <= 0)[None, :]
        mask: np.ndarray = np.bitwise_or.reduce(np.where(held, bits, np.uint64(0)), axis=1)
        return mask

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


def _max_of_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    most: np.ndarray = rows[0]
    for row in rows[1:]:
        most = np.maximum(most, row)
    return most


def _dominance(ctx: Context) -> list[tuple[int, int, BoolArray]]:
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


def _eligible(ctx: Context, day: int) -> BoolArray:
    """V x C: slots usable by ``day``, dominated services removed (:func:`_dominance`)."""
    elig: BoolArray = ctx.usable_vc & (ctx.arrival_vc <= day)
    # Same order as pruning pair by pair: a service pruned earlier no longer prunes others.
    for b, a, beaten in ctx.dominance:
        elig[b] &= ~(beaten & elig[a])
    return elig


def deadline_for(ctx: Context, day: int) -> Deadline | None:
    """What the sub-problems of deadline ``day`` share (cached); None: it cannot meet the demand."""
    if day in ctx.deadlines:
        return ctx.deadlines[day]
    demand = ctx.demand
    elig_vc = _eligible(ctx, day)
    node_ok = elig_vc.any(axis=0)
    result: Deadline | None = None
    if (ctx.available_kc @ node_ok >= demand).all():  # the usable nodes hold the demand
        fixed_vc = np.where(elig_vc, ctx.fixed_vc, INF)
        fixed_min = _min_of_rows(fixed_vc)  # per node, its cheapest eligible parcel
        sorted_fixed = np.sort(fixed_min[fixed_min < INF])
        unit_min_kc = _min_of_rows(  # per SKU and node, its cheapest eligible unit (K x C)
            [
                np.where(elig_vc[v], ctx.unit_kvc_float[:, v], np.inf)
                for v in range(elig_vc.shape[0])
            ]
        )
        elig = np.ascontiguousarray(elig_vc.T)
        result = Deadline(
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


def _best_single(ctx: Context, elig: BoolArray) -> Plan | None:
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
    # Its cost is what plan_from would add up: the parcel plus the demand's unit costs.
    return Plan(service, units, int(totals[first]), int(costs.arrival[n, v]), 1)
