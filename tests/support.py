"""Test support: tiny random networks and a brute-force oracle built on `evaluate`.

The oracle bounds its enumeration with its own reading of DESIGN section 7's
availability rule (:func:`free_units`), not with ``Network.available``, the
rule the solver uses.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

import numpy as np
import pytest

from sourcing.evaluate import evaluate
from sourcing.model import (
    MILLICENTS_PER_CENT,
    UNLIMITED_CAPACITY,
    Allocation,
    Evaluation,
    Location,
    Network,
    NodeKind,
    Order,
    OrderLine,
    ParcelLine,
    ParcelPlan,
)

#: Set (by .ci/run) to make the PostgreSQL tests fail, not skip, where none answers.
REQUIRE_PG = "OMS_REQUIRE_PG"
#: Set (by .ci/run) to make the real-data tests fail, not skip, where ../shared/data is absent.
REQUIRE_REAL_DATA = "OMS_REQUIRE_REAL_DATA"


def unavailable(reason: str, required_by: str) -> NoReturn:
    """A real component a test needs is missing: skip it, saying why, or fail it where the
    environment variable ``required_by`` is set (CI must not pass without it)."""
    if os.environ.get(required_by, "") not in ("", "0"):
        pytest.fail(f"{reason} (and {required_by} is set: this run must have it)", pytrace=False)
    pytest.skip(reason)


def route_per_parcel_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the route of 50-line carts on 500 nodes (``sourcing.solver.large``) on any cart.

    No parcel set is enumerated before it (beyond single parcels), and every residue,
    however small, is split by parcel count and bounded and searched per count.
    """
    from sourcing.solver import large, subproblem

    monkeypatch.setattr(subproblem, "best_subset", lambda *args, **kwargs: (None, 0))
    monkeypatch.setattr(large, "LARGE_SLOTS", 0)


def tiny_network(
    rng: np.random.Generator,
    n_nodes: int = 3,
    n_skus: int = 2,
    n_services: int = 2,
    max_stock: int = 3,
    capacity_prob: float = 0.2,
) -> Network:
    """A random network small enough to enumerate every allocation of a cart."""
    n_zones = 3
    lat = rng.uniform(30, 45, n_nodes)
    lon = rng.uniform(-120, -75, n_nodes)
    on_hand = rng.integers(0, max_stock + 1, (n_nodes, n_skus))
    safety = np.where(rng.random((n_nodes, n_skus)) < 0.2, 1, 0)
    capacity = np.where(
        rng.random(n_nodes) < capacity_prob, rng.integers(1, 4, n_nodes), UNLIMITED_CAPACITY
    )
    base = rng.integers(300, 1500, (n_services, n_zones)) * MILLICENTS_PER_CENT
    transit = rng.integers(1, 5, (n_services, n_zones))
    offered = rng.random((n_services, n_zones)) < 0.9
    offered[0] = True  # every zone reachable by at least one service
    network = Network(
        node_ids=tuple(f"N{i}" for i in range(n_nodes)),
        node_kinds=tuple(NodeKind.DC if i % 2 else NodeKind.STORE for i in range(n_nodes)),
        lat=lat,
        lon=lon,
        handling_days=rng.integers(0, 3, n_nodes),
        handling_cost=rng.integers(0, 400, n_nodes) * MILLICENTS_PER_CENT,
        storage_cost=rng.integers(0, 6, n_nodes) * MILLICENTS_PER_CENT,
        capacity=capacity,
        sku_ids=tuple(f"S{k}" for k in range(n_skus)),
        weight_g=rng.integers(50, 8000, n_skus),
        daily_demand=np.round(rng.uniform(0, 3, n_skus), 2) * (rng.random(n_skus) < 0.9),
        on_hand=on_hand,
        safety_stock=safety,
        reserved=np.zeros((n_nodes, n_skus), dtype=np.int64),
        zone_ids=tuple(str(z + 2) for z in range(n_zones)),
        zone_max_km=np.array([800.0, 2000.0, 20000.0]),
        service_ids=tuple(["ground", "express", "freight"][:n_services]),
        base_price=base,
        per_kg=_sub_cent(rng.integers(0, 300, (n_services, n_zones))),
        transit_days=transit,
        offered=offered,
    )
    # Units reserved by earlier orders: on hand holds them too, so what is free to
    # promise keeps the spread drawn above, and a rule that forgot them would promise
    # units that are not there. Drawn last, so every draw above stays as it was.
    reserved = np.where(
        rng.random((n_nodes, n_skus)) < 0.3, rng.integers(1, 3, (n_nodes, n_skus)), 0
    )
    return network.replace(on_hand=network.on_hand + reserved, reserved=reserved)


def free_units(network: Network) -> np.ndarray:
    """Units each node may promise of each SKU (N x S), read straight off the raw fields.

    DESIGN section 7: ``on_hand - safety_stock - reserved``, never below zero. Scalar,
    and written here, so that the brute force does not take the solver's own rule
    (``Network.available``) on trust.
    """
    rows = []
    for n in range(len(network.node_ids)):
        row = []
        for k in range(len(network.sku_ids)):
            free = (
                int(network.on_hand[n, k])
                - int(network.safety_stock[n, k])
                - int(network.reserved[n, k])
            )
            row.append(free if free > 0 else 0)
        rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(len(network.node_ids), len(network.sku_ids))


def _sub_cent(cents: np.ndarray) -> np.ndarray:
    """Whole cents -> millicents with a sub-cent part (5-decimal prices such as 0.4636 per kg),
    so the per-kg charge's per-unit rounding is exercised; derived from the cents, so the
    random stream (and every instance drawn after) is the one whole-cent prices had."""
    return cents * MILLICENTS_PER_CENT + (cents * 379) % MILLICENTS_PER_CENT


def random_order(
    rng: np.random.Generator, network: Network, max_lines: int = 3, max_qty: int = 3
) -> Order:
    lines = tuple(
        OrderLine(
            network.sku_ids[int(rng.integers(len(network.sku_ids)))],
            int(rng.integers(1, max_qty + 1)),
        )
        for _ in range(int(rng.integers(1, max_lines + 1)))
    )
    return Order(Location(float(rng.uniform(28, 47)), float(rng.uniform(-122, -72))), lines)


def fragmented_cart(
    rng: np.random.Generator, n_nodes: int, held_share: float
) -> tuple[Network, Order]:
    """``n_nodes`` nodes, each holding about ``held_share`` of five SKUs, and a cart of 3-4
    of them: most carts must split."""
    network = tiny_network(rng, n_nodes=n_nodes, n_skus=5, max_stock=2, capacity_prob=0.3)
    held = rng.random(network.on_hand.shape) < held_share
    # Stock that is not held keeps only what is reserved: nothing free to promise.
    network = network.replace(
        on_hand=np.where(held, network.on_hand, network.reserved),
        safety_stock=np.where(held, network.safety_stock, 0),
    )
    skus = rng.choice(len(network.sku_ids), size=int(rng.integers(3, 5)), replace=False)
    order = Order(
        random_order(rng, network).destination,
        tuple(OrderLine(network.sku_ids[k], int(rng.integers(1, 3))) for k in skus.tolist()),
    )
    return network, order


def _compositions(total: int, caps: list[int]) -> Iterator[tuple[int, ...]]:
    if not caps:
        if total == 0:
            yield ()
        return
    for first in range(min(total, caps[0]) + 1):
        for rest in _compositions(total - first, caps[1:]):
            yield (first, *rest)


def all_allocations(
    network: Network, order: Order, demand: dict[str, int] | None = None
) -> Iterator[Evaluation]:
    """Every allocation of the order (units per node per SKU x a service per used node), evaluated.

    ``demand`` (units per SKU) defaults to the whole order; infeasible ones
    (capacity, service not offered) are dropped by `evaluate`'s verdict.
    """
    wanted: dict[str, int] = {}
    for line in order.lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.qty
    if demand is not None:
        wanted = demand
    skus = sorted(wanted)
    avail = free_units(network)
    n_nodes = len(network.node_ids)
    per_sku = [
        list(
            _compositions(wanted[s], [int(avail[n, network.sku_index[s]]) for n in range(n_nodes)])
        )
        for s in skus
    ]
    for combo in itertools.product(*per_sku):
        units = np.array(combo).reshape(len(skus), n_nodes).T if skus else np.zeros((n_nodes, 0))
        used = [n for n in range(n_nodes) if units[n].sum() > 0]
        for services in itertools.product(network.service_ids, repeat=len(used)):
            parcels = []
            remaining = {i: line.qty for i, line in enumerate(order.lines)}
            for n, service in zip(used, services, strict=True):
                contents = []
                for k, sku in enumerate(skus):
                    qty = int(units[n, k])
                    for i, line in enumerate(order.lines):
                        if qty == 0:
                            break
                        if line.sku == sku and remaining[i]:
                            take = min(qty, remaining[i])
                            contents.append(ParcelLine(i, sku, take))
                            remaining[i] -= take
                            qty -= take
                parcels.append(ParcelPlan(network.node_ids[n], service, tuple(contents)))
            evaluation = evaluate(
                network, order, Allocation(tuple(parcels)), allow_partial=demand is not None
            )
            if evaluation.is_feasible:
                yield evaluation


def network_differences(a: Network, b: Network) -> list[str]:
    """Names of the Network fields that differ (arrays by dtype and value)."""
    differ = []
    for f in dataclasses.fields(Network):
        if not f.init:
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or not np.array_equal(x, y):
                differ.append(f.name)
        elif x != y:
            differ.append(f.name)
    return differ


def spy(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Count the calls of ``module.name`` (``[count]``, thread-safe), still calling it."""
    calls = [0]
    real = getattr(module, name)
    lock = threading.Lock()

    def counted(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls
