"""Click & collect, backorder and re-sourcing over a real loopback channel.

The network is ``service_support.hand_network`` plus a ``transfer`` lane:
zone 1 $2.00, zone 2 $3.00, zone 3 $4.00, each + $0.50/kg, 1/1/2 days. Newark
to Philadelphia is 121 km (zone 2), Chicago to Philadelphia 1,070 km (zone 3).
Every figure below is worked out by hand from those rates and the hand
network's docstring (ground to NYC: NJ zone 1 $5 + $1/kg + $2.00, day 2;
PHL zone 2 $7 + $1/kg + $3.00, day 3; CHI zone 3 $9 + $1/kg + $1.50, day 3).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from google.type import date_pb2
from grpc_status import rpc_status

from oms import schema
from oms.convert import date_proto
from oms.errors import FailedPrecondition, Unavailable
from oms.fulfilment import cheapest_return_node
from oms.receiving import start_sweeper
from oms.resourcing import Resourcer
from oms.settings import Settings
from oms.store import units_of
from oms.v1 import checkout_pb2, common_pb2, fulfilment_pb2, inventory_pb2
from sourcing.model import Network

from service_support import (
    ADMIN,
    Client,
    cents,
    hand_network,
    iso,
    prepared_store,
    running_server,
    sqlite_url,
)


def with_lane(network: Network) -> Network:
    return network.replace(
        service_ids=("ground", "transfer"),
        base_price=np.vstack([network.base_price, [[200_000, 300_000, 400_000]]]),
        per_kg=np.vstack([network.per_kg, [[50_000, 50_000, 50_000]]]),
        transit_days=np.vstack([network.transit_days, [[1, 1, 2]]]),
        offered=np.ones((2, 3), dtype=np.bool_),
    )


def violations(err: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None
    for packed in status.details:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            return sorted(v.field for v in bad.field_violations)
        if packed.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            packed.Unpack(failure)
            return sorted(f"{v.type}:{v.subject}" for v in failure.violations)
    return []


def failing(call: object, *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return info.value


def reject(client: Client, order_id: str, node: str) -> fulfilment_pb2.RejectOrderResponse:
    return client.fulfilment.RejectOrder(
        fulfilment_pb2.RejectOrderRequest(order_id=order_id, node_id=node, reason="no picker"),
        metadata=ADMIN,
        timeout=10,
    )


def test_collect_at_philadelphia_with_a_transfer_from_newark(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), with_lane(hand_network())) as client:
        reply = client.quote({"A": 1, "B": 1}, pickup_store_ids=["ST-PHL"])
        (collect,) = [o for o in reply.options if o.method == common_pb2.FULFILMENT_METHOD_COLLECT]
        assert list(collect.labels) == [common_pb2.OPTION_LABEL_COLLECT]
        assert collect.pickup_store_id == "ST-PHL"
        # Picking A at PHL ($3.00) and sending B from Newark ($3.00 + 2 kg x $0.50 + $2.00)
        # costs $9.00; sending both from Newark in one parcel by the lane (zone 2) costs
        # $3.00 + 3 kg x $0.50 + $2.00 = $6.50, ready 1 + 1 = day 2; Chicago both $7.00.
        (parcel,) = collect.parcels
        assert (parcel.node_id, parcel.service, parcel.zone) == ("DC-NJ", "transfer", "2")
        assert (cents(collect.cost), collect.delivery_days) == (650, 2)
        delivery = [o for o in reply.options if o.method == common_pb2.FULFILMENT_METHOD_DELIVERY]
        assert delivery and all(not o.pickup_store_id for o in delivery)
        placed = client.place(reply.quote_id, collect.option_id).order
        assert placed.allocation.pickup_store_id == "ST-PHL"
        with client.store.read() as conn:
            reserved = client.store.order_reservations(conn, placed.order_id)
        assert reserved == {("DC-NJ", "A"): 1, ("DC-NJ", "B"): 1}
        # Two A: picked at the store itself, $3.00 handling, ready after its 1 handling day
        # (Newark by the lane: $3.00 + $1.00 + $2.00, day 2).
        reply = client.quote({"A": 2}, pickup_store_ids=["ST-PHL"])
        (collect,) = [o for o in reply.options if o.pickup_store_id]
        (parcel,) = collect.parcels
        assert (parcel.node_id, parcel.service, cents(parcel.cost)) == (
            "ST-PHL",
            "pickup",
            300,
        )
        assert collect.delivery_days == 1
        # The nearest store to NYC is Philadelphia: the same COLLECT option.
        near = client.quote({"A": 1, "B": 1}, nearest_pickup_stores=1)
        assert [o.pickup_store_id for o in near.options if o.pickup_store_id] == ["ST-PHL"]


def test_bad_pickup_and_backorder_requests_name_their_fields(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), with_lane(hand_network())) as client:
        err = failing(
            client.quote,
            {"A": 1},
            pickup_store_ids=["NOPE", "DC-NJ", ""],
            nearest_pickup_stores=11,
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(err) == [
            "nearest_pickup_stores",
            "pickup_store_ids[0]",
            "pickup_store_ids[1]",
            "pickup_store_ids[2]",
        ]
        inventory = client.inventory
        err = failing(
            inventory.UpsertInboundReceipts,
            inventory_pb2.UpsertInboundReceiptsRequest(
                receipts=[
                    inventory_pb2.InboundReceipt(
                        receipt_id="R",
                        node_id="DC-NJ",
                        sku="A",
                        quantity=0,
                        expected_date=date_pb2.Date(year=2030, month=2, day=30),
                    ),
                    inventory_pb2.InboundReceipt(
                        receipt_id="R", sku="A", quantity=1, expected_date=date_proto("2030-01-01")
                    ),
                ]
            ),
            metadata=ADMIN,
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(err) == [
            "receipts[0].expected_date",
            "receipts[0].quantity",
            "receipts[1].node_id",
            "receipts[1].receipt_id",
        ]
        err = failing(
            inventory.UpsertInboundReceipts,
            inventory_pb2.UpsertInboundReceiptsRequest(
                receipts=[
                    inventory_pb2.InboundReceipt(
                        receipt_id="R",
                        node_id="NOPE",
                        sku="A",
                        quantity=1,
                        expected_date=date_proto("2030-01-01"),
                    )
                ]
            ),
            metadata=ADMIN,
        )
        assert err.code() == grpc.StatusCode.NOT_FOUND
        err = failing(
            inventory.CancelInboundReceipt,
            inventory_pb2.CancelInboundReceiptRequest(receipt_id="NOPE", reason="x"),
            metadata=ADMIN,
        )
        assert err.code() == grpc.StatusCode.NOT_FOUND
        err = failing(
            client.fulfilment.RejectOrder,
            fulfilment_pb2.RejectOrderRequest(order_id="o_x"),
            metadata=ADMIN,
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(err) == ["node_id", "reason"]
        err = failing(reject, client, "o_missing", "DC-NJ")
        assert err.code() == grpc.StatusCode.NOT_FOUND
        quote = client.quote({"A": 1})
        order = client.place(quote.quote_id, quote.options[0].option_id).order
        err = failing(reject, client, order.order_id, "DC-CHI")
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert violations(err) == ["NODE:DC-CHI"]
        err = failing(
            client.fulfilment.ReportShortage,
            fulfilment_pb2.ReportShortageRequest(
                order_id=order.order_id,
                node_id="DC-NJ",
                reason="count",
                lines=[common_pb2.CartLine(sku="A", quantity=5)],
            ),
            metadata=ADMIN,
        )
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert violations(err) == ["SHORTAGE:DC-NJ/A"]


def test_rejection_keeps_the_promise_when_another_node_can(tmp_path: Path) -> None:
    network = hand_network({("DC-NJ", "A"): 1})
    with running_server(sqlite_url(tmp_path), network) as client:
        quote = client.quote({"A": 2})
        cheapest = next(o for o in quote.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels)
        # Both units from Philadelphia: $12.00, day 3.
        assert [p.node_id for p in cheapest.parcels] == ["ST-PHL"]
        order = client.place(quote.quote_id, cheapest.option_id).order
        client.fulfilment.ReleaseOrder(
            fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id), metadata=ADMIN
        )
        reply = reject(client, order.order_id, "ST-PHL")
        # By day 3: Chicago x 2 ($12.50) beats Newark 1 + Chicago 1 ($8.00 + $11.50).
        assert reply.promise_kept
        after = reply.order
        assert [p.node_id for p in after.allocation.parcels] == ["DC-CHI"]
        assert cents(after.allocation.cost) == 1250
        assert after.allocation.delivery_date == after.promised_date
        assert not after.needs_attention
        assert [e.type for e in after.events] == [
            "placed",
            "released",
            "rejected",
            "resourced",
            "released",
        ]
        with client.store.read() as conn:
            assert client.store.order_reservations(conn, order.order_id) == {("DC-CHI", "A"): 2}
        got = client.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order.order_id)).order
        assert [e.type for e in got.events] == [e.type for e in after.events]


def test_rejection_that_misses_the_promise_flags_the_order(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        quote = client.quote({"A": 2})
        order = client.place(quote.quote_id, quote.options[0].option_id).order
        assert [p.node_id for p in order.allocation.parcels] == ["DC-NJ"]  # day 2
        reply = reject(client, order.order_id, "DC-NJ")
        # Nothing else arrives by day 2; Philadelphia ($12.00) and Chicago ($12.50) both
        # take until day 3: the closest, then the cheaper.
        assert not reply.promise_kept
        assert reply.order.needs_attention
        assert [p.node_id for p in reply.order.allocation.parcels] == ["ST-PHL"]
        assert reply.order.events[-1].type == "flagged"
        assert "missed" in reply.order.events[-1].detail


def test_shortage_resources_only_the_missing_units(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        quote = client.quote({"A": 2, "B": 1})
        order = client.place(quote.quote_id, quote.options[0].option_id).order
        assert cents(order.allocation.cost) == 1100  # NJ: $5 + 4 kg x $1 + $2.00
        reply = client.fulfilment.ReportShortage(
            fulfilment_pb2.ReportShortageRequest(
                order_id=order.order_id,
                node_id="DC-NJ",
                reason="bin empty",
                lines=[common_pb2.CartLine(sku="B", quantity=1)],
            ),
            metadata=ADMIN,
        )
        parcels = {p.node_id: p for p in reply.order.allocation.parcels}
        # NJ keeps the two A (2 kg: $5 + $2 + $2.00 = $9.00); B comes from Chicago,
        # $9 + $2 + $1.50 = $12.50, day 3 > promised day 2: flagged.
        assert cents(parcels["DC-NJ"].cost) == 900
        assert [(pl.sku, pl.quantity) for pl in parcels["DC-NJ"].lines] == [("A", 2)]
        assert cents(parcels["DC-CHI"].cost) == 1250
        assert not reply.promise_kept and reply.order.needs_attention
        with client.store.read() as conn:
            assert client.store.order_reservations(conn, order.order_id) == {
                ("DC-NJ", "A"): 2,
                ("DC-CHI", "B"): 1,
            }


def test_backorder_reserves_the_receipt_and_cancelling_it_resources(tmp_path: Path) -> None:
    network = hand_network({("DC-NJ", "B"): 0, ("DC-CHI", "B"): 0})
    with running_server(sqlite_url(tmp_path), network) as client:
        due = (datetime.now(UTC).date() + timedelta(days=2)).isoformat()
        client.inventory.UpsertInboundReceipts(
            inventory_pb2.UpsertInboundReceiptsRequest(
                receipts=[
                    inventory_pb2.InboundReceipt(
                        receipt_id="PO-1",
                        node_id="DC-NJ",
                        sku="B",
                        quantity=3,
                        expected_date=date_proto(due),
                    )
                ]
            ),
            metadata=ADMIN,
        )
        err = failing(client.quote, {"A": 1, "B": 1})
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # backorder not allowed
        reply = client.quote({"A": 1, "B": 1}, allow_backorder=True)
        (option,) = reply.options
        # A from NJ now: $5 + 1 kg + $2.00 = $8.00, day 2. B waits for PO-1 (day 2) at NJ,
        # then ships: $5 + 2 kg + $2.00 = $9.00, arriving 2 + 1 + 1 = day 4.
        assert (cents(option.cost), option.delivery_days) == (1700, 4)
        (waiting,) = option.waiting
        assert (waiting.sku, waiting.quantity, waiting.node_id) == ("B", 1, "DC-NJ")
        assert iso(waiting.inbound_date) == due
        order = client.place(reply.quote_id, option.option_id).order
        (receipt,) = client.inventory.ListInboundReceipts(
            inventory_pb2.ListInboundReceiptsRequest(), metadata=ADMIN
        ).receipts
        assert (receipt.quantity, receipt.reserved) == (3, 1)
        with client.store.read() as conn:
            # Stock is reserved for A only; B is promised on the receipt, not on hand.
            assert client.store.order_reservations(conn, order.order_id) == {("DC-NJ", "A"): 1}
            assert client.store.order_inbound(conn, order.order_id) == {"PO-1": 1}
        client.fulfilment.ReleaseOrder(
            fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id), metadata=ADMIN
        )
        err = failing(
            client.fulfilment.ConfirmShipment,
            fulfilment_pb2.ConfirmShipmentRequest(order_id=order.order_id),
            metadata=ADMIN,
        )
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert violations(err) == ["RECEIPT:PO-1"]
        # Stock turns up in Chicago, then PO-1 is cancelled: B comes from Chicago,
        # $9 + $2 + $1.50 = $12.50, day 3, within the promised day 4.
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="DC-CHI", sku="B", on_hand=5, reason="found"),
            metadata=ADMIN,
        )
        cancelled = client.inventory.CancelInboundReceipt(
            inventory_pb2.CancelInboundReceiptRequest(receipt_id="PO-1", reason="supplier"),
            metadata=ADMIN,
        )
        assert list(cancelled.resourced_order_ids) == [order.order_id]
        assert cancelled.receipt.state == inventory_pb2.INBOUND_RECEIPT_STATE_CANCELLED
        assert cancelled.receipt.reserved == 0
        with client.store.read() as conn:
            after = client.store.get_order(conn, order.order_id)
            assert client.store.order_reservations(conn, order.order_id) == {
                ("DC-NJ", "A"): 1,
                ("DC-CHI", "B"): 1,
            }
            assert client.store.order_inbound(conn, order.order_id) == {}
        assert [kind for _, kind, _ in after.events][-3:] == [
            "receipt_cancelled",
            "resourced",
            "released",
        ]
        assert not any(p.inbound_day is not None for p in after.allocation.parcels)


def test_low_stock_alerts_count_reservations_and_inbound(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        inventory = client.inventory
        inventory.SetStock(
            inventory_pb2.SetStockRequest(
                node_id="DC-NJ", sku="A", on_hand=5, low_stock_threshold=3, reason="count"
            ),
            metadata=ADMIN,
        )

        def low() -> list[tuple[int, int, int]]:
            alerts = inventory.ListLowStockAlerts(
                inventory_pb2.ListLowStockAlertsRequest(skus=["A"], node_ids=["DC-NJ"]),
                metadata=ADMIN,
            ).alerts
            return [
                (a.position.available, a.position.inbound, a.position.projected) for a in alerts
            ]

        assert low() == []  # 5 available > 3
        quote = client.quote({"A": 3})
        client.place(quote.quote_id, quote.options[0].option_id)
        assert low() == [(2, 0, 2)]  # the order's reservation leaves 2
        due = (datetime.now(UTC).date() + timedelta(days=5)).isoformat()
        inventory.UpsertInboundReceipts(
            inventory_pb2.UpsertInboundReceiptsRequest(
                receipts=[
                    inventory_pb2.InboundReceipt(
                        receipt_id="PO-9",
                        node_id="DC-NJ",
                        sku="A",
                        quantity=4,
                        expected_date=date_proto(due),
                    )
                ]
            ),
            metadata=ADMIN,
        )
        assert low() == []  # 2 available + 4 inbound = 6 projected


def test_a_late_receipt_releases_its_orders_and_flags_what_cannot_be_resourced(
    tmp_path: Path,
) -> None:
    network = hand_network({("DC-NJ", "B"): 0, ("DC-CHI", "B"): 0})
    with running_server(sqlite_url(tmp_path), network) as client:
        first = datetime.now(UTC).date() + timedelta(days=1)

        def upsert(due: str, qty: int = 2) -> inventory_pb2.UpsertInboundReceiptsResponse:
            return client.inventory.UpsertInboundReceipts(
                inventory_pb2.UpsertInboundReceiptsRequest(
                    receipts=[
                        inventory_pb2.InboundReceipt(
                            receipt_id="PO-2",
                            node_id="DC-NJ",
                            sku="B",
                            quantity=qty,
                            expected_date=date_proto(due),
                        )
                    ]
                ),
                metadata=ADMIN,
            )

        assert list(upsert(first.isoformat()).resourced_order_ids) == []
        reply = client.quote({"B": 1}, allow_backorder=True)
        order = client.place(reply.quote_id, reply.options[0].option_id).order
        # Earlier or unchanged: nobody is re-sourced. Later: the waiting order is.
        assert list(upsert(first.isoformat(), qty=3).resourced_order_ids) == []
        late = upsert((first + timedelta(days=7)).isoformat())
        assert list(late.resourced_order_ids) == [order.order_id]
        assert late.receipts[0].reserved == 0
        got = client.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order.order_id)).order
        # No B in stock anywhere: the unit stays unallocated and the order is flagged.
        assert got.needs_attention
        assert [e.type for e in got.events][-2:] == ["receipt_late", "flagged"]
        assert "no stock anywhere" in got.events[-1].detail
        with client.store.read() as conn:
            assert client.store.order_inbound(conn, order.order_id) == {}


def test_a_collect_order_resourced_at_place_stays_a_collect(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    with running_server(url, with_lane(hand_network()), hold_stock=False) as client:
        reply = client.quote({"A": 1, "B": 1}, pickup_store_ids=["ST-PHL"])
        (collect,) = [o for o in reply.options if o.pickup_store_id]
        assert [p.node_id for p in collect.parcels] == ["DC-NJ"]  # $6.50, ready day 2
        client.inventory.AdjustStock(
            inventory_pb2.AdjustStockRequest(node_id="DC-NJ", sku="B", delta=-5, reason="count"),
            metadata=ADMIN,
        )
        placed = client.place(reply.quote_id, collect.option_id)
        # By day 2 at PHL: both from Chicago by the lane (zone 3), $4.00 + 3 kg x $0.50 +
        # $1.50 = $7.00, ready 0 + 2; PHL's A + Chicago's B would cost $9.50.
        assert placed.resourced
        allocation = placed.order.allocation
        assert allocation.pickup_store_id == "ST-PHL"
        assert [(p.node_id, p.service) for p in allocation.parcels] == [("DC-CHI", "transfer")]
        assert cents(allocation.cost) == 700


# -- receiving receipts, overdue receipts, returns, alerts ----------------------------


def upsert_receipt(
    client: Client, receipt_id: str, node: str, sku: str, qty: int, due: str
) -> inventory_pb2.UpsertInboundReceiptsResponse:
    return client.inventory.UpsertInboundReceipts(
        inventory_pb2.UpsertInboundReceiptsRequest(
            receipts=[
                inventory_pb2.InboundReceipt(
                    receipt_id=receipt_id,
                    node_id=node,
                    sku=sku,
                    quantity=qty,
                    expected_date=date_proto(due),
                )
            ]
        ),
        metadata=ADMIN,
        timeout=10,
    )


def receive(
    client: Client, receipt_id: str, qty: int, reason: str = "truck 7"
) -> inventory_pb2.ReceiveInboundReceiptResponse:
    return client.inventory.ReceiveInboundReceipt(
        inventory_pb2.ReceiveInboundReceiptRequest(
            receipt_id=receipt_id, received_quantity=qty, reason=reason
        ),
        metadata=ADMIN,
        timeout=30,
    )


def backorder(client: Client, lines: dict[str, int], **fields: object) -> common_pb2.Order:
    reply = client.quote(lines, allow_backorder=True, **fields)
    (option,) = reply.options
    assert option.waiting, "the cart must wait for a receipt"
    return client.place(reply.quote_id, option.option_id).order


def move(client: Client, order_id: str, action: str) -> common_pb2.Order:
    stub = client.fulfilment
    call, request = {
        "release": (stub.ReleaseOrder, fulfilment_pb2.ReleaseOrderRequest),
        "ship": (stub.ConfirmShipment, fulfilment_pb2.ConfirmShipmentRequest),
        "deliver": (stub.ConfirmDelivery, fulfilment_pb2.ConfirmDeliveryRequest),
    }[action]
    order: common_pb2.Order = call(request(order_id=order_id), metadata=ADMIN, timeout=10).order
    return order


def assert_stock_invariants(client: Client, order_ids: list[str]) -> None:
    """Ledger = on hand; reservations <= on hand; each order reserves exactly its stock units."""
    store = client.store
    assert store.ledger_mismatches() == []
    with store.read() as conn:
        for p in store.positions(conn):
            assert p.reserved <= p.on_hand, p
        for order_id in order_ids:
            row = store.get_order(conn, order_id)
            if row.state in ("PLACED", "RELEASED"):
                assert store.order_reservations(conn, order_id) == units_of(row.allocation)


def ledger_rows(client: Client, node: str, sku: str) -> list[tuple[int, str]]:
    t = schema.stock_ledger
    with client.store.read() as conn:
        return [
            (int(r.delta), r.reason)
            for r in conn.execute(
                sa.select(t.c.delta, t.c.reason)
                .where(t.c.node_id == node, t.c.sku == sku)
                .order_by(t.c.entry_id)
            )
        ]


def test_a_received_receipt_lets_its_backorder_ship_and_be_returned(tmp_path: Path) -> None:
    network = hand_network({("DC-NJ", "B"): 0, ("DC-CHI", "B"): 0})
    with running_server(sqlite_url(tmp_path), network) as client:
        due = (datetime.now(UTC).date() + timedelta(days=2)).isoformat()
        upsert_receipt(client, "PO-1", "DC-NJ", "B", 3, due)
        order = backorder(client, {"A": 1, "B": 1})
        move(client, order.order_id, "release")
        err = failing(move, client, order.order_id, "ship")
        assert violations(err) == ["RECEIPT:PO-1"]

        reply = receive(client, "PO-1", 3)
        assert reply.receipt.state == inventory_pb2.INBOUND_RECEIPT_STATE_RECEIVED
        assert (reply.receipt.quantity, reply.receipt.received_quantity) == (3, 3)
        assert reply.receipt.reserved == 0  # nobody waits for it any more
        assert list(reply.covered_order_ids) == [order.order_id]
        assert list(reply.resourced_order_ids) == []
        # 3 on hand, 1 reserved for the order, 2 free; the receipt no longer counts as inbound.
        got = reply.availability
        assert (got.on_hand, got.reserved, got.available, got.inbound, got.projected) == (
            3,
            1,
            2,
            0,
            2,
        )
        assert ledger_rows(client, "DC-NJ", "B") == [(3, "receipt PO-1: truck 7")]
        with client.store.read() as conn:
            assert client.store.order_reservations(conn, order.order_id) == {
                ("DC-NJ", "A"): 1,
                ("DC-NJ", "B"): 1,
            }
            assert client.store.order_inbound(conn, order.order_id) == {}
        assert_stock_invariants(client, [order.order_id])
        after = client.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order.order_id))
        assert list(after.order.allocation.waiting) == []
        assert after.order.events[-1].type == "receipt_received"
        assert not after.order.needs_attention

        # A retry with the same quantity changes nothing; another quantity is refused.
        again = receive(client, "PO-1", 3)
        assert again.receipt.state == inventory_pb2.INBOUND_RECEIPT_STATE_RECEIVED
        assert list(again.covered_order_ids) == []
        assert len(ledger_rows(client, "DC-NJ", "B")) == 1
        err = failing(receive, client, "PO-1", 2)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert violations(err) == ["RECEIPT:PO-1"]

        shipped = move(client, order.order_id, "ship")
        assert shipped.state == common_pb2.ORDER_STATE_SHIPPED
        assert ledger_rows(client, "DC-NJ", "B")[-1][0] == -1
        move(client, order.order_id, "deliver")
        # The received unit counts as shipped: it can come back. NYC's cheapest return for
        # 2 kg is Newark by ground: $5 + 2 kg x $1 + $2.00 handling = $9.00.
        returned = client.fulfilment.ReturnItems(
            fulfilment_pb2.ReturnItemsRequest(
                order_id=order.order_id, lines=[common_pb2.CartLine(sku="B", quantity=1)]
            ),
            metadata=ADMIN,
            timeout=10,
        )
        assert (returned.return_node_id, cents(returned.return_cost)) == ("DC-NJ", 900)
        with client.store.read() as conn:
            (position,) = client.store.positions(conn, ["B"], ["DC-NJ"])
        assert (position.on_hand, position.reserved) == (3, 0)  # 3 in, 1 out, 1 back
        err = failing(
            client.fulfilment.ReturnItems,
            fulfilment_pb2.ReturnItemsRequest(
                order_id=order.order_id, lines=[common_pb2.CartLine(sku="B", quantity=1)]
            ),
            metadata=ADMIN,
        )
        assert violations(err) == ["RETURN:B"]  # only one B shipped
        assert_stock_invariants(client, [order.order_id])


def test_a_short_receipt_serves_orders_oldest_first_and_resources_the_rest(
    tmp_path: Path,
) -> None:
    network = hand_network({("DC-NJ", "B"): 0, ("DC-CHI", "B"): 0})
    with running_server(sqlite_url(tmp_path), network) as client:
        due = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
        upsert_receipt(client, "PO-2", "DC-NJ", "B", 5, due)
        first = backorder(client, {"B": 2})
        second = backorder(client, {"B": 2})
        third = backorder(client, {"B": 1})
        # Each waits at Newark for day 1, then ships: arriving 1 + 1 + 1 = day 3.
        assert second.allocation.delivery_days == 3
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="DC-CHI", sku="B", on_hand=5, reason="found"),
            metadata=ADMIN,
        )
        reply = receive(client, "PO-2", 3, reason="2 cases damaged")
        # Oldest first: the first order takes 2 (1 left), the second needs 2 and does not
        # fit, the third takes the last one. The second is re-sourced from Chicago:
        # $9 + 4 kg x $1 + $1.50 = $14.50, day 3: the promised day, kept.
        assert list(reply.covered_order_ids) == [first.order_id, third.order_id]
        assert list(reply.resourced_order_ids) == [second.order_id]
        assert (reply.receipt.received_quantity, reply.receipt.reserved) == (3, 0)
        assert (reply.availability.on_hand, reply.availability.reserved) == (3, 3)
        with client.store.read() as conn:
            reserved = {
                o.order_id: client.store.order_reservations(conn, o.order_id)
                for o in (first, second, third)
            }
            assert all(
                client.store.order_inbound(conn, o.order_id) == {} for o in (first, second, third)
            )
            moved = client.store.get_order(conn, second.order_id)
        assert reserved == {
            first.order_id: {("DC-NJ", "B"): 2},
            second.order_id: {("DC-CHI", "B"): 2},
            third.order_id: {("DC-NJ", "B"): 1},
        }
        assert [kind for _, kind, _ in moved.events][-2:] == ["receipt_short", "resourced"]
        assert "arrived short: 3 of 5" in moved.events[-2][2]
        (parcel,) = moved.allocation.parcels
        assert (parcel.node_id, parcel.cost) == ("DC-CHI", 1_450_000)  # millicents
        assert_stock_invariants(client, [first.order_id, second.order_id, third.order_id])
        for o in (first, second, third):
            move(client, o.order_id, "release")
            assert move(client, o.order_id, "ship").state == common_pb2.ORDER_STATE_SHIPPED
        with client.store.read() as conn:
            stock = {(p.node_id, p.sku): p.on_hand for p in client.store.positions(conn, ["B"])}
        assert stock == {("DC-NJ", "B"): 0, ("DC-CHI", "B"): 3}
        assert_stock_invariants(client, [])


class Clock:
    """A store clock tests move on by hand."""

    def __init__(self, day: str) -> None:
        self.now = datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, days: int) -> None:
        self.now += days * 86_400


PHL = common_pb2.Location(latitude=39.9526, longitude=-75.1652)


def test_an_overdue_receipt_resources_its_orders_once(tmp_path: Path) -> None:
    network = hand_network({("DC-NJ", "B"): 0, ("DC-CHI", "B"): 0})
    clock = Clock("2030-03-04")
    with running_server(sqlite_url(tmp_path), network, clock=clock) as client:

        def sweep() -> inventory_pb2.ResourceOverdueReceiptsResponse:
            return client.inventory.ResourceOverdueReceipts(
                inventory_pb2.ResourceOverdueReceiptsRequest(), metadata=ADMIN, timeout=30
            )

        upsert_receipt(client, "PO-3", "DC-NJ", "B", 2, "2030-03-05")
        # To Philadelphia: waits at Newark for day 1, then zone 2 ground: 1 + 1 + 2 = day 4.
        order = backorder(client, {"B": 1}, destination=PHL)
        assert iso(order.promised_date) == "2030-03-08"
        assert list(sweep().overdue_receipt_ids) == []
        clock.advance(1)  # due today: not late yet
        assert list(sweep().overdue_receipt_ids) == []
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="ST-PHL", sku="B", on_hand=4, reason="found"),
            metadata=ADMIN,
        )
        clock.advance(1)  # 2030-03-06: PO-3 is late
        swept = sweep()
        assert list(swept.overdue_receipt_ids) == ["PO-3"]
        assert list(swept.resourced_order_ids) == [order.order_id]
        got = client.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order.order_id))
        # From the Philadelphia store itself (zone 1): $5 + 2 kg x $1 + $3.00 = $10.00,
        # 1 + 1 = 2 days from 03-06: 2030-03-08, the promised day.
        (parcel,) = got.order.allocation.parcels
        assert (parcel.node_id, cents(parcel.cost)) == ("ST-PHL", 1000)
        assert iso(got.order.allocation.delivery_date) == "2030-03-08"
        assert not got.order.needs_attention
        assert [e.type for e in got.order.events][-2:] == ["receipt_late", "resourced"]
        assert "overdue" in got.order.events[-2].detail
        with client.store.read() as conn:
            assert client.store.order_inbound(conn, order.order_id) == {}
            assert client.store.order_reservations(conn, order.order_id) == {("ST-PHL", "B"): 1}
        # Again: nothing waits for PO-3 any more, nothing changes.
        again = sweep()
        assert (list(again.overdue_receipt_ids), list(again.resourced_order_ids)) == ([], [])
        later = client.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order.order_id))
        assert len(later.order.events) == len(got.order.events)
        (receipt,) = client.inventory.ListInboundReceipts(
            inventory_pb2.ListInboundReceiptsRequest(), metadata=ADMIN
        ).receipts
        assert (receipt.state, receipt.reserved) == (inventory_pb2.INBOUND_RECEIPT_STATE_OPEN, 0)
        assert_stock_invariants(client, [order.order_id])


def test_the_sweeper_flags_a_late_receipts_order_it_cannot_save(tmp_path: Path) -> None:
    network = hand_network({("DC-NJ", "B"): 0, ("DC-CHI", "B"): 0})
    clock = Clock("2030-03-04")
    url = sqlite_url(tmp_path)
    with running_server(url, network, clock=clock) as client:
        upsert_receipt(client, "PO-4", "DC-NJ", "B", 2, "2030-03-05")
        order = backorder(client, {"B": 1})  # to NYC: 1 + 1 + 1 = day 3, 2030-03-07
        assert iso(order.promised_date) == "2030-03-07"
        clock.advance(2)
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="DC-CHI", sku="B", on_hand=4, reason="found"),
            metadata=ADMIN,
        )
        settings = Settings(database_url=url, overdue_sweep_s=0.01)
        sweeper = start_sweeper(client.store, settings)
        assert sweeper is not None
        try:
            with sweeper.swept:
                assert sweeper.swept.wait_for(lambda: sweeper.sweeps >= 1, timeout=60)
        finally:
            sweeper.stop()
        got = client.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order.order_id))
        # Only Chicago has B: 0 + 3 days from 03-06 is 03-09, after the promised 03-07.
        assert [p.node_id for p in got.order.allocation.parcels] == ["DC-CHI"]
        assert got.order.needs_attention
        assert [e.type for e in got.order.events][-2:] == ["receipt_late", "flagged"]
        assert start_sweeper(client.store, Settings(database_url=url, overdue_sweep_s=0)) is None


def test_returns_never_go_by_the_transfer_lane(tmp_path: Path) -> None:
    # A transfer lane free in zone 3 would make Chicago the "cheapest" return for NYC
    # ($0 + $1.50 handling); customers cannot use it: Newark by ground, $5 + $1 + $2.00.
    network = with_lane(hand_network())
    network = network.replace(
        base_price=np.array([[500, 700, 900], [9_999, 9_999, 0]]) * 1000,
        per_kg=np.array([[100, 100, 100], [0, 0, 0]]) * 1000,
    )
    store = prepared_store(sqlite_url(tmp_path), network)
    try:
        catalog = store.catalog()
        assert cheapest_return_node(catalog, 40.7128, -74.0060, 1000) == ("DC-NJ", 800_000)
        lane_only = prepared_store(
            f"sqlite:///{tmp_path / 'lane.db'}",
            network.replace(
                service_ids=("transfer",),
                base_price=network.base_price[1:],
                per_kg=network.per_kg[1:],
                transit_days=network.transit_days[1:],
                offered=network.offered[1:],
            ),
        )
        try:
            with pytest.raises(FailedPrecondition) as info:
                cheapest_return_node(lane_only.catalog(), 40.7128, -74.0060, 1000)
            assert [v.type for v in info.value.violations] == ["RETURN_ROUTE"]
        finally:
            lane_only.dispose()
    finally:
        store.dispose()


def test_watch_low_stock_alerts_uses_the_projected_figure(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        inventory = client.inventory
        inventory.SetStock(
            inventory_pb2.SetStockRequest(
                node_id="DC-NJ", sku="A", on_hand=5, low_stock_threshold=3, reason="count"
            ),
            metadata=ADMIN,
        )
        quote = client.quote({"A": 3})
        client.place(quote.quote_id, quote.options[0].option_id)
        stream = inventory.WatchLowStockAlerts(
            inventory_pb2.WatchLowStockAlertsRequest(skus=["A"], node_ids=["DC-NJ"]),
            metadata=ADMIN,
            timeout=60,
        )

        def seen(reply: inventory_pb2.WatchLowStockAlertsResponse) -> tuple[object, ...]:
            p = reply.alert.position
            return (reply.cleared, p.available, p.inbound, p.inbound_reserved, p.projected)

        try:
            # 5 on hand - 3 reserved = 2 available, nothing inbound: 2 <= 3, low.
            assert seen(next(stream)) == (False, 2, 0, 0, 2)
            due = (datetime.now(UTC).date() + timedelta(days=5)).isoformat()
            upsert_receipt(client, "PO-9", "DC-NJ", "A", 4, due)
            # Still 2 available, but 2 + 4 inbound = 6 projected > 3: cleared.
            assert seen(next(stream)) == (True, 2, 4, 0, 6)
            client.inventory.CancelInboundReceipt(
                inventory_pb2.CancelInboundReceiptRequest(receipt_id="PO-9", reason="supplier"),
                metadata=ADMIN,
            )
            assert seen(next(stream)) == (False, 2, 0, 0, 2)  # raised again
        finally:
            stream.cancel()


def test_a_shortage_of_received_units_resources_them(tmp_path: Path) -> None:
    network = hand_network({("DC-NJ", "B"): 0, ("DC-CHI", "B"): 0})
    with running_server(sqlite_url(tmp_path), network) as client:
        due = (datetime.now(UTC).date() + timedelta(days=1)).isoformat()
        upsert_receipt(client, "PO-5", "DC-NJ", "B", 2, due)
        order = backorder(client, {"A": 1, "B": 1})  # A from Newark now, B waits there
        assert list(receive(client, "PO-5", 2).covered_order_ids) == [order.order_id]
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="DC-CHI", sku="B", on_hand=5, reason="found"),
            metadata=ADMIN,
        )
        reply = client.fulfilment.ReportShortage(
            fulfilment_pb2.ReportShortageRequest(
                order_id=order.order_id,
                node_id="DC-NJ",
                reason="received B not in its bin",
                lines=[common_pb2.CartLine(sku="B", quantity=1)],
            ),
            metadata=ADMIN,
            timeout=30,
        )
        # The received B leaves Newark's waiting parcel (now empty, dropped); Chicago sends
        # it: $9 + 2 kg x $1 + $1.50 = $12.50, day 3: B waited for day 1, then 1 + 1.
        parcels = {p.node_id: p for p in reply.order.allocation.parcels}
        assert len(reply.order.allocation.parcels) == 2 and sorted(parcels) == ["DC-CHI", "DC-NJ"]
        assert [(pl.sku, pl.quantity) for pl in parcels["DC-NJ"].lines] == [("A", 1)]
        assert cents(parcels["DC-CHI"].cost) == 1250
        assert reply.promise_kept and not reply.order.needs_attention
        with client.store.read() as conn:
            assert client.store.order_reservations(conn, order.order_id) == {
                ("DC-NJ", "A"): 1,
                ("DC-CHI", "B"): 1,
            }
        assert_stock_invariants(client, [order.order_id])


def test_oms_quote_asks_for_collect_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from oms.cli import main

    cart = tmp_path / "cart.json"
    cart.write_text(
        json.dumps(
            {
                "destination": {"lat": 40.7128, "lon": -74.006},
                "lines": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 1}],
            }
        )
    )
    with running_server(sqlite_url(tmp_path), with_lane(hand_network())) as client:
        argv = ["quote", str(cart), "--target", client.target, "--pickup-store", "ST-PHL"]
        assert main(argv) == 0
    menu = json.loads(capsys.readouterr().out)
    collect = [o for o in menu["options"] if o.get("pickup_store_id")]
    # The same hand-priced option as above: both units from Newark by the lane, $6.50, day 2.
    assert [(o["pickup_store_id"], o["cost"], o["delivery_days"]) for o in collect] == [
        ("ST-PHL", {"currency_code": "USD", "units": "6", "nanos": 500_000_000}, 2)
    ]
    assert main(["quote", str(cart), "--target", "127.0.0.1:1", "--timeout", "0.2"]) == 1


@pytest.mark.parametrize(
    ("change", "kind", "reason"),
    [
        ("cancel", "receipt_cancelled", "was cancelled: supplier"),
        ("cut", "receipt_late", "cut from 2 to 1 unit(s)"),
        ("later", "receipt_late", "moved from 2030-03-05 to 2030-03-09"),
        (
            "short",
            "receipt_short",
            "arrived short: 1 of 2 unit(s), not enough for this order too",
        ),
    ],
)
def test_resourcing_cut_short_after_a_receipt_change_is_finished_by_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str, kind: str, reason: str
) -> None:
    """The receipt's change commits with a mark on the orders it failed; when re-sourcing
    them fails (here: the store away), the next sweep finishes it with the same event."""
    network = hand_network({("DC-NJ", "B"): 0, ("DC-CHI", "B"): 0})
    clock = Clock("2030-03-04")
    with running_server(sqlite_url(tmp_path), network, clock=clock) as client:
        upsert_receipt(client, "PO-5", "DC-NJ", "B", 2, "2030-03-05")
        order = backorder(client, {"B": 2})
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="DC-CHI", sku="B", on_hand=5, reason="found"),
            metadata=ADMIN,
        )

        def store_away(*args: object, **kwargs: object) -> None:
            raise Unavailable("the store is away")

        with monkeypatch.context() as patch:
            patch.setattr(Resourcer, "receipt_failed", store_away)
            if change == "cancel":
                reply = client.inventory.CancelInboundReceipt(
                    inventory_pb2.CancelInboundReceiptRequest(receipt_id="PO-5", reason="supplier"),
                    metadata=ADMIN,
                )
            elif change == "cut":
                reply = upsert_receipt(client, "PO-5", "DC-NJ", "B", 1, "2030-03-05")
            elif change == "later":
                reply = upsert_receipt(client, "PO-5", "DC-NJ", "B", 2, "2030-03-09")
            else:
                reply = receive(client, "PO-5", 1)
        # The change itself is done; the order is not re-sourced yet but marked.
        assert list(reply.resourced_order_ids) == []
        with client.store.read() as conn:
            assert client.store.order_inbound(conn, order.order_id) == {"PO-5": 2}
            (pending,) = client.store.pending_resourcing(conn)
        assert (pending.order_id, pending.kind, pending.reason) == (order.order_id, kind, reason)
        assert pending.due == "2030-03-05"  # the date the order was planned on

        swept = client.inventory.ResourceOverdueReceipts(
            inventory_pb2.ResourceOverdueReceiptsRequest(), metadata=ADMIN, timeout=30
        )
        assert list(swept.overdue_receipt_ids) == ["PO-5"]
        assert list(swept.resourced_order_ids) == [order.order_id]
        with client.store.read() as conn:
            after = client.store.get_order(conn, order.order_id)
            assert client.store.order_inbound(conn, order.order_id) == {}
            assert client.store.pending_resourcing(conn) == []
            reserved = client.store.order_reservations(conn, order.order_id)
        assert sum(reserved.values()) == 2
        assert [k for _, k, _ in after.events][-2:] == [kind, "resourced"]
        assert reason in after.events[-2][2]
        # Done once: a second sweep finds nothing.
        again = client.inventory.ResourceOverdueReceipts(
            inventory_pb2.ResourceOverdueReceiptsRequest(), metadata=ADMIN, timeout=30
        )
        assert (list(again.overdue_receipt_ids), list(again.resourced_order_ids)) == ([], [])
        assert_stock_invariants(client, [order.order_id])


def usage(client: Client) -> dict[tuple[str, str], int]:
    """node_day_usage as (node, day) -> units, without the rows at zero."""
    with client.store.read() as conn:
        rows = conn.execute(sa.select(schema.node_day_usage)).all()
    return {(r.node_id, r.day): int(r.units) for r in rows if r.units}


def cancel(client: Client, order_id: str) -> None:
    client.checkout.CancelOrder(checkout_pb2.CancelOrderRequest(order_id=order_id), timeout=10)


def test_units_resourced_on_a_later_day_give_back_that_days_capacity(tmp_path: Path) -> None:
    """Re-sourced units count on the day they were re-sourced; cancelling the order gives
    each unit's capacity back to the day it used, not all of it to the placement day."""
    network = hand_network({("DC-NJ", "A"): 1})
    clock = Clock("2030-03-04")
    with running_server(sqlite_url(tmp_path), network, clock=clock) as client:
        quote = client.quote({"A": 2})
        cheapest = next(o for o in quote.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels)
        order = client.place(quote.quote_id, cheapest.option_id).order
        assert usage(client) == {("ST-PHL", "2030-03-04"): 2}
        # Another order the same day from Newark: its usage must survive the cancel below.
        other = client.quote({"B": 1})
        cheapest = next(o for o in other.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels)
        assert [p.node_id for p in cheapest.parcels] == ["DC-NJ"]
        client.place(other.quote_id, cheapest.option_id)
        clock.advance(1)
        reply = reject(client, order.order_id, "ST-PHL")
        moved = {
            p.node_id: sum(x.quantity for x in p.lines) for p in reply.order.allocation.parcels
        }
        assert "ST-PHL" not in moved and sum(moved.values()) == 2
        expected = {("DC-NJ", "2030-03-04"): 1}
        for node, qty in moved.items():
            expected[(node, "2030-03-05")] = expected.get((node, "2030-03-05"), 0) + qty
        assert usage(client) == expected  # Philadelphia's day-1 units given back
        cancel(client, order.order_id)
        assert usage(client) == {("DC-NJ", "2030-03-04"): 1}


def test_units_from_a_receipt_use_no_capacity_and_give_none_back(tmp_path: Path) -> None:
    network = hand_network({("DC-NJ", "B"): 0, ("DC-CHI", "B"): 0})
    clock = Clock("2030-03-04")
    with running_server(sqlite_url(tmp_path), network, clock=clock) as client:
        upsert_receipt(client, "PO-7", "DC-NJ", "B", 1, "2030-03-05")
        waiting = backorder(client, {"B": 1})
        assert usage(client) == {}  # waiting units use no capacity
        quote = client.quote({"A": 1})
        (nj,) = [o for o in quote.options if [p.node_id for p in o.parcels] == ["DC-NJ"]]
        client.place(quote.quote_id, nj.option_id)
        assert usage(client) == {("DC-NJ", "2030-03-04"): 1}
        assert list(receive(client, "PO-7", 1).covered_order_ids) == [waiting.order_id]
        with client.store.read() as conn:
            assert client.store.order_reservations(conn, waiting.order_id) == {("DC-NJ", "B"): 1}
        cancel(client, waiting.order_id)
        # The other order's unit still counts on Newark's day.
        assert usage(client) == {("DC-NJ", "2030-03-04"): 1}


@pytest.mark.parametrize("replacement", [True, False])
def test_a_backorder_whose_receipt_moved_is_resourced_at_place_order(
    tmp_path: Path, replacement: bool
) -> None:
    """The chosen option waits for PO-1 (due 03-06); before PlaceOrder PO-1 moves to 03-09.
    With PO-2 due at Chicago on 03-05 the order is re-sourced onto it within the promise
    (Chicago: 0 handling days + 3 ground days = 03-08); without it, FAILED_PRECONDITION
    names the receipt units that are gone."""
    network = hand_network({("DC-NJ", "B"): 0, ("DC-CHI", "B"): 0})
    clock = Clock("2030-03-04")
    with running_server(sqlite_url(tmp_path), network, clock=clock) as client:
        upsert_receipt(client, "PO-1", "DC-NJ", "B", 1, "2030-03-06")
        reply = client.quote({"A": 1, "B": 1}, allow_backorder=True)
        (option,) = reply.options
        # A from Newark now; B waits for PO-1 at Newark (day 2), then 1 + 1 days: day 4.
        assert [iso(w.inbound_date) for w in option.waiting] == ["2030-03-06"]
        assert option.delivery_days == 4
        if replacement:
            upsert_receipt(client, "PO-2", "DC-CHI", "B", 1, "2030-03-05")
        upsert_receipt(client, "PO-1", "DC-NJ", "B", 1, "2030-03-09")
        if not replacement:
            err = failing(client.place, reply.quote_id, option.option_id)
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert violations(err) == ["RECEIPT:DC-NJ/B@2030-03-06"]
            with client.store.read() as conn:
                assert conn.execute(sa.select(schema.orders)).all() == []
            return
        placed = client.place(reply.quote_id, option.option_id)
        assert placed.resourced
        order = placed.order
        assert iso(order.promised_date) == "2030-03-08"
        assert iso(order.allocation.delivery_date) <= iso(order.promised_date)
        assert [(w.sku, w.node_id, iso(w.inbound_date)) for w in order.allocation.waiting] == [
            ("B", "DC-CHI", "2030-03-05")
        ]
        assert [e.type for e in order.events] == ["placed", "resourced"]
        assert "wait for receipt(s) PO-2" in order.events[0].detail
        with client.store.read() as conn:
            assert client.store.order_inbound(conn, order.order_id) == {"PO-2": 1}
        assert_stock_invariants(client, [order.order_id])
