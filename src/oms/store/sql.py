"""SQL text shared by the repositories' hot-path statements (:mod:`oms.driver_sql`).

The statements every quote and order runs (reading stock, locking it,
writing holds, writing the order) go to the driver directly
(:mod:`oms.driver_sql`): through SQLAlchemy their per-call and per-row
overhead cost more than running them. Written once in SQLite's form; see
:meth:`Statement.portable` for PostgreSQL's. Each repository keeps its own
statements beside the code that runs them; the fragments two of them share live here.
"""

from __future__ import annotations

from collections.abc import Sequence

from oms.driver_sql import Statement

LIVE = "(expires_at IS NULL OR expires_at > :now)"
NOT_QUOTE = "(quote_id IS NULL OR quote_id <> :quote_id)"
DROP_QUOTE_HOLDS = Statement.portable("DELETE FROM reservations WHERE quote_id = :quote_id")


def insert_statement(table: str, columns: Sequence[str]) -> Statement:
    placeholders = ", ".join(f":{c}" for c in columns)
    return Statement.portable(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})")
