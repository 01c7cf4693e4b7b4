"""Which labels a sub-problem cut short leaves unproven (frontier._proofs), on hand-made plans.

A quote cut short by its time limit keeps its best plans with a gap; a label is
OPTIMAL only when no sub-problem cut short could hide a plan beating it.
"""

from __future__ import annotations

import time

import numpy as np

from sourcing.costs import order_costs
from sourcing.model import Label, QuoteSettings
from sourcing.orders import demand_by_sku
from sourcing.solver.context import FEASIBLE, OPTIMAL, Context, Plan
from sourcing.solver.frontier import _labels, _proofs

from networks import random_cart, regime_network


def _context() -> Context:
    network = regime_network("fragmented", 30, 100, seed=3)
    order = random_cart(network, np.random.default_rng(3), 4)
    skus, wanted = demand_by_sku(network, order)
    costs = order_costs(network, order.destination.lat, order.destination.lon, skus, wanted)
    return Context(costs, wanted, QuoteSettings(), time.perf_counter() + 10)


def _plan(ctx: Context, node: int, cost: int, day: int, status: str) -> Plan:
    service = np.full(len(ctx.costs.nodes), -1, dtype=np.int64)
    service[node] = 0
    units = np.zeros_like(ctx.costs.available)
    return Plan(service, units, cost, day, 1, status, 0.0 if status == OPTIMAL else 0.5)


def _statuses(ctx: Context, plans: list[Plan]) -> dict[Label, str]:
    labels = _labels(plans, ctx.settings)
    return {
        label: plan.status
        for plan in _proofs(ctx, plans, labels)
        for label in labels.get(plan.key(), ())
    }


def test_fastest_stands_when_its_own_deadline_is_proven_and_a_later_one_is_cut_short() -> None:
    ctx = _context()
    cap = len(ctx.costs.nodes)
    cheapest = _plan(ctx, 0, 5_000_000, 8, FEASIBLE)  # CHEAPEST's deadline (8) was cut short
    fastest = _plan(ctx, 1, 9_000_000, 2, OPTIMAL)  # the least cost by day 2, proven
    ctx.cache[(8, cap)] = cheapest
    ctx.cache[(2, cap)] = fastest
    ctx.unproven.append((8, cap, 4_000_000))
    # A plan the day-8 search missed arrives by day 2 only if P(2) holds it: it costs >= 9.00.
    assert _statuses(ctx, [cheapest, fastest])[Label.FASTEST] == OPTIMAL


def test_fastest_is_unproven_when_its_own_deadline_was_not_solved_with_every_count() -> None:
    ctx = _context()
    cap = len(ctx.costs.nodes)
    cheapest = _plan(ctx, 0, 5_000_000, 8, FEASIBLE)
    fastest = _plan(ctx, 1, 9_000_000, 2, OPTIMAL)  # proven for one parcel only: P(8, 1)
    ctx.cache[(8, cap)] = cheapest
    ctx.cache[(8, 1)] = fastest
    ctx.unproven.append((8, cap, 4_000_000))
    assert _statuses(ctx, [cheapest, fastest])[Label.FASTEST] == FEASIBLE


def test_fastest_is_unproven_when_an_earlier_deadline_was_cut_short() -> None:
    ctx = _context()
    cap = len(ctx.costs.nodes)
    fastest = _plan(ctx, 1, 9_000_000, 2, OPTIMAL)
    ctx.cache[(2, cap)] = fastest
    ctx.unproven.append((1, cap, 12_000_000))  # day 1 unsettled: an earlier plan may exist
    assert _statuses(ctx, [fastest])[Label.FASTEST] == FEASIBLE
