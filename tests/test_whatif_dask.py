"""What-if replays on a real Dask LocalCluster give the serial run's tables."""

from __future__ import annotations

import io
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import psutil
import pytest

from sourcing.cli import main
from sourcing.whatif.report import kpi_table
from sourcing.whatif.scenario import REPLAY_WEIGHTS, WhatIf, load_scenario, prepare_scenario
from sourcing.whatif.segments import independent_spans
from sourcing.whatif.simulate import SimulationResult
from sourcing.whatif.sweep import (
    REPLAY_CLUSTER_CONFIG,
    ReplayTask,
    pack_orders,
    replay_cluster,
    run_replays,
    run_replays_with,
    start_worker_server,
    stop_worker_server,
    submission_order,
    unpack_orders,
)

SCENARIO = """
[scenario]
name = "small"

[network]
demo = true

[orders]
generate = true
count = 120
seed = 3
per_day = 40
start = 2024-03-04T00:00:00

[replenishment]
top_up_every_days = 1

[policies]
run = ["greedy_nearest", "optimiser_cheapest", "optimiser_forward"]

[[variants]]
name = "scarce"
edits = [{ type = "set_cover", days = 2 }]

[[variants]]
name = "close_dc_ord"
edits = [
    { type = "set_cover", days = 2 },
    { type = "close_node", node = "DC-ORD", transfer_to = "DC-IND" },
]
"""

#: Wall-clock columns: the only ones that may differ between two runs.
TIMING = ["solver_ms_per_order"]


def test_dask_sweep_equals_the_serial_run(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    path = tmp_path / "small.toml"
    path.write_text(SCENARIO)
    prepared = prepare_scenario(load_scenario(path))
    serial = prepared.run()
    seen: list[int] = []
    from distributed import get_task_stream

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
        get_task_stream(client) as tasks,
    ):
        parallel = prepared.run(progress=seen.append, client=client)
    assert sum(seen) == prepared.decisions == 2 * 3 * 120
    # The rule's and the optimiser's replays ran as a piece per day (daily top-ups);
    # forward pricing, which learns from the orders it has seen, as one.
    stream = sorted(prepared.orders, key=lambda o: o.created_at)
    days = len(independent_spans(stream, prepared.replenishment))
    assert days >= 3
    pieces = Counter(
        int(str(r["key"]).split("-")[2]) for r in tasks.data if "replay" in str(r["key"])
    )
    names = [name for _ in prepared.networks for name, _ in prepared.policies]
    assert [pieces[i] for i in range(len(names))] == [
        1 if name == "optimiser_forward" else days for name in names
    ]
    a, b = kpi_table(serial).drop(columns=TIMING), kpi_table(parallel).drop(columns=TIMING)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 6 and a["orders"].eq(120).all()
    _assert_same_replays(serial, parallel)


#: A replay worker as it starts: no profiler, the engine and the plots imported.
_READY_WORKER: dict[str, object] = {
    "profile": False,
    "engine_imported": True,
    "plots_imported": True,
}


def _assert_same_replay(a: SimulationResult, b: SimulationResult) -> None:
    """The per-order rows (but the timing) and the parcels, the same on both sides."""
    pd.testing.assert_frame_equal(
        a.orders.drop(columns=["decide_seconds"]), b.orders.drop(columns=["decide_seconds"])
    )
    pd.testing.assert_frame_equal(a.parcels, b.parcels)


def _assert_same_replays(serial: WhatIf, parallel: WhatIf) -> None:
    """Every run, in the same order, the same replay on both sides."""
    for x, y in zip(serial.runs, parallel.runs, strict=True):
        assert x.variant == y.variant
        _assert_same_replay(x.result, y.result)


def _worker_state() -> dict[str, object]:
    import dask

    return {
        "profile": dask.config.get("distributed.worker.profile.enabled"),
        "engine_imported": "sourcing.whatif.simulate" in sys.modules,
        "plots_imported": "matplotlib.backends.backend_agg" in sys.modules,
    }


def test_the_whatif_cluster_equals_the_serial_run_and_builds_inputs_as_it_starts(
    tmp_path: Path,
) -> None:
    """``replay_cluster`` (``--workers N``): lean workers, the engine preloaded, same tables."""
    path = tmp_path / "small.toml"
    path.write_text(SCENARIO.replace("count = 120", "count = 60"))
    scenario = load_scenario(path)
    serial = prepare_scenario(scenario).run()
    with replay_cluster(2, lambda: prepare_scenario(scenario)) as (client, prepared):
        # Before any task: the workers imported the replay engine as they started,
        # and run without the statistical profiler.
        states = client.run(_worker_state)
        assert len(states) == 2
        assert all(s == _READY_WORKER for s in states.values())
        parallel = prepared.run(client=client)
    assert REPLAY_CLUSTER_CONFIG["distributed.worker.profile.enabled"] is False
    a, b = kpi_table(serial).drop(columns=TIMING), kpi_table(parallel).drop(columns=TIMING)
    pd.testing.assert_frame_equal(a, b)
    _assert_same_replays(serial, parallel)


def test_a_failing_preparation_closes_the_cluster() -> None:
    def broken() -> None:
        raise ValueError("no such variant")

    # multiprocessing's resource tracker (started with the fork server) lives as
    # long as this process, by design; the fork server goes with the cluster.
    import multiprocessing.resource_tracker

    multiprocessing.resource_tracker.ensure_running()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(ValueError, match="no such variant"), replay_cluster(1, broken):
        pytest.fail("the block must not run")  # pragma: no cover
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = {p.pid for p in psutil.Process().children(recursive=True)} - before
        if not left:
            break
        time.sleep(0.2)
    assert not left, "worker processes outlived the failed start"


def test_heaviest_replays_are_submitted_first(tmp_path: Path) -> None:
    """Longest first, ties in task order; on one worker they start in that order."""
    path = tmp_path / "small.toml"
    path.write_text(SCENARIO.replace("count = 120", "count = 8"))
    prepared = prepare_scenario(load_scenario(path))
    (_, network), *_ = prepared.networks
    factories = dict(prepared.policies)
    names = ["greedy_nearest", "optimiser_cheapest", "greedy_nearest", "optimiser_forward"]
    tasks = [
        ReplayTask(i, ("v", n), network, factories[n], None, REPLAY_WEIGHTS[n])
        for i, n in enumerate(names)
    ]
    assert [t.index for t in submission_order(tasks)] == [3, 1, 0, 2]

    from distributed import get_task_stream

    with replay_cluster(1, lambda: None) as (client, _), get_task_stream(client) as stream:
        results = run_replays(tasks, prepared.orders, client)
    assert [r.policy for r in results] == names  # results in task order all the same
    started = sorted(
        (min(s["start"] for s in record["startstops"] if s["action"] == "compute"), record["key"])
        for record in stream.data
        if str(record["key"]).startswith("whatif-replay-")
    )
    assert [int(key.split("-")[2]) for _, key in started] == [3, 1, 0, 2]


def test_whatif_cli_with_workers_writes_the_serial_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "small.toml"
    path.write_text(SCENARIO.replace("count = 120", "count = 40"))
    args = ["whatif", str(path), "--no-progress", "--out"]
    assert main([*args, str(tmp_path / "serial")]) == 0
    assert main([*args, str(tmp_path / "dask"), "--workers", "2"]) == 0
    serial_out = capsys.readouterr().out
    for name in ("kpis.csv", "savings.csv", "node_volume.csv", "orders.csv.gz"):
        a, b = pd.read_csv(tmp_path / "serial" / name), pd.read_csv(tmp_path / "dask" / name)
        timing = [c for c in ("solver_ms_per_order", "decide_seconds") if c in a]
        pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing))
    # The plots, drawn on the workers, are those drawn serially but for the timing
    # column, which none of them shows.
    for name in ("cost_vs_days.png", "split_rate.png", "node_volume.png"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes()
    assert serial_out.count("optimiser_forward") >= 2
    # A bad input with --workers still ends with the one-line error, status 2.
    assert main([*args, str(tmp_path / "bad"), "--workers", "2", "--variants", "nope"]) == 2
    err = capsys.readouterr().err
    assert "sourcing: error: " in err and "unknown variant 'nope'" in err


class _SchedulerWatch:
    """A ``distributed.Client`` that records how many keys the scheduler holds after each submit."""

    def __init__(self, client: object) -> None:
        self._client = client
        self.keys_held: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def submit(self, *args: object, **kwargs: object) -> object:
        future = self._client.submit(*args, **kwargs)  # type: ignore[attr-defined]
        self.keys_held.append(
            self._client.run_on_scheduler(  # type: ignore[attr-defined]
                lambda dask_scheduler: len(dask_scheduler.tasks)
            )
        )
        return future


def test_the_order_stream_travels_as_one_piece_of_data(tmp_path: Path) -> None:
    """The cluster tracks a key per replay plus one for the stream, not one per order.

    A stream scattered item by item made every replay depend on one key per
    order: at 10,000 orders the scheduler (in the client process) and each
    worker handled 10,000 keys per task.
    """
    path = tmp_path / "small.toml"
    path.write_text(SCENARIO.replace("count = 120", "count = 50"))
    prepared = prepare_scenario(load_scenario(path), policies=["greedy_nearest"])
    serial = prepared.run()
    with replay_cluster(2, lambda: None) as (client, _):
        watch = _SchedulerWatch(client)
        parallel = prepared.run(client=watch)
    stream = sorted(prepared.orders, key=lambda o: o.created_at)
    # Each replay in a piece per day of orders (daily top-ups).
    pieces = len(prepared.networks) * len(independent_spans(stream, prepared.replenishment))
    assert len(watch.keys_held) == pieces == 4
    # Every piece, every replay's task once (its network) and the stream once: far
    # below the 50 orders.
    assert max(watch.keys_held) <= pieces + len(prepared.networks) + 1
    _assert_same_replays(serial, parallel)


def test_the_report_plots_drawn_on_the_workers_are_the_files_drawn_here(tmp_path: Path) -> None:
    """``write_report(..., client)`` draws every plot on the cluster; same bytes in every file."""
    from distributed import get_task_stream

    from sourcing.whatif.report import write_report

    path = tmp_path / "small.toml"
    sweep = '\n[sweep]\nparameter = "value_of_day"\nvalues = [0.5, 2.0]\n'
    path.write_text(SCENARIO.replace("count = 120", "count = 30") + sweep)
    whatif = prepare_scenario(load_scenario(path), policies=["greedy_nearest"]).run()
    here = write_report(whatif, tmp_path / "here")
    with replay_cluster(2, lambda: None) as (client, _), get_task_stream(client) as stream:
        there = write_report(whatif, tmp_path / "workers", client)
    assert [p.name for p in here] == [p.name for p in there]
    plots = [p.name for p in here if p.suffix == ".png"]
    assert plots == ["cost_vs_days.png", "split_rate.png", "node_volume.png", "pareto.png"]
    drawn = {str(r["key"]).split("-")[2] for r in stream.data}
    assert drawn == {"cost_vs_days", "split_rate", "node_volume", "pareto", "orders"}
    for a, b in zip(here, there, strict=True):
        if a.name != "report.html":  # it says when it was written
            assert a.read_bytes() == b.read_bytes(), a.name
    # The per-order file, compressed on a worker, is the same bytes (no write time in its
    # gzip header), and holds what it says.
    orders = pd.read_csv(tmp_path / "workers" / "orders.csv.gz")
    assert len(orders) == sum(len(run.result.orders) for run in whatif.runs) > 0
    html_here = (tmp_path / "here" / "report.html").read_text()
    html_there = (tmp_path / "workers" / "report.html").read_text()
    assert html_here.count("data:image/png;base64,") == 4
    images = [part.split('"')[0] for part in html_here.split("data:image/png;base64,")[1:]]
    assert all(image in html_there for image in images)


def _old_orders_csv(whatif: object) -> str:
    """The per-order table as one frame's CSV: what orders.csv.gz held as one gzip member."""
    frames = []
    for run in whatif.runs:  # type: ignore[attr-defined]
        frame = run.result.orders.copy()
        for column in ("shipping", "handling", "storage_credit", "cost"):
            frame[column] = frame[column] / 100_000
        frame.insert(0, "policy", run.result.policy)
        frame.insert(0, "variant", run.variant)
        frames.append(frame)
    return str(pd.concat(frames, ignore_index=True).to_csv(index=False))


def test_each_replay_compresses_its_orders_rows_on_its_worker(tmp_path: Path) -> None:
    """``run(orders_csv=...)`` on Dask: each run's member of orders.csv.gz comes back with it.

    The report then only joins them (no table task after the last replay), and the
    file's text is the one-frame CSV of every run's rows, the same bytes as a
    report that compresses the members itself.
    """
    import gzip

    from distributed import get_task_stream

    from sourcing.model import MILLICENTS_PER_UNIT
    from sourcing.whatif.report import orders_csv_gz, write_report

    assert MILLICENTS_PER_UNIT == 100_000
    path = tmp_path / "small.toml"
    path.write_text(SCENARIO.replace("count = 120", "count = 40"))
    prepared = prepare_scenario(load_scenario(path))
    serial = prepared.run()
    assert all(run.orders_csv_gz is None for run in serial.runs)
    here = write_report(serial, tmp_path / "here")
    assert gzip.decompress((tmp_path / "here" / "orders.csv.gz").read_bytes()).decode() == (
        _old_orders_csv(serial)
    )
    with replay_cluster(2, lambda: None) as (client, _):
        with get_task_stream(client) as replays:
            parallel = prepared.run(client=client, orders_csv=orders_csv_gz)
        assert {str(r["key"]).split("-")[1] for r in replays.data} == {"replay"}
        for run in parallel.runs:
            assert run.orders_csv_gz is not None
            # The same rows as the serial run's (but the decision timings).
            rows = pd.read_csv(io.BytesIO(run.orders_csv_gz), header=None, compression="gzip")
            assert len(rows) == 40
        with get_task_stream(client) as report:
            there = write_report(parallel, tmp_path / "workers", client)
        assert not [r for r in report.data if "orders" in str(r["key"])]
    assert [p.name for p in here] == [p.name for p in there]
    text = gzip.decompress((tmp_path / "workers" / "orders.csv.gz").read_bytes()).decode()
    assert text == _old_orders_csv(parallel)
    # The members the workers made (one per piece of a replay) hold the text this
    # process makes of the whole replay.
    for run in parallel.runs:
        assert run.orders_csv_gz is not None
        assert gzip.decompress(run.orders_csv_gz) == gzip.decompress(
            orders_csv_gz(run.variant, run.result)
        )
    a = pd.read_csv(tmp_path / "here" / "orders.csv.gz").drop(columns=["decide_seconds"])
    b = pd.read_csv(tmp_path / "workers" / "orders.csv.gz").drop(columns=["decide_seconds"])
    pd.testing.assert_frame_equal(a, b)


def test_run_replays_with_runs_finish_where_the_replay_ran(tmp_path: Path) -> None:
    """``finish`` runs in each piece's own task (its worker's pid), results in task order.

    Serially once per replay; on Dask once per piece (about three days of orders,
    topped up daily: a piece per day with orders), its values in stream order.
    """
    path = tmp_path / "small.toml"
    path.write_text(
        SCENARIO.replace("count = 120", "count = 30").replace("per_day = 40", "per_day = 10")
    )
    prepared = prepare_scenario(load_scenario(path), policies=["greedy_nearest"])
    tasks = [
        ReplayTask(
            i, (v.name, "greedy_nearest"), n, prepared.policies[0][1], prepared.replenishment
        )
        for i, (v, n) in enumerate(prepared.networks)
    ]
    here = run_replays_with(tasks, prepared.orders, _finish_pid)
    assert [f for _, f in here] == [((t.index, 30, os.getpid()),) for t in tasks]
    stream = sorted(prepared.orders, key=lambda o: o.created_at)
    spans = independent_spans(stream, prepared.replenishment)
    assert len(spans) >= 3
    with replay_cluster(2, lambda: None) as (client, _):
        workers = set(client.run(os.getpid).values())
        there = run_replays_with(tasks, prepared.orders, _finish_pid, client)
    for task, (_, finished) in zip(tasks, there, strict=True):
        assert [(index, orders) for index, orders, _ in finished] == [
            (task.index, stop - start) for start, stop in spans
        ]
        assert {pid for _, _, pid in finished} <= workers
    for (a, _), (b, _) in zip(here, there, strict=True):
        _assert_same_replay(a, b)


def _finish_pid(task: ReplayTask, result: SimulationResult) -> tuple[int, int, int]:
    return task.index, len(result.orders), os.getpid()


def _parent_command() -> tuple[int, str]:
    parent = psutil.Process().parent()
    assert parent is not None
    return parent.pid, " ".join(parent.cmdline())


def test_the_workers_are_forked_from_one_server_that_imported_the_engine(
    tmp_path: Path,
) -> None:
    """``replay_cluster``'s workers are children of the fork server, not of this process.

    The server imported the engine before forking them; it stops with the cluster,
    waited for, so its CPU and its workers' count in this process's children's.
    """
    import multiprocessing.forkserver
    import resource

    path = tmp_path / "small.toml"
    path.write_text(SCENARIO.replace("count = 120", "count = 30"))
    prepared = prepare_scenario(load_scenario(path), policies=["greedy_nearest"])
    serial = prepared.run()
    children_cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    with replay_cluster(2, lambda: None) as (client, _):
        parents = client.run(_parent_command)
        states = client.run(_worker_state)
        parallel = prepared.run(client=client)
        server = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
        assert server is not None and psutil.pid_exists(server)
    assert len(parents) == 2
    for pid, command in parents.values():
        assert pid != os.getpid() and pid == server
        assert "multiprocessing.forkserver" in command
    assert all(s == _READY_WORKER for s in states.values())
    # Stopped and reaped: the workers' CPU is now this process's children's.
    assert multiprocessing.forkserver._forkserver._forkserver_pid is None  # type: ignore[attr-defined]
    assert not psutil.pid_exists(server) or psutil.Process(server).status() == "zombie"
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime > children_cpu
    _assert_same_replays(serial, parallel)


def test_starting_the_worker_server_twice_keeps_one_server() -> None:
    import multiprocessing.forkserver

    server = multiprocessing.forkserver._forkserver  # type: ignore[attr-defined]
    start_worker_server()
    try:
        first = server._forkserver_pid
        start_worker_server()
        assert server._forkserver_pid == first is not None
    finally:
        stop_worker_server()
    assert server._forkserver_pid is None
    stop_worker_server()  # nothing to stop: no error


def test_the_packed_order_stream_unpacks_to_the_same_orders(tmp_path: Path) -> None:
    """``pack_orders`` is bytes (sent as they are); unpacked once per stream, equal orders."""
    import gc

    path = tmp_path / "small.toml"
    path.write_text(SCENARIO)
    orders = prepare_scenario(load_scenario(path)).orders
    packed = pack_orders(orders)
    assert isinstance(packed, bytes)
    unpacked = unpack_orders(packed)
    assert unpacked == tuple(orders) and len(unpacked) == 120
    # Every field, to the bit: ids, times, coordinates, lines.
    assert [repr(o) for o in unpacked] == [repr(o) for o in orders]
    assert gc.isenabled()
    # The same stream (that object, or equal bytes from elsewhere): the same orders.
    assert unpack_orders(packed) is unpacked
    assert unpack_orders(bytes(bytearray(packed))) is unpacked
    # Another stream replaces it.
    other = unpack_orders(pack_orders(orders[:5]))
    assert other == tuple(orders[:5])
    assert unpack_orders(packed) is not unpacked and unpack_orders(packed) == unpacked


def test_the_report_module_leaves_matplotlib_to_the_first_plot() -> None:
    """With --workers this process draws no plot, so it never imports matplotlib."""
    import subprocess

    code = (
        "import sys, sourcing.whatif.report as r; "
        "print('matplotlib' in sys.modules); "
        "import pandas as pd; r._png(r._plot_split_rate, pd.DataFrame("
        "{'variant': ['v'], 'policy': ['p'], 'split_rate': [0.5]})); "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True"]
