"""The dashboard's read side: every figure a page shows, as SQL over the store's tables.

One module a page: :mod:`.summary` (the overview), :mod:`.stock`, :mod:`.orders` (the search),
:mod:`.order` (one order), :mod:`.live` (the change mark pages poll), over
:mod:`.common` (periods, pages, SQL helpers). This package re-exports their
public names, so callers write ``views.overview(...)``.

Read-side views apart from the write model ("Architecture Patterns with
Python", chapter 12): plain SQLAlchemy Core over :mod:`oms.schema`, the same
on SQLite and PostgreSQL, each function one or a few indexed queries whose
result is bounded (aggregates, a page, a top-N), never every order loaded
into Python. The order's plan facts (labels, parcels, cost parts) are
generated columns of ``orders`` (migration 0007).

Definitions (the tests recompute each independently from the store):

* a period is ``today`` (UTC midnight to now, hourly buckets) or the last 7
  or 30 UTC days including today (daily buckets); orders, quotes and events
  belong to it by their own time;
* **orders by state**: orders created in the period, by current state;
* **cost per order**: over orders created in the period and not cancelled,
  the mean of their plan's shipping, handling and storage credit
  (cost = shipping + handling - storage credit), in currency units;
* **parcels per order** and **split rate** (share with two or more parcels),
  same orders;
* **option chosen**: those orders counted under each label of their option
  (an option can carry several: CHEAPEST and BALANCED at once);
* **conversion**: orders created / quotes created in the period; quotes do not
  move the change mark (checkout quotes all the time, and every open tab would
  refetch every part), so the mark's reply carries a quote mark of its own (the
  newest quote's time, an index lookup) on which a page refreshes this card
  alone, at most every few polls (:func:`conversion`);
* **promises kept**: of the orders delivered in the period (their
  ``delivered`` event, written once, when the order's last shipment arrived:
  a split order delivered in two steps is one delivery), those delivered on or
  before their promised date (UTC day);
* **at risk**: orders with a shipment not yet left its node (PENDING,
  REQUESTED, ACCEPTED) whose planned dispatch day has passed (``Shipment.late``),
  whatever the order's state (a PARTIALLY_SHIPPED order's late parcel counts);
  now, whatever the period; the orders search filters on the same (``late``);
* **late shipments**: those shipments themselves, now (listed longest late
  first, each linking to its order), and over the period the number late at
  each bucket's end (not left their node by then, planned dispatch day passed;
  a shipment left at ``shipped_at``, ended when cancelled or refused);
* **needing attention**: open orders (PLACED, RELEASED, PARTIALLY_SHIPPED,
  PARTIALLY_DELIVERED) with a ``flagged`` event (re-sourcing could not keep
  the promise), as ``GetOrder``'s ``needs_attention``.

The order page lists the order's shipments from the ``shipments`` table
(issue 16); figures still read from the order's plan are marked ``SHIPMENTS:``.
"""

from oms.dashboard.views.common import (
    LABELS,
    MAX_PAGE,
    MILLICENTS_PER_UNIT,
    OPEN_STATES,
    PERIODS,
    STATES,
    Page,
    Period,
    utc_day,
)
from oms.dashboard.views.live import MARK_QUERY, change_mark, quote_mark
from oms.dashboard.views.order import (
    Event,
    LedgerRow,
    MenuOption,
    OrderDetail,
    ParcelView,
    ShipmentView,
    order_detail,
    order_shipments,
)
from oms.dashboard.views.orders import OrderPage, OrderQuery, OrderSummary, search_orders
from oms.dashboard.views.stock import (
    NodeUse,
    Position,
    Receipt,
    low_stock,
    nodes,
    open_receipts,
    positions,
)
from oms.dashboard.views.summary import (
    Conversion,
    LateShipment,
    Overview,
    at_risk,
    attention,
    conversion,
    count_at_risk,
    count_attention,
    late_series,
    late_shipment_rows,
    overview,
)

__all__ = [
    "LABELS",
    "MARK_QUERY",
    "MAX_PAGE",
    "MILLICENTS_PER_UNIT",
    "OPEN_STATES",
    "PERIODS",
    "STATES",
    "Conversion",
    "Event",
    "LateShipment",
    "LedgerRow",
    "MenuOption",
    "NodeUse",
    "OrderDetail",
    "OrderPage",
    "OrderQuery",
    "OrderSummary",
    "Overview",
    "Page",
    "ParcelView",
    "Period",
    "Position",
    "Receipt",
    "ShipmentView",
    "at_risk",
    "attention",
    "change_mark",
    "conversion",
    "count_at_risk",
    "count_attention",
    "late_series",
    "late_shipment_rows",
    "low_stock",
    "nodes",
    "open_receipts",
    "order_detail",
    "order_shipments",
    "overview",
    "positions",
    "quote_mark",
    "search_orders",
    "utc_day",
]
