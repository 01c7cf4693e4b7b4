"""Read and write a network as the planner's CSV folder (DESIGN section 7).

A network folder holds ``nodes.csv``, ``skus.csv``, ``stock.csv``,
``zones.csv`` and ``rates.csv`` (UTF-8, header row), and optionally
``inbound.csv`` (expected receipts: ``node_id``, ``sku``, ``qty``,
``expected_day`` in whole days after the order date, and an optional
``receipt_id``; without one a receipt is named ``inbound-ROW``). A folder
without ``inbound.csv`` has no receipts. The transfer lane between nodes
(click & collect) is the rate card's service named ``transfer`` in
``rates.csv``: no extra file. Extra columns are
ignored; every missing column or bad value raises :class:`NetworkDataError`
naming the file, row and column. Money in the files is in currency units with
at most five decimals (a storage cost of 0.004 per unit-day, a per-kg rate of
0.4636) and becomes exact integer millicents in the :class:`Network`.

Row numbers count the header as row 1, so the first data row is row 2; for a
file without quoted line breaks this is the line number an editor shows.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import numpy as np

from sourcing.errors import NetworkDataError
from sourcing.model import (
    DEFAULT_HORIZON_DAYS,
    UNLIMITED_CAPACITY,
    Network,
    NodeKind,
    Receipt,
    money_text,
    parse_money,
)

__all__ = ["read_network", "write_network"]

NODES = "nodes.csv"
SKUS = "skus.csv"
STOCK = "stock.csv"
ZONES = "zones.csv"
RATES = "rates.csv"
INBOUND = "inbound.csv"

_NODE_COLUMNS = (
    "node_id",
    "kind",
    "lat",
    "lon",
    "handling_days",
    "handling_cost",
    "storage_cost_per_unit_day",
    "daily_capacity_units",
)
_SKU_COLUMNS = ("sku", "weight_kg", "daily_demand")
_STOCK_COLUMNS = ("node_id", "sku", "on_hand", "safety_stock")
_ZONE_COLUMNS = ("zone", "max_km")
_RATE_COLUMNS = ("service", "zone", "base_price", "per_kg", "transit_days")
_INBOUND_COLUMNS = ("node_id", "sku", "qty", "expected_day")

# Bounds keep every later int64 sum and millicent product far from overflow.
_MAX_INT = UNLIMITED_CAPACITY
_INT_RE = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class _Row:
    """One data row of a CSV file, with the helpers that parse its fields."""

    file: str
    number: int
    values: dict[str, str]

    def error(self, column: str, reason: str) -> NetworkDataError:
        return NetworkDataError(self.file, reason, row=self.number, column=column)

    def text(self, column: str) -> str:
        value = self.values[column]
        if not value:
            raise self.error(column, "empty value")
        return value

    def is_empty(self, column: str) -> bool:
        return not self.values[column]

    def integer(self, column: str) -> int:
        value = self.text(column)
        if not _INT_RE.fullmatch(value):
            raise self.error(column, f"not a whole number: {value!r}")
        number = int(value)
        if number < 0:
            raise self.error(column, f"must be >= 0, got {number}")
        if number > _MAX_INT:
            raise self.error(column, f"too large: {number}")
        return number

    def real(self, column: str, *, positive: bool = False) -> float:
        value = self.text(column)
        try:
            number = float(value)
        except ValueError:
            raise self.error(column, f"not a number: {value!r}") from None
        if not math.isfinite(number):
            raise self.error(column, f"not a finite number: {value!r}")
        if positive and number <= 0:
            raise self.error(column, f"must be > 0, got {value}")
        if number < 0:
            raise self.error(column, f"must be >= 0, got {value}")
        return number

    def degrees(self, column: str, limit: float) -> float:
        value = self.text(column)
        try:
            number = float(value)
        except ValueError:
            raise self.error(column, f"not a number: {value!r}") from None
        if not math.isfinite(number) or not -limit <= number <= limit:
            raise self.error(column, f"must be within [-{limit:g}, {limit:g}], got {value}")
        return number

    def money(self, column: str) -> int:
        """Money in currency units with at most 5 decimals, as exact integer millicents."""
        try:
            return parse_money(self.text(column))
        except ValueError as exc:
            raise self.error(column, str(exc)) from None


class CsvError(Protocol):
    """How a CSV reader reports a problem: file name, reason, and where (1-based row)."""

    def __call__(
        self, file: str, reason: str, *, row: int | None = None, column: str | None = None
    ) -> Exception: ...


def csv_records(
    path: Path, name: str, columns: Sequence[str], error: CsvError
) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, {column: stripped text}) for each non-blank data row of ``path``.

    Rows count the header as row 1. Extra columns are ignored; a missing or
    doubled required column, bad UTF-8 or malformed CSV raise ``error(name, ...)``.
    """
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        handle = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise error(name, "file not found") from None
    except OSError as exc:
        raise error(name, f"cannot open: {exc.strerror or exc}") from None
    number = 0
    with handle:
        try:
            reader = csv.reader(handle)
            header = next(reader, None)
            number = 1
            if header is None:
                raise error(name, "empty file, expected a header row")
            names = [field.strip() for field in header]
            positions: dict[str, int] = {}
            for column in columns:
                count = names.count(column)
                if count == 0:
                    raise error(name, "missing required column", column=column)
                if count > 1:
                    raise error(name, "column appears twice", row=1, column=column)
                positions[column] = names.index(column)
            for record in reader:
                number += 1
                if not any(field.strip() for field in record):
                    continue
                yield (
                    number,
                    {
                        column: record[i].strip() if i < len(record) else ""
                        for column, i in positions.items()
                    },
                )
        except UnicodeDecodeError:
            raise error(name, "not valid UTF-8 text") from None
        except csv.Error as exc:
            raise error(name, f"malformed CSV: {exc}", row=number + 1) from None


def _rows(directory: Path, file: str, columns: Sequence[str]) -> Iterator[_Row]:
    """The non-blank data rows of ``file``, each keyed by the required columns."""
    for number, values in csv_records(directory / file, file, columns, NetworkDataError):
        yield _Row(file, number, values)


def _unique_id(row: _Row, column: str, index: dict[str, int], what: str) -> str:
    """Read an id and register it in ``index`` (id -> position), rejecting duplicates."""
    value = row.text(column)
    if value in index:
        raise row.error(column, f"duplicate {what} {value!r}")
    index[value] = len(index)
    return value


def _known(row: _Row, column: str, index: dict[str, int], source: str) -> int:
    value = row.text(column)
    try:
        return index[value]
    except KeyError:
        raise row.error(column, f"unknown {column} {value!r} (not in {source})") from None


def read_network(
    directory: str | os.PathLike[str], *, horizon_days: float = DEFAULT_HORIZON_DAYS
) -> Network:
    """Read the five CSV files of a network folder into a :class:`Network`.

    Raises :class:`NetworkDataError` naming the file, the row (1-based,
    counting the header as row 1, so the first data row is row 2), the column
    and the reason for any missing file, missing column or bad value.
    Node, SKU and zone order follow the files; service order is the order of
    first appearance in ``rates.csv``. ``reserved`` is all zeros.
    """
    if not (math.isfinite(horizon_days) and horizon_days > 0):
        raise ValueError(f"horizon_days must be a positive number, got {horizon_days}")
    folder = Path(directory)

    node_index: dict[str, int] = {}
    kinds: list[NodeKind] = []
    lat: list[float] = []
    lon: list[float] = []
    handling_days: list[int] = []
    handling_cost: list[int] = []
    storage_cost: list[int] = []
    capacity: list[int] = []
    for row in _rows(folder, NODES, _NODE_COLUMNS):
        _unique_id(row, "node_id", node_index, "node_id")
        kind = row.text("kind").lower()
        try:
            kinds.append(NodeKind(kind))
        except ValueError:
            raise row.error("kind", f"must be 'dc' or 'store', got {kind!r}") from None
        lat.append(row.degrees("lat", 90.0))
        lon.append(row.degrees("lon", 180.0))
        handling_days.append(row.integer("handling_days"))
        handling_cost.append(row.money("handling_cost"))
        storage_cost.append(row.money("storage_cost_per_unit_day"))
        capacity.append(
            UNLIMITED_CAPACITY
            if row.is_empty("daily_capacity_units")
            else row.integer("daily_capacity_units")
        )

    sku_index: dict[str, int] = {}
    weight_g: list[int] = []
    daily_demand: list[float] = []
    for row in _rows(folder, SKUS, _SKU_COLUMNS):
        _unique_id(row, "sku", sku_index, "sku")
        grams = round(row.real("weight_kg", positive=True) * 1000)
        if grams < 1:
            raise row.error("weight_kg", "must be at least 0.001 kg (1 g)")
        if grams > _MAX_INT:
            raise row.error("weight_kg", "too large")
        weight_g.append(grams)
        daily_demand.append(row.real("daily_demand"))

    shape = (len(node_index), len(sku_index))
    on_hand = np.zeros(shape, dtype=np.int64)
    safety_stock = np.zeros(shape, dtype=np.int64)
    seen_stock: dict[tuple[int, int], int] = {}
    for row in _rows(folder, STOCK, _STOCK_COLUMNS):
        n = _known(row, "node_id", node_index, NODES)
        s = _known(row, "sku", sku_index, SKUS)
        if (n, s) in seen_stock:
            raise row.error(
                "sku",
                f"duplicate stock row for node {row.values['node_id']!r} and sku "
                f"{row.values['sku']!r} (first at row {seen_stock[n, s]})",
            )
        seen_stock[n, s] = row.number
        on_hand[n, s] = row.integer("on_hand")
        safety_stock[n, s] = 0 if row.is_empty("safety_stock") else row.integer("safety_stock")

    zone_index: dict[str, int] = {}
    zone_max_km: list[float] = []
    for row in _rows(folder, ZONES, _ZONE_COLUMNS):
        _unique_id(row, "zone", zone_index, "zone")
        max_km = row.real("max_km", positive=True)
        if zone_max_km and max_km <= zone_max_km[-1]:
            raise row.error(
                "max_km",
                f"zones must be strictly ascending by max_km: {max_km:g} follows "
                f"{zone_max_km[-1]:g}",
            )
        zone_max_km.append(max_km)
    if not zone_index:
        raise NetworkDataError(ZONES, "no zones: at least one data row is needed")

    service_index: dict[str, int] = {}
    rates: dict[tuple[int, int], tuple[int, int, int]] = {}
    seen_rate: dict[tuple[int, int], int] = {}
    for row in _rows(folder, RATES, _RATE_COLUMNS):
        service = row.text("service")
        z = _known(row, "zone", zone_index, ZONES)
        v = service_index.setdefault(service, len(service_index))
        if (v, z) in seen_rate:
            raise row.error(
                "zone",
                f"duplicate rate for service {service!r} and zone {row.values['zone']!r} "
                f"(first at row {seen_rate[v, z]})",
            )
        seen_rate[v, z] = row.number
        rates[v, z] = (
            row.money("base_price"),
            row.money("per_kg"),
            row.integer("transit_days"),
        )
    if not service_index:
        raise NetworkDataError(RATES, "no rates: at least one data row is needed")

    card = (len(service_index), len(zone_index))
    base_price = np.zeros(card, dtype=np.int64)
    per_kg = np.zeros(card, dtype=np.int64)
    transit_days = np.zeros(card, dtype=np.int64)
    offered = np.zeros(card, dtype=np.bool_)
    for (v, z), (base, kg, days) in rates.items():
        base_price[v, z], per_kg[v, z], transit_days[v, z] = base, kg, days
        offered[v, z] = True

    receipts = _read_receipts(folder, node_index, sku_index)

    return Network(
        node_ids=tuple(node_index),
        node_kinds=tuple(kinds),
        lat=np.array(lat, dtype=np.float64),
        lon=np.array(lon, dtype=np.float64),
        handling_days=np.array(handling_days, dtype=np.int64),
        handling_cost=np.array(handling_cost, dtype=np.int64),
        storage_cost=np.array(storage_cost, dtype=np.int64),
        capacity=np.array(capacity, dtype=np.int64),
        sku_ids=tuple(sku_index),
        weight_g=np.array(weight_g, dtype=np.int64),
        daily_demand=np.array(daily_demand, dtype=np.float64),
        on_hand=on_hand,
        safety_stock=safety_stock,
        reserved=np.zeros(shape, dtype=np.int64),
        zone_ids=tuple(zone_index),
        zone_max_km=np.array(zone_max_km, dtype=np.float64),
        service_ids=tuple(service_index),
        base_price=base_price,
        per_kg=per_kg,
        transit_days=transit_days,
        offered=offered,
        horizon_days=horizon_days,
        receipts=receipts,
    )


def _read_receipts(
    folder: Path, node_index: dict[str, int], sku_index: dict[str, int]
) -> tuple[Receipt, ...]:
    """The optional ``inbound.csv``: expected receipts (none when the file is absent)."""
    path = folder / INBOUND
    if not path.exists():
        return ()
    columns: tuple[str, ...] = _INBOUND_COLUMNS
    if _has_column(path, "receipt_id"):
        columns = (*columns, "receipt_id")
    first_row: dict[str, int] = {}
    receipts: list[Receipt] = []
    for number, values in csv_records(path, INBOUND, columns, NetworkDataError):
        row = _Row(INBOUND, number, values)
        _known(row, "node_id", node_index, NODES)
        _known(row, "sku", sku_index, SKUS)
        receipt_id = values.get("receipt_id") or f"inbound-{number}"
        if receipt_id in first_row:
            raise row.error(
                "receipt_id",
                f"duplicate receipt_id {receipt_id!r} (first at row {first_row[receipt_id]})",
            )
        first_row[receipt_id] = number
        receipts.append(
            Receipt(
                receipt_id,
                row.text("node_id"),
                row.text("sku"),
                row.integer("qty"),
                row.integer("expected_day"),
            )
        )
    return tuple(receipts)


def _has_column(path: Path, column: str) -> bool:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False  # csv_records reports the problem with its row and column
    return column in [name.strip() for name in header]


def _real(value: float) -> str:
    # repr is the shortest text that parses back to the same float.
    return repr(float(value))


def _kilograms(grams: int) -> str:
    return format(Decimal(int(grams)).scaleb(-3).normalize(), "f")


def _write(path: Path, columns: Sequence[str], rows: Iterator[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


def write_network(network: Network, directory: str | os.PathLike[str]) -> None:
    """Write ``network`` as the five CSV files of a network folder (and ``inbound.csv``
    when it has receipts).

    The folder is created if needed. :func:`read_network` on the result gives
    back the same network, except ``reserved`` (not written; zero on reading)
    and prices of service/zone pairs that are not offered (no row; zero on
    reading). Stock rows are written only for pairs with stock or safety stock.

    Raises ValueError for a service that offers no zone at all: the rate file
    has no way to name it.
    """
    for v, service in enumerate(network.service_ids):
        if not network.offered[v].any():
            raise ValueError(f"service {service!r} offers no zone; rates.csv cannot hold it")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    n_nodes = len(network.node_ids)

    _write(
        folder / NODES,
        _NODE_COLUMNS,
        (
            (
                network.node_ids[n],
                network.node_kinds[n].value,
                _real(network.lat[n]),
                _real(network.lon[n]),
                int(network.handling_days[n]),
                money_text(network.handling_cost[n]),
                money_text(network.storage_cost[n]),
                "" if network.capacity[n] == UNLIMITED_CAPACITY else int(network.capacity[n]),
            )
            for n in range(n_nodes)
        ),
    )
    _write(
        folder / SKUS,
        _SKU_COLUMNS,
        (
            (sku, _kilograms(network.weight_g[s]), _real(network.daily_demand[s]))
            for s, sku in enumerate(network.sku_ids)
        ),
    )
    _write(
        folder / STOCK,
        _STOCK_COLUMNS,
        (
            (node, sku, int(network.on_hand[n, s]), int(network.safety_stock[n, s]))
            for n, node in enumerate(network.node_ids)
            for s, sku in enumerate(network.sku_ids)
            if network.on_hand[n, s] > 0 or network.safety_stock[n, s] > 0
        ),
    )
    _write(
        folder / ZONES,
        _ZONE_COLUMNS,
        ((zone, _real(network.zone_max_km[z])) for z, zone in enumerate(network.zone_ids)),
    )
    if network.receipts:
        _write(
            folder / INBOUND,
            (*_INBOUND_COLUMNS, "receipt_id"),
            ((r.node_id, r.sku, r.qty, r.expected_day, r.receipt_id) for r in network.receipts),
        )
    _write(
        folder / RATES,
        _RATE_COLUMNS,
        (
            (
                service,
                zone,
                money_text(network.base_price[v, z]),
                money_text(network.per_kg[v, z]),
                int(network.transit_days[v, z]),
            )
            for v, service in enumerate(network.service_ids)
            for z, zone in enumerate(network.zone_ids)
            if network.offered[v, z]
        ),
    )
