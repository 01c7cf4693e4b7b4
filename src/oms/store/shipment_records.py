"""Shipments: the unit of fulfilment (issue 16), and the order state derived from them.

One shipment per parcel of the order's allocation: a node, a service, lines,
planned dispatch and arrival days, and its own life::

    PENDING -> REQUESTED -> ACCEPTED -> SHIPPED -> DELIVERED
       \\__________\\___________\\-> REJECTED (re-sourced)  /-> CANCELLED (not yet left)
    COLLECT pickup: ... ACCEPTED -> READY_FOR_PICKUP -> PICKED_UP

The order's state is derived (:func:`order_state`): shipments rejected or
cancelled do not count while others remain. This module is pure: records in,
decisions out; :mod:`oms.store.shipments` persists them.

May import :mod:`oms.errors` and the standard library (and the engine's model names).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oms.errors import FailedPrecondition, Precondition
from sourcing.model import PICKUP_SERVICE

PENDING = "PENDING"
REQUESTED = "REQUESTED"
ACCEPTED = "ACCEPTED"
SHIPPED = "SHIPPED"
DELIVERED = "DELIVERED"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
READY_FOR_PICKUP = "READY_FOR_PICKUP"
PICKED_UP = "PICKED_UP"

STATES = (
    PENDING,
    REQUESTED,
    ACCEPTED,
    SHIPPED,
    DELIVERED,
    CANCELLED,
    REJECTED,
    READY_FOR_PICKUP,
    PICKED_UP,
)
#: Not yet left the node: may still be cancelled, rejected or re-allocated.
OPEN = frozenset({PENDING, REQUESTED, ACCEPTED})
#: Left the node (stock consumed there).
LEFT = frozenset({SHIPPED, READY_FOR_PICKUP, DELIVERED, PICKED_UP})
#: Reached the customer.
DONE = frozenset({DELIVERED, PICKED_UP})
#: Replaced or withdrawn: does not count toward the order's state while others remain.
GONE = frozenset({CANCELLED, REJECTED})

#: The reason CancelOrder writes on the shipments it cancels (the order's cancelled lines).
ORDER_CANCELLED = "order cancelled"
MAX_CARRIER = 64
MAX_TRACKING = 128


def new_shipment_id() -> str:
    return "s_" + uuid.uuid4().hex


@dataclass(frozen=True)
class ShipmentRow:
    shipment_id: str
    order_id: str
    node_id: str
    service: str
    lines: list[dict[str, Any]]  # [{"line", "sku", "qty"}]
    state: str
    planned_dispatch: str
    planned_arrival: str
    carrier: str | None
    tracking_number: str | None
    shipped_at: float | None
    delivered_at: float | None
    created_at: float
    updated_at: float
    reason: str | None
    replaces: str | None
    #: Not left its node and past its planned dispatch day (as of the read).
    late: bool = False

    @property
    def is_pickup(self) -> bool:
        return self.service == PICKUP_SERVICE

    def units(self) -> dict[str, int]:
        """Units per SKU."""
        out: dict[str, int] = {}
        for line in self.lines:
            out[line["sku"]] = out.get(line["sku"], 0) + int(line["qty"])
        return out

    def describe(self) -> str:
        what = ", ".join(f"{qty} x {sku}" for sku, qty in sorted(self.units().items()))
        return f"{self.shipment_id} ({what} from {self.node_id})"


def order_state(states: Sequence[str]) -> str:
    """The order's state from its shipments' states (see the module docstring)."""
    live = [s for s in states if s not in GONE]
    if not live:
        return "CANCELLED" if CANCELLED in states else "PLACED"
    if all(s in DONE for s in live):
        return "DELIVERED"
    if any(s in DONE for s in live):
        return "PARTIALLY_DELIVERED"
    if all(s in LEFT for s in live):
        return "SHIPPED"
    if any(s in LEFT for s in live):
        return "PARTIALLY_SHIPPED"
    if any(s == PENDING for s in live):
        return "PLACED"
    return "RELEASED"


#: Per-shipment transitions: action -> (allowed sources, target). A repeat onto the target
#: is a no-op, so a node can retry safely.
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "request": (frozenset({PENDING}), REQUESTED),
    "accept": (frozenset({REQUESTED}), ACCEPTED),
    "reject": (frozenset(OPEN), REJECTED),
    "ship": (frozenset({REQUESTED, ACCEPTED}), SHIPPED),
    "ready": (frozenset({REQUESTED, ACCEPTED}), READY_FOR_PICKUP),
    "deliver": (frozenset({SHIPPED}), DELIVERED),
    "pick_up": (frozenset({READY_FOR_PICKUP}), PICKED_UP),
    "cancel": (frozenset(OPEN), CANCELLED),
}


def plan(action: str, shipment: ShipmentRow) -> str | None:
    """The state ``action`` moves ``shipment`` to; None when it is already there (a retry).

    FAILED_PRECONDITION naming the shipment and both states otherwise.
    """
    sources, target = TRANSITIONS[action]
    if shipment.state == target:
        return None
    if shipment.state not in sources:
        allowed = " or ".join(sorted(sources))
        verb = action.replace("_", " ")
        raise FailedPrecondition(
            f"cannot {verb} shipment {shipment.shipment_id!r}: it is {shipment.state}, "
            f"and {verb} needs {allowed}",
            [
                Precondition(
                    "SHIPMENT_STATE",
                    shipment.shipment_id,
                    f"shipment is {shipment.state}; {verb} needs {allowed}",
                )
            ],
        )
    return target


def split_lines(
    lines: Sequence[Mapping[str, Any]], shipped: Mapping[str, int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Precondition]]:
    """``lines`` split into (the units that left, the rest) for ``shipped`` units per SKU.

    A SKU's units are taken from its lines in order. Problems: SKUs the shipment
    does not hold that many of.
    """
    have: dict[str, int] = {}
    for line in lines:
        have[line["sku"]] = have.get(line["sku"], 0) + int(line["qty"])
    problems = [
        Precondition(
            "SHIPMENT_LINES", sku, f"ships {qty} but the shipment holds {have.get(sku, 0)}"
        )
        for sku, qty in sorted(shipped.items())
        if qty > have.get(sku, 0)
    ]
    left = dict(shipped)
    went: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    for line in lines:
        qty = int(line["qty"])
        take = min(qty, left.get(line["sku"], 0))
        left[line["sku"]] = left.get(line["sku"], 0) - take
        if take:
            went.append(dict(line, qty=take))
        if qty - take:
            rest.append(dict(line, qty=qty - take))
    return went, rest, problems


def lines_by_sku(shipments: Iterable[ShipmentRow]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in shipments:
        for sku, qty in s.units().items():
            out[sku] = out.get(sku, 0) + qty
    return out


def attribute_return(
    shipments: Sequence[ShipmentRow],
    returned: Mapping[tuple[str, str], int],
    wanted: Mapping[str, int],
) -> list[tuple[str, int, str | None]]:
    """Returned units per (SKU, quantity, shipment they came from): each SKU's units are
    taken from the shipments that left with it, oldest first, less what each already
    had returned (``returned`` per (shipment id, SKU)). The caller checked the totals;
    units returned before shipments existed (shipment '') may leave some unattributed
    (shipment None)."""
    parts: list[tuple[str, int, str | None]] = []
    for sku, qty in sorted(wanted.items()):
        left = qty
        for s in shipments:
            if s.state not in LEFT or left == 0:
                continue
            room = s.units().get(sku, 0) - returned.get((s.shipment_id, sku), 0)
            take = min(left, max(room, 0))
            if take:
                parts.append((sku, take, s.shipment_id))
                left -= take
        if left:
            parts.append((sku, left, None))
    return parts
