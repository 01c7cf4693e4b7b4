"""The hand-made two-node, two-region instance of the forward-looking tests.

Nodes A (40.0, -75.0) and B (40.0, -83.0); one SKU W (1 kg), one service,
no handling or storage costs. Zones by distance: 1 up to 100 km ($5.00),
2 up to 700 km ($8.00), 3 beyond ($15.00). Region R1 (40.0, -74.5) is 43 km
from A (zone 1) and 724 km from B (zone 3); region R2 (40.0, -75.8) is 68 km
from A (zone 1) and 614 km from B (zone 2).

A and B hold one unit each. An order from R2 followed by one from R1: the
myopic choice sends the first to A ($5 < $8), and the second must come from B
($15): $20. Knowing that R1 will order, send the first from B: $8 + $5 = $13.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from sourcing.model import UNLIMITED_CAPACITY, Location, Network, NodeKind, Order, OrderLine

R1 = Location(40.0, -74.5)
R2 = Location(40.0, -75.8)
T0 = datetime(2024, 1, 1)


def two_node_network(
    stock: tuple[int, int] = (1, 1), storage_cents: int = 0, daily_demand: float = 1.0
) -> Network:
    """The module doc's network; a second SKU V (plentiful: 100 units at each node, no
    demand forecast) carries orders that only teach a policy where customers are."""
    return Network(
        node_ids=("A", "B"),
        node_kinds=(NodeKind.DC, NodeKind.DC),
        lat=np.array([40.0, 40.0]),
        lon=np.array([-75.0, -83.0]),
        handling_days=np.array([0, 0]),
        handling_cost=np.array([0, 0]),
        storage_cost=np.array([storage_cents, storage_cents]) * 1000,
        capacity=np.array([UNLIMITED_CAPACITY, UNLIMITED_CAPACITY]),
        sku_ids=("W", "V"),
        weight_g=np.array([1000, 1000]),
        daily_demand=np.array([daily_demand, 0.0]),
        on_hand=np.array([[stock[0], 100], [stock[1], 100]]),
        safety_stock=np.zeros((2, 2), dtype=np.int64),
        reserved=np.zeros((2, 2), dtype=np.int64),
        zone_ids=("1", "2", "3"),
        zone_max_km=np.array([100.0, 700.0, 20000.0]),
        service_ids=("ground",),
        base_price=np.array([[500, 800, 1500]]) * 1000,  # millicents
        per_kg=np.array([[0, 0, 0]]),
        transit_days=np.array([[1, 2, 3]]),
        offered=np.ones((1, 3), dtype=np.bool_),
    )


class Timed:
    """A minimal stream order (order_id, created_at, order)."""

    def __init__(
        self, order_id: str, hours: float, where: Location, qty: int = 1, sku: str = "W"
    ) -> None:
        self.order_id = order_id
        self.created_at = T0 + timedelta(hours=hours)
        self.order = Order(where, (OrderLine(sku, qty),))


def r2_then_r1() -> list[Timed]:
    return [Timed("o1", 1.0, R2), Timed("o2", 2.0, R1)]
