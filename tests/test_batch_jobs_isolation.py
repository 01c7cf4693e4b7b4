"""The batch jobs keep to themselves (issue 13, item 17).

* ``oms reoptimise`` reads the open orders, their reservations and stock as
  one snapshot: on PostgreSQL (real, at 127.0.0.1:5432; skips with a reason
  where none answers) a stock count committed between its reads is not half
  seen. At READ COMMITTED each statement saw the latest commits.
* The jobs' Dask ``LocalCluster`` (scheduler, workers, dashboard/HTTP server)
  listens on loopback only unless ``--dashboard-address`` says otherwise;
  its dashboard used to listen on every interface.
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack

import psutil
import pytest
from sqlalchemy.engine import Connection

from oms import dask_cluster, reoptimise
from oms.cli import build_parser
from oms.reoptimise import OpenOrder
from oms.store import Store
from oms.v1 import common_pb2

from service_support import running_server


def test_the_reoptimise_read_is_one_snapshot_on_postgresql(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_server(pg_url) as client:
        quote = client.quote({"A": 1})
        cheapest = next(o for o in quote.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels)
        client.place(quote.quote_id, cheapest.option_id)
        writer = Store(pg_url, pool_size=1)
        real_read = reoptimise.read_open_orders

        def read_then_count(conn: Connection) -> list[OpenOrder]:
            orders = real_read(conn)
            # A stock count commits after the orders were read, before stock is.
            writer.set_stock("DC-CHI", "A", 7, 2, 0, "count while the job reads")
            return orders

        monkeypatch.setattr(reoptimise, "read_open_orders", read_then_count)
        try:
            snapshot = reoptimise._snapshot(client.store, time.time())
        finally:
            writer.dispose()
        assert snapshot.instance is not None and len(snapshot.orders) == 1
        network = snapshot.instance.network
        chicago_a = network.on_hand[network.node_index["DC-CHI"], network.sku_index["A"]]
        assert chicago_a == 50, "the job saw a stock count committed after its first read"
        with client.store.read() as conn:  # the count itself did commit
            positions = {(p.node_id, p.sku): p for p in client.store.positions(conn)}
        assert positions["DC-CHI", "A"].on_hand == 7


def _listening(pid: int) -> set[str]:
    process = psutil.Process(pid)
    addresses = set()
    for proc in [process, *process.children(recursive=True)]:
        for c in proc.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN:
                addresses.add(c.laddr.ip)
    return addresses


@pytest.mark.parametrize("command", ["reoptimise", "reprice"])
def test_the_jobs_local_cluster_listens_on_loopback_only(command: str) -> None:
    args = build_parser().parse_args([command, "--workers", "1"])
    assert args.dashboard_address == "127.0.0.1:0"
    with ExitStack() as stack:
        client = dask_cluster.dask_client(stack, args)
        assert client.submit(sum, [1, 2, 3]).result() == 6
        assert _listening(psutil.Process().pid) == {"127.0.0.1"}


def test_the_dashboard_goes_elsewhere_or_off_only_when_asked() -> None:
    def options(*flags: str) -> dict[str, object]:
        args: argparse.Namespace = build_parser().parse_args(["reoptimise", *flags])
        return dask_cluster.local_cluster_options(args)

    assert options()["dashboard_address"] == "127.0.0.1:0"
    assert options("--dashboard-address", "0.0.0.0:8787")["dashboard_address"] == "0.0.0.0:8787"
    assert options("--dashboard-address", "none")["dashboard_address"] is None
