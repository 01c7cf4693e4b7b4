"""``oms reoptimise`` with forward-looking prices (issue 18): at the priced cost when they are on.

On ``service_support.hand_network`` with A held at two nodes only (Manhattan
customers, ground only; ST-PHL holds A only where a test says so):

* o1 (1 x A) is placed while DC-NJ has no A: DC-CHI $9.00 + 1 kg x $1.00 +
  $1.50 = $11.50, day 0 + 3 = 3, promised day 3.
* Then a count finds 1 A at DC-NJ: $5.00 + $1.00 + $2.00 = $8.00, day 2. At
  the reference cost the batch moves o1 onto that unit (saves $3.50).
* A stored price of $5.00 on DC-NJ's A (the short SKU's last unit near
  demand) makes it $13.00 at the priced cost: with prices on the batch leaves
  o1 where it is. A price of $2.00 ($10.00 priced) still lets it move, and
  the order then reports its reference cost, $8.00.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from oms import schema as t
from oms.cli import main
from oms.reoptimise import EVENT, JobReport, run_job
from oms.store import Store
from oms.v1 import checkout_pb2, common_pb2, inventory_pb2
from sourcing.batch import BatchSettings

from service_support import ADMIN, Client, cents, hand_network, iso, running_server, sqlite_url

#: A at DC-NJ (none until counted) and DC-CHI; ST-PHL holds none unless a test counts some.
NETWORK = hand_network({("DC-NJ", "A"): 0, ("ST-PHL", "A"): 0})
SETTINGS = BatchSettings(candidates_per_sku=None, whole_order_candidates=None, reach=None)


def place_one(client: Client) -> common_pb2.Order:
    quote = client.quote({"A": 1})
    cheapest = next(o for o in quote.options if common_pb2.OPTION_LABEL_CHEAPEST in o.labels)
    return client.place(quote.quote_id, cheapest.option_id).order


def count(client: Client, node: str, sku: str, on_hand: int) -> None:
    client.inventory.SetStock(
        inventory_pb2.SetStockRequest(node_id=node, sku=sku, on_hand=on_hand, reason="count"),
        metadata=ADMIN,
    )


def store_prices(
    store: Store,
    prices: dict[tuple[str, str], int],
    *,
    age_s: float = 0.0,
    horizon_days: float = 7.0,
) -> int:
    """A reprice run as ``oms reprice`` writes one (``age_s`` ago): its row and its prices."""
    with store.write() as conn:
        key = conn.execute(
            sa.insert(t.reprice_runs).values(
                computed_at=store.clock() - age_s,
                horizon_days=horizon_days,
                orders_seen=1,
                expected_units=1.0,
                positions=len(prices),
                seconds=0.0,
            )
        ).inserted_primary_key
        assert key is not None
        run_id = int(key[0])
        conn.execute(
            sa.insert(t.opportunity_costs),
            [
                {"run_id": run_id, "node_id": n, "sku": s, "millicents": v}
                for (n, s), v in prices.items()
            ],
        )
    return run_id


def get(client: Client, order_id: str) -> common_pb2.Order:
    return client.checkout.GetOrder(checkout_pb2.GetOrderRequest(order_id=order_id)).order


def job(client: Client, **kwargs: object) -> JobReport:
    """The job on a second Store over the same database (apart from the server)."""
    store = Store(client.store.url, pool_size=2)
    try:
        return run_job(store, settings=SETTINGS, **kwargs)  # type: ignore[arg-type]
    finally:
        store.dispose()


def nodes(order: common_pb2.Order) -> list[str]:
    return [p.node_id for p in order.allocation.parcels]


def test_prices_on_keep_the_protected_unit_that_the_reference_batch_takes(
    database_url: str,
) -> None:
    with running_server(database_url, NETWORK) as client:
        o1 = place_one(client)
        assert nodes(o1) == ["DC-CHI"] and cents(o1.allocation.cost) == 1150
        count(client, "DC-NJ", "A", 1)
        run_id = store_prices(client.store, {("DC-NJ", "A"): 500_000})

        # At the reference cost the batch takes DC-NJ's unit (what it did before prices).
        reference = job(client, dry_run=True)
        assert (reference.considered, reference.changed) == (1, 1)
        assert (reference.cost_before, reference.cost_after) == (1_150_000, 800_000)
        assert reference.price_run is None and "reference cost" in reference.prices

        # With prices on: $8.00 + $5.00 > $11.50, so o1 stays and nothing is written.
        priced = job(client, forward_prices=True)
        assert priced.price_run == run_id and f"reprice run {run_id}" in priced.prices
        assert (priced.considered, priced.changed) == (1, 0)
        assert (priced.cost_before, priced.cost_after) == (1_150_000, 1_150_000)
        assert (priced.opportunity_before, priced.opportunity_after) == (0, 0)
        assert priced.promises_kept == 1 and not priced.skipped
        assert get(client, o1.order_id).allocation == o1.allocation
        assert f"reprice run {run_id}" in priced.table()

        # The reference run (prices off, or forced) writes the move.
        forced = job(client, forward_prices=True, reference_cost=True)
        assert forced.price_run is None and "--reference-cost" in forced.prices
        assert forced.changed == 1 and forced.written == (o1.order_id,)
        moved = get(client, o1.order_id)
        assert nodes(moved) == ["DC-NJ"] and cents(moved.allocation.cost) == 800
        assert client.store.ledger_mismatches() == []


def test_a_price_below_the_saving_still_lets_the_order_move_at_its_reference_cost(
    database_url: str,
) -> None:
    with running_server(database_url, NETWORK) as client:
        o1 = place_one(client)
        count(client, "DC-NJ", "A", 1)
        run_id = store_prices(client.store, {("DC-NJ", "A"): 200_000})
        report = job(client, forward_prices=True)
        assert report.price_run == run_id and report.changed == 1
        # Reference costs in the report and on the order; the price is counted apart.
        assert (report.cost_before, report.cost_after) == (1_150_000, 800_000)
        assert (report.opportunity_before, report.opportunity_after) == (0, 200_000)
        moved = get(client, o1.order_id)
        assert nodes(moved) == ["DC-NJ"] and cents(moved.allocation.cost) == 800
        assert moved.promised_date == o1.promised_date
        assert iso(moved.allocation.delivery_date) <= iso(moved.promised_date)
        assert moved.events[-1].type == EVENT
        assert f"priced with reprice run {run_id}" in moved.events[-1].detail
        assert client.store.ledger_mismatches() == []


def test_prices_on_free_a_protected_unit_within_the_promise_at_a_dearer_reference_cost(
    database_url: str,
) -> None:
    """o1 is placed on ST-PHL's only A ($7.00 + $1.00 + $3.00 = $11.00, day 3); DC-CHI
    ($11.50, day 3) meets the same promise. With PHL's A priced at $1.00, PHL costs $12.00
    priced: the batch frees that unit and o1 ships from Chicago, reported at $11.50 (the
    priced cost fell by $0.50). The write keeps the change because it is judged at the cost
    the batch minimised; at the reference cost it would be a $0.50 loss and be dropped."""
    with running_server(database_url, NETWORK) as client:
        count(client, "ST-PHL", "A", 1)
        o1 = place_one(client)
        assert nodes(o1) == ["ST-PHL"] and cents(o1.allocation.cost) == 1100
        assert job(client).changed == 0  # the reference batch has nothing to gain
        store_prices(client.store, {("ST-PHL", "A"): 100_000})
        report = job(client, forward_prices=True)
        assert report.changed == 1 and report.written == (o1.order_id,) and not report.skipped
        assert (report.cost_before, report.cost_after) == (1_100_000, 1_150_000)
        assert (report.opportunity_before, report.opportunity_after) == (100_000, 0)
        moved = get(client, o1.order_id)
        assert nodes(moved) == ["DC-CHI"] and cents(moved.allocation.cost) == 1150
        assert moved.promised_date == o1.promised_date
        assert client.store.ledger_mismatches() == []


def test_a_promise_still_binds_the_priced_batch(database_url: str) -> None:
    """o1 placed on DC-NJ ($8.00, day 2, promised day 2): however high DC-NJ's price, no
    other node arrives by day 2, so the order stays."""
    with running_server(database_url, NETWORK) as client:
        count(client, "DC-NJ", "A", 1)
        o1 = place_one(client)
        assert nodes(o1) == ["DC-NJ"]
        store_prices(client.store, {("DC-NJ", "A"): 10_000_000})
        report = job(client, forward_prices=True)
        assert report.price_run is not None and report.changed == 0
        assert report.promises_kept == 1
        assert get(client, o1.order_id).allocation == o1.allocation


def test_prices_on_without_any_reprice_run_behave_as_the_reference_batch(
    database_url: str,
) -> None:
    with running_server(database_url, NETWORK) as client:
        o1 = place_one(client)
        count(client, "DC-NJ", "A", 1)
        report = job(client, forward_prices=True)
        assert report.price_run is None and "no reprice run" in report.prices
        assert report.changed == 1
        assert (report.cost_before, report.cost_after) == (1_150_000, 800_000)
        assert nodes(get(client, o1.order_id)) == ["DC-NJ"]
        assert get(client, o1.order_id).events[-1].detail.startswith("cost 11.50 -> 8.00")


def test_prices_past_their_horizon_or_max_age_are_not_used(database_url: str) -> None:
    """A reprice schedule that stopped: last week's prices must not steer today's batch."""
    with running_server(database_url, NETWORK) as client:
        o1 = place_one(client)
        count(client, "DC-NJ", "A", 1)
        # Computed 8 days ago for a 7-day horizon: expired, so the batch runs at the
        # reference cost and takes DC-NJ's unit, as without prices.
        run_id = store_prices(client.store, {("DC-NJ", "A"): 500_000}, age_s=8 * 86_400)
        expired = job(client, forward_prices=True, dry_run=True)
        assert expired.price_run is None
        assert f"reprice run {run_id}" in expired.prices and "expired at" in expired.prices
        assert (expired.changed, expired.cost_after) == (1, 800_000)

        # Two hours old: within its horizon, so used; but not with a one-hour limit.
        run_id = store_prices(client.store, {("DC-NJ", "A"): 500_000}, age_s=7_200)
        fresh = job(client, forward_prices=True, dry_run=True)
        assert fresh.price_run == run_id and fresh.changed == 0
        limited = job(client, forward_prices=True, dry_run=True, price_max_age_s=3_600)
        assert limited.price_run is None and "expired at" in limited.prices
        assert limited.changed == 1
        assert get(client, o1.order_id).allocation == o1.allocation  # dry runs write nothing


@pytest.mark.usefixtures("no_oms_environment")
def test_cli_uses_the_prices_with_oms_forward_prices_and_says_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqlite_url(tmp_path)
    with running_server(url, NETWORK) as client:
        o1 = place_one(client)
        count(client, "DC-NJ", "A", 1)
        store_prices(client.store, {("DC-NJ", "A"): 500_000})
        argv = ["reoptimise", "--database-url", url, "--no-progress", "--in-process"]

        assert main([*argv, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "reference cost (forward prices off)" in out
        assert "changed (dry run: none written)  1" in out

        monkeypatch.setenv("OMS_FORWARD_PRICES", "1")
        assert main([*argv, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "reprice run 1" in out and "1 priced position" in out
        assert "changed (dry run: none written)  0" in out
        assert "priced cost before / after" in out

        assert main([*argv, "--reference-cost"]) == 0
        out = capsys.readouterr().out
        assert "reference cost (--reference-cost)" in out
        assert "11.50 / 8.00 (saved 3.50)" in out
        assert nodes(get(client, o1.order_id)) == ["DC-NJ"]
