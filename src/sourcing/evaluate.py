"""Independent evaluator: prices and checks an allocation by the reference rules.

It deliberately shares no code with :mod:`sourcing.costs` or the solver: it
walks the parcels one by one with scalar ``math``, straight from the
network's raw fields, so that a test comparing the solver's reported cost
with :func:`evaluate` compares two independent computations of DESIGN
section 7.
"""

from __future__ import annotations

import math
from collections import defaultdict

from sourcing.model import (
    MILLICENTS_PER_CENT,
    UNLIMITED_CAPACITY,
    Allocation,
    Evaluation,
    Network,
    Order,
    ParcelCost,
    Shortfall,
)


def _great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, max(0.0, a))))


def _zone_index(network: Network, km: float) -> int:
    for z, max_km in enumerate(network.zone_max_km.tolist()):
        if max_km >= km:
            return z
    return len(network.zone_ids) - 1


def _unit_credit(network: Network, node: int, sku: int) -> int:
    demand = float(network.daily_demand[sku])
    horizon = network.horizon_days
    on_hand = int(network.on_hand[node, sku])
    cover = on_hand / demand if demand > 0 else horizon
    return round(int(network.storage_cost[node]) * MILLICENTS_PER_CENT * min(cover, horizon))


def evaluate(
    network: Network,
    order: Order,
    allocation: Allocation,
    *,
    allow_partial: bool = False,
) -> Evaluation:
    """Price ``allocation`` and list every rule it breaks.

    Checked: known nodes, services and SKUs; line indices and SKUs match the
    order; one parcel per node; the service is offered in the parcel's zone;
    no line over-covered; every line fully covered unless ``allow_partial``
    (then what is missing is reported as shortfall); units per (node, SKU)
    within available stock; units per node within its daily capacity.
    """
    violations: list[str] = []
    parcels: list[ParcelCost] = []
    covered = [0] * len(order.lines)
    taken: dict[tuple[int, int], int] = defaultdict(int)
    seen_nodes: set[str] = set()
    dest = order.destination

    for p_idx, parcel in enumerate(allocation.parcels):
        where = f"parcel {p_idx} ({parcel.node_id})"
        node = network.node_index.get(parcel.node_id)
        service = network.service_index.get(parcel.service)
        if node is None:
            violations.append(f"{where}: unknown node")
            continue
        if service is None:
            violations.append(f"{where}: unknown service {parcel.service!r}")
            continue
        if parcel.node_id in seen_nodes:
            violations.append(f"{where}: a second parcel from the same node")
        seen_nodes.add(parcel.node_id)
        if not parcel.lines:
            violations.append(f"{where}: empty parcel")

        km = _great_circle_km(
            float(network.lat[node]), float(network.lon[node]), dest.lat, dest.lon
        )
        zone = _zone_index(network, km)
        if not network.offered[service, zone]:
            violations.append(
                f"{where}: service {parcel.service} not offered in zone {network.zone_ids[zone]}"
            )

        weight_g = 0
        credit = 0
        units = 0
        for pl in parcel.lines:
            if not 0 <= pl.line < len(order.lines):
                violations.append(f"{where}: no order line {pl.line}")
                continue
            if order.lines[pl.line].sku != pl.sku:
                violations.append(
                    f"{where}: line {pl.line} is {order.lines[pl.line].sku}, not {pl.sku}"
                )
                continue
            if pl.qty <= 0:
                violations.append(f"{where}: line {pl.line} has qty {pl.qty}")
                continue
            sku = network.sku_index[pl.sku]
            covered[pl.line] += pl.qty
            taken[(node, sku)] += pl.qty
            units += pl.qty
            weight_g += pl.qty * int(network.weight_g[sku])
            credit += pl.qty * _unit_credit(network, node, sku)

        capacity = int(network.capacity[node])
        if capacity < UNLIMITED_CAPACITY and units > capacity:
            violations.append(f"{where}: {units} units exceed daily capacity {capacity}")

        base = int(network.base_price[service, zone])
        per_kg = int(network.per_kg[service, zone])
        parcels.append(
            ParcelCost(
                node_id=parcel.node_id,
                service=parcel.service,
                lines=parcel.lines,
                zone=network.zone_ids[zone],
                distance_km=km,
                weight_g=weight_g,
                # cents * 1000 = millicents; cents/kg * g = millicents.
                shipping=base * MILLICENTS_PER_CENT + per_kg * weight_g,
                handling=int(network.handling_cost[node]) * MILLICENTS_PER_CENT,
                storage_credit=credit,
                arrival_days=int(network.handling_days[node])
                + int(network.transit_days[service, zone]),
            )
        )

    for (node, sku), qty in taken.items():
        available = max(
            0,
            int(network.on_hand[node, sku])
            - int(network.safety_stock[node, sku])
            - int(network.reserved[node, sku]),
        )
        if qty > available:
            violations.append(
                f"node {network.node_ids[node]}: {qty} units of {network.sku_ids[sku]} "
                f"taken, {available} available"
            )

    shortfall: list[Shortfall] = []
    for i, line in enumerate(order.lines):
        if covered[i] > line.qty:
            violations.append(
                f"line {i} ({line.sku}): {covered[i]} units shipped, {line.qty} ordered"
            )
        elif covered[i] < line.qty:
            shortfall.append(Shortfall(i, line.sku, line.qty, covered[i]))
            if not allow_partial:
                violations.append(
                    f"line {i} ({line.sku}): {covered[i]} of {line.qty} units covered"
                )

    return Evaluation(tuple(parcels), tuple(violations), tuple(shortfall))
