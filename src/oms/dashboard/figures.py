"""Figures shared by every open page: what N tabs or a poll storm cost the store.

Every fragment's figures (the overview of a period, a page of stock, an orders
search, ...) are kept per key (the fragment and its parameters) with the change
mark read before they were computed and the time they were read, shared by all
sessions of the process. A request is answered from them when

* they are younger than ``refresh_s`` (the minimum recompute interval), or
* the change mark, read at most once per ``refresh_s`` for the whole process,
  still equals theirs and they are younger than ``unchanged_s`` (the mark does
  not see what moves with the clock alone, such as today's period or shipments
  becoming late, nor quotes: those are at most ``unchanged_s`` old, as an open
  page's forced refresh every 30 s always allowed);

otherwise one request computes them again while the others for the same key
wait for its result (single flight). So whatever is served includes every
change that moves the mark made more than ``refresh_s`` ago, and N tabs at one
mark cost one query per key per interval, plus one mark query per interval.
Pages show the time their figures were read ("as of").

``refresh_s = unchanged_s = 0`` turns the sharing off (every request computes).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Kept figures at most (LRU): searches are keys too, and a visitor types many.
CAPACITY = 256


@dataclass(frozen=True)
class Figures(Generic[T]):
    value: T
    #: The change mark read before ``value`` was computed (None when marks are not used).
    mark: str | None
    #: When ``value`` was read from the store (the clock's time): the page's "as of".
    as_of: float
    #: Rendered templates of ``value`` by name (fragments are the same for every session).
    rendered: dict[str, str] = field(default_factory=dict, compare=False)


class _Slot:
    __slots__ = ("figures", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.figures: Figures[Any] | None = None


class SharedFigures:
    """Thread-safe; one per dashboard process (see the module's docstring)."""

    def __init__(
        self,
        read_mark: Callable[[], str],
        *,
        refresh_s: float,
        unchanged_s: float,
        clock: Callable[[], float] = time.time,
        capacity: int = CAPACITY,
    ) -> None:
        self.refresh_s = refresh_s
        self.unchanged_s = max(unchanged_s, refresh_s)
        self._read_mark = read_mark
        self._clock = clock
        self._capacity = capacity
        self._slots: OrderedDict[Hashable, _Slot] = OrderedDict()
        self._slots_lock = threading.Lock()
        self._mark_lock = threading.Lock()
        self._mark: tuple[str, float] | None = None

    def __len__(self) -> int:
        return len(self._slots)

    def _young(self, at: float, limit: float) -> bool:
        return 0.0 <= self._clock() - at < limit

    def mark(self) -> tuple[str, float]:
        """The change mark and when it was read: at most once per ``refresh_s`` for all
        callers (the others wait for the one reading it)."""
        with self._mark_lock:
            if self._mark is None or not self._young(self._mark[1], self.refresh_s):
                at = self._clock()
                self._mark = (self._read_mark(), at)
            return self._mark

    def _uses_marks(self) -> bool:
        return self.unchanged_s > self.refresh_s

    def get(self, key: Hashable, compute: Callable[[], T]) -> Figures[T]:
        """``key``'s figures, computed by ``compute`` only when those kept are due."""
        slot = self._slot(key)
        with slot.lock:  # one computation per key at a time; the others take its result
            kept = slot.figures
            if kept is not None and (
                self._young(kept.as_of, self.refresh_s)
                or (
                    self._uses_marks()
                    and self._young(kept.as_of, self.unchanged_s)
                    and kept.mark == self.mark()[0]
                )
            ):
                return kept
            # The mark before the figures: a change committed in between makes the next
            # check recompute (never figures labelled newer than they are).
            mark = self.mark()[0] if self._uses_marks() else None
            at = self._clock()
            fresh = Figures(compute(), mark, at)
            slot.figures = fresh
            return fresh

    def _slot(self, key: Hashable) -> _Slot:
        with self._slots_lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
                while len(self._slots) > self._capacity:
                    self._slots.popitem(last=False)
            else:
                self._slots.move_to_end(key)
            return slot
