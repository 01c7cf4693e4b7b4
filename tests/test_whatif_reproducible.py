"""What-if tables depend on the input alone, not on how busy the machine is (issue 18).

A starved machine is emulated by clocks that run 1000x fast: ``time.perf_counter``
(the quote engine's deadlines, the batch's timers) and the solvers' own clocks
(SCIP's and CP-SAT's wall-clock limits are cut 1000-fold), so every wall-clock
limit fires as it would on a machine 1000x slower. A replay must not notice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from ortools.linear_solver import pywraplp
from ortools.sat.python import cp_model

from sourcing.model import QuoteSettings
from sourcing.solver.context import Context
from sourcing.whatif.report import kpi_table
from sourcing.whatif.scenario import load_scenario, prepare_scenario

SCENARIO = """
[scenario]
name = "small"

[network]
demo = true

[orders]
generate = true
count = 150
seed = 3
start = 2024-03-04T00:00:00

[replenishment]
top_up_every_days = 2

[policies]
run = ["optimiser_cheapest", "optimiser_batch", "optimiser_forward_batch"]

[[variants]]
name = "scarce"
edits = [{ type = "set_cover", days = 2 }]
"""

SPEED_UP = 1000.0


@pytest.fixture
def starved_machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = time.perf_counter
    origin = real()
    monkeypatch.setattr(time, "perf_counter", lambda: origin + (real() - origin) * SPEED_UP)

    set_time_limit = pywraplp.Solver.SetTimeLimit

    def scip_limit(self: pywraplp.Solver, ms: int) -> Any:
        return set_time_limit(self, max(1, int(ms / SPEED_UP)))

    monkeypatch.setattr(pywraplp.Solver, "SetTimeLimit", scip_limit)
    solve = cp_model.CpSolver.solve

    def cpsat_solve(self: cp_model.CpSolver, *args: Any, **kwargs: Any) -> Any:
        self.parameters.max_time_in_seconds /= SPEED_UP
        return solve(self, *args, **kwargs)

    monkeypatch.setattr(cp_model.CpSolver, "solve", cpsat_solve)
    yield


def _replay(path: Path) -> Any:
    return prepare_scenario(load_scenario(path)).run()


def test_a_replay_on_a_starved_machine_gives_the_same_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, starved_machine: None
) -> None:
    path = tmp_path / "small.toml"
    path.write_text(SCENARIO)
    starved = _replay(path)
    monkeypatch.undo()  # the real clocks again
    quiet = _replay(path)
    a = kpi_table(quiet).drop(columns=["solver_ms_per_order"])
    b = kpi_table(starved).drop(columns=["solver_ms_per_order"])
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 3 and a["orders"].eq(150).all()
    for x, y in zip(quiet.runs, starved.runs, strict=True):
        pd.testing.assert_frame_equal(
            x.result.orders.drop(columns=["decide_seconds"]),
            y.result.orders.drop(columns=["decide_seconds"]),
        )
        pd.testing.assert_frame_equal(x.result.parcels, y.result.parcels)


def test_a_work_budget_counts_polls_and_ignores_the_clock(starved_machine: None) -> None:
    ctx = Context.__new__(Context)
    ctx.settings = QuoteSettings(work_limit=3)
    ctx.stats = {"checks": 0}
    ctx.deadline = time.perf_counter() - 1.0  # long past: the clock would have stopped it
    assert [ctx.out_of_time() for _ in range(5)] == [False, False, False, True, True]
    checkout = Context.__new__(Context)
    checkout.settings = QuoteSettings()  # the service's: the wall clock still rules
    checkout.deadline = time.perf_counter() - 1.0
    assert checkout.out_of_time()


def test_a_quote_with_collect_and_backorder_legs_on_a_work_budget_ignores_the_clock(
    monkeypatch: pytest.MonkeyPatch, starved_machine: None
) -> None:
    import numpy as np

    from sourcing.demo import demo_network, demo_order
    from sourcing.menu import quote

    network = demo_network()
    rng = np.random.default_rng(5)
    orders = [demo_order(network, rng, lines) for lines in (1, 3, 5, 8)]
    settings = QuoteSettings(nearest_stores=2, allow_backorder=True, work_limit=5_000)
    starved = [quote(network, order, settings) for order in orders]
    monkeypatch.undo()
    quiet = [quote(network, order, settings) for order in orders]
    checkout = [
        quote(network, order, QuoteSettings(nearest_stores=2, allow_backorder=True))
        for order in orders
    ]
    for a, b, c in zip(quiet, starved, checkout, strict=True):
        assert a.options == b.options
        assert a.options == c.options  # the quiet machine's deadline-driven quote: the same menu
