"""One order's page: its shipments, its plan's parcels, timeline, ledger rows, and the menu
it was chosen from."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.dashboard.views.common import (
    MAX_PAGE,
    OPEN_SHIPMENT_STATES,
    OPEN_STATES,
    day_after,
    labels_of,
    money_units,
    utc_day,
)


@dataclass(frozen=True)
class ParcelView:
    """One parcel of the order's plan (its cost, weight, zone), with its planned dates and
    the state of the shipment that carries it (the order's state for a plan written before
    shipments). What each parcel became, carrier and all, is :class:`ShipmentView`."""

    node_id: str
    service: str
    zone: str
    lines: list[dict[str, Any]]
    weight_kg: float
    shipping: float
    handling: float
    storage_credit: float
    cost: float
    planned_dispatch: str
    planned_arrival: str
    waiting_for: str | None
    status: str
    status_at: float | None


@dataclass(frozen=True)
class ShipmentView:
    """One row of the ``shipments`` table, as customer service reads it."""

    shipment_id: str
    node_id: str
    service: str
    lines: list[dict[str, Any]]
    state: str
    planned_dispatch: str
    planned_arrival: str
    carrier: str | None
    tracking_number: str | None
    shipped_at: float | None
    delivered_at: float | None
    created_at: float
    #: Why it was rejected or cancelled (the node's or the canceller's words).
    reason: str | None
    #: The shipment this one was re-sourced from (a rejected or split one).
    replaces: str | None
    #: The shipments re-sourced from this one.
    replaced_by: tuple[str, ...]
    #: Not left its node and past its planned dispatch day (as of the page's now).
    late: bool


@dataclass(frozen=True)
class MenuOption:
    option_id: str
    labels: tuple[str, ...]
    cost: float
    shipping: float
    handling: float
    storage_credit: float
    delivery_date: str
    parcels: int
    nodes: tuple[str, ...]
    pickup: str | None
    status: str
    chosen: bool


@dataclass(frozen=True)
class Event:
    at: float
    kind: str
    detail: str
    #: Set for an event about one shipment (the feed's ``shipment_id``).
    shipment_id: str | None = None


@dataclass(frozen=True)
class LedgerRow:
    at: float
    node_id: str
    sku: str
    delta: int
    reason: str


@dataclass(frozen=True)
class OrderDetail:
    order_id: str
    quote_id: str
    option_id: str
    state: str
    created_at: float
    updated_at: float
    promised_date: str
    destination: tuple[float, float]
    lines: list[dict[str, Any]]
    labels: tuple[str, ...]
    shipping: float
    handling: float
    storage_credit: float
    cost: float
    parcels: list[ParcelView]
    shipments: list[ShipmentView]
    events: list[Event]
    ledger: list[LedgerRow]
    menu: list[MenuOption]
    quote_created_at: float | None
    needs_attention: bool
    waiting: dict[str, int] = field(default_factory=dict)


_STATUS_EVENT = {"RELEASED": "released", "SHIPPED": "shipped", "DELIVERED": "delivered"}


def order_shipments(conn: Connection, order_id: str, now: float) -> list[ShipmentView]:
    """The order's shipments (one index lookup), oldest first, each with what replaced it."""
    s = t.shipments
    rows = conn.execute(
        sa.select(s).where(s.c.order_id == order_id).order_by(s.c.created_at, s.c.shipment_id)
    ).all()
    today = utc_day(now)
    replaced_by: dict[str, list[str]] = {}
    for r in rows:
        if r.replaces:
            replaced_by.setdefault(r.replaces, []).append(r.shipment_id)
    return [
        ShipmentView(
            shipment_id=r.shipment_id,
            node_id=r.node_id,
            service=r.service,
            lines=json.loads(r.lines_json),
            state=r.state,
            planned_dispatch=r.planned_dispatch,
            planned_arrival=r.planned_arrival,
            carrier=r.carrier,
            tracking_number=r.tracking_number,
            shipped_at=None if r.shipped_at is None else float(r.shipped_at),
            delivered_at=None if r.delivered_at is None else float(r.delivered_at),
            created_at=float(r.created_at),
            reason=r.reason,
            replaces=r.replaces,
            replaced_by=tuple(replaced_by.get(r.shipment_id, ())),
            late=r.state in OPEN_SHIPMENT_STATES and r.planned_dispatch < today,
        )
        for r in rows
    ]


def order_detail(conn: Connection, order_id: str, now: float | None = None) -> OrderDetail | None:
    """One order: its shipments, its plan's parcels, timeline, ledger rows, and the menu it
    was chosen from. ``now`` (epoch s; default the wall clock) decides which shipments are
    late."""
    o, e, q, ledger, rr = (
        t.orders,
        t.order_events,
        t.quotes,
        t.stock_ledger,
        t.inbound_reservations,
    )
    row = conn.execute(sa.select(o).where(o.c.order_id == order_id)).first()
    if row is None:
        return None
    events = [
        Event(float(at), kind, detail, shipment_id)
        for at, kind, detail, shipment_id in conn.execute(
            sa.select(e.c.at, e.c.type, e.c.detail, e.c.shipment_id)
            .where(e.c.order_id == order_id)
            .order_by(e.c.event_id)
        )
    ]
    ledger_rows = [
        LedgerRow(float(r.at), r.node_id, r.sku, int(r.delta), r.reason)
        for r in conn.execute(
            sa.select(ledger.c.at, ledger.c.node_id, ledger.c.sku, ledger.c.delta, ledger.c.reason)
            .where(ledger.c.order_id == order_id)
            .order_by(ledger.c.entry_id)
            .limit(MAX_PAGE)
        )
    ]
    waiting = {
        receipt: int(qty)
        for receipt, qty in conn.execute(
            sa.select(rr.c.receipt_id, func.sum(rr.c.qty))
            .where(rr.c.order_id == order_id)
            .group_by(rr.c.receipt_id)
        )
    }
    allocation = json.loads(row.allocation_json)
    start = allocation.get("start_date") or utc_day(row.created_at)
    transit = {
        (service, zone): int(days)
        for service, zone, days in conn.execute(
            sa.select(t.rates.c.service, t.rates.c.zone, t.rates.c.transit_days)
        )
    }
    status_event = _STATUS_EVENT.get(row.state)
    status_at = next((ev.at for ev in reversed(events) if ev.kind == status_event), None)
    shipments = order_shipments(conn, order_id, time.time() if now is None else now)
    by_id = {s.shipment_id: s for s in shipments}
    parcels = []
    for p in allocation.get("parcels", []):
        arrival = int(p.get("arrival_days", 0))
        inbound = p.get("inbound_day")
        carrier = by_id.get(str(p.get("shipment_id", "")))
        parcels.append(
            ParcelView(
                node_id=p["node_id"],
                service=p["service"],
                zone=str(p.get("zone", "")),
                lines=list(p.get("lines", [])),
                weight_kg=int(p.get("weight_g", 0)) / 1000.0,
                shipping=money_units(p.get("shipping")),
                handling=money_units(p.get("handling")),
                storage_credit=money_units(p.get("storage_credit")),
                cost=money_units(p.get("cost")),
                planned_dispatch=day_after(
                    start, arrival - transit.get((p["service"], str(p.get("zone", ""))), 0)
                ),
                planned_arrival=day_after(start, arrival),
                waiting_for=None if inbound is None else day_after(start, int(inbound)),
                status=row.state if carrier is None else carrier.state,
                status_at=status_at
                if carrier is None
                else (carrier.delivered_at or carrier.shipped_at),
            )
        )
    menu: list[MenuOption] = []
    quote_created: float | None = None
    quote = conn.execute(
        sa.select(q.c.created_at, q.c.quote_date, q.c.options_json).where(
            q.c.quote_id == row.quote_id
        )
    ).first()
    if quote is not None:
        quote_created = float(quote.created_at)
        for doc in json.loads(quote.options_json):
            menu.append(
                MenuOption(
                    option_id=doc["option_id"],
                    labels=tuple(doc.get("labels", [])),
                    cost=money_units(doc.get("cost")),
                    shipping=money_units(doc.get("shipping")),
                    handling=money_units(doc.get("handling")),
                    storage_credit=money_units(doc.get("storage_credit")),
                    delivery_date=day_after(quote.quote_date, int(doc.get("delivery_days", 0))),
                    parcels=len(doc.get("parcels", [])),
                    nodes=tuple(dict.fromkeys(p["node_id"] for p in doc.get("parcels", []))),
                    pickup=doc.get("pickup"),
                    status=str(doc.get("status", "")),
                    chosen=doc["option_id"] == row.option_id,
                )
            )
    return OrderDetail(
        order_id=row.order_id,
        quote_id=row.quote_id,
        option_id=row.option_id,
        state=row.state,
        created_at=float(row.created_at),
        updated_at=float(row.updated_at),
        promised_date=row.promised_date,
        destination=(float(row.dest_lat), float(row.dest_lon)),
        lines=json.loads(row.lines_json),
        labels=labels_of(row.option_labels),
        shipping=money_units(row.shipping_cost),
        handling=money_units(row.handling_cost),
        storage_credit=money_units(row.storage_credit),
        cost=money_units(row.total_cost),
        parcels=parcels,
        shipments=shipments,
        events=events,
        ledger=ledger_rows,
        menu=menu,
        quote_created_at=quote_created,
        needs_attention=row.state in OPEN_STATES and any(ev.kind == "flagged" for ev in events),
        waiting=waiting,
    )
