"""COLLECT and backorder options against exhaustive enumeration on small random instances.

Tiny random networks get a ``transfer`` lane (offered in a random subset of
zones) and a few inbound receipts. For a random cart, every allocation is
enumerated and priced by the independent evaluator:

* delivery with backorder: every split of the units short now (what stock
  cannot cover) over the receipts, times every split of the rest over stock,
  times a service per parcel;
* click & collect at a store: every split over stock (and receipts, when
  units wait), the store's own units picked there, every other parcel by the
  lane (the evaluator rejects what the lane does not offer).

The quote's frontier (with ``full_frontier``) must equal the brute-force
Pareto set over (cost, day, parcels), per way to fulfil; every label must sit
on its exact optimum; every option must cost and arrive what the tests' own
reference pricing (``reference.py``) says. The enumerator bounds stock by its
own reading of the availability rule (``support.free_units``), and nodes hold
reserved units; nothing else is known to it but the evaluator's verdict.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import pytest

from sourcing import Quote, QuoteSettings, quote
from sourcing.errors import ShortageError
from sourcing.evaluate import evaluate
from sourcing.model import (
    Allocation,
    Evaluation,
    Label,
    Network,
    NodeKind,
    Order,
    ParcelLine,
    ParcelPlan,
    Receipt,
)

from reference import assert_priced_as_reference
from support import free_units, random_order, tiny_network

Point = tuple[int, int, int]
#: A source of units: node, inbound day (None: stock on hand), free units per SKU, services.
Source = tuple[str, int | None, dict[str, int], tuple[str, ...]]


def _network(rng: np.random.Generator) -> Network:
    base = tiny_network(
        rng,
        n_nodes=int(rng.integers(2, 4)),
        n_skus=int(rng.integers(1, 3)),
        n_services=int(rng.integers(1, 3)),
        max_stock=2,
        capacity_prob=0.0,
    )
    z = len(base.zone_ids)
    receipts = tuple(
        Receipt(
            f"R{i}",
            base.node_ids[int(rng.integers(len(base.node_ids)))],
            base.sku_ids[int(rng.integers(len(base.sku_ids)))],
            int(rng.integers(1, 4)),
            int(rng.integers(0, 5)),
        )
        for i in range(int(rng.integers(0, 4)))
    )
    return base.replace(
        service_ids=(*base.service_ids, "transfer"),
        base_price=np.vstack([base.base_price, rng.integers(100, 600, (1, z)) * 1000]),
        per_kg=np.vstack([base.per_kg, rng.integers(0, 150, (1, z)) * 1000]),
        transit_days=np.vstack([base.transit_days, rng.integers(0, 3, (1, z))]),
        offered=np.vstack([base.offered, rng.random((1, z)) < 0.7]),
        receipts=receipts,
    )


def _compositions(total: int, caps: list[int]) -> Iterator[tuple[int, ...]]:
    if not caps:
        if total == 0:
            yield ()
        return
    for first in range(min(total, caps[0]) + 1):
        for rest in _compositions(total - first, caps[1:]):
            yield (first, *rest)


def _splits(
    order: Order, sources: Sequence[Source], demand: dict[str, int], remaining: list[int]
) -> Iterator[tuple[ParcelPlan, ...]]:
    """Every way to take exactly ``demand`` from ``sources``, one service per used source."""
    skus = sorted(s for s, q in demand.items() if q > 0)
    per_sku = [list(_compositions(demand[s], [src[2].get(s, 0) for src in sources])) for s in skus]
    for combo in itertools.product(*per_sku):
        used = [i for i in range(len(sources)) if any(c[i] for c in combo)]
        for services in itertools.product(*(sources[i][3] for i in used)):
            left = list(remaining)
            parcels = []
            for i, service in zip(used, services, strict=True):
                contents: list[ParcelLine] = []
                for k, sku in enumerate(skus):
                    qty = combo[k][i]
                    for j, line in enumerate(order.lines):
                        if qty == 0:
                            break
                        if line.sku == sku and left[j]:
                            take = min(qty, left[j])
                            contents.append(ParcelLine(j, sku, take))
                            left[j] -= take
                            qty -= take
                node, day = sources[i][0], sources[i][1]
                parcels.append(ParcelPlan(node, service, tuple(contents), day))
            yield tuple(parcels)


def _after(order: Order, demand: dict[str, int]) -> list[int]:
    """What is left of each line once ``demand`` (per SKU) fills the lines in order."""
    left = [line.qty for line in order.lines]
    todo = dict(demand)
    for j, line in enumerate(order.lines):
        take = min(left[j], todo.get(line.sku, 0))
        left[j] -= take
        todo[line.sku] = todo.get(line.sku, 0) - take
    return left


def _sources(
    network: Network, wanted: dict[str, int], services_of: dict[str, tuple[str, ...]]
) -> tuple[list[Source], list[Source]]:
    """(stock sources, receipt sources grouped by node and day) for the wanted SKUs."""
    avail = free_units(network)
    stock: list[Source] = []
    for n, node in enumerate(network.node_ids):
        units = {s: int(avail[n, network.sku_index[s]]) for s in wanted}
        if any(units.values()):
            stock.append((node, None, units, services_of[node]))
    groups: dict[tuple[str, int], dict[str, int]] = {}
    for r in network.receipts:
        if r.sku in wanted:
            group = groups.setdefault((r.node_id, r.expected_day), {})
            group[r.sku] = group.get(r.sku, 0) + r.qty
    inbound: list[Source] = [
        (node, day, units, services_of[node]) for (node, day), units in sorted(groups.items())
    ]
    return stock, inbound


def _brute(
    network: Network,
    order: Order,
    stock: list[Source],
    inbound: list[Source],
    stock_demand: dict[str, int],
    inbound_demand: dict[str, int],
    settings: QuoteSettings,
    pickup: str | None,
) -> list[Evaluation]:
    found = []
    first = list(_splits(order, stock, stock_demand, [line.qty for line in order.lines]))
    second = list(_splits(order, inbound, inbound_demand, _after(order, stock_demand)))
    for a, b in itertools.product(first, second):
        ev = evaluate(network, order, Allocation(a + b, pickup), allow_partial=True)
        if not ev.is_feasible:
            continue
        if settings.max_parcels is not None and ev.num_parcels > settings.max_parcels:
            continue
        if settings.latest_day is not None and ev.delivery_days > settings.latest_day:
            continue
        found.append(ev)
    return found


def _point(e: Evaluation) -> Point:
    return (e.cost, e.delivery_days, e.num_parcels)


def _pareto(points: set[Point]) -> list[Point]:
    return sorted(
        p
        for p in points
        if not any(q != p and all(a <= b for a, b in zip(q, p, strict=True)) for q in points)
    )


def _check_options(network: Network, order: Order, q: Quote) -> None:
    for option in (*q.options, *q.frontier):
        # Priced a third way (Option.cost is the evaluator's own verdict, given by quote()).
        assert_priced_as_reference(network, order, option, allow_partial=True)
        assert option.proof.status == "OPTIMAL"


def _case(seed: int) -> tuple[Network, Order, QuoteSettings, str | None]:
    rng = np.random.default_rng(seed)
    network = _network(rng)
    order = random_order(rng, network, max_lines=2, max_qty=3)
    stores = [
        n for n, k in zip(network.node_ids, network.node_kinds, strict=True) if k is NodeKind.STORE
    ]
    store = stores[int(rng.integers(len(stores)))] if stores else None
    settings = QuoteSettings(
        value_of_day=int(rng.integers(0, 300_000)),
        allow_partial=bool(rng.random() < 0.3),
        allow_backorder=True,
        max_parcels=[None, None, None, 2][int(rng.integers(4))],
        latest_day=None if rng.random() < 0.8 else int(rng.integers(3, 9)),
        pickup_stores=(store,) if store else (),
    )
    return network, order, settings, store


@pytest.mark.parametrize("block", range(6))
def test_collect_and_backorder_match_brute_force(block: int) -> None:
    checked = waited = collected = 0
    for seed in range(block * 40, (block + 1) * 40):
        network, order, settings, store = _case(seed)
        wanted: dict[str, int] = {}
        for line in order.lines:
            wanted[line.sku] = wanted.get(line.sku, 0) + line.qty
        stock_total = free_units(network).sum(axis=0)
        stock_demand = {
            s: min(q, int(stock_total[network.sku_index[s]])) for s, q in wanted.items()
        }
        due = {s: sum(r.qty for r in network.receipts if r.sku == s) for s in wanted}
        inbound_demand = {s: min(wanted[s] - stock_demand[s], due[s]) for s in wanted}
        covered = {s: stock_demand[s] + inbound_demand[s] for s in wanted}
        if covered != wanted and not settings.allow_partial:
            with pytest.raises(ShortageError):
                quote(network, order, settings)
            continue
        if not any(covered.values()):
            # Nothing can be covered at all (partial allowed): no option, only shortfall.
            q = quote(network, order, settings)
            assert q.options == () and sum(s.missing for s in q.shortfall) == sum(wanted.values())
            continue

        customer = tuple(s for s in network.service_ids if s != "transfer")
        deliver_stock, deliver_inbound = _sources(
            network, wanted, dict.fromkeys(network.node_ids, customer)
        )
        delivery = _brute(
            network,
            order,
            deliver_stock,
            deliver_inbound,
            stock_demand,
            inbound_demand,
            settings,
            None,
        )
        collect: list[Evaluation] = []
        if store is not None:
            ways = {n: ("pickup",) if n == store else ("transfer",) for n in network.node_ids}
            collect_stock, collect_inbound = _sources(network, wanted, ways)
            collect = _brute(
                network,
                order,
                collect_stock,
                collect_inbound,
                stock_demand,
                inbound_demand,
                settings,
                store,
            )

        for full in (True, False):
            q = quote(network, order, replace(settings, full_frontier=full))
            _check_options(network, order, q)
            got_delivery = sorted(_point(o.evaluation) for o in q.frontier if o.pickup is None)
            got_collect = sorted(_point(o.evaluation) for o in q.frontier if o.pickup is not None)
            want_delivery = _pareto({_point(e) for e in delivery})
            want_collect = _pareto({_point(e) for e in collect})
            if full or any(inbound_demand.values()):
                assert got_delivery == want_delivery, seed
                assert got_collect == want_collect, seed
            else:
                assert set(got_delivery) <= set(want_delivery), seed
                assert set(got_collect) <= set(want_collect), seed
            vod = settings.value_of_day
            points = [_point(e) for e in delivery]
            if points:
                expected = {
                    Label.CHEAPEST: min(points),
                    Label.FASTEST: min(points, key=lambda p: (p[1], p[0], p[2])),
                    Label.BALANCED: min(points, key=lambda p: (p[0] + vod * p[1], p[1], p[2])),
                }
                for label, best in expected.items():
                    option = q.option(label)
                    assert option is not None and option.pickup is None, (seed, label)
                    assert _point(option.evaluation) == best, (seed, label)
                singles = [p for p in points if p[2] == 1]
                single = q.option(Label.SINGLE_PARCEL)
                if singles:
                    assert single is not None
                    assert _point(single.evaluation)[:2] == min(singles)[:2]
                else:
                    assert single is None
            else:
                assert all(o.pickup is not None for o in q.options), seed
            collect_options = [o for o in q.options if Label.COLLECT in o.labels]
            if collect:
                (option,) = collect_options
                assert option.pickup == store
                best = min(
                    (_point(e) for e in collect), key=lambda p: (p[0] + vod * p[1], p[1], p[2])
                )
                assert _point(option.evaluation) == best, seed
                collected += 1
            else:
                assert collect_options == [], seed
            if any(inbound_demand.values()) and points:
                assert any(o.waiting for o in q.options)
                waited += 1
            checked += 1
    # The generator must keep producing the cases under test, or this proves little.
    assert checked >= 40 and waited >= 8 and collected >= 20, (checked, waited, collected)
