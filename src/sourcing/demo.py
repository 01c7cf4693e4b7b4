"""A synthetic but plausible US network for examples, tests and benchmarks.

Everything here is generated from a seed and the public ZIP code table of the
PyPI package ``zipcodes`` (real ZIPs with their centroid coordinates); no
other data is read. The numbers are a realistic *illustration*, not any
carrier's tariff or any retailer's inventory:

* **DCs**: ten distribution centres at real ZIPs of major US logistics hubs
  (Memphis, Louisville, Indianapolis, Columbus, Dallas, Atlanta, Chicago,
  Ontario CA, Reno, Allentown). Handling 0 or 1 day, $1.50-2.50 per parcel,
  storage 2-4 cents per unit-day, 50,000 units per day.
* **Stores**: 300 distinct active STANDARD ZIPs of the contiguous US (48
  states and DC; one ZIP per centroid, none at a DC's site), drawn without
  replacement with probability proportional to a density
  proxy: the number of active ZIP codes of any type (standard, PO box,
  unique) in the same 0.5 x 0.5 degree cell. Cities have many small ZIPs and
  many PO-box and business ZIPs, so the proxy favours populous areas without
  needing census data. Handling 1 day, $3-4 per parcel, storage 5-8 cents
  per unit-day, 150-400 units per day.
* **SKUs**: 300, unit weight lognormal (median 0.9 kg) clipped to
  0.1-25 kg and resolved to the gram; network-wide daily demand lognormal
  (median 3 units per day).
* **Stock**: each DC carries about 85% of the SKUs, sized to cover 3-10
  weeks of that DC's share of demand; each store about 15% of the SKUs with
  1-12 units on hand, safety stock 1 on about 40% of the store pairs with
  at least 2 units.
* **Zones**: US-style distance bands 50, 150, 300, 600, 1000, 1400 and 1800
  miles (converted to km), then zone 8 beyond (max_km 20,000).
* **Rates** (cents): ``ground`` base 750..1300 and 40..120 per kg, 1-5 days
  in transit; ``express`` base 1800..4000 and 150..350 per kg, 1-2 days;
  the ``transfer`` lane between nodes (click & collect: units sent to the
  pickup store; it never ships to customers) base 250..600 and 10..28 per kg,
  1-4 days, the consolidated runs a retailer's own trucks make.

:func:`demo_network` is cached: the network is immutable, so one seed builds
it once per process. :func:`demo_order` draws random carts for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import zipcodes

from sourcing.model import (
    MILLICENTS_PER_CENT,
    TRANSFER_SERVICE,
    BoolArray,
    FloatArray,
    IntArray,
    Location,
    Network,
    NodeKind,
    Order,
    OrderLine,
)

#: The 48 contiguous states and DC (no AK, HI, PR, territories or military).
CONTIGUOUS_STATES = frozenset(
    {
        "AL", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "ID", "IL", "IN", "IA", "KS",
        "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
        "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA",
        "WA", "WV", "WI", "WY",
    }
)  # fmt: skip
#: Bounding box of the contiguous US (lat_min, lat_max, lon_min, lon_max), degrees.
CONTIGUOUS_BBOX = (24.3, 49.5, -125.0, -66.8)

#: Distribution centres: node id and candidate ZIPs (the first one present
#: and active in the ``zipcodes`` table is used).
DC_SITES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("DC-MEM", ("38118", "38116")),  # Memphis TN
    ("DC-SDF", ("40209", "40213")),  # Louisville KY
    ("DC-IND", ("46241", "46231")),  # Indianapolis IN
    ("DC-CMH", ("43217", "43207")),  # Columbus OH
    ("DC-DFW", ("75241", "75237")),  # Dallas TX
    ("DC-ATL", ("30354", "30349")),  # Atlanta GA
    ("DC-ORD", ("60638", "60632")),  # Chicago IL
    ("DC-ONT", ("91761", "91764")),  # Ontario CA
    ("DC-RNO", ("89502", "89431")),  # Reno NV
    ("DC-ABE", ("18106", "18109")),  # Allentown PA
)

NUM_STORES = 300
NUM_SKUS = 300
DENSITY_CELL_DEG = 0.5

KM_PER_MILE = 1.609344
ZONE_IDS = ("1", "2", "3", "4", "5", "6", "7", "8")
ZONE_MAX_MILES = (50, 150, 300, 600, 1000, 1400, 1800)
LAST_ZONE_MAX_KM = 20_000.0

SERVICE_IDS = ("ground", "express", TRANSFER_SERVICE)
#: Per service, per zone 1..8, in cents (per kg for PER_KG) and days.
BASE_PRICE = (
    (750, 820, 880, 950, 1030, 1120, 1210, 1300),
    (1800, 2100, 2400, 2700, 3000, 3400, 3700, 4000),
    (250, 300, 350, 400, 450, 500, 550, 600),
)
PER_KG = (
    (40, 50, 60, 70, 80, 95, 110, 120),
    (150, 180, 210, 240, 270, 300, 330, 350),
    (10, 12, 15, 18, 20, 22, 25, 28),
)
TRANSIT_DAYS = (
    (1, 1, 2, 3, 4, 5, 5, 5),
    (1, 1, 1, 2, 2, 2, 2, 2),
    (1, 1, 2, 2, 3, 3, 4, 4),
)


@dataclass(frozen=True, eq=False)
class _ZipTable:
    """Active contiguous-US ZIPs: all types (for the density proxy) and STANDARD ones."""

    by_zip: dict[str, tuple[float, float]]
    std_zip: tuple[str, ...]
    std_lat: FloatArray
    std_lon: FloatArray
    std_weight: FloatArray  # density proxy per STANDARD ZIP, sums to 1


@lru_cache(maxsize=1)
def _zip_table() -> _ZipTable:
    lat_min, lat_max, lon_min, lon_max = CONTIGUOUS_BBOX
    by_zip: dict[str, tuple[float, float]] = {}
    std: list[str] = []
    rows: list[dict[str, Any]] = zipcodes.list_all()  # type: ignore[no-untyped-call]
    for row in rows:  # list_all() takes ~0.6 s: called once per process
        if not row["active"] or row["state"] not in CONTIGUOUS_STATES:
            continue
        lat, lon = float(row["lat"]), float(row["long"])
        if not (lat_min <= lat <= lat_max and lon_min <= lon <= lon_max):
            continue
        code = str(row["zip_code"])
        by_zip[code] = (lat, lon)
        if row["zip_code_type"] == "STANDARD":
            std.append(code)
    # One STANDARD ZIP per centroid: a few ZIPs share coordinates in the table.
    unique: dict[tuple[float, float], str] = {}
    for code in sorted(std):
        unique.setdefault(by_zip[code], code)
    std = sorted(unique.values())
    all_ll = np.array(list(by_zip.values()), dtype=np.float64)
    std_ll = np.array([by_zip[z] for z in std], dtype=np.float64)
    cells, counts = np.unique(np.floor(all_ll / DENSITY_CELL_DEG), axis=0, return_counts=True)
    density = dict(zip(map(tuple, cells.tolist()), counts.tolist(), strict=True))
    std_cells = np.floor(std_ll / DENSITY_CELL_DEG).tolist()
    weight = np.array([density[tuple(c)] for c in std_cells], dtype=np.float64)
    return _ZipTable(
        by_zip=by_zip,
        std_zip=tuple(std),
        std_lat=std_ll[:, 0].copy(),
        std_lon=std_ll[:, 1].copy(),
        std_weight=weight / weight.sum(),
    )


def population_points() -> tuple[FloatArray, FloatArray, FloatArray]:
    """Destinations with population-like weights: (lat, lon, weight) of every STANDARD ZIP.

    The active STANDARD ZIPs of the contiguous US (one per centroid), each
    weighted by the density proxy the demo stores are drawn with (active
    ZIPs of any type in its 0.5 x 0.5 degree cell); weights sum to 1.
    Read-only arrays, shared by every caller.
    """
    table = _zip_table()
    for array in (table.std_lat, table.std_lon, table.std_weight):
        array.setflags(write=False)
    return table.std_lat, table.std_lon, table.std_weight


def _dc_zip(table: _ZipTable, node_id: str, candidates: tuple[str, ...]) -> str:
    for code in candidates:
        if code in table.by_zip:
            return code
    raise RuntimeError(f"none of the ZIPs {candidates} for {node_id} is in the zipcodes table")


def demo_network(seed: int = 7) -> Network:
    """The demo network for ``seed`` (deterministic; built once per process and cached)."""
    return _cached_network(int(seed))


@lru_cache(maxsize=8)
def _cached_network(seed: int) -> Network:
    return build_demo_network(seed)


def build_demo_network(seed: int) -> Network:
    """Build the demo network for ``seed`` from scratch (uncached: prefer :func:`demo_network`)."""
    rng = np.random.default_rng(seed)
    table = _zip_table()

    dc_ids = tuple(node_id for node_id, _ in DC_SITES)
    dc_ll = [table.by_zip[_dc_zip(table, node_id, zips)] for node_id, zips in DC_SITES]

    # Stores: distinct STANDARD ZIPs (not at a DC's site), density-weighted.
    dc_sites = set(dc_ll)
    pool = np.array([table.by_zip[z] not in dc_sites for z in table.std_zip], dtype=np.bool_)
    p = np.where(pool, table.std_weight, 0.0)
    picked = np.sort(rng.choice(len(table.std_zip), size=NUM_STORES, replace=False, p=p / p.sum()))
    d, m, s = len(dc_ids), NUM_STORES, NUM_SKUS
    n = d + m
    store_ids = tuple(f"ST-{i + 1:04d}" for i in range(m))

    lat = np.concatenate([[ll[0] for ll in dc_ll], table.std_lat[picked]])
    lon = np.concatenate([[ll[1] for ll in dc_ll], table.std_lon[picked]])
    handling_days = np.concatenate([rng.integers(0, 2, d), np.ones(m, dtype=np.int64)])
    handling_cost = np.concatenate([rng.integers(150, 251, d), rng.integers(300, 401, m)])
    storage_cost = np.concatenate([rng.integers(2, 5, d), rng.integers(5, 9, m)])
    capacity = np.concatenate([np.full(d, 50_000, dtype=np.int64), rng.integers(150, 401, m)])

    sku_ids = tuple(f"SKU-{i + 1:04d}" for i in range(s))
    weight_g = np.rint(np.clip(rng.lognormal(np.log(900.0), 1.0, s), 100.0, 25_000.0))
    daily_demand = np.maximum(np.round(rng.lognormal(np.log(3.0), 1.0, s), 2), 0.05)

    on_hand = np.zeros((n, s), dtype=np.int64)
    safety = np.zeros((n, s), dtype=np.int64)
    dc_held = rng.random((d, s)) < 0.85
    share = daily_demand / np.maximum(dc_held.sum(axis=0), 1)
    cover_days = rng.uniform(21.0, 70.0, (d, s))
    dc_stock = np.maximum(np.ceil(share[None, :] * cover_days), 3).astype(np.int64)
    on_hand[:d] = np.where(dc_held, dc_stock, 0)
    st_held = rng.random((m, s)) < 0.15
    st_stock = rng.integers(1, 13, (m, s))
    on_hand[d:] = np.where(st_held, st_stock, 0)
    safety[d:] = (st_held & (st_stock >= 2) & (rng.random((m, s)) < 0.4)).astype(np.int64)

    zone_max_km = np.array([mi * KM_PER_MILE for mi in ZONE_MAX_MILES] + [LAST_ZONE_MAX_KM])
    offered: BoolArray = np.ones((len(SERVICE_IDS), len(ZONE_IDS)), dtype=np.bool_)
    return Network(
        node_ids=dc_ids + store_ids,
        node_kinds=(NodeKind.DC,) * d + (NodeKind.STORE,) * m,
        lat=lat,
        lon=lon,
        handling_days=handling_days,
        # The figures above are whole cents; the network holds millicents.
        handling_cost=handling_cost * MILLICENTS_PER_CENT,
        storage_cost=storage_cost * MILLICENTS_PER_CENT,
        capacity=capacity,
        sku_ids=sku_ids,
        weight_g=weight_g.astype(np.int64),
        daily_demand=daily_demand,
        on_hand=on_hand,
        safety_stock=safety,
        reserved=np.zeros((n, s), dtype=np.int64),
        zone_ids=ZONE_IDS,
        zone_max_km=zone_max_km,
        service_ids=SERVICE_IDS,
        base_price=np.array(BASE_PRICE, dtype=np.int64) * MILLICENTS_PER_CENT,
        per_kg=np.array(PER_KG, dtype=np.int64) * MILLICENTS_PER_CENT,
        transit_days=np.array(TRANSIT_DAYS, dtype=np.int64),
        offered=offered,
    )


def demo_order(network: Network, rng: np.random.Generator, lines: int) -> Order:
    """A random cart of ``lines`` distinct SKUs, 1-3 units each.

    SKUs are drawn without replacement with probability proportional to their
    daily demand, among those with at least 3 available units network-wide
    (so carts are normally coverable). The destination is an active STANDARD
    contiguous-US ZIP drawn with the same density weights as the demo stores.
    """
    totals: IntArray = network.available.sum(axis=0)
    weight = np.where(totals >= 3, network.daily_demand, 0.0)
    if lines < 1 or int(np.count_nonzero(weight)) < lines:
        raise ValueError(
            f"cannot draw {lines} distinct stocked SKUs "
            f"({int(np.count_nonzero(weight))} have stock)"
        )
    skus = rng.choice(len(network.sku_ids), size=lines, replace=False, p=weight / weight.sum())
    qty = rng.integers(1, 4, size=lines)
    table = _zip_table()
    z = int(rng.choice(len(table.std_zip), p=table.std_weight))
    return Order(
        destination=Location(float(table.std_lat[z]), float(table.std_lon[z])),
        lines=tuple(
            OrderLine(network.sku_ids[int(k)], int(q)) for k, q in zip(skus, qty, strict=True)
        ),
    )
