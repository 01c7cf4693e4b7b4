"""Property: the vectorised cost arrays and the scalar evaluator price allocations alike.

`sourcing.costs` (numpy, used by the solver) and `sourcing.evaluate` (scalar
math, used to check the solver) implement DESIGN section 7 independently; on
any allocation of any network they must agree to the millicent.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sourcing.costs import order_costs
from sourcing.evaluate import evaluate
from sourcing.model import Allocation, Location, Order, OrderLine, ParcelLine, ParcelPlan

from support import free_units, tiny_network


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    lat=st.floats(-89.0, 89.0),
    lon=st.floats(-179.0, 179.0),
    horizon=st.sampled_from([7.0, 30.0, 90.0]),
)
def test_cost_arrays_agree_with_the_evaluator(
    seed: int, lat: float, lon: float, horizon: float
) -> None:
    rng = np.random.default_rng(seed)
    network = tiny_network(rng, n_nodes=4, n_skus=3, max_stock=6, capacity_prob=0.0)
    network = network.replace(horizon_days=horizon)
    avail = free_units(network)
    # One line per SKU that some node holds; each line split over the nodes holding it.
    held = [k for k in range(len(network.sku_ids)) if avail[:, k].sum() > 0]
    if not held:
        return
    lines = tuple(OrderLine(network.sku_ids[k], int(avail[:, k].sum())) for k in held)
    order = Order(Location(lat, lon), lines)
    services = rng.integers(0, len(network.service_ids), len(network.node_ids))
    parcels = []
    for n, node_id in enumerate(network.node_ids):
        contents = tuple(
            ParcelLine(i, network.sku_ids[k], int(avail[n, k]))
            for i, k in enumerate(held)
            if avail[n, k] > 0
        )
        if contents:
            parcels.append(ParcelPlan(node_id, network.service_ids[services[n]], contents))
    evaluation = evaluate(network, order, Allocation(tuple(parcels)))

    skus = np.array(held, dtype=np.int64)
    costs = order_costs(network, lat, lon, skus, np.array([line.qty for line in lines]))
    expected_cost = 0
    expected_day = 0
    for c, n in enumerate(costs.nodes.tolist()):
        v = int(services[n])
        units = costs.available[c]
        expected_cost += int(costs.fixed[c, v] + costs.unit[c, v] @ units)
        expected_day = max(expected_day, int(costs.arrival[c, v]))
    assert evaluation.cost == expected_cost
    assert evaluation.delivery_days == expected_day
    # Every unit the order wants is shipped, from stock that exists.
    assert not [v for v in evaluation.violations if "not offered" not in v]
