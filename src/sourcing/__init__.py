"""Sourcing engine: which stock ships from where, by which service, at what cost.

A pure decision library: no gRPC, no database, no I/O beyond the planner CSV
loader, the CLI and the planners' what-if tooling. See DESIGN sections 3 and 7.
Three products live here, each importing only what is below it:

* **the single-order engine**, at the top of the package. Top-down, one quote
  request: :mod:`~sourcing.menu` (``quote()``: the menu) over
  :mod:`~sourcing.fulfil` (click & collect and backorder legs) over
  :mod:`~sourcing.solver` (the exact delivery solver, a package); beside them
  :mod:`~sourcing.baselines` (rule policies), :mod:`~sourcing.report` (JSON);
  below, :mod:`~sourcing.evaluate` (the independent evaluator),
  :mod:`~sourcing.costs`, :mod:`~sourcing.orders`, :mod:`~sourcing.loader`,
  :mod:`~sourcing.demo`, :mod:`~sourcing.model` and :mod:`~sourcing.errors`.
  The engine never imports :mod:`sourcing.batch`, :mod:`sourcing.whatif` or
  :mod:`oms`;
* :mod:`sourcing.batch`: joint re-optimisation of many open orders (imports
  the engine);
* :mod:`sourcing.whatif`: the planners' replay, scenarios, Olist data and
  reports (imports the engine and batch).

:mod:`sourcing.cli` is the ``sourcing`` command: an entry point over all
three. ``scripts/check_layout.py`` checks these rules (the import-linter
contracts in ``pyproject.toml``) and the size limits.
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
