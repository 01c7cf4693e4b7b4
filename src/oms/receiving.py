"""Inbound receipts arriving (``ReceiveInboundReceipt``) and receipts that are late.

**Receiving.** One write transaction puts the units that arrived on hand at
the receipt's node (one ``stock_ledger`` row, reason ``receipt <id>: <why>``),
marks the receipt RECEIVED with ``received_qty``, and hands the units to the
orders waiting for the receipt **in placement order** (oldest first, then
order id): each order takes all of its waiting units if what is left covers
them, else it is skipped (it gets none) and a later, smaller order may still
fit. A covered order's inbound reservation becomes an ordinary stock
reservation at the node, its waiting parcel lines record the units as
``received`` (so :func:`oms.store.units_of` counts them: they ship, and can
be returned, like any stock), and it gets a ``receipt_received`` event. The
received units are reserved for the waiting orders even where that eats into
safety stock (they were promised before). After the commit, every order the
units did not cover is re-sourced through :class:`oms.resourcing.Resourcer`,
oldest first, with a ``receipt_short`` event: the units left over at the node
(if any) count as stock there like any other. More units than expected simply
add to free stock.

Receiving a RECEIVED receipt again with the same quantity is a no-op (a safe
retry: no second ledger row, no events) that returns the receipt; with
another quantity, or a CANCELLED receipt, it is FAILED_PRECONDITION.

Locks are taken in the order every other writer uses (orders, then the stock
position, then the receipt), so receiving cannot deadlock with PlaceOrder,
shipment or re-sourcing.

**Late receipts.** An OPEN receipt whose expected date is before today (the
store's clock, UTC) and that orders still wait for is overdue:
:func:`resource_overdue_receipts` re-sources those orders (``receipt_late``
events), exactly as when a receipt is moved later (the receipt itself stays
OPEN and may still be received; its units then go to free stock). The same
sweep finishes a receive whose re-sourcing was cut short (a RECEIVED receipt
with orders still waiting). The server runs it every ``overdue_sweep_s``
seconds (:class:`OverdueSweeper`); ``ResourceOverdueReceipts`` runs it on
demand. Running it twice, or in two processes at once, re-sources each order
once: an order that no longer waits for the receipt is left as it is.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Any

from oms.convert import days_between, today
from oms.errors import FailedPrecondition, NotFound, OmsError, Precondition
from oms.resourcing import Resourcer
from oms.settings import Settings
from oms.store import Availability, ReceiptRow, Store

log = logging.getLogger("oms.receiving")


@dataclass(frozen=True)
class Received:
    receipt: ReceiptRow
    position: Availability
    covered: list[str]
    resourced: list[str]


@dataclass(frozen=True)
class Overdue:
    receipts: list[str]
    resourced: list[str]


def mark_received(
    allocation: dict[str, Any], receipt: ReceiptRow, qty: int
) -> tuple[dict[str, Any], int]:
    """``allocation`` with ``qty`` waiting units of ``receipt`` marked ``received``.

    The units are looked for in the node's parcels waiting for the receipt's
    day first, then in its other waiting parcels (a receipt moved earlier
    after the order was placed). Returns the new document and the units marked.
    """
    doc = copy.deepcopy(allocation)
    due = days_between(doc["start_date"], receipt.expected_date)
    left = qty
    for exact in (True, False):
        for parcel in doc["parcels"]:
            day = parcel.get("inbound_day")
            if parcel["node_id"] != receipt.node_id or day is None or (day == due) != exact:
                continue
            for line in parcel["lines"]:
                if line["sku"] != receipt.sku or left == 0:
                    continue
                received = int(line.get("received", 0))
                take = min(left, int(line["qty"]) - received)
                if take > 0:
                    line["received"] = received + take
                    left -= take
    return doc, qty - left


def position_of(store: Store, conn: Any, node_id: str, sku: str) -> Availability:
    """The position with its open inbound units (as GetAvailability and the alerts see it)."""
    (position,) = store.positions(conn, [sku], [node_id])
    due, waiting = store.inbound_totals(conn, [sku], [node_id]).get((node_id, sku), (0, 0))
    return dataclasses.replace(position, inbound=due, inbound_reserved=waiting)


def receive(store: Store, settings: Settings, receipt_id: str, qty: int, reason: str) -> Received:
    """Receive ``qty`` units of ``receipt_id`` (see the module docstring)."""
    with store.read() as conn:
        found = store.receipts(conn, receipt_ids=[receipt_id], open_only=False)
        if not found:
            raise NotFound("receipt", receipt_id)
        waiting = store.receipt_orders(conn, receipt_id, oldest_first=True)
    node, sku = found[0].node_id, found[0].sku
    covered: list[str] = []
    short: list[str] = []
    with store.write() as conn:
        for order_id in sorted(o for o, _ in waiting):
            store.get_order(conn, order_id, for_update=True)
        store.lock_positions(conn, [(node, sku)])
        (receipt,) = store.receipts(
            conn, receipt_ids=[receipt_id], open_only=False, for_update=True
        )
        if receipt.state == "RECEIVED" and receipt.received_qty == qty:
            return Received(receipt, position_of(store, conn, node, sku), [], [])
        if receipt.state != "OPEN":
            why = f"is {receipt.state.lower()}" + (
                f" ({receipt.received_qty} unit(s))" if receipt.state == "RECEIVED" else ""
            )
            raise FailedPrecondition(
                f"receipt {receipt_id!r} {why}", [Precondition("RECEIPT", receipt_id, why)]
            )
        store.receive_receipt(conn, receipt, qty, reason)
        left = qty
        for order_id, units in store.receipt_orders(conn, receipt_id, oldest_first=True):
            if units > left:
                short.append(order_id)
                continue
            row = store.get_order(conn, order_id, for_update=True)
            allocation, marked = mark_received(row.allocation, receipt, units)
            store.inbound_to_stock(conn, order_id, receipt, marked)
            store.update_allocation(conn, row, allocation)
            store.add_event(
                conn,
                order_id,
                "receipt_received",
                f"receipt {receipt_id}: {marked} x {sku} arrived at {node}; reserved from "
                "stock there",
            )
            covered.append(order_id)
            left -= units
        (receipt,) = store.receipts(conn, receipt_ids=[receipt_id], open_only=False)
        position = position_of(store, conn, node, sku)
    resourced = _resource(
        store,
        settings,
        receipt,
        short,
        "receipt_short",
        f"arrived short: {qty} of {receipt.qty} unit(s), not enough for this order too",
        exclude_node=False,
    )
    if resourced:
        with store.read() as conn:
            (receipt,) = store.receipts(conn, receipt_ids=[receipt_id], open_only=False)
            position = position_of(store, conn, node, sku)
    return Received(receipt, position, covered, resourced)


def _resource(
    store: Store,
    settings: Settings,
    receipt: ReceiptRow,
    order_ids: list[str],
    kind: str,
    why: str,
    *,
    exclude_node: bool,
) -> list[str]:
    """Re-source each order's units on ``receipt``; one failing order does not stop the rest."""
    resourcer = Resourcer(store, settings)
    done = []
    for order_id in order_ids:
        try:
            resourcer.receipt_failed(
                order_id,
                receipt.receipt_id,
                receipt.node_id,
                receipt.sku,
                receipt.expected_date,
                kind,
                why,
                exclude_node=exclude_node,
            )
        except OmsError as exc:  # the next sweep tries again
            log.warning(
                "re-sourcing order %s off receipt %s: %s", order_id, receipt.receipt_id, exc
            )
            continue
        done.append(order_id)
    return done


def resource_overdue_receipts(store: Store, settings: Settings) -> Overdue:
    """Re-source the orders waiting for overdue receipts (see the module docstring)."""
    day = today(store.clock())
    with store.read() as conn:
        stale = [
            (r, [o for o, _ in store.receipt_orders(conn, r.receipt_id, oldest_first=True)])
            for r in store.stale_receipts(conn, day)
        ]
    receipts: list[str] = []
    resourced: list[str] = []
    for receipt, order_ids in stale:
        receipts.append(receipt.receipt_id)
        if receipt.state == "RECEIVED":
            resourced += _resource(
                store,
                settings,
                receipt,
                order_ids,
                "receipt_short",
                f"arrived short: {receipt.received_qty} of {receipt.qty} unit(s)",
                exclude_node=False,
            )
        else:
            resourced += _resource(
                store,
                settings,
                receipt,
                order_ids,
                "receipt_late",
                f"is overdue: expected {receipt.expected_date}, not received by {day}",
                exclude_node=True,
            )
    return Overdue(receipts, resourced)


class OverdueSweeper:
    """A daemon thread that runs :func:`resource_overdue_receipts` every ``interval_s``."""

    def __init__(self, store: Store, settings: Settings, interval_s: float) -> None:
        self.store = store
        self.settings = settings
        self.interval_s = interval_s
        self.sweeps = 0
        self.swept = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="oms-overdue-receipts", daemon=True)

    def start(self) -> OverdueSweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                done = resource_overdue_receipts(self.store, self.settings)
                if done.resourced:
                    log.info(
                        "overdue receipts %s: re-sourced orders %s", done.receipts, done.resourced
                    )
            except Exception:  # keep sweeping; the store may be briefly unavailable
                log.exception("overdue receipt sweep failed")
            with self.swept:
                self.sweeps += 1
                self.swept.notify_all()


def start_sweeper(store: Store, settings: Settings) -> OverdueSweeper | None:
    """The server's overdue-receipt sweeper, or None when ``overdue_sweep_s`` is 0 (off)."""
    if settings.overdue_sweep_s <= 0:
        return None
    return OverdueSweeper(store, settings, settings.overdue_sweep_s).start()
