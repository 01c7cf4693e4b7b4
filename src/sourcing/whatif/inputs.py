"""A scenario's inputs from files and the generator: order streams and receipts.

* :func:`read_orders`: DESIGN's ``orders.csv`` (one row per line);
* :func:`generate_orders`: a seeded synthetic stream with population-like
  demand (:class:`GeneratedOrders`);
* :func:`read_receipts`: replenishment receipts (``at,node_id,sku,qty``).

Every problem with a file (here or in the scenario file itself) is a
:class:`ScenarioError` naming the file, the row and column or the key, and
the reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np

from sourcing.errors import SourcingError
from sourcing.loader import csv_records
from sourcing.model import Location, Network, Order, OrderLine
from sourcing.whatif.simulate import Receipt, SimOrder

__all__ = [
    "CsvOrders",
    "GeneratedOrders",
    "ScenarioError",
    "generate_orders",
    "naive_utc",
    "read_orders",
    "read_receipts",
]


class ScenarioError(SourcingError):
    """A scenario file (or a file it names) is missing, malformed or holds a bad value."""

    def __init__(
        self,
        file: str,
        reason: str,
        *,
        key: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file, self.key, self.row, self.column, self.reason = file, key, row, column, reason
        where = file
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        if key is not None:
            where += f": {key}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class CsvOrders:
    """Orders from DESIGN's ``orders.csv``."""

    path: Path


@dataclass(frozen=True)
class GeneratedOrders:
    """Synthetic orders with population-like demand (contiguous-US destinations).

    Order ``i`` is placed at ``start`` + the sum of ``i + 1`` exponential
    gaps of mean ``1 / per_day`` days (a Poisson stream). Its number of lines
    is drawn with ``line_weights`` (index 0: one line), each line's qty with
    ``qty_weights``; its SKUs are distinct, drawn with probability
    proportional to ``daily_demand`` among SKUs with available stock at the
    start; its destination is a STANDARD ZIP drawn with the demo's density
    proxy (:func:`sourcing.demo.population_points`). ``per_day`` None means
    the network's demand rate: ``sum(daily_demand)`` / expected units per order.
    Deterministic for a seed.
    """

    count: int
    seed: int = 1
    start: datetime = datetime(2024, 1, 1)
    per_day: float | None = None
    line_weights: tuple[float, ...] = (55.0, 25.0, 10.0, 6.0, 4.0)
    qty_weights: tuple[float, ...] = (80.0, 15.0, 5.0)


def naive_utc(moment: datetime) -> datetime:
    """Aware times become naive UTC; naive ones are kept as they are."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


_ORDER_COLUMNS: Final = ("order_id", "created_at", "dest_lat", "dest_lon", "sku", "qty")


_RECEIPT_COLUMNS: Final = ("at", "node_id", "sku", "qty")


def _csv_rows(path: Path, columns: Sequence[str]) -> Iterable[tuple[int, dict[str, str]]]:
    return csv_records(path, str(path), columns, ScenarioError)


def _parse_field(
    name: str, row: int, column: str, text: str, parse: Callable[[str], Any], what: str
) -> Any:
    if not text:
        raise ScenarioError(name, "empty value", row=row, column=column)
    try:
        return parse(text)
    except (ValueError, OverflowError):
        raise ScenarioError(name, f"not {what}: {text!r}", row=row, column=column) from None


def _moment_of(text: str) -> datetime:
    return naive_utc(datetime.fromisoformat(text))


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def _lat(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and -90 <= value <= 90):
        raise ValueError(text)
    return value


def _lon(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and -180 <= value <= 180):
        raise ValueError(text)
    return value


def read_orders(
    path: str | os.PathLike[str], sku_ids: Iterable[str] | None = None
) -> list[SimOrder]:
    """Read DESIGN's ``orders.csv`` (one row per line, rows of an order grouped by ``order_id``).

    Rows of one order must agree on ``created_at`` and the destination. With
    ``sku_ids``, an unknown SKU is an error naming its row. Times are ISO
    8601; aware ones are converted to naive UTC.
    """
    file = Path(path)
    name = str(file)
    known = set(sku_ids) if sku_ids is not None else None
    heads: dict[str, tuple[int, datetime, float, float]] = {}
    lines: dict[str, list[OrderLine]] = {}
    for row, values in _csv_rows(file, _ORDER_COLUMNS):
        order_id = values["order_id"]
        if not order_id:
            raise ScenarioError(name, "empty value", row=row, column="order_id")
        at = _parse_field(
            name, row, "created_at", values["created_at"], _moment_of, "an ISO date-time"
        )
        lat = _parse_field(
            name, row, "dest_lat", values["dest_lat"], _lat, "a latitude in [-90, 90]"
        )
        lon = _parse_field(
            name, row, "dest_lon", values["dest_lon"], _lon, "a longitude in [-180, 180]"
        )
        sku = values["sku"]
        if not sku:
            raise ScenarioError(name, "empty value", row=row, column="sku")
        if known is not None and sku not in known:
            raise ScenarioError(
                name, f"unknown SKU {sku!r} (not in the network)", row=row, column="sku"
            )
        qty = _parse_field(
            name, row, "qty", values["qty"], _positive_int, "a positive whole number"
        )
        head = heads.setdefault(order_id, (row, at, lat, lon))
        if head[1:] != (at, lat, lon):
            column = "created_at" if head[1] != at else "dest_lat" if head[2] != lat else "dest_lon"
            raise ScenarioError(
                name,
                f"order {order_id!r} has a different {column} than at row {head[0]}",
                row=row,
                column=column,
            )
        lines.setdefault(order_id, []).append(OrderLine(sku, qty))
    return [
        SimOrder(order_id, at, Order(Location(lat, lon), tuple(lines[order_id])))
        for order_id, (_, at, lat, lon) in heads.items()
    ]


def read_receipts(path: str | os.PathLike[str], network: Network) -> tuple[Receipt, ...]:
    """Read a receipts CSV (``at,node_id,sku,qty``) against ``network``."""
    file = Path(path)
    name = str(file)
    result = []
    for row, values in _csv_rows(file, _RECEIPT_COLUMNS):
        at = _parse_field(name, row, "at", values["at"], _moment_of, "an ISO date-time")
        node, sku = values["node_id"], values["sku"]
        if node not in network.node_index:
            raise ScenarioError(name, f"unknown node {node!r}", row=row, column="node_id")
        if sku not in network.sku_index:
            raise ScenarioError(name, f"unknown SKU {sku!r}", row=row, column="sku")
        qty = _parse_field(
            name, row, "qty", values["qty"], _positive_int, "a positive whole number"
        )
        result.append(Receipt(at, node, sku, qty))
    return tuple(result)


def generate_orders(network: Network, spec: GeneratedOrders) -> list[SimOrder]:
    """The synthetic stream of ``spec`` for ``network`` (see :class:`GeneratedOrders`)."""
    from sourcing.demo import population_points

    rng = np.random.default_rng(spec.seed)
    popularity = np.where(network.available.sum(axis=0) > 0, network.daily_demand, 0.0)
    stocked = int(np.count_nonzero(popularity))
    if stocked == 0:
        raise ValueError("no SKU has both stock and demand: nothing to order")
    line_p = np.asarray(spec.line_weights) / sum(spec.line_weights)
    qty_p = np.asarray(spec.qty_weights) / sum(spec.qty_weights)
    per_day = spec.per_day
    if per_day is None:
        units = float(line_p @ np.arange(1, line_p.size + 1)) * float(
            qty_p @ np.arange(1, qty_p.size + 1)
        )
        per_day = max(float(popularity.sum()) / units, 1e-9)
    lat, lon, weight = population_points()
    n_lines = np.minimum(rng.choice(line_p.size, size=spec.count, p=line_p) + 1, stocked)
    dest = rng.choice(weight.size, size=spec.count, p=weight)
    when = np.cumsum(rng.exponential(1.0 / per_day, size=spec.count))
    sku_p = popularity / popularity.sum()
    result = []
    for i in range(spec.count):
        skus = rng.choice(sku_p.size, size=int(n_lines[i]), replace=False, p=sku_p)
        qty = rng.choice(qty_p.size, size=skus.size, p=qty_p) + 1
        result.append(
            SimOrder(
                order_id=f"G{i + 1:06d}",
                created_at=spec.start + timedelta(days=float(when[i])),
                order=Order(
                    Location(float(lat[dest[i]]), float(lon[dest[i]])),
                    tuple(
                        OrderLine(network.sku_ids[int(k)], int(q))
                        for k, q in zip(skus, qty, strict=True)
                    ),
                ),
            )
        )
    return result
