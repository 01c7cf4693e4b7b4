"""The reference cost of DESIGN section 7, re-implemented from the raw network for the
tests and the MIP oracle (``mip_oracle.py``).

``sourcing.evaluate`` is the engine's own "independent" evaluator, and
``quote()`` hands back its verdict as ``Option.cost``: comparing an option with
``evaluate`` again compares the evaluator with itself. This module prices an
allocation a third time, sharing no code with ``sourcing`` (not even the
network's indices or ``Network.available``): a parcel's node, SKUs and service
are looked up by name in the raw tuples, and every rule is spelled out as
DESIGN section 7 (and README, for click & collect and inbound receipts) states it:

* distance: great circle on a sphere of radius 6371 km (the haversine, here in
  its ``atan2`` form);
* zone: the first band whose ``max_km`` is at least the distance, else the last;
* parcel cost = ``base_price + per_kg * weight`` of its (service, zone) rate row
  + the node's ``handling_cost``; network money is millicents (five-decimal
  planner money), and each unit's per-kg charge ``per_kg * grams / 1000`` is
  rounded half-to-even to the millicent, once per unit (exact Fraction);
* storage credit per unit shipped from stock =
  ``storage_cost(n) * min(on_hand(n, s) / daily_demand(s), horizon_days)``
  (demand 0: the horizon), in millicents, rounded half-to-even per unit; none
  for units that wait for inbound receipts;
* arrival = ``handling_days(n) + transit_days(service, zone)``, plus the
  inbound day for waiting units; the delivery day is the latest arrival;
* click & collect at store S: S's own units are picked there (service
  ``pickup``: its handling cost, ready after its handling days), every other
  parcel travels to S by the ``transfer`` rate row of the node-to-S zone;
* a node may promise ``on_hand - safety_stock - reserved`` units, never below
  zero; units per node within its daily capacity; waiting units within the
  node's receipts due that day; every line covered exactly (at most, with
  ``allow_partial``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from sourcing.model import Allocation, Network, Order

EARTH_RADIUS_KM = 6371.0
#: Stands for "no capacity limit" in a network's ``capacity`` (1 << 40).
NO_LIMIT = 2**40


@dataclass(frozen=True)
class ReferenceParcel:
    node_id: str
    zone: str
    distance_km: float
    cost: int
    arrival_days: int


@dataclass(frozen=True)
class ReferencePrice:
    """An allocation priced by the reference rules: millicents, days, and what it breaks."""

    parcels: tuple[ReferenceParcel, ...]
    problems: tuple[str, ...]

    @property
    def cost(self) -> int:
        return sum(p.cost for p in self.parcels)

    @property
    def delivery_days(self) -> int:
        return max((p.arrival_days for p in self.parcels), default=0)


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlmb = math.radians(lon2 - lon1) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlmb) ** 2
    h = min(1.0, max(0.0, h))
    return EARTH_RADIUS_KM * 2 * math.atan2(math.sqrt(h), math.sqrt(1 - h))


def zone_name(network: Network, km: float) -> str:
    bands = [float(x) for x in network.zone_max_km]
    for name, max_km in zip(network.zone_ids, bands, strict=True):
        if km <= max_km:
            return name
    return network.zone_ids[-1]


def unit_credit(network: Network, node_id: str, sku: str) -> int:
    """Storage credit, in millicents, for one unit of ``sku`` shipped from ``node_id``'s shelf."""
    n, k = network.node_ids.index(node_id), network.sku_ids.index(sku)
    per_day = int(network.storage_cost[n])  # millicents per unit per day
    demand = float(network.daily_demand[k])
    horizon = float(network.horizon_days)
    days = horizon if demand == 0 else min(int(network.on_hand[n, k]) / demand, horizon)
    return round(per_day * days)


def unit_shipping(per_kg: int, grams: int) -> int:
    """One unit's per-kg charge: millicents per kg x grams / 1000, half-to-even."""
    return round(Fraction(int(per_kg) * int(grams), 1000))


def free_to_promise(network: Network, node_id: str, sku: str) -> int:
    n, k = network.node_ids.index(node_id), network.sku_ids.index(sku)
    free = int(network.on_hand[n, k]) - int(network.safety_stock[n, k])
    free -= int(network.reserved[n, k])
    return max(free, 0)


def reference_price(
    network: Network, order: Order, allocation: Allocation, *, allow_partial: bool = False
) -> ReferencePrice:
    """Price ``allocation`` of ``order`` by the rules in the module docstring."""
    problems: list[str] = []
    parcels: list[ReferenceParcel] = []
    to_lat, to_lon = order.destination.lat, order.destination.lon
    if allocation.pickup is not None:
        s = network.node_ids.index(allocation.pickup)
        to_lat, to_lon = float(network.lat[s]), float(network.lon[s])
        if str(network.node_kinds[s]) != "store":
            problems.append(f"pickup at {allocation.pickup}, which is not a store")
    shipped = [0] * len(order.lines)
    from_stock: dict[tuple[str, str], int] = {}
    waiting: dict[tuple[str, str, int], int] = {}
    per_node: dict[str, int] = {}
    sources: set[tuple[str, int | None]] = set()
    for parcel in allocation.parcels:
        n = network.node_ids.index(parcel.node_id)
        wait = parcel.inbound_day
        if (parcel.node_id, wait) in sources:
            problems.append(f"two parcels from {parcel.node_id} (inbound day {wait})")
        sources.add((parcel.node_id, wait))
        per_sku: dict[str, int] = {}
        credit = 0
        for line in parcel.lines:
            if order.lines[line.line].sku != line.sku or line.qty <= 0:
                problems.append(f"{parcel.node_id}: bad line {line}")
            shipped[line.line] += line.qty
            per_sku[line.sku] = per_sku.get(line.sku, 0) + line.qty
            if wait is None:
                credit += line.qty * unit_credit(network, parcel.node_id, line.sku)
                key = (parcel.node_id, line.sku)
                from_stock[key] = from_stock.get(key, 0) + line.qty
                per_node[parcel.node_id] = per_node.get(parcel.node_id, 0) + line.qty
            else:
                day_key = (parcel.node_id, line.sku, wait)
                waiting[day_key] = waiting.get(day_key, 0) + line.qty
        handling = int(network.handling_cost[n])
        ready = (wait or 0) + int(network.handling_days[n])
        if allocation.pickup is not None and parcel.node_id == allocation.pickup:
            if parcel.service != "pickup":
                problems.append(f"{parcel.node_id}: the pickup store's own units are picked there")
            parcels.append(ReferenceParcel(parcel.node_id, "", 0.0, handling - credit, ready))
            continue
        if (parcel.service == "transfer") != (allocation.pickup is not None):
            problems.append(f"{parcel.node_id}: service {parcel.service} for this way to fulfil")
        km = great_circle_km(float(network.lat[n]), float(network.lon[n]), to_lat, to_lon)
        zone = zone_name(network, km)
        v, z = network.service_ids.index(parcel.service), network.zone_ids.index(zone)
        if not bool(network.offered[v, z]):
            problems.append(f"{parcel.node_id}: no {parcel.service} rate row in zone {zone}")
        shipping = int(network.base_price[v, z]) + sum(
            qty * unit_shipping(network.per_kg[v, z], network.weight_g[network.sku_ids.index(s)])
            for s, qty in per_sku.items()
        )
        arrival = ready + int(network.transit_days[v, z])
        cost = shipping + handling - credit
        parcels.append(ReferenceParcel(parcel.node_id, zone, km, cost, arrival))

    for i, line in enumerate(order.lines):
        if shipped[i] > line.qty or (shipped[i] < line.qty and not allow_partial):
            problems.append(f"line {i}: {shipped[i]} of {line.qty} units")
    for (node_id, sku), qty in sorted(from_stock.items()):
        if qty > free_to_promise(network, node_id, sku):
            problems.append(f"{node_id}/{sku}: {qty} units, more than it may promise")
    for node_id, qty in sorted(per_node.items()):
        limit = int(network.capacity[network.node_ids.index(node_id)])
        if limit < NO_LIMIT and qty > limit:
            problems.append(f"{node_id}: {qty} units, over its daily capacity {limit}")
    for (node_id, sku, day), qty in sorted(waiting.items()):
        due = sum(
            r.qty
            for r in network.receipts
            if (r.node_id, r.sku, r.expected_day) == (node_id, sku, day)
        )
        if qty > due:
            problems.append(f"{node_id}/{sku}: {qty} units wait for day {day}, {due} due")
    return ReferencePrice(tuple(parcels), tuple(problems))


def assert_priced_as_reference(
    network: Network, order: Order, option: object, *, allow_partial: bool = False
) -> None:
    """An option (anything with ``allocation``, ``cost`` and ``delivery_days``) is feasible and
    costs, and arrives, what the reference rules say."""
    price = reference_price(
        network,
        order,
        option.allocation,  # type: ignore[attr-defined]
        allow_partial=allow_partial,
    )
    assert price.problems == (), price.problems
    got = (option.cost, option.delivery_days)  # type: ignore[attr-defined]
    assert got == (price.cost, price.delivery_days), (got, price)
