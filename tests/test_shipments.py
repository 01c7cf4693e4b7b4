"""Split shipments end to end (issue 16), over a real gRPC loopback channel, on each store
(SQLite file; the real PostgreSQL, skipped with a reason when unreachable).

The hand network is cut so that a cart of 12 x A needs all three nodes: DC-NJ
and ST-PHL hold 5 each, DC-CHI 4 with a safety stock of 2 (2 promisable). Every
option of the menu is therefore three parcels: 5 from DC-NJ, 5 from ST-PHL and
2 from DC-CHI, promised on day 3 (ST-PHL: 1 + 2 days; DC-CHI: 0 + 3).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from oms import schema as t
from oms.v1 import checkout_pb2, common_pb2, fulfilment_pb2, inventory_pb2

from service_support import ADMIN, Client, hand_network, running_server

S = common_pb2
TOKENS = {"DC-NJ": "tok-nj", "ST-PHL": "tok-phl", "DC-CHI": "tok-chi"}


def as_node(node: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[node]}"),)


@contextmanager
def split_server(url: str, tmp_path: Path, **overrides: object) -> Iterator[Client]:
    tokens = tmp_path / "node.tokens"
    tokens.write_text("".join(f"{n} {tok}\n" for n, tok in TOKENS.items()))
    tokens.chmod(0o600)
    network = hand_network(on_hand={("DC-CHI", "A"): 4})
    with running_server(url, network, node_tokens_file=str(tokens), **overrides) as client:
        yield client


def on_hand(client: Client, node: str, sku: str = "A") -> int:
    reply = client.inventory.GetAvailability(
        inventory_pb2.GetAvailabilityRequest(skus=[sku], node_ids=[node]), metadata=ADMIN
    )
    return int(reply.positions[0].on_hand)


def place_split(client: Client) -> common_pb2.Order:
    quote = client.quote({"A": 12})
    option = quote.options[0]
    assert sorted((p.node_id, sum(x.quantity for x in p.lines)) for p in option.parcels) == [
        ("DC-CHI", 2),
        ("DC-NJ", 5),
        ("ST-PHL", 5),
    ]
    return client.place(quote.quote_id, option.option_id).order


def shipment_at(order: common_pb2.Order, node: str, *states: int) -> common_pb2.Shipment:
    found = [s for s in order.shipments if s.node_id == node and (not states or s.state in states)]
    assert len(found) == 1, found
    return found[0]


def get(client: Client, order_id: str) -> common_pb2.Order:
    return client.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order_id)).order


def listed(client: Client, node: str, **fields: object) -> list[common_pb2.Shipment]:
    reply = client.fulfilment.ListShipments(
        fulfilment_pb2.ListShipmentsRequest(**fields),  # type: ignore[arg-type]
        metadata=as_node(node),
    )
    return list(reply.shipments)


def test_three_parcel_order_lives_shipment_by_shipment(database_url: str, tmp_path: Path) -> None:
    with split_server(database_url, tmp_path) as client:
        f = client.fulfilment
        order = place_split(client)
        assert order.state == S.ORDER_STATE_PLACED
        assert [s.state for s in order.shipments] == [S.SHIPMENT_STATE_PENDING] * 3
        # Not sent yet: no node has work.
        assert all(
            listed(client, n) == []
            or all(s.state == S.SHIPMENT_STATE_PENDING for s in listed(client, n))
            for n in TOKENS
        )
        f.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id), metadata=ADMIN)

        # Each node sees exactly its own shipment.
        for node in TOKENS:
            mine = listed(client, node, state=S.SHIPMENT_STATE_REQUESTED)
            assert [(s.node_id, s.order_id) for s in mine] == [(node, order.order_id)]
        nj = shipment_at(get(client, order.order_id), "DC-NJ")
        phl = shipment_at(get(client, order.order_id), "ST-PHL")

        # DC-NJ accepts and ships its 5 with a tracking number: only its on hand drops.
        before = {n: on_hand(client, n) for n in TOKENS}
        f.AcceptShipment(
            fulfilment_pb2.AcceptShipmentRequest(shipment_id=nj.shipment_id),
            metadata=as_node("DC-NJ"),
        )
        shipped = f.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(
                shipment_id=nj.shipment_id, carrier="UPS", tracking_number="1Z999"
            ),
            metadata=as_node("DC-NJ"),
        )
        assert shipped.order.state == S.ORDER_STATE_PARTIALLY_SHIPPED
        seen = shipment_at(get(client, order.order_id), "DC-NJ")
        assert (seen.state, seen.carrier, seen.tracking_number) == (
            S.SHIPMENT_STATE_SHIPPED,
            "UPS",
            "1Z999",
        )
        assert seen.HasField("ship_time")
        after = {n: on_hand(client, n) for n in TOKENS}
        assert after == {**before, "DC-NJ": before["DC-NJ"] - 5}
        with client.store.read() as conn:
            ledger = conn.execute(
                sa.select(t.stock_ledger.c.node_id, t.stock_ledger.c.delta).where(
                    t.stock_ledger.c.shipment_id == nj.shipment_id
                )
            ).all()
        assert [tuple(r) for r in ledger] == [("DC-NJ", -5)]

        # ST-PHL refuses: its 5 units are re-sourced (DC-CHI gets stock first) within day 3.
        client.inventory.AdjustStock(
            inventory_pb2.AdjustStockRequest(node_id="DC-CHI", sku="A", delta=10, reason="count"),
            metadata=ADMIN,
        )
        rejected = f.RejectShipment(
            fulfilment_pb2.RejectShipmentRequest(shipment_id=phl.shipment_id, reason="flooded"),
            metadata=as_node("ST-PHL"),
        )
        assert rejected.promise_kept
        assert rejected.shipment.state == S.SHIPMENT_STATE_REJECTED
        now = rejected.order
        new = [s for s in now.shipments if s.replaces_shipment_id == phl.shipment_id]
        assert [(s.node_id, s.state, [x.quantity for x in s.lines]) for s in new] == [
            ("DC-CHI", S.SHIPMENT_STATE_REQUESTED, [5])
        ]
        assert new[0].planned_arrival_date == now.promised_date
        kinds = [e.type for e in now.events]
        assert kinds[-3:] == ["rejected", "resourced", "released"]
        assert phl.shipment_id in now.events[-3].detail and "flooded" in now.events[-3].detail
        assert "kept" in now.events[-2].detail and "DC-CHI" in now.events[-1].detail
        # The new shipment is DC-CHI's work now; ST-PHL has none left open.
        assert {
            s.shipment_id for s in listed(client, "DC-CHI", state=S.SHIPMENT_STATE_REQUESTED)
        } == {s.shipment_id for s in now.shipments if s.node_id == "DC-CHI"}

        # Ship and deliver the rest: DELIVERED.
        for s in now.shipments:
            if s.state == S.SHIPMENT_STATE_REQUESTED:
                f.ConfirmShipment(
                    fulfilment_pb2.ConfirmShipmentRequest(
                        shipment_id=s.shipment_id,
                        carrier="FedEx",
                        tracking_number=f"T-{s.shipment_id}",
                    ),
                    metadata=as_node(s.node_id),
                )
        assert get(client, order.order_id).state == S.ORDER_STATE_SHIPPED
        for s in get(client, order.order_id).shipments:
            if s.state == S.SHIPMENT_STATE_SHIPPED:
                reply = f.ConfirmDelivery(
                    fulfilment_pb2.ConfirmDeliveryRequest(shipment_id=s.shipment_id),
                    metadata=as_node(s.node_id),
                )
        final = reply.order
        assert final.state == S.ORDER_STATE_DELIVERED
        # The order-level history says when the last shipment left and arrived.
        assert [e.type for e in final.events][-2:] == ["shipped", "delivered"]
        assert on_hand(client, "ST-PHL") == before["ST-PHL"]  # never shipped from there
        assert on_hand(client, "DC-CHI") == before["DC-CHI"] + 10 - 7


def test_node_token_cannot_touch_another_nodes_shipments(database_url: str, tmp_path: Path) -> None:
    with split_server(database_url, tmp_path) as client:
        f = client.fulfilment
        order = place_split(client)
        f.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id), metadata=ADMIN)
        phl = shipment_at(order, "ST-PHL")
        calls = {
            "list": lambda: f.ListShipments(
                fulfilment_pb2.ListShipmentsRequest(node_id="ST-PHL"), metadata=as_node("DC-NJ")
            ),
            "accept": lambda: f.AcceptShipment(
                fulfilment_pb2.AcceptShipmentRequest(shipment_id=phl.shipment_id),
                metadata=as_node("DC-NJ"),
            ),
            "ship": lambda: f.ConfirmShipment(
                fulfilment_pb2.ConfirmShipmentRequest(
                    shipment_id=phl.shipment_id, carrier="UPS", tracking_number="x"
                ),
                metadata=as_node("DC-NJ"),
            ),
            "reject": lambda: f.RejectShipment(
                fulfilment_pb2.RejectShipmentRequest(shipment_id=phl.shipment_id, reason="no"),
                metadata=as_node("DC-NJ"),
            ),
            "deliver": lambda: f.ConfirmDelivery(
                fulfilment_pb2.ConfirmDeliveryRequest(shipment_id=phl.shipment_id),
                metadata=as_node("DC-NJ"),
            ),
            "order-level ship": lambda: f.ConfirmShipment(
                fulfilment_pb2.ConfirmShipmentRequest(order_id=order.order_id),
                metadata=as_node("DC-NJ"),
            ),
            "release (admin only)": lambda: f.ReleaseOrder(
                fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id),
                metadata=as_node("DC-NJ"),
            ),
        }
        for name, call in calls.items():
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
        # Nothing changed, and the node's own listing is scoped without naming itself.
        assert (
            shipment_at(get(client, order.order_id), "ST-PHL").state == S.SHIPMENT_STATE_REQUESTED
        )
        assert {s.node_id for s in listed(client, "DC-NJ")} == {"DC-NJ"}


def test_cancel_after_one_shipment_left_cancels_the_rest(database_url: str, tmp_path: Path) -> None:
    with split_server(database_url, tmp_path) as client:
        f = client.fulfilment
        order = place_split(client)
        f.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id), metadata=ADMIN)
        nj = shipment_at(order, "DC-NJ")
        f.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(
                shipment_id=nj.shipment_id, carrier="UPS", tracking_number="1"
            ),
            metadata=as_node("DC-NJ"),
        )
        reply = client.checkout.CancelOrder(
            checkout_pb2.CancelOrderRequest(order_id=order.order_id, reason="changed mind")
        )
        assert [s.shipment_id for s in reply.not_cancelled] == [nj.shipment_id]
        assert [(x.sku, x.quantity) for x in reply.not_cancelled_lines] == [("A", 5)]
        assert [(x.sku, x.quantity) for x in reply.order.cancelled_lines] == [("A", 7)]
        states = {s.node_id: s.state for s in reply.order.shipments}
        assert states == {
            "DC-NJ": S.SHIPMENT_STATE_SHIPPED,
            "ST-PHL": S.SHIPMENT_STATE_CANCELLED,
            "DC-CHI": S.SHIPMENT_STATE_CANCELLED,
        }
        assert reply.order.state == S.ORDER_STATE_SHIPPED
        # Stock released exactly: nothing reserved for the order, the shipped units gone.
        with client.store.read() as conn:
            assert client.store.order_reservations(conn, order.order_id) == {}
        reserved = client.inventory.GetAvailability(
            inventory_pb2.GetAvailabilityRequest(skus=["A"]), metadata=ADMIN
        )
        assert {p.node_id: (p.on_hand, p.reserved) for p in reply_positions(reserved)} == {
            "DC-NJ": (0, 0),
            "ST-PHL": (5, 0),
            "DC-CHI": (4, 0),
        }
        # A second cancel has nothing left to cancel.
        with pytest.raises(grpc.RpcError) as err:
            client.checkout.CancelOrder(checkout_pb2.CancelOrderRequest(order_id=order.order_id))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "already left" in (err.value.details() or "")


def reply_positions(
    reply: inventory_pb2.GetAvailabilityResponse,
) -> list[inventory_pb2.Availability]:
    return list(reply.positions)


def test_partial_confirmation_splits_the_shipment(database_url: str, tmp_path: Path) -> None:
    with split_server(database_url, tmp_path) as client:
        f = client.fulfilment
        order = place_split(client)
        f.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id), metadata=ADMIN)
        nj = shipment_at(order, "DC-NJ")
        reply = f.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(
                shipment_id=nj.shipment_id,
                carrier="UPS",
                tracking_number="1",
                lines=[S.CartLine(sku="A", quantity=3)],
            ),
            metadata=as_node("DC-NJ"),
        )
        assert [x.quantity for x in reply.shipment.lines] == [3]
        assert reply.remainder.state == S.SHIPMENT_STATE_ACCEPTED
        assert reply.remainder.node_id == "DC-NJ"
        assert [x.quantity for x in reply.remainder.lines] == [2]
        assert reply.remainder.replaces_shipment_id == nj.shipment_id
        assert on_hand(client, "DC-NJ") == 2
        # Too many units for a shipment: refused, nothing written.
        with pytest.raises(grpc.RpcError) as err:
            f.ConfirmShipment(
                fulfilment_pb2.ConfirmShipmentRequest(
                    shipment_id=reply.remainder.shipment_id,
                    carrier="UPS",
                    tracking_number="2",
                    lines=[S.CartLine(sku="A", quantity=3)],
                ),
                metadata=as_node("DC-NJ"),
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        f.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(
                shipment_id=reply.remainder.shipment_id, carrier="UPS", tracking_number="2"
            ),
            metadata=as_node("DC-NJ"),
        )
        assert on_hand(client, "DC-NJ") == 0
        with client.store.read() as conn:
            assert client.store.order_reservations(conn, order.order_id).get(("DC-NJ", "A")) is None


def test_watch_shipments_resumes_from_its_cursor(database_url: str, tmp_path: Path) -> None:
    with split_server(database_url, tmp_path, alert_poll_s=0.05) as client:
        f = client.fulfilment
        order = place_split(client)
        f.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id), metadata=ADMIN)
        stream = f.WatchShipments(
            fulfilment_pb2.WatchShipmentsRequest(node_id="DC-NJ"),
            metadata=as_node("DC-NJ"),
            timeout=10,
        )
        # A new order's shipments are PENDING quietly: the node's first work is the request.
        first = [next(stream)]
        stream.cancel()
        assert [m.event_type for m in first] == ["shipment_requested"]
        assert all(m.shipment.node_id == "DC-NJ" for m in first)
        nj = first[0].shipment
        f.AcceptShipment(
            fulfilment_pb2.AcceptShipmentRequest(shipment_id=nj.shipment_id), metadata=ADMIN
        )
        resumed = f.WatchShipments(
            fulfilment_pb2.WatchShipmentsRequest(node_id="DC-NJ", after_cursor=first[-1].cursor),
            metadata=as_node("DC-NJ"),
            timeout=10,
        )
        got = [next(resumed)]
        resumed.cancel()
        assert (got[0].event_type, got[0].shipment.state) == (
            "shipment_accepted",
            S.SHIPMENT_STATE_ACCEPTED,
        )
        assert got[0].cursor > first[-1].cursor


def test_late_shipments_are_flagged_and_listed(database_url: str, tmp_path: Path) -> None:
    now = [1_900_000_000.0]
    with split_server(database_url, tmp_path, clock=lambda: now[0]) as client:
        order = place_split(client)
        assert not any(s.late for s in order.shipments)
        now[0] += 10 * 86400  # ten days on, nothing has left
        order = get(client, order.order_id)
        assert all(s.late for s in order.shipments)
        late = client.fulfilment.ListShipments(
            fulfilment_pb2.ListShipmentsRequest(late_only=True), metadata=ADMIN
        ).shipments
        assert {s.shipment_id for s in late} == {s.shipment_id for s in order.shipments}
        # The metric counts the same shipments.
        from prometheus_client import REGISTRY

        from oms.shipping import LateShipmentWatch

        assert LateShipmentWatch(client.store).count() == 3
        assert REGISTRY.get_sample_value("oms_late_shipments") == 3.0


def test_return_at_the_nearest_store_restocks_there(database_url: str, tmp_path: Path) -> None:
    with split_server(database_url, tmp_path) as client:
        f = client.fulfilment
        client.inventory.UpsertNodes(
            inventory_pb2.UpsertNodesRequest(
                nodes=[
                    inventory_pb2.Node(
                        node_id="ST-CHI",
                        kind=inventory_pb2.NODE_KIND_STORE,
                        location=S.Location(latitude=41.88, longitude=-87.63),
                        handling_days=1,
                    )
                ]
            ),
            metadata=ADMIN,
        )
        order = place_split(client)
        f.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id), metadata=ADMIN)
        f.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(order_id=order.order_id), metadata=ADMIN
        )
        nj = shipment_at(order, "DC-NJ")
        before = {n: on_hand(client, n) for n in ("ST-PHL", "DC-NJ")}
        # Near Philadelphia's city hall: ST-PHL (130 km from NYC; ST-CHI is 1,100 km away).
        reply = f.ReturnItems(
            fulfilment_pb2.ReturnItemsRequest(
                order_id=order.order_id,
                lines=[S.CartLine(sku="A", quantity=2)],
                drop_off_near=S.Location(latitude=39.95, longitude=-75.16),
            ),
            metadata=ADMIN,
        )
        assert (reply.return_node_id, reply.dropped_off) == ("ST-PHL", True)
        assert (reply.return_cost.units, reply.return_cost.nanos) == (0, 0)
        # The oldest shipment with A gave them back.
        assert list(reply.shipment_ids) == [order.shipments[0].shipment_id]
        assert on_hand(client, "ST-PHL") == before["ST-PHL"] + 2
        assert on_hand(client, "DC-NJ") == before["DC-NJ"]
        with client.store.read() as conn:
            rows = conn.execute(
                sa.select(
                    t.stock_ledger.c.node_id, t.stock_ledger.c.delta, t.stock_ledger.c.shipment_id
                ).where(t.stock_ledger.c.reason == "return")
            ).all()
        assert [tuple(r) for r in rows] == [("ST-PHL", 2, order.shipments[0].shipment_id)]
        assert reply.order.events[-1].type == "returned"
        assert "dropped off at store ST-PHL" in reply.order.events[-1].detail
        assert reply.order.returns[-1].shipment_id == order.shipments[0].shipment_id
        # Near Chicago: the new store; by name: DC-NJ is no store.
        near_chi = f.ReturnItems(
            fulfilment_pb2.ReturnItemsRequest(
                order_id=order.order_id,
                lines=[S.CartLine(sku="A", quantity=1)],
                drop_off_near=S.Location(latitude=41.9, longitude=-87.6),
            ),
            metadata=ADMIN,
        )
        assert near_chi.return_node_id == "ST-CHI"
        with pytest.raises(grpc.RpcError) as err:
            f.ReturnItems(
                fulfilment_pb2.ReturnItemsRequest(
                    order_id=order.order_id,
                    lines=[S.CartLine(sku="A", quantity=1)],
                    drop_off_store_id=nj.node_id,
                ),
                metadata=ADMIN,
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not a store" in (err.value.details() or "")


def test_collect_order_is_ready_then_picked_up(database_url: str, tmp_path: Path) -> None:
    """A COLLECT order's pickup shipment: confirming it makes it READY_FOR_PICKUP (the units
    leave the store's stock for the shelf), delivering it PICKED_UP; the order DELIVERED."""
    with split_server(database_url, tmp_path) as client:
        f = client.fulfilment
        quote = client.quote({"A": 3}, pickup_store_ids=["ST-PHL"])
        collect = [o for o in quote.options if o.method == S.FULFILMENT_METHOD_COLLECT]
        assert collect, "the hand network's store offers collect"
        order = client.place(quote.quote_id, collect[0].option_id).order
        (pickup,) = order.shipments
        assert (pickup.node_id, pickup.service) == ("ST-PHL", "pickup")
        f.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id), metadata=ADMIN)
        ready = f.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(
                shipment_id=pickup.shipment_id, carrier="in store", tracking_number="shelf 4"
            ),
            metadata=as_node("ST-PHL"),
        )
        assert ready.shipment.state == S.SHIPMENT_STATE_READY_FOR_PICKUP
        assert ready.order.state == S.ORDER_STATE_SHIPPED
        assert on_hand(client, "ST-PHL") == 2
        done = f.ConfirmDelivery(
            fulfilment_pb2.ConfirmDeliveryRequest(shipment_id=pickup.shipment_id),
            metadata=as_node("ST-PHL"),
        )
        assert done.shipment.state == S.SHIPMENT_STATE_PICKED_UP
        assert done.order.state == S.ORDER_STATE_DELIVERED


def test_place_order_reply_is_the_order_as_stored(database_url: str, tmp_path: Path) -> None:
    """PlaceOrder builds its reply from what it wrote (no read-back): it must say exactly
    what GetOrder reads back, shipments, dates and events included."""
    with split_server(database_url, tmp_path) as client:
        placed = place_split(client)
        assert len(placed.shipments) == 3
        assert get(client, placed.order_id) == placed


def test_release_order_reply_is_the_order_as_stored(database_url: str, tmp_path: Path) -> None:
    """ReleaseOrder builds its reply from the order it locked and what it changed (no
    read-back): state, version, events and shipments exactly as GetOrder reads them."""
    with split_server(database_url, tmp_path) as client:
        placed = place_split(client)
        released = client.fulfilment.ReleaseOrder(
            fulfilment_pb2.ReleaseOrderRequest(order_id=placed.order_id), metadata=ADMIN
        ).order
        assert released.state == S.ORDER_STATE_RELEASED
        assert {s.state for s in released.shipments} == {S.SHIPMENT_STATE_REQUESTED}
        assert get(client, placed.order_id) == released
        again = client.fulfilment.ReleaseOrder(
            fulfilment_pb2.ReleaseOrderRequest(order_id=placed.order_id), metadata=ADMIN
        ).order
        assert again == released == get(client, placed.order_id)
