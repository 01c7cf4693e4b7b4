"""The overview counts orders, not shipments: split orders delivered in two steps, by every
path the FulfilmentService offers, each count once in "orders by state", "promises kept"
and every other figure whose label says orders. The figures are checked against an
independent computation from the store's rows (:func:`dashboard_support.expected_since`:
an order is delivered when its last shipment arrived, read from the shipments table), for
today (read from the rows) and for 7 days (read from the rollups).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from dashboard_support import VIEWER, Expected, config, expected_since
from oms import schema as t
from oms.dashboard.app import create_app
from oms.v1 import checkout_pb2, common_pb2, fulfilment_pb2

from service_support import ADMIN, Client, hand_network, running_server

#: A only at DC-NJ, B only at DC-CHI (its 2 A are its safety stock): {A: 1, B: 1} always
#: ships in two parcels.
SPLIT_NETWORK = {("DC-NJ", "A"): 50, ("DC-NJ", "B"): 0, ("ST-PHL", "A"): 0, ("DC-CHI", "A"): 2}


@pytest.fixture
def grpc(database_url: str) -> Iterator[Client]:
    with running_server(database_url, hand_network(SPLIT_NETWORK)) as client:
        yield client


def split_order(client: Client) -> tuple[str, dict[str, str]]:
    """A released {A: 1, B: 1} order and its shipments by node."""
    quote = client.quote({"A": 1, "B": 1})
    order_id = client.place(quote.quote_id, quote.options[0].option_id).order.order_id
    client.fulfilment.ReleaseOrder(
        fulfilment_pb2.ReleaseOrderRequest(order_id=order_id), metadata=ADMIN, timeout=10
    )
    order = client.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order_id)).order
    shipments = {s.node_id: s.shipment_id for s in order.shipments}
    assert sorted(shipments) == ["DC-CHI", "DC-NJ"], shipments
    return order_id, shipments


def ship(client: Client, shipment_id: str) -> None:
    client.fulfilment.ConfirmShipment(
        fulfilment_pb2.ConfirmShipmentRequest(
            shipment_id=shipment_id, carrier="UPS", tracking_number=f"1Z{shipment_id[-8:]}"
        ),
        metadata=ADMIN,
        timeout=10,
    )


def deliver(client: Client, *, order_id: str = "", shipment_id: str = "") -> str:
    reply = client.fulfilment.ConfirmDelivery(
        fulfilment_pb2.ConfirmDeliveryRequest(order_id=order_id, shipment_id=shipment_id),
        metadata=ADMIN,
        timeout=10,
    )
    return str(common_pb2.OrderState.Name(reply.order.state)).removeprefix("ORDER_STATE_")


def check(web: TestClient, period: str, expected: Expected) -> None:
    got = web.get("/api/overview", params={"period": period}).json()
    assert got["orders"] == expected.orders
    assert {s: n for s, n in got["by_state"].items() if n} == expected.by_state
    assert got["delivered"] == expected.delivered
    assert got["kept"] == expected.kept
    assert got["quotes"] == expected.quotes
    assert got["cost_per_order"] == pytest.approx(expected.cost, abs=0.005)
    assert got["shipping"] == pytest.approx(expected.shipping, abs=0.005)
    assert got["handling"] == pytest.approx(expected.handling, abs=0.005)
    assert got["parcels_per_order"] == pytest.approx(expected.parcels, abs=0.0005)
    assert got["split_rate"] == pytest.approx(expected.split_rate, abs=0.00005)
    assert got["labels"] == expected.labels
    assert got["conversion"] == pytest.approx(expected.orders / expected.quotes, abs=0.00005)
    # The charts add up to the same orders (each order once, in its creation bucket).
    assert sum(got["charts"]["promises"]["datasets"][0]["data"]) == expected.delivered
    assert sum(got["charts"]["promises"]["datasets"][1]["data"]) == expected.kept
    by_state_chart = {d["label"]: sum(d["data"]) for d in got["charts"]["orders"]["datasets"]}
    assert {s: n for s, n in by_state_chart.items() if n} == expected.by_state


def test_split_orders_delivered_in_two_steps_count_once(grpc: Client) -> None:
    # Delivered shipment by shipment.
    by_shipment, s1 = split_order(grpc)
    for node in ("DC-NJ", "DC-CHI"):
        ship(grpc, s1[node])
        deliver(grpc, shipment_id=s1[node])
    # Delivered by the order-level shortcut, twice: after the first parcel left, and again
    # after the second (the first call delivered only what had shipped).
    by_order, s2 = split_order(grpc)
    ship(grpc, s2["DC-NJ"])
    assert deliver(grpc, order_id=by_order) == "PARTIALLY_DELIVERED"
    ship(grpc, s2["DC-CHI"])
    assert deliver(grpc, order_id=by_order) == "DELIVERED"
    # Mixed: the order-level shortcut first, then the last shipment by its id.
    mixed, s3 = split_order(grpc)
    ship(grpc, s3["DC-CHI"])
    assert deliver(grpc, order_id=mixed) == "PARTIALLY_DELIVERED"
    ship(grpc, s3["DC-NJ"])
    assert deliver(grpc, shipment_id=s3["DC-NJ"]) == "DELIVERED"
    # Both parcels at once, and one delivered of two.
    at_once, _ = split_order(grpc)
    grpc.fulfilment.ConfirmShipment(
        fulfilment_pb2.ConfirmShipmentRequest(order_id=at_once), metadata=ADMIN, timeout=10
    )
    assert deliver(grpc, order_id=at_once) == "DELIVERED"
    half, s5 = split_order(grpc)
    ship(grpc, s5["DC-NJ"])
    assert deliver(grpc, shipment_id=s5["DC-NJ"]) == "PARTIALLY_DELIVERED"
    # One placed, one cancelled, and a quote never ordered.
    quote = grpc.quote({"A": 1, "B": 1})
    grpc.place(quote.quote_id, quote.options[0].option_id)
    cancelled, _ = split_order(grpc)
    grpc.checkout.CancelOrder(
        checkout_pb2.CancelOrderRequest(order_id=cancelled, reason="changed my mind"), timeout=10
    )
    grpc.quote({"A": 1})

    now = time.time()
    midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today = expected_since(grpc.store, midnight.timestamp())
    week = expected_since(grpc.store, (midnight - timedelta(days=6)).timestamp())
    # By hand: four orders delivered (each once), one partly; every order two parcels.
    assert today.delivered == 4 and today.kept == 4
    assert today.by_state == {
        "DELIVERED": 4,
        "PARTIALLY_DELIVERED": 1,
        "PLACED": 1,
        "CANCELLED": 1,
    }
    assert today.parcels == 2.0 and today.split_rate == 1.0
    with TestClient(create_app(config(grpc.store.url), grpc.store), follow_redirects=False) as web:
        assert web.get("/login", params={"token": VIEWER}).status_code == 303
        check(web, "today", today)
        check(web, "7d", week)
        assert half not in (by_shipment, by_order)
    with grpc.store.read() as conn:
        delivered_events = conn.execute(
            sa.select(t.order_events.c.order_id, sa.func.count())
            .where(t.order_events.c.type == "delivered")
            .group_by(t.order_events.c.order_id)
        ).all()
    # The order's "delivered" event says the order (not a parcel of it) arrived: once each.
    assert sorted(delivered_events) == sorted(
        (o, 1) for o in (by_shipment, by_order, mixed, at_once)
    )
