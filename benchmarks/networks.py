"""Generated networks of a chosen size, for benchmarks that need exact node counts.

:func:`generated_network` is the standard regime; :func:`regime_network` builds it and the
regimes where carts must split (:data:`REGIMES`). :func:`warm_up_solver` is what the latency
benchmarks run before timing quotes on them.
"""

from __future__ import annotations

import numpy as np

from sourcing.model import UNLIMITED_CAPACITY, Location, Network, NodeKind, Order, OrderLine

# US-style bands (miles 50, 150, 300, 600, 1000, 1400, 1800, beyond) in km.
ZONE_MAX_KM = np.array([50, 150, 300, 600, 1000, 1400, 1800, 12_000]) * 1.609344
GROUND_BASE = np.array([750, 800, 850, 925, 1000, 1100, 1200, 1300])
GROUND_PER_KG = np.array([40, 50, 60, 70, 85, 95, 110, 120])
GROUND_DAYS = np.array([1, 1, 2, 3, 4, 5, 5, 5])
EXPRESS_BASE = np.array([1800, 2000, 2300, 2600, 3000, 3400, 3700, 4000])
EXPRESS_PER_KG = np.array([150, 170, 200, 230, 260, 290, 320, 350])
EXPRESS_DAYS = np.array([1, 1, 1, 2, 2, 2, 2, 2])


def generated_network(n_nodes: int, n_skus: int, seed: int = 0, dc_share: float = 0.1) -> Network:
    """``n_nodes`` nodes in the contiguous-US box: DCs stock ~90% of SKUs, stores ~40%."""
    rng = np.random.default_rng(seed)
    n_dc = max(1, round(n_nodes * dc_share))
    is_dc = np.arange(n_nodes) < n_dc
    stocked = rng.random((n_nodes, n_skus)) < np.where(is_dc, 0.9, 0.4)[:, None]
    on_hand = np.where(
        stocked,
        np.where(
            is_dc[:, None],
            rng.integers(20, 400, (n_nodes, n_skus)),
            rng.integers(1, 12, (n_nodes, n_skus)),
        ),
        0,
    )
    return Network(
        node_ids=tuple(f"{'DC' if d else 'ST'}-{i:04d}" for i, d in enumerate(is_dc)),
        node_kinds=tuple(NodeKind.DC if d else NodeKind.STORE for d in is_dc),
        lat=rng.uniform(26, 48, n_nodes),
        lon=rng.uniform(-123, -71, n_nodes),
        handling_days=np.where(is_dc, rng.integers(0, 2, n_nodes), 1),
        # Money in millicents (the draws are cents).
        handling_cost=np.where(
            is_dc, rng.integers(150, 250, n_nodes), rng.integers(300, 400, n_nodes)
        )
        * 1000,
        storage_cost=np.where(is_dc, rng.integers(2, 5, n_nodes), rng.integers(5, 9, n_nodes))
        * 1000,
        capacity=np.where(is_dc, UNLIMITED_CAPACITY, rng.integers(150, 400, n_nodes)),
        sku_ids=tuple(f"SKU-{k:05d}" for k in range(n_skus)),
        weight_g=np.clip(rng.lognormal(np.log(900), 1.0, n_skus), 100, 25_000).astype(np.int64),
        daily_demand=np.round(rng.lognormal(np.log(5), 1.0, n_skus), 2),
        on_hand=on_hand,
        safety_stock=np.where(
            stocked & ~is_dc[:, None] & (rng.random((n_nodes, n_skus)) < 0.3), 1, 0
        ),
        reserved=np.zeros((n_nodes, n_skus), dtype=np.int64),
        zone_ids=tuple(str(z) for z in range(1, 9)),
        zone_max_km=ZONE_MAX_KM,
        service_ids=("ground", "express"),
        base_price=np.stack([GROUND_BASE, EXPRESS_BASE]) * 1000,
        per_kg=np.stack([GROUND_PER_KG, EXPRESS_PER_KG]) * 1000,
        transit_days=np.stack([GROUND_DAYS, EXPRESS_DAYS]),
        offered=np.ones((2, 8), dtype=bool),
    )


def random_cart(network: Network, rng: np.random.Generator, lines: int) -> Order:
    """``lines`` distinct SKUs (1-3 units each) to a random contiguous-US point."""
    skus = rng.choice(len(network.sku_ids), size=lines, replace=False)
    return Order(
        Location(float(rng.uniform(26, 48)), float(rng.uniform(-123, -71))),
        tuple(OrderLine(network.sku_ids[int(k)], int(rng.integers(1, 4))) for k in skus),
    )


# --------------------------------------------------------------------------- regimes
#
# ``generated_network`` is the *standard* regime: a DC or a well-stocked store
# usually holds most of a cart, and the optimum has one or two parcels. The
# regimes below widen the family to where a cart must split (issue 15). Each
# is a recipe of distributions, drawn afresh per seed, never a tuned instance:
#
# * ``fragmented``: a few DCs, the rest stores; each SKU stocked at 20-40% of
#   the nodes (DCs included), so no node holds most 20-line carts; storage
#   credits up to about 1.50 a unit; handling 0-2 days; six distance bands
#   with a per-seed rate card; a quarter of the stores capacity-bound;
# * ``credits``: stock about as dense as the standard regime's but storage
#   credits up to about 3.00 a unit, spread unevenly, so splitting a cart to
#   ship overstocked units can pay for the extra parcel;
# * ``capacity``: the fragmented stock with most nodes capacity-bound (a
#   handful of units a day), so capacity rather than stock forces the splits.


REGIMES = ("standard", "fragmented", "credits", "capacity")

# Six bands (miles 100, 300, 600, 1000, 1500, beyond) in km, for the regimes below.
SIX_BANDS_KM = np.array([100, 300, 600, 1000, 1500, 12_000]) * 1.609344


def regime_network(regime: str, n_nodes: int, n_skus: int, seed: int = 0) -> Network:
    """A network of ``regime`` (one of :data:`REGIMES`): ``n_nodes`` nodes, ``n_skus`` SKUs."""
    if regime == "standard":
        return generated_network(n_nodes, n_skus, seed)
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}: expected one of {', '.join(REGIMES)}")
    # A regime's own stream: the same seed gives unrelated draws in different regimes.
    rng = np.random.default_rng((REGIMES.index(regime), seed))
    n_dc = max(1, round(n_nodes * 0.03))
    is_dc = np.arange(n_nodes) < n_dc
    if regime == "credits":
        density = np.where(is_dc, 0.8, 0.4)[:, None] * np.ones(n_skus)
    else:
        # Per SKU 20-40% of the nodes, DCs no denser than stores.
        density = np.broadcast_to(rng.uniform(0.2, 0.4, n_skus), (n_nodes, n_skus))
    stocked = rng.random((n_nodes, n_skus)) < density
    on_hand = np.where(
        stocked,
        np.where(
            is_dc[:, None],
            rng.integers(5, 60, (n_nodes, n_skus)),
            rng.integers(1, 8, (n_nodes, n_skus)),
        ),
        0,
    )
    # Storage cost per unit-day (millicents): credit = cost x min(cover, 30 days).
    top = 10_000 if regime == "credits" else 5_000
    storage = (rng.beta(0.7, 1.5, n_nodes) * top).astype(np.int64)
    capacity = np.full(n_nodes, UNLIMITED_CAPACITY, dtype=np.int64)
    bound_share = {"fragmented": 0.25, "credits": 0.1, "capacity": 0.8}[regime]
    bound = ~is_dc & (rng.random(n_nodes) < bound_share)
    low, high = (2, 9) if regime == "capacity" else (3, 20)
    capacity[bound] = rng.integers(low, high, int(bound.sum()))
    # Per-seed rate card on six bands: ground slower and cheaper, express quicker and dearer.
    ground_base = np.sort(rng.integers(600, 900, 6)) + np.arange(6) * 60
    express_base = ground_base * rng.uniform(2.0, 3.0) + np.arange(6) * 150
    ground_kg = np.sort(rng.integers(30, 130, 6))
    express_kg = (ground_kg * rng.uniform(2.0, 3.0)).astype(np.int64)
    ground_days = np.array([1, 2, 3, 4, 5, 6]) - rng.integers(0, 2, 6) * (np.arange(6) > 0)
    express_days = np.minimum(ground_days, np.array([1, 1, 2, 2, 3, 3]))
    return Network(
        node_ids=tuple(f"{'DC' if d else 'ST'}-{i:04d}" for i, d in enumerate(is_dc)),
        node_kinds=tuple(NodeKind.DC if d else NodeKind.STORE for d in is_dc),
        lat=rng.uniform(26, 48, n_nodes),
        lon=rng.uniform(-123, -71, n_nodes),
        handling_days=rng.integers(0, 3, n_nodes),
        handling_cost=np.where(
            is_dc, rng.integers(100, 250, n_nodes), rng.integers(200, 450, n_nodes)
        )
        * 1000,
        storage_cost=storage,
        capacity=capacity,
        sku_ids=tuple(f"SKU-{k:05d}" for k in range(n_skus)),
        weight_g=np.clip(rng.lognormal(np.log(700), 1.0, n_skus), 100, 20_000).astype(np.int64),
        # Slow movers next to fast ones: cover (on hand / daily demand) ranges widely.
        daily_demand=np.round(rng.lognormal(np.log(0.5), 1.2, n_skus), 2) + 0.01,
        on_hand=on_hand,
        safety_stock=np.zeros((n_nodes, n_skus), dtype=np.int64),
        reserved=np.zeros((n_nodes, n_skus), dtype=np.int64),
        zone_ids=tuple(str(z) for z in range(1, 7)),
        zone_max_km=SIX_BANDS_KM,
        service_ids=("ground", "express"),
        base_price=np.stack([ground_base, express_base]).astype(np.int64) * 1000,
        per_kg=np.stack([ground_kg, express_kg]).astype(np.int64) * 1000,
        transit_days=np.stack([ground_days, express_days]).astype(np.int64),
        offered=np.ones((2, 6), dtype=bool),
    )


def warm_up_solver() -> None:
    """Load (or compile) the solver's compiled kernels before timing anything, as
    ``oms serve`` does before it serves; engines from before the kernels have none.
    Otherwise the first quote to reach each kernel pays its load (tens to hundreds of ms)."""
    import sourcing.solver

    warm_up = getattr(sourcing.solver, "warm_up", None)
    if warm_up is not None:
        warm_up()
