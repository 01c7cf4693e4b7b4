"""What every handler reaches through ``request.app.state.site``: the store, read in one
read-only, bounded transaction, the figures every session shares, the templates, the
clock, and the settings."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Connection
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.templating import Jinja2Templates

from oms.dashboard.auth import signed_in
from oms.dashboard.config import DashboardConfig
from oms.dashboard.figures import Figures, SharedFigures
from oms.dashboard.params import BadQuery
from oms.store import Store

T = TypeVar("T")

#: PostgreSQL: a dashboard query that runs longer is cancelled (it must never hog the store).
STATEMENT_TIMEOUT_MS = 10_000
#: PostgreSQL settings of every dashboard transaction: read-only (the dashboard never
#: writes: a bug or an injected statement cannot either), bounded in time, and run by its
#: backend alone, with no parallel workers taking the cores checkout runs on (every query
#: here is an index range or a small aggregate).
SESSION_SETTINGS = {
    "default_transaction_read_only": "on",
    "statement_timeout": str(STATEMENT_TIMEOUT_MS),
    "max_parallel_workers_per_gather": "0",
}
_PER_TRANSACTION = (
    "SELECT set_config('transaction_read_only', 'on', true), "
    "set_config('statement_timeout', %(timeout)s, true), "
    "set_config('max_parallel_workers_per_gather', '0', true)"
)


def dashboard_store(url: str, pool_size: int = 4) -> Store:
    """The dashboard process's own store: its sessions carry :data:`SESSION_SETTINGS`
    from the connection on (PostgreSQL), or are query-only (SQLite)."""
    return Store(url, pool_size=pool_size, read_only=True, session_settings=SESSION_SETTINGS)


@contextmanager
def dashboard_read(store: Store) -> Iterator[Connection]:
    """One read transaction of the dashboard over ``store``. Over a store of its own
    (:func:`dashboard_store`) the session already carries the settings; over one it was
    handed (in-process), they are set for this transaction alone."""
    with store.read() as conn:
        if not store.is_sqlite and store.db.session_settings != SESSION_SETTINGS:
            conn.exec_driver_sql(_PER_TRANSACTION, {"timeout": str(STATEMENT_TIMEOUT_MS)})
        yield conn


@dataclass(frozen=True)
class Site:
    config: DashboardConfig
    store: Store
    templates: Jinja2Templates
    clock: Callable[[], float]
    figures: SharedFigures

    def read(self) -> AbstractContextManager[Connection]:
        """One read transaction: read-only, cancelled past :data:`STATEMENT_TIMEOUT_MS`."""
        return dashboard_read(self.store)

    def shared(self, key: Hashable, compute: Callable[[], T]) -> Figures[T]:
        """``key``'s figures as every session shares them (:mod:`.figures`)."""
        return self.figures.get(key, compute)

    def fragment(self, name: str, figures: Figures[Any]) -> Response:
        """A fragment: the same HTML for every session at these figures, rendered once."""
        html = figures.rendered.get(name)
        if html is None:
            context = {**figures.value, "as_of": figures.as_of}
            html = figures.rendered[name] = self.templates.get_template(name).render(context)
        return HTMLResponse(html)

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
