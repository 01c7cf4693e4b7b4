"""Signing in and out, and the health check (the only routes open without a session)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from oms.dashboard.auth import role_for, safe_next
from oms.dashboard.site import site_of


async def login(request: Request) -> Response:
    site = site_of(request)
    if request.method == "POST":
        form = await request.form(max_files=0, max_fields=4)
        token, target = str(form.get("token", "")), str(form.get("next", "/"))
    else:
        token = request.query_params.get("token", "")
        target = request.query_params.get("next", "/")
    target = safe_next(target)
    if not token:
        return site.render(request, "login.html", next=target, error=None)
    role = role_for(site.config, token)
    if role is None:
        return site.render(
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
