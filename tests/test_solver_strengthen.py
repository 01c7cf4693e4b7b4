"""The cover bound and the cover prices (sourcing.solver.strengthen) against brute force."""

from __future__ import annotations

import itertools
import time
from types import SimpleNamespace

import numpy as np

from sourcing.costs import order_costs
from sourcing.model import QuoteSettings
from sourcing.orders import demand_by_sku
from sourcing.solver.context import INF, Context
from sourcing.solver.enumeration import capacitated_split
from sourcing.solver.lagrangian import lagrangian_bound
from sourcing.solver.strengthen import (
    cover_bound,
    cover_prices,
    enumeration_bound,
    least_covering_sets,
)

from support import fragmented_cart


def _fragmented(seed: int) -> Context:
    """Seven nodes each holding about a third of five SKUs: carts of 3-4 SKUs must split."""
    rng = np.random.default_rng(90_000 + seed)
    network, order = fragmented_cart(rng, n_nodes=7, held_share=0.4)
    skus_idx, wanted = demand_by_sku(network, order)
    costs = order_costs(network, order.destination.lat, order.destination.lon, skus_idx, wanted)
    return Context(costs, wanted, QuoteSettings(), time.perf_counter() + 60)


def _brute(ctx: Context, parcels: int, forced_in: set[int], forced_out: set[int]) -> float:
    """Least cost of opening exactly ``parcels`` usable (node, service) slots, distinct
    nodes, with the forced nodes in and out, the demand split exactly (min-cost flow)."""
    usable = ctx.costs.usable
    nodes = [n for n in range(usable.shape[0]) if usable[n].any() and n not in forced_out]
    best = np.inf
    for chosen in itertools.combinations(nodes, parcels):
        if not forced_in <= set(chosen):
            continue
        for services in itertools.product(*(np.flatnonzero(usable[n]) for n in chosen)):
            split = capacitated_split(ctx, np.array(chosen), np.array(services))
            if split is not None:
                best = min(best, split[0])
    return best


def test_cover_bound_never_exceeds_the_brute_force_optimum() -> None:
    # Random prices (a bound holds at any prices), random nodes forced in and out, and
    # caps at, above and below the optimum: the bound never passes the optimum, and
    # where the cap is at or above it the bound is the least covering set's (>= plain).
    rng = np.random.default_rng(0)
    checked = stronger = 0
    for seed in range(100):
        ctx = _fragmented(seed)
        elig = ctx.costs.usable.copy()
        n_nodes = elig.shape[0]
        scale = float(np.abs(ctx.costs.unit).mean()) + 1.0
        for parcels in range(1, 4):
            forced_in: set[int] = set()
            forced_out: set[int] = set()
            if rng.random() < 0.5:
                picks = rng.permutation(n_nodes)
                forced_in = set(picks[: int(rng.integers(0, parcels))].tolist())
                forced_out = set(picks[parcels : parcels + int(rng.integers(0, 3))].tolist())
            optimum = _brute(ctx, parcels, forced_in, forced_out)
            prices = rng.normal(0.0, 3 * scale, ctx.demand.size)
            for upper in (INF, optimum, optimum - 1, optimum // 2):
                if not np.isfinite(upper) and upper is not INF:
                    continue
                value = cover_bound(
                    ctx,
                    elig,
                    parcels,
                    prices,
                    int(upper) if np.isfinite(upper) else INF,
                    np.array(sorted(forced_in), dtype=np.int64),
                    np.array(sorted(forced_out), dtype=np.int64),
                )
                assert value <= optimum + 1e-6, (seed, parcels, upper, value, optimum)
                checked += bool(np.isfinite(optimum))
            if np.isfinite(optimum) and not forced_in and not forced_out:
                ctx.prices = prices
                plain = lagrangian_bound(ctx, elig, parcels, parcels, INF, iterations=1).value
                ctx.prices = None
                stronger += cover_bound(ctx, elig, parcels, prices, INF) > plain + 1e-6
    assert checked >= 150, checked
    assert stronger >= 10, stronger


def _hand_made() -> Context:
    """Three SKUs, one unit each. A, B, C hold two SKUs each (an odd cycle), parcel 10 each;
    D holds all three, parcel 16; E holds none, parcel 1. Unit costs 0.

    With exactly two parcels: {D, E} costs 17, any two of A, B, C cost 20, so 17 is
    optimal. The LP (and the plain Lagrangian, its dual) opens A, B, C at a half and E
    at a half: each SKU is covered once, cost 15 + 0.5 = 15.5.
    """
    available = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=np.int64)
    n = available.shape[0]
    costs = SimpleNamespace(
        available=available,
        unit=np.zeros((n, 1, 3), dtype=np.int64),
        fixed=np.array([[10], [10], [10], [16], [1]], dtype=np.int64),
        capacity=np.full(n, 10, dtype=np.int64),
        arrival=np.ones((n, 1), dtype=np.int64),
        usable=np.ones((n, 1), dtype=np.bool_),
    )
    demand = np.ones(3, dtype=np.int64)
    return Context(costs, demand, QuoteSettings(), time.perf_counter() + 60)  # type: ignore[arg-type]


def test_cover_bound_is_strictly_stronger_than_the_plain_bound_on_an_odd_cycle() -> None:
    ctx = _hand_made()
    elig = ctx.costs.usable
    plain = lagrangian_bound(ctx, elig, 2, 2, INF, iterations=500).value
    assert plain <= 15.5 + 1e-6  # the LP's value bounds its dual from above
    assert plain > 14.0  # and the ascent gets near it
    # At zero prices the terms are the parcels: the least covering pair is {D, E}.
    assert cover_bound(ctx, elig, 2, np.zeros(3), INF) == 17.0
    # At the plain bound's own prices it is at least as strong as the plain bound.
    assert cover_bound(ctx, elig, 2, ctx.prices, INF) >= plain - 1e-6
    # Forced out D: only pairs of A, B, C remain (20); forced in A and out D, E: 20.
    assert cover_bound(ctx, elig, 2, np.zeros(3), INF, forced_out=np.array([3])) == 20.0
    assert cover_bound(ctx, elig, 2, np.zeros(3), INF, np.array([0]), np.array([3, 4])) == 20.0
    # A cap under the optimum: no covering pair fits, so every plan costs more than it.
    assert cover_bound(ctx, elig, 2, np.zeros(3), 16) == 17.0
    # One parcel: only D covers; three with D and E forced out: A, B, C.
    assert cover_bound(ctx, elig, 1, np.zeros(3), INF) == 16.0
    assert cover_bound(ctx, elig, 3, np.zeros(3), INF, forced_out=np.array([3, 4])) == 30.0


def test_least_covering_sets_cover_and_sum_their_terms() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        stock = (rng.random((30, 8)) < 0.35) * rng.integers(1, 3, (30, 8))
        need = rng.integers(0, 3, 8)
        terms = rng.normal(0, 5, 30)
        size = int(rng.integers(1, 6))
        sets, sums = least_covering_sets(stock, need, terms, size)
        for row, total in zip(sets, sums, strict=True):
            assert len(set(row.tolist())) == size
            assert (stock[row].sum(axis=0) >= need).all()
            assert np.isclose(terms[row].sum(), total)


def test_cover_prices_plans_are_priced_exactly_and_not_below_the_optimum() -> None:
    found_plans = 0
    for seed in range(60):
        ctx = _fragmented(seed)
        elig = ctx.costs.usable.copy()
        for parcels in (2, 3):
            optimum = _brute(ctx, parcels, set(), set())
            plain = lagrangian_bound(ctx, elig, parcels, parcels, INF, iterations=30)
            prices = ctx.prices
            if prices is None or plain.slot_terms is None:  # too few nodes: no plan
                assert not np.isfinite(optimum)
                continue
            result = cover_prices(ctx, elig, parcels, INF, prices)
            bound = enumeration_bound(plain, result)
            # The enumeration bound's slot terms are valid Lagrangian terms: any set's
            # priced demand plus its terms is at most its exact cost.
            assert bound.slot_terms is not None
            if result.plan is None:
                continue
            found_plans += 1
            plan = result.plan
            nodes, services = plan.slots
            split = capacitated_split(ctx, nodes, services)
            assert split is not None and split[0] <= plan.cost
            assert plan.parcels <= parcels
            assert plan.cost >= optimum - 1e-6 or plan.parcels < parcels
            assert (plan.units.sum(axis=0) == ctx.demand).all()
            assert bound.priced_demand + bound.slot_terms[nodes, services].sum() <= plan.cost + 1e-6
            if plan.parcels == parcels:
                assert cover_bound(ctx, elig, parcels, result.prices, INF) <= plan.cost + 1e-6
    assert found_plans >= 30, found_plans
