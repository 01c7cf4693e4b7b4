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
    PICKUP_SERVICE,
    TRANSFER_SERVICE,
    UNLIMITED_CAPACITY,
    Allocation,
    Evaluation,
    Network,
    NodeKind,
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
    order; one parcel per node (per node and inbound day); the service is
    offered in the parcel's zone; no line over-covered; every line fully
    covered unless ``allow_partial`` (then what is missing is reported as
    shortfall); units per (node, SKU) within available stock; units per node
    within its daily capacity; units waiting for inbound stock within the free
    units of the node's receipts due that day.

    Click & collect (``allocation.pickup``): the pickup node is a store; its
    own units use the ``pickup`` pseudo-service (no shipping, ready after its
    handling days); every other parcel uses the ``transfer`` lane, zoned by
    its distance to the store. A delivery never uses the transfer lane.
    Units from receipts earn no storage credit and leave ``inbound_day`` days
    later; they use no daily capacity today.
    """
    violations: list[str] = []
    parcels: list[ParcelCost] = []
    covered = [0] * len(order.lines)
    taken: dict[tuple[int, int], int] = defaultdict(int)
    inbound_taken: dict[tuple[int, int, int], int] = defaultdict(int)
    seen_nodes: set[tuple[str, int | None]] = set()
    dest_lat, dest_lon = order.destination.lat, order.destination.lon
    pickup: int | None = None
    if allocation.pickup is not None:
        pickup = network.node_index.get(allocation.pickup)
        if pickup is None:
            violations.append(f"pickup store {allocation.pickup!r}: unknown node")
            return Evaluation((), tuple(violations), (), allocation.pickup)
        if network.node_kinds[pickup] is not NodeKind.STORE:
            violations.append(f"pickup node {allocation.pickup!r} is not a store")
        dest_lat, dest_lon = float(network.lat[pickup]), float(network.lon[pickup])

    for p_idx, parcel in enumerate(allocation.parcels):
        where = f"parcel {p_idx} ({parcel.node_id})"
        node = network.node_index.get(parcel.node_id)
        if node is None:
            violations.append(f"{where}: unknown node")
            continue
        picked_here = pickup is not None and node == pickup
        service: int | None = None
        if picked_here:
            if parcel.service != PICKUP_SERVICE:
                violations.append(
                    f"{where}: units at the pickup store are picked there "
                    f"(service {PICKUP_SERVICE!r}), not {parcel.service!r}"
                )
        else:
            service = network.service_index.get(parcel.service)
            if service is None:
                violations.append(f"{where}: unknown service {parcel.service!r}")
                continue
            if pickup is not None and parcel.service != TRANSFER_SERVICE:
                violations.append(
                    f"{where}: must travel to the pickup store by {TRANSFER_SERVICE!r}"
                )
            if pickup is None and parcel.service == TRANSFER_SERVICE:
                violations.append(f"{where}: the transfer lane does not ship to customers")
        wait = parcel.inbound_day
        if wait is not None and wait < 0:
            violations.append(f"{where}: inbound day {wait} is negative")
        if (parcel.node_id, wait) in seen_nodes:
            violations.append(f"{where}: a second parcel from the same node")
        seen_nodes.add((parcel.node_id, wait))
        if not parcel.lines:
            violations.append(f"{where}: empty parcel")

        if picked_here:
            km, zone_name = 0.0, ""
            zone = 0
        else:
            km = _great_circle_km(
                float(network.lat[node]), float(network.lon[node]), dest_lat, dest_lon
            )
            zone = _zone_index(network, km)
            zone_name = network.zone_ids[zone]
        if service is not None and not network.offered[service, zone]:
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
            weight_g += pl.qty * int(network.weight_g[sku])
            units += pl.qty
            if wait is None:
                taken[(node, sku)] += pl.qty
                credit += pl.qty * _unit_credit(network, node, sku)
            else:
                inbound_taken[(node, sku, wait)] += pl.qty

        capacity = int(network.capacity[node])
        if wait is None and capacity < UNLIMITED_CAPACITY and units > capacity:
            violations.append(f"{where}: {units} units exceed daily capacity {capacity}")

        if service is None:
            shipping, transit = 0, 0
        else:
            base = int(network.base_price[service, zone])
            per_kg = int(network.per_kg[service, zone])
            # cents * 1000 = millicents; cents/kg * g = millicents.
            shipping = base * MILLICENTS_PER_CENT + per_kg * weight_g
            transit = int(network.transit_days[service, zone])
        parcels.append(
            ParcelCost(
                node_id=parcel.node_id,
                service=parcel.service,
                lines=parcel.lines,
                zone=zone_name,
                distance_km=km,
                weight_g=weight_g,
                shipping=shipping,
                handling=int(network.handling_cost[node]) * MILLICENTS_PER_CENT,
                storage_credit=credit,
                arrival_days=(wait or 0) + int(network.handling_days[node]) + transit,
                inbound_day=wait,
            )
        )

    expected: dict[tuple[int, int, int], int] = defaultdict(int)
    for r in network.receipts:
        expected[(network.node_index[r.node_id], network.sku_index[r.sku], r.expected_day)] += r.qty
    for (node, sku, day), qty in inbound_taken.items():
        due = expected.get((node, sku, day), 0)
        if qty > due:
            violations.append(
                f"node {network.node_ids[node]}: {qty} units of {network.sku_ids[sku]} "
                f"wait for day {day}, {due} free in its receipts due then"
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

    return Evaluation(tuple(parcels), tuple(violations), tuple(shortfall), allocation.pickup)
