"""The pages and their parts: overview, stock, orders, one order, and the change mark.

Thin by design: each handler validates its query (:mod:`.params`), opens one
read transaction, calls :mod:`oms.dashboard.views`, and renders a Jinja2
template (autoescaped: a SKU or a reason holding HTML is shown as text).
Pages are full documents; ``/fragments/...`` are the parts of them htmx
swaps in when ``/api/changes`` says the store moved.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from oms.dashboard import params, views
from oms.dashboard.render import node_map, overview_charts, script_json
from oms.dashboard.site import site_of

#: Low-stock alerts listed at the top of the stock page (the table below filters to all).
ALERTS_SHOWN = 12
#: Nodes without a capacity limit listed in today's capacity table, busiest first.
BUSIEST_SHOWN = 10

# -- overview ---------------------------------------------------------------------


def _overview_context(request: Request) -> dict[str, Any]:
    site = site_of(request)
    key = params.period(request)
    now = site.clock()
    period = views.Period.of(key, now)
    with site.read() as conn:
        ov = views.overview(conn, period, now, risky=10)
        attention = views.attention(conn, limit=10)
    return {
        "ov": ov,
        "period": key,
        "at_risk_rows": ov.at_risk_rows,
        "attention_rows": attention,
        "charts": script_json(overview_charts(ov)),
    }


def overview_page(request: Request) -> Response:
    return site_of(request).render(request, "overview.html", **_overview_context(request))


def overview_fragment(request: Request) -> Response:
    context = _overview_context(request)
    return site_of(request).render(request, "partials/overview_body.html", **context)


def overview_json(request: Request) -> Response:
    ctx = _overview_context(request)
    ov: views.Overview = ctx["ov"]
    return JSONResponse(
        {
            "period": ctx["period"],
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
            "attention": ov.attention,
            **overview_charts(ov),
        }
    )


# -- stock ------------------------------------------------------------------------


def _stock_table_context(request: Request) -> dict[str, Any]:
    site = site_of(request)
    search = params.text_param(request, "q")
    low = request.query_params.get("low") in ("1", "on", "true")
    offset = params.int_param(request, "offset", 0, 0, 10**9)
    with site.read() as conn:
        page = views.positions(conn, site.clock(), search=search, low_only=low, offset=offset)
    return {"page": page, "q": search, "low": low}


def _alerts_context(request: Request) -> dict[str, Any]:
    site = site_of(request)
    with site.read() as conn:
        return {"alerts": views.low_stock(conn, site.clock(), limit=ALERTS_SHOWN)}


def _receipts_context(request: Request) -> dict[str, Any]:
    site = site_of(request)
    with site.read() as conn:
        return {"receipts": views.open_receipts(conn, site.clock())}


def _nodes_context(request: Request) -> dict[str, Any]:
    site = site_of(request)
    key = params.period(request)
    now = site.clock()
    with site.read() as conn:
        found = views.nodes(conn, views.Period.of(key, now), now)
    limited = [n for n in found if n.capacity]
    others = sorted(
        (n for n in found if not n.capacity and n.used_today),
        key=lambda n: (-n.used_today, n.node_id),
    )
    busiest = sorted(limited, key=lambda n: -(n.capacity_share or 0.0)) + others[:BUSIEST_SHOWN]
    return {"nodes": found, "busiest": busiest, "map": node_map(found), "period": key}


def stock_page(request: Request) -> Response:
    return site_of(request).render(
        request,
        "stock.html",
        **_stock_table_context(request),
        **_alerts_context(request),
        **_receipts_context(request),
        **_nodes_context(request),
    )


def stock_table_fragment(request: Request) -> Response:
    context = _stock_table_context(request)
    return site_of(request).render(request, "partials/stock_table.html", **context)


def alerts_fragment(request: Request) -> Response:
    return site_of(request).render(request, "partials/alerts.html", **_alerts_context(request))


def receipts_fragment(request: Request) -> Response:
    context = _receipts_context(request)
    return site_of(request).render(request, "partials/receipts.html", **context)


def nodes_fragment(request: Request) -> Response:
    return site_of(request).render(request, "partials/nodes.html", **_nodes_context(request))


# -- orders -----------------------------------------------------------------------


def _orders_context(request: Request) -> dict[str, Any]:
    query = params.order_query(request)
    after = params.cursor(request)
    site = site_of(request)
    with site.read() as conn:
        page = views.search_orders(conn, query, after=after, now=site.clock())
    return {
        "query": query,
        "results": page,
        "next_cursor": f"{page.after[0]!r}~{page.after[1]}" if page.after else None,
    }


def orders_page(request: Request) -> Response:
    return site_of(request).render(request, "orders.html", **_orders_context(request))


def orders_fragment(request: Request) -> Response:
    context = _orders_context(request)
    return site_of(request).render(request, "partials/orders_table.html", **context)


def _order_context(request: Request) -> dict[str, Any] | None:
    order_id = str(request.path_params["order_id"])
    if len(order_id) > params.MAX_QUERY_LENGTH:
        raise params.BadQuery(f"order id is longer than {params.MAX_QUERY_LENGTH} characters")
    site = site_of(request)
    with site.read() as conn:
        detail = views.order_detail(conn, order_id, site.clock())
    return None if detail is None else {"order": detail}


def order_page(request: Request) -> Response:
    ctx = _order_context(request)
    if ctx is None:
        return site_of(request).render(request, "not_found.html", status=404, what="order")
    return site_of(request).render(request, "order.html", **ctx)


def order_fragment(request: Request) -> Response:
    ctx = _order_context(request)
    if ctx is None:
        return PlainTextResponse("no such order", status_code=404)
    return site_of(request).render(request, "partials/order_body.html", **ctx)


# -- live updates -----------------------------------------------------------------


def changes(request: Request) -> Response:
    site = site_of(request)
    with site.read() as conn:
        mark = views.change_mark(conn)
    return JSONResponse({"mark": mark, "at": site.clock()})
