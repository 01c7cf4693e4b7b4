"""COLLECT and backorder options cut short never claim a proof they lack.

The legs of :mod:`sourcing.fulfil` are solved sub-problem by sub-problem like
the delivery menu; a leg whose time runs out mid-way may have proven some
sub-problems and not others. An option labelled from such a leg is OPTIMAL
only if no sub-problem cut short could hide a better plan for its label (the
rule :func:`sourcing.solver.frontier._proofs` applies to the delivery menu).

Instances: the fragmented regime of ``benchmarks/networks.py`` (no node holds
a cart, optima of several parcels), with a transfer lane added for click &
collect and, for backorder, two of the cart's SKUs held at one node only and
the rest of their units due by receipts. Quotes are stopped after a growing
number of ``should_stop`` polls and compared with the same quote given a
minute.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sourcing import QuoteSettings, quote
from sourcing.model import TRANSFER_SERVICE, Label, Network, Option, Order, Quote, Receipt

from networks import random_cart, regime_network


def _with_transfer_lane(network: Network) -> Network:
    """The network plus a transfer lane: half the first service's prices, its transit days."""
    return replace(
        network,
        service_ids=(*network.service_ids, TRANSFER_SERVICE),
        base_price=np.vstack([network.base_price, network.base_price[:1] // 2]),
        per_kg=np.vstack([network.per_kg, network.per_kg[:1] // 2]),
        transit_days=np.vstack([network.transit_days, network.transit_days[:1]]),
        offered=np.vstack([network.offered, network.offered[:1]]),
    )


def _waiting_for_receipts(network: Network, order: Order) -> Network:
    """Two of the cart's SKUs left at one node each; up to three receipts bring more."""
    on_hand = network.on_hand.copy()
    receipts: list[Receipt] = []
    for sku in list(dict.fromkeys(line.sku for line in order.lines))[:2]:
        k = network.sku_index[sku]
        holders = np.flatnonzero(on_hand[:, k] > 0)
        on_hand[holders[1:], k] = 0
        for j, n in enumerate(holders[1:4].tolist()):
            receipts.append(Receipt(f"R-{sku}-{j}", network.node_ids[n], sku, 2 + j, 3))
    return replace(network, on_hand=on_hand, receipts=tuple(receipts))


def _value(label: Label, option: Option, vod: int) -> tuple[int, ...]:
    if label is Label.FASTEST:
        return (option.delivery_days, option.cost)
    if label in (Label.BALANCED, Label.COLLECT):
        return (option.cost + vod * option.delivery_days,)
    return (option.cost,)


def _winner(truth: Quote, label: Label, option: Option) -> Option:
    if label is Label.COLLECT:
        store = option.allocation.pickup
        return next(
            o for o in truth.options if Label.COLLECT in o.labels and o.allocation.pickup == store
        )
    best = truth.option(label)
    assert best is not None
    return best


@pytest.mark.parametrize("backorder", [False, True])
def test_collect_and_backorder_cut_short_never_claim_a_proof_they_lack(backorder: bool) -> None:
    network = _with_transfer_lane(regime_network("fragmented", 60, 100, seed=4))
    vod = QuoteSettings().value_of_day
    polls = np.unique(np.geomspace(20, 1500, 24).astype(int)).tolist()
    claims = 0
    for i in (0, 3, 5):
        order = random_cart(network, np.random.default_rng((4, i)), 12)
        net = _waiting_for_receipts(network, order) if backorder else network
        settings = QuoteSettings(num_workers=1, nearest_stores=2, allow_backorder=backorder)
        truth = quote(net, order, replace(settings, time_limit_s=60))
        assert all(o.proof.status == "OPTIMAL" for o in truth.options)
        for stop_after in polls:
            count = iter(range(stop_after))
            cut = quote(
                net, order, replace(settings, should_stop=lambda c=count: next(c, None) is None)
            )
            for option in cut.options:
                if option.proof.status != "OPTIMAL":
                    continue
                for label in option.labels:
                    best = _winner(truth, label, option)
                    assert _value(label, option, vod) == _value(label, best, vod), (
                        i,
                        stop_after,
                        label,
                        option.proof,
                    )
                    claims += 1
    assert claims > 0
