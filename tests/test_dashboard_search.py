"""The orders search by node reads the shipments table: every order a node had a shipment
of (shipped, open, or refused and re-sourced elsewhere), newest first, paged, found by
the node's index, never by reading every order's plan."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from starlette.testclient import TestClient

from dashboard_support import VIEWER, config
from oms import schema as t
from oms.dashboard import views
from oms.dashboard.app import create_app
from oms.v1 import checkout_pb2, fulfilment_pb2, inventory_pb2

from service_support import ADMIN, Client, hand_network, running_server


def place(client: Client, lines: dict[str, int]) -> str:
    quote = client.quote(lines)
    return client.place(quote.quote_id, quote.options[0].option_id).order.order_id


def by_node_from_shipments(client: Client, node_id: str) -> list[str]:
    """The orders with a shipment at ``node_id``, newest first (independently of the view)."""
    s, o = t.shipments, t.orders
    with client.store.read() as conn:
        return [
            order_id
            for (order_id,) in conn.execute(
                sa.select(o.c.order_id)
                .where(o.c.order_id.in_(sa.select(s.c.order_id).where(s.c.node_id == node_id)))
                .order_by(o.c.created_at.desc(), o.c.order_id.desc())
            )
        ]


def listed(web: TestClient, **params: str) -> list[str]:
    """The orders the search page lists (one page: these tests place fewer than 50)."""
    page = web.get("/fragments/orders", params=params)
    assert page.status_code == 200, page.text
    return re.findall(r'<td><a href="/orders/([^"]+)">', page.text)


def test_search_by_node_finds_every_order_the_node_had_a_shipment_of(database_url: str) -> None:
    network = hand_network(on_hand={("DC-CHI", "A"): 4})
    with running_server(database_url, network) as grpc:
        # Twelve A: three parcels (5 DC-NJ, 5 ST-PHL, 2 DC-CHI). ST-PHL refuses its part,
        # which is re-sourced to DC-CHI: the plan no longer names ST-PHL, its shipment does.
        refused = place(grpc, {"A": 12})
        grpc.fulfilment.ReleaseOrder(
            fulfilment_pb2.ReleaseOrderRequest(order_id=refused), metadata=ADMIN, timeout=10
        )
        order = grpc.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=refused)).order
        phl = next(s.shipment_id for s in order.shipments if s.node_id == "ST-PHL")
        grpc.inventory.AdjustStock(
            inventory_pb2.AdjustStockRequest(node_id="DC-CHI", sku="A", delta=10, reason="count"),
            metadata=ADMIN,
        )
        grpc.fulfilment.RejectShipment(
            fulfilment_pb2.RejectShipmentRequest(shipment_id=phl, reason="closed"),
            metadata=ADMIN,
        )
        with grpc.store.read() as conn:
            plan = conn.execute(
                sa.select(t.orders.c.allocation_json).where(t.orders.c.order_id == refused)
            ).scalar_one()
        assert '"ST-PHL"' not in plan  # only the shipments table remembers ST-PHL's part
        # More orders, single and split, so the results span pages of three.
        for lines in ({"B": 1}, {"A": 1}, {"A": 1, "B": 1}, {"B": 2}, {"A": 6}, {"B": 1}):
            place(grpc, lines)

        with TestClient(
            create_app(config(grpc.store.url), grpc.store), follow_redirects=False
        ) as web:
            assert web.get("/login", params={"token": VIEWER}).status_code == 303
            for node in ("DC-NJ", "ST-PHL", "DC-CHI"):
                expected = by_node_from_shipments(grpc, node)
                assert expected, node
                with grpc.store.read() as conn:
                    pages: list[str] = []
                    after = None
                    while True:
                        page = views.search_orders(
                            conn, views.OrderQuery(node_id=node), after=after, limit=3
                        )
                        pages += [o.order_id for o in page.orders]
                        if page.after is None:
                            break
                        after = page.after
                assert pages == expected, node
                assert listed(web, node=node) == expected, node
            assert refused in by_node_from_shipments(grpc, "ST-PHL")


def test_search_by_node_reads_the_shipments_index(tmp_path: Any) -> None:
    """On SQLite, the node's orders come from ``ix_shipments_node_state``; no order's plan
    JSON is matched with LIKE (which read every order for a node with few)."""
    from service_support import prepared_store, sqlite_url

    store = prepared_store(sqlite_url(tmp_path), hand_network())
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    try:
        sa.event.listen(store.engine, "before_cursor_execute", record)
        with store.read() as conn:
            views.search_orders(conn, views.OrderQuery(node_id="DC-NJ"))
            search = [s for s in statements if "FROM orders" in s]
            assert len(search) == 1, statements
            assert "allocation_json LIKE" not in search[0]
            plan = " ".join(
                str(row[-1])
                for row in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + search[0], ("DC-NJ",) * search[0].count("?")
                )
            )
        assert "ix_shipments_node_state" in plan, plan
    finally:
        store.dispose()
