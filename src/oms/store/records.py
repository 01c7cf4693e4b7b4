"""The records the store hands to the service, and the unit arithmetic of allocations.

Frozen dataclasses only (no SQL): the servicers read these, never table rows.
May import :mod:`oms.store.plans`, ``shipment_records``, :mod:`oms.errors` and the
standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from oms.errors import FailedPrecondition, Precondition
from oms.store.plans import CartLine, Plan, PlannedParcel, QuoteRequest
from oms.store.shipment_records import ShipmentRow

Position = tuple[str, str]  # (node_id, sku)


@dataclass(frozen=True)
class Availability:
    node_id: str
    sku: str
    on_hand: int
    safety_stock: int
    reserved: int
    held: int
    low_stock_threshold: int
    #: Units of open inbound receipts due here, and those orders already wait for.
    inbound: int = 0
    inbound_reserved: int = 0

    @property
    def available(self) -> int:
        return max(0, self.on_hand - self.safety_stock - self.reserved - self.held)

    @property
    def projected(self) -> int:
        """What the position can promise once its receipts arrive."""
        return self.available + max(0, self.inbound - self.inbound_reserved)

    @property
    def is_low(self) -> bool:
        return self.low_stock_threshold > 0 and self.projected <= self.low_stock_threshold


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    quote_id: str
    option_id: str
    idempotency_key: str
    state: str
    dest_lat: float
    dest_lon: float
    lines: tuple[CartLine, ...]
    allocation: Plan
    promised_date: str
    created_at: float
    updated_at: float
    version: int
    events: list[tuple[float, str, str]]
    returns: list[tuple[str, int, str, float]]
    #: Every shipment, in creation order (issue 16); each return's shipment, as ``returns``.
    shipments: tuple[ShipmentRow, ...] = ()
    return_shipments: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class RecordedReturn:
    """One ReturnItems call as stored: units per SKU, the node, and its cost (millicents;
    None for returns recorded before migration 0006)."""

    units: dict[str, int]
    node_id: str
    cost: int | None


@dataclass(frozen=True)
class QuoteRow:
    quote_id: str
    created_at: float
    expires_at: float
    quote_date: str
    request: QuoteRequest
    options: tuple[Plan, ...]
    order_id: str | None


@dataclass(frozen=True)
class Hold:
    """A checkout hold: units per position held until ``expires_at``; or, when some
    were not free, nothing held and (needed, available) per short position."""

    units: dict[Position, int]
    expires_at: float | None
    unavailable: dict[Position, tuple[int, int]]


def check_placeable(quote_id: str, used_by: str | None, expires_at: float, now: float) -> None:
    """FAILED_PRECONDITION for a quote already used by an order, or expired."""
    if used_by is not None:
        raise FailedPrecondition(
            f"quote {quote_id!r} was already used by order {used_by!r}",
            [Precondition("QUOTE", quote_id, "already used")],
        )
    if now >= expires_at:
        raise FailedPrecondition(
            f"quote {quote_id!r} expired; ask for a new quote",
            [Precondition("QUOTE", quote_id, "expired")],
        )


@dataclass(frozen=True)
class ReceiptRow:
    """An inbound receipt and the units orders wait for (``reserved``)."""

    receipt_id: str
    node_id: str
    sku: str
    qty: int
    expected_date: str
    state: str
    reserved: int
    #: Units that arrived (RECEIVED receipts only).
    received_qty: int | None = None


@dataclass(frozen=True)
class PendingResourcing:
    """An order whose units waiting on a receipt are marked to be re-sourced."""

    order_id: str
    receipt_id: str
    node_id: str
    sku: str
    #: The receipt's expected date the order was planned on (before any move).
    due: str
    kind: str
    reason: str


def units_of(plan: Plan | Iterable[PlannedParcel]) -> dict[Position, int]:
    """Units per (node, SKU) of a plan (or some of its parcels) taken from stock.

    Parcels that wait for inbound receipts (``inbound_day`` set) are not stock
    on hand: they are reserved against their receipts instead, except the units
    of their lines that have arrived (``received``, set by ReceiveInboundReceipt):
    those are stock reservations like any other.
    """
    parcels = plan.parcels if isinstance(plan, Plan) else plan
    units: dict[Position, int] = {}
    for parcel in parcels:
        waiting = parcel.inbound_day is not None
        for line in parcel.lines:
            qty = line.arrived if waiting else line.qty
            if qty:
                key = (parcel.node_id, line.sku)
                units[key] = units.get(key, 0) + qty
    return units


def order_reservation_rows(
    order_id: str, units: Mapping[Position, int], capacity_day: str | None
) -> list[dict[str, Any]]:
    """``reservations`` rows of an order's units (no expiry), in position order."""
    return [
        {
            "node_id": node,
            "sku": sku,
            "qty": qty,
            "quote_id": None,
            "order_id": order_id,
            "expires_at": None,
            "capacity_day": capacity_day,
        }
        for (node, sku), qty in sorted(units.items())
        if qty > 0
    ]


def units_by_node(units: Mapping[Position, int]) -> dict[str, int]:
    by_node: dict[str, int] = {}
    for (node, _), qty in units.items():
        by_node[node] = by_node.get(node, 0) + qty
    return by_node
