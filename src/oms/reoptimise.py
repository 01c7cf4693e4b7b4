"""The batch re-optimisation job (DESIGN section 5): ``oms reoptimise``.

1. **Read** (one read transaction): every open order not yet released
   (state PLACED) with its allocation, promise, version and stock
   reservations; stock and each node's capacity left on the days those
   orders drew capacity from.
2. **Solve** with :func:`sourcing.batch.reoptimise`: the orders' own
   reservations go back into the pool, so they compete for it jointly; each
   promise becomes a latest delivery day counted from today. Sub-problems run
   on Dask (a ``LocalCluster`` by default, or an existing scheduler), or in
   this process.
3. **Write** one transaction per component of orders that changed (orders
   that depend on each other's stock): lock the stock rows the changes touch
   (as placing an order does: :meth:`oms.store.stock.StockRepository.lock_free_units`, in
   (node, SKU) order) and the nodes' capacity rows, re-read each order and
   keep only those still PLACED at the version read. If the whole set still
   fits the stock and capacity free now, and saves money, it is written;
   otherwise each change that fits on its own and costs its order no more is
   written. Everything else is skipped and reported. A written change
   replaces the order's reservations, moves its units of daily capacity
   (within the day it drew capacity from, where a cancel gives them back),
   replaces its allocation document, bumps its version and adds an order
   event ``reoptimised``.

Not re-optimised (reported as excluded): click & collect and backordered
allocations, and orders whose plan, released today, would already arrive
after the promise.

**Forward-looking prices** (issue 18): with ``forward_prices`` on (the
setting quotes use, ``OMS_FORWARD_PRICES=1``) the job reads the latest
``oms reprice`` run in the same snapshot and re-assigns at the priced cost
(reference + opportunity cost per unit, :attr:`BatchSettings.opportunity`),
so it does not move open orders back onto the units the priced quotes kept
for later orders. "Never dearer" then holds for the priced cost, at solve
and at write time (an order may move to a dearer reference cost to free a
unit worth more to the orders expected); promises bind as always, and every
order's allocation and the report's costs stay reference costs, with the
opportunity cost reported apart. Before the first reprice run, once the
latest run's prices have expired (:mod:`oms.reprice`), or with
``reference_cost`` (``--reference-cost``), it runs at the reference cost.
The report names the price set it used.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from oms import dask_cluster
from oms import schema as t
from oms.convert import day_after, days_between, plan_of, today
from oms.reprice import latest_run
from oms.store import (
    Plan,
    Position,
    Store,
    order_reservation_rows,
    units_by_node,
    units_of,
    utc_day,
)
from oms.store.shipments import with_shipment_ids
from sourcing.batch import BatchInstance, BatchOrder, BatchResult, BatchSettings, Runner, reoptimise
from sourcing.evaluate import evaluate
from sourcing.model import (
    UNLIMITED_CAPACITY,
    Allocation,
    Evaluation,
    Location,
    Network,
    OpportunityCosts,
    Option,
    Order,
    OrderLine,
    ParcelLine,
    ParcelPlan,
    Proof,
    to_currency,
)

__all__ = ["JobReport", "OpenOrder", "PriceSet", "Skipped", "read_open_orders", "run_job"]

#: The order event a written change adds.
EVENT = "reoptimised"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PriceSet:
    """The forward-looking prices a run re-assigned with (``prices`` None: reference cost)."""

    description: str
    run_id: int | None = None
    prices: OpportunityCosts | None = field(default=None, repr=False)

    @classmethod
    def read(
        cls,
        conn: Connection,
        *,
        forward_prices: bool,
        reference_cost: bool,
        now: float,
        max_age_s: float | None = None,
    ) -> PriceSet:
        if not forward_prices:
            return cls("reference cost (forward prices off)")
        if reference_cost:
            return cls("reference cost (--reference-cost)")
        run = latest_run(conn)
        if run is None:
            return cls("reference cost (forward prices on, no reprice run yet)")
        if now >= run.expires_at(max_age_s):
            return cls(f"reference cost ({run.describe_expired(max_age_s)})")
        positions = int(np.count_nonzero(run.prices.values))
        plural = "" if positions == 1 else "s"
        return cls(
            f"priced: {run.describe()} ({positions} priced position{plural})",
            run.run_id,
            run.prices,
        )

    def of(self, evaluation: Evaluation) -> int:
        """The opportunity cost (millicents) of the units ``evaluation``'s parcels take."""
        if self.prices is None:
            return 0
        nodes, skus, values = self.prices.node_index, self.prices.sku_index, self.prices.values
        total = 0
        for parcel in evaluation.parcels:
            n = nodes.get(parcel.node_id)
            if n is None:
                continue
            for line in parcel.lines:
                k = skus.get(line.sku)
                if k is not None:
                    total += int(values[n, k]) * line.qty
        return total


@dataclass(frozen=True)
class OpenOrder:
    """A PLACED order as the job read it."""

    order_id: str
    version: int
    created_at: float
    destination: Location
    lines: tuple[OrderLine, ...]
    allocation: Plan
    promised_date: str
    #: Its stock reservations per (node, SKU), as the reservations table holds them.
    reserved: dict[Position, int]
    #: Units of those per (node, day whose capacity they used): the placement day,
    #: or a later day for units re-sourced then; units from receipts use none.
    capacity_used: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def capacity_day(self) -> str:
        return utc_day(self.created_at)


@dataclass(frozen=True)
class Skipped:
    order_id: str
    reason: str


@dataclass(frozen=True)
class JobReport:
    """What one run did. Money in millicents; ``cost_*`` and ``parcels_*`` are over the
    orders the batch considered, *after* counting only the changes written (or, in a
    dry run, every change found)."""

    dry_run: bool
    orders: int
    considered: int
    changed: int
    parcels_before: int
    parcels_after: int
    cost_before: int
    cost_after: int
    promises_kept: int
    excluded: tuple[Skipped, ...]
    skipped: tuple[Skipped, ...]
    seconds: float
    status: str
    components: int = 0
    written: tuple[str, ...] = field(default=(), repr=False)
    #: Which prices the batch re-assigned with (:attr:`PriceSet.description`), and the
    #: reprice run's id (None: the reference cost).
    prices: str = "reference cost (forward prices off)"
    price_run: int | None = None
    #: The opportunity cost of the considered orders' units before / after, millicents
    #: (0 at the reference cost); the priced cost is ``cost_* + opportunity_*``.
    opportunity_before: int = 0
    opportunity_after: int = 0

    def table(self) -> str:
        """The summary table printed at the end of a run."""
        priced_before = self.cost_before + self.opportunity_before
        priced_after = self.cost_after + self.opportunity_after
        rows = [
            ("prices", self.prices),
            ("orders (open, unreleased)", str(self.orders)),
            ("re-optimised", str(self.considered)),
            ("changed" + (" (dry run: none written)" if self.dry_run else ""), str(self.changed)),
            ("skipped at write time", str(len(self.skipped))),
            ("excluded", str(len(self.excluded))),
            ("parcels before / after", f"{self.parcels_before} / {self.parcels_after}"),
            (
                "cost before / after",
                f"{to_currency(self.cost_before)} / {to_currency(self.cost_after)} "
                f"(saved {to_currency(self.cost_before - self.cost_after)})",
            ),
            *(
                [
                    (
                        "priced cost before / after",
                        f"{to_currency(priced_before)} / {to_currency(priced_after)} "
                        f"(saved {to_currency(priced_before - priced_after)})",
                    )
                ]
                if self.price_run is not None
                else []
            ),
            ("promises kept", f"{self.promises_kept} of {self.considered}"),
            ("solver status", self.status),
            ("run time", f"{self.seconds:.1f} s"),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        for kind, items in (("skipped", self.skipped), ("excluded", self.excluded)):
            lines.extend(f"  {kind} {s.order_id}: {s.reason}" for s in items[:20])
            if len(items) > 20:
                lines.append(f"  ... and {len(items) - 20} more {kind}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- read


def read_open_orders(conn: Connection) -> list[OpenOrder]:
    """Every PLACED order with its stock reservations (two queries, any size)."""
    o, r = t.orders, t.reservations
    reserved: dict[str, dict[Position, int]] = {}
    capacity_used: dict[str, dict[tuple[str, str], int]] = {}
    query = (
        sa.select(r.c.order_id, r.c.node_id, r.c.sku, r.c.capacity_day, sa.func.sum(r.c.qty))
        .join(o, o.c.order_id == r.c.order_id)
        .where(o.c.state == "PLACED")
        .group_by(r.c.order_id, r.c.node_id, r.c.sku, r.c.capacity_day)
    )
    for order_id, node, sku, day, qty in conn.execute(query):
        units = reserved.setdefault(order_id, {})
        units[(node, sku)] = units.get((node, sku), 0) + int(qty)
        if day is not None:
            used = capacity_used.setdefault(order_id, {})
            used[(node, day)] = used.get((node, day), 0) + int(qty)
    rows = conn.execute(
        sa.select(
            o.c.order_id,
            o.c.version,
            o.c.created_at,
            o.c.dest_lat,
            o.c.dest_lon,
            o.c.lines_json,
            o.c.allocation_json,
            o.c.promised_date,
        )
        .where(o.c.state == "PLACED")
        .order_by(o.c.created_at, o.c.order_id)
    )
    return [
        OpenOrder(
            order_id=row.order_id,
            version=int(row.version),
            created_at=float(row.created_at),
            destination=Location(float(row.dest_lat), float(row.dest_lon)),
            lines=tuple(OrderLine(x["sku"], int(x["qty"])) for x in json.loads(row.lines_json)),
            allocation=Plan.from_document(json.loads(row.allocation_json)),
            promised_date=row.promised_date,
            reserved=reserved.get(row.order_id, {}),
            capacity_used=capacity_used.get(row.order_id, {}),
        )
        for row in rows
    ]


def _allocation(plan: Plan) -> Allocation:
    return Allocation(
        tuple(
            ParcelPlan(
                p.node_id,
                p.service,
                tuple(ParcelLine(x.line, x.sku, x.qty) for x in p.lines),
                p.inbound_day,
            )
            for p in plan.parcels
        ),
        plan.pickup,
    )


def _capacity_used(conn: Connection, days: Sequence[str]) -> dict[tuple[str, str], int]:
    u = t.node_day_usage
    if not days:
        return {}
    return {
        (row.node_id, row.day): int(row.units)
        for row in conn.execute(sa.select(u).where(u.c.day.in_(sorted(set(days)))))
    }


@dataclass(frozen=True)
class _Snapshot:
    #: None when there is nothing to re-optimise.
    instance: BatchInstance | None
    orders: dict[str, OpenOrder]
    excluded: tuple[Skipped, ...]
    total: int
    prices: PriceSet


def _snapshot(
    store: Store,
    now: float,
    *,
    forward_prices: bool = False,
    reference_cost: bool = False,
    price_max_age_s: float | None = None,
) -> _Snapshot:
    """The open orders, the pool they share and the prices, as one consistent read (one
    snapshot: a PlaceOrder committed between two of these reads would otherwise be half seen)."""
    with store.read(snapshot=True) as conn:
        prices = PriceSet.read(
            conn,
            forward_prices=forward_prices,
            reference_cost=reference_cost,
            now=now,
            max_age_s=price_max_age_s,
        )
        orders = read_open_orders(conn)
        catalog = store.catalog(conn)
        skus = sorted({line.sku for o in orders for line in o.lines} & set(catalog.sku_index))
        network = store.network_for(conn, catalog, skus) if skus and catalog.usable else None
        usage = _capacity_used(conn, [o.capacity_day for o in orders])
    day = today(now)
    excluded: list[Skipped] = []
    chosen: list[tuple[OpenOrder, BatchOrder]] = []
    if network is None:
        return _Snapshot(None, {}, (), len(orders), prices)
    limits = np.asarray(catalog.capacity, dtype=np.int64)
    days = sorted({o.capacity_day for o in orders})
    bucket = {d: i for i, d in enumerate(days)}
    for o in orders:
        reason = _exclusion(network, o, day)
        if reason is not None:
            excluded.append(Skipped(o.order_id, reason))
            continue
        batch_order = BatchOrder(
            o.order_id,
            Order(o.destination, o.lines),
            _allocation(o.allocation),
            latest_day=days_between(day, o.promised_date),
            capacity_bucket=bucket[o.capacity_day],
        )
        evaluation = evaluate(network, batch_order.order, batch_order.current, allow_partial=True)
        if evaluation.delivery_days > batch_order.latest_day:
            excluded.append(
                Skipped(
                    o.order_id,
                    f"its plan, released today, arrives {day_after(day, evaluation.delivery_days)}"
                    f", after the promise {o.promised_date}",
                )
            )
            continue
        chosen.append((o, batch_order))
    # The pool: the chosen orders' reservations and capacity go back to it.
    reserved = network.reserved.copy()
    capacity = np.empty((len(days), len(network.node_ids)), dtype=np.int64)
    for d, i in bucket.items():
        capacity[i] = [
            limit if limit >= UNLIMITED_CAPACITY else limit - usage.get((node, d), 0)
            for node, limit in zip(network.node_ids, limits.tolist(), strict=True)
        ]
    for o, _ in chosen:
        for (node, sku), qty in o.reserved.items():
            reserved[network.node_index[node], network.sku_index[sku]] -= qty
        for (node, used_day), qty in o.capacity_used.items():
            n = network.node_index[node]
            if used_day in bucket and capacity[bucket[used_day], n] < UNLIMITED_CAPACITY:
                capacity[bucket[used_day], n] += qty
    if not chosen:
        return _Snapshot(None, {}, tuple(excluded), len(orders), prices)
    # The evaluator checks each parcel against the nominal limit; the shared
    # capacity left per day is the instance's capacity_left.
    pool = network.replace(reserved=reserved, capacity=limits)
    instance = BatchInstance(pool, tuple(b for _, b in chosen), capacity)
    return _Snapshot(
        instance, {o.order_id: o for o, _ in chosen}, tuple(excluded), len(orders), prices
    )


def _exclusion(network: Network, order: OpenOrder, day: str) -> str | None:
    plan = order.allocation
    if plan.pickup is not None:
        return "click & collect: not re-optimised"
    if plan.waits:
        return "waits for inbound stock (backorder): not re-optimised"
    if units_of(plan) != order.reserved:
        return "its reservations do not match its allocation"
    known = all(line.sku in network.sku_index for line in order.lines) and all(
        p.node_id in network.node_index for p in plan.parcels
    )
    if not known:
        return "names a node or SKU the network no longer has"
    return None


# -------------------------------------------------------------------------- write


def _document(before: Plan, option: Option, today_text: str, status: str) -> Plan:
    """The new allocation: days still count from the order's quote date."""
    plan = plan_of(option, before.option_id)
    offset = days_between(before.start, today_text)
    return replace(
        plan,
        labels=before.labels,
        delivery_days=plan.delivery_days + offset,
        status=status,
        parcels=tuple(replace(p, arrival_days=p.arrival_days + offset) for p in plan.parcels),
        start_date=before.start,
    )


def _lock_capacity(conn: Connection, store: Store, nodes: Iterable[str]) -> dict[str, int]:
    """Lock the nodes' rows (PostgreSQL; SQLite's write lock covers it) and read their limits."""
    query = (
        sa.select(t.nodes.c.node_id, t.nodes.c.daily_capacity_units)
        .where(
            t.nodes.c.node_id.in_(sorted(set(nodes))), t.nodes.c.daily_capacity_units.is_not(None)
        )
        .order_by(t.nodes.c.node_id)
    )
    if not store.is_sqlite:
        query = query.with_for_update()
    return {row.node_id: int(row.daily_capacity_units) for row in conn.execute(query)}


def _apply(
    conn: Connection,
    store: Store,
    order: OpenOrder,
    new_units: Mapping[Position, int],
    document: Plan,
    detail: str,
) -> bool:
    """Write one order's new plan; False if it changed since read (nothing written then).

    Its PENDING shipments follow the new parcels (:meth:`ShipmentRepository.sync`).
    """
    document = with_shipment_ids(document)
    o = t.orders
    updated = conn.execute(
        sa.update(o)
        .where(o.c.order_id == order.order_id, o.c.version == order.version, o.c.state == "PLACED")
        .values(
            allocation_json=json.dumps(document.document(), separators=(",", ":")),
            updated_at=store.clock(),
            version=order.version + 1,
        )
    ).rowcount
    if not updated:
        return False
    r = t.reservations
    conn.execute(sa.delete(r).where(r.c.order_id == order.order_id, r.c.quote_id.is_(None)))
    conn.execute(
        sa.insert(r), order_reservation_rows(order.order_id, new_units, order.capacity_day)
    )
    delta = _capacity_delta(order, new_units)
    store.use_capacity(
        conn, {node: qty for (node, _), qty in delta.items() if qty > 0}, order.capacity_day
    )
    store.give_back_capacity(conn, {key: -qty for key, qty in delta.items() if qty < 0})
    store.add_event(conn, order.order_id, EVENT, detail)
    store.shipments.sync(conn, order.order_id, document, released=False, reason=EVENT)
    store.refresh_state(conn, order.order_id)
    return True


def _capacity_delta(
    order: OpenOrder, new_units: Mapping[Position, int]
) -> dict[tuple[str, str], int]:
    """Change of usage per (node, day) when ``order``'s units become ``new_units``: the new
    ones are booked on its placement day, the old ones leave the day each used."""
    delta = {(node, order.capacity_day): qty for node, qty in units_by_node(new_units).items()}
    for key, qty in order.capacity_used.items():
        delta[key] = delta.get(key, 0) - qty
    return delta


@dataclass(frozen=True)
class _Change:
    order: OpenOrder
    units: dict[Position, int]
    document: Plan
    #: At the cost the batch minimised: the priced cost when it used prices (so a
    #: change that frees a priced unit saves, though its reference cost may rise).
    saving: int
    detail: str


def _fits(
    changes: Sequence[_Change],
    free: Mapping[Position, int],
    limits: Mapping[str, int],
    used: Mapping[tuple[str, str], int],
) -> bool:
    """Whether applying all ``changes`` at once keeps every position and node-day within bounds."""
    delta: dict[Position, int] = {}
    day_delta: dict[tuple[str, str], int] = {}
    for change in changes:
        for key, qty in change.units.items():
            delta[key] = delta.get(key, 0) + qty
        for key, qty in change.order.reserved.items():
            delta[key] = delta.get(key, 0) - qty
        for day_key, qty in _capacity_delta(change.order, change.units).items():
            day_delta[day_key] = day_delta.get(day_key, 0) + qty
    if any(qty > 0 and qty > free.get(key, 0) for key, qty in delta.items()):
        return False
    return all(
        qty <= 0 or node not in limits or used.get((node, day), 0) + qty <= limits[node]
        for (node, day), qty in day_delta.items()
    )


def _write_component(store: Store, changes: Sequence[_Change]) -> tuple[list[str], list[Skipped]]:
    """One transaction: the component's changes that are still valid and still fit."""
    written: list[str] = []
    skipped: list[Skipped] = []
    with store.write() as conn:
        o = t.orders
        ids = sorted(c.order.order_id for c in changes)
        query = sa.select(o.c.order_id, o.c.state, o.c.version).where(o.c.order_id.in_(ids))
        if not store.is_sqlite:
            query = query.order_by(o.c.order_id).with_for_update()
        live = {row.order_id: (row.state, int(row.version)) for row in conn.execute(query)}
        valid: list[_Change] = []
        for change in changes:
            state, version = live.get(change.order.order_id, ("gone", -1))
            if state != "PLACED":
                skipped.append(Skipped(change.order.order_id, f"{state} since it was read"))
            elif version != change.order.version:
                skipped.append(Skipped(change.order.order_id, "changed since it was read"))
            else:
                valid.append(change)
        if not valid:
            return written, skipped
        positions = sorted({k for c in valid for k in (*c.units, *c.order.reserved)})
        free = store.lock_free_units(conn, positions, store.clock())
        nodes = {node for node, _ in positions}
        limits = _lock_capacity(conn, store, nodes)
        used = _capacity_used(conn, sorted({c.order.capacity_day for c in valid}))
        if sum(c.saving for c in valid) >= 0 and _fits(valid, free, limits, used):
            batch = valid
        else:
            # The set no longer fits (or lost the orders it was for): keep the
            # changes that fit one by one and cost their own order no more
            # (at the cost the batch minimised: ``_Change.saving``).
            batch = []
            pending = [c for c in valid if c.saving >= 0]
            progress = True
            while pending and progress:
                progress = False
                for change in list(pending):
                    if _fits([*batch, change], free, limits, used):
                        batch.append(change)
                        pending.remove(change)
                        progress = True
            chosen = {id(c) for c in batch}
            skipped.extend(
                Skipped(c.order.order_id, "the stock or capacity it needs changed since read")
                for c in valid
                if id(c) not in chosen
            )
        for change in sorted(batch, key=lambda c: c.order.order_id):
            if _apply(conn, store, change.order, change.units, change.document, change.detail):
                written.append(change.order.order_id)
            else:  # pragma: no cover - the rows are locked or the write lock is held
                skipped.append(Skipped(change.order.order_id, "changed while written"))
    return written, skipped


def _changes(result: BatchResult, snapshot: _Snapshot, day: str) -> dict[int, list[_Change]]:
    by_component: dict[int, list[_Change]] = {}
    status = result.status
    for outcome in result.outcomes:
        if not outcome.changed:
            continue
        order = snapshot.orders[outcome.order_id]
        option = Option((), outcome.after, Proof(status, 0.0, "batch re-optimisation"))
        document = _document(order.allocation, option, day, status)
        detail = (
            f"cost {to_currency(outcome.before.cost)} -> {to_currency(outcome.after.cost)}, "
            f"{outcome.before.num_parcels} -> {outcome.after.num_parcels} parcel(s), "
            f"arriving {day_after(day, outcome.after.delivery_days)} "
            f"(promised {order.promised_date})"
        )
        saving = outcome.saving
        prices = snapshot.prices
        if prices.run_id is not None:
            opportunity = prices.of(outcome.before), prices.of(outcome.after)
            saving += opportunity[0] - opportunity[1]
            detail += (
                f"; priced with reprice run {prices.run_id}: opportunity cost "
                f"{to_currency(opportunity[0])} -> {to_currency(opportunity[1])}"
            )
        units: dict[Position, int] = {}
        for p in outcome.after.parcels:
            for line in p.lines:
                units[(p.node_id, line.sku)] = units.get((p.node_id, line.sku), 0) + line.qty
        change = _Change(order, units, document, saving, detail)
        by_component.setdefault(outcome.component, []).append(change)
    return by_component


# ---------------------------------------------------------------------------- job


def run_job(
    store: Store,
    *,
    settings: BatchSettings | None = None,
    runner: Runner | None = None,
    dry_run: bool = False,
    forward_prices: bool = False,
    reference_cost: bool = False,
    price_max_age_s: float | None = None,
    progress: Callable[[int, int], object] | None = None,
    before_write: Callable[[], object] | None = None,
) -> JobReport:
    """Read, solve, write (see the module doc); returns what happened.

    ``forward_prices``: re-assign at the priced cost of the latest reprice run
    (the service's ``forward_prices`` setting); ``reference_cost`` forces the
    reference cost even then; prices older than ``price_max_age_s`` (or past their run's
    horizon) are not used. ``before_write`` runs between the solve and the
    first write (tests use it to interleave a concurrent change).
    """
    started = time.perf_counter()
    now = store.clock()
    day = today(now)
    snapshot = _snapshot(
        store,
        now,
        forward_prices=forward_prices,
        reference_cost=reference_cost,
        price_max_age_s=price_max_age_s,
    )
    prices = snapshot.prices
    log.info("oms reoptimise: %s", prices.description)
    if snapshot.instance is None:
        return JobReport(
            dry_run=dry_run, orders=snapshot.total, considered=0, changed=0,
            parcels_before=0, parcels_after=0, cost_before=0, cost_after=0, promises_kept=0,
            excluded=snapshot.excluded, skipped=(), seconds=time.perf_counter() - started,
            status="OPTIMAL", prices=prices.description, price_run=prices.run_id,
        )  # fmt: skip
    if prices.prices is not None:
        settings = replace(settings or BatchSettings(), opportunity=prices.prices)
    result = reoptimise(snapshot.instance, settings, runner, progress)
    components = _changes(result, snapshot, day)
    if before_write is not None:
        before_write()
    written: list[str] = []
    skipped: list[Skipped] = []
    if not dry_run:
        for component in sorted(components):
            done, missed = _write_component(store, components[component])
            written.extend(done)
            skipped.extend(missed)
    applied = {o.order_id for o in result.changed} if dry_run else set(written)
    after = {o.order_id: (o.after if o.order_id in applied else o.before) for o in result.outcomes}
    return JobReport(
        dry_run=dry_run,
        orders=snapshot.total,
        considered=len(result.outcomes),
        changed=len(applied),
        parcels_before=result.parcels_before,
        parcels_after=sum(e.num_parcels for e in after.values()),
        cost_before=result.cost_before,
        cost_after=sum(e.cost for e in after.values()),
        promises_kept=sum(after[o.order_id].delivery_days <= o.latest_day for o in result.outcomes),
        excluded=snapshot.excluded,
        skipped=tuple(skipped),
        seconds=time.perf_counter() - started,
        status=result.status,
        components=result.components,
        written=tuple(written),
        prices=prices.description,
        price_run=prices.run_id,
        opportunity_before=sum(prices.of(o.before) for o in result.outcomes),
        opportunity_after=sum(prices.of(e) for e in after.values()),
    )


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    """The ``oms reoptimise`` options (``parser``: its argparse sub-parser)."""
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the store (default: $OMS_DATABASE_URL or sqlite:///oms.db)",
    )
    parser.add_argument("--dry-run", action="store_true", help="solve and report; write nothing")
    dask_cluster.add_arguments(parser)
    parser.add_argument(
        "--time-limit", type=float, help="solver seconds per sub-problem (default 60)"
    )
    parser.add_argument(
        "--max-orders", type=int, help="orders per sub-problem; bigger components are chunked"
    )
    parser.add_argument("--rounds", type=int, help="chunking rounds for big components")
    parser.add_argument(
        "--reference-cost",
        action="store_true",
        help="re-assign at the reference cost even when forward prices are on "
        "($OMS_FORWARD_PRICES: by default the job then uses the latest oms reprice run)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def command(
    args: Any,
    database_url: str,
    *,
    forward_prices: bool = False,
    price_max_age_s: float | None = None,
) -> int:
    """Run ``oms reoptimise``: print the summary table; exit 0 (1 if a promise would break).

    ``forward_prices``: the service's setting (``OMS_FORWARD_PRICES``): re-assign at the
    priced cost of the latest reprice run unless ``--reference-cost``, or it expired
    (``price_max_age_s``: ``OMS_FORWARD_PRICES_MAX_AGE_S``).
    """
    from contextlib import ExitStack
    from dataclasses import replace

    from tqdm import tqdm

    from sourcing.batch import DaskRunner, LocalRunner

    settings = BatchSettings()
    for name, value in (
        ("time_limit_s", args.time_limit),
        ("max_orders_per_problem", args.max_orders),
        ("rounds", args.rounds),
    ):
        if value is not None:
            settings = replace(settings, **{name: value})
    store = Store(database_url, pool_size=2)
    with ExitStack() as stack:
        stack.callback(store.dispose)
        store.migrate()
        runner: Runner = (
            LocalRunner() if args.in_process else DaskRunner(dask_cluster.dask_client(stack, args))
        )
        bar = stack.enter_context(
            tqdm(total=0, unit="problem", desc="reoptimise", disable=args.no_progress)
        )

        def progress(done: int, known: int) -> None:
            bar.total = known
            bar.n = done
            bar.refresh()

        report = run_job(
            store,
            settings=settings,
            runner=runner,
            dry_run=args.dry_run,
            forward_prices=forward_prices,
            reference_cost=args.reference_cost,
            price_max_age_s=price_max_age_s,
            progress=progress,
        )
    print(report.table())
    return 0 if report.promises_kept == report.considered else 1
