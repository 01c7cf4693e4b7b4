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
  into a fixed part (base + handling) and a per-kg charge per unit
  (:func:`~sourcing.model.per_kg_charge`: rounded half-to-even to the
  millicent, exact when the per-kg price is whole cents);
* storage credit per unit of SKU s shipped from node n =
  ``storage_cost(n) * min(on_hand(n, s) / daily_demand(s), horizon_days)``
  (daily_demand 0 means the full horizon), rounded half-to-even to the
  millicent. It uses *on hand*, not available: it values the stock a node
  carries, including what is reserved;
* arrival = ``handling_days(n) + transit_days(service, zone)``;
* the transfer lane (the service named ``transfer``, see :mod:`sourcing.model`)
  never ships to a customer;
* an opportunity cost per unit (:class:`~sourcing.model.OpportunityCosts`,
  optional) is added to ``unit`` when a quote is priced with one: it is not a
  reference cost, and ``OrderCosts.opportunity`` keeps it apart so that every
  option can report its reference cost and its opportunity cost separately.

The same rules price the other ways to fulfil (:class:`LegCosts`):

* **click & collect at store S**: the store's own units are picked there:
  a "parcel" with no shipping, S's ``handling_cost``, ready
  ``handling_days(S)`` days after the order. Every other node n sends its
  units to S by the transfer lane, priced and timed as a parcel from n to S:
  ``base_price + per_kg * weight`` of (transfer, zone of the n-S distance) +
  ``handling_cost(n)``, ready ``handling_days(n) + transit_days(transfer, zone)``.
  No lane offered in that zone (or no lane at all): n cannot send to S.
  Storage credit as above. The option's day is the day the last unit is ready;
* **inbound receipts** (backorder): units a node expects on day ``e`` form
  their own parcel (one per node and day), priced as any parcel from that
  node (to the customer, or to the pickup store as above) with no storage
  credit, arriving ``e`` days later than a parcel from stock would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sourcing.model import (
    PICKUP_SERVICE,
    TRANSFER_SERVICE,
    BoolArray,
    FloatArray,
    IntArray,
    Network,
    OpportunityCosts,
    per_kg_charge,
)

EARTH_RADIUS_KM = 6371.0


def haversine_km(
    lat1: FloatArray | float, lon1: FloatArray | float, lat2: float, lon2: float
) -> FloatArray:
    """Great-circle distance in km from points (lat1, lon1) to one point (lat2, lon2)."""
    p1, l1 = np.radians(lat1), np.radians(lon1)
    p2, l2 = np.radians(lat2), np.radians(lon2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin((l2 - l1) / 2) ** 2
    # minimum/maximum: np.clip's result at a fraction of its call overhead.
    return np.asarray(
        2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(np.maximum(a, 0.0), 1.0))),
        dtype=np.float64,
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
    on_hand = network.on_hand[nodes[:, None], skus].astype(np.float64)
    demand = network.daily_demand[skus]
    horizon = network.horizon_days
    # No zero division: SKUs without demand divide by 1 (and take the horizon).
    has_demand = demand > 0
    cover = np.where(has_demand, on_hand / np.where(has_demand, demand, 1.0), horizon)
    days = np.minimum(cover, horizon)
    credit = network.storage_cost[nodes, None].astype(np.float64) * days
    return np.rint(credit).astype(np.int64)


@dataclass(frozen=True, eq=False)
class OrderCosts:
    """Everything the solver needs about one order, as arrays.

    Shapes: K distinct SKUs of the order, C candidate nodes, V services.
    ``services`` (V) names each service column: its network service index for
    :func:`order_costs` (customer services only, see
    :attr:`~sourcing.model.Network.delivery_rates`), its index in
    :attr:`LegCosts.service_ids` for a leg.

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
    services: IntArray
    #: C x K, millicents per unit, already inside ``unit`` (None: not priced with any).
    opportunity: IntArray | None = None

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
    opportunity: OpportunityCosts | None = None,
) -> OrderCosts:
    """Build the cost arrays of one order (``skus`` distinct network SKU indices).

    ``available`` (N x S) defaults to ``network.available``; the simulator and
    the batch job pass their own running stock. ``opportunity``: each unit's
    opportunity cost is added to ``unit`` (and kept apart in ``opportunity``).
    """
    columns = network.available_of(skus) if available is None else available[:, skus]
    avail = np.minimum(columns, demand)
    nodes = np.flatnonzero(avail.sum(axis=1) > 0)
    avail = avail[nodes]
    distance = haversine_km(network.lat[nodes], network.lon[nodes], lat, lon)
    zone = zone_of(network, distance)
    # Rate-card rows per candidate (zone-major tables, so ``[zone]`` is C x V, contiguous),
    # of the services that ship to customers only.
    rates = network.delivery_rates
    usable = rates.offered[zone]  # C x V
    base = rates.base_price[zone]  # C x V, millicents
    per_kg = rates.per_kg[zone]  # C x V, millicents per kg
    fixed = base + network.handling_cost[nodes, None]
    shipping = per_kg_charge(per_kg[:, :, None], network.weight_g[skus][None, None, :])
    credit = storage_credit(network, nodes, skus)
    unit = shipping - credit[:, None, :]
    extra = None
    if opportunity is not None:
        extra = opportunity.columns(network, nodes, skus)
        unit = unit + extra[:, None, :]
    arrival = network.handling_days[nodes, None] + rates.transit_days[zone]
    capacity = np.minimum(network.capacity[nodes], int(demand.sum()))
    # asarray, not astype: the arrays are fresh, and mostly int64 already (no copy needed).
    return OrderCosts(
        skus=np.asarray(skus, dtype=np.int64),
        demand=np.asarray(demand, dtype=np.int64),
        nodes=np.asarray(nodes, dtype=np.int64),
        available=np.asarray(avail, dtype=np.int64),
        capacity=np.asarray(capacity, dtype=np.int64),
        distance_km=distance,
        zone=zone,
        usable=np.asarray(usable, dtype=np.bool_),
        fixed=np.asarray(fixed, dtype=np.int64),
        unit=np.asarray(unit, dtype=np.int64),
        arrival=np.asarray(arrival, dtype=np.int64),
        credit=credit,
        per_unit_shipping=np.asarray(shipping, dtype=np.int64),
        services=rates.services,
        opportunity=extra,
    )


@dataclass(frozen=True, eq=False)
class LegCosts:
    """One leg of an option (click & collect, inbound receipts) as the solver's arrays.

    ``costs`` is an :class:`OrderCosts` whose candidates are sources: node
    ``costs.nodes[c]`` with its stock (``inbound_day[c] == -1``) or with its
    receipts due ``inbound_day[c]``; its service columns are named
    ``service_ids``. ``pickup`` is the pickup store's node index, if any.
    """

    costs: OrderCosts
    service_ids: tuple[str, ...]
    inbound_day: IntArray
    pickup: int | None


def _stock_sources(
    network: Network, skus: IntArray, demand: IntArray, available: IntArray | None
) -> tuple[IntArray, IntArray, IntArray]:
    """(nodes, inbound days (all -1), available C x K clipped to demand) of stock on hand."""
    avail_all = network.available if available is None else available
    avail = np.minimum(avail_all[:, skus], demand[None, :])
    nodes = np.flatnonzero(avail.sum(axis=1) > 0).astype(np.int64)
    return nodes, np.full(nodes.size, -1, dtype=np.int64), avail[nodes].astype(np.int64)


def _inbound_sources(
    network: Network, skus: IntArray, demand: IntArray
) -> tuple[IntArray, IntArray, IntArray]:
    """(nodes, days, free units C x K clipped to demand): receipts grouped by (node, day)."""
    column = {int(s): k for k, s in enumerate(skus.tolist())}
    groups: dict[tuple[int, int], np.ndarray] = {}
    for r in network.receipts:
        k = column.get(network.sku_index[r.sku])
        if k is None or r.qty <= 0:
            continue
        key = (network.node_index[r.node_id], int(r.expected_day))
        row = groups.setdefault(key, np.zeros(skus.size, dtype=np.int64))
        row[k] += r.qty
    keys = sorted(groups)
    nodes = np.array([n for n, _ in keys], dtype=np.int64)
    days = np.array([d for _, d in keys], dtype=np.int64)
    avail = (
        np.minimum(np.array([groups[k] for k in keys]), demand[None, :])
        if keys
        else np.zeros((0, skus.size), dtype=np.int64)
    )
    keep = avail.sum(axis=1) > 0
    return nodes[keep], days[keep], avail[keep].astype(np.int64)


def _leg(
    nodes: IntArray,
    days: IntArray,
    avail: IntArray,
    skus: IntArray,
    demand: IntArray,
    capacity: IntArray,
    distance: FloatArray,
    zone: IntArray,
    usable: BoolArray,
    fixed: IntArray,
    shipping: IntArray,
    credit: IntArray,
    arrival: IntArray,
    service_ids: tuple[str, ...],
    pickup: int | None,
) -> LegCosts:
    costs = OrderCosts(
        skus=np.asarray(skus, dtype=np.int64),
        demand=np.asarray(demand, dtype=np.int64),
        nodes=nodes,
        available=avail,
        capacity=capacity.astype(np.int64),
        distance_km=distance,
        zone=zone,
        usable=np.asarray(usable, dtype=np.bool_),
        fixed=fixed.astype(np.int64),
        unit=(shipping - credit[:, None, :]).astype(np.int64),
        arrival=arrival.astype(np.int64),
        credit=credit.astype(np.int64),
        per_unit_shipping=shipping.astype(np.int64),
        services=np.arange(len(service_ids), dtype=np.int64),
    )
    return LegCosts(costs, service_ids, days, pickup)


def inbound_costs(
    network: Network, lat: float, lon: float, skus: IntArray, demand: IntArray
) -> LegCosts:
    """Delivering units of inbound receipts to (lat, lon): one source per (node, due day)."""
    nodes, days, avail = _inbound_sources(network, skus, demand)
    distance = haversine_km(network.lat[nodes], network.lon[nodes], lat, lon)
    zone = zone_of(network, distance)
    usable = network.offered[:, zone].T & network.customer_services[None, :]
    fixed = network.base_price[:, zone].T + network.handling_cost[nodes, None]
    shipping = per_kg_charge(
        network.per_kg[:, zone].T[:, :, None], network.weight_g[skus][None, None, :]
    )
    arrival = days[:, None] + network.handling_days[nodes, None] + network.transit_days[:, zone].T
    return _leg(
        nodes,
        days,
        avail,
        skus,
        demand,
        np.full(nodes.size, int(demand.sum()), dtype=np.int64),
        distance,
        zone,
        usable,
        fixed,
        shipping,
        np.zeros((nodes.size, skus.size), dtype=np.int64),
        arrival,
        network.service_ids,
        None,
    )


def collect_costs(
    network: Network,
    store: int,
    skus: IntArray,
    demand: IntArray,
    *,
    inbound: bool = False,
    available: IntArray | None = None,
) -> LegCosts:
    """Click & collect at node ``store``: its own units picked there, others sent by transfer.

    Two service columns: ``pickup`` (usable only at the store) and
    ``transfer`` (usable at other nodes whose zone to the store the lane
    offers). ``inbound``: the sources are receipts, not stock on hand.
    """
    if inbound:
        nodes, days, avail = _inbound_sources(network, skus, demand)
        credit = np.zeros((nodes.size, skus.size), dtype=np.int64)
        capacity = np.full(nodes.size, int(demand.sum()), dtype=np.int64)
        wait = days
    else:
        nodes, days, avail = _stock_sources(network, skus, demand, available)
        credit = storage_credit(network, nodes, skus)
        capacity = np.minimum(network.capacity[nodes], int(demand.sum()))
        wait = np.zeros(nodes.size, dtype=np.int64)
    distance = haversine_km(
        network.lat[nodes], network.lon[nodes], float(network.lat[store]), float(network.lon[store])
    )
    zone = zone_of(network, distance)
    at_store = nodes == store
    lane = network.transfer_service
    c = nodes.size
    usable = np.zeros((c, 2), dtype=np.bool_)
    fixed = np.zeros((c, 2), dtype=np.int64)
    shipping = np.zeros((c, 2, skus.size), dtype=np.int64)
    arrival = np.zeros((c, 2), dtype=np.int64)
    usable[:, 0] = at_store
    fixed[:, 0] = network.handling_cost[store]
    arrival[:, 0] = wait + network.handling_days[store]
    if lane is not None:
        usable[:, 1] = ~at_store & network.offered[lane, zone]
        fixed[:, 1] = network.base_price[lane, zone] + network.handling_cost[nodes]
        shipping[:, 1, :] = per_kg_charge(
            network.per_kg[lane, zone][:, None], network.weight_g[skus][None, :]
        )
        arrival[:, 1] = wait + network.handling_days[nodes] + network.transit_days[lane, zone]
    return _leg(
        nodes,
        days,
        avail,
        skus,
        demand,
        capacity,
        distance,
        zone,
        usable,
        fixed,
        shipping,
        credit,
        arrival,
        (PICKUP_SERVICE, TRANSFER_SERVICE),
        store,
    )
