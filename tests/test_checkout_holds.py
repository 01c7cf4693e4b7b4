"""Browsing never makes stock unpromisable; checkouts hold briefly, capped (issue 13 item 2).

Over a real loopback channel on the hand network (DESIGN section 4):

* quotes hold nothing: after a burst of quote-only calls (including an anonymous
  ``allow_partial`` quote for 1,000,000 units) every position is still promisable in
  full, and a quote for all of a SKU's free stock is still answered in full;
* a caller that times out leaves nothing behind;
* ``StartCheckout(quote, option)`` holds only that option's units, for a short TTL
  (never past the quote's expiry), one live hold per quote; ``PlaceOrder`` turns it
  into the order's reservation, ``AbandonCheckout`` and expiry release it;
* holds are capped per caller (a small cap for anonymous callers, keyed by address;
  a larger one per client of a checkout token), with RESOURCE_EXHAUSTED and a
  ``QuotaFailure`` beyond it, also under concurrent calls on PostgreSQL;
* ``hold_stock`` off: StartCheckout holds nothing and says so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from oms import schema
from oms.v1 import checkout_pb2, common_pb2, inventory_pb2

from service_support import (
    ADMIN,
    Client,
    hand_network,
    oversell_violations,
    postgres_database,
    running_server,
    sqlite_url,
)

CHECKOUT_TOKEN = "checkout-backend-token"
CHICAGO = common_pb2.Location(latitude=41.8781, longitude=-87.6298)


def positions(client: Client) -> dict[tuple[str, str], inventory_pb2.Availability]:
    reply = client.inventory.GetAvailability(
        inventory_pb2.GetAvailabilityRequest(skus=["A", "B"]), metadata=ADMIN
    )
    return {(p.node_id, p.sku): p for p in reply.positions}


def held(client: Client) -> int:
    return sum(p.held for p in positions(client).values())


def hold_rows(client: Client) -> list[tuple[str | None, int]]:
    r = schema.reservations
    with client.store.read() as conn:
        rows = conn.execute(sa.select(r.c.quote_id, r.c.qty).where(r.c.order_id.is_(None)))
        return [(q, int(n)) for q, n in rows]


def start(
    client: Client, quote_id: str, option_id: str, **call: object
) -> checkout_pb2.StartCheckoutResponse:
    request = checkout_pb2.StartCheckoutRequest(quote_id=quote_id, option_id=option_id)
    return client.checkout.StartCheckout(request, timeout=10, **call)  # type: ignore[arg-type]


def units_of(option: common_pb2.DeliveryOption) -> dict[tuple[str, str], int]:
    units: dict[tuple[str, str], int] = {}
    for parcel in option.parcels:
        for line in parcel.lines:
            key = (parcel.node_id, line.sku)
            units[key] = units.get(key, 0) + line.quantity
    return units


# ----------------------------------------------------------------- browsing


def test_browsing_never_makes_stock_unpromisable(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        before = {k: (p.on_hand, p.available) for k, p in positions(client).items()}
        carts = [{"A": 3}, {"B": 2}, {"A": 5, "B": 5}, {"A": 40}, {"B": 50}]
        for i in range(60):
            client.quote(
                carts[i % len(carts)],
                CHICAGO if i % 2 else common_pb2.Location(latitude=40.7128, longitude=-74.0060),
            )
        greedy = client.quote({"A": 1_000_000}, allow_partial=True)
        assert greedy.shortfall  # it covers what there is, and holds none of it
        after = positions(client)
        assert all(p.held == 0 for p in after.values())
        assert {k: (p.on_hand, p.available) for k, p in after.items()} == before
        # Every SKU is still promisable in full, in one order each: all 58 A and all 53 B
        # (60 and 55 on hand; Chicago keeps 2 of each back as safety stock).
        for sku, total in (("A", 58), ("B", 53)):
            assert total == sum(a for (_, s), (_, a) in before.items() if s == sku)
            reply = client.quote({sku: total})
            assert reply.options and not reply.shortfall
            option = reply.options[0]
            assert sum(units_of(option).values()) == total
            client.place(reply.quote_id, option.option_id)
        assert all(p.available == 0 for p in positions(client).values())
        assert oversell_violations(client.store) == []


def test_a_caller_that_timed_out_leaves_nothing_behind(tmp_path: Path) -> None:
    """The quote (and a checkout hold) is written after the caller has gone: nothing stays."""
    with running_server(sqlite_url(tmp_path)) as client:
        quote = client.quote({"A": 2})
        option = quote.options[0].option_id
        for call in (
            lambda: client.checkout.QuoteDeliveryOptions(
                checkout_pb2.QuoteDeliveryOptionsRequest(
                    destination=CHICAGO, lines=[common_pb2.CartLine(sku="A", quantity=4)]
                ),
                timeout=0.3,
            ),
            lambda: client.checkout.StartCheckout(
                checkout_pb2.StartCheckoutRequest(quote_id=quote.quote_id, option_id=option),
                timeout=0.3,
            ),
        ):
            # Keep the store's writer busy past the caller's deadline.
            with client.store.write():
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                time.sleep(0.2)
            time.sleep(0.5)  # the server finishes its work once the writer is free
            assert hold_rows(client) == [] and held(client) == 0


# ---------------------------------------------------------------- checkout holds


def test_start_checkout_holds_only_the_chosen_option_until_the_order(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        # Two options on different stock: delivery from DC-NJ, or collect at ST-PHL (its own).
        quote = client.quote({"A": 2}, pickup_store_ids=["ST-PHL"])
        assert {tuple(units_of(o)) for o in quote.options} == {
            (("DC-NJ", "A"),),
            (("ST-PHL", "A"),),
        }
        chosen = quote.options[-1]
        before = time.time()
        reply = start(client, quote.quote_id, chosen.option_id)
        assert reply.stock_held
        assert {(h.node_id, h.sku): h.quantity for h in reply.held} == units_of(chosen)
        # A short hold (the server's hold_ttl_s, 180 s by default), within the quote's life.
        expires = reply.hold_expire_time.ToNanoseconds() / 1e9
        assert before + 170 <= expires <= time.time() + 180
        assert expires <= quote.expire_time.ToNanoseconds() / 1e9
        by_position = {k: p.held for k, p in positions(client).items() if p.held}
        assert by_position == units_of(chosen)
        # Switching option moves the hold: one live hold per quote.
        other = quote.options[0]
        assert start(client, quote.quote_id, other.option_id).stock_held
        assert {k: p.held for k, p in positions(client).items() if p.held} == units_of(other)
        order = client.place(quote.quote_id, other.option_id).order
        assert held(client) == 0
        reserved = {k: p.reserved for k, p in positions(client).items() if p.reserved}
        assert reserved == units_of(order.allocation)


def test_abandon_and_expiry_release_the_hold(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), hold_ttl_s=0.5) as client:
        quote = client.quote({"A": 2})
        option = quote.options[0].option_id
        assert start(client, quote.quote_id, option).stock_held
        assert held(client) == 2
        released = client.checkout.AbandonCheckout(
            checkout_pb2.AbandonCheckoutRequest(quote_id=quote.quote_id)
        )
        assert released.released_units == 2 and held(client) == 0
        assert start(client, quote.quote_id, option).stock_held
        time.sleep(0.7)
        assert held(client) == 0
        # The quote itself lives on (900 s): the order is still placed.
        assert client.place(quote.quote_id, option).order.state == common_pb2.ORDER_STATE_PLACED
        # Abandoning a used or unknown quote: nothing to release / NOT_FOUND.
        again = client.checkout.AbandonCheckout(
            checkout_pb2.AbandonCheckoutRequest(quote_id=quote.quote_id)
        )
        assert again.released_units == 0
        with pytest.raises(grpc.RpcError) as caught:
            client.checkout.AbandonCheckout(checkout_pb2.AbandonCheckoutRequest(quote_id="q_nope"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_start_checkout_refuses_used_expired_and_unknown(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), quote_ttl_s=1.0) as client:
        quote = client.quote({"A": 1})
        option = quote.options[0].option_id
        for quote_id, option_id, code in (
            ("q_nope", "opt-1", grpc.StatusCode.NOT_FOUND),
            (quote.quote_id, "opt-99", grpc.StatusCode.NOT_FOUND),
            ("", "opt-1", grpc.StatusCode.INVALID_ARGUMENT),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                start(client, quote_id, option_id)
            assert caught.value.code() == code
        client.place(quote.quote_id, option)
        with pytest.raises(grpc.RpcError) as caught:
            start(client, quote.quote_id, option)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "already used" in (caught.value.details() or "")
        late = client.quote({"A": 1})
        time.sleep(1.1)
        with pytest.raises(grpc.RpcError) as caught:
            start(client, late.quote_id, late.options[0].option_id)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "expired" in (caught.value.details() or "")
        assert held(client) == 0


def test_stock_gone_means_no_hold_and_place_order_still_resources(tmp_path: Path) -> None:
    network = hand_network({("DC-NJ", "A"): 1})
    with running_server(sqlite_url(tmp_path), network) as client:
        quote = client.quote({"A": 2})
        cheapest = next(
            o for o in quote.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels
        )  # both from Philadelphia
        client.inventory.SetStock(
            inventory_pb2.SetStockRequest(node_id="ST-PHL", sku="A", on_hand=1, reason="count"),
            metadata=ADMIN,
        )
        reply = start(client, quote.quote_id, cheapest.option_id)
        assert not reply.stock_held and not reply.held
        assert [(s.node_id, s.sku, s.needed, s.available) for s in reply.unavailable] == [
            ("ST-PHL", "A", 2, 1)
        ]
        assert held(client) == 0
        assert client.place(quote.quote_id, cheapest.option_id).resourced


# --------------------------------------------------------------------- caps


def quota_failure(error: grpc.RpcError) -> error_details_pb2.QuotaFailure:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            return failure
    raise AssertionError("no QuotaFailure detail")


def test_anonymous_callers_get_a_small_cap(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), hold_units_anonymous=3) as client:
        # The greedy browser: 1,000,000 units allowed partial; the option takes all 60 A.
        greedy = client.quote({"A": 1_000_000}, allow_partial=True)
        with pytest.raises(grpc.RpcError) as caught:
            start(client, greedy.quote_id, greedy.options[0].option_id)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        (violation,) = quota_failure(caught.value).violations
        assert "anonymous" in violation.subject and "3" in violation.description
        assert held(client) == 0
        first, second = client.quote({"A": 2}), client.quote({"B": 2})
        assert start(client, first.quote_id, first.options[0].option_id).stock_held
        with pytest.raises(grpc.RpcError) as caught:
            start(client, second.quote_id, second.options[0].option_id)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Re-holding the same quote replaces its hold: it does not count twice.
        assert start(client, first.quote_id, first.options[0].option_id).stock_held
        client.checkout.AbandonCheckout(
            checkout_pb2.AbandonCheckoutRequest(quote_id=first.quote_id)
        )
        assert start(client, second.quote_id, second.options[0].option_id).stock_held
        assert held(client) == 2


def test_each_client_of_a_checkout_token_has_its_own_cap(tmp_path: Path) -> None:
    with running_server(
        sqlite_url(tmp_path),
        checkout_token=CHECKOUT_TOKEN,
        hold_units_per_caller=4,
        hold_units_anonymous=1,
    ) as client:

        def as_client(client_id: str) -> tuple[tuple[str, str], ...]:
            return (("authorization", f"Bearer {CHECKOUT_TOKEN}"), ("x-client-id", client_id))

        def quote(lines: dict[str, int], who: str) -> checkout_pb2.QuoteDeliveryOptionsResponse:
            return client.checkout.QuoteDeliveryOptions(
                checkout_pb2.QuoteDeliveryOptionsRequest(
                    destination=CHICAGO,
                    lines=[common_pb2.CartLine(sku=s, quantity=q) for s, q in lines.items()],
                ),
                metadata=as_client(who),
                timeout=10,
            )

        for who in ("shopper-1", "shopper-2"):
            q = quote({"A": 4}, who)
            assert start(client, q.quote_id, q.options[0].option_id, metadata=as_client(who))
        q = quote({"B": 1}, "shopper-1")
        with pytest.raises(grpc.RpcError) as caught:
            start(client, q.quote_id, q.options[0].option_id, metadata=as_client("shopper-1"))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert held(client) == 8


def test_hold_stock_off_holds_nothing(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path), hold_stock=False) as client:
        quote = client.quote({"A": 2})
        reply = start(client, quote.quote_id, quote.options[0].option_id)
        assert not reply.stock_held and not reply.held and not reply.unavailable
        assert held(client) == 0


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from postgres_database()


def test_concurrent_holds_of_one_caller_never_pass_the_cap_on_postgresql(pg_url: str) -> None:
    with running_server(pg_url, hold_units_anonymous=3) as client:
        quotes = [client.quote({"B": 1}, CHICAGO) for _ in range(8)]
        barrier = threading.Barrier(len(quotes))

        def attempt(quote: checkout_pb2.QuoteDeliveryOptionsResponse) -> str:
            barrier.wait()
            try:
                return "held" if start(client, quote.quote_id, "opt-1").stock_held else "none"
            except grpc.RpcError as exc:
                return exc.code().name

        with ThreadPoolExecutor(len(quotes)) as pool:
            outcomes = list(pool.map(attempt, quotes))
        assert sorted(outcomes) == ["RESOURCE_EXHAUSTED"] * 5 + ["held"] * 3
        assert held(client) == 3
        assert oversell_violations(client.store) == []


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:50123", "127.0.0.1"),
        ("ipv4:10.1.2.3:1", "10.1.2.3"),
        ("ipv6:[::1]:50123", "::1"),
        ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
        ("unix:/tmp/oms.sock", "unix:/tmp/oms.sock"),
    ],
)
def test_anonymous_callers_are_keyed_by_address_not_port(peer: str, address: str) -> None:
    from oms.holds import peer_address

    assert peer_address(peer) == address
