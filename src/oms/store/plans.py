"""Typed records of what quotes and orders store as JSON: the request, its options, a plan.

A quote keeps the request it answered (:class:`QuoteRequest`) and the options
it offered; an order keeps the option it placed, its allocation, as a
:class:`Plan` with ``start_date`` set (the quote date its days count from).
Money is exact millicents, days count from the quote date. The store writes
these as JSON documents (``quotes.request_json``, ``options_json``,
``orders.allocation_json``, whose generated columns read some of their keys)
and reads them back with :meth:`Plan.from_document`; the documents keep the
keys, order and shape they always had, so rows written before these records
read the same.

May import the standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CartLine:
    """One line of a cart: ``qty`` units of ``sku``."""

    sku: str
    qty: int

    def document(self) -> dict[str, Any]:
        return {"sku": self.sku, "qty": self.qty}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> CartLine:
        return cls(doc["sku"], doc["qty"])


@dataclass(frozen=True)
class QuoteRequest:
    """What a quote was asked: the destination, the cart, and the solver settings used.

    Settings a quote stored before they existed read as None (False for the flags).
    """

    lat: float
    lon: float
    lines: tuple[CartLine, ...]
    allow_partial: bool = False
    max_parcels: int | None = None
    latest_day: int | None = None
    value_of_day: int | None = None
    allow_backorder: bool = False

    def document(self) -> dict[str, Any]:
        return {
            "destination": {"lat": self.lat, "lon": self.lon},
            "lines": [line.document() for line in self.lines],
            "allow_partial": self.allow_partial,
            "max_parcels": self.max_parcels,
            "latest_day": self.latest_day,
            "value_of_day": self.value_of_day,
            "allow_backorder": self.allow_backorder,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> QuoteRequest:
        return cls(
            lat=doc["destination"]["lat"],
            lon=doc["destination"]["lon"],
            lines=tuple(CartLine.from_document(x) for x in doc["lines"]),
            allow_partial=bool(doc.get("allow_partial", False)),
            max_parcels=doc.get("max_parcels"),
            latest_day=doc.get("latest_day"),
            value_of_day=doc.get("value_of_day"),
            allow_backorder=bool(doc.get("allow_backorder", False)),
        )


@dataclass(frozen=True)
class PlanLine:
    """Units of cart line ``line`` in a parcel.

    ``received``: of a parcel that waits for an inbound receipt, the units that
    arrived (set by ReceiveInboundReceipt; None until then, and on stock parcels).
    """

    line: int
    sku: str
    qty: int
    received: int | None = None

    @property
    def arrived(self) -> int:
        return self.received or 0

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"line": self.line, "sku": self.sku, "qty": self.qty}
        if self.received is not None:
            doc["received"] = self.received
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> PlanLine:
        return cls(doc["line"], doc["sku"], doc["qty"], doc.get("received"))


@dataclass(frozen=True)
class PlannedParcel:
    """One parcel of a plan: from ``node_id`` by ``service``, its lines, costs and days.

    ``inbound_day``: set when the parcel waits for an inbound receipt due that day.
    ``shipment_id``: the order's shipment for this parcel (issue 16; None in a quote's
    options, set by the store when an order's allocation is written).
    """

    node_id: str
    service: str
    zone: str
    distance_km: float
    weight_g: int
    shipping: int
    handling: int
    storage_credit: int
    cost: int
    arrival_days: int
    inbound_day: int | None
    lines: tuple[PlanLine, ...]
    shipment_id: str | None = None

    @property
    def waits(self) -> bool:
        return self.inbound_day is not None

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "node_id": self.node_id,
            "service": self.service,
            "zone": self.zone,
            "distance_km": self.distance_km,
            "weight_g": self.weight_g,
            "shipping": self.shipping,
            "handling": self.handling,
            "storage_credit": self.storage_credit,
            "cost": self.cost,
            "arrival_days": self.arrival_days,
            "inbound_day": self.inbound_day,
            "lines": [line.document() for line in self.lines],
        }
        if self.shipment_id is not None:
            doc["shipment_id"] = self.shipment_id
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> PlannedParcel:
        return cls(
            node_id=doc["node_id"],
            service=doc["service"],
            zone=doc["zone"],
            distance_km=doc["distance_km"],
            weight_g=doc["weight_g"],
            shipping=doc["shipping"],
            handling=doc["handling"],
            storage_credit=doc["storage_credit"],
            cost=doc["cost"],
            arrival_days=doc["arrival_days"],
            inbound_day=doc.get("inbound_day"),
            lines=tuple(PlanLine.from_document(x) for x in doc["lines"]),
            shipment_id=doc.get("shipment_id"),
        )


@dataclass(frozen=True)
class Plan:
    """A quoted option, or an order's allocation (the option it placed, maybe re-sourced since).

    ``labels`` are :class:`sourcing.model.Label` values; ``status``, ``gap`` and
    ``method`` the optimiser's proof (``method`` is ``"resourced"`` once
    re-sourcing rewrote the plan); ``opportunity`` the forward-looking price
    (None in plans stored before forward prices); ``pickup`` the store of a
    COLLECT option; ``start_date`` the quote date days count from (orders only).
    """

    option_id: str
    labels: tuple[str, ...]
    cost: int
    shipping: int
    handling: int
    storage_credit: int
    opportunity: int | None
    delivery_days: int
    status: str
    gap: float | None
    method: str
    pickup: str | None
    parcels: tuple[PlannedParcel, ...]
    start_date: str | None = None

    @property
    def waits(self) -> bool:
        """Whether any parcel waits for an inbound receipt (a backorder)."""
        return any(p.waits for p in self.parcels)

    @property
    def start(self) -> str:
        """The date an allocation's days count from; ValueError for a quote's option."""
        if self.start_date is None:
            raise ValueError(f"option {self.option_id!r} is not an order's allocation")
        return self.start_date

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "option_id": self.option_id,
            "labels": list(self.labels),
            "cost": self.cost,
            "shipping": self.shipping,
            "handling": self.handling,
            "storage_credit": self.storage_credit,
            "opportunity": self.opportunity,
            "delivery_days": self.delivery_days,
            "status": self.status,
            "gap": self.gap,
            "method": self.method,
            "pickup": self.pickup,
            "parcels": [p.document() for p in self.parcels],
        }
        if self.start_date is not None:
            doc["start_date"] = self.start_date
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Plan:
        return cls(
            option_id=doc["option_id"],
            labels=tuple(doc.get("labels", ())),
            cost=doc["cost"],
            shipping=doc["shipping"],
            handling=doc["handling"],
            storage_credit=doc["storage_credit"],
            opportunity=doc.get("opportunity"),
            delivery_days=doc["delivery_days"],
            status=doc["status"],
            gap=doc.get("gap"),
            method=doc["method"],
            pickup=doc.get("pickup"),
            parcels=tuple(PlannedParcel.from_document(p) for p in doc["parcels"]),
            start_date=doc.get("start_date"),
        )
