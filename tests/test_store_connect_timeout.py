"""A PostgreSQL host that silently stops answering costs a bounded wait, not minutes.

The stand-in for a partitioned database host is a local listener that accepts
TCP connections and never sends a byte: the handshake completes, so only
libpq's ``connect_timeout`` (which covers the whole start-up) ends the wait.
(10.255.255.1 is not blackholed on every machine: here it connects at once.)
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.exc import OperationalError

from oms.errors import Unavailable
from oms.settings import Settings
from oms.store import make_engine
from oms.store.database import Database, connect_timeout_from_env

from service_support import Client, running_server, sqlite_url

# The test's own limit: the default wait (without connect_timeout) is unbounded here.
FAIL_WITHIN_S = 10.0


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A PostgreSQL URL whose server accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_hold() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_hold, daemon=True)
    thread.start()
    try:
        yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/test"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def _seconds_to_fail(engine_url: str, **kwargs: float) -> float:
    engine = make_engine(engine_url, pool_size=1, **kwargs)
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError, match="timeout"):
            engine.connect()
    finally:
        engine.dispose()
    return time.monotonic() - started


def test_a_silent_server_fails_the_connect_within_the_configured_timeout(
    silent_url: str,
) -> None:
    # psycopg waits at least 2 s whatever it is given (as libpq does).
    assert _seconds_to_fail(silent_url, connect_timeout_s=1) < FAIL_WITHIN_S


def test_a_connect_timeout_in_the_url_wins_over_the_setting(silent_url: str) -> None:
    assert (
        _seconds_to_fail(silent_url + "?connect_timeout=1", connect_timeout_s=600) < FAIL_WITHIN_S
    )


def test_the_default_timeout_comes_from_the_environment(
    silent_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert connect_timeout_from_env({}) == 5.0
    assert connect_timeout_from_env({"OMS_DB_CONNECT_TIMEOUT_S": "2.5"}) == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ValueError, match="OMS_DB_CONNECT_TIMEOUT_S"):
            connect_timeout_from_env({"OMS_DB_CONNECT_TIMEOUT_S": bad})
    # The server reads the same variable through its Settings.
    assert Settings.from_env({"OMS_DB_CONNECT_TIMEOUT_S": "3"}).db_connect_timeout_s == 3.0
    with pytest.raises(ValueError, match="db_connect_timeout_s must be positive"):
        Settings.from_env({"OMS_DB_CONNECT_TIMEOUT_S": "0"})
    monkeypatch.setenv("OMS_DB_CONNECT_TIMEOUT_S", "1")
    assert _seconds_to_fail(silent_url) < FAIL_WITHIN_S


def test_the_store_reports_a_silent_server_as_unavailable(silent_url: str) -> None:
    db = Database(silent_url, pool_size=1, connect_timeout_s=1)
    started = time.monotonic()
    try:
        with (
            pytest.raises(Unavailable, match="the store is unavailable; retry later"),
            db.read() as conn,
        ):
            conn.exec_driver_sql("SELECT 1")
    finally:
        db.dispose()
    assert time.monotonic() - started < FAIL_WITHIN_S


def test_a_caller_gets_unavailable_with_the_fixed_text_not_a_hang(
    silent_url: str, tmp_path: Path
) -> None:
    with running_server(sqlite_url(tmp_path), health_probe_s=60) as client:
        db = client.store.db  # the database every repository reads and writes through
        engine = db.engine
        db.engine = make_engine(silent_url, pool_size=1, connect_timeout_s=1)
        started = time.monotonic()
        try:
            with pytest.raises(grpc.RpcError) as caught:
                client.quote({"A": 1})
        finally:
            db.engine.dispose()
            db.engine = engine
    assert time.monotonic() - started < FAIL_WITHIN_S
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "the store is unavailable; retry later"
    assert "127.0.0.1" not in caught.value.details()


def _health(client: Client) -> int:
    stub = health_pb2_grpc.HealthStub(client.channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def _eventually(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout_s:.0f} s")
        time.sleep(0.1)


def test_health_recovers_once_a_silent_store_answers_again(silent_url: str, tmp_path: Path) -> None:
    # A probe stuck in connect() kept health NOT_SERVING even after the store came back:
    # the probe never starts a new call while the last one still hangs.
    with running_server(sqlite_url(tmp_path), health_probe_s=0.2) as client:
        db = client.store.db
        engine = db.engine
        assert _health(client) == health_pb2.HealthCheckResponse.SERVING
        db.engine = make_engine(silent_url, pool_size=1, connect_timeout_s=1)
        silent = db.engine
        try:
            _eventually(
                lambda: _health(client) == health_pb2.HealthCheckResponse.NOT_SERVING,
                FAIL_WITHIN_S,
                "NOT_SERVING",
            )
        finally:
            db.engine = engine
        _eventually(
            lambda: _health(client) == health_pb2.HealthCheckResponse.SERVING,
            FAIL_WITHIN_S,
            "SERVING again",
        )
        silent.dispose()
