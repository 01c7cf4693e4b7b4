"""The bit-mask prefilter of the cover test never rejects a set the plain sums accept."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from sourcing.model import QuoteSettings
from sourcing.solver.context import Context
from sourcing.solver.enumeration import _covering, _covering_sums


def test_zero_demand_sku_does_not_block_cover() -> None:
    # A backorder leg's demand is zero for SKUs fully in stock: their stock is clipped to 0.
    rng = np.random.default_rng(0)
    available = rng.integers(0, 3, size=(30, 3)).astype(np.int64)
    available[:, 2] = 0
    demand = np.array([2, 2, 0], dtype=np.int64)
    ctx = Context(
        SimpleNamespace(available=available), demand, QuoteSettings(), time.perf_counter() + 10
    )  # type: ignore[arg-type]
    nodes = np.array([(a, b) for a in range(30) for b in range(a + 1, 30)], dtype=np.int64)
    expected = _covering_sums(ctx, nodes)
    assert expected.any()
    assert (_covering(ctx, nodes) == expected).all()
