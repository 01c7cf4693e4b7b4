"""The network: nodes, SKUs, zones and rates, their cached catalog, and the live
:class:`~sourcing.model.Network` a quote solves on.

May import :mod:`oms.store.database`, ``stock``, ``capacity``, :mod:`oms.schema`,
:mod:`oms.driver_sql`, :mod:`oms.errors` and :mod:`sourcing.model`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection

from oms import schema as t
from oms.driver_sql import Statement, fetch
from oms.errors import FailedPrecondition, Precondition
from oms.store.capacity import CapacityRepository
from oms.store.database import Database, utc_day
from oms.store.stock import StockRepository
from sourcing.model import UNLIMITED_CAPACITY, Network, NodeKind

_NETWORK_VERSION = Statement.portable(
    "SELECT value FROM network_meta WHERE \"key\" = 'network_version'"
)


@dataclass(frozen=True, eq=False)
class Catalog:
    """The slow-changing part of the network (nodes, SKUs, zones, rates) as arrays."""

    version: int
    node_ids: tuple[str, ...]
    node_kinds: tuple[NodeKind, ...]
    lat: np.ndarray
    lon: np.ndarray
    handling_days: np.ndarray
    handling_cost: np.ndarray
    storage_cost: np.ndarray
    capacity: np.ndarray
    sku_ids: tuple[str, ...]
    weight_g: np.ndarray
    daily_demand: np.ndarray
    zone_ids: tuple[str, ...]
    zone_max_km: np.ndarray
    service_ids: tuple[str, ...]
    base_price: np.ndarray
    per_kg: np.ndarray
    transit_days: np.ndarray
    offered: np.ndarray

    node_index: dict[str, int] = field(init=False, repr=False)
    sku_index: dict[str, int] = field(init=False, repr=False)
    finite_capacity: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_index", {n: i for i, n in enumerate(self.node_ids)})
        object.__setattr__(self, "sku_index", {s: i for i, s in enumerate(self.sku_ids)})
        object.__setattr__(self, "finite_capacity", self.capacity < UNLIMITED_CAPACITY)

    @property
    def usable(self) -> bool:
        return bool(self.node_ids and self.zone_ids and self.service_ids)


class NetworkRepository:
    """Nodes, SKUs, zones and rates (one version for all: ``network_meta``), and
    the catalog of them each process caches until the version moves."""

    def __init__(self, db: Database, stock: StockRepository, capacity: CapacityRepository) -> None:
        self.db = db
        self.stock = stock
        self.capacity = capacity
        self._catalog: Catalog | None = None
        self._catalog_lock = threading.Lock()

    def bump_version(self, conn: Connection) -> None:
        self.db.upsert(
            conn,
            t.network_meta,
            [{"key": "network_version", "value": time.time_ns()}],
        )

    def is_empty(self) -> bool:
        with self.db.read() as conn:
            return conn.execute(sa.select(func.count()).select_from(t.nodes)).scalar_one() == 0

    def load(self, network: Network, reason: str = "load") -> None:
        """Upsert every node, SKU, zone, rate and stock position of ``network``; one transaction.

        On hand is set through the ledger (one row per changed position);
        zones and rates are replaced.
        """
        with self.db.write() as conn:
            self.db.upsert(
                conn, t.nodes, [_node_row(network, n) for n in range(len(network.node_ids))]
            )
            self.db.upsert(
                conn,
                t.skus,
                [
                    {
                        "sku": sku,
                        "weight_g": int(network.weight_g[s]),
                        "daily_demand": float(network.daily_demand[s]),
                    }
                    for s, sku in enumerate(network.sku_ids)
                ],
            )
            self._replace_rate_card(
                conn,
                [(z, float(network.zone_max_km[i])) for i, z in enumerate(network.zone_ids)],
                [
                    (
                        service,
                        zone,
                        int(network.base_price[v, z]),
                        int(network.per_kg[v, z]),
                        int(network.transit_days[v, z]),
                    )
                    for v, service in enumerate(network.service_ids)
                    for z, zone in enumerate(network.zone_ids)
                    if network.offered[v, z]
                ],
                replace_all=True,
            )
            existing = {
                (r.node_id, r.sku): r
                for r in conn.execute(
                    sa.select(t.stock.c.node_id, t.stock.c.sku, t.stock.c.on_hand)
                )
            }
            now = self.db.clock()
            stock_rows: list[dict[str, Any]] = []
            ledger_rows: list[dict[str, Any]] = []
            held = np.argwhere((network.on_hand > 0) | (network.safety_stock > 0))
            wanted = {(network.node_ids[n], network.sku_ids[s]): (n, s) for n, s in held}
            for key in set(existing) - set(wanted):
                wanted[key] = (-1, -1)
            for (node, sku), (n, s) in sorted(wanted.items()):
                on_hand = int(network.on_hand[n, s]) if n >= 0 else 0
                safety = int(network.safety_stock[n, s]) if n >= 0 else 0
                before = int(existing[node, sku].on_hand) if (node, sku) in existing else 0
                stock_rows.append(
                    {
                        "node_id": node,
                        "sku": sku,
                        "on_hand": on_hand,
                        "safety_stock": safety,
                        "low_stock_threshold": 0,
                    }
                )
                if on_hand != before:
                    ledger_rows.append(
                        {
                            "node_id": node,
                            "sku": sku,
                            "delta": on_hand - before,
                            "reason": reason,
                            "order_id": None,
                            "at": now,
                        }
                    )
            # Thresholds already set by planners survive a reload.
            self.db.upsert(conn, t.stock, stock_rows, update=["on_hand", "safety_stock"])
            if ledger_rows:
                conn.execute(sa.insert(t.stock_ledger), ledger_rows)
            self.bump_version(conn)

    def upsert_nodes(self, rows: list[dict[str, Any]]) -> int:
        with self.db.write() as conn:
            self.db.upsert(conn, t.nodes, rows)
            self.bump_version(conn)
        return len(rows)

    def upsert_skus(self, rows: list[dict[str, Any]]) -> int:
        with self.db.write() as conn:
            self.db.upsert(conn, t.skus, rows)
            self.bump_version(conn)
        return len(rows)

    def replace_rate_card(
        self,
        zones: list[tuple[str, float]],
        rates: list[tuple[str, str, int, int, int]],
    ) -> None:
        """Replace all zones (when given) and every rate of the services named in ``rates``."""
        with self.db.write() as conn:
            known_zones = {z for z, _ in zones} or {
                r.zone for r in conn.execute(sa.select(t.zones.c.zone))
            }
            bad = sorted({zone for _, zone, *_ in rates} - known_zones)
            if bad:
                raise FailedPrecondition(
                    f"rates name unknown zones: {', '.join(bad)}",
                    [Precondition("ZONE", z, "not a zone of the rate card") for z in bad],
                )
            self._replace_rate_card(conn, zones, rates, replace_all=False)
            self.bump_version(conn)

    def _replace_rate_card(
        self,
        conn: Connection,
        zones: list[tuple[str, float]],
        rates: list[tuple[str, str, int, int, int]],
        *,
        replace_all: bool,
    ) -> None:
        if zones:
            conn.execute(sa.delete(t.rates).where(t.rates.c.zone.not_in([z for z, _ in zones])))
            conn.execute(sa.delete(t.zones))
            conn.execute(sa.insert(t.zones), [{"zone": z, "max_km": km} for z, km in zones])
        if replace_all:
            conn.execute(sa.delete(t.rates))
        else:
            services = sorted({r[0] for r in rates})
            if services:
                conn.execute(sa.delete(t.rates).where(t.rates.c.service.in_(services)))
        if rates:
            conn.execute(
                sa.insert(t.rates),
                [
                    {
                        "service": s,
                        "zone": z,
                        "base_price": b,
                        "per_kg": k,
                        "transit_days": d,
                    }
                    for s, z, b, k, d in rates
                ],
            )

    def recent_catalog(self, conn: Connection) -> Catalog:
        """The catalog as last read, without checking it is current (one query less): for
        facts that may lag a network change by a call (a shipment's planned dispatch day)."""
        return self._catalog if self._catalog is not None else self.catalog(conn)

    def catalog(self, conn: Connection | None = None) -> Catalog:
        """The cached network catalog, reloaded when another process changed it."""
        if conn is None:
            with self.db.read() as own:
                return self.catalog(own)
        found = fetch(conn, _NETWORK_VERSION)
        version = int(found[0][0]) if found else 0
        cached = self._catalog
        if cached is not None and cached.version == version:
            return cached
        with self._catalog_lock:
            catalog = _read_catalog(conn, version)
            self._catalog = catalog
        return catalog

    def for_skus(
        self,
        conn: Connection,
        catalog: Catalog,
        skus: Sequence[str],
        *,
        exclude_quote: str | None = None,
    ) -> Network:
        """A :class:`Network` of every node and just ``skus``, with live stock and capacity.

        ``reserved`` counts order reservations and unexpired checkout holds
        (except ``exclude_quote``'s own); capacity is what is left of today's.
        """
        now = self.db.clock()
        sku_ids = tuple(dict.fromkeys(skus))
        col = {s: i for i, s in enumerate(sku_ids)}
        node_index = catalog.node_index
        n, s = len(catalog.node_ids), len(sku_ids)
        on_hand = np.zeros((n, s), dtype=np.int64)
        safety = np.zeros((n, s), dtype=np.int64)
        reserved = np.zeros((n, s), dtype=np.int64)
        for node, sku, qty, ss in self.stock.on_hand_of_skus(conn, sku_ids):
            i = node_index.get(node)
            if i is not None:
                on_hand[i, col[sku]] = qty
                safety[i, col[sku]] = ss
        for node, sku, qty in self.stock.reserved_rows(conn, sku_ids, now, exclude_quote):
            i = node_index.get(node)
            if i is not None:
                reserved[i, col[sku]] = qty
        capacity = catalog.capacity
        finite = catalog.finite_capacity
        if finite.any():
            capacity = capacity.copy()
            for node, units in self.capacity.used_on(conn, utc_day(now)):
                i = node_index.get(node)
                if i is not None and finite[i]:
                    capacity[i] = max(0, capacity[i] - units)
        sku_rows = [catalog.sku_index[x] for x in sku_ids]
        return Network(
            node_ids=catalog.node_ids,
            node_kinds=catalog.node_kinds,
            lat=catalog.lat,
            lon=catalog.lon,
            handling_days=catalog.handling_days,
            handling_cost=catalog.handling_cost,
            storage_cost=catalog.storage_cost,
            capacity=capacity,
            sku_ids=sku_ids,
            weight_g=catalog.weight_g[sku_rows],
            daily_demand=catalog.daily_demand[sku_rows],
            on_hand=on_hand,
            safety_stock=safety,
            reserved=reserved,
            zone_ids=catalog.zone_ids,
            zone_max_km=catalog.zone_max_km,
            service_ids=catalog.service_ids,
            base_price=catalog.base_price,
            per_kg=catalog.per_kg,
            transit_days=catalog.transit_days,
            offered=catalog.offered,
        )


def _node_row(network: Network, n: int) -> dict[str, Any]:
    capacity = int(network.capacity[n])
    return {
        "node_id": network.node_ids[n],
        "kind": network.node_kinds[n].value,
        "lat": float(network.lat[n]),
        "lon": float(network.lon[n]),
        "handling_days": int(network.handling_days[n]),
        "handling_cost": int(network.handling_cost[n]),
        "storage_cost": int(network.storage_cost[n]),
        "daily_capacity_units": None if capacity >= UNLIMITED_CAPACITY else capacity,
    }


def _read_catalog(conn: Connection, version: int) -> Catalog:
    node_rows = conn.execute(sa.select(t.nodes).order_by(t.nodes.c.node_id)).all()
    sku_rows = conn.execute(sa.select(t.skus).order_by(t.skus.c.sku)).all()
    zone_rows = conn.execute(sa.select(t.zones).order_by(t.zones.c.max_km)).all()
    rate_rows = conn.execute(sa.select(t.rates).order_by(t.rates.c.service)).all()
    zone_ids = tuple(z.zone for z in zone_rows)
    zone_col = {z: i for i, z in enumerate(zone_ids)}
    service_ids = tuple(dict.fromkeys(r.service for r in rate_rows))
    v, z = len(service_ids), len(zone_ids)
    base = np.zeros((v, z), dtype=np.int64)
    per_kg = np.zeros((v, z), dtype=np.int64)
    transit = np.zeros((v, z), dtype=np.int64)
    offered = np.zeros((v, z), dtype=np.bool_)
    service_row = {s: i for i, s in enumerate(service_ids)}
    for r in rate_rows:
        if r.zone in zone_col:
            i, j = service_row[r.service], zone_col[r.zone]
            base[i, j], per_kg[i, j], transit[i, j] = r.base_price, r.per_kg, r.transit_days
            offered[i, j] = True
    return Catalog(
        version=version,
        node_ids=tuple(r.node_id for r in node_rows),
        node_kinds=tuple(NodeKind(r.kind) for r in node_rows),
        lat=np.array([r.lat for r in node_rows], dtype=np.float64),
        lon=np.array([r.lon for r in node_rows], dtype=np.float64),
        handling_days=np.array([r.handling_days for r in node_rows], dtype=np.int64),
        handling_cost=np.array([r.handling_cost for r in node_rows], dtype=np.int64),
        storage_cost=np.array([r.storage_cost for r in node_rows], dtype=np.int64),
        capacity=np.array(
            [
                UNLIMITED_CAPACITY if r.daily_capacity_units is None else r.daily_capacity_units
                for r in node_rows
            ],
            dtype=np.int64,
        ),
        sku_ids=tuple(r.sku for r in sku_rows),
        weight_g=np.array([r.weight_g for r in sku_rows], dtype=np.int64),
        daily_demand=np.array([r.daily_demand for r in sku_rows], dtype=np.float64),
        zone_ids=zone_ids,
        zone_max_km=np.array([r.max_km for r in zone_rows], dtype=np.float64),
        service_ids=service_ids,
        base_price=base,
        per_kg=per_kg,
        transit_days=transit,
        offered=offered,
    )
