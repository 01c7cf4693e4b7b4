"""Network edits of a what-if variant: open or close a node, scale a rate card, change
storage cost or capacity, pool stock.

Each edit is a frozen dataclass whose ``apply`` returns the edited copy of a
:class:`~sourcing.model.Network` (the :class:`Edit` protocol) and whose
``describe`` says what it did, for the report. Money is in millicents. An edit that
does not fit its network raises :class:`EditError`; the scenario reader turns
that into a :class:`~sourcing.whatif.inputs.ScenarioError` naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sourcing.model import (
    UNLIMITED_CAPACITY,
    BoolArray,
    IntArray,
    Network,
    NodeKind,
    money_text,
)

__all__ = [
    "AddNode",
    "CloseNode",
    "Edit",
    "EditError",
    "NodeSelector",
    "PoolStock",
    "ScaleRates",
    "SetCapacity",
    "SetCover",
    "SetStorageCost",
]


class EditError(ValueError):
    """An edit does not fit the network it is applied to (unknown node, ...)."""


@dataclass(frozen=True)
class NodeSelector:
    """Which nodes an edit touches: one node by id, every node of a kind, or (neither) all."""

    node: str | None = None
    kind: NodeKind | None = None

    def mask(self, network: Network) -> BoolArray:
        if self.node is not None:
            if self.node not in network.node_index:
                raise EditError(f"unknown node {self.node!r}")
            mask = np.zeros(len(network.node_ids), dtype=np.bool_)
            mask[network.node_index[self.node]] = True
            return mask
        if self.kind is not None:
            return np.array([k == self.kind for k in network.node_kinds], dtype=np.bool_)
        return np.ones(len(network.node_ids), dtype=np.bool_)

    def describe(self) -> str:
        if self.node is not None:
            return self.node
        if self.kind is not None:
            return f"every {self.kind.value}"
        return "every node"


class Edit(Protocol):
    """A change to a network: ``apply`` returns the edited copy."""

    def apply(self, network: Network) -> Network: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class AddNode:
    """Open a node. Money in millicents; ``capacity`` None means unlimited.

    Stock: ``stock_share`` of ``stock_from``'s on hand (rounded down per
    SKU), moved from it if ``move_stock`` else copied (extra inventory);
    no stock when ``stock_from`` is None. No safety stock at the new node.
    """

    node_id: str
    kind: NodeKind
    lat: float
    lon: float
    handling_days: int = 1
    handling_cost: int = 0
    storage_cost: int = 0
    capacity: int | None = None
    stock_from: str | None = None
    stock_share: float = 1.0
    move_stock: bool = False

    def apply(self, network: Network) -> Network:
        if self.node_id in network.node_index:
            raise EditError(f"node {self.node_id!r} already exists")
        if not (-90 <= self.lat <= 90 and -180 <= self.lon <= 180):
            raise EditError(f"coordinates out of range: {self.lat}, {self.lon}")
        if not 0 <= self.stock_share <= 1:
            raise EditError(f"stock_share must be within [0, 1], got {self.stock_share}")
        on_hand = network.on_hand.copy()
        new_stock = np.zeros(len(network.sku_ids), dtype=np.int64)
        if self.stock_from is not None:
            if self.stock_from not in network.node_index:
                raise EditError(f"unknown node {self.stock_from!r} in stock_from")
            source = network.node_index[self.stock_from]
            new_stock = np.floor(on_hand[source] * self.stock_share).astype(np.int64)
            if self.move_stock:
                on_hand[source] -= new_stock
        zeros = np.zeros((1, len(network.sku_ids)), dtype=np.int64)
        return network.replace(
            node_ids=(*network.node_ids, self.node_id),
            node_kinds=(*network.node_kinds, self.kind),
            lat=np.append(network.lat, self.lat),
            lon=np.append(network.lon, self.lon),
            handling_days=np.append(network.handling_days, self.handling_days),
            handling_cost=np.append(network.handling_cost, self.handling_cost),
            storage_cost=np.append(network.storage_cost, self.storage_cost),
            capacity=np.append(
                network.capacity, UNLIMITED_CAPACITY if self.capacity is None else self.capacity
            ),
            on_hand=np.vstack([on_hand, new_stock[None, :]]),
            safety_stock=np.vstack([network.safety_stock, zeros]),
            reserved=np.vstack([network.reserved, zeros]),
        )

    def describe(self) -> str:
        text = (
            f"open {self.kind.value} {self.node_id} at ({self.lat:.4f}, {self.lon:.4f}), "
            f"handling {self.handling_days} d / {money_text(self.handling_cost)} per parcel, "
            f"storage {money_text(self.storage_cost)} per unit-day, capacity "
            f"{'unlimited' if self.capacity is None else self.capacity}"
        )
        if self.stock_from is not None:
            verb = "moved" if self.move_stock else "copied"
            text += f"; {self.stock_share:.0%} of {self.stock_from}'s stock {verb}"
        return text


@dataclass(frozen=True)
class CloseNode:
    """Close a node: no stock and no capacity; its on hand moves to ``transfer_to`` if given."""

    node_id: str
    transfer_to: str | None = None

    def apply(self, network: Network) -> Network:
        if self.node_id not in network.node_index:
            raise EditError(f"unknown node {self.node_id!r}")
        n = network.node_index[self.node_id]
        on_hand, safety, capacity = (
            network.on_hand.copy(),
            network.safety_stock.copy(),
            network.capacity.copy(),
        )
        if self.transfer_to is not None:
            if self.transfer_to not in network.node_index:
                raise EditError(f"unknown node {self.transfer_to!r} in transfer_to")
            if self.transfer_to == self.node_id:
                raise EditError("transfer_to names the node being closed")
            on_hand[network.node_index[self.transfer_to]] += on_hand[n]
        on_hand[n] = 0
        safety[n] = 0
        capacity[n] = 0
        return network.replace(on_hand=on_hand, safety_stock=safety, capacity=capacity)

    def describe(self) -> str:
        moved = f", stock moved to {self.transfer_to}" if self.transfer_to else ", stock dropped"
        return f"close {self.node_id}{moved}"


@dataclass(frozen=True)
class ScaleRates:
    """Multiply base price and per-kg price by ``factor`` (rounded to whole millicents).

    ``service`` / ``zone`` restrict it to one service or zone (default: all).
    """

    factor: float
    service: str | None = None
    zone: str | None = None

    def apply(self, network: Network) -> Network:
        if not (math.isfinite(self.factor) and self.factor >= 0):
            raise EditError(f"factor must be a number >= 0, got {self.factor}")
        rows = np.ones(len(network.service_ids), dtype=np.bool_)
        cols = np.ones(len(network.zone_ids), dtype=np.bool_)
        if self.service is not None:
            if self.service not in network.service_index:
                raise EditError(f"unknown service {self.service!r}")
            rows[:] = False
            rows[network.service_index[self.service]] = True
        if self.zone is not None:
            if self.zone not in network.zone_ids:
                raise EditError(f"unknown zone {self.zone!r}")
            cols[:] = False
            cols[network.zone_ids.index(self.zone)] = True
        cells = rows[:, None] & cols[None, :]

        def scaled(prices: IntArray) -> IntArray:
            return np.where(cells, np.rint(prices * self.factor), prices).astype(np.int64)

        return network.replace(base_price=scaled(network.base_price), per_kg=scaled(network.per_kg))

    def describe(self) -> str:
        scope = f"service {self.service}" if self.service else "every service"
        if self.zone:
            scope += f", zone {self.zone}"
        return f"rates x{self.factor:g} ({scope})"


@dataclass(frozen=True)
class SetStorageCost:
    """Set (``millicents`` per unit-day) or scale (``factor``) the selected nodes' storage cost."""

    nodes: NodeSelector = field(default_factory=NodeSelector)
    millicents: int | None = None
    factor: float | None = None

    def apply(self, network: Network) -> Network:
        if (self.millicents is None) == (self.factor is None):
            raise EditError("give exactly one of cost and factor")
        mask = self.nodes.mask(network)
        if self.millicents is not None:
            new = np.where(mask, self.millicents, network.storage_cost)
        else:
            factor = float(self.factor or 0.0)
            if not (math.isfinite(factor) and factor >= 0):
                raise EditError(f"factor must be a number >= 0, got {self.factor}")
            new = np.where(mask, np.rint(network.storage_cost * factor), network.storage_cost)
        return network.replace(storage_cost=new.astype(np.int64))

    def describe(self) -> str:
        what = (
            f"= {money_text(self.millicents)} per unit-day"
            if self.millicents is not None
            else f"x{self.factor:g}"
        )
        return f"storage cost {what} at {self.nodes.describe()}"


@dataclass(frozen=True)
class SetCapacity:
    """Set the daily capacity (units) of the selected nodes; ``units`` None = unlimited."""

    nodes: NodeSelector = field(default_factory=NodeSelector)
    units: int | None = None

    def apply(self, network: Network) -> Network:
        if self.units is not None and self.units < 0:
            raise EditError(f"units must be >= 0, got {self.units}")
        value = UNLIMITED_CAPACITY if self.units is None else self.units
        return network.replace(capacity=np.where(self.nodes.mask(network), value, network.capacity))

    def describe(self) -> str:
        units = "unlimited" if self.units is None else f"{self.units} units/day"
        return f"capacity {units} at {self.nodes.describe()}"


@dataclass(frozen=True)
class PoolStock:
    """Every node that holds a SKU (on hand > 0) gets the SKU's network-wide on hand.

    "Any node that carries a product could serve all of its demand": a
    what-if on where stock sits, not on how much there is per node.
    """

    def apply(self, network: Network) -> Network:
        total = network.on_hand.sum(axis=0)
        return network.replace(
            on_hand=np.where(network.on_hand > 0, total[None, :], 0).astype(np.int64)
        )

    def describe(self) -> str:
        return "every node holding a SKU holds its network-wide total"


@dataclass(frozen=True)
class SetCover:
    """Scale each SKU's on-hand stock to cover ``days`` of its network-wide daily demand.

    The selected nodes (``nodes``, default all) keep their shares of each SKU
    (largest remainder rounding, so a SKU's total is ``round(days x
    daily_demand)`` exactly, and small holdings may round to nothing); the
    others are emptied; safety stock is clipped to what is left. A scarce
    network from a plentiful one: where the stock sits matters again.
    """

    days: float
    nodes: NodeSelector = field(default_factory=NodeSelector)

    def apply(self, network: Network) -> Network:
        if not (math.isfinite(self.days) and self.days >= 0):
            raise EditError(f"days must be a number >= 0, got {self.days}")
        keep = self.nodes.mask(network)
        on_hand = np.where(keep[:, None], network.on_hand, 0).astype(np.float64)
        total = on_hand.sum(axis=0)
        want = np.rint(self.days * network.daily_demand)
        share = np.where(total > 0, want / np.maximum(total, 1.0), 0.0)
        exact = on_hand * share[None, :]
        target = np.floor(exact)
        short = np.where(total > 0, want - target.sum(axis=0), 0).astype(np.int64)
        # Largest remainders first (ties: lower node index), per SKU.
        rank = np.argsort(-(exact - target), axis=0, kind="stable")
        place = np.empty_like(rank)
        np.put_along_axis(place, rank, np.arange(rank.shape[0])[:, None], axis=0)
        target += place < short[None, :]
        stock = target.astype(np.int64)
        return network.replace(on_hand=stock, safety_stock=np.minimum(network.safety_stock, stock))

    def describe(self) -> str:
        return (
            f"each SKU's stock scaled to {self.days:g} days of its daily demand, "
            f"held at {self.nodes.describe()}"
        )
