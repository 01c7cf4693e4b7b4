"""The typed plans the store keeps: stored as the same JSON as ever, read back whole.

Quotes and orders keep their options and allocation as JSON (``options_json``,
``allocation_json``: the dashboard's generated columns read its keys), so a
:class:`~oms.store.Plan` must write exactly the document the service always
wrote, and read documents written before some keys existed.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from oms.convert import option_proto, plan_of
from oms.store import Plan, PlanLine, PlannedParcel, QuoteRequest, units_of
from oms.v1 import common_pb2
from sourcing import QuoteSettings, quote
from sourcing.demo import demo_network, demo_order

#: The keys (in order) of an option document, of its parcels and of their lines.
OPTION_KEYS = [
    "option_id",
    "labels",
    "cost",
    "shipping",
    "handling",
    "storage_credit",
    "opportunity",
    "delivery_days",
    "status",
    "gap",
    "method",
    "pickup",
    "parcels",
]
PARCEL_KEYS = [
    "node_id",
    "service",
    "zone",
    "distance_km",
    "weight_g",
    "shipping",
    "handling",
    "storage_credit",
    "cost",
    "arrival_days",
    "inbound_day",
    "lines",
]


def _plans() -> list[Plan]:
    """Every option of a few demo carts, with one collect option per cart (nearest store)."""
    network = demo_network()
    plans = []
    for seed in range(4):
        order = demo_order(network, np.random.default_rng(seed), 3)
        result = quote(network, order, QuoteSettings(full_frontier=True, nearest_stores=1))
        plans += [plan_of(o, f"opt-{i + 1}") for i, o in enumerate(result.options)]
    return plans


def test_a_plan_writes_the_option_document_and_reads_back_equal() -> None:
    plans = _plans()
    # Real trade-offs: split and single-parcel plans, delivery and collect.
    assert any(len(p.parcels) > 1 for p in plans) and any(p.pickup for p in plans)
    for plan in plans:
        doc = json.loads(json.dumps(plan.document()))
        assert list(doc) == OPTION_KEYS  # no start_date on a quote's option
        assert all(list(p) == PARCEL_KEYS for p in doc["parcels"])
        assert all(list(x) == ["line", "sku", "qty"] for p in doc["parcels"] for x in p["lines"])
        assert Plan.from_document(doc) == plan
        # The totals are the parcels' sums, as the engine priced them.
        assert plan.cost == sum(p.cost for p in plan.parcels)
        assert plan.delivery_days == max(p.arrival_days for p in plan.parcels)


def test_an_allocation_keeps_its_start_date_last_and_received_only_once_set() -> None:
    parcel = PlannedParcel(
        "DC-NJ", "ground", "1", 14.0, 2000, 700, 200, 0, 900, 3, 2, (PlanLine(0, "A", 2, 1),)
    )
    plan = Plan("opt-1", (), 900, 700, 200, 0, None, 3, "OPTIMAL", 0.0, "exact", None, (parcel,))
    allocation = Plan.from_document({**plan.document(), "start_date": "2026-03-01"})
    doc = allocation.document()
    assert list(doc)[-1] == "start_date" and allocation.start == "2026-03-01"
    assert doc["parcels"][0]["lines"] == [{"line": 0, "sku": "A", "qty": 2, "received": 1}]
    # A waiting parcel's units are reserved on its receipt, except those that arrived.
    assert units_of(allocation) == {("DC-NJ", "A"): 1}
    assert units_of([replace(parcel, inbound_day=None)]) == {("DC-NJ", "A"): 2}


def test_documents_from_before_forward_prices_pickups_and_backorders_still_read() -> None:
    old = {
        "option_id": "opt-1",
        "labels": ["CHEAPEST"],
        "cost": 900,
        "shipping": 700,
        "handling": 200,
        "storage_credit": 0,
        "delivery_days": 2,
        "status": "OPTIMAL",
        "gap": 0.0,
        "method": "exact",
        "parcels": [
            {
                "node_id": "DC-NJ",
                "service": "ground",
                "zone": "1",
                "distance_km": 14.0,
                "weight_g": 2000,
                "shipping": 700,
                "handling": 200,
                "storage_credit": 0,
                "cost": 900,
                "arrival_days": 2,
                "lines": [{"line": 0, "sku": "A", "qty": 2}],
            }
        ],
        "start_date": "2026-03-01",
    }
    plan = Plan.from_document(old)
    assert (plan.opportunity, plan.pickup, plan.parcels[0].inbound_day) == (None, None, None)
    assert not plan.waits and units_of(plan) == {("DC-NJ", "A"): 2}
    reply = option_proto(plan, plan.start, "USD")
    assert reply.method == common_pb2.FULFILMENT_METHOD_DELIVERY
    assert not reply.breakdown.HasField("opportunity_cost") and not reply.waiting
    assert reply.delivery_date.day == 3
    request = QuoteRequest.from_document(
        {"destination": {"lat": 40.7, "lon": -74.0}, "lines": [{"sku": "A", "qty": 2}]}
    )
    assert (request.value_of_day, request.allow_backorder) == (None, False)
    assert QuoteRequest.from_document(request.document()) == request
