"""The order lifecycle over a real loopback channel, on the hand-checked network.

Costs and days are checked against the hand computation in
``service_support.hand_network``'s docstring; stock against GetAvailability
and the store's ledger.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from google.type import money_pb2

from oms.convert import day_after
from oms.v1 import checkout_pb2, common_pb2, fulfilment_pb2, inventory_pb2

from service_support import ADMIN, NYC, cents, hand_network, iso, running_server, sqlite_url


def availability(client, sku: str, node: str) -> inventory_pb2.Availability:  # type: ignore[no-untyped-def]
    reply = client.inventory.GetAvailability(
        inventory_pb2.GetAvailabilityRequest(skus=[sku], node_ids=[node]), metadata=ADMIN
    )
    (position,) = reply.positions
    return position


def test_quote_matches_the_hand_computed_menu(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        reply = client.quote({"A": 2, "B": 1})
        # 4 kg from DC-NJ, zone 1: $5.00 + 4 x $1.00 + $2.00 handling = $11.00, day 1 + 1.
        (option,) = reply.options
        assert option.cost == money_pb2.Money(currency_code="USD", units=11)
        assert option.delivery_days == 2
        assert [(p.node_id, p.zone, p.service) for p in option.parcels] == [
            ("DC-NJ", "1", "ground")
        ]
        assert set(option.labels) == {
            common_pb2.OPTION_LABEL_CHEAPEST,
            common_pb2.OPTION_LABEL_FASTEST,
            common_pb2.OPTION_LABEL_SINGLE_PARCEL,
            common_pb2.OPTION_LABEL_BALANCED,
        }
        assert option.status == common_pb2.PROOF_STATUS_OPTIMAL
        assert iso(option.delivery_date) == day_after(iso(reply.quote_date), option.delivery_days)
        # A quote holds no stock (StartCheckout does, briefly: tests/test_checkout_holds.py).
        assert availability(client, "A", "DC-NJ").held == 0
        assert availability(client, "A", "DC-NJ").available == 5


def test_split_when_the_near_node_is_short(tmp_path: Path) -> None:
    network = hand_network({("DC-NJ", "A"): 1})
    with running_server(sqlite_url(tmp_path), network) as client:
        reply = client.quote({"A": 2})
        by_label = {label: o for o in reply.options for label in o.labels}
        # Cheapest: both units from Philadelphia, $7.00 + 2 x $1.00 + $3.00 = $12.00, day 3;
        # Chicago x 2 costs $12.50; NJ (1 unit, $8.00) + Philadelphia (1 unit, $11.00) $19.00.
        cheapest = by_label[common_pb2.OPTION_LABEL_CHEAPEST]
        assert cents(cheapest.cost) == 1200
        assert [p.node_id for p in cheapest.parcels] == ["ST-PHL"]
        assert cheapest.delivery_days == 3
        # Fastest: day 2 needs NJ, which has one unit: no single plan arrives by day 2
        # (Philadelphia takes 3), so the fastest is day 3 at the same cost.
        assert by_label[common_pb2.OPTION_LABEL_FASTEST].delivery_days == 3


def test_full_lifecycle_moves_stock_through_the_ledger(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        quote = client.quote({"A": 2, "B": 1})
        placed = client.place(quote.quote_id, quote.options[0].option_id)
        order = placed.order
        assert order.state == common_pb2.ORDER_STATE_PLACED
        assert not placed.resourced
        assert order.promised_date == quote.options[0].delivery_date
        a = availability(client, "A", "DC-NJ")
        assert (a.on_hand, a.reserved, a.held, a.available) == (5, 2, 0, 3)

        f = client.fulfilment
        oid = order.order_id
        released = f.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=oid), metadata=ADMIN)
        assert released.order.state == common_pb2.ORDER_STATE_RELEASED
        shipped = f.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(order_id=oid), metadata=ADMIN
        )
        assert shipped.order.state == common_pb2.ORDER_STATE_SHIPPED
        a = availability(client, "A", "DC-NJ")
        assert (a.on_hand, a.reserved, a.available) == (3, 0, 3)
        assert availability(client, "B", "DC-NJ").on_hand == 4
        delivered = f.ConfirmDelivery(
            fulfilment_pb2.ConfirmDeliveryRequest(order_id=oid), metadata=ADMIN
        )
        assert delivered.order.state == common_pb2.ORDER_STATE_DELIVERED

        # Returning 1 x A (1 kg) from Manhattan: DC-NJ costs $5 + $1 + $2 = $8.00,
        # ST-PHL $7 + $1 + $3 = $11.00, DC-CHI $9 + $1 + $1.50 = $11.50: DC-NJ.
        returned = f.ReturnItems(
            fulfilment_pb2.ReturnItemsRequest(
                order_id=oid, lines=[common_pb2.CartLine(sku="A", quantity=1)], idempotency_key="r1"
            ),
            metadata=ADMIN,
        )
        assert returned.return_node_id == "DC-NJ"
        assert cents(returned.return_cost) == 800
        assert availability(client, "A", "DC-NJ").on_hand == 4
        # A retried return does not restock twice.
        again = f.ReturnItems(
            fulfilment_pb2.ReturnItemsRequest(
                order_id=oid, lines=[common_pb2.CartLine(sku="A", quantity=1)], idempotency_key="r1"
            ),
            metadata=ADMIN,
        )
        assert again.return_node_id == "DC-NJ"
        assert availability(client, "A", "DC-NJ").on_hand == 4

        history = client.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=oid)).order
        assert [e.type for e in history.events] == [
            "placed",
            "released",
            "shipped",
            "delivered",
            "returned",
        ]
        assert [(r.sku, r.quantity, r.node_id) for r in history.returns] == [("A", 1, "DC-NJ")]
        assert client.store.ledger_mismatches() == []


def test_cancel_releases_the_reservation(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        quote = client.quote({"B": 3})
        order = client.place(quote.quote_id, quote.options[0].option_id).order
        assert availability(client, "B", "DC-NJ").reserved == 3
        cancelled = client.checkout.CancelOrder(
            checkout_pb2.CancelOrderRequest(order_id=order.order_id, reason="shopper changed mind")
        ).order
        assert cancelled.state == common_pb2.ORDER_STATE_CANCELLED
        assert "shopper changed mind" in cancelled.events[-1].detail
        position = availability(client, "B", "DC-NJ")
        assert (position.on_hand, position.reserved, position.available) == (5, 0, 5)
        # Cancelling again is a no-op; releasing a cancelled order is refused.
        again = client.checkout.CancelOrder(
            checkout_pb2.CancelOrderRequest(order_id=order.order_id)
        )
        assert again.order.state == common_pb2.ORDER_STATE_CANCELLED
        with pytest.raises(grpc.RpcError) as err:
            client.fulfilment.ReleaseOrder(
                fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id), metadata=ADMIN
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "CANCELLED" in err.value.details()


def test_quote_expiry_frees_the_hold_and_refuses_the_order(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), quote_ttl_s=0.4) as client:
        quote = client.quote({"A": 4})
        client.checkout.StartCheckout(
            checkout_pb2.StartCheckoutRequest(
                quote_id=quote.quote_id, option_id=quote.options[0].option_id
            )
        )
        # The checkout hold ends with its quote, though hold_ttl_s (180 s) is longer.
        assert availability(client, "A", "DC-NJ").held == 4
        time.sleep(0.6)
        assert availability(client, "A", "DC-NJ").held == 0
        with pytest.raises(grpc.RpcError) as err:
            client.place(quote.quote_id, quote.options[0].option_id)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "expired" in err.value.details()
        assert availability(client, "A", "DC-NJ").reserved == 0


def test_place_order_retry_is_idempotent(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        quote = client.quote({"A": 1})
        option = quote.options[0].option_id
        first = client.place(quote.quote_id, option, key="checkout-42")
        # Concurrent retries with the same key all get the same order.
        results: list[str] = []

        def retry() -> None:
            results.append(client.place(quote.quote_id, option, key="checkout-42").order.order_id)

        threads = [threading.Thread(target=retry) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert set(results) == {first.order.order_id}
        assert availability(client, "A", "DC-NJ").reserved == 1
        orders = client.checkout.ListOrders(checkout_pb2.ListOrdersRequest(), metadata=ADMIN).orders
        assert [o.order_id for o in orders] == [first.order.order_id]


def test_place_fails_naming_the_position_when_nothing_else_keeps_the_promise(
    tmp_path: Path,
) -> None:
    # No holds, so another channel (here a cycle count) can take the quoted units.
    with running_server(sqlite_url(tmp_path), hold_stock=False) as client:
        # 1 x B to Manhattan: DC-NJ $5 + $2 + $2 = $9.00 on day 2; Chicago $12.50 on day 3.
        quote = client.quote({"B": 1})
        (option,) = quote.options
        assert (option.parcels[0].node_id, cents(option.cost)) == ("DC-NJ", 900)
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="DC-NJ", sku="B", on_hand=0, reason="count"),
            metadata=ADMIN,
        )
        with pytest.raises(grpc.RpcError) as err:
            client.place(quote.quote_id, option.option_id)
        # Only DC-NJ arrives by day 2, so there is nothing to re-source to.
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "DC-NJ/B" in err.value.details()
        assert availability(client, "B", "DC-CHI").reserved == 0


def test_place_resources_within_the_promise(tmp_path: Path) -> None:
    network = hand_network({("DC-NJ", "A"): 1})
    with running_server(sqlite_url(tmp_path), network, hold_stock=False) as client:
        # 2 x A to Manhattan: cheapest is Philadelphia, $7 + $2 + $3 = $12.00 on day 3.
        quote = client.quote({"A": 2})
        by_label = {label: o for o in quote.options for label in o.labels}
        chosen = by_label[common_pb2.OPTION_LABEL_CHEAPEST]
        assert [p.node_id for p in chosen.parcels] == ["ST-PHL"] and chosen.delivery_days == 3
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="ST-PHL", sku="A", on_hand=0, reason="count"),
            metadata=ADMIN,
        )
        placed = client.place(quote.quote_id, chosen.option_id)
        # By day 3: Chicago x 2 ($9 + $2 + $1.50 = $12.50) beats NJ + Chicago ($8 + $11.50).
        assert placed.resourced
        allocation = placed.order.allocation
        assert [p.node_id for p in allocation.parcels] == ["DC-CHI"]
        assert cents(allocation.cost) == 1250
        assert allocation.delivery_date == placed.order.promised_date == chosen.delivery_date
        assert [e.type for e in placed.order.events] == ["placed", "resourced"]
        assert "ST-PHL/A" in placed.order.events[1].detail
        assert availability(client, "A", "DC-CHI").reserved == 2


def test_list_orders_pages_through_every_order_once(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        placed = []
        for _ in range(5):
            quote = client.quote({"A": 1})
            placed.append(client.place(quote.quote_id, quote.options[0].option_id).order.order_id)
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            page = client.checkout.ListOrders(
                checkout_pb2.ListOrdersRequest(page_size=2, page_token=token), metadata=ADMIN
            )
            seen.extend(o.order_id for o in page.orders)
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert pages == 3
        assert seen == placed
        cancelled = client.checkout.ListOrders(
            checkout_pb2.ListOrdersRequest(state=common_pb2.ORDER_STATE_CANCELLED), metadata=ADMIN
        )
        assert list(cancelled.orders) == []


def test_low_stock_alerts_list_and_watch(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        inv = client.inventory
        inv.SetStock(
            inventory_pb2.SetStockRequest(
                node_id="ST-PHL", sku="A", on_hand=5, low_stock_threshold=3, reason="set threshold"
            ),
            metadata=ADMIN,
        )
        assert (
            list(
                inv.ListLowStockAlerts(
                    inventory_pb2.ListLowStockAlertsRequest(), metadata=ADMIN
                ).alerts
            )
            == []
        )
        stream = inv.WatchLowStockAlerts(
            inventory_pb2.WatchLowStockAlertsRequest(skus=["A"]), metadata=ADMIN, timeout=20
        )
        inv.AdjustStock(
            inventory_pb2.AdjustStockRequest(
                node_id="ST-PHL", sku="A", delta=-3, reason="sold in store"
            ),
            metadata=ADMIN,
        )
        raised = next(stream)
        assert (raised.alert.position.node_id, raised.alert.position.available, raised.cleared) == (
            "ST-PHL",
            2,
            False,
        )
        alerts = inv.ListLowStockAlerts(inventory_pb2.ListLowStockAlertsRequest(), metadata=ADMIN)
        assert [(a.position.node_id, a.position.sku) for a in alerts.alerts] == [("ST-PHL", "A")]
        inv.AdjustStock(
            inventory_pb2.AdjustStockRequest(
                node_id="ST-PHL", sku="A", delta=10, reason="delivery"
            ),
            metadata=ADMIN,
        )
        cleared = next(stream)
        assert cleared.cleared and cleared.alert.position.available == 12
        stream.cancel()


def test_a_tight_deadline_still_answers_with_options(tmp_path: Path) -> None:
    from sourcing.demo import demo_network

    with running_server(sqlite_url(tmp_path), demo_network()) as client:
        network = demo_network()
        totals = network.available.sum(axis=0)
        skus = [s for i, s in enumerate(network.sku_ids) if totals[i] > 20]
        request = checkout_pb2.QuoteDeliveryOptionsRequest(
            destination=NYC, lines=[common_pb2.CartLine(sku=s, quantity=2) for s in skus[:30]]
        )
        reply = client.checkout.QuoteDeliveryOptions(request, timeout=0.25)
        assert reply.options
        for option in reply.options:
            assert option.status in (
                common_pb2.PROOF_STATUS_OPTIMAL,
                common_pb2.PROOF_STATUS_FEASIBLE,
            )
            assert sum(line.quantity for p in option.parcels for line in p.lines) == 60
