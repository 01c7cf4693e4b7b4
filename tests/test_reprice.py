"""``oms reprice``: forward-looking prices written to the store, and quotes priced with them.

On ``service_support.hand_network`` with DC-NJ holding 3 units of A, ST-PHL none and
DC-CHI 50: two Manhattan orders of 1 A are placed (each from DC-NJ: $5.00 + 1 kg x $1.00
+ $2.00 = $8.00), leaving DC-NJ one unit. The history is those two single-unit orders,
all in Manhattan, so the job expects (2 + 7 x 1.0) / 7 per day x 7 days = 9 units of A
there before DC-NJ's one unit is replenished: one from DC-NJ ($8.00), eight from DC-CHI
($9.00 + $1.00 + $1.50 = $11.50). One more unit at DC-NJ would save $3.50: its price.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from oms import schema as t
from oms.reprice import latest_prices, run_job
from oms.v1 import common_pb2

from service_support import Client, cents, hand_network, running_server, sqlite_url

NETWORK = hand_network({("DC-NJ", "A"): 3, ("ST-PHL", "A"): 0})
#: A Philadelphia customer: DC-NJ is zone 2 ($7.00 + $1.00 + $2.00 = $10.00), DC-CHI zone 3.
PHILADELPHIA = common_pb2.Location(latitude=39.9526, longitude=-75.1652)


def _place_two(client: Client) -> None:
    for _ in range(2):
        quote = client.quote({"A": 1})
        cheapest = next(o for o in quote.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels)
        assert [p.node_id for p in cheapest.parcels] == ["DC-NJ"]
        client.place(quote.quote_id, cheapest.option_id)


def _cheapest(client: Client) -> common_pb2.DeliveryOption:
    quote = client.quote({"A": 1}, destination=PHILADELPHIA)
    return next(o for o in quote.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels)


def test_the_job_prices_the_last_unit_near_demand_and_quotes_use_it(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    # Quotes hold no stock here, so the job sees DC-NJ's last unit free whatever was quoted.
    with running_server(
        url, NETWORK, forward_prices=True, forward_prices_refresh_s=0.0, hold_stock=False
    ) as client:
        _place_two(client)
        # No run yet: quotes are the plain menu.
        plain = _cheapest(client)
        assert [p.node_id for p in plain.parcels] == ["DC-NJ"]
        assert cents(plain.cost) == 1000
        report = run_job(client.store)
        assert report.run_id == 1 and report.orders_seen == 2
        with client.store.read() as conn:
            run_id, prices = latest_prices(conn)
        assert run_id == 1 and prices is not None
        a = prices.sku_index["A"]
        assert prices.values[prices.node_index["DC-NJ"], a] == 350_000
        assert (
            "DC-CHI" not in prices.node_index or prices.values[prices.node_index["DC-CHI"], a] == 0
        )
        # Priced: DC-NJ costs $10.00 + $3.50 > DC-CHI's $11.50, so CHEAPEST ships from Chicago
        # and reports its reference cost; an option from DC-NJ shows $3.50 apart.
        priced = client.quote({"A": 1}, destination=PHILADELPHIA)
        cheapest = next(o for o in priced.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels)
        assert [p.node_id for p in cheapest.parcels] == ["DC-CHI"]
        assert cents(cheapest.cost) == 1150
        assert not cheapest.breakdown.HasField("opportunity_cost")
        for option in priced.options:
            if [p.node_id for p in option.parcels] == ["DC-NJ"]:
                assert cents(option.cost) == 1000
                assert cents(option.breakdown.total) == 1000
                assert cents(option.breakdown.opportunity_cost) == 350


def test_quotes_stop_using_prices_past_their_horizon_or_max_age(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = sqlite_url(tmp_path)
    clock = [time.time()]
    with running_server(
        url,
        NETWORK,
        clock=lambda: clock[0],
        forward_prices=True,
        forward_prices_refresh_s=0.0,
        forward_prices_max_age_s=2 * 86_400.0,
        hold_stock=False,
    ) as client:
        _place_two(client)
        run_job(client.store, horizon_days=7.0)
        assert [p.node_id for p in _cheapest(client).parcels] == ["DC-CHI"]  # priced
        # A day on: still within the two-day limit. Three days on: expired, so the
        # plain menu, with one warning that says why.
        clock[0] += 86_400
        assert [p.node_id for p in _cheapest(client).parcels] == ["DC-CHI"]
        clock[0] += 2 * 86_400
        with caplog.at_level(logging.WARNING, logger="oms.reprice"):
            plain = _cheapest(client)
            _cheapest(client)
        assert [p.node_id for p in plain.parcels] == ["DC-NJ"] and cents(plain.cost) == 1000
        warnings = [r.getMessage() for r in caplog.records if r.name == "oms.reprice"]
        assert len(warnings) == 1 and "reprice run 1" in warnings[0]
        assert "expired" in warnings[0]
        # A newer run is used again.
        run_job(client.store, horizon_days=7.0)
        assert [p.node_id for p in _cheapest(client).parcels] == ["DC-CHI"]


def test_runs_are_kept_to_the_last_three_and_dask_gives_the_same_prices(tmp_path: Path) -> None:
    from distributed import Client as DaskClient
    from distributed import LocalCluster

    url = sqlite_url(tmp_path)
    with running_server(url, NETWORK, hold_stock=False) as client:
        _place_two(client)
        here = [run_job(client.store, chunks=2) for _ in range(3)]
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            DaskClient(cluster) as dask,
        ):

            def on_dask(function, jobs):  # type: ignore[no-untyped-def]
                return [f.result() for f in dask.map(function, jobs)]

            there = run_job(client.store, chunks=2, map_chunks=on_dask)
        assert [r.run_id for r in here] == [1, 2, 3] and there.run_id == 4
        with client.store.read() as conn:
            runs = conn.execute(sa.select(t.reprice_runs.c.run_id)).scalars().all()
            per_run = {
                r: sorted(
                    conn.execute(
                        sa.select(
                            t.opportunity_costs.c.node_id,
                            t.opportunity_costs.c.sku,
                            t.opportunity_costs.c.millicents,
                        ).where(t.opportunity_costs.c.run_id == r)
                    ).all()
                )
                for r in runs
            }
        assert sorted(runs) == [2, 3, 4]
        assert per_run[3] == per_run[4] and per_run[4]
        # Without forward_prices the server quotes the plain menu whatever the store holds.
        assert [p.node_id for p in _cheapest(client).parcels] == ["DC-NJ"]
