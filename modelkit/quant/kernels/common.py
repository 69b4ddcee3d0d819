"""Exact C semantics, vectorised: the helpers every block family shares.

Matching ggml's reference C bit for bit in numpy rests on a few rules, followed in every
kernel module:

* Every value is float32 and every C expression is evaluated in the same order, one
  rounding per operation (``a*b + c`` is a product then a sum: the reference build has
  no FMA contraction). Python float constants are wrapped in ``np.float32`` first.
* Sums are sequential, in C loop order. The searches work on arrays laid out
  element-major, shape ``(elements, groups)``, so that ``seq_sum`` adds whole rows one
  after the other (numpy's pairwise summation only runs along the contiguous axis).
* ``nearest_int`` is ggml's ``x + 12582912.0f`` bit trick: round half to even, and a
  well-defined (if odd) integer for inf/NaN/huge arguments. In the hot loops, where the
  arguments are provably small, ``np.rint`` (also half to even) stands in for it and the
  rare unproven columns take the bit trick (``clamped_levels``, ``final_levels``).
* ``roundf`` (Q8_0) rounds half away from zero; the legacy formats truncate
  ``(int8_t)(v + 8.5f)``. Where C converts inf/NaN to an integer (blocks whose ``1/d``
  overflows, e.g. float32 subnormal input), x86-64 yields INT_MIN, whose low byte is 0.
* Min/max loops keep the *first* extreme value, which decides the sign of a zero.
* inf/NaN intermediates are expected (C computes through them silently), so every entry
  point runs under ``np.errstate(all="ignore")``.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

F32Array = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]
U16Array = npt.NDArray[np.uint16]
I32Array = npt.NDArray[np.int32]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

F32 = np.float32
T = TypeVar("T", bound=np.generic)
MAGIC = F32(12582912.0)  # 1.5 * 2**23: adding it leaves round(v) in the low mantissa bits
GROUP_MAX_EPS = F32(1e-15)  # ggml's GROUP_MAX_EPS: below it a group counts as all zero
RINT_SAFE = F32(2.0**21)  # |v| below this: np.rint(v) == nearest_int(v), with margin
F32_TINY = F32(2.0**-125)  # c / span cannot overflow when span > c * 2**-125
TILE = 128  # rows per transposed tile in max_min


def gather(a: npt.NDArray[T], at: npt.NDArray[np.intp]) -> npt.NDArray[T]:
    """``a.take(at)`` for indices built in range (the searches' hot gathers): numpy's
    ``mode="wrap"`` gives the same values for them and skips the per-element bounds
    check's error path, about 20% faster on 4- and 8-byte items (numpy 2.4)."""
    return a.take(at, mode="wrap")


def hits_2d(mask: BoolArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """``np.nonzero`` of a 2-D mask (row-major order), by divmod of the flat hits: about
    3x faster than ``np.nonzero`` on the kernels' masks (numpy 2.4)."""
    rows, cols = np.divmod(np.flatnonzero(mask), mask.shape[1])
    return rows, cols


def nearest_int(v: F32Array) -> I32Array:
    """ggml's ``nearest_int``: the float trick, bit for bit (also for inf/NaN/huge v)."""
    bits = np.ascontiguousarray(v + MAGIC).view(np.int32)
    return (bits & 0x007FFFFF) - 0x00400000


def seq_sum(a: F32Array, from_zero: bool = True, out: F32Array | None = None) -> F32Array:
    """Sum over the element axis (-2) in index order, like ``for (i...) s += a[i]`` in C.

    ``np.add.reduce`` over a non-contiguous axis of a C-contiguous array adds whole
    slices one after the other (pairwise summation only runs along the contiguous axis,
    which is why the element axis is never the last one); when the last axis has length
    1 numpy would switch to pairwise, so that case takes an explicit loop.
    ``from_zero``: C starts from ``s = 0`` (this decides the sign of an all-zero sum)
    rather than from the first element. ``out``: where to write the sums.
    """
    if a.shape[-1] >= 2 and a.flags.c_contiguous:
        if from_zero:
            return np.add.reduce(a, axis=-2, initial=F32(0.0), out=out)
        return np.add.reduce(a, axis=-2, out=out)
    first = a[..., 0, :]
    s = np.zeros_like(first) if from_zero else first.copy()
    for i in range(0 if from_zero else 1, a.shape[-2]):
        s += a[..., i, :]
    if out is None:
        return s
    out[...] = s
    return out


def max_min(x: F32Array, axis: int) -> tuple[F32Array, F32Array]:
    """Max and min along ``axis`` of a 2-D array (exact: order does not matter).

    Reducing each 32-value row of an (n, 32) array separately is slow in numpy;
    transposing tiles of 128 rows first makes the reductions run along contiguous rows."""
    if axis == 0:
        return x.max(axis=0), x.min(axis=0)
    n, k = x.shape
    full = n - n % TILE
    mx = np.empty(n, dtype=np.float32)
    mn = np.empty(n, dtype=np.float32)
    if full:
        tiles = np.ascontiguousarray(x[:full].reshape(-1, TILE, k).transpose(0, 2, 1))
        mx[:full] = tiles.max(axis=1).reshape(-1)
        mn[:full] = tiles.min(axis=1).reshape(-1)
    if full < n:
        mx[full:] = x[full:].max(axis=1)
        mn[full:] = x[full:].min(axis=1)
    return mx, mn


def first_zero_fix(ext: F32Array, x: F32Array, axis: int) -> F32Array:
    """C's min/max loops keep the *first* extreme value; numpy may return either zero.
    Where the extreme is 0, give it the sign of the first zero along ``axis``."""
    zero = ext == 0
    if zero.any():
        sub = np.compress(zero, x, axis=1 - axis)
        first = np.expand_dims(np.argmax(sub == 0, axis=axis), axis)
        ext = ext.copy()
        ext[zero] = np.take_along_axis(sub, first, axis=axis).squeeze(axis)
    return ext


def signed_absmax(x: F32Array, axis: int) -> F32Array:
    """The first value with the largest |x| along ``axis``, or +0.0 if all are zero
    (C: ``amax = max = 0; if (fabsf(v) > amax) { amax = fabsf(v); max = v; }``, which
    never takes a NaN: NaN values are skipped)."""
    mx, mn = max_min(x, axis)
    return signed_absmax_of(mx, mn, x, axis)


def signed_absmax_of(mx: F32Array, mn: F32Array, x: F32Array, axis: int) -> F32Array:
    """``signed_absmax`` from the groups' max and min (as numpy gives them); ``x`` is
    only read for the groups with a tie or a NaN."""
    out = np.where(mx >= -mn, mx, mn)
    out += F32(0.0)  # all-zero groups: +0.0, whichever zero numpy picked
    nan = np.isnan(out)  # numpy's max and min propagate NaN
    if nan.any():
        sub = np.compress(nan, x, axis=1 - axis)
        out[nan] = signed_absmax(np.where(np.isnan(sub), F32(0.0), sub), axis)
    tie = (mx == -mn) & (mx > 0)  # both +a and -a occur: the first one wins
    if tie.any():
        sub = np.compress(tie, x, axis=1 - axis)
        first = np.expand_dims(np.argmax(np.abs(sub), axis=axis), axis)
        out[tie] = np.take_along_axis(sub, first, axis=axis).squeeze(axis)
    return out


def as_columns(x: F32Array, group: int) -> F32Array:
    """(n_blocks, block_elems) -> (group, n_groups): one column per run of ``group``."""
    return np.ascontiguousarray(x.reshape(-1, group).T)


def from_columns(levels: np.ndarray, block_elems: int) -> U8Array:
    """Inverse of ``as_columns`` for small non-negative integer levels, as uint8."""
    return np.ascontiguousarray(levels.astype(np.uint8).T).reshape(-1, block_elems)


def clamped_levels(xm: F32Array, iscale: F32Array, lo: int, hi: int, out: F32Array,
            unsafe: BoolArray | None = None, offset: F32Array | None = None) -> F32Array:
    """``clamp(nearest_int(iscale * xm), lo, hi)`` into float32 ``out``; xm (n, m),
    iscale (m,). np.rint is nearest_int wherever |iscale * xm| < 2**22; the columns
    flagged ``unsafe`` (inf scales, overflowed spans) take the bit trick instead.
    With ``offset`` (m,), ``xm - offset`` takes the place of ``xm`` (computed in
    ``out``: no extra array, which keeps the searches' working set in cache)."""
    if offset is None:
        np.multiply(xm, iscale, out=out)
    else:
        np.subtract(xm, offset, out=out)
        np.multiply(out, iscale, out=out)
    np.rint(out, out=out)
    np.clip(out, F32(lo), F32(hi), out=out)
    if unsafe is not None and unsafe.any():
        cols = xm[:, unsafe] if offset is None else xm[:, unsafe] - offset[unsafe]
        out[:, unsafe] = np.clip(nearest_int(cols * iscale[unsafe]), lo, hi).astype(np.float32)
    return out


def final_levels(x: F32Array, offset: F32Array | None, d: F32Array, lo: int, hi: int,
                search_levels: F32Array) -> F32Array:
    """The k-quants' last pass: ``clamp(nearest_int((x + offset) / d), lo, hi)`` per
    column with the stored (rounded) sub-block scale d; where ``d == 0`` C skips the
    sub-block and its levels stay those of the search."""
    v = x + offset if offset is not None else x.copy()
    v /= d
    unsafe = ~((v.max(axis=0) < RINT_SAFE) & (v.min(axis=0) > -RINT_SAFE))
    np.rint(v, out=v)
    np.clip(v, F32(lo), F32(hi), out=v)
    if unsafe.any():
        cols = x[:, unsafe] + offset[unsafe] if offset is not None else x[:, unsafe]
        v[:, unsafe] = np.clip(nearest_int(cols / d[unsafe]), lo, hi).astype(np.float32)
    keep = d == 0
    if keep.any():
        v[:, keep] = search_levels[:, keep]
    return v


def pack_nibbles(levels: U8Array) -> U8Array:
    """(n, 32) levels -> (n, 16) bytes: byte j = L[j] & 15 | (L[j+16] & 15) << 4."""
    packed: U8Array = (levels[:, :16] & np.uint8(0x0F)) | (levels[:, 16:] << np.uint8(4))
    return packed


def unpack_nibbles(qs: U8Array) -> U8Array:
    """(n, 16) bytes -> (n, 32) levels, the inverse of ``pack_nibbles``."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


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
