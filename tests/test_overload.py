"""Overload and deadlines (issue 13 items 3 and 7): calls that cannot finish in time are
shed without running, a standing queue serves the newest first, the access log times
calls from their arrival, and waits deep in the store and the solver end with the
caller's deadline.

Waits are imposed by the tests (a parked store read, a held lock); what is
asserted is behaviour (who ran, what was logged, which code came back), never
how fast something was.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from oms import deadlines
from oms.admission import (
    LIFO_AFTER_BUDGET_SHARE,
    MAX_WAIT_WITHOUT_DEADLINE_S,
    AdaptiveLifoQueue,
    Admission,
)
from oms.errors import DeadlineExceeded
from oms.logging import JsonFormatter
from oms.v1 import checkout_pb2, common_pb2, inventory_pb2
from test_admission import _request, _wait_for, parked_quotes

from service_support import ADMIN, NYC, hand_network, prepared_store, running_server, sqlite_url


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Context:
    """The two things admission asks of a grpc context."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float | None:
        return self.remaining

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("oms.access")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield buffer
    logger.removeHandler(handler)
    logger.setLevel(saved)


def _access_lines(buffer: io.StringIO, method: str) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return [p for p in parsed if p["logger"] == "oms.access" and p["method"].endswith(method)]


# ------------------------------------------------------------------ admission, in-process


def test_a_call_with_less_time_left_than_a_call_takes_is_shed_at_once() -> None:
    clock = FakeClock()
    admission = Admission(1, clock=clock)
    with admission.slot(Context(5.0), "Quote"):  # type: ignore[arg-type]
        clock.now += 0.25  # this call took 250 ms
    assert admission.expected_service_s("Quote") == pytest.approx(0.25)
    ran = []
    late = Context(0.1)
    with pytest.raises(RuntimeError), admission.slot(late, "Quote"):  # type: ignore[arg-type]
        ran.append(True)
    assert not ran  # the slot was free, yet the handler never ran
    assert late.aborted is not None
    code, details = late.aborted
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "not started" in details and "250 ms" in details
    # Another method has its own average: a short call there still runs.
    with admission.slot(Context(0.1), "Other"):  # type: ignore[arg-type]
        ran.append(True)
    assert ran == [True]


def _queued(admission: Admission, order: list[str], name: str) -> threading.Thread:
    def run() -> None:
        with admission.slot(Context(None), name):  # type: ignore[arg-type]
            order.append(name)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _waiting(admission: Admission, count: int) -> None:
    _wait_for(lambda: len(admission._waiters) == count)


def test_a_queue_that_drains_in_time_is_fifo_else_the_newest_goes_first() -> None:
    clock = FakeClock()
    admission = Admission(1, clock=clock)
    order: list[str] = []
    # Callers without a deadline may wait MAX_WAIT_WITHOUT_DEADLINE_S; nobody has
    # used half of that yet: first come, first served.
    with admission.slot(Context(None), "holder"):  # type: ignore[arg-type]
        first = _queued(admission, order, "first")
        _waiting(admission, 1)
        second = _queued(admission, order, "second")
        _waiting(admission, 2)
        assert not admission.overloaded()
    first.join(5), second.join(5)
    assert order == ["first", "second"]

    order.clear()
    with admission.slot(Context(None), "holder"):  # type: ignore[arg-type]
        old = _queued(admission, order, "old")
        _waiting(admission, 1)
        # The oldest waiter has used more than half of its budget: FIFO would
        # serve the call nearest its limit.
        clock.now += (LIFO_AFTER_BUDGET_SHARE + 0.1) * MAX_WAIT_WITHOUT_DEADLINE_S
        new = _queued(admission, order, "new")
        _waiting(admission, 2)
        assert admission.overloaded()
    old.join(5), new.join(5)
    assert order == ["new", "old"]


class _GrpcEvent:
    """The part of grpc's rpc event the call queue reads: the caller's epoch deadline."""

    def __init__(self, deadline: float) -> None:
        self.call_details = type("CallDetails", (), {"deadline": deadline})()


class _WorkItem:
    def __init__(self, name: str, deadline: float | None = None) -> None:
        self.name = name
        self.args = (None, None, _GrpcEvent(deadline)) if deadline is not None else ()


def test_the_call_queue_hands_out_expired_calls_first_then_fifo_or_newest() -> None:
    clock, wall = FakeClock(), FakeClock()
    work = AdaptiveLifoQueue(clock=clock, wall_clock=wall)
    names = lambda n: [work.get().name for _ in range(n)]  # noqa: E731
    for name in ("a", "b", "c"):
        work.put(_WorkItem(name, deadline=wall.now + 1.0))
    assert names(1) == ["a"]  # fresh queue: FIFO
    clock.now += 0.6  # "b" has used 60% of its 1 s
    assert work.overloaded()
    work.put(_WorkItem("d", deadline=wall.now + 1.0))
    assert names(2) == ["d", "c"]
    work.put(_WorkItem("e", deadline=wall.now + 1.0))
    clock.now += 0.5  # "b" is past its deadline: handed out first (grpc discards it)
    assert names(2) == ["b", "e"]
    assert not work.overloaded()  # drained
    # Items that are not grpc calls have no deadline; a shutdown marker comes last.
    work.put(_WorkItem("f")), work.put(None), work.put(_WorkItem("g"))
    assert [work.get().name, work.get().name, work.get()] == ["f", "g", None]


# ------------------------------------------------------------------ over a real channel


def _slow_quotes(client: Any, seconds: float) -> None:
    original = client.store.network_for

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return original(*args, **kwargs)

    client.store.network_for = slow


def test_a_deadline_shorter_than_the_work_is_shed_without_running(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), cpu_slots=1) as client:
        _slow_quotes(client, 0.4)  # every quote now takes 400 ms or more
        for _ in range(2):
            assert client.checkout.QuoteDeliveryOptions(_request(), timeout=20).options
        with parked_quotes(client) as (release, entered):
            release.set()  # count the calls that reach the store, without holding them
            with pytest.raises(grpc.RpcError) as shed:
                client.checkout.QuoteDeliveryOptions(_request(), timeout=0.2)
            # The server answered, before the client's own timer: the handler never ran.
            assert shed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "not started" in (shed.value.details() or "")
            assert entered[0] == 0


def test_the_access_log_times_a_call_from_its_arrival(
    tmp_path: Path, access_log: io.StringIO
) -> None:
    """One thread: the second call waits in grpc's queue until the first is released."""
    with (
        running_server(sqlite_url(tmp_path), cpu_slots=1, threads=1) as client,
        parked_quotes(client) as (release, entered),
    ):
        first = client.checkout.QuoteDeliveryOptions.future(
            _request(), timeout=20, metadata=(("x-request-id", "first"),)
        )
        _wait_for(lambda: entered[0] == 1)
        sent = time.monotonic()
        second = client.checkout.QuoteDeliveryOptions.future(
            _request(), timeout=20, metadata=(("x-request-id", "second"),)
        )
        threading.Event().wait(0.5)  # the only thread is busy: the call queues
        release.set()
        assert first.result().options
        assert second.result().options
        seen_ms = 1000 * (time.monotonic() - sent)
    logged = {
        line["request_id"]: line
        for line in _access_lines(access_log, "QuoteDeliveryOptions")
        if line["request_id"] in ("first", "second")
    }
    assert set(logged) == {"first", "second"}
    queued = logged["second"]
    # It queued at least most of the 0.5 s imposed; its logged time includes that wait
    # and is no more than the client saw.
    assert queued["queue_ms"] >= 250
    assert queued["queue_ms"] <= queued["duration_ms"] <= seen_ms


def test_a_caller_gone_while_queued_for_a_thread_is_never_worked_on(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), cpu_slots=1, threads=1) as client:
        with parked_quotes(client) as (release, entered):
            first = client.checkout.QuoteDeliveryOptions.future(_request(), timeout=20)
            _wait_for(lambda: entered[0] == 1)
            with pytest.raises(grpc.RpcError) as late:
                client.checkout.QuoteDeliveryOptions(_request(), timeout=0.3)
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            release.set()
            assert first.result().options
        # The thread is free again: a fresh call runs, and the stale one never did.
        assert client.checkout.QuoteDeliveryOptions(_request(), timeout=20).options
        assert entered[0] == 1


# ------------------------------------------------------------------ waits below the servicer


def test_the_sqlite_write_lock_is_not_waited_for_past_the_deadline(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    store = prepared_store(url, hand_network(), None)
    # Another server process holds the writer's lock.
    other = os.open(f"{tmp_path / 'oms.db'}.writelock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(other, fcntl.LOCK_EX)
    outcome: list[BaseException | None] = []

    def write_within(seconds: float) -> None:
        try:
            with deadlines.call_scope(seconds, time.monotonic()), store.write():
                outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    writer = threading.Thread(target=write_within, args=(0.2,), daemon=True)
    writer.start()
    writer.join(10)
    stuck = writer.is_alive()
    fcntl.flock(other, fcntl.LOCK_UN)
    os.close(other)
    writer.join(10)
    assert not stuck, "the writer waited for the lock past its caller's deadline"
    assert len(outcome) == 1 and isinstance(outcome[0], DeadlineExceeded)
    assert "write lock" in str(outcome[0])
    # Without a deadline (CLI, batch) and with the lock free, writing works as before.
    with store.write():
        pass
    store.dispose()


def test_re_sourcing_in_place_order_solves_within_the_callers_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import oms.checkout

    limits: list[float] = []
    real_quote = oms.checkout.quote

    def recording_quote(network: Any, order: Any, settings: Any) -> Any:
        limits.append(settings.time_limit_s)
        return real_quote(network, order, settings)

    monkeypatch.setattr(oms.checkout, "quote", recording_quote)
    network = hand_network({("DC-NJ", "A"): 1})
    # The solver's own limit (30 s) is far beyond the caller's 5 s deadline.
    with running_server(
        sqlite_url(tmp_path), network, hold_stock=False, solver_time_limit_s=30.0
    ) as client:
        quote = client.checkout.QuoteDeliveryOptions(
            checkout_pb2.QuoteDeliveryOptionsRequest(
                destination=NYC, lines=[common_pb2.CartLine(sku="A", quantity=2)]
            ),
            timeout=5,
        )
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="ST-PHL", sku="A", on_hand=0, reason="count"),
            metadata=ADMIN,
        )
        cheapest = next(o for o in quote.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels)
        placed = client.checkout.PlaceOrder(
            checkout_pb2.PlaceOrderRequest(
                quote_id=quote.quote_id, option_id=cheapest.option_id, idempotency_key="k-1"
            ),
            timeout=5,
        )
    assert placed.resourced
    assert len(limits) == 2  # the quote, then the re-sourcing inside PlaceOrder
    assert all(0 < limit <= 5 for limit in limits)


def test_a_caller_gone_stops_the_solver_before_it_builds_a_cp_sat_model() -> None:
    """A 150-line cart: building CP-SAT's model alone took hundreds of ms past the time
    limit. Once the caller has gone (or the time is up) no model is built; the best plan
    found so far is returned with its gap."""
    import numpy as np

    from sourcing import quote
    from sourcing.demo import demo_network, demo_order
    from sourcing.model import QuoteSettings

    network = demo_network()
    order = demo_order(network, np.random.default_rng(0), 150)
    result = quote(
        network,
        order,
        QuoteSettings(time_limit_s=30, num_workers=1, should_stop=lambda: True),
    )
    assert result.stats.cpsat_calls == 0
    assert result.options
    assert all(o.proof.status == "FEASIBLE" and o.proof.gap > 0 for o in result.options)
