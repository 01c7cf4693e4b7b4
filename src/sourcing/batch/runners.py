"""Where sub-problems run: in this process (:class:`LocalRunner`) or on a Dask cluster
(:class:`DaskRunner`). The answer is the same either way."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

_P = TypeVar("_P")


_S = TypeVar("_S")


class Runner(Protocol):
    """Runs a pure function over many inputs, yielding results as they finish (any order)."""

    def map_unordered(self, function: Callable[[_P], _S], items: Sequence[_P]) -> Iterator[_S]: ...


class LocalRunner:
    """In this process, one after another."""

    def map_unordered(self, function: Callable[[_P], _S], items: Sequence[_P]) -> Iterator[_S]:
        return (function(item) for item in items)


class DaskRunner:
    """On a Dask cluster through a ``distributed.Client`` (results as they complete)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def map_unordered(self, function: Callable[[_P], _S], items: Sequence[_P]) -> Iterator[_S]:
        from distributed import as_completed

        if not items:
            return iter(())
        # Inputs go to the workers directly (scattered), not inside the task graph.
        # (hash=False: tokenizing large inputs to name them cost about a second each.)
        data = self.client.scatter(list(items), hash=False)
        futures = self.client.map(function, data, pure=False)
        return (future.result() for future in as_completed(futures))  # type: ignore[no-untyped-call]
