"""Use cases on shipments (issue 16): release, accept, ship, deliver, reject, cancel.

Each call is one transaction: the shipment's change, the stock it moves (ledger
rows naming the shipment), the order's derived state and the events commit
together. ``scope`` is the node a node token is limited to (None: the admin
token); a shipment of another node is PERMISSION_DENIED, checked before
anything about it (even its state) is told.

Partial shipment (``ship`` with ``units``): the units that left stay on the
shipment (SHIPPED); the rest become a new shipment at the same node, ACCEPTED
(back-ordered there), which the node ships later or rejects (re-sourcing it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.engine import Connection

from oms import lifecycle, metrics
from oms.errors import FailedPrecondition, PermissionDenied, Precondition
from oms.resourcing import Outcome, Resourcer
from oms.settings import Settings
from oms.store import OrderRow, PlanLine, PlannedParcel, Store
from oms.store import shipment_records as sh
from oms.store.shipments import ShipmentRepository

log = logging.getLogger(__name__)

#: How often a server counts late shipments for the ``oms_late_shipments`` gauge.
LATE_CHECK_S = 60.0


class LateShipmentWatch:
    """A daemon thread that counts late shipments (not left their node, past their planned
    dispatch day) into the ``oms_late_shipments`` gauge every ``interval_s``; the same
    shipments ListShipments(late_only) lists."""

    def __init__(self, store: Store, interval_s: float = LATE_CHECK_S) -> None:
        self.store = store
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="oms-late-shipments", daemon=True)

    def start(self) -> LateShipmentWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def count(self) -> int:
        with self.store.read() as conn:
            late = self.store.shipments.count_late(conn)
        metrics.set_late_shipments(late)
        return late

    def _loop(self) -> None:
        while True:
            try:
                self.count()
            except Exception:  # keep counting; the store may be briefly unavailable
                log.exception("counting late shipments failed")
            if self._stop.wait(self.interval_s):
                return


@dataclass(frozen=True)
class Shipped:
    order: OrderRow
    shipment: sh.ShipmentRow | None
    remainder: sh.ShipmentRow | None = None


@dataclass(frozen=True)
class CancelOutcome:
    order: OrderRow
    not_cancelled: list[sh.ShipmentRow]


def check_scope(shipment: sh.ShipmentRow, scope: str | None) -> None:
    if scope is not None and shipment.node_id != scope:
        raise PermissionDenied(
            f"this node token is for node {scope!r}; the shipment belongs to another node"
        )


class Shipping:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    @property
    def repo(self) -> ShipmentRepository:
        return self.store.shipments

    def _locked(self, conn: Connection, shipment_id: str, scope: str | None) -> sh.ShipmentRow:
        """The shipment after locking its order (every shipment change goes through it)."""
        shipment = self.repo.get(conn, shipment_id)
        check_scope(shipment, scope)
        self.store.get_order(conn, shipment.order_id, for_update=True)
        return self.repo.get(conn, shipment_id)

    # -- order-level shortcuts ---------------------------------------------------------

    def release_order(self, order_id: str) -> OrderRow:
        """Every PENDING shipment is sent to its node (REQUESTED)."""
        with self.store.write() as conn:
            row = self.store.get_order(conn, order_id, for_update=True)
            pending = [s for s in row.shipments if s.state == sh.PENDING]
            lifecycle.plan("release", row.order_id, row.state)
            if not pending:
                return row
            moved = {
                s.shipment_id: self.repo.move(
                    conn, s, sh.REQUESTED, f"{s.describe()} sent to {s.node_id}"
                )
                for s in pending
            }
            nodes = sorted({s.node_id for s in pending})
            event = self.store.add_event(conn, order_id, "released", f"sent to {', '.join(nodes)}")
            # The reply from the locked order and what changed (no read-back): row.shipments
            # are all of the order's, so its state derives from them as from the table.
            shipments = tuple(moved.get(s.shipment_id, s) for s in row.shipments)
            state, written_at = self.repo.set_state_from(
                conn, order_id, sh.order_state([s.state for s in shipments])
            )
            row = replace(row, state=state, shipments=shipments, events=[*row.events, event])
            if written_at is not None:
                row = replace(row, updated_at=written_at, version=row.version + 1)
            return row

    def ship_order(self, order_id: str) -> OrderRow:
        """Every REQUESTED or ACCEPTED shipment leaves (the old order-level ConfirmShipment)."""
        with self.store.write() as conn:
            row = self.store.get_order(conn, order_id, for_update=True)
            ready = [s for s in row.shipments if s.state in (sh.REQUESTED, sh.ACCEPTED)]
            if not ready:
                lifecycle.plan("ship", row.order_id, row.state)  # a retry, or the state's error
                return row
            waiting = self.store.order_inbound(conn, row.order_id)
            if waiting:
                raise FailedPrecondition(
                    f"order {order_id!r} still waits for inbound receipt(s)",
                    [
                        Precondition("RECEIPT", rid, f"{qty} unit(s) not received yet")
                        for rid, qty in sorted(waiting.items())
                    ],
                )
            units = 0
            for shipment in ready:
                self._leave(conn, shipment, None, None, shipment.units())
                units += sum(shipment.units().values())
            nodes = len({s.node_id for s in ready})
            self.store.add_event(conn, order_id, "shipped", f"{units} unit(s) left {nodes} node(s)")
            self.store.refresh_state(conn, order_id)
            return self.store.get_order(conn, order_id)

    def deliver_order(self, order_id: str) -> OrderRow:
        with self.store.write() as conn:
            row = self.store.get_order(conn, order_id, for_update=True)
            shipped = [s for s in row.shipments if s.state in (sh.SHIPPED, sh.READY_FOR_PICKUP)]
            if not shipped:
                lifecycle.plan("deliver", row.order_id, row.state)
                return row
            for shipment in shipped:
                self._arrive(conn, shipment)
            # The order-level ``delivered`` event only when the last parcel arrived: a split
            # order delivered in two calls is one delivery (the dashboard counts orders by
            # it); each parcel's arrival is its own ``shipment_delivered`` event.
            self._settle(conn, order_id)
            return self.store.get_order(conn, order_id)

    # -- per shipment ----------------------------------------------------------------------

    def accept(self, shipment_id: str, scope: str | None) -> sh.ShipmentRow:
        with self.store.write() as conn:
            shipment = self._locked(conn, shipment_id, scope)
            if sh.plan("accept", shipment) is None:
                return shipment
            moved: sh.ShipmentRow = self.repo.move(
                conn, shipment, sh.ACCEPTED, f"{shipment.describe()} accepted by its node"
            )
            self.store.refresh_state(conn, shipment.order_id)
            return moved

    def ship(
        self,
        shipment_id: str,
        scope: str | None,
        carrier: str,
        tracking: str,
        units: Mapping[str, int] | None,
    ) -> Shipped:
        with self.store.write() as conn:
            shipment = self._locked(conn, shipment_id, scope)
            action = "ready" if shipment.is_pickup else "ship"
            if sh.plan(action, shipment) is None:
                return Shipped(self.store.get_order(conn, shipment.order_id), shipment)
            remainder = None
            if units:
                went, rest, problems = sh.split_lines(shipment.lines, units)
                if problems:
                    raise FailedPrecondition(
                        f"shipment {shipment_id!r} does not hold those units", problems
                    )
                if rest:
                    remainder = self._split(conn, shipment, went, rest)
                    shipment = self.repo.get(conn, shipment_id)
            left = self._leave(conn, shipment, carrier, tracking, shipment.units())
            self._settle(conn, shipment.order_id)
            return Shipped(self.store.get_order(conn, shipment.order_id), left, remainder)

    def deliver(self, shipment_id: str, scope: str | None) -> Shipped:
        with self.store.write() as conn:
            shipment = self._locked(conn, shipment_id, scope)
            action = "pick_up" if shipment.is_pickup else "deliver"
            if sh.plan(action, shipment) is None:
                return Shipped(self.store.get_order(conn, shipment.order_id), shipment)
            done = self._arrive(conn, shipment)
            self._settle(conn, shipment.order_id)
            return Shipped(self.store.get_order(conn, shipment.order_id), done)

    def reject(
        self, shipment_id: str, scope: str | None, reason: str
    ) -> tuple[Outcome, sh.ShipmentRow]:
        with self.store.read() as conn:
            shipment = self.repo.get(conn, shipment_id)
        check_scope(shipment, scope)
        if sh.plan("reject", shipment) is None:
            with self.store.read() as conn:
                return Outcome(self.store.get_order(conn, shipment.order_id), True), shipment
        outcome = Resourcer(self.store, self.settings).reject_shipment(shipment, reason)
        with self.store.read() as conn:
            return outcome, self.repo.get(conn, shipment_id)

    def cancel_order(self, order_id: str, reason: str) -> CancelOutcome:
        """Every shipment not yet left is cancelled and its stock released, in one
        transaction; the ones that left are named. FAILED_PRECONDITION when nothing is
        left to cancel."""
        with self.store.write() as conn:
            row = self.store.get_order(conn, order_id, for_update=True)
            gone = [s for s in row.shipments if s.state in sh.LEFT]
            if row.state == "CANCELLED":
                return CancelOutcome(row, gone)
            open_ = [s for s in row.shipments if s.state in sh.OPEN]
            if not open_ and row.shipments and row.state != "PLACED":
                shipped = ", ".join(s.describe() for s in gone)
                raise FailedPrecondition(
                    f"cannot cancel order {order_id!r}: it is {row.state}, every shipment "
                    f"already left ({shipped})",
                    [Precondition("STATE", order_id, f"order is {row.state}; nothing to cancel")],
                )
            if gone:
                units = self._release_units(open_)
                self.store.release_order_units(conn, row, units)
                self.store.release_inbound(conn, order_id)
            else:
                units = self.store.release_reservations(conn, row)
            for shipment in open_:
                self.repo.move(
                    conn,
                    shipment,
                    sh.CANCELLED,
                    f"{shipment.describe()} cancelled: {reason}",
                    reason=sh.ORDER_CANCELLED,
                )
            released = sum(units.values())
            detail = f"{reason}; {released} unit(s) released"
            if gone:
                detail += "; not cancelled (already left): " + ", ".join(s.describe() for s in gone)
            self.store.add_event(conn, order_id, "cancelled", detail)
            if not row.shipments:  # nothing was ever allocated
                self.store.set_state(conn, row, "CANCELLED")
            else:
                self.store.refresh_state(conn, order_id)
            return CancelOutcome(self.store.get_order(conn, order_id), gone)

    # -- steps ----------------------------------------------------------------------------

    def _settle(self, conn: Connection, order_id: str) -> None:
        """Derive the order's state again after one shipment moved; when that shipment was
        the last to leave or to arrive, the order-level ``shipped`` or ``delivered`` event
        too (as the order-level calls write; the dashboard counts deliveries by it)."""
        before = self.store.get_order(conn, order_id).state
        after = self.store.refresh_state(conn, order_id)
        if after == before:
            return
        if after == "SHIPPED":
            self.store.add_event(conn, order_id, "shipped", "every shipment left its node")
        elif after == "DELIVERED":
            self.store.add_event(conn, order_id, "delivered", "delivered to the customer")

    @staticmethod
    def _release_units(shipments: list[sh.ShipmentRow]) -> dict[tuple[str, str], int]:
        units: dict[tuple[str, str], int] = {}
        for s in shipments:
            for sku, qty in s.units().items():
                units[(s.node_id, sku)] = units.get((s.node_id, sku), 0) + qty
        return units

    def _leave(
        self,
        conn: Connection,
        shipment: sh.ShipmentRow,
        carrier: str | None,
        tracking: str | None,
        units: Mapping[str, int],
    ) -> sh.ShipmentRow:
        self.store.consume_shipment(conn, shipment, units)
        what = ", ".join(f"{q} x {s}" for s, q in sorted(units.items()))
        if shipment.is_pickup:
            return self.repo.move(
                conn,
                shipment,
                sh.READY_FOR_PICKUP,
                f"{shipment.shipment_id}: {what} ready for pickup at {shipment.node_id}",
                shipped_at=self.store.clock(),
            )
        via = f" with {carrier}, tracking {tracking}" if carrier else ""
        return self.repo.move(
            conn,
            shipment,
            sh.SHIPPED,
            f"{shipment.shipment_id}: {what} left {shipment.node_id}{via}",
            carrier=carrier,
            tracking_number=tracking,
            shipped_at=self.store.clock(),
        )

    def _arrive(self, conn: Connection, shipment: sh.ShipmentRow) -> sh.ShipmentRow:
        target = sh.PICKED_UP if shipment.is_pickup else sh.DELIVERED
        verb = "picked up" if shipment.is_pickup else "delivered"
        return self.repo.move(
            conn,
            shipment,
            target,
            f"{shipment.describe()} {verb}",
            delivered_at=self.store.clock(),
        )

    def _split(
        self,
        conn: Connection,
        shipment: sh.ShipmentRow,
        went: list[dict[str, Any]],
        rest: list[dict[str, Any]],
    ) -> sh.ShipmentRow:
        """The shipment keeps ``went``; ``rest`` becomes a new ACCEPTED shipment at its node
        (its parcel in the allocation too, at no extra cost: a back-order of the same parcel)."""
        order = self.store.get_order(conn, shipment.order_id)
        parcels: list[PlannedParcel] = []
        remainder_id = sh.new_shipment_id()

        def plan_lines(lines: list[dict[str, Any]]) -> tuple[PlanLine, ...]:
            return tuple(PlanLine(x["line"], x["sku"], int(x["qty"])) for x in lines)

        for parcel in order.allocation.parcels:
            if parcel.shipment_id != shipment.shipment_id:
                parcels.append(parcel)
                continue
            parcels.append(replace(parcel, lines=plan_lines(went)))
            parcels.append(
                replace(
                    parcel,
                    lines=plan_lines(rest),
                    shipment_id=remainder_id,
                    shipping=0,
                    handling=0,
                    storage_credit=0,
                    cost=0,
                )
            )
        self.repo.set_lines(conn, shipment, went)
        self.store.update_allocation(
            conn,
            order,
            replace(order.allocation, parcels=tuple(parcels)),
            reason=f"back-ordered at {shipment.node_id}: the rest of {shipment.shipment_id}",
            replaces=shipment.shipment_id,
        )
        remainder = self.repo.get(conn, remainder_id)
        accepted: sh.ShipmentRow = self.repo.move(
            conn, remainder, sh.ACCEPTED, f"{remainder.describe()} back-ordered at its node"
        )
        return accepted
