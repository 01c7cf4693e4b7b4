"""The Olist marketplace (Brazil) as a what-if network: sellers as nodes, real orders as demand.

Reads the public Olist data set ("Brazilian E-Commerce Public Dataset by
Olist", CC BY-NC-SA 4.0) from a folder given by the caller; nothing here
knows where that folder is. Files used: ``orders.csv``, ``order_items.csv``,
``customers.csv``, ``sellers.csv``, ``products.csv``, ``geolocation.csv``.

Model (:func:`load_olist`):

* orders: those purchased in ``year`` that have items, except status
  ``canceled`` and ``unavailable``; dropped if the customer's or a seller's
  zip prefix has no coordinates. Each order line is one (product, seller)
  pair of the order with its qty (Olist lists one row per unit);
* nodes: the sellers of those orders (kind ``store``, at their zip prefix's
  coordinates, no handling or storage cost, unlimited capacity);
  ``handling_days`` per seller is the median, rounded, of purchase ->
  carrier hand-over days over its orders before ``holdout_from`` (sellers
  without one use the median over all sellers);
* SKUs: the products, weight from ``product_weight_g`` (missing: the median
  weight), ``daily_demand`` = units in the stream / days in the year;
* stock: each seller holds exactly the units of each product it shipped in
  the stream, so the historical assignment is feasible and every policy has
  the same inventory (an edit such as ``pool_stock`` widens it);
* rate card (:class:`RateFit`): one service, ``standard``, in distance
  bands :data:`BANDS_KM`. A *parcel* is what one seller shipped for one
  order: freight = the sum of its items' ``freight_value``, weight = the sum
  of their weights. Per band, ``freight = base + per_kg * kg`` by least
  squares (constrained to base, per_kg >= 0) on the parcels of orders
  delivered before ``holdout_from``; ``transit_days`` per band is the median,
  rounded, of carrier hand-over -> delivery days. The fit is reported on
  the held-back parcels (purchased on or after ``holdout_from``): R^2 and
  mean absolute error of freight (BRL) and of purchase -> delivery days
  predicted as ``handling_days(seller) + transit_days(band)``.

:class:`HistoricalPolicy` ships every line from the seller that actually
shipped it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from sourcing.costs import haversine_km, zone_of
from sourcing.model import (
    MILLICENTS_PER_CENT,
    UNLIMITED_CAPACITY,
    Allocation,
    FloatArray,
    Location,
    Network,
    NodeKind,
    Option,
    Order,
    OrderLine,
    ParcelLine,
    ParcelPlan,
    per_kg_charge,
)
from sourcing.whatif.simulate import BasePolicy, SimOrder

__all__ = ["BANDS_KM", "SERVICE", "HistoricalPolicy", "OlistData", "RateFit", "load_olist"]

#: Upper bounds of the distance bands (km); the last covers everything farther.
BANDS_KM: Final = (100.0, 300.0, 500.0, 800.0, 1200.0, 1600.0, 2200.0, 20_000.0)
SERVICE: Final = "standard"
_SKIPPED_STATUSES: Final = frozenset({"canceled", "unavailable"})
_DAY: Final = 86_400.0


@dataclass(frozen=True)
class FitQuality:
    """R^2 (1 - SSE/SST), mean absolute error and bias (mean predicted - actual) over ``n``."""

    r2: float
    mae: float
    bias: float
    n: int

    @staticmethod
    def of(actual: FloatArray, predicted: FloatArray) -> FitQuality:
        n = int(actual.size)
        if n == 0:
            return FitQuality(math.nan, math.nan, math.nan, 0)
        residual = actual - predicted
        sst = float(((actual - actual.mean()) ** 2).sum())
        r2 = 1.0 - float((residual**2).sum()) / sst if sst > 0 else math.nan
        return FitQuality(r2, float(np.abs(residual).mean()), -float(residual.mean()), n)


@dataclass(frozen=True)
class RateFit:
    """The fitted rate card and how well it predicts freight and delivery days."""

    band_max_km: tuple[float, ...]
    base_cents: tuple[int, ...]
    per_kg_cents: tuple[int, ...]
    transit_days: tuple[int, ...]
    train_parcels: tuple[int, ...]
    median_handling_days: int
    holdout_from: date
    freight_train: FitQuality
    freight_holdout: FitQuality
    days_train: FitQuality
    days_holdout: FitQuality

    def as_dict(self) -> dict[str, Any]:
        def quality(q: FitQuality) -> dict[str, Any]:
            return {
                "r2": round(q.r2, 4),
                "mae": round(q.mae, 4),
                "bias": round(q.bias, 4),
                "parcels": q.n,
            }

        return {
            "holdout_from": self.holdout_from.isoformat(),
            "median_handling_days": self.median_handling_days,
            "bands": [
                {
                    "zone": str(z + 1),
                    "max_km": self.band_max_km[z],
                    "base_price": self.base_cents[z] / 100,
                    "per_kg": self.per_kg_cents[z] / 100,
                    "transit_days": self.transit_days[z],
                    "train_parcels": self.train_parcels[z],
                }
                for z in range(len(self.band_max_km))
            ],
            "freight_brl": {
                "train": quality(self.freight_train),
                "holdout": quality(self.freight_holdout),
            },
            "delivery_days": {
                "train": quality(self.days_train),
                "holdout": quality(self.days_holdout),
            },
        }


@dataclass(frozen=True, eq=False)
class OlistData:
    """The network, the order stream, who shipped each line, the fit and a summary."""

    network: Network
    orders: tuple[SimOrder, ...]
    #: order_id -> node id (seller) of each order line.
    history: Mapping[str, tuple[str, ...]]
    fit: RateFit
    summary: Mapping[str, Any] = field(default_factory=dict)


def _read(folder: Path, name: str, columns: Sequence[str]) -> pd.DataFrame:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]!r}")
    return frame[list(columns)]


def _short_ids(ids: Sequence[str], prefix: str) -> dict[str, str]:
    """Readable unique ids: ``prefix`` + the shortest common prefix length (>= 8) that is unique."""
    for width in range(8, 33):
        short = {i: f"{prefix}{i[:width]}" for i in ids}
        if len(set(short.values())) == len(ids):
            return short
    return {i: f"{prefix}{i}" for i in ids}


def _band_fit(kg: FloatArray, freight: FloatArray) -> tuple[float, float]:
    """Least squares ``freight = base + per_kg * kg`` with base, per_kg >= 0 (BRL)."""
    if kg.size == 0:
        return 0.0, 0.0
    if kg.size >= 2 and np.ptp(kg) > 0:
        per_kg, base = np.polyfit(kg, freight, 1)
    else:
        per_kg, base = 0.0, float(freight.mean())
    if per_kg < 0:
        return max(float(freight.mean()), 0.0), 0.0
    if base < 0:
        denom = float((kg * kg).sum())
        return 0.0, float((kg * freight).sum()) / denom if denom > 0 else 0.0
    return float(base), float(per_kg)


def load_olist(
    data_dir: str | os.PathLike[str],
    *,
    year: int = 2017,
    holdout_from: date = date(2017, 10, 1),
    max_orders: int | None = None,
) -> OlistData:
    """Build the Olist network and order stream (see the module doc).

    ``max_orders`` keeps the first N orders in time order (stock and demand
    follow the kept stream; the rate card is fitted on the whole year).
    Raises ``FileNotFoundError`` / ``ValueError`` for missing files or columns.
    """
    joined = _join(Path(data_dir), year)
    fit, seller_handling = _fit_rates(joined.lines, holdout_from)
    kept = _keep(joined.lines, max_orders)
    network, node_of, sku_of = _network(kept, fit, seller_handling, year)
    stream: list[SimOrder] = []
    history: dict[str, tuple[str, ...]] = {}
    by_order = {oid: g for oid, g in kept.grouped.groupby("order_id", sort=False)}
    for oid, purchase, lat, lon in kept.heads[["order_id", "purchase", "lat", "lon"]].itertuples(
        index=False
    ):
        g = by_order[oid]
        order_lines = tuple(
            OrderLine(sku_of[p], int(q)) for p, q in zip(g["product_id"], g["qty"], strict=True)
        )
        history[oid] = tuple(node_of[s] for s in g["seller_id"])
        stream.append(
            SimOrder(
                oid, purchase.to_pydatetime(), Order(Location(float(lat), float(lon)), order_lines)
            )
        )
    summary = _summary(joined, kept, network, len(stream))
    return OlistData(network, tuple(stream), history, fit, summary)


@dataclass(frozen=True, eq=False)
class _Joined:
    """The year's order lines (one row per unit) joined with their order, customer, seller,
    product weight and coordinates; orders without coordinates dropped."""

    lines: pd.DataFrame
    orders: pd.DataFrame
    orders_with_items: int
    dropped: int
    weights_imputed: int


def _join(folder: Path, year: int) -> _Joined:
    orders = _read(
        folder,
        "orders.csv",
        (
            "order_id",
            "customer_id",
            "order_status",
            "order_purchase_timestamp",
            "order_delivered_carrier_date",
            "order_delivered_customer_date",
        ),
    )
    items = _read(
        folder,
        "order_items.csv",
        ("order_id", "order_item_id", "product_id", "seller_id", "freight_value"),
    )
    customers = _read(folder, "customers.csv", ("customer_id", "customer_zip_code_prefix"))
    sellers = _read(folder, "sellers.csv", ("seller_id", "seller_zip_code_prefix"))
    products = _read(folder, "products.csv", ("product_id", "product_weight_g"))
    geo = _read(
        folder,
        "geolocation.csv",
        ("geolocation_zip_code_prefix", "geolocation_lat", "geolocation_lng"),
    )

    def stamp(column: pd.Series) -> pd.Series:
        return pd.to_datetime(column, errors="coerce")

    orders = orders.assign(
        purchase=stamp(orders["order_purchase_timestamp"]),
        carrier=stamp(orders["order_delivered_carrier_date"]),
        delivered=stamp(orders["order_delivered_customer_date"]),
    )
    orders = orders[
        (orders["purchase"].dt.year == year) & ~orders["order_status"].isin(_SKIPPED_STATUSES)
    ]
    geo = geo.assign(
        zip=geo["geolocation_zip_code_prefix"].str.lstrip("0"),
        lat=pd.to_numeric(geo["geolocation_lat"], errors="coerce"),
        lon=pd.to_numeric(geo["geolocation_lng"], errors="coerce"),
    ).dropna(subset=["lat", "lon"])
    geo = geo.drop_duplicates("zip").set_index("zip")[["lat", "lon"]]
    weight = pd.to_numeric(products["product_weight_g"], errors="coerce")
    imputed = int(weight.isna().sum())
    median_weight = float(weight.median()) if weight.notna().any() else 1000.0
    products = products.assign(weight_g=weight.fillna(median_weight).clip(lower=1).round())

    lines = (
        items.merge(orders, on="order_id")
        .merge(customers, on="customer_id", how="left")
        .merge(sellers, on="seller_id", how="left")
        .merge(products[["product_id", "weight_g"]], on="product_id", how="left")
    )
    lines["weight_g"] = lines["weight_g"].fillna(median_weight)
    lines["freight"] = pd.to_numeric(lines["freight_value"], errors="coerce").fillna(0.0)
    lines["item"] = pd.to_numeric(lines["order_item_id"], errors="coerce")
    cust = lines["customer_zip_code_prefix"].fillna("").str.lstrip("0")
    sell = lines["seller_zip_code_prefix"].fillna("").str.lstrip("0")
    lines["c_lat"] = cust.map(geo["lat"])
    lines["c_lon"] = cust.map(geo["lon"])
    lines["s_lat"] = sell.map(geo["lat"])
    lines["s_lon"] = sell.map(geo["lon"])
    located = lines[["c_lat", "c_lon", "s_lat", "s_lon"]].notna().all(axis=1)
    bad_orders = set(lines.loc[~located, "order_id"])
    orders_with_items = lines["order_id"].nunique()
    lines = lines[~lines["order_id"].isin(bad_orders)].copy()
    lines["km"] = _distance(lines)
    return _Joined(lines, orders, int(orders_with_items), len(bad_orders), imputed)


def _fit_rates(lines: pd.DataFrame, holdout_from: date) -> tuple[RateFit, pd.Series]:
    """The rate card fitted on parcels before ``holdout_from``, checked on the rest; and each
    seller's median handling days (see the module doc)."""
    bands = np.array(BANDS_KM)
    parcels = (
        lines.groupby(["order_id", "seller_id"], sort=False)
        .agg(
            freight=("freight", "sum"),
            weight_g=("weight_g", "sum"),
            km=("km", "first"),
            purchase=("purchase", "first"),
            carrier=("carrier", "first"),
            delivered=("delivered", "first"),
            status=("order_status", "first"),
        )
        .reset_index()
    )
    parcels["band"] = np.minimum(
        np.searchsorted(bands, parcels["km"].to_numpy(), side="left"), bands.size - 1
    )
    parcels["handling"] = (parcels["carrier"] - parcels["purchase"]).dt.total_seconds() / _DAY
    parcels["transit"] = (parcels["delivered"] - parcels["carrier"]).dt.total_seconds() / _DAY
    parcels["total"] = (parcels["delivered"] - parcels["purchase"]).dt.total_seconds() / _DAY
    cutoff = pd.Timestamp(datetime.combine(holdout_from, datetime.min.time()))
    delivered = parcels[(parcels["status"] == "delivered") & parcels["total"].notna()]
    train = delivered[delivered["purchase"] < cutoff]
    test = delivered[delivered["purchase"] >= cutoff]
    if train.empty:
        raise ValueError(f"no delivered orders before {holdout_from} to fit the rate card on")

    base_brl, per_kg_brl, transit, counts = [], [], [], []
    timed = train[train["transit"].notna() & (train["transit"] >= 0)]
    overall_transit = float(timed["transit"].median()) if not timed.empty else 0.0
    for z in range(bands.size):
        in_band = train[train["band"] == z]
        b, k = _band_fit(
            in_band["weight_g"].to_numpy(dtype=float) / 1000,
            in_band["freight"].to_numpy(dtype=float),
        )
        base_brl.append(b)
        per_kg_brl.append(k)
        band_times = timed.loc[timed["band"] == z, "transit"]
        transit.append(
            round(float(band_times.median()) if not band_times.empty else overall_transit)
        )
        counts.append(len(in_band))
    base_cents = np.rint(np.array(base_brl) * 100).astype(np.int64)
    per_kg_cents = np.rint(np.array(per_kg_brl) * 100).astype(np.int64)
    transit_days = np.array(transit, dtype=np.int64)

    handled = train[train["handling"].notna() & (train["handling"] >= 0)]
    median_handling = round(float(handled["handling"].median())) if not handled.empty else 0
    seller_handling = handled.groupby("seller_id")["handling"].median().round().astype(int)

    def predict(frame: pd.DataFrame) -> tuple[FloatArray, FloatArray]:
        z = frame["band"].to_numpy()
        freight = (
            base_cents[z] + per_kg_cents[z] * frame["weight_g"].to_numpy(dtype=float) / 1000
        ) / 100
        handling = (
            frame["seller_id"].map(seller_handling).fillna(median_handling).to_numpy(dtype=float)
        )
        return np.asarray(freight, dtype=np.float64), handling + transit_days[z]

    train_freight, train_days = predict(train)
    test_freight, test_days = predict(test)
    fit = RateFit(
        band_max_km=tuple(float(b) for b in bands),
        base_cents=tuple(int(c) for c in base_cents),
        per_kg_cents=tuple(int(c) for c in per_kg_cents),
        transit_days=tuple(int(d) for d in transit_days),
        train_parcels=tuple(counts),
        median_handling_days=median_handling,
        holdout_from=holdout_from,
        freight_train=FitQuality.of(train["freight"].to_numpy(dtype=float), train_freight),
        freight_holdout=FitQuality.of(test["freight"].to_numpy(dtype=float), test_freight),
        days_train=FitQuality.of(train["total"].to_numpy(dtype=float), train_days),
        days_holdout=FitQuality.of(test["total"].to_numpy(dtype=float), test_days),
    )
    return fit, seller_handling


@dataclass(frozen=True, eq=False)
class _Kept:
    """The orders kept for the stream: their heads (time, destination) in time order, their
    unit rows, and their lines grouped per (order, product, seller) with qty."""

    heads: pd.DataFrame
    lines: pd.DataFrame
    grouped: pd.DataFrame


def _keep(lines: pd.DataFrame, max_orders: int | None) -> _Kept:
    heads = (
        lines.groupby("order_id", sort=False)
        .agg(purchase=("purchase", "first"), lat=("c_lat", "first"), lon=("c_lon", "first"))
        .sort_values(["purchase"], kind="stable")
    )
    heads = heads.reset_index().sort_values(["purchase", "order_id"], kind="stable")
    if max_orders is not None:
        heads = heads.head(max_orders)
    kept = lines[lines["order_id"].isin(set(heads["order_id"]))]
    grouped = (
        kept.groupby(["order_id", "product_id", "seller_id"], sort=False)
        .agg(qty=("item", "size"), first=("item", "min"))
        .reset_index()
        .sort_values(["order_id", "first"], kind="stable")
    )
    return _Kept(heads, kept, grouped)


def _network(
    kept: _Kept, fit: RateFit, seller_handling: pd.Series, year: int
) -> tuple[Network, dict[str, str], dict[str, str]]:
    """The sellers as nodes holding what they shipped, the products as SKUs, the fitted card;
    and the node and SKU id of each seller and product."""
    grouped = kept.grouped
    seller_ids = sorted(set(grouped["seller_id"]))
    product_ids = sorted(set(grouped["product_id"]))
    node_of = _short_ids(seller_ids, "S-")
    sku_of = _short_ids(product_ids, "P-")
    n_index = {s: i for i, s in enumerate(seller_ids)}
    p_index = {p: i for i, p in enumerate(product_ids)}

    on_hand = np.zeros((len(seller_ids), len(product_ids)), dtype=np.int64)
    np.add.at(
        on_hand,
        (
            grouped["seller_id"].map(n_index).to_numpy(),
            grouped["product_id"].map(p_index).to_numpy(),
        ),
        grouped["qty"].to_numpy(dtype=np.int64),
    )
    days_in_year = (date(year + 1, 1, 1) - date(year, 1, 1)).days
    daily_demand = on_hand.sum(axis=0) / days_in_year

    seller_geo = kept.lines.groupby("seller_id")[["s_lat", "s_lon"]].first()
    product_weight = kept.lines.groupby("product_id")["weight_g"].first()
    median_handling = fit.median_handling_days
    handling_days = np.array(
        [int(seller_handling.get(s, median_handling)) for s in seller_ids], dtype=np.int64
    )
    bands = np.array(BANDS_KM)
    n_nodes = on_hand.shape[0]
    network = Network(
        node_ids=tuple(node_of[s] for s in seller_ids),
        node_kinds=(NodeKind.STORE,) * n_nodes,
        lat=seller_geo.loc[seller_ids, "s_lat"].to_numpy(dtype=float),
        lon=seller_geo.loc[seller_ids, "s_lon"].to_numpy(dtype=float),
        handling_days=np.maximum(handling_days, 0),
        handling_cost=np.zeros(n_nodes, dtype=np.int64),
        storage_cost=np.zeros(n_nodes, dtype=np.int64),
        capacity=np.full(n_nodes, UNLIMITED_CAPACITY, dtype=np.int64),
        sku_ids=tuple(sku_of[p] for p in product_ids),
        weight_g=product_weight.loc[product_ids].to_numpy(dtype=float).astype(np.int64),
        daily_demand=daily_demand,
        on_hand=on_hand,
        safety_stock=np.zeros_like(on_hand),
        reserved=np.zeros_like(on_hand),
        zone_ids=tuple(str(z + 1) for z in range(bands.size)),
        zone_max_km=bands,
        service_ids=(SERVICE,),
        # The fit is to the cent; the network holds millicents.
        base_price=np.array(fit.base_cents, dtype=np.int64)[None, :] * MILLICENTS_PER_CENT,
        per_kg=np.array(fit.per_kg_cents, dtype=np.int64)[None, :] * MILLICENTS_PER_CENT,
        transit_days=np.array(fit.transit_days, dtype=np.int64)[None, :],
        offered=np.ones((1, bands.size), dtype=np.bool_),
    )
    return network, node_of, sku_of


def _summary(joined: _Joined, kept: _Kept, network: Network, orders: int) -> dict[str, Any]:
    """What the data held and what was kept, and the historical KPIs to compare with."""
    grouped, heads = kept.grouped, kept.heads
    sellers_per_product = grouped.groupby("product_id")["seller_id"].nunique()
    sellers_per_order = kept.lines.groupby("order_id")["seller_id"].nunique()
    kept_delivered = heads.merge(
        joined.orders[["order_id", "delivered", "order_status"]], on="order_id", how="left"
    )
    delivered_days = (
        (kept_delivered["delivered"] - kept_delivered["purchase"]).dt.total_seconds() / _DAY
    ).dropna()
    return {
        "orders_with_items": joined.orders_with_items,
        "orders_dropped_no_coordinates": joined.dropped,
        "orders": orders,
        "order_lines": len(grouped),
        "units": int(network.on_hand.sum()),
        "sellers": len(network.node_ids),
        "products": len(network.sku_ids),
        "products_with_several_sellers": int((sellers_per_product > 1).sum()),
        "products_weight_imputed": joined.weights_imputed,
        "historical_split_rate": round(float((sellers_per_order > 1).mean()), 4),
        "actual_freight_per_order_brl": round(
            float(kept.lines["freight"].sum()) / max(orders, 1), 2
        ),
        "actual_mean_delivery_days": round(float(delivered_days.mean()), 2),
        "actual_delivered_orders": len(delivered_days),
    }


def _distance(lines: pd.DataFrame) -> FloatArray:
    lat1, lon1, lat2, lon2 = (
        np.radians(lines[c].to_numpy(dtype=float)) for c in ("s_lat", "s_lon", "c_lat", "c_lon")
    )
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return np.asarray(2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))), dtype=np.float64)


class HistoricalPolicy(BasePolicy):
    """Each order line from the seller that actually shipped it (one parcel per seller).

    The parcel ships with the cheapest service offered in its zone (the
    fitted card has one). A line whose seller has no stock left in the view
    is not shipped (never happens when stock is what the sellers shipped).
    """

    def __init__(self, history: Mapping[str, tuple[str, ...]]) -> None:
        super().__init__("historical")
        self._history = history

    def decide(self, network: Network, order: SimOrder) -> Allocation | Option:
        sellers = self._history.get(order.order_id)
        if sellers is None or len(sellers) != len(order.order.lines):
            raise ValueError(f"no historical sellers for order {order.order_id!r}")
        available = network.available
        left: dict[tuple[int, int], int] = {}
        by_node: dict[str, list[ParcelLine]] = {}
        for i, (line, node) in enumerate(zip(order.order.lines, sellers, strict=True)):
            if node not in network.node_index:
                continue
            cell = (network.node_index[node], network.sku_index[line.sku])
            qty = min(line.qty, left.setdefault(cell, int(available[cell])))
            if qty > 0:
                left[cell] -= qty
                by_node.setdefault(node, []).append(ParcelLine(i, line.sku, qty))
        dest = order.order.destination
        parcels = []
        for node, contents in by_node.items():
            n = network.node_index[node]
            km = haversine_km(network.lat[n : n + 1], network.lon[n : n + 1], dest.lat, dest.lon)
            z = int(zone_of(network, km)[0])
            grams = sum(
                pl.qty * int(network.weight_g[network.sku_index[pl.sku]]) for pl in contents
            )
            offered = np.flatnonzero(network.offered[:, z] & network.customer_services)
            price = network.base_price[offered, z] + per_kg_charge(
                network.per_kg[offered, z], grams
            )
            service = network.service_ids[int(offered[int(np.argmin(price))])]
            parcels.append(ParcelPlan(node, service, tuple(contents)))
        return Allocation(tuple(parcels))
