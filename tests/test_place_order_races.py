"""PlaceOrder's guards under lock, in process over a real loopback channel, on both stores.

* Safety stock: the units PlaceOrder re-reads under lock are on hand - safety
  stock - reservations - other quotes' holds. A stock count after the quote
  leaves the quoted node short of that; the order must not take the kept-back
  units (it re-sources within the promise or fails naming the position).
* Idempotency: two *first* attempts with one key, both inside PlaceOrder at
  once (each parked right after its first look for the key, until the other
  has looked too), make one order, and both callers get it; a key used for
  another option is refused, naming the key.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from oms.store import OrderRow
from oms.v1 import checkout_pb2, common_pb2, inventory_pb2
from sourcing.model import UNLIMITED_CAPACITY

from service_support import ADMIN, Client, cents, hand_network, iso, running_server, sqlite_url


def _preconditions(err: grpc.RpcError) -> list[tuple[str, str, str]]:
    """The (type, subject, description) of every PreconditionFailure violation of ``err``."""
    status = rpc_status.from_call(err)
    assert status is not None
    found = []
    for detail in status.details:
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            found.extend((v.type, v.subject, v.description) for v in failure.violations)
    return found


def _start_checkout(client: Client, quote_id: str, option_id: str) -> None:
    client.checkout.StartCheckout(
        checkout_pb2.StartCheckoutRequest(quote_id=quote_id, option_id=option_id), timeout=10
    )


def _position(client: Client, node: str, sku: str) -> inventory_pb2.Availability:
    reply = client.inventory.GetAvailability(
        inventory_pb2.GetAvailabilityRequest(skus=[sku], node_ids=[node]), metadata=ADMIN
    )
    (position,) = reply.positions
    return position


@pytest.mark.parametrize("hold", [True, False], ids=["checkout-holds", "no-holds"])
def test_place_order_leaves_safety_stock_alone(database_url: str, hold: bool) -> None:
    # Newark holds 5 A and keeps 2 back: 3 to promise.
    network = hand_network({("DC-NJ", "A"): 5}, {("DC-NJ", "A"): 2})
    with running_server(database_url, network) as client:
        quote = client.quote({"A": 3})
        # 3 x A to Manhattan: only Newark arrives on day 2 ($5.00 + 3 kg + $2.00 = $10.00);
        # Philadelphia and Chicago take until day 3.
        (option,) = quote.options
        assert [p.node_id for p in option.parcels] == ["DC-NJ"]
        assert (cents(option.cost), option.delivery_days) == (1000, 2)
        if hold:  # the shopper went to the checkout page: the option's units are held
            _start_checkout(client, quote.quote_id, option.option_id)
        assert _position(client, "DC-NJ", "A").available == (0 if hold else 3)
        # A count finds one unit fewer: 4 on hand, 2 kept back, so only 2 may be promised.
        client.inventory.AdjustStock(
            inventory_pb2.AdjustStockRequest(node_id="DC-NJ", sku="A", delta=-1, reason="count"),
            metadata=ADMIN,
        )
        with pytest.raises(grpc.RpcError) as err:
            client.place(quote.quote_id, option.option_id)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _preconditions(err.value) == [("STOCK", "DC-NJ/A", "needs 3 units, 2 available now")]
        position = _position(client, "DC-NJ", "A")
        assert (position.on_hand, position.safety_stock, position.reserved) == (4, 2, 0)


def test_two_first_attempts_with_one_key_make_one_order(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two slots, so that both calls are inside PlaceOrder at once on either store.
    with running_server(database_url, cpu_slots=2, threads=8) as client:
        quote = client.quote({"A": 1})
        option = quote.options[0].option_id
        store = client.store
        look_up = store.find_order_by_key
        both_looked = threading.Barrier(2, timeout=20)
        lock = threading.Lock()
        looks: list[int] = []

        def parked(conn: Any, key: str) -> OrderRow | None:
            found = look_up(conn, key)
            with lock:
                looks.append(len(looks))
                first_two = len(looks) <= 2
            if first_two:
                # Each call's first look (before any write) waits for the other's.
                both_looked.wait()
            return found

        monkeypatch.setattr(store, "find_order_by_key", parked)
        replies: list[str] = []
        errors: list[str] = []

        def attempt() -> None:
            try:
                reply = client.place(quote.quote_id, option, key="checkout-7")
                with lock:
                    replies.append(reply.order.order_id)
            except grpc.RpcError as exc:
                with lock:
                    errors.append(f"{exc.code().name}: {exc.details()}")

        calls = [threading.Thread(target=attempt) for _ in range(2)]
        for call in calls:
            call.start()
        for call in calls:
            call.join(timeout=60)
        assert not [c for c in calls if c.is_alive()]
        assert not both_looked.broken, "the two attempts were never inside PlaceOrder together"
        assert errors == []
        assert len(replies) == 2 and len(set(replies)) == 1, replies
        orders = client.checkout.ListOrders(checkout_pb2.ListOrdersRequest(), metadata=ADMIN).orders
        assert [o.order_id for o in orders] == replies[:1]
        assert _position(client, "DC-NJ", "A").reserved == 1


def test_a_key_used_for_another_option_is_refused_naming_it(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        first = client.quote({"A": 1})
        second = client.quote({"A": 1})
        option = first.options[0].option_id
        placed = client.place(first.quote_id, option, key="checkout-9")
        labels = "/".join(common_pb2.OptionLabel.Name(x)[13:] for x in first.options[0].labels)
        assert [(e.type, e.detail) for e in placed.order.events] == [
            (
                "placed",
                f"{option} ({labels}): 1 parcel(s), promised {iso(first.options[0].delivery_date)}",
            )
        ]
        # The same key again for the same option is a retry: the same order.
        again = client.place(first.quote_id, option, key="checkout-9")
        assert again.order.order_id == placed.order.order_id and not again.resourced
        # Another option of the same quote, or the same option id on another quote: refused.
        for quote_id, option_id in ((first.quote_id, "opt-99"), (second.quote_id, option)):
            with pytest.raises(grpc.RpcError) as err:
                client.place(quote_id, option_id, key="checkout-9")
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            # It names the key, not the quote and option it placed (that would be enough to
            # fetch someone else's order).
            assert err.value.details() == (
                "idempotency key 'checkout-9' was used for another order; "
                "use a new key for each order"
            )
            assert _preconditions(err.value) == [
                ("IDEMPOTENCY_KEY", "checkout-9", "used for another order")
            ]
        orders = client.checkout.ListOrders(checkout_pb2.ListOrdersRequest(), metadata=ADMIN).orders
        assert [o.order_id for o in orders] == [placed.order.order_id]


def test_place_order_counts_other_checkouts_live_holds(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        # Newark's 5 A: Y holds 2, then X holds the other 3 (both only arrive on day 2 there).
        y = client.quote({"A": 2})
        x = client.quote({"A": 3})
        for quote in (y, x):
            assert [p.node_id for p in quote.options[0].parcels] == ["DC-NJ"]
            _start_checkout(client, quote.quote_id, quote.options[0].option_id)
        assert _position(client, "DC-NJ", "A").held == 5
        # A count finds 4: the newest hold (X's) shrinks to what is left, 2.
        client.inventory.AdjustStock(
            inventory_pb2.AdjustStockRequest(node_id="DC-NJ", sku="A", delta=-1, reason="count"),
            metadata=ADMIN,
        )
        # X needs 3 but, Y's live hold counted, only 2 are free: refused, naming the position.
        with pytest.raises(grpc.RpcError) as err:
            client.place(x.quote_id, x.options[0].option_id)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _preconditions(err.value) == [("STOCK", "DC-NJ/A", "needs 3 units, 2 available now")]
        # Y still gets its 2.
        placed = client.place(y.quote_id, y.options[0].option_id)
        assert [p.node_id for p in placed.order.allocation.parcels] == ["DC-NJ"]
        assert _position(client, "DC-NJ", "A").reserved == 2


def test_place_order_checks_the_node_s_capacity_left_today(tmp_path: Path) -> None:
    # Newark ships at most 3 units a day; quotes do not hold capacity, orders use it.
    network = hand_network().replace(capacity=np.array([3, UNLIMITED_CAPACITY, UNLIMITED_CAPACITY]))
    with running_server(sqlite_url(tmp_path), network) as client:
        first = client.quote({"A": 2})
        second = client.quote({"A": 2})
        for quote in (first, second):
            assert [p.node_id for p in quote.options[0].parcels] == ["DC-NJ"]
        client.place(first.quote_id, first.options[0].option_id)
        # 2 of today's 3 are used: the second order's 2 units do not fit, and nothing else
        # arrives by day 2.
        with pytest.raises(grpc.RpcError) as err:
            client.place(second.quote_id, second.options[0].option_id)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _preconditions(err.value) == [
            ("CAPACITY", "DC-NJ", "needs 2 units of today's capacity, 1 left")
        ]
        # One unit still fits today.
        third = client.quote({"A": 1})
        assert [p.node_id for p in third.options[0].parcels] == ["DC-NJ"]
        client.place(third.quote_id, third.options[0].option_id)


def test_a_retry_of_a_re_sourced_order_says_it_was_re_sourced(tmp_path: Path) -> None:
    network = hand_network({("DC-NJ", "A"): 1})
    with running_server(sqlite_url(tmp_path), network, hold_stock=False) as client:
        # 2 x A: cheapest from Philadelphia, day 3; its stock is then counted away.
        quote = client.quote({"A": 2})
        chosen = next(o for o in quote.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels)
        assert [p.node_id for p in chosen.parcels] == ["ST-PHL"]
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="ST-PHL", sku="A", on_hand=0, reason="count"),
            metadata=ADMIN,
        )
        placed = client.place(quote.quote_id, chosen.option_id, key="k-1")
        assert placed.resourced
        assert [(e.type, e.detail) for e in placed.order.events][1] == (
            "resourced",
            "quoted stock changed (ST-PHL/A: needs 2 units, 0 available now); "
            f"now 1 parcel(s) arriving {iso(chosen.delivery_date)}",
        )
        again = client.place(quote.quote_id, chosen.option_id, key="k-1")
        assert again.resourced and again.order.order_id == placed.order.order_id
