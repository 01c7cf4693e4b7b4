"""The OMS store: network, stock ledger, reservations, quotes and orders.

SQLAlchemy 2 Core over SQLite (embedded default: a file, WAL mode) or
PostgreSQL (psycopg 3), chosen by URL. The schema lives in
:mod:`oms.schema`; Alembic migrations in :mod:`oms.migrations`.

Every write is one transaction (:meth:`Store.write`). The no-oversell rule is
enforced where units are promised: a transaction that adds reservations
first locks the stock rows it draws on (``SELECT ... FOR UPDATE`` in sorted
order on PostgreSQL; ``BEGIN IMMEDIATE`` serialises writers on SQLite), then
re-reads on hand and the live reservations and only then inserts. Releasing
stock never needs the lock. A lost race surfaces as :class:`~oms.errors.Aborted`.

Daily capacity: ``node_day_usage`` counts the units orders promised out of
each node per UTC day; checkout holds do not consume it. Each order reservation
names the day it counts on (``capacity_day``: placement, or a later
re-sourcing), and releasing it gives back that day's units.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event, func
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from oms import schema as t
from oms.driver_sql import Statement, execute, execute_many, fetch
from oms.errors import (
    Aborted,
    Cancelled,
    FailedPrecondition,
    NotFound,
    Precondition,
    QuotaExceeded,
    Unavailable,
)
from sourcing.model import UNLIMITED_CAPACITY, Network, NodeKind, Receipt

Position = tuple[str, str]  # (node_id, sku)

#: How often expired checkout holds are deleted (they stop counting at expiry; deleting
#: them keeps the per-position sums of live reservations short).
PURGE_EVERY_S = 5.0
#: Largest unit count a position may hold: far below int64 in every SQL backend.
MAX_UNITS = 10**12


# The statements every quote and order runs (reading stock, locking it,
# writing holds, writing the order) go to the driver directly
# (:mod:`oms.driver_sql`): through SQLAlchemy their per-call and per-row
# overhead cost more than running them. Written once in SQLite's form; see
# :meth:`Statement.portable` for PostgreSQL's.
_LIVE = "(expires_at IS NULL OR expires_at > :now)"
_NOT_QUOTE = "(quote_id IS NULL OR quote_id <> :quote_id)"
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
_NETWORK_VERSION = Statement.portable(
    "SELECT value FROM network_meta WHERE \"key\" = 'network_version'"
)
_STOCK_OF_SKUS = Statement.portable(f"{_STOCK} WHERE sku IN ({{skus}})")
#: Indexed by "leaves out one quote's checkout hold".
_RESERVED_OF_SKUS = {
    False: Statement.portable(f"{_RESERVED} WHERE sku IN ({{skus}}) AND {_LIVE} {_BY_POSITION}"),
    True: Statement.portable(
        f"{_RESERVED} WHERE sku IN ({{skus}}) AND {_LIVE} AND {_NOT_QUOTE} {_BY_POSITION}"
    ),
}
_RESERVED_AT = {
    False: _at_positions(_RESERVED, f"AND {_LIVE} {_BY_POSITION}"),
    True: _at_positions(_RESERVED, f"AND {_LIVE} AND {_NOT_QUOTE} {_BY_POSITION}"),
}
_LOCK_STOCK_AT = _at_positions(_STOCK, "ORDER BY node_id, sku", for_update=True)
_USAGE_ON_DAY = Statement.portable("SELECT node_id, units FROM node_day_usage WHERE day = :day")
_USAGE_OF_NODES = Statement.portable(
    "SELECT node_id, units FROM node_day_usage WHERE day = :day AND node_id IN ({nodes})"
)
_CAPACITY_LIMITS = Statement.portable(
    "SELECT node_id, daily_capacity_units FROM nodes WHERE node_id IN ({nodes}) "
    "AND daily_capacity_units IS NOT NULL ORDER BY node_id",
    for_update=True,
)
_ADD_USAGE = Statement.portable(
    "UPDATE node_day_usage SET units = units + :qty WHERE node_id = :node_id AND day = :day"
)
_TAKE_QUOTE = Statement.portable(
    "UPDATE quotes SET order_id = :order_id WHERE quote_id = :quote_id AND order_id IS NULL"
)
_DROP_QUOTE_HOLDS = Statement.portable("DELETE FROM reservations WHERE quote_id = :quote_id")
_QUOTE_COLUMNS = tuple(c.name for c in t.quotes.columns)
_ORDER_COLUMNS = t.WRITABLE["orders"]  # not the generated columns (the database writes them)
_QUOTE_BY_ID = Statement.portable(
    f"SELECT {', '.join(_QUOTE_COLUMNS)} FROM quotes WHERE quote_id = :quote_id"
)
_ORDER_BY_ID = Statement.portable(
    f"SELECT {', '.join(_ORDER_COLUMNS)} FROM orders WHERE order_id = :order_id"
)
_ORDER_BY_ID_FOR_UPDATE = Statement.portable(_ORDER_BY_ID.sqlite, for_update=True)
_ORDER_ID_BY_KEY = Statement.portable(
    "SELECT order_id FROM orders WHERE idempotency_key = :idempotency_key"
)
_EVENTS_OF_ORDER = Statement.portable(
    "SELECT at, type, detail FROM order_events WHERE order_id = :order_id ORDER BY event_id"
)
_RETURNS_OF_ORDER = Statement.portable(
    "SELECT sku, qty, node_id, at FROM order_returns WHERE order_id = :order_id ORDER BY return_id"
)


def _insert(table: str, columns: Sequence[str]) -> Statement:
    placeholders = ", ".join(f":{c}" for c in columns)
    return Statement.portable(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})")


_INSERT_RESERVATIONS = _insert(
    "reservations",
    ("node_id", "sku", "qty", "quote_id", "order_id", "expires_at", "capacity_day"),
)
_INSERT_HOLDS = _insert(
    "reservations", ("node_id", "sku", "qty", "quote_id", "expires_at", "holder")
)
#: Live units a caller holds for checkouts other than ``quote_id`` (whose hold is replaced).
_HELD_BY = Statement.portable(
    "SELECT COALESCE(SUM(qty), 0) FROM reservations WHERE holder = :holder "
    f"AND order_id IS NULL AND expires_at > :now AND {_NOT_QUOTE}"
)
#: One caller's holds are taken one at a time, so concurrent calls cannot pass its cap
#: together (SQLite serialises every writer anyway).
_LOCK_HOLDER = Statement(
    sqlite="SELECT 1", postgresql="SELECT pg_advisory_xact_lock(hashtext(%(holder)s))"
)
_LOCK_QUOTE = Statement.portable(
    "SELECT order_id, expires_at FROM quotes WHERE quote_id = :quote_id", for_update=True
)
_INSERT_QUOTE = _insert("quotes", _QUOTE_COLUMNS)
_INSERT_ORDER = _insert("orders", _ORDER_COLUMNS)
_INSERT_EVENT = _insert("order_events", ("order_id", "at", "type", "detail"))
_INSERT_USAGE = _insert("node_day_usage", ("node_id", "day", "units"))
_BEGIN = Statement(sqlite="BEGIN", postgresql="BEGIN")
_BEGIN_IMMEDIATE = Statement(sqlite="BEGIN IMMEDIATE", postgresql="BEGIN")


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3; anything else is passed through."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, pool_size: int = 16) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" hook below issue BEGIN, not pysqlite.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            for pragma in (
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=NORMAL",
                "PRAGMA busy_timeout=30000",
                "PRAGMA foreign_keys=ON",
            ):
                cursor.execute(pragma)
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Writers take the write lock up front, so two writers never both
            # read stock and then both insert (SQLite's form of FOR UPDATE).
            # Issued on the driver: through exec_driver_sql, BEGIN alone cost as
            # much CPU as a quote's stock read.
            immediate = conn.get_execution_options().get("sqlite_immediate", False)
            execute(conn, _BEGIN_IMMEDIATE if immediate else _BEGIN)

        return engine
    return sa.create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


@dataclass(frozen=True, eq=False)
class Catalog:
    """The slow-changing part of the network (nodes, SKUs, zones, rates) as arrays."""

    version: int
    node_ids: tuple[str, ...]
    node_kinds: tuple[NodeKind, ...]
    lat: np.ndarray
    lon: np.ndarray
    handling_days: np.ndarray
    handling_cost: np.ndarray
    storage_cost: np.ndarray
    capacity: np.ndarray
    sku_ids: tuple[str, ...]
    weight_g: np.ndarray
    daily_demand: np.ndarray
    zone_ids: tuple[str, ...]
    zone_max_km: np.ndarray
    service_ids: tuple[str, ...]
    base_price: np.ndarray
    per_kg: np.ndarray
    transit_days: np.ndarray
    offered: np.ndarray

    node_index: dict[str, int] = field(init=False, repr=False)
    sku_index: dict[str, int] = field(init=False, repr=False)
    finite_capacity: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_index", {n: i for i, n in enumerate(self.node_ids)})
        object.__setattr__(self, "sku_index", {s: i for i, s in enumerate(self.sku_ids)})
        object.__setattr__(self, "finite_capacity", self.capacity < UNLIMITED_CAPACITY)

    @property
    def usable(self) -> bool:
        return bool(self.node_ids and self.zone_ids and self.service_ids)


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
    lines: list[dict[str, Any]]
    allocation: dict[str, Any]
    promised_date: str
    created_at: float
    updated_at: float
    version: int
    events: list[tuple[float, str, str]]
    returns: list[tuple[str, int, str, float]]


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
    request: dict[str, Any]
    options: list[dict[str, Any]]
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


def units_of(allocation: Mapping[str, Any]) -> dict[Position, int]:
    """Units per (node, SKU) of an allocation document (``parcels[].lines[]``) taken from stock.

    Parcels that wait for inbound receipts (``inbound_day`` set) are not stock
    on hand: they are reserved against their receipts instead, except the units
    of their lines that have arrived (``received``, set by ReceiveInboundReceipt):
    those are stock reservations like any other.
    """
    units: dict[Position, int] = {}
    for parcel in allocation["parcels"]:
        waiting = parcel.get("inbound_day") is not None
        for line in parcel["lines"]:
            qty = int(line.get("received", 0)) if waiting else int(line["qty"])
            if qty:
                key = (parcel["node_id"], line["sku"])
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


def _translate_db_errors(exc: DBAPIError) -> Exception:
    """Lost races and lock timeouts become Aborted; a dead server Unavailable."""
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    race_words = ("deadlock", "could not serialize", "database is locked", "lock timeout")
    if any(word in text for word in race_words):
        return Aborted(f"lost a race with a concurrent writer: {text.splitlines()[0]}")
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return Unavailable(f"the store is unavailable: {text.splitlines()[0]}")
    return exc


class Store:
    """All persistence of the service. Thread-safe; one per process."""

    def __init__(
        self, url: str, *, pool_size: int = 16, clock: Callable[[], float] = time.time
    ) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, pool_size)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.clock = clock
        self._catalog: Catalog | None = None
        self._catalog_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._last_purge = 0.0
        self._lock_fd: int | None = None
        database = self.engine.url.database if self.is_sqlite else None
        if database and database != ":memory:":
            self._lock_fd = os.open(f"{database}.writelock", os.O_RDWR | os.O_CREAT, 0o644)

    # -- plumbing ---------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except DBAPIError as exc:
            raise _translate_db_errors(exc) from exc

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction; on SQLite it holds the database's write lock throughout."""
        with self._sqlite_writer():
            try:
                with self.engine.connect() as raw:
                    conn = raw.execution_options(sqlite_immediate=True) if self.is_sqlite else raw
                    with conn.begin():
                        yield conn
            except DBAPIError as exc:
                raise _translate_db_errors(exc) from exc

    @contextmanager
    def _sqlite_writer(self) -> Iterator[None]:
        """Queue SQLite writers on a lock that wakes the next one at once.

        SQLite's own busy handler polls with sleeps of up to 100 ms, so under
        load the write lock sat free while writers slept. A thread lock (this
        process) plus an flock on a file beside the database (other server
        processes) hands it over immediately; BEGIN IMMEDIATE stays as the guard.
        """
        if self._lock_fd is None:
            yield
            return
        with self._thread_lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _lock(self, query: Any) -> Any:
        return query if self.is_sqlite else query.with_for_update()

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT DO UPDATE on both backends."""
        if self.is_sqlite:
            return sqlite_insert(table)
        return postgresql_insert(table)

    def _upsert(
        self,
        conn: Connection,
        table: sa.Table,
        rows: list[dict[str, Any]],
        update: Sequence[str] | None = None,
    ) -> None:
        """Insert ``rows``; on a key conflict update ``update`` (default: every non-key column)."""
        if not rows:
            return
        keys = [c.name for c in table.primary_key.columns]
        columns = update if update is not None else [c.name for c in table.columns]
        stmt = self._insert(table)
        updates = {name: stmt.excluded[name] for name in columns if name not in keys}
        conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=updates), rows)

    def _bump_network_version(self, conn: Connection) -> None:
        self._upsert(
            conn,
            t.network_meta,
            [{"key": "network_version", "value": time.time_ns()}],
        )

    # -- network ----------------------------------------------------------------

    def is_empty(self) -> bool:
        with self.read() as conn:
            return conn.execute(sa.select(func.count()).select_from(t.nodes)).scalar_one() == 0

    def load_network(self, network: Network, reason: str = "load") -> None:
        """Upsert every node, SKU, zone, rate and stock position of ``network``; one transaction.

        On hand is set through the ledger (one row per changed position);
        zones and rates are replaced.
        """
        with self.write() as conn:
            self._upsert(
                conn, t.nodes, [_node_row(network, n) for n in range(len(network.node_ids))]
            )
            self._upsert(
                conn,
                t.skus,
                [
                    {
                        "sku": sku,
                        "weight_g": int(network.weight_g[s]),
                        "daily_demand": float(network.daily_demand[s]),
                    }
                    for s, sku in enumerate(network.sku_ids)
                ],
            )
            self._replace_rate_card(
                conn,
                [(z, float(network.zone_max_km[i])) for i, z in enumerate(network.zone_ids)],
                [
                    (
                        service,
                        zone,
                        int(network.base_price[v, z]),
                        int(network.per_kg[v, z]),
                        int(network.transit_days[v, z]),
                    )
                    for v, service in enumerate(network.service_ids)
                    for z, zone in enumerate(network.zone_ids)
                    if network.offered[v, z]
                ],
                replace_all=True,
            )
            existing = {
                (r.node_id, r.sku): r
                for r in conn.execute(
                    sa.select(t.stock.c.node_id, t.stock.c.sku, t.stock.c.on_hand)
                )
            }
            now = self.clock()
            stock_rows: list[dict[str, Any]] = []
            ledger_rows: list[dict[str, Any]] = []
            held = np.argwhere((network.on_hand > 0) | (network.safety_stock > 0))
            wanted = {(network.node_ids[n], network.sku_ids[s]): (n, s) for n, s in held}
            for key in set(existing) - set(wanted):
                wanted[key] = (-1, -1)
            for (node, sku), (n, s) in sorted(wanted.items()):
                on_hand = int(network.on_hand[n, s]) if n >= 0 else 0
                safety = int(network.safety_stock[n, s]) if n >= 0 else 0
                before = int(existing[node, sku].on_hand) if (node, sku) in existing else 0
                stock_rows.append(
                    {
                        "node_id": node,
                        "sku": sku,
                        "on_hand": on_hand,
                        "safety_stock": safety,
                        "low_stock_threshold": 0,
                    }
                )
                if on_hand != before:
                    ledger_rows.append(
                        {
                            "node_id": node,
                            "sku": sku,
                            "delta": on_hand - before,
                            "reason": reason,
                            "order_id": None,
                            "at": now,
                        }
                    )
            # Thresholds already set by planners survive a reload.
            self._upsert(conn, t.stock, stock_rows, update=["on_hand", "safety_stock"])
            if ledger_rows:
                conn.execute(sa.insert(t.stock_ledger), ledger_rows)
            self._bump_network_version(conn)

    def upsert_nodes(self, rows: list[dict[str, Any]]) -> int:
        with self.write() as conn:
            self._upsert(conn, t.nodes, rows)
            self._bump_network_version(conn)
        return len(rows)

    def upsert_skus(self, rows: list[dict[str, Any]]) -> int:
        with self.write() as conn:
            self._upsert(conn, t.skus, rows)
            self._bump_network_version(conn)
        return len(rows)

    def replace_rate_card(
        self,
        zones: list[tuple[str, float]],
        rates: list[tuple[str, str, int, int, int]],
    ) -> None:
        """Replace all zones (when given) and every rate of the services named in ``rates``."""
        with self.write() as conn:
            known_zones = {z for z, _ in zones} or {
                r.zone for r in conn.execute(sa.select(t.zones.c.zone))
            }
            bad = sorted({zone for _, zone, *_ in rates} - known_zones)
            if bad:
                raise FailedPrecondition(
                    f"rates name unknown zones: {', '.join(bad)}",
                    [Precondition("ZONE", z, "not a zone of the rate card") for z in bad],
                )
            self._replace_rate_card(conn, zones, rates, replace_all=False)
            self._bump_network_version(conn)

    def _replace_rate_card(
        self,
        conn: Connection,
        zones: list[tuple[str, float]],
        rates: list[tuple[str, str, int, int, int]],
        *,
        replace_all: bool,
    ) -> None:
        if zones:
            conn.execute(sa.delete(t.rates).where(t.rates.c.zone.not_in([z for z, _ in zones])))
            conn.execute(sa.delete(t.zones))
            conn.execute(sa.insert(t.zones), [{"zone": z, "max_km": km} for z, km in zones])
        if replace_all:
            conn.execute(sa.delete(t.rates))
        else:
            services = sorted({r[0] for r in rates})
            if services:
                conn.execute(sa.delete(t.rates).where(t.rates.c.service.in_(services)))
        if rates:
            conn.execute(
                sa.insert(t.rates),
                [
                    {
                        "service": s,
                        "zone": z,
                        "base_price": b,
                        "per_kg": k,
                        "transit_days": d,
                    }
                    for s, z, b, k, d in rates
                ],
            )

    def catalog(self, conn: Connection | None = None) -> Catalog:
        """The cached network catalog, reloaded when another process changed it."""
        if conn is None:
            with self.read() as own:
                return self.catalog(own)
        found = fetch(conn, _NETWORK_VERSION)
        version = int(found[0][0]) if found else 0
        cached = self._catalog
        if cached is not None and cached.version == version:
            return cached
        with self._catalog_lock:
            catalog = _read_catalog(conn, version)
            self._catalog = catalog
        return catalog

    def network_for(
        self,
        conn: Connection,
        catalog: Catalog,
        skus: Sequence[str],
        *,
        exclude_quote: str | None = None,
    ) -> Network:
        """A :class:`Network` of every node and just ``skus``, with live stock and capacity.

        ``reserved`` counts order reservations and unexpired checkout holds
        (except ``exclude_quote``'s own); capacity is what is left of today's.
        """
        now = self.clock()
        sku_ids = tuple(dict.fromkeys(skus))
        col = {s: i for i, s in enumerate(sku_ids)}
        node_index = catalog.node_index
        n, s = len(catalog.node_ids), len(sku_ids)
        on_hand = np.zeros((n, s), dtype=np.int64)
        safety = np.zeros((n, s), dtype=np.int64)
        reserved = np.zeros((n, s), dtype=np.int64)
        for node, sku, qty, ss in fetch(conn, _STOCK_OF_SKUS, skus=list(sku_ids)):
            i = node_index.get(node)
            if i is not None:
                on_hand[i, col[sku]] = qty
                safety[i, col[sku]] = ss
        for node, sku, qty in self._reserved_rows(conn, sku_ids, now, exclude_quote):
            i = node_index.get(node)
            if i is not None:
                reserved[i, col[sku]] = qty
        capacity = catalog.capacity
        finite = catalog.finite_capacity
        if finite.any():
            capacity = capacity.copy()
            for node, units in fetch(conn, _USAGE_ON_DAY, day=utc_day(now)):
                i = node_index.get(node)
                if i is not None and finite[i]:
                    capacity[i] = max(0, capacity[i] - int(units))
        sku_rows = [catalog.sku_index[x] for x in sku_ids]
        return Network(
            node_ids=catalog.node_ids,
            node_kinds=catalog.node_kinds,
            lat=catalog.lat,
            lon=catalog.lon,
            handling_days=catalog.handling_days,
            handling_cost=catalog.handling_cost,
            storage_cost=catalog.storage_cost,
            capacity=capacity,
            sku_ids=sku_ids,
            weight_g=catalog.weight_g[sku_rows],
            daily_demand=catalog.daily_demand[sku_rows],
            on_hand=on_hand,
            safety_stock=safety,
            reserved=reserved,
            zone_ids=catalog.zone_ids,
            zone_max_km=catalog.zone_max_km,
            service_ids=catalog.service_ids,
            base_price=catalog.base_price,
            per_kg=catalog.per_kg,
            transit_days=catalog.transit_days,
            offered=catalog.offered,
        )

    def _reserved_rows(
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
        rows = fetch(conn, _RESERVED_AT[but_quote], **self._position_params(positions), **params)
        wanted = set(positions)
        return [(a, b, int(c)) for a, b, c in rows if (a, b) in wanted]

    def _position_params(self, positions: Sequence[Position]) -> dict[str, Any]:
        """Bind parameters for :data:`_AT_POSITIONS`: distinct SKUs and nodes on
        SQLite, parallel arrays of the positions' nodes and SKUs on PostgreSQL."""
        if self.is_sqlite:
            return {
                "skus": sorted({s for _, s in positions}),
                "nodes": sorted({n for n, _ in positions}),
            }
        ordered = sorted(positions)
        return {"nodes": [n for n, _ in ordered], "skus": [s for _, s in ordered]}

    # -- stock ------------------------------------------------------------------

    def positions(
        self,
        conn: Connection,
        skus: Sequence[str] = (),
        node_ids: Sequence[str] = (),
        *,
        for_update: bool = False,
    ) -> list[Availability]:
        """Stock positions (filtered by SKUs and nodes when given) with reserved and held units."""
        now = self.clock()
        query = sa.select(t.stock).order_by(t.stock.c.node_id, t.stock.c.sku)
        if skus:
            query = query.where(t.stock.c.sku.in_(list(skus)))
        if node_ids:
            query = query.where(t.stock.c.node_id.in_(list(node_ids)))
        if for_update:
            query = self._lock(query)
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

    def _require_position_keys(self, conn: Connection, node_id: str, sku: str) -> None:
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
        with self.write() as conn:
            self._require_position_keys(conn, node_id, sku)
            current = self.positions(conn, [sku], [node_id], for_update=True)
            before = current[0].on_hand if current else 0
            reserved = current[0].reserved if current else 0
            if on_hand < reserved:
                raise FailedPrecondition(
                    f"on_hand {on_hand} is below the {reserved} units reserved by orders",
                    [Precondition("STOCK", f"{node_id}/{sku}", f"{reserved} units reserved")],
                )
            self._upsert(
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
                self._ledger(conn, node_id, sku, on_hand - before, reason, None)
            return self._trim_holds(conn, node_id, sku)

    def adjust_stock(self, node_id: str, sku: str, delta: int, reason: str) -> Availability:
        """Add ``delta`` to on hand (one ledger row); never below what orders have reserved."""
        with self.write() as conn:
            self._require_position_keys(conn, node_id, sku)
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
            self._ledger(conn, node_id, sku, delta, reason, None)
            return self._trim_holds(conn, node_id, sku)

    def _trim_holds(self, conn: Connection, node_id: str, sku: str) -> Availability:
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
                r.c.expires_at > self.clock(),
            )
            .order_by(r.c.reservation_id.desc())
        ).all()
        _cut_reservations(conn, holds, excess)
        return self.positions(conn, [sku], [node_id])[0]

    def _ledger(
        self,
        conn: Connection,
        node_id: str,
        sku: str,
        delta: int,
        reason: str,
        order_id: str | None,
    ) -> None:
        """One ledger row and the matching change to the position's on hand."""
        conn.execute(
            sa.insert(t.stock_ledger).values(
                node_id=node_id,
                sku=sku,
                delta=delta,
                reason=reason,
                order_id=order_id,
                at=self.clock(),
            )
        )
        conn.execute(
            sa.update(t.stock)
            .where(t.stock.c.node_id == node_id, t.stock.c.sku == sku)
            .values(on_hand=t.stock.c.on_hand + delta)
        )

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

        Must run inside :meth:`write`: the locks (or SQLite's write lock)
        last until the transaction ends, so a following insert is safe.
        """
        positions = sorted(units)
        now = self.clock()
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
            problems.extend(self._capacity_problems(conn, units_by_node(units), now))
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
            (a, b): c for a, b, c in self._reserved_rows(conn, (), now, exclude_quote, positions)
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
        rows = fetch(conn, _LOCK_STOCK_AT, **self._position_params(positions))
        wanted = set(positions)
        return {
            (node, sku): (int(on_hand), int(safety))
            for node, sku, on_hand, safety in rows
            if (node, sku) in wanted
        }

    def _capacity_problems(
        self, conn: Connection, by_node: Mapping[str, int], now: float
    ) -> list[Precondition]:
        nodes = sorted(by_node)
        limits = {node: int(limit) for node, limit in fetch(conn, _CAPACITY_LIMITS, nodes=nodes)}
        if not limits:
            return []
        used = {
            node: int(units)
            for node, units in fetch(conn, _USAGE_OF_NODES, day=utc_day(now), nodes=list(limits))
        }
        return [
            Precondition(
                "CAPACITY",
                node,
                f"needs {by_node[node]} units of today's capacity, "
                f"{max(limit - used.get(node, 0), 0)} left",
            )
            for node, limit in sorted(limits.items())
            if used.get(node, 0) + by_node[node] > limit
        ]

    def use_capacity(self, conn: Connection, by_node: Mapping[str, int], day: str) -> None:
        """Add units promised out of each node to ``day``'s usage."""
        for node, qty in sorted(by_node.items()):
            if not execute(conn, _ADD_USAGE, node_id=node, day=day, qty=qty):
                execute(conn, _INSERT_USAGE, node_id=node, day=day, units=qty)

    # -- quotes -------------------------------------------------------------------

    def save_quote(
        self,
        quote_id: str,
        request: dict[str, Any],
        options: list[dict[str, Any]],
        ttl_s: float,
        *,
        still_wanted: Callable[[], bool] = lambda: True,
    ) -> QuoteRow:
        """Store a quote and its options, placeable until it expires. It holds no stock:
        browsing must never make stock unpromisable (DESIGN section 4).

        ``still_wanted`` is asked once the write lock is held: a caller that has
        gone meanwhile gets nothing written (:class:`Cancelled`).
        """
        now = self.clock()
        with self.write() as conn:
            if not still_wanted():
                raise Cancelled("the caller went away before the quote was saved")
            row = {
                "quote_id": quote_id,
                "created_at": now,
                "expires_at": now + ttl_s,
                "quote_date": utc_day(now),
                "request_json": json.dumps(request, separators=(",", ":")),
                "options_json": json.dumps(options, separators=(",", ":")),
                "order_id": None,
            }
            execute(conn, _INSERT_QUOTE, **row)
            self._purge_expired_holds(conn, now)
        return QuoteRow(quote_id, now, now + ttl_s, utc_day(now), request, options, None)

    # -- checkout holds -------------------------------------------------------------

    def hold_option(
        self,
        quote: QuoteRow,
        option: Mapping[str, Any],
        *,
        holder: str,
        holder_name: str,
        cap: int,
        ttl_s: float,
        still_wanted: Callable[[], bool] = lambda: True,
    ) -> Hold:
        """Hold ``option``'s stock units for a checkout of ``quote``, in one transaction.

        One live hold per quote: the quote's previous hold is replaced. The hold
        counts against ``holder``, which may hold at most ``cap`` units at once over
        all its checkouts (:class:`QuotaExceeded`); concurrent calls of one holder
        take turns. If some units are no longer free nothing is held (the returned
        :class:`Hold` lists them). It lasts ``ttl_s``, never past the quote's expiry.
        A used or expired quote is FAILED_PRECONDITION; a caller gone by the time
        the locks are held gets nothing written (:class:`Cancelled`).
        """
        units = units_of(option)
        wanted = sum(units.values())
        if not units:  # every unit waits for inbound receipts: PlaceOrder reserves those
            return Hold({}, None, {})
        with self.write() as conn:
            fetch(conn, _LOCK_HOLDER, holder=holder)
            now = self.clock()
            locked = fetch(conn, _LOCK_QUOTE, quote_id=quote.quote_id)
            if not locked:
                raise NotFound("quote", quote.quote_id)
            used_by, expires_at = locked[0]
            check_placeable(quote.quote_id, used_by, float(expires_at), now)
            execute(conn, _DROP_QUOTE_HOLDS, quote_id=quote.quote_id)
            holding = int(
                fetch(conn, _HELD_BY, holder=holder, now=now, quote_id=quote.quote_id)[0][0]
            )
            if holding + wanted > cap:
                raise QuotaExceeded(
                    f"{holder_name} may hold {cap} unit(s) at once for checkouts: it holds "
                    f"{holding} for others and this one needs {wanted}; go on without a hold, "
                    "or release others with AbandonCheckout",
                    subject=holder_name,
                    description=f"holds {holding} of at most {cap} units; this checkout needs "
                    f"{wanted}",
                )
            free = self.lock_free_units(conn, sorted(units), now, quote.quote_id)
            short = {k: free.get(k, 0) for k, qty in units.items() if qty > free.get(k, 0)}
            if short:
                return Hold({}, None, {k: (units[k], max(v, 0)) for k, v in sorted(short.items())})
            if not still_wanted():
                raise Cancelled("the caller went away before the hold was taken")
            until = min(now + ttl_s, float(expires_at))
            execute_many(
                conn,
                _INSERT_HOLDS,
                [
                    {
                        "node_id": node,
                        "sku": sku,
                        "qty": qty,
                        "quote_id": quote.quote_id,
                        "expires_at": until,
                        "holder": holder,
                    }
                    for (node, sku), qty in sorted(units.items())
                ],
            )
        return Hold(dict(sorted(units.items())), until, {})

    def release_holds(self, quote_id: str) -> int:
        """Drop a quote's checkout hold (the shopper left); the live units it released."""
        with self.write() as conn:
            if not fetch(conn, _LOCK_QUOTE, quote_id=quote_id):
                raise NotFound("quote", quote_id)
            r = t.reservations
            live = conn.execute(
                sa.select(func.coalesce(func.sum(r.c.qty), 0)).where(
                    r.c.quote_id == quote_id, r.c.order_id.is_(None), r.c.expires_at > self.clock()
                )
            ).scalar_one()
            execute(conn, _DROP_QUOTE_HOLDS, quote_id=quote_id)
        return int(live)

    def get_quote(self, conn: Connection, quote_id: str) -> QuoteRow:
        found = fetch(conn, _QUOTE_BY_ID, quote_id=quote_id)
        if not found:
            raise NotFound("quote", quote_id)
        row = dict(zip(_QUOTE_COLUMNS, found[0], strict=True))
        return QuoteRow(
            row["quote_id"],
            row["created_at"],
            row["expires_at"],
            row["quote_date"],
            json.loads(row["request_json"]),
            json.loads(row["options_json"]),
            row["order_id"],
        )

    def _purge_expired_holds(self, conn: Connection, now: float) -> None:
        """Delete expired holds, at most every :data:`PURGE_EVERY_S` per process.

        Expired holds are already ignored by every availability query; this
        only keeps them from piling up under the per-position sums.
        """
        if now - self._last_purge < PURGE_EVERY_S:
            return
        self._last_purge = now
        conn.execute(
            sa.delete(t.reservations).where(
                t.reservations.c.expires_at.is_not(None),
                t.reservations.c.expires_at < now,
            )
        )

    # -- orders -------------------------------------------------------------------

    def find_order_by_key(self, conn: Connection, idempotency_key: str) -> OrderRow | None:
        found = fetch(conn, _ORDER_ID_BY_KEY, idempotency_key=idempotency_key)
        return self.get_order(conn, found[0][0]) if found else None

    def lock_idempotency_key(self, conn: Connection, idempotency_key: str) -> None:
        """Hold off other writers with this key until this transaction ends.

        Then a look for an order with the key sees the one a concurrent first
        attempt just wrote, instead of racing it to the insert (and losing with
        ABORTED). PostgreSQL: an advisory lock on the key's hash (a collision only
        makes two keys wait for each other); SQLite: writers are serialised already.
        """
        if not self.is_sqlite:
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                {"key": idempotency_key},
            )

    def insert_order(
        self,
        conn: Connection,
        *,
        order_id: str,
        quote: QuoteRow,
        option_id: str,
        idempotency_key: str,
        lines: list[dict[str, Any]],
        allocation: dict[str, Any],
        promised_date: str,
        events: list[tuple[str, str]],
    ) -> None:
        """Write a placed order and its reservations, and mark the quote used.

        The caller has already checked :meth:`shortages` in this transaction.
        Raises :class:`Aborted` if another order took the quote meanwhile.
        """
        now = self.clock()
        if not execute(conn, _TAKE_QUOTE, quote_id=quote.quote_id, order_id=order_id):
            raise Aborted(f"quote {quote.quote_id!r} was used by a concurrent PlaceOrder")
        execute(conn, _DROP_QUOTE_HOLDS, quote_id=quote.quote_id)
        request = quote.request
        try:
            execute(
                conn,
                _INSERT_ORDER,
                order_id=order_id,
                quote_id=quote.quote_id,
                option_id=option_id,
                idempotency_key=idempotency_key,
                state="PLACED",
                dest_lat=float(request["destination"]["lat"]),
                dest_lon=float(request["destination"]["lon"]),
                lines_json=json.dumps(lines, separators=(",", ":")),
                allocation_json=json.dumps(allocation, separators=(",", ":")),
                promised_date=promised_date,
                created_at=now,
                updated_at=now,
                version=1,
            )
        except IntegrityError as exc:
            raise Aborted(f"idempotency key {idempotency_key!r} was used concurrently") from exc
        units = units_of(allocation)
        day = utc_day(now)
        if units:  # empty when every unit waits for inbound receipts
            execute_many(conn, _INSERT_RESERVATIONS, order_reservation_rows(order_id, units, day))
        self.use_capacity(conn, units_by_node(units), day)
        for kind, detail in events:
            self.add_event(conn, order_id, kind, detail)

    def add_event(self, conn: Connection, order_id: str, kind: str, detail: str) -> None:
        execute(conn, _INSERT_EVENT, order_id=order_id, at=self.clock(), type=kind, detail=detail)

    def get_order(self, conn: Connection, order_id: str, *, for_update: bool = False) -> OrderRow:
        found = fetch(
            conn, _ORDER_BY_ID_FOR_UPDATE if for_update else _ORDER_BY_ID, order_id=order_id
        )
        if not found:
            raise NotFound("order", order_id)
        events = [
            (at, kind, detail)
            for at, kind, detail in fetch(conn, _EVENTS_OF_ORDER, order_id=order_id)
        ]
        returns = [
            (sku, int(qty), node, at)
            for sku, qty, node, at in fetch(conn, _RETURNS_OF_ORDER, order_id=order_id)
        ]
        return _order_row(dict(zip(_ORDER_COLUMNS, found[0], strict=True)), events, returns)

    def list_orders(
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
        return [self.get_order(conn, r.order_id) for r in conn.execute(query)]

    def set_state(self, conn: Connection, order: OrderRow, state: str) -> None:
        updated = conn.execute(
            sa.update(t.orders)
            .where(t.orders.c.order_id == order.order_id, t.orders.c.version == order.version)
            .values(state=state, updated_at=self.clock(), version=order.version + 1)
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
        self.release_inbound(conn, order.order_id)
        self.give_back_capacity(conn, used)
        return units

    def give_back_capacity(self, conn: Connection, used: Mapping[tuple[str, str], int]) -> None:
        """Take units released by orders off each (node, day)'s usage (never below 0)."""
        u = t.node_day_usage
        greatest = sa.func.max if self.is_sqlite else sa.func.greatest  # SQLite: scalar max
        for (node, day), qty in sorted(used.items()):
            conn.execute(
                sa.update(u)
                .where(u.c.node_id == node, u.c.day == day)
                .values(units=greatest(u.c.units - qty, 0))
            )

    def consume_reservations(self, conn: Connection, order: OrderRow) -> dict[Position, int]:
        """Shipment: on hand decremented (ledger rows) and the reservations consumed."""
        units = self.order_reservations(conn, order.order_id)
        for (node, sku), qty in sorted(units.items()):
            self._ledger(conn, node, sku, -qty, "shipment", order.order_id)
        conn.execute(sa.delete(t.reservations).where(t.reservations.c.order_id == order.order_id))
        return units

    def order_reservations(self, conn: Connection, order_id: str) -> dict[Position, int]:
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
        units: Mapping[str, int],
        node_id: str,
        idempotency_key: str | None,
        return_cost: int,
    ) -> None:
        """Returned units restored at ``node_id`` (ledger rows; positions created if new),
        recorded with what the return cost (millicents) for a retry to answer again."""
        now = self.clock()
        for sku, qty in sorted(units.items()):
            exists = conn.execute(
                sa.select(t.stock.c.sku).where(t.stock.c.node_id == node_id, t.stock.c.sku == sku)
            ).first()
            if exists is None:
                conn.execute(
                    sa.insert(t.stock).values(
                        node_id=node_id, sku=sku, on_hand=0, safety_stock=0, low_stock_threshold=0
                    )
                )
            self._ledger(conn, node_id, sku, qty, "return", order_id)
            conn.execute(
                sa.insert(t.order_returns).values(
                    order_id=order_id,
                    sku=sku,
                    qty=qty,
                    node_id=node_id,
                    at=now,
                    idempotency_key=idempotency_key,
                    return_cost=return_cost,
                )
            )

    # -- inbound receipts, re-sourcing (backorder, click & collect issue) ------------

    def receipts(
        self,
        conn: Connection,
        skus: Sequence[str] = (),
        node_ids: Sequence[str] = (),
        *,
        receipt_ids: Sequence[str] = (),
        open_only: bool = True,
        for_update: bool = False,
    ) -> list[ReceiptRow]:
        """Inbound receipts (filtered when given) with the units orders wait for."""
        r = t.inbound_receipts
        query = sa.select(r).order_by(r.c.receipt_id)
        if skus:
            query = query.where(r.c.sku.in_(list(skus)))
        if node_ids:
            query = query.where(r.c.node_id.in_(list(node_ids)))
        if receipt_ids:
            query = query.where(r.c.receipt_id.in_(list(receipt_ids)))
        if open_only:
            query = query.where(r.c.state == "OPEN")
        rows = conn.execute(self._lock(query) if for_update else query).all()
        ir = t.inbound_reservations
        reserved = {
            a: int(b)
            for a, b in conn.execute(
                sa.select(ir.c.receipt_id, func.sum(ir.c.qty))
                .where(ir.c.receipt_id.in_([row.receipt_id for row in rows]))
                .group_by(ir.c.receipt_id)
            )
        }
        return [
            ReceiptRow(
                row.receipt_id,
                row.node_id,
                row.sku,
                int(row.qty),
                row.expected_date,
                row.state,
                reserved.get(row.receipt_id, 0),
                None if row.received_qty is None else int(row.received_qty),
            )
            for row in rows
        ]

    def with_receipts(self, conn: Connection, network: Network, today: str) -> Network:
        """``network`` with the free units of open receipts due today or later.

        Receipts already overdue are not promised again (they are late).
        """
        from datetime import date

        start = date.fromisoformat(today)
        found = []
        for row in self.receipts(conn, network.sku_ids, network.node_ids):
            free = row.qty - row.reserved
            day = (date.fromisoformat(row.expected_date) - start).days
            if free > 0 and day >= 0 and row.node_id in network.node_index:
                found.append(Receipt(row.receipt_id, row.node_id, row.sku, free, day))
        return network.replace(receipts=tuple(found))

    def upsert_receipt(
        self, conn: Connection, receipt_id: str, node_id: str, sku: str, qty: int, date: str
    ) -> ReceiptRow | None:
        """Create or update an open receipt; returns the previous state (None if new).

        Raises FAILED_PRECONDITION for a cancelled receipt or one moved to another position.
        """
        self._require_position_keys(conn, node_id, sku)
        before = self.receipts(conn, receipt_ids=[receipt_id], open_only=False, for_update=True)
        now = self.clock()
        values = {"qty": qty, "expected_date": date, "updated_at": now}
        if not before:
            conn.execute(
                sa.insert(t.inbound_receipts).values(
                    receipt_id=receipt_id, node_id=node_id, sku=sku, state="OPEN", **values
                )
            )
            return None
        old = before[0]
        if old.state != "OPEN" or (old.node_id, old.sku) != (node_id, sku):
            why = (
                f"is {old.state.lower()}"
                if old.state != "OPEN"
                else f"is for {old.node_id}/{old.sku}"
            )
            raise FailedPrecondition(
                f"receipt {receipt_id!r} {why}", [Precondition("RECEIPT", receipt_id, why)]
            )
        conn.execute(
            sa.update(t.inbound_receipts)
            .where(t.inbound_receipts.c.receipt_id == receipt_id)
            .values(**values)
        )
        return old

    def cancel_receipt(self, conn: Connection, receipt_id: str) -> ReceiptRow:
        rows = self.receipts(conn, receipt_ids=[receipt_id], open_only=False, for_update=True)
        if not rows:
            raise NotFound("receipt", receipt_id)
        conn.execute(
            sa.update(t.inbound_receipts)
            .where(t.inbound_receipts.c.receipt_id == receipt_id)
            .values(state="CANCELLED", updated_at=self.clock())
        )
        return rows[0]

    def receipt_orders(
        self, conn: Connection, receipt_id: str, *, oldest_first: bool = False
    ) -> list[tuple[str, int]]:
        """(order id, units) waiting for ``receipt_id``, newest order first (or oldest)."""
        ir, o = t.inbound_reservations, t.orders
        order = (
            (o.c.created_at, ir.c.order_id)
            if oldest_first
            else (o.c.created_at.desc(), ir.c.order_id.desc())
        )
        return [
            (a, int(b))
            for a, b in conn.execute(
                sa.select(ir.c.order_id, func.sum(ir.c.qty))
                .join(o, o.c.order_id == ir.c.order_id)
                .where(ir.c.receipt_id == receipt_id)
                .group_by(ir.c.order_id, o.c.created_at)
                .order_by(*order)
            )
        ]

    def order_inbound(self, conn: Connection, order_id: str) -> dict[str, int]:
        """Units per receipt an order waits for."""
        ir = t.inbound_reservations
        return {
            a: int(b)
            for a, b in conn.execute(
                sa.select(ir.c.receipt_id, func.sum(ir.c.qty))
                .where(ir.c.order_id == order_id)
                .group_by(ir.c.receipt_id)
            )
        }

    def reserve_inbound(self, conn: Connection, order_id: str, units: Mapping[str, int]) -> None:
        rows = [
            {"receipt_id": rid, "order_id": order_id, "qty": qty}
            for rid, qty in sorted(units.items())
            if qty > 0
        ]
        if rows:
            conn.execute(sa.insert(t.inbound_reservations), rows)

    def release_inbound(
        self, conn: Connection, order_id: str, receipt_id: str | None = None
    ) -> None:
        ir = t.inbound_reservations
        where = [ir.c.order_id == order_id]
        if receipt_id is not None:
            where.append(ir.c.receipt_id == receipt_id)
        conn.execute(sa.delete(ir).where(*where))

    def release_order_units(
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
            for row, cut in _cut_reservations(conn, rows, qty):
                if row.capacity_day is not None:
                    key = (node, row.capacity_day)
                    used[key] = used.get(key, 0) + cut
        self.give_back_capacity(conn, used)

    def reserve_order_units(
        self, conn: Connection, order_id: str, units: Mapping[Position, int]
    ) -> None:
        """Reserve more stock for a placed order, on today's capacity; the caller
        checked :meth:`shortages`."""
        day = utc_day(self.clock())
        rows = order_reservation_rows(order_id, units, day)
        if rows:
            conn.execute(sa.insert(t.reservations), rows)
            self.use_capacity(conn, units_by_node(units), day)

    def update_allocation(
        self, conn: Connection, order: OrderRow, allocation: dict[str, Any]
    ) -> None:
        """Replace an order's allocation document; Aborted if the order changed meanwhile."""
        updated = conn.execute(
            sa.update(t.orders)
            .where(t.orders.c.order_id == order.order_id, t.orders.c.version == order.version)
            .values(
                allocation_json=json.dumps(allocation, separators=(",", ":")),
                updated_at=self.clock(),
                version=order.version + 1,
            )
        ).rowcount
        if not updated:
            raise Aborted(f"order {order.order_id!r} changed concurrently")

    def inbound_totals(
        self, conn: Connection, skus: Sequence[str] = (), node_ids: Sequence[str] = ()
    ) -> dict[Position, tuple[int, int]]:
        """(inbound units, units orders wait for) per position, over open receipts."""
        totals: dict[Position, tuple[int, int]] = {}
        for row in self.receipts(conn, skus, node_ids):
            a, b = totals.get((row.node_id, row.sku), (0, 0))
            totals[(row.node_id, row.sku)] = (a + row.qty, b + row.reserved)
        return totals

    def receive_receipt(self, conn: Connection, receipt: ReceiptRow, qty: int, reason: str) -> None:
        """Put ``qty`` units of an open receipt on hand (one ledger row) and mark it RECEIVED.

        The caller holds the position's lock (:meth:`lock_positions`) and the receipt's.
        """
        # A new position (ON CONFLICT: a concurrent receipt may create it too).
        conn.execute(
            self._insert(t.stock)
            .values(
                node_id=receipt.node_id,
                sku=receipt.sku,
                on_hand=0,
                safety_stock=0,
                low_stock_threshold=0,
            )
            .on_conflict_do_nothing(index_elements=["node_id", "sku"])
        )
        self._ledger(
            conn, receipt.node_id, receipt.sku, qty, f"receipt {receipt.receipt_id}: {reason}", None
        )
        now = self.clock()
        conn.execute(
            sa.update(t.inbound_receipts)
            .where(t.inbound_receipts.c.receipt_id == receipt.receipt_id)
            .values(state="RECEIVED", received_qty=qty, received_at=now, updated_at=now)
        )

    def inbound_to_stock(
        self, conn: Connection, order_id: str, receipt: ReceiptRow, qty: int
    ) -> None:
        """An order's units waiting for ``receipt`` become an ordinary stock reservation.

        They use no daily capacity: units from receipts never did (they leave later).
        """
        self.release_inbound(conn, order_id, receipt.receipt_id)
        conn.execute(
            sa.insert(t.reservations).values(
                node_id=receipt.node_id,
                sku=receipt.sku,
                qty=qty,
                quote_id=None,
                order_id=order_id,
                expires_at=None,
                capacity_day=None,
            )
        )

    def overdue_receipts(self, conn: Connection, today: str) -> list[ReceiptRow]:
        """Open receipts expected before ``today`` with orders waiting that are not marked yet."""
        r, ir = t.inbound_receipts, t.inbound_reservations
        ids = [
            row.receipt_id
            for row in conn.execute(
                sa.select(r.c.receipt_id)
                .where(
                    r.c.state == "OPEN",
                    r.c.expected_date < today,
                    sa.exists().where(
                        ir.c.receipt_id == r.c.receipt_id, ir.c.resource_kind.is_(None)
                    ),
                )
                .order_by(r.c.expected_date, r.c.receipt_id)
            )
        ]
        if not ids:
            return []
        rows = {
            row.receipt_id: row for row in self.receipts(conn, receipt_ids=ids, open_only=False)
        }
        return [rows[i] for i in ids if i in rows]

    def mark_for_resourcing(
        self,
        conn: Connection,
        receipt: ReceiptRow,
        order_ids: Iterable[str],
        kind: str,
        reason: str,
    ) -> None:
        """Mark, in the caller's transaction, that ``receipt`` failed these waiting orders.

        The mark is the durable record of work still to do (re-sourcing runs in
        each order's own transaction afterwards, or in a later sweep if that was
        cut short). An order already marked keeps its first mark: its plan still
        has the date and reason of that one.
        """
        ids = sorted(set(order_ids))
        if not ids:
            return
        r = t.inbound_reservations
        conn.execute(
            sa.update(r)
            .where(
                r.c.receipt_id == receipt.receipt_id,
                r.c.order_id.in_(ids),
                r.c.resource_kind.is_(None),
            )
            .values(resource_kind=kind, resource_reason=reason, resource_due=receipt.expected_date)
        )

    def pending_resourcing(
        self, conn: Connection, receipt_ids: Sequence[str] | None = None
    ) -> list[PendingResourcing]:
        """Marked (order, receipt) pairs still waiting, oldest order first per receipt."""
        r, ir, o = t.inbound_reservations, t.inbound_receipts, t.orders
        query = (
            sa.select(
                r.c.order_id,
                r.c.receipt_id,
                ir.c.node_id,
                ir.c.sku,
                r.c.resource_due,
                r.c.resource_kind,
                r.c.resource_reason,
                # Selected for ORDER BY, which PostgreSQL requires with DISTINCT.
                ir.c.expected_date,
                o.c.created_at,
            )
            .join(ir, ir.c.receipt_id == r.c.receipt_id)
            .join(o, o.c.order_id == r.c.order_id)
            .where(r.c.resource_kind.is_not(None))
            .distinct()  # one per (order, receipt), however many rows they share
            .order_by(ir.c.expected_date, r.c.receipt_id, o.c.created_at, r.c.order_id)
        )
        if receipt_ids is not None:
            query = query.where(r.c.receipt_id.in_(list(receipt_ids)))
        return [PendingResourcing(*row[:7]) for row in conn.execute(query)]

    # -- checks (tests, operators) -------------------------------------------------

    def ledger_mismatches(self) -> list[tuple[str, str, int, int]]:
        """Positions whose on hand differs from the sum of their ledger: must be empty."""
        with self.read() as conn:
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


def _cut_reservations(conn: Connection, rows: Iterable[Any], units: int) -> list[tuple[Any, int]]:
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


def _node_row(network: Network, n: int) -> dict[str, Any]:
    capacity = int(network.capacity[n])
    return {
        "node_id": network.node_ids[n],
        "kind": network.node_kinds[n].value,
        "lat": float(network.lat[n]),
        "lon": float(network.lon[n]),
        "handling_days": int(network.handling_days[n]),
        "handling_cost": int(network.handling_cost[n]),
        "storage_cost": int(network.storage_cost[n]),
        "daily_capacity_units": None if capacity >= UNLIMITED_CAPACITY else capacity,
    }


def _read_catalog(conn: Connection, version: int) -> Catalog:
    node_rows = conn.execute(sa.select(t.nodes).order_by(t.nodes.c.node_id)).all()
    sku_rows = conn.execute(sa.select(t.skus).order_by(t.skus.c.sku)).all()
    zone_rows = conn.execute(sa.select(t.zones).order_by(t.zones.c.max_km)).all()
    rate_rows = conn.execute(sa.select(t.rates).order_by(t.rates.c.service)).all()
    zone_ids = tuple(z.zone for z in zone_rows)
    zone_col = {z: i for i, z in enumerate(zone_ids)}
    service_ids = tuple(dict.fromkeys(r.service for r in rate_rows))
    v, z = len(service_ids), len(zone_ids)
    base = np.zeros((v, z), dtype=np.int64)
    per_kg = np.zeros((v, z), dtype=np.int64)
    transit = np.zeros((v, z), dtype=np.int64)
    offered = np.zeros((v, z), dtype=np.bool_)
    service_row = {s: i for i, s in enumerate(service_ids)}
    for r in rate_rows:
        if r.zone in zone_col:
            i, j = service_row[r.service], zone_col[r.zone]
            base[i, j], per_kg[i, j], transit[i, j] = r.base_price, r.per_kg, r.transit_days
            offered[i, j] = True
    return Catalog(
        version=version,
        node_ids=tuple(r.node_id for r in node_rows),
        node_kinds=tuple(NodeKind(r.kind) for r in node_rows),
        lat=np.array([r.lat for r in node_rows], dtype=np.float64),
        lon=np.array([r.lon for r in node_rows], dtype=np.float64),
        handling_days=np.array([r.handling_days for r in node_rows], dtype=np.int64),
        handling_cost=np.array([r.handling_cost for r in node_rows], dtype=np.int64),
        storage_cost=np.array([r.storage_cost for r in node_rows], dtype=np.int64),
        capacity=np.array(
            [
                UNLIMITED_CAPACITY if r.daily_capacity_units is None else r.daily_capacity_units
                for r in node_rows
            ],
            dtype=np.int64,
        ),
        sku_ids=tuple(r.sku for r in sku_rows),
        weight_g=np.array([r.weight_g for r in sku_rows], dtype=np.int64),
        daily_demand=np.array([r.daily_demand for r in sku_rows], dtype=np.float64),
        zone_ids=zone_ids,
        zone_max_km=np.array([r.max_km for r in zone_rows], dtype=np.float64),
        service_ids=service_ids,
        base_price=base,
        per_kg=per_kg,
        transit_days=transit,
        offered=offered,
    )


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
        lines=json.loads(row["lines_json"]),
        allocation=json.loads(row["allocation_json"]),
        promised_date=row["promised_date"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=int(row["version"]),
        events=events,
        returns=returns,
    )
