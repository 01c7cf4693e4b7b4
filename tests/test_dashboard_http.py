"""The dashboard over HTTP (Starlette's test client, a real store): who may see what,
the headers every response carries, escaping, bad query parameters, and its settings.

The browser tests (``test_dashboard_browser.py``) check what a person sees.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from dashboard_support import ADMIN_DASH, VIEWER, config
from oms import schema as t
from oms.dashboard.app import create_app
from oms.dashboard.auth import CONTENT_SECURITY_POLICY, SESSION_COOKIE
from oms.dashboard.config import ConfigError, resolve
from oms.store import Store
from oms.v1 import fulfilment_pb2, inventory_pb2

from service_support import ADMIN, hand_network, prepared_store, running_server

#: Every page, fragment and data endpoint (a made-up order id where one is needed).
GUARDED = (
    "/",
    "/?period=30d",
    "/stock",
    "/stock?q=DC&low=1",
    "/orders",
    "/orders?sku=A",
    "/orders/o_missing",
    "/fragments/overview?period=today",
    "/fragments/conversion?period=7d",
    "/fragments/stock-table",
    "/fragments/alerts",
    "/fragments/receipts",
    "/fragments/nodes",
    "/fragments/orders",
    "/fragments/order/o_missing",
    "/api/overview",
    "/api/changes",
    "/no/such/page",
)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = prepared_store(database_url, hand_network())
    try:
        yield store
    finally:
        store.dispose()


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(config(store.url), store), follow_redirects=False) as c:
        yield c


def sign_in(client: TestClient, token: str = VIEWER) -> None:
    reply = client.get("/login", params={"token": token})
    assert reply.status_code == 303, reply.text


@pytest.mark.parametrize("path", GUARDED)
def test_nothing_is_visible_without_a_session(client: TestClient, path: str) -> None:
    reply = client.get(path)
    if path.startswith(("/api/", "/fragments/")):
        assert reply.status_code == 401
    else:
        assert reply.status_code == 303
        assert reply.headers["location"].startswith("/login?next=")
    assert "DC-NJ" not in reply.text
    # htmx asks for fragments of pages too: it gets 401, never a login page to swap in.
    assert client.get(path, headers={"HX-Request": "true"}).status_code == 401


def test_a_wrong_token_is_refused_and_sets_no_session(client: TestClient) -> None:
    for token in ("wrong", VIEWER + "x", VIEWER[:-1], "x" * 10_000):
        reply = client.post("/login", data={"token": token, "next": "/"})
        assert reply.status_code == 401
        assert "That token is not valid." in reply.text
        assert "set-cookie" not in reply.headers
    assert client.get("/api/changes").status_code == 401
    assert client.get("/login", params={"token": "nope"}).status_code == 401


@pytest.mark.parametrize("token,role", [(VIEWER, "viewer"), (ADMIN_DASH, "admin")])
def test_viewer_and_admin_tokens_open_a_signed_httponly_session(
    client: TestClient, token: str, role: str
) -> None:
    reply = client.post("/login", data={"token": token, "next": "/stock?q=A"})
    assert reply.status_code == 303
    assert reply.headers["location"] == "/stock?q=A"
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    page = client.get("/stock?q=A")
    assert page.status_code == 200 and "DC-NJ" in page.text and f">{role}<" in page.text
    # The cookie is signed: a tampered one is no session.
    value = client.cookies.get("oms_dashboard")
    assert value
    # (Changed in the signed payload: the signature's last base64 digit carries spare bits.)
    tampered = ("B" if value[0] != "B" else "C") + value[1:]
    client.cookies.clear()
    client.cookies.set("oms_dashboard", tampered)
    assert client.get("/api/changes").status_code == 401
    client.cookies.clear()
    client.cookies.set("oms_dashboard", value)
    assert client.get("/api/changes").status_code == 200


def test_login_only_returns_to_this_site(client: TestClient) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil", "javascript:x"):
        reply = client.post("/login", data={"token": VIEWER, "next": target})
        assert reply.headers["location"] == "/"


def test_sign_out_ends_the_session(client: TestClient) -> None:
    sign_in(client)
    assert client.get("/api/changes").status_code == 200
    assert client.post("/logout").status_code == 303
    assert client.get("/api/changes").status_code == 401


def test_every_response_carries_the_security_headers(client: TestClient) -> None:
    replies = [client.get("/login"), client.get("/api/changes"), client.get("/static/dashboard.js")]
    sign_in(client)
    replies += [client.get(p) for p in ("/", "/stock", "/orders", "/api/overview")]
    for reply in replies:
        assert reply.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["x-frame-options"] == "DENY"
        assert reply.headers["referrer-policy"] == "no-referrer"
    csp = CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp
    for page in replies[3:6]:
        assert page.headers["cache-control"] == "no-store"
        # No inline script that runs, no inline style: only data blocks and files from /static.
        for tag in re.findall(r"<script[^>]*>", page.text):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, tag
        assert "<style" not in page.text and " style=" not in page.text
        assert "http://" not in page.text.replace("http://127.0.0.1", "")  # nothing off-site


def test_html_in_a_sku_or_a_reason_is_shown_as_text(store: Store, client: TestClient) -> None:
    evil = '<script>alert("sku")</script>'
    store.upsert_skus([{"sku": evil, "weight_g": 100, "daily_demand": 1.0}])
    store.set_stock("DC-NJ", evil, 3, 0, 5, reason="<img src=x onerror=alert(1)>")
    sign_in(client)
    for path in ("/stock", "/stock?low=1", "/fragments/alerts", "/orders?sku=" + evil):
        page = client.get(path, params=None)
        assert page.status_code == 200
        assert "<script>alert" not in page.text
        if path != "/orders?sku=" + evil:
            assert "&lt;script&gt;alert(&#34;sku&#34;)&lt;/script&gt;" in page.text


class ShipmentRows(HTMLParser):
    """The order page's shipments table: per row, its ``data-cell`` texts (entities decoded,
    so a value equals the stored string exactly when it was shown as text)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[dict[str, str]] = []
        self.in_table = False
        self.cell: str | None = None
        self.tags_in_cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.in_table = a.get("data-table") == "shipments"
        elif self.in_table and tag == "tr" and a.get("data-shipment"):
            self.rows.append({"late": "1" if a.get("class") == "late" else ""})
        elif self.in_table and tag == "td" and self.rows and a.get("data-cell"):
            self.cell = a["data-cell"]
            self.rows[-1][self.cell] = ""
        elif self.cell is not None and tag not in ("code", "span", "br"):
            self.tags_in_cells.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.cell = None
        elif tag == "table":
            self.in_table = False

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.rows[-1][self.cell] += data


#: The order page's shipment cells and the ``shipments`` column each shows.
CELLS = {
    "id": "shipment_id",
    "node": "node_id",
    "service": "service",
    "state": "state",
    "carrier": "carrier",
    "tracking": "tracking_number",
    "planned-dispatch": "planned_dispatch",
    "planned-arrival": "planned_arrival",
}


def shipment_rows(html: str) -> tuple[list[dict[str, str]], list[str]]:
    parser = ShipmentRows()
    parser.feed(html)
    rows = [{k: " ".join(v.split()) for k, v in row.items()} for row in parser.rows]
    return rows, parser.tags_in_cells


def test_the_order_page_lists_the_stores_shipments_as_text(database_url: str) -> None:
    """A three-parcel order (12 x A: 5 DC-NJ, 5 ST-PHL, 2 DC-CHI) through the real
    FulfilmentService on loopback: DC-NJ ships with HTML in its carrier and tracking number,
    ST-PHL rejects with HTML in its reason and is re-sourced. The page lists exactly the
    store's shipment rows, shows the HTML as text, says what replaced what; ten days on,
    the open ones are late and the PARTIALLY_SHIPPED order is at risk and found by state."""
    carrier = '<b onmouseover="x()">UPS</b>'
    tracking = "<script>alert('1Z')</script>&amp;1Z999"
    reason = "<img src=x onerror=alert(2)> flooded"
    network = hand_network(on_hand={("DC-CHI", "A"): 4})
    with running_server(database_url, network) as grpc:
        f = grpc.fulfilment
        quote = grpc.quote({"A": 12})
        order_id = grpc.place(quote.quote_id, quote.options[0].option_id).order.order_id
        f.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=order_id), metadata=ADMIN)
        with grpc.store.read() as conn:
            placed = {
                r.node_id: r.shipment_id
                for r in conn.execute(
                    sa.select(t.shipments.c.node_id, t.shipments.c.shipment_id).where(
                        t.shipments.c.order_id == order_id
                    )
                )
            }
        assert sorted(placed) == ["DC-CHI", "DC-NJ", "ST-PHL"]
        f.AcceptShipment(
            fulfilment_pb2.AcceptShipmentRequest(shipment_id=placed["DC-NJ"]), metadata=ADMIN
        )
        f.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(
                shipment_id=placed["DC-NJ"], carrier=carrier, tracking_number=tracking
            ),
            metadata=ADMIN,
        )
        grpc.inventory.AdjustStock(
            inventory_pb2.AdjustStockRequest(node_id="DC-CHI", sku="A", delta=10, reason="count"),
            metadata=ADMIN,
        )
        f.RejectShipment(
            fulfilment_pb2.RejectShipmentRequest(shipment_id=placed["ST-PHL"], reason=reason),
            metadata=ADMIN,
        )
        s = t.shipments
        with grpc.store.read() as conn:
            stored = conn.execute(
                sa.select(s)
                .where(s.c.order_id == order_id)
                .order_by(s.c.created_at, s.c.shipment_id)
            ).all()
            state = conn.execute(
                sa.select(t.orders.c.state).where(t.orders.c.order_id == order_id)
            ).scalar_one()
        assert state == "PARTIALLY_SHIPPED" and len(stored) == 4

        now = [time.time()]
        app = create_app(config(database_url), grpc.store, clock=lambda: now[0])
        with TestClient(app, follow_redirects=False) as web:
            sign_in(web)
            page = web.get(f"/orders/{order_id}")
            assert page.status_code == 200
            rows, tags = shipment_rows(page.text)
            assert [(*(r[k] for k in CELLS), bool(r["shipped"])) for r in rows] == [
                (*(getattr(x, c) or "" for c in CELLS.values()), x.shipped_at is not None)
                for x in stored
            ]
            # The HTML is text: no tag from a value reached the markup, the raw strings never
            # appear, and the decoded cells equal the stored strings (checked above).
            assert tags == []
            for raw in (carrier, tracking, reason):
                assert raw not in page.text
            assert "&lt;script&gt;alert(&#39;1Z&#39;)&lt;/script&gt;&amp;amp;1Z999" in page.text
            # What replaced what, and why.
            new = next(x for x in stored if x.replaces == placed["ST-PHL"])
            history = {r["id"]: r["history"] for r in rows}
            assert history[placed["ST-PHL"]] == f"rejected: {reason}; replaced by {new.shipment_id}"
            assert placed["ST-PHL"] in history[new.shipment_id]
            assert new.reason and history[new.shipment_id] == new.reason
            assert not any(r["late"] for r in rows)
            # The timeline carries the shipments' events from the feed.
            with grpc.store.read() as conn:
                feed = conn.execute(
                    sa.select(t.order_events.c.type, t.order_events.c.shipment_id)
                    .where(t.order_events.c.order_id == order_id)
                    .order_by(t.order_events.c.event_id)
                ).all()
            timeline = re.findall(
                r'<li class="ev-([^"]+)"(?: data-shipment="([^"]+)")?>', page.text
            )
            assert timeline == [(kind, sid or "") for kind, sid in feed]
            # Every shipment's life is in it (requested, accepted, shipped, rejected, ...).
            assert {sid for _, sid in feed if sid} == {x.shipment_id for x in stored}
            assert len([k for k, sid in feed if sid == placed["DC-NJ"]]) >= 3, feed

            # Before anything is late: nothing at risk.
            assert web.get("/api/overview").json()["at_risk"] == 0
            assert order_id not in web.get("/orders", params={"late": "1"}).text
            # Ten days on, the shipments still at their nodes are late: the order, though
            # PARTIALLY_SHIPPED (not PLACED or RELEASED), is at risk, listed and found.
            now[0] += 10 * 86_400
            rows, _ = shipment_rows(web.get(f"/orders/{order_id}").text)
            assert (
                {r["id"] for r in rows if r["late"]}
                == {
                    x.shipment_id for x in stored if x.state in ("PENDING", "REQUESTED", "ACCEPTED")
                }
                != set()
            )
            assert all("late" in r["state"] for r in rows if r["late"])
            assert web.get("/api/overview").json()["at_risk"] == 1
            overview = web.get("/").text
            assert f'href="/orders/{order_id}"' in overview
            assert order_id in web.get("/orders", params={"late": "1"}).text
            assert order_id in web.get("/fragments/orders", params={"late": "on"}).text
            for found, wanted in (("PARTIALLY_SHIPPED", True), ("PLACED", False)):
                listed = web.get("/orders", params={"state": found})
                assert listed.status_code == 200
                assert (order_id in listed.text) is wanted


def test_a_flagged_partially_shipped_order_needs_attention(database_url: str) -> None:
    """DC-NJ has shipped its part; ST-PHL refuses its 5 A and no other node has them, so the
    re-sourcing cannot keep the promise and flags the order (GetOrder: needs_attention).
    The order is PARTIALLY_SHIPPED, not PLACED or RELEASED: the dashboard must still count
    it, list it and badge it."""
    from oms.v1 import checkout_pb2

    network = hand_network(on_hand={("DC-CHI", "A"): 4})
    with running_server(database_url, network) as grpc:
        f = grpc.fulfilment
        quote = grpc.quote({"A": 12})
        order_id = grpc.place(quote.quote_id, quote.options[0].option_id).order.order_id
        f.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=order_id), metadata=ADMIN)
        order = grpc.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order_id)).order
        by_node = {s.node_id: s.shipment_id for s in order.shipments}
        f.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(
                shipment_id=by_node["DC-NJ"], carrier="UPS", tracking_number="1Z1"
            ),
            metadata=ADMIN,
        )
        f.RejectShipment(
            fulfilment_pb2.RejectShipmentRequest(shipment_id=by_node["ST-PHL"], reason="closed"),
            metadata=ADMIN,
        )
        order = grpc.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order_id)).order
        assert order.needs_attention, [e.type for e in order.events]
        with grpc.store.read() as conn:
            state = conn.execute(
                sa.select(t.orders.c.state).where(t.orders.c.order_id == order_id)
            ).scalar_one()
        assert state == "PARTIALLY_SHIPPED"
        with TestClient(
            create_app(config(database_url), grpc.store), follow_redirects=False
        ) as web:
            sign_in(web)
            assert web.get("/api/overview").json()["attention"] == 1
            assert order_id in web.get("/orders", params={"attention": "1"}).text
            assert "needs attention" in web.get(f"/orders/{order_id}").text


@pytest.mark.parametrize(
    "path,field",
    [
        ("/?period=1y", "period"),
        ("/fragments/stock-table?offset=-1", "offset"),
        ("/fragments/stock-table?offset=ten", "offset"),
        ("/orders?state=LOST", "state"),
        ("/orders?sku=" + "x" * 200, "sku"),
        ("/orders?after=garbage", "after"),
        ("/orders/" + "o" * 300, "order id"),
    ],
)
def test_a_bad_query_is_a_400_naming_the_field(client: TestClient, path: str, field: str) -> None:
    sign_in(client)
    reply = client.get(path)
    assert reply.status_code == 400
    assert reply.text.startswith(f"bad request: {field}")
    assert len(reply.text) < 200  # never echoes the caller's long value


def test_an_unknown_order_is_a_404_page(client: TestClient) -> None:
    sign_in(client)
    assert client.get("/orders/o_missing").status_code == 404
    assert client.get("/fragments/order/o_missing").status_code == 404


def test_tokens_come_from_a_file_or_the_environment_or_are_made(tmp_path: Path) -> None:
    url = "sqlite:///x.db"
    made = resolve(url, admin_token=None, environ={})
    assert made.generated_token and made.viewer_token and len(made.viewer_token) >= 40
    assert made.login_url(with_token=True).endswith(f"/login?token={made.viewer_token}")
    # With any token configured, none is made, and the printed link carries none.
    admin_only = resolve(url, admin_token="adm", environ={})
    assert not admin_only.generated_token and admin_only.viewer_token is None
    assert "token=" not in admin_only.login_url(with_token=True)
    token_file = tmp_path / "viewer"
    token_file.write_text("from-file\n")
    from_file = resolve(url, admin_token=None, environ={"OMS_VIEWER_TOKEN_FILE": str(token_file)})
    assert from_file.viewer_token == "from-file"
    assert resolve(url, admin_token=None, environ={"OMS_VIEWER_TOKEN": "env"}).viewer_token == "env"
    assert resolve(url, admin_token=None, environ={"OMS_HTTP_PORT": "0"}).port == 0
    with pytest.raises(ConfigError, match="viewer token file: cannot read"):
        resolve(url, admin_token=None, viewer_token_file=str(tmp_path / "missing"))
    token_file.write_text("  \n")
    with pytest.raises(ConfigError, match="viewer token file: the token is empty"):
        resolve(url, admin_token=None, viewer_token_file=str(token_file))
    with pytest.raises(ConfigError, match="OMS_HTTP_PORT"):
        resolve(url, admin_token=None, environ={"OMS_HTTP_PORT": "eighty"})
    # Sessions are signed with a key the tokens make: another token, another key.
    assert made.session_secret != from_file.session_secret


def test_the_printed_login_link_answers_the_moment_it_is_printed(tmp_path: Path) -> None:
    """`oms serve` prints the dashboard's login link; opening it at once must work.

    The link used to be printed by the parent right after spawning the dashboard's process,
    a second or more before that process listened: CI's smoke run opened it and was refused.
    """
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from service_support import free_port

    http_port = free_port()
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    command = [
        sys.executable, "-m", "oms.cli", "serve", "--no-demo", "--no-demo-orders",
        "--database-url", f"sqlite:///{tmp_path / 'oms.db'}",
        "--port", str(free_port()), "--http-port", str(http_port),
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stderr=log, env=env)
    try:
        link = None
        deadline = time.monotonic() + 90
        while link is None and time.monotonic() < deadline and process.poll() is None:
            found = re.search(
                rf"http://127\.0\.0\.1:{http_port}/login\?token=[\w-]+", log_path.read_text()
            )
            link = found.group(0) if found else None
            time.sleep(0.01)
        assert link is not None, log_path.read_text()[-2000:]

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        try:  # no retry: the first request is the one a person makes
            urllib.request.build_opener(NoRedirect()).open(link, timeout=10)
            raise AssertionError("the login link should redirect into the dashboard")
        except urllib.error.HTTPError as reply:
            assert reply.code == 303
            assert SESSION_COOKIE in (reply.headers.get("set-cookie") or "")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_quotes_move_their_own_mark_and_the_conversion_fragment(database_url: str) -> None:
    """Quotes alone do not move the change mark (every tab would refetch every part on
    every quote), but they move /api/changes' own quote mark, and the overview's
    conversion fragment (which the page refetches on that mark, at a slower pace) follows
    them: quotes, orders and the rate equal the store's counts."""
    with running_server(database_url, hand_network()) as grpc:
        quote = grpc.quote({"A": 1})
        grpc.place(quote.quote_id, quote.options[0].option_id)
        with TestClient(
            create_app(config(database_url), grpc.store), follow_redirects=False
        ) as web:
            sign_in(web)
            before = web.get("/api/changes").json()
            overview = web.get("/", params={"period": "7d"}).text
            assert 'hx-get="/fragments/conversion?period=7d"' in overview
            assert 'hx-trigger="oms:quotes from:body"' in overview
            for _ in range(3):
                grpc.quote({"B": 1})
            after = web.get("/api/changes").json()
            assert after["mark"] == before["mark"]  # no tab refetches everything
            assert after["quotes"] != before["quotes"]
            with grpc.store.read() as conn:
                quotes = conn.execute(sa.select(sa.func.count()).select_from(t.quotes)).scalar()
                orders = conn.execute(sa.select(sa.func.count()).select_from(t.orders)).scalar()
            assert (quotes, orders) == (4, 1)
            for period in ("today", "7d", "30d"):
                part = web.get("/fragments/conversion", params={"period": period})
                assert part.status_code == 200
                assert re.search(rf'data-kpi="quotes">{quotes}<', part.text), period
                assert re.search(rf'data-kpi="conversion-orders">{orders}<', part.text), period
                assert re.search(r'data-kpi="conversion">25\.0%<', part.text), period
                assert 'class="chart-data"' in part.text and 'data-chart="conversion"' in part.text
            # An order moves the change mark, as before.
            again = grpc.quote({"A": 1})
            grpc.place(again.quote_id, again.options[0].option_id)
            assert web.get("/api/changes").json()["mark"] != after["mark"]
