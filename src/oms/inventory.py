"""InventoryService: the network (nodes, SKUs, rate card) and stock, for admins.

Every write is one transaction and bumps the network version, so every
server process reloads its cached catalog on its next quote. Stock changes
go through the ledger (one row each, with the caller's reason).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from oms import receiving
from oms.convert import availability_proto, date_proto
from oms.errors import FailedPrecondition, Precondition, echo
from oms.settings import Settings
from oms.status import rpc, rpc_stream
from oms.store import Availability, ReceiptRow, Store
from oms.v1 import inventory_pb2, inventory_pb2_grpc
from oms.validation import MAX_UNITS, Violations

MAX_BATCH = 10_000
#: A unit heavier than 10 t is a data error, not freight this service prices.
MAX_WEIGHT_G = 10_000_000
KINDS = {inventory_pb2.NODE_KIND_DC: "dc", inventory_pb2.NODE_KIND_STORE: "store"}


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    @rpc
    def UpsertNodes(
        self, request: inventory_pb2.UpsertNodesRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.UpsertNodesResponse:
        v = Violations()
        if not 0 < len(request.nodes) <= MAX_BATCH:
            v.add("nodes", f"send between 1 and {MAX_BATCH} nodes")
            v.raise_if_any()
        rows: list[dict[str, Any]] = []
        for i, node in enumerate(request.nodes):
            f = f"nodes[{i}]"
            v.require_id(f"{f}.node_id", node.node_id)
            if node.kind not in KINDS:
                v.add(f"{f}.kind", "must be NODE_KIND_DC or NODE_KIND_STORE")
            v.location(f"{f}.location", node.HasField("location"), node.location)
            if node.daily_capacity_units > MAX_UNITS:
                v.add(f"{f}.daily_capacity_units", f"must be at most {MAX_UNITS}")
            if node.handling_days < 0:
                v.add(f"{f}.handling_days", f"must not be negative, got {node.handling_days}")
            currency = self.settings.currency
            handling_cost = v.money(f"{f}.handling_cost", node.handling_cost, currency)
            storage_cost = v.money(
                f"{f}.storage_cost_per_unit_day", node.storage_cost_per_unit_day, currency
            )
            if node.daily_capacity_units < 0:
                v.add(f"{f}.daily_capacity_units", "must not be negative (0 means unlimited)")
            rows.append(
                {
                    "node_id": node.node_id,
                    "kind": KINDS.get(node.kind, "dc"),
                    "lat": node.location.latitude,
                    "lon": node.location.longitude,
                    "handling_days": node.handling_days,
                    "handling_cost": handling_cost,
                    "storage_cost": storage_cost,
                    "daily_capacity_units": node.daily_capacity_units or None,
                }
            )
        v.raise_if_any()
        return inventory_pb2.UpsertNodesResponse(upserted=self.store.upsert_nodes(rows))

    @rpc
    def UpsertSkus(
        self, request: inventory_pb2.UpsertSkusRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.UpsertSkusResponse:
        v = Violations()
        if not 0 < len(request.skus) <= MAX_BATCH:
            v.add("skus", f"send between 1 and {MAX_BATCH} SKUs")
            v.raise_if_any()
        rows: list[dict[str, Any]] = []
        for i, sku in enumerate(request.skus):
            f = f"skus[{i}]"
            v.require_id(f"{f}.sku", sku.sku)
            grams = round(sku.weight_kg * 1000) if math.isfinite(sku.weight_kg) else 0
            if not 1 <= grams <= MAX_WEIGHT_G:
                v.add(
                    f"{f}.weight_kg",
                    f"must be between 0.001 and {MAX_WEIGHT_G // 1000} kg, got {sku.weight_kg!r}",
                )
                grams = 1
            if not (math.isfinite(sku.daily_demand) and 0 <= sku.daily_demand <= 1e9):
                v.add(
                    f"{f}.daily_demand", f"must be a number in [0, 1e9], got {sku.daily_demand!r}"
                )
            rows.append({"sku": sku.sku, "weight_g": grams, "daily_demand": sku.daily_demand})
        v.raise_if_any()
        return inventory_pb2.UpsertSkusResponse(upserted=self.store.upsert_skus(rows))

    @rpc
    def UpsertRateCard(
        self, request: inventory_pb2.UpsertRateCardRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.UpsertRateCardResponse:
        v = Violations()
        if not request.zones and not request.rates:
            v.add("rates", "send zones, rates or both")
        previous = -math.inf
        names: set[str] = set()
        for i, zone in enumerate(request.zones):
            v.require_id(f"zones[{i}].zone", zone.zone)
            if zone.zone in names:
                v.add(f"zones[{i}].zone", f"duplicate zone {echo(zone.zone)}")
            names.add(zone.zone)
            if not (math.isfinite(zone.max_km) and zone.max_km > previous and zone.max_km > 0):
                v.add(f"zones[{i}].max_km", "must be positive and strictly ascending")
            previous = zone.max_km
        seen: set[tuple[str, str]] = set()
        rates: list[tuple[str, str, int, int, int]] = []
        for i, rate in enumerate(request.rates):
            f = f"rates[{i}]"
            v.require_id(f"{f}.service", rate.service)
            v.require_id(f"{f}.zone", rate.zone)
            if request.zones and rate.zone not in names:
                v.add(f"{f}.zone", f"unknown zone {echo(rate.zone)}")
            if (rate.service, rate.zone) in seen:
                v.add(f"{f}.zone", f"duplicate rate for {rate.service}/{rate.zone}")
            seen.add((rate.service, rate.zone))
            base_price = v.money(f"{f}.base_price", rate.base_price, self.settings.currency)
            per_kg = v.money(f"{f}.per_kg", rate.per_kg, self.settings.currency)
            if rate.transit_days < 0:
                v.add(f"{f}.transit_days", f"must not be negative, got {rate.transit_days}")
            rates.append(
                (
                    rate.service,
                    rate.zone,
                    base_price,
                    per_kg,
                    rate.transit_days,
                )
            )
        v.raise_if_any()
        self.store.replace_rate_card([(z.zone, z.max_km) for z in request.zones], rates)
        return inventory_pb2.UpsertRateCardResponse(
            zones=len(request.zones), rates=len(request.rates)
        )

    def _position_checks(self, v: Violations, node_id: str, sku: str, reason: str) -> None:
        v.require_id("node_id", node_id)
        v.require_id("sku", sku)
        if not reason.strip():
            v.add("reason", "is required: every stock change is a ledger row with its reason")

    @rpc
    def SetStock(
        self, request: inventory_pb2.SetStockRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.SetStockResponse:
        v = Violations()
        self._position_checks(v, request.node_id, request.sku, request.reason)
        for name in ("on_hand", "safety_stock", "low_stock_threshold"):
            v.units(name, getattr(request, name))
        v.raise_if_any()
        position = self.store.set_stock(
            request.node_id,
            request.sku,
            request.on_hand,
            request.safety_stock,
            request.low_stock_threshold,
            request.reason,
        )
        return inventory_pb2.SetStockResponse(availability=availability_proto(position))

    @rpc
    def AdjustStock(
        self, request: inventory_pb2.AdjustStockRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.AdjustStockResponse:
        v = Violations()
        self._position_checks(v, request.node_id, request.sku, request.reason)
        if request.delta == 0:
            v.add("delta", "must not be zero")
        v.units("delta", request.delta, allow_negative=True)
        v.raise_if_any()
        position = self.store.adjust_stock(
            request.node_id, request.sku, request.delta, request.reason
        )
        return inventory_pb2.AdjustStockResponse(availability=availability_proto(position))

    @rpc
    def GetAvailability(
        self, request: inventory_pb2.GetAvailabilityRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.GetAvailabilityResponse:
        v = Violations()
        if not request.skus:
            v.add("skus", "name at least one SKU")
        if len(request.skus) > 1000 or len(request.node_ids) > 1000:
            v.add("skus", "name at most 1000 SKUs and 1000 nodes")
        v.raise_if_any()
        with self.store.read() as conn:
            positions = self.store.positions(conn, list(request.skus), list(request.node_ids))
        return inventory_pb2.GetAvailabilityResponse(
            positions=[availability_proto(p) for p in positions]
        )

    def _projected(self, skus: list[str], node_ids: list[str]) -> list[Availability]:
        """Positions with their open inbound units (so ``projected`` counts receipts)."""
        with self.store.read() as conn:
            positions = self.store.positions(conn, skus, node_ids)
            inbound = self.store.inbound_totals(conn, skus, node_ids)
        found = []
        for p in positions:
            due, waiting = inbound.get((p.node_id, p.sku), (0, 0))
            found.append(dataclasses.replace(p, inbound=due, inbound_reserved=waiting))
        return found

    def _low(self, skus: list[str], node_ids: list[str]) -> list[Availability]:
        """Positions at or below their threshold, counting inbound receipts (``projected``)."""
        return [p for p in self._projected(skus, node_ids) if p.is_low]

    @rpc
    def ListLowStockAlerts(
        self, request: inventory_pb2.ListLowStockAlertsRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ListLowStockAlertsResponse:
        low = self._low(list(request.skus), list(request.node_ids))
        return inventory_pb2.ListLowStockAlertsResponse(
            alerts=[inventory_pb2.LowStockAlert(position=availability_proto(p)) for p in low]
        )

    @rpc_stream
    def WatchLowStockAlerts(
        self, request: inventory_pb2.WatchLowStockAlertsRequest, context: grpc.ServicerContext
    ) -> Iterator[inventory_pb2.WatchLowStockAlertsResponse]:
        """Current alerts first, then each raise or clear as the positions change."""
        gone = threading.Event()
        context.add_callback(gone.set)
        skus, node_ids = list(request.skus), list(request.node_ids)
        active: dict[tuple[str, str], Availability] = {}
        while context.is_active():
            current = {(p.node_id, p.sku): p for p in self._low(skus, node_ids)}
            for key in sorted(current.keys() - active.keys()):
                yield inventory_pb2.WatchLowStockAlertsResponse(
                    alert=inventory_pb2.LowStockAlert(position=availability_proto(current[key]))
                )
            if active.keys() - current.keys():
                now = {(p.node_id, p.sku): p for p in self._projected(skus, node_ids)}
                for key in sorted(active.keys() - current.keys()):
                    position = now.get(key, active[key])
                    yield inventory_pb2.WatchLowStockAlertsResponse(
                        alert=inventory_pb2.LowStockAlert(position=availability_proto(position)),
                        cleared=True,
                    )
            active = current
            if gone.wait(self.settings.alert_poll_s):
                break

    # -- inbound receipts ----------------------------------------------------------

    @rpc
    def UpsertInboundReceipts(
        self, request: inventory_pb2.UpsertInboundReceiptsRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.UpsertInboundReceiptsResponse:
        v = Violations()
        if not 0 < len(request.receipts) <= MAX_BATCH:
            v.add("receipts", f"send between 1 and {MAX_BATCH} receipts")
            v.raise_if_any()
        seen: set[str] = set()
        expected: list[str] = []  # ISO dates, as the store keeps them
        for i, receipt in enumerate(request.receipts):
            f = f"receipts[{i}]"
            v.require_id(f"{f}.receipt_id", receipt.receipt_id)
            if receipt.receipt_id in seen:
                v.add(f"{f}.receipt_id", f"duplicate receipt {echo(receipt.receipt_id)}")
            seen.add(receipt.receipt_id)
            v.require_id(f"{f}.node_id", receipt.node_id)
            v.require_id(f"{f}.sku", receipt.sku)
            if receipt.quantity <= 0:
                v.add(f"{f}.quantity", f"must be positive, got {receipt.quantity}")
            v.units(f"{f}.quantity", receipt.quantity)
            present = receipt.HasField("expected_date")
            expected.append(v.date(f"{f}.expected_date", present, receipt.expected_date))
        v.raise_if_any()
        with self.store.write() as conn:
            for receipt, due in zip(request.receipts, expected, strict=True):
                old = self.store.upsert_receipt(
                    conn,
                    receipt.receipt_id,
                    receipt.node_id,
                    receipt.sku,
                    receipt.quantity,
                    due,
                )
                if old is None or old.reserved == 0:
                    continue
                waiting = self.store.receipt_orders(conn, old.receipt_id)  # newest first
                if due > old.expected_date:
                    why = f"moved from {old.expected_date} to {due}"
                    failed = [order_id for order_id, _ in waiting]
                elif receipt.quantity < old.reserved:
                    # Newest orders first, until what is left fits the new quantity.
                    why = f"cut from {old.qty} to {receipt.quantity} unit(s)"
                    failed, excess = [], old.reserved - receipt.quantity
                    for order_id, qty in waiting:
                        if excess <= 0:
                            break
                        failed.append(order_id)
                        excess -= qty
                else:
                    continue
                self.store.mark_for_resourcing(conn, old, failed, receiving.LATE, why)
        resourced = receiving.resource_pending(
            self.store, self.settings, [r.receipt_id for r in request.receipts]
        )
        with self.store.read() as conn:
            rows = self.store.receipts(
                conn, receipt_ids=[r.receipt_id for r in request.receipts], open_only=False
            )
        return inventory_pb2.UpsertInboundReceiptsResponse(
            receipts=[receipt_proto(r) for r in rows], resourced_order_ids=resourced
        )

    @rpc
    def ListInboundReceipts(
        self, request: inventory_pb2.ListInboundReceiptsRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ListInboundReceiptsResponse:
        v = Violations()
        if len(request.skus) > 1000 or len(request.node_ids) > 1000:
            v.add("skus", "name at most 1000 SKUs and 1000 nodes")
        v.raise_if_any()
        with self.store.read() as conn:
            rows = self.store.receipts(conn, list(request.skus), list(request.node_ids))
        return inventory_pb2.ListInboundReceiptsResponse(receipts=[receipt_proto(r) for r in rows])

    @rpc
    def CancelInboundReceipt(
        self, request: inventory_pb2.CancelInboundReceiptRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.CancelInboundReceiptResponse:
        v = Violations()
        v.require_id("receipt_id", request.receipt_id)
        if not request.reason.strip():
            v.add("reason", "is required: orders waiting for the receipt record it")
        v.raise_if_any()
        with self.store.write() as conn:
            old = self.store.cancel_receipt(conn, request.receipt_id)
            if old.state != "OPEN":
                raise FailedPrecondition(
                    f"receipt {request.receipt_id!r} is already {old.state.lower()}",
                    [Precondition("RECEIPT", request.receipt_id, f"is {old.state}")],
                )
            self.store.mark_for_resourcing(
                conn,
                old,
                [order_id for order_id, _ in self.store.receipt_orders(conn, old.receipt_id)],
                receiving.CANCELLED,
                f"was cancelled: {request.reason}",
            )
        resourced = receiving.resource_pending(self.store, self.settings, [old.receipt_id])
        with self.store.read() as conn:
            (row,) = self.store.receipts(conn, receipt_ids=[old.receipt_id], open_only=False)
        return inventory_pb2.CancelInboundReceiptResponse(
            receipt=receipt_proto(row), resourced_order_ids=resourced
        )

    @rpc
    def ReceiveInboundReceipt(
        self, request: inventory_pb2.ReceiveInboundReceiptRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ReceiveInboundReceiptResponse:
        v = Violations()
        v.require_id("receipt_id", request.receipt_id)
        if request.received_quantity <= 0:
            v.add(
                "received_quantity",
                f"must be positive, got {request.received_quantity} (nothing arrived: "
                "cancel the receipt or let it go overdue)",
            )
        v.units("received_quantity", request.received_quantity)
        if not request.reason.strip():
            v.add("reason", "is required: the stock ledger row records it")
        v.raise_if_any()
        done = receiving.receive(
            self.store,
            self.settings,
            request.receipt_id,
            request.received_quantity,
            request.reason,
        )
        return inventory_pb2.ReceiveInboundReceiptResponse(
            receipt=receipt_proto(done.receipt),
            availability=availability_proto(done.position),
            covered_order_ids=done.covered,
            resourced_order_ids=done.resourced,
        )

    @rpc
    def ResourceOverdueReceipts(
        self, request: inventory_pb2.ResourceOverdueReceiptsRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ResourceOverdueReceiptsResponse:
        done = receiving.resource_overdue_receipts(self.store, self.settings)
        return inventory_pb2.ResourceOverdueReceiptsResponse(
            overdue_receipt_ids=done.receipts, resourced_order_ids=done.resourced
        )


RECEIPT_STATES = {
    "OPEN": inventory_pb2.INBOUND_RECEIPT_STATE_OPEN,
    "CANCELLED": inventory_pb2.INBOUND_RECEIPT_STATE_CANCELLED,
    "RECEIVED": inventory_pb2.INBOUND_RECEIPT_STATE_RECEIVED,
}


def receipt_proto(row: ReceiptRow) -> inventory_pb2.InboundReceipt:
    return inventory_pb2.InboundReceipt(
        receipt_id=row.receipt_id,
        node_id=row.node_id,
        sku=row.sku,
        quantity=row.qty,
        expected_date=date_proto(row.expected_date),
        reserved=row.reserved,
        state=RECEIPT_STATES.get(row.state, inventory_pb2.INBOUND_RECEIPT_STATE_UNSPECIFIED),
        received_quantity=row.received_qty or 0,
    )
