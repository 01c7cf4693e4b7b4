"""The dashboard's web entrypoint: a Starlette app of pages, htmx fragments and JSON.

Thin by design: each route validates its query, opens one read transaction,
calls :mod:`oms.dashboard.views`, and renders a Jinja2 template (autoescaped:
a SKU or a reason holding HTML is shown as text). Pages are full documents;
``/fragments/...`` are the parts of them htmx swaps in when
``/api/changes`` says the store moved (``static/dashboard.js`` polls it), so
an open page follows the store without a reload and an idle store costs one
cheap query per poll.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.engine import Connection
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oms.dashboard import views
from oms.dashboard.auth import (
    SESSION_COOKIE,
    RequireLogin,
    SecurityHeaders,
    role_for,
    safe_next,
    signed_in,
)
from oms.dashboard.config import DashboardConfig
from oms.store import Store

STATIC = Path(__file__).parent / "static"
#: Longest search term or id accepted in a query string.
MAX_QUERY_LENGTH = 128
#: PostgreSQL: a dashboard query that runs longer is cancelled (it must never hog the store).
STATEMENT_TIMEOUT_MS = 10_000
#: Low-stock alerts listed at the top of the stock page (the table below filters to all).
ALERTS_SHOWN = 12
#: Nodes without a capacity limit listed in today's capacity table, busiest first.
BUSIEST_SHOWN = 10
PALETTE = {
    "PLACED": "#1f6fb2",
    "RELEASED": "#7a4fb5",
    "SHIPPED": "#b5651d",
    "DELIVERED": "#2e7d32",
    "CANCELLED": "#6b6b6b",
    "CHEAPEST": "#2e7d32",
    "FASTEST": "#c62828",
    "SINGLE_PARCEL": "#1f6fb2",
    "BALANCED": "#7a4fb5",
    "COLLECT": "#b5651d",
}


class BadQuery(ValueError):
    """A query parameter the dashboard refuses (answered 400, naming it)."""


def _text_param(request: Request, name: str) -> str:
    value = request.query_params.get(name, "").strip()
    if len(value) > MAX_QUERY_LENGTH:
        raise BadQuery(f"{name} is longer than {MAX_QUERY_LENGTH} characters")
    if any(not c.isprintable() for c in value):
        raise BadQuery(f"{name} has control characters")
    return value


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise BadQuery(f"{name} must be between {low} and {high}")
    return value


def _period(request: Request) -> str:
    key = request.query_params.get("period", "7d")
    if key not in views.PERIODS:
        raise BadQuery(f"period must be one of {', '.join(views.PERIODS)}")
    return key


def _cursor(request: Request) -> tuple[float, str] | None:
    raw = _text_param(request, "after")
    if not raw:
        return None
    created, _, order_id = raw.partition("~")
    try:
        at = float(created)
    except ValueError:
        raise BadQuery("after is not a cursor this page made") from None
    if not order_id or not math.isfinite(at):
        raise BadQuery("after is not a cursor this page made")
    return at, order_id


def _order_query(request: Request) -> views.OrderQuery:
    state = _text_param(request, "state").upper()
    if state and state not in views.STATES:
        raise BadQuery(f"state must be one of {', '.join(views.STATES)}")
    return views.OrderQuery(
        order_id=_text_param(request, "order_id"),
        sku=_text_param(request, "sku"),
        node_id=_text_param(request, "node"),
        state=state,
        attention=request.query_params.get("attention") in ("1", "on", "true"),
    )


# -- template helpers -------------------------------------------------------------


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _money(value: float, currency: str = "USD") -> str:
    sign = "-" if value < 0 else ""
    symbol = "$" if currency == "USD" else f"{currency} "
    return f"{sign}{symbol}{abs(value):,.2f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _templates(config: DashboardConfig) -> Jinja2Templates:
    env = Environment(
        loader=PackageLoader("oms.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["when"] = _when
    env.filters["money"] = lambda v: _money(float(v), config.currency)
    env.filters["pct"] = _pct
    env.filters["num"] = lambda v: f"{v:,}" if isinstance(v, int) else f"{v:,.2f}"
    env.globals["periods"] = tuple(views.PERIODS)
    env.globals["states"] = views.STATES
    env.globals["poll_s"] = config.poll_s
    return Jinja2Templates(env=env)


def overview_charts(ov: views.Overview) -> dict[str, Any]:
    """Chart.js-shaped series for the overview (drawn by static/dashboard.js)."""

    def ds(label: str, data: list[Any], color: str, **extra: Any) -> dict[str, Any]:
        return {"label": label, "data": data, "color": color, **extra}

    return {
        "labels": list(ov.period.labels),
        "charts": {
            "orders": {
                "type": "bar",
                "stacked": True,
                "datasets": [ds(s, ov.state_series[s], PALETTE[s]) for s in views.STATES],
            },
            "promises": {
                "type": "bar",
                "datasets": [
                    ds("delivered", ov.delivered_series, "#6b6b6b"),
                    ds("on time", ov.kept_series, "#2e7d32"),
                ],
            },
            "cost": {
                "type": "line",
                "datasets": [
                    ds("cost per order", ov.cost_series["cost"], "#111111"),
                    ds("shipping", ov.cost_series["shipping"], "#1f6fb2"),
                    ds("handling", ov.cost_series["handling"], "#b5651d"),
                    ds("storage credit", ov.cost_series["storage_credit"], "#2e7d32"),
                ],
            },
            "parcels": {
                "type": "line",
                "datasets": [
                    ds("parcels per order", ov.parcels_series, "#1f6fb2"),
                    ds("split rate", ov.split_series, "#c62828"),
                ],
            },
            "labels": {
                "type": "bar",
                "stacked": True,
                "datasets": [ds(k, ov.label_series[k], PALETTE[k]) for k in views.LABELS],
            },
            "conversion": {
                "type": "bar",
                "datasets": [
                    ds("quotes", ov.quote_series, "#9e9e9e"),
                    ds("orders", ov.order_series, "#1f6fb2"),
                ],
            },
            "attention": {
                "type": "bar",
                "datasets": [ds("flagged", ov.flagged_series, "#c62828")],
            },
        },
    }


def script_json(value: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``
    can end the block or start markup."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class ServerTiming:
    """``Server-Timing: app;dur=<ms>`` on every response: the benchmark reads it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000.0
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"server-timing", f"app;dur={ms:.2f}".encode()),
                ]
            await send(message)

        await self.app(scope, receive, timed)


def create_app(
    config: DashboardConfig, store: Store | None = None, *, clock: Callable[[], float] = time.time
) -> Starlette:
    """The dashboard app over ``store`` (by default a new one on ``config.database_url``)."""
    store = store if store is not None else Store(config.database_url, pool_size=4)
    templates = _templates(config)

    @contextmanager
    def read() -> Iterator[Connection]:
        with store.read() as conn:
            if not store.is_sqlite:
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            yield conn

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("role", signed_in(request))
        context.setdefault("path", request.url.path)
        return templates.TemplateResponse(request, name, context, status_code=status)

    def guarded(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def run(request: Request) -> Response:
            try:
                return handler(request)
            except BadQuery as exc:
                return PlainTextResponse(f"bad request: {exc}", status_code=400)

        run.__name__ = handler.__name__
        return run

    # -- login --------------------------------------------------------------------

    async def login(request: Request) -> Response:
        if request.method == "POST":
            form = await request.form(max_files=0, max_fields=4)
            token, target = str(form.get("token", "")), str(form.get("next", "/"))
        else:
            token = request.query_params.get("token", "")
            target = request.query_params.get("next", "/")
        target = safe_next(target)
        if not token:
            return render(request, "login.html", next=target, error=None)
        role = role_for(config, token)
        if role is None:
            return render(
                request, "login.html", status=401, next=target, error="That token is not valid."
            )
        request.session.clear()
        request.session["role"] = role
        # 303: the browser GETs the target, and the token leaves the address bar.
        return RedirectResponse(target, status_code=303)

    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    # -- overview -----------------------------------------------------------------

    def _overview_context(request: Request) -> dict[str, Any]:
        key = _period(request)
        now = clock()
        period = views.Period.of(key, now)
        with read() as conn:
            ov = views.overview(conn, period, now)
            risky = views.at_risk(conn, now, limit=10)
            attention = views.attention(conn, limit=10)
        return {
            "ov": ov,
            "period": key,
            "at_risk_rows": risky,
            "attention_rows": attention,
            "charts": script_json(overview_charts(ov)),
        }

    def overview_page(request: Request) -> Response:
        return render(request, "overview.html", **_overview_context(request))

    def overview_fragment(request: Request) -> Response:
        return render(request, "partials/overview_body.html", **_overview_context(request))

    def overview_json(request: Request) -> Response:
        ctx = _overview_context(request)
        ov: views.Overview = ctx["ov"]
        return JSONResponse(
            {
                "period": ctx["period"],
                "orders": ov.orders,
                "by_state": ov.by_state,
                "cost_per_order": round(ov.cost_per_order, 2),
                "shipping": round(ov.shipping, 2),
                "handling": round(ov.handling, 2),
                "storage_credit": round(ov.storage_credit, 2),
                "parcels_per_order": round(ov.parcels_per_order, 3),
                "split_rate": round(ov.split_rate, 4),
                "labels": ov.labels,
                "quotes": ov.quotes,
                "conversion": round(ov.conversion, 4),
                "delivered": ov.delivered,
                "kept": ov.kept,
                "at_risk": ov.at_risk,
                "attention": ov.attention,
                **overview_charts(ov),
            }
        )

    # -- stock --------------------------------------------------------------------

    def _stock_table_context(request: Request) -> dict[str, Any]:
        search = _text_param(request, "q")
        low = request.query_params.get("low") in ("1", "on", "true")
        offset = _int_param(request, "offset", 0, 0, 10**9)
        with read() as conn:
            page = views.positions(conn, clock(), search=search, low_only=low, offset=offset)
        return {"page": page, "q": search, "low": low}

    def _alerts_context() -> dict[str, Any]:
        with read() as conn:
            return {"alerts": views.low_stock(conn, clock(), limit=ALERTS_SHOWN)}

    def _receipts_context() -> dict[str, Any]:
        with read() as conn:
            return {"receipts": views.open_receipts(conn, clock())}

    def _nodes_context(request: Request) -> dict[str, Any]:
        key = _period(request)
        now = clock()
        with read() as conn:
            found = views.nodes(conn, views.Period.of(key, now), now)
        limited = [n for n in found if n.capacity]
        others = sorted(
            (n for n in found if not n.capacity and n.used_today),
            key=lambda n: (-n.used_today, n.node_id),
        )
        busiest = sorted(limited, key=lambda n: -(n.capacity_share or 0.0)) + others[:BUSIEST_SHOWN]
        return {"nodes": found, "busiest": busiest, "map": node_map(found), "period": key}

    def stock_page(request: Request) -> Response:
        return render(
            request,
            "stock.html",
            **_stock_table_context(request),
            **_alerts_context(),
            **_receipts_context(),
            **_nodes_context(request),
        )

    def stock_table_fragment(request: Request) -> Response:
        return render(request, "partials/stock_table.html", **_stock_table_context(request))

    def alerts_fragment(request: Request) -> Response:
        return render(request, "partials/alerts.html", **_alerts_context())

    def receipts_fragment(request: Request) -> Response:
        return render(request, "partials/receipts.html", **_receipts_context())

    def nodes_fragment(request: Request) -> Response:
        return render(request, "partials/nodes.html", **_nodes_context(request))

    # -- orders -------------------------------------------------------------------

    def _orders_context(request: Request) -> dict[str, Any]:
        query = _order_query(request)
        after = _cursor(request)
        with read() as conn:
            page = views.search_orders(conn, query, after=after)
        return {
            "query": query,
            "results": page,
            "next_cursor": f"{page.after[0]!r}~{page.after[1]}" if page.after else None,
        }

    def orders_page(request: Request) -> Response:
        return render(request, "orders.html", **_orders_context(request))

    def orders_fragment(request: Request) -> Response:
        return render(request, "partials/orders_table.html", **_orders_context(request))

    def _order_context(request: Request) -> dict[str, Any] | None:
        order_id = str(request.path_params["order_id"])
        if len(order_id) > MAX_QUERY_LENGTH:
            raise BadQuery(f"order id is longer than {MAX_QUERY_LENGTH} characters")
        with read() as conn:
            detail = views.order_detail(conn, order_id)
        return None if detail is None else {"order": detail}

    def order_page(request: Request) -> Response:
        ctx = _order_context(request)
        if ctx is None:
            return render(request, "not_found.html", status=404, what="order")
        return render(request, "order.html", **ctx)

    def order_fragment(request: Request) -> Response:
        ctx = _order_context(request)
        if ctx is None:
            return PlainTextResponse("no such order", status_code=404)
        return render(request, "partials/order_body.html", **ctx)

    # -- live updates -------------------------------------------------------------

    def changes(request: Request) -> Response:
        with read() as conn:
            mark = views.change_mark(conn)
        return JSONResponse({"mark": mark, "at": clock()})

    routes = [
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/", guarded(overview_page)),
        Route("/stock", guarded(stock_page)),
        Route("/orders", guarded(orders_page)),
        Route("/orders/{order_id:path}", guarded(order_page)),
        Route("/fragments/overview", guarded(overview_fragment)),
        Route("/fragments/stock-table", guarded(stock_table_fragment)),
        Route("/fragments/alerts", guarded(alerts_fragment)),
        Route("/fragments/receipts", guarded(receipts_fragment)),
        Route("/fragments/nodes", guarded(nodes_fragment)),
        Route("/fragments/orders", guarded(orders_fragment)),
        Route("/fragments/order/{order_id:path}", guarded(order_fragment)),
        Route("/api/overview", guarded(overview_json)),
        Route("/api/changes", changes),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(ServerTiming),
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=config.session_secret,
            session_cookie=SESSION_COOKIE,
            max_age=config.session_s,
            same_site="lax",
            https_only=False,
        ),
        Middleware(RequireLogin),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return HTMLResponse("<!doctype html><title>Not found</title><p>Not found.</p>", 404)

    app = Starlette(routes=routes, middleware=middleware, exception_handlers={404: not_found})
    app.state.store = store
    return app


# -- the node map -----------------------------------------------------------------

MAP_WIDTH, MAP_HEIGHT, MAP_PAD = 960.0, 540.0, 24.0


def node_map(nodes: list[views.NodeUse]) -> dict[str, Any]:
    """Nodes placed on an SVG canvas from their coordinates (equirectangular, scaled by the
    mid latitude's cosine), each circle's area proportional to the units it shipped."""
    if not nodes:
        return {"width": MAP_WIDTH, "height": MAP_HEIGHT, "points": []}
    lats = [n.lat for n in nodes]
    lons = [n.lon for n in nodes]
    mid = math.radians((min(lats) + max(lats)) / 2)
    xs = [lon * math.cos(mid) for lon in lons]
    span_x = max(max(xs) - min(xs), 1e-6)
    span_y = max(max(lats) - min(lats), 1e-6)
    scale = min((MAP_WIDTH - 2 * MAP_PAD) / span_x, (MAP_HEIGHT - 2 * MAP_PAD) / span_y)
    most = max((n.shipped for n in nodes), default=0)
    points: list[dict[str, Any]] = []
    for node, x in zip(nodes, xs, strict=True):
        radius = 2.0 + (22.0 * math.sqrt(node.shipped / most) if most else 0.0)
        points.append(
            {
                "node": node,
                "x": round(MAP_PAD + (x - min(xs)) * scale, 1),
                "y": round(MAP_PAD + (max(lats) - node.lat) * scale, 1),
                "r": round(radius, 1),
            }
        )
    # Big circles first, so small ones stay visible (and hoverable) on top.
    points.sort(key=lambda p: -float(p["r"]))
    return {"width": MAP_WIDTH, "height": MAP_HEIGHT, "points": points}
