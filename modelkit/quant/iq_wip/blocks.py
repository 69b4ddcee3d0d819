"""Row matrices <-> block arrays, shared by the low-bit kernels.

Every kernel here works on ``(n_blocks, block_elems)`` float32 arrays and
``(n_blocks, block_bytes)`` uint8 arrays; these two helpers do the reshaping and the checks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

P = ParamSpec("P")
R = TypeVar("R")
F32Array = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]


def float_blocks(x: np.ndarray, elems: int, name: str) -> tuple[F32Array, int]:
    """(rows, n_per_row) float32 -> ((rows*n_per_row/elems, elems) float32, rows)."""
    xa = np.ascontiguousarray(x, dtype=np.float32)
    if xa.ndim == 1:
        xa = xa[None, :]
    if xa.ndim != 2:
        raise ValueError(f"expected a (rows, n_per_row) matrix, got shape {xa.shape}")
    if xa.shape[1] % elems:
        raise ValueError(f"{name}: row length {xa.shape[1]} is not a multiple of the "
                         f"block size {elems}")
    return xa.reshape(-1, elems), xa.shape[0]


def byte_blocks(q: np.ndarray, block_bytes: int, block_elems: int, n_per_row: int,
                name: str) -> tuple[U8Array, int]:
    """(rows, row_bytes) uint8 -> ((n_blocks, block_bytes) uint8, rows), checking sizes."""
    qa = np.ascontiguousarray(q, dtype=np.uint8)
    if n_per_row % block_elems:
        raise ValueError(f"{name}: row length {n_per_row} is not a multiple of the "
                         f"block size {block_elems}")
    row_bytes = n_per_row // block_elems * block_bytes
    if qa.ndim == 1:
        qa = qa.reshape(-1, row_bytes)
    if qa.ndim != 2 or qa.shape[1] != row_bytes:
        raise ValueError(f"{name}: expected rows of {row_bytes} bytes for {n_per_row} "
                         f"values, got shape {qa.shape}")
    return qa.reshape(-1, block_bytes), qa.shape[0]


def c_round_int(v: F32Array, from_long: bool = False) -> npt.NDArray[np.int64]:
    """C ``(int)roundf(v)`` (or ``lroundf``) of float32 values on x86-64.

    Rounds half away from zero (numpy's rint is half to even), in float64 where
    ``|v| + 0.5`` is exact for every float32 that matters. Out of range or NaN gives INT_MIN;
    ``from_long``: the value came from ``lroundf`` (a long: LONG_MIN) and is truncated to
    ``int`` after a small constant is added, so that case gives 0 here."""
    r = np.copysign(np.floor(np.abs(v.astype(np.float64)) + 0.5), v)
    bad = ~(np.abs(r) < 2.0**31)
    out = np.where(bad, 0.0, r).astype(np.int64)
    out[bad] = 0 if from_long else -(2**31)
    return out


def quiet(fn: Callable[P, R]) -> Callable[P, R]:
    """Run a kernel under ``np.errstate(all="ignore")``: like C, the kernels compute through
    inf/NaN intermediates (overflowing f16 scales, ``0 * inf``) on purpose."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    return wrapper
