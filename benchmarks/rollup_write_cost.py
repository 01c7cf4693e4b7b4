"""What migration 0011's triggers cost a write: one quote or one order inserted per
transaction, with the triggers and without, alternated; median microseconds per write.

Run from the project root (a command, not a test)::

    .venv/bin/python benchmarks/rollup_write_cost.py [--writes 300] [--rounds 4]

On a fresh SQLite file (triggers dropped and recreated from ``sqlite_master``) and, when
one answers, a fresh PostgreSQL database (``ALTER TABLE ... DISABLE TRIGGER USER``).
A quote's insert adds one rollup upsert; an order's adds one and its planned dispatch day.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from oms import schema as t
from oms.store import Store

from service_support import hand_network, postgres_database

PARCEL = {"node_id": "DC-NJ", "service": "ground", "zone": "1", "arrival_days": 2,
          "lines": [{"line": 0, "sku": "A", "qty": 1}], "shipping": 800_000,
          "handling": 200_000, "storage_credit": 0, "cost": 1_000_000,
          "weight_g": 1000}  # fmt: skip
PLAN = {"labels": ["CHEAPEST", "BALANCED"], "cost": 1_000_000, "shipping": 800_000,
        "handling": 200_000, "storage_credit": 0, "start_date": "2026-12-06",
        "parcels": [PARCEL]}  # fmt: skip


def _write(store: Store, kind: str) -> None:
    now, key = time.time(), uuid.uuid4().hex
    with store.engine.begin() as conn:
        if kind == "quote":
            conn.execute(
                sa.insert(t.quotes),
                {"quote_id": key, "created_at": now, "expires_at": now + 60,
                 "quote_date": "2026-12-06", "request_json": "{}", "options_json": "[]"},
            )  # fmt: skip
        else:
            conn.execute(
                sa.insert(t.orders).values(
                    order_id=key, quote_id=key, option_id="o", idempotency_key=key,
                    state="PLACED", dest_lat=40.7, dest_lon=-74.0, lines_json="[]",
                    allocation_json=json.dumps(PLAN, separators=(",", ":")),
                    promised_date="2026-12-08", created_at=now, updated_at=now, version=1,
                )
            )  # fmt: skip


def measure(url: str, writes: int, rounds: int) -> dict[str, dict[str, float]]:
    store = Store(url, pool_size=2)
    store.migrate()
    store.load_network(hand_network(), reason="rollup write cost")
    with store.engine.connect() as conn:
        saved = (
            {}
            if not store.is_sqlite
            else dict(
                conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name IN ('quotes', 'orders')"
                ).all()
            )
        )

    def triggers(on: bool) -> None:
        with store.engine.begin() as conn:
            if not store.is_sqlite:
                for table in ("quotes", "orders"):
                    conn.exec_driver_sql(
                        f"ALTER TABLE {table} {'ENABLE' if on else 'DISABLE'} TRIGGER USER"
                    )
                return
            for name, sql in saved.items():
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
                if on:
                    conn.exec_driver_sql(sql)

    us: dict[str, dict[bool, list[float]]] = {k: {True: [], False: []} for k in ("quote", "order")}
    try:
        for r in range(rounds):
            for on in (True, False) if r % 2 == 0 else (False, True):
                triggers(on)
                for kind in us:
                    t0 = time.perf_counter()
                    for _ in range(writes):
                        _write(store, kind)
                    us[kind][on].append((time.perf_counter() - t0) / writes * 1e6)
        triggers(True)
    finally:
        store.dispose()
    return {
        kind: {"with": statistics.median(v[True]), "without": statistics.median(v[False])}
        for kind, v in us.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = measure(f"sqlite:///{tmp}/rollups.db", args.writes, args.rounds)
    try:
        for url in postgres_database():
            results["postgresql"] = measure(url, args.writes, args.rounds)
    except BaseException as exc:  # pytest's skip when no PostgreSQL answers
        print(f"postgresql: not measured ({type(exc).__name__}: {exc})")
    print(f"{'store':12} {'write':6} {'with us':>9} {'without us':>11} {'extra us':>9}")
    for store, kinds in results.items():
        for kind, v in kinds.items():
            extra = v["with"] - v["without"]
            print(f"{store:12} {kind:6} {v['with']:9.0f} {v['without']:11.0f} {extra:9.0f}")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
