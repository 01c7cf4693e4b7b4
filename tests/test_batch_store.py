"""The ``oms reoptimise`` job against a real store (SQLite and PostgreSQL), with orders
placed through the real checkout service, and the command line around it.

The book, on ``service_support.hand_network`` with DC-NJ holding no A, ST-PHL
1 A and 5 B, DC-CHI 50 A and no B (Manhattan customers, ground only):

* o1 (1 x A) is placed first: ST-PHL $7.00 + 1 kg x $1.00 + $3.00 = $11.00
  (day 1 + 2 = 3) beats DC-CHI $9.00 + $1.00 + $1.50 = $11.50 (day 0 + 3 = 3).
  Promised day 3.
* o2 (1 x A + 1 x B): PHL's A is gone, so B from DC-NJ ($5.00 + 2 kg x $1.00
  + $2.00 = $9.00, day 2) and A from DC-CHI ($11.50, day 3): $20.50, 2 parcels.
  Promised day 3.

Jointly, o1 takes A from DC-CHI ($11.50, day 3) and o2 gets PHL's A with PHL's
B in one 3 kg parcel ($7.00 + $3.00 + $3.00 = $13.00, day 3): $24.50 in 2
parcels instead of $31.50 in 3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from oms.cli import main
from oms.reoptimise import EVENT, run_job
from oms.store import Store
from oms.v1 import checkout_pb2, common_pb2, fulfilment_pb2
from sourcing.batch import BatchSettings

from service_support import (
    ADMIN,
    Client,
    cents,
    hand_network,
    iso,
    running_server,
    sqlite_url,
)

NETWORK = hand_network(
    {("DC-NJ", "A"): 0, ("ST-PHL", "A"): 1, ("ST-PHL", "B"): 5, ("DC-CHI", "B"): 0}
)
SETTINGS = BatchSettings(candidates_per_sku=None, whole_order_candidates=None, reach=None)


def place(client: Client, lines: dict[str, int]) -> common_pb2.Order:
    quote = client.quote(lines)
    cheapest = next(o for o in quote.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels)
    return client.place(quote.quote_id, cheapest.option_id).order


def place_book(client: Client) -> tuple[common_pb2.Order, common_pb2.Order]:
    o1 = place(client, {"A": 1})
    o2 = place(client, {"A": 1, "B": 1})
    assert [p.node_id for p in o1.allocation.parcels] == ["ST-PHL"]
    assert cents(o1.allocation.cost) == 1100
    assert sorted(p.node_id for p in o2.allocation.parcels) == ["DC-CHI", "DC-NJ"]
    assert cents(o2.allocation.cost) == 2050
    return o1, o2


def get(client: Client, order_id: str) -> common_pb2.Order:
    return client.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order_id)).order


def reserved(store: Store) -> dict[tuple[str, str], int]:
    with store.read() as conn:
        return {(p.node_id, p.sku): p.reserved for p in store.positions(conn) if p.reserved}


def usage(store: Store) -> dict[str, int]:
    from oms import schema as t

    with store.read() as conn:
        rows = conn.execute(t.node_day_usage.select()).all()
    return {row.node_id: int(row.units) for row in rows if row.units}


def job_store(client: Client) -> Store:
    """A second Store on the same database: the job runs apart from the server."""
    return Store(client.store.url, pool_size=2)


def test_the_job_swaps_sources_in_the_store(database_url: str) -> None:
    with running_server(database_url, NETWORK) as client:
        o1, o2 = place_book(client)
        assert reserved(client.store) == {("ST-PHL", "A"): 1, ("DC-NJ", "B"): 1, ("DC-CHI", "A"): 1}
        store = job_store(client)
        try:
            report = run_job(store, settings=SETTINGS)
        finally:
            store.dispose()
        assert (report.orders, report.considered, report.changed) == (2, 2, 2)
        assert (report.cost_before, report.cost_after) == (3_150_000, 2_450_000)
        assert (report.parcels_before, report.parcels_after) == (3, 2)
        assert report.promises_kept == 2 and not report.skipped and not report.excluded

        new1, new2 = get(client, o1.order_id), get(client, o2.order_id)
        assert [p.node_id for p in new1.allocation.parcels] == ["DC-CHI"]
        assert cents(new1.allocation.cost) == 1150
        assert [(p.node_id, len(p.lines)) for p in new2.allocation.parcels] == [("ST-PHL", 2)]
        assert cents(new2.allocation.cost) == 1300
        for old, new in ((o1, new1), (o2, new2)):
            assert new.state == common_pb2.ORDER_STATE_PLACED
            assert new.promised_date == old.promised_date
            assert iso(new.allocation.delivery_date) <= iso(new.promised_date)
            assert new.events[-1].type == EVENT
        assert new2.events[-1].detail.startswith("cost 20.50 -> 13.00, 2 -> 1 parcel(s)")
        # The reservations and each node's capacity use moved with the plans.
        assert reserved(client.store) == {
            ("DC-CHI", "A"): 1,
            ("ST-PHL", "A"): 1,
            ("ST-PHL", "B"): 1,
        }
        assert usage(client.store) == {"DC-CHI": 1, "ST-PHL": 2}
        assert client.store.ledger_mismatches() == []

        # A second run finds nothing left to gain.
        store = job_store(client)
        try:
            again = run_job(store, settings=SETTINGS)
        finally:
            store.dispose()
        assert again.changed == 0 and again.cost_before == again.cost_after == 2_450_000

        # The order goes on through its lifecycle from its new reservations.
        f = client.fulfilment
        f.ReleaseOrder(fulfilment_pb2.ReleaseOrderRequest(order_id=o2.order_id), metadata=ADMIN)
        f.ConfirmShipment(
            fulfilment_pb2.ConfirmShipmentRequest(order_id=o2.order_id), metadata=ADMIN
        )
        assert reserved(client.store) == {("DC-CHI", "A"): 1}
        assert client.store.ledger_mismatches() == []


def interleave(client: Client, action: Callable[[Client], object]) -> tuple[object, ...]:
    """Run the job with ``action`` between its read and its write; return what it reported."""
    store = job_store(client)
    try:
        report = run_job(store, settings=SETTINGS, before_write=lambda: action(client))
    finally:
        store.dispose()
    return report.changed, tuple((s.order_id, s.reason) for s in report.skipped), report


def test_an_order_released_while_the_job_runs_is_not_touched(database_url: str) -> None:
    with running_server(database_url, NETWORK) as client:
        o1, o2 = place_book(client)

        def release_o1(c: Client) -> None:
            c.fulfilment.ReleaseOrder(
                fulfilment_pb2.ReleaseOrderRequest(order_id=o1.order_id), metadata=ADMIN
            )

        changed, skipped, report = interleave(client, release_o1)
        # o1 went to the warehouse with PHL's A: o1 is skipped, and o2's new plan
        # (which needed that A) no longer fits, so o2 is left as it was too.
        assert changed == 0
        assert dict(skipped) == {
            o1.order_id: "RELEASED since it was read",
            o2.order_id: "the stock or capacity it needs changed since read",
        }
        assert report.cost_after == report.cost_before  # type: ignore[attr-defined]
        after1, after2 = get(client, o1.order_id), get(client, o2.order_id)
        assert after1.state == common_pb2.ORDER_STATE_RELEASED
        assert after1.allocation == o1.allocation and after2.allocation == o2.allocation
        assert EVENT not in [e.type for e in (*after1.events, *after2.events)]
        assert reserved(client.store) == {("ST-PHL", "A"): 1, ("DC-NJ", "B"): 1, ("DC-CHI", "A"): 1}
        assert client.store.ledger_mismatches() == []


def test_an_order_cancelled_while_the_job_runs_is_not_touched(database_url: str) -> None:
    with running_server(database_url, NETWORK) as client:
        o1, o2 = place_book(client)

        def cancel_o2(c: Client) -> None:
            c.checkout.CancelOrder(checkout_pb2.CancelOrderRequest(order_id=o2.order_id))

        changed, skipped, _ = interleave(client, cancel_o2)
        # Without o2, o1's move to Chicago would only cost $0.50 more: not written.
        assert changed == 0
        assert dict(skipped) == {
            o2.order_id: "CANCELLED since it was read",
            o1.order_id: "the stock or capacity it needs changed since read",
        }
        after1, after2 = get(client, o1.order_id), get(client, o2.order_id)
        assert after2.state == common_pb2.ORDER_STATE_CANCELLED
        assert after1.allocation == o1.allocation
        assert after1.events[-1].type == "placed"
        assert reserved(client.store) == {("ST-PHL", "A"): 1}
        assert client.store.ledger_mismatches() == []


def test_orders_that_would_already_be_late_are_excluded(database_url: str) -> None:
    with running_server(database_url, NETWORK) as client:
        o1, o2 = place_book(client)
        # Two days later both plans (3 days from release) would miss their promises.
        two_days_later = client.store.clock() + 2 * 86_400
        store = Store(client.store.url, pool_size=2, clock=lambda: two_days_later)
        try:
            report = run_job(store, settings=SETTINGS)
        finally:
            store.dispose()
        assert (report.orders, report.considered, report.changed) == (2, 0, 0)
        assert {s.order_id for s in report.excluded} == {o1.order_id, o2.order_id}
        assert all("after the promise" in s.reason for s in report.excluded)
        assert get(client, o1.order_id).allocation == o1.allocation
        assert get(client, o2.order_id).allocation == o2.allocation


# ------------------------------------------------------------------------------ CLI


@pytest.mark.usefixtures("no_oms_environment")
def test_cli_dry_run_reports_and_writes_nothing_then_a_run_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = sqlite_url(tmp_path)
    with running_server(url, NETWORK) as client:
        o1, o2 = place_book(client)
        argv = ["reoptimise", "--database-url", url, "--no-progress"]
        assert main([*argv, "--dry-run", "--in-process"]) == 0
        out = capsys.readouterr().out
        assert "changed (dry run: none written)  2" in out
        assert "cost before / after" in out and "31.50 / 24.50 (saved 7.00)" in out
        assert "parcels before / after" in out and "3 / 2" in out
        assert "promises kept" in out and "2 of 2" in out
        assert get(client, o1.order_id).allocation == o1.allocation
        assert get(client, o2.order_id).allocation == o2.allocation

        # The real run, on a one-worker Dask LocalCluster.
        assert main([*argv, "--workers", "1"]) == 0
        out = capsys.readouterr().out
        assert "31.50 / 24.50 (saved 7.00)" in out and "2 of 2" in out
        assert [p.node_id for p in get(client, o1.order_id).allocation.parcels] == ["DC-CHI"]
        assert [p.node_id for p in get(client, o2.order_id).allocation.parcels] == ["ST-PHL"]
        assert client.store.ledger_mismatches() == []


def test_a_move_books_the_placement_day_and_frees_the_day_each_unit_used() -> None:
    """Usage moves per (node, day): new units count on the order's placement day, old ones
    leave the day each used. An order placed on 03-04 with 1 unit at DC-NJ had its other
    unit re-sourced to DC-NJ on 03-05; its new plan keeps both at DC-NJ, which puts the
    second on 03-04 too. With another order's unit also on DC-NJ's 03-04 (limit 2) that
    does not fit; counting the old units on the placement day (as before) let it through."""
    from datetime import UTC, datetime

    from oms.reoptimise import OpenOrder, _capacity_delta, _Change, _fits
    from sourcing.model import Location, OrderLine

    placed = datetime(2030, 3, 4, 12, tzinfo=UTC).timestamp()
    order = OpenOrder(
        order_id="o1",
        version=1,
        created_at=placed,
        destination=Location(40.7, -74.0),
        lines=(OrderLine("A", 2),),
        allocation={},
        promised_date="2030-03-07",
        reserved={("DC-NJ", "A"): 1, ("DC-CHI", "A"): 1},
        capacity_used={("DC-NJ", "2030-03-04"): 1, ("DC-CHI", "2030-03-05"): 1},
    )
    new_units = {("DC-NJ", "A"): 2}
    assert _capacity_delta(order, new_units) == {
        ("DC-NJ", "2030-03-04"): 1,
        ("DC-CHI", "2030-03-05"): -1,
    }
    resourced = OpenOrder(
        **{
            **order.__dict__,
            "reserved": {("DC-NJ", "A"): 2},
            "capacity_used": {("DC-NJ", "2030-03-04"): 1, ("DC-NJ", "2030-03-05"): 1},
        }
    )
    # The unit of 03-05 leaves 03-05; both now count on 03-04.
    assert _capacity_delta(resourced, new_units) == {
        ("DC-NJ", "2030-03-04"): 1,
        ("DC-NJ", "2030-03-05"): -1,
    }
    change = _Change(resourced, new_units, {}, 0, "")
    free = {("DC-NJ", "A"): 0}
    limits = {"DC-NJ": 2}
    assert _fits([change], free, limits, {("DC-NJ", "2030-03-04"): 1})
    assert not _fits([change], free, limits, {("DC-NJ", "2030-03-04"): 2})
