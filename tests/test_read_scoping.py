"""Checkout callers read only their own orders (issue 13 item 14), over a real loopback channel.

* ``ListOrders`` shows every customer's orders and addresses: an admin call, even
  while checkout is open (no checkout token) and with the checkout token;
* replaying a known idempotency key with another quote or option answers
  FAILED_PRECONDITION that names nothing of the order the key placed (its id, quote,
  option, address); the same quote and option get the order back, as retries must;
* ``GetOrder``/``CancelOrder`` take the order id as a capability: ids are random and
  appear only in answers to the caller that placed the order.
"""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from oms.v1 import checkout_pb2, common_pb2

from service_support import ADMIN, Client, running_server, sqlite_url

CHECKOUT_TOKEN = "checkout-service-token"
#: Another customer's address (Philadelphia), far from the default NYC.
PHILADELPHIA = common_pb2.Location(latitude=39.9526, longitude=-75.1652)


def everything_in(error: grpc.RpcError) -> str:
    """The message and every detail of an error, as text."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    texts = [error.details() or ""]
    if status is not None:
        for detail in status.details:
            for kind in (error_details_pb2.PreconditionFailure, error_details_pb2.ErrorInfo):
                if detail.Is(kind.DESCRIPTOR):
                    message = kind()
                    detail.Unpack(message)
                    texts.append(str(message))
    return "\n".join(texts)


def test_list_orders_is_an_admin_call_while_checkout_is_open(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        quote = client.quote({"A": 1}, PHILADELPHIA)
        placed = client.place(quote.quote_id, quote.options[0].option_id).order
        for metadata in ((), (("authorization", "Bearer not-the-admin"),)):
            with pytest.raises(grpc.RpcError) as err:
                client.checkout.ListOrders(checkout_pb2.ListOrdersRequest(), metadata=metadata)
            assert err.value.code() in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            )
            assert "admin" in (err.value.details() or "")
            assert placed.order_id not in everything_in(err.value)
        listed = client.checkout.ListOrders(checkout_pb2.ListOrdersRequest(), metadata=ADMIN)
        assert [o.order_id for o in listed.orders] == [placed.order_id]


def test_list_orders_refuses_the_checkout_token(tmp_path: Path) -> None:
    checkout = (("authorization", f"Bearer {CHECKOUT_TOKEN}"),)
    with running_server(sqlite_url(tmp_path), checkout_token=CHECKOUT_TOKEN) as client:
        request = checkout_pb2.ListOrdersRequest()
        with pytest.raises(grpc.RpcError) as err:
            client.checkout.ListOrders(request, metadata=checkout)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert client.checkout.ListOrders(request, metadata=ADMIN).orders == []
        # The rest of checkout still takes the checkout token.
        quote = client.checkout.QuoteDeliveryOptions(
            checkout_pb2.QuoteDeliveryOptionsRequest(
                destination=PHILADELPHIA, lines=[common_pb2.CartLine(sku="A", quantity=1)]
            ),
            metadata=checkout,
        )
        assert quote.options


def _place(client: Client, key: str) -> tuple[checkout_pb2.QuoteDeliveryOptionsResponse, str]:
    quote = client.quote({"A": 1}, PHILADELPHIA)
    return quote, client.place(quote.quote_id, quote.options[0].option_id, key=key).order.order_id


def test_a_replayed_key_tells_another_caller_nothing(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        victim_quote, victim_order = _place(client, key="checkout-42")
        attacker_quote = client.quote({"B": 1})
        with pytest.raises(grpc.RpcError) as err:
            client.place(
                attacker_quote.quote_id, attacker_quote.options[0].option_id, "checkout-42"
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        text = everything_in(err.value)
        assert "idempotency" in text.lower()
        for secret in (victim_order, victim_quote.quote_id, "39.95", "-75.16"):
            assert secret not in text, (secret, text)
        # The key's own option name on another quote does not open it either.
        option = victim_quote.options[0].option_id
        with pytest.raises(grpc.RpcError) as err:
            client.place(attacker_quote.quote_id, option, "checkout-42")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert victim_quote.quote_id not in everything_in(err.value)
        # The caller that placed it (same quote and option) gets its order back.
        again = client.place(victim_quote.quote_id, option, key="checkout-42")
        assert again.order.order_id == victim_order


def test_order_ids_are_unguessable_capabilities(tmp_path: Path) -> None:
    """GetOrder trusts the id like a private link: 128 random bits, never sequential."""
    with running_server(sqlite_url(tmp_path)) as client:
        ids = [_place(client, key=f"k{i}")[1] for i in range(3)]
    for order_id in ids:
        assert re.fullmatch(r"o_[0-9a-f]{32}", order_id), order_id
    assert len(set(ids)) == 3
    assert len({i[:10] for i in ids}) == 3  # no shared, predictable prefix beyond "o_"
