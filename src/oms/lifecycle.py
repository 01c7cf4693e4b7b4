"""The order state machine (DESIGN section 4).

``PLACED -> RELEASED -> SHIPPED -> DELIVERED``; ``CANCELLED`` from PLACED or
RELEASED; returns from SHIPPED or DELIVERED leave the state as it is. A
transition repeated on an order already in its target state is a no-op, so a
fulfilment system can retry safely.
"""

from __future__ import annotations

from dataclasses import dataclass

from oms.errors import FailedPrecondition, Precondition


@dataclass(frozen=True)
class Transition:
    action: str
    sources: frozenset[str]
    target: str | None  # None: the state does not change (returns)


TRANSITIONS = {
    t.action: t
    for t in (
        Transition("release", frozenset({"PLACED"}), "RELEASED"),
        Transition("ship", frozenset({"RELEASED"}), "SHIPPED"),
        Transition("deliver", frozenset({"SHIPPED"}), "DELIVERED"),
        Transition("cancel", frozenset({"PLACED", "RELEASED"}), "CANCELLED"),
        Transition(
            "return",
            frozenset({"SHIPPED", "DELIVERED", "PARTIALLY_SHIPPED", "PARTIALLY_DELIVERED"}),
            None,
        ),
        # A node rejected (part of) the order, or its receipt failed: re-sourced in place.
        # Per shipment since issue 16: an order partly shipped still has open shipments.
        Transition(
            "resource",
            frozenset({"PLACED", "RELEASED", "PARTIALLY_SHIPPED", "PARTIALLY_DELIVERED"}),
            None,
        ),
    )
}


def plan(action: str, order_id: str, state: str) -> str | None:
    """The state ``action`` moves the order to; None when it is already there (a retry).

    Raises FAILED_PRECONDITION when the action is not allowed from ``state``.
    """
    transition = TRANSITIONS[action]
    if transition.target is not None and state == transition.target:
        return None
    if state not in transition.sources:
        allowed = " or ".join(sorted(transition.sources))
        raise FailedPrecondition(
            f"cannot {action} order {order_id!r}: it is {state}, and {action} needs {allowed}",
            [Precondition("STATE", order_id, f"order is {state}; {action} needs {allowed}")],
        )
    return transition.target if transition.target is not None else state
