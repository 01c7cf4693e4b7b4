"""Orders: their rows, events and returns, and the stock reservations they hold.

An order's reservations have no expiry; each names the day whose capacity it
counts on. Writers compare the order's ``version`` (optimistic: a concurrent
change is :class:`~oms.errors.Aborted`) and lock stock through
:class:`~oms.store.stock.StockRepository` before they promise more units.

Every allocation written (placing, re-sourcing) brings the order's shipments in
step (:meth:`~oms.store.shipments.ShipmentRepository.sync`) and its state derived
from them; events go to the outbox (:mod:`oms.store.outbox`).

May import :mod:`oms.store.database`, ``shipments``, ``stock``, ``capacity``, ``inbound``,
``records``, ``plans``, ``sql``, ``outbox``, :mod:`oms.schema`, :mod:`oms.driver_sql`,
:mod:`oms.errors`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from oms import schema as t
from oms.driver_sql import Statement, execute, execute_many, fetch
from oms.errors import Aborted, NotFound
from oms.store import outbox
from oms.store.capacity import CapacityRepository
from oms.store.database import Database, utc_day
from oms.store.inbound import InboundRepository
from oms.store.plans import CartLine, Plan
from oms.store.records import (
    OrderRow,
    Position,
    QuoteRow,
    RecordedReturn,
    order_reservation_rows,
    units_by_node,
    units_of,
)
from oms.store.shipments import ShipmentRepository, with_shipment_ids
from oms.store.sql import DROP_QUOTE_HOLDS, insert_statement
from oms.store.stock import StockRepository, cut_reservations

_TAKE_QUOTE = Statement.portable(
    "UPDATE quotes SET order_id = :order_id WHERE quote_id = :quote_id AND order_id IS NULL"
)
_ORDER_COLUMNS = t.WRITABLE["orders"]  # not the generated columns (the database writes them)
_ORDER_BY_ID = Statement.portable(
    f"SELECT {', '.join(_ORDER_COLUMNS)} FROM orders WHERE order_id = :order_id"
)
_ORDER_BY_ID_FOR_UPDATE = Statement.portable(_ORDER_BY_ID.sqlite, for_update=True)
_ORDER_ID_BY_KEY = Statement.portable(
    "SELECT order_id FROM orders WHERE idempotency_key = :idempotency_key"
)
# The order's own history; each shipment's steps are in the feed (OrderEventService) and
# its state on the order's shipments.
_EVENTS_OF_ORDER = Statement.portable(
    "SELECT at, type, detail FROM order_events WHERE order_id = :order_id"
    " AND shipment_id IS NULL ORDER BY event_id"
)
_RETURNS_OF_ORDER = Statement.portable(
    "SELECT sku, qty, node_id, at, shipment_id FROM order_returns WHERE order_id = :order_id"
    " ORDER BY return_id"
)
_INSERT_RESERVATIONS = insert_statement(
    "reservations",
    ("node_id", "sku", "qty", "quote_id", "order_id", "expires_at", "capacity_day"),
)
_INSERT_ORDER = insert_statement("orders", _ORDER_COLUMNS)


class OrderRepository:
    """Orders, their events and returns, and their stock reservations."""

    def __init__(
        self,
        db: Database,
        stock: StockRepository,
        capacity: CapacityRepository,
        inbound: InboundRepository,
        shipments: ShipmentRepository,
    ) -> None:
        self.db = db
        self.stock = stock
        self.capacity = capacity
        self.inbound = inbound
        self.shipments = shipments

    def find_by_key(self, conn: Connection, idempotency_key: str) -> OrderRow | None:
        found = fetch(conn, _ORDER_ID_BY_KEY, idempotency_key=idempotency_key)
        return self.get(conn, found[0][0]) if found else None

    def lock_idempotency_key(self, conn: Connection, idempotency_key: str) -> None:
        """Hold off other writers with this key until this transaction ends.

        Then a look for an order with the key sees the one a concurrent first
        attempt just wrote, instead of racing it to the insert (and losing with
        ABORTED). PostgreSQL: an advisory lock on the key's hash (a collision only
        makes two keys wait for each other); SQLite: writers are serialised already.
        """
        if not self.db.is_sqlite:
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                {"key": idempotency_key},
            )

    def insert(
        self,
        conn: Connection,
        *,
        order_id: str,
        quote: QuoteRow,
        option_id: str,
        idempotency_key: str,
        lines: Sequence[CartLine],
        allocation: Plan,
        promised_date: str,
        events: list[tuple[str, str]],
    ) -> OrderRow:
        """Write a placed order, its reservations and shipments, and mark the quote used;
        the order as :meth:`get` would read it back (built from what was written: the
        reply to PlaceOrder needs no second read).

        The caller has already checked :meth:`StockRepository.shortages` in this transaction.
        Raises :class:`Aborted` if another order took the quote meanwhile.
        """
        now = self.db.clock()
        if not execute(conn, _TAKE_QUOTE, quote_id=quote.quote_id, order_id=order_id):
            raise Aborted(f"quote {quote.quote_id!r} was used by a concurrent PlaceOrder")
        execute(conn, DROP_QUOTE_HOLDS, quote_id=quote.quote_id)
        request = quote.request
        # What get() would read back: the lines and allocation were parsed from documents
        # (the quote's), so they equal what parsing the ones written here gives.
        placed = OrderRow(
            order_id=order_id,
            quote_id=quote.quote_id,
            option_id=option_id,
            idempotency_key=idempotency_key,
            state="PLACED",
            dest_lat=float(request.lat),
            dest_lon=float(request.lon),
            lines=tuple(lines),
            allocation=with_shipment_ids(allocation),
            promised_date=promised_date,
            created_at=now,
            updated_at=now,
            version=1,
            events=[],
            returns=[],
        )
        try:
            execute(
                conn,
                _INSERT_ORDER,
                order_id=placed.order_id,
                quote_id=placed.quote_id,
                option_id=placed.option_id,
                idempotency_key=placed.idempotency_key,
                state=placed.state,
                dest_lat=placed.dest_lat,
                dest_lon=placed.dest_lon,
                lines_json=json.dumps([x.document() for x in placed.lines], separators=(",", ":")),
                allocation_json=json.dumps(placed.allocation.document(), separators=(",", ":")),
                promised_date=placed.promised_date,
                created_at=placed.created_at,
                updated_at=placed.updated_at,
                version=placed.version,
            )
        except IntegrityError as exc:
            raise Aborted(f"idempotency key {idempotency_key!r} was used concurrently") from exc
        units = units_of(placed.allocation)
        day = utc_day(now)
        if units:  # empty when every unit waits for inbound receipts
            execute_many(conn, _INSERT_RESERVATIONS, order_reservation_rows(order_id, units, day))
        self.capacity.use(conn, units_by_node(units), day)
        written = [self.add_event(conn, order_id, kind, detail) for kind, detail in events]
        shipments = self.shipments.create(conn, order_id, placed.allocation)
        return replace(placed, events=written, shipments=shipments)

    def add_event(
        self, conn: Connection, order_id: str, kind: str, detail: str
    ) -> tuple[float, str, str]:
        """One order event, in the caller's transaction (the outbox: :mod:`oms.store.outbox`);
        it as :attr:`OrderRow.events` holds it."""
        at = self.db.clock()
        outbox.add_event(conn, order_id, kind, detail, at)
        return at, kind, detail

    def get(self, conn: Connection, order_id: str, *, for_update: bool = False) -> OrderRow:
        found = fetch(
            conn, _ORDER_BY_ID_FOR_UPDATE if for_update else _ORDER_BY_ID, order_id=order_id
        )
        if not found:
            raise NotFound("order", order_id)
        events = [
            (at, kind, detail)
            for at, kind, detail in fetch(conn, _EVENTS_OF_ORDER, order_id=order_id)
        ]
        returned = fetch(conn, _RETURNS_OF_ORDER, order_id=order_id)
        returns = [(sku, int(qty), node, at) for sku, qty, node, at, _ in returned]
        row = _order_row(dict(zip(_ORDER_COLUMNS, found[0], strict=True)), events, returns)
        return replace(
            row,
            shipments=tuple(self.shipments.of_order(conn, order_id)),
            return_shipments=tuple(sid for *_, sid in returned),
        )

    def page(
        self, conn: Connection, *, state: str | None, after: tuple[float, str] | None, limit: int
    ) -> list[OrderRow]:
        """Orders by (created_at, order_id), starting after the ``after`` cursor."""
        o = t.orders
        query = sa.select(o.c.order_id).order_by(o.c.created_at, o.c.order_id).limit(limit)
        if state is not None:
            query = query.where(o.c.state == state)
        if after is not None:
            query = query.where(
                sa.or_(
                    o.c.created_at > after[0],
                    sa.and_(o.c.created_at == after[0], o.c.order_id > after[1]),
                )
            )
        return [self.get(conn, r.order_id) for r in conn.execute(query)]

    def set_state(self, conn: Connection, order: OrderRow, state: str) -> None:
        updated = conn.execute(
            sa.update(t.orders)
            .where(t.orders.c.order_id == order.order_id, t.orders.c.version == order.version)
            .values(state=state, updated_at=self.db.clock(), version=order.version + 1)
        ).rowcount
        if not updated:
            raise Aborted(f"order {order.order_id!r} changed concurrently")

    def release_reservations(self, conn: Connection, order: OrderRow) -> dict[Position, int]:
        """Drop an order's reservations (cancel) and give back the capacity they used."""
        r = t.reservations
        units: dict[Position, int] = {}
        used: dict[tuple[str, str], int] = {}
        for node, sku, day, qty in conn.execute(
            sa.select(r.c.node_id, r.c.sku, r.c.capacity_day, func.sum(r.c.qty))
            .where(r.c.order_id == order.order_id)
            .group_by(r.c.node_id, r.c.sku, r.c.capacity_day)
        ):
            units[(node, sku)] = units.get((node, sku), 0) + int(qty)
            if day is not None:
                used[(node, day)] = used.get((node, day), 0) + int(qty)
        conn.execute(sa.delete(r).where(r.c.order_id == order.order_id))
        self.inbound.release(conn, order.order_id)
        self.capacity.give_back(conn, used)
        return units

    def consume_reservations(self, conn: Connection, order: OrderRow) -> dict[Position, int]:
        """Shipment: on hand decremented (ledger rows) and the reservations consumed."""
        units = self.reservations(conn, order.order_id)
        for (node, sku), qty in sorted(units.items()):
            self.stock.ledger(conn, node, sku, -qty, "shipment", order.order_id)
        conn.execute(sa.delete(t.reservations).where(t.reservations.c.order_id == order.order_id))
        return units

    def reservations(self, conn: Connection, order_id: str) -> dict[Position, int]:
        r = t.reservations
        return {
            (a, b): int(c)
            for a, b, c in conn.execute(
                sa.select(r.c.node_id, r.c.sku, func.sum(r.c.qty))
                .where(r.c.order_id == order_id)
                .group_by(r.c.node_id, r.c.sku)
            )
        }

    def returned_units(self, conn: Connection, order_id: str) -> dict[str, int]:
        r = t.order_returns
        return {
            sku: int(qty)
            for sku, qty in conn.execute(
                sa.select(r.c.sku, func.sum(r.c.qty))
                .where(r.c.order_id == order_id)
                .group_by(r.c.sku)
            )
        }

    def return_by_key(self, conn: Connection, order_id: str, key: str) -> RecordedReturn | None:
        """What the return of ``order_id`` made with idempotency ``key`` restocked, if any."""
        r = t.order_returns
        rows = conn.execute(
            sa.select(r.c.sku, r.c.qty, r.c.node_id, r.c.return_cost)
            .where(r.c.order_id == order_id, r.c.idempotency_key == key)
            .order_by(r.c.return_id)
        ).all()
        if not rows:
            return None
        units: dict[str, int] = {}
        for sku, qty, _, _ in rows:
            units[sku] = units.get(sku, 0) + int(qty)
        cost = rows[0].return_cost
        return RecordedReturn(units, rows[0].node_id, None if cost is None else int(cost))

    def record_return(
        self,
        conn: Connection,
        order_id: str,
        parts: Sequence[tuple[str, int, str | None]],
        node_id: str,
        idempotency_key: str | None,
        return_cost: int,
    ) -> None:
        """Returned units, as (SKU, quantity, the shipment they came from), restored at
        ``node_id`` (ledger rows naming the shipment; positions created if new), recorded
        with what the return cost (millicents) for a retry to answer again."""
        now = self.db.clock()
        for sku, qty, shipment_id in parts:
            exists = conn.execute(
                sa.select(t.stock.c.sku).where(t.stock.c.node_id == node_id, t.stock.c.sku == sku)
            ).first()
            if exists is None:
                conn.execute(
                    sa.insert(t.stock).values(
                        node_id=node_id, sku=sku, on_hand=0, safety_stock=0, low_stock_threshold=0
                    )
                )
            self.stock.ledger(conn, node_id, sku, qty, "return", order_id, shipment_id)
            conn.execute(
                sa.insert(t.order_returns).values(
                    order_id=order_id,
                    sku=sku,
                    qty=qty,
                    node_id=node_id,
                    at=now,
                    idempotency_key=idempotency_key,
                    return_cost=return_cost,
                    shipment_id=shipment_id,
                )
            )

    def returned_by_shipment(self, conn: Connection, order_id: str) -> dict[tuple[str, str], int]:
        """Units returned so far per (shipment id, SKU) (rows before 0012: shipment '')."""
        r = t.order_returns
        return {
            (sid or "", sku): int(qty)
            for sid, sku, qty in conn.execute(
                sa.select(r.c.shipment_id, r.c.sku, func.sum(r.c.qty))
                .where(r.c.order_id == order_id)
                .group_by(r.c.shipment_id, r.c.sku)
            )
        }

    def release_units(
        self, conn: Connection, order: OrderRow, units: Mapping[Position, int]
    ) -> None:
        """Give back part of an order's stock reservations (newest first), and the
        capacity of the day each cut reservation used."""
        r = t.reservations
        used: dict[tuple[str, str], int] = {}
        for (node, sku), qty in sorted(units.items()):
            rows = conn.execute(
                sa.select(r.c.reservation_id, r.c.qty, r.c.capacity_day)
                .where(r.c.order_id == order.order_id, r.c.node_id == node, r.c.sku == sku)
                .order_by(r.c.reservation_id.desc())
            ).all()
            for row, cut in cut_reservations(conn, rows, qty):
                if row.capacity_day is not None:
                    key = (node, row.capacity_day)
                    used[key] = used.get(key, 0) + cut
        self.capacity.give_back(conn, used)

    def reserve_units(self, conn: Connection, order_id: str, units: Mapping[Position, int]) -> None:
        """Reserve more stock for a placed order, on today's capacity; the caller
        checked :meth:`StockRepository.shortages`."""
        day = utc_day(self.db.clock())
        rows = order_reservation_rows(order_id, units, day)
        if rows:
            conn.execute(sa.insert(t.reservations), rows)
            self.capacity.use(conn, units_by_node(units), day)

    def update_allocation(
        self,
        conn: Connection,
        order: OrderRow,
        allocation: Plan,
        reason: str | None = None,
        replaces: str | None = None,
    ) -> None:
        """Replace an order's allocation document; Aborted if the order changed meanwhile.

        The order's shipments follow the plan (:meth:`ShipmentRepository.sync`): new
        parcels become shipments (REQUESTED once the order was released, created for
        ``reason``, replacing ``replaces``), open shipments whose parcel is gone are
        cancelled, and the order's state is derived again.
        """
        allocation = self.shipments.sync(
            conn,
            order.order_id,
            allocation,
            released=order.state != "PLACED",
            reason=reason,
            replaces=replaces,
        )
        updated = conn.execute(
            sa.update(t.orders)
            .where(t.orders.c.order_id == order.order_id, t.orders.c.version == order.version)
            .values(
                allocation_json=json.dumps(allocation.document(), separators=(",", ":")),
                updated_at=self.db.clock(),
                version=order.version + 1,
            )
        ).rowcount
        if not updated:
            raise Aborted(f"order {order.order_id!r} changed concurrently")
        self.shipments.refresh_state(conn, order.order_id)


def _order_row(
    row: Mapping[str, Any],
    events: list[tuple[float, str, str]],
    returns: list[tuple[str, int, str, float]],
) -> OrderRow:
    return OrderRow(
        order_id=row["order_id"],
        quote_id=row["quote_id"],
        option_id=row["option_id"],
        idempotency_key=row["idempotency_key"],
        state=row["state"],
        dest_lat=row["dest_lat"],
        dest_lon=row["dest_lon"],
        lines=tuple(CartLine.from_document(x) for x in json.loads(row["lines_json"])),
        allocation=Plan.from_document(json.loads(row["allocation_json"])),
        promised_date=row["promised_date"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=int(row["version"]),
        events=events,
        returns=returns,
    )
