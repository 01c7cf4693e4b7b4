"""Promises at risk on the overview: the late shipments now (a number, a list linking to
each order) and over the period (a chart: the late shipments at each bucket's end),
checked against the shipments table read independently, on a store whose clock moves.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from starlette.testclient import TestClient

from dashboard_support import VIEWER, config
from oms import schema as t
from oms.dashboard import views
from oms.dashboard.app import create_app
from oms.store import Store
from oms.v1 import checkout_pb2, fulfilment_pb2

from service_support import ADMIN, hand_network, running_server

DAY = 86_400.0
OPEN = ("PENDING", "REQUESTED", "ACCEPTED")
LEFT = ("SHIPPED", "READY_FOR_PICKUP", "DELIVERED", "PICKED_UP")


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def late_at(rows: list[Any], at: float) -> int:
    """Shipments late at ``at``: created by then, not left (or ended) by then, and their
    planned dispatch day before ``at``'s day."""
    count = 0
    for r in rows:
        left = r.shipped_at if r.state in LEFT else r.updated_at if r.state not in OPEN else None
        if r.created_at <= at and r.planned_dispatch < day_of(at) and (left is None or left > at):
            count += 1
    return count


def expected_series(store: Store, period: views.Period, now: float) -> list[int]:
    with store.read() as conn:
        rows = conn.execute(sa.select(t.shipments)).all()
    n = len(period.labels)
    return [late_at(rows, min(period.start + (i + 1) * period.bucket_s, now)) for i in range(n)]


def test_late_shipments_now_and_over_the_period(database_url: str) -> None:
    # Noon UTC of a day in the past, so orders, their dispatch days and the period's buckets
    # do not depend on when the test runs.
    start = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0).timestamp()
    start -= 10 * DAY
    clock = [start]
    network = hand_network(on_hand={("DC-CHI", "A"): 4})
    with running_server(database_url, network, clock=lambda: clock[0]) as grpc:
        f = grpc.fulfilment

        def place(lines: dict[str, int]) -> tuple[str, dict[str, str]]:
            quote = grpc.quote(lines)
            order_id = grpc.place(quote.quote_id, quote.options[0].option_id).order.order_id
            f.ReleaseOrder(
                fulfilment_pb2.ReleaseOrderRequest(order_id=order_id), metadata=ADMIN, timeout=10
            )
            order = grpc.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order_id))
            return order_id, {s.node_id: s.shipment_id for s in order.order.shipments}

        def ship(shipment_id: str) -> None:
            f.ConfirmShipment(
                fulfilment_pb2.ConfirmShipmentRequest(
                    shipment_id=shipment_id, carrier="UPS", tracking_number="1Z" + shipment_id
                ),
                metadata=ADMIN,
                timeout=10,
            )

        # Day 0: a three-parcel order (DC-NJ, ST-PHL, DC-CHI) and a single one at DC-NJ.
        split, parts = place({"A": 12})
        single, one = place({"B": 1})
        assert sorted(parts) == ["DC-CHI", "DC-NJ", "ST-PHL"] and list(one) == ["DC-NJ"]
        # Day 1: DC-CHI's parcel leaves (on time or a day late: its dispatch day is day 0).
        clock[0] = start + 1 * DAY
        ship(parts["DC-CHI"])
        # Day 4: DC-NJ's parcel of the split leaves, late; the single order is cancelled.
        clock[0] = start + 4 * DAY
        ship(parts["DC-NJ"])
        grpc.checkout.CancelOrder(
            checkout_pb2.CancelOrderRequest(order_id=single, reason="too slow"), timeout=10
        )
        # Day 6: ST-PHL's parcel is still at its node.
        now = start + 6 * DAY + 3_600
        clock[0] = now
        with grpc.store.read() as conn:
            shipments = {r.shipment_id: r for r in conn.execute(sa.select(t.shipments)).all()}
        late_now = sorted(
            (r.planned_dispatch, r.shipment_id)
            for r in shipments.values()
            if r.state in OPEN and r.planned_dispatch < day_of(now)
        )
        assert [sid for _, sid in late_now] == [parts["ST-PHL"]]

        app = create_app(config(grpc.store.url), grpc.store, clock=lambda: clock[0])
        with TestClient(app, follow_redirects=False) as web:
            assert web.get("/login", params={"token": VIEWER}).status_code == 303
            for key in ("today", "7d", "30d"):
                period = views.Period.of(key, now)
                got = web.get("/api/overview", params={"period": key}).json()
                series = got["charts"]["late"]["datasets"][0]["data"]
                assert series == expected_series(grpc.store, period, now), key
                assert series[-1] == got["late_shipments"] == len(late_now) == 1
                assert got["at_risk"] == 1
                phl = shipments[parts["ST-PHL"]]
                assert got["late"] == [
                    {
                        "shipment_id": phl.shipment_id,
                        "order_id": split,
                        "node_id": "ST-PHL",
                        "state": phl.state,
                        "planned_dispatch": phl.planned_dispatch,
                        "days_late": (
                            date.fromisoformat(day_of(now))
                            - date.fromisoformat(phl.planned_dispatch)
                        ).days,
                    }
                ]
            week = web.get("/api/overview", params={"period": "7d"}).json()
            series = week["charts"]["late"]["datasets"][0]["data"]
            # Over the week the late count rose and fell: DC-NJ's two parcels were late
            # before leaving (or being cancelled), so some day had more than one.
            assert max(series) > 1, series

            # The page: the number, the list (each row links to its order), and the chart.
            page = web.get("/", params={"period": "7d"}).text
            assert re.search(r'data-kpi="late-shipments">1<', page)
            table = re.search(
                r'<table class="mini late" data-table="late">(.*?)</table>', page, re.S
            )
            assert table is not None
            rows = re.findall(
                r'<tr data-shipment="([^"]+)"><td class="id"><a href="/orders/([^"]+)"',
                table.group(1),
            )
            assert rows == [(parts["ST-PHL"], split)]
            assert 'data-chart="late"' in page
            assert web.get(f"/orders/{split}").status_code == 200

            # ST-PHL's parcel leaves now: the last point drops to zero; the closed buckets
            # (kept once computed) are facts about the past and still equal the rows'.
            ship(parts["ST-PHL"])
            for key in ("today", "7d", "30d"):
                period = views.Period.of(key, now)
                got = web.get("/api/overview", params={"period": key}).json()
                series = got["charts"]["late"]["datasets"][0]["data"]
                assert series == expected_series(grpc.store, period, now), key
                assert series[-1] == got["late_shipments"] == 0 and got["late"] == []
