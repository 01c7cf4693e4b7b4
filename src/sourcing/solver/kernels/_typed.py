"""The kernels' compile decorator, and the argument types every kernel is compiled for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
from numba import njit

from sourcing.model import BoolArray, FloatArray, IntArray

_F = TypeVar("_F", bound=Callable[..., Any])


def _compiled(fn: _F) -> _F:
    return cast(_F, njit(cache=True, nogil=True)(fn))


def _as(a: np.ndarray | float, dtype: type) -> np.ndarray:
    """An argument as the kernels' arrays are typed: ``dtype``, C-contiguous, writeable.

    numba compiles one version per argument type, and a strided view (np.nonzero's
    output) or a read-only array is a type of its own: passed one, a kernel would compile
    again, for seconds, inside a checkout call. Every wrapper hands its kernel these (a
    copy only where the array is not so already; the check is cheap, the hot path passes
    arrays that already are).
    """
    if (
        isinstance(a, np.ndarray)
        and a.dtype == dtype
        and a.flags.c_contiguous
        and a.flags.writeable
    ):
        return a
    return np.require(a, dtype=dtype, requirements=["C", "W"])


def _ints(a: np.ndarray | int) -> IntArray:
    return _as(a, np.int64)


def _floats(a: np.ndarray | float) -> FloatArray:
    return _as(a, np.float64)


def _bools(a: np.ndarray) -> BoolArray:
    return _as(a, np.bool_)


def _bits(a: np.ndarray) -> np.ndarray:
    return _as(a, np.uint64)
