"""Where a replay can be cut: spans of the stream that replay independently.

A replay's state between two orders is the running stock, the day's capacity
used and whatever the policy remembers. With a periodic top-up and no
scheduled receipt, every (node, SKU) is back at its starting ``on_hand`` right
after each top-up (units only leave between top-ups, and the top-up raises
stock to the starting level); if the top-up period is a whole number of days,
each top-up falls on a midnight, where the day's capacity starts afresh too.
So for a policy that remembers nothing between orders, the orders from one
top-up to the next replay exactly as a replay of that span alone, from the
starting network: :func:`independent_spans` finds those spans, and
:func:`join_results` puts the spans' results back together into the whole
replay's result (the same rows, the same parcels, the same final stock).

On Dask, :mod:`sourcing.whatif.sweep` runs each span as its own task: 18
replays of 10,000 orders over two and a bit top-up weeks become 54 shorter
tasks, so the workers end within a short span of each other instead of one
idling through another's last whole replay, and a sweep can use more workers
than it has replays.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Final

import pandas as pd

from sourcing.whatif.simulate import (
    OptimiserPolicy,
    Policy,
    Replenishment,
    RulePolicy,
    SimOrder,
    SimulationResult,
    midnight,
)

__all__ = ["MEMORYLESS_POLICIES", "independent_spans", "is_memoryless", "join_results"]

#: Policies whose decision depends only on the order and the running state: no
#: ``begin`` preparation, no periodic hook, nothing kept from one order to the
#: next. Exact types, not subclasses: a subclass (the batch, forward pricing)
#: may remember, and must not be cut unless it says so here.
MEMORYLESS_POLICIES: Final[tuple[type, ...]] = (RulePolicy, OptimiserPolicy)


def is_memoryless(policy: Policy) -> bool:
    """Whether ``policy`` decides each order from the running state alone (see above)."""
    return type(policy) in MEMORYLESS_POLICIES


def independent_spans(
    stream: Sequence[SimOrder], replenishment: Replenishment | None
) -> list[tuple[int, int]]:
    """``(start, stop)`` spans of ``stream`` (in time order) that replay independently.

    ``stream`` must be in replay order (:func:`~sourcing.whatif.simulate.simulate`'s:
    by ``created_at``, ties in stream order). The spans run from one top-up to
    the next (a top-up at the very moment of an order comes before it, as in the
    replay); spans without orders are left out. One span, the whole stream, when
    the replay cannot be cut: no top-up, a top-up period that is not a whole
    number of days, or scheduled receipts (they leave stock above the starting
    level, which a top-up does not undo).
    """
    whole = [(0, len(stream))]
    if replenishment is None or replenishment.receipts or not stream:
        return whole
    every = replenishment.top_up_every_days
    if every is None or not float(every).is_integer() or every < 1:
        return whole
    t0 = midnight(stream[0].created_at)  # the replay's own clock
    period = timedelta(days=every)
    spans: list[tuple[int, int]] = []
    start, boundary = 0, t0 + period
    for i, item in enumerate(stream):
        if item.created_at < boundary:
            continue
        if i > start:
            spans.append((start, i))
        start = i
        # The next top-up after this order (periods without orders are skipped).
        boundary += period * ((item.created_at - boundary) // period + 1)
    spans.append((start, len(stream)))
    return spans


def join_results(parts: Sequence[SimulationResult]) -> SimulationResult:
    """The replay of consecutive spans' results as one: rows in order, parcels renumbered.

    ``parts`` are the results of :func:`independent_spans`' spans, in stream
    order, of one policy on one network; the final stock is the last span's.
    """
    if not parts:
        raise ValueError("no results to join")
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    offsets = [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part.orders))
    parcels = []
    for offset, part in zip(offsets, parts, strict=True):
        frame = part.parcels.copy()
        frame["order"] = frame["order"] + offset
        parcels.append(frame)
    return SimulationResult(
        policy=first.policy,
        node_ids=first.node_ids,
        orders=pd.concat([part.orders for part in parts], ignore_index=True),
        parcels=pd.concat(parcels, ignore_index=True),
        on_hand_end=parts[-1].on_hand_end,
    )
