"""Checkout holds in the store: expired ones stop counting at once and are deleted later."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from oms import schema
from oms.store import PURGE_EVERY_S, CartLine, Plan, PlanLine, PlannedParcel, QuoteRequest, Store

from service_support import hand_network, sqlite_url


def _option(qty: int) -> Plan:
    parcel = PlannedParcel(
        "DC-NJ", "ground", "Z1", 0.0, 0, 0, 0, 0, 0, 1, None, (PlanLine(0, "A", qty),)
    )
    return Plan("opt-1", (), 0, 0, 0, 0, None, 1, "OPTIMAL", 0.0, "test", None, (parcel,))


def test_expired_holds_stop_counting_then_are_purged(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = Store(sqlite_url(tmp_path), clock=lambda: now[0])
    store.migrate()
    store.load_network(hand_network())

    def hold(quote_id: str, qty: int) -> None:
        asked = QuoteRequest(0.0, 0.0, (CartLine("A", qty),))
        quote = store.save_quote(quote_id, asked, [_option(qty)], ttl_s=900.0)
        kept = store.hold_option(
            quote, _option(qty), holder="anon:test", holder_name="test", cap=10, ttl_s=5.0
        )
        assert kept.units == {("DC-NJ", "A"): qty} and kept.expires_at == now[0] + 5.0

    def holds() -> list[tuple[str, int]]:
        with store.read() as conn:
            r = schema.reservations
            return [(q, int(n)) for q, n in conn.execute(sa.select(r.c.quote_id, r.c.qty))]

    def held() -> int:
        with store.read() as conn:
            return store.positions(conn, ["A"], ["DC-NJ"])[0].held

    hold("q1", 3)
    assert holds() == [("q1", 3)] and held() == 3
    now[0] += 6.0  # expired: ignored by availability, still stored
    assert held() == 0 and holds() == [("q1", 3)]
    now[0] += 2 * PURGE_EVERY_S  # the next quote's transaction deletes it
    hold("q2", 1)
    assert holds() == [("q2", 1)]
    store.dispose()
