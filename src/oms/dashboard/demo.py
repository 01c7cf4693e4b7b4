"""Demo orders for a fresh store, placed through the real checkout, so the first look is not empty.

On a store that holds the demo network and has never seen a quote, the
dashboard places ``count`` orders (a few hundred by default) through
:class:`~oms.checkout.CheckoutServicer` and moves them on with
:class:`~oms.fulfilment.FulfilmentServicer`, the same code the gRPC calls
run, on a store whose clock is set back in time: the orders spread over the
last 30 days, and each is released, shipped, delivered (a few late),
cancelled or rejected by its node (re-sourced, flagged when the promise can
no longer be kept) as its age says. A few more quotes are left unordered
(the conversion rate), DC positions get low-stock thresholds, and a few
inbound receipts are expected. Seeded once per store (a ``network_meta``
mark written first, so two processes never both seed).
"""

from __future__ import annotations

import heapq
import logging
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from oms import schema as t
from oms.checkout import CheckoutServicer
from oms.fulfilment import FulfilmentServicer
from oms.settings import Settings
from oms.store import Store
from oms.v1 import checkout_pb2, common_pb2, fulfilment_pb2
from sourcing.demo import demo_network, demo_order

log = logging.getLogger("oms.dashboard.demo")

SEEDED_MARK = "demo_orders_seeded"
DAY_S = 86_400.0
#: Shoppers' choices, by label (the first option carrying it; else the first option).
CHOICES = (("CHEAPEST", 0.45), ("FASTEST", 0.2), ("BALANCED", 0.2), ("SINGLE_PARCEL", 0.1))


class _Context:
    """The bit of ``grpc.ServicerContext`` the servicers use, for calls made in-process.

    It carries the seeder's own one-off admin token: the fulfilment calls that
    move an order on (ship, deliver) are admin calls, checked in the servicer.
    """

    def __init__(self, admin_token: str) -> None:
        self.metadata = (("authorization", f"Bearer {admin_token}"),)

    def time_remaining(self) -> float | None:
        return None

    def is_active(self) -> bool:
        return True

    def code(self) -> grpc.StatusCode | None:
        return None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RuntimeError(f"{code.name}: {details}")

    def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(f"{status.code.name}: {status.details}")

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


@dataclass(order=True)
class _Step:
    at: float
    seq: int
    action: str = field(compare=False)
    order_id: str = field(compare=False)


def should_seed(store: Store) -> bool:
    """A store with the demo network's nodes and no order yet."""
    with store.read() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(t.orders)).scalar_one():
            return False
        nodes = {row[0] for row in conn.execute(sa.select(t.nodes.c.node_id))}
    return bool(nodes) and nodes == set(demo_network().node_ids)


def _claim(store: Store) -> bool:
    """Write the seeded mark; False if another process wrote it first."""
    try:
        with store.write() as conn:
            conn.execute(sa.insert(t.network_meta).values(key=SEEDED_MARK, value=int(time.time())))
    except IntegrityError:
        return False
    return True


def seed(url: str, count: int, *, seed: int = 17, now: float | None = None) -> int:
    """Place ``count`` demo orders (if the store qualifies); returns how many were placed."""
    clock = [time.time() if now is None else now]
    end = clock[0]
    store = Store(url, pool_size=2, clock=lambda: clock[0])
    try:
        if count <= 0 or not should_seed(store) or not _claim(store):
            return 0
        started = time.perf_counter()
        placed = _Seeder(store, clock, end, np.random.default_rng(seed)).run(count)
        log.info(
            "placed %d demo orders through checkout in %.1f s",
            placed,
            time.perf_counter() - started,
        )
        return placed
    finally:
        store.dispose()


class _Seeder:
    def __init__(self, store: Store, clock: list[float], end: float, rng: np.random.Generator):
        self.store = store
        self.clock = clock
        self.end = end
        self.rng = rng
        # A token that lives as long as the seeder: it is in no settings file or log.
        token = secrets.token_urlsafe(32)
        settings = Settings(database_url=store.url, solver_time_limit_s=0.5, admin_token=token)
        self.checkout = CheckoutServicer(store, settings)
        self.fulfilment = FulfilmentServicer(store, settings)
        self.context: Any = _Context(token)
        #: Calls the service refused, by (action, status): a few are the demo's own doing
        #: (a shopper cancelling what has shipped); the rest would be a defect.
        self.refused: Counter[tuple[str, str]] = Counter()
        self.network = demo_network()
        self.steps: list[_Step] = []
        self.seq = 0

    def _at(self, at: float, action: str, order_id: str = "") -> None:
        self.seq += 1
        heapq.heappush(self.steps, _Step(at, self.seq, action, order_id))

    def run(self, count: int) -> int:
        self._settings()
        # Arrivals over 30 days, denser lately (a growing shop), then the lifecycle of each.
        ages = np.sort(1.0 - self.rng.power(1.6, size=count))[::-1] * 30 * DAY_S
        for age in ages:
            self._at(self.end - float(age), "quote")
        placed = 0
        while self.steps:
            step = heapq.heappop(self.steps)
            if step.at > self.end:
                continue
            self.clock[0] = step.at
            try:
                placed += self._do(step)
            except RuntimeError as exc:  # a refused call: the demo goes on without it
                log.debug("demo %s %s: %s", step.action, step.order_id, exc)
                self.refused[step.action, str(exc).partition(":")[0]] += 1
        if self.refused:
            log.info(
                "demo calls refused: %s",
                ", ".join(f"{a} {code} x{n}" for (a, code), n in sorted(self.refused.items())),
            )
        return placed

    def _settings(self) -> None:
        """Low-stock thresholds at the DCs (a quarter of on hand; nine tenths for the five
        best sellers, so a few alerts show as orders land), and a few receipts due."""
        dcs = [n for n in self.network.node_ids if n.startswith("DC")]
        best = [self.network.sku_ids[i] for i in np.argsort(-self.network.daily_demand)[:5]]
        s = t.stock
        with self.store.write() as conn:
            conn.execute(
                sa.update(s).where(s.c.node_id.in_(dcs)).values(low_stock_threshold=s.c.on_hand / 4)
            )
            conn.execute(
                sa.update(s)
                .where(s.c.node_id.in_(dcs), s.c.sku.in_(best))
                .values(low_stock_threshold=s.c.on_hand * 9 / 10)
            )
            for i, sku in enumerate(self.network.sku_ids[:6]):
                node = dcs[i % len(dcs)]
                due = time.gmtime(self.end + (3 + 2 * i) * DAY_S)
                self.store.upsert_receipt(
                    conn, f"PO-DEMO-{i + 1}", node, sku, 40 + 10 * i, time.strftime("%Y-%m-%d", due)
                )

    def _do(self, step: _Step) -> int:
        if step.action == "quote":
            return self._quote_and_place()
        call: Callable[..., Any]
        order_id = step.order_id
        if step.action == "release":
            call = self.fulfilment.ReleaseOrder
            request: Any = fulfilment_pb2.ReleaseOrderRequest(order_id=order_id)
        elif step.action == "ship":
            call = self.fulfilment.ConfirmShipment
            request = fulfilment_pb2.ConfirmShipmentRequest(order_id=order_id)
        elif step.action == "deliver":
            call = self.fulfilment.ConfirmDelivery
            request = fulfilment_pb2.ConfirmDeliveryRequest(order_id=order_id)
        elif step.action == "cancel":
            call = self.checkout.CancelOrder
            request = checkout_pb2.CancelOrderRequest(order_id=order_id, reason="shopper cancelled")
        else:  # reject: the order's first node refuses it
            with self.store.read() as conn:
                order = self.store.get_order(conn, order_id)
            node = order.allocation.parcels[0].node_id
            call = self.fulfilment.RejectOrder
            request = fulfilment_pb2.RejectOrderRequest(
                order_id=order_id, node_id=node, reason="picker found the bin empty"
            )
        call(request, self.context)
        return 0

    def _quote_and_place(self) -> int:
        order = demo_order(
            self.network, self.rng, int(self.rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
        )
        reply = self.checkout.QuoteDeliveryOptions(
            checkout_pb2.QuoteDeliveryOptionsRequest(
                destination=common_pb2.Location(
                    latitude=order.destination.lat, longitude=order.destination.lon
                ),
                lines=[common_pb2.CartLine(sku=x.sku, quantity=x.qty) for x in order.lines],
                nearest_pickup_stores=1 if self.rng.random() < 0.1 else 0,
            ),
            self.context,
        )
        if not reply.options or self.rng.random() < 0.3:  # browsed, did not buy
            return 0
        option = self._choose(reply.options)
        placed = self.checkout.PlaceOrder(
            checkout_pb2.PlaceOrderRequest(
                quote_id=reply.quote_id, option_id=option, idempotency_key=uuid.uuid4().hex
            ),
            self.context,
        )
        self._plan(placed.order.order_id, placed.order.allocation.delivery_days)
        return 1

    def _choose(self, options: Any) -> str:
        collect = [o for o in options if o.method == common_pb2.FULFILMENT_METHOD_COLLECT]
        if collect and self.rng.random() < 0.5:
            return str(collect[0].option_id)
        labels = [label for label, _ in CHOICES]
        weights = np.array([weight for _, weight in CHOICES])
        want = str(self.rng.choice(labels, p=weights / weights.sum()))
        wanted = common_pb2.OptionLabel.Value(f"OPTION_LABEL_{want}")
        return str(next((o for o in options if wanted in o.labels), options[0]).option_id)

    def _plan(self, order_id: str, delivery_days: int) -> None:
        """What happens to the order next, at which (simulated) times."""
        now = self.clock[0]
        fate = self.rng.random()
        if fate < 0.04:
            self._at(now + self.rng.uniform(0.05, 0.8) * DAY_S, "cancel", order_id)
            return
        if fate < 0.07:
            self._at(now + self.rng.uniform(0.1, 0.6) * DAY_S, "reject", order_id)
        release = now + self.rng.uniform(0.1, 0.5) * DAY_S
        ship = release + self.rng.uniform(0.3, 1.4) * DAY_S
        # Most arrive by the promise; one in ten a day or two late.
        late = self.rng.random() < 0.1
        deliver = now + (max(delivery_days, 1) - self.rng.uniform(0.1, 0.9)) * DAY_S
        if late:
            deliver += self.rng.uniform(1.0, 2.0) * DAY_S
        self._at(release, "release", order_id)
        self._at(ship, "ship", order_id)
        self._at(max(deliver, ship + 0.2 * DAY_S), "deliver", order_id)
