"""FulfilmentService: release, ship, deliver and return, each one transaction.

Shipping turns an order's reservations into ledger rows that take the units
off on hand. A return goes to the node it is cheapest to send the units to
(the cheapest offered service for the customer-to-node zone at the units'
weight, plus the node's handling cost; ties to the first node), and the
units are added to that node's on hand.

A node that will not ship (``RejectOrder``) or cannot find units
(``ReportShortage``) hands them back: :mod:`oms.resourcing` re-sources them.
An order whose units still wait for an inbound receipt cannot ship yet.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence

import grpc
import numpy as np

from oms import lifecycle, paging
from oms.convert import PROTO_TO_SHIPMENT_STATE, money, order_proto, shipment_proto
from oms.errors import FailedPrecondition, NotFound, PermissionDenied, Precondition, echo
from oms.interceptors import node_scope
from oms.resourcing import Resourcer
from oms.settings import Settings
from oms.shipping import Shipping
from oms.status import rpc, rpc_stream
from oms.store import Catalog, OrderRow, RecordedReturn, Store, outbox
from oms.store import shipment_records as sh
from oms.v1 import common_pb2, fulfilment_pb2, fulfilment_pb2_grpc
from oms.validation import Violations
from sourcing.costs import haversine_km, zone_of
from sourcing.model import PICKUP_SERVICE, TRANSFER_SERVICE, NodeKind, per_kg_charge
from sourcing.orders import MAX_ORDER_LINES

#: Services that never carry a parcel from a customer: the node-to-node transfer lane
#: and the in-store pickup pseudo-service.
NOT_FOR_CUSTOMERS = (TRANSFER_SERVICE, PICKUP_SERVICE)
#: Events read per poll of a feed.
FEED_BATCH = 200


def cheapest_return_node(
    catalog: Catalog, lat: float, lon: float, weight_g: int
) -> tuple[str, int]:
    """(node id, cost in millicents) of the cheapest node to send ``weight_g`` grams to.

    Only customer services count: the ``transfer`` lane moves stock between nodes
    and is never offered to a customer sending a return.
    """
    distance = haversine_km(catalog.lat, catalog.lon, lat, lon)
    zone = zone_of(catalog, distance)
    # services x nodes: base + per_kg * kg, in millicents (the per-kg charge rounded once).
    price = catalog.base_price[:, zone] + per_kg_charge(catalog.per_kg[:, zone], weight_g)
    customer = np.array([s not in NOT_FOR_CUSTOMERS for s in catalog.service_ids], dtype=np.bool_)
    price = np.where(
        catalog.offered[:, zone] & customer[:, None], price, np.iinfo(np.int64).max // 4
    )
    cheapest = price.min(axis=0)
    total = cheapest + catalog.handling_cost
    best = int(np.argmin(total))
    if cheapest[best] >= np.iinfo(np.int64).max // 4:
        raise FailedPrecondition(
            "no customer service of the rate card reaches any node from the customer",
            [Precondition("RETURN_ROUTE", "rate card", "no service offered for a return")],
        )
    return catalog.node_ids[best], int(total[best])


def drop_off_store(catalog: Catalog, request: fulfilment_pb2.ReturnItemsRequest) -> str:
    """The store a return is dropped off at: the one named (it must be a store), or the
    store nearest to ``drop_off_near`` (great-circle distance; ties to the first)."""
    stores = [i for i, kind in enumerate(catalog.node_kinds) if kind == NodeKind.STORE]
    if request.drop_off_store_id:
        i = catalog.node_index.get(request.drop_off_store_id)
        if i is None:
            raise NotFound("node", request.drop_off_store_id)
        if i not in stores:
            raise FailedPrecondition(
                f"node {echo(request.drop_off_store_id)} is not a store: returns are dropped off"
                " at stores",
                [Precondition("DROP_OFF", request.drop_off_store_id, "not a store")],
            )
        return request.drop_off_store_id
    if not stores:
        raise FailedPrecondition(
            "the network has no store to drop a return off at",
            [Precondition("DROP_OFF", "network", "no store")],
        )
    near = request.drop_off_near
    distance = haversine_km(catalog.lat[stores], catalog.lon[stores], near.latitude, near.longitude)
    return catalog.node_ids[stores[int(np.argmin(distance))]]


class FulfilmentServicer(fulfilment_pb2_grpc.FulfilmentServiceServicer):
    def __init__(
        self, store: Store, settings: Settings, node_tokens: Mapping[bytes, str] | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.node_tokens = dict(node_tokens or {})
        self.shipping = Shipping(store, settings)

    def _proto(self, row: OrderRow) -> common_pb2.Order:
        return order_proto(row, row.allocation.start, self.settings.currency)

    def _order_id(self, order_id: str) -> str:
        v = Violations()
        v.require_id("order_id", order_id)
        v.raise_if_any()
        return order_id

    def _scope(self, context: grpc.ServicerContext) -> str | None:
        """The node the caller's token is limited to (None: the admin token)."""
        return node_scope(
            context.invocation_metadata(), self.settings.admin_token, self.node_tokens
        )

    def _admin_only(self, context: grpc.ServicerContext, what: str) -> None:
        if self._scope(context) is not None:
            raise PermissionDenied(f"{what} acts on a whole order: a node token cannot call it")

    @rpc
    def ReleaseOrder(
        self, request: fulfilment_pb2.ReleaseOrderRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ReleaseOrderResponse:
        row = self.shipping.release_order(self._order_id(request.order_id))
        return fulfilment_pb2.ReleaseOrderResponse(order=self._proto(row))

    @rpc
    def ConfirmShipment(
        self, request: fulfilment_pb2.ConfirmShipmentRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ConfirmShipmentResponse:
        if not request.shipment_id:
            self._admin_only(context, "ConfirmShipment without a shipment_id")
            row = self.shipping.ship_order(self._order_id(request.order_id))
            return fulfilment_pb2.ConfirmShipmentResponse(order=self._proto(row))
        v = Violations()
        v.require_id("shipment_id", request.shipment_id)
        if not request.carrier.strip():
            v.add("carrier", "is required with a shipment_id: the customer tracks the parcel")
        if not request.tracking_number.strip():
            v.add("tracking_number", "is required with a shipment_id")
        units = self._units(v, request.lines, "lines")
        v.raise_if_any()
        done = self.shipping.ship(
            request.shipment_id,
            self._scope(context),
            request.carrier.strip(),
            request.tracking_number.strip(),
            units,
        )
        response = fulfilment_pb2.ConfirmShipmentResponse(order=self._proto(done.order))
        if done.shipment is not None:
            response.shipment.CopyFrom(shipment_proto(done.shipment))
        if done.remainder is not None:
            response.remainder.CopyFrom(shipment_proto(done.remainder))
        return response

    @rpc
    def ConfirmDelivery(
        self, request: fulfilment_pb2.ConfirmDeliveryRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ConfirmDeliveryResponse:
        if not request.shipment_id:
            self._admin_only(context, "ConfirmDelivery without a shipment_id")
            row = self.shipping.deliver_order(self._order_id(request.order_id))
            return fulfilment_pb2.ConfirmDeliveryResponse(order=self._proto(row))
        v = Violations()
        v.require_id("shipment_id", request.shipment_id)
        v.raise_if_any()
        done = self.shipping.deliver(request.shipment_id, self._scope(context))
        response = fulfilment_pb2.ConfirmDeliveryResponse(order=self._proto(done.order))
        if done.shipment is not None:
            response.shipment.CopyFrom(shipment_proto(done.shipment))
        return response

    @staticmethod
    def _units(v: Violations, lines: Sequence[common_pb2.CartLine], field: str) -> dict[str, int]:
        if len(lines) > MAX_ORDER_LINES:
            v.add(field, f"{len(lines)} lines exceed the limit of {MAX_ORDER_LINES}")
            v.raise_if_any()
        units: dict[str, int] = {}
        for i, line in enumerate(lines):
            v.require_id(f"{field}[{i}].sku", line.sku)
            if line.quantity <= 0:
                v.add(f"{field}[{i}].quantity", f"must be positive, got {line.quantity}")
            units[line.sku] = units.get(line.sku, 0) + max(int(line.quantity), 0)
        return units

    # -- the node API (issue 16) -------------------------------------------------------

    @rpc
    def AcceptShipment(
        self, request: fulfilment_pb2.AcceptShipmentRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.AcceptShipmentResponse:
        v = Violations()
        v.require_id("shipment_id", request.shipment_id)
        v.raise_if_any()
        shipment = self.shipping.accept(request.shipment_id, self._scope(context))
        return fulfilment_pb2.AcceptShipmentResponse(shipment=shipment_proto(shipment))

    @rpc
    def RejectShipment(
        self, request: fulfilment_pb2.RejectShipmentRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.RejectShipmentResponse:
        v = Violations()
        v.require_id("shipment_id", request.shipment_id)
        if not request.reason.strip():
            v.add("reason", "is required: a customer-service agent reads it in the order's events")
        v.raise_if_any()
        outcome, shipment = self.shipping.reject(
            request.shipment_id, self._scope(context), request.reason.strip()
        )
        return fulfilment_pb2.RejectShipmentResponse(
            order=self._proto(outcome.order),
            shipment=shipment_proto(shipment),
            promise_kept=outcome.promise_kept,
        )

    def _shipment_filter(
        self,
        v: Violations,
        node_id: str,
        state: common_pb2.ShipmentState.ValueType,
        context: grpc.ServicerContext,
    ) -> tuple[str | None, str | None]:
        scope = self._scope(context)
        if node_id:
            v.require_id("node_id", node_id)
        if scope is not None and node_id and node_id != scope:
            raise PermissionDenied(f"this node token is for node {scope!r}, not another node's")
        if state != common_pb2.SHIPMENT_STATE_UNSPECIFIED and state not in PROTO_TO_SHIPMENT_STATE:
            v.add("state", f"unknown shipment state {state}")
        return (node_id or scope), PROTO_TO_SHIPMENT_STATE.get(state)

    @rpc
    def ListShipments(
        self, request: fulfilment_pb2.ListShipmentsRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ListShipmentsResponse:
        v = Violations()
        size = paging.page_size(request.page_size, v)
        node, state = self._shipment_filter(v, request.node_id, request.state, context)
        if node is None and not request.late_only:
            v.add("node_id", "is required (or late_only): a node lists its own shipments")
        v.raise_if_any()
        filter_ = f"node={node or ''};state={state or ''};late={request.late_only}"
        after = paging.decode_token(request.page_token, filter_) if request.page_token else None
        with self.store.read() as conn:
            rows = self.store.shipments.search(
                conn,
                node_id=node,
                state=state,
                late_only=request.late_only,
                after=after,
                limit=size + 1,
            )
        shipments, token = paging.page(
            rows, size, shipment_proto, lambda s: (s.created_at, s.shipment_id), filter_
        )
        return fulfilment_pb2.ListShipmentsResponse(shipments=shipments, next_page_token=token)

    @rpc_stream
    def WatchShipments(
        self, request: fulfilment_pb2.WatchShipmentsRequest, context: grpc.ServicerContext
    ) -> Iterator[fulfilment_pb2.WatchShipmentsResponse]:
        """Every change to the node's shipments after the cursor, as it commits."""
        v = Violations()
        node, _ = self._shipment_filter(
            v, request.node_id, common_pb2.SHIPMENT_STATE_UNSPECIFIED, context
        )
        if node is None:
            v.add("node_id", "is required: the node whose work to follow")
        if request.after_cursor < 0:
            v.add("after_cursor", f"must not be negative, got {request.after_cursor}")
        v.raise_if_any()
        assert node is not None
        gone = threading.Event()
        context.add_callback(gone.set)
        cursor = int(request.after_cursor)
        while context.is_active():
            with self.store.read() as conn:
                events = outbox.events_after(conn, cursor, FEED_BATCH, node_id=node)
                shipments = {
                    sid: self.store.shipments.get(conn, sid)
                    for sid in {e.shipment_id for e in events if e.shipment_id}
                }
            for event in events:
                cursor = event.sequence
                if event.shipment_id is None:
                    continue
                yield fulfilment_pb2.WatchShipmentsResponse(
                    shipment=shipment_proto(shipments[event.shipment_id]),
                    event_type=event.type,
                    cursor=event.sequence,
                )
            if len(events) < FEED_BATCH and gone.wait(self.settings.alert_poll_s):
                break

    @rpc
    def ReturnItems(
        self, request: fulfilment_pb2.ReturnItemsRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ReturnItemsResponse:
        v = Violations()
        v.require_id("order_id", request.order_id)
        if len(request.lines) == 0:
            v.add("lines", "name at least one SKU and quantity to return")
        if len(request.lines) > MAX_ORDER_LINES:
            v.add("lines", f"{len(request.lines)} lines exceed the limit of {MAX_ORDER_LINES}")
            v.raise_if_any()
        wanted: dict[str, int] = {}
        for i, line in enumerate(request.lines):
            if not line.sku:
                v.add(f"lines[{i}].sku", "is required")
            if line.quantity <= 0:
                v.add(f"lines[{i}].quantity", f"must be positive, got {line.quantity}")
            wanted[line.sku] = wanted.get(line.sku, 0) + max(int(line.quantity), 0)
        v.raise_if_any()
        drop_off = request.drop_off_store_id or request.HasField("drop_off_near")
        if request.drop_off_store_id:
            v.require_id("drop_off_store_id", request.drop_off_store_id)
            if request.HasField("drop_off_near"):
                v.add(
                    "drop_off_near", "name a drop-off store or a place to find one near, not both"
                )
        elif request.HasField("drop_off_near"):
            v.location("drop_off_near", True, request.drop_off_near)
        v.raise_if_any()
        catalog = self.store.catalog()
        with self.store.write() as conn:
            row = self.store.get_order(conn, request.order_id, for_update=True)
            if request.idempotency_key:
                done = self.store.return_by_key(conn, row.order_id, request.idempotency_key)
                if done is not None:
                    return self._replay_return(row, done, wanted, request.idempotency_key)
            lifecycle.plan("return", row.order_id, row.state)
            shipped = sh.lines_by_sku(s for s in row.shipments if s.state in sh.LEFT)
            returned = self.store.returned_units(conn, row.order_id)
            problems = [
                Precondition(
                    "RETURN",
                    sku,
                    f"returning {qty} but {shipped.get(sku, 0) - returned.get(sku, 0)} "
                    "shipped unit(s) are not yet returned",
                )
                for sku, qty in sorted(wanted.items())
                if qty > shipped.get(sku, 0) - returned.get(sku, 0)
            ]
            if problems:
                raise FailedPrecondition(
                    f"order {row.order_id!r} did not ship these units", problems
                )
            if drop_off:
                node, cost = drop_off_store(catalog, request), 0
            else:
                weight = sum(
                    int(catalog.weight_g[catalog.sku_index[sku]]) * qty
                    for sku, qty in wanted.items()
                    if sku in catalog.sku_index
                )
                node, cost = cheapest_return_node(catalog, row.dest_lat, row.dest_lon, weight)
            parts = sh.attribute_return(
                row.shipments, self.store.returned_by_shipment(conn, row.order_id), wanted
            )
            self.store.record_return(
                conn, row.order_id, parts, node, request.idempotency_key or None, cost
            )
            units = ", ".join(f"{qty} x {sku}" for sku, qty in sorted(wanted.items()))
            how = "dropped off at store" if drop_off else "restocked at"
            origin = sorted({sid for _, _, sid in parts if sid})
            self.store.add_event(
                conn,
                row.order_id,
                "returned",
                f"{units} {how} {node}" + (f" (from {', '.join(origin)})" if origin else ""),
            )
            row = self.store.get_order(conn, row.order_id)
        return fulfilment_pb2.ReturnItemsResponse(
            order=self._proto(row),
            return_node_id=node,
            return_cost=money(cost, self.settings.currency),
            shipment_ids=origin,
            dropped_off=bool(drop_off),
        )

    def _replay_return(
        self, row: OrderRow, done: RecordedReturn, wanted: dict[str, int], key: str
    ) -> fulfilment_pb2.ReturnItemsResponse:
        """A retry answers what the first call did: its node and its cost (and the order now).

        The same key for other units is another request, not a retry.
        """
        if done.units != wanted:
            sent = ", ".join(f"{qty} x {sku}" for sku, qty in sorted(done.units.items()))
            raise FailedPrecondition(
                f"idempotency key {echo(key)} was used for another return of order "
                f"{row.order_id!r} ({sent})",
                [Precondition("IDEMPOTENCY_KEY", key, "used for another return")],
            )
        response = fulfilment_pb2.ReturnItemsResponse(
            order=self._proto(row), return_node_id=done.node_id
        )
        if done.cost is not None:
            response.return_cost.CopyFrom(money(done.cost, self.settings.currency))
        return response

    # -- a node hands units back: re-sourcing ------------------------------------

    def _node_checks(self, v: Violations, order_id: str, node_id: str, reason: str) -> None:
        v.require_id("order_id", order_id)
        v.require_id("node_id", node_id)
        if not reason.strip():
            v.add("reason", "is required: a customer-service agent reads it in the order's events")

    @rpc
    def RejectOrder(
        self, request: fulfilment_pb2.RejectOrderRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.RejectOrderResponse:
        v = Violations()
        self._node_checks(v, request.order_id, request.node_id, request.reason)
        v.raise_if_any()
        outcome = Resourcer(self.store, self.settings).reject(
            request.order_id, request.node_id, request.reason
        )
        return fulfilment_pb2.RejectOrderResponse(
            order=self._proto(outcome.order), promise_kept=outcome.promise_kept
        )

    @rpc
    def ReportShortage(
        self, request: fulfilment_pb2.ReportShortageRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ReportShortageResponse:
        v = Violations()
        self._node_checks(v, request.order_id, request.node_id, request.reason)
        if len(request.lines) == 0:
            v.add("lines", "name at least one SKU and the quantity missing")
        if len(request.lines) > MAX_ORDER_LINES:
            v.add("lines", f"{len(request.lines)} lines exceed the limit of {MAX_ORDER_LINES}")
            v.raise_if_any()
        missing: dict[str, int] = {}
        for i, line in enumerate(request.lines):
            v.require_id(f"lines[{i}].sku", line.sku)
            if line.quantity <= 0:
                v.add(f"lines[{i}].quantity", f"must be positive, got {line.quantity}")
            missing[line.sku] = missing.get(line.sku, 0) + max(int(line.quantity), 0)
        v.raise_if_any()
        outcome = Resourcer(self.store, self.settings).shortage(
            request.order_id, request.node_id, missing, request.reason
        )
        return fulfilment_pb2.ReportShortageResponse(
            order=self._proto(outcome.order), promise_kept=outcome.promise_kept
        )
