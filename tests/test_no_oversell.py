"""No oversell under concurrent load: two server processes, 60 clients, scarce stock.

For each store (SQLite file; the real PostgreSQL, skipped if unreachable)
and each holding policy (checkouts hold the chosen option's stock with
StartCheckout, capped per caller, some abandoning it; or only PlaceOrder
reserves), 60 client threads quote and place carts that together want about
three times the stock, while an admin thread takes units away and some
clients cancel. A monitor samples the store throughout. Afterwards:

* every successful PlaceOrder left an order whose reservations equal its allocation;
* at no sample and not at the end did a position promise more than the
  documented rule lets it: on hand - safety stock - reservations - holds >= 0
  (half the positions keep safety stock; the stock counts take units only from
  the others, since a count may push a position with safety stock below zero);
* every failure is FAILED_PRECONDITION or ABORTED (never UNKNOWN/INTERNAL), and a
  StartCheckout beyond the caller's hold cap RESOURCE_EXHAUSTED (the shopper goes on);
* the ledger sums to on hand at every position.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter

import grpc
import pytest

from oms.store import units_of
from oms.v1 import checkout_pb2, checkout_pb2_grpc, common_pb2, inventory_pb2, inventory_pb2_grpc

from service_support import (
    ADMIN,
    hand_network,
    oversell_violations,
    prepared_store,
    server_processes,
)

CLIENTS = 60
SCARCE = {
    ("DC-NJ", "A"): 3,
    ("ST-PHL", "A"): 5,
    ("DC-CHI", "A"): 7,
    ("DC-NJ", "B"): 2,
    ("DC-CHI", "B"): 4,
}
#: Units kept back: a promise of these would be an oversell as much as one past on hand.
SAFETY = {("ST-PHL", "A"): 1, ("DC-CHI", "A"): 2, ("DC-CHI", "B"): 1}
#: What the stock counts take units from (no safety stock there, see the docstring).
COUNTED = sorted(set(SCARCE) - set(SAFETY))
RACE_OK = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED}


@pytest.mark.parametrize("hold", [True, False], ids=["checkout-holds", "no-holds"])
def test_concurrent_checkouts_never_oversell(database_url: str, hold: bool) -> None:
    network = hand_network(SCARCE, SAFETY)
    store = prepared_store(database_url, network)
    extra = () if hold else ("--no-hold",)
    outcomes: Counter[str] = Counter()
    placed: list[checkout_pb2.PlaceOrderResponse] = []
    cancelled: set[str] = set()
    bad: list[str] = []
    seen_violations: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS + 1)
    stop_monitor = threading.Event()

    with server_processes(database_url, 2, *extra) as target:

        def shopper(i: int) -> None:
            rng = random.Random(i)
            with grpc.insecure_channel(target) as channel:
                checkout = checkout_pb2_grpc.CheckoutServiceStub(channel)
                lines = [common_pb2.CartLine(sku="A", quantity=rng.randint(1, 2))]
                if rng.random() < 0.4:
                    lines.append(common_pb2.CartLine(sku="B", quantity=1))
                request = checkout_pb2.QuoteDeliveryOptionsRequest(
                    destination=common_pb2.Location(
                        latitude=rng.uniform(39.0, 42.0), longitude=rng.uniform(-88.0, -73.5)
                    ),
                    lines=lines,
                )
                start.wait()
                try:
                    quote = checkout.QuoteDeliveryOptions(request, timeout=30)
                except grpc.RpcError as err:
                    with lock:
                        outcomes[f"quote {err.code().name}"] += 1
                        if err.code() not in RACE_OK:
                            bad.append(f"quote: {err.code().name} {err.details()}")
                    return
                option = rng.choice(list(quote.options))
                if hold:
                    checkout_started = checkout_pb2.StartCheckoutRequest(
                        quote_id=quote.quote_id, option_id=option.option_id
                    )
                    try:
                        checkout.StartCheckout(checkout_started, timeout=30)
                    except grpc.RpcError as err:
                        with lock:
                            outcomes[f"hold {err.code().name}"] += 1
                            if err.code() not in RACE_OK | {grpc.StatusCode.RESOURCE_EXHAUSTED}:
                                bad.append(f"hold: {err.code().name} {err.details()}")
                    if rng.random() < 0.15:  # the shopper leaves
                        checkout.AbandonCheckout(
                            checkout_pb2.AbandonCheckoutRequest(quote_id=quote.quote_id),
                            timeout=30,
                        )
                        with lock:
                            outcomes["abandoned"] += 1
                        return
                try:
                    reply = checkout.PlaceOrder(
                        checkout_pb2.PlaceOrderRequest(
                            quote_id=quote.quote_id,
                            option_id=option.option_id,
                            idempotency_key=uuid.uuid4().hex,
                        ),
                        timeout=30,
                    )
                except grpc.RpcError as err:
                    with lock:
                        outcomes[f"place {err.code().name}"] += 1
                        if err.code() not in RACE_OK:
                            bad.append(f"place: {err.code().name} {err.details()}")
                    return
                with lock:
                    outcomes["placed"] += 1
                    placed.append(reply)
                if rng.random() < 0.2:
                    checkout.CancelOrder(
                        checkout_pb2.CancelOrderRequest(order_id=reply.order.order_id), timeout=30
                    )
                    with lock:
                        cancelled.add(reply.order.order_id)

        def shrinker() -> None:
            """Stock counts that find fewer units than the books say, during the rush."""
            with grpc.insecure_channel(target) as channel:
                inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
                start.wait()
                for node, sku in COUNTED * 2:
                    try:
                        inventory.AdjustStock(
                            inventory_pb2.AdjustStockRequest(
                                node_id=node, sku=sku, delta=-1, reason="cycle count"
                            ),
                            metadata=ADMIN,
                            timeout=30,
                        )
                    except grpc.RpcError as err:
                        if err.code() not in RACE_OK:
                            with lock:
                                bad.append(f"adjust: {err.code().name} {err.details()}")

        def monitor() -> None:
            while not stop_monitor.is_set():
                found = oversell_violations(store)
                if found:
                    seen_violations.extend(found)
                stop_monitor.wait(0.02)

        threads = [threading.Thread(target=shopper, args=(i,)) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=shrinker))
        watcher = threading.Thread(target=monitor)
        for thread in threads:
            thread.start()
        watcher.start()
        for thread in threads:
            thread.join(timeout=120)
        stop_monitor.set()
        watcher.join(timeout=30)
        # A client still waiting would leave its outcome (and the checks below) unfinished.
        stuck = [t.name for t in (*threads, watcher) if t.is_alive()]
        assert not stuck, f"{len(stuck)} thread(s) still running: {stuck[:5]}"

    assert not bad, bad[:5]
    assert not seen_violations, seen_violations[:5]
    assert not oversell_violations(store)
    assert outcomes["placed"] > 0, outcomes
    # The carts want ~3x the stock: some shoppers must have lost.
    assert sum(v for k, v in outcomes.items() if k != "placed") > 0, outcomes

    with store.read() as conn:
        for reply in placed:
            order = store.get_order(conn, reply.order.order_id)
            reserved = store.order_reservations(conn, order.order_id)
            if order.order_id in cancelled:
                assert order.state == "CANCELLED" and reserved == {}
            else:
                assert order.state == "PLACED"
                assert reserved == units_of(order.allocation)
        live = [store.get_order(conn, r.order.order_id) for r in placed]
    promised: Counter[str] = Counter()
    for order in live:
        if order.state == "PLACED":
            for (_, sku), qty in units_of(order.allocation).items():
                promised[sku] += qty
    for sku in ("A", "B"):
        free = sum(q - SAFETY.get((n, s), 0) for (n, s), q in SCARCE.items() if s == sku)
        assert promised[sku] <= free
    assert store.ledger_mismatches() == []
    store.dispose()
