"""The solver's inner loops, compiled (numba).

Every subgradient step of :func:`~sourcing.solver.lagrangian.lagrangian_bound`
and of the branch and bound's ascents (:mod:`~sourcing.solver.branching`)
prices each slot (node n, service v) at prices ``lam``::

    t[n,v] = F[n,v] + sum_k taken[n,v,k] * min(0, u[n,v,k] - lam[k])

where ``taken`` is the node's stock of every SKU with a negative reduced cost,
or, at a node whose capacity is below those units, the most negative ones
first up to the capacity (a greedy knapsack of unit weights, exact). On
fragmented carts (50 SKUs, 500 nodes) a branch's eight steps are a few
hundred slots each, and numpy spent most of the time in per-call overhead and
temporaries: here a step is one loop over the slots, each summed over a dense
row of SKUs (vectorised; where a capacity binds, the knapsack walks the sparse
row of the SKUs its node stocks, about a third of a fragmented cart's). The
same holds for the rest of the package, each the numpy version's rule as a loop:

* :func:`row_terms` (a step's terms), :func:`bound_ascent` (a bound's whole
  ascent, for :func:`~sourcing.solver.lagrangian.lagrangian_bound`) and
  :func:`branch_ascent` (a branch's whole ascent), then :func:`fix_and_pick`
  (reduced-cost fixing, the leaf test, the node to branch on) and
  :func:`leaf_slots` (a leaf's slots);
* :func:`split` (a parcel set's cheapest-first split) and
  :func:`price_product` (a leaf's sets, priced without building them);
* :func:`cover_groups`, :func:`cover_level` and :func:`cover_children`
  (set-cover branching's candidates, steps and children).

The kernels of the bounds are in :mod:`.bounds`, those of parcel sets in
:mod:`.sets`; both are re-exported here. Each public function is a typed
wrapper that hands its kernel the argument types it was compiled for
(:func:`~sourcing.solver.kernels._typed._as`). Compiled on first use and
cached on disk (numba's ``cache=True``, beside these files or in numba's user
cache): a cold compile takes about 13 s, so the service calls :func:`warm_up`
before it serves.
"""

from __future__ import annotations

import numpy as np

from sourcing.solver.kernels.bounds import (
    LEAF,
    NO_PLAN,
    SPLIT,
    Ascent,
    BoundAscent,
    Slots,
    StepTerms,
    bound_ascent,
    branch_ascent,
    fix_and_pick,
    leaf_slots,
    row_terms,
    slots_of,
)
from sourcing.solver.kernels.sets import (
    cover_children,
    cover_groups,
    cover_level,
    price_product,
    split,
)

__all__ = [
    "LEAF",
    "NO_PLAN",
    "SPLIT",
    "Ascent",
    "BoundAscent",
    "Slots",
    "StepTerms",
    "bound_ascent",
    "branch_ascent",
    "cover_children",
    "cover_groups",
    "cover_level",
    "fix_and_pick",
    "leaf_slots",
    "price_product",
    "row_terms",
    "slots_of",
    "split",
    "warm_up",
]


def warm_up() -> None:
    """Compile (or load from the disk cache) every kernel on a tiny instance."""
    elig = np.ones((3, 1), dtype=np.bool_)
    unit = np.array([[[1.0, 2.0]], [[3.0, 1.0]], [[2.0, 2.0]]])
    avail = np.array([[2.0, 1.0], [1.0, 2.0], [1.0, 1.0]])
    slots = slots_of(elig, unit, np.full((3, 1), 5.0), avail, np.array([1.0, 9.0, 9.0]))
    row_terms(slots, 3, np.array([4.0, 4.0])).taken_by_sku(slots, np.array([0, 1]), 2)
    for limit in (np.inf, 100.0):
        bound_ascent(slots, 3, np.zeros(2), np.array([1.0, 1.0]), 1, 3, 3, 2, 3e-3, limit)
    nothing = np.zeros(3, dtype=np.bool_)
    demand = np.array([1.0, 1.0])
    ascent = branch_ascent(slots, avail, nothing, nothing, np.zeros(2), demand, 2, 3, np.inf, 0.7)
    assert ascent is not None
    fix_and_pick(ascent, nothing, nothing, 2, 100, np.ones(3, dtype=np.int64), 1.0)
    leaf_slots(elig, np.arange(3), nothing, nothing)
    one = np.zeros(1, dtype=np.int64)
    sets = np.zeros((1, 1), dtype=np.int64)
    split(sets, sets, np.ones((1, 1, 1), np.int64), sets, sets, one, one)
    candidates, group_start, _ = cover_groups(sets, np.zeros(1))
    two = np.array([0, 1])
    price_product(two, one, one, one, one, 1, np.ones((1, 1, 1), np.int64), sets, sets, one,
                  sets, one)  # fmt: skip
    for want_mask in (False, True):
        cover_level(sets, one, np.zeros(1), np.zeros(1), candidates, group_start, one, want_mask)
    for masks in (None, (np.zeros(1, np.uint64), np.ones(1, np.uint64))):
        cover_children(one, one, sets, sets, sets, sets, one, sets, sets, masks)
