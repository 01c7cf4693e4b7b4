"""The reference cost rules of DESIGN section 7, vectorised for one order.

For a destination and the SKUs of one order this builds :class:`OrderCosts`:
the candidate nodes (those holding available units of at least one of the
order's SKUs) and, per (candidate node, service), the fixed cost of a parcel,
the cost per unit of each SKU and the arrival day. The solver and the
baselines read only these arrays.

Rules (money in millicents, see :mod:`sourcing.model`):

* distance: haversine on a sphere of radius 6371 km;
* zone: the first band whose ``max_km`` >= distance (the last band covers
  everything farther);
* parcel cost = ``base_price + per_kg * weight`` of its (service, zone) plus
  the node's ``handling_cost``. Linear in the units it holds, so it splits
  into a fixed part (base + handling) and ``per_kg * weight_g`` per unit;
* storage credit per unit of SKU s shipped from node n =
  ``storage_cost(n) * min(on_hand(n, s) / daily_demand(s), horizon_days)``
  (daily_demand 0 means the full horizon), rounded half-to-even to the
  millicent. It uses *on hand*, not available: it values the stock a node
  carries, including what is reserved;
* arrival = ``handling_days(n) + transit_days(service, zone)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sourcing.model import (
    MILLICENTS_PER_CENT,
    BoolArray,
    FloatArray,
    IntArray,
    Network,
)

EARTH_RADIUS_KM = 6371.0


def haversine_km(
    lat1: FloatArray | float, lon1: FloatArray | float, lat2: float, lon2: float
) -> FloatArray:
    """Great-circle distance in km from points (lat1, lon1) to one point (lat2, lon2)."""
    p1, l1 = np.radians(lat1), np.radians(lon1)
    p2, l2 = np.radians(lat2), np.radians(lon2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    return np.asarray(
        2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))), dtype=np.float64
    )


class ZoneBands(Protocol):
    """Anything with a rate card's distance bands (a Network, the service's catalog)."""

    @property
    def zone_ids(self) -> tuple[str, ...]: ...

    @property
    def zone_max_km(self) -> FloatArray: ...


def zone_of(network: ZoneBands, distance_km: FloatArray) -> IntArray:
    """Zone index per distance: the first band with max_km >= distance."""
    idx = np.searchsorted(network.zone_max_km, distance_km, side="left")
    return np.minimum(idx, len(network.zone_ids) - 1).astype(np.int64)


def storage_credit(network: Network, nodes: IntArray, skus: IntArray) -> IntArray:
    """Credit in millicents per unit, shape (len(nodes), len(skus))."""
    on_hand = network.on_hand[np.ix_(nodes, skus)].astype(np.float64)
    demand = network.daily_demand[skus]
    horizon = network.horizon_days
    with np.errstate(divide="ignore", invalid="ignore"):
        cover = np.where(demand > 0, on_hand / np.where(demand > 0, demand, 1.0), horizon)
    days = np.minimum(cover, horizon)
    credit = network.storage_cost[nodes, None].astype(np.float64) * MILLICENTS_PER_CENT * days
    return np.rint(credit).astype(np.int64)


@dataclass(frozen=True, eq=False)
class OrderCosts:
    """Everything the solver needs about one order, as arrays.

    Shapes: K distinct SKUs of the order, C candidate nodes, V services.

    * ``skus`` (K, network SKU index), ``demand`` (K, units wanted);
    * ``nodes`` (C, network node index), ``available`` (C x K, clipped to the
      demand), ``capacity`` (C, clipped to the order's total units);
    * ``distance_km`` and ``zone`` (C);
    * ``usable`` (C x V: the rate card offers that service in that zone),
      ``fixed`` (C x V, millicents per parcel: base price + handling),
      ``unit`` (C x V x K, millicents per unit: per-kg price - storage credit),
      ``arrival`` (C x V, days).
    """

    skus: IntArray
    demand: IntArray
    nodes: IntArray
    available: IntArray
    capacity: IntArray
    distance_km: FloatArray
    zone: IntArray
    usable: BoolArray
    fixed: IntArray
    unit: IntArray
    arrival: IntArray
    credit: IntArray
    per_unit_shipping: IntArray

    @property
    def total_units(self) -> int:
        return int(self.demand.sum())


def order_costs(
    network: Network,
    lat: float,
    lon: float,
    skus: IntArray,
    demand: IntArray,
    available: IntArray | None = None,
) -> OrderCosts:
    """Build the cost arrays of one order (``skus`` distinct network SKU indices).

    ``available`` (N x S) defaults to ``network.available``; the simulator and
    the batch job pass their own running stock.
    """
    avail_all = network.available if available is None else available
    avail = np.minimum(avail_all[:, skus], demand[None, :])
    nodes = np.flatnonzero(avail.sum(axis=1) > 0)
    avail = avail[nodes]
    distance = haversine_km(network.lat[nodes], network.lon[nodes], lat, lon)
    zone = zone_of(network, distance)
    usable = network.offered[:, zone].T  # C x V
    base = network.base_price[:, zone].T  # C x V, cents
    per_kg = network.per_kg[:, zone].T  # C x V, cents per kg
    fixed = (base + network.handling_cost[nodes, None]) * MILLICENTS_PER_CENT
    # cents/kg * g = millicents: the per-kg term is exact at gram resolution.
    shipping = per_kg[:, :, None] * network.weight_g[skus][None, None, :]
    credit = storage_credit(network, nodes, skus)
    unit = shipping - credit[:, None, :]
    arrival = network.handling_days[nodes, None] + network.transit_days[:, zone].T
    capacity = np.minimum(network.capacity[nodes], int(demand.sum()))
    return OrderCosts(
        skus=np.asarray(skus, dtype=np.int64),
        demand=np.asarray(demand, dtype=np.int64),
        nodes=nodes.astype(np.int64),
        available=avail.astype(np.int64),
        capacity=capacity.astype(np.int64),
        distance_km=distance,
        zone=zone,
        usable=np.asarray(usable, dtype=np.bool_),
        fixed=fixed.astype(np.int64),
        unit=unit.astype(np.int64),
        arrival=arrival.astype(np.int64),
        credit=credit,
        per_unit_shipping=shipping.astype(np.int64),
    )
