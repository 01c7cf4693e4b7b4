"""What every handler reaches through ``request.app.state.site``: the store, read in one
bounded transaction, the templates, the clock, and the settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.templating import Jinja2Templates

from oms.dashboard.auth import signed_in
from oms.dashboard.config import DashboardConfig
from oms.dashboard.params import BadQuery
from oms.store import Store

#: PostgreSQL: a dashboard query that runs longer is cancelled (it must never hog the store).
STATEMENT_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Site:
    config: DashboardConfig
    store: Store
    templates: Jinja2Templates
    clock: Callable[[], float]

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction; on PostgreSQL cancelled past :data:`STATEMENT_TIMEOUT_MS`,
        and run by its backend alone: no parallel workers taking the cores checkout runs on
        (every query here is an index range or a small aggregate)."""
        with self.store.read() as conn:
            if not self.store.is_sqlite:
                conn.exec_driver_sql(
                    "SELECT set_config('statement_timeout', %(timeout)s, true), "
                    "set_config('max_parallel_workers_per_gather', '0', true)",
                    {"timeout": str(STATEMENT_TIMEOUT_MS)},
                )
            yield conn

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("role", signed_in(request))
        context.setdefault("path", request.url.path)
        return self.templates.TemplateResponse(request, name, context, status_code=status)


def site_of(request: Request) -> Site:
    site: Site = request.app.state.site
    return site


def guarded(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """``handler`` answering a :class:`BadQuery` with 400 and its message."""

    def run(request: Request) -> Response:
        try:
            return handler(request)
        except BadQuery as exc:
            return PlainTextResponse(f"bad request: {exc}", status_code=400)

    run.__name__ = handler.__name__
    return run
