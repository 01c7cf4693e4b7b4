"""The order event feed: a transactional outbox with a gapless sequence (issue 16).

Every change to an order or a shipment inserts its events into ``order_events``
in the same transaction as the change (:func:`add_event`). On PostgreSQL, just
before that transaction commits, :func:`number_events` takes the next sequence
numbers from ``event_counter``'s single row (``UPDATE ... RETURNING``) and writes
them on the transaction's events.

On SQLite the writer already holds the database's write lock for its whole
transaction (BEGIN IMMEDIATE; and any SQLite write transaction reads the latest
commit), so nobody else can take numbers meanwhile: each event is numbered as it
is inserted (the counter's value plus its place in the transaction, read in the
INSERT itself) and :func:`number_events` only advances the counter by as many,
in the same transaction. Same numbers, same commit order, two statements fewer
per event-writing transaction (PlaceOrder's CPU, issue 16).

Why this is gapless for readers: the counter row's lock is held from that
update until commit, so two event-writing transactions commit in the order of
their numbers, and a transaction that rolls back never keeps numbers (its
counter update rolls back too). A reader therefore only ever sees a prefix
1..n of the sequence, never n+1 without n: unlike a SERIAL/IDENTITY column,
whose values are handed out at insert and become visible in commit order, which
is not their order. SQLite serialises writers anyway; PostgreSQL makes a
committed transaction visible before it releases its row locks, so the next
writer's numbers become visible after these. The cost is that event-writing
transactions serialise for their last few statements.

May import :mod:`oms.schema` and :mod:`oms.driver_sql` only (the database's write
transaction calls :func:`begin` and :func:`number_events`).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.driver_sql import Statement, execute, execute_many, fetch

FEED = "order_events"
_PENDING = "oms_unnumbered_events"

_INSERT = Statement.portable(
    "INSERT INTO order_events (order_id, at, type, detail, shipment_id, node_id)"
    " VALUES (:order_id, :at, :type, :detail, :shipment_id, :node_id) RETURNING event_id"
)
# SQLite only (see the module docstring): numbered at insert, the counter advanced at commit.
_INSERT_NUMBERED = Statement.portable(
    "INSERT INTO order_events (seq, order_id, at, type, detail, shipment_id, node_id)"
    " SELECT value + :k, :order_id, :at, :type, :detail, :shipment_id, :node_id"
    " FROM event_counter WHERE feed = :feed"
)
_ADVANCE = Statement.portable("UPDATE event_counter SET value = value + :n WHERE feed = :feed")
_TAKE_NUMBERS = Statement.portable(
    "UPDATE event_counter SET value = value + :n WHERE feed = :feed RETURNING value"
)
_NUMBER = Statement.portable("UPDATE order_events SET seq = :seq WHERE event_id = :event_id")
_COLUMNS = "seq, order_id, at, type, detail, shipment_id, node_id"
_AFTER = Statement.portable(
    f"SELECT {_COLUMNS} FROM order_events WHERE seq > :after ORDER BY seq LIMIT :limit"
)
_AFTER_OF_ORDER = Statement.portable(
    f"SELECT {_COLUMNS} FROM order_events WHERE order_id = :order_id AND seq > :after"
    " ORDER BY seq LIMIT :limit"
)
_AFTER_OF_NODE = Statement.portable(
    f"SELECT {_COLUMNS} FROM order_events WHERE node_id = :node_id AND seq > :after"
    " ORDER BY seq LIMIT :limit"
)


@dataclass(frozen=True)
class EventRow:
    sequence: int
    order_id: str
    at: float
    type: str
    detail: str
    shipment_id: str | None
    node_id: str | None


def begin(conn: Connection) -> None:
    """A write transaction starts: none of its events is numbered yet."""
    conn.info[_PENDING] = []


def add_event(
    conn: Connection,
    order_id: str,
    kind: str,
    detail: str,
    at: float,
    *,
    shipment_id: str | None = None,
    node_id: str | None = None,
) -> None:
    """Append an event in the caller's transaction; it is numbered at commit (SQLite: at
    insert, the counter advanced at commit)."""
    pending: list[int] = conn.info.setdefault(_PENDING, [])
    if conn.dialect.name == "sqlite":
        inserted = execute(
            conn,
            _INSERT_NUMBERED,
            k=len(pending) + 1,
            feed=FEED,
            order_id=order_id,
            at=at,
            type=kind,
            detail=detail,
            shipment_id=shipment_id,
            node_id=node_id,
        )
        if inserted != 1:  # no counter row: never drop an event silently
            raise RuntimeError(f"event_counter has no row for feed {FEED!r}")
        pending.append(0)  # counted only: its number is written already
        return
    ((event_id,),) = fetch(
        conn,
        _INSERT,
        order_id=order_id,
        at=at,
        type=kind,
        detail=detail,
        shipment_id=shipment_id,
        node_id=node_id,
    )
    pending.append(event_id)


def number_events(conn: Connection) -> None:
    """Number the transaction's events; call last before commit (see the module docstring)."""
    pending: list[int] = conn.info.pop(_PENDING, [])
    if not pending:
        return
    if conn.dialect.name == "sqlite":
        execute(conn, _ADVANCE, n=len(pending), feed=FEED)
        return
    (last,) = fetch(conn, _TAKE_NUMBERS, n=len(pending), feed=FEED)[0]
    first = int(last) - len(pending) + 1
    # In insertion order (event ids ascend within a transaction on both stores).
    execute_many(
        conn,
        _NUMBER,
        [{"seq": first + i, "event_id": e} for i, e in enumerate(pending)],
    )


def events_after(
    conn: Connection,
    after: int,
    limit: int,
    *,
    order_id: str | None = None,
    node_id: str | None = None,
) -> list[EventRow]:
    """Committed events with a sequence above ``after``, in sequence order."""
    if order_id is not None:
        rows = fetch(conn, _AFTER_OF_ORDER, order_id=order_id, after=after, limit=limit)
    elif node_id is not None:
        rows = fetch(conn, _AFTER_OF_NODE, node_id=node_id, after=after, limit=limit)
    else:
        rows = fetch(conn, _AFTER, after=after, limit=limit)
    return [
        EventRow(int(seq), oid, float(at), kind, detail, sid, nid)
        for seq, oid, at, kind, detail, sid, nid in rows
    ]


def last_sequence(conn: Connection) -> int:
    value = conn.execute(
        sa.select(t.event_counter.c.value).where(t.event_counter.c.feed == FEED)
    ).scalar()
    return int(value or 0)
