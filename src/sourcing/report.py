"""A :class:`~sourcing.model.Quote` as the JSON of ``sourcing quote`` (DESIGN section 7).

Shape::

    {
      "options": [
        {
          "labels": ["CHEAPEST", "BALANCED"],
          "cost": 12.34,
          "delivery_days": 3,
          "status": "OPTIMAL",              # or "FEASIBLE (gap 1.2%)", "HEURISTIC"
          "proof": "bound+enumeration",     # what proved it
          "breakdown": {"shipping": 11.0, "handling": 1.5, "storage_credit": 0.16},
                                            # + "opportunity_cost" when priced with one
          "parcels": [
            {
              "node_id": "DC-ORD", "service": "ground", "zone": "2",
              "distance_km": 12.3, "weight_kg": 1.234,
              "lines": [{"line": 0, "sku": "SKU-0001", "qty": 2}],
              "cost": 12.34, "shipping": 11.0, "handling": 1.5,
              "storage_credit": 0.16, "arrival_days": 3
            }
          ]
        }
      ],
      "shortfall": [{"line": 1, "sku": "SKU-0002", "requested": 3, "covered": 1}],
      "stats": {"subproblems": 4, "closed_by_bound": 4, "cpsat_calls": 0, "seconds": 0.0021},
      "frontier": [...]                     # only when asked; options without labels
    }

Money is in currency units rounded half-to-even to the cent
(:func:`~sourcing.model.to_currency`), written as JSON numbers: a value with
two decimals survives the trip through a float exactly as text. Each figure
is rounded on its own, so the rounded parts of a cost may differ from the
rounded total by a cent. Days are whole numbers; distances are in km with
one decimal; weights in kg to the gram.
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from typing import Any

from sourcing.model import Option, ParcelCost, Quote, Shortfall, to_currency

__all__ = [
    "frontier_to_json",
    "money",
    "option_to_json",
    "parcel_to_json",
    "quote_to_json",
    "shortfall_to_json",
    "status_text",
]


def money(millicents: int) -> float:
    """Millicents as currency units with 2 decimals, as a JSON-ready float (never -0.0)."""
    return float(to_currency(millicents)) + 0.0


def status_text(status: str, gap: float) -> str:
    """``OPTIMAL``; ``FEASIBLE (gap 1.2%)`` (``gap unknown`` without a bound); else the status."""
    if status == "FEASIBLE":
        if math.isfinite(gap):
            return f"FEASIBLE (gap {gap * 100:.1f}%)"
        return "FEASIBLE (gap unknown)"
    return status


def parcel_to_json(parcel: ParcelCost) -> dict[str, Any]:
    return {
        "node_id": parcel.node_id,
        "service": parcel.service,
        "zone": parcel.zone,
        "distance_km": round(parcel.distance_km, 1),
        "weight_kg": float(Decimal(int(parcel.weight_g)).scaleb(-3)),
        "lines": [{"line": pl.line, "sku": pl.sku, "qty": pl.qty} for pl in parcel.lines],
        "cost": money(parcel.cost),
        "shipping": money(parcel.shipping),
        "handling": money(parcel.handling),
        "storage_credit": money(parcel.storage_credit),
        "arrival_days": parcel.arrival_days,
        # Only for units waiting for inbound receipts (backorder): the day they are due.
        **({"inbound_day": parcel.inbound_day} if parcel.inbound_day is not None else {}),
    }


def option_to_json(option: Option) -> dict[str, Any]:
    evaluation = option.evaluation
    return {
        "labels": [label.value for label in option.labels],
        "cost": money(evaluation.cost),
        "delivery_days": evaluation.delivery_days,
        "status": status_text(option.proof.status, option.proof.gap),
        "proof": option.proof.method,
        "breakdown": {
            "shipping": money(evaluation.shipping),
            "handling": money(evaluation.handling),
            "storage_credit": money(evaluation.storage_credit),
            # Only when priced with opportunity costs: not part of "cost" (the reference cost).
            **({"opportunity_cost": money(option.opportunity)} if option.opportunity else {}),
        },
        "parcels": [parcel_to_json(p) for p in evaluation.parcels],
        # Only for click & collect: the store, and delivery_days is the ready day there.
        **({"pickup_store": option.pickup} if option.pickup is not None else {}),
    }


def shortfall_to_json(shortfall: Shortfall) -> dict[str, Any]:
    return {
        "line": shortfall.line,
        "sku": shortfall.sku,
        "requested": shortfall.requested,
        "covered": shortfall.covered,
    }


def frontier_to_json(quote: Quote) -> list[dict[str, Any]]:
    """Every Pareto-optimal allocation (cost, delivery day, parcels), labelled or not."""
    return [option_to_json(option) for option in quote.frontier]


def _stats_to_json(stats: object) -> dict[str, Any]:
    if not dataclasses.is_dataclass(stats) or isinstance(stats, type):
        return {}
    result: dict[str, Any] = {}
    for f in dataclasses.fields(stats):
        value = getattr(stats, f.name)
        if isinstance(value, float):
            value = round(value, 4) if math.isfinite(value) else None
        result[f.name] = value
    return result


def quote_to_json(quote: Quote, *, frontier: bool = False) -> dict[str, Any]:
    """The ``sourcing quote`` document; ``frontier=True`` adds the ``"frontier"`` key."""
    result: dict[str, Any] = {
        "options": [option_to_json(option) for option in quote.options],
        "shortfall": [shortfall_to_json(s) for s in quote.shortfall],
        "stats": _stats_to_json(quote.stats),
    }
    if frontier:
        result["frontier"] = frontier_to_json(quote)
    return result
