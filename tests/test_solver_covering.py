"""The bit-mask prefilter of the cover test never rejects a set the plain sums accept."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from sourcing.model import QuoteSettings
from sourcing.solver.context import Context
from sourcing.solver.enumeration import _covering, _covering_sums


def test_zero_demand_sku_does_not_block_cover() -> None:
    # A backorder leg's demand is zero for SKUs fully in stock: their stock is clipped to 0.
    rng = np.random.default_rng(0)
    available = rng.integers(0, 3, size=(30, 3)).astype(np.int64)
    available[:, 2] = 0
    demand = np.array([2, 2, 0], dtype=np.int64)
    ctx = Context(
        SimpleNamespace(available=available), demand, QuoteSettings(), time.perf_counter() + 10
    )  # type: ignore[arg-type]
    nodes = np.array([(a, b) for a in range(30) for b in range(a + 1, 30)], dtype=np.int64)
    expected = _covering_sums(ctx, nodes)
    assert expected.any()
    assert (_covering(ctx, nodes) == expected).all()


def test_within_capacity_takes_the_most_profitable_units_first() -> None:
    # The capacity-aware node term of every stage-3 bound: per (node, service) row, units
    # of the SKUs with negative reduced cost, most negative first (ties in SKU order), each
    # up to its stock, until the node's capacity is full. Against that greedy, row by row,
    # on random rows (ties, zero stock, zero capacity, several services per node).
    from sourcing.solver.lagrangian import within_capacity

    rng = np.random.default_rng(15)
    for _ in range(400):
        b, v, k = (int(x) for x in rng.integers(1, [40, 4, 25]))
        reduced = np.minimum(np.round(rng.normal(0, 2, (b, v, k)), int(rng.integers(0, 2))), 0.0)
        avail = rng.integers(0, 8, (b, k)).astype(np.float64)
        capacity = rng.integers(0, 30, b).astype(np.float64)
        got = within_capacity(reduced, avail, capacity)
        expected = np.zeros((b, v, k))
        for n in range(b):
            for s in range(v):
                room = capacity[n]
                for sku in sorted(range(k), key=lambda j: (reduced[n, s, j], j)):
                    if reduced[n, s, sku] < 0:
                        expected[n, s, sku] = min(avail[n, sku], room)
                        room -= expected[n, s, sku]
        assert np.array_equal(got, expected)


def test_split_is_cheapest_unit_first_per_sku_on_many_and_few_sets() -> None:
    # enumeration.split prices a parcel set by giving each SKU to its parcels cheapest unit
    # first (ties: the earlier parcel of the row), each up to its node's stock: against that
    # rule worked out set by set, on a fragmented 20-line cart over 200 nodes (ties in unit
    # costs are common: services share a rate), for one to six parcels.
    from sourcing.costs import order_costs
    from sourcing.orders import demand_by_sku
    from sourcing.solver import enumeration

    from networks import random_cart, regime_network

    network = regime_network("fragmented", 200, 100, 0)
    order = random_cart(network, np.random.default_rng((0, 3)), 20)
    skus, wanted = demand_by_sku(network, order)
    costs = order_costs(network, order.destination.lat, order.destination.lon, skus, wanted)
    ctx = Context(costs, wanted, QuoteSettings(), float("inf"))
    rng = np.random.default_rng(15)
    for size in (1, 2, 3, 4, 6):
        for count in (1, 20, 158):
            nodes = np.array([rng.choice(200, size, replace=False) for _ in range(count)])
            services = rng.integers(0, 2, nodes.shape)
            total, units, all_used, within = enumeration.split(ctx, nodes, services)
            for t in range(count):
                n, v = nodes[t], services[t]
                unit = costs.unit[n, v, :]
                expected = np.zeros((size, wanted.size), dtype=np.int64)
                for k in range(wanted.size):
                    left = int(wanted[k])
                    for j in sorted(range(size), key=lambda j: (unit[j, k], j)):
                        expected[j, k] = min(int(costs.available[n[j], k]), max(left, 0))
                        left -= expected[j, k]
                assert np.array_equal(units[t], expected), (size, count, t)
                assert total[t] == costs.fixed[n, v].sum() + (unit * expected).sum()
                assert all_used[t] == (expected.sum(axis=1) > 0).all()
                assert within[t] == (expected.sum(axis=1) <= costs.capacity[n]).all()
