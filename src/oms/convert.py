"""Translation between protobuf messages, stored documents and ``sourcing`` types.

The service stores each quoted option as a :class:`~oms.store.Plan` (money in
exact millicents, as the engine computes it; days counted from the quote date) and converts to
protobuf only at the edge: ``google.type.Money`` carries millicents exactly
(units + nanos, a millicent being 10,000 nanos), ``google.type.Date`` the days.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2, money_pb2

from oms.store import Availability, OrderRow, Plan, PlanLine, PlannedParcel
from oms.store import shipment_records as sh
from oms.v1 import common_pb2, inventory_pb2
from sourcing.model import MILLICENTS_PER_UNIT, Label, Option

#: google.type.Money's nanos (1e-9 units) per millicent (1e-5 units).
NANOS_PER_MILLICENT = 10_000

LABEL_TO_PROTO = {
    Label.FASTEST: common_pb2.OPTION_LABEL_FASTEST,
    Label.SINGLE_PARCEL: common_pb2.OPTION_LABEL_SINGLE_PARCEL,
    Label.CHEAPEST: common_pb2.OPTION_LABEL_CHEAPEST,
    Label.BALANCED: common_pb2.OPTION_LABEL_BALANCED,
    Label.COLLECT: common_pb2.OPTION_LABEL_COLLECT,
}
STATE_TO_PROTO = {
    "PLACED": common_pb2.ORDER_STATE_PLACED,
    "RELEASED": common_pb2.ORDER_STATE_RELEASED,
    "SHIPPED": common_pb2.ORDER_STATE_SHIPPED,
    "DELIVERED": common_pb2.ORDER_STATE_DELIVERED,
    "CANCELLED": common_pb2.ORDER_STATE_CANCELLED,
    "PARTIALLY_SHIPPED": common_pb2.ORDER_STATE_PARTIALLY_SHIPPED,
    "PARTIALLY_DELIVERED": common_pb2.ORDER_STATE_PARTIALLY_DELIVERED,
}
PROTO_TO_STATE = {v: k for k, v in STATE_TO_PROTO.items()}
SHIPMENT_STATE_TO_PROTO = {
    name: common_pb2.ShipmentState.Value(f"SHIPMENT_STATE_{name}") for name in sh.STATES
}
PROTO_TO_SHIPMENT_STATE = {v: k for k, v in SHIPMENT_STATE_TO_PROTO.items()}


def money(millicents: int, currency: str) -> money_pb2.Money:
    """Exact millicents as google.type.Money (nanos carry the sign of units, as it requires)."""
    units, rest = divmod(abs(int(millicents)), MILLICENTS_PER_UNIT)
    sign = -1 if millicents < 0 else 1
    return money_pb2.Money(
        currency_code=currency, units=sign * units, nanos=sign * rest * NANOS_PER_MILLICENT
    )


def millicents_of(value: money_pb2.Money) -> int:
    """google.type.Money as millicents; the caller has checked it (``Violations.money``)."""
    return int(value.units) * MILLICENTS_PER_UNIT + int(value.nanos) // NANOS_PER_MILLICENT


@functools.lru_cache(maxsize=4096)
def _ymd(iso: str) -> tuple[int, int, int]:
    day = date.fromisoformat(iso)
    return day.year, day.month, day.day


def date_proto(iso: str) -> date_pb2.Date:
    year, month, day = _ymd(iso)  # an order's every shipment repeats a few days
    return date_pb2.Date(year=year, month=month, day=day)


def iso_of(value: date_pb2.Date) -> str:
    """A full google.type.Date as an ISO date; ValueError for a partial or impossible one."""
    return date(value.year, value.month, value.day).isoformat()


def timestamp(epoch_s: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(epoch_s * 1e9))
    return ts


def day_after(start: str, days: int) -> str:
    return (date.fromisoformat(start) + timedelta(days=int(days))).isoformat()


def days_between(start: str, end: str) -> int:
    return (date.fromisoformat(end) - date.fromisoformat(start)).days


def today(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).date().isoformat()


def plan_of(option: Option, option_id: str) -> Plan:
    """An option as the record the store keeps (exact millicents)."""
    ev = option.evaluation
    gap = option.proof.gap
    return Plan(
        option_id=option_id,
        labels=tuple(label.value for label in option.labels),
        cost=ev.cost,
        shipping=ev.shipping,
        handling=ev.handling,
        storage_credit=ev.storage_credit,
        opportunity=option.opportunity,
        delivery_days=ev.delivery_days,
        status=option.proof.status,
        gap=gap if math.isfinite(gap) else None,
        method=option.proof.method,
        pickup=option.pickup,
        parcels=tuple(
            PlannedParcel(
                node_id=p.node_id,
                service=p.service,
                zone=p.zone,
                distance_km=round(p.distance_km, 3),
                weight_g=int(p.weight_g),
                shipping=p.shipping,
                handling=p.handling,
                storage_credit=p.storage_credit,
                cost=p.cost,
                arrival_days=p.arrival_days,
                inbound_day=p.inbound_day,
                lines=tuple(PlanLine(pl.line, pl.sku, pl.qty) for pl in p.lines),
            )
            for p in ev.parcels
        ),
    )


def option_proto(plan: Plan, start: str, currency: str) -> common_pb2.DeliveryOption:
    """A stored option (or allocation) as the protobuf the caller sees; days from ``start``."""
    status = (
        common_pb2.PROOF_STATUS_OPTIMAL
        if plan.status == "OPTIMAL"
        else common_pb2.PROOF_STATUS_FEASIBLE
    )
    gap = plan.gap
    return common_pb2.DeliveryOption(
        option_id=plan.option_id,
        labels=[LABEL_TO_PROTO[Label(label)] for label in plan.labels],
        cost=money(plan.cost, currency),
        breakdown=common_pb2.CostBreakdown(
            shipping=money(plan.shipping, currency),
            handling=money(plan.handling, currency),
            storage_credit=money(plan.storage_credit, currency),
            total=money(plan.cost, currency),
            # Plans stored before forward prices existed have no opportunity cost.
            **({"opportunity_cost": money(plan.opportunity, currency)} if plan.opportunity else {}),
        ),
        delivery_days=plan.delivery_days,
        delivery_date=date_proto(day_after(start, plan.delivery_days)),
        parcels=[
            common_pb2.Parcel(
                node_id=p.node_id,
                service=p.service,
                zone=p.zone,
                lines=[
                    common_pb2.ParcelLine(line_index=pl.line, sku=pl.sku, quantity=pl.qty)
                    for pl in p.lines
                ],
                cost=money(p.cost, currency),
                shipping=money(p.shipping, currency),
                handling=money(p.handling, currency),
                storage_credit=money(p.storage_credit, currency),
                arrival_days=p.arrival_days,
                arrival_date=date_proto(day_after(start, p.arrival_days)),
                weight_kg=p.weight_g / 1000.0,
                distance_km=p.distance_km,
                **_inbound_fields(p, start),
            )
            for p in plan.parcels
        ],
        status=status,
        gap=0.0 if status == common_pb2.PROOF_STATUS_OPTIMAL or gap is None else float(gap),
        proof_method=plan.method,
        method=common_pb2.FULFILMENT_METHOD_COLLECT
        if plan.pickup
        else common_pb2.FULFILMENT_METHOD_DELIVERY,
        pickup_store_id=plan.pickup or "",
        waiting=[
            common_pb2.WaitingUnits(
                line_index=pl.line,
                sku=pl.sku,
                quantity=pl.qty - pl.arrived,
                node_id=p.node_id,
                inbound_date=date_proto(day_after(start, p.inbound_day)),
                arrival_date=date_proto(day_after(start, p.arrival_days)),
            )
            for p in plan.parcels
            if p.inbound_day is not None
            for pl in p.lines
            # Units that arrived (ReceiveInboundReceipt) no longer wait.
            if pl.qty > pl.arrived
        ],
    )


def _inbound_fields(parcel: PlannedParcel, start: str) -> dict[str, Any]:
    day = parcel.inbound_day
    if day is None:
        return {}
    return {"inbound_days": day, "inbound_date": date_proto(day_after(start, day))}


#: The order event that marks a promise re-sourcing could not keep.
FLAGGED = "flagged"


def shipment_proto(row: sh.ShipmentRow) -> common_pb2.Shipment:
    message = common_pb2.Shipment(
        shipment_id=row.shipment_id,
        order_id=row.order_id,
        node_id=row.node_id,
        service=row.service,
        lines=[
            common_pb2.ParcelLine(line_index=x["line"], sku=x["sku"], quantity=x["qty"])
            for x in row.lines
        ],
        state=SHIPMENT_STATE_TO_PROTO[row.state],
        planned_dispatch_date=date_proto(row.planned_dispatch),
        planned_arrival_date=date_proto(row.planned_arrival),
        carrier=row.carrier or "",
        tracking_number=row.tracking_number or "",
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        late=row.late,
        reason=row.reason or "",
        replaces_shipment_id=row.replaces or "",
    )
    if row.shipped_at is not None:
        message.ship_time.CopyFrom(timestamp(row.shipped_at))
    if row.delivered_at is not None:
        message.delivery_time.CopyFrom(timestamp(row.delivered_at))
    return message


def cancelled_lines(row: OrderRow) -> list[common_pb2.CartLine]:
    """Units of the order's lines that CancelOrder cancelled (per SKU, in line order)."""
    units = sh.lines_by_sku(
        s for s in row.shipments if s.state == sh.CANCELLED and s.reason == sh.ORDER_CANCELLED
    )
    return [common_pb2.CartLine(sku=sku, quantity=qty) for sku, qty in units.items()]


def order_proto(row: OrderRow, quote_date: str, currency: str) -> common_pb2.Order:
    return common_pb2.Order(
        order_id=row.order_id,
        quote_id=row.quote_id,
        option_id=row.option_id,
        state=STATE_TO_PROTO[row.state],
        destination=common_pb2.Location(latitude=row.dest_lat, longitude=row.dest_lon),
        lines=[common_pb2.CartLine(sku=x.sku, quantity=x.qty) for x in row.lines],
        allocation=option_proto(row.allocation, quote_date, currency),
        promised_date=date_proto(row.promised_date),
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        events=[
            common_pb2.OrderEvent(time=timestamp(at), type=kind, detail=detail)
            for at, kind, detail in row.events
        ],
        returns=[
            common_pb2.ReturnedLine(
                sku=sku, quantity=qty, node_id=node, time=timestamp(at), shipment_id=sid or ""
            )
            for (sku, qty, node, at), sid in zip(
                row.returns,
                row.return_shipments or [None] * len(row.returns),
                strict=True,
            )
        ],
        needs_attention=any(kind == FLAGGED for _, kind, _ in row.events),
        shipments=[shipment_proto(s) for s in row.shipments],
        cancelled_lines=cancelled_lines(row),
    )


def availability_proto(position: Availability) -> inventory_pb2.Availability:
    return inventory_pb2.Availability(
        node_id=position.node_id,
        sku=position.sku,
        on_hand=position.on_hand,
        safety_stock=position.safety_stock,
        reserved=position.reserved,
        held=position.held,
        available=position.available,
        low_stock_threshold=position.low_stock_threshold,
        inbound=position.inbound,
        inbound_reserved=position.inbound_reserved,
        projected=position.projected,
    )
