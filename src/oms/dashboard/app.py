"""The dashboard's web entrypoint: a Starlette app of pages, htmx fragments and JSON.

The routes and the middleware live here; the handlers in :mod:`.pages` (and
:mod:`.login`), what they share in :mod:`.site`, their parameters in
:mod:`.params`, the drawing helpers in :mod:`.render`. ``/fragments/...`` are
the parts of pages that htmx swaps in when ``/api/changes`` says the store
moved (``static/dashboard.js`` polls it), so an open page follows the store
without a reload. Every session shares the figures (:mod:`.figures`): however
many pages are open, each fragment's query runs at most once per refresh
interval, and the change mark's once per interval for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oms.dashboard import pages, views
from oms.dashboard.auth import SESSION_COOKIE, RequireLogin, SecurityHeaders
from oms.dashboard.config import DashboardConfig
from oms.dashboard.figures import SharedFigures
from oms.dashboard.login import healthz, login, logout
from oms.dashboard.render import templates
from oms.dashboard.site import Site, dashboard_read, dashboard_store, guarded
from oms.store import Store

STATIC = Path(__file__).parent / "static"


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


ROUTES = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/healthz", healthz),
    Route("/", guarded(pages.overview_page)),
    Route("/stock", guarded(pages.stock_page)),
    Route("/orders", guarded(pages.orders_page)),
    Route("/orders/{order_id:path}", guarded(pages.order_page)),
    Route("/fragments/overview", guarded(pages.overview_fragment)),
    Route("/fragments/conversion", guarded(pages.conversion_fragment)),
    Route("/fragments/stock-table", guarded(pages.stock_table_fragment)),
    Route("/fragments/alerts", guarded(pages.alerts_fragment)),
    Route("/fragments/receipts", guarded(pages.receipts_fragment)),
    Route("/fragments/nodes", guarded(pages.nodes_fragment)),
    Route("/fragments/orders", guarded(pages.orders_fragment)),
    Route("/fragments/order/{order_id:path}", guarded(pages.order_fragment)),
    Route("/api/overview", guarded(pages.overview_json)),
    Route("/api/changes", pages.changes),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]


async def _not_found(request: Request, exc: Exception) -> Response:
    return HTMLResponse("<!doctype html><title>Not found</title><p>Not found.</p>", 404)


def create_app(
    config: DashboardConfig, store: Store | None = None, *, clock: Callable[[], float] = time.time
) -> Starlette:
    """The dashboard app over ``store`` (by default a new one on ``config.database_url``)."""
    store = store if store is not None else dashboard_store(config.database_url)

    def read_mark() -> str:
        with dashboard_read(store) as conn:
            return views.change_mark(conn)

    figures = SharedFigures(
        read_mark, refresh_s=config.refresh_s, unchanged_s=config.unchanged_s, clock=clock
    )
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
    app = Starlette(routes=ROUTES, middleware=middleware, exception_handlers={404: _not_found})
    app.state.store = store
    app.state.site = Site(config, store, templates(config), clock, figures)
    return app
