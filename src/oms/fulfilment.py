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

import grpc
import numpy as np

from oms import lifecycle
from oms.convert import money, order_proto
from oms.errors import FailedPrecondition, Precondition, echo
from oms.resourcing import Resourcer
from oms.settings import Settings
from oms.status import rpc
from oms.store import Catalog, OrderRow, RecordedReturn, Store, units_of
from oms.v1 import common_pb2, fulfilment_pb2, fulfilment_pb2_grpc
from oms.validation import Violations
from sourcing.costs import haversine_km, zone_of
from sourcing.model import PICKUP_SERVICE, TRANSFER_SERVICE, per_kg_charge
from sourcing.orders import MAX_ORDER_LINES

#: Services that never carry a parcel from a customer: the node-to-node transfer lane
#: and the in-store pickup pseudo-service.
NOT_FOR_CUSTOMERS = (TRANSFER_SERVICE, PICKUP_SERVICE)


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


class FulfilmentServicer(fulfilment_pb2_grpc.FulfilmentServiceServicer):
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def _proto(self, row: OrderRow) -> common_pb2.Order:
        return order_proto(row, row.allocation.start, self.settings.currency)

    def _move(self, order_id: str, action: str) -> common_pb2.Order:
        v = Violations()
        v.require_id("order_id", order_id)
        v.raise_if_any()
        with self.store.write() as conn:
            row = self.store.get_order(conn, order_id, for_update=True)
            target = lifecycle.plan(action, order_id, row.state)
            if target is not None:
                detail = ""
                if action == "ship":
                    waiting = self.store.order_inbound(conn, row.order_id)
                    if waiting:
                        raise FailedPrecondition(
                            f"order {order_id!r} still waits for inbound receipt(s)",
                            [
                                Precondition("RECEIPT", rid, f"{qty} unit(s) not received yet")
                                for rid, qty in sorted(waiting.items())
                            ],
                        )
                    units = self.store.consume_reservations(conn, row)
                    detail = (
                        f"{sum(units.values())} unit(s) left {len({n for n, _ in units})} node(s)"
                    )
                elif action == "release":
                    nodes = sorted({p.node_id for p in row.allocation.parcels})
                    detail = f"sent to {', '.join(nodes)}"
                elif action == "deliver":
                    detail = "delivered to the customer"
                self.store.set_state(conn, row, target)
                event = {"release": "released", "ship": "shipped", "deliver": "delivered"}[action]
                self.store.add_event(conn, order_id, event, detail)
            row = self.store.get_order(conn, order_id)
        return self._proto(row)

    @rpc
    def ReleaseOrder(
        self, request: fulfilment_pb2.ReleaseOrderRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ReleaseOrderResponse:
        return fulfilment_pb2.ReleaseOrderResponse(order=self._move(request.order_id, "release"))

    @rpc
    def ConfirmShipment(
        self, request: fulfilment_pb2.ConfirmShipmentRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ConfirmShipmentResponse:
        return fulfilment_pb2.ConfirmShipmentResponse(order=self._move(request.order_id, "ship"))

    @rpc
    def ConfirmDelivery(
        self, request: fulfilment_pb2.ConfirmDeliveryRequest, context: grpc.ServicerContext
    ) -> fulfilment_pb2.ConfirmDeliveryResponse:
        return fulfilment_pb2.ConfirmDeliveryResponse(order=self._move(request.order_id, "deliver"))

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
        catalog = self.store.catalog()
        with self.store.write() as conn:
            row = self.store.get_order(conn, request.order_id, for_update=True)
            if request.idempotency_key:
                done = self.store.return_by_key(conn, row.order_id, request.idempotency_key)
                if done is not None:
                    return self._replay_return(row, done, wanted, request.idempotency_key)
            lifecycle.plan("return", row.order_id, row.state)
            shipped: dict[str, int] = {}
            for (_, sku), qty in units_of(row.allocation).items():
                shipped[sku] = shipped.get(sku, 0) + qty
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
            weight = sum(
                int(catalog.weight_g[catalog.sku_index[sku]]) * qty
                for sku, qty in wanted.items()
                if sku in catalog.sku_index
            )
            node, cost = cheapest_return_node(catalog, row.dest_lat, row.dest_lon, weight)
            self.store.record_return(
                conn, row.order_id, wanted, node, request.idempotency_key or None, cost
            )
            units = ", ".join(f"{qty} x {sku}" for sku, qty in sorted(wanted.items()))
            self.store.add_event(conn, row.order_id, "returned", f"{units} restocked at {node}")
            row = self.store.get_order(conn, row.order_id)
        return fulfilment_pb2.ReturnItemsResponse(
            order=self._proto(row),
            return_node_id=node,
            return_cost=money(cost, self.settings.currency),
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
