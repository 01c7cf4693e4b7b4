"""Opportunity costs of stock: the fluid LP of expected demand until the next replenishment.

A myopic policy gives each order the plan that is cheapest on the stock it
sees, and so drains the node nearest to dense demand: the orders that come
after ship from farther away. Acimovic and Graves (2015) price that loss: the
dual value of a node's stock in a transportation LP of the demand expected
before the stock is replenished is what one more unit there would save later,
so adding it to each unit's cost makes an order leave the unit to whoever
needs it more. This module builds and solves that LP.

Model (money in currency units inside the LP, millicents outside):

* data: regions r (clusters of the destinations seen so far, each with its
  member points and their weights); SKUs s; expected units ``D[r, s]``
  until the next replenishment (:class:`DemandForecast`); remaining
  available stock ``A[n, s]``; the cost of serving one unit of s in region r
  from node n, ``c[n, r, s]`` = the cheapest customer service's parcel fixed
  cost (base price + handling) over the expected units per parcel + its
  per-kg price x the SKU's weight - the node's storage credit at its stock
  now, averaged over the region's points (each point zoned by its own
  distance to n); a lost unit costs ``P[s]`` = the dearest arc of s + 1.00;
* variables: ``x[n, r, s] >= 0`` units of s sent from n to r; ``z[r, s] >= 0``
  units of s not served in r;
* constraints: ``sum_n x[n, r, s] + z[r, s] = D[r, s]`` (demand);
  ``sum_r x[n, r, s] <= A[n, s]`` (stock, dual ``-lambda[n, s] <= 0``);
* objective: minimise ``sum c x + sum P z``;
* rationing: the policies serve every order while stock lasts, wherever it
  comes from, so when a SKU's expected demand exceeds its stock, each region's
  demand is scaled down to the stock (times ``ration_at`` < 1, so some stock is
  left and the prices are pinned at zero there): shortage falls on the orders
  that come last, not on the regions that are dearest to serve, and the
  penalty only prices demand no kept arc reaches.

The opportunity cost of a unit of s at n is ``lambda[n, s]`` (millicents,
rounded to a whole millicent so the single-order model stays exact in
integers): zero where stock is left over, the later saving where it is not.
Only the differences between nodes change an order's choice: a constant added
to every node of a SKU shifts every plan that covers the order equally.

The LP decomposes by SKU; it is solved as one block-diagonal model (one
GLOP call). To keep it small, each (r, s) gets arcs from only its
``arcs_per_region`` cheapest holders of s (and every holder is connected to
its cheapest region, so every stock row has a price).

Demand is estimated from the order history up to now, never from the future
(:class:`OrderHistory`): regions are a weighted k-means of the destinations
seen; a SKU's rate blends the network's ``daily_demand`` (the planning
forecast) with its observed rate as history accumulates; a region's share of
a SKU blends that SKU's own observed shares with the shares of all units.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Final

import numpy as np

from sourcing.costs import haversine_km, storage_credit, zone_of
from sourcing.forward.lp import OPTIMAL, SparseLp, csr, solve_lp
from sourcing.model import MILLICENTS_PER_UNIT, FloatArray, IntArray, Network

__all__ = [
    "Committed",
    "DemandForecast",
    "FluidSettings",
    "FluidSolution",
    "OrderHistory",
    "Regions",
    "forecast_demand",
    "solve_fluid",
    "unit_costs",
    "with_committed",
]

#: A lost unit costs this much more than the dearest way to serve it (currency units).
LOST_MARGIN: Final = 1.0


@dataclass(frozen=True)
class FluidSettings:
    """Knobs of the forward-looking prices.

    ``regions``: clusters of destinations; ``arcs_per_region``: cheapest
    holders kept per (region, SKU); ``rate_memory_days``: how many days of
    history weigh as much as the network's ``daily_demand`` forecast in a
    SKU's rate; ``share_prior_units``: how many units of a SKU's own history
    weigh as much as the pooled shares of all units; ``seed``: k-means.
    """

    regions: int = 40
    arcs_per_region: int = 12
    rate_memory_days: float = 7.0
    share_prior_units: float = 20.0
    seed: int = 0
    backend: str = "glop"
    #: A SKU whose expected demand exceeds this share of its stock is rationed to it.
    ration_at: float = 0.98
    #: Poisson samples of the demand whose LP duals are averaged (0: the expected demand).
    samples: int = 0


class OrderHistory:
    """The units ordered so far: where (destination) and what (SKU), and over how long.

    Append-only; the forward policy feeds it every order as it arrives.
    """

    def __init__(self, n_skus: int) -> None:
        self.n_skus = n_skus
        self._lat: list[float] = []
        self._lon: list[float] = []
        self._sku: list[int] = []
        self._point: list[int] = []
        self._qty: list[int] = []
        self._points: dict[tuple[float, float], int] = {}
        self.orders = 0
        self.first_at: float | None = None  # days, any epoch
        self.last_at: float | None = None

    def add(self, lat: float, lon: float, at_days: float, units: dict[int, int]) -> None:
        """One order: destination, time in days (any fixed epoch), units per SKU index."""
        key = (lat, lon)
        point = self._points.get(key)
        if point is None:
            point = self._points[key] = len(self._lat)
            self._lat.append(lat)
            self._lon.append(lon)
        for sku, qty in units.items():
            self._sku.append(sku)
            self._point.append(point)
            self._qty.append(qty)
        self.orders += 1
        self.first_at = at_days if self.first_at is None else min(self.first_at, at_days)
        self.last_at = at_days if self.last_at is None else max(self.last_at, at_days)

    @property
    def units(self) -> int:
        return sum(self._qty)

    def arrays(self) -> tuple[FloatArray, FloatArray, IntArray, IntArray, IntArray]:
        """(point lat, point lon, line point, line SKU, line qty)."""
        return (
            np.asarray(self._lat, dtype=np.float64),
            np.asarray(self._lon, dtype=np.float64),
            np.asarray(self._point, dtype=np.int64),
            np.asarray(self._sku, dtype=np.int64),
            np.asarray(self._qty, dtype=np.int64),
        )


@dataclass(frozen=True, eq=False)
class Regions:
    """Destination clusters: centroids (R) and member points (P) with weights."""

    lat: FloatArray
    lon: FloatArray
    point_lat: FloatArray
    point_lon: FloatArray
    point_region: IntArray
    point_weight: FloatArray

    @property
    def count(self) -> int:
        return int(self.lat.size)


@dataclass(frozen=True, eq=False)
class DemandForecast:
    """Expected units per (region, SKU) over ``horizon_days``, and units per parcel."""

    regions: Regions
    units: FloatArray  # R x S
    horizon_days: float
    units_per_parcel: float


@dataclass(frozen=True, eq=False)
class Committed:
    """Orders already placed but not yet shipped, priced beside the expected demand.

    One row per order: its destination and its units per SKU (``units``,
    orders x S). The batch re-assigns such orders with their units given back
    to the stock; in the LP each is a region of its own (its exact
    destination) whose demand is never rationed: the orders are there, the
    expected demand is what may not come.
    """

    lat: FloatArray
    lon: FloatArray
    units: FloatArray  # orders x S

    @property
    def count(self) -> int:
        return int(self.lat.size)


def with_committed(forecast: DemandForecast, committed: Committed) -> DemandForecast:
    """``forecast`` with one more region per committed order (a single point, weight 1)."""
    r = forecast.regions
    k = committed.count
    regions = Regions(
        lat=np.concatenate([r.lat, committed.lat]),
        lon=np.concatenate([r.lon, committed.lon]),
        point_lat=np.concatenate([r.point_lat, committed.lat]),
        point_lon=np.concatenate([r.point_lon, committed.lon]),
        point_region=np.concatenate([r.point_region, r.count + np.arange(k, dtype=np.int64)]),
        point_weight=np.concatenate([r.point_weight, np.ones(k)]),
    )
    units = np.vstack([forecast.units, committed.units])
    return DemandForecast(regions, units, forecast.horizon_days, forecast.units_per_parcel)


def _kmeans(
    lat: FloatArray, lon: FloatArray, weight: FloatArray, k: int, seed: int, rounds: int = 12
) -> IntArray:
    """Weighted k-means on (lat, lon x cos(mean lat)) with k-means++ seeding; labels per point."""
    if lat.size <= k:
        return np.arange(lat.size, dtype=np.int64)
    scale = math.cos(math.radians(float(np.average(lat, weights=weight))))
    xy = np.column_stack([lat, lon * scale])
    rng = np.random.default_rng(seed)
    p = weight / weight.sum()
    centres = [xy[int(rng.choice(lat.size, p=p))]]
    d2 = ((xy - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        q = weight * d2
        total = q.sum()
        pick = int(rng.choice(lat.size, p=q / total)) if total > 0 else int(rng.integers(lat.size))
        centres.append(xy[pick])
        d2 = np.minimum(d2, ((xy - xy[pick]) ** 2).sum(axis=1))
    c = np.array(centres)
    labels = np.zeros(lat.size, dtype=np.int64)
    for _ in range(rounds):
        labels = ((xy[:, None, :] - c[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
        mass = np.bincount(labels, weights=weight, minlength=k)
        for axis in range(2):
            total = np.bincount(labels, weights=weight * xy[:, axis], minlength=k)
            c[:, axis] = np.where(mass > 0, total / np.maximum(mass, 1e-12), c[:, axis])
    used, labels = np.unique(labels, return_inverse=True)
    del used
    return labels.astype(np.int64)


def forecast_demand(
    network: Network,
    history: OrderHistory,
    now_days: float,
    horizon_days: float,
    settings: FluidSettings | None = None,
) -> DemandForecast | None:
    """Expected units per (region, SKU) from ``now_days`` for ``horizon_days`` (None: no history).

    A SKU's rate (units/day) is ``(observed units + m * daily_demand) / (days
    seen + m)`` with ``m = rate_memory_days``: the planning forecast at
    first, the history once it is long. Region shares of a SKU are ``(its
    units in r + a * pooled share of r) / (its units + a)``, ``a =
    share_prior_units``.
    """
    settings = settings or FluidSettings()
    if history.units == 0 or history.first_at is None:
        return None
    lat, lon, line_point, line_sku, line_qty = history.arrays()
    point_units = np.bincount(line_point, weights=line_qty, minlength=lat.size).astype(np.float64)
    labels = _kmeans(lat, lon, point_units, settings.regions, settings.seed)
    r_count = int(labels.max()) + 1
    s_count = len(network.sku_ids)
    pooled = np.bincount(labels, weights=point_units, minlength=r_count)
    pooled = pooled / pooled.sum()
    by_rs = np.zeros((r_count, s_count))
    np.add.at(by_rs, (labels[line_point], line_sku), line_qty)
    sku_units = by_rs.sum(axis=0)
    a = settings.share_prior_units
    share = (by_rs + a * pooled[:, None]) / (sku_units[None, :] + a)
    seen_days = max(now_days - history.first_at, 0.0)
    m = settings.rate_memory_days
    rate = (sku_units + m * network.daily_demand) / (seen_days + m)
    units = share * rate[None, :] * horizon_days
    mass = np.bincount(labels, weights=point_units, minlength=r_count)
    c_lat = np.bincount(labels, weights=point_units * lat, minlength=r_count) / mass
    c_lon = np.bincount(labels, weights=point_units * lon, minlength=r_count) / mass
    regions = Regions(c_lat, c_lon, lat, lon, labels, point_units)
    upp = max(history.units / max(history.orders, 1), 1.0)
    return DemandForecast(regions, units, horizon_days, upp)


def unit_costs(
    network: Network,
    regions: Regions,
    units_per_parcel: float,
    nodes: IntArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Per (node, region), millicents: (parcel fixed cost per unit, per-kg price per gram).

    Each region point is zoned by its own distance; per point the customer
    service with the least ``fixed / units_per_parcel + per_kg x mean weight``
    is taken; both parts are then averaged over the region's point weights.
    A unit of SKU s costs ``fixed + per_gram * weight_g[s] - credit[n, s]``.
    ``nodes``: compute only those rows (the nodes holding stock); the others stay 0.
    """
    rates = network.delivery_rates
    n_nodes = len(network.node_ids)
    mean_g = float(np.average(network.weight_g, weights=np.maximum(network.daily_demand, 1e-9)))
    fixed = np.zeros((n_nodes, regions.count))
    per_g = np.zeros((n_nodes, regions.count))
    mass = np.bincount(regions.point_region, weights=regions.point_weight, minlength=regions.count)
    for n in range(n_nodes) if nodes is None else nodes.tolist():
        km = haversine_km(regions.point_lat, regions.point_lon, network.lat[n], network.lon[n])
        zone = zone_of(network, km)
        f = rates.base_price[zone] + network.handling_cost[n]  # P x V, millicents
        g = rates.per_kg[zone].astype(np.float64) / 1000.0  # millicents per gram
        score = np.where(rates.offered[zone], f / units_per_parcel + g * mean_g, np.inf)
        best = score.argmin(axis=1)
        rows = np.arange(zone.size)
        w = regions.point_weight
        fixed[n] = np.bincount(
            regions.point_region, weights=w * f[rows, best] / units_per_parcel, minlength=mass.size
        ) / np.maximum(mass, 1e-12)
        per_g[n] = np.bincount(
            regions.point_region, weights=w * g[rows, best], minlength=mass.size
        ) / np.maximum(mass, 1e-12)
    return fixed, per_g


@dataclass(frozen=True, eq=False)
class FluidSolution:
    """The fluid LP's answer: opportunity costs per (node, SKU) and what it planned."""

    #: N x S, millicents per unit, >= 0 (0 where the node holds no stock of the SKU).
    opportunity: IntArray
    status: str
    #: The LP's optimum in millicents (expected cost of the demand until replenishment).
    objective: float
    expected_units: float
    lost_units: float
    columns: int
    seconds: float


def solve_fluid(
    network: Network,
    available: IntArray,
    forecast: DemandForecast,
    settings: FluidSettings | None = None,
    seed: int = 0,
    skus: IntArray | None = None,
    committed: Committed | None = None,
) -> FluidSolution:
    """Solve the fluid LP (module doc) on ``available`` (N x S) stock; ``network.on_hand``
    prices the storage credit.

    With ``settings.samples`` > 0 the LP is solved once per Poisson sample of
    the demand (seeded by ``seed``) and the duals are averaged: an estimate of
    a unit's expected value when demand is uncertain, lower than the
    deterministic LP's where stock is only needed in some outcomes.

    ``skus`` (indices): price only those (the LP decomposes by SKU, so a
    caller can solve chunks of SKUs apart, e.g. on Dask, and add the results).

    ``committed``: orders placed and not yet shipped, whose units ``available``
    includes (given back): each is a region of its own with its exact units,
    neither sampled nor rationed; the expected demand is rationed to the stock
    they leave. The duals then price a unit for these orders and the ones
    expected after them together (the batch's prices).
    """
    settings = settings or FluidSettings()
    started = time.perf_counter()
    fixed_rows = 0
    if committed is not None and committed.count:
        forecast = with_committed(forecast, committed)
        fixed_rows = committed.count
    n_nodes, s_count = available.shape
    # Only nodes holding stock get arcs: the others' rows are never read.
    holders = np.flatnonzero(available.sum(axis=1) > 0)
    fixed, per_g = unit_costs(network, forecast.regions, forecast.units_per_parcel, holders)
    all_nodes = np.arange(n_nodes, dtype=np.int64)
    credit = storage_credit(network, all_nodes, np.arange(s_count, dtype=np.int64))
    units = forecast.units
    if skus is not None:
        units = np.zeros_like(units)
        units[:, skus] = forecast.units[:, skus]
    if settings.samples <= 0:
        demands = [units]
    else:
        rng = np.random.default_rng((settings.seed, seed))
        demands = [rng.poisson(forecast.units).astype(np.float64) for _ in range(settings.samples)]
        if fixed_rows:
            for demand in demands:
                demand[-fixed_rows:] = units[-fixed_rows:]
    total = np.zeros((n_nodes, s_count))
    objective = lost = 0.0
    columns = 0
    for demand in demands:
        one = _solve_one(network, available, demand, fixed, per_g, credit, settings, fixed_rows)
        if one.status != OPTIMAL:
            return FluidSolution(
                np.zeros((n_nodes, s_count), dtype=np.int64),
                one.status,
                math.nan,
                float(forecast.units.sum()),
                math.nan,
                one.columns,
                time.perf_counter() - started,
            )
        total += one.duals
        objective += one.objective
        lost += one.lost
        columns = max(columns, one.columns)
    k = len(demands)
    return FluidSolution(
        opportunity=np.rint(total / k).astype(np.int64),
        status=OPTIMAL,
        objective=objective / k,
        expected_units=float(units.sum()),
        lost_units=lost / k,
        columns=columns,
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True, eq=False)
class _Duals:
    status: str
    duals: FloatArray  # N x S, millicents per unit
    objective: float
    lost: float
    columns: int


def _solve_one(
    network: Network,
    available: IntArray,
    wanted_units: FloatArray,
    fixed: FloatArray,
    per_g: FloatArray,
    credit: IntArray,
    settings: FluidSettings,
    fixed_rows: int = 0,
) -> _Duals:
    """One LP of the module doc for the demand ``wanted_units`` (R x S); its last
    ``fixed_rows`` rows are committed orders, never rationed."""
    n_nodes, s_count = available.shape
    # Rationing: orders are served while stock lasts, wherever they come from, so a SKU
    # short of its expected demand serves a share of every region's, not the cheapest ones.
    # Committed orders come first: the expected demand shares what they leave.
    expected_rows = wanted_units.shape[0] - fixed_rows
    supply = available.sum(axis=0).astype(np.float64)
    fixed_total = wanted_units[expected_rows:].sum(axis=0)
    room = np.maximum(supply * settings.ration_at - fixed_total, 0.0)
    wanted_total = wanted_units[:expected_rows].sum(axis=0)
    ration = np.where(wanted_total > room, room / np.maximum(wanted_total, 1e-12), 1.0)
    demand = wanted_units.copy()
    demand[:expected_rows] *= ration[None, :]

    arc_node: list[IntArray] = []
    arc_region: list[IntArray] = []
    arc_sku: list[IntArray] = []
    arc_cost: list[FloatArray] = []
    penalty = np.zeros(s_count)
    k = settings.arcs_per_region
    for s in range(s_count):
        holders = np.flatnonzero(available[:, s] > 0)
        wanted = np.flatnonzero(demand[:, s] > 1e-9)
        if holders.size == 0 or wanted.size == 0:
            penalty[s] = 0.0
            continue
        cost = (
            fixed[holders][:, wanted]
            + per_g[holders][:, wanted] * float(network.weight_g[s])
            - credit[holders, s][:, None]
        )  # H x W
        penalty[s] = float(cost.max()) + LOST_MARGIN * MILLICENTS_PER_UNIT
        keep = np.zeros(cost.shape, dtype=np.bool_)
        if holders.size > k:
            nearest = np.argpartition(cost, k - 1, axis=0)[:k]
            keep[nearest, np.arange(wanted.size)[None, :]] = True
        else:
            keep[:] = True
        keep[np.arange(holders.size), cost.argmin(axis=1)] = True
        h, w = np.nonzero(keep)
        arc_node.append(holders[h])
        arc_region.append(wanted[w])
        arc_sku.append(np.full(h.size, s, dtype=np.int64))
        arc_cost.append(cost[h, w])

    def joined(parts: list[IntArray]) -> IntArray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    a_node, a_region, a_sku = joined(arc_node), joined(arc_region), joined(arc_sku)
    a_cost = np.concatenate(arc_cost) if arc_cost else np.zeros(0)
    # Rows: one per (node, SKU) with an arc (stock), then one per (region, SKU) with demand.
    stock_key = a_node * s_count + a_sku
    stock_cells, stock_row = np.unique(stock_key, return_inverse=True)
    d_r, d_s = np.nonzero(demand > 1e-9)
    demand_key = d_r * s_count + d_s
    n_stock = stock_cells.size
    demand_row = n_stock + np.searchsorted(demand_key, a_region * s_count + a_sku)
    n_arcs = a_node.size
    n_lost = demand_key.size
    rows = np.concatenate([stock_row, demand_row, n_stock + np.arange(n_lost)])
    cols = np.concatenate([np.arange(n_arcs), np.arange(n_arcs), n_arcs + np.arange(n_lost)])
    matrix = csr(
        rows,
        cols,
        np.ones(rows.size),
        (n_stock + n_lost, n_arcs + n_lost),
    )
    cap = available.reshape(-1)[stock_cells].astype(np.float64)
    want = demand[d_r, d_s]
    lp = SparseLp(
        cost=np.concatenate([a_cost, penalty[d_s]]) / MILLICENTS_PER_UNIT,
        lower=np.zeros(n_arcs + n_lost),
        upper=np.full(n_arcs + n_lost, np.inf),
        matrix=matrix,
        row_lower=np.concatenate([np.full(n_stock, -np.inf), want]),
        row_upper=np.concatenate([cap, want]),
    )
    solution = solve_lp(lp, settings.backend)
    duals = np.zeros((n_nodes, s_count))
    if solution.status != OPTIMAL:
        return _Duals(solution.status, duals, math.nan, math.nan, n_arcs + n_lost)
    lam = np.maximum(-solution.duals[:n_stock], 0.0) * MILLICENTS_PER_UNIT
    duals.reshape(-1)[stock_cells] = lam
    return _Duals(
        OPTIMAL,
        duals,
        solution.objective * MILLICENTS_PER_UNIT,
        float(solution.values[n_arcs:].sum()),
        n_arcs + n_lost,
    )
