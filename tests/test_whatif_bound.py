"""A what-if with [bound], [forward] and [sweep] tables: bound columns, gap closed, Pareto plot."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from sourcing.whatif.inputs import ScenarioError
from sourcing.whatif.report import bound_table, kpi_table, write_report
from sourcing.whatif.scenario import load_scenario, prepare_scenario

TINY = Path(__file__).parent / "scenarios" / "tiny"

EXTRA = """
[bound]
max_rounds = 20

[forward]
dual_weight = 0.5
min_history_orders = 1

[sweep]
parameter = "value_of_day"
values = [0.0, 5.0]
"""


def _scenario(tmp_path: Path, extra: str = EXTRA) -> Path:
    shutil.copytree(TINY, tmp_path / "tiny")
    policies = '"greedy_nearest", "optimiser_cheapest", "optimiser_forward", "optimiser_fastest"'
    original = (TINY / "tiny.toml").read_text()
    text = original.replace('run = ["greedy_nearest", "optimiser_cheapest"]', f"run = [{policies}]")
    path = tmp_path / "tiny" / "tiny.toml"
    path.write_text(text + extra)
    return path


def test_every_policy_sits_above_its_bound_and_the_report_shows_it(tmp_path: Path) -> None:
    scenario = load_scenario(_scenario(tmp_path))
    assert scenario.options.forward.dual_weight == 0.5
    prepared = prepare_scenario(scenario, variants=["close_a"])
    names = [v.name for v, _ in prepared.networks]
    assert names == ["close_a value_of_day=0", "close_a value_of_day=5"]
    whatif = prepared.run()
    kpis = kpi_table(whatif)
    assert len(kpis) == 2 * 4
    for _, row in kpis.iterrows():
        assert row["bound_net_cost_per_order"] <= row["net_cost_per_order"] + 1e-9, row.to_dict()
    myopic = kpis[kpis["policy"] == "optimiser_cheapest"]
    for _, row in myopic.iterrows():
        if not math.isnan(row["gap_closed"]):
            assert row["gap_closed"] == pytest.approx(0.0)
    # One bound per network: the sweep points of a policy setting share their variant's.
    assert whatif.bounds["close_a value_of_day=0"] is whatif.bounds["close_a value_of_day=5"]
    table = bound_table(whatif)
    assert (table["gap"] >= -1e-9).all()
    written = {p.name for p in write_report(whatif, tmp_path / "out")}
    assert {"pareto.png", "report.html", "kpis.json"} <= written
    document = json.loads((tmp_path / "out" / "kpis.json").read_text())
    assert document["sweep"]["parameter"] == "value_of_day"
    assert len(document["bounds"]) == 2
    assert "Perfect-hindsight bound" in (tmp_path / "out" / "report.html").read_text()


def test_a_bad_sweep_names_its_key(tmp_path: Path) -> None:
    path = _scenario(tmp_path, '\n[sweep]\nparameter = "speed"\nvalues = [1]\n')
    with pytest.raises(ScenarioError, match=r"sweep\.parameter: must be one of"):
        load_scenario(path)


def test_the_forward_batch_is_priced_unless_the_scenario_says_otherwise(tmp_path: Path) -> None:
    assert load_scenario(_scenario(tmp_path)).options.forward.priced_batch is True
    off = _scenario(tmp_path / "off", "\n[forward]\npriced_batch = false\n")
    assert load_scenario(off).options.forward.priced_batch is False
    bad = _scenario(tmp_path / "bad", '\n[forward]\npriced_batch = "yes"\n')
    with pytest.raises(ScenarioError, match=r"forward\.priced_batch: must be true or false"):
        load_scenario(bad)


def test_the_batch_prices_are_the_scheduled_ones_unless_the_scenario_names_others(
    tmp_path: Path,
) -> None:
    assert load_scenario(_scenario(tmp_path)).options.forward.batch_prices == "scheduled"
    text = '\n[forward]\nbatch_prices = "sampled"\n'
    sampled = load_scenario(_scenario(tmp_path / "sampled", text)).options.forward
    assert sampled.batch_prices == "sampled"
    bad = _scenario(tmp_path / "bad", '\n[forward]\nbatch_prices = "oracle"\n')
    with pytest.raises(
        ScenarioError,
        match=r"forward\.batch_prices: must be one of scheduled, fluid, sampled, got 'oracle'",
    ):
        load_scenario(bad)
