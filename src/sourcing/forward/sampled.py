"""Order-level opportunity costs: column generation over a sampled future.

The fluid LP (:mod:`sourcing.forward.fluid`) prices a unit of one SKU for a
region's expected demand: it cannot see that an order of two SKUs pays one
parcel when one node holds both, nor which of a node's few units goes to
which order. Here the future is a sample of whole orders, resampled from the
orders seen so far (past baskets with their destinations, never the stream
ahead), and the stock is priced by the same Dantzig-Wolfe master LP as the
perfect-hindsight bound (:mod:`sourcing.forward.hindsight`): each sampled
order picks a convex combination of its plans, the single-order solver
prices new plans, and the master's stock duals ``lambda[n, s]`` after a few
rounds are the opportunity costs. Orders already placed and not yet shipped
(``committed``, their units given back to the stock) come first in the
sample, as in the replay's arrival rule.

Model: that of :mod:`sourcing.forward.hindsight` on one period (the stock
now, the committed orders, then the sample in random order, each cut to what
the stock still serves, as the replay ships what it can); capacity is not
priced (the daily capacity of the network is not what the prices are for).

Measured on the scarce scenario (``benchmarks/README.md``, issue 18): as the
daily batch's prices it matches the fluid prices, at 11-14x the CPU per replay.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from sourcing.forward.hindsight import (
    HindsightSettings,
    Period,
    PeriodProblem,
    lost_penalty,
    served_in_turn,
)
from sourcing.forward.lp import OPTIMAL
from sourcing.model import MILLICENTS_PER_UNIT, IntArray, Network, Order

__all__ = ["SampledPrices", "SampledSettings", "sample_future", "sampled_prices"]


@dataclass(frozen=True)
class SampledSettings:
    """Knobs of the sampled-future prices.

    ``rounds``: column-generation rounds at most; ``tolerance``: stop once the
    master LP and the Lagrangian bound meet within it (relative);
    ``pricing_time_limit_s``: the single-order solver's budget per order.
    """

    rounds: int = 12
    tolerance: float = 2e-3
    pricing_time_limit_s: float = 1.0
    #: Draw each sampled order's destination apart from its basket (from all past
    #: orders): a SKU's few past orders say little about where its next ones go
    #: (on the tuning seed: 14.1697 per order mixed, 14.2216 not).
    mix_destinations: bool = True


@dataclass(frozen=True, eq=False)
class SampledPrices:
    """Stock duals per (node, SKU), millicents per unit (>= 0), and what they cost."""

    opportunity: IntArray
    status: str
    orders: int
    rounds: int
    columns: int
    seconds: float


def sample_future(
    baskets: Sequence[Order], count: int, rng: np.random.Generator, mix_destinations: bool = False
) -> list[Order]:
    """``count`` past orders drawn with replacement (destination and lines as they were;
    with ``mix_destinations``, each basket goes to another drawn order's destination)."""
    if not baskets or count <= 0:
        return []
    picks = rng.integers(len(baskets), size=count).tolist()
    if not mix_destinations:
        return [baskets[i] for i in picks]
    where = rng.integers(len(baskets), size=count).tolist()
    pairs = zip(picks, where, strict=True)
    return [Order(baskets[j].destination, baskets[i].lines) for i, j in pairs]


def sampled_prices(
    network: Network,
    committed: Sequence[Order],
    future: Sequence[Order],
    at: datetime,
    settings: SampledSettings | None = None,
) -> SampledPrices:
    """Stock duals of the Dantzig-Wolfe master over ``committed`` then ``future`` orders.

    ``network.on_hand`` is the stock to price (the committed orders' units in
    it); every order is cut to what the stock serves in turn (committed first).
    """
    settings = settings or SampledSettings()
    started = time.perf_counter()
    n_nodes, s_count = network.on_hand.shape
    zero = np.zeros((n_nodes, s_count), dtype=np.int64)
    group = [(f"c{i}", at, o) for i, o in enumerate(committed)]
    group += [(f"f{i}", at, o) for i, o in enumerate(future)]
    group, forced = served_in_turn(network, group)
    if not group:
        return SampledPrices(zero, OPTIMAL, 0, 0, 0, time.perf_counter() - started)
    hindsight = HindsightSettings(
        max_rounds=settings.rounds,
        tolerance=settings.tolerance,
        pricing_time_limit_s=settings.pricing_time_limit_s,
        mip_time_limit_s=0.0,
    )
    problem = PeriodProblem(0, network, tuple(group), lost_penalty(network), hindsight, forced)
    period = Period(problem)
    n_orders = len(period.priced)
    lam = np.zeros(period.cells.size)
    best_lower = -math.inf
    status, rounds = "ROUND_LIMIT", 0
    while rounds < settings.rounds:
        rounds += 1
        solution, _, prices = period.column_round(price_capacity=False)
        if prices is None:
            status = f"MASTER_{solution.status}"
            break
        lam = prices.lam
        best_lower = max(best_lower, prices.lower)
        master = solution.objective * MILLICENTS_PER_UNIT
        if prices.added == 0 or (master - best_lower) <= settings.tolerance * max(abs(master), 1.0):
            status = "CONVERGED"
            break
    values = zero.copy()
    if not status.startswith("MASTER_"):
        values.reshape(-1)[period.cells] = lam.astype(np.int64)
    return SampledPrices(
        values, status, n_orders, rounds, len(period.columns.order), time.perf_counter() - started
    )
