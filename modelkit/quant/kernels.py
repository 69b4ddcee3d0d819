"""Block quantizers and dequantizers, byte-identical to llama.cpp's reference C code.

Covers Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K, with and without an importance
matrix, exactly as ``ggml_quantize_chunk`` does it: ``quantize_row_<type>_ref`` without
one, the weighted ``quantize_row_<type>_impl`` searches with one (Q8_0 ignores it).

Matching C bit for bit in numpy rests on a few rules, followed everywhere below:

* Every value is float32 and every C expression is evaluated in the same order, one
  rounding per operation (``a*b + c`` is a product then a sum: the reference build has
  no FMA contraction). Python float constants are wrapped in ``np.float32`` first.
* Sums are sequential, in C loop order. The searches work on arrays laid out
  element-major, shape ``(elements, groups)``, so that ``_seq_sum`` adds whole rows one
  after the other (numpy's pairwise summation only runs along the contiguous axis).
* ``nearest_int`` is ggml's ``x + 12582912.0f`` bit trick: round half to even, and a
  well-defined (if odd) integer for inf/NaN/huge arguments. In the hot loops, where the
  arguments are provably small, ``np.rint`` (also half to even) stands in for it and the
  rare unproven columns take the bit trick (``_levels``, ``_requantize``).
* ``roundf`` (Q8_0) rounds half away from zero; the legacy formats truncate
  ``(int8_t)(v + 8.5f)``. Where C converts inf/NaN to an integer (blocks whose ``1/d``
  overflows, e.g. float32 subnormal input), x86-64 yields INT_MIN, whose low byte is 0.
* Min/max loops keep the *first* extreme value, which decides the sign of a zero.
* float32 -> float16 is ggml's own conversion, bit for bit (round to nearest even,
  NaN -> 0x7E00 with the sign kept).
* inf/NaN intermediates are expected (C computes through them silently), so every entry
  point runs under ``np.errstate(all="ignore")``.

Inputs are expected to be finite; NaN/inf inputs give deterministic bytes that are not
guaranteed to match C.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, cast

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants
from gguf.constants import GGML_QUANT_SIZES

__all__ = [
    "FORMATS",
    "BlockFormat",
    "Q4_0",
    "Q4_1",
    "Q4_K",
    "Q5_0",
    "Q5_1",
    "Q5_K",
    "Q6_K",
    "Q8_0",
    "dequantize",
    "quantize",
    "to_float32",
]

F32Array = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]
U16Array = npt.NDArray[np.uint16]
I32Array = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]

F32 = np.float32
_MAGIC = F32(12582912.0)  # 1.5 * 2**23: adding it leaves round(v) in the low mantissa bits
_GROUP_MAX_EPS = F32(1e-15)  # ggml's GROUP_MAX_EPS: below it a group counts as all zero
_RINT_SAFE = F32(2.0**21)  # |v| below this: np.rint(v) == nearest_int(v), with margin
_F32_TINY = F32(2.0**-125)  # c / span cannot overflow when span > c * 2**-125
_NEARLY_HALF_BITS = np.uint32(0x3EFFFFFF)  # bits of 0.49999997f, the float below 0.5
_TILE = 128  # rows per transposed tile in _max_min


# --------------------------------------------------------------------------------------
# Exact C semantics, vectorised
# --------------------------------------------------------------------------------------


def _nearest_int(v: F32Array) -> I32Array:
    """ggml's ``nearest_int``: the float trick, bit for bit (also for inf/NaN/huge v)."""
    bits = np.ascontiguousarray(v + _MAGIC).view(np.int32)
    return (bits & 0x007FFFFF) - 0x00400000


def _seq_sum(a: F32Array, from_zero: bool = True) -> F32Array:
    """Sum over the element axis (-2) in index order, like ``for (i...) s += a[i]`` in C.

    ``np.add.reduce`` over a non-contiguous axis of a C-contiguous array adds whole
    slices one after the other (pairwise summation only runs along the contiguous axis,
    which is why the element axis is never the last one); when the last axis has length
    1 numpy would switch to pairwise, so that case takes an explicit loop.
    ``from_zero``: C starts from ``s = 0`` (this decides the sign of an all-zero sum)
    rather than from the first element.
    """
    if a.shape[-1] >= 2 and a.flags.c_contiguous:
        if from_zero:
            return np.add.reduce(a, axis=-2, initial=F32(0.0))  # type: ignore[no-any-return]
        return np.add.reduce(a, axis=-2)  # type: ignore[no-any-return]
    first = a[..., 0, :]
    s = np.zeros_like(first) if from_zero else first.copy()
    for i in range(0 if from_zero else 1, a.shape[-2]):
        s += a[..., i, :]
    return s


def _fp32_to_fp16_bits(f: F32Array) -> U16Array:
    """``GGML_FP32_TO_FP16`` (ggml_compute_fp32_to_fp16), bit for bit."""
    f = np.ascontiguousarray(f, dtype=np.float32)
    base = (np.abs(f) * F32(2.0**112)) * F32(2.0**-110)
    w = f.view(np.uint32)
    shl1 = w << np.uint32(1)
    sign = w & np.uint32(0x80000000)
    bias = np.maximum(shl1 & np.uint32(0xFF000000), np.uint32(0x71000000))
    base = ((bias >> np.uint32(1)) + np.uint32(0x07800000)).view(np.float32) + base
    bits = base.view(np.uint32)
    nonsign = ((bits >> np.uint32(13)) & np.uint32(0x7C00)) + (bits & np.uint32(0x0FFF))
    out = np.where(shl1 > np.uint32(0xFF000000), np.uint32(0x7E00), nonsign)
    half: U16Array = (out | (sign >> np.uint32(16))).astype(np.uint16)
    return half


def _fp16_bytes(f: F32Array) -> U8Array:
    """float32 (n,) -> (n, 2): the little-endian bytes of ggml's fp16 of each value."""
    return _fp32_to_fp16_bits(f).astype("<u2").view(np.uint8).reshape(-1, 2)


def _fp16_to_f32(b: U8Array) -> F32Array:
    """(n, 2) little-endian fp16 bytes -> float32 (n,), an exact widening."""
    return np.ascontiguousarray(b).view("<f2")[:, 0].astype(np.float32)


def _max_min(x: F32Array, axis: int) -> tuple[F32Array, F32Array]:
    """Max and min along ``axis`` of a 2-D array (exact: order does not matter).

    Reducing each 32-value row of an (n, 32) array separately is slow in numpy;
    transposing tiles of 128 rows first makes the reductions run along contiguous rows."""
    if axis == 0:
        return x.max(axis=0), x.min(axis=0)
    n, k = x.shape
    full = n - n % _TILE
    mx = np.empty(n, dtype=np.float32)
    mn = np.empty(n, dtype=np.float32)
    if full:
        tiles = np.ascontiguousarray(x[:full].reshape(-1, _TILE, k).transpose(0, 2, 1))
        mx[:full] = tiles.max(axis=1).reshape(-1)
        mn[:full] = tiles.min(axis=1).reshape(-1)
    if full < n:
        mx[full:] = x[full:].max(axis=1)
        mn[full:] = x[full:].min(axis=1)
    return mx, mn


def _first_zero_fix(ext: F32Array, x: F32Array, axis: int) -> F32Array:
    """C's min/max loops keep the *first* extreme value; numpy may return either zero.
    Where the extreme is 0, give it the sign of the first zero along ``axis``."""
    zero = ext == 0
    if zero.any():
        sub = np.compress(zero, x, axis=1 - axis)
        first = np.expand_dims(np.argmax(sub == 0, axis=axis), axis)
        ext = ext.copy()
        ext[zero] = np.take_along_axis(sub, first, axis=axis).squeeze(axis)
    return ext


def _signed_absmax(x: F32Array, axis: int) -> F32Array:
    """The first value with the largest |x| along ``axis``, or +0.0 if all are zero
    (C: ``amax = max = 0; if (fabsf(v) > amax) { amax = fabsf(v); max = v; }``)."""
    mx, mn = _max_min(x, axis)
    out = np.where(mx >= -mn, mx, mn)
    out += F32(0.0)  # all-zero groups: +0.0, whichever zero numpy picked
    tie = (mx == -mn) & (mx > 0)  # both +a and -a occur: the first one wins
    if tie.any():
        sub = np.compress(tie, x, axis=1 - axis)
        first = np.expand_dims(np.argmax(np.abs(sub), axis=axis), axis)
        out[tie] = np.take_along_axis(sub, first, axis=axis).squeeze(axis)
    return out


def _as_columns(x: F32Array, group: int) -> F32Array:
    """(n_blocks, block_elems) -> (group, n_groups): one column per run of ``group``."""
    return np.ascontiguousarray(x.reshape(-1, group).T)


def _from_columns(levels: F32Array, block_elems: int) -> U8Array:
    """Inverse of ``_as_columns`` for small non-negative integer levels, as uint8."""
    return np.ascontiguousarray(levels.astype(np.uint8).T).reshape(-1, block_elems)


def _levels(xm: F32Array, iscale: F32Array, lo: int, hi: int, out: F32Array,
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
        out[:, unsafe] = np.clip(_nearest_int(cols * iscale[unsafe]), lo, hi).astype(np.float32)
    return out


def _requantize(x: F32Array, offset: F32Array | None, d: F32Array, lo: int, hi: int,
                search_levels: F32Array) -> F32Array:
    """The k-quants' last pass: ``clamp(nearest_int((x + offset) / d), lo, hi)`` per
    column with the stored (rounded) sub-block scale d; where ``d == 0`` C skips the
    sub-block and its levels stay those of the search."""
    v = x + offset if offset is not None else x.copy()
    v /= d
    unsafe = ~((v.max(axis=0) < _RINT_SAFE) & (v.min(axis=0) > -_RINT_SAFE))
    np.rint(v, out=v)
    np.clip(v, F32(lo), F32(hi), out=v)
    if unsafe.any():
        cols = x[:, unsafe] + offset[unsafe] if offset is not None else x[:, unsafe]
        v[:, unsafe] = np.clip(_nearest_int(cols / d[unsafe]), lo, hi).astype(np.float32)
    keep = d == 0
    if keep.any():
        v[:, keep] = search_levels[:, keep]
    return v


def _c_trunc_to_byte(v: F32Array, overflowed: BoolArray) -> U8Array:
    """``(int8_t)`` / ``(uint8_t)`` of float (n, 32): truncate toward zero. Blocks
    whose ``1/d`` ``overflowed`` hold inf/NaN in C, which x86-64 converts to INT_MIN:
    low byte 0. ``v`` is in [0, 32) everywhere else."""
    if overflowed.any():
        v[overflowed] = 0
    return v.astype(np.uint8)


# --------------------------------------------------------------------------------------
# The shared searches of ggml-quants.c (all on element-major (n, m) arrays)
# --------------------------------------------------------------------------------------


def _fit_symmetric(x: F32Array, w: F32Array, nmax: int) -> tuple[F32Array, F32Array]:
    """make_qx_quants (rmse_type 1): per column, levels L in [0, 2*nmax) and a scale d
    with x ~ d * (L - nmax), maximising sum(w*x*l)^2 / sum(w*l^2) over the inverse
    scales -(nmax + 0.1*k)/max, k = 0, -9..9. Returns (d (m,), L (n, m) float)."""
    amax_signed = _signed_absmax(x, axis=0)
    zero = ~(np.abs(amax_signed) >= _GROUP_MAX_EPS)
    vmax = np.where(zero, F32(1.0), amax_signed)
    nonfinite = ~np.isfinite(vmax)
    unsafe = nonfinite if nonfinite.any() else None  # else |iscale * x| <= nmax + 1
    # one scratch array for the products, each summed while still in cache: the fewer
    # arrays a try touches, the better
    wx = w * x
    prod = np.empty_like(x)
    lv = np.empty_like(x)
    nm = F32(nmax)

    def sums(iscale: F32Array) -> tuple[F32Array, F32Array]:
        _levels(x, iscale, -nmax, nmax - 1, lv, unsafe)
        sumlx = _seq_sum(np.multiply(wx, lv, out=prod))  # C: w*x*l == (w*x)*l
        np.multiply(w, lv, out=prod)
        suml2 = _seq_sum(np.multiply(prod, lv, out=prod))  # C: w*l*l == (w*l)*l
        return sumlx, suml2

    best_iscale = -nm / vmax
    sumlx, suml2 = sums(best_iscale)
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0.0))
    best = scale * sumlx
    for k in range(-9, 10):
        if k == 0:
            continue
        iscale = -(nm + F32(0.1) * F32(k)) / vmax
        sumlx, suml2 = sums(iscale)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        if better.any():
            scale = np.where(better, sumlx / suml2, scale)
            best = np.where(better, scale * sumlx, best)
            best_iscale = np.where(better, iscale, best_iscale)
    levels = _levels(x, best_iscale, -nmax, nmax - 1, lv, unsafe)
    levels += nm
    levels[:, zero] = 0
    scale[zero] = 0
    return scale, levels


def _fit_scale_min(x: F32Array, w: F32Array, nmax: int, rmin: float, rdelta: float,
                   nstep: int) -> tuple[F32Array, F32Array, F32Array]:
    """make_qkx2_quants / make_qkx3_quants (the same for finite input): per column,
    levels L in [0, nmax], a scale and an offset min <= 0 with x ~ scale*L + min,
    minimising the weighted squared error. Tries the inverse scales
    (rmin + rdelta*k + nmax) / (max - min), k = 0..nstep, each followed by a weighted
    least-squares fit of scale and min; an accepted fit moves ``min`` for the next try.
    Returns (scale (m,), the_min = -min (m,), L (n, m) float)."""
    xmax = x.max(axis=0)
    xmin = _first_zero_fix(x.min(axis=0), x, axis=0)  # -min may be stored (Q4_1, Q5_1)
    sum_w = _seq_sum(w, from_zero=False)  # C starts these two from element 0
    sum_x = _seq_sum(w * x, from_zero=False)
    cur_min = np.where(xmin > 0, F32(0.0), xmin)
    flat = ~(xmax > cur_min)
    c_max = abs(F32(rmin) + F32(rdelta) * F32(nstep) + F32(nmax)) + F32(nmax)

    def unsafe_columns(m: F32Array) -> BoolArray | None:
        # iscale = c/(max - m) times (x - m): rint is safe if c*max|x - m|/|max - m| is
        # small, and c/(max - m) must not overflow either
        span = np.abs(xmax - m)
        reach = np.maximum(span, np.abs(xmin - m))
        unsafe = ~((reach * c_max < _RINT_SAFE * span) & (span > c_max * _F32_TINY))
        return unsafe if unsafe.any() else None

    lv = np.empty_like(x)
    wl = np.empty_like(x)
    # one scratch array for the products (w*l)*l, (w*l)*x and the error terms, each
    # summed while still in cache: the fewer arrays a try touches, the better
    err = np.empty_like(x)

    def weighted_error(scale: F32Array, offset: F32Array) -> F32Array:
        # sum of w * (scale*l + offset - x)^2 in C's operation order
        np.multiply(lv, scale, out=err)
        np.add(err, offset, out=err)
        np.subtract(err, x, out=err)
        np.square(err, out=err)
        np.multiply(err, w, out=err)
        return _seq_sum(err)

    unsafe = unsafe_columns(cur_min)
    iscale = F32(nmax) / (xmax - cur_min)
    scale = F32(1.0) / iscale
    _levels(x, iscale, 0, nmax, lv, unsafe, cur_min)
    best = weighted_error(scale, cur_min)
    # the winning levels are recomputed at the end from the (iscale, min) that made them
    l_iscale = iscale
    l_min = cur_min
    for k in range(nstep + 1):
        iscale = (F32(rmin) + F32(rdelta) * F32(k) + F32(nmax)) / (xmax - cur_min)
        _levels(x, iscale, 0, nmax, lv, unsafe, cur_min)
        np.multiply(w, lv, out=wl)
        sum_l = _seq_sum(wl)
        sum_l2 = _seq_sum(np.multiply(wl, lv, out=err))  # C: w*l*l == (w*l)*l
        sum_xl = _seq_sum(np.multiply(wl, x, out=err))  # C: w*l*x[i] == (w*l)*x
        det = sum_w * sum_l2 - sum_l * sum_l
        fit_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        fit_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        positive = fit_min > 0
        this_min = cast(F32Array, np.where(positive, F32(0.0), fit_min))
        this_scale = cast(F32Array, np.where(positive, sum_xl / sum_l2, fit_scale))
        cur = weighted_error(this_scale, this_min)
        better = (det > 0) & (cur < best)
        if better.any():
            best = np.where(better, cur, best)
            scale = np.where(better, this_scale, scale)
            l_iscale = np.where(better, iscale, l_iscale)
            l_min = np.where(better, cur_min, l_min)
            cur_min = np.where(better, this_min, cur_min)
            unsafe = unsafe_columns(cur_min)
    levels = _levels(x, l_iscale, 0, nmax, lv, unsafe_columns(l_min), l_min)
    levels[:, flat] = 0
    scale[flat] = 0
    return scale, -cur_min, levels


def _fit_unsigned(x: F32Array, w: F32Array, nmax: int) -> tuple[F32Array, U8Array]:
    """make_qp_quants: quantize non-negative x (n, m) (the k-quants' sub-block scales
    or mins) to levels in [0, nmax] with weights w: the best of 9 trial scales, then up
    to 5 rounds of coordinate descent on sum(w*x*l)^2 / sum(w*l^2).
    Returns (scale (m,), L (n, m) uint8)."""
    n = x.shape[0]
    xmax = np.max(x, axis=0, initial=F32(0.0))
    zero = ~(xmax >= _GROUP_MAX_EPS)
    xmax = np.where(zero, F32(1.0), xmax)
    nm = F32(nmax)
    iscale = nm / xmax
    lv = (_nearest_int(x * iscale) & 0xFF).astype(np.float32)  # C stores it in a uint8
    diff = x - (F32(1.0) / iscale) * lv
    best_mse = _seq_sum((w * diff) * diff)
    for k in range(-4, 5):
        if k == 0:
            continue
        iscale_k = (F32(0.1) * F32(k) + nm) / xmax
        lk = np.minimum(_nearest_int(x * iscale_k), nmax).astype(np.float32)
        diff = x - (F32(1.0) / iscale_k) * lk
        mse = _seq_sum((w * diff) * diff)
        better = mse < best_mse
        best_mse = np.where(better, mse, best_mse)
        iscale = np.where(better, iscale_k, iscale)
    li = np.minimum(_nearest_int(x * iscale), nmax)
    lf = li.astype(np.float32)
    wx = w * x  # C: w*x[i]*l == (w*x)*l
    sumlx = _seq_sum(wx * lf)
    suml2 = _seq_sum((w * lf) * lf)
    levels = li & 0xFF  # the uint8 L[] of the C code
    # Rounds of coordinate descent, in element order. C stops a column after a round
    # without change; such a round leaves the state as it was, so running rounds on
    # until no column changes any more (at most 5) gives the same result.
    for _ in range(5):
        changed = False
        for i in range(n):
            l_i = levels[i].astype(np.float32)
            slx = sumlx - wx[i] * l_i
            sl2 = suml2 - (w[i] * l_i) * l_i
            ok = (slx > 0) & (sl2 > 0)
            new_l = np.minimum(_nearest_int((x[i] * sl2) / slx), nmax)
            new_f = new_l.astype(np.float32)
            slx += wx[i] * new_f
            sl2 += (w[i] * new_f) * new_f
            take = ok & (new_l != levels[i]) & ((slx * slx) * suml2 > (sumlx * sumlx) * sl2)
            if take.any():
                changed = True
                levels[i] = np.where(take, new_l & 0xFF, levels[i])
                sumlx = np.where(take, slx, sumlx)
                suml2 = np.where(take, sl2, suml2)
        if not changed:
            break
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0.0))
    scale[zero] = 0
    out = levels.astype(np.uint8)
    out[:, zero] = 0
    return scale, out


# --------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------


class BlockFormat:
    """One ggml block format: ``block_elems`` floats <-> ``block_bytes`` bytes."""

    qtype: ClassVar[GGMLQuantizationType]
    #: legacy imatrix searches weight by the mean square of the block's whole row
    uses_row_sigma2: ClassVar[bool] = False
    #: blocks per internal chunk, without / with an imatrix search: small enough for the
    #: temporaries to stay in cache, large enough to amortise numpy's per-call overhead
    chunk_blocks: ClassVar[int] = 8192
    weighted_chunk_blocks: ClassVar[int] = 2048

    def __init__(self) -> None:
        self.block_elems, self.block_bytes = GGML_QUANT_SIZES[self.qtype]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def quantize_blocks(self, x: np.ndarray, imatrix: np.ndarray | None = None) -> U8Array:
        """float32 (n_blocks, block_elems) -> uint8 (n_blocks, block_bytes).

        ``imatrix``: importance weights, (block_elems,) shared by all blocks or
        (n_blocks, block_elems). Each block is quantized as if it were a tensor row of
        its own (this only matters for the legacy 32-value formats, whose imatrix search
        uses the row's mean square; ``quantize`` passes whole rows).
        """
        xb = np.ascontiguousarray(x, dtype=np.float32)
        if xb.ndim != 2 or xb.shape[1] != self.block_elems:
            raise ValueError(f"{self.qtype.name}: expected blocks of shape "
                             f"(n, {self.block_elems}), got {xb.shape}")
        qw = sigma2 = None
        if imatrix is not None and self.qtype != GGMLQuantizationType.Q8_0:
            qw = np.ascontiguousarray(np.broadcast_to(
                np.asarray(imatrix, dtype=np.float32), xb.shape))
            if self.uses_row_sigma2:
                sigma2 = _seq_sum(_as_columns(xb * xb, self.block_elems))
                sigma2 /= F32(self.block_elems)
        out = np.empty((xb.shape[0], self.block_bytes), dtype=np.uint8)
        step = self.chunk_blocks if qw is None else self.weighted_chunk_blocks
        with np.errstate(all="ignore"):
            for b0 in range(0, xb.shape[0], step):
                b1 = b0 + step
                out[b0:b1] = self._encode(xb[b0:b1], None if qw is None else qw[b0:b1],
                                          None if sigma2 is None else sigma2[b0:b1])
        return out

    def dequantize_blocks(self, q: np.ndarray) -> F32Array:
        """uint8 (n_blocks, block_bytes) -> float32 (n_blocks, block_elems)."""
        qb = np.ascontiguousarray(q, dtype=np.uint8)
        if qb.ndim != 2 or qb.shape[1] != self.block_bytes:
            raise ValueError(f"{self.qtype.name}: expected blocks of shape "
                             f"(n, {self.block_bytes}), got {qb.shape}")
        out = np.empty((qb.shape[0], self.block_elems), dtype=np.float32)
        step = 4 * self.weighted_chunk_blocks
        with np.errstate(all="ignore"):  # inf*0 and inf-inf give NaN, as in C
            for b0 in range(0, qb.shape[0], step):
                out[b0:b0 + step] = self._decode(qb[b0:b0 + step])
        return out

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        """x (n, block_elems) -> (n, block_bytes). ``qw``: per-block importance weights
        or None; ``sigma2``: per-block mean square of its row (legacy imatrix only)."""
        raise NotImplementedError

    def _decode(self, q: U8Array) -> F32Array:
        raise NotImplementedError


# ---------------------------------------------------------------- legacy 32-value formats


def _pack_nibbles(levels: U8Array) -> U8Array:
    """(n, 32) levels -> (n, 16) bytes: byte j = L[j] & 15 | (L[j+16] & 15) << 4."""
    packed: U8Array = (levels[:, :16] & np.uint8(0x0F)) | (levels[:, 16:] << np.uint8(4))
    return packed


def _unpack_nibbles(qs: U8Array) -> U8Array:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _pack_fifth_bits(levels: U8Array) -> U8Array:
    """(n, 32) 5-bit levels -> (n, 4): the little-endian u32 whose bit j is L[j] >> 4."""
    return np.packbits((levels >> 4) & 1, axis=1, bitorder="little")


def _unpack_fifth_bits(qh: U8Array) -> U8Array:
    bits: U8Array = np.unpackbits(qh, axis=1, bitorder="little") << np.uint8(4)
    return bits


def _legacy_weights(xc: F32Array, qw: F32Array, sigma2: F32Array | None) -> F32Array:
    """The legacy imatrix weights qw * sqrt(sigma2 + x^2), in column layout."""
    if sigma2 is None:
        raise ValueError("the legacy imatrix search needs the row's mean square")
    return _as_columns(qw, 32) * np.sqrt(sigma2 + xc * xc)


class _SymmetricLegacy(BlockFormat):
    """Q4_0/Q5_0: d = max / -nmax (max = the value of largest magnitude),
    q = (int8_t)(x/d + nmax + 0.5) capped at 2*nmax - 1."""

    nmax: ClassVar[int]  # 8 or 16
    uses_row_sigma2 = True

    def _scale_and_levels(self, x: F32Array, qw: F32Array | None,
                          sigma2: F32Array | None) -> tuple[F32Array, U8Array]:
        if qw is not None:  # quantize_row_q4_0_impl / q5_0_impl
            xc = _as_columns(x, 32)
            d, levels = _fit_symmetric(xc, _legacy_weights(xc, qw, sigma2), self.nmax)
            return d, _from_columns(levels, 32)
        nm = F32(self.nmax)
        d = _signed_absmax(x, axis=1) / -nm
        inv = F32(1.0) / d
        overflowed = ~np.isfinite(inv) & (d != 0)
        inv[~np.isfinite(inv)] = 0  # C: id = d ? 1/d : 0
        v = x * inv[:, None]
        v += nm + F32(0.5)
        q = _c_trunc_to_byte(v, overflowed)
        return d, np.minimum(q, 2 * self.nmax - 1)


class _AffineLegacy(BlockFormat):
    """Q4_1/Q5_1: d = (max - min) / nmax, m = min, q = (int)((x - min)/d + 0.5)."""

    nmax: ClassVar[int]  # 15 or 31
    uses_row_sigma2 = True

    def _scale_min_and_levels(self, x: F32Array, qw: F32Array | None,
                              sigma2: F32Array | None) -> tuple[F32Array, F32Array, U8Array]:
        if qw is not None:  # quantize_row_q4_1_impl / q5_1_impl
            xc = _as_columns(x, 32)
            w = _legacy_weights(xc, qw, sigma2)
            d, the_min, levels = _fit_scale_min(xc, w, self.nmax, -0.9, 0.05, 36)
            return d, -the_min, _from_columns(levels, 32)
        xmax, xmin = _max_min(x, axis=1)
        xmax = _first_zero_fix(xmax, x, axis=1)
        xmin = _first_zero_fix(xmin, x, axis=1)
        d = (xmax - xmin) / F32(self.nmax)
        inv = F32(1.0) / d
        overflowed = ~np.isfinite(inv) & (d != 0)
        inv[~np.isfinite(inv)] = 0  # C: id = d ? 1/d : 0
        v = x - xmin[:, None]
        v *= inv[:, None]
        v += F32(0.5)
        q = _c_trunc_to_byte(v, overflowed)
        return d, xmin, np.minimum(q, self.nmax)


#   Q8_0: 34 bytes per 32 values
#   +--------+----------------------------------+
#   | d  f16 | qs: int8[32]                     |   value[j] = d * qs[j]
#   +--------+----------------------------------+
#    0      2                                  34
class Q8_0(BlockFormat):
    """8-bit symmetric: d = max|x| / 127, qs = roundf(x / d) (half away from zero)."""

    qtype = GGMLQuantizationType.Q8_0

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        mx, mn = _max_min(x, axis=1)  # the imatrix is ignored, as in quantize_q8_0
        amax = np.maximum(mx, -mn)
        amax += F32(0.0)  # C's MAX(0.0f, |v|) chain never yields -0.0
        d = amax / F32(127.0)
        inv = F32(1.0) / d
        # 1/d = 0 when d = 0; where 1/d overflows, C converts inf/NaN to int8 and gets 0,
        # which an inverse of 0 gives as well
        inv[~np.isfinite(inv)] = 0
        v = x * inv[:, None]
        # roundf(v) == trunc(v + copysign(0.49999997f, v)) exactly, for every float v;
        # the copysign is done on the bits (np.copysign is slow)
        half = v.view(np.uint32) & np.uint32(0x80000000)
        half |= _NEARLY_HALF_BITS
        v += half.view(np.float32)
        out = np.empty((x.shape[0], 34), dtype=np.uint8)
        out[:, 0:2] = _fp16_bytes(d)
        out[:, 2:34] = v.astype(np.int8).view(np.uint8)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = _fp16_to_f32(q[:, 0:2])
        return q[:, 2:34].view(np.int8).astype(np.float32) * d[:, None]


#   Q4_0: 18 bytes per 32 values
#   +--------+----------------------------------+
#   | d  f16 | qs: u8[16]                       |   byte j: low nibble = q[j],
#   +--------+----------------------------------+           high nibble = q[j+16]
#    0      2                                  18   value = d * (q - 8)
class Q4_0(_SymmetricLegacy):
    """4-bit symmetric; with an imatrix, the weighted make_qx_quants search (nmax 8)."""

    qtype = GGMLQuantizationType.Q4_0
    nmax = 8

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        d, q = self._scale_and_levels(x, qw, sigma2)
        out = np.empty((x.shape[0], 18), dtype=np.uint8)
        out[:, 0:2] = _fp16_bytes(d)
        out[:, 2:18] = _pack_nibbles(q)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = _fp16_to_f32(q[:, 0:2])
        levels = _unpack_nibbles(q[:, 2:18]).astype(np.int8) - np.int8(8)
        return levels.astype(np.float32) * d[:, None]  # type: ignore[no-any-return]


#   Q4_1: 20 bytes per 32 values
#   +--------+--------+-------------------------+
#   | d  f16 | m  f16 | qs: u8[16] (as Q4_0)    |   value = d * q + m
#   +--------+--------+-------------------------+
#    0      2        4                         20
class Q4_1(_AffineLegacy):
    """4-bit with offset; with an imatrix, the weighted make_qkx3_quants search."""

    qtype = GGMLQuantizationType.Q4_1
    nmax = 15

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        d, m, q = self._scale_min_and_levels(x, qw, sigma2)
        out = np.empty((x.shape[0], 20), dtype=np.uint8)
        out[:, 0:2] = _fp16_bytes(d)
        out[:, 2:4] = _fp16_bytes(m)
        out[:, 4:20] = _pack_nibbles(q)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = _fp16_to_f32(q[:, 0:2])
        m = _fp16_to_f32(q[:, 2:4])
        y = _unpack_nibbles(q[:, 4:20]).astype(np.float32) * d[:, None]
        y += m[:, None]
        return y


#   Q5_0: 22 bytes per 32 values
#   +--------+------------------+----------------------+
#   | d  f16 | qh: u32 (LE)     | qs: u8[16] (as Q4_0) |   q[j] = nibble | (bit j of qh) << 4
#   +--------+------------------+----------------------+   value = d * (q - 16)
#    0      2                  6                      22
class Q5_0(_SymmetricLegacy):
    """5-bit symmetric; with an imatrix, the weighted make_qx_quants search (nmax 16)."""

    qtype = GGMLQuantizationType.Q5_0
    nmax = 16

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        d, q = self._scale_and_levels(x, qw, sigma2)
        out = np.empty((x.shape[0], 22), dtype=np.uint8)
        out[:, 0:2] = _fp16_bytes(d)
        out[:, 2:6] = _pack_fifth_bits(q)
        out[:, 6:22] = _pack_nibbles(q)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = _fp16_to_f32(q[:, 0:2])
        levels = _unpack_nibbles(q[:, 6:22]) | _unpack_fifth_bits(q[:, 2:6])
        signed = levels.astype(np.int8) - np.int8(16)
        return signed.astype(np.float32) * d[:, None]  # type: ignore[no-any-return]


#   Q5_1: 24 bytes per 32 values
#   +--------+--------+------------------+----------------------+
#   | d  f16 | m  f16 | qh: u32 (LE)     | qs: u8[16] (as Q4_0) |   value = d * q + m
#   +--------+--------+------------------+----------------------+
#    0      2        4                  8                      24
class Q5_1(_AffineLegacy):
    """5-bit with offset; with an imatrix, the weighted make_qkx3_quants search."""

    qtype = GGMLQuantizationType.Q5_1
    nmax = 31

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        d, m, q = self._scale_min_and_levels(x, qw, sigma2)
        out = np.empty((x.shape[0], 24), dtype=np.uint8)
        out[:, 0:2] = _fp16_bytes(d)
        out[:, 2:4] = _fp16_bytes(m)
        out[:, 4:8] = _pack_fifth_bits(q)
        out[:, 8:24] = _pack_nibbles(q)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = _fp16_to_f32(q[:, 0:2])
        m = _fp16_to_f32(q[:, 2:4])
        levels = _unpack_nibbles(q[:, 8:24]) | _unpack_fifth_bits(q[:, 4:8])
        y = levels.astype(np.float32) * d[:, None]
        y += m[:, None]
        return y


# ---------------------------------------------------------------- k-quants (256 values)


def _pack_scale_min_k4(ls: U8Array, lm: U8Array) -> U8Array:
    """8 scales and 8 mins (n, 8) -> the 12 ``scales`` bytes of Q4_K/Q5_K, in C's uint8
    arithmetic (levels above 63, possible in Q4_K's imatrix path, spill bits as in C)."""
    s = np.empty((ls.shape[0], 12), dtype=np.uint8)
    s[:, 0:4] = ls[:, 0:4]
    s[:, 4:8] = lm[:, 0:4]
    s[:, 8:12] = (ls[:, 4:8] & 0x0F) | (lm[:, 4:8] << 4)
    s[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    s[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    return s


def _unpack_scale_min_k4(s: U8Array) -> tuple[U8Array, U8Array]:
    """get_scale_min_k4 for j = 0..7: (n, 12) bytes -> scales (n, 8), mins (n, 8)."""
    sc = np.empty((s.shape[0], 8), dtype=np.uint8)
    mn = np.empty((s.shape[0], 8), dtype=np.uint8)
    sc[:, :4] = s[:, 0:4] & 63
    mn[:, :4] = s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, mn


def _k4_dequantize(q: U8Array, levels: U8Array) -> F32Array:
    """d * sc[s] * level - dmin * mn[s] for Q4_K/Q5_K; levels (n, 8, 32)."""
    d = _fp16_to_f32(q[:, 0:2])
    dmin = _fp16_to_f32(q[:, 2:4])
    sc, mn = _unpack_scale_min_k4(q[:, 4:16])
    d1 = d[:, None] * sc.astype(np.float32)
    m1 = dmin[:, None] * mn.astype(np.float32)
    y = d1[:, :, None] * levels.astype(np.float32)
    y -= m1[:, :, None]
    return y.reshape(-1, 256)


class _ScaleMinSuper(BlockFormat):
    """Q4_K/Q5_K: 256 values = 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit
    min, both scaled by the f16 super-block d and dmin."""

    nmax: ClassVar[int]  # 15 or 31
    ref_search: ClassVar[tuple[float, float, int]]  # make_qkx2_quants rmin, rdelta, nstep
    clamp_impl_levels: ClassVar[bool]  # Q5_K's impl caps the 6-bit levels at 63, Q4_K not
    chunk_blocks = 256
    weighted_chunk_blocks = 512

    def _quantize(self, x: F32Array, qw: F32Array | None) -> tuple[U8Array, U8Array]:
        """-> (the 16 header bytes d, dmin, scales (n, 16), levels (n, 256) uint8)."""
        n = x.shape[0]
        xc = _as_columns(x, 32)
        if qw is None:  # quantize_row_q4_K_ref / q5_K_ref
            av_x = np.sqrt(_seq_sum(xc * xc) / F32(32.0))
            w = np.abs(xc)
            w += av_x
            scales, mins, levels = _fit_scale_min(xc, w, self.nmax, *self.ref_search)
            scales = scales.reshape(n, 8)
            mins = mins.reshape(n, 8)
            # C: max = 0; if (v > max) max = v; -- never -0.0, NaN skipped
            max_scale = np.fmax.reduce(scales, axis=1, initial=F32(0.0)) + F32(0.0)
            max_min = np.fmax.reduce(mins, axis=1, initial=F32(0.0)) + F32(0.0)
            inv_scale = np.where(max_scale > 0, F32(63.0) / max_scale, F32(0.0))
            inv_min = np.where(max_min > 0, F32(63.0) / max_min, F32(0.0))
            ls = np.minimum(_nearest_int(inv_scale[:, None] * scales) & 0xFF, 63)
            lm = np.minimum(_nearest_int(inv_min[:, None] * mins) & 0xFF, 63)
            d = max_scale / F32(63.0)
            dmin = max_min / F32(63.0)
        else:  # quantize_row_q4_K_impl / q5_K_impl
            sigma2 = (F32(2.0) * _seq_sum(_as_columns(x * x, 256))) / F32(256.0)
            w = np.sqrt(np.repeat(sigma2, 8) + xc * xc)
            w *= _as_columns(qw, 32)
            scales, mins, levels = _fit_scale_min(xc, w, self.nmax, -0.9, 0.05, 36)
            # make_qp_quants of the scales and of the mins, side by side in one call
            sw = _seq_sum(w).reshape(n, 8).T
            both = np.concatenate([scales.reshape(n, 8).T, mins.reshape(n, 8).T], axis=1)
            dd, lsm = _fit_unsigned(both, np.ascontiguousarray(np.tile(sw, 2)), 63)
            d, dmin = dd[:n], dd[n:]
            ls, lm = lsm[:, :n].T, lsm[:, n:].T
            if self.clamp_impl_levels:
                ls = np.minimum(ls, 63)
                lm = np.minimum(lm, 63)
        header = np.empty((n, 16), dtype=np.uint8)
        header[:, 0:2] = _fp16_bytes(d)
        header[:, 2:4] = _fp16_bytes(dmin)
        header[:, 4:16] = _pack_scale_min_k4(ls.astype(np.uint8), lm.astype(np.uint8))
        # final levels from the stored (rounded) scales
        sc, mn = _unpack_scale_min_k4(header[:, 4:16])
        d_sub = _fp16_to_f32(header[:, 0:2])[:, None] * sc.astype(np.float32)
        dm_sub = _fp16_to_f32(header[:, 2:4])[:, None] * mn.astype(np.float32)
        levels = _requantize(xc, dm_sub.reshape(-1), d_sub.reshape(-1), 0, self.nmax, levels)
        return header, _from_columns(levels, 256)


#   Q4_K: 144 bytes per 256 values (8 sub-blocks s of 32)
#   +--------+-----------+------------------+------------------------------------------+
#   | d  f16 | dmin f16  | scales: u8[12]   | qs: u8[128] = 4 chunks c of 32 bytes      |
#   +--------+-----------+------------------+------------------------------------------+
#    0      2           4                  16                                        144
#   scales: s<4: sc = b[s] & 63, mn = b[s+4] & 63
#           s>=4: sc = b[s+4] & 15 | (b[s-4] >> 6) << 4, mn = b[s+4] >> 4 | (b[s] >> 6) << 4
#   chunk c byte l: low nibble = q[64c + l], high nibble = q[64c + 32 + l]
#   value[e] = d * sc[e // 32] * q[e] - dmin * mn[e // 32]
class Q4_K(_ScaleMinSuper):
    """4-bit k-quant: make_qkx2 search (ref) or make_qkx3 + make_qp (imatrix)."""

    qtype = GGMLQuantizationType.Q4_K
    nmax = 15
    ref_search = (-1.0, 0.1, 20)
    clamp_impl_levels = False

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        n = x.shape[0]
        header, levels = self._quantize(x, qw)
        q = levels.reshape(n, 4, 2, 32)
        out = np.empty((n, 144), dtype=np.uint8)
        out[:, 0:16] = header
        out[:, 16:144] = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        qs = q[:, 16:144].reshape(-1, 4, 1, 32)
        levels = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 8, 32)
        return _k4_dequantize(q, levels)


#   Q5_K: 176 bytes per 256 values (8 sub-blocks s of 32)
#   +--------+-----------+----------------+---------------+---------------------------+
#   | d  f16 | dmin f16  | scales: u8[12] | qh: u8[32]    | qs: u8[128] (as Q4_K)     |
#   +--------+-----------+----------------+---------------+---------------------------+
#    0      2           4                16              48                         176
#   the 5th bit of q[32s + l] is bit s of qh[l]
#   value[e] = d * sc[e // 32] * q[e] - dmin * mn[e // 32]    (scales as in Q4_K)
class Q5_K(_ScaleMinSuper):
    """5-bit k-quant: make_qkx2 search (ref) or make_qkx3 + make_qp (imatrix)."""

    qtype = GGMLQuantizationType.Q5_K
    nmax = 31
    ref_search = (-0.5, 0.1, 15)
    clamp_impl_levels = True

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        n = x.shape[0]
        header, levels = self._quantize(x, qw)
        q = levels.reshape(n, 8, 32)
        qh = np.zeros((n, 32), dtype=np.uint8)
        for s in range(8):
            qh |= (q[:, s] >> 4) << s
        low = (q & 0x0F).reshape(n, 4, 2, 32)
        out = np.empty((n, 176), dtype=np.uint8)
        out[:, 0:16] = header
        out[:, 16:48] = qh
        out[:, 48:176] = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(n, 128)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        qh = q[:, 16:48]
        qs = q[:, 48:176].reshape(-1, 4, 1, 32)
        levels = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 8, 32)
        shifts = np.arange(8, dtype=np.uint8)[None, :, None]
        levels |= ((qh[:, None, :] >> shifts) & 1) << 4
        return _k4_dequantize(q, levels)


#   Q6_K: 210 bytes per 256 values (16 sub-blocks of 16; two halves h of 128)
#   +---------------------+------------------+--------------------+--------+
#   | ql: u8[128]         | qh: u8[64]       | scales: int8[16]   | d  f16 |
#   +---------------------+------------------+--------------------+--------+
#    0                  128                192                  208      210
#   half h, l < 32 (ql' = ql[64h:], qh' = qh[32h:]):
#     q[128h + l]      = ql'[l] & 15      | (qh'[l] >> 0 & 3) << 4
#     q[128h + 32 + l] = ql'[l + 32] & 15 | (qh'[l] >> 2 & 3) << 4
#     q[128h + 64 + l] = ql'[l] >> 4      | (qh'[l] >> 4 & 3) << 4
#     q[128h + 96 + l] = ql'[l + 32] >> 4 | (qh'[l] >> 6 & 3) << 4
#   value[e] = d * scales[e // 16] * (q[e] - 32)
class Q6_K(BlockFormat):
    """6-bit k-quant: make_qx_quants (nmax 32) per 16 values, int8 sub-block scales."""

    qtype = GGMLQuantizationType.Q6_K
    chunk_blocks = weighted_chunk_blocks = 256

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        n = x.shape[0]
        xc = _as_columns(x, 16)
        # quantize_row_q6_K_ref weighs by x^2, the _impl by the imatrix alone
        w = xc * xc if qw is None else _as_columns(qw, 16)
        scales, levels = _fit_symmetric(xc, w, 32)
        scales = scales.reshape(n, 16)
        first = np.argmax(np.abs(scales), axis=1)[:, None]  # first largest |scale|
        max_scale = np.take_along_axis(scales, first, axis=1)[:, 0]
        zero = ~(np.abs(max_scale) >= _GROUP_MAX_EPS)
        max_scale[zero] = 1
        iscale = F32(-128.0) / max_scale
        d16 = _fp16_bytes(F32(1.0) / iscale)
        sc = np.minimum(_nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
        d_sub = _fp16_to_f32(d16)[:, None] * sc.astype(np.float32)
        levels = _requantize(xc, None, d_sub.reshape(-1), -32, 31, levels - F32(32.0))
        q = (_from_columns(levels + F32(32.0), 256)).reshape(n, 2, 4, 32)
        low = q & 0x0F
        high = q >> 4
        out = np.empty((n, 210), dtype=np.uint8)
        ql = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4),
                             low[:, :, 1] | (low[:, :, 3] << 4)], axis=2)
        out[:, 0:128] = ql.reshape(n, 128)
        qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
        out[:, 128:192] = qh.reshape(n, 64)
        out[:, 192:208] = sc.view(np.uint8)
        out[:, 208:210] = d16
        out[zero] = 0  # C: memset the block, d = fp16(0)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        n = q.shape[0]
        ql = q[:, 0:128].reshape(n, 2, 2, 32)
        qh = q[:, 128:192].reshape(n, 2, 1, 32)
        sc = q[:, 192:208].view(np.int8).astype(np.float32)
        d = _fp16_to_f32(q[:, 208:210])
        low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # quarters 0..3 of each half
        shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]
        levels = low | (((qh >> shifts) & 3) << 4)
        signed = (levels.astype(np.int8) - np.int8(32)).astype(np.float32).reshape(n, 16, 16)
        ds = d[:, None] * sc
        return (ds[:, :, None] * signed).reshape(n, 256)  # type: ignore[no-any-return]


FORMATS: dict[GGMLQuantizationType, BlockFormat] = {
    f.qtype: f for f in (Q8_0(), Q4_0(), Q4_1(), Q5_0(), Q5_1(), Q4_K(), Q5_K(), Q6_K())
}


def _format(qtype: GGMLQuantizationType) -> BlockFormat:
    qtype = GGMLQuantizationType(qtype)
    if qtype not in FORMATS:
        raise ValueError(f"no modelkit kernel for {qtype.name}")
    return FORMATS[qtype]


# --------------------------------------------------------------------------------------
# Row-level entry points
# --------------------------------------------------------------------------------------


def _row_mean_squares(x: F32Array) -> F32Array:
    """sum(x*x)/n_per_row per row, summed in order (the legacy imatrix sigma2)."""
    out = np.empty(x.shape[0], dtype=np.float32)
    step = max(1, (1 << 20) // max(1, x.shape[1]))
    for r0 in range(0, x.shape[0], step):
        sq = x[r0:r0 + step] * x[r0:r0 + step]
        out[r0:r0 + step] = np.cumsum(sq, axis=1, dtype=np.float32)[:, -1]  # sequential
    out += F32(0.0)  # C's sum starts from +0.0
    out /= F32(x.shape[1])
    return out


def quantize(qtype: GGMLQuantizationType, x: np.ndarray,
             imatrix: np.ndarray | None = None) -> U8Array:
    """x float32 (rows, n_per_row) -> uint8 (rows, row_bytes), as ggml_quantize_chunk.

    ``imatrix``: float32 (n_per_row,) importance weights, or None (Q8_0 ignores it).
    ``n_per_row`` must be a multiple of the block size. Rows are independent.
    """
    fmt = _format(qtype)
    xa = np.asarray(x, dtype=np.float32)
    if xa.ndim == 1:
        xa = xa[None, :]
    if xa.ndim != 2:
        raise ValueError(f"expected a (rows, n_per_row) matrix, got shape {xa.shape}")
    rows, n_per_row = xa.shape
    be, bb = fmt.block_elems, fmt.block_bytes
    if n_per_row % be:
        raise ValueError(f"{fmt.qtype.name}: row length {n_per_row} is not a multiple "
                         f"of the block size {be}")
    nb = n_per_row // be
    out = np.empty((rows, nb * bb), dtype=np.uint8)
    if out.size == 0:
        return out
    im_blocks = row_sigma2 = None
    if imatrix is not None and fmt.qtype != GGMLQuantizationType.Q8_0:
        im = np.asarray(imatrix, dtype=np.float32).reshape(-1)
        if im.shape[0] != n_per_row:
            raise ValueError(f"imatrix has {im.shape[0]} values, rows have {n_per_row}")
        im_blocks = np.ascontiguousarray(im.reshape(nb, be))
        if fmt.uses_row_sigma2:
            row_sigma2 = _row_mean_squares(xa)
    blocks = np.ascontiguousarray(xa).reshape(rows * nb, be)
    out_blocks = out.reshape(rows * nb, bb)
    step = fmt.chunk_blocks if im_blocks is None else fmt.weighted_chunk_blocks
    with np.errstate(all="ignore"):
        for b0 in range(0, rows * nb, step):
            b1 = min(b0 + step, rows * nb)
            qw = sigma2 = None
            if im_blocks is not None:  # block k of a row takes imatrix[k*be:(k+1)*be]
                idx = np.arange(b0, b1)
                qw = im_blocks[idx % nb]
                if row_sigma2 is not None:
                    sigma2 = row_sigma2[idx // nb]
            out_blocks[b0:b1] = fmt._encode(blocks[b0:b1], qw, sigma2)
    return out


def dequantize(qtype: GGMLQuantizationType, q: np.ndarray,
               n_per_row: int | None = None) -> F32Array:
    """uint8 (rows, row_bytes) -> float32 (rows, n_per_row), as ggml's ``to_float``.

    A 1-D ``q`` is one row, or rows of ``n_per_row`` values when that is given."""
    fmt = _format(qtype)
    qa = np.asarray(q, dtype=np.uint8)
    if qa.ndim == 1:
        row_bytes = qa.shape[0] if n_per_row is None else n_per_row // fmt.block_elems \
            * fmt.block_bytes
        qa = qa.reshape(-1, row_bytes)
    if qa.ndim != 2 or qa.shape[1] % fmt.block_bytes:
        raise ValueError(f"{fmt.qtype.name}: rows of {qa.shape[-1]} bytes are not whole "
                         f"blocks of {fmt.block_bytes}")
    n = qa.shape[1] // fmt.block_bytes * fmt.block_elems
    if n_per_row is not None and n_per_row != n:
        raise ValueError(f"{fmt.qtype.name}: rows hold {n} values, not {n_per_row}")
    y = fmt.dequantize_blocks(qa.reshape(-1, fmt.block_bytes))
    return y.reshape(qa.shape[0], n)


def _bf16_to_f32(a: np.ndarray) -> F32Array:
    bits = np.ascontiguousarray(a).view(np.uint16).astype(np.uint32) << np.uint32(16)
    values: F32Array = bits.view(np.float32)
    return values


_PLAIN: dict[GGMLQuantizationType, tuple[type[np.generic], Callable[[np.ndarray], F32Array]]] = {
    GGMLQuantizationType.F32: (np.float32, lambda a: a.astype(np.float32)),
    GGMLQuantizationType.F16: (np.float16, lambda a: a.astype(np.float32)),
    GGMLQuantizationType.BF16: (np.uint16, _bf16_to_f32),
}


def to_float32(data: np.ndarray, qtype: GGMLQuantizationType) -> F32Array:
    """Tensor data of any type -> float32 (rows, n_per_row).

    ``data`` is either the values (float32 / float16 arrays, uint16 bit patterns for BF16)
    or the raw bytes as uint8 (rows, row_bytes), which is how gguf's reader returns
    block-quantized tensors. F32/F16/BF16 convert directly, our 8 formats use our
    dequantizers, any other type gguf can dequantize goes through gguf.quants.
    """
    qtype = GGMLQuantizationType(qtype)
    arr = np.asarray(data)
    if arr.ndim <= 1:
        arr = arr.reshape(1, -1)
    elif arr.ndim > 2:
        arr = arr.reshape(-1, arr.shape[-1])
    if qtype in _PLAIN:
        dtype, convert = _PLAIN[qtype]
        if arr.dtype == np.uint8 or (qtype == GGMLQuantizationType.BF16 and arr.itemsize == 2):
            arr = np.ascontiguousarray(arr).view(dtype)
        return np.ascontiguousarray(convert(arr), dtype=np.float32)
    raw = np.ascontiguousarray(arr).view(np.uint8)
    if qtype in FORMATS:
        return dequantize(qtype, raw)
    out = np.asarray(gguf_quants.dequantize(raw, qtype), dtype=np.float32)
    return out.reshape(raw.shape[0], -1)
