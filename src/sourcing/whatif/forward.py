"""The what-if's forward-looking policies: ``optimiser_forward`` and ``optimiser_forward_batch``.

The optimiser on forward-looking prices (:mod:`sourcing.forward`): each unit's
cost gets its opportunity cost, the dual value of its (node, SKU) in the fluid
LP of the demand expected until the next top-up, estimated from the orders
seen so far. Importing this module adds both to
:data:`sourcing.whatif.simulate.POLICY_FACTORIES` (the package imports it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from sourcing.batch import BatchOrder
from sourcing.forward.pricer import ForwardPricer, ForwardSettings
from sourcing.model import Allocation, Label, Network, Option, QuoteSettings
from sourcing.whatif.simulate import (
    POLICY_FACTORIES,
    BatchPolicy,
    OptimiserPolicy,
    SimOrder,
    Snapshot,
)

__all__ = ["ForwardBatchPolicy", "ForwardPolicy"]


class ForwardPolicy(OptimiserPolicy):
    """The optimiser on forward-looking prices (:mod:`sourcing.forward`): ``optimiser_forward``.

    Each order is quoted with the opportunity cost of every unit added to its
    cost (:class:`~sourcing.forward.pricer.ForwardPricer`: the fluid LP of the
    demand expected until the next top-up, estimated from the orders seen so
    far) and takes the option with ``label`` by that priced cost; the replay
    prices what it ships at the reference cost as for every policy. The
    pricer sees each order as it arrives (never the stream ahead), takes the
    units each decision ships, tops up on ``top_up_every_days`` and is reset
    to the replay's stock at the end of each day (``period_days``, no revisions).
    """

    period_days: float | None = 1.0

    def __init__(
        self,
        name: str,
        label: Label,
        settings: QuoteSettings,
        top_up_every_days: float | None = None,
        forward: ForwardSettings | None = None,
    ) -> None:
        super().__init__(name, label, settings)
        self._top_up = top_up_every_days
        self._forward = forward or ForwardSettings()
        self.pricer: ForwardPricer | None = None

    @property
    def settings(self) -> ForwardSettings:
        return self._forward

    def begin(self, network: Network, orders: Sequence[SimOrder]) -> None:
        start = orders[0].created_at if orders else datetime.min
        self.pricer = ForwardPricer(network, start, self._top_up, self._forward)

    def decide(self, network: Network, order: SimOrder) -> Allocation | Option:
        pricer = self.pricer
        assert pricer is not None, "begin() first"
        pricer.observe(order.created_at, order.order)
        prices = pricer.current(order.created_at)
        full, partial = self._full, self._partial
        self._full = replace(full, opportunity=prices)
        self._partial = replace(partial, opportunity=prices)
        try:
            decision = super().decide(network, order)
        finally:
            self._full, self._partial = full, partial
        pricer.take(decision.allocation if isinstance(decision, Option) else decision)
        return decision

    def end_period(self, snapshot: Snapshot) -> Mapping[str, Allocation] | None:
        if self.pricer is not None:
            self.pricer.set_on_hand(snapshot.on_hand)
        return None


class ForwardBatchPolicy(BatchPolicy):
    """``optimiser_forward_batch``: forward-looking prices on arrival, the daily batch after.

    Each order is quoted as by :class:`ForwardPolicy` (its promise is the
    priced choice's delivery day); at the end of each day the day's orders
    are re-assigned jointly by the batch within their promises
    (:class:`BatchPolicy`), at the priced cost (``ForwardSettings.priced_batch``;
    off, the batch re-assigns at the reference cost and moves the day's
    orders back onto the units the prices kept for later orders, undoing
    part of what the prices won). Its prices (``ForwardSettings.batch_prices``):
    the pricer's latest scheduled ones, or prices solved for the batch with
    the day's orders in the model, their units given back
    (:meth:`~sourcing.forward.pricer.ForwardPricer.price_held`: the fluid LP,
    or the sampled-future master of :mod:`sourcing.forward.sampled`). The
    pricer follows the batch's changes.
    """

    def __init__(
        self,
        name: str,
        label: Label,
        settings: QuoteSettings,
        top_up_every_days: float | None = None,
        forward: ForwardSettings | None = None,
    ) -> None:
        super().__init__(name, label, settings)
        self._forward = ForwardPolicy(name, label, settings, top_up_every_days, forward)

    def begin(self, network: Network, orders: Sequence[SimOrder]) -> None:
        super().begin(network, orders)
        self._forward.begin(network, orders)

    def decide(self, network: Network, order: SimOrder) -> Allocation | Option:
        decision = self._forward.decide(network, order)
        if isinstance(decision, Option):
            allocation, days = decision.allocation, decision.delivery_days
        else:
            allocation, days = decision, 0
        self._held.append(BatchOrder(order.order_id, order.order, allocation, days))
        return decision

    def end_period(self, snapshot: Snapshot) -> Mapping[str, Allocation] | None:
        held = {o.order_id: o.current for o in self._held}
        pricer = self._forward.pricer
        settings = self._forward.settings
        if pricer is not None and settings.priced_batch:
            # The batch keeps the stock the prices reserve: it re-assigns at the priced cost.
            prices = pricer.prices
            if settings.batch_prices != "scheduled" and self._held:
                pricer.set_on_hand(snapshot.on_hand)
                held_orders = [(o.order, o.current) for o in self._held]
                prices = pricer.price_held(snapshot.at, held_orders) or prices
            self._batch = replace(self._batch, opportunity=prices)
        revisions = super().end_period(snapshot)
        if pricer is not None:
            pricer.set_on_hand(snapshot.on_hand)
            for order_id, allocation in (revisions or {}).items():
                pricer.take(held[order_id], sign=-1)
                pricer.take(allocation)
        return revisions


POLICY_FACTORIES.update(
    {
        "optimiser_forward": lambda o: ForwardPolicy(
            "optimiser_forward", Label.CHEAPEST, o.settings, o.top_up_every_days, o.forward
        ),
        "optimiser_forward_batch": lambda o: ForwardBatchPolicy(
            "optimiser_forward_batch", Label.CHEAPEST, o.settings, o.top_up_every_days, o.forward
        ),
    }
)
