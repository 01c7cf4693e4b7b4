"""Daily capacity: the units orders promise out of each node per UTC day.

``node_day_usage`` counts the units orders promised out of each node per UTC
day; checkout holds do not consume it. Each order reservation names the day it
counts on (``capacity_day``: placement, or a later re-sourcing), and releasing
it gives back that day's units.

May import :mod:`oms.store.database`, :mod:`oms.schema`, :mod:`oms.driver_sql`, :mod:`oms.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.driver_sql import Statement, execute, fetch
from oms.errors import Precondition
from oms.store.database import Database, utc_day

_USAGE_ON_DAY = Statement.portable("SELECT node_id, units FROM node_day_usage WHERE day = :day")
_USAGE_OF_NODES = Statement.portable(
    "SELECT node_id, units FROM node_day_usage WHERE day = :day AND node_id IN ({nodes})"
)
_CAPACITY_LIMITS = Statement.portable(
    "SELECT node_id, daily_capacity_units FROM nodes WHERE node_id IN ({nodes}) "
    "AND daily_capacity_units IS NOT NULL ORDER BY node_id",
    for_update=True,
)
#: One statement: an UPDATE-else-INSERT let two writers both insert a node's first units of
#: a day on PostgreSQL (neither saw the other's row), and the second fail on the key.
_ADD_USAGE = Statement.portable(
    "INSERT INTO node_day_usage (node_id, day, units) VALUES (:node_id, :day, :qty) "
    "ON CONFLICT (node_id, day) DO UPDATE SET units = node_day_usage.units + excluded.units"
)


class CapacityRepository:
    """Each node's daily capacity used by orders (``node_day_usage``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def used_on(self, conn: Connection, day: str) -> list[tuple[str, int]]:
        """(node, units used) on ``day``, for nodes with any use."""
        return [(node, int(units)) for node, units in fetch(conn, _USAGE_ON_DAY, day=day)]

    def problems(
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

    def use(self, conn: Connection, by_node: Mapping[str, int], day: str) -> None:
        """Add units promised out of each node to ``day``'s usage."""
        for node, qty in sorted(by_node.items()):
            execute(conn, _ADD_USAGE, node_id=node, day=day, qty=qty)

    def give_back(self, conn: Connection, used: Mapping[tuple[str, str], int]) -> None:
        """Take units released by orders off each (node, day)'s usage (never below 0)."""
        u = t.node_day_usage
        greatest = sa.func.max if self.db.is_sqlite else sa.func.greatest  # SQLite: scalar max
        for (node, day), qty in sorted(used.items()):
            conn.execute(
                sa.update(u)
                .where(u.c.node_id == node, u.c.day == day)
                .values(units=greatest(u.c.units - qty, 0))
            )
