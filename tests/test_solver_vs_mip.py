"""The solver against an independent textbook MIP (SCIP) on carts too big to enumerate.

The brute-force tests cover every allocation of tiny carts; these cover the
pruning, bounds and subset enumeration on realistic sizes, where a wrong
"proof" would show up as a cost the MIP beats.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pytest

from sourcing import QuoteSettings, quote
from sourcing.errors import ShortageError
from sourcing.model import Label, Network, Order
from sourcing.solver import large, subproblem

from mip_oracle import mip_optimum
from networks import generated_network, random_cart, regime_network
from support import route_per_parcel_count


@pytest.mark.parametrize(("lines", "nodes", "carts"), [(10, 50, 8), (20, 100, 5), (40, 200, 3)])
def test_labels_equal_the_mip_optimum(lines: int, nodes: int, carts: int) -> None:
    _check_against_mip(generated_network(nodes, max(100, 3 * lines), seed=lines), lines, carts)


@pytest.mark.parametrize(
    ("regime", "lines", "nodes", "carts"),
    [("fragmented", 8, 40, 4), ("capacity", 8, 40, 4), ("credits", 12, 60, 3)],
)
def test_split_carts_equal_the_mip_optimum(regime: str, lines: int, nodes: int, carts: int) -> None:
    # Fragmented stock (no node holds most of a cart), capacity-bound nodes, heavy
    # storage credits: optima of 3+ parcels, found by the covering enumeration,
    # the min-cost-flow re-splits and the capacity-aware bound.
    network = regime_network(regime, nodes, max(100, 3 * lines), seed=lines)
    parcels = _check_against_mip(network, lines, carts)
    if regime != "credits":
        assert max(parcels) >= 3, parcels  # the regime must make carts split


@pytest.mark.parametrize(
    ("regime", "lines", "nodes"), [("fragmented", 10, 60), ("capacity", 8, 40)]
)
def test_split_by_parcel_count_equals_the_mip_optimum(
    regime: str, lines: int, nodes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The route of 50-line carts on 500 nodes (sourcing.solver.large) on carts the MIP can
    # check: only single parcels enumerated before it, every residue split by parcel
    # count, bounded and searched per count.
    route_per_parcel_count(monkeypatch)
    network = regime_network(regime, nodes, max(100, 3 * lines), seed=lines + 1)
    assert max(_check_against_mip(network, lines, 3)) >= 3


@pytest.mark.parametrize(
    ("regime", "lines", "nodes", "carts"), [("fragmented", 10, 60, 3), ("fragmented", 20, 100, 1)]
)
def test_branch_and_bound_per_parcel_count_equals_the_mip_optimum(
    regime: str, lines: int, nodes: int, carts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same route with every open parcel count closed by the Lagrangian branch and
    # bound (sourcing.solver.branching): no parcel set enumerated per count, CP-SAT never
    # called, small branches priced whole. The 20-line cart on 100 nodes is the largest the
    # MIP checks in about half a minute (at 50 x 500 it is not optimal in 20 s).
    route_per_parcel_count(monkeypatch)
    monkeypatch.setattr(large, "best_subset", lambda *args, **kwargs: (None, 0))

    def no_cpsat(*args: object, **kwargs: object) -> None:
        raise AssertionError("the branch and bound left a parcel count to CP-SAT")

    monkeypatch.setattr(large, "solve_cpsat", no_cpsat)
    network = regime_network(regime, nodes, max(100, 3 * lines), seed=lines + 1)
    assert max(_check_against_mip(network, lines, carts)) >= 3


@pytest.mark.parametrize("route", ["enumeration", "per count"])
def test_repaired_relaxation_plans_keep_fragmented_optima(
    route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The relaxation's cheapest nodes repaired into covers at every bound of the
    # enumeration (orders of 10,000+ node x SKU cells only, in production: forced here on
    # carts the MIP checks) and, with "per count", every residue split by parcel count
    # with each count's relaxation repaired too: plans they start from must leave every
    # label at the MIP's optimum.
    monkeypatch.setattr(subproblem, "REPAIR_CELLS", 0)
    if route == "per count":
        route_per_parcel_count(monkeypatch)
    network = regime_network("fragmented", 60, 100, seed=13)
    assert max(_check_against_mip(network, 10, 3)) >= 3


# BALANCED's MIP takes 3-9 s on these carts (the others 0.1-4 s): checked on cart 18 only.
_ALL_CHECKED = (Label.CHEAPEST, Label.FASTEST, Label.BALANCED)
_CHEAPEST_FASTEST = (Label.CHEAPEST, Label.FASTEST)


@pytest.mark.parametrize(
    ("cart", "labels"),
    [(20, _CHEAPEST_FASTEST), (9, _CHEAPEST_FASTEST), (18, _ALL_CHECKED)],
    ids=["cart20", "cart9", "cart18"],
)
def test_fragmented_20x200_carts_equal_the_mip_optimum(
    cart: int, labels: tuple[Label, ...]
) -> None:
    # Benchmarks' fragmented 20x200x2 regime, seed 0 (quote_latency.py's cart ``cart``):
    # optima of 3-4 parcels reached only after several enumeration budget steps, which
    # the brute-force instances are too small to need. These carts caught a step that
    # priced its sets up to the step's bound budget instead of the cost cap (a set
    # bounded within the budget but costing above it was never priced again): "OPTIMAL"
    # CHEAPEST 1.8% (cart 20) and 0.8% (cart 9) above the MIP, FASTEST 5.0% (cart 18).
    network = regime_network("fragmented", 200, 100, seed=0)
    order = random_cart(network, np.random.default_rng((0, cart)), 20)
    assert _labels_equal_mip(network, order, labels) >= 3


def _check_against_mip(network: Network, lines: int, carts: int) -> list[int]:
    """Check ``carts`` quotes' labels against the MIP; the CHEAPEST options' parcel counts."""
    parcels: list[int] = []
    checked = 0
    for i in range(carts * 2):
        order = random_cart(network, np.random.default_rng((lines, i)), lines)
        try:
            parcels.append(_labels_equal_mip(network, order))
        except ShortageError:
            continue
        checked += 1
        if checked == carts:
            break
    assert checked == carts
    return parcels


def _labels_equal_mip(
    network: Network, order: Order, labels: Collection[Label] = _ALL_CHECKED
) -> int:
    """Assert the quote's ``labels`` equal the MIP's optima; CHEAPEST's parcel count."""
    vod = 150_000  # $1.50 a day
    q = quote(network, order, QuoteSettings(value_of_day=vod, time_limit_s=30.0))
    cheapest, fastest, balanced = (
        q.option(label) for label in (Label.CHEAPEST, Label.FASTEST, Label.BALANCED)
    )
    assert cheapest is not None and fastest is not None and balanced is not None
    assert all(o.proof.status == "OPTIMAL" for o in q.options)

    if Label.CHEAPEST in labels:
        mip_cost = mip_optimum(network, order)
        assert mip_cost is not None and cheapest.cost == mip_cost[0]

    if Label.FASTEST in labels:
        earliest = mip_optimum(network, order, minimise_day=True)
        assert earliest is not None and fastest.delivery_days == earliest[0]
        at_earliest = mip_optimum(network, order, deadline=earliest[0])
        assert at_earliest is not None and fastest.cost == at_earliest[0]

    if Label.BALANCED in labels:
        mip_balanced = mip_optimum(network, order, value_of_day=vod)
        assert mip_balanced is not None
        assert balanced.cost + vod * balanced.delivery_days == mip_balanced[0]
    return cheapest.num_parcels
