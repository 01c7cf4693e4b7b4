"""The dashboard's orders search by node, before and after it read the shipments table.

Run from the project root on a store built by ``dashboard.py pages --keep`` (100,000
orders on PostgreSQL)::

    .venv/bin/python benchmarks/order_search.py --database-url postgresql://.../oms_dash_bench
        [--baseline 143b830] [--rounds 20] [--json PATH]

"Before" is ``src/oms/dashboard/views/orders.py`` as of ``--baseline`` (read with ``git
show``: the LIKE over every order's plan JSON); "after" is the working tree's (a semi-join
on ``ix_shipments_node_state``). Both run in this process over the same connection, for
the busiest node, a median one and the least busy one (by shipments), the first page and
the second, alternated round by round (the order flipped each round), so a noisy machine
shifts both alike. It prints p50/p95 ms per case and the ratio before/after, and whether
both listed the same first page (they do where every plan still names its nodes, as in the
generator's store).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from oms import schema as t
from oms.dashboard import views

ROOT = Path(__file__).resolve().parent.parent
MODULE = "src/oms/dashboard/views/orders.py"


def baseline_module(ref: str) -> types.ModuleType:
    source = subprocess.run(
        ["git", "show", f"{ref}:{MODULE}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType("orders_baseline")
    module.__file__ = f"{ref}:{MODULE}"
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def nodes_by_volume(conn: sa.Connection) -> dict[str, str]:
    s = t.shipments
    rows = conn.execute(
        sa.select(s.c.node_id, sa.func.count()).group_by(s.c.node_id).order_by(sa.func.count())
    ).all()
    return {
        f"busiest ({rows[-1][1]} shipments)": rows[-1][0],
        f"median ({rows[len(rows) // 2][1]})": rows[len(rows) // 2][0],
        f"least busy ({rows[0][1]})": rows[0][0],
    }


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return (time.perf_counter() - start) * 1000.0, result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("--baseline", default="143b830", help="git ref of the LIKE search")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "search.json")
    args = p.parse_args()
    before = baseline_module(args.baseline)
    engine = sa.create_engine(args.database_url)
    sides = {"before": before.search_orders, "after": views.search_orders}
    times: dict[tuple[str, str], list[float]] = {}
    pages: dict[tuple[str, str], list[str]] = {}
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # as the dashboard's reads run
            conn.exec_driver_sql("SET max_parallel_workers_per_gather = 0")
        cases = nodes_by_volume(conn)
        total = conn.execute(sa.select(sa.func.count()).select_from(t.orders)).scalar_one()
        for r in range(args.rounds):
            order = list(sides.items()) if r % 2 == 0 else list(reversed(sides.items()))
            for case, node in cases.items():
                for side, search in order:
                    query = views.OrderQuery(node_id=node)
                    ms, first = timed(search, conn, query)
                    times.setdefault((case + ", page 1", side), []).append(ms)
                    pages[(case, side)] = [o.order_id for o in first.orders]
                    if first.after is not None:
                        ms, _ = timed(search, conn, query, after=first.after)
                        times.setdefault((case + ", page 2", side), []).append(ms)
    rows = []
    for case in dict.fromkeys(c for c, _ in times):
        row: dict[str, Any] = {"case": case}
        for side in sides:
            s = sorted(times[(case, side)])
            row[f"{side}_p50_ms"] = round(statistics.median(s), 2)
            row[f"{side}_p95_ms"] = round(s[min(len(s) - 1, int(0.95 * len(s)))], 2)
        row["ratio_p50"] = round(row["before_p50_ms"] / max(row["after_p50_ms"], 1e-9), 1)
        rows.append(row)
    load = os.getloadavg()
    print(f"orders: {total}, rounds: {args.rounds}, baseline: {args.baseline}")
    print(f"{'case':40} {'before p50':>10} {'p95':>8} {'after p50':>10} {'p95':>8} {'x':>6}")
    for row in rows:
        print(
            f"{row['case']:40} {row['before_p50_ms']:10.2f} {row['before_p95_ms']:8.2f} "
            f"{row['after_p50_ms']:10.2f} {row['after_p95_ms']:8.2f} {row['ratio_p50']:6.1f}"
        )
    same = all(pages[(c, "before")] == pages[(c, "after")] for c in cases)
    print(f"same first page before and after: {'yes' if same else 'NO'}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"orders": total, "rows": rows, "same": same, "loadavg": load}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
