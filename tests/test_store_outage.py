"""A store that fails is reported truthfully and discreetly (issue 13, item 16).

* Health answers NOT_SERVING while the store cannot be reached, and SERVING
  again once it is back (a real PostgreSQL whose database stops accepting
  connections; skips without one).
* The driver's text (host, port, database name, relation) never reaches a
  client: UNAVAILABLE and ABORTED carry a fixed message; the text goes to the
  server's log instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.exc import OperationalError

from oms.server import SERVICE_NAMES

from service_support import PG_SERVER_URL, Client, running_server, sqlite_url

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(client: Client, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(client.channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def _eventually(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout_s:.0f} s")
        time.sleep(0.1)


def _quote_error(client: Client) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        client.quote({"A": 1})
    return caught.value


def test_health_is_not_serving_while_postgresql_refuses_and_serving_once_back(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = pg_url.rsplit("/", 1)[1]
    admin_url = PG_SERVER_URL.replace("postgresql+psycopg://", "postgresql://")
    with (
        running_server(pg_url, health_probe_s=0.2) as client,
        psycopg.connect(admin_url, autocommit=True) as admin,
    ):
        assert _health(client) == SERVING
        assert client.quote({"A": 1}).options
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
        try:
            error = _quote_error(client)
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert error.details() == "the store is unavailable; retry later"
            _eventually(lambda: _health(client) == NOT_SERVING, 10, "NOT_SERVING")
            assert all(_health(client, name) == NOT_SERVING for name in SERVICE_NAMES)
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        _eventually(lambda: _health(client) == SERVING, 10, "SERVING again")
        assert client.quote({"A": 1}).options
    # The operator's log has the driver's reason (the client did not).
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "not currently accepting connections" in logged


class _FailingEngine:
    """The store's engine, except that every connection attempt raises ``error``."""

    def __init__(self, engine: Any, error: Exception) -> None:
        self._engine = engine
        self._error = error

    def connect(self) -> Any:
        raise self._error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


DRIVER_TEXTS = {
    # (what the driver said, the status, the one message a client gets)
    "unavailable": (
        'connection to server at "10.20.30.40", port 6432 failed: FATAL:  database '
        '"prod_orders" does not exist',
        grpc.StatusCode.UNAVAILABLE,
        "the store is unavailable; retry later",
    ),
    "aborted": (
        'canceling statement due to lock timeout on relation "stock" of database "prod_orders"',
        grpc.StatusCode.ABORTED,
        "lost a race with a concurrent writer; retry",
    ),
}


@pytest.mark.parametrize("case", sorted(DRIVER_TEXTS))
def test_the_driver_text_reaches_the_log_and_never_the_client(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text, code, message = DRIVER_TEXTS[case]
    with running_server(sqlite_url(tmp_path), health_probe_s=60) as client:
        db = client.store.db  # the database every repository reads and writes through
        engine = db.engine
        db.engine = _FailingEngine(  # type: ignore[assignment]
            engine, OperationalError("SELECT 1", {}, Exception(text))
        )
        try:
            error = _quote_error(client)
        finally:
            db.engine = engine
    assert error.code() == code
    assert error.details() == message
    sent = error.details() + repr(error.trailing_metadata())
    for secret in ("10.20.30.40", "6432", "prod_orders", "stock"):
        assert secret not in sent
    assert any(text.splitlines()[0] in r.getMessage() for r in caplog.records)
