"""What-if scenarios: a TOML file naming a network, an order stream, edits and policies.

Format (every key optional unless marked; unknown keys are an error)::

    [scenario]
    name = "us_demo"                 # default: the file's stem
    description = "..."

    [network]                        # one of:
    demo = true                      #   the built-in demo network (sourcing.demo)
    seed = 7                         #   ... with this seed (default 7)
    path = "nets/east"               #   a planner CSV folder (DESIGN section 7)
    horizon_days = 30                # storage-credit horizon (CSV folders only)

    [orders]                         # one of:
    csv = "orders.csv"               #   DESIGN's orders.csv (one row per line)
    generate = true                  #   the generator (GeneratedOrders)
    count = 10000                    #   ... orders
    seed = 1
    start = 2024-03-04T00:00:00      #   first order time (TOML datetime/date or ISO text)
    per_day = 600.0                  #   mean orders per day (default: see GeneratedOrders)
    line_weights = [55, 25, 10, 6, 4]   # relative frequency of 1, 2, 3... lines
    qty_weights = [80, 15, 5]           # relative frequency of qty 1, 2, 3...

    [olist]                          # instead of [network] and [orders]: sourcing.whatif.olist
    data_dir = "../../../shared/data/olist"   # required
    year = 2017
    holdout_from = 2017-10-01        # the rate card is fitted on orders before this date

    [replenishment]
    top_up_every_days = 7            # back to the starting on_hand every 7 days
    receipts = "receipts.csv"        # at,node_id,sku,qty

    [policies]
    run = ["greedy_nearest", "optimiser_cheapest"]   # default: every built-in one
    time_limit_s = 1.0               # the optimiser's budget per order (of work, not wall time)
    value_of_day = 1.00              # BALANCED's price of a day, currency units
    max_parcels = 3
    priority = ["DC-MEM", "DC-ATL"]  # for priority_list

    [forward]                        # optimiser_forward's prices (sourcing.forward)
    dual_weight = 1.0                # share of each dual value charged
    samples = 3                      # Poisson demand samples whose duals are averaged
    reprice_every_orders = 250       # re-solve the fluid LP this often ...
    reprice_every_hours = 6          # ... or after this much order time
    horizon_days = 7                 # without top-ups: how far ahead to price
    min_history_orders = 50
    regions = 40
    arcs_per_region = 12
    ration_at = 0.98
    priced_batch = true              # optimiser_forward_batch's batch adds the prices too
    batch_prices = "scheduled"       # its prices; or "fluid", "sampled" (forward.pricer)

    [bound]                          # the perfect-hindsight bound per variant
    enabled = true
    max_rounds = 40
    tolerance = 0.0002
    time_limit_s = 1800              # per period
    mip_time_limit_s = 60            # the clairvoyant plan (0: none)

    [sweep]                          # every variant once per value (a Pareto plot)
    parameter = "value_of_day"       # or "dual_weight", "storage_cost_factor"
    values = [0.5, 1.0, 2.0, 4.0]

    [[variants]]                     # default: one variant "base" without edits
    name = "close-chicago"
    edits = [{ type = "close_node", node = "DC-ORD", transfer_to = "DC-IND" }]

Relative paths are resolved against the scenario file's folder. Edits
(``type`` = ``add_node``, ``close_node``, ``scale_rates``,
``set_storage_cost``, ``set_capacity``, ``pool_stock``, ``set_cover``) are the frozen
dataclasses of :mod:`sourcing.whatif.edits`; orders and receipts are read by
:mod:`sourcing.whatif.inputs`, and the file's tables through the typed getters of
:mod:`sourcing.whatif.toml_reading`. This module holds the scenario itself: the
file's sections as dataclasses, reading them, and preparing and running
its variants x policies. Money in the file is in currency units with at most five
decimals. Every error names the file, the key (``variants[1].edits[0].node``)
or CSV row and column, and the reason (:class:`ScenarioError`).

Every variant replays the same orders (generated once, from the unedited
network) through every policy.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sourcing.errors import NetworkDataError
from sourcing.forward.fluid import FluidSettings
from sourcing.forward.hindsight import HindsightBound, HindsightSettings, hindsight_bound
from sourcing.forward.pricer import BATCH_PRICES, ForwardSettings
from sourcing.loader import read_network
from sourcing.model import MILLICENTS_PER_UNIT, Network, NodeKind
from sourcing.whatif.edits import (
    AddNode,
    CloseNode,
    Edit,
    EditError,
    NodeSelector,
    PoolStock,
    ScaleRates,
    SetCapacity,
    SetCover,
    SetStorageCost,
)
from sourcing.whatif.inputs import (
    CsvOrders,
    GeneratedOrders,
    ScenarioError,
    generate_orders,
    read_orders,
    read_receipts,
)
from sourcing.whatif.simulate import (
    DEFAULT_SIM_SETTINGS,
    POLICY_FACTORIES,
    Policy,
    PolicyOptions,
    Receipt,
    Replenishment,
    SimOrder,
    SimulationResult,
    make_policy,
)
from sourcing.whatif.toml_reading import Section

if TYPE_CHECKING:
    from sourcing.whatif.sweep import ReplayTask

__all__ = [
    "NetworkSource",
    "OlistSource",
    "PreparedScenario",
    "Run",
    "Scenario",
    "Sweep",
    "Variant",
    "WhatIf",
    "load_scenario",
    "prepare_scenario",
]


# --------------------------------------------------------------------- sources


@dataclass(frozen=True)
class NetworkSource:
    """A planner CSV folder (``path``) or the demo network (``demo_seed``)."""

    path: Path | None = None
    demo_seed: int | None = None
    horizon_days: float | None = None

    def load(self, file: str) -> Network:
        if self.path is None:
            from sourcing.demo import demo_network

            return demo_network(7 if self.demo_seed is None else self.demo_seed)
        if not self.path.is_dir():
            raise ScenarioError(
                file, f"network folder {str(self.path)!r} not found", key="network.path"
            )
        try:
            if self.horizon_days is None:
                return read_network(self.path)
            return read_network(self.path, horizon_days=self.horizon_days)
        except NetworkDataError as exc:
            raise ScenarioError(
                str(self.path / exc.file), exc.reason, row=exc.row, column=exc.column
            ) from None

    def describe(self) -> str:
        if self.path is None:
            return f"demo network (seed {7 if self.demo_seed is None else self.demo_seed})"
        return f"planner CSV folder {self.path}"


@dataclass(frozen=True)
class OlistSource:
    """The Olist real-data network and orders (:mod:`sourcing.whatif.olist`)."""

    data_dir: Path
    year: int = 2017
    holdout_from: date = date(2017, 10, 1)


@dataclass(frozen=True)
class Variant:
    """A named list of edits applied, in order, to the base network."""

    name: str
    edits: tuple[Edit, ...] = ()
    description: str = ""
    #: The TOML key of each edit, for error messages.
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario file (see the module doc)."""

    file: Path
    name: str
    description: str
    network: NetworkSource | None
    orders: CsvOrders | GeneratedOrders | None
    olist: OlistSource | None
    top_up_every_days: float | None
    receipts: Path | None
    variants: tuple[Variant, ...]
    policies: tuple[str, ...]
    options: PolicyOptions
    #: The perfect-hindsight bound per variant ([bound]); None: not computed.
    bound: HindsightSettings | None = None
    sweep: Sweep | None = None


#: What a [sweep] may vary: a policy setting or a network edit, per point.
SWEEP_PARAMETERS: Final = ("value_of_day", "dual_weight", "storage_cost_factor")


@dataclass(frozen=True)
class Sweep:
    """Every variant replayed once per value of ``parameter`` (a cost-versus-days curve).

    ``value_of_day`` (currency units per day: BALANCED's price of time),
    ``dual_weight`` (the share of the fluid LP's duals optimiser_forward
    charges) or ``storage_cost_factor`` (every node's storage cost scaled).
    Each point is a variant named ``"<variant> <parameter>=<value>"``.
    """

    parameter: str
    values: tuple[float, ...]

    def label(self, variant: str, value: float) -> str:
        return f"{variant} {self.parameter}={value:g}"


def _selector(section: Section) -> NodeSelector:
    node = section.text("node", None)
    kind = section.text("kind", None)
    if node is not None and kind is not None:
        raise section.error("kind", "give node or kind, not both")
    if kind is not None:
        try:
            return NodeSelector(kind=NodeKind(kind.lower()))
        except ValueError:
            raise section.error("kind", f"must be 'dc' or 'store', got {kind!r}") from None
    return NodeSelector(node=node)


def _edit(section: Section) -> Edit:
    kind = section.text("type")
    if kind == "add_node":
        section.allow(
            "type", "node", "kind", "lat", "lon", "handling_days", "handling_cost",
            "storage_cost", "capacity", "stock_from", "stock_share", "move_stock",
        )  # fmt: skip
        node_kind = section.text("kind", "dc").lower()
        if node_kind not in {k.value for k in NodeKind}:
            raise section.error("kind", f"must be 'dc' or 'store', got {node_kind!r}")
        share = section.number("stock_share", 1.0)
        if share > 1:
            raise section.error("stock_share", f"must be within [0, 1], got {share}")
        return AddNode(
            node_id=section.text("node"),
            kind=NodeKind(node_kind),
            lat=section.degrees("lat", 90.0),
            lon=section.degrees("lon", 180.0),
            handling_days=section.integer("handling_days", 1),
            handling_cost=section.money("handling_cost", 0),
            storage_cost=section.money("storage_cost", 0),
            capacity=section.integer("capacity", None),
            stock_from=section.text("stock_from", None),
            stock_share=share,
            move_stock=section.boolean("move_stock", False),
        )
    if kind == "close_node":
        section.allow("type", "node", "transfer_to")
        return CloseNode(section.text("node"), section.text("transfer_to", None))
    if kind == "scale_rates":
        section.allow("type", "factor", "service", "zone")
        return ScaleRates(
            section.number("factor"), section.text("service", None), section.text("zone", None)
        )
    if kind == "set_storage_cost":
        section.allow("type", "node", "kind", "cost", "factor")
        if section.has("cost") == section.has("factor"):
            raise section.error(None, "give exactly one of cost and factor")
        return SetStorageCost(
            _selector(section), section.money("cost", None), section.number("factor", None)
        )
    if kind == "set_capacity":
        section.allow("type", "node", "kind", "units", "unlimited")
        unlimited = section.boolean("unlimited", False)
        if unlimited == section.has("units"):
            raise section.error(None, "give exactly one of units and unlimited = true")
        return SetCapacity(_selector(section), None if unlimited else section.integer("units"))
    if kind == "pool_stock":
        section.allow("type")
        return PoolStock()
    if kind == "set_cover":
        section.allow("type", "days", "node", "kind")
        return SetCover(section.number("days"), _selector(section))
    raise section.error(
        "type",
        f"unknown edit {kind!r} (expected add_node, close_node, scale_rates, "
        "set_storage_cost, set_capacity, pool_stock or set_cover)",
    )


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Parse a scenario file; raises :class:`ScenarioError` naming the key and reason."""
    file = Path(path)
    name = str(file)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(name, "file not found") from None
    except IsADirectoryError:
        raise ScenarioError(name, "is a directory, not a scenario file") from None
    except UnicodeDecodeError:
        raise ScenarioError(name, "not valid UTF-8 text") from None
    except OSError as exc:
        raise ScenarioError(name, f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(name, f"invalid TOML: {exc}") from None
    root = Section(name, file.resolve().parent, "", data)
    root.allow(
        "scenario",
        "network",
        "orders",
        "olist",
        "replenishment",
        "policies",
        "variants",
        "forward",
        "bound",
        "sweep",
    )

    head = root.table("scenario") or Section(name, root.base, "scenario", {})
    head.allow("name", "description")

    olist = None
    network = None
    orders: CsvOrders | GeneratedOrders | None = None
    olist_section = root.table("olist")
    if olist_section is not None:
        for other in ("network", "orders"):
            if root.has(other):
                raise root.error(
                    other, "a scenario with [olist] takes its network and orders from it"
                )
        olist_section.allow("data_dir", "year", "holdout_from")
        olist = OlistSource(
            data_dir=olist_section.path_value("data_dir"),
            year=olist_section.integer("year", 2017, minimum=1900),
            holdout_from=olist_section.day("holdout_from", date(2017, 10, 1)),
        )
    else:
        net = root.table("network")
        if net is None:
            raise root.error("network", "required table is missing ([network] or [olist])")
        net.allow("demo", "seed", "path", "horizon_days")
        if net.boolean("demo", False) == net.has("path"):
            raise net.error(None, "give exactly one of demo = true and path")
        network = NetworkSource(
            path=net.path_value("path", None),
            demo_seed=net.integer("seed", None),
            horizon_days=net.number("horizon_days", None, positive=True),
        )
        src = root.table("orders")
        if src is None:
            raise root.error("orders", "required table is missing")
        if src.boolean("generate", False) == src.has("csv"):
            raise src.error(None, "give exactly one of csv and generate = true")
        if src.has("csv"):
            src.allow("csv")
            orders = CsvOrders(src.path_value("csv"))
        else:
            src.allow(
                "generate", "count", "seed", "start", "per_day", "line_weights", "qty_weights"
            )
            orders = GeneratedOrders(
                count=src.integer("count", minimum=1),
                seed=src.integer("seed", 1),
                start=src.moment("start", GeneratedOrders.start),
                per_day=src.number("per_day", None, positive=True),
                line_weights=src.weights("line_weights", GeneratedOrders.line_weights),
                qty_weights=src.weights("qty_weights", GeneratedOrders.qty_weights),
            )

    rep = root.table("replenishment") or Section(name, root.base, "replenishment", {})
    rep.allow("top_up_every_days", "receipts")

    pol = root.table("policies") or Section(name, root.base, "policies", {})
    pol.allow("run", "time_limit_s", "value_of_day", "max_parcels", "priority")
    known = (*POLICY_FACTORIES, "historical")
    default_run = (*POLICY_FACTORIES, "historical") if olist else tuple(POLICY_FACTORIES)
    policies = pol.strings("run", default_run)
    for p in policies:
        if p not in known:
            raise pol.error("run", f"unknown policy {p!r} (known: {', '.join(known)})")
        if p == "historical" and olist is None:
            raise pol.error("run", "policy 'historical' needs an [olist] scenario")
    settings = DEFAULT_SIM_SETTINGS
    value_of_day = pol.money("value_of_day", None)
    settings = replace(
        settings,
        time_limit_s=pol.number("time_limit_s", settings.time_limit_s, positive=True),
        max_parcels=pol.integer("max_parcels", None, minimum=1),
        value_of_day=settings.value_of_day if value_of_day is None else value_of_day,
    )
    options = PolicyOptions(
        settings=settings, priority=pol.strings("priority", None), forward=_forward(root)
    )

    variants: list[Variant] = []
    for section in root.tables("variants"):
        section.allow("name", "description", "edits")
        edit_sections = section.tables("edits")
        variants.append(
            Variant(
                name=section.text("name"),
                description=section.text("description", ""),
                edits=tuple(_edit(e) for e in edit_sections),
                keys=tuple(e.path for e in edit_sections),
            )
        )
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise root.error("variants", "two variants share a name")
    return Scenario(
        file=file,
        name=head.text("name", file.stem),
        description=head.text("description", ""),
        network=network,
        orders=orders,
        olist=olist,
        top_up_every_days=rep.number("top_up_every_days", None, positive=True),
        receipts=rep.path_value("receipts", None),
        variants=tuple(variants) or (Variant("base"),),
        policies=policies,
        options=options,
        bound=_bound(root),
        sweep=_sweep(root),
    )


def _forward(root: Section) -> ForwardSettings:
    """The [forward] table: optimiser_forward's prices."""
    fwd = root.table("forward") or Section(root.file, root.base, "forward", {})
    fwd.allow(
        "dual_weight", "reprice_every_orders", "reprice_every_hours", "horizon_days",
        "min_history_orders", "regions", "arcs_per_region", "ration_at", "samples",
        "priced_batch", "batch_prices",
    )  # fmt: skip
    defaults, fluid = ForwardSettings(), FluidSettings()
    return ForwardSettings(
        dual_weight=fwd.number("dual_weight", defaults.dual_weight),
        reprice_every_orders=fwd.integer("reprice_every_orders", defaults.reprice_every_orders, 1),
        reprice_every_hours=fwd.number(
            "reprice_every_hours", defaults.reprice_every_hours, positive=True
        ),
        horizon_days=fwd.number("horizon_days", defaults.horizon_days, positive=True),
        min_history_orders=fwd.integer("min_history_orders", defaults.min_history_orders),
        priced_batch=fwd.boolean("priced_batch", defaults.priced_batch),
        batch_prices=fwd.choice("batch_prices", BATCH_PRICES, defaults.batch_prices),
        fluid=replace(
            fluid,
            regions=fwd.integer("regions", fluid.regions, 1),
            arcs_per_region=fwd.integer("arcs_per_region", fluid.arcs_per_region, 1),
            ration_at=fwd.number("ration_at", fluid.ration_at, positive=True),
            samples=fwd.integer("samples", fluid.samples),
        ),
    )


def _bound(root: Section) -> HindsightSettings | None:
    """The [bound] table: the perfect-hindsight bound per variant (None: no table)."""
    bnd = root.table("bound")
    if bnd is None:
        return None
    bnd.allow("enabled", "max_rounds", "tolerance", "time_limit_s", "mip_time_limit_s")
    hs = HindsightSettings()
    if not bnd.boolean("enabled", True):
        return None
    return HindsightSettings(
        max_rounds=bnd.integer("max_rounds", hs.max_rounds, 1),
        tolerance=bnd.number("tolerance", hs.tolerance),
        time_limit_s=bnd.number("time_limit_s", hs.time_limit_s, positive=True),
        mip_time_limit_s=bnd.number("mip_time_limit_s", hs.mip_time_limit_s),
    )


def _sweep(root: Section) -> Sweep | None:
    """The [sweep] table: one parameter over a list of values (None: no table)."""
    swp = root.table("sweep")
    if swp is None:
        return None
    swp.allow("parameter", "values")
    parameter = swp.choice("parameter", SWEEP_PARAMETERS)
    values = swp.data.get("values")
    if (
        not isinstance(values, list)
        or not values
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in values
        )
    ):
        raise swp.error("values", "must be a non-empty list of numbers >= 0")
    return Sweep(parameter, tuple(float(v) for v in values))


# ---------------------------------------------------------------------- running


#: Relative replay time by policy, so that a Dask sweep starts the longest
#: first (only the order matters; a policy not named here counts as the
#: optimiser). On ``us_demo`` at 10,000 orders a rule policy's replay took
#: about 2.7 s of CPU and an optimiser's about 5.5 s; the batch and forward
#: policies add their periodic solves on top of the optimiser's.
REPLAY_WEIGHTS: Final[Mapping[str, float]] = {
    "greedy_nearest": 1.0,
    "priority_list": 1.0,
    "ship_complete_first": 1.0,
    "historical": 1.0,
    "optimiser_cheapest": 2.0,
    "optimiser_fastest": 2.0,
    "optimiser_balanced": 2.0,
    "optimiser_batch": 3.0,
    "optimiser_forward": 3.0,
    "optimiser_forward_batch": 4.0,
}


def _by_variant(
    orders_csv: Callable[[str, SimulationResult], bytes] | None,
    task: ReplayTask,
    result: SimulationResult,
) -> bytes | None:
    """``orders_csv`` of a replay's variant and result, if given (picklable with a partial)."""
    return orders_csv(task.key[0], result) if orders_csv is not None else None


def _joined_members(members: Sequence[bytes | None]) -> bytes | None:
    """A replay's gzip members (one per piece it ran in on Dask) as one multi-member file."""
    present = [member for member in members if member is not None]
    return b"".join(present) if len(present) == len(members) else None


@dataclass(frozen=True)
class Run:
    """One (variant, policy) replay.

    ``orders_csv_gz``: its rows of the report's per-order file, made where the
    replay ran when :meth:`PreparedScenario.run` was given ``orders_csv``
    (else None: the report makes them); a gzip member per piece of the stream
    the replay ran as (on Dask, :mod:`sourcing.whatif.sweep`), whose text is
    the rows in order.
    """

    variant: str
    result: SimulationResult
    orders_csv_gz: bytes | None = None


@dataclass(frozen=True)
class WhatIf:
    """Every run of a scenario, plus what the report needs to explain them."""

    scenario: Scenario
    runs: tuple[Run, ...]
    orders: int
    network: str
    #: Extra sections for the report (e.g. ``rate_fit`` of the Olist scenario).
    extras: Mapping[str, Any] = field(default_factory=dict)
    #: The perfect-hindsight bound per variant name (with a [bound] table).
    bounds: Mapping[str, HindsightBound] = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedScenario:
    """A scenario with its networks and orders built: ready to :meth:`run`.

    ``variant_policies`` overrides ``policies`` for a variant (sweep points
    of a policy setting); ``sweep_points`` maps each sweep variant to its
    base variant and value.
    """

    scenario: Scenario
    networks: tuple[tuple[Variant, Network], ...]
    orders: tuple[SimOrder, ...]
    policies: tuple[tuple[str, Callable[[], Policy]], ...]
    replenishment: Replenishment | None
    network_text: str
    extras: Mapping[str, Any]
    variant_policies: Mapping[str, tuple[tuple[str, Callable[[], Policy]], ...]] = field(
        default_factory=dict
    )
    sweep_points: Mapping[str, tuple[str, float]] = field(default_factory=dict)

    def policies_of(self, variant: str) -> tuple[tuple[str, Callable[[], Policy]], ...]:
        return self.variant_policies.get(variant, self.policies)

    @property
    def bound_orders(self) -> int:
        """Orders the bound works through: one pass per distinct network (0: no bound)."""
        if self.scenario.bound is None:
            return 0
        return len({id(n) for _, n in self.networks}) * len(self.orders)

    @property
    def decisions(self) -> int:
        """Orders to decide in all: variants x policies x orders (for a progress bar)."""
        runs = sum(len(self.policies_of(v.name)) for v, _ in self.networks)
        return runs * len(self.orders)

    def run(
        self,
        progress: Callable[[int], object] | None = None,
        client: Any | None = None,
        bound_progress: Callable[[int], object] | None = None,
        orders_csv: Callable[[str, SimulationResult], bytes] | None = None,
    ) -> WhatIf:
        """Every (variant, policy) replay, and the bounds the scenario asks for.

        ``orders_csv(variant, result)`` (the report's
        :func:`~sourcing.whatif.report.orders_csv_gz`) runs right after each
        replay, where it ran (on Dask: on the worker, while the other replays
        run), and is kept in :attr:`Run.orders_csv_gz`.

        On ``client`` (Dask) the replays are tasks (:mod:`sourcing.whatif.sweep`: the
        same tables as the serial run, in the same order) and so are the
        bound's periods. The bound is computed once per network (sweep points
        of a policy setting share their variant's).
        """
        from sourcing.batch import DaskRunner
        from sourcing.whatif.sweep import ReplayTask, run_replays_with

        pairs = [(v, n, name, f) for v, n in self.networks for name, f in self.policies_of(v.name)]
        tasks = [
            ReplayTask(
                i,
                (variant.name, name),
                network,
                factory,
                self.replenishment,
                REPLAY_WEIGHTS.get(name, REPLAY_WEIGHTS["optimiser_cheapest"]),
            )
            for i, (variant, network, name, factory) in enumerate(pairs)
        ]
        finish = functools.partial(_by_variant, orders_csv)
        runs = tuple(
            Run(task.key[0], result, _joined_members(members))
            for task, (result, members) in zip(
                tasks, run_replays_with(tasks, self.orders, finish, client, progress), strict=True
            )
        )
        bounds: dict[str, HindsightBound] = {}
        settings = self.scenario.bound
        if settings is not None:
            top_up = self.replenishment.top_up_every_days if self.replenishment else None
            if self.replenishment is not None and self.replenishment.receipts:
                raise ScenarioError(
                    str(self.scenario.file),
                    "the perfect-hindsight bound supports top-ups only, not receipts",
                    key="bound",
                )
            by_network: dict[int, HindsightBound] = {}
            runner = DaskRunner(client) if client is not None else None
            for variant, network in self.networks:
                if id(network) not in by_network:
                    by_network[id(network)] = hindsight_bound(
                        network, self.orders, top_up, settings, runner, bound_progress
                    )
                bounds[variant.name] = by_network[id(network)]
        extras = dict(self.extras)
        if self.sweep_points:
            sweep = self.scenario.sweep
            extras["sweep"] = {
                "parameter": sweep.parameter if sweep else "",
                "points": {k: list(v) for k, v in self.sweep_points.items()},
            }
        return WhatIf(self.scenario, runs, len(self.orders), self.network_text, extras, bounds)


def prepare_scenario(
    scenario: Scenario,
    *,
    max_orders: int | None = None,
    policies: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    seed: int | None = None,
    time_limit_s: float | None = None,
    data_dir: Path | None = None,
) -> PreparedScenario:
    """Load the network and orders, apply each variant's edits, pick the policies.

    Overrides: ``max_orders`` (the generator's count, or the first N orders
    in time order of a CSV/Olist stream), ``policies`` and ``variants`` (by
    name, a subset), ``seed`` (the generator's), ``time_limit_s`` (the
    optimiser's per order) and ``data_dir`` (the Olist folder).
    """
    file = str(scenario.file)
    extras: dict[str, Any] = {}
    history: Mapping[str, tuple[str, ...]] = {}
    if scenario.olist is not None:
        from sourcing.whatif.olist import load_olist

        src = scenario.olist
        folder = data_dir if data_dir is not None else src.data_dir
        if not folder.is_dir():
            if data_dir is not None:
                raise ScenarioError(str(folder), "Olist data folder not found")
            raise ScenarioError(
                file,
                f"Olist data folder {str(folder)!r} not found (give it with --data-dir)",
                key="olist.data_dir",
            )
        try:
            data = load_olist(
                folder, year=src.year, holdout_from=src.holdout_from, max_orders=max_orders
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ScenarioError(str(folder), f"cannot load the Olist data: {exc}") from None
        base, stream, history = data.network, list(data.orders), data.history
        extras["rate_fit"] = data.fit.as_dict()
        extras["olist"] = data.summary
        network_text = (
            f"Olist {src.year}: {len(base.node_ids)} sellers as nodes, {len(base.sku_ids)} "
            f"products; rate card fitted on orders before {src.holdout_from}"
        )
    else:
        assert scenario.network is not None and scenario.orders is not None
        base = scenario.network.load(file)
        network_text = scenario.network.describe()
        source = scenario.orders
        if isinstance(source, CsvOrders):
            stream = read_orders(source.path, base.sku_ids)
            stream.sort(key=lambda o: o.created_at)
            if max_orders is not None:
                stream = stream[:max_orders]
        else:
            spec = replace(
                source,
                count=max_orders if max_orders is not None else source.count,
                seed=seed if seed is not None else source.seed,
            )
            try:
                stream = generate_orders(base, spec)
            except ValueError as exc:
                raise ScenarioError(file, str(exc), key="orders") from None

    receipts: tuple[Receipt, ...] = ()
    if scenario.receipts is not None:
        receipts = read_receipts(scenario.receipts, base)
    replenishment = (
        Replenishment(receipts, scenario.top_up_every_days)
        if receipts or scenario.top_up_every_days is not None
        else None
    )

    chosen_variants = list(scenario.variants)
    if variants is not None:
        by_name = {v.name: v for v in scenario.variants}
        unknown = [v for v in variants if v not in by_name]
        if unknown:
            raise ScenarioError(
                file, f"unknown variant {unknown[0]!r} (known: {', '.join(by_name)})"
            )
        chosen_variants = [by_name[v] for v in variants]
    networks = []
    for variant in chosen_variants:
        network = base
        for edit, key in zip(
            variant.edits, variant.keys or ("",) * len(variant.edits), strict=True
        ):
            try:
                network = edit.apply(network)
            except (EditError, ValueError) as exc:
                raise ScenarioError(file, str(exc), key=key or f"variant {variant.name}") from None
        networks.append((variant, network))

    options = replace(scenario.options, top_up_every_days=scenario.top_up_every_days)
    if time_limit_s is not None:
        options = replace(options, settings=replace(options.settings, time_limit_s=time_limit_s))
    names = list(scenario.policies if policies is None else policies)
    chosen: list[tuple[str, Callable[[], Policy]]] = []
    for name in names:
        if name == "historical":
            if scenario.olist is None:
                raise ScenarioError(file, "policy 'historical' needs an [olist] scenario")
            from sourcing.whatif.olist import HistoricalPolicy

            chosen.append((name, lambda: HistoricalPolicy(history)))
        elif name in POLICY_FACTORIES:
            chosen.append((name, functools.partial(make_policy, name, options)))
        else:
            known = ", ".join((*POLICY_FACTORIES, "historical"))
            raise ScenarioError(file, f"unknown policy {name!r} (known: {known})")
    if options.priority is not None:
        unknown_nodes = [n for n in options.priority if n not in base.node_index]
        if unknown_nodes:
            raise ScenarioError(file, f"unknown node {unknown_nodes[0]!r}", key="policies.priority")
    networks, variant_policies, sweep_points = _expand_sweep(
        scenario.sweep, networks, options, chosen
    )
    return PreparedScenario(
        scenario=scenario,
        networks=tuple(networks),
        orders=tuple(stream),
        policies=tuple(chosen),
        replenishment=replenishment,
        network_text=network_text,
        extras=extras,
        variant_policies=variant_policies,
        sweep_points=sweep_points,
    )


def _expand_sweep(
    sweep: Sweep | None,
    networks: list[tuple[Variant, Network]],
    options: PolicyOptions,
    chosen: list[tuple[str, Callable[[], Policy]]],
) -> tuple[
    list[tuple[Variant, Network]],
    dict[str, tuple[tuple[str, Callable[[], Policy]], ...]],
    dict[str, tuple[str, float]],
]:
    """One variant per (variant, sweep value): its network, its policies and its point."""
    variant_policies: dict[str, tuple[tuple[str, Callable[[], Policy]], ...]] = {}
    sweep_points: dict[str, tuple[str, float]] = {}
    if sweep is None:
        return networks, variant_policies, sweep_points
    expanded = []
    for variant, network in networks:
        for value in sweep.values:
            name = sweep.label(variant.name, value)
            point = replace(variant, name=name)
            sweep_points[name] = (variant.name, value)
            if sweep.parameter == "storage_cost_factor":
                expanded.append((point, SetStorageCost(factor=value).apply(network)))
                continue
            expanded.append((point, network))
            if sweep.parameter == "value_of_day":
                changed = replace(
                    options,
                    settings=replace(
                        options.settings, value_of_day=round(value * MILLICENTS_PER_UNIT)
                    ),
                )
            else:
                changed = replace(options, forward=replace(options.forward, dual_weight=value))
            variant_policies[name] = tuple(
                (n, functools.partial(make_policy, n, changed) if n in POLICY_FACTORIES else f)
                for n, f in chosen
            )
    return expanded, variant_policies, sweep_points
