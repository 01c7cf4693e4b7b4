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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from sourcing.forward.fluid import FluidSettings, OrderHistory, forecast_demand, solve_fluid
from sourcing.model import Allocation, IntArray, Network, OpportunityCosts, Order

__all__ = ["ForwardPricer", "ForwardSettings", "RepriceStats"]


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
        self.prices: OpportunityCosts | None = None
        self.log: list[RepriceStats] = []
        self._since = 0
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
        horizon = self.horizon(now)
        forecast = forecast_demand(
            self.network, self.history, self._days(now), horizon, self.settings.fluid
        )
        if forecast is None:
            return self.prices
        on_hand = np.maximum(self.on_hand, 0)
        available = np.maximum(on_hand - self.floor, 0)
        solution = solve_fluid(
            self.network.replace(on_hand=on_hand),
            available,
            forecast,
            self.settings.fluid,
            seed=len(self.log),
        )
        if solution.status != "OPTIMAL":
            return self.prices  # keep the last good ones
        values = np.rint(solution.opportunity * self.settings.dual_weight).astype(np.int64)
        self.prices = OpportunityCosts(self.network.node_ids, self.network.sku_ids, values)
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
        return self.prices
