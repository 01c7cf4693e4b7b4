"""Stage 3's bound: the demand rows relaxed with prices (Lagrangian), tightened by the parcel count.

Without parcel limits its best value is the LP bound of the strong
formulation; per node it also bounds every plan opening that node
(reduced-cost fixing), and per slot it gives terms to filter parcel sets
before they are priced. The ascent is compiled
(:func:`~sourcing.solver.kernels.bound_ascent`): at most ``EXTRA_FACTOR x
iterations`` steps, under a millisecond in all on 500-node carts, so it checks no
deadline between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from sourcing.model import IntArray
from sourcing.solver import kernels
from sourcing.solver.context import INF, Context

#: Past its usual steps the ascent may take as many again, while the bound still
#: climbs: by more than ``CLIMB`` of its value over the last five steps. A bound a
#: few steps short of where it settles can leave tens of times more parcel sets
#: to enumerate (a fragmented cart: 20 ms at 30 steps, 100-170 ms at 20).
EXTRA_FACTOR: Final = 2
CLIMB: Final = 3e-3


def _select(sorted_terms: np.ndarray, at_least: int, at_most: int) -> float:
    """Least sum of between ``at_least`` and ``at_most`` of the (ascending) terms."""
    if at_least > sorted_terms.size:
        return np.inf
    negatives = int(np.count_nonzero(sorted_terms < 0))
    count = max(at_least, min(at_most, negatives))
    return float(sorted_terms[:count].sum())


@dataclass(frozen=True)
class Bound:
    """A Lagrangian bound for plans with ``at_least``..``at_most`` parcels.

    ``value`` bounds every such plan; ``with_node[n]`` bounds every such plan
    that opens node n (reduced-cost fixing: a node whose bound exceeds the
    best known cost cannot be in a better plan).
    """

    value: float
    with_node: np.ndarray
    #: The nodes the relaxation opens at its best prices, with their service:
    #: a good start for a plan (see :func:`drop_heuristic`).
    service: IntArray
    #: At those prices, a plan opening exactly the parcels (n, v) in S costs
    #: at least ``priced_demand + sum(slot_terms[S])``: a filter before pricing sets.
    priced_demand: float = -np.inf
    slot_terms: np.ndarray | None = None


def lagrangian_bound(
    ctx: Context,
    elig: np.ndarray,
    at_least: int,
    at_most: int,
    upper: int,
    # Warm-started from the last bound's prices, 20 steps (up to 40 while the bound
    # climbs, see EXTRA_FACTOR) measured best side by side against 40, 30, 24, 16 and 12
    # on fragmented, capacity-bound and standard carts of seeds 0-4: below 20 a weaker
    # bound sent a capacity-bound cart to CP-SAT for seconds.
    iterations: int = 20,
) -> Bound:
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
    q = demand.astype(np.float64)
    n_nodes = live.size
    nothing = Bound(np.inf, np.full(n_all, np.inf), np.full(n_all, -1, dtype=np.int64))
    if n_nodes == 0 or at_least > n_nodes:
        return nothing  # too few nodes: no plan, every selection below would be infinite
    if ctx.prices is not None:
        lam = ctx.prices  # the last sub-problem's prices: usually close to this one's
    else:
        # Each SKU's cheapest unit cost, each parcel spread over what its node could carry.
        unit = costs.unit[live].astype(np.float64)
        fixed = costs.fixed[live].astype(np.float64)
        amortised = unit + fixed[:, :, None] / np.maximum(avail.sum(axis=1), 1.0)[:, None, None]
        lam = np.where(live_elig[:, :, None], amortised, np.inf).min(axis=(0, 1))
        lam = np.where(np.isfinite(lam), lam, 0.0)
    # At given prices a node whose capacity is below its stock takes its most profitable
    # units only up to its capacity (exact), which bounds plans opening it more tightly.
    # (Only eligible slots are gathered: no mask of the others' costs is needed.)
    slots = kernels.slots_of(
        live_elig,
        costs.unit[live],
        costs.fixed[live],
        avail,
        costs.capacity[live].astype(np.float64),
    )
    # The whole ascent in one compiled call (kernels.bound_ascent): a step's own numpy work
    # cost more than its terms.
    ascent = kernels.bound_ascent(
        slots, n_nodes, lam, q, at_least, at_most, iterations, EXTRA_FACTOR, CLIMB,
        float(upper) if upper < INF else np.inf,
    )  # fmt: skip
    if ascent is None:
        return nothing
    best_value, best_lam, best_opened = ascent.value, ascent.prices, ascent.opened
    best_terms = ascent.terms
    best_service = np.full(n_nodes, -1, dtype=np.int64)
    best_service[best_opened] = slots.service[ascent.best_slot[best_opened]]
    ctx.prices = best_lam
    # Opening n on top of the best selection for one parcel fewer bounds every plan using n.
    without_one = float(best_lam @ q) + _select(np.sort(best_terms), at_least - 1, at_most - 1)
    with_node = np.full(n_all, np.inf)
    with_node[live] = np.maximum(best_value, without_one + best_terms)
    service = np.full(n_all, -1, dtype=np.int64)
    service[live] = best_service
    slot_terms = np.full(elig.shape, np.inf)
    slot_terms[live[slots.row], slots.service] = ascent.slot_terms
    return Bound(best_value, with_node, service, float(best_lam @ q), slot_terms)
