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
    # The capacity-aware node term of every stage-3 bound (sourcing.solver.kernels): per
    # (node, service) row, units of the SKUs with negative reduced cost, most negative first
    # (ties in SKU order), each up to its stock, until the node's capacity is full. Against
    # that greedy, row by row, on random rows (ties, zero stock, zero capacity, several
    # services per node); prices 0, so a unit cost is its reduced cost.
    from sourcing.solver import kernels
    from sourcing.solver.kernels import bounds

    rng = np.random.default_rng(15)
    for _ in range(400):
        b, v, k = (int(x) for x in rng.integers(1, [40, 4, 25]))
        reduced = np.minimum(np.round(rng.normal(0, 2, (b, v, k)), int(rng.integers(0, 2))), 0.0)
        avail = rng.integers(0, 8, (b, k)).astype(np.float64)
        capacity = rng.integers(0, 30, b).astype(np.float64)
        slots = kernels.slots_of(
            np.ones((b, v), dtype=np.bool_), reduced, np.zeros((b, v)), avail, capacity
        )
        expected = np.zeros((b, v, k))
        for n in range(b):
            for s in range(v):
                room = capacity[n]
                for sku in sorted(range(k), key=lambda j: (reduced[n, s, j], j)):
                    if reduced[n, s, sku] < 0:
                        expected[n, s, sku] = min(avail[n, sku], room)
                        room -= expected[n, s, sku]
                got = bounds._taken_by_sku(
                    slots.ptr, slots.sku, slots.unit, slots.avail, slots.capacity, np.zeros(k),
                    np.array([n * v + s]), k,
                )  # fmt: skip
                assert np.array_equal(got, expected[n, s]), (n, s)


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


def test_a_leaf_priced_without_materialising_its_sets_matches_pricing_them() -> None:
    # enumeration.price_product prices every set of one slot per forced node and a number
    # of free slots (a branch and bound's leaf) in one compiled pass. Against price_sets
    # over the same sets built with itertools (distinct nodes only): the same best key,
    # plan and exactness, on capacity-bound carts (splits that break a capacity go to the
    # exact re-split) with forced nodes of one and of two slots.
    import itertools

    from sourcing.costs import order_costs
    from sourcing.orders import demand_by_sku
    from sourcing.solver import enumeration

    from networks import random_cart, regime_network

    network = regime_network("capacity", 60, 100, 2)
    rng = np.random.default_rng(7)
    compared = resplit = 0
    for cart in range(12):
        order = random_cart(network, np.random.default_rng((2, cart)), 6)
        skus, wanted = demand_by_sku(network, order)
        costs = order_costs(network, order.destination.lat, order.destination.lon, skus, wanted)
        ctx = Context(costs, wanted, QuoteSettings(), float("inf"))
        slot_n, slot_v = np.nonzero(costs.usable)
        for _ in range(6):
            picked = rng.choice(slot_n.size, size=min(9, slot_n.size), replace=False)
            n, v = slot_n[picked], slot_v[picked]
            groups = int(rng.integers(0, 3))
            # The first groups' slots; a group of two slots shares its node.
            group_n, group_v, ptr = [], [], [0]
            for g in range(groups):
                group_n.append(n[g])
                group_v.append(v[g])
                other = np.flatnonzero((slot_n == n[g]) & (slot_v != v[g]))
                if other.size and g == 0:
                    group_n.append(n[g])
                    group_v.append(slot_v[other[0]])
                ptr.append(len(group_n))
            free_n, free_v = n[groups:], v[groups:]
            free_count = int(rng.integers(1, 4))
            limit = float(rng.choice([np.inf, 1e7]))
            got = enumeration.price_product(
                ctx, np.array(ptr), np.array(group_n, dtype=np.int64),
                np.array(group_v, dtype=np.int64), free_n, free_v, free_count, limit,
            )  # fmt: skip
            all_n = np.concatenate([np.array(group_n, dtype=np.int64), free_n])
            all_v = np.concatenate([np.array(group_v, dtype=np.int64), free_v])
            each = [range(ptr[g], ptr[g + 1]) for g in range(groups)]
            rows = [
                (*fixed, *(len(group_n) + c for c in free))
                for fixed in itertools.product(*each)
                for free in itertools.combinations(range(free_n.size), free_count)
            ]
            sets = np.array(rows, dtype=np.int64).reshape(len(rows), groups + free_count)
            ordered = np.sort(all_n[sets], axis=1)
            sets = sets[(ordered[:, 1:] != ordered[:, :-1]).all(axis=1)]
            want = enumeration.price_sets(ctx, all_n, all_v, sets, None, limit)
            assert got[0] == want[0] and got[2] == want[2]
            assert (got[1] is None) == (want[1] is None)
            if want[1] is not None and got[1] is not None:
                for a, b in zip(got[1], want[1], strict=True):
                    np.testing.assert_array_equal(a, b)
            compared += 1
            resplit += int(ctx.stats.get("resplit", 0) > 0)
    assert compared == 72
    assert resplit > 0, "no set broke a capacity: the re-split path went untested"
