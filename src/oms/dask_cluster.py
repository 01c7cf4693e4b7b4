"""Where the batch jobs (``oms reoptimise``, ``oms reprice``) run: a Dask cluster.

By default a ``LocalCluster`` of ``--workers`` processes on this machine; its
scheduler, workers and its HTTP server (the dashboard, ``/metrics``,
``/health``, ``/info``, which tell anyone who can reach them about the job)
listen on loopback only. ``--dashboard-address HOST:PORT`` exposes the HTTP
server elsewhere when asked; ``--dashboard-address none`` turns it off. Or
``--scheduler ADDRESS``: an existing cluster, or ``--in-process``: no Dask.
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import ExitStack
from typing import Any

#: Loopback, any free port: the dashboard of a job on this machine, for this machine.
DEFAULT_DASHBOARD = "127.0.0.1:0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scheduler`` | ``--in-process``, ``--workers`` and ``--dashboard-address``."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler")
    where.add_argument(
        "--in-process", action="store_true", help="solve in this process, without Dask"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="LocalCluster worker processes (default 2)"
    )
    parser.add_argument(
        "--dashboard-address",
        default=DEFAULT_DASHBOARD,
        metavar="HOST:PORT",
        help="the LocalCluster's dashboard (default 127.0.0.1:0, loopback only; "
        "'none' turns it off)",
    )


def local_cluster_options(args: argparse.Namespace) -> dict[str, Any]:
    """``LocalCluster`` keyword arguments for ``args`` (loopback unless asked otherwise)."""
    dashboard = args.dashboard_address
    return {
        "n_workers": max(1, args.workers),
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None if dashboard.strip().lower() == "none" else dashboard,
        "silence_logs": logging.ERROR,
    }


def dask_client(stack: ExitStack, args: argparse.Namespace) -> Any:
    """A ``distributed.Client`` for ``args`` (closed with ``stack``)."""
    from distributed import Client, LocalCluster

    if args.scheduler:
        return stack.enter_context(Client(args.scheduler))  # type: ignore[no-untyped-call]
    cluster = stack.enter_context(LocalCluster(**local_cluster_options(args)))  # type: ignore[no-untyped-call]
    client = stack.enter_context(Client(cluster))  # type: ignore[no-untyped-call]
    if cluster.scheduler.http_server is not None:
        print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
    return client
