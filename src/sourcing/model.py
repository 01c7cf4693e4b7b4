"""Domain types of the sourcing engine, and the request and answer of one quote.

A :class:`Network` is the immutable, numpy-backed picture of nodes, SKUs,
stock, carrier zones and rate cards (DESIGN section 7). It is built once (by
the CSV loader, the demo builder or the service's store) and then only read:
every per-order computation slices its arrays.

Money is held in integer **millicents** (1/1000 of a cent, 1e-5 currency
units) inside the engine, network data included: planner money has at most
five decimals (:func:`parse_money`), so base prices, per-kg prices, handling
and storage costs are whole millicents, exactly as entered (a storage cost of
0.004 per unit-day, a per-kg price of 0.4636). Two products need rounding, each
half-to-even to the millicent, once, per unit, so every cost stays linear in
the units and every total is an exact sum of its parts: the per-kg charge of
a unit (:func:`per_kg_charge`: per-kg price x the unit's weight in grams /
1000, exact whenever the per-kg price is whole cents) and its storage credit
(a days-of-cover ratio). Output converts to currency units at the edge
(:func:`to_currency`).

Two more ways to fulfil (click & collect, waiting for inbound stock) need two
more pieces of network data:

* the **transfer lane**: the rate card's service named :data:`TRANSFER_SERVICE`
  (``"transfer"``) moves units between nodes. Its zone is the one of the
  node-to-node distance; it is priced and timed like any parcel (base price +
  per kg, the origin's handling cost and days, the service's transit days) and
  never ships to a customer. A network without it has no transfer lane;
* **inbound receipts** (:class:`Receipt`): units a node expects on a day
  (days after the order date). ``qty`` is what is still free to promise.

A quote (:func:`sourcing.menu.quote`) takes :class:`QuoteSettings` and answers
a :class:`Quote`: the labelled :class:`Option` menu and the frontier it was
chosen from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MILLICENTS_PER_CENT = 1000
MILLICENTS_PER_UNIT = 100 * MILLICENTS_PER_CENT
#: Stands for "no daily capacity limit"; large enough for any cart, small
#: enough that sums of a few hundred of them stay far from int64 overflow.
UNLIMITED_CAPACITY = 1 << 40
DEFAULT_HORIZON_DAYS = 30.0
#: The rate-card service that moves units between nodes (click & collect transfers).
TRANSFER_SERVICE = "transfer"
#: The pseudo-service of units the shopper picks up at the pickup store itself.
PICKUP_SERVICE = "pickup"


def to_currency(millicents: int) -> Decimal:
    """Money for people: currency units rounded half-to-even to the cent."""
    return (Decimal(int(millicents)) / MILLICENTS_PER_UNIT).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_EVEN
    )


def cents_to_millicents(cents: int) -> int:
    return int(cents) * MILLICENTS_PER_CENT


#: Decimals planner money may have: millicents are 1e-5 currency units.
MONEY_DECIMALS = 5
GRAMS_PER_KG = 1000
#: Largest planner amount, in currency units: a price per kg times any weight up to
#: 10 t stays far inside int64 millicents.
MAX_MONEY_UNITS = 10**6


def parse_money(text: str, *, limit: int = MAX_MONEY_UNITS) -> int:
    """Currency units as text (``"12.34"``, ``"0.004"``) -> exact integer millicents.

    Raises ValueError with the reason (not a number, negative, above ``limit``
    currency units, more than :data:`MONEY_DECIMALS` decimals) for the caller to
    wrap with the file, row and column or field.
    """
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not an amount of money: {text!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not an amount of money: {text!r}")
    if amount < 0:
        raise ValueError(f"must be >= 0, got {text.strip()}")
    if amount > limit:
        raise ValueError(f"too large: {text.strip()} (at most {limit})")
    # Inspect the exact digits: arithmetic would round to the context precision.
    _, digits, exponent = amount.as_tuple()
    if (
        isinstance(exponent, int)
        and exponent < -MONEY_DECIMALS
        and any(digits[exponent + MONEY_DECIMALS :])
    ):
        raise ValueError(f"at most {MONEY_DECIMALS} decimals allowed, got {text.strip()}")
    return int(amount * MILLICENTS_PER_UNIT)


def money_text(millicents: int) -> str:
    """Millicents as currency units with 2 to 5 decimals, exactly: ``"12.50"``, ``"0.004"``."""
    text = f"{Decimal(int(millicents)).scaleb(-MONEY_DECIMALS):.{MONEY_DECIMALS}f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def per_kg_charge(per_kg: Any, weight_g: Any) -> IntArray:
    """Millicents one unit of ``weight_g`` grams costs at ``per_kg`` millicents per kg.

    ``per_kg * weight_g / 1000`` rounded half-to-even to the millicent (exact
    when the per-kg price is whole cents). Integer arithmetic, element-wise.
    """
    product = np.asarray(per_kg, dtype=np.int64) * np.asarray(weight_g, dtype=np.int64)
    whole, rest = np.divmod(product, GRAMS_PER_KG)
    up = (2 * rest > GRAMS_PER_KG) | ((2 * rest == GRAMS_PER_KG) & (whole % 2 == 1))
    return np.asarray(whole + up, dtype=np.int64)


class NodeKind(StrEnum):
    DC = "dc"
    STORE = "store"


def _frozen(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class Receipt:
    """Units a node expects to receive: ``qty`` free units of ``sku`` due ``expected_day``.

    ``expected_day`` counts whole days after the order date (0: today). Units
    from a receipt earn no storage credit (they were never on a shelf).
    """

    receipt_id: str
    node_id: str
    sku: str
    qty: int
    expected_day: int


@dataclass(frozen=True, eq=False)
class Network:
    """Nodes, SKUs, stock, zones and rate cards as read-only arrays.

    Shapes: N nodes, S SKUs, Z zones, V services.

    * ``node_ids`` (N), ``node_kinds`` (N), ``lat``/``lon`` (N, degrees),
      ``handling_days`` (N), ``handling_cost`` (N, millicents per parcel),
      ``storage_cost`` (N, millicents per unit per day),
      ``capacity`` (N, units per day; :data:`UNLIMITED_CAPACITY` if none);
    * ``sku_ids`` (S), ``weight_g`` (S, grams per unit), ``daily_demand``
      (S, units per day across the network);
    * ``on_hand``, ``safety_stock``, ``reserved`` (N x S units);
    * ``zone_ids`` (Z), ``zone_max_km`` (Z, ascending; the last band covers
      every farther distance);
    * ``service_ids`` (V), ``base_price`` (V x Z, millicents per parcel) and
      ``per_kg`` (V x Z, millicents per kg),
      ``transit_days`` (V x Z), ``offered`` (V x Z: the rate card has a row).
    """

    node_ids: tuple[str, ...]
    node_kinds: tuple[NodeKind, ...]
    lat: FloatArray
    lon: FloatArray
    handling_days: IntArray
    handling_cost: IntArray
    storage_cost: IntArray
    capacity: IntArray
    sku_ids: tuple[str, ...]
    weight_g: IntArray
    daily_demand: FloatArray
    on_hand: IntArray
    safety_stock: IntArray
    reserved: IntArray
    zone_ids: tuple[str, ...]
    zone_max_km: FloatArray
    service_ids: tuple[str, ...]
    base_price: IntArray
    per_kg: IntArray
    transit_days: IntArray
    offered: BoolArray
    horizon_days: float = DEFAULT_HORIZON_DAYS
    #: Inbound receipts (free units only); empty by default.
    receipts: tuple[Receipt, ...] = ()
    node_index: dict[str, int] = field(init=False, repr=False)
    sku_index: dict[str, int] = field(init=False, repr=False)
    service_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n, s, z, v = (
            len(self.node_ids),
            len(self.sku_ids),
            len(self.zone_ids),
            len(self.service_ids),
        )
        shapes: dict[str, tuple[int, ...]] = {
            "lat": (n,),
            "lon": (n,),
            "handling_days": (n,),
            "handling_cost": (n,),
            "storage_cost": (n,),
            "capacity": (n,),
            "weight_g": (s,),
            "daily_demand": (s,),
            "on_hand": (n, s),
            "safety_stock": (n, s),
            "reserved": (n, s),
            "zone_max_km": (z,),
            "base_price": (v, z),
            "per_kg": (v, z),
            "transit_days": (v, z),
            "offered": (v, z),
        }
        float_fields = {"lat", "lon", "daily_demand", "zone_max_km"}
        for name, shape in shapes.items():
            dtype: type[np.generic] = (
                np.float64 if name in float_fields else np.bool_ if name == "offered" else np.int64
            )
            array: npt.NDArray[Any] = np.asarray(getattr(self, name), dtype=dtype)
            if array.shape != shape:
                raise ValueError(f"Network.{name} has shape {array.shape}, expected {shape}")
            object.__setattr__(self, name, _frozen(array))
        if len(self.node_kinds) != n:
            raise ValueError("Network.node_kinds must have one entry per node")
        if z == 0 or v == 0:
            raise ValueError("a network needs at least one zone and one service")
        if np.any(np.diff(self.zone_max_km) <= 0):
            raise ValueError("Network.zone_max_km must be strictly ascending")
        for name, ids in (
            ("node_ids", self.node_ids),
            ("sku_ids", self.sku_ids),
            ("zone_ids", self.zone_ids),
            ("service_ids", self.service_ids),
        ):
            if len(set(ids)) != len(ids):
                raise ValueError(f"Network.{name} holds duplicates")
        object.__setattr__(self, "node_index", {k: i for i, k in enumerate(self.node_ids)})
        object.__setattr__(self, "sku_index", {k: i for i, k in enumerate(self.sku_ids)})
        object.__setattr__(self, "service_index", {k: i for i, k in enumerate(self.service_ids)})
        object.__setattr__(self, "receipts", tuple(self.receipts))
        seen_receipts: set[str] = set()
        for r in self.receipts:
            if r.receipt_id in seen_receipts:
                raise ValueError(f"Network.receipts holds receipt {r.receipt_id!r} twice")
            seen_receipts.add(r.receipt_id)
            if r.node_id not in self.node_index or r.sku not in self.sku_index:
                raise ValueError(f"receipt {r.receipt_id!r} names an unknown node or SKU")
            if r.qty < 0 or r.expected_day < 0:
                raise ValueError(f"receipt {r.receipt_id!r}: qty and expected_day must be >= 0")

    @property
    def transfer_service(self) -> int | None:
        """Index of the transfer lane's service (:data:`TRANSFER_SERVICE`), None without one."""
        return self.service_index.get(TRANSFER_SERVICE)

    @property
    def customer_services(self) -> BoolArray:
        """(V) services that ship to customers: every one but the transfer lane."""
        mask: BoolArray = np.ones(len(self.service_ids), dtype=np.bool_)
        if self.transfer_service is not None:
            mask[self.transfer_service] = False
        return mask

    @cached_property
    def delivery_rates(self) -> DeliveryRates:
        """The rate card of :attr:`customer_services` only, zone-major (built once)."""
        services = np.flatnonzero(self.customer_services).astype(np.int64)

        def zone_major(table: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return _frozen(np.ascontiguousarray(table[services].T))

        return DeliveryRates(
            services=_frozen(services),
            offered=zone_major(self.offered),
            base_price=zone_major(self.base_price),
            per_kg=zone_major(self.per_kg),
            transit_days=zone_major(self.transit_days),
        )

    @property
    def available(self) -> IntArray:
        """Units a node can promise: on hand - safety stock - reserved, never below 0."""
        return self.available_of(slice(None))

    def available_of(self, skus: IntArray | slice) -> IntArray:
        """:attr:`available` of just the SKU columns ``skus`` (N x len(skus))."""
        available: IntArray = np.maximum(
            self.on_hand[:, skus] - self.safety_stock[:, skus] - self.reserved[:, skus], 0
        )
        return available

    def replace(self, **changes: Any) -> Network:
        """A copy with some fields replaced (e.g. ``reserved``), validated again."""
        values = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if self.__dataclass_fields__[name].init
        }
        values.update(changes)
        return Network(**values)


@dataclass(frozen=True, eq=False)
class DeliveryRates:
    """The rate card of the services that ship to customers, zone-major (Z x V').

    What deliveries are priced with: a service that never ships to a customer
    (the transfer lane) is not a column, so per-order arrays do not carry it.
    ``services`` (V') is each column's network service index.
    """

    services: IntArray
    offered: BoolArray
    base_price: IntArray
    per_kg: IntArray
    transit_days: IntArray


@dataclass(frozen=True, eq=False)
class OpportunityCosts:
    """What a unit of stock at a node is worth to the orders expected before it is replenished.

    ``values`` (len(node_ids) x len(sku_ids)): millicents per unit, added to
    the unit's cost in the single-order model when a quote is priced with
    them (:attr:`sourcing.solver.QuoteSettings.opportunity`); made by
    :mod:`sourcing.forward.fluid`. Keyed by ids, so one set serves any
    network that names the same nodes and SKUs (the replay's per-order
    views, the service's catalog); unknown ids cost nothing.
    """

    node_ids: tuple[str, ...]
    sku_ids: tuple[str, ...]
    values: IntArray
    node_index: dict[str, int] = field(init=False, repr=False)
    sku_index: dict[str, int] = field(init=False, repr=False)
    #: The last network's node ids and their rows here (-1: unknown): quotes on one
    #: catalog reuse it instead of looking every node up again.
    _rows_of: list[Any] = field(init=False, repr=False, compare=False)
    _padded: IntArray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rows_of", [None, None])
        values = np.asarray(self.values, dtype=np.int64)
        if values.shape != (len(self.node_ids), len(self.sku_ids)):
            raise ValueError(
                f"OpportunityCosts.values has shape {values.shape}, "
                f"expected {(len(self.node_ids), len(self.sku_ids))}"
            )
        if (values < 0).any():
            raise ValueError("OpportunityCosts.values must be >= 0")
        object.__setattr__(self, "values", _frozen(values))
        # One zero row and column at the end: what an unknown id (index -1) reads.
        object.__setattr__(self, "_padded", np.pad(values, ((0, 1), (0, 1))))
        object.__setattr__(self, "node_index", {k: i for i, k in enumerate(self.node_ids)})
        object.__setattr__(self, "sku_index", {k: i for i, k in enumerate(self.sku_ids)})

    def columns(self, network: Network, nodes: IntArray, skus: IntArray) -> IntArray:
        """Per unit, millicents, of ``network``'s ``nodes`` x ``skus`` (indices into it)."""
        cached_ids, cached_rows = self._rows_of
        if cached_ids is not network.node_ids:
            cached_rows = np.array(
                [self.node_index.get(n, -1) for n in network.node_ids], dtype=np.int64
            )
            self._rows_of[:] = [network.node_ids, cached_rows]
        rows = cached_rows[nodes]
        cols = np.array(
            [self.sku_index.get(network.sku_ids[k], -1) for k in skus.tolist()], dtype=np.int64
        )
        out: IntArray = self._padded[rows[:, None], cols[None, :]]
        return out


@dataclass(frozen=True)
class Location:
    lat: float
    lon: float


@dataclass(frozen=True)
class OrderLine:
    sku: str
    qty: int


@dataclass(frozen=True)
class Order:
    destination: Location
    lines: tuple[OrderLine, ...]


@dataclass(frozen=True)
class ParcelLine:
    """``qty`` units of order line ``line`` (its index in ``Order.lines``)."""

    line: int
    sku: str
    qty: int


@dataclass(frozen=True)
class ParcelPlan:
    """What an allocation says about one parcel: where, how, what.

    ``inbound_day`` set: the units are not on hand; they come from the node's
    inbound receipts due that day and leave once received.
    """

    node_id: str
    service: str
    lines: tuple[ParcelLine, ...]
    inbound_day: int | None = None


@dataclass(frozen=True)
class Allocation:
    """An allocation: the parcels of one order. The input of :func:`evaluate`.

    ``pickup`` set: click & collect at that store. Its own units are picked
    there (service :data:`PICKUP_SERVICE`), every other parcel travels to it by
    the transfer lane (:data:`TRANSFER_SERVICE`); arrival is the day the units
    are ready at the store.
    """

    parcels: tuple[ParcelPlan, ...]
    pickup: str | None = None


@dataclass(frozen=True)
class ParcelCost:
    """One parcel as evaluated by the reference rules (money in millicents)."""

    node_id: str
    service: str
    lines: tuple[ParcelLine, ...]
    zone: str
    distance_km: float
    weight_g: int
    shipping: int
    handling: int
    storage_credit: int
    arrival_days: int
    #: Set when the units wait for inbound receipts due that day (see ParcelPlan).
    inbound_day: int | None = None

    @property
    def cost(self) -> int:
        return self.shipping + self.handling - self.storage_credit


@dataclass(frozen=True)
class Shortfall:
    """Units of an order line that no option covers (only with ``allow_partial``)."""

    line: int
    sku: str
    requested: int
    covered: int

    @property
    def missing(self) -> int:
        return self.requested - self.covered


@dataclass(frozen=True)
class Evaluation:
    """An allocation priced and checked by the reference rules of DESIGN section 7."""

    parcels: tuple[ParcelCost, ...]
    violations: tuple[str, ...]
    shortfall: tuple[Shortfall, ...]
    #: The pickup store of a click & collect allocation; None for delivery.
    pickup: str | None = None

    @property
    def is_feasible(self) -> bool:
        return not self.violations

    @property
    def shipping(self) -> int:
        return sum(p.shipping for p in self.parcels)

    @property
    def handling(self) -> int:
        return sum(p.handling for p in self.parcels)

    @property
    def storage_credit(self) -> int:
        return sum(p.storage_credit for p in self.parcels)

    @property
    def cost(self) -> int:
        """Allocation cost in millicents: parcel costs minus storage credits."""
        return sum(p.cost for p in self.parcels)

    @property
    def delivery_days(self) -> int:
        """The latest parcel arrival; 0 for an empty allocation."""
        return max((p.arrival_days for p in self.parcels), default=0)

    @property
    def num_parcels(self) -> int:
        return len(self.parcels)


class Label(StrEnum):
    CHEAPEST = "CHEAPEST"
    FASTEST = "FASTEST"
    SINGLE_PARCEL = "SINGLE_PARCEL"
    BALANCED = "BALANCED"
    #: Click & collect at a store: per store, least ``cost + value_of_day * ready day``.
    COLLECT = "COLLECT"


@dataclass(frozen=True)
class Proof:
    """How an option's cost is known to be optimal (or how far it may be off).

    ``status`` is ``OPTIMAL`` or ``FEASIBLE`` (then ``gap`` is the relative
    distance to the best proven bound) or ``HEURISTIC`` for baseline policies,
    which make no optimality claim. ``method`` says what proved it: the numpy
    bound-and-enumerate pass, CP-SAT, or the search per parcel count of large
    carts (``parcel counts``, :mod:`sourcing.solver.large`).
    """

    status: str
    gap: float
    method: str


@dataclass(frozen=True)
class Option:
    """One menu entry: an evaluated allocation, its labels and its proof."""

    labels: tuple[Label, ...]
    evaluation: Evaluation
    proof: Proof
    #: Millicents: the opportunity cost of the units it takes (0 unless the quote was priced
    #: with :class:`OpportunityCosts`). Never part of :attr:`cost`, the reference cost.
    opportunity: int = 0

    @property
    def cost(self) -> int:
        return self.evaluation.cost

    @property
    def priced_cost(self) -> int:
        """What the menu was chosen by: the reference cost plus the opportunity cost."""
        return self.evaluation.cost + self.opportunity

    @property
    def delivery_days(self) -> int:
        return self.evaluation.delivery_days

    @property
    def num_parcels(self) -> int:
        return self.evaluation.num_parcels

    @property
    def pickup(self) -> str | None:
        """The store a COLLECT option is collected at; None for delivery."""
        return self.evaluation.pickup

    @property
    def waiting(self) -> tuple[ParcelCost, ...]:
        """The parcels whose units wait for inbound receipts (backorder)."""
        return tuple(p for p in self.evaluation.parcels if p.inbound_day is not None)

    @property
    def allocation(self) -> Allocation:
        return Allocation(
            tuple(
                ParcelPlan(p.node_id, p.service, p.lines, p.inbound_day)
                for p in self.evaluation.parcels
            ),
            self.evaluation.pickup,
        )


@dataclass(frozen=True)
class QuoteSettings:
    """Knobs of one quote.

    ``value_of_day`` (millicents per day of delivery) prices time for
    BALANCED; ``max_parcels`` and ``latest_day`` cap every option;
    ``time_limit_s`` is the whole quote's solver budget (a timed-out
    sub-problem returns its best plan with the gap); ``num_workers`` is
    CP-SAT's thread count, set explicitly (DESIGN section 8).
    ``work_limit`` (what-if replays) replaces the wall clock by a budget of
    work, so the quote depends on its input alone, not on how busy the
    machine is: no deadline (``time_limit_s`` is ignored), the solver stages
    stop after ``work_limit`` of their checkpoints (the polls of
    ``should_stop``), each CP-SAT call after ``time_limit_s`` of CP-SAT's
    deterministic time. None (the service's default) keeps the deadline:
    checkout callers have latency budgets.
    ``full_frontier`` asks for every Pareto point over (cost, day, parcels)
    (planners); by default only the sub-problems the four labels need are
    solved (checkout), and ``Quote.frontier`` holds the non-dominated plans
    among those.

    More ways to fulfil (:mod:`sourcing.fulfil`, composed by
    :mod:`sourcing.menu`): ``pickup_stores`` (store node ids) and
    ``nearest_stores`` (that many stores nearest the destination) add a
    COLLECT option per store; ``allow_backorder`` lets the units short now
    wait for inbound receipts. All off by default: the quote is then exactly
    the plain delivery menu.
    """

    value_of_day: int = 100_000
    allow_partial: bool = False
    max_parcels: int | None = None
    latest_day: int | None = None
    time_limit_s: float = 2.0
    num_workers: int = 1
    full_frontier: bool = False
    work_limit: int | None = None
    #: Polled between solver stages; returning True ends the quote early, as
    #: if its time were up (the service sets it when the caller goes away).
    should_stop: Callable[[], bool] | None = field(default=None, compare=False)
    pickup_stores: tuple[str, ...] = ()
    nearest_stores: int = 0
    allow_backorder: bool = False
    #: Forward-looking prices (:mod:`sourcing.forward`): each unit's opportunity cost is added
    #: to its cost, so the menu is exact for the priced cost (``Option.priced_cost``); every
    #: option still reports its reference cost, the opportunity cost as its own line. Applies
    #: to delivery from stock; click & collect and backorder legs are priced without it.
    opportunity: OpportunityCosts | None = field(default=None, compare=False)

    @property
    def wall_budget_s(self) -> float:
        """The quote's wall-clock budget: ``time_limit_s``, or none under a ``work_limit``."""
        return math.inf if self.work_limit is not None else self.time_limit_s


@dataclass(frozen=True)
class QuoteStats:
    """What a quote cost the solver: sub-problems solved, closed by a bound, CP-SAT calls, time.

    ``resplits``: parcel sets whose cheapest-first split broke a node's capacity,
    re-split exactly by a min-cost flow during enumeration.
    """

    subproblems: int
    closed_by_bound: int
    cpsat_calls: int
    seconds: float
    resplits: int = 0
    #: Sub-problems cut short by the time limit, as (delivery day, parcel cap, lower
    #: bound on their cost): a plan they hide may beat an option built on this quote.
    cut_short: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class Quote:
    """The menu (labelled options), the frontier they were chosen from, and any shortfall.

    ``frontier`` holds every non-dominated plan the quote solved, labelled or
    not (all of them with ``QuoteSettings.full_frontier``); ``options`` is its
    labelled part.
    """

    options: tuple[Option, ...]
    frontier: tuple[Option, ...]
    shortfall: tuple[Shortfall, ...]
    stats: QuoteStats

    def option(self, label: Label) -> Option | None:
        return next((o for o in self.options if label in o.labels), None)
