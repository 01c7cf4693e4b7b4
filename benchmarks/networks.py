"""Generated networks of a chosen size, for benchmarks that need exact node counts."""

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
