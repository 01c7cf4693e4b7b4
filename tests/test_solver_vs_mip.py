"""The solver against an independent textbook MIP (SCIP) on carts too big to enumerate.

The brute-force tests cover every allocation of tiny carts; these cover the
pruning, bounds and subset enumeration on realistic sizes, where a wrong
"proof" would show up as a cost the MIP beats.
"""

from __future__ import annotations

import numpy as np
import pytest

from sourcing import QuoteSettings, quote
from sourcing.errors import ShortageError
from sourcing.model import Label, Network
from sourcing.solver import large, subproblem

from mip_oracle import mip_optimum
from networks import generated_network, random_cart, regime_network


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
    monkeypatch.setattr(subproblem, "best_subset", lambda *args, **kwargs: (None, 0))
    monkeypatch.setattr(large, "LARGE_SLOTS", 0)
    network = regime_network(regime, nodes, max(100, 3 * lines), seed=lines + 1)
    assert max(_check_against_mip(network, lines, 3)) >= 3


def _check_against_mip(network: Network, lines: int, carts: int) -> list[int]:
    """Check ``carts`` quotes' labels against the MIP; the CHEAPEST options' parcel counts."""
    parcels: list[int] = []
    vod = 150_000  # $1.50 a day
    checked = 0
    for i in range(carts * 2):
        order = random_cart(network, np.random.default_rng((lines, i)), lines)
        try:
            q = quote(network, order, QuoteSettings(value_of_day=vod, time_limit_s=30.0))
        except ShortageError:
            continue
        cheapest, fastest, balanced = (
            q.option(label) for label in (Label.CHEAPEST, Label.FASTEST, Label.BALANCED)
        )
        assert cheapest is not None and fastest is not None and balanced is not None
        assert all(o.proof.status == "OPTIMAL" for o in q.options)

        mip_cost = mip_optimum(network, order)
        assert mip_cost is not None and cheapest.cost == mip_cost[0]

        earliest = mip_optimum(network, order, minimise_day=True)
        assert earliest is not None and fastest.delivery_days == earliest[0]
        at_earliest = mip_optimum(network, order, deadline=earliest[0])
        assert at_earliest is not None and fastest.cost == at_earliest[0]

        mip_balanced = mip_optimum(network, order, value_of_day=vod)
        assert mip_balanced is not None
        assert balanced.cost + vod * balanced.delivery_days == mip_balanced[0]
        parcels.append(cheapest.num_parcels)
        checked += 1
        if checked == carts:
            break
    assert checked == carts
    return parcels
