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
from fractions import Fraction

from sourcing.model import (
    PICKUP_SERVICE,
    TRANSFER_SERVICE,
    UNLIMITED_CAPACITY,
    Allocation,
    Evaluation,
    Network,
    NodeKind,
    Order,
    ParcelCost,
    ParcelPlan,
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
    return round(int(network.storage_cost[node]) * min(cover, horizon))


def _unit_per_kg_charge(per_kg: int, weight_g: int) -> int:
    """per_kg (millicents per kg) x weight_g / 1000, rounded half-to-even to the millicent."""
    return round(Fraction(per_kg * weight_g, 1000))


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
    tally = _Tally(len(order.lines))
    violations = tally.violations
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

    parcels: list[ParcelCost] = []
    for p_idx, parcel in enumerate(allocation.parcels):
        priced = _parcel(network, order, parcel, p_idx, pickup, dest_lat, dest_lon, tally)
        if priced is not None:
            parcels.append(priced)
    _check_receipts(network, tally)
    _check_stock(network, tally)
    shortfall = _check_coverage(order, tally, allow_partial)
    return Evaluation(tuple(parcels), tuple(violations), tuple(shortfall), allocation.pickup)


class _Tally:
    """What the parcels of one allocation add up to, and the rules they break so far."""

    __slots__ = ("covered", "inbound_taken", "seen_nodes", "taken", "violations")

    def __init__(self, lines: int) -> None:
        self.covered = [0] * lines  # units per order line
        self.violations: list[str] = []
        self.taken: defaultdict[tuple[int, int], int] = defaultdict(int)
        self.inbound_taken: defaultdict[tuple[int, int, int], int] = defaultdict(int)
        self.seen_nodes: set[tuple[str, int | None]] = set()


def _parcel(
    network: Network,
    order: Order,
    parcel: ParcelPlan,
    p_idx: int,
    pickup: int | None,
    dest_lat: float,
    dest_lon: float,
    tally: _Tally,
) -> ParcelCost | None:
    """One parcel priced, its units added to ``tally``; None if its node or service is unknown."""
    violations = tally.violations
    where = f"parcel {p_idx} ({parcel.node_id})"
    node = network.node_index.get(parcel.node_id)
    if node is None:
        violations.append(f"{where}: unknown node")
        return None
    picked_here = pickup is not None and node == pickup
    # Units at the pickup store are picked there; every other parcel of a collect
    # travels by the transfer lane; a delivery never does.
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
            return None
        if pickup is not None and parcel.service != TRANSFER_SERVICE:
            violations.append(f"{where}: must travel to the pickup store by {TRANSFER_SERVICE!r}")
        if pickup is None and parcel.service == TRANSFER_SERVICE:
            violations.append(f"{where}: the transfer lane does not ship to customers")
    wait = parcel.inbound_day
    if wait is not None and wait < 0:
        violations.append(f"{where}: inbound day {wait} is negative")
    if (parcel.node_id, wait) in tally.seen_nodes:
        violations.append(f"{where}: a second parcel from the same node")
    tally.seen_nodes.add((parcel.node_id, wait))
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

    weight_g, credit, units, unit_weights = _take_lines(network, order, parcel, where, node, tally)
    capacity = int(network.capacity[node])
    if wait is None and capacity < UNLIMITED_CAPACITY and units > capacity:
        violations.append(f"{where}: {units} units exceed daily capacity {capacity}")

    if service is None:
        shipping, transit = 0, 0
    else:
        base = int(network.base_price[service, zone])
        per_kg = int(network.per_kg[service, zone])
        # The per-kg charge is rounded per unit (it keeps costs linear in the units).
        shipping = base + sum(q * _unit_per_kg_charge(per_kg, g) for q, g in unit_weights)
        transit = int(network.transit_days[service, zone])
    return ParcelCost(
        node_id=parcel.node_id,
        service=parcel.service,
        lines=parcel.lines,
        zone=zone_name,
        distance_km=km,
        weight_g=weight_g,
        shipping=shipping,
        handling=int(network.handling_cost[node]),
        storage_credit=credit,
        arrival_days=(wait or 0) + int(network.handling_days[node]) + transit,
        inbound_day=wait,
    )


def _take_lines(
    network: Network, order: Order, parcel: ParcelPlan, where: str, node: int, tally: _Tally
) -> tuple[int, int, int, list[tuple[int, int]]]:
    """The parcel's weight (g), storage credit, units and (units, grams per unit) per line;
    its lines' units added to ``tally``."""
    violations, covered = tally.violations, tally.covered
    taken, inbound_taken = tally.taken, tally.inbound_taken
    wait = parcel.inbound_day
    weight_g = 0
    credit = 0
    units = 0
    unit_weights: list[tuple[int, int]] = []
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
        unit_weights.append((pl.qty, int(network.weight_g[sku])))
        units += pl.qty
        if wait is None:
            taken[(node, sku)] += pl.qty
            credit += pl.qty * _unit_credit(network, node, sku)
        else:
            inbound_taken[(node, sku, wait)] += pl.qty
    return weight_g, credit, units, unit_weights


def _check_receipts(network: Network, tally: _Tally) -> None:
    """Units waiting for receipts within the free units due that day at that node."""
    expected: dict[tuple[int, int, int], int] = defaultdict(int)
    for r in network.receipts:
        expected[(network.node_index[r.node_id], network.sku_index[r.sku], r.expected_day)] += r.qty
    for (node, sku, day), qty in tally.inbound_taken.items():
        due = expected.get((node, sku, day), 0)
        if qty > due:
            tally.violations.append(
                f"node {network.node_ids[node]}: {qty} units of {network.sku_ids[sku]} "
                f"wait for day {day}, {due} free in its receipts due then"
            )


def _check_stock(network: Network, tally: _Tally) -> None:
    """Units per (node, SKU) within on hand - safety stock - reserved."""
    for (node, sku), qty in tally.taken.items():
        available = max(
            0,
            int(network.on_hand[node, sku])
            - int(network.safety_stock[node, sku])
            - int(network.reserved[node, sku]),
        )
        if qty > available:
            tally.violations.append(
                f"node {network.node_ids[node]}: {qty} units of {network.sku_ids[sku]} "
                f"taken, {available} available"
            )


def _check_coverage(order: Order, tally: _Tally, allow_partial: bool) -> list[Shortfall]:
    """No line over-covered; what a line misses is shortfall (a violation unless partial)."""
    shortfall: list[Shortfall] = []
    covered = tally.covered
    for i, line in enumerate(order.lines):
        if covered[i] > line.qty:
            tally.violations.append(
                f"line {i} ({line.sku}): {covered[i]} units shipped, {line.qty} ordered"
            )
        elif covered[i] < line.qty:
            shortfall.append(Shortfall(i, line.sku, line.qty, covered[i]))
            if not allow_partial:
                tally.violations.append(
                    f"line {i} ({line.sku}): {covered[i]} of {line.qty} units covered"
                )
    return shortfall
