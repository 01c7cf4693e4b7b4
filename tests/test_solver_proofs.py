"""Which labels a sub-problem cut short leaves unproven (frontier._proofs), on hand-made plans.

A quote cut short by its time limit keeps its best plans with a gap; a label is
OPTIMAL only when no sub-problem cut short could hide a plan beating it. And once one
is cut short, no later deadline searches only the plans arriving on its own day (that
search is exact only when every earlier deadline was proven).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from sourcing import quote
from sourcing.costs import order_costs
from sourcing.errors import ShortageError
from sourcing.model import Label, QuoteSettings
from sourcing.orders import demand_by_sku
from sourcing.solver import frontier
from sourcing.solver.context import FEASIBLE, INF, OPTIMAL, Context, Plan
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


def _recorded_calls(
    monkeypatch: pytest.MonkeyPatch, cut_short_first: bool
) -> list[tuple[int, int, bool, bool]]:
    """Every sub-problem the frontier solves on a few fragmented carts: (day, cutoff,
    on_day, whether a sub-problem before it was cut short). With ``cut_short_first``, the
    first sub-problem of each quote (CHEAPEST's) is recorded as cut short."""
    calls: list[tuple[int, int, bool, bool]] = []
    real = frontier.min_cost

    def recorded(
        ctx: Context, day: int, cap: int, cutoff: int = INF, on_day: bool = False
    ) -> Plan | None:
        calls.append((day, cutoff, on_day, bool(ctx.unproven)))
        plan = real(ctx, day, cap, cutoff, on_day)
        if cut_short_first and not ctx.unproven:
            ctx.unproven.append((day, cap, 0))
        return plan

    monkeypatch.setattr(frontier, "min_cost", recorded)
    network = regime_network("fragmented", 60, 100, seed=5)
    for cart in range(12):
        order = random_cart(network, np.random.default_rng([5, cart]), 8)
        try:
            quote(network, order, QuoteSettings(num_workers=1))
        except ShortageError:
            continue
    return calls


@pytest.mark.parametrize("cut_short_first", [False, True])
def test_a_day_is_searched_for_plans_arriving_on_it_only_when_the_days_before_are_proven(
    cut_short_first: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Searching only plans with a parcel arriving on the day is exact only if every plan
    # arriving before it is proven dearer than the cutoff (or, before FASTEST's day, not to
    # exist): the frontier asks it of BALANCED's cutoff days and of the days up to
    # FASTEST's, and of none once any sub-problem was cut short.
    calls = _recorded_calls(monkeypatch, cut_short_first)
    asked = [c for c in calls if c[2]]
    assert not any(cut_short for *_, cut_short in asked)
    if cut_short_first:
        assert not asked and len(calls) >= 20, len(calls)
    else:
        assert sum(cutoff < INF for _, cutoff, *_ in asked) >= 5, asked
        assert sum(cutoff == INF for _, cutoff, *_ in asked) >= 5, asked
