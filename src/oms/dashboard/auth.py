"""Login, the signed session cookie, and the headers every response carries.

A session is Starlette's signed cookie (itsdangerous; HttpOnly, SameSite=Lax,
12 hours) holding the role the token opened. Every page, fragment and data
endpoint needs one: pages redirect to the login form, data endpoints (and
htmx fragment requests) answer 401. Only ``/login``, ``/static/`` and
``/healthz`` are open. Lax rather than Strict: an operator who follows a link
to an order from a chat or a ticket lands on it signed in; the dashboard has
no state-changing request a cross-site POST could forge (logout aside).
"""

from __future__ import annotations

import hmac
from urllib.parse import quote

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oms.dashboard.config import MAX_TOKEN_LENGTH, DashboardConfig

OPEN_PATHS = ("/login", "/healthz")
OPEN_PREFIXES = ("/static/",)
SESSION_COOKIE = "oms_dashboard"

#: No inline script or style anywhere: scripts and styles come from /static only;
#: chart data rides in <script type="application/json"> blocks, which never run.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # The login link carries the token: never let it leave in a Referer.
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


def role_for(config: DashboardConfig, token: str) -> str | None:
    """The role ``token`` opens, compared in constant time; None if it opens nothing."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    found = None
    for role, expected in config.tokens.items():
        if hmac.compare_digest(token.encode(), expected.encode()):
            found = role
    return found


def safe_next(target: str | None) -> str:
    """Where to go after login: a path on this site only (no ``//host`` or scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def signed_in(request: Request) -> str | None:
    role = request.session.get("role")
    return role if role in ("viewer", "admin") else None


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _wants_data(request: Request) -> bool:
    return (
        request.url.path.startswith("/api/")
        or request.url.path.startswith("/fragments/")
        or request.headers.get("hx-request") == "true"
    )


class RequireLogin:
    """Refuse every request without a session, but the open paths (runs inside the session
    middleware, which decodes the cookie)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if signed_in(request) is None:
            response: Response
            if _wants_data(request):
                response = PlainTextResponse(
                    "sign in first", status_code=401, headers={"www-authenticate": "Session"}
                )
            else:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every response, and keep pages out of caches."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
