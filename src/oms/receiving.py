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
safety stock (they were promised before). Every order the units did not
cover is marked for re-sourcing in the same transaction; after the commit
they are re-sourced through :class:`oms.resourcing.Resourcer`, oldest first,
with a ``receipt_short`` event: the units left over at the node (if any)
count as stock there like any other. More units than expected simply add to
free stock.

**Re-sourcing marks.** Whatever makes a receipt fail its waiting orders
(arriving short, being cancelled, cut or moved later, going overdue) marks
those orders' inbound reservations (``resource_kind``, reason, the date they
were planned on) in the transaction that makes the change. Re-sourcing then
runs per order, in its own transaction (:func:`resource_pending`; one failing
order does not stop the rest), and deletes the mark with the reservation.
So a change is never half applied: work cut short (a crash, a lost race, the
store briefly away) stays marked and the next sweep finishes it.

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
sweep runs every re-sourcing still marked. The server runs it every ``overdue_sweep_s``
seconds (:class:`OverdueSweeper`); ``ResourceOverdueReceipts`` runs it on
demand. Running it twice, or in two processes at once, re-sources each order
once: an order that no longer waits for the receipt is left as it is.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from oms.convert import days_between, today
from oms.errors import FailedPrecondition, NotFound, OmsError, Precondition
from oms.resourcing import Resourcer
from oms.settings import Settings
from oms.store import Availability, Plan, ReceiptRow, Store

log = logging.getLogger("oms.receiving")

#: Event kinds of orders a receipt failed (the re-sourcing marks' ``resource_kind``).
SHORT = "receipt_short"
LATE = "receipt_late"
CANCELLED = "receipt_cancelled"


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


def mark_received(allocation: Plan, receipt: ReceiptRow, qty: int) -> tuple[Plan, int]:
    """``allocation`` with ``qty`` waiting units of ``receipt`` marked ``received``.

    The units are looked for in the node's parcels waiting for the receipt's
    day first, then in its other waiting parcels (a receipt moved earlier
    after the order was placed). Returns the new plan and the units marked.
    """
    due = days_between(allocation.start, receipt.expected_date)
    parcels = list(allocation.parcels)
    left = qty
    for exact in (True, False):
        for i, parcel in enumerate(parcels):
            day = parcel.inbound_day
            if parcel.node_id != receipt.node_id or day is None or (day == due) != exact:
                continue
            lines = list(parcel.lines)
            for j, line in enumerate(lines):
                if line.sku != receipt.sku or left == 0:
                    continue
                take = min(left, line.qty - line.arrived)
                if take > 0:
                    lines[j] = replace(line, received=line.arrived + take)
                    left -= take
            parcels[i] = replace(parcel, lines=tuple(lines))
    return replace(allocation, parcels=tuple(parcels)), qty - left


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
        store.mark_for_resourcing(
            conn,
            receipt,
            short,
            SHORT,
            f"arrived short: {qty} of {receipt.qty} unit(s), not enough for this order too",
        )
        (receipt,) = store.receipts(conn, receipt_ids=[receipt_id], open_only=False)
        position = position_of(store, conn, node, sku)
    resourced = resource_pending(store, settings, [receipt_id])
    if resourced:
        with store.read() as conn:
            (receipt,) = store.receipts(conn, receipt_ids=[receipt_id], open_only=False)
            position = position_of(store, conn, node, sku)
    return Received(receipt, position, covered, resourced)


def resource_pending(
    store: Store, settings: Settings, receipt_ids: Sequence[str] | None = None
) -> list[str]:
    """Re-source every order marked on ``receipt_ids`` (all receipts when None), oldest first.

    Each order in its own transaction; one failing order does not stop the rest
    (its mark stays, so the next sweep tries again). Returns the orders done,
    each once.
    """
    with store.read() as conn:
        pending = store.pending_resourcing(conn, receipt_ids)
    resourcer = Resourcer(store, settings)
    done: dict[str, None] = {}
    for work in pending:
        try:
            resourcer.receipt_failed(
                work.order_id,
                work.receipt_id,
                work.node_id,
                work.sku,
                work.due,
                work.kind,
                work.reason,
                # What did arrive of a short receipt may still serve the order.
                exclude_node=work.kind != SHORT,
            )
        except OmsError as exc:
            log.warning(
                "re-sourcing order %s off receipt %s: %s", work.order_id, work.receipt_id, exc
            )
            continue
        done[work.order_id] = None
    return list(done)


def resource_overdue_receipts(store: Store, settings: Settings) -> Overdue:
    """Mark the orders waiting for overdue receipts, then run every marked re-sourcing.

    The second step also finishes work an earlier change left (a receive,
    cancel or upsert whose re-sourcing was cut short).
    """
    day = today(store.clock())
    with store.read() as conn:
        any_overdue = bool(store.overdue_receipts(conn, day))
    if any_overdue:  # the write lock only when there is something to mark
        with store.write() as conn:
            for receipt in store.overdue_receipts(conn, day):
                store.mark_for_resourcing(
                    conn,
                    receipt,
                    [o for o, _ in store.receipt_orders(conn, receipt.receipt_id)],
                    LATE,
                    f"is overdue: expected {receipt.expected_date}, not received by {day}",
                )
    with store.read() as conn:
        pending = sorted({p.receipt_id for p in store.pending_resourcing(conn)})
    return Overdue(pending, resource_pending(store, settings, pending))


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
