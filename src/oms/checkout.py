"""CheckoutService: quote delivery options, hold a checkout's stock briefly, place orders
on them, read and cancel orders.

A quote is solved on a snapshot of live stock (reservations and checkout
holds subtracted) and stored with its options; it holds no stock, so browsing
never makes stock unpromisable (DESIGN section 4). StartCheckout holds the
chosen option's units for a few minutes, capped per caller (:mod:`oms.holds`).
PlaceOrder re-checks the chosen option's units under lock; if they are gone it
re-sources within the promised delivery date, else fails with
FAILED_PRECONDITION naming each position that changed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any

import grpc

from oms import paging
from oms.admission import Admission, admitted
from oms.convert import (
    PROTO_TO_STATE,
    date_proto,
    day_after,
    days_between,
    millicents_of,
    option_proto,
    order_proto,
    plan_of,
    shipment_proto,
    timestamp,
    today,
)
from oms.deadlines import solver_budget
from oms.errors import Aborted, FailedPrecondition, NotFound, Precondition, echo
from oms.holds import caller_of
from oms.metrics import observe_solver
from oms.reprice import LatestPrices
from oms.settings import Settings
from oms.shipping import Shipping
from oms.status import rpc
from oms.store import (
    CartLine,
    Catalog,
    OrderRow,
    Plan,
    QuoteRequest,
    QuoteRow,
    Store,
    check_placeable,
    units_of,
)
from oms.store import shipment_records as sh
from oms.v1 import checkout_pb2, checkout_pb2_grpc, common_pb2
from oms.validation import Violations
from sourcing import QuoteSettings, quote
from sourcing.errors import ShortageError
from sourcing.model import MILLICENTS_PER_CENT, Location, NodeKind, Order, OrderLine
from sourcing.orders import MAX_ORDER_LINES

log = logging.getLogger("oms.checkout")

#: Time kept back from the caller's deadline for reading stock and writing the quote.
STORE_RESERVE_S = 0.010
MAX_LINE_QUANTITY = 1_000_000
#: Caps a caller may put on every option. No real cart ships in more than 100 parcels
#: (the solver never uses more than one per node), and a promise more than a year
#: out is not a delivery date; anything larger is a mistake, not a wish.
MAX_PARCELS = 100
MAX_DELIVERY_DAYS = 365


def order_from_lines(
    v: Violations,
    catalog: Catalog,
    destination_field: str,
    has_destination: bool,
    destination: common_pb2.Location,
    lines: Any,
) -> Order:
    """Validate a cart against the catalog; every bad field is reported at once."""
    v.location(destination_field, has_destination, destination)
    if len(lines) == 0:
        v.add("lines", "the cart is empty")
    if len(lines) > MAX_ORDER_LINES:
        # Counted before anyone looks at a line: 200,000 bad lines are one violation.
        v.add("lines", f"{len(lines)} lines exceed the limit of {MAX_ORDER_LINES}")
        v.raise_if_any()
    for i, line in enumerate(lines):
        if not line.sku:
            v.add(f"lines[{i}].sku", "is required")
        elif line.sku not in catalog.sku_index:
            v.add(f"lines[{i}].sku", f"unknown SKU {echo(line.sku)}")
        if line.quantity <= 0:
            v.add(f"lines[{i}].quantity", f"must be positive, got {line.quantity}")
        elif line.quantity > MAX_LINE_QUANTITY:
            v.add(f"lines[{i}].quantity", f"must be at most {MAX_LINE_QUANTITY}")
    v.raise_if_any()
    return Order(
        destination=Location(destination.latitude, destination.longitude),
        lines=tuple(OrderLine(line.sku, int(line.quantity)) for line in lines),
    )


def _refuse_if_expired(context: grpc.ServicerContext) -> None:
    """Shed work whose caller has already given up (it waited too long in the queue)."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the call ran")


class CheckoutServicer(checkout_pb2_grpc.CheckoutServiceServicer):
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.admission = Admission(settings.solver_slots)
        # Forward-looking prices (oms reprice), when turned on: read from the latest run.
        self.prices = (
            LatestPrices(
                store, settings.forward_prices_refresh_s, settings.forward_prices_max_age_s
            )
            if settings.forward_prices
            else None
        )

    # -- quotes -----------------------------------------------------------------

    def _solver_settings(
        self, request: checkout_pb2.QuoteDeliveryOptionsRequest, context: grpc.ServicerContext
    ) -> QuoteSettings:
        budget = solver_budget(self.settings.solver_time_limit_s, STORE_RESERVE_S)
        value_of_day = (
            millicents_of(request.value_of_day)  # checked by _valid_quote_request
            if request.HasField("value_of_day")
            else self.settings.value_of_day_cents * MILLICENTS_PER_CENT
        )
        return QuoteSettings(
            value_of_day=value_of_day,
            allow_partial=request.allow_partial,
            max_parcels=request.max_parcels or None,
            latest_day=request.latest_delivery_days or None,
            time_limit_s=budget,
            num_workers=1,
            should_stop=lambda: not context.is_active(),
            pickup_stores=tuple(request.pickup_store_ids),
            nearest_stores=request.nearest_pickup_stores,
            allow_backorder=request.allow_backorder,
            opportunity=self.prices.current() if self.prices is not None else None,
        )

    def _valid_quote_request(
        self, request: checkout_pb2.QuoteDeliveryOptionsRequest, catalog: Catalog
    ) -> Order:
        """The cart as an :class:`Order`, or every bad field at once (INVALID_ARGUMENT)."""
        v = Violations()
        if not catalog.usable:
            raise FailedPrecondition(
                "the network is empty: load one with 'oms load' or the InventoryService",
                [Precondition("NETWORK", "nodes", "no nodes, zones or rates loaded")],
            )
        for field, cap in (
            ("max_parcels", MAX_PARCELS),
            ("latest_delivery_days", MAX_DELIVERY_DAYS),
        ):
            value = getattr(request, field)
            if value < 0:
                v.add(field, f"must not be negative, got {value}")
            elif value > cap:
                v.add(field, f"must be at most {cap} (0 means no cap), got {value}")
        if request.HasField("value_of_day"):
            v.money("value_of_day", request.value_of_day, self.settings.currency)
        check_pickup_stores(v, catalog, request)
        return order_from_lines(
            v,
            catalog,
            "destination",
            request.HasField("destination"),
            request.destination,
            request.lines,
        )

    @rpc
    @admitted
    def QuoteDeliveryOptions(
        self, request: checkout_pb2.QuoteDeliveryOptionsRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.QuoteDeliveryOptionsResponse:
        _refuse_if_expired(context)
        # One read transaction for the catalog check and the stock the solver sees.
        with self.store.read() as conn:
            catalog = self.store.catalog(conn)
            order = self._valid_quote_request(request, catalog)
            network = self.store.network_for(conn, catalog, [line.sku for line in order.lines])
            if request.allow_backorder:
                network = self.store.with_receipts(conn, network, today(self.store.clock()))
        solver_settings = self._solver_settings(request, context)
        result = quote(network, order, solver_settings)
        observe_solver(result.stats.seconds)
        if not context.is_active():
            context.abort(grpc.StatusCode.CANCELLED, "the caller cancelled the quote")
        plans = [plan_of(o, f"opt-{i + 1}") for i, o in enumerate(result.options)]
        asked = QuoteRequest(
            lat=order.destination.lat,
            lon=order.destination.lon,
            lines=tuple(CartLine(line.sku, line.qty) for line in order.lines),
            allow_partial=solver_settings.allow_partial,
            max_parcels=solver_settings.max_parcels,
            latest_day=solver_settings.latest_day,
            value_of_day=solver_settings.value_of_day,
            allow_backorder=solver_settings.allow_backorder,
        )
        saved = self.store.save_quote(
            "q_" + uuid.uuid4().hex,
            asked,
            plans,
            self.settings.quote_ttl_s,
            still_wanted=context.is_active,
        )
        return checkout_pb2.QuoteDeliveryOptionsResponse(
            quote_id=saved.quote_id,
            expire_time=timestamp(saved.expires_at),
            quote_date=date_proto(saved.quote_date),
            options=[option_proto(p, saved.quote_date, self.settings.currency) for p in plans],
            shortfall=[
                common_pb2.Shortfall(
                    line_index=s.line, sku=s.sku, requested=s.requested, covered=s.covered
                )
                for s in result.shortfall
            ],
            solver_ms=result.stats.seconds * 1000.0,
        )

    # -- checkout holds ---------------------------------------------------------

    @rpc
    def StartCheckout(
        self, request: checkout_pb2.StartCheckoutRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.StartCheckoutResponse:
        v = Violations()
        v.require_id("quote_id", request.quote_id)
        v.require_id("option_id", request.option_id)
        v.raise_if_any()
        with self.store.read() as conn:
            quote_row = self.store.get_quote(conn, request.quote_id)
        option = placeable_option(quote_row, request.option_id, self.store.clock())
        if not self.settings.hold_stock:
            return checkout_pb2.StartCheckoutResponse(stock_held=False)
        caller = caller_of(context, self.settings)
        hold = self.store.hold_option(
            quote_row,
            option,
            holder=caller.key,
            holder_name=caller.name,
            cap=caller.cap(self.settings),
            ttl_s=self.settings.hold_ttl_s,
            still_wanted=context.is_active,
        )
        reply = checkout_pb2.StartCheckoutResponse(
            stock_held=bool(hold.units),
            held=[
                checkout_pb2.PositionUnits(node_id=node, sku=sku, quantity=qty)
                for (node, sku), qty in hold.units.items()
            ],
            unavailable=[
                checkout_pb2.UnavailableUnits(
                    node_id=node, sku=sku, needed=needed, available=available
                )
                for (node, sku), (needed, available) in hold.unavailable.items()
            ],
        )
        if hold.expires_at is not None:
            reply.hold_expire_time.CopyFrom(timestamp(hold.expires_at))
        return reply

    @rpc
    def AbandonCheckout(
        self, request: checkout_pb2.AbandonCheckoutRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.AbandonCheckoutResponse:
        v = Violations()
        v.require_id("quote_id", request.quote_id)
        v.raise_if_any()
        released = self.store.release_holds(request.quote_id)
        return checkout_pb2.AbandonCheckoutResponse(released_units=released)

    # -- orders -----------------------------------------------------------------

    def _order_response(self, row: OrderRow) -> common_pb2.Order:
        return order_proto(row, row.allocation.start, self.settings.currency)

    @rpc
    @admitted
    def PlaceOrder(
        self, request: checkout_pb2.PlaceOrderRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.PlaceOrderResponse:
        _refuse_if_expired(context)
        v = Violations()
        v.require_id("quote_id", request.quote_id)
        v.require_id("option_id", request.option_id)
        v.require_id("idempotency_key", request.idempotency_key)
        v.raise_if_any()
        with self.store.read() as conn:
            existing = self.store.find_order_by_key(conn, request.idempotency_key)
            if existing is not None:
                return self._replay(existing, request)
            quote_row = self.store.get_quote(conn, request.quote_id)
        option = placeable_option(quote_row, request.option_id, self.store.clock())
        promised_date = day_after(quote_row.quote_date, option.delivery_days)
        placed = self._try_place(quote_row, option, request, promised_date, resourced=None)
        if not isinstance(placed, list):
            return placed
        # The quoted stock (or inbound receipt) is gone: re-source within the promise.
        replacement = self._resource(quote_row, option, promised_date, placed, context)
        again = self._try_place(quote_row, replacement, request, promised_date, resourced=placed)
        if isinstance(again, list):
            raise Aborted("the stock changed again while the order was re-sourced; retry")
        return again

    def _replay(
        self, existing: OrderRow, request: checkout_pb2.PlaceOrderRequest
    ) -> checkout_pb2.PlaceOrderResponse:
        """A retry of a PlaceOrder that already succeeded returns the same order.

        Only to the caller that placed it: the same quote (a capability only that
        caller was given) and option. Anyone else learns nothing of that order, not
        even its quote, since the quote id would be enough to replay it.
        """
        if existing.quote_id != request.quote_id or existing.option_id != request.option_id:
            raise FailedPrecondition(
                f"idempotency key {echo(request.idempotency_key)} was used for another order; "
                "use a new key for each order",
                [
                    Precondition(
                        "IDEMPOTENCY_KEY", request.idempotency_key, "used for another order"
                    )
                ],
            )
        resourced = any(kind == "resourced" for _, kind, _ in existing.events)
        return checkout_pb2.PlaceOrderResponse(
            order=self._order_response(existing), resourced=resourced
        )

    def _try_place(
        self,
        quote_row: QuoteRow,
        option: Plan,
        request: checkout_pb2.PlaceOrderRequest,
        promised_date: str,
        resourced: list[Precondition] | None,
    ) -> checkout_pb2.PlaceOrderResponse | list[Precondition]:
        """Reserve ``option``'s units (stock, and units on inbound receipts for parcels
        that wait) and write the order; or what is no longer there, writing nothing.

        Stock and receipts are both checked under lock in this one transaction.
        """
        order_id = "o_" + uuid.uuid4().hex
        allocation = replace(option, start_date=quote_row.quote_date)
        with self.store.write() as conn:
            # A concurrent retry with the same key may have won while we waited for the lock.
            self.store.lock_idempotency_key(conn, request.idempotency_key)
            existing = self.store.find_order_by_key(conn, request.idempotency_key)
            if existing is not None:
                return self._replay(existing, request)
            problems = self.store.shortages(
                conn, units_of(option), exclude_quote=quote_row.quote_id
            )
            on_receipts, receipt_problems = receipts_for(
                self.store, conn, option, quote_row.quote_date
            )
            if problems or receipt_problems:
                return problems + receipt_problems
            labels = "/".join(option.labels) or "option"
            waits = (
                f"; {sum(on_receipts.values())} unit(s) wait for receipt(s) "
                f"{', '.join(sorted(on_receipts))}"
                if on_receipts
                else ""
            )
            events = [
                (
                    "placed",
                    f"{request.option_id} ({labels}): {len(option.parcels)} parcel(s), "
                    f"promised {promised_date}{waits}",
                )
            ]
            if resourced is not None:
                what = "; ".join(f"{p.subject}: {p.description}" for p in resourced)
                events.append(
                    (
                        "resourced",
                        f"quoted stock changed ({what}); now {len(option.parcels)} parcel(s) "
                        f"arriving {day_after(quote_row.quote_date, option.delivery_days)}",
                    )
                )
            row = self.store.insert_order(
                conn,
                order_id=order_id,
                quote=quote_row,
                option_id=request.option_id,
                idempotency_key=request.idempotency_key,
                lines=quote_row.request.lines,
                allocation=allocation,
                promised_date=promised_date,
                events=events,
            )
            self.store.reserve_inbound(conn, order_id, on_receipts)
        return checkout_pb2.PlaceOrderResponse(
            order=self._order_response(row), resourced=resourced is not None
        )

    def _resource(
        self,
        quote_row: QuoteRow,
        option: Plan,
        promised_date: str,
        changed: list[Precondition],
        context: grpc.ServicerContext,
    ) -> Plan:
        """The cheapest allocation of the option's units that still arrives by the promise.

        An option that waited for inbound receipts may be replaced by one that
        waits for receipts too (the shopper accepted a backorder); others only
        from stock.
        """
        what = "; ".join(f"{p.subject}: {p.description}" for p in changed)
        failure = FailedPrecondition(
            f"the quoted stock changed ({what}) and no other allocation arrives by {promised_date}",
            changed,
        )
        covered: dict[int, int] = {}
        for parcel in option.parcels:
            for line in parcel.lines:
                covered[line.line] = covered.get(line.line, 0) + line.qty
        asked = quote_row.request
        order = Order(
            destination=Location(asked.lat, asked.lon),
            lines=tuple(OrderLine(asked.lines[i].sku, qty) for i, qty in sorted(covered.items())),
        )
        latest = days_between(quote_row.quote_date, promised_date)
        offset = days_between(quote_row.quote_date, today(self.store.clock()))
        if latest - offset < 0:
            raise failure
        backorder = option.waits
        catalog = self.store.catalog()
        with self.store.read() as conn:
            network = self.store.network_for(
                conn, catalog, [line.sku for line in order.lines], exclude_quote=quote_row.quote_id
            )
            if backorder:
                network = self.store.with_receipts(conn, network, today(self.store.clock()))
        try:
            result = quote(
                network,
                order,
                QuoteSettings(
                    value_of_day=int(asked.value_of_day or 0),
                    max_parcels=asked.max_parcels,
                    latest_day=latest - offset,
                    # Within what is left of the caller's deadline, like a quote's.
                    time_limit_s=solver_budget(self.settings.solver_time_limit_s, STORE_RESERVE_S),
                    should_stop=lambda: not context.is_active(),
                    # A COLLECT option stays a collect at the same store.
                    pickup_stores=(option.pickup,) if option.pickup else (),
                    allow_backorder=backorder,
                ),
            )
        except ShortageError:
            raise failure from None
        observe_solver(result.stats.seconds)
        feasible = [
            o
            for o in result.frontier
            if o.delivery_days + offset <= latest and o.pickup == option.pickup
        ]
        if not feasible:
            raise failure
        best = min(feasible, key=lambda o: (o.cost, o.delivery_days, o.num_parcels))
        plan = plan_of(best, f"{option.option_id}-resourced")
        # Days in the stored allocation count from the quote date, like the original's,
        # and the sub-order's lines map back to the cart's line indices.
        line_of = sorted(covered)
        return replace(
            plan,
            delivery_days=plan.delivery_days + offset,
            parcels=tuple(
                replace(
                    parcel,
                    arrival_days=parcel.arrival_days + offset,
                    inbound_day=None if parcel.inbound_day is None else parcel.inbound_day + offset,
                    lines=tuple(replace(line, line=line_of[line.line]) for line in parcel.lines),
                )
                for parcel in plan.parcels
            ),
        )

    @rpc
    def GetOrder(
        self, request: checkout_pb2.GetOrderRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.GetOrderResponse:
        v = Violations()
        v.require_id("order_id", request.order_id)
        v.raise_if_any()
        with self.store.read() as conn:
            row = self.store.get_order(conn, request.order_id)
        return checkout_pb2.GetOrderResponse(order=self._order_response(row))

    @rpc
    def ListOrders(
        self, request: checkout_pb2.ListOrdersRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.ListOrdersResponse:
        v = Violations()
        size = paging.page_size(request.page_size, v)
        if (
            request.state != common_pb2.ORDER_STATE_UNSPECIFIED
            and request.state not in PROTO_TO_STATE
        ):
            v.add("state", f"unknown order state {request.state}")
        v.raise_if_any()
        state = PROTO_TO_STATE.get(request.state)
        filter_ = f"state={state or ''}"
        after = paging.decode_token(request.page_token, filter_) if request.page_token else None
        with self.store.read() as conn:
            rows = self.store.list_orders(conn, state=state, after=after, limit=size + 1)
        orders, token = paging.page(
            rows, size, self._order_response, lambda o: (o.created_at, o.order_id), filter_
        )
        return checkout_pb2.ListOrdersResponse(orders=orders, next_page_token=token)

    @rpc
    def CancelOrder(
        self, request: checkout_pb2.CancelOrderRequest, context: grpc.ServicerContext
    ) -> checkout_pb2.CancelOrderResponse:
        v = Violations()
        v.require_id("order_id", request.order_id)
        v.raise_if_any()
        done = Shipping(self.store, self.settings).cancel_order(
            request.order_id, request.reason or "cancelled by the caller"
        )
        return checkout_pb2.CancelOrderResponse(
            order=self._order_response(done.order),
            not_cancelled=[shipment_proto(s) for s in done.not_cancelled],
            not_cancelled_lines=[
                common_pb2.CartLine(sku=sku, quantity=qty)
                for sku, qty in sh.lines_by_sku(done.not_cancelled).items()
            ],
        )


MAX_PICKUP_STORES = 10


def placeable_option(quote: QuoteRow, option_id: str, now: float) -> Plan:
    """The quote's option ``option_id``, if the quote may still be ordered (or held) on."""
    option = next((o for o in quote.options if o.option_id == option_id), None)
    if option is None:
        raise NotFound("option", f"{quote.quote_id}/{option_id}")
    check_placeable(quote.quote_id, quote.order_id, quote.expires_at, now)
    return option


def check_pickup_stores(
    v: Violations, catalog: Catalog, request: checkout_pb2.QuoteDeliveryOptionsRequest
) -> None:
    """Field violations for unknown pickup stores, non-stores and a bad nearest count."""
    if len(request.pickup_store_ids) > MAX_PICKUP_STORES:
        v.add("pickup_store_ids", f"name at most {MAX_PICKUP_STORES} stores")
        v.raise_if_any()
    for i, store in enumerate(request.pickup_store_ids):
        field = f"pickup_store_ids[{i}]"
        n = catalog.node_index.get(store)
        if not store:
            v.add(field, "is required")
        elif n is None:
            v.add(field, f"unknown node {echo(store)}")
        elif catalog.node_kinds[n] is not NodeKind.STORE:
            v.add(field, f"node {echo(store)} is not a store")
    if not 0 <= request.nearest_pickup_stores <= MAX_PICKUP_STORES:
        v.add(
            "nearest_pickup_stores",
            f"must be between 0 and {MAX_PICKUP_STORES}, got {request.nearest_pickup_stores}",
        )


def receipts_for(
    store: Store, conn: Any, option: Plan, start: str
) -> tuple[dict[str, int], list[Precondition]]:
    """Lock the receipts an option's waiting parcels draw on and spread the units over them.

    A parcel waiting at node n for day d draws on n's open receipts of each SKU
    due on ``start + d``, in receipt id order. Returns units per receipt and
    what is missing.
    """
    wanted: dict[tuple[str, str, str], int] = {}
    for parcel in option.parcels:
        if parcel.inbound_day is None:
            continue
        due = day_after(start, parcel.inbound_day)
        for line in parcel.lines:
            key = (parcel.node_id, line.sku, due)
            wanted[key] = wanted.get(key, 0) + line.qty
    if not wanted:
        return {}, []
    rows = store.receipts(
        conn,
        sorted({s for _, s, _ in wanted}),
        sorted({n for n, _, _ in wanted}),
        for_update=True,
    )
    taken: dict[str, int] = {}
    problems: list[Precondition] = []
    for (node, sku, due), qty in sorted(wanted.items()):
        left = qty
        for row in rows:
            if (row.node_id, row.sku, row.expected_date) != (node, sku, due) or left == 0:
                continue
            take = min(left, row.qty - row.reserved - taken.get(row.receipt_id, 0))
            if take > 0:
                taken[row.receipt_id] = taken.get(row.receipt_id, 0) + take
                left -= take
        if left:
            problems.append(
                Precondition(
                    "RECEIPT",
                    f"{node}/{sku}@{due}",
                    f"needs {qty} units due {due}, {qty - left} free in open receipts",
                )
            )
    return taken, problems
