"""The forward-looking prices job, ``oms reprice``, and the quotes' view of its latest run.

A periodic job (run it from cron or a scheduler, like ``oms reoptimise``):

1. **Read** (one read transaction): the catalog, live stock of every SKU
   (on hand, safety stock, order reservations and live quote holds) and the
   orders placed in the last ``history_days`` (destination and lines: the
   demand history, never anything ahead of now);
2. **Solve** the fluid LP of :mod:`sourcing.forward.fluid` over the next
   ``horizon_days``: its duals are each (node, SKU)'s opportunity cost. The
   LP decomposes by SKU, so chunks of SKUs are Dask tasks (a ``LocalCluster``
   by default, an existing scheduler, or this process);
3. **Write** one transaction: a ``reprice_runs`` row and the positive prices
   in ``opportunity_costs`` (runs beyond the last ``keep`` are deleted).

With ``forward_prices`` on (``OMS_FORWARD_PRICES=1``), quotes add the latest
run's prices to each unit's cost (:class:`LatestPrices` re-reads the latest
run id at most every ``refresh_s`` seconds): the menu is chosen by the priced
cost, each option keeps its reference cost, and the opportunity cost is its
own breakdown line (``CostBreakdown.opportunity_cost``).

**Prices expire.** A run prices stock for its own ``horizon_days`` (by then
the stock it priced has been sold and replenished), so past that horizon, or
past ``forward_prices_max_age_s`` if that is shorter, quotes and ``oms
reoptimise`` go back to the reference cost, with one warning per run, until a
newer run lands: a stopped reprice schedule must not leave last week's
scarcity in today's menu.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import sqlalchemy as sa

from oms import dask_cluster
from oms import schema as t
from oms.store import Store
from sourcing.forward.fluid import (
    DemandForecast,
    FluidSettings,
    OrderHistory,
    forecast_demand,
    solve_fluid,
)
from sourcing.model import IntArray, Network, OpportunityCosts

__all__ = ["LatestPrices", "PriceRun", "RepriceReport", "latest_prices", "latest_run", "run_job"]

DAY_S = 86_400.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepriceReport:
    run_id: int | None
    orders_seen: int
    horizon_days: float
    expected_units: float
    positions: int
    seconds: float
    chunks: int

    def table(self) -> str:
        rows = [
            ("run", "-" if self.run_id is None else str(self.run_id)),
            ("orders in history", f"{self.orders_seen:,}"),
            ("horizon days", f"{self.horizon_days:g}"),
            ("expected units", f"{self.expected_units:,.1f}"),
            ("priced positions", f"{self.positions:,}"),
            ("SKU chunks", str(self.chunks)),
            ("seconds", f"{self.seconds:.2f}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _history(store: Store, conn: sa.Connection, network: Network, since: float) -> OrderHistory:
    o = t.orders
    history = OrderHistory(len(network.sku_ids))
    rows = conn.execute(
        sa.select(o.c.created_at, o.c.dest_lat, o.c.dest_lon, o.c.lines_json)
        .where(o.c.created_at >= since)
        .order_by(o.c.created_at, o.c.order_id)
    )
    for created_at, lat, lon, lines_json in rows:
        units: dict[int, int] = {}
        for line in json.loads(lines_json):
            k = network.sku_index.get(line["sku"])
            if k is not None:
                units[k] = units.get(k, 0) + int(line["qty"])
        if units:
            history.add(float(lat), float(lon), float(created_at) / DAY_S, units)
    return history


def _solve_chunk(
    job: tuple[Network, IntArray, DemandForecast, FluidSettings, IntArray],
) -> IntArray:
    network, available, forecast, settings, skus = job
    solution = solve_fluid(network, available, forecast, settings, skus=skus)
    if solution.status != "OPTIMAL":
        raise RuntimeError(f"the fluid LP ended {solution.status}")
    return solution.opportunity


def run_job(
    store: Store,
    *,
    horizon_days: float = 7.0,
    history_days: float = 28.0,
    settings: FluidSettings | None = None,
    chunks: int = 1,
    map_chunks: Callable[[Callable[[Any], IntArray], Sequence[Any]], Sequence[IntArray]]
    | None = None,
    dry_run: bool = False,
    keep: int = 3,
) -> RepriceReport:
    """Read, solve, write (module doc). ``map_chunks`` runs the SKU chunks (Dask)."""
    started = time.perf_counter()
    settings = settings or FluidSettings()
    now = store.clock()
    with store.read() as conn:
        catalog = store.catalog(conn)
        if not catalog.sku_ids or not catalog.node_ids:
            return RepriceReport(None, 0, horizon_days, 0.0, 0, 0.0, 0)
        network = store.network_for(conn, catalog, catalog.sku_ids)
        history = _history(store, conn, network, now - history_days * DAY_S)
    forecast = forecast_demand(network, history, now / DAY_S, horizon_days, settings)
    opportunity = np.zeros((len(network.node_ids), len(network.sku_ids)), dtype=np.int64)
    expected = 0.0
    n_chunks = 0
    if forecast is not None:
        expected = float(forecast.units.sum())
        available = network.available
        parts = [p for p in np.array_split(np.arange(len(network.sku_ids)), chunks) if p.size]
        n_chunks = len(parts)
        jobs = [(network, available, forecast, settings, p.astype(np.int64)) for p in parts]
        results = map_chunks(_solve_chunk, jobs) if map_chunks else [_solve_chunk(j) for j in jobs]
        for result in results:
            opportunity += result
    nodes, skus = np.nonzero(opportunity)
    seconds = time.perf_counter() - started
    report = RepriceReport(
        None, history.orders, horizon_days, expected, int(nodes.size), seconds, n_chunks
    )
    if dry_run or forecast is None:
        return report
    with store.write() as conn:
        key = conn.execute(
            sa.insert(t.reprice_runs).values(
                computed_at=now,
                horizon_days=horizon_days,
                orders_seen=history.orders,
                expected_units=expected,
                positions=int(nodes.size),
                seconds=seconds,
            )
        ).inserted_primary_key
        assert key is not None
        run_id = int(key[0])
        if nodes.size:
            conn.execute(
                sa.insert(t.opportunity_costs),
                [
                    {
                        "run_id": run_id,
                        "node_id": network.node_ids[n],
                        "sku": network.sku_ids[s],
                        "millicents": int(opportunity[n, s]),
                    }
                    for n, s in zip(nodes.tolist(), skus.tolist(), strict=True)
                ],
            )
        old = sa.select(t.reprice_runs.c.run_id).where(t.reprice_runs.c.run_id <= run_id - keep)
        conn.execute(sa.delete(t.opportunity_costs).where(t.opportunity_costs.c.run_id.in_(old)))
        conn.execute(sa.delete(t.reprice_runs).where(t.reprice_runs.c.run_id <= run_id - keep))
    return replace(report, run_id=run_id)


@dataclass(frozen=True)
class PriceRun:
    """A reprice run's prices and when they stop being used."""

    run_id: int
    computed_at: float
    horizon_days: float
    prices: OpportunityCosts = field(repr=False)

    def expires_at(self, max_age_s: float | None = None) -> float:
        """The end of the run's horizon, or ``max_age_s`` after it ran if that is sooner."""
        age = self.horizon_days * DAY_S
        if max_age_s is not None and max_age_s > 0:
            age = min(age, max_age_s)
        return self.computed_at + age

    def describe(self) -> str:
        return f"reprice run {self.run_id} of {_utc_minute(self.computed_at)}"

    def describe_expired(self, max_age_s: float | None = None) -> str:
        return f"{self.describe()} expired at {_utc_minute(self.expires_at(max_age_s))}"


def _utc_minute(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def latest_run(conn: sa.Connection) -> PriceRun | None:
    """The latest run (None before the first one)."""
    r = t.reprice_runs
    latest = sa.select(r.c.run_id, r.c.computed_at, r.c.horizon_days)
    row = conn.execute(latest.order_by(r.c.run_id.desc()).limit(1)).first()
    if row is None:
        return None
    return PriceRun(
        int(row.run_id), float(row.computed_at), float(row.horizon_days), _prices(conn, row.run_id)
    )


def latest_prices(conn: sa.Connection) -> tuple[int | None, OpportunityCosts | None]:
    """The latest run's id and prices (None, None before the first run), expired or not."""
    run = latest_run(conn)
    return (None, None) if run is None else (run.run_id, run.prices)


def _prices(conn: sa.Connection, run_id: int) -> OpportunityCosts:
    c = t.opportunity_costs
    rows = conn.execute(
        sa.select(c.c.node_id, c.c.sku, c.c.millicents).where(c.c.run_id == run_id)
    ).all()
    node_ids = tuple(sorted({r.node_id for r in rows}))
    sku_ids = tuple(sorted({r.sku for r in rows}))
    ni = {n: i for i, n in enumerate(node_ids)}
    si = {s: i for i, s in enumerate(sku_ids)}
    values = np.zeros((len(node_ids), len(sku_ids)), dtype=np.int64)
    for r in rows:
        values[ni[r.node_id], si[r.sku]] = int(r.millicents)
    return OpportunityCosts(node_ids, sku_ids, values)


class LatestPrices:
    """The quotes' cached view of the latest run: one cheap id check every ``refresh_s``.

    Expired prices (module doc) are not used: :meth:`current` returns None for them,
    whatever the cache holds, and warns once per run.
    """

    def __init__(
        self,
        store: Store,
        refresh_s: float = 30.0,
        max_age_s: float | None = None,
    ) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._max_age_s = max_age_s
        self._lock = threading.Lock()
        self._checked = -math.inf
        self._run: PriceRun | None = None
        self._warned: int | None = None

    def current(self) -> OpportunityCosts | None:
        now = time.monotonic()
        if now - self._checked >= self._refresh_s:
            with self._lock:
                if now - self._checked >= self._refresh_s:
                    self._refresh()
                    self._checked = now
        run = self._run
        if run is None:
            return None
        if self._store.clock() >= run.expires_at(self._max_age_s):
            if self._warned != run.run_id:
                self._warned = run.run_id
                log.warning(
                    "forward prices of %s: quotes use the reference cost "
                    "until 'oms reprice' runs again",
                    run.describe_expired(self._max_age_s),
                )
            return None
        return run.prices

    def _refresh(self) -> None:
        with self._store.read() as conn:
            run_id = conn.execute(sa.select(sa.func.max(t.reprice_runs.c.run_id))).scalar()
            if run_id is None:
                self._run = None
            elif self._run is None or run_id != self._run.run_id:
                self._run = latest_run(conn)


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    """The ``oms reprice`` options (``parser``: its argparse sub-parser)."""
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the store (default: $OMS_DATABASE_URL or sqlite:///oms.db)",
    )
    parser.add_argument("--dry-run", action="store_true", help="solve and report; write nothing")
    parser.add_argument(
        "--horizon-days", type=float, default=7.0, help="days ahead to price (default 7)"
    )
    parser.add_argument(
        "--history-days", type=float, default=28.0, help="days of orders to learn from (28)"
    )
    dask_cluster.add_arguments(parser)
    parser.add_argument(
        "--chunks", type=int, help="SKU chunks solved apart (default: 2 per worker)"
    )


def command(args: Any, database_url: str) -> int:
    """Run ``oms reprice``: print the summary table."""
    from contextlib import ExitStack

    store = Store(database_url, pool_size=2)
    with ExitStack() as stack:
        stack.callback(store.dispose)
        store.migrate()
        map_chunks = None
        chunks = args.chunks or 1
        if not args.in_process:
            client = dask_cluster.dask_client(stack, args)
            chunks = args.chunks or 2 * max(1, args.workers)

            def map_chunks(
                function: Callable[[Any], IntArray], jobs: Sequence[Any]
            ) -> list[IntArray]:
                futures = client.map(function, client.scatter(list(jobs), hash=False))
                return [f.result() for f in futures]

        report = run_job(
            store,
            horizon_days=args.horizon_days,
            history_days=args.history_days,
            chunks=chunks,
            map_chunks=map_chunks,
            dry_run=args.dry_run,
        )
    print(report.table())
    return 0
