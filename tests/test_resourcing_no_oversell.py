"""Re-sourcing after rejections never oversells: two server processes, racing clients.

As ``test_no_oversell``, on SQLite and on the real PostgreSQL (skipped when
unreachable): orders are placed and released first; then, at once, every
order is rejected by a node it ships from (its units must be re-sourced),
while 40 shoppers quote and place carts that want more than the stock left.
A monitor samples the store throughout. Afterwards:

* no sample (nor the end) shows a position promising more than the documented
  rule lets it: on hand - safety stock - reservations - holds >= 0 (Chicago
  keeps safety stock);
* every rejection came back OK or, having lost every race, ABORTED; and every
  other failure is FAILED_PRECONDITION or ABORTED (never UNKNOWN/INTERNAL);
* every rejected order's reservations equal its new allocation, none of it at
  the rejecting node; a kept promise arrives by the promised date, a missed one
  flags the order (``needs_attention`` and a ``flagged`` event);
* the ledger sums to on hand at every position.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter

import grpc

from oms.store import units_of
from oms.v1 import checkout_pb2, checkout_pb2_grpc, common_pb2, fulfilment_pb2, fulfilment_pb2_grpc

from service_support import (
    ADMIN,
    hand_network,
    iso,
    oversell_violations,
    prepared_store,
    server_processes,
)

SHOPPERS = 40
ORDERS = 10
#: Chicago keeps 2 units of each SKU as safety stock (hand_network): 8 and 4 to promise there.
STOCK = {
    ("DC-NJ", "A"): 6,
    ("ST-PHL", "A"): 6,
    ("DC-CHI", "A"): 10,
    ("DC-NJ", "B"): 3,
    ("DC-CHI", "B"): 6,
}
RACE_OK = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED}


def test_rejections_resource_without_overselling(database_url: str) -> None:
    store = prepared_store(database_url, hand_network(STOCK))
    outcomes: Counter[str] = Counter()
    bad: list[str] = []
    seen: list[str] = []
    lock = threading.Lock()
    rejected: dict[str, tuple[str, fulfilment_pb2.RejectOrderResponse | None]] = {}

    with server_processes(database_url, 2) as target:
        with grpc.insecure_channel(target) as channel:
            checkout = checkout_pb2_grpc.CheckoutServiceStub(channel)
            fulfilment = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)
            orders = []
            for i in range(ORDERS):
                quote = checkout.QuoteDeliveryOptions(
                    checkout_pb2.QuoteDeliveryOptionsRequest(
                        destination=common_pb2.Location(latitude=40.7, longitude=-74.0),
                        lines=[common_pb2.CartLine(sku="A", quantity=1)]
                        + ([common_pb2.CartLine(sku="B", quantity=1)] if i % 3 == 0 else []),
                    ),
                    timeout=30,
                )
                order = checkout.PlaceOrder(
                    checkout_pb2.PlaceOrderRequest(
                        quote_id=quote.quote_id,
                        option_id=quote.options[0].option_id,
                        idempotency_key=uuid.uuid4().hex,
                    ),
                    timeout=30,
                ).order
                fulfilment.ReleaseOrder(
                    fulfilment_pb2.ReleaseOrderRequest(order_id=order.order_id),
                    metadata=ADMIN,
                    timeout=30,
                )
                orders.append((order.order_id, order.allocation.parcels[0].node_id))

        start = threading.Barrier(SHOPPERS + ORDERS + 1)
        stop = threading.Event()

        def shopper(i: int) -> None:
            rng = random.Random(i)
            with grpc.insecure_channel(target) as channel:
                stub = checkout_pb2_grpc.CheckoutServiceStub(channel)
                lines = [common_pb2.CartLine(sku="A", quantity=rng.randint(1, 2))]
                if rng.random() < 0.3:
                    lines.append(common_pb2.CartLine(sku="B", quantity=1))
                start.wait()
                try:
                    quote = stub.QuoteDeliveryOptions(
                        checkout_pb2.QuoteDeliveryOptionsRequest(
                            destination=common_pb2.Location(
                                latitude=rng.uniform(39.0, 42.0), longitude=rng.uniform(-88, -73.5)
                            ),
                            lines=lines,
                        ),
                        timeout=60,
                    )
                    stub.PlaceOrder(
                        checkout_pb2.PlaceOrderRequest(
                            quote_id=quote.quote_id,
                            option_id=rng.choice(list(quote.options)).option_id,
                            idempotency_key=uuid.uuid4().hex,
                        ),
                        timeout=60,
                    )
                    with lock:
                        outcomes["placed"] += 1
                except grpc.RpcError as err:
                    with lock:
                        outcomes[f"shop {err.code().name}"] += 1
                        if err.code() not in RACE_OK:
                            bad.append(f"shop: {err.code().name} {err.details()}")

        def rejecter(order_id: str, node: str) -> None:
            with grpc.insecure_channel(target) as channel:
                stub = fulfilment_pb2_grpc.FulfilmentServiceStub(channel)
                start.wait()
                try:
                    reply = stub.RejectOrder(
                        fulfilment_pb2.RejectOrderRequest(
                            order_id=order_id, node_id=node, reason="no picker today"
                        ),
                        metadata=ADMIN,
                        timeout=60,
                    )
                except grpc.RpcError as err:
                    with lock:
                        outcomes[f"reject {err.code().name}"] += 1
                        rejected[order_id] = (node, None)
                        if err.code() != grpc.StatusCode.ABORTED:
                            bad.append(f"reject: {err.code().name} {err.details()}")
                    return
                with lock:
                    outcomes["rejected"] += 1
                    rejected[order_id] = (node, reply)

        def monitor() -> None:
            while not stop.is_set():
                found = oversell_violations(store)
                if found:
                    seen.extend(found)
                stop.wait(0.02)

        threads = [threading.Thread(target=shopper, args=(i,)) for i in range(SHOPPERS)]
        threads += [threading.Thread(target=rejecter, args=o) for o in orders]
        watcher = threading.Thread(target=monitor)
        for thread in threads:
            thread.start()
        watcher.start()
        start.wait()
        for thread in threads:
            thread.join(timeout=180)
        stop.set()
        watcher.join(timeout=30)
        # A caller still waiting would leave its outcome (and the checks below) unfinished.
        stuck = [t.name for t in (*threads, watcher) if t.is_alive()]
        assert not stuck, f"{len(stuck)} thread(s) still running: {stuck[:5]}"

    assert not bad, bad[:5]
    assert not seen, seen[:5]
    assert not oversell_violations(store)
    assert outcomes["rejected"] >= ORDERS // 2, outcomes
    assert outcomes["placed"] > 0, outcomes
    with store.read() as conn:
        for order_id, (node, reply) in rejected.items():
            order = store.get_order(conn, order_id)
            reserved = store.order_reservations(conn, order_id)
            assert reserved == units_of(order.allocation), order_id
            if reply is None:
                continue
            assert all(n != node for n, _ in reserved), (order_id, node, reserved)
            kinds = [kind for _, kind, _ in order.events]
            assert "rejected" in kinds
            if reply.promise_kept:
                assert iso(reply.order.allocation.delivery_date) <= order.promised_date
                assert not reply.order.needs_attention
            else:
                assert reply.order.needs_attention and "flagged" in kinds
    assert store.ledger_mismatches() == []
    store.dispose()
