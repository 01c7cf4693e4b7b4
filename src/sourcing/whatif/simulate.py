"""What-if replay: a stream of orders through one network and one sourcing policy.

Pure engine (no file I/O). :func:`simulate` replays orders in time order
(``created_at``, ties in stream order) against *running* stock:

* the run starts from ``network.on_hand``; an order's units leave ``on_hand``
  as soon as the order is decided (the replay does not model the lag between
  placement and dispatch). Safety stock and the network's own ``reserved``
  stay as given, so a node can promise ``on_hand - safety_stock - reserved``
  of the running ``on_hand``. Stock never goes below that floor (checked
  after every order; a breach raises ``AssertionError``);
* daily capacity (``capacity``) counts the units a node ships per calendar
  day of ``created_at``; it resets at midnight;
* replenishment (optional, :class:`Replenishment`) adds scheduled receipts
  to ``on_hand`` once their time has come (before the first order at or
  after it) and/or tops every (node, SKU) back up to its starting ``on_hand``
  every ``top_up_every_days`` days, counted from midnight of the first order;
* the storage credit of a unit uses the running ``on_hand`` (DESIGN section
  7 with the stock the node holds at that moment).

Each order is decided by the policy on a *view*: the network restricted to
the order's SKUs and to the nodes that can still promise at least one unit
of them, with running ``on_hand`` and each node's remaining capacity for the
day. Nodes keep their network order, so every policy decides exactly as it
would on the whole network (a node with nothing to offer is never a
candidate). The decision is re-priced by :func:`sourcing.evaluate.evaluate`
on that view (``allow_partial=True``), so every KPI is computed by the
independent evaluator, never taken from the policy; an allocation the
evaluator finds infeasible is a policy bug and raises :class:`PolicyError`.

Orders the stock cannot fill: every built-in policy first tries the whole
order; if the running stock (or the day's capacity) cannot cover it, the
policy ships what it can (``allow_partial``: the optimiser covers as many
units as the stock allows, the rule policies walk their node sequence) and
the rest of the order is lost (no back-orders). An order then counts as
*complete* only if every unit shipped; ``fill_rate`` is the share of complete
orders and ``unit_fill_rate`` the share of units shipped
(see :meth:`SimulationResult.kpis`).

Policies (:data:`POLICY_FACTORIES`, built by :func:`make_policy`):
``greedy_nearest``, ``priority_list``, ``ship_complete_first`` (the rules of
:mod:`sourcing.baselines`) and ``optimiser_cheapest``, ``optimiser_fastest``,
``optimiser_balanced`` (:func:`sourcing.menu.quote`, taking the option with
that label) and ``optimiser_batch`` (:class:`BatchPolicy`: the optimiser's
CHEAPEST on arrival, promised and held, then the day's orders re-assigned
jointly by :func:`sourcing.batch.reoptimise` within their promises and
shipped). The :class:`Policy` protocol gives a policy the whole stream
(:meth:`Policy.begin`) and a periodic hook (:attr:`Policy.period_days`,
:meth:`Policy.end_period`) that may revise the period's orders.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Final, Protocol

import numpy as np
import pandas as pd

from sourcing.baselines import greedy_nearest, priority_list, ship_complete_first
from sourcing.batch import BatchInstance, BatchOrder, BatchSettings, reoptimise
from sourcing.errors import ShortageError, SourcingError
from sourcing.evaluate import evaluate
from sourcing.forward.pricer import ForwardSettings
from sourcing.menu import quote
from sourcing.model import (
    MILLICENTS_PER_UNIT,
    UNLIMITED_CAPACITY,
    Allocation,
    Evaluation,
    IntArray,
    Label,
    Network,
    Option,
    Order,
    ParcelCost,
    QuoteSettings,
)
from sourcing.orders import validate_order

__all__ = [
    "KPI_COLUMNS",
    "POLICY_FACTORIES",
    "BasePolicy",
    "BatchPolicy",
    "OptimiserPolicy",
    "Policy",
    "PolicyError",
    "PolicyOptions",
    "Receipt",
    "Replenishment",
    "RulePolicy",
    "SimOrder",
    "SimulationResult",
    "Snapshot",
    "make_policy",
    "simulate",
]

#: The optimiser's default settings in a replay: one CP-SAT worker and a
#: per-order budget that single orders on networks of a few hundred nodes
#: never reach (they close in milliseconds).
DEFAULT_SIM_SETTINGS: Final = QuoteSettings(time_limit_s=1.0, num_workers=1)

#: A replayed quote's solver checkpoints per second of its ``time_limit_s``: replays run on a
#: budget of work (``QuoteSettings.work_limit``), never the wall clock, so their tables do
#: not depend on how busy the machine is. About the rate the scarce scenario's quotes polled
#: (4,217 per CPU second over 10,102 quotes, at most 25 in one quote; benchmarks/README.md,
#: issue 18): a quote finishes in its budget wherever it finished in its time.
CHECKS_PER_SECOND: Final = 5_000

#: The replays' daily batch: SCIP stops after 1,000 branch-and-bound nodes per sub-problem
#: instead of at 10 s of wall clock (every sub-problem of the scarce scenario closed at its
#: root node, in at most 0.45 s of CPU); ``time_limit_s`` is not applied under ``work_limit``.
REPLAY_BATCH: Final = BatchSettings(time_limit_s=10.0, work_limit=1_000)


def replay_settings(settings: QuoteSettings) -> QuoteSettings:
    """``settings`` on a work budget (if they have none): ``time_limit_s`` of work, not of time."""
    if settings.work_limit is not None:
        return settings
    return replace(settings, work_limit=max(1, round(settings.time_limit_s * CHECKS_PER_SECOND)))


class PolicyError(SourcingError):
    """A policy returned an allocation that the evaluator rejects."""


@dataclass(frozen=True)
class SimOrder:
    """One order of the stream: an id, when it was placed, and the cart."""

    order_id: str
    created_at: datetime
    order: Order


@dataclass(frozen=True)
class Receipt:
    """``qty`` units of ``sku`` arrive at ``node_id`` at time ``at``."""

    at: datetime
    node_id: str
    sku: str
    qty: int


@dataclass(frozen=True)
class Replenishment:
    """Stock arriving during the replay: scheduled receipts and/or periodic top-ups.

    ``top_up_every_days``: every that many days (from midnight of the first
    order), each (node, SKU) whose ``on_hand`` fell below its starting level
    is raised back to it (an order-up-to policy with a fixed review period).
    """

    receipts: tuple[Receipt, ...] = ()
    top_up_every_days: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """The running state at a period boundary, handed to :meth:`Policy.end_period`.

    ``on_hand`` (N x S) and ``capacity_used`` (N, units shipped so far on the
    current day) are read-only copies; ``decided`` counts the orders decided so far.
    """

    at: datetime
    on_hand: IntArray
    capacity_used: IntArray
    decided: int


class Policy(Protocol):
    """What the simulator asks of a sourcing policy.

    ``decide`` gets the order's view of the network (see the module doc) and
    returns what ships: an :class:`Allocation` or an :class:`Option` (whose
    proof status is then recorded). It may cover fewer units than ordered
    (the rest is lost); an empty allocation ships nothing.

    ``begin`` is called once with the full network and the whole stream, in
    replay order, before the first decision (a policy may pre-compute from
    it). If ``period_days`` is not None, ``end_period`` is called with a
    :class:`Snapshot` at every boundary ``t0 + k * period_days`` (``t0``:
    midnight of the first order) crossed before an order, and once at the
    end of the stream.

    ``end_period`` may revise the orders decided since the previous boundary:
    it returns their new allocations by order id (None or empty: no change).
    The replay then gives back every unit those orders took and ships them
    again in replay order, each with its final allocation, re-priced by the
    evaluator on the running stock as a decision is. A revision must ship the
    same units of each line and arrive no later than the order's first
    decision (its promise), or it is a :class:`PolicyError`. The period's
    orders must share a calendar day and no top-up may fall inside it
    (``ValueError``): revising policies use a period that divides a day.
    """

    @property
    def name(self) -> str: ...

    @property
    def period_days(self) -> float | None: ...

    def begin(self, network: Network, orders: Sequence[SimOrder]) -> None: ...

    def decide(self, network: Network, order: SimOrder) -> Allocation | Option: ...

    def end_period(self, snapshot: Snapshot) -> Mapping[str, Allocation] | None: ...


class BasePolicy:
    """Defaults for :class:`Policy`: no preparation, no periodic hook."""

    period_days: float | None = None

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def begin(self, network: Network, orders: Sequence[SimOrder]) -> None:
        return None

    def decide(self, network: Network, order: SimOrder) -> Allocation | Option:
        raise NotImplementedError

    def end_period(self, snapshot: Snapshot) -> Mapping[str, Allocation] | None:
        return None


class RulePolicy(BasePolicy):
    """A rule of :mod:`sourcing.baselines`: whole order if it can, else what it can.

    ``priority`` (node ids, most preferred first) is passed to
    ``priority_list``; ids absent from the order's view are skipped.
    """

    def __init__(self, name: str, priority: Sequence[str] | None = None) -> None:
        super().__init__(name)
        rules: dict[str, Callable[..., Option]] = {
            "greedy_nearest": greedy_nearest,
            "priority_list": priority_list,
            "ship_complete_first": ship_complete_first,
        }
        if name not in rules:
            raise ValueError(f"unknown rule policy {name!r}")
        self._rule = rules[name]
        self._priority = tuple(priority) if priority is not None else None

    def decide(self, network: Network, order: SimOrder) -> Allocation | Option:
        kwargs: dict[str, Any] = {}
        if self._priority is not None:
            kwargs["priority"] = [n for n in self._priority if n in network.node_index]
        try:
            return self._rule(network, order.order, **kwargs)
        except ShortageError:
            return self._rule(network, order.order, allow_partial=True, **kwargs)


class OptimiserPolicy(BasePolicy):
    """The optimiser (:func:`~sourcing.menu.quote`), taking the option with ``label``.

    If the stock cannot cover the order it quotes again with
    ``allow_partial`` (the options then cover as many units as possible).
    """

    def __init__(self, name: str, label: Label, settings: QuoteSettings) -> None:
        super().__init__(name)
        self._label = label
        settings = replay_settings(settings)
        self._full = replace(settings, allow_partial=False)
        self._partial = replace(settings, allow_partial=True)

    def decide(self, network: Network, order: SimOrder) -> Allocation | Option:
        try:
            result = quote(network, order.order, self._full)
        except ShortageError:
            result = quote(network, order.order, self._partial)
        option = result.option(self._label)
        return option if option is not None else Allocation(())


class BatchPolicy(OptimiserPolicy):
    """The optimiser with periodic batch re-optimisation (DESIGN section 5).

    Semantics in the replay: each order is quoted by the optimiser when it
    arrives and takes the option with ``label``; that option's delivery day
    is its *promise* and its units are held for it at once (the replay takes
    them from stock, as for every policy). The order is not shipped yet: at
    the end of each period (``period_days``, default one day; it must divide
    a day, so a period's orders share that day's capacity) the orders held
    in it are re-assigned jointly by :func:`sourcing.batch.reoptimise`, with
    their units given back to the pool, within their promises, never at a
    higher total cost, and then shipped: the replay re-prices every order of
    the period with its final allocation (see :class:`Policy`). Orders of a
    period compete for the stock left by the earlier periods, as in real
    operation where released orders are no longer re-assigned.

    The batch prices the period's orders on the stock at the period's end
    (their own units given back); the replay re-prices them one by one on
    the running stock, so storage credits (which depend on the units on
    hand) can differ by a little from the batch's own totals. The batch's
    solve time is shared out over the period's orders in ``decide_seconds``.
    """

    def __init__(
        self,
        name: str,
        label: Label,
        settings: QuoteSettings,
        period_days: float = 1.0,
        batch: BatchSettings | None = None,
    ) -> None:
        super().__init__(name, label, settings)
        divides = 0 < period_days <= 1.0 and math.isclose(
            1.0 / period_days, round(1.0 / period_days), abs_tol=1e-9
        )
        if not divides:
            raise ValueError(f"policy {name}: period_days must divide a day, got {period_days}")
        self.period_days = period_days
        self._batch = batch or REPLAY_BATCH
        self._network: Network | None = None
        self._held: list[BatchOrder] = []

    def begin(self, network: Network, orders: Sequence[SimOrder]) -> None:
        self._network = network
        self._held = []

    def decide(self, network: Network, order: SimOrder) -> Allocation | Option:
        decision = super().decide(network, order)
        if isinstance(decision, Option):
            allocation, days = decision.allocation, decision.delivery_days
        else:
            allocation, days = decision, 0
        self._held.append(BatchOrder(order.order_id, order.order, allocation, days))
        return decision

    def end_period(self, snapshot: Snapshot) -> Mapping[str, Allocation] | None:
        held, self._held = self._held, []
        if not held or self._network is None:
            return None
        network = self._network
        on_hand = snapshot.on_hand.copy()
        capacity = network.capacity - snapshot.capacity_used
        for batch_order in held:
            for parcel in batch_order.current.parcels:
                n = network.node_index[parcel.node_id]
                for line in parcel.lines:
                    on_hand[n, network.sku_index[line.sku]] += line.qty
                    capacity[n] += line.qty
        capacity = np.where(network.capacity < UNLIMITED_CAPACITY, capacity, network.capacity)
        pool = network.replace(on_hand=on_hand)
        result = reoptimise(BatchInstance(pool, tuple(held), capacity[None, :]), self._batch)
        return {o.order_id: o.allocation for o in result.outcomes if o.changed}


@dataclass(frozen=True)
class PolicyOptions:
    """Settings shared by the built-in policies of one what-if run.

    ``top_up_every_days``: the replenishment schedule, which forward-looking
    policies plan with (their horizon ends at the next top-up); ``forward``:
    their prices' settings (:mod:`sourcing.whatif.forward`).
    """

    settings: QuoteSettings = DEFAULT_SIM_SETTINGS
    priority: tuple[str, ...] | None = None
    top_up_every_days: float | None = None
    forward: ForwardSettings = field(default_factory=ForwardSettings)


#: Built-in policies by name (:mod:`sourcing.whatif.forward` adds ``optimiser_forward``
#: and ``optimiser_forward_batch``).
POLICY_FACTORIES: dict[str, Callable[[PolicyOptions], Policy]] = {
    "greedy_nearest": lambda o: RulePolicy("greedy_nearest"),
    "priority_list": lambda o: RulePolicy("priority_list", o.priority),
    "ship_complete_first": lambda o: RulePolicy("ship_complete_first"),
    "optimiser_cheapest": lambda o: OptimiserPolicy(
        "optimiser_cheapest", Label.CHEAPEST, o.settings
    ),
    "optimiser_fastest": lambda o: OptimiserPolicy("optimiser_fastest", Label.FASTEST, o.settings),
    "optimiser_balanced": lambda o: OptimiserPolicy(
        "optimiser_balanced", Label.BALANCED, o.settings
    ),
    "optimiser_batch": lambda o: BatchPolicy("optimiser_batch", Label.CHEAPEST, o.settings),
}


def make_policy(name: str, options: PolicyOptions | None = None) -> Policy:
    """A built-in policy by name (see :data:`POLICY_FACTORIES`)."""
    try:
        factory = POLICY_FACTORIES[name]
    except KeyError:
        known = ", ".join(POLICY_FACTORIES)
        raise ValueError(f"unknown policy {name!r} (known: {known})") from None
    return factory(options or PolicyOptions())


#: KPI names in table order (see :meth:`SimulationResult.kpis`).
KPI_COLUMNS: Final = (
    "orders",
    "fill_rate",
    "unit_fill_rate",
    "ship_cost_per_order",
    "storage_credit_per_order",
    "net_cost_per_order",
    "parcels_per_order",
    "split_rate",
    "mean_delivery_days",
    "p95_delivery_days",
    "solver_ms_per_order",
)

_ORDER_COLUMNS: Final = (
    "order_id",
    "created_at",
    "units_ordered",
    "units_shipped",
    "parcels",
    "shipping",
    "handling",
    "storage_credit",
    "cost",
    "delivery_days",
    "status",
    "decide_seconds",
)
_PARCEL_COLUMNS: Final = (
    "order",
    "node_id",
    "service",
    "zone",
    "distance_km",
    "units",
    "weight_g",
    "shipping",
    "handling",
    "storage_credit",
    "arrival_days",
)


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """The replay of one stream under one policy.

    ``orders``: one row per order in replay order, with ``order_id``,
    ``created_at``, ``units_ordered``, ``units_shipped``, ``parcels``, money
    in integer millicents (``shipping`` = carrier base + per-kg charges,
    ``handling``, ``storage_credit``, ``cost`` = shipping + handling -
    storage credit, as :func:`~sourcing.evaluate.evaluate` prices it),
    ``delivery_days`` (latest parcel arrival, 0 when nothing shipped),
    ``status`` (the option's proof status, or "" for a bare allocation) and
    ``decide_seconds`` (wall time of the policy's decision).

    ``parcels``: one row per parcel: ``order`` (row of ``orders``),
    ``node_id``, ``service``, ``zone``, ``distance_km``, ``units``,
    ``weight_g``, money as above and ``arrival_days``.

    ``on_hand_end``: the running ``on_hand`` after the last order (N x S).
    """

    policy: str
    node_ids: tuple[str, ...]
    orders: pd.DataFrame
    parcels: pd.DataFrame
    on_hand_end: IntArray

    def kpis(self) -> dict[str, float]:
        """The KPIs of the run (money in currency units, days in days).

        With *shipped* orders those that shipped at least one unit:

        * ``orders``: orders replayed;
        * ``fill_rate``: complete orders (every unit shipped) / orders;
        * ``unit_fill_rate``: units shipped / units ordered;
        * ``ship_cost_per_order``: carrier charges + handling, summed over
          shipped orders / shipped orders;
        * ``storage_credit_per_order``: storage credit / shipped orders;
        * ``net_cost_per_order``: the reference allocation cost
          (ship cost - storage credit) / shipped orders;
        * ``parcels_per_order``: parcels / shipped orders;
        * ``split_rate``: shipped orders with 2+ parcels / shipped orders;
        * ``mean_delivery_days``: mean over shipped orders of the latest
          parcel's arrival day; ``p95_delivery_days``: its 95th percentile by
          nearest rank (the least day by which at least 95% arrive);
        * ``solver_ms_per_order``: mean wall time of the policy's decision per
          order, in ms (the only figure that depends on the machine).

        Ratios over an empty set are NaN.
        """
        o = self.orders
        n = len(o)
        shipped = o[o["units_shipped"] > 0]
        s = len(shipped)

        def per_shipped(total: float) -> float:
            return total / s if s else math.nan

        ship_cost = float(shipped["shipping"].sum() + shipped["handling"].sum())
        credit = float(shipped["storage_credit"].sum())
        days = shipped["delivery_days"].to_numpy()
        ordered = float(o["units_ordered"].sum())
        return {
            "orders": float(n),
            "fill_rate": float((o["units_shipped"] == o["units_ordered"]).sum()) / n
            if n
            else math.nan,
            "unit_fill_rate": float(o["units_shipped"].sum()) / ordered if ordered else math.nan,
            "ship_cost_per_order": per_shipped(ship_cost / MILLICENTS_PER_UNIT),
            "storage_credit_per_order": per_shipped(credit / MILLICENTS_PER_UNIT),
            "net_cost_per_order": per_shipped(float(shipped["cost"].sum()) / MILLICENTS_PER_UNIT),
            "parcels_per_order": per_shipped(float(shipped["parcels"].sum())),
            "split_rate": per_shipped(float((shipped["parcels"] > 1).sum())),
            "mean_delivery_days": float(days.mean()) if s else math.nan,
            "p95_delivery_days": float(np.percentile(days, 95, method="inverted_cdf"))
            if s
            else math.nan,
            "solver_ms_per_order": float(o["decide_seconds"].mean()) * 1000 if n else math.nan,
        }

    def node_volume(self) -> pd.DataFrame:
        """Per node (network order, every node listed): parcels and units shipped."""
        p = self.parcels
        grouped = p.groupby("node_id", sort=False).agg(
            parcels=("units", "size"), units=("units", "sum")
        )
        volume = grouped.reindex(list(self.node_ids), fill_value=0)
        volume.index.name = "node_id"
        return volume.astype("int64")


@dataclass
class _Records:
    """The replay's order and parcel rows, column by column."""

    orders: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in _ORDER_COLUMNS})
    parcels: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in _PARCEL_COLUMNS})

    def add_parcel(self, index: int, parcel: ParcelCost, units: int) -> None:
        p = self.parcels
        p["order"].append(index)
        p["node_id"].append(parcel.node_id)
        p["service"].append(parcel.service)
        p["zone"].append(parcel.zone)
        p["distance_km"].append(parcel.distance_km)
        p["units"].append(units)
        p["weight_g"].append(parcel.weight_g)
        p["shipping"].append(parcel.shipping)
        p["handling"].append(parcel.handling)
        p["storage_credit"].append(parcel.storage_credit)
        p["arrival_days"].append(parcel.arrival_days)

    def add_order(
        self,
        item: SimOrder,
        units_shipped: int,
        evaluation: Evaluation,
        status: str,
        seconds: float,
    ) -> None:
        r = self.orders
        r["order_id"].append(item.order_id)
        r["created_at"].append(item.created_at)
        r["units_ordered"].append(sum(line.qty for line in item.order.lines))
        r["units_shipped"].append(units_shipped)
        r["parcels"].append(evaluation.num_parcels)
        r["shipping"].append(evaluation.shipping)
        r["handling"].append(evaluation.handling)
        r["storage_credit"].append(evaluation.storage_credit)
        r["cost"].append(evaluation.cost)
        r["delivery_days"].append(evaluation.delivery_days)
        r["status"].append(status)
        r["decide_seconds"].append(seconds)

    def marks(self) -> tuple[int, int]:
        """How many order and parcel rows there are (a period's start)."""
        return len(self.orders["order_id"]), len(self.parcels["order"])

    def truncate(self, marks: tuple[int, int]) -> None:
        """Drop the rows recorded since ``marks``."""
        for columns, mark in zip((self.orders, self.parcels), marks, strict=True):
            for values in columns.values():
                del values[mark:]


@dataclass(frozen=True)
class _Shipped:
    """One decided order, as the replay took it: what a revision is checked against."""

    index: int
    item: SimOrder
    allocation: Allocation
    status: str
    seconds: float
    delivery_days: int
    covered: dict[int, int]
    taken: list[tuple[int, int, int]]  # (node, SKU, units)


def _covered(evaluation: Evaluation) -> dict[int, int]:
    covered: dict[int, int] = {}
    for parcel in evaluation.parcels:
        for line in parcel.lines:
            covered[line.line] = covered.get(line.line, 0) + line.qty
    return dict(sorted(covered.items()))


def midnight(moment: datetime) -> datetime:
    """The start of ``moment``'s day: top-ups and periods count from the first order's."""
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _receipts(
    network: Network, replenishment: Replenishment | None
) -> list[tuple[datetime, int, int, int]]:
    if replenishment is None:
        return []
    result = []
    for i, r in enumerate(replenishment.receipts):
        if r.node_id not in network.node_index:
            raise ValueError(f"receipt {i}: unknown node {r.node_id!r}")
        if r.sku not in network.sku_index:
            raise ValueError(f"receipt {i}: unknown SKU {r.sku!r}")
        if r.qty < 0:
            raise ValueError(f"receipt {i}: qty must be >= 0, got {r.qty}")
        result.append((r.at, network.node_index[r.node_id], network.sku_index[r.sku], r.qty))
    result.sort(key=lambda t: t[0])
    return result


class _View:
    """Builds each order's view of the network from the running state."""

    def __init__(self, network: Network) -> None:
        self.net = network
        self.floor: IntArray = network.safety_stock + network.reserved
        self.limited = network.capacity < UNLIMITED_CAPACITY

    def build(self, on_hand: IntArray, used: IntArray, skus: IntArray) -> Network:
        net = self.net
        stock = on_hand[:, skus]
        nodes = np.flatnonzero((stock > self.floor[:, skus]).any(axis=1))
        remaining = np.where(
            self.limited[nodes],
            np.maximum(net.capacity[nodes] - used[nodes], 0),
            UNLIMITED_CAPACITY,
        )
        node_ids = net.node_ids
        sku_ids = net.sku_ids
        return Network(
            node_ids=tuple(node_ids[i] for i in nodes.tolist()),
            node_kinds=tuple(net.node_kinds[i] for i in nodes.tolist()),
            lat=net.lat[nodes],
            lon=net.lon[nodes],
            handling_days=net.handling_days[nodes],
            handling_cost=net.handling_cost[nodes],
            storage_cost=net.storage_cost[nodes],
            capacity=remaining,
            sku_ids=tuple(sku_ids[k] for k in skus.tolist()),
            weight_g=net.weight_g[skus],
            daily_demand=net.daily_demand[skus],
            on_hand=stock[nodes],
            safety_stock=net.safety_stock[np.ix_(nodes, skus)],
            reserved=net.reserved[np.ix_(nodes, skus)],
            zone_ids=net.zone_ids,
            zone_max_km=net.zone_max_km,
            service_ids=net.service_ids,
            base_price=net.base_price,
            per_kg=net.per_kg,
            transit_days=net.transit_days,
            offered=net.offered,
            horizon_days=net.horizon_days,
        )


def simulate(
    network: Network,
    orders: Iterable[SimOrder],
    policy: Policy,
    replenishment: Replenishment | None = None,
    progress: Callable[[int], object] | None = None,
) -> SimulationResult:
    """Replay ``orders`` through ``network`` with ``policy`` (see the module doc).

    ``progress`` is called with 1 after each order (e.g. ``tqdm.update``).
    Raises :class:`~sourcing.errors.InvalidOrderError` for a malformed
    order (unknown SKU, ...) before replaying anything, ``ValueError`` for a
    receipt naming an unknown node or SKU, and :class:`PolicyError` if the
    policy returns an allocation the evaluator rejects.
    """
    stream = sorted(orders, key=lambda o: o.created_at)  # stable: ties keep stream order
    for item in stream:
        validate_order(network, item.order)
    receipts = _receipts(network, replenishment)
    top_up = replenishment.top_up_every_days if replenishment else None
    if top_up is not None and not (math.isfinite(top_up) and top_up > 0):
        raise ValueError(f"top_up_every_days must be a positive number, got {top_up}")
    period = policy.period_days
    if period is not None and not (math.isfinite(period) and period > 0):
        raise ValueError(f"policy {policy.name}: period_days must be positive, got {period}")

    t0 = midnight(stream[0].created_at) if stream else datetime.min
    replay = _Replay(network, policy, _Clock(receipts, top_up, period, t0))
    policy.begin(network, stream)
    for index, item in enumerate(stream):
        replay.advance(item.created_at)
        replay.decide(index, item)
        if progress is not None:
            progress(1)
    if period is not None and stream:
        replay.close_period(stream[-1].created_at)
    return SimulationResult(
        policy=policy.name,
        node_ids=network.node_ids,
        orders=_frame(replay.records.orders, _ORDER_COLUMNS),
        parcels=_frame(replay.records.parcels, _PARCEL_COLUMNS),
        on_hand_end=replay.on_hand,
    )


@dataclass
class _Clock:
    """What comes due as the replay's time passes: receipts, stock top-ups, period ends, days."""

    receipts: list[tuple[datetime, int, int, int]]
    top_up: float | None
    period: float | None
    t0: datetime
    next_receipt: int = 0
    next_top_up: datetime | None = field(init=False)
    next_period: datetime | None = field(init=False)
    day: date = field(init=False)

    def __post_init__(self) -> None:
        t0 = self.t0
        self.next_top_up = t0 + timedelta(days=self.top_up) if self.top_up is not None else None
        self.next_period = t0 + timedelta(days=self.period) if self.period is not None else None
        self.day = t0.date()


class _Replay:
    """One replay's running state: stock, the day's capacity used, the records, the open period.

    :meth:`decide` asks the policy about one order on its view and ships the
    decision (:meth:`ship`); :meth:`advance` brings receipts, top-ups, period
    ends and the day's capacity reset up to an order's time; a period's end
    (:meth:`close_period`) may revise the period's orders, replayed in order.
    """

    def __init__(self, network: Network, policy: Policy, clock: _Clock) -> None:
        self.network = network
        self.policy = policy
        self.clock = clock
        self.view = _View(network)
        self.start_on_hand = network.on_hand
        self.on_hand: IntArray = network.on_hand.copy()
        self.used: IntArray = np.zeros(len(network.node_ids), dtype=np.int64)
        self.records = _Records()
        self.decided = 0
        self.period_orders: list[_Shipped] = []  # decided since the last boundary, in order
        self.period_marks = (0, 0)  # rows of records.orders and records.parcels when it began
        self.topped_up_in_period = False

    def snapshot(self, at: datetime) -> Snapshot:
        frozen_on_hand, frozen_used = self.on_hand.copy(), self.used.copy()
        frozen_on_hand.setflags(write=False)
        frozen_used.setflags(write=False)
        return Snapshot(at, frozen_on_hand, frozen_used, self.decided)

    def advance(self, now: datetime) -> None:
        """Everything due by ``now``, in this order: period ends, receipts, top-ups, a new day."""
        on_hand, clock = self.on_hand, self.clock
        while clock.next_period is not None and clock.next_period <= now:
            self.close_period(clock.next_period)
            clock.next_period += timedelta(days=clock.period or 0)
        receipts = clock.receipts
        while clock.next_receipt < len(receipts) and receipts[clock.next_receipt][0] <= now:
            _, n, k, qty = receipts[clock.next_receipt]
            on_hand[n, k] += qty
            clock.next_receipt += 1
        while clock.next_top_up is not None and clock.next_top_up <= now:
            np.maximum(on_hand, self.start_on_hand, out=on_hand)
            clock.next_top_up += timedelta(days=clock.top_up or 0)
            self.topped_up_in_period = self.topped_up_in_period or bool(self.period_orders)
        if now.date() != clock.day:
            clock.day = now.date()
            self.used[:] = 0

    def decide(self, index: int, item: SimOrder) -> None:
        """Ask the policy about ``item`` on its view of the running state, and ship it."""
        network, order = self.network, item.order
        skus = np.unique([network.sku_index[line.sku] for line in order.lines])
        local = self.view.build(self.on_hand, self.used, skus)
        started = time.perf_counter()
        decision = self.policy.decide(local, item)
        seconds = time.perf_counter() - started
        if isinstance(decision, Option):
            allocation, status = decision.allocation, decision.proof.status
        else:
            allocation, status = decision, ""
        shipped = self.ship(index, item, allocation, status, seconds)
        if self.clock.period is not None:  # kept for the period's end, which may revise it
            self.period_orders.append(shipped)
        self.decided += 1

    def ship(
        self,
        index: int,
        item: SimOrder,
        allocation: Allocation,
        status: str,
        seconds: float,
        promised: _Shipped | None = None,
    ) -> _Shipped:
        """Evaluate one decision on the order's view, take its units, record it.

        ``promised``: the order's first decision, when this one revises it (it
        must ship the same units per line, arriving no later).
        """
        network, policy, on_hand, floor = self.network, self.policy, self.on_hand, self.view.floor
        order = item.order
        skus = np.unique([network.sku_index[line.sku] for line in order.lines])
        local = self.view.build(on_hand, self.used, skus)
        evaluation = evaluate(local, order, allocation, allow_partial=True)
        if not evaluation.is_feasible:
            raise PolicyError(
                f"policy {policy.name} chose an infeasible allocation for order "
                f"{item.order_id}: {'; '.join(evaluation.violations)}"
            )
        covered = _covered(evaluation)
        if promised is not None and (
            covered != promised.covered or evaluation.delivery_days > promised.delivery_days
        ):
            raise PolicyError(
                f"policy {policy.name} revised order {item.order_id} to ship {covered} by day "
                f"{evaluation.delivery_days}; it promised {promised.covered} by day "
                f"{promised.delivery_days}"
            )

        units_shipped = 0
        taken: list[tuple[int, int, int]] = []
        for parcel in evaluation.parcels:
            node = network.node_index[parcel.node_id]
            units = 0
            for pl in parcel.lines:
                k = network.sku_index[pl.sku]
                on_hand[node, k] -= pl.qty
                taken.append((node, k, pl.qty))
                units += pl.qty
                if on_hand[node, k] < floor[node, k] or on_hand[node, k] < 0:
                    raise AssertionError(
                        f"stock of {pl.sku} at {parcel.node_id} fell to {on_hand[node, k]} "
                        f"(floor {floor[node, k]}) after order {item.order_id}"
                    )
            self.used[node] += units
            units_shipped += units
            self.records.add_parcel(index, parcel, units)
        self.records.add_order(item, units_shipped, evaluation, status, seconds)
        return _Shipped(
            index, item, allocation, status, seconds, evaluation.delivery_days, covered, taken
        )

    def close_period(self, at: datetime) -> None:
        """Call ``end_period``; apply its revisions by replaying the period with them."""
        policy = self.policy
        started = time.perf_counter()
        revisions = policy.end_period(self.snapshot(at))
        spent = time.perf_counter() - started
        period_orders = self.period_orders
        if revisions:
            held = {s.item.order_id: s for s in period_orders}
            outside = sorted(set(revisions) - set(held))
            if outside:
                raise PolicyError(
                    f"policy {policy.name} revised order(s) {', '.join(outside[:5])} "
                    "outside the period just ended"
                )
            if self.topped_up_in_period or any(
                s.item.created_at.date() != self.clock.day for s in held.values()
            ):
                raise ValueError(
                    f"policy {policy.name} revises a period that spans a stock top-up or a "
                    "change of day: use a period that divides a day and top-ups on its boundaries"
                )
            # Rewind: every unit the period's orders took goes back, and their records.
            for shipped in period_orders:
                for node, k, qty in shipped.taken:
                    self.on_hand[node, k] += qty
                    self.used[node] -= qty
            self.records.truncate(self.period_marks)
            # Replay in order, each with its final allocation; the batch's time is
            # shared out over the orders it re-decided.
            share = spent / len(period_orders)
            for shipped in period_orders:
                revised = revisions.get(shipped.item.order_id)
                self.ship(
                    shipped.index,
                    shipped.item,
                    shipped.allocation if revised is None else revised,
                    shipped.status,
                    shipped.seconds + share,
                    None if revised is None else shipped,
                )
        self.period_orders = []
        self.period_marks = self.records.marks()
        self.topped_up_in_period = False


_INT_COLUMNS: Final = frozenset(
    {
        "units_ordered",
        "units_shipped",
        "parcels",
        "shipping",
        "handling",
        "storage_credit",
        "cost",
        "delivery_days",
        "order",
        "units",
        "weight_g",
        "arrival_days",
    }
)


def _frame(columns: Mapping[str, list[Any]], names: Sequence[str]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for name in names:
        values = columns[name]
        if name in _INT_COLUMNS:
            data[name] = np.asarray(values, dtype=np.int64)
        elif name in {"distance_km", "decide_seconds"}:
            data[name] = np.asarray(values, dtype=np.float64)
        elif name == "created_at":
            data[name] = pd.to_datetime(pd.Series(values, dtype="object"))
        else:
            data[name] = pd.Series(values, dtype="object")
    return pd.DataFrame(data)
