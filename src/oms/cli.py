"""The ``oms`` command line.

For now it only reports its version: the service commands (serving gRPC,
loading a network, re-optimising open orders) arrive with the OMS service.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "sourcing-oms"


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oms",
        description=(
            "Order management service around the sourcing engine. The service commands "
            "(running the gRPC server, loading a network, batch re-optimisation) arrive with "
            "the OMS service; for quotes from planner CSV files use the 'sourcing' command."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s ({DISTRIBUTION}) {package_version()}"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``oms`` command; returns the exit status."""
    parser = build_parser()
    try:
        parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --version, --help, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
