"""The solver against exhaustive enumeration on small random instances.

Every allocation of the cart is enumerated (units per node per SKU, within what
each node may promise by the tests' own reading of the rule, x a service per
used node) and priced by the independent evaluator; the quote's frontier must
equal the brute-force Pareto set over (cost, day, parcels), each label must sit
on the exact optimum of its criterion, and every option must cost and arrive
what the tests' own reference pricing (``reference.py``) says. Nodes hold
reserved units, so a rule that forgot them would be caught.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from sourcing import Quote, QuoteSettings, quote
from sourcing.costs import order_costs
from sourcing.errors import ShortageError
from sourcing.model import Evaluation, Label, Network, Order
from sourcing.orders import demand_by_sku
from sourcing.solver import branching, enumeration, large, subproblem
from sourcing.solver.context import INF, Context, ceil_bound

from reference import assert_priced_as_reference
from support import (
    all_allocations,
    fragmented_cart,
    free_units,
    random_order,
    route_per_parcel_count,
    spy,
    tiny_network,
)

Point = tuple[int, int, int]


def _point(e: Evaluation) -> Point:
    return (e.cost, e.delivery_days, e.num_parcels)


def _pareto(points: set[Point]) -> list[Point]:
    def dominated(p: Point) -> bool:
        return any(q != p and all(a <= b for a, b in zip(q, p, strict=True)) for q in points)

    return sorted(p for p in points if not dominated(p))


def _check_quote(
    network: Network, order: Order, q: Quote, brute: list[Evaluation], settings: QuoteSettings
) -> None:
    points = {_point(e) for e in brute}
    pareto = _pareto(points)
    got = sorted(_point(o.evaluation) for o in q.frontier)
    if settings.full_frontier:
        assert got == pareto
    else:
        # The menu solves only what its labels need: a subset of the frontier.
        assert set(got) <= set(pareto)

    for option in (*q.options, *q.frontier):
        # Priced a third way (Option.cost is the evaluator's own verdict, given by quote()).
        assert_priced_as_reference(network, order, option, allow_partial=settings.allow_partial)
        assert option.proof.status == "OPTIMAL"

    expected = {
        Label.CHEAPEST: min(points),
        Label.FASTEST: min(points, key=lambda p: (p[1], p[0], p[2])),
        Label.BALANCED: min(
            points, key=lambda p: (p[0] + settings.value_of_day * p[1], p[1], p[2])
        ),
    }
    singles = [p for p in points if p[2] == 1]
    if singles:
        expected[Label.SINGLE_PARCEL] = min(singles)
    for label, best in expected.items():
        option = q.option(label)
        assert option is not None, label
        got = _point(option.evaluation)
        if label is Label.SINGLE_PARCEL:
            assert got[:2] == best[:2] and got[2] == 1
        else:
            assert got == best, label
    if not singles:
        assert q.option(Label.SINGLE_PARCEL) is None
    # Deduplicated: every allocation appears once, with all the labels it wins.
    keys = [o.allocation for o in q.options]
    assert len(keys) == len(set(keys))
    assert sorted(label for o in q.options for label in o.labels) == sorted(expected)


def _instance(seed: int) -> tuple[Network, Order, QuoteSettings]:
    rng = np.random.default_rng(seed)
    network = tiny_network(
        rng,
        n_nodes=int(rng.integers(1, 5)),
        n_skus=int(rng.integers(1, 3)),
        n_services=int(rng.integers(1, 3)),
        max_stock=5,
    )
    order = random_order(rng, network)
    settings = QuoteSettings(
        value_of_day=int(rng.integers(0, 300_000)),
        max_parcels=[None, None, 1, 2][int(rng.integers(4))],
        latest_day=None if rng.random() < 0.7 else int(rng.integers(2, 7)),
    )
    return network, order, settings


@pytest.mark.parametrize("block", range(10))
def test_frontier_and_labels_match_brute_force(block: int) -> None:
    checked = shortages = 0
    for seed in range(block * 80, (block + 1) * 80):
        network, order, settings = _instance(seed)
        brute = [
            e
            for e in all_allocations(network, order)
            if (settings.max_parcels is None or e.num_parcels <= settings.max_parcels)
            and (settings.latest_day is None or e.delivery_days <= settings.latest_day)
        ]
        for full in (False, True):
            settings = replace(settings, full_frontier=full)
            try:
                q = quote(network, order, settings)
            except ShortageError:
                # Short stock is judged on stock alone, before the caps apply.
                assert not list(all_allocations(network, order))
                shortages += 1
                break
            if not brute:
                assert q.options == () and q.frontier == ()
                continue
            _check_quote(network, order, q, brute, settings)
            checked += 1
    # The generator must keep producing solvable carts, or this test proves little.
    assert checked >= 70, (checked, shortages)


@pytest.mark.parametrize("seed", range(60))
def test_partial_fulfilment_matches_brute_force_on_what_is_available(seed: int) -> None:
    rng = np.random.default_rng(10_000 + seed)
    network = tiny_network(rng, n_nodes=3, n_skus=2, max_stock=2, capacity_prob=0.0)
    order = random_order(rng, network, max_lines=3, max_qty=3)
    settings = QuoteSettings(
        value_of_day=int(rng.integers(0, 300_000)), allow_partial=True, full_frontier=True
    )
    total = free_units(network).sum(axis=0)
    wanted: dict[str, int] = {}
    for line in order.lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.qty
    coverable = {sku: min(q, int(total[network.sku_index[sku]])) for sku, q in wanted.items()}
    coverable = {sku: q for sku, q in coverable.items() if q > 0}

    q = quote(network, order, settings)

    missing = {sku: wanted[sku] - coverable.get(sku, 0) for sku in wanted}
    reported: dict[str, int] = {}
    for s in q.shortfall:
        reported[s.sku] = reported.get(s.sku, 0) + s.missing
    assert reported == {sku: m for sku, m in missing.items() if m > 0}
    if not coverable:
        assert q.options == ()
        return
    brute = list(all_allocations(network, order, demand=coverable))
    _check_quote(network, order, q, brute, settings)


def test_shortage_error_lists_each_short_sku() -> None:
    rng = np.random.default_rng(3)
    network = tiny_network(rng, n_nodes=2, n_skus=2, max_stock=2)
    order = random_order(rng, network)
    total = free_units(network).sum(axis=0)
    big = type(order)(order.destination, tuple(type(line)(line.sku, 50) for line in order.lines))
    with pytest.raises(ShortageError) as info:
        quote(network, big)
    short = {s.sku: (s.requested, s.available) for s in info.value.shortages}
    expected = {}
    for line in big.lines:
        k = network.sku_index[line.sku]
        expected[line.sku] = (expected.get(line.sku, (0, 0))[0] + 50, int(total[k]))
    assert short == expected
    for sku in expected:
        assert sku in str(info.value)


def test_capacity_bound_carts_take_the_resplit_path_and_match_brute_force() -> None:
    # When capacities bind, the cheapest-first split of a parcel set may be
    # infeasible: the set is re-split exactly (a min-cost flow), or CP-SAT decides.
    exact_paths = checked = 0
    for seed in range(150):
        rng = np.random.default_rng(50_000 + seed)
        network = tiny_network(rng, n_nodes=4, n_skus=2, max_stock=5, capacity_prob=0.8)
        order = random_order(rng, network, max_lines=3, max_qty=3)
        settings = QuoteSettings(value_of_day=int(rng.integers(0, 300_000)), full_frontier=True)
        brute = list(all_allocations(network, order))
        try:
            q = quote(network, order, settings)
        except ShortageError:
            assert not brute  # short stock or short capacity: no allocation exists
            continue
        assert brute
        _check_quote(network, order, q, brute, settings)
        exact_paths += q.stats.cpsat_calls + q.stats.resplits
        checked += 1
    assert checked >= 50
    assert exact_paths >= 10, exact_paths


def _fragmented_instance(seed: int) -> tuple[Network, Order, QuoteSettings]:
    """Six nodes, each holding about a third of five SKUs: carts of 3-4 SKUs must split."""
    rng = np.random.default_rng(70_000 + seed)
    network, order = fragmented_cart(rng, n_nodes=6, held_share=0.35)
    return network, order, QuoteSettings(value_of_day=int(rng.integers(0, 300_000)))


def _fragmented_contexts(seeds: int = 150) -> Iterator[tuple[int, list[Evaluation], Context]]:
    """Per :func:`_fragmented_instance` with any allocation: its seed, every allocation
    enumerated and evaluated, and a solver context on its costs (no deadline)."""
    for seed in range(seeds):
        network, order, settings = _fragmented_instance(seed)
        brute = list(all_allocations(network, order))
        if not brute:
            continue
        skus, wanted = demand_by_sku(network, order)
        costs = order_costs(network, order.destination.lat, order.destination.lon, skus, wanted)
        yield seed, brute, Context(costs, wanted, settings, float("inf"))


@pytest.mark.parametrize("covering_path", [False, True])
def test_fragmented_carts_match_brute_force(
    covering_path: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With ``covering_path``, every enumeration takes the route of large carts: a
    # Lagrangian bound first (its relaxation repaired into covers for a first plan),
    # parcel sets generated by set-cover branching (never the plain filter), growing
    # budgets and min-cost-flow re-splits.
    if covering_path:
        monkeypatch.setattr(enumeration, "_hopeful_sets", lambda *args: None)
        monkeypatch.setattr(subproblem, "CHEAP_CELLS", -1)
        # ... and every bound's relaxation repaired into covers (large orders only otherwise).
        monkeypatch.setattr(subproblem, "REPAIR_CELLS", 0)
    quotes = _check_fragmented_carts()
    split3 = sum(_parcels_of_cheapest(q) >= 3 for q in quotes)
    # Enough solvable carts, and enough whose optimum has three parcels or more.
    assert len(quotes) >= 90, len(quotes)
    assert split3 >= 50, split3


def _check_fragmented_carts(seeds: int = 200, **changes: Any) -> list[Quote]:
    """Quote the first ``seeds`` fragmented instances (each with and without the full
    frontier, settings ``changes`` applied), check every quote against brute force, and
    return the quotes checked."""
    checked: list[Quote] = []
    for seed in range(seeds):
        network, order, settings = _fragmented_instance(seed)
        brute = list(all_allocations(network, order))
        for full in (False, True):
            settings = replace(settings, full_frontier=full, **changes)
            try:
                q = quote(network, order, settings)
            except ShortageError:
                assert not brute
                break
            _check_quote(network, order, q, brute, settings)
            checked.append(q)
    return checked


def test_a_relaxation_of_too_few_parcels_bounds_every_plan_without_overflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With too few parcels to hold the cart, nothing stops the relaxation's prices from
    # climbing, and its bound passes any int64 (this instance, 2-3 parcels by day 5 under
    # the full frontier: 4.2e19). The floors' int64 arrays could not hold it rounded up
    # (OverflowError, a traceback out of quote()): it is cut above every limit instead.
    # Reached here by the per-count route; on a large cart with the full frontier, by any
    # parcel cap too small for it.
    assert INF < ceil_bound(4.2e19) <= np.iinfo(np.int64).max
    route_per_parcel_count(monkeypatch)
    network, order, settings = _fragmented_instance(181)
    brute = list(all_allocations(network, order))
    settings = replace(settings, full_frontier=True, time_limit_s=30.0)
    q = quote(network, order, settings)
    _check_quote(network, order, q, brute, settings)


def _parcels_of_cheapest(q: Quote) -> int:
    cheapest = q.option(Label.CHEAPEST)
    return cheapest.num_parcels if cheapest is not None else 0


@pytest.mark.parametrize("per_count", ["leaves", "branching", "cover", "cp-sat"])
def test_fragmented_carts_split_by_parcel_count_match_brute_force(
    per_count: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The route of 50-line carts on 500 nodes (sourcing.solver.large): no parcel set is
    # enumerated beyond one parcel before it, and every residue, however small, is split
    # by parcel count and bounded per count; each open count is closed by the Lagrangian
    # branch and bound, its small branches' parcel sets priced whole ("leaves", as
    # quoted), or branching down to single parcel sets and never calling CP-SAT
    # ("branching"), or the count first gets prices that see the cover, whose covering
    # sets are priced and at which its sets are enumerated, and what that leaves open is
    # branched on with the cover bound tried at each branch ("cover": strengthen.py), or
    # CP-SAT searches it ("cp-sat"). Labels must still be exact.
    route_per_parcel_count(monkeypatch)
    covered = 0
    searches = [0]
    on_day = [0]  # searches asked for plans with a parcel arriving on their day
    if per_count == "cover":
        monkeypatch.setattr(large, "COVER_PRICES", True)
        monkeypatch.setattr(large, "COVER_NODES", 0)
        monkeypatch.setattr(branching, "COVER_BRANCHES", True)
        bound_of = large.enumeration_bound

        def recorded(*args: Any) -> Any:
            nonlocal covered
            covered += 1
            return bound_of(*args)

        monkeypatch.setattr(large, "enumeration_bound", recorded)
    if per_count in ("branching", "cover"):
        monkeypatch.setattr(branching, "LEAF_CELLS", 0)

        def no_cpsat(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the branch and bound left a parcel count to CP-SAT")

        monkeypatch.setattr(large, "solve_cpsat", no_cpsat)
        searches = spy(monkeypatch, large, "search_counts")
        search = large.search_counts

        def on_day_counted(*args: Any) -> Any:
            # search_counts(ctx, counts, best, upper, out_of_time, arriving)
            on_day[0] += args[5] is not None
            return search(*args)

        monkeypatch.setattr(large, "search_counts", on_day_counted)
    if per_count == "cp-sat":

        def nothing_searched(ctx: Any, counts: Any, best: Any, *rest: Any) -> Any:
            return best, [branching.Searched(0, False) for _ in counts]

        monkeypatch.setattr(large, "search_counts", nothing_searched)
    calls = spy(monkeypatch, subproblem, "solve_large")
    quotes = _check_fragmented_carts(seeds=120, time_limit_s=30.0)
    split3 = sum(_parcels_of_cheapest(q) >= 3 for q in quotes)
    assert len(quotes) >= 50, len(quotes)
    assert split3 >= 25, split3
    assert calls[0] >= 50, calls
    if per_count == "branching":
        assert searches[0] >= 25, searches
        # Some of them (BALANCED's cutoffs, FASTEST's first day) only for plans with a
        # parcel arriving on their day: those labels are exact too.
        assert on_day[0] >= 15, on_day
    if per_count == "cover":
        assert covered >= 25, covered


@pytest.mark.parametrize(
    ("leaf_cells", "incumbents", "cover"),
    [
        (0, False, False),
        (0, True, False),
        (branching.LEAF_CELLS, False, False),
        (branching.LEAF_CELLS, True, False),
        (0, False, True),
    ],
)
def test_branch_and_bound_closes_each_parcel_count_exactly(
    leaf_cells: int, incumbents: bool, cover: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sourcing.solver.branching alone, one parcel count p at a time, without a plan to start
    # from, against every allocation enumerated and evaluated. A count's search may skip a plan
    # whose parcel set splits cheaper with one parcel left empty (a plan of fewer parcels,
    # searched at its own count, costs less), so what must hold is: the best of the
    # answers for counts up to p is the least cost of every plan of up to p parcels, and
    # each answer is a real plan of its count. Without the incumbents built at branches,
    # only the priced parcel sets give plans: each answer has exactly p parcels. With no
    # leaf cells it branches down to single parcel sets; with the default, small branches
    # are priced whole. With the cover bound, branches may also close by it (counted).
    monkeypatch.setattr(branching, "LEAF_CELLS", leaf_cells)
    monkeypatch.setattr(branching, "COVER_BRANCHES", cover)
    if not incumbents:
        monkeypatch.setattr(branching, "_incumbent", lambda *args: None)
    compared = found = closed_by_cover = 0
    for seed, brute, ctx in _fragmented_contexts():
        costs, wanted = ctx.costs, ctx.demand
        least: dict[int, int] = {}
        for e in brute:
            least[e.num_parcels] = min(least.get(e.num_parcels, INF), e.cost)
        best_brute = best_found = INF
        for parcels in range(1, len(costs.nodes) + 1):
            count = branching.Count(parcels, costs.usable, np.zeros(wanted.size))
            plan, (outcome,) = branching.search_counts(ctx, [count], None, INF, lambda: False)
            lower, complete = outcome.lower, outcome.complete
            assert complete, (seed, parcels)
            if plan is not None:
                assert plan.cost >= least[plan.parcels], (seed, parcels)
                assert plan.parcels == parcels if not incumbents else plan.parcels <= parcels
                assert lower == plan.cost
                best_found = min(best_found, plan.cost)
                found += 1
            best_brute = min(best_brute, least.get(parcels, INF))
            assert best_found == best_brute, (seed, parcels)
            compared += 1
        closed_by_cover += ctx.stats.get("coverclosed", 0)
    assert compared >= 150 and found >= 60, (compared, found)
    assert not cover or closed_by_cover >= 20, closed_by_cover


def test_counts_searched_together_find_the_least_plan_of_any_count() -> None:
    # sourcing.solver.branching.search_counts on every parcel count of a cart at once, in
    # one best-first order, without a plan to start from: its best plan is the least cost
    # of every plan, enumerated and evaluated, every count is complete, and each count's
    # lower bound is that cost.
    compared = split = 0
    for seed, brute, ctx in _fragmented_contexts():
        costs, wanted = ctx.costs, ctx.demand
        counts = [
            branching.Count(p, costs.usable, np.zeros(wanted.size))
            for p in range(1, len(costs.nodes) + 1)
        ]
        best, outcomes = branching.search_counts(ctx, counts, None, INF, lambda: False)
        least = min(e.cost for e in brute)
        assert best is not None and best.cost == least, seed
        assert all(o.complete and o.lower == least for o in outcomes), seed
        split += best.parcels >= 2
        compared += 1
    assert compared >= 30 and split >= 25, (compared, split)


def test_counts_searched_for_a_day_to_arrive_on_find_the_least_plan_arriving_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # sourcing.solver.branching.search_counts with ``arriving``, as the frontier calls it:
    # every plan arriving before that day costs more than the cost limit (BALANCED's
    # cutoff, or no plan at all before FASTEST's day), so only plans with a parcel
    # arriving on it are searched. Its best plan within the limit, on the slots arriving
    # by that day, is the least cost of the plans delivered on that very day (every
    # allocation enumerated and evaluated), or None if none is within the limit; every
    # count is complete.
    monkeypatch.setattr(branching, "LEAF_CELLS", 0)  # branch down to single parcel sets
    compared = restricted = 0
    for seed, brute, ctx in _fragmented_contexts(seeds=120):
        costs, wanted = ctx.costs, ctx.demand
        for day in sorted(set(costs.arrival[costs.usable].tolist())):
            earlier = [e.cost for e in brute if e.delivery_days < day]
            on_day = [e.cost for e in brute if e.delivery_days == day]
            upper = min(earlier) - 1 if earlier else INF
            elig = costs.usable & (costs.arrival <= day)
            counts = [
                branching.Count(p, elig, np.zeros(wanted.size))
                for p in range(1, len(costs.nodes) + 1)
            ]
            best, outcomes = branching.search_counts(
                ctx, counts, None, upper, lambda: False, arriving=day
            )
            least = min((c for c in on_day if c <= upper), default=None)
            assert (best.cost if best is not None else None) == least, (seed, day)
            assert best is None or best.day == day, (seed, day)
            assert all(o.complete for o in outcomes), (seed, day)
            compared += 1
            restricted += bool(earlier)
    assert compared >= 90 and restricted >= 40, (compared, restricted)


def test_covering_sets_are_every_covering_set_once() -> None:
    # Set-cover branching generates each covering parcel set exactly once (its
    # branches partition the sets), within the budget: checked against every
    # combination of slots on small fragmented carts, random terms and budgets.
    import itertools

    compared = nonempty = 0
    for seed in range(60):
        network, order, settings = _fragmented_instance(seed)
        skus, wanted = demand_by_sku(network, order)
        costs = order_costs(network, order.destination.lat, order.destination.lon, skus, wanted)
        ctx = Context(costs, wanted, settings, float("inf"))
        slot_n, _ = np.nonzero(costs.usable)
        rng = np.random.default_rng(seed)
        terms = np.round(rng.normal(0, 3, slot_n.size), 1)  # ties and negative terms too
        for size in range(1, min(slot_n.size, 4) + 1):
            budget = float(np.sort(terms)[:size].sum() + rng.uniform(0, 20))
            got = enumeration._covering_sets(ctx, slot_n, terms, size, budget, 10**6)
            assert got is not None
            expected = [
                combo
                for combo in itertools.combinations(range(slot_n.size), size)
                if len(set(slot_n[list(combo)].tolist())) == size
                and terms[list(combo)].sum() <= budget
                and (costs.available[slot_n[list(combo)]].sum(axis=0) >= wanted).all()
            ]
            assert [tuple(row) for row in got.tolist()] == expected, (seed, size)
            compared += 1
            nonempty += bool(expected)
    assert compared >= 150 and nonempty >= 20, (compared, nonempty)


def test_covering_sets_sum_stock_only_for_children_that_can_complete_the_cover() -> None:
    # Fragmented 20-line carts on 200 nodes: almost every last slot added by set-cover
    # branching leaves some SKU unheld. A child whose node's SKU bits miss one the partial
    # set is short of is ruled out by one AND before its stock is summed SKU by SKU: the
    # 3-parcel covering search at zero terms (every set within the budget) costs
    # 83,224-159,666 counted cells on these carts, where summing every child cost
    # 1,168,184-2,406,175 for the same sets.
    from sourcing.solver.context import DEADLINE_CELLS

    from networks import random_cart, regime_network

    network = regime_network("fragmented", 200, 100, 0)
    found = []
    for cart in range(4):
        order = random_cart(network, np.random.default_rng((0, cart)), 20)
        skus, wanted = demand_by_sku(network, order)
        costs = order_costs(network, order.destination.lat, order.destination.lon, skus, wanted)
        ctx = Context(costs, wanted, QuoteSettings(), float("inf"))
        slot_n = np.flatnonzero(costs.usable.any(axis=1))
        sets = enumeration._covering_sets(ctx, slot_n, np.zeros(slot_n.size), 3, 0.0, 10**8)
        assert sets is not None
        nodes = slot_n[sets]
        assert (costs.available[nodes].sum(axis=1) >= wanted).all()  # each one covers
        found.append(sets.shape[0])
        assert ctx.stats["cells"] <= DEADLINE_CELLS, (cart, ctx.stats["cells"])
    assert found == [0, 69, 119, 622]  # as many covering sets as summing every child found


def _counting_contexts(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every solver Context a quote makes, kept for its statistics."""
    from sourcing.solver import frontier

    made: list[Any] = []

    class Counted(Context):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(frontier, "Context", Counted)
    return made


def test_floors_from_looser_deadlines_keep_fragmented_carts_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a sub-problem proves about parcel counts (every plan of up to e parcels costs
    # at least its best, every plan of p or more at least its bound) holds for every
    # earlier deadline: a sub-problem there skips the counts whose floor is above its best
    # plan or cutoff. Against brute force, where that happens (a few carts here).
    made = _counting_contexts(monkeypatch)
    checked = len(_check_fragmented_carts())
    floored = sum(ctx.stats.get("floored", 0) for ctx in made)
    assert checked >= 90 and floored >= 3, (checked, floored)


def test_floors_give_the_same_options_and_proofs_as_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fragmented 10-line carts on 50 nodes, beyond brute force: quoted with the floors and
    # with none recorded (every sub-problem searches every count itself), the same menu
    # (labels, cost, day, parcels) comes out, every option proven both ways.

    from networks import random_cart, regime_network

    network = regime_network("fragmented", 50, 100, 0)
    settings = QuoteSettings(num_workers=1, time_limit_s=60.0)
    orders = [random_cart(network, np.random.default_rng((0, cart)), 10) for cart in range(30)]

    def menus() -> list[list[tuple[Any, ...]]]:
        result = []
        for order in orders:
            try:
                q = quote(network, order, settings)
            except ShortageError:
                continue
            result.append(
                [
                    (o.labels, o.cost, o.delivery_days, o.num_parcels, o.proof.status)
                    for o in q.options
                ]
            )
        return result

    made = _counting_contexts(monkeypatch)
    with_floors = menus()
    floored = sum(ctx.stats.get("floored", 0) for ctx in made)
    monkeypatch.setattr(Context, "floor_at", lambda self, day: None)
    assert menus() == with_floors
    assert all(status == "OPTIMAL" for menu in with_floors for *_, status in menu)
    assert len(with_floors) >= 25 and floored >= 20, (len(with_floors), floored)


@pytest.mark.parametrize("route", ["stage 3", "per count"])
def test_cutoff_sub_problems_run_no_heuristic_without_a_plan_within_the_cutoff(
    route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # BALANCED's cutoff sub-problems want only plans within their cutoff, and the
    # heuristics' plans (greedy, cover, local search, drop, the relaxations repaired into
    # covers) almost never are (0 of 153 warm starts, 4 of 211 drops on fragmented
    # 20-line carts): no heuristic runs there until a plan within the cutoff is known, so
    # a cutoff sub-problem that finds none (None) ran none. The repairs run here on every
    # bound (``REPAIR_CELLS`` 0: 50-line carts only otherwise), and with "per count" every
    # sub-problem not closed by a bound goes to ``solve_large``, whose counts repair their
    # relaxations too. The
    # labels stay exact (the brute-force tests above).

    from networks import random_cart, regime_network

    monkeypatch.setattr(subproblem, "REPAIR_CELLS", 0)
    if route == "per count":
        # No parcel set enumerated before stage 4: sub-problems reach solve_large.
        route_per_parcel_count(monkeypatch)
    spies = {
        name: spy(monkeypatch, subproblem, name)
        for name in (
            "greedy_plan",
            "cover_plan",
            "local_search",
            "drop_heuristic",
            "relaxation_plan",
        )
    }
    spies["relaxation_plan per count"] = spy(monkeypatch, large, "relaxation_plan")
    solve = subproblem._bound_and_solve
    cutoff_subs = nothing_within = 0

    def watched(
        ctx: Any, deadline: Any, max_parcels: int, cutoff: int = INF, arriving: Any = None
    ) -> Any:
        nonlocal cutoff_subs, nothing_within
        before = {name: calls[0] for name, calls in spies.items()}
        plan = solve(ctx, deadline, max_parcels, cutoff, arriving)
        if cutoff < INF:
            cutoff_subs += 1
            ran = {name: calls[0] - before[name] for name, calls in spies.items()}
            ran = {name: count for name, count in ran.items() if count}
            assert "greedy_plan" not in ran and "cover_plan" not in ran, ran
            if plan is None:
                nothing_within += 1
                assert not ran, ran
        return plan

    monkeypatch.setattr(subproblem, "_bound_and_solve", watched)
    network = regime_network("fragmented", 200, 100, 0)
    for cart in range(6):
        order = random_cart(network, np.random.default_rng((0, cart)), 20)
        q = quote(network, order, QuoteSettings(num_workers=1, time_limit_s=60.0))
        assert all(o.proof.status == "OPTIMAL" for o in q.options)
    assert cutoff_subs >= 5 and nothing_within >= 3, (cutoff_subs, nothing_within)
