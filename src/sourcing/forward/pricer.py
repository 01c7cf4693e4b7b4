"""Keeping opportunity costs current while orders arrive: history, stock, a re-solve schedule.

:class:`ForwardPricer` is what a forward-looking policy (the what-if's
``optimiser_forward``) or the service's ``oms reprice`` job holds: the order
history seen so far (never the future), the stock it believes each node has
left, and the latest :class:`~sourcing.model.OpportunityCosts`. It re-solves
the fluid LP (:mod:`sourcing.forward.fluid`) every ``reprice_every_orders``
orders or ``reprice_every_hours`` of order time, whichever comes first, over
the horizon until the next top-up (or ``horizon_days`` without top-ups).

Stock: it starts from the network's ``on_hand``, takes what each decision
ships, tops up on the replenishment schedule it was given (back to the
starting level, as the replay does), and is reset to the truth whenever the
caller knows it (:meth:`ForwardPricer.set_on_hand`).

A batch that re-assigns orders placed and not yet shipped can ask for prices
of its own (:meth:`ForwardPricer.price_held`): those orders in the model with
their units given back, beside the demand expected after them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from sourcing.forward.fluid import (
    Committed,
    FluidSettings,
    OrderHistory,
    forecast_demand,
    solve_fluid,
)
from sourcing.forward.sampled import (
    SampledPrices,
    SampledSettings,
    sample_future,
    sampled_prices,
)
from sourcing.model import Allocation, IntArray, Network, OpportunityCosts, Order, OrderLine

__all__ = ["BATCH_PRICES", "ForwardPricer", "ForwardSettings", "RepriceStats"]


#: Where optimiser_forward_batch's batch takes its prices (:attr:`ForwardSettings.batch_prices`).
BATCH_PRICES = ("scheduled", "fluid", "sampled")


@dataclass(frozen=True)
class ForwardSettings:
    """When and how to re-solve the fluid LP (see the module doc)."""

    reprice_every_orders: int = 250
    reprice_every_hours: float = 6.0
    #: Horizon without a top-up schedule, in days.
    horizon_days: float = 7.0
    #: No prices before this many orders of history.
    min_history_orders: int = 50
    #: The share of each dual value charged as the opportunity cost (1: the LP's own).
    dual_weight: float = 1.0
    #: ``optimiser_forward_batch``: the daily batch re-assigns at the priced cost too.
    priced_batch: bool = True
    #: ... at which prices: "scheduled" (the last scheduled re-solve's), "fluid" (the
    #: fluid LP re-solved with the day's orders in it beside the expected demand, their
    #: units given back) or "sampled" (order-level: :mod:`sourcing.forward.sampled`).
    batch_prices: str = "scheduled"
    sampled: SampledSettings = field(default_factory=SampledSettings)
    fluid: FluidSettings = field(default_factory=FluidSettings)


@dataclass(frozen=True)
class RepriceStats:
    at: datetime
    orders_seen: int
    horizon_days: float
    expected_units: float
    lost_units: float
    priced_positions: int
    seconds: float


class ForwardPricer:
    """History, believed stock and the latest opportunity costs of one network."""

    def __init__(
        self,
        network: Network,
        start: datetime,
        top_up_every_days: float | None = None,
        settings: ForwardSettings | None = None,
    ) -> None:
        self.network = network
        self.settings = settings or ForwardSettings()
        self.t0 = start.replace(hour=0, minute=0, second=0, microsecond=0)
        self.top_up = top_up_every_days
        self.start_on_hand: IntArray = np.array(network.on_hand, dtype=np.int64)
        self.on_hand: IntArray = self.start_on_hand.copy()
        self.floor: IntArray = network.safety_stock + network.reserved
        self.history = OrderHistory(len(network.sku_ids))
        #: The orders seen so far, whole (the sampled prices resample them).
        self.baskets: list[Order] = []
        self.prices: OpportunityCosts | None = None
        self.log: list[RepriceStats] = []
        self.sampled_log: list[SampledPrices] = []
        self._since = 0
        self._reprices = 0
        self._last: datetime | None = None
        self._next_top_up = (
            self.t0 + timedelta(days=top_up_every_days) if top_up_every_days else None
        )

    def _days(self, at: datetime) -> float:
        return (at - self.t0) / timedelta(days=1)

    def advance(self, now: datetime) -> None:
        """Apply the top-ups due by ``now`` to the believed stock."""
        while self._next_top_up is not None and self._next_top_up <= now:
            np.maximum(self.on_hand, self.start_on_hand, out=self.on_hand)
            self._next_top_up += timedelta(days=self.top_up or 0)
            self._last = None  # a new period: re-solve before the next order

    def observe(self, at: datetime, order: Order) -> None:
        """One more order of history (call it when the order arrives)."""
        units: dict[int, int] = {}
        for line in order.lines:
            k = self.network.sku_index[line.sku]
            units[k] = units.get(k, 0) + line.qty
        self.history.add(order.destination.lat, order.destination.lon, self._days(at), units)
        self.baskets.append(order)
        self._since += 1

    def take(self, allocation: Allocation, sign: int = 1) -> None:
        """Units an allocation ships leave the believed stock (``sign=-1`` gives them back)."""
        for parcel in allocation.parcels:
            if parcel.inbound_day is not None:
                continue
            n = self.network.node_index[parcel.node_id]
            for line in parcel.lines:
                self.on_hand[n, self.network.sku_index[line.sku]] -= sign * line.qty

    def set_on_hand(self, on_hand: IntArray) -> None:
        self.on_hand = np.array(on_hand, dtype=np.int64)

    def horizon(self, now: datetime) -> float:
        """Days from ``now`` to the next top-up (or the fixed horizon)."""
        if self._next_top_up is None:
            return self.settings.horizon_days
        return max(self._days(self._next_top_up) - self._days(now), 1e-3)

    def due(self, now: datetime) -> bool:
        s = self.settings
        if self.history.orders < s.min_history_orders:
            return False
        if self._last is None or self._since >= s.reprice_every_orders:
            return True
        return (now - self._last) >= timedelta(hours=s.reprice_every_hours)

    def current(self, now: datetime) -> OpportunityCosts | None:
        """The opportunity costs to price the order arriving at ``now`` with (re-solved if due)."""
        self.advance(now)
        if self.due(now):
            self.reprice(now)
        return self.prices

    def reprice(self, now: datetime) -> OpportunityCosts | None:
        """Re-solve the fluid LP on the history and believed stock as of ``now``."""
        self._last, self._since = now, 0
        prices = self._solve(now, np.maximum(self.on_hand, 0), None, seed=self._reprices)
        self._reprices += 1
        if prices is not None:
            self.prices = prices
        return self.prices

    def price_held(
        self, now: datetime, held: Sequence[tuple[Order, Allocation]]
    ) -> OpportunityCosts | None:
        """Prices for re-assigning ``held`` orders (placed, not shipped) at ``now``.

        The fluid LP on the believed stock with the held orders' units given
        back, with each held order in it at its exact destination and units
        beside the demand expected after ``now`` (the expected demand shares
        what they leave). A unit's price is then what it is worth to these
        orders and the later ones together: unlike a re-solve on the stock
        the held orders leave, a unit they need is not priced as spare. The
        scheduled prices (:attr:`prices`) are left as they are; None: no
        history or no LP answer.
        """
        on_hand = np.maximum(self.on_hand, 0)
        s_count = len(self.network.sku_ids)
        units = np.zeros((len(held), s_count))
        for i, (_order, allocation) in enumerate(held):
            for parcel in allocation.parcels:
                if parcel.inbound_day is not None:
                    continue
                n = self.network.node_index[parcel.node_id]
                for line in parcel.lines:
                    k = self.network.sku_index[line.sku]
                    on_hand[n, k] += line.qty
                    units[i, k] += line.qty
        if self.settings.batch_prices == "sampled":
            return self._sampled(now, on_hand, held)
        keep = units.sum(axis=1) > 0
        committed = Committed(
            lat=np.array([o.destination.lat for o, _ in held], dtype=np.float64)[keep],
            lon=np.array([o.destination.lon for o, _ in held], dtype=np.float64)[keep],
            units=units[keep],
        )
        # Its own seeds: pricing a batch leaves the scheduled prices' demand samples as they were.
        return self._solve(now, on_hand, committed, seed=1_000_000 + len(self.log))

    def _sampled(
        self, now: datetime, on_hand: IntArray, held: Sequence[tuple[Order, Allocation]]
    ) -> OpportunityCosts | None:
        """The sampled-future prices (:mod:`sourcing.forward.sampled`) for ``held``."""
        history = self.history
        if history.orders < self.settings.min_history_orders or history.first_at is None:
            return None
        committed = [shipped for order, a in held if (shipped := _shipped(order, a)) is not None]
        seen_days = max(self._days(now) - history.first_at, 1.0 / 24)
        count = round(history.orders / seen_days * self.horizon(now))
        rng = np.random.default_rng((self.settings.fluid.seed, len(self.log)))
        future = sample_future(self.baskets, count, rng, self.settings.sampled.mix_destinations)
        result = sampled_prices(
            self.network.replace(on_hand=on_hand), committed, future, now, self.settings.sampled
        )
        self.sampled_log.append(result)
        if result.status.startswith("MASTER_"):
            return None
        values = np.rint(result.opportunity * self.settings.dual_weight).astype(np.int64)
        return OpportunityCosts(self.network.node_ids, self.network.sku_ids, values)

    def _solve(
        self, now: datetime, on_hand: IntArray, committed: Committed | None, seed: int
    ) -> OpportunityCosts | None:
        horizon = self.horizon(now)
        forecast = forecast_demand(
            self.network, self.history, self._days(now), horizon, self.settings.fluid
        )
        if forecast is None:
            return None
        available = np.maximum(on_hand - self.floor, 0)
        solution = solve_fluid(
            self.network.replace(on_hand=on_hand),
            available,
            forecast,
            self.settings.fluid,
            seed=seed,
            committed=committed,
        )
        if solution.status != "OPTIMAL":
            return None  # the caller keeps the last good ones
        values = np.rint(solution.opportunity * self.settings.dual_weight).astype(np.int64)
        prices = OpportunityCosts(self.network.node_ids, self.network.sku_ids, values)
        self.log.append(
            RepriceStats(
                at=now,
                orders_seen=self.history.orders,
                horizon_days=horizon,
                expected_units=solution.expected_units,
                lost_units=0.0 if math.isnan(solution.lost_units) else solution.lost_units,
                priced_positions=int(np.count_nonzero(solution.opportunity)),
                seconds=solution.seconds,
            )
        )
        return prices


def _shipped(order: Order, allocation: Allocation) -> Order | None:
    """The part of ``order`` its allocation ships from stock (None: nothing)."""
    qty: dict[str, int] = {}
    for parcel in allocation.parcels:
        if parcel.inbound_day is None:
            for line in parcel.lines:
                qty[line.sku] = qty.get(line.sku, 0) + line.qty
    if not qty:
        return None
    return Order(order.destination, tuple(OrderLine(sku, q) for sku, q in qty.items()))
