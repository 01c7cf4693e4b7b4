"""Re-sourcing a placed order when part of it cannot ship as planned.

Triggers: a node rejects a PLACED or RELEASED order (``RejectOrder``), a node
reports it cannot find some units (``ReportShortage``), or an inbound receipt
that units wait for is cancelled or moved later (``CancelInboundReceipt``,
``UpsertInboundReceipts``). In each case the affected units leave the
allocation and the model re-sources them, for the same destination (or the
same pickup store), from stock only, never from the node or receipt that
failed:

1. within the promised date, when any allocation arrives by then: the
   cheapest such (the promise is kept);
2. else the allocation arriving closest to the promise (earliest, then
   cheapest), and the order is flagged (a ``flagged`` event:
   ``needs_attention`` in GetOrder);
3. no stock anywhere: the units stay unallocated, the order is flagged.

The solve runs on a snapshot; the write then re-checks, under the same locks
PlaceOrder takes, that the order has not changed (its version) and that the
new units are still free, releases the old reservations and reserves the new
ones in one transaction, so re-sourcing can never oversell. A lost race is
retried a few times, then ABORTED. Each step is an order event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from sqlalchemy.engine import Connection

from oms import lifecycle
from oms.convert import FLAGGED, day_after, days_between, plan_of, today
from oms.errors import Aborted, FailedPrecondition, Precondition
from oms.metrics import observe_solver
from oms.settings import Settings
from oms.store import OrderRow, Plan, PlannedParcel, Position, Store, units_of
from oms.store import shipment_records as sh
from sourcing import QuoteSettings, quote
from sourcing.errors import ShortageError
from sourcing.evaluate import evaluate
from sourcing.model import (
    Allocation,
    Location,
    Network,
    Option,
    Order,
    OrderLine,
    ParcelLine,
    ParcelPlan,
)

#: Re-solves after a lost race before giving up with ABORTED.
ATTEMPTS = 4


@dataclass
class Removal:
    """What leaves an order's allocation, and why (the first event)."""

    parcels: list[PlannedParcel]  # the allocation's parcels that stay (some maybe trimmed)
    lines: dict[int, int]  # order line -> units to re-source
    stock: dict[Position, int]  # stock reservations to release
    receipts: list[str]  # inbound reservations of the order on these receipts to release
    exclude: set[Position]  # positions never to re-source from
    event: tuple[str, str]
    repriced: list[int] = field(default_factory=list)  # indices of trimmed parcels
    #: Open shipments the node refused: REJECTED in the same transaction, with this reason.
    rejected: list[str] = field(default_factory=list)
    reason: str | None = None


@dataclass(frozen=True)
class Outcome:
    order: OrderRow
    promise_kept: bool


class _LostRace(Exception):
    pass


class _Unchanged(Exception):
    """Nothing left to re-source (another sweep or call already did it)."""


#: What :func:`_trim` takes: units from stock parcels, units of waiting parcels that still
#: wait for their receipt, or units of waiting parcels that have arrived (``received``).
STOCK, WAITING, RECEIVED = "stock", "waiting", "received"


def _trim(
    parcels: list[PlannedParcel],
    node: str,
    sku: str,
    qty: int,
    *,
    inbound_day: int | None,
    lines: dict[int, int],
    part: str | None = None,
) -> tuple[list[PlannedParcel], list[int], int]:
    """Take ``qty`` units of ``sku`` off ``node``'s parcels (last lines first).

    ``part`` (default: STOCK when ``inbound_day`` is None, else WAITING) says
    which units: WAITING takes only units not yet received, from the parcels
    waiting for ``inbound_day`` (any day when it is None); RECEIVED only
    received ones. Returns the parcels (emptied ones dropped), the indices of
    trimmed ones and how many units could be taken; adds the taken units to
    ``lines``.
    """
    part = part or (STOCK if inbound_day is None else WAITING)
    result: list[PlannedParcel] = []
    trimmed: list[int] = []
    left = qty
    for parcel in parcels:
        day = parcel.inbound_day
        if part == STOCK:
            fits = day is None
        elif part == WAITING:
            fits = day is not None and (inbound_day is None or day == inbound_day)
        else:
            fits = day is not None
        if (
            parcel.node_id != node
            or not fits
            or left == 0
            or not any(pl.sku == sku for pl in parcel.lines)
        ):
            result.append(parcel)
            continue
        new_lines = []
        for pl in reversed(parcel.lines):
            units, received = pl.qty, pl.arrived
            room = {STOCK: units, WAITING: units - received, RECEIVED: received}[part]
            take = min(left, room) if pl.sku == sku else 0
            left -= take
            if take:
                lines[pl.line] = lines.get(pl.line, 0) + take
            if units - take > 0:
                line = replace(pl, qty=units - take)
                if part == RECEIVED:
                    line = replace(line, received=received - take)
                new_lines.append(line)
        if new_lines:
            trimmed.append(len(result))
            result.append(replace(parcel, lines=tuple(reversed(new_lines))))
    return result, trimmed, qty - left


def _changed(before: list[PlannedParcel], after: list[PlannedParcel]) -> list[int]:
    """Indices of ``after``'s parcels that :func:`_trim` rewrote (new objects)."""
    kept = {id(p) for p in before}
    return [i for i, p in enumerate(after) if id(p) not in kept]


class Resourcer:
    """Runs one re-sourcing from its trigger to the written order (see the module docstring)."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    # -- triggers ------------------------------------------------------------------

    def reject(self, order_id: str, node_id: str, reason: str) -> Outcome:
        """Every open shipment of ``node_id`` in the order is refused (RejectOrder)."""

        def refused(row: OrderRow) -> set[str]:
            gone = {
                s.shipment_id for s in row.shipments if s.node_id == node_id and s.state in sh.OPEN
            }
            if not gone:
                raise FailedPrecondition(
                    f"node {node_id!r} ships nothing of order {row.order_id!r}",
                    [Precondition("NODE", node_id, "not in the order's open shipments")],
                )
            return gone

        return self._run(order_id, self._refusal(node_id, reason, refused))

    def reject_shipment(self, shipment: sh.ShipmentRow, reason: str) -> Outcome:
        """One open shipment is refused by its node (RejectShipment)."""

        def refused(row: OrderRow) -> set[str]:
            fresh = next(s for s in row.shipments if s.shipment_id == shipment.shipment_id)
            sh.plan("reject", fresh)
            return {shipment.shipment_id}

        return self._run(shipment.order_id, self._refusal(shipment.node_id, reason, refused))

    def _refusal(
        self, node_id: str, reason: str, refused: Callable[[OrderRow], set[str]]
    ) -> Callable[[Connection, OrderRow], Removal]:
        def plan(conn: Connection, row: OrderRow) -> Removal:
            ids = refused(row)
            parcels = row.allocation.parcels
            gone = [p for p in parcels if p.shipment_id in ids]
            lines: dict[int, int] = {}
            for p in gone:
                for pl in p.lines:
                    lines[pl.line] = lines.get(pl.line, 0) + pl.qty
            waiting = sorted(self.store.order_inbound(conn, row.order_id))
            receipts = (
                [
                    r.receipt_id
                    for r in self.store.receipts(conn, receipt_ids=waiting, open_only=False)
                    if r.node_id == node_id
                ]
                if waiting
                else []
            )
            skus = {pl.sku for p in gone for pl in p.lines}
            units = sum(lines.values())
            return Removal(
                [p for p in parcels if p.shipment_id not in ids],
                lines,
                units_of(gone),
                receipts,
                {(node_id, sku) for sku in skus},
                (
                    "rejected",
                    f"{node_id} will not ship {', '.join(sorted(ids))}: {reason}; "
                    f"{units} unit(s) to re-source",
                ),
                rejected=sorted(ids),
                reason=reason,
            )

        return plan

    def shortage(
        self, order_id: str, node_id: str, missing: dict[str, int], reason: str
    ) -> Outcome:
        def plan(conn: Connection, row: OrderRow) -> Removal:
            parcels = list(row.allocation.parcels)
            held = units_of([p for p in parcels if p.node_id == node_id])
            problems = [
                Precondition(
                    "SHORTAGE",
                    f"{node_id}/{sku}",
                    f"reports {qty} missing, but the order takes {held.get((node_id, sku), 0)} "
                    "from there",
                )
                for sku, qty in sorted(missing.items())
                if qty > held.get((node_id, sku), 0)
            ]
            if problems:
                raise FailedPrecondition(
                    f"node {node_id!r} does not ship those units of order {row.order_id!r}",
                    problems,
                )
            lines: dict[int, int] = {}
            before = parcels
            for sku, qty in sorted(missing.items()):
                parcels, _, took = _trim(parcels, node_id, sku, qty, inbound_day=None, lines=lines)
                if took < qty:  # the rest from units that arrived on a receipt
                    parcels, _, _ = _trim(
                        parcels,
                        node_id,
                        sku,
                        qty - took,
                        inbound_day=None,
                        lines=lines,
                        part=RECEIVED,
                    )
            what = ", ".join(f"{q} x {s}" for s, q in sorted(missing.items()))
            return Removal(
                parcels,
                lines,
                {(node_id, sku): qty for sku, qty in missing.items()},
                [],
                {(node_id, sku) for sku in missing},
                ("shortage", f"{node_id} cannot find {what}: {reason}"),
                _changed(before, parcels),
            )

        return self._run(order_id, plan)

    def receipt_failed(
        self,
        order_id: str,
        receipt_id: str,
        node_id: str,
        sku: str,
        due: str,
        kind: str,
        why: str,
        *,
        exclude_node: bool = True,
    ) -> Outcome:
        """The order's units waiting for ``receipt_id`` (due ``due``) are re-sourced from stock.

        ``exclude_node``: never from ``node_id``'s ``sku`` (the receipt failed there);
        False when the receipt arrived short, so what did arrive may serve the order.
        Nothing to do (the order no longer waits for the receipt): the order unchanged.
        """

        def plan(conn: Connection, row: OrderRow) -> Removal:
            qty = self.store.order_inbound(conn, row.order_id).get(receipt_id, 0)
            if qty == 0:
                raise _Unchanged
            lines: dict[int, int] = {}
            day = days_between(row.allocation.start, due)
            before = list(row.allocation.parcels)
            parcels, _, took = _trim(before, node_id, sku, qty, inbound_day=day, lines=lines)
            if took < qty:  # the receipt moved earlier after the order was placed
                parcels, _, _ = _trim(
                    parcels, node_id, sku, qty - took, inbound_day=None, lines=lines, part=WAITING
                )
            return Removal(
                parcels,
                lines,
                {},
                [receipt_id],
                {(node_id, sku)} if exclude_node else set(),
                (kind, f"receipt {receipt_id} ({qty} x {sku} at {node_id}) {why}"),
                _changed(before, parcels),
            )

        return self._run(order_id, plan)

    # -- the common path ---------------------------------------------------------

    def _run(self, order_id: str, plan: Callable[[Connection, OrderRow], Removal]) -> Outcome:
        for _ in range(ATTEMPTS):
            with self.store.read() as conn:
                row = self.store.get_order(conn, order_id)
                lifecycle.plan("resource", row.order_id, row.state)
                try:
                    removal = plan(conn, row)
                except _Unchanged:
                    return Outcome(row, True)
                catalog = self.store.catalog(conn)
                skus = sorted({line.sku for line in row.lines})
                network = self.store.network_for(conn, catalog, skus)
            try:
                return self._apply(row, removal, network)
            except _LostRace:
                continue
        raise Aborted(f"order {order_id!r} kept changing while it was re-sourced; retry")

    def _apply(self, row: OrderRow, removal: Removal, network: Network) -> Outcome:
        plan = row.allocation
        start = plan.start
        now_day = today(self.store.clock())
        offset = days_between(start, now_day)
        latest = days_between(start, row.promised_date) - offset
        pickup = plan.pickup
        missing = {i: q for i, q in sorted(removal.lines.items()) if q > 0}
        best, kept = self._choose(row, network, removal, missing, latest, pickup)
        parcels = list(removal.parcels)
        for i in removal.repriced:
            parcels[i] = _reprice(network, row, parcels[i], pickup)
        events = [removal.event]
        new_units: dict[Position, int] = {}
        if best is not None:
            line_of = list(missing)
            new = [
                replace(
                    p,
                    arrival_days=p.arrival_days + offset,
                    lines=tuple(replace(pl, line=line_of[pl.line]) for pl in p.lines),
                )
                for p in plan_of(best, "resourced").parcels
            ]
            parcels.extend(new)
            new_units = units_of(new)
            nodes = ", ".join(sorted({p.node_id for p in new}))
            arrival = day_after(now_day, best.delivery_days)
            if kept:
                events.append(
                    (
                        "resourced",
                        f"{sum(missing.values())} unit(s) now from {nodes}, arriving {arrival}; "
                        f"promise {row.promised_date} kept",
                    )
                )
            else:
                events.append(
                    (
                        FLAGGED,
                        f"promise {row.promised_date} missed: {sum(missing.values())} unit(s) "
                        f"now from {nodes}, arriving {arrival}, the closest any allocation gets; "
                        "needs attention",
                    )
                )
        elif missing:
            events.append(
                (
                    FLAGGED,
                    f"no stock anywhere for {sum(missing.values())} unit(s); they are not "
                    "allocated; needs attention",
                )
            )
        allocation = _totals(replace(plan, parcels=tuple(parcels)))
        try:
            with self.store.write() as conn:
                fresh = self.store.get_order(conn, row.order_id, for_update=True)
                if fresh.version != row.version:
                    raise _LostRace
                self.store.release_order_units(conn, fresh, removal.stock)
                for receipt_id in removal.receipts:
                    self.store.release_inbound(conn, fresh.order_id, receipt_id)
                if new_units and self.store.shortages(conn, new_units):
                    raise _LostRace  # rolls the release back too
                self.store.reserve_order_units(conn, fresh.order_id, new_units)
                for shipment_id in removal.rejected:
                    shipment = self.store.shipments.get(conn, shipment_id)
                    if shipment.state not in sh.OPEN:
                        raise _LostRace  # it left (or was cancelled) meanwhile
                    self.store.shipments.move(
                        conn,
                        shipment,
                        sh.REJECTED,
                        f"{shipment.describe()} rejected by its node: {removal.reason}",
                        reason=removal.reason,
                    )
                why = removal.event[1]
                if removal.rejected:
                    why = f"re-sourced after {', '.join(removal.rejected)} was rejected"
                self.store.update_allocation(
                    conn,
                    fresh,
                    allocation,
                    reason=why,
                    replaces=removal.rejected[0] if len(removal.rejected) == 1 else None,
                )
                for kind, detail in events:
                    self.store.add_event(conn, fresh.order_id, kind, detail)
                if fresh.state != "PLACED" and new_units:
                    self.store.add_event(
                        conn,
                        fresh.order_id,
                        "released",
                        "sent to " + ", ".join(sorted({n for n, _ in new_units})),
                    )
                result = self.store.get_order(conn, fresh.order_id)
        except Aborted:
            raise _LostRace from None
        return Outcome(result, kept or not missing)

    def _choose(
        self,
        row: OrderRow,
        network: Network,
        removal: Removal,
        missing: dict[int, int],
        latest: int,
        pickup: str | None,
    ) -> tuple[Option | None, bool]:
        """The replacement for ``missing``: cheapest within the promise, else the closest."""
        if not missing:
            return None, True
        safety = network.safety_stock.copy()
        for node, sku in removal.exclude:
            if node in network.node_index and sku in network.sku_index:
                n, s = network.node_index[node], network.sku_index[sku]
                safety[n, s] = network.on_hand[n, s]
        network = network.replace(safety_stock=safety)
        order = Order(
            Location(row.dest_lat, row.dest_lon),
            tuple(OrderLine(row.lines[i].sku, qty) for i, qty in missing.items()),
        )
        quote_row = None
        with self.store.read() as conn:
            quote_row = self.store.get_quote(conn, row.quote_id)
        settings = QuoteSettings(
            value_of_day=int(
                100_000
                if quote_row.request.value_of_day is None
                else quote_row.request.value_of_day
            ),
            time_limit_s=self.settings.solver_time_limit_s,
            pickup_stores=(pickup,) if pickup else (),
        )

        def candidates(q_settings: QuoteSettings) -> list[Option]:
            result = quote(network, order, q_settings)
            observe_solver(result.stats.seconds)
            return [o for o in result.frontier if o.pickup == pickup]

        try:
            if latest >= 0:
                within = candidates(replace(settings, latest_day=latest))
                if within:
                    return min(within, key=lambda o: (o.cost, o.delivery_days, o.num_parcels)), True
            found = candidates(settings)
        except ShortageError:
            return None, False
        if not found:
            return None, False
        return min(found, key=lambda o: (o.delivery_days, o.cost, o.num_parcels)), False


def _reprice(
    network: Network, row: OrderRow, parcel: PlannedParcel, pickup: str | None
) -> PlannedParcel:
    """A trimmed parcel priced again by the reference rules (its lines changed)."""
    lines = tuple(ParcelLine(pl.line, pl.sku, pl.qty) for pl in parcel.lines)
    order = Order(
        Location(row.dest_lat, row.dest_lon),
        tuple(OrderLine(line.sku, line.qty) for line in row.lines),
    )
    plan = ParcelPlan(parcel.node_id, parcel.service, lines, parcel.inbound_day)
    (priced,) = evaluate(network, order, Allocation((plan,), pickup), allow_partial=True).parcels
    return replace(
        parcel,
        weight_g=int(priced.weight_g),
        shipping=priced.shipping,
        handling=priced.handling,
        storage_credit=priced.storage_credit,
        cost=priced.cost,
    )


def _totals(plan: Plan) -> Plan:
    parcels = plan.parcels
    return replace(
        plan,
        cost=sum(p.cost for p in parcels),
        shipping=sum(p.shipping for p in parcels),
        handling=sum(p.handling for p in parcels),
        storage_credit=sum(p.storage_credit for p in parcels),
        delivery_days=int(np.max([p.arrival_days for p in parcels])) if parcels else 0,
        method="resourced",
    )
