"""Quotes and checkout holds.

A quote stores the options it offered and holds no stock: browsing must never
make stock unpromisable (DESIGN section 4). A checkout hold is reservations
with an expiry (``quote_id`` and ``holder`` set), one live hold per quote,
capped per holder.

May import :mod:`oms.store.database`, ``stock``, ``records``, ``plans``, ``sql``,
:mod:`oms.schema`, :mod:`oms.driver_sql`, :mod:`oms.errors`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.driver_sql import Statement, execute, execute_many, fetch
from oms.errors import Cancelled, NotFound, QuotaExceeded
from oms.store.database import Database, utc_day
from oms.store.plans import Plan, QuoteRequest
from oms.store.records import Hold, QuoteRow, check_placeable, units_of
from oms.store.sql import DROP_QUOTE_HOLDS, NOT_QUOTE, insert_statement
from oms.store.stock import StockRepository

#: How often expired checkout holds are deleted (they stop counting at expiry; deleting
#: them keeps the per-position sums of live reservations short).
PURGE_EVERY_S = 5.0

_QUOTE_COLUMNS = tuple(c.name for c in t.quotes.columns)
_QUOTE_BY_ID = Statement.portable(
    f"SELECT {', '.join(_QUOTE_COLUMNS)} FROM quotes WHERE quote_id = :quote_id"
)
_INSERT_HOLDS = insert_statement(
    "reservations", ("node_id", "sku", "qty", "quote_id", "expires_at", "holder")
)
#: Live units a caller holds for checkouts other than ``quote_id`` (whose hold is replaced).
_HELD_BY = Statement.portable(
    "SELECT COALESCE(SUM(qty), 0) FROM reservations WHERE holder = :holder "
    f"AND order_id IS NULL AND expires_at > :now AND {NOT_QUOTE}"
)
#: One caller's holds are taken one at a time, so concurrent calls cannot pass its cap
#: together (SQLite serialises every writer anyway).
_LOCK_HOLDER = Statement(
    sqlite="SELECT 1", postgresql="SELECT pg_advisory_xact_lock(hashtext(%(holder)s))"
)
_LOCK_QUOTE = Statement.portable(
    "SELECT order_id, expires_at FROM quotes WHERE quote_id = :quote_id", for_update=True
)
_INSERT_QUOTE = insert_statement("quotes", _QUOTE_COLUMNS)
#: A quote is soft state (recomputed on demand, refused at PlaceOrder if lost): its commit
#: need not wait for the WAL flush (nor a checkout hold's, see hold_option). Measured: that
#: flush was the PostgreSQL backends' main wait under quote load (IO:WALSync +
#: LWLock:WALWrite, 0.84-0.94 of 1.02-1.14 active backends). SQLite's WAL with
#: synchronous=NORMAL already commits without a flush.
_QUOTE_COMMIT_WITHOUT_FLUSH = Statement(
    sqlite="SELECT 1", postgresql="SET LOCAL synchronous_commit TO off"
)


class QuoteRepository:
    """Quotes (their options, and the order that used one) and checkout holds."""

    def __init__(self, db: Database, stock: StockRepository) -> None:
        self.db = db
        self.stock = stock
        self._last_purge = 0.0

    def save(
        self,
        quote_id: str,
        request: QuoteRequest,
        options: Sequence[Plan],
        ttl_s: float,
        *,
        still_wanted: Callable[[], bool] = lambda: True,
    ) -> QuoteRow:
        """Store a quote and its options, placeable until it expires. It holds no stock:
        browsing must never make stock unpromisable (DESIGN section 4).

        ``still_wanted`` is asked once the write lock is held: a caller that has
        gone meanwhile gets nothing written (:class:`Cancelled`).
        """
        now = self.db.clock()
        with self.db.write() as conn:
            if not still_wanted():
                raise Cancelled("the caller went away before the quote was saved")
            row = {
                "quote_id": quote_id,
                "created_at": now,
                "expires_at": now + ttl_s,
                "quote_date": utc_day(now),
                "request_json": json.dumps(request.document(), separators=(",", ":")),
                "options_json": json.dumps([o.document() for o in options], separators=(",", ":")),
                "order_id": None,
            }
            if not self.db.is_sqlite:
                execute(conn, _QUOTE_COMMIT_WITHOUT_FLUSH)
            execute(conn, _INSERT_QUOTE, **row)
            self.purge_expired_holds(conn, now)
        return QuoteRow(quote_id, now, now + ttl_s, utc_day(now), request, tuple(options), None)

    # -- checkout holds -------------------------------------------------------------

    def hold_option(
        self,
        quote: QuoteRow,
        option: Plan,
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
        with self.db.write() as conn:
            fetch(conn, _LOCK_HOLDER, holder=holder)
            now = self.db.clock()
            locked = fetch(conn, _LOCK_QUOTE, quote_id=quote.quote_id)
            if not locked:
                raise NotFound("quote", quote.quote_id)
            used_by, expires_at = locked[0]
            check_placeable(quote.quote_id, used_by, float(expires_at), now)
            execute(conn, DROP_QUOTE_HOLDS, quote_id=quote.quote_id)
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
            free = self.stock.lock_free_units(conn, sorted(units), now, quote.quote_id)
            short = {k: free.get(k, 0) for k, qty in units.items() if qty > free.get(k, 0)}
            if short:
                return Hold({}, None, {k: (units[k], max(v, 0)) for k, v in sorted(short.items())})
            if not still_wanted():
                raise Cancelled("the caller went away before the hold was taken")
            if not self.db.is_sqlite:
                # Soft state too: a hold lost in a crash only leaves PlaceOrder to re-check
                # the stock, as it does anyway.
                execute(conn, _QUOTE_COMMIT_WITHOUT_FLUSH)
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
        with self.db.write() as conn:
            if not fetch(conn, _LOCK_QUOTE, quote_id=quote_id):
                raise NotFound("quote", quote_id)
            r = t.reservations
            live = conn.execute(
                sa.select(func.coalesce(func.sum(r.c.qty), 0)).where(
                    r.c.quote_id == quote_id,
                    r.c.order_id.is_(None),
                    r.c.expires_at > self.db.clock(),
                )
            ).scalar_one()
            execute(conn, DROP_QUOTE_HOLDS, quote_id=quote_id)
        return int(live)

    def get(self, conn: Connection, quote_id: str) -> QuoteRow:
        found = fetch(conn, _QUOTE_BY_ID, quote_id=quote_id)
        if not found:
            raise NotFound("quote", quote_id)
        row = dict(zip(_QUOTE_COLUMNS, found[0], strict=True))
        return QuoteRow(
            row["quote_id"],
            row["created_at"],
            row["expires_at"],
            row["quote_date"],
            QuoteRequest.from_document(json.loads(row["request_json"])),
            tuple(Plan.from_document(o) for o in json.loads(row["options_json"])),
            row["order_id"],
        )

    def purge_expired_holds(self, conn: Connection, now: float) -> None:
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
