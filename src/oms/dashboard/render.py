"""What pages are drawn with: the Jinja2 environment and its filters, the overview's chart
series, JSON for data blocks, and the node map's geometry."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.templating import Jinja2Templates

from oms.dashboard import views
from oms.dashboard.config import DashboardConfig

PALETTE = {
    "PLACED": "#1f6fb2",
    "RELEASED": "#7a4fb5",
    "PARTIALLY_SHIPPED": "#d4a373",
    "SHIPPED": "#b5651d",
    "PARTIALLY_DELIVERED": "#81c784",
    "DELIVERED": "#2e7d32",
    "CANCELLED": "#6b6b6b",
    "CHEAPEST": "#2e7d32",
    "FASTEST": "#c62828",
    "SINGLE_PARCEL": "#1f6fb2",
    "BALANCED": "#7a4fb5",
    "COLLECT": "#b5651d",
}


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")


def _money(value: float, currency: str = "USD") -> str:
    sign = "-" if value < 0 else ""
    symbol = "$" if currency == "USD" else f"{currency} "
    return f"{sign}{symbol}{abs(value):,.2f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def templates(config: DashboardConfig) -> Jinja2Templates:
    env = Environment(
        loader=PackageLoader("oms.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["when"] = _when
    env.filters["iso"] = _iso
    env.filters["clock"] = _clock
    env.filters["money"] = lambda v: _money(float(v), config.currency)
    env.filters["pct"] = _pct
    env.filters["num"] = lambda v: f"{v:,}" if isinstance(v, int) else f"{v:,.2f}"
    env.globals["periods"] = tuple(views.PERIODS)
    env.globals["states"] = views.STATES
    env.globals["poll_s"] = config.poll_s
    return Jinja2Templates(env=env)


def overview_charts(ov: views.Overview) -> dict[str, Any]:
    """Chart.js-shaped series for the overview (drawn by static/dashboard.js)."""

    def ds(label: str, data: list[Any], color: str, **extra: Any) -> dict[str, Any]:
        return {"label": label, "data": data, "color": color, **extra}

    return {
        "labels": list(ov.period.labels),
        "charts": {
            "orders": {
                "type": "bar",
                "stacked": True,
                "datasets": [ds(s, ov.state_series[s], PALETTE[s]) for s in views.STATES],
            },
            "promises": {
                "type": "bar",
                "datasets": [
                    ds("delivered", ov.delivered_series, "#6b6b6b"),
                    ds("on time", ov.kept_series, "#2e7d32"),
                ],
            },
            "cost": {
                "type": "line",
                "datasets": [
                    ds("cost per order", ov.cost_series["cost"], "#111111"),
                    ds("shipping", ov.cost_series["shipping"], "#1f6fb2"),
                    ds("handling", ov.cost_series["handling"], "#b5651d"),
                    ds("storage credit", ov.cost_series["storage_credit"], "#2e7d32"),
                ],
            },
            "parcels": {
                "type": "line",
                "datasets": [
                    ds("parcels per order", ov.parcels_series, "#1f6fb2"),
                    ds("split rate", ov.split_series, "#c62828"),
                ],
            },
            "labels": {
                "type": "bar",
                "stacked": True,
                "datasets": [ds(k, ov.label_series[k], PALETTE[k]) for k in views.LABELS],
            },
            "late": {
                "type": "line",
                "datasets": [ds("late shipments", ov.late_series, "#c62828")],
            },
            "conversion": conversion_charts(views.Conversion.of(ov))["charts"]["conversion"],
            "attention": {
                "type": "bar",
                "datasets": [ds("flagged", ov.flagged_series, "#c62828")],
            },
        },
    }


def conversion_charts(conv: views.Conversion) -> dict[str, Any]:
    """The conversion card's chart alone (its fragment follows quotes by itself)."""
    return {
        "labels": list(conv.period.labels),
        "charts": {
            "conversion": {
                "type": "bar",
                "datasets": [
                    {"label": "quotes", "data": conv.quote_series, "color": "#9e9e9e"},
                    {"label": "orders", "data": conv.order_series, "color": "#1f6fb2"},
                ],
            }
        },
    }


def script_json(value: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``
    can end the block or start markup."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# -- the node map -----------------------------------------------------------------

MAP_WIDTH, MAP_HEIGHT, MAP_PAD = 960.0, 540.0, 24.0


def node_map(nodes: list[views.NodeUse]) -> dict[str, Any]:
    """Nodes placed on an SVG canvas from their coordinates (equirectangular, scaled by the
    mid latitude's cosine), each circle's area proportional to the units it shipped."""
    if not nodes:
        return {"width": MAP_WIDTH, "height": MAP_HEIGHT, "points": []}
    lats = [n.lat for n in nodes]
    lons = [n.lon for n in nodes]
    mid = math.radians((min(lats) + max(lats)) / 2)
    xs = [lon * math.cos(mid) for lon in lons]
    span_x = max(max(xs) - min(xs), 1e-6)
    span_y = max(max(lats) - min(lats), 1e-6)
    scale = min((MAP_WIDTH - 2 * MAP_PAD) / span_x, (MAP_HEIGHT - 2 * MAP_PAD) / span_y)
    most = max((n.shipped for n in nodes), default=0)
    points: list[dict[str, Any]] = []
    for node, x in zip(nodes, xs, strict=True):
        radius = 2.0 + (22.0 * math.sqrt(node.shipped / most) if most else 0.0)
        points.append(
            {
                "node": node,
                "x": round(MAP_PAD + (x - min(xs)) * scale, 1),
                "y": round(MAP_PAD + (max(lats) - node.lat) * scale, 1),
                "r": round(radius, 1),
            }
        )
    # Big circles first, so small ones stay visible (and hoverable) on top.
    points.sort(key=lambda p: -float(p["r"]))
    return {"width": MAP_WIDTH, "height": MAP_HEIGHT, "points": points}
