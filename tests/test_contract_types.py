"""Money and calendar dates in the contract are google.type.Money and google.type.Date
(issue 13 item 19, DESIGN section 6).

* every money field of ``oms.v1`` is a ``google.type.Money`` and every calendar date a
  ``google.type.Date``: no field of the contract is a date in a string, and
  ``oms.v1.Money`` (integer minor units, which assumed two-decimal currencies) is gone;
* the engine's millicents travel exactly (units + nanos), including negative amounts
  and sub-cent storage credits, over a real loopback channel;
* money the caller sends takes at most five decimals (the engine's millicents) and the
  google.type.Money sign rule; a date the caller sends is a whole, valid calendar date.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2
from google.type import date_pb2, money_pb2
from grpc_status import rpc_status
from hypothesis import given
from hypothesis import strategies as st

from oms.convert import date_proto, millicents_of, money
from oms.v1 import checkout_pb2, common_pb2, fulfilment_pb2, inventory_pb2
from sourcing import evaluate
from sourcing.model import Allocation, Location, Order, OrderLine, ParcelLine, ParcelPlan

from service_support import ADMIN, NYC, Client, hand_network, running_server, sqlite_url

FILES = (checkout_pb2, common_pb2, fulfilment_pb2, inventory_pb2)


def every_field() -> Iterator[tuple[str, FieldDescriptor]]:
    def walk(message: Descriptor) -> Iterator[tuple[str, FieldDescriptor]]:
        for field in message.fields:
            yield f"{message.full_name}.{field.name}", field
        for nested in message.nested_types:
            yield from walk(nested)

    for module in FILES:
        for message in module.DESCRIPTOR.message_types_by_name.values():
            yield from walk(message)


def test_money_and_dates_use_the_google_types() -> None:
    money_fields, date_fields = [], []
    for name, field in every_field():
        kind = field.message_type.full_name if field.message_type is not None else None
        if field.name.endswith("_date"):
            assert kind == "google.type.Date", name
            date_fields.append(name)
        if kind is not None and kind.endswith(".Money"):
            assert kind == "google.type.Money", name
            money_fields.append(name)
        if field.name in ("minor_units", "currency_code"):
            pytest.fail(f"{name}: money outside google.type.Money")
    assert "Money" not in common_pb2.DESCRIPTOR.message_types_by_name
    assert "oms.v1.DeliveryOption.cost" in money_fields
    assert "oms.v1.Rate.per_kg" in money_fields
    assert "oms.v1.Node.storage_cost_per_unit_day" in money_fields
    assert "oms.v1.QuoteDeliveryOptionsResponse.quote_date" in date_fields
    assert "oms.v1.InboundReceipt.expected_date" in date_fields
    assert "oms.v1.Order.promised_date" in date_fields


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_millicents_travel_exactly(amount: int) -> None:
    value = money(amount, "USD")
    assert value.currency_code == "USD"
    # google.type.Money: nanos within +-999,999,999 and of the sign of units.
    assert -999_999_999 <= value.nanos <= 999_999_999
    assert value.units * value.nanos >= 0
    assert millicents_of(value) == amount


def test_money_by_hand() -> None:
    assert money(715_749, "USD") == money_pb2.Money(currency_code="USD", units=7, nanos=157_490_000)
    assert money(-175_000, "EUR") == money_pb2.Money(
        currency_code="EUR", units=-1, nanos=-750_000_000
    )
    assert date_proto("2030-03-04") == date_pb2.Date(year=2030, month=3, day=4)


def as_date(value: date_pb2.Date) -> dt.date:
    return dt.date(value.year, value.month, value.day)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """The hand network with a storage cost whose credit is not a whole cent.

    DC-CHI stores at $0.02345 per unit-day; A sells 7 a day, and DC-CHI holds 50 of it:
    7.142857 days of cover, a credit of 2,345 x 7.142857 = 16,750.0 millicents; B sells
    3 a day: 16.67 days, 2,345 x 16.666667 = 39,083.33 -> 39,083 millicents per unit.
    """
    network = hand_network().replace(
        storage_cost=np.array([0, 0, 2_345]), daily_demand=np.array([7.0, 3.0])
    )
    url = sqlite_url(tmp_path_factory.mktemp("contract-types"))
    with running_server(url, network) as running:
        yield running


def test_a_quote_carries_exact_millicents_and_dates(client: Client) -> None:
    # 3 x B to Chicago itself: only DC-CHI is near; its credit is sub-cent.
    chicago = common_pb2.Location(latitude=41.8781, longitude=-87.6298)
    reply = client.quote({"B": 3}, chicago)
    network = hand_network().replace(
        storage_cost=np.array([0, 0, 2_345]), daily_demand=np.array([7.0, 3.0])
    )
    order = Order(Location(41.8781, -87.6298), (OrderLine("B", 3),))
    for option in reply.options:
        cost = millicents_of(option.cost)
        parts = [
            millicents_of(getattr(option.breakdown, k))
            for k in ("shipping", "handling", "storage_credit")
        ]
        assert cost == parts[0] + parts[1] - parts[2] == millicents_of(option.breakdown.total)
        assert cost % 1000 != 0 or parts[2] % 1000 != 0  # sub-cent amounts survive
        plan = Allocation(
            tuple(
                ParcelPlan(
                    p.node_id,
                    p.service,
                    tuple(ParcelLine(pl.line_index, pl.sku, pl.quantity) for pl in p.lines),
                )
                for p in option.parcels
            )
        )
        assert evaluate(network, order, plan).cost == cost
        quoted_on = as_date(reply.quote_date)
        assert as_date(option.delivery_date) == quoted_on + dt.timedelta(option.delivery_days)
        for parcel in option.parcels:
            assert as_date(parcel.arrival_date) == quoted_on + dt.timedelta(parcel.arrival_days)
    placed = client.place(reply.quote_id, reply.options[0].option_id).order
    assert placed.promised_date == reply.options[0].delivery_date


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        (money_pb2.Money(units=1, nanos=5), "value_of_day.nanos", "5 decimals"),
        (money_pb2.Money(units=1, nanos=-500_000_000), "value_of_day.nanos", "sign"),
        (money_pb2.Money(units=0, nanos=1_000_000_000), "value_of_day.nanos", "999,999,999"),
        (money_pb2.Money(units=-2), "value_of_day", "negative"),
        (money_pb2.Money(units=1, currency_code="EUR"), "value_of_day.currency_code", "USD"),
    ],
)
def test_bad_money_names_the_field(
    client: Client, value: money_pb2.Money, field: str, reason: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        client.quote({"A": 1}, NYC, value_of_day=value)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(caught.value)
    assert field in violations and reason in violations[field], violations


def test_value_of_day_takes_five_decimals(client: Client) -> None:
    reply = client.quote({"A": 1}, NYC, value_of_day=money_pb2.Money(units=1, nanos=234_560_000))
    assert reply.options


def test_rates_and_costs_take_five_decimals(tmp_path: Path) -> None:
    with running_server(sqlite_url(tmp_path)) as client:
        client.inventory.UpsertNodes(
            inventory_pb2.UpsertNodesRequest(
                nodes=[
                    inventory_pb2.Node(
                        node_id="DC-NJ",
                        kind=inventory_pb2.NODE_KIND_DC,
                        location=common_pb2.Location(latitude=40.7357, longitude=-74.1724),
                        handling_days=1,
                        handling_cost=money_pb2.Money(
                            currency_code="USD", units=2, nanos=123_450_000
                        ),
                        storage_cost_per_unit_day=money_pb2.Money(nanos=4_000_000),
                    )
                ]
            ),
            metadata=ADMIN,
        )
        client.inventory.UpsertRateCard(
            inventory_pb2.UpsertRateCardRequest(
                rates=[
                    inventory_pb2.Rate(
                        service="ground",
                        zone="1",
                        base_price=money_pb2.Money(units=5),
                        per_kg=money_pb2.Money(nanos=463_600_000),
                        transit_days=1,
                    )
                ]
            ),
            metadata=ADMIN,
        )
        catalog = client.store.catalog()
        n = catalog.node_ids.index("DC-NJ")
        assert int(catalog.handling_cost[n]) == 212_345
        assert int(catalog.storage_cost[n]) == 400
        assert int(catalog.per_kg[catalog.service_ids.index("ground"), 0]) == 46_360
        with pytest.raises(grpc.RpcError) as caught:
            client.inventory.UpsertRateCard(
                inventory_pb2.UpsertRateCardRequest(
                    rates=[
                        inventory_pb2.Rate(
                            service="ground",
                            zone="1",
                            base_price=money_pb2.Money(units=5),
                            per_kg=money_pb2.Money(nanos=463_601_000),
                        )
                    ]
                ),
                metadata=ADMIN,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "rates[0].per_kg.nanos" in field_violations(caught.value)


def test_receipt_dates_are_calendar_dates(client: Client) -> None:
    def upsert(expected: date_pb2.Date) -> inventory_pb2.UpsertInboundReceiptsResponse:
        return client.inventory.UpsertInboundReceipts(
            inventory_pb2.UpsertInboundReceiptsRequest(
                receipts=[
                    inventory_pb2.InboundReceipt(
                        receipt_id="PO-1",
                        node_id="DC-NJ",
                        sku="A",
                        quantity=3,
                        expected_date=expected,
                    )
                ]
            ),
            metadata=ADMIN,
        )

    saved = upsert(date_pb2.Date(year=2030, month=3, day=4))
    assert saved.receipts[0].expected_date == date_pb2.Date(year=2030, month=3, day=4)
    for bad in (
        date_pb2.Date(year=2030, month=2, day=30),
        date_pb2.Date(year=2030, month=3),  # a month, not a day
        date_pb2.Date(),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            upsert(bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "receipts[0].expected_date" in field_violations(caught.value)
