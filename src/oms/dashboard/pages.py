"""The pages and their parts: overview, stock, orders, one order, and the change mark.

Thin by design: each handler validates its query (:mod:`.params`), and takes
its figures from those every session shares (:mod:`.figures`), computed when
due in one read transaction by :mod:`oms.dashboard.views`; it renders a Jinja2
template (autoescaped: a SKU or a reason holding HTML is shown as text) with
the time the figures were read ("as of"). Pages are full documents;
``/fragments/...`` are the parts of them htmx swaps in when ``/api/changes``
says the store moved, rendered once per figures for every session.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from oms.dashboard import params, views
from oms.dashboard.figures import Figures
from oms.dashboard.render import conversion_charts, node_map, overview_charts, script_json
from oms.dashboard.site import site_of

#: Low-stock alerts listed at the top of the stock page (the table below filters to all).
ALERTS_SHOWN = 12
#: Nodes without a capacity limit listed in today's capacity table, busiest first.
BUSIEST_SHOWN = 10

# -- overview ---------------------------------------------------------------------


def _overview_figures(request: Request) -> Figures[dict[str, Any]]:
    site = site_of(request)
    key = params.period(request)

    def compute() -> dict[str, Any]:
        now = site.clock()
        period = views.Period.of(key, now)
        with site.read() as conn:
            ov = views.overview(conn, period, now, risky=10)
            attention = views.attention(conn, limit=10)
        return {
            "ov": ov,
            "period": key,
            "attention_rows": attention,
            "charts": script_json(overview_charts(ov)),
            **_conversion(views.Conversion.of(ov)),
        }

    return site.shared(("overview", key), compute)


def _conversion(conv: views.Conversion) -> dict[str, Any]:
    return {"conv": conv, "conv_charts": script_json(conversion_charts(conv))}


def overview_page(request: Request) -> Response:
    return _page(request, "overview.html", _overview_figures(request))


def overview_fragment(request: Request) -> Response:
    return site_of(request).fragment("partials/overview_body.html", _overview_figures(request))


def conversion_fragment(request: Request) -> Response:
    """The overview's conversion card alone: a page refetches it when only quotes moved."""
    site = site_of(request)
    key = params.period(request)
    now = site.clock()
    with site.read() as conn:
        conv = views.conversion(conn, views.Period.of(key, now))
    return site.render(request, "partials/conversion.html", **_conversion(conv))


def overview_json(request: Request) -> Response:
    figures = _overview_figures(request)
    ov: views.Overview = figures.value["ov"]
    charts = overview_charts(ov)
    return JSONResponse(
        {
            "period": figures.value["period"],
            "as_of": figures.as_of,
            "orders": ov.orders,
            "by_state": ov.by_state,
            "cost_per_order": round(ov.cost_per_order, 2),
            "shipping": round(ov.shipping, 2),
            "handling": round(ov.handling, 2),
            "storage_credit": round(ov.storage_credit, 2),
            "parcels_per_order": round(ov.parcels_per_order, 3),
            "split_rate": round(ov.split_rate, 4),
            "labels": ov.labels,
            "quotes": ov.quotes,
            "conversion": round(ov.conversion, 4),
            "delivered": ov.delivered,
            "kept": ov.kept,
            "at_risk": ov.at_risk,
            "late_shipments": ov.late_shipments,
            "late": [
                {
                    "shipment_id": x.shipment_id,
                    "order_id": x.order_id,
                    "node_id": x.node_id,
                    "state": x.state,
                    "planned_dispatch": x.planned_dispatch,
                    "days_late": x.days_late,
                }
                for x in ov.late_rows
            ],
            "attention": ov.attention,
            # The charts' bucket labels apart: ``labels`` is the options chosen above.
            "buckets": charts["labels"],
            "charts": charts["charts"],
        }
    )


# -- stock ------------------------------------------------------------------------


def _stock_table_figures(request: Request) -> Figures[dict[str, Any]]:
    site = site_of(request)
    search = params.text_param(request, "q")
    low = request.query_params.get("low") in ("1", "on", "true")
    offset = params.int_param(request, "offset", 0, 0, 10**9)

    def compute() -> dict[str, Any]:
        with site.read() as conn:
            page = views.positions(conn, site.clock(), search=search, low_only=low, offset=offset)
        return {"page": page, "q": search, "low": low}

    return site.shared(("stock-table", search, low, offset), compute)


def _alerts_figures(request: Request) -> Figures[dict[str, Any]]:
    site = site_of(request)

    def compute() -> dict[str, Any]:
        with site.read() as conn:
            return {"alerts": views.low_stock(conn, site.clock(), limit=ALERTS_SHOWN)}

    return site.shared(("alerts",), compute)


def _receipts_figures(request: Request) -> Figures[dict[str, Any]]:
    site = site_of(request)

    def compute() -> dict[str, Any]:
        with site.read() as conn:
            return {"receipts": views.open_receipts(conn, site.clock())}

    return site.shared(("receipts",), compute)


def _nodes_figures(request: Request) -> Figures[dict[str, Any]]:
    site = site_of(request)
    key = params.period(request)

    def compute() -> dict[str, Any]:
        now = site.clock()
        with site.read() as conn:
            found = views.nodes(conn, views.Period.of(key, now), now)
        limited = [n for n in found if n.capacity]
        others = sorted(
            (n for n in found if not n.capacity and n.used_today),
            key=lambda n: (-n.used_today, n.node_id),
        )
        busiest = sorted(limited, key=lambda n: -(n.capacity_share or 0.0))
        busiest += others[:BUSIEST_SHOWN]
        return {"nodes": found, "busiest": busiest, "map": node_map(found), "period": key}

    return site.shared(("nodes", key), compute)


def stock_page(request: Request) -> Response:
    parts = {
        "table": _stock_table_figures(request),
        "alerts": _alerts_figures(request),
        "receipts": _receipts_figures(request),
        "nodes": _nodes_figures(request),
    }
    context: dict[str, Any] = {}
    for name, figures in parts.items():
        context.update(figures.value)
        context[f"{name}_as_of"] = figures.as_of
    return site_of(request).render(request, "stock.html", **context)


def stock_table_fragment(request: Request) -> Response:
    figures = _stock_table_figures(request)
    return site_of(request).fragment("partials/stock_table.html", figures)


def alerts_fragment(request: Request) -> Response:
    figures = _alerts_figures(request)
    return site_of(request).fragment("partials/alerts.html", figures)


def receipts_fragment(request: Request) -> Response:
    figures = _receipts_figures(request)
    return site_of(request).fragment("partials/receipts.html", figures)


def nodes_fragment(request: Request) -> Response:
    figures = _nodes_figures(request)
    return site_of(request).fragment("partials/nodes.html", figures)


# -- orders -----------------------------------------------------------------------


def _orders_figures(request: Request) -> Figures[dict[str, Any]]:
    query = params.order_query(request)
    after = params.cursor(request)
    site = site_of(request)

    def compute() -> dict[str, Any]:
        with site.read() as conn:
            page = views.search_orders(conn, query, after=after, now=site.clock())
        return {
            "query": query,
            "results": page,
            "next_cursor": f"{page.after[0]!r}~{page.after[1]}" if page.after else None,
        }

    return site.shared(("orders", query, after), compute)


def orders_page(request: Request) -> Response:
    return _page(request, "orders.html", _orders_figures(request))


def orders_fragment(request: Request) -> Response:
    figures = _orders_figures(request)
    return site_of(request).fragment("partials/orders_table.html", figures)


def _order_figures(request: Request) -> Figures[dict[str, Any] | None]:
    order_id = str(request.path_params["order_id"])
    if len(order_id) > params.MAX_QUERY_LENGTH:
        raise params.BadQuery(f"order id is longer than {params.MAX_QUERY_LENGTH} characters")
    site = site_of(request)

    def compute() -> dict[str, Any] | None:
        with site.read() as conn:
            detail = views.order_detail(conn, order_id, site.clock())
        return None if detail is None else {"order": detail}

    return site.shared(("order", order_id), compute)


def order_page(request: Request) -> Response:
    figures = _order_figures(request)
    if figures.value is None:
        return site_of(request).render(request, "not_found.html", status=404, what="order")
    return site_of(request).render(request, "order.html", **figures.value, as_of=figures.as_of)


def order_fragment(request: Request) -> Response:
    figures = _order_figures(request)
    if figures.value is None:
        return PlainTextResponse("no such order", status_code=404)
    return site_of(request).fragment("partials/order_body.html", figures)


def _page(request: Request, name: str, figures: Figures[dict[str, Any]]) -> Response:
    """A full page (per session: it names the signed-in role) over shared figures."""
    return site_of(request).render(request, name, **figures.value, as_of=figures.as_of)


# -- live updates -----------------------------------------------------------------


def changes(request: Request) -> Response:
    """The change mark, read at most once per refresh interval for every open page, and
    the quote mark apart (one index lookup): a page refetches only its conversion card
    when that alone moved."""
    site = site_of(request)
    mark, at = site.figures.mark()
    with site.read() as conn:
        quotes = views.quote_mark(conn)
    return JSONResponse({"mark": mark, "quotes": quotes, "at": at})
