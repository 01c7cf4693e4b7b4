"""The database: engine, transactions (the unit of work) and dialect helpers.

SQLAlchemy 2 Core over SQLite (embedded default: a file, WAL mode) or
PostgreSQL (psycopg 3), chosen by URL. The schema lives in
:mod:`oms.schema`; Alembic migrations in :mod:`oms.migrations`.

Every write is one transaction (:meth:`Database.write`), shared by every
repository a use case calls. A lost race surfaces as :class:`~oms.errors.Aborted`,
a dead server as :class:`~oms.errors.Unavailable`.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from oms import deadlines
from oms.driver_sql import Statement, execute
from oms.errors import Aborted, DeadlineExceeded, Unavailable
from oms.store import outbox

log = logging.getLogger("oms.store")

_BEGIN = Statement(sqlite="BEGIN", postgresql="BEGIN")
_BEGIN_IMMEDIATE = Statement(sqlite="BEGIN IMMEDIATE", postgresql="BEGIN")


def utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


#: How long a PostgreSQL connect attempt may wait for the server (libpq's ``connect_timeout``,
#: which covers the whole start-up) unless the URL gives its own: a host that silently
#: drops packets would otherwise hold the caller's thread for the OS TCP timeout (minutes).
DEFAULT_CONNECT_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_VARIABLE = "OMS_DB_CONNECT_TIMEOUT_S"


def connect_timeout_from_env(environ: Mapping[str, str] | None = None) -> float:
    """``$OMS_DB_CONNECT_TIMEOUT_S`` (seconds, positive), or :data:`DEFAULT_CONNECT_TIMEOUT_S`."""
    raw = (os.environ if environ is None else environ).get(CONNECT_TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_CONNECT_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"{CONNECT_TIMEOUT_VARIABLE}: {raw[:40]!r} is not a positive number")
    return seconds


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3; anything else is passed through."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(
    url: str,
    pool_size: int = 16,
    *,
    read_only: bool = False,
    session_settings: Mapping[str, str] | None = None,
    connect_timeout_s: float | None = None,
) -> Engine:
    """The engine of ``url``. ``read_only``: its sessions cannot write (SQLite:
    ``query_only``; PostgreSQL: give ``default_transaction_read_only`` in
    ``session_settings``, which every PostgreSQL session starts with).

    ``connect_timeout_s`` (PostgreSQL): how long a connect attempt may wait
    (``None``: :func:`connect_timeout_from_env`); a ``connect_timeout`` in the
    URL's query wins. psycopg (like libpq) counts whole seconds, at least 2."""
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
                *(["PRAGMA query_only=ON"] if read_only else []),
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
    connect_args: dict[str, str] = {}
    options = " ".join(f"-c {name}={value}" for name, value in (session_settings or {}).items())
    if options:
        connect_args["options"] = options
    if "connect_timeout" not in sa.engine.make_url(url).query:  # connect_args would override it
        seconds = connect_timeout_from_env() if connect_timeout_s is None else connect_timeout_s
        connect_args["connect_timeout"] = str(math.ceil(seconds))
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def _translate_db_errors(exc: DBAPIError) -> Exception:
    """Lost races and lock timeouts become Aborted; a dead server Unavailable.

    The driver's text names hosts, ports, databases, tables and other sessions:
    it is logged here (passwords masked by oms.logging), never sent to the caller.
    """
    text = str(exc.orig) if exc.orig is not None else str(exc)
    first_line = (text.strip().splitlines() or [""])[0]
    race_words = ("deadlock", "could not serialize", "database is locked", "lock timeout")
    if any(word in text.lower() for word in race_words):
        log.warning("store: lost a race: %s", first_line)
        return Aborted("lost a race with a concurrent writer; retry")
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        log.error("store unavailable: %s", first_line)
        return Unavailable("the store is unavailable; retry later")
    return exc


def _write_lock_timeout(started: float) -> DeadlineExceeded:
    waited_ms = 1000 * (time.monotonic() - started)
    return DeadlineExceeded(
        f"waited {waited_ms:.0f} ms for the store's write lock; the caller's deadline passed"
    )


def _flock_until(fd: int, give_up_at: float, started: float) -> None:
    """flock(LOCK_EX) that gives up at ``give_up_at`` (flock itself has no timeout):
    try without blocking, then poll every 0.5-5 ms."""
    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = give_up_at - time.monotonic()
            if left <= 0:
                raise _write_lock_timeout(started) from None
            time.sleep(min(pause, left))
            pause = min(2 * pause, 0.005)


class Database:
    """The engine, the clock and the transactions every repository works in. Thread-safe.

    A use case's unit of work is one :meth:`write` (or :meth:`read`) transaction:
    the :class:`~sqlalchemy.engine.Connection` it yields is handed to each
    repository method the use case calls, so they all commit or roll back together.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 16,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
        session_settings: Mapping[str, str] | None = None,
        connect_timeout_s: float | None = None,
    ) -> None:
        self.url = normalise_url(url)
        self.session_settings = dict(session_settings or {})
        self.engine = make_engine(
            self.url,
            pool_size,
            read_only=read_only,
            session_settings=self.session_settings,
            connect_timeout_s=connect_timeout_s,
        )
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.clock = clock
        self._thread_lock = threading.Lock()
        self._lock_fd: int | None = None
        database = self.engine.url.database if self.is_sqlite else None
        if database and database != ":memory:":
            self._lock_fd = os.open(f"{database}.writelock", os.O_RDWR | os.O_CREAT, 0o644)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent).

        Alembic's own INFO lines (a dozen at every start: plugins, the dialect,
        each step) are kept out of the log; one line says what changed, if anything.
        """
        logging.getLogger("alembic").setLevel(logging.WARNING)  # before its import logs
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
        with self.engine.begin() as conn:
            before = MigrationContext.configure(conn).get_current_revision()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            after = MigrationContext.configure(conn).get_current_revision()
        if after != before:
            log.info("store schema migrated from %s to %s", before or "empty", after)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """One read transaction. ``snapshot``: every statement in it sees the same
        committed state (PostgreSQL: REPEATABLE READ, read only; its default READ
        COMMITTED lets each statement see later commits). SQLite's read transaction
        already reads one snapshot."""
        try:
            with self.engine.connect() as conn:
                if snapshot and not self.is_sqlite:
                    conn.execution_options(
                        isolation_level="REPEATABLE READ", postgresql_readonly=True
                    )
                with conn.begin():
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
                        outbox.begin(conn)
                        yield conn
                        outbox.number_events(conn)  # last: see oms.store.outbox
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
        # Inside a call, neither lock is waited for past the caller's deadline.
        timeout = deadlines.bounded(None)
        started = time.monotonic()
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise _write_lock_timeout(started)
        try:
            if timeout is None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            else:
                _flock_until(self._lock_fd, started + timeout, started)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def lock(self, query: Any) -> Any:
        return query if self.is_sqlite else query.with_for_update()

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which knows ON CONFLICT DO UPDATE on both backends."""
        if self.is_sqlite:
            return sqlite_insert(table)
        return postgresql_insert(table)

    def upsert(
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
        stmt = self.insert(table)
        updates = {name: stmt.excluded[name] for name in columns if name not in keys}
        conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=updates), rows)
