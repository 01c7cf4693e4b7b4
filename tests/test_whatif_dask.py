"""What-if replays on a real Dask LocalCluster give the serial run's tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sourcing.whatif.report import kpi_table
from sourcing.whatif.scenario import load_scenario, prepare_scenario

SCENARIO = """
[scenario]
name = "small"

[network]
demo = true

[orders]
generate = true
count = 120
seed = 3
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
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        parallel = prepared.run(progress=seen.append, client=client)
    assert sum(seen) == prepared.decisions == 2 * 3 * 120
    a, b = kpi_table(serial).drop(columns=TIMING), kpi_table(parallel).drop(columns=TIMING)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 6 and a["orders"].eq(120).all()
    for x, y in zip(serial.runs, parallel.runs, strict=True):
        assert x.variant == y.variant
        pd.testing.assert_frame_equal(
            x.result.orders.drop(columns=["decide_seconds"]),
            y.result.orders.drop(columns=["decide_seconds"]),
        )
        pd.testing.assert_frame_equal(x.result.parcels, y.result.parcels)
