"""Rule-based sourcing policies: the yardsticks the optimiser is compared with.

Each policy returns a :class:`~sourcing.model.Option` like the optimiser's,
with no labels, ``Proof(status="HEURISTIC", gap=nan, method=<policy>)`` and
the :func:`~sourcing.evaluate.evaluate` verdict on its allocation.

Common rules:

* lines are served one by one in cart order; each line takes as many units
  as it can from the first node in the policy's node sequence that still has
  available units of its SKU and daily capacity left, then the next, and so
  on (a line may split across nodes). Lines of the same SKU share a node's
  stock; every unit taken counts against the node's daily capacity;
* a node whose zone (for this destination) has no offered service is never
  used;
* each node ships one parcel with the cheapest service offered in its zone
  for that parcel: least ``base_price + per_kg * weight``, ties broken by
  fewer transit days, then by rate-card order;
* if the nodes in the sequence hold fewer available units of a SKU than the
  cart asks for, :class:`~sourcing.errors.ShortageError` lists every short
  SKU with the requested and available units. If stock suffices but the
  greedy walk still cannot place every unit (daily capacities), it raises
  the same error naming the capacity, with the units it could place as
  ``available``. With ``allow_partial=True`` nothing is raised: the option
  ships what the walk placed and its evaluation reports the shortfall.

``available`` (N x S) and ``capacity`` (N) override the network's own
figures, so the simulator can pass running stock and remaining capacity.
Note that the attached evaluation checks against the network's own stock and
capacity: pass a network whose ``reserved`` reflects the running state when
the evaluation must agree with the override.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sourcing.costs import haversine_km, zone_of
from sourcing.errors import Shortage, ShortageError
from sourcing.evaluate import evaluate
from sourcing.model import (
    Allocation,
    BoolArray,
    IntArray,
    Network,
    NodeKind,
    Option,
    Order,
    ParcelLine,
    ParcelPlan,
    Proof,
    per_kg_charge,
)
from sourcing.orders import validate_order

__all__ = ["POLICIES", "greedy_nearest", "priority_list", "ship_complete_first"]


class _Context:
    """One order against one network: distances, zones, usable nodes, stock."""

    def __init__(
        self,
        network: Network,
        order: Order,
        available: IntArray | None,
        capacity: IntArray | None,
    ) -> None:
        validate_order(network, order)
        n, s = len(network.node_ids), len(network.sku_ids)
        avail = network.available if available is None else np.asarray(available, dtype=np.int64)
        if avail.shape != (n, s):
            raise ValueError(f"available has shape {avail.shape}, expected {(n, s)}")
        cap = network.capacity if capacity is None else np.asarray(capacity, dtype=np.int64)
        if cap.shape != (n,):
            raise ValueError(f"capacity has shape {cap.shape}, expected {(n,)}")
        self.network = network
        self.order = order
        self.available: IntArray = np.maximum(avail, 0).astype(np.int64)  # a private copy
        self.capacity: IntArray = np.maximum(cap, 0).astype(np.int64)
        dest = order.destination
        self.distance = haversine_km(network.lat, network.lon, dest.lat, dest.lon)
        self.zone = zone_of(network, self.distance)
        self.usable: BoolArray = np.asarray(network.offered[:, self.zone].any(axis=0))  # N
        self.line_sku = [network.sku_index[line.sku] for line in order.lines]
        # Requested units per distinct SKU, in order of first appearance.
        self.requested: dict[int, int] = {}
        for k, line in zip(self.line_sku, order.lines, strict=True):
            self.requested[k] = self.requested.get(k, 0) + line.qty

    def nearest_first(self) -> IntArray:
        """Usable nodes by distance to the destination (ties: network order)."""
        order = np.argsort(self.distance, kind="stable")
        return order[self.usable[order]].astype(np.int64)

    def shortages(self, sequence: IntArray) -> list[Shortage]:
        totals = self.available[sequence].sum(axis=0)
        return [
            Shortage(self.network.sku_ids[k], q, int(totals[k]))
            for k, q in self.requested.items()
            if int(totals[k]) < q
        ]

    def can_ship_alone(self, node: int) -> bool:
        if not self.usable[node]:
            return False
        total = sum(self.requested.values())
        if total > int(self.capacity[node]):
            return False
        return all(int(self.available[node, k]) >= q for k, q in self.requested.items())

    def service_for(self, node: int, weight_g: int) -> int:
        """Cheapest offered service for a parcel of ``weight_g`` from ``node``."""
        net = self.network
        z = int(self.zone[node])
        best: tuple[int, int, int] | None = None
        # The transfer lane moves stock between nodes; it never ships to a customer.
        for v in np.flatnonzero(net.offered[:, z] & net.customer_services).tolist():
            price = int(net.base_price[v, z]) + int(per_kg_charge(net.per_kg[v, z], weight_g))
            key = (price, int(net.transit_days[v, z]), v)
            if best is None or key < best:
                best = key
        if best is None:  # never happens: only usable nodes get parcels
            raise ValueError(f"no service offered from {net.node_ids[node]}")
        return best[2]


def _walk(ctx: _Context, sequence: IntArray) -> tuple[dict[int, list[ParcelLine]], list[int]]:
    """Serve lines in cart order from nodes in ``sequence`` order; returns what it placed."""
    net = ctx.network
    avail, cap = ctx.available, ctx.capacity
    taken: dict[int, list[ParcelLine]] = {}
    covered = [0] * len(ctx.order.lines)
    for i, (line, k) in enumerate(zip(ctx.order.lines, ctx.line_sku, strict=True)):
        need = line.qty
        holders = sequence[avail[sequence, k] > 0]
        for node in holders.tolist():
            if need == 0:
                break
            qty = min(need, int(avail[node, k]), int(cap[node]))
            if qty <= 0:
                continue
            avail[node, k] -= qty
            cap[node] -= qty
            need -= qty
            taken.setdefault(node, []).append(ParcelLine(i, net.sku_ids[k], qty))
        covered[i] = line.qty - need
    return taken, covered


def _option(
    ctx: _Context,
    taken: dict[int, list[ParcelLine]],
    method: str,
    allow_partial: bool,
) -> Option:
    net = ctx.network
    parcels = []
    for node, lines in taken.items():  # insertion order: first use
        weight_g = sum(pl.qty * int(net.weight_g[net.sku_index[pl.sku]]) for pl in lines)
        service = ctx.service_for(node, weight_g)
        parcels.append(ParcelPlan(net.node_ids[node], net.service_ids[service], tuple(lines)))
    allocation = Allocation(tuple(parcels))
    evaluation = evaluate(net, ctx.order, allocation, allow_partial=allow_partial)
    return Option(
        labels=(),
        evaluation=evaluation,
        proof=Proof(status="HEURISTIC", gap=float("nan"), method=method),
    )


def _run(ctx: _Context, sequence: IntArray, method: str, allow_partial: bool) -> Option:
    if not allow_partial:
        short = ctx.shortages(sequence)
        if short:
            raise ShortageError(short)
    taken, covered = _walk(ctx, sequence)
    if not allow_partial and sum(covered) < sum(ctx.requested.values()):
        placed: dict[int, int] = {}
        for k, c in zip(ctx.line_sku, covered, strict=True):
            placed[k] = placed.get(k, 0) + c
        raise ShortageError(
            [
                Shortage(ctx.network.sku_ids[k], q, placed[k])
                for k, q in ctx.requested.items()
                if placed[k] < q
            ],
            reason="not enough daily capacity at the nodes holding the stock",
        )
    return _option(ctx, taken, method, allow_partial)


def greedy_nearest(
    network: Network,
    order: Order,
    *,
    available: IntArray | None = None,
    capacity: IntArray | None = None,
    allow_partial: bool = False,
) -> Option:
    """Each line from the nearest node (great-circle) that still has stock, splitting as needed."""
    ctx = _Context(network, order, available, capacity)
    return _run(ctx, ctx.nearest_first(), "greedy_nearest", allow_partial)


def priority_list(
    network: Network,
    order: Order,
    priority: Sequence[str] | None = None,
    *,
    available: IntArray | None = None,
    capacity: IntArray | None = None,
    allow_partial: bool = False,
) -> Option:
    """Like :func:`greedy_nearest`, but nodes are tried in a fixed priority order.

    ``priority`` lists node ids, most preferred first; only listed nodes are
    used (as a channel's warehouse list in Saleor-style allocation). The
    default is every DC, then every store, each in network order.
    """
    ctx = _Context(network, order, available, capacity)
    if priority is None:
        ranked = [i for i, kind in enumerate(network.node_kinds) if kind == NodeKind.DC]
        ranked += [i for i, kind in enumerate(network.node_kinds) if kind != NodeKind.DC]
    else:
        unknown = [node_id for node_id in priority if node_id not in network.node_index]
        if unknown:
            raise ValueError(f"priority lists unknown node ids: {', '.join(unknown)}")
        if len(set(priority)) != len(priority):
            raise ValueError("priority lists a node more than once")
        ranked = [network.node_index[node_id] for node_id in priority]
    sequence = np.array(ranked, dtype=np.int64)
    sequence = sequence[ctx.usable[sequence]] if sequence.size else sequence
    return _run(ctx, sequence, "priority_list", allow_partial)


def ship_complete_first(
    network: Network,
    order: Order,
    *,
    available: IntArray | None = None,
    capacity: IntArray | None = None,
    allow_partial: bool = False,
) -> Option:
    """One parcel from the nearest node that can ship the whole cart; else greedy nearest."""
    ctx = _Context(network, order, available, capacity)
    sequence = ctx.nearest_first()
    for node in sequence.tolist():
        if ctx.can_ship_alone(node):
            return _run(ctx, np.array([node], dtype=np.int64), "ship_complete_first", allow_partial)
    return _run(ctx, sequence, "ship_complete_first", allow_partial)


#: The policies by name, for benchmarks and the what-if simulator.
POLICIES: dict[str, Callable[..., Option]] = {
    "greedy_nearest": greedy_nearest,
    "priority_list": priority_list,
    "ship_complete_first": ship_complete_first,
}
