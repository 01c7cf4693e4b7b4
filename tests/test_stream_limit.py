"""Open streams never starve unary calls or health checks (issue 13, item 6).

Each open server stream keeps one of the process's RPC threads; 16
``WatchLowStockAlerts`` streams used to take all 16, and quotes and health
checks then timed out. Streams are capped per process (a quarter of the
threads by default); the test opens more than the cap over a real loopback
channel, checks the ones beyond it are refused RESOURCE_EXHAUSTED with a
clear message, and that quotes and health checks all succeed meanwhile.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from oms.settings import Settings
from oms.v1 import inventory_pb2

from service_support import ADMIN, running_server, sqlite_url

WATCH = inventory_pb2.WatchLowStockAlertsRequest(skus=["A"])


def _first(stream: grpc.Call) -> str:
    """``ALERT`` for a stream that is open and sent its first alert, else its status."""
    try:
        next(stream)  # type: ignore[call-overload]
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return "ALERT"


def test_streams_beyond_the_cap_are_refused_and_unary_calls_keep_their_threads(
    tmp_path: Path,
) -> None:
    with running_server(sqlite_url(tmp_path), threads=16) as client:
        assert Settings(threads=16).stream_slots == 4
        inv = client.inventory
        inv.SetStock(  # a low position, so each open stream sends an alert at once
            inventory_pb2.SetStockRequest(
                node_id="ST-PHL", sku="A", on_hand=5, low_stock_threshold=10, reason="threshold"
            ),
            metadata=ADMIN,
        )
        streams, outcomes = [], []
        for _ in range(20):  # one after the other: the first four are open when the fifth comes
            streams.append(inv.WatchLowStockAlerts(WATCH, metadata=ADMIN, timeout=20))
            outcomes.append(_first(streams[-1]))
        assert outcomes[:4] == ["ALERT"] * 4
        refused = outcomes[4:]
        assert all(o.startswith("RESOURCE_EXHAUSTED: ") for o in refused), refused
        assert "already serves 4 streams, its limit" in refused[0]
        try:
            next(streams[4])  # type: ignore[call-overload]
        except grpc.RpcError as exc:
            status = rpc_status.from_call(exc)  # type: ignore[arg-type]
        assert status is not None
        info = error_details_pb2.ErrorInfo()
        assert any(d.Unpack(info) for d in status.details)
        assert info.reason == "STREAM_LIMIT"

        # Four streams hold their threads; 24 quotes at once and health checks still answer.
        health = health_pb2_grpc.HealthStub(client.channel)

        def quote(_: int) -> int:
            return len(client.quote({"A": 1}).options)

        with ThreadPoolExecutor(24) as pool:
            checks = [
                pool.submit(health.Check, health_pb2.HealthCheckRequest(), timeout=5)
                for _ in range(8)
            ]
            assert all(n > 0 for n in pool.map(quote, range(24)))
            assert all(c.result().status == health_pb2.HealthCheckResponse.SERVING for c in checks)

        # A stream that ends gives its slot back.
        streams[0].cancel()
        deadline = time.monotonic() + 5
        while True:
            again = inv.WatchLowStockAlerts(WATCH, metadata=ADMIN, timeout=20)
            outcome = _first(again)
            if outcome == "ALERT" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert outcome == "ALERT"
        for stream in [again, *streams]:
            stream.cancel()


def test_the_stream_cap_must_leave_threads_for_unary_calls() -> None:
    with pytest.raises(ValueError, match=r"max_streams must be in 0\.\.threads-1 \(7\)"):
        Settings(threads=8, max_streams=8)
    assert Settings(threads=1).stream_slots == 0  # one thread: it is the unary calls'
    assert Settings(threads=8, max_streams=6).stream_slots == 6
