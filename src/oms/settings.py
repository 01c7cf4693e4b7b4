"""Service settings: defaults, overridden by ``OMS_*`` environment variables, then CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from oms.credentials import read_token_file, redacted_repr
from oms.store.database import DEFAULT_CONNECT_TIMEOUT_S

DEFAULT_DATABASE_URL = "sqlite:///oms.db"
#: A checkout hold keeps units from every other shopper: minutes, not a quarter hour.
MAX_HOLD_TTL_S = 600.0


#: Settings that are secrets: also read from ``OMS_<NAME>_FILE``, and masked in ``repr``.
SECRET_FIELDS = ("admin_token", "checkout_token")


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything the server reads at start-up.

    * ``database_url``: SQLAlchemy URL; ``sqlite:///FILE`` (embedded default) or
      ``postgresql+psycopg://user@host:port/db``.
    * ``admin_token``: bearer token the InventoryService and FulfilmentService
      calls must carry; ``None`` refuses them all (UNAUTHENTICATED). Secrets
      (this and ``checkout_token``) come from ``OMS_ADMIN_TOKEN`` or a file
      named by ``OMS_ADMIN_TOKEN_FILE`` (``--admin-token-file``), never
      necessarily from the command line; ``repr`` masks them and the URL's password.
    * ``checkout_token``: bearer token for CheckoutService; ``None`` leaves
      checkout open (it is usually behind the shop's own gateway).
    * ``threads``: RPC threads per process (streams and queued calls hold one each).
    * ``max_streams``: server streams (``WatchLowStockAlerts``, health ``Watch``) open
      at once per process; more are RESOURCE_EXHAUSTED, so streams never take the
      threads unary calls need. ``None``: :attr:`stream_slots` picks a quarter of ``threads``.
    * ``cpu_slots``: quotes and orders worked on at once per process (see
      :mod:`oms.admission`); more only take turns at the GIL. ``None`` picks
      by store (:attr:`solver_slots`).
    * ``metrics_port``: Prometheus text endpoint on ``host:metrics_port``; 0 disables.
    * ``quote_ttl_s``: how long a quote stays valid (placeable). Quotes hold no stock.
    * ``hold_stock``: whether ``StartCheckout`` holds the chosen option's units
      (off: it holds nothing and says so; stock is only reserved at PlaceOrder,
      which re-checks it and re-sources within the promise, or fails).
    * ``hold_ttl_s``: how long a checkout hold lasts (at most :data:`MAX_HOLD_TTL_S`;
      never past its quote's expiry).
    * ``hold_units_per_caller``: units one identified caller (a client of the
      checkout or admin token, by its ``x-client-id``) may hold at once;
      ``hold_units_anonymous``: the same for a caller without a token, keyed by
      its address (small: anyone can call).
    * ``solver_time_limit_s``: the solver's budget per quote; a caller's
      shorter deadline lowers it further.
    * ``value_of_day_cents``: BALANCED's price of one day, unless the request sets one.
    * ``db_connect_timeout_s``: how long a PostgreSQL connect attempt may wait
      (``OMS_DB_CONNECT_TIMEOUT_S``, which the dashboard and batch jobs read too;
      a ``connect_timeout`` in the URL wins): past it the call is UNAVAILABLE,
      not stuck for the OS's TCP timeout while the host drops packets.
    """

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 50051
    workers: int = 1
    threads: int = 16
    max_streams: int | None = None
    cpu_slots: int | None = None
    admin_token: str | None = None
    checkout_token: str | None = None
    #: A file of ``NODE_ID TOKEN`` lines: tokens limited to one node's shipments (issue 16).
    node_tokens_file: str | None = None
    metrics_port: int = 0
    quote_ttl_s: float = 900.0
    hold_stock: bool = True
    hold_ttl_s: float = 180.0
    hold_units_per_caller: int = 200
    hold_units_anonymous: int = 20
    solver_time_limit_s: float = 0.5
    value_of_day_cents: int = 100
    currency: str = "USD"
    log_level: str = "INFO"
    #: How often WatchLowStockAlerts re-reads stock positions.
    alert_poll_s: float = 1.0
    #: How often each process probes its store; health is NOT_SERVING while it fails.
    health_probe_s: float = 2.0
    #: How often the server re-sources orders waiting for overdue inbound receipts
    #: (:mod:`oms.receiving`); 0 turns the sweep off.
    overdue_sweep_s: float = 300.0
    #: Price quotes with the latest ``oms reprice`` run's opportunity costs (:mod:`oms.reprice`).
    forward_prices: bool = False
    #: How often a server checks for a newer reprice run.
    forward_prices_refresh_s: float = 30.0
    #: Prices older than this are not used (None: until their run's own horizon ends).
    forward_prices_max_age_s: float | None = None
    db_connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    def __post_init__(self) -> None:
        for name in ("workers", "threads", "cpu_slots"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_streams is not None and not 0 <= self.max_streams < self.threads:
            raise ValueError(
                f"max_streams must be in 0..threads-1 ({self.threads - 1}): streams must leave "
                f"threads for unary calls, got {self.max_streams}"
            )
        if self.forward_prices_max_age_s is not None and not self.forward_prices_max_age_s > 0:
            raise ValueError(
                f"forward_prices_max_age_s must be positive, got {self.forward_prices_max_age_s}"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        positive = ("quote_ttl_s", "solver_time_limit_s", "alert_poll_s", "health_probe_s")
        for name in (*positive, "db_connect_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.hold_ttl_s <= MAX_HOLD_TTL_S:
            raise ValueError(
                f"hold_ttl_s must be in (0, {MAX_HOLD_TTL_S:g}] (holds are short), "
                f"got {self.hold_ttl_s}"
            )
        for name in ("hold_units_per_caller", "hold_units_anonymous"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.overdue_sweep_s >= 0:
            raise ValueError(f"overdue_sweep_s must not be negative, got {self.overdue_sweep_s}")

    def __repr__(self) -> str:
        return redacted_repr(self, SECRET_FIELDS)

    @property
    def stream_slots(self) -> int:
        """``max_streams``, or a quarter of ``threads`` (at least 1, always below ``threads``)."""
        if self.max_streams is not None:
            return self.max_streams
        return min(max(1, self.threads // 4), self.threads - 1)

    @property
    def solver_slots(self) -> int:
        """``cpu_slots``, or by store when unset: 1 on SQLite, 2 on PostgreSQL.

        On the embedded store a call's work is all CPU in this process, so a
        second call at once only takes turns at the GIL (measured: 7-10% more
        CPU per quote and fewer quotes/s with 2 than with 1). On PostgreSQL a
        call also waits on the database server, and a second call fills those
        waits (12% more orders/s with 2 than with 1).
        """
        if self.cpu_slots is not None:
            return self.cpu_slots
        return 1 if self.database_url.startswith("sqlite") else 2

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``OMS_<FIELD>`` variables, then ``overrides`` that are not None.

        A secret may instead come from the file ``OMS_<FIELD>_FILE`` names (not both).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in SECRET_FIELDS:
            variable = f"OMS_{name.upper()}"
            path = env.get(f"{variable}_FILE")
            if path:
                if env.get(variable):
                    raise ValueError(f"set {variable} or {variable}_FILE, not both")
                values[name] = read_token_file(path, f"{variable}_FILE")
        for f in fields(cls):
            raw = env.get(f"OMS_{f.name.upper()}")
            if raw is None or raw == "" or f.name in values:
                continue
            default = getattr(cls(), f.name)
            if default is None:  # optional: its annotation ("int | None", ...) says which
                annotation = str(f.type)
                kind: type = (
                    int
                    if annotation.startswith("int")
                    else float
                    if annotation.startswith("float")
                    else str
                )
            else:
                kind = type(default)
            if kind is bool:
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
                continue
            try:
                values[f.name] = kind(raw)
            except ValueError as exc:
                raise ValueError(
                    f"OMS_{f.name.upper()}: {raw!r} is not a valid {kind.__name__}"
                ) from exc
        settings = cls(**values)
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
