"""The ``sourcing`` command line: quotes from planner CSV folders, and the demo network.

Commands::

    sourcing quote NETWORK_DIR ORDER.json [options]   # options for one cart, as JSON
    sourcing quote --demo ORDER.json [options]        # the same on the demo network
    sourcing demo-network OUT_DIR [--seed N]          # write the demo network as CSVs
    sourcing whatif SCENARIO.toml [options]           # replay orders: KPI tables, plots, HTML

``ORDER.json`` may be ``-`` to read the order from standard input. The quote
is printed on standard output (JSON, indent 2; see :mod:`sourcing.report`).

``whatif`` runs a scenario file (:mod:`sourcing.whatif.scenario`) through every
variant and policy with a progress bar on standard error, prints the KPI
table on standard output and writes CSV, JSON, PNG and HTML outputs
(:mod:`sourcing.whatif.report`) into ``--out`` (default
``whatif-results/<scenario name>``).

Any bad input (a missing or malformed network folder, an unreadable or
invalid order file, an invalid order, stock that is not there, a bad
command-line argument) ends with exit status 2 and a single line
``sourcing: error: <message>`` on standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sourcing.errors import InvalidOrderError, NetworkDataError, SourcingError
from sourcing.loader import read_network, write_network
from sourcing.menu import quote
from sourcing.model import MILLICENTS_PER_UNIT, Network, Order, QuoteSettings, parse_money
from sourcing.orders import order_from_dict
from sourcing.report import quote_to_json

if TYPE_CHECKING:
    from sourcing.whatif.scenario import PreparedScenario

PROG = "sourcing"
EXIT_OK = 0
EXIT_BAD_INPUT = 2
#: Upper bound of --value-of-day (currency units per day): keeps value x days far from overflow.
MAX_VALUE_OF_DAY = 1_000_000


class CliError(Exception):
    """Bad input found by the CLI itself; the message is printed as is."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors become one ``sourcing: error:`` line."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')")


def _value_of_day(text: str) -> int:
    """Currency units per day with at most 5 decimals -> millicents per day, exactly."""
    try:
        return parse_money(text, limit=MAX_VALUE_OF_DAY)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Optimisation-based sourcing: which stock ships from where, by which service.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    q = commands.add_parser(
        "quote",
        help="print the delivery options of one order as JSON",
        description=(
            "Print the delivery options (CHEAPEST, FASTEST, SINGLE_PARCEL, BALANCED) of one "
            'order as JSON. The order file holds {"destination": {"lat": .., "lon": ..}, '
            '"lines": [{"sku": .., "qty": ..}]}; \'-\' reads it from standard input.'
        ),
        usage="%(prog)s (NETWORK_DIR | --demo) ORDER.json [options]",
    )
    q.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="the network folder (planner CSV files) unless --demo, then the order file",
    )
    q.add_argument("--demo", action="store_true", help="quote on the built-in demo network")
    q.add_argument(
        "--value-of-day",
        type=_value_of_day,
        metavar="X",
        help="price of one day of delivery for BALANCED, currency units per day "
        f"(default {Decimal(QuoteSettings.value_of_day) / MILLICENTS_PER_UNIT})",
    )
    q.add_argument(
        "--allow-partial",
        action="store_true",
        help="ship what the stock covers and report the rest as shortfall",
    )
    q.add_argument(
        "--max-parcels", type=_positive_int, metavar="N", help="at most N parcels per option"
    )
    q.add_argument(
        "--pickup-store",
        action="append",
        default=[],
        metavar="NODE",
        help="also offer click & collect at this store (repeatable)",
    )
    q.add_argument(
        "--nearest-stores",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="also offer click & collect at the N stores nearest the destination",
    )
    q.add_argument(
        "--allow-backorder",
        action="store_true",
        help="units short now may wait for inbound receipts (inbound.csv)",
    )
    q.add_argument(
        "--latest-day",
        type=_non_negative_int,
        metavar="N",
        help="every parcel arrives within N days",
    )
    q.add_argument(
        "--time-limit",
        type=_seconds,
        metavar="S",
        default=QuoteSettings.time_limit_s,
        help="solver time budget in seconds (default %(default)s)",
    )
    q.add_argument(
        "--frontier",
        action="store_true",
        help='also print the whole Pareto frontier under "frontier"',
    )

    d = commands.add_parser(
        "demo-network",
        help="write the demo network as planner CSV files",
        description="Write the synthetic demo network as a planner CSV folder.",
    )
    d.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created if needed)")
    d.add_argument(
        "--seed", type=_non_negative_int, default=7, help="generator seed (default %(default)s)"
    )

    w = commands.add_parser(
        "whatif",
        help="replay orders through network scenarios and policies; KPI tables and a report",
        description=(
            "Replay a scenario's orders through each variant of its network and each policy, "
            "print the KPI table and write kpis.csv, kpis.json, savings.csv, node_volume.csv, "
            "orders.csv.gz, PNG plots and report.html into the output folder."
        ),
    )
    w.add_argument("scenario", metavar="SCENARIO.toml", help="the scenario file (TOML)")
    w.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: whatif-results/<scenario name> in the current folder)",
    )
    w.add_argument(
        "--orders",
        type=_positive_int,
        metavar="N",
        help="replay N orders (the generator's count, or the first N of a recorded stream)",
    )
    w.add_argument("--seed", type=_non_negative_int, metavar="N", help="order generator seed")
    w.add_argument(
        "--policies", metavar="A,B", help="comma-separated subset of the scenario's policies"
    )
    w.add_argument(
        "--variants", metavar="A,B", help="comma-separated subset of the scenario's variants"
    )
    w.add_argument(
        "--time-limit",
        type=_seconds,
        metavar="S",
        help="the optimiser's solver budget per order, in seconds of a quiet machine's work "
        "(a work budget, so the tables do not depend on the load; default: the scenario's)",
    )
    w.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the Olist data folder (overrides the scenario's [olist] data_dir)",
    )
    w.add_argument(
        "--workers",
        type=_non_negative_int,
        metavar="N",
        help="run the replays as Dask tasks on a LocalCluster of N worker processes",
    )
    w.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the replays on an existing Dask cluster (its workers need this package)",
    )
    w.add_argument(
        "--no-bound",
        action="store_true",
        help="skip the perfect-hindsight bound even if the scenario has a [bound] table",
    )
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _names(text: str | None, option: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CliError(f"{option} needs at least one name")
    return names


def _whatif(args: argparse.Namespace) -> int:
    if args.workers and args.scheduler is None:
        # The workers' fork server imports Dask and the engine while this process
        # reads the scenario, builds the inputs and starts the cluster.
        from sourcing.whatif.sweep import start_worker_server

        start_worker_server()
    from tqdm import tqdm

    from sourcing.whatif.scenario import load_scenario, prepare_scenario

    scenario = load_scenario(args.scenario)
    out = Path(args.out) if args.out is not None else Path("whatif-results") / scenario.name
    if out.exists() and not out.is_dir():
        raise CliError(f"output folder {str(out)!r} exists and is not a directory")

    def prepare() -> PreparedScenario:
        prepared = prepare_scenario(
            scenario,
            max_orders=args.orders,
            policies=_names(args.policies, "--policies"),
            variants=_names(args.variants, "--variants"),
            seed=args.seed,
            time_limit_s=args.time_limit,
            data_dir=Path(args.data_dir) if args.data_dir is not None else None,
        )
        if args.no_bound:
            prepared = dataclasses.replace(
                prepared, scenario=dataclasses.replace(prepared.scenario, bound=None)
            )
        # The report's module (pandas; matplotlib waits for a plot drawn in this
        # process, which with --workers never comes) is imported here, after the
        # inputs: with --workers this runs while the cluster starts.
        import sourcing.whatif.report  # noqa: F401

        return prepared

    # With --workers the networks and orders are built while the cluster starts,
    # and the report's plots are drawn on its workers.
    with _dask_client(args.workers, args.scheduler, prepare) as (client, prepared):
        from sourcing.whatif.report import (
            bound_table,
            format_kpis,
            kpi_table,
            orders_csv_gz,
            savings_table,
            write_report,
        )

        with (
            tqdm(
                total=prepared.decisions,
                desc=scenario.name,
                unit="order",
                file=sys.stderr,
                disable=args.no_progress,
                mininterval=0.5,
            ) as bar,
            tqdm(
                total=prepared.bound_orders,
                desc=f"{scenario.name} bound",
                unit="order",
                file=sys.stderr,
                disable=args.no_progress or not prepared.bound_orders,
                mininterval=0.5,
            ) as bound_bar,
        ):
            whatif = prepared.run(
                progress=bar.update,
                client=client,
                bound_progress=bound_bar.update,
                # On Dask each replay's rows of orders.csv.gz are compressed on its
                # worker as it ends, not all in the report after the last one.
                orders_csv=orders_csv_gz if client is not None else None,
            )
        try:
            written = write_report(whatif, out, client)
        except OSError as exc:
            raise CliError(f"cannot write to {str(out)!r}: {exc.strerror or exc}") from None
    kpis = kpi_table(whatif)
    sys.stdout.write(format_kpis(kpis) + "\n")
    if whatif.bounds:
        sys.stdout.write("\nperfect-hindsight bound per variant (currency units):\n")
        sys.stdout.write(bound_table(whatif).round(4).to_string(index=False) + "\n")
    savings = savings_table(kpis)
    if not savings.empty:
        sys.stdout.write("\noptimiser savings per order (baseline - optimiser net cost):\n")
        table = savings[["variant", "optimiser", "baseline", "saving_per_order", "saving_pct"]]
        sys.stdout.write(table.round(2).to_string(index=False, na_rep="-") + "\n")
    sys.stdout.flush()
    print(f"wrote {len(written)} files to {out}", file=sys.stderr)
    return EXIT_OK


@contextlib.contextmanager
def _dask_client(
    workers: int | None, scheduler: str | None, prepare: Callable[[], PreparedScenario]
) -> Iterator[tuple[Any, PreparedScenario]]:
    """The Dask client for ``--workers N`` or ``--scheduler`` (else None) and ``prepare()``.

    ``--workers N``: :func:`~sourcing.whatif.sweep.replay_cluster`, which runs
    ``prepare`` while its workers start.
    """
    if scheduler is None and not workers:
        yield None, prepare()
        return
    if scheduler is not None:
        from distributed import Client

        prepared = prepare()
        with Client(scheduler) as client:  # type: ignore[no-untyped-call]
            yield client, prepared
        return
    from sourcing.whatif.sweep import replay_cluster

    assert workers is not None
    with replay_cluster(workers, prepare) as started:
        yield started


def _load_network(directory: str) -> Network:
    folder = Path(directory)
    if not folder.exists():
        raise CliError(f"network folder {directory!r} not found")
    if not folder.is_dir():
        raise CliError(f"network folder {directory!r} is not a directory")
    try:
        return read_network(folder)
    except NetworkDataError as exc:
        # Name the file with its folder: "net/nodes.csv, row 3, column 'lat': ...".
        raise CliError(f"{folder / exc.file}{str(exc)[len(exc.file) :]}") from None


def load_order_file(source: str) -> tuple[str, Order]:
    """The order in JSON file ``source`` (``-``: stdin) and its display name.

    Raises :class:`CliError` naming the file and every bad field.
    """
    name, data = load_json_file(source, "order file")
    try:
        return name, order_from_dict(data)
    except InvalidOrderError as exc:
        raise CliError(f"{name}: {exc}") from None


def load_json_file(source: str, what: str) -> tuple[str, Any]:
    """The JSON document in file ``source`` (``-``: stdin) and its display name.

    Raises :class:`CliError` naming the file (``what`` says what it should hold).
    """
    name = "<stdin>" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{what} {source!r} not found") from None
    except IsADirectoryError:
        raise CliError(f"{what} {source!r} is a directory") from None
    except UnicodeDecodeError:
        raise CliError(f"{name}: not valid UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"cannot read {what} {source!r}: {exc.strerror or exc}") from None
    try:
        return name, json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{name}: invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:
        raise CliError(f"{name}: invalid JSON: {exc}") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _quote(args: argparse.Namespace) -> int:
    paths: list[str] = args.paths
    if args.demo:
        if len(paths) != 1:
            raise CliError("with --demo give only ORDER.json (see 'sourcing quote --help')")
        network_dir, order_file = None, paths[0]
    else:
        if len(paths) != 2:
            raise CliError(
                "expected NETWORK_DIR ORDER.json, or --demo ORDER.json "
                "(see 'sourcing quote --help')"
            )
        network_dir, order_file = paths
    # Read the order first: a typo in the cart should not wait for the network to load.
    name, order = load_order_file(order_file)
    if network_dir is None:
        from sourcing.demo import demo_network

        network = demo_network()
    else:
        network = _load_network(network_dir)
    defaults = QuoteSettings()
    settings = QuoteSettings(
        value_of_day=defaults.value_of_day if args.value_of_day is None else args.value_of_day,
        allow_partial=args.allow_partial,
        max_parcels=args.max_parcels,
        latest_day=args.latest_day,
        time_limit_s=args.time_limit,
        num_workers=defaults.num_workers,
        pickup_stores=tuple(args.pickup_store),
        nearest_stores=args.nearest_stores,
        allow_backorder=args.allow_backorder,
    )
    try:
        result = quote(network, order, settings)
    except InvalidOrderError as exc:
        raise CliError(f"{name}: {exc}") from None
    document = quote_to_json(result, frontier=args.frontier)
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    return EXIT_OK


def _demo_network(args: argparse.Namespace) -> int:
    from sourcing.demo import demo_network

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise CliError(f"output folder {args.out_dir!r} exists and is not a directory")
    network = demo_network(args.seed)
    try:
        write_network(network, out)
    except OSError as exc:
        raise CliError(f"cannot write to {args.out_dir!r}: {exc.strerror or exc}") from None
    return EXIT_OK


def _error(message: str) -> int:
    one_line = " ".join(message.splitlines()) or "unknown error"
    print(f"{PROG}: error: {one_line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sourcing`` command; returns the exit status."""
    parser = build_parser()
    try:
        # parse_known_args + re-check: lets options sit between the two paths of "quote".
        args, extras = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
        if extras:
            stray = [e for e in extras if e.startswith("-") and e != "-"]
            if stray or args.command != "quote":
                parser.error(f"unrecognized arguments: {' '.join(stray or extras)}")
            args.paths = [*args.paths, *extras]
        if args.command == "quote":
            return _quote(args)
        if args.command == "whatif":
            return _whatif(args)
        return _demo_network(args)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except CliError as exc:
        return _error(str(exc))
    except SourcingError as exc:
        # ShortageError (its message lists every short SKU) and any other input error.
        return _error(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
