"""Stock positions, their ledger, and the locks that keep promises within stock.

The no-oversell rule is enforced where units are promised: a transaction that
adds reservations first locks the stock rows it draws on (``SELECT ... FOR
UPDATE`` in sorted order on PostgreSQL; ``BEGIN IMMEDIATE`` serialises writers
on SQLite), then re-reads on hand and the live reservations and only then
inserts. Releasing stock never needs the lock. On hand moves only by ledger
rows (:meth:`StockRepository.ledger`), in the same transaction.

May import :mod:`oms.store.database`, ``capacity``, ``records``, ``sql``,
:mod:`oms.schema`, :mod:`oms.driver_sql`, :mod:`oms.errors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.driver_sql import Statement, execute, fetch
from oms.errors import FailedPrecondition, NotFound, Precondition
from oms.store.capacity import CapacityRepository
from oms.store.database import Database
from oms.store.records import Availability, Position, units_by_node
from oms.store.sql import LIVE, NOT_QUOTE

#: Largest unit count a position may hold: far below int64 in every SQL backend.
MAX_UNITS = 10**12

#: (node_id, sku) at given positions. SQLite: a superset its indexes serve
#: (callers filter), since it scans the table for a row-value IN list;
#: PostgreSQL: exactly the positions, as parallel arrays.
_AT_POSITIONS = Statement(
    sqlite="sku IN ({skus}) AND node_id IN ({nodes})",
    postgresql="(node_id, sku) IN (SELECT * FROM unnest(%(nodes)s::text[], %(skus)s::text[]))",
)


def _at_positions(select: str, rest: str = "", *, for_update: bool = False) -> Statement:
    """``select WHERE <at positions> rest`` on each dialect."""
    return Statement(
        sqlite=f"{select} WHERE {_AT_POSITIONS.sqlite} {rest}",
        postgresql=Statement.portable(
            f"{select} WHERE {_AT_POSITIONS.postgresql} {rest}", for_update=for_update
        ).postgresql,
    )


_RESERVED = "SELECT node_id, sku, SUM(qty) FROM reservations"
_BY_POSITION = "GROUP BY node_id, sku"
_STOCK = "SELECT node_id, sku, on_hand, safety_stock FROM stock"
_STOCK_OF_SKUS = Statement.portable(f"{_STOCK} WHERE sku IN ({{skus}})")
#: Indexed by "leaves out one quote's checkout hold".
_RESERVED_OF_SKUS = {
    False: Statement.portable(f"{_RESERVED} WHERE sku IN ({{skus}}) AND {LIVE} {_BY_POSITION}"),
    True: Statement.portable(
        f"{_RESERVED} WHERE sku IN ({{skus}}) AND {LIVE} AND {NOT_QUOTE} {_BY_POSITION}"
    ),
}
_RESERVED_AT = {
    False: _at_positions(_RESERVED, f"AND {LIVE} {_BY_POSITION}"),
    True: _at_positions(_RESERVED, f"AND {LIVE} AND {NOT_QUOTE} {_BY_POSITION}"),
}
_LOCK_STOCK_AT = _at_positions(_STOCK, "ORDER BY node_id, sku", for_update=True)
# A ledger row and its on-hand change, on the driver: ConfirmShipment writes one per SKU of
# every shipment, and through SQLAlchemy Core building these two cost more than running them.
_INSERT_LEDGER = Statement.portable(
    "INSERT INTO stock_ledger (node_id, sku, delta, reason, order_id, at, shipment_id)"
    " VALUES (:node_id, :sku, :delta, :reason, :order_id, :at, :shipment_id)"
)
_MOVE_ON_HAND = Statement.portable(
    "UPDATE stock SET on_hand = on_hand + :delta WHERE node_id = :node_id AND sku = :sku"
)


class StockRepository:
    """Stock positions (on hand, safety stock, thresholds), the ledger, and the
    locks and sums that say what a position can still promise."""

    def __init__(self, db: Database, capacity: CapacityRepository) -> None:
        self.db = db
        self.capacity = capacity

    def on_hand_of_skus(self, conn: Connection, skus: Sequence[str]) -> list[Any]:
        """(node, sku, on hand, safety stock) of every position of ``skus``."""
        return fetch(conn, _STOCK_OF_SKUS, skus=list(skus))

    def reserved_rows(
        self,
        conn: Connection,
        skus: Sequence[str],
        now: float,
        exclude_quote: str | None,
        positions: Sequence[Position] | None = None,
    ) -> Iterable[tuple[str, str, int]]:
        """Live reserved units per position, of ``skus`` or at ``positions``."""
        params: dict[str, Any] = {"now": now}
        if exclude_quote is not None:
            params["quote_id"] = exclude_quote
        but_quote = exclude_quote is not None
        if positions is None:
            rows = fetch(conn, _RESERVED_OF_SKUS[but_quote], skus=list(skus), **params)
            return [(a, b, int(c)) for a, b, c in rows]
        rows = fetch(conn, _RESERVED_AT[but_quote], **self.position_params(positions), **params)
        wanted = set(positions)
        return [(a, b, int(c)) for a, b, c in rows if (a, b) in wanted]

    def position_params(self, positions: Sequence[Position]) -> dict[str, Any]:
        """Bind parameters for :data:`_AT_POSITIONS`: distinct SKUs and nodes on
        SQLite, parallel arrays of the positions' nodes and SKUs on PostgreSQL."""
        if self.db.is_sqlite:
            return {
                "skus": sorted({s for _, s in positions}),
                "nodes": sorted({n for n, _ in positions}),
            }
        ordered = sorted(positions)
        return {"nodes": [n for n, _ in ordered], "skus": [s for _, s in ordered]}

    def positions(
        self,
        conn: Connection,
        skus: Sequence[str] = (),
        node_ids: Sequence[str] = (),
        *,
        for_update: bool = False,
    ) -> list[Availability]:
        """Stock positions (filtered by SKUs and nodes when given) with reserved and held units."""
        now = self.db.clock()
        query = sa.select(t.stock).order_by(t.stock.c.node_id, t.stock.c.sku)
        if skus:
            query = query.where(t.stock.c.sku.in_(list(skus)))
        if node_ids:
            query = query.where(t.stock.c.node_id.in_(list(node_ids)))
        if for_update:
            query = self.db.lock(query)
        rows = conn.execute(query).all()
        r = t.reservations
        agg = sa.select(
            r.c.node_id,
            r.c.sku,
            func.sum(sa.case((r.c.order_id.is_not(None), r.c.qty), else_=0)),
            func.sum(sa.case((r.c.order_id.is_(None), r.c.qty), else_=0)),
        ).where(sa.or_(r.c.expires_at.is_(None), r.c.expires_at > now))
        if skus:
            agg = agg.where(r.c.sku.in_(list(skus)))
        if node_ids:
            agg = agg.where(r.c.node_id.in_(list(node_ids)))
        sums = {
            (a, b): (int(c or 0), int(d or 0))
            for a, b, c, d in conn.execute(agg.group_by(r.c.node_id, r.c.sku))
        }
        return [
            Availability(
                row.node_id,
                row.sku,
                int(row.on_hand),
                int(row.safety_stock),
                *sums.get((row.node_id, row.sku), (0, 0)),
                int(row.low_stock_threshold),
            )
            for row in rows
        ]

    def require_position_keys(self, conn: Connection, node_id: str, sku: str) -> None:
        if (
            conn.execute(sa.select(t.nodes.c.node_id).where(t.nodes.c.node_id == node_id)).first()
            is None
        ):
            raise NotFound("node", node_id)
        if conn.execute(sa.select(t.skus.c.sku).where(t.skus.c.sku == sku)).first() is None:
            raise NotFound("SKU", sku)

    def set_stock(
        self,
        node_id: str,
        sku: str,
        on_hand: int,
        safety_stock: int,
        low_stock_threshold: int,
        reason: str,
    ) -> Availability:
        """Set a position's on hand (one ledger row for the difference) and its settings.

        Refuses (FAILED_PRECONDITION) to set on hand below what orders have reserved.
        """
        with self.db.write() as conn:
            self.require_position_keys(conn, node_id, sku)
            current = self.positions(conn, [sku], [node_id], for_update=True)
            before = current[0].on_hand if current else 0
            reserved = current[0].reserved if current else 0
            if on_hand < reserved:
                raise FailedPrecondition(
                    f"on_hand {on_hand} is below the {reserved} units reserved by orders",
                    [Precondition("STOCK", f"{node_id}/{sku}", f"{reserved} units reserved")],
                )
            self.db.upsert(
                conn,
                t.stock,
                [
                    {
                        "node_id": node_id,
                        "sku": sku,
                        # On hand moves only through the ledger row below.
                        "on_hand": before,
                        "safety_stock": safety_stock,
                        "low_stock_threshold": low_stock_threshold,
                    }
                ],
            )
            if on_hand != before:
                self.ledger(conn, node_id, sku, on_hand - before, reason, None)
            return self.trim_holds(conn, node_id, sku)

    def adjust_stock(self, node_id: str, sku: str, delta: int, reason: str) -> Availability:
        """Add ``delta`` to on hand (one ledger row); never below what orders have reserved."""
        with self.db.write() as conn:
            self.require_position_keys(conn, node_id, sku)
            current = self.positions(conn, [sku], [node_id], for_update=True)
            if not current:
                if delta < 0:
                    raise FailedPrecondition(
                        f"node {node_id!r} holds no {sku!r} to take {-delta} units from",
                        [Precondition("STOCK", f"{node_id}/{sku}", "no stock position")],
                    )
                conn.execute(
                    sa.insert(t.stock).values(
                        node_id=node_id, sku=sku, on_hand=0, safety_stock=0, low_stock_threshold=0
                    )
                )
                on_hand, reserved = 0, 0
            else:
                on_hand, reserved = current[0].on_hand, current[0].reserved
            if on_hand + delta > MAX_UNITS:
                raise FailedPrecondition(
                    f"on hand would rise to {on_hand + delta}, above the limit of {MAX_UNITS}",
                    [Precondition("STOCK", f"{node_id}/{sku}", "above the unit limit")],
                )
            if on_hand + delta < reserved:
                raise FailedPrecondition(
                    f"on hand would fall to {on_hand + delta}, below the {reserved} units "
                    "reserved by orders",
                    [Precondition("STOCK", f"{node_id}/{sku}", f"{reserved} units reserved")],
                )
            self.ledger(conn, node_id, sku, delta, reason, None)
            return self.trim_holds(conn, node_id, sku)

    def trim_holds(self, conn: Connection, node_id: str, sku: str) -> Availability:
        """After stock fell, shrink checkout holds (newest first) to what is left to promise.

        A count that finds fewer units is a fact, not a request: it is never
        refused for the sake of a hold. The quotes whose holds shrink are
        re-checked (and re-sourced if need be) at PlaceOrder.
        """
        position = self.positions(conn, [sku], [node_id])[0]
        room = max(0, position.on_hand - position.safety_stock - position.reserved)
        excess = position.held - room
        if excess <= 0:
            return position
        r = t.reservations
        holds = conn.execute(
            sa.select(r.c.reservation_id, r.c.qty)
            .where(
                r.c.node_id == node_id,
                r.c.sku == sku,
                r.c.order_id.is_(None),
                r.c.expires_at > self.db.clock(),
            )
            .order_by(r.c.reservation_id.desc())
        ).all()
        cut_reservations(conn, holds, excess)
        return self.positions(conn, [sku], [node_id])[0]

    def ledger(
        self,
        conn: Connection,
        node_id: str,
        sku: str,
        delta: int,
        reason: str,
        order_id: str | None,
        shipment_id: str | None = None,
    ) -> None:
        """One ledger row (naming the shipment that moved the units, if any) and the
        matching change to the position's on hand."""
        execute(
            conn,
            _INSERT_LEDGER,
            node_id=node_id,
            sku=sku,
            delta=delta,
            reason=reason,
            order_id=order_id,
            at=self.db.clock(),
            shipment_id=shipment_id,
        )
        execute(conn, _MOVE_ON_HAND, delta=delta, node_id=node_id, sku=sku)

    # -- promising units ----------------------------------------------------------

    def shortages(
        self,
        conn: Connection,
        units: Mapping[Position, int],
        *,
        exclude_quote: str | None = None,
        check_capacity: bool = True,
    ) -> list[Precondition]:
        """Lock the positions ``units`` draw on and say which cannot cover them now.

        Must run inside :meth:`Database.write`: the locks (or SQLite's write lock)
        last until the transaction ends, so a following insert is safe.
        """
        positions = sorted(units)
        now = self.db.clock()
        free_units = self.lock_free_units(conn, positions, now, exclude_quote)
        problems: list[Precondition] = []
        for key in positions:
            free = free_units.get(key, 0)
            if units[key] > free:
                problems.append(
                    Precondition(
                        "STOCK",
                        f"{key[0]}/{key[1]}",
                        f"needs {units[key]} units, {max(free, 0)} available now",
                    )
                )
        if check_capacity:
            problems.extend(self.capacity.problems(conn, units_by_node(units), now))
        return problems

    def lock_free_units(
        self,
        conn: Connection,
        positions: Sequence[Position],
        now: float,
        exclude_quote: str | None = None,
    ) -> dict[Position, int]:
        """Lock ``positions`` and return what each can still promise (may be negative).

        on hand - safety stock - live reservations (except ``exclude_quote``'s
        holds); a position without a stock row is absent (nothing to promise).
        """
        locked = self.lock_positions(conn, positions)
        reserved = {
            (a, b): c for a, b, c in self.reserved_rows(conn, (), now, exclude_quote, positions)
        }
        return {
            key: on_hand - safety - reserved.get(key, 0)
            for key, (on_hand, safety) in locked.items()
        }

    def lock_positions(
        self, conn: Connection, positions: Sequence[Position]
    ) -> dict[Position, tuple[int, int]]:
        """Lock stock rows in (node, SKU) order, the one order every writer uses (no deadlocks).

        Returns (on hand, safety stock) per locked position. Re-locking rows
        this transaction already holds is free.
        """
        if not positions:
            return {}
        rows = fetch(conn, _LOCK_STOCK_AT, **self.position_params(positions))
        wanted = set(positions)
        return {
            (node, sku): (int(on_hand), int(safety))
            for node, sku, on_hand, safety in rows
            if (node, sku) in wanted
        }

    # -- checks (tests, operators) -------------------------------------------------

    def ledger_mismatches(self) -> list[tuple[str, str, int, int]]:
        """Positions whose on hand differs from the sum of their ledger: must be empty."""
        with self.db.read() as conn:
            sums = {
                (a, b): int(c)
                for a, b, c in conn.execute(
                    sa.select(
                        t.stock_ledger.c.node_id,
                        t.stock_ledger.c.sku,
                        func.sum(t.stock_ledger.c.delta),
                    ).group_by(t.stock_ledger.c.node_id, t.stock_ledger.c.sku)
                )
            }
            bad = []
            for row in conn.execute(sa.select(t.stock)):
                total = sums.pop((row.node_id, row.sku), 0)
                if total != row.on_hand:
                    bad.append((row.node_id, row.sku, int(row.on_hand), total))
            bad.extend((n, s, 0, v) for (n, s), v in sums.items() if v)
            return bad


def cut_reservations(conn: Connection, rows: Iterable[Any], units: int) -> list[tuple[Any, int]]:
    """Take ``units`` off reservation ``rows`` (reservation_id, qty, ...) in the given order.

    A row cut to nothing is deleted; the last one touched may keep a remainder.
    Returns each row touched with the units cut off it.
    """
    r = t.reservations
    touched: list[tuple[Any, int]] = []
    for row in rows:
        if units <= 0:
            break
        cut = min(units, int(row.qty))
        if cut == row.qty:
            conn.execute(sa.delete(r).where(r.c.reservation_id == row.reservation_id))
        else:
            conn.execute(
                sa.update(r)
                .where(r.c.reservation_id == row.reservation_id)
                .values(qty=r.c.qty - cut)
            )
        touched.append((row, cut))
        units -= cut
    return touched
