"""The dashboard's shared figures: what N open tabs or a poll storm cost the store.

Unit level (:class:`oms.dashboard.figures.SharedFigures` with a hand-moved clock
and a counting mark): concurrent requests for one fragment at one mark compute
it once; within the refresh interval nothing is recomputed, whatever the mark;
past it, figures from before a change of the mark are never served, and figures
at an unchanged mark live at most ``unchanged_s``; a random walk of changes and
requests checks that no served figure misses a change older than the interval.

Served (SQLite and PostgreSQL): 12 concurrent requests for a fragment and 12
for ``/api/changes`` run the fragment's query and the mark's query once; a stock
change shows once the interval has passed, with the "as of" time on the page;
the dashboard's PostgreSQL transactions are read-only with a statement timeout,
whether it runs over its own store (its process) or over one it was handed.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from starlette.testclient import TestClient

from dashboard_support import VIEWER, config, dashboard_server
from oms import schema as t
from oms.dashboard import pages, views
from oms.dashboard.app import create_app
from oms.dashboard.figures import SharedFigures
from oms.dashboard.site import STATEMENT_TIMEOUT_MS, dashboard_read, dashboard_store
from oms.store import Store

from service_support import hand_network
from support import spy

try:  # the dev extra installs httpx2 (Starlette's TestClient transport)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

REFRESH = 5.0
UNCHANGED = 30.0


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Mark:
    """A change mark that counts its reads."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self.reads += 1
            return str(self.value)


def counting(values: Callable[[], Any]) -> tuple[Callable[[], Any], list[int]]:
    calls = [0]

    def compute() -> Any:
        calls[0] += 1
        return values()

    return compute, calls


def figures(
    clock: Clock, mark: Mark, refresh: float = REFRESH, unchanged: float = UNCHANGED
) -> SharedFigures:
    return SharedFigures(mark, refresh_s=refresh, unchanged_s=unchanged, clock=clock)


def test_concurrent_requests_at_one_mark_compute_once() -> None:
    mark, started = Mark(), threading.Barrier(16)
    shared = figures(Clock(), mark)
    release = threading.Event()

    def slow() -> object:
        release.wait(5)  # every other request arrives while this one computes
        return object()

    compute, calls = counting(slow)

    def request(_: int) -> object:
        started.wait(5)
        return shared.get(("alerts",), compute).value

    with ThreadPoolExecutor(16) as pool:
        results = [pool.submit(request, i) for i in range(16)]
        threading.Timer(0.3, release.set).start()
        values = [r.result(10) for r in results]
    assert calls == [1]
    assert all(v is values[0] for v in values)
    assert mark.reads <= 1
    # Another key is its own figure.
    shared.get(("alerts", "other"), compute)
    assert calls == [2]


def test_within_the_interval_nothing_is_recomputed_past_it_a_moved_mark_is() -> None:
    clock, mark = Clock(), Mark()
    shared = figures(clock, mark)
    compute, calls = counting(lambda: mark.value)
    first = shared.get("k", compute)
    assert (first.value, first.as_of) == (0, clock.now)
    mark.value = 1  # the store moved
    clock.now += REFRESH - 0.01
    assert shared.get("k", compute).value == 0  # at most REFRESH old
    assert calls == [1]
    clock.now += 0.01  # the interval has passed: the moved mark is seen, figures recomputed
    again = shared.get("k", compute)
    assert (again.value, again.as_of, calls) == (1, clock.now, [2])


def test_an_unchanged_mark_keeps_figures_until_unchanged_s() -> None:
    clock, mark = Clock(), Mark()
    shared = figures(clock, mark)
    compute, calls = counting(lambda: mark.value)
    start = clock.now
    shared.get("k", compute)
    for step in range(1, 6):  # past the interval: one mark read per interval, no recompute
        clock.now = start + step * REFRESH + 0.5
        assert shared.get("k", compute).as_of == start
    assert calls == [1]
    clock.now = start + UNCHANGED  # the clock-dependent parts (today, late) are due
    assert shared.get("k", compute).as_of == clock.now
    assert calls == [2]


def test_the_mark_is_read_once_per_interval() -> None:
    clock, mark = Clock(), Mark()
    shared = figures(clock, mark)
    for _ in range(50):
        assert shared.mark()[0] == "0"
    assert mark.reads == 1
    mark.value = 7
    clock.now += REFRESH
    assert [shared.mark()[0] for _ in range(50)] == ["7"] * 50
    assert mark.reads == 2


def test_no_served_figure_misses_a_change_older_than_the_interval() -> None:
    """A random walk: the store changes, requests come, time moves. Whatever is served
    includes every change made more than REFRESH ago, and was computed less than
    UNCHANGED ago."""
    rng = random.Random(17)
    clock, mark = Clock(), Mark()
    shared = figures(clock, mark)
    changed_at = [clock.now]  # changed_at[v]: when the store reached version v
    computed: dict[int, float] = {}

    def compute() -> tuple[int, float]:
        computed[mark.value] = clock.now
        return mark.value, clock.now

    for _ in range(3000):
        clock.now += rng.choice((0.1, 0.5, 1.0, 2.0, 4.9, 5.0, 7.0, 12.0))
        if rng.random() < 0.3:
            mark.value += 1
            changed_at.append(clock.now)
        version, at = shared.get(rng.choice("ab"), compute).value
        newest_due = max(v for v, when in enumerate(changed_at) if when <= clock.now - REFRESH)
        assert version >= newest_due
        assert clock.now - at < UNCHANGED
    assert len(computed) > 100


def test_a_failed_computation_is_not_kept() -> None:
    shared = figures(Clock(), Mark())

    def fail() -> int:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError):
        shared.get("k", fail)
    assert shared.get("k", lambda: 3).value == 3


def test_without_an_interval_every_request_computes_and_no_mark_is_read() -> None:
    mark = Mark()
    shared = figures(Clock(), mark, refresh=0.0, unchanged=0.0)
    compute, calls = counting(lambda: 1)
    for _ in range(5):
        shared.get("k", compute)
    assert (calls, mark.reads) == ([5], 0)


def test_the_number_of_kept_figures_is_bounded() -> None:
    shared = SharedFigures(Mark(), refresh_s=REFRESH, unchanged_s=UNCHANGED, capacity=8)
    for i in range(100):
        shared.get(("orders", str(i)), lambda n=i: n)
    assert len(shared) == 8


# -- served --------------------------------------------------------------------------


def test_a_poll_storm_runs_each_query_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(database_url, pool_size=2)
    store.migrate()
    store.load_network(hand_network({("DC-NJ", "B"): 40}))
    store.dispose()
    alerts = spy(monkeypatch, pages.views, "low_stock")
    marks = spy(monkeypatch, pages.views, "change_mark")
    with dashboard_server(database_url, refresh_s=REFRESH, unchanged_s=UNCHANGED) as base:
        tabs = []
        for _ in range(4):  # sessions of their own: the figures are shared between them
            tab = httpx.Client(base_url=base, timeout=30)
            assert tab.get("/login", params={"token": VIEWER}).status_code in (200, 303)
            tabs.append(tab)
        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(lambda i: tabs[i % 4].get("/fragments/alerts"), range(12)))
            polls = list(pool.map(lambda i: tabs[i % 4].get("/api/changes"), range(12)))
        assert {r.status_code for r in replies + polls} == {200}
        assert len({r.text for r in replies}) == 1
        assert len({r.json()["mark"] for r in polls}) == 1
        for tab in tabs:
            tab.close()
    assert alerts == [1]
    # Read once, before the fragment's figures, and shared with every /api/changes.
    assert marks == [1]


def test_a_stock_change_shows_once_the_interval_has_passed(database_url: str) -> None:
    store = Store(database_url, pool_size=2)
    store.migrate()
    store.load_network(hand_network({("DC-NJ", "B"): 40}))
    clock = Clock(1_800_000_000.0)  # 2027-01-15 08:00:00 UTC
    app = create_app(
        config(database_url, refresh_s=REFRESH, unchanged_s=UNCHANGED), store, clock=clock
    )
    try:
        with TestClient(app, follow_redirects=False) as client:
            client.get("/login", params={"token": VIEWER})
            before = client.get("/fragments/alerts").text
            assert "DC-NJ" not in before
            assert '<time datetime="2027-01-15T08:00:00Z">08:00:00 UTC</time>' in before
            store.set_stock("DC-NJ", "B", 2, 0, 5, reason="count")  # low: 2 <= 5
            clock.now += REFRESH - 1
            assert client.get("/fragments/alerts").text == before  # within the interval
            clock.now += 1
            after = client.get("/fragments/alerts").text
            assert "DC-NJ" in after
            assert "08:00:05 UTC" in after
            # The stock page's other parts, computed now, show the same time.
            page = client.get("/stock").text
            assert page.count("08:00:05 UTC") >= 4
    finally:
        store.dispose()


def read_only_and_timeout(store: Store, read: Callable[[], Any]) -> None:
    with read() as conn:
        settings = conn.exec_driver_sql(
            "SELECT current_setting('transaction_read_only'), current_setting('statement_timeout')"
        ).one()
    assert settings == ("on", f"{STATEMENT_TIMEOUT_MS // 1000}s")
    with pytest.raises(DBAPIError, match="read-only transaction"), read() as conn:
        conn.execute(sa.update(t.stock).values(on_hand=0))
    with pytest.raises(DBAPIError, match="read-only transaction"), read() as conn:
        conn.exec_driver_sql("CREATE TABLE dashboard_wrote_this (x integer)")


def test_the_dashboards_postgresql_sessions_are_read_only_with_a_timeout(pg_url: str) -> None:
    writer = Store(pg_url, pool_size=2)
    writer.migrate()
    writer.load_network(hand_network({("DC-NJ", "B"): 40}))
    own = dashboard_store(pg_url)
    try:
        # Its own process's store: read-only and bounded by the session's settings.
        read_only_and_timeout(own, own.read)
        # Over a store it was handed (in-process, as the tests run it): per transaction.
        site = create_app(config(pg_url), writer).state.site
        read_only_and_timeout(writer, site.read)
        # The writer's own transactions are untouched.
        writer.set_stock("DC-NJ", "B", 39, 0, 0, reason="count")
        with site.read() as conn:
            on_hand = sa.select(t.stock.c.on_hand).where(
                t.stock.c.node_id == "DC-NJ", t.stock.c.sku == "B"
            )
            assert conn.execute(on_hand).scalar_one() == 39
    finally:
        own.dispose()
        writer.dispose()


def test_the_dashboards_own_sqlite_store_cannot_write(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'oms.db'}"
    writer = Store(url, pool_size=2)
    writer.migrate()
    writer.load_network(hand_network({("DC-NJ", "B"): 40}))
    own = dashboard_store(url)
    try:
        with pytest.raises(Exception) as refused, own.read() as conn:
            conn.execute(sa.update(t.stock).values(on_hand=0))
        assert "readonly" in f"{refused.value} {refused.value.__cause__}"
        with own.read() as conn:
            on_hand = sa.select(t.stock.c.on_hand).where(
                t.stock.c.node_id == "DC-NJ", t.stock.c.sku == "B"
            )
            assert conn.execute(on_hand).scalar_one() == 40
    finally:
        own.dispose()
        writer.dispose()


def test_the_change_mark_follows_stock_settings_without_reading_stock(database_url: str) -> None:
    store = Store(database_url, pool_size=2)
    store.migrate()
    store.load_network(hand_network({("DC-NJ", "B"): 40}))
    try:

        def mark() -> str:
            with dashboard_read(store) as conn:
                return views.change_mark(conn)

        before = mark()
        store.set_stock("DC-NJ", "B", 40, 0, 5, reason="threshold")  # settings only: no ledger
        moved = mark()
        assert moved != before
        store.set_stock("DC-NJ", "B", 40, 0, 5, reason="the same again")
        assert mark() == moved
        store.set_stock("DC-NJ", "B", 40, 3, 5, reason="safety stock")
        assert mark() != moved
        if not store.is_sqlite:  # index lookups: no stock position is read
            with store.read() as conn:
                sql = views.MARK_QUERY.compile(conn, compile_kwargs={"literal_binds": True})
                plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}"))
            assert " on stock " not in plan, plan
    finally:
        store.dispose()


def test_the_change_mark_moves_when_a_smaller_id_commits_late(pg_url: str) -> None:
    """Ids follow insert order, not commit order: on PostgreSQL a transaction holding a
    smaller event (and ledger) id may commit after a mark was read that already shows a
    bigger one. The mark must still move when it commits (the events' ``seq`` does)."""
    store = Store(pg_url, pool_size=3)
    store.migrate()
    store.load_network(hand_network({("DC-NJ", "A"): 40, ("DC-NJ", "B"): 40}))
    with store.write() as conn:
        for order_id in ("o-early", "o-late"):
            conn.execute(
                sa.insert(t.orders).values(
                    order_id=order_id,
                    quote_id="q",
                    option_id="opt-1",
                    idempotency_key=order_id,
                    state="DELIVERED",
                    dest_lat=40.7,
                    dest_lon=-74.0,
                    lines_json="[]",
                    allocation_json="{}",
                    promised_date="2030-01-05",
                    created_at=0.0,
                    updated_at=0.0,
                    version=1,
                )
            )

    def mark() -> str:
        with dashboard_read(store) as conn:
            return views.change_mark(conn)

    def a_return(conn: Any, order_id: str, sku: str) -> None:  # order-driven: ledger and event
        store.stock.ledger(conn, "DC-NJ", sku, 1, "return", order_id)
        store.add_event(conn, order_id, "returned", "1 unit back at DC-NJ")

    try:
        with store.write() as late:
            a_return(late, "o-late", "B")  # the smaller ids, committed last
            with store.write() as early:
                a_return(early, "o-early", "A")
            seen = mark()  # shows the early commit's bigger ids
            assert mark() == seen
        assert mark() != seen, "a late commit of smaller ids left the mark unchanged"
    finally:
        store.dispose()
