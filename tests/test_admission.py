"""Admission control over a real loopback channel: a few heavy calls at once, the rest queue.

Each test parks quotes inside their solver slot (the store read they make
first blocks on an event), so which calls run, wait or are turned away is
decided by the slots alone, not by timing luck.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from oms.admission import Admission
from oms.v1 import checkout_pb2, common_pb2

from service_support import NYC, Client, running_server, sqlite_url


def _request() -> checkout_pb2.QuoteDeliveryOptionsRequest:
    return checkout_pb2.QuoteDeliveryOptionsRequest(
        destination=NYC, lines=[common_pb2.CartLine(sku="A", quantity=1)]
    )


@contextmanager
def parked_quotes(client: Client) -> Iterator[tuple[threading.Event, list[int]]]:
    """Make every quote block in its first stock read until the event is set.

    Yields the event and a live count of quotes that have reached the store.
    """
    release = threading.Event()
    entered: list[int] = [0]
    lock = threading.Lock()
    original = client.store.network_for

    def blocking_network_for(*args: Any, **kwargs: Any) -> Any:
        with lock:
            entered[0] += 1
        release.wait(timeout=30)
        return original(*args, **kwargs)

    client.store.network_for = blocking_network_for  # type: ignore[method-assign]
    try:
        yield release, entered
    finally:
        release.set()
        client.store.network_for = original  # type: ignore[method-assign]


def _wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


def test_calls_beyond_the_slots_wait_and_then_run(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), cpu_slots=2) as client:
        with parked_quotes(client) as (release, entered):
            futures = [
                client.checkout.QuoteDeliveryOptions.future(_request(), timeout=20)
                for _ in range(3)
            ]
            _wait_for(lambda: entered[0] == 2)
            # The third call is queued on a slot: it has not touched the store.
            threading.Event().wait(0.3)
            assert entered[0] == 2
            release.set()
            replies = [f.result() for f in futures]
        assert entered[0] == 3
        assert all(r.quote_id and r.options for r in replies)


def test_a_queued_call_whose_deadline_passes_is_refused_without_work(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), cpu_slots=1) as client:
        with parked_quotes(client) as (release, entered):
            first = client.checkout.QuoteDeliveryOptions.future(_request(), timeout=20)
            _wait_for(lambda: entered[0] == 1)
            with pytest.raises(grpc.RpcError) as refused:
                client.checkout.QuoteDeliveryOptions(_request(), timeout=0.5)
            assert refused.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # It never reached the store, and the parked call still completes.
            assert entered[0] == 1
            release.set()
            assert first.result().options
        # With the slot free again, a fresh call runs normally.
        assert client.quote({"A": 1}).options


def test_the_server_says_why_it_refused(tmp_path: Path) -> None:
    """The server's own refusal (not the client's timer) names the slots."""

    class Context:
        def __init__(self, remaining: float) -> None:
            self.remaining = remaining
            self.aborted: tuple[grpc.StatusCode, str] | None = None

        def time_remaining(self) -> float:
            return self.remaining

        def abort(self, code: grpc.StatusCode, details: str) -> None:
            self.aborted = (code, details)
            raise RuntimeError("aborted")

    def waits(outcome: str) -> float:
        return (
            REGISTRY.get_sample_value("oms_admission_wait_seconds_count", {"outcome": outcome})
            or 0.0
        )

    refused_before, admitted_before = waits("refused"), waits("admitted")
    admission = Admission(1)
    with admission.slot(Context(5.0)):  # type: ignore[arg-type]
        late = Context(0.05)
        with pytest.raises(RuntimeError), admission.slot(late):  # type: ignore[arg-type]
            pass
    assert late.aborted is not None
    # Both waits are on the metrics: the admitted one and the refused one.
    assert (
        REGISTRY.get_sample_value("oms_admission_wait_seconds_count", {"outcome": "refused"})
        == refused_before + 1
    )
    assert (
        REGISTRY.get_sample_value("oms_admission_wait_seconds_count", {"outcome": "admitted"})
        == admitted_before + 1
    )
    code, details = late.aborted
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "1 solver slots" in details
    # Released on the way out: the next caller gets the slot at once. (Not a 50 ms
    # caller: the first block's time in its slot, the refused wait included, is now
    # what a call is expected to take, and a 50 ms deadline could not cover it.)
    with admission.slot(Context(5.0)):  # type: ignore[arg-type]
        pass


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Admission(0)


def test_callers_without_a_deadline_queue_instead_of_failing(tmp_path: Path) -> None:
    """No deadline: grpc reports ~9.2e18 s remaining, too long for a lock timeout.

    Four callers with no deadline overlap on one slot; every call must queue and
    succeed (it used to raise OverflowError inside acquire: INTERNAL for 70 of 100).
    """
    with running_server(sqlite_url(tmp_path), cpu_slots=1) as client:
        with parked_quotes(client) as (release, entered):
            futures = [client.checkout.QuoteDeliveryOptions.future(_request()) for _ in range(4)]
            _wait_for(lambda: entered[0] == 1)
            release.set()
            codes = []
            for future in futures:
                try:
                    codes.append(grpc.StatusCode.OK if future.result().options else None)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
        assert codes == [grpc.StatusCode.OK] * 4
        assert entered[0] == 4


def test_an_unbounded_deadline_does_not_overflow_the_wait() -> None:
    class Context:
        def time_remaining(self) -> float:
            return 9.2e18

        def abort(self, code: grpc.StatusCode, details: str) -> None:
            raise AssertionError(f"aborted: {code} {details}")

    admission = Admission(1)
    held = threading.Event()
    done = threading.Event()

    def holder() -> None:
        with admission.slot(Context()):  # type: ignore[arg-type]
            held.set()
            done.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    threading.Timer(0.2, done.set).start()
    with admission.slot(Context()):  # type: ignore[arg-type]
        pass
    thread.join(5)
    assert not thread.is_alive()
