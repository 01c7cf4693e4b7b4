"""Sourcing engine: which stock ships from where, by which service, at what cost.

A pure decision library: no gRPC, no database, no I/O beyond the planner CSV
loader and the planners' what-if tooling (``scenario``, ``olist`` and
``whatif_report`` read scenario and data files and write reports; the replay
engine ``simulate`` itself does no I/O). See DESIGN sections 3 and 7.
"""

from sourcing.errors import InvalidOrderError, NetworkDataError, ShortageError, SourcingError
from sourcing.evaluate import evaluate
from sourcing.menu import quote
from sourcing.model import (
    Allocation,
    Evaluation,
    Label,
    Location,
    Network,
    Option,
    Order,
    OrderLine,
    ParcelLine,
    ParcelPlan,
    Quote,
    QuoteSettings,
)

__all__ = [
    "Allocation",
    "Evaluation",
    "InvalidOrderError",
    "Label",
    "Location",
    "Network",
    "NetworkDataError",
    "Option",
    "Order",
    "OrderLine",
    "ParcelLine",
    "ParcelPlan",
    "Quote",
    "QuoteSettings",
    "ShortageError",
    "SourcingError",
    "evaluate",
    "quote",
]
