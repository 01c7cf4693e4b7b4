"""The dashboard's settings and its login tokens.

Two tokens open it: the viewer token (``--viewer-token-file`` or
``OMS_VIEWER_TOKEN_FILE``, a file holding it; or ``OMS_VIEWER_TOKEN``) and the
service's admin token. Secrets come from the environment or a file, never
from a command-line flag (which ``ps`` shows to every user). When neither is
set, :func:`resolve` makes a viewer token at start and the server prints a
login link that carries it, as Jupyter does.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from oms.credentials import redacted_repr

DEFAULT_HTTP_PORT = 8080
#: Demo orders placed on a fresh store that has the demo network (0: none).
DEFAULT_DEMO_ORDERS = 300
#: Longest token accepted (a login form is no place for a megabyte).
MAX_TOKEN_LENGTH = 512


class ConfigError(ValueError):
    """A setting the dashboard cannot start with (names the setting)."""


@dataclass(frozen=True, repr=False)
class DashboardConfig:
    """Everything the dashboard process needs; picklable (it crosses a spawn). ``repr``
    masks the tokens and the URL's password (:mod:`oms.credentials`)."""

    database_url: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_HTTP_PORT
    viewer_token: str | None = None
    admin_token: str | None = None
    #: True when the viewer token was made at start (the login link carries it).
    generated_token: bool = False
    demo_orders: int = DEFAULT_DEMO_ORDERS
    #: How often an open page asks whether anything changed (seconds).
    poll_s: float = 3.0
    #: Figures are computed at most once per this many seconds for every open page
    #: together (and the change mark read as often): see :mod:`oms.dashboard.figures`.
    refresh_s: float = 5.0
    #: While the change mark stands still figures are kept up to this long (what moves
    #: with the clock alone, and quotes, which the mark does not follow).
    unchanged_s: float = 30.0
    currency: str = "USD"
    #: Signed session cookies expire after this many seconds.
    session_s: int = 12 * 3600

    def __repr__(self) -> str:
        return redacted_repr(self, ("viewer_token", "admin_token"))

    @property
    def tokens(self) -> dict[str, str]:
        """Role by token: ``viewer`` and ``admin`` (the dashboard is read-only for both)."""
        found = {}
        if self.viewer_token:
            found["viewer"] = self.viewer_token
        if self.admin_token:
            found["admin"] = self.admin_token
        return found

    @property
    def session_secret(self) -> str:
        """The key that signs session cookies, derived from the tokens: sessions survive a
        restart and are shared by every dashboard process with the same tokens, and
        changing a token signs everyone out."""
        material = "\0".join(f"{role}={token}" for role, token in sorted(self.tokens.items()))
        return hashlib.sha256(b"oms-dashboard-session\0" + material.encode()).hexdigest()

    def login_url(self, *, with_token: bool) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        base = f"http://{host if ':' not in host else f'[{host}]'}:{self.port}/login"
        return f"{base}?token={self.viewer_token}" if with_token and self.viewer_token else base


def read_token_file(path: str, setting: str) -> str:
    """The token in ``path`` (surrounding whitespace stripped); errors name the setting."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{setting}: cannot read {path!r}: {exc}") from None
    return check_token(token, setting)


def check_token(token: str, setting: str) -> str:
    if not token:
        raise ConfigError(f"{setting}: the token is empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise ConfigError(f"{setting}: the token is longer than {MAX_TOKEN_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"{setting}: the token has spaces or control characters")
    return token


def resolve(
    database_url: str,
    *,
    admin_token: str | None,
    viewer_token_file: str | None = None,
    host: str | None = None,
    port: int | None = None,
    demo_orders: int | None = None,
    currency: str = "USD",
    environ: Mapping[str, str] | None = None,
) -> DashboardConfig:
    """Settings from arguments, then ``OMS_*`` variables, then defaults.

    ``OMS_HTTP_PORT`` (0 turns the dashboard off), ``OMS_VIEWER_TOKEN_FILE`` or
    ``OMS_VIEWER_TOKEN``, ``OMS_DEMO_ORDERS``, ``OMS_DASHBOARD_REFRESH_S`` and
    ``OMS_DASHBOARD_UNCHANGED_S`` (seconds, see :class:`DashboardConfig`).
    """
    env = os.environ if environ is None else environ
    viewer: str | None = None
    token_file = viewer_token_file or env.get("OMS_VIEWER_TOKEN_FILE") or None
    if token_file:
        viewer = read_token_file(token_file, "viewer token file")
    elif env.get("OMS_VIEWER_TOKEN"):
        viewer = check_token(env["OMS_VIEWER_TOKEN"], "OMS_VIEWER_TOKEN")
    if admin_token is not None:
        check_token(admin_token, "admin token")
    generated = False
    if viewer is None and not admin_token:
        viewer, generated = secrets.token_urlsafe(32), True
    if port is None:
        port = _int_env(env, "OMS_HTTP_PORT", DEFAULT_HTTP_PORT)
    if not 0 <= port <= 65535:
        raise ConfigError(f"http port must be in 0..65535, got {port}")
    if demo_orders is None:
        demo_orders = _int_env(env, "OMS_DEMO_ORDERS", DEFAULT_DEMO_ORDERS)
    if demo_orders < 0:
        raise ConfigError(f"demo orders must not be negative, got {demo_orders}")
    refresh_s = _seconds_env(env, "OMS_DASHBOARD_REFRESH_S", DashboardConfig.refresh_s)
    unchanged_s = _seconds_env(env, "OMS_DASHBOARD_UNCHANGED_S", DashboardConfig.unchanged_s)
    return DashboardConfig(
        database_url=database_url,
        refresh_s=refresh_s,
        unchanged_s=unchanged_s,
        host=host or "127.0.0.1",
        port=port,
        viewer_token=viewer,
        admin_token=admin_token or None,
        generated_token=generated,
        demo_orders=demo_orders,
        currency=currency,
    )


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a whole number") from None


def _seconds_env(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number of seconds") from None
    if not 0 <= value <= 3600:
        raise ConfigError(f"{name}: must be in 0..3600 seconds, got {raw!r}")
    return value
