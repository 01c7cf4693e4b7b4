"""Shipments (issue 16): one per parcel of an order's allocation, each with its own life.

Works in the caller's transaction (:meth:`oms.store.database.Database.write`):
a shipment's change, the stock it moves, its order's derived state and its
events commit together. Keeping an order's shipments in step with its
allocation is :meth:`ShipmentRepository.sync`: the order repository calls it
wherever an allocation is written (placing, re-sourcing, receipts), and the
batch job after its own write, so no writer of plans needs to know about shipments.

May import :mod:`oms.store.database`, ``catalog``, ``stock``, ``outbox``,
``shipment_records``, ``plans``, :mod:`oms.schema`, :mod:`oms.errors`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.driver_sql import Statement, execute, execute_many, fetch
from oms.errors import Aborted, FailedPrecondition, NotFound, Precondition
from oms.store import outbox
from oms.store import shipment_records as sh
from oms.store.catalog import Catalog, NetworkRepository
from oms.store.database import Database
from oms.store.plans import Plan, PlannedParcel
from oms.store.sql import insert_statement
from oms.store.stock import StockRepository

_COLUMNS = tuple(c.name for c in t.shipments.columns)
# The hot path's statements, on the driver (see oms.driver_sql: through SQLAlchemy Core
# each cost more CPU than the database spent on it; PlaceOrder and ConfirmShipment run
# them for every parcel).
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM shipments"
_OF_ORDER = Statement.portable(
    f"{_SELECT} WHERE order_id = :order_id ORDER BY created_at, shipment_id"
)
_BY_ID = Statement.portable(f"{_SELECT} WHERE shipment_id = :shipment_id")
_INSERT = insert_statement("shipments", _COLUMNS)
#: A move: every column a transition may set, if the shipment is still in its read state.
_MOVE = Statement.portable(
    "UPDATE shipments SET state = :state, updated_at = :updated_at, carrier = :carrier,"
    " tracking_number = :tracking_number, shipped_at = :shipped_at,"
    " delivered_at = :delivered_at, reason = :reason"
    " WHERE shipment_id = :shipment_id AND state = :was"
)
_RESERVED_AT_NODE = Statement.portable(
    "SELECT reservation_id, sku, qty FROM reservations"
    " WHERE order_id = :order_id AND node_id = :node_id ORDER BY reservation_id DESC"
)
_DROP_RESERVATION = Statement.portable(
    "DELETE FROM reservations WHERE reservation_id = :reservation_id"
)
_CUT_RESERVATION = Statement.portable(
    "UPDATE reservations SET qty = qty - :qty WHERE reservation_id = :reservation_id"
)
_STATES_OF_ORDER = Statement.portable("SELECT state FROM shipments WHERE order_id = :order_id")
_SET_ORDER_STATE = Statement.portable(
    "UPDATE orders SET state = :state, updated_at = :now, version = version + 1"
    " WHERE order_id = :order_id AND state <> :state"
)
#: Days from the order's start date to a parcel's planned dispatch, given the parcel.
DispatchDays = Callable[[PlannedParcel], int]


def _day(start: str, days: int) -> str:
    return (date.fromisoformat(start) + timedelta(days=int(days))).isoformat()


def _lines(parcel: PlannedParcel) -> list[dict[str, Any]]:
    return [{"line": pl.line, "sku": pl.sku, "qty": pl.qty} for pl in parcel.lines]


@functools.lru_cache(maxsize=4)
def _dispatch_days(catalog: Catalog) -> DispatchDays:
    """:meth:`ShipmentRepository.dispatch_days` for one catalog (built once per catalog)."""
    service = {s: i for i, s in enumerate(catalog.service_ids)}
    zone = {z: i for i, z in enumerate(catalog.zone_ids)}
    transit = {
        (name, zone_id): int(catalog.transit_days[s, z])
        for name, s in service.items()
        for zone_id, z in zone.items()
        if catalog.offered[s, z]
    }
    handling = {node: int(catalog.handling_days[n]) for node, n in catalog.node_index.items()}

    def days(parcel: PlannedParcel) -> int:
        lane = transit.get((parcel.service, str(parcel.zone)))
        if lane is not None:
            return max(0, parcel.arrival_days - lane)
        return max(0, min(parcel.arrival_days, handling.get(parcel.node_id, 0)))

    return days


def with_shipment_ids(allocation: Plan) -> Plan:
    """``allocation`` with a new shipment id on every parcel that has none."""
    if all(p.shipment_id is not None for p in allocation.parcels):
        return allocation
    return replace(
        allocation,
        parcels=tuple(
            p if p.shipment_id is not None else replace(p, shipment_id=sh.new_shipment_id())
            for p in allocation.parcels
        ),
    )


class ShipmentRepository:
    def __init__(self, db: Database, stock: StockRepository, network: NetworkRepository) -> None:
        self.db = db
        self.clock = db.clock
        self.stock = stock
        self.network = network

    # -- reads -----------------------------------------------------------------------

    def _row(self, values: Sequence[Any], today: str) -> sh.ShipmentRow:
        row = dict(zip(_COLUMNS, values, strict=True))
        state = row["state"]
        return sh.ShipmentRow(
            shipment_id=row["shipment_id"],
            order_id=row["order_id"],
            node_id=row["node_id"],
            service=row["service"],
            lines=json.loads(row["lines_json"]),
            state=state,
            planned_dispatch=row["planned_dispatch"],
            planned_arrival=row["planned_arrival"],
            carrier=row["carrier"],
            tracking_number=row["tracking_number"],
            shipped_at=row["shipped_at"],
            delivered_at=row["delivered_at"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            reason=row["reason"],
            replaces=row["replaces"],
            late=state in sh.OPEN and row["planned_dispatch"] < today,
        )

    def today(self) -> str:
        from datetime import UTC, datetime

        return datetime.fromtimestamp(self.clock(), UTC).date().isoformat()

    def of_order(self, conn: Connection, order_id: str) -> list[sh.ShipmentRow]:
        today = self.today()
        return [self._row(r, today) for r in fetch(conn, _OF_ORDER, order_id=order_id)]

    def get(self, conn: Connection, shipment_id: str) -> sh.ShipmentRow:
        found = fetch(conn, _BY_ID, shipment_id=shipment_id)
        if not found:
            raise NotFound("shipment", shipment_id)
        return self._row(found[0], self.today())

    def search(
        self,
        conn: Connection,
        *,
        node_id: str | None,
        state: str | None,
        late_only: bool,
        after: tuple[float, str] | None,
        limit: int,
    ) -> list[sh.ShipmentRow]:
        """Shipments by (created_at, shipment_id) after the ``after`` cursor."""
        s = t.shipments
        query = sa.select(s).order_by(s.c.created_at, s.c.shipment_id).limit(limit)
        if node_id is not None:
            query = query.where(s.c.node_id == node_id)
        if state is not None:
            query = query.where(s.c.state == state)
        today = self.today()
        if late_only:
            query = query.where(s.c.state.in_(sorted(sh.OPEN)), s.c.planned_dispatch < today)
        if after is not None:
            query = query.where(
                sa.or_(
                    s.c.created_at > after[0],
                    sa.and_(s.c.created_at == after[0], s.c.shipment_id > after[1]),
                )
            )
        return [self._row(r, today) for r in conn.execute(query)]

    def count_late(self, conn: Connection) -> int:
        s = t.shipments
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    s.c.state.in_(sorted(sh.OPEN)), s.c.planned_dispatch < self.today()
                )
            ).scalar()
            or 0
        )

    # -- writes ----------------------------------------------------------------------

    def event(self, conn: Connection, shipment: sh.ShipmentRow, kind: str, detail: str) -> None:
        outbox.add_event(
            conn,
            shipment.order_id,
            kind,
            detail,
            self.clock(),
            shipment_id=shipment.shipment_id,
            node_id=shipment.node_id,
        )

    def insert(
        self,
        conn: Connection,
        order_id: str,
        parcel: PlannedParcel,
        start: str,
        dispatch_days: DispatchDays,
        *,
        state: str,
        reason: str | None,
        replaces: str | None = None,
        quiet: bool = False,
    ) -> sh.ShipmentRow:
        """One new shipment for ``parcel``, with an event (``shipment_requested`` or
        ``shipment_created``) unless ``quiet`` (a new order's: its ``placed`` event
        lists the parcels, and no node has work until the order is released)."""
        assert parcel.shipment_id is not None
        now = self.clock()
        lines = _lines(parcel)
        values = {
            "shipment_id": parcel.shipment_id,
            "order_id": order_id,
            "node_id": parcel.node_id,
            "service": parcel.service,
            "lines_json": json.dumps(lines, separators=(",", ":")),
            "state": state,
            "planned_dispatch": _day(start, dispatch_days(parcel)),
            "planned_arrival": _day(start, parcel.arrival_days),
            "carrier": None,
            "tracking_number": None,
            "shipped_at": None,
            "delivered_at": None,
            "created_at": now,
            "updated_at": now,
            "reason": reason,
            "replaces": replaces,
        }
        execute(conn, _INSERT, **values)
        dispatch, arrival = values["planned_dispatch"], values["planned_arrival"]
        assert isinstance(dispatch, str) and isinstance(arrival, str)
        row = sh.ShipmentRow(
            shipment_id=parcel.shipment_id,
            order_id=order_id,
            node_id=parcel.node_id,
            service=parcel.service,
            lines=lines,
            state=state,
            planned_dispatch=dispatch,
            planned_arrival=arrival,
            carrier=None,
            tracking_number=None,
            shipped_at=None,
            delivered_at=None,
            created_at=now,
            updated_at=now,
            reason=reason,
            replaces=replaces,
            late=state in sh.OPEN and dispatch < self.today(),
        )
        if quiet:
            return row
        kind = "shipment_requested" if state == sh.REQUESTED else "shipment_created"
        self.event(
            conn,
            row,
            kind,
            f"{row.describe()} by {row.service}, planned to leave {row.planned_dispatch}"
            + (f"; {reason}" if reason else ""),
        )
        return row

    def move(
        self,
        conn: Connection,
        shipment: sh.ShipmentRow,
        state: str,
        detail: str,
        **values: Any,
    ) -> sh.ShipmentRow:
        """Set ``shipment``'s state (and other columns) if it is still in its read state;
        one event ``shipment_<state>``. Aborted when it changed meanwhile."""
        fresh = replace(shipment, state=state, updated_at=self.clock(), **values)
        fresh = replace(fresh, late=state in sh.OPEN and fresh.planned_dispatch < self.today())
        changed = execute(
            conn,
            _MOVE,
            state=fresh.state,
            updated_at=fresh.updated_at,
            carrier=fresh.carrier,
            tracking_number=fresh.tracking_number,
            shipped_at=fresh.shipped_at,
            delivered_at=fresh.delivered_at,
            reason=fresh.reason,
            shipment_id=shipment.shipment_id,
            was=shipment.state,
        )
        if not changed:
            raise Aborted(f"shipment {shipment.shipment_id!r} changed concurrently")
        self.event(conn, fresh, f"shipment_{state.lower()}", detail)
        return fresh

    def set_lines(
        self, conn: Connection, shipment: sh.ShipmentRow, lines: list[dict[str, Any]]
    ) -> None:
        conn.execute(
            sa.update(t.shipments)
            .where(t.shipments.c.shipment_id == shipment.shipment_id)
            .values(lines_json=json.dumps(lines, separators=(",", ":")), updated_at=self.clock())
        )

    def sync(
        self,
        conn: Connection,
        order_id: str,
        allocation: Plan,
        *,
        released: bool,
        reason: str | None = None,
        replaces: str | None = None,
    ) -> Plan:
        """Bring the order's shipments in step with ``allocation`` (one per parcel); the
        allocation with every parcel naming its shipment, for the caller to store.

        Parcels without a shipment get a new one (REQUESTED when the order was already
        sent to its nodes, else PENDING). Open shipments whose parcel changed take its
        lines; open ones whose parcel is gone are CANCELLED (re-allocated). Shipments
        that left, or were rejected, are history: untouched. A new order's are
        :meth:`create`'s.
        """
        allocation = with_shipment_ids(allocation)
        dispatch_days = self.dispatch_days(conn)
        existing = {s.shipment_id: s for s in self.of_order(conn, order_id)}
        seen: set[str] = set()
        for parcel in allocation.parcels:
            assert parcel.shipment_id is not None
            current = existing.get(parcel.shipment_id)
            if current is None:
                self.insert(
                    conn,
                    order_id,
                    parcel,
                    allocation.start,
                    dispatch_days,
                    state=sh.REQUESTED if released else sh.PENDING,
                    reason=reason,
                    replaces=replaces,
                )
                continue
            seen.add(current.shipment_id)
            if current.state in sh.OPEN and _lines(parcel) != current.lines:
                self.set_lines(conn, current, _lines(parcel))
        for shipment in existing.values():
            if shipment.shipment_id not in seen and shipment.state in sh.OPEN:
                self.move(
                    conn,
                    shipment,
                    sh.CANCELLED,
                    f"{shipment.describe()} re-allocated" + (f": {reason}" if reason else ""),
                    reason=reason or "re-allocated",
                )
        return allocation

    def create(
        self, conn: Connection, order_id: str, allocation: Plan
    ) -> tuple[sh.ShipmentRow, ...]:
        """A just-inserted order's shipments, one PENDING per parcel of ``allocation`` (whose
        parcels already name their shipments), without an event each (the order's ``placed``
        event lists the parcels, and no node has work until the order is released). Returned
        as :meth:`of_order` would read them back, so PlaceOrder's reply needs no read."""
        dispatch_days = self.dispatch_days(conn)
        rows = []
        for parcel in allocation.parcels:
            rows.append(
                self.insert(
                    conn,
                    order_id,
                    parcel,
                    allocation.start,
                    dispatch_days,
                    state=sh.PENDING,
                    reason=None,
                    quiet=True,
                )
            )
        return tuple(sorted(rows, key=lambda s: (s.created_at, s.shipment_id)))

    def dispatch_days(self, conn: Connection) -> DispatchDays:
        """Days from an order's start to a parcel's planned dispatch: its arrival less the
        transit of its service and zone (the node's handling days, and any wait for an
        inbound receipt, come before); a lane the rate card does not know (pickup,
        transfer) counts the node's handling days."""
        return _dispatch_days(self.network.recent_catalog(conn))

    def refresh_state(self, conn: Connection, order_id: str) -> str:
        """Write the order's state derived from its shipments (and bump its version when
        it changes, so a batch job or re-sourcing that read it before loses the race)."""
        return self.set_state_from(conn, order_id, self.derive_state(conn, order_id))[0]

    def set_state_from(
        self, conn: Connection, order_id: str, state: str
    ) -> tuple[str, float | None]:
        """:meth:`refresh_state` with the state already derived (by a caller holding all the
        order's shipments as of this transaction); the state and, if it changed, the
        ``updated_at`` written (the version was bumped by one)."""
        now = self.clock()
        changed = execute(conn, _SET_ORDER_STATE, state=state, now=now, order_id=order_id)
        return state, (now if changed else None)

    def consume(self, conn: Connection, shipment: sh.ShipmentRow, units: Mapping[str, int]) -> None:
        """``units`` (per SKU) of ``shipment`` left its node: on hand decremented there only
        (one ledger row per SKU naming the shipment) and the order's reservations at those
        positions cut by as much. FAILED_PRECONDITION for units not reserved from stock
        (they still wait for an inbound receipt)."""
        node = shipment.node_id
        rows = fetch(conn, _RESERVED_AT_NODE, order_id=shipment.order_id, node_id=node)
        reserved: dict[str, int] = {}
        for _, sku, qty in rows:
            reserved[sku] = reserved.get(sku, 0) + int(qty)
        short = [
            Precondition(
                "RECEIPT",
                f"{node}/{sku}",
                f"{qty} unit(s) to ship but {reserved.get(sku, 0)} reserved from stock:"
                " the rest waits for an inbound receipt",
            )
            for sku, qty in sorted(units.items())
            if qty > reserved.get(sku, 0)
        ]
        if short:
            raise FailedPrecondition(
                f"shipment {shipment.shipment_id!r} still waits for inbound receipt(s)", short
            )
        left = dict(units)
        gone, cut = [], []
        for reservation_id, sku, qty in rows:  # newest first
            take = min(int(qty), left.get(sku, 0))
            if take == 0:
                continue
            left[sku] -= take
            if take == int(qty):
                gone.append({"reservation_id": reservation_id})
            else:
                cut.append({"reservation_id": reservation_id, "qty": take})
        execute_many(conn, _DROP_RESERVATION, gone)
        execute_many(conn, _CUT_RESERVATION, cut)
        for sku, qty in sorted(units.items()):
            self.stock.ledger(
                conn, node, sku, -qty, "shipment", shipment.order_id, shipment.shipment_id
            )

    def derive_state(self, conn: Connection, order_id: str) -> str:
        """The order's state from its shipments (:func:`oms.store.shipment_records.order_state`)."""
        states = [r[0] for r in fetch(conn, _STATES_OF_ORDER, order_id=order_id)]
        return sh.order_state(states)
