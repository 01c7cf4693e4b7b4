"""The menu for one cart: what the shopper is offered, composed from the legs that price it.

:func:`quote` is the engine's entry point (checkout, re-sourcing, the CLI and
the what-if replay all call it). One request reads top-down from here:

1. plain delivery (the default): :func:`sourcing.solver.quote_delivery`, the
   Pareto set over (cost, day, parcels) and its four labels;
2. with ``allow_backorder`` or pickup stores (:mod:`sourcing.fulfil`): the
   delivery menu first, then what it leaves short waits for inbound receipts
   (:func:`~sourcing.fulfil.split_demand`, :func:`~sourcing.fulfil.backorder_menu`),
   then one COLLECT option per pickup store
   (:func:`~sourcing.fulfil.collect_options`). Every leg is solved by the same
   exact solver and shares the quote's time budget.

This module imports the solver and the legs; neither imports it.
"""

from __future__ import annotations

import time
from dataclasses import replace

from sourcing.fulfil import (
    LegBudget,
    backorder_menu,
    collect_options,
    collect_pick,
    pickup_stores,
    split_demand,
)
from sourcing.model import Label, Network, Option, Order, Quote, QuoteSettings, Shortfall
from sourcing.orders import validate_order
from sourcing.solver import quote_delivery

__all__ = ["quote"]


def quote(network: Network, order: Order, settings: QuoteSettings | None = None) -> Quote:
    """All options for ``order``: the Pareto frontier and its labelled menu.

    Raises :class:`~sourcing.errors.InvalidOrderError` for a malformed order
    or pickup store, and :class:`~sourcing.errors.ShortageError` when stock
    (or capacity; and receipts, with backorder) is short and
    ``settings.allow_partial`` is off.
    """
    settings = settings or QuoteSettings()
    if not (settings.pickup_stores or settings.nearest_stores or settings.allow_backorder):
        return quote_delivery(network, order, settings)
    budget = LegBudget(time.perf_counter(), settings, {})
    validate_order(network, order)
    stores = pickup_stores(network, order, settings)
    demand = split_demand(network, order, budget)
    options: list[Option]
    frontier: list[Option]
    shortfall: tuple[Shortfall, ...]
    if demand.waits:
        options, frontier, shortfall = backorder_menu(network, order, demand, budget)
    else:
        # Nothing waits: the delivery menu is exactly the plain quote's.
        assert demand.delivery is not None  # without backorder a shortage raised above
        options = list(demand.delivery.options)
        frontier = list(demand.delivery.frontier)
        shortfall = demand.delivery.shortfall
    if demand.stock.sum() + demand.inbound.sum() > 0:
        for store in stores:
            at_store = collect_options(network, order, store, demand, budget)
            pick = collect_pick(at_store, settings.value_of_day)
            if pick is None:
                continue
            at_store[pick] = replace(at_store[pick], labels=(Label.COLLECT,))
            frontier.extend(at_store)
            options.append(at_store[pick])
    return Quote(tuple(options), tuple(frontier), shortfall, budget.quote_stats())
