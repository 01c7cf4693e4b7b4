"""Quote latency: the optimiser against a plain CP-SAT model and the greedy baseline.

Run from the project root::

    .venv/bin/python benchmarks/quote_latency.py [--carts N] [--plain-carts M]
        [--sizes 1x10x2,fragmented:20x200x2,...] [--json PATH] [--time-limit S]

For each size ``[REGIME:]LxNxV`` (L order lines, N nodes of a generated network,
all of them candidates; V=2 services; REGIME one of ``networks.REGIMES``,
``standard`` if omitted) it draws seeded random carts on
``regime_network(REGIME, N, max(100, 3 * L), seed)`` (carts the optimiser
rejects with ShortageError are skipped and counted) and measures, reported
per regime and size:

1. the optimiser, ``sourcing.quote`` with ``num_workers=1``: wall time
   per quote (p50/p99/max), the share of returned options proven OPTIMAL and
   of quotes with every option proven, the largest gap, CP-SAT calls per quote;
2. a *plain model*: an independent, naive CP-SAT formulation (below) built
   from scratch for each of the four labels, with no pruning, bounds or
   hints, one worker and ``--time-limit`` seconds per solve; its wall time per
   cart (all four labels), its share of OPTIMAL solves, and whether its
   optimal values agree with the optimiser's labelled options;
3. the greedy baseline ``baselines.greedy_nearest``: wall time and its cost
   against the optimiser's CHEAPEST option.

Plain model, on the arrays of ``sourcing.costs.order_costs`` (K SKUs, C
candidate nodes, V services): ``x[n,v,k]`` integer in ``[0, a[n,k]]`` for
every usable (n, v) and every SKU k that n holds; ``y[n,v]`` boolean;
``x[n,v,k] <= a[n,k] * y[n,v]``; ``sum_v y[n,v] <= 1``;
``sum_{v,k} x[n,v,k] <= cap[n]``; ``sum_{n,v} x[n,v,k] == Q[k]``;
``T >= eta[n,v] * y[n,v]``; cost = ``sum F y + sum u x``. (Stock per node is
implied by the linking rows and one service per node.) Labels: CHEAPEST =
min cost; FASTEST = min T, then min cost with T fixed (two solves, one
model); SINGLE_PARCEL = min cost with ``sum y == 1``; BALANCED = min
``cost + value_of_day * T``.

Agreement: for a pair where both sides are proven optimal the values must be
equal exactly (cost for CHEAPEST and SINGLE_PARCEL, (day, cost) for FASTEST,
``cost + value_of_day * day`` for BALANCED, and SINGLE_PARCEL must exist on
both sides or on neither). Where only one side is proven, the other side's
feasible value must not beat it. Anything else is a mismatch.

Cart ``i`` of a size is ``random_cart(network, np.random.default_rng((seed, i)), L)``.
Run ``--seed`` 0, 1, 2... for fresh networks and carts: the regimes are
distributions, not instances tuned to one seed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ortools
import pandas as pd
from ortools.sat.python import cp_model

from sourcing import QuoteSettings, quote
from sourcing.baselines import greedy_nearest
from sourcing.costs import OrderCosts, order_costs
from sourcing.errors import ShortageError
from sourcing.model import MILLICENTS_PER_UNIT, Label, Option, Order
from sourcing.orders import demand_by_sku

from networks import REGIMES, generated_network, random_cart, regime_network, warm_up_solver

DEFAULT_SIZES = (
    "1x10x2,3x50x2,10x50x2,20x200x2,50x500x2,"
    "fragmented:10x50x2,fragmented:20x200x2,fragmented:50x500x2,"
    "credits:20x200x2,capacity:20x200x2"
)
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "quote_latency.json"
#: p99 targets of the optimiser (ms) by regime:size.
TARGETS_P99_MS = {
    "standard:10x50x2": 25.0,
    "standard:50x500x2": 150.0,
    "fragmented:20x200x2": 100.0,
    "fragmented:50x500x2": 500.0,
}
#: Share of quotes with every option proven OPTIMAL that the targets ask for.
TARGETS_PROVEN = {"fragmented:20x200x2": 1.0, "fragmented:50x500x2": 0.99}
#: The plain model is slow on the largest or split carts: never more than this many there.
PLAIN_CAP = {
    "standard:50x500x2": 10,
    "fragmented:20x200x2": 5,
    "fragmented:50x500x2": 2,
    "credits:20x200x2": 5,
    "capacity:20x200x2": 5,
}
#: Greedy/optimal cost ratios only where the optimal cost is at least this much
#: (1.00 currency unit): below it a ratio says nothing (costs can be ~0 or < 0).
RATIO_MIN_COST = MILLICENTS_PER_UNIT
LABELS = (Label.CHEAPEST, Label.FASTEST, Label.SINGLE_PARCEL, Label.BALANCED)


# --------------------------------------------------------------------------- plain model


@dataclass
class PlainResult:
    """One label solved by the plain model. ``status``: OPTIMAL, FEASIBLE, INFEASIBLE, UNKNOWN."""

    status: str
    cost: int | None = None
    day: int | None = None
    parcels: int | None = None
    solves: list[str] = field(default_factory=list)


_STATUS = {
    cp_model.OPTIMAL: "OPTIMAL",
    cp_model.FEASIBLE: "FEASIBLE",
    cp_model.INFEASIBLE: "INFEASIBLE",
    cp_model.UNKNOWN: "UNKNOWN",
    cp_model.MODEL_INVALID: "MODEL_INVALID",
}


class PlainModel:
    """The full naive model of one order, built from the order's cost arrays."""

    def __init__(self, costs: OrderCosts, demand: np.ndarray) -> None:
        self.model = model = cp_model.CpModel()
        slot_n, slot_v = np.nonzero(costs.usable)  # every usable (node, service)
        self.slot_n, self.slot_v = slot_n, slot_v
        n_slots = slot_n.size
        self.y = model.new_bool_var_series("y", pd.RangeIndex(n_slots))
        ys = self.y.tolist()
        # Row table of x: one row per (slot, SKU held by the slot's node).
        row_slot, row_k = np.nonzero(costs.available[slot_n] > 0)
        row_n, row_v = slot_n[row_slot], slot_v[row_slot]
        upper = costs.available[row_n, row_k]
        self.x = model.new_int_var_series(
            "x", pd.RangeIndex(row_slot.size), lower_bounds=0, upper_bounds=pd.Series(upper)
        )
        xs = self.x.tolist()
        for r, (s, a) in enumerate(zip(row_slot.tolist(), upper.tolist(), strict=True)):
            model.add(xs[r] <= a * ys[s])
        for n in np.unique(slot_n).tolist():
            model.add_at_most_one(ys[s] for s in np.flatnonzero(slot_n == n).tolist())
            rows = np.flatnonzero(row_n == n).tolist()
            model.add(cp_model.LinearExpr.sum([xs[r] for r in rows]) <= int(costs.capacity[n]))
        for k in range(demand.size):
            rows = np.flatnonzero(row_k == k).tolist()
            model.add(cp_model.LinearExpr.sum([xs[r] for r in rows]) == int(demand[k]))
        eta = costs.arrival[slot_n, slot_v]
        self.eta = eta
        self.day = model.new_int_var(0, int(eta.max(initial=0)), "T")
        for s, e in enumerate(eta.tolist()):
            model.add(self.day >= e * ys[s])
        self.cost = cp_model.LinearExpr.weighted_sum(
            xs + ys,
            costs.unit[row_n, row_v, row_k].tolist() + costs.fixed[slot_n, slot_v].tolist(),
        )

    def solve(self, time_limit_s: float) -> tuple[str, cp_model.CpSolver]:
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.max_time_in_seconds = time_limit_s
        return _STATUS.get(solver.solve(self.model), "UNKNOWN"), solver

    def read(self, status: str, solver: cp_model.CpSolver, solves: list[str]) -> PlainResult:
        if status not in ("OPTIMAL", "FEASIBLE"):
            return PlainResult(status, solves=solves)
        used = np.array([solver.boolean_value(y) for y in self.y.tolist()], dtype=bool)
        return PlainResult(
            status,
            cost=int(solver.value(self.cost)),
            day=int(self.eta[used].max(initial=0)),
            parcels=int(used.sum()),
            solves=solves,
        )


def plain_options(
    costs: OrderCosts, demand: np.ndarray, value_of_day: int, time_limit_s: float
) -> dict[Label, PlainResult]:
    """All four labels, each from a model built from scratch."""
    results: dict[Label, PlainResult] = {}

    plain = PlainModel(costs, demand)
    plain.model.minimize(plain.cost)
    status, solver = plain.solve(time_limit_s)
    results[Label.CHEAPEST] = plain.read(status, solver, [status])

    plain = PlainModel(costs, demand)
    plain.model.minimize(plain.day)
    first, solver = plain.solve(time_limit_s)
    if first in ("OPTIMAL", "FEASIBLE"):
        plain.model.add(plain.day == int(solver.value(plain.day)))
        plain.model.minimize(plain.cost)
        second, solver = plain.solve(time_limit_s)
        # Proven only if both solves are; a failed second solve decides the status.
        combined = "FEASIBLE" if second == "OPTIMAL" and first != "OPTIMAL" else second
        results[Label.FASTEST] = plain.read(combined, solver, [first, second])
    else:
        results[Label.FASTEST] = PlainResult(first, solves=[first])

    plain = PlainModel(costs, demand)
    plain.model.add(cp_model.LinearExpr.sum(plain.y.tolist()) == 1)
    plain.model.minimize(plain.cost)
    status, solver = plain.solve(time_limit_s)
    results[Label.SINGLE_PARCEL] = plain.read(status, solver, [status])

    plain = PlainModel(costs, demand)
    plain.model.minimize(plain.cost + value_of_day * plain.day)
    status, solver = plain.solve(time_limit_s)
    results[Label.BALANCED] = plain.read(status, solver, [status])
    return results


# --------------------------------------------------------------------------- comparison


def _value(label: Label, cost: int, day: int, value_of_day: int) -> tuple[int, ...]:
    """What must agree for ``label``, as a tuple compared lexicographically (less is better)."""
    if label == Label.FASTEST:
        return (day, cost)
    if label == Label.BALANCED:
        return (cost + value_of_day * day,)
    return (cost,)


def compare(
    options: Sequence[Option], plain: dict[Label, PlainResult], value_of_day: int
) -> tuple[list[dict[str, Any]], int]:
    """Mismatches between the optimiser's labelled options and the plain model; and unverified."""
    mismatches: list[dict[str, Any]] = []
    unverified = 0
    for label in LABELS:
        opt = next((o for o in options if label in o.labels), None)
        ref = plain[label]
        opt_desc = (
            None
            if opt is None
            else {
                "cost": opt.cost,
                "day": opt.delivery_days,
                "parcels": opt.num_parcels,
                "status": opt.proof.status,
                "gap": opt.proof.gap,
            }
        )
        ref_desc = {"cost": ref.cost, "day": ref.day, "parcels": ref.parcels, "status": ref.status}
        problem: str | None = None
        if opt is None or ref.cost is None or ref.day is None:
            if label == Label.SINGLE_PARCEL and opt is None and ref.status == "INFEASIBLE":
                continue  # neither has a one-parcel plan
            if opt is None and ref.status in ("OPTIMAL", "FEASIBLE"):
                problem = "plain model found a plan, optimiser has no option with this label"
            elif opt is not None and ref.status == "INFEASIBLE":
                problem = "plain model proved infeasible, optimiser returned an option"
            else:
                unverified += 1
                continue
        else:
            a = _value(label, opt.cost, opt.delivery_days, value_of_day)
            b = _value(label, ref.cost, ref.day, value_of_day)
            opt_proven = opt.proof.status == "OPTIMAL"
            ref_proven = ref.status == "OPTIMAL"
            if opt_proven and ref_proven:
                if a != b:
                    problem = "both proven optimal, values differ"
            elif opt_proven and b < a:
                problem = "plain model's feasible plan beats the optimiser's proven optimum"
            elif ref_proven and a < b:
                problem = "optimiser's feasible plan beats the plain model's proven optimum"
            elif not (opt_proven and ref_proven):
                unverified += 1
        if problem is not None:
            mismatches.append(
                {"label": label.value, "problem": problem, "optimiser": opt_desc, "plain": ref_desc}
            )
    return mismatches, unverified


# --------------------------------------------------------------------------- benchmark


def _pcts(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    arr = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
    }


def parse_spec(text: str) -> tuple[str, str]:
    """``[REGIME:]LxNxV`` -> (regime, size), the size checked by :func:`parse_size`."""
    regime, _, size = text.strip().lower().rpartition(":")
    regime = regime or "standard"
    if regime not in REGIMES:
        raise argparse.ArgumentTypeError(
            f"size {text!r}: unknown regime {regime!r} (expected one of {', '.join(REGIMES)})"
        )
    parse_size(size)
    return regime, size


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        lines, nodes, services = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: expected LxNxV") from exc
    if services != 2:
        raise argparse.ArgumentTypeError(f"size {text!r}: generated networks have 2 services")
    if lines < 1 or nodes < 1:
        raise argparse.ArgumentTypeError(f"size {text!r}: lines and nodes must be >= 1")
    return lines, nodes, services


def run_size(
    regime: str,
    size: str,
    n_carts: int,
    n_plain: int,
    seed: int,
    settings: QuoteSettings,
    plain_limit_s: float,
) -> dict[str, Any]:
    lines, n_nodes, _ = parse_size(size)
    network = regime_network(regime, n_nodes, max(100, 3 * lines), seed)
    vod = settings.value_of_day
    started = time.perf_counter()
    carts: list[dict[str, Any]] = []
    orders: list[tuple[Order, Any, OrderCosts, np.ndarray]] = []
    skipped = 0
    attempt = 0
    max_attempts = 20 * n_carts + 20
    while len(carts) < n_carts and attempt < max_attempts:
        cart_seed = attempt
        attempt += 1
        order = random_cart(network, np.random.default_rng((seed, cart_seed)), lines)
        t0 = time.perf_counter()
        try:
            q = quote(network, order, settings)
        except ShortageError:
            skipped += 1
            continue
        opt_ms = (time.perf_counter() - t0) * 1000
        record: dict[str, Any] = {
            "seed": [seed, cart_seed],
            "opt_ms": opt_ms,
            "cpsat_calls": q.stats.cpsat_calls,
            "subproblems": q.stats.subproblems,
            "closed_by_bound": q.stats.closed_by_bound,
            "options": [
                {
                    "labels": [label.value for label in o.labels],
                    "cost": o.cost,
                    "day": o.delivery_days,
                    "parcels": o.num_parcels,
                    "status": o.proof.status,
                    "gap": o.proof.gap,
                }
                for o in q.options
            ],
            "frontier_size": len(q.frontier),
        }
        skus, wanted = demand_by_sku(network, order)
        costs = order_costs(network, order.destination.lat, order.destination.lon, skus, wanted)
        record["candidate_nodes"] = len(costs.nodes)
        cheapest = q.option(Label.CHEAPEST)
        t0 = time.perf_counter()
        try:
            greedy = greedy_nearest(network, order)
            greedy_ms = (time.perf_counter() - t0) * 1000
        except ShortageError:
            greedy = None
            greedy_ms = None
        record["greedy_ms"] = greedy_ms
        record["greedy_cost"] = None if greedy is None else greedy.cost
        record["opt_cheapest_cost"] = None if cheapest is None else cheapest.cost
        record["opt_cheapest_status"] = None if cheapest is None else cheapest.proof.status
        carts.append(record)
        orders.append((order, q, costs, wanted))

    mismatches: list[dict[str, Any]] = []
    unverified = 0
    plain_ms: list[float] = []
    plain_opt_ms: list[float] = []
    plain_status: list[str] = []
    for record, (_order, q, costs, wanted) in zip(carts[:n_plain], orders[:n_plain], strict=True):
        t0 = time.perf_counter()
        plain = plain_options(costs, wanted, vod, plain_limit_s)
        ms = (time.perf_counter() - t0) * 1000
        plain_ms.append(ms)
        plain_opt_ms.append(record["opt_ms"])
        record["plain_ms"] = ms
        record["plain"] = {
            label.value: {
                "status": r.status,
                "solves": r.solves,
                "cost": r.cost,
                "day": r.day,
                "parcels": r.parcels,
            }
            for label, r in plain.items()
        }
        plain_status.extend(r.status for r in plain.values() if r.status != "INFEASIBLE")
        found, unv = compare(q.options, plain, vod)
        unverified += unv
        for m in found:
            m["seed"] = record["seed"]
            m["size"] = f"{regime}:{size}"
        mismatches.extend(found)

    opt_ms = [c["opt_ms"] for c in carts]
    statuses = [o["status"] for c in carts for o in c["options"]]
    proven_quotes = sum(all(o["status"] == "OPTIMAL" for o in c["options"]) for c in carts)
    gaps = [o["gap"] for c in carts for o in c["options"] if o["status"] != "OPTIMAL"]
    greedy_ms = [c["greedy_ms"] for c in carts if c["greedy_ms"] is not None]
    ratio_pairs = [
        (c["greedy_cost"], c["opt_cheapest_cost"])
        for c in carts
        if c["greedy_cost"] is not None and c["opt_cheapest_cost"] is not None
    ]
    ratios = [g / o for g, o in ratio_pairs if o >= RATIO_MIN_COST]
    diffs = [(g - o) / MILLICENTS_PER_UNIT for g, o in ratio_pairs]
    greedy_beats = sum(
        1
        for c in carts
        if c["greedy_cost"] is not None
        and c["opt_cheapest_cost"] is not None
        and c["opt_cheapest_status"] == "OPTIMAL"
        and c["greedy_cost"] < c["opt_cheapest_cost"]
    )
    cheapest_costs = [
        c["opt_cheapest_cost"] / MILLICENTS_PER_UNIT
        for c in carts
        if c["opt_cheapest_cost"] is not None
    ]
    opt_p50_same = float(np.median(plain_opt_ms)) if plain_opt_ms else None
    plain_p50 = float(np.median(plain_ms)) if plain_ms else None
    summary: dict[str, Any] = {
        "regime": regime,
        "size": size,
        "spec": f"{regime}:{size}",
        "lines": lines,
        "nodes": n_nodes,
        "services": 2,
        "n_skus": max(100, 3 * lines),
        "carts": len(carts),
        "skipped_shortage": skipped,
        "candidate_nodes_mean": float(np.mean([c["candidate_nodes"] for c in carts]))
        if carts
        else None,
        "opt_ms": _pcts(opt_ms),
        "opt_optimal_share": statuses.count("OPTIMAL") / len(statuses) if statuses else None,
        "opt_proven_quote_share": proven_quotes / len(carts) if carts else None,
        "opt_parcels_max_mean": float(
            np.mean([max(o["parcels"] for o in c["options"]) for c in carts if c["options"]])
        )
        if carts
        else None,
        "opt_max_gap": max(gaps) if gaps else 0.0,
        "opt_cpsat_calls_mean": float(np.mean([c["cpsat_calls"] for c in carts]))
        if carts
        else None,
        "opt_over_time_limit": sum(1 for ms in opt_ms if ms > 1000 * settings.time_limit_s),
        "opt_closed_by_bound_share": (
            sum(c["closed_by_bound"] for c in carts) / max(1, sum(c["subproblems"] for c in carts))
        ),
        "plain_carts": len(plain_ms),
        "plain_time_limit_s": plain_limit_s,
        "plain_ms": _pcts(plain_ms),
        "plain_optimal_share": plain_status.count("OPTIMAL") / len(plain_status)
        if plain_status
        else None,
        "plain_status_counts": {s: plain_status.count(s) for s in sorted(set(plain_status))},
        "opt_p50_ms_on_plain_carts": opt_p50_same,
        "speedup_p50": plain_p50 / opt_p50_same if plain_p50 and opt_p50_same else None,
        "mismatches": len(mismatches),
        "unverified_pairs": unverified,
        "mismatch_details": mismatches,
        "greedy_ms": _pcts(greedy_ms),
        "greedy_failed": len(carts) - len(greedy_ms),
        "greedy_ratio": _pcts(ratios),
        "greedy_ratio_carts": len(ratios),
        "greedy_ratio_min_cost": RATIO_MIN_COST / MILLICENTS_PER_UNIT,
        "greedy_excess_currency": _pcts(diffs),
        "greedy_ratio_of_sums": (
            sum(g for g, _ in ratio_pairs) / sum(o for _, o in ratio_pairs)
            if ratio_pairs and sum(o for _, o in ratio_pairs) > 0
            else None
        ),
        "greedy_beats_proven_optimum": greedy_beats,
        "opt_cheapest_cost_currency": _pcts(cheapest_costs),
        "seconds": time.perf_counter() - started,
        "cart_records": carts,
    }
    return summary


# --------------------------------------------------------------------------- output


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[dict[str, Any]]) -> str:
    """One table per regime, in the order the regimes were first run."""
    head = (
        f"{'size':<10} {'carts':>5} {'skip':>4} | {'opt p50':>7} {'p99':>7} {'max':>7} "
        f"{'OPT%':>6} {'Q-OPT%':>6} {'parcels':>7} {'cpsat/q':>7} | {'plain n':>7} {'p50':>8} "
        f"{'p99':>8} {'max':>8} {'OPT%':>6} | {'speedup':>7} | {'grdy p50':>8} {'extra':>7} | "
        f"{'mism':>4}"
    )
    unit = (
        f"{'':<10} {'':>5} {'':>4} | {'ms':>7} {'ms':>7} {'ms':>7} {'':>6} {'':>6} {'max':>7} "
        f"{'':>7} | {'':>7} {'ms':>8} {'ms':>8} {'ms':>8} {'':>6} | {'p50 x':>7} | {'ms':>8} "
        f"{'$/cart':>7} | {'':>4}"
    )
    out: list[str] = []
    for regime in dict.fromkeys(r["regime"] for r in results):
        out += [f"regime {regime}", head, unit, "-" * len(head)]
        for r in (r for r in results if r["regime"] == regime):
            out.append(_row(r))
        out.append("")
    return "\n".join(out).rstrip()


def _pct(share: float | None) -> str:
    return _fmt(None if share is None else 100 * share)


def _row(r: dict[str, Any]) -> str:
    extra = r["greedy_excess_currency"]["mean"]
    return (
        f"{r['size']:<10} {r['carts']:>5} {r['skipped_shortage']:>4} | "
        f"{_fmt(r['opt_ms']['p50'], '.2f'):>7} {_fmt(r['opt_ms']['p99'], '.2f'):>7} "
        f"{_fmt(r['opt_ms']['max'], '.2f'):>7} {_pct(r['opt_optimal_share']):>6} "
        f"{_pct(r['opt_proven_quote_share']):>6} {_fmt(r['opt_parcels_max_mean']):>7} "
        f"{_fmt(r['opt_cpsat_calls_mean'], '.2f'):>7} | "
        f"{r['plain_carts']:>7} {_fmt(r['plain_ms']['p50']):>8} "
        f"{_fmt(r['plain_ms']['p99']):>8} {_fmt(r['plain_ms']['max']):>8} "
        f"{_pct(r['plain_optimal_share']):>6} | "
        f"{_fmt(r['speedup_p50']):>7} | {_fmt(r['greedy_ms']['p50'], '.2f'):>8} "
        f"{_fmt(extra, '.2f'):>7} | {r['mismatches']:>4}"
    )


def targets(results: list[dict[str, Any]]) -> str:
    by_spec = {r["spec"]: r for r in results}
    parts = []
    for spec, limit in TARGETS_P99_MS.items():
        r = by_spec.get(spec)
        if r is None or r["opt_ms"]["p99"] is None:
            parts.append(f"p99 <= {limit:g} ms at {spec}: not run")
            continue
        p99 = r["opt_ms"]["p99"]
        verdict = "PASS" if p99 <= limit else "MISS"
        text = f"p99 <= {limit:g} ms at {spec}: {p99:.2f} ms {verdict}"
        if spec in TARGETS_PROVEN:
            want, share = TARGETS_PROVEN[spec], r["opt_proven_quote_share"]
            verdict = "PASS" if share >= want else "MISS"
            text += f", quotes all proven {100 * share:.1f}% (>= {100 * want:g}%) {verdict}"
        parts.append(text)
    return "targets:\n  " + "\n  ".join(parts)


def _pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {0})
            return "pinned to CPU 0 (os.sched_setaffinity)"
        except OSError as exc:
            return f"not pinned (sched_setaffinity failed: {exc})"
    return "not pinned (os.sched_setaffinity unavailable)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--carts", type=int, default=200, help="carts per size (default 200)")
    parser.add_argument(
        "--plain-carts",
        type=int,
        default=20,
        help="carts per size also solved by the plain model (default 20; at most 10 at 50x500x2)",
    )
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"default {DEFAULT_SIZES}")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the JSON")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=10.0,
        help="plain model: time limit per CP-SAT solve in seconds (default 10)",
    )
    parser.add_argument(
        "--quote-time-limit",
        type=float,
        default=QuoteSettings().time_limit_s,
        help="optimiser: QuoteSettings.time_limit_s (default: the QuoteSettings default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="network and cart seed (default 0)")
    args = parser.parse_args(argv)
    specs = [parse_spec(s) for s in args.sizes.split(",") if s.strip()]

    pinning = _pin_to_one_core()
    settings = QuoteSettings(num_workers=1, time_limit_s=args.quote_time_limit)
    print(
        f"quote latency: {pinning}; optimiser QuoteSettings(num_workers=1, "
        f"time_limit_s={settings.time_limit_s:g}, value_of_day={settings.value_of_day}); "
        f"plain model num_workers=1, {args.time_limit:g} s per solve; "
        f"ortools {ortools.__version__}, python {platform.python_version()}",
        flush=True,
    )
    # Warm-up (imports, CP-SAT's first-solve overhead, the solver's compiled kernels as
    # `oms serve` loads them before serving), not timed.
    warm_up_solver()
    warm_net = generated_network(10, 100, args.seed)
    warm = random_cart(warm_net, np.random.default_rng(12345), 2)
    try:
        quote(warm_net, warm, settings)
        skus, wanted = demand_by_sku(warm_net, warm)
        warm_costs = order_costs(warm_net, warm.destination.lat, warm.destination.lon, skus, wanted)
        plain_options(warm_costs, wanted, settings.value_of_day, args.time_limit)
    except ShortageError:
        pass

    results = []
    for regime, size in specs:
        cap = PLAIN_CAP.get(f"{regime}:{size}", args.plain_carts)
        n_plain = min(args.plain_carts, args.carts, cap)
        r = run_size(regime, size, args.carts, n_plain, args.seed, settings, args.time_limit)
        results.append(r)
        print(
            f"  done {regime}:{size}: {r['carts']} carts ({r['skipped_shortage']} skipped), "
            f"opt p50 {_fmt(r['opt_ms']['p50'], '.2f')} ms, "
            f"plain p50 {_fmt(r['plain_ms']['p50'])} ms on {r['plain_carts']} carts, "
            f"{r['mismatches']} mismatches, {_fmt(r['candidate_nodes_mean'])} candidate nodes "
            f"on average, {r['seconds']:.1f} s",
            flush=True,
        )

    print()
    print(table(results))
    print()
    print(targets(results))
    print(
        "extra = mean of greedy cost - optimal CHEAPEST cost per cart, in currency units "
        "(a ratio misleads: with storage credits optimal costs can be ~0 or negative); "
        "speedup = plain p50 / optimiser p50 on the same carts; OPT% (plain) excludes "
        "SINGLE_PARCEL proven infeasible; Q-OPT% = quotes with every option proven OPTIMAL; "
        "parcels = mean over carts of the most parcels in any option."
    )
    for r in results:
        e = r["greedy_excess_currency"]
        print(
            f"  {r['spec']}: greedy excess cost mean {_fmt(e['mean'], '.2f')} "
            f"(p90 {_fmt(e['p90'], '.2f')}) currency units; ratio p90 "
            f"{_fmt(r['greedy_ratio']['p90'], '.3f')} on {r['greedy_ratio_carts']} carts; "
            f"optimiser max gap {r['opt_max_gap']:.4g}, "
            f"{r['opt_over_time_limit']} quotes over time_limit_s; "
            f"unverified pairs {r['unverified_pairs']}"
        )
    all_mismatches = [m for r in results for m in r["mismatch_details"]]
    if all_mismatches:
        print("\nmismatches (cart = random_cart(net, default_rng(seed), L)):")
        for m in all_mismatches:
            print(
                f"  {m['size']} seed={tuple(m['seed'])} {m['label']}: {m['problem']}; "
                f"optimiser {m['optimiser']}; plain {m['plain']}"
            )

    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "pinning": pinning,
        "ortools": ortools.__version__,
        "python": platform.python_version(),
        "settings": {
            "value_of_day": settings.value_of_day,
            "quote_time_limit_s": settings.time_limit_s,
            "num_workers": 1,
            "plain_time_limit_s": args.time_limit,
            "seed": args.seed,
        },
        "targets_p99_ms": TARGETS_P99_MS,
        "targets_proven_quote_share": TARGETS_PROVEN,
        "results": results,
    }
    args.json.write_text(json.dumps(payload, indent=1, default=float))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
