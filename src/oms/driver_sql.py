"""The checkout hot path's statements, run on the database driver's cursor directly.

Every quote reads the stock of its SKUs, a checkout writes its hold, and every order
locks and re-reads what it draws on. Through SQLAlchemy Core each of these
statements cost more CPU in SQLAlchemy (execution context, parameter
processing, a Python call per result row, events) than the database took to
run it. These few are therefore written out once per dialect as plain SQL and
run on the DBAPI connection *under the caller's SQLAlchemy transaction*, so
they see, lock and write exactly what the surrounding SQLAlchemy statements
do. Everything else in :mod:`oms.store` stays SQLAlchemy.

Parameters are named. A list parameter is written ``{name}`` in the SQLite
text, which is expanded to ``:name_0, :name_1, ...`` for the list's length
(the text is cached per length); PostgreSQL binds the whole list as one array
(``= ANY(%(name)s)``). A driver error is raised as SQLAlchemy's
:class:`~sqlalchemy.exc.DBAPIError` subclass, as SQLAlchemy would, so the
store's error translation (lost race, store unavailable) applies unchanged.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

__all__ = ["Statement", "execute", "execute_many", "fetch"]

_LIST_MARKER = re.compile(r"\{(\w+)\}")
_NAMED_PARAM = re.compile(r"(?<![:\w]):(\w+)")
_IN_LIST = re.compile(r"\bIN \(\{(\w+)\}\)")


@dataclass(frozen=True)
class Statement:
    """One statement's text per dialect (see the module docstring for parameters)."""

    sqlite: str
    postgresql: str

    @classmethod
    def portable(cls, sqlite: str, *, for_update: bool = False) -> Statement:
        """A statement both dialects run as written in SQLite's form.

        PostgreSQL's text is derived: ``:name`` becomes ``%(name)s``, ``IN ({name})``
        becomes ``= ANY(%(name)s)``, and ``for_update`` appends ``FOR UPDATE``
        (SQLite's writers hold the database's write lock instead).
        """
        postgresql = _IN_LIST.sub(r"= ANY(%(\1)s)", sqlite)
        postgresql = _NAMED_PARAM.sub(r"%(\1)s", postgresql)
        return cls(sqlite, postgresql + (" FOR UPDATE" if for_update else ""))


@functools.lru_cache(maxsize=1024)
def _sqlite_text(template: str, lengths: tuple[tuple[str, int], ...]) -> str:
    """``template`` with each ``{name}`` replaced by ``:name_0, ..., :name_{n-1}``."""
    length = dict(lengths)

    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        # An empty list matches nothing: NULL is never IN-equal to anything.
        return ", ".join(f":{name}_{i}" for i in range(length[name])) or "NULL"

    return _LIST_MARKER.sub(expand, template)


def _bind(conn: Connection, statement: Statement, params: Mapping[str, Any]) -> tuple[str, Any]:
    """The driver's SQL text and parameters for ``statement`` on ``conn``'s dialect."""
    if conn.dialect.name != "sqlite":
        return statement.postgresql, params
    flat: dict[str, Any] = {}
    lengths = []
    for name, value in params.items():
        if isinstance(value, (list, tuple)):
            lengths.append((name, len(value)))
            flat.update({f"{name}_{i}": item for i, item in enumerate(value)})
        else:
            flat[name] = value
    return _sqlite_text(statement.sqlite, tuple(lengths)), flat


def _driver_error(conn: Connection, text: str, params: Any, exc: Exception) -> DBAPIError:
    """The SQLAlchemy exception SQLAlchemy itself would raise for driver error ``exc``."""
    dbapi = conn.dialect.dbapi
    assert dbapi is not None
    wrapped = DBAPIError.instance(text, params, exc, dbapi.Error)
    assert isinstance(wrapped, DBAPIError)  # exc is a driver error, so always a DBAPIError
    return wrapped


@contextmanager
def _cursor(conn: Connection, text: str, params: Any) -> Iterator[Any]:
    """A driver cursor on ``conn``'s connection; driver errors raised as SQLAlchemy's."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except conn.dialect.dbapi.Error as exc:  # type: ignore[union-attr]
        raise _driver_error(conn, text, params, exc) from exc
    finally:
        cursor.close()


def fetch(conn: Connection, statement: Statement, **params: Any) -> list[tuple[Any, ...]]:
    """Every row of ``statement`` as plain tuples, in ``conn``'s transaction."""
    text, bound = _bind(conn, statement, params)
    with _cursor(conn, text, bound) as cursor:
        cursor.execute(text, bound)
        return list(cursor.fetchall())


def execute(conn: Connection, statement: Statement, **params: Any) -> int:
    """Run ``statement`` once in ``conn``'s transaction; the rows it changed."""
    text, bound = _bind(conn, statement, params)
    with _cursor(conn, text, bound) as cursor:
        cursor.execute(text, bound)
        return int(cursor.rowcount)


def execute_many(conn: Connection, statement: Statement, rows: Iterable[Mapping[str, Any]]) -> None:
    """Run ``statement`` once per row of scalar parameters, in ``conn``'s transaction."""
    text = statement.sqlite if conn.dialect.name == "sqlite" else statement.postgresql
    batch: Sequence[Mapping[str, Any]] = list(rows)
    if not batch:
        return
    with _cursor(conn, text, batch) as cursor:
        cursor.executemany(text, batch)
