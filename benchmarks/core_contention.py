"""What two busy cores cost one replay: the floor under `sourcing whatif --workers 2`.

```sh
.venv/bin/python benchmarks/core_contention.py     # 3 rounds: us_demo's base optimiser_cheapest
.venv/bin/python benchmarks/core_contention.py --rounds 5 --policy greedy_nearest --json /tmp/c.json
```

Each round runs one replay of ``benchmarks/scenarios/us_demo.toml`` (10,000
orders) in a fresh process pinned to core 0 alone, then the same replay in two
processes at once, pinned to cores 0 and 1: the work of a 2-worker what-if,
without Dask. Per run it records the replay's wall time and its thread's CPU
time, and over each phase the machine's ``steal`` time (``/proc/stat``: time a
virtual machine's cores were ready but the host ran something else). The
table gives, per phase, the median wall and CPU per replay, and the ratio of
paired to alone.

Why it matters: if a replay takes ``r`` times as long with both cores busy,
then a perfectly balanced 2-worker run of replays ``R`` seconds long in all
(serially) still takes ``r * R / 2``, plus its start, report and close, so its
ratio to the serial run cannot fall below about ``r / 2`` of the replays'
share. No change to the what-if moves ``r``; it belongs to the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "us_demo.toml"

# One replay in this process: printed as JSON on its last line of output.
_CHILD = """
import json, sys, time
from pathlib import Path
from sourcing.whatif.scenario import load_scenario, prepare_scenario
from sourcing.whatif.sweep import ReplayTask, run_replay

scenario, variant, policy = sys.argv[1:4]
prepared = prepare_scenario(load_scenario(Path(scenario)), policies=[policy], variants=[variant])
[(v, network)] = [(v, n) for v, n in prepared.networks if v.name == variant]
[(name, factory)] = prepared.policies_of(variant)
task = ReplayTask(0, (variant, name), network, factory, prepared.replenishment)
wall, cpu = time.perf_counter(), time.thread_time()
run_replay(task, prepared.orders)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.thread_time() - cpu}))
"""


def _steal_s() -> float:
    """The machine's steal time so far, in seconds (0 where /proc/stat has none)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0
    ticks = int(fields[8]) if len(fields) > 8 else 0
    return ticks / os.sysconf("SC_CLK_TCK")


def _replays(cores: list[int], variant: str, policy: str) -> tuple[list[dict[str, float]], float]:
    """One replay per core, all at once; their timings and the steal time meanwhile."""
    steal = _steal_s()
    children = [
        subprocess.Popen(
            [
                "taskset",
                "-c",
                str(core),
                sys.executable,
                "-c",
                _CHILD,
                str(SCENARIO),
                variant,
                policy,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for core in cores
    ]
    runs = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"a replay failed with exit code {child.returncode}")
        runs.append(json.loads(out.strip().splitlines()[-1]))
    return runs, _steal_s() - steal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alone/paired rounds (default 3)")
    parser.add_argument("--variant", default="base", help="us_demo variant (default base)")
    parser.add_argument(
        "--policy", default="optimiser_cheapest", help="policy (default optimiser_cheapest)"
    )
    parser.add_argument("--json", type=Path, help="where to write the JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if (os.cpu_count() or 1) < 2:
        parser.error("this machine has one core: nothing to pair")

    phases: dict[str, list[dict[str, float]]] = {"alone": [], "paired": []}
    steal: dict[str, float] = {"alone": 0.0, "paired": 0.0}
    for done in range(args.rounds):
        for phase, cores in (("alone", [0]), ("paired", [0, 1])):
            runs, stolen = _replays(cores, args.variant, args.policy)
            phases[phase] += runs
            steal[phase] += stolen
        print(f"round {done + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    summary: dict[str, Any] = {"variant": args.variant, "policy": args.policy}
    print(f"{args.variant} / {args.policy}, {args.rounds} rounds, load {os.getloadavg()[0]:.2f}")
    print("| phase | replays | wall p50 s | CPU p50 s | steal s per replay-second |")
    print("|---|---|---|---|---|")
    for phase, runs in phases.items():
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        per_second = steal[phase] / sum(r["wall"] for r in runs)
        summary[phase] = {"runs": runs, "wall_p50": wall, "cpu_p50": cpu, "steal_s": steal[phase]}
        print(f"| {phase} | {len(runs)} | {wall:.2f} | {cpu:.2f} | {per_second:.3f} |")
    wall_ratio = summary["paired"]["wall_p50"] / summary["alone"]["wall_p50"]
    cpu_ratio = summary["paired"]["cpu_p50"] / summary["alone"]["cpu_p50"]
    summary["wall_ratio"], summary["cpu_ratio"] = wall_ratio, cpu_ratio
    print(f"paired / alone: wall {wall_ratio:.3f}, CPU {cpu_ratio:.3f}")
    print(f"floor of a balanced 2-worker run's replay phase: {wall_ratio / 2:.3f} of serial")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    raise SystemExit(code)
