"""The dashboard in a real headless Chromium (Debian's), driven by Playwright, on SQLite and
PostgreSQL: sign in, the overview's figures against the store's rows, an order placed over
gRPC found and opened, a low-stock alert arriving without a reload, HTML shown as text.

Screenshots of every page land in ``test-artifacts/dashboard/`` (not committed).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dashboard_support import VIEWER, dashboard_server, expected_today
from oms import schema as t
from oms.v1 import fulfilment_pb2, inventory_pb2

from service_support import ADMIN, Client, hand_network, running_server

CHROMIUM = os.environ.get("OMS_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM} (apt-get install -y chromium; .ci/run installs it)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def place(client: Client, lines: dict[str, int], label: str | None = None) -> str:
    quote = client.quote(lines)
    option = quote.options[0]
    if label is not None:
        option = next(o for o in quote.options if label in o.labels)
    return client.place(quote.quote_id, option.option_id).order.order_id


def kpi(page: Any, name: str) -> str:
    return str(page.locator(f'[data-kpi="{name}"]').first.inner_text()).strip()


def money(text: str) -> float:
    return float(text.replace("$", "").replace(",", "").replace("−", "-"))


def test_the_dashboard_in_a_browser(database_url: str, browser: Any) -> None:
    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    network = hand_network({("ST-PHL", "B"): 3, ("DC-CHI", "A"): 2})
    # Figures shared by every page as in production, over a short interval: each change
    # below must reach the open page through it (the default is 5 s).
    shared = {"refresh_s": 1.0, "unchanged_s": 30.0}
    ahead = [0.0]  # the dashboard's clock runs ahead by this much: late shipments at the end
    with (
        running_server(database_url, network) as client,
        dashboard_server(database_url, clock=lambda: time.time() + ahead[0], **shared) as base,
    ):
        # Orders through the real checkout over gRPC on loopback: a single-parcel order, a
        # split (7 A: no node has them all), one delivered, one cancelled with HTML in its reason,
        # and a quote left unordered.
        first = place(client, {"A": 1, "B": 1})
        split = place(client, {"A": 7})
        delivered = place(client, {"B": 2})
        cancelled = place(client, {"A": 1})
        client.quote({"B": 1})
        for call, request in (
            ("ReleaseOrder", fulfilment_pb2.ReleaseOrderRequest),
            ("ConfirmShipment", fulfilment_pb2.ConfirmShipmentRequest),
            ("ConfirmDelivery", fulfilment_pb2.ConfirmDeliveryRequest),
        ):
            getattr(client.fulfilment, call)(
                request(order_id=delivered), metadata=ADMIN, timeout=10
            )
        from oms.v1 import checkout_pb2

        evil_reason = "<script>window.__pwned=1</script><b>bold</b>"
        client.checkout.CancelOrder(
            checkout_pb2.CancelOrderRequest(order_id=cancelled, reason=evil_reason), timeout=10
        )

        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))

        # Signed out: every page sends you to sign in; a wrong token is refused.
        page.goto(base + "/orders")
        assert page.url.startswith(base + "/login?next=")
        page.fill("#token", "not-the-token")
        page.click("button[type=submit]")
        assert page.locator(".error").inner_text() == "That token is not valid."
        page.screenshot(path=str(ARTIFACTS / f"{backend}-login.png"))
        page.fill("#token", VIEWER)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/orders")
        problems.clear()  # the refused sign-in's 401 was the point; from here on, nothing

        # Overview, today: every figure equals the one computed from the store's rows.
        page.goto(base + "/?period=today")
        expected = expected_today(client.store, time.time())
        assert int(kpi(page, "orders")) == expected.orders == 4
        for state, count in expected.by_state.items():
            assert int(kpi(page, f"state-{state}")) == count
        assert money(kpi(page, "cost")) == pytest.approx(expected.cost, abs=0.005)
        assert money(kpi(page, "shipping")) == pytest.approx(expected.shipping, abs=0.005)
        assert money(kpi(page, "handling")) == pytest.approx(expected.handling, abs=0.005)
        assert -money(kpi(page, "storage-credit")) == pytest.approx(
            expected.storage_credit, abs=0.005
        )
        assert float(kpi(page, "parcels")) == pytest.approx(expected.parcels, abs=0.005)
        assert float(kpi(page, "split-rate").rstrip("%")) == pytest.approx(
            100 * expected.split_rate, abs=0.05
        )
        assert expected.split_rate > 0  # the 7 A order is split
        for label, count in expected.labels.items():
            assert int(kpi(page, f"label-{label}")) == count
        assert int(kpi(page, "quotes")) == expected.quotes == 5
        assert float(kpi(page, "conversion").rstrip("%")) == pytest.approx(
            100 * expected.orders / expected.quotes, abs=0.05
        )
        assert int(kpi(page, "delivered")) == expected.delivered == 1
        assert int(kpi(page, "kept")) == expected.kept == 1
        assert int(kpi(page, "attention")) == 0
        page.wait_for_function("document.querySelectorAll('canvas[data-chart]').length === 8")
        # When the (shared) figures were read, to the second, in UTC.
        as_of = page.locator("#overview-body .as-of time")
        read_at = datetime.fromisoformat(str(as_of.get_attribute("datetime")))
        assert abs(read_at.timestamp() - time.time()) < 30
        assert as_of.inner_text() == read_at.strftime("%H:%M:%S UTC")
        page.screenshot(path=str(ARTIFACTS / f"{backend}-overview.png"), full_page=True)

        # Quotes alone: the conversion card follows them without a reload, and nothing else
        # on the page is fetched again (the change mark did not move).
        fetched: list[str] = []
        page.on("request", lambda r: fetched.append(r.url) if "/fragments/" in r.url else None)
        page.evaluate("document.querySelector('[data-kpi=orders]').dataset.kept = '1'")
        waited = time.monotonic()
        for _ in range(3):
            client.quote({"A": 1})
        page.locator('[data-kpi="quotes"]', has_text=str(expected.quotes + 3)).wait_for(
            timeout=15_000
        )
        assert float(kpi(page, "conversion").rstrip("%")) == pytest.approx(
            100 * expected.orders / (expected.quotes + 3), abs=0.05
        )
        assert any("/fragments/conversion?period=today" in url for url in fetched), fetched
        if time.monotonic() - waited < 20:  # before the page's forced refresh (every 30 s)
            assert not any("/fragments/overview" in url for url in fetched), fetched
            assert page.evaluate("document.querySelector('[data-kpi=orders]').dataset.kept")
        page.wait_for_function("document.querySelectorAll('canvas[data-chart]').length === 8")

        # Orders: search the split order by id, open it, see its parcels and its timeline.
        page.click("nav[aria-label=Pages] >> text=Orders")
        page.fill("#f-order", split)
        page.click("form.search button[type=submit]")
        rows = page.locator("table[data-table=orders] tbody tr")
        rows.first.wait_for()
        page.wait_for_function(
            "n => document.querySelectorAll('table[data-table=orders] tbody tr').length === n",
            arg=1,
        )
        page.screenshot(path=str(ARTIFACTS / f"{backend}-orders.png"), full_page=True)
        page.click(f"text={split}")
        page.wait_for_url(f"{base}/orders/{split}")
        assert page.locator('[data-field="order-id"]').inner_text() == split
        parcels = page.locator("table[data-table=parcels] tbody tr")
        assert parcels.count() == 2
        nodes = {parcels.nth(i).locator("td").nth(1).inner_text() for i in range(2)}
        assert "DC-NJ" in nodes and len(nodes) == 2
        events = page.locator("ol[data-list=events] li")
        assert events.count() >= 1 and "placed" in events.first.inner_text()
        menu = page.locator("table[data-table=menu] tbody tr.chosen")
        assert menu.count() == 1
        page.screenshot(path=str(ARTIFACTS / f"{backend}-order.png"), full_page=True)

        # Its shipments: one a parcel. Released, DC-NJ confirms its shipment with a carrier and
        # tracking number over gRPC; the open page shows them without a reload (the feed's
        # event moves the change mark), and the order is PARTIALLY_SHIPPED.
        shipments = page.locator("table[data-table=shipments] tbody tr")
        assert shipments.count() == 2
        assert not any(
            page.locator("table[data-table=shipments] [data-cell=tracking]").all_inner_texts()
        )
        nj = page.locator("table[data-table=shipments] tbody tr", has_text="DC-NJ")
        shipment_id = nj.get_attribute("data-shipment")
        assert shipment_id
        tracking = f"1Z-{uuid.uuid4().hex[:10]}"
        page.evaluate("window.__same_page = true")
        client.fulfilment.ReleaseOrder(
            fulfilment_pb2.ReleaseOrderRequest(order_id=split), metadata=ADMIN, timeout=10
        )
        client.fulfilment.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(
                shipment_id=shipment_id, carrier="UPS", tracking_number=tracking
            ),
            metadata=ADMIN,
            timeout=10,
        )
        page.locator(
            f'tr[data-shipment="{shipment_id}"] [data-cell=tracking]', has_text=tracking
        ).wait_for(timeout=15_000)
        assert page.evaluate("window.__same_page === true")
        row = page.locator(f'table[data-table=shipments] tr[data-shipment="{shipment_id}"]')
        assert row.locator("[data-cell=carrier]").inner_text() == "UPS"
        assert row.locator("[data-cell=state]").inner_text().startswith("SHIPPED")
        assert row.locator("[data-cell=shipped]").inner_text().strip()
        assert page.locator('[data-field="state"]').inner_text().startswith("PARTIALLY_SHIPPED")
        page.screenshot(path=str(ARTIFACTS / f"{backend}-order-shipped.png"), full_page=True)

        # The cancelled order's reason, HTML and all, is shown as text and never runs.
        page.goto(f"{base}/orders/{cancelled}")
        timeline = page.locator("ol[data-list=events]").inner_text()
        assert evil_reason in timeline
        assert page.locator("ol[data-list=events] b").count() == 0
        assert page.evaluate("window.__pwned === undefined")

        # Stock: no alert at DC-CHI/B yet; a count drops it below its threshold, and the
        # alert appears without a reload (the page keeps a marker a reload would lose).
        page.goto(base + "/stock")
        alerts = page.locator("table[data-table=alerts] tbody")
        assert "DC-CHI" not in (alerts.inner_text() if alerts.count() else "")
        page.evaluate("window.__still_here = true")
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(
                node_id="DC-CHI",
                sku="B",
                on_hand=4,
                safety_stock=0,
                low_stock_threshold=10,
                reason=f"cycle count {uuid.uuid4().hex[:6]}",
            ),
            metadata=ADMIN,
            timeout=10,
        )
        page.locator("table[data-table=alerts] tbody tr", has_text="DC-CHI").wait_for(
            timeout=15_000
        )
        assert page.evaluate("window.__still_here === true")
        row = page.locator("table[data-table=alerts] tbody tr", has_text="DC-CHI")
        assert "B" in row.inner_text() and "10" in row.inner_text()
        page.screenshot(path=str(ARTIFACTS / f"{backend}-stock.png"), full_page=True)

        # Ten days on (the dashboard's clock), the shipments still at their nodes are late:
        # the overview counts them as the store does, lists them, and a row opens its order.
        ahead[0] = 10 * 86_400
        today = time.strftime("%Y-%m-%d", time.gmtime(time.time() + ahead[0]))
        with client.store.read() as conn:
            late = conn.execute(
                sa.select(t.shipments.c.shipment_id, t.shipments.c.order_id).where(
                    t.shipments.c.state.in_(("PENDING", "REQUESTED", "ACCEPTED")),
                    t.shipments.c.planned_dispatch < today,
                )
            ).all()
        assert split in {order_id for _, order_id in late}
        page.goto(base + "/?period=7d")
        assert int(kpi(page, "late-shipments")) == len(late)
        assert int(kpi(page, "at-risk")) == len({order_id for _, order_id in late})
        split_late = next(sid for sid, order_id in late if order_id == split)
        page.screenshot(path=str(ARTIFACTS / f"{backend}-overview-late.png"), full_page=True)
        page.click(f'table[data-table=late] tr[data-shipment="{split_late}"] a')
        page.wait_for_url(f"{base}/orders/{split}")
        late_row = page.locator(f'table[data-table=shipments] tr[data-shipment="{split_late}"]')
        assert "late" in late_row.locator("[data-cell=state]").inner_text()

        # A tablet sees the same pages (no horizontal scroll on the overview).
        tablet = browser.new_context(viewport={"width": 820, "height": 1180}, has_touch=True)
        tab = tablet.new_page()
        tab.goto(f"{base}/login?token={VIEWER}")
        tab.goto(base + "/?period=today")
        assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        tab.screenshot(path=str(ARTIFACTS / f"{backend}-overview-tablet.png"), full_page=True)
        tablet.close()
        context.close()
        assert first
        assert not problems, problems  # no CSP violation, script error or dialog
