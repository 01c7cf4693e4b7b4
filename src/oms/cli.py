"""The ``oms`` command line: serve, load a network, migrate, and a client for people.

``oms serve`` runs the gRPC service on the embedded SQLite store (the demo
network is loaded when the store is empty); ``oms load DIR`` puts a planner
CSV folder into a store; ``oms quote CART.json`` and ``oms place QUOTE OPTION``
call a running server and print JSON; ``oms reoptimise`` re-assigns the open
orders jointly (:mod:`oms.reoptimise`); ``oms reprice`` computes the
forward-looking prices quotes use with ``OMS_FORWARD_PRICES`` (:mod:`oms.reprice`).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

DISTRIBUTION = "sourcing-oms"


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the store (default: $OMS_DATABASE_URL or sqlite:///oms.db)",
    )


def _dashboard_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--http-port",
        type=int,
        help="the web dashboard's port (default 8080, $OMS_HTTP_PORT; 0 turns it off)",
    )
    parser.add_argument(
        "--viewer-token-file",
        help="file holding the dashboard's viewer token ($OMS_VIEWER_TOKEN_FILE, or "
        "$OMS_VIEWER_TOKEN); with no token at all one is made and printed in a login link",
    )
    parser.add_argument(
        "--no-demo-orders",
        action="store_true",
        help="on a fresh store with the demo network, do not place demo orders",
    )


def _dashboard_config(args: argparse.Namespace, settings: Any) -> Any:
    from oms.dashboard.config import resolve

    return resolve(
        settings.database_url,
        admin_token=settings.admin_token,
        viewer_token_file=args.viewer_token_file,
        host=settings.host,
        port=args.http_port,
        demo_orders=0 if args.no_demo_orders else None,
        currency=settings.currency,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oms", description="Order management service around the sourcing engine."
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s ({DISTRIBUTION}) {package_version()}"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC service")
    _store_args(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 50051; 0 picks one)")
    serve.add_argument("--workers", type=int, help="server processes sharing the port")
    serve.add_argument("--threads", type=int, help="RPC threads per process")
    serve.add_argument(
        "--max-streams",
        type=int,
        help="streams open at once per process (default threads/4); more are RESOURCE_EXHAUSTED",
    )
    serve.add_argument(
        "--cpu-slots",
        type=int,
        dest="cpu_slots",
        help="quotes/orders solved at once per process; the rest queue within their deadline",
    )
    serve.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (0: off)")
    serve.add_argument(
        "--admin-token-file",
        help="file holding the bearer token for admin calls ($OMS_ADMIN_TOKEN_FILE, "
        "or the token itself in $OMS_ADMIN_TOKEN)",
    )
    serve.add_argument(
        "--checkout-token-file",
        help="file holding the bearer token for checkout calls, if any "
        "($OMS_CHECKOUT_TOKEN_FILE or $OMS_CHECKOUT_TOKEN)",
    )
    serve.add_argument(
        "--node-tokens-file",
        help="file of 'NODE_ID TOKEN' lines: tokens limited to one node's shipments "
        "($OMS_NODE_TOKENS_FILE)",
    )
    # Deprecated: every local user can read a process's arguments in /proc/PID/cmdline.
    serve.add_argument("--admin-token", help=argparse.SUPPRESS)
    serve.add_argument("--checkout-token", help=argparse.SUPPRESS)
    serve.add_argument("--quote-ttl", type=float, dest="quote_ttl_s", help="quote lifetime, s")
    serve.add_argument(
        "--solver-time-limit", type=float, dest="solver_time_limit_s", help="per quote, s"
    )
    serve.add_argument(
        "--no-hold",
        dest="hold_stock",
        action="store_const",
        const=False,
        help="StartCheckout holds no stock (it is reserved only at PlaceOrder)",
    )
    serve.add_argument(
        "--hold-ttl", type=float, dest="hold_ttl_s", help="checkout hold lifetime, s (max 600)"
    )
    serve.add_argument("--no-demo", action="store_true", help="do not load the demo network")
    _dashboard_args(serve)

    dashboard = sub.add_parser("dashboard", help="serve only the operators' web dashboard")
    _store_args(dashboard)
    dashboard.add_argument("--host", help="address to bind (default 127.0.0.1)")
    _dashboard_args(dashboard)

    load = sub.add_parser("load", help="load a planner CSV network folder into the store")
    _store_args(load)
    load.add_argument("network_dir", nargs="?", help="folder of nodes/skus/stock/zones/rates.csv")
    load.add_argument("--demo", action="store_true", help="load the built-in demo network")

    migrate = sub.add_parser("migrate", help="bring the store's schema up to date")
    _store_args(migrate)

    quote = sub.add_parser("quote", help="ask a running server for delivery options")
    quote.add_argument(
        "order",
        help="CART.json: the contract's QuoteDeliveryOptionsRequest as JSON "
        '({"destination": {"latitude", "longitude"}, "lines": [{"sku", "quantity"}]}), '
        "or the sourcing CLI's form (lat, lon, qty)",
    )
    quote.add_argument("--target", default="127.0.0.1:50051")
    quote.add_argument("--timeout", type=float, default=5.0)
    quote.add_argument(
        "--pickup-store", action="append", default=[], help="add a COLLECT option at this store"
    )
    quote.add_argument(
        "--nearest-stores", type=int, default=0, help="COLLECT at the N stores nearest the address"
    )
    quote.add_argument(
        "--allow-backorder", action="store_true", help="short units may wait for inbound receipts"
    )

    place = sub.add_parser("place", help="place an order on a quoted option")
    place.add_argument("quote_id")
    place.add_argument("option_id")
    place.add_argument("--idempotency-key", help="default: a new random key")
    place.add_argument("--target", default="127.0.0.1:50051")
    place.add_argument("--timeout", type=float, default=5.0)

    from oms.reoptimise import add_arguments

    add_arguments(
        sub.add_parser("reoptimise", help="re-assign open orders jointly (batch job, on Dask)")
    )
    from oms import reprice

    reprice.add_arguments(
        sub.add_parser(
            "reprice", help="compute forward-looking opportunity costs of stock (job, on Dask)"
        )
    )
    return parser


def _tokens(args: argparse.Namespace) -> dict[str, str | None]:
    """The secrets given on the command line: from the files named, or (deprecated, with a
    warning) the tokens themselves. Raises ValueError for an unreadable or empty file."""
    from oms.credentials import read_token_file

    tokens: dict[str, str | None] = {}
    for name in ("admin_token", "checkout_token"):
        flag = "--" + name.replace("_", "-")
        path, value = getattr(args, f"{name}_file", None), getattr(args, name, None)
        if path is not None and value is not None:
            raise ValueError(f"give {flag} or {flag}-file, not both")
        if path is not None:
            tokens[name] = read_token_file(path, f"{flag}-file")
        elif value is not None:
            print(
                f"warning: {flag} is deprecated: every local user can read it in "
                f"/proc/PID/cmdline; use {flag}-file or $OMS_{name.upper()}",
                file=sys.stderr,
            )
            tokens[name] = value
    return tokens


def _settings(args: argparse.Namespace) -> Any:
    from oms.settings import Settings

    names = (
        "database_url",
        "host",
        "port",
        "workers",
        "threads",
        "max_streams",
        "cpu_slots",
        "metrics_port",
        "quote_ttl_s",
        "solver_time_limit_s",
        "hold_stock",
        "hold_ttl_s",
        "node_tokens_file",
    )
    overrides: dict[str, Any] = {n: getattr(args, n, None) for n in names}
    overrides.update(_tokens(args))
    return Settings.from_env(None, **overrides)


def _print_message(message: Any) -> None:
    from google.protobuf.json_format import MessageToDict

    print(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))


def _is_sourcing_form(data: Any) -> bool:
    """A cart in the ``sourcing quote`` form (``lat``/``lon``, ``qty``), not the contract's."""
    if not isinstance(data, dict):
        return False
    destination, lines = data.get("destination"), data.get("lines")
    if isinstance(destination, dict) and ({"lat", "lon"} & destination.keys()):
        return True
    return isinstance(lines, list) and any(isinstance(x, dict) and "qty" in x for x in lines)


def _quote_request(args: argparse.Namespace) -> Any:
    """The cart file as a QuoteDeliveryOptionsRequest, plus the command line's options.

    The file is the contract's JSON form of the request (``destination.latitude``,
    ``lines[].quantity``, any other field of it; what ``buf curl -d`` sends), or the
    ``sourcing quote`` form (``destination.lat``/``lon``, ``lines[].qty``).
    Raises ``CliError`` naming the file and the bad field.
    """
    from google.protobuf import json_format

    from oms.v1 import checkout_pb2, common_pb2
    from sourcing.cli import CliError, load_json_file
    from sourcing.errors import InvalidOrderError
    from sourcing.orders import order_from_dict

    name, data = load_json_file(args.order, "order file")
    request = checkout_pb2.QuoteDeliveryOptionsRequest()
    if _is_sourcing_form(data):
        try:
            order = order_from_dict(data)
        except InvalidOrderError as exc:
            raise CliError(f"{name}: {exc}") from None
        request.destination.CopyFrom(
            common_pb2.Location(latitude=order.destination.lat, longitude=order.destination.lon)
        )
        request.lines.extend(common_pb2.CartLine(sku=x.sku, quantity=x.qty) for x in order.lines)
    else:
        try:
            json_format.ParseDict(data, request)
        except json_format.ParseError as exc:  # one line: protobuf adds the fields on a second
            raise CliError(f"{name}: {' '.join(str(exc).split())}") from None
        problems = [] if request.HasField("destination") else ["destination: missing"]
        if not request.lines:
            problems.append("lines: give at least one line")
        for i, line in enumerate(request.lines):
            if line.quantity <= 0:
                problems.append(f"lines[{i}].quantity: must be a positive integer")
        if problems:
            raise CliError(f"{name}: {'; '.join(problems)}")
    request.pickup_store_ids.extend(args.pickup_store)
    if args.nearest_stores:
        request.nearest_pickup_stores = args.nearest_stores
    if args.allow_backorder:
        request.allow_backorder = True
    return request


def _client(args: argparse.Namespace) -> int:
    import grpc

    from oms.v1 import checkout_pb2, checkout_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
        stub = checkout_pb2_grpc.CheckoutServiceStub(channel)
        try:
            if args.command == "quote":
                request = _quote_request(args)
                _print_message(stub.QuoteDeliveryOptions(request, timeout=args.timeout))
            else:
                key = args.idempotency_key or uuid.uuid4().hex
                _print_message(
                    stub.PlaceOrder(
                        checkout_pb2.PlaceOrderRequest(
                            quote_id=args.quote_id, option_id=args.option_id, idempotency_key=key
                        ),
                        timeout=args.timeout,
                    )
                )
        except grpc.RpcError as exc:
            print(f"oms {args.command}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``oms`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --version, --help, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 0

    if args.command in ("quote", "place"):
        from sourcing.cli import CliError

        try:
            return _client(args)
        except (CliError, OSError, ValueError) as exc:  # e.g. the cart file, with the bad field
            print(f"oms {args.command}: {exc}", file=sys.stderr)
            return 2

    try:
        settings = _settings(args)
        dashboard = (
            _dashboard_config(args, settings) if args.command in ("serve", "dashboard") else None
        )
    except ValueError as exc:
        print(f"oms {args.command}: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from oms.server import serve

        return serve(settings, load_demo=not args.no_demo, dashboard=dashboard)
    if args.command == "dashboard":
        from oms.dashboard.process import serve_alone

        return serve_alone(dashboard, settings.log_level)
    if args.command == "reoptimise":
        from oms.reoptimise import command

        return command(
            args,
            settings.database_url,
            forward_prices=settings.forward_prices,
            price_max_age_s=settings.forward_prices_max_age_s,
        )
    if args.command == "reprice":
        from oms.reprice import command as reprice_command

        return reprice_command(args, settings.database_url)

    from oms.credentials import redact_url
    from oms.store import Store

    shown_url = redact_url(settings.database_url)
    store = Store(settings.database_url, pool_size=2)
    try:
        store.migrate()
        if args.command == "migrate":
            print(f"schema up to date in {shown_url}")
            return 0
        # load
        if args.demo == bool(args.network_dir):
            print("oms load: give a NETWORK_DIR or --demo (one of them)", file=sys.stderr)
            return 2
        from sourcing.errors import NetworkDataError

        if args.demo:
            from sourcing.demo import demo_network

            network = demo_network()
        else:
            from sourcing.loader import read_network

            try:
                network = read_network(args.network_dir)
            except NetworkDataError as exc:
                print(f"oms load: {exc}", file=sys.stderr)
                return 2
        store.load_network(network, reason=f"oms load {args.network_dir or 'demo'}")
        print(
            f"loaded {len(network.node_ids)} nodes, {len(network.sku_ids)} SKUs, "
            f"{int((network.on_hand > 0).sum())} stock positions into {shown_url}"
        )
        return 0
    finally:
        store.dispose()


if __name__ == "__main__":
    sys.exit(main())
