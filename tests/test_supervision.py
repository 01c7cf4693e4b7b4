"""``oms serve --workers N`` survives the death of a worker (issue 13, item 5).

The end-to-end test runs the real command, maps each client connection to
the worker process at its other end (psutil reads both ends' sockets), keeps
calling on every connection, SIGKILLs one worker, and checks that no call on
a connection to a surviving worker failed, that the parent kept running and
that a new worker took the dead one's place and serves. The supervisor's
crash-loop bound is tested on processes that die as soon as they start.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from oms.supervisor import RestartPolicy, Supervisor
from oms.v1 import checkout_pb2, checkout_pb2_grpc, common_pb2

from service_support import NYC, hand_network, prepared_store, server_process, sqlite_url


def _listening_workers(parent: int, port: int) -> set[int]:
    """Children of ``parent`` listening on ``port`` (the grpc workers)."""
    found = set()
    for child in psutil.Process(parent).children():
        try:
            connections = child.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections):
            found.add(child.pid)
    return found


def _wait_for(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def _our_ports(port: int) -> set[int]:
    """Local ports of this process's connections to ``port``."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }


def _worker_of(local_port: int, workers: set[int], port: int) -> int:
    """The worker holding the server end of our connection from ``local_port``."""
    for pid in workers:
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.laddr.port == port and c.raddr and c.raddr.port == local_port:
                return pid
    raise AssertionError(f"no worker holds the connection from port {local_port}")


def _connect(target: str, port: int, workers: set[int]) -> tuple[grpc.Channel, int]:
    """A channel with a connection of its own, and the worker it reached."""
    before = _our_ports(port)
    # A local subchannel pool: channels would otherwise share one connection.
    channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    new = _our_ports(port) - before
    assert len(new) == 1, f"expected one new connection, found {sorted(new)}"
    return channel, _worker_of(new.pop(), workers, port)


QUOTE = checkout_pb2.QuoteDeliveryOptionsRequest(
    destination=NYC, lines=[common_pb2.CartLine(sku="A", quantity=1)]
)


def test_a_killed_worker_is_replaced_and_the_others_keep_serving(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    prepared_store(url, hand_network()).dispose()
    with server_process(url, 2) as (target, process):
        port = int(target.rsplit(":", 1)[1])
        _wait_for(lambda: len(_listening_workers(process.pid, port)) == 2, 60, "two workers")
        workers = _listening_workers(process.pid, port)
        # Connections until both workers have some (SO_REUSEPORT spreads them by hash).
        channels: list[tuple[grpc.Channel, int]] = []
        while len({w for _, w in channels}) < 2 or len(channels) < 6:
            assert len(channels) < 40, "every connection reached the same worker"
            channels.append(_connect(target, port, workers))
        victim = channels[0][1]
        survivor = next(iter(workers - {victim}))

        stop = threading.Event()
        outcomes: dict[int, list[str]] = {i: [] for i in range(len(channels))}

        def call(i: int, channel: grpc.Channel) -> None:
            stub = checkout_pb2_grpc.CheckoutServiceStub(channel)
            while not stop.is_set():
                try:
                    stub.QuoteDeliveryOptions(QUOTE, timeout=10)
                    outcomes[i].append("OK")
                except grpc.RpcError as exc:
                    outcomes[i].append(f"{exc.code().name}: {exc.details()}")
                    time.sleep(0.05)

        threads = [
            threading.Thread(target=call, args=(i, ch), daemon=True)
            for i, (ch, _) in enumerate(channels)
        ]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            assert process.poll() is None, f"oms serve exited with {process.returncode}"
            # Not the victim: killed, it can still show its listening socket for a moment.
            return len(_listening_workers(process.pid, port) - {survivor, victim}) == 1

        _wait_for(replaced, 60, "a new worker in the killed one's place")
        calls_before = {i: len(o) for i, o in outcomes.items()}
        time.sleep(2.0)  # the new worker serves; the old connections have reconnected
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        assert process.poll() is None, f"oms serve exited with {process.returncode}"

        for i, (_, worker) in enumerate(channels):
            if worker == survivor:
                failures = [o for o in outcomes[i] if o != "OK"]
                assert not failures, f"calls on the surviving worker failed: {failures[:3]}"
            else:  # connections to the dead worker reconnect and succeed again
                assert outcomes[i][-1] == "OK", outcomes[i][-3:]
            assert "OK" in outcomes[i][calls_before[i] :], f"connection {i} stopped serving"

        (new_worker,) = _listening_workers(process.pid, port) - {survivor}
        assert new_worker != victim
        reached = {_connect(target, port, {survivor, new_worker})[1] for _ in range(40)}
        assert new_worker in reached, "no connection reached the new worker"
        for channel, _ in channels:
            channel.close()


def test_a_crash_loop_gives_up_with_one_clear_line(caplog: pytest.LogCaptureFixture) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    started: list[float] = []

    def crashing() -> multiprocessing.process.BaseProcess:
        started.append(time.monotonic())
        return ctx.Process(target=os._exit, args=(3,))

    policy = RestartPolicy(max_deaths=4, window_s=60.0, first_delay_s=0.05, max_delay_s=0.2)
    supervisor = Supervisor(crashing, 2, policy)
    with caplog.at_level(logging.WARNING, logger="oms.server"):
        assert supervisor.run() == 1
    assert supervisor.gave_up
    # Two first starts, then a respawn per death until the 4th (one may be starting then).
    assert 4 <= len(started) <= 5
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "crash loop" in errors[0] and "giving up" in errors[0]
    respawns = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert all("starting a new one" in r.getMessage() for r in respawns)


def test_a_stop_ends_the_workers_and_respawns_none() -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    made: list[multiprocessing.process.BaseProcess] = []

    def sleeper() -> multiprocessing.process.BaseProcess:
        made.append(ctx.Process(target=time.sleep, args=(60,)))
        return made[-1]

    supervisor = Supervisor(sleeper, 2)
    timer = threading.Timer(3.0, supervisor.stop)
    timer.start()
    assert supervisor.run() == 0
    assert len(made) == 2
    assert all(p.exitcode == -signal.SIGTERM for p in made)
