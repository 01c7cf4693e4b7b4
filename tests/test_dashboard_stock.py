"""The stock page's positions on SQLite and PostgreSQL: a page of positions (its keys first,
then their figures) reports what the service's availability does, and the low-stock filter
(every position's figures aggregated at once) keeps exactly the low ones, most short first."""

from __future__ import annotations

import time

from oms.dashboard import views

from service_support import hand_network, running_server


def place(client, lines: dict[str, int]) -> str:  # type: ignore[no-untyped-def]
    quote = client.quote(lines)
    return str(client.place(quote.quote_id, quote.options[0].option_id).order.order_id)


def test_positions_pages_and_the_low_filter_agree_with_availability(database_url: str) -> None:
    with running_server(database_url, hand_network()) as client:
        place(client, {"A": 2, "B": 1})
        place(client, {"B": 3})
        store = client.store
        store.set_stock("ST-PHL", "A", 5, 1, 4, reason="threshold")
        store.set_stock("DC-NJ", "B", 5, 0, 6, reason="threshold")
        store.set_stock("DC-CHI", "A", 50, 2, 3, reason="threshold (not low)")
        now = time.time()
        with store.read() as conn:
            service = {(a.node_id, a.sku): a for a in store.positions(conn)}
            pages = [views.positions(conn, now, offset=o, limit=2) for o in (0, 2, 4)]
            low = views.positions(conn, now, low_only=True)
            searched = views.positions(conn, now, search="NJ")
        shown = [p for page in pages for p in page.rows]
        assert [(p.node_id, p.sku) for p in shown] == sorted(service)
        assert all(page.total == len(service) for page in pages)
        assert pages[-1].next_offset is None and pages[0].next_offset == 2
        for p in shown:
            a = service[(p.node_id, p.sku)]
            assert (p.on_hand, p.safety_stock, p.reserved, p.held, p.low_stock_threshold) == (
                a.on_hand,
                a.safety_stock,
                a.reserved,
                a.held,
                a.low_stock_threshold,
            )
        assert sum(p.reserved for p in shown) == 6  # the two orders' units
        expected_low = sorted(
            (p for p in shown if p.is_low),
            key=lambda p: (p.projected - p.low_stock_threshold, p.node_id, p.sku),
        )
        assert low.rows == expected_low and low.total == len(expected_low) > 0
        assert [(p.node_id, p.sku) for p in searched.rows] == [("DC-NJ", "A"), ("DC-NJ", "B")]
