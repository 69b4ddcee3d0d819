"""Block quantizers and dequantizers, byte-identical to llama.cpp's reference C code.

Covers Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K, with and without an importance
matrix (``ggml_quantize_chunk``: ``quantize_row_<type>_ref`` without one, the
``quantize_row_<type>_impl`` searches with one; Q8_0 ignores it).

Matching C bit for bit in numpy rests on a few rules, followed everywhere below:

* Every value is float32 and every C expression is evaluated in the same order, one
  rounding per operation (``a*b + c`` is a product then a sum: the reference build has
  no FMA contraction). Python float constants are wrapped in ``np.float32`` first.
* Sums are sequential, in C loop order. Arrays are laid out element-major, shape
  ``(elements, blocks)``, so that ``_seq_sum`` adds whole rows one after the other
  (numpy's pairwise summation only applies along the contiguous axis).
* ``nearest_int`` is ggml's ``x + 12582912.0f`` bit trick: round half to even, and a
  well-defined (if odd) integer for inf/NaN/huge inputs. Inside the scale searches, where
  the arguments are provably small, ``np.rint`` (also half-to-even) is used instead;
  ``_levels`` falls back to the bit trick for the rare blocks where that is not proven.
* ``roundf`` (Q8_0) rounds half away from zero; the legacy formats truncate
  ``(int8_t)(v + 8.5f)``. Where C converts inf/NaN to an integer (blocks whose ``1/d``
  overflows), x86-64 gives INT_MIN, whose low byte is 0; that is mirrored explicitly.
* float32 -> float16 is ggml's own bit-exact conversion (round to nearest even, NaN ->
  0x7E00 with the sign kept).

Inputs are expected to be finite; NaN/inf inputs give deterministic bytes that are not
guaranteed to match C.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType
from gguf.constants import GGML_QUANT_SIZES

F32Array = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]
I32Array = npt.NDArray[np.int32]
U16Array = npt.NDArray[np.uint16]
BoolArray = npt.NDArray[np.bool_]

F32 = np.float32
_MAGIC = F32(12582912.0)  # 1.5 * 2**23: adding it leaves round(v) in the low mantissa bits
_GROUP_MAX_EPS = F32(1e-15)  # below this a group counts as all zero
_RINT_SAFE = F32(2.0**21)  # |v| below this: np.rint(v) == nearest_int(v), with margin
_F32_TINY = F32(2.0**-125)  # c / span cannot overflow if span > c * 2**-125

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


# --------------------------------------------------------------------------------------
# Exact scalar semantics of the C code, vectorised
# --------------------------------------------------------------------------------------


def _nearest_int(v: F32Array) -> I32Array:
    """ggml's ``nearest_int``: the float trick, bit for bit (also for inf/NaN/huge v)."""
    bits = np.ascontiguousarray(v + _MAGIC).view(np.int32)
    return (bits & 0x007FFFFF) - 0x00400000


def _seq_sum(a: F32Array, from_zero: bool = True) -> F32Array:
    """Sum over the element axis (-2) in index order, like ``for (i...) s += a[i]`` in C.

    ``np.add.reduce`` over a non-contiguous axis of a C-contiguous array adds whole
    slices one after the other (numpy's pairwise summation only runs along the contiguous
    axis, which is why the element axis is never the last one); when the last axis has
    length 1 numpy would switch to pairwise, so that case takes an explicit loop.
    ``from_zero``: C starts from ``s = 0`` (this decides the sign of an all-zero sum)
    rather than from ``a[0]``.
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
    with np.errstate(over="ignore", invalid="ignore"):
        base = (np.abs(f) * F32(2.0**112)) * F32(2.0**-110)
    w = f.view(np.uint32)
    shl1 = w << np.uint32(1)
    sign = w & np.uint32(0x80000000)
    bias = np.maximum(shl1 & np.uint32(0xFF000000), np.uint32(0x71000000))
    with np.errstate(invalid="ignore"):
        base = ((bias >> np.uint32(1)) + np.uint32(0x07800000)).view(np.float32) + base
    bits = base.view(np.uint32)
    nonsign = ((bits >> np.uint32(13)) & np.uint32(0x7C00)) + (bits & np.uint32(0x0FFF))
    out = np.where(shl1 > np.uint32(0xFF000000), np.uint32(0x7E00), nonsign)
    return (out | (sign >> np.uint32(16))).astype(np.uint16)


def _fp16_bits_to_fp32(h: npt.NDArray[np.uint8] | U16Array) -> F32Array:
    """``GGML_FP16_TO_FP32``: exact widening. Accepts uint16 or (..., 2) little-endian bytes."""
    if h.dtype == np.uint8:
        h = np.ascontiguousarray(h).view("<u2")[..., 0]
    return np.ascontiguousarray(h).view(np.float16).astype(np.float32)


def _fp16_bytes(f: F32Array) -> U8Array:
    """float32 (n,) -> the (n, 2) little-endian bytes of their ggml fp16 conversion."""
    return _fp32_to_fp16_bits(f).astype("<u2").view(np.uint8).reshape(-1, 2)


def _c_float_to_byte(v: F32Array, bad: BoolArray, axis_blocks: int) -> U8Array:
    """``(int8_t)`` / ``(uint8_t)`` of float: truncate toward zero, keep the low byte.

    ``bad`` flags blocks whose values are inf/NaN (their ``1/d`` overflowed): x86-64's
    cvttss2si gives INT_MIN there, whose low byte is 0. ``v`` is otherwise in [0, 32).
    """
    if bad.any():
        v = v.copy()
        if axis_blocks == 0:
            v[bad] = 0
        else:
            v[:, bad] = 0
    return v.astype(np.uint8)


def _levels(
    xm: F32Array, iscale: F32Array, lo: int, hi: int, out: F32Array,
    unsafe: BoolArray | None = None,
) -> F32Array:
    """``clamp(nearest_int(iscale * xm), lo, hi)`` into float32 ``out``; xm (n, m),
    iscale (m,). np.rint is nearest_int wherever |iscale * xm| < 2**22; the columns
    flagged ``unsafe`` (inf scales, overflowed spans) take the bit trick instead.
    Call with floating point errors silenced."""
    np.multiply(xm, iscale, out=out)
    np.rint(out, out=out)
    np.clip(out, F32(lo), F32(hi), out=out)
    if unsafe is not None and unsafe.any():
        cols = xm[:, unsafe] * iscale[unsafe]
        out[:, unsafe] = np.clip(_nearest_int(cols), lo, hi).astype(np.float32)
    return out


def _first_zero_fix(ext: F32Array, x: F32Array, axis: int) -> F32Array:
    """C's min/max loops keep the *first* extreme value; numpy's may return either zero.
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
    (C: ``amax = 0, max = 0; if (fabsf(v) > amax) { amax = fabsf(v); max = v; }``)."""
    mx = x.max(axis=axis)
    mn = x.min(axis=axis)
    out = np.where(mx >= -mn, mx, mn)
    out += F32(0.0)  # all-zero blocks: +0.0, whatever sign numpy picked
    tie = (mx == -mn) & (mx > 0)  # both +a and -a occur: the first one wins
    if tie.any():
        sub = np.compress(tie, x, axis=1 - axis)  # the tied blocks
        first = np.expand_dims(np.argmax(np.abs(sub), axis=axis), axis)
        out[tie] = np.take_along_axis(sub, first, axis=axis).squeeze(axis)
    return out


def _as_columns(x: F32Array, group: int) -> F32Array:
    """(n_blocks, block_elems) -> (group, n_groups): one column per group of ``group``."""
    return np.ascontiguousarray(x.reshape(-1, group).T)


# --------------------------------------------------------------------------------------
# The shared searches of ggml-quants.c
# --------------------------------------------------------------------------------------


def _fit_symmetric(x: F32Array, w: F32Array, nmax: int) -> tuple[F32Array, F32Array]:
    """make_qx_quants with rmse_type 1: per column, levels L in [0, 2*nmax) and scale d
    so that x ~ d * (L - nmax), maximising sum(w*x*l)^2 / sum(w*l^2) over 19 trial
    inverse scales -(nmax + 0.1*k)/max, k = 0, -9..9. Returns (scale (m,), L (n, m))."""
    with np.errstate(all="ignore"):
        amax_signed = _signed_absmax(x, axis=0)
        zero = ~(np.abs(amax_signed) >= _GROUP_MAX_EPS)
        vmax = np.where(zero, F32(1.0), amax_signed)
        # |iscale * x| <= nmax + 1 whenever max is finite
        unsafe = ~np.isfinite(vmax)
        # one multiply gives both w*x*l == (w*x)*l and w*l, then (w*l)*l
        wxw = np.stack([w * x, w])
        prod = np.empty_like(wxw)
        lv = np.empty_like(x)
        nm = F32(nmax)

        def sums(iscale: F32Array) -> tuple[F32Array, F32Array]:
            _levels(x, iscale, -nmax, nmax - 1, lv, unsafe)
            np.multiply(wxw, lv, out=prod)
            np.multiply(prod[1], lv, out=prod[1])
            sumlx, suml2 = _seq_sum(prod)
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


def _fit_scale_min(
    x: F32Array, w: F32Array, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[F32Array, F32Array, F32Array]:
    """make_qkx2_quants / make_qkx3_quants (identical for finite input): per column,
    levels L in [0, nmax], scale > 0 and offset min <= 0 minimising the weighted squared
    error of scale*L + min, trying inverse scales (rmin + rdelta*k + nmax)/(max - min),
    k = 0..nstep, each followed by a weighted least-squares fit of scale and min.
    Returns (scale (m,), the_min = -min (m,), L (n, m))."""
    with np.errstate(all="ignore"):
        xmax = x.max(axis=0)
        xmin = _first_zero_fix(x.min(axis=0), x, axis=0)  # -min may be stored (Q4_1, Q5_1)
        sum_w = _seq_sum(w, from_zero=False)  # C starts from w[0], not from 0
        sum_x = _seq_sum(w * x, from_zero=False)
        cur_min = np.where(xmin > 0, F32(0.0), xmin)
        flat = ~(xmax > cur_min)
        c_max = abs(F32(rmin) + F32(rdelta) * F32(nstep) + F32(nmax)) + F32(nmax)

        def unsafe_columns(m: F32Array) -> BoolArray | None:
            # iscale = c/(max - m) times x - m: safe if c * max|x - m| / |max - m| is
            # small (the second test keeps c / span itself from overflowing)
            span = np.abs(xmax - m)
            reach = np.maximum(span, np.abs(xmin - m))
            unsafe = ~((reach * c_max < _RINT_SAFE * span) & (span > c_max * _F32_TINY))
            return unsafe if unsafe.any() else None

        xm = x - cur_min
        # plane 0: the levels l, plane 1: x; (w*l) * planes gives w*l*l and w*l*x at once
        lx = np.empty((2,) + x.shape, dtype=np.float32)
        lv = lx[0]
        lx[1] = x
        prod = np.empty_like(lx)
        wl = np.empty_like(x)
        err = np.empty_like(x)

        def weighted_error(scale: F32Array, offset: F32Array) -> F32Array:
            # sum of w * (scale*l + offset - x)^2, C's operation order
            np.multiply(lv, scale, out=err)
            np.add(err, offset, out=err)
            np.subtract(err, x, out=err)
            np.square(err, out=err)
            np.multiply(err, w, out=err)
            return _seq_sum(err)

        unsafe = unsafe_columns(cur_min)
        iscale = F32(nmax) / (xmax - cur_min)
        scale = F32(1.0) / iscale
        _levels(xm, iscale, 0, nmax, lv, unsafe)
        best = weighted_error(scale, cur_min)
        # The winning levels are recomputed at the end from the (iscale, min) that made them.
        l_iscale = iscale
        l_min = cur_min
        for k in range(nstep + 1):
            iscale = (F32(rmin) + F32(rdelta) * F32(k) + F32(nmax)) / (xmax - cur_min)
            _levels(xm, iscale, 0, nmax, lv, unsafe)
            np.multiply(w, lv, out=wl)
            sum_l = _seq_sum(wl)
            np.multiply(lx, wl, out=prod)
            sum_l2, sum_xl = _seq_sum(prod)
            det = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            positive = this_min > 0
            this_min = np.where(positive, F32(0.0), this_min)
            this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
            cur = weighted_error(this_scale, this_min)
            better = (det > 0) & (cur < best)
            if better.any():
                best = np.where(better, cur, best)
                scale = np.where(better, this_scale, scale)
                l_iscale = np.where(better, iscale, l_iscale)
                l_min = np.where(better, cur_min, l_min)
                cur_min = np.where(better, this_min, cur_min)
                np.subtract(x, cur_min, out=xm)
                unsafe = unsafe_columns(cur_min)
        levels = _levels(np.subtract(x, l_min, out=xm), l_iscale, 0, nmax, lv,
                         unsafe_columns(l_min))
    levels[:, flat] = 0
    scale[flat] = 0
    return scale, -cur_min, levels


def _fit_unsigned(x: F32Array, w: F32Array, nmax: int) -> tuple[F32Array, U8Array]:
    """make_qp_quants: quantize the non-negative x (n, m) (sub-block scales or mins) to
    levels in [0, nmax] with weights w: best of 9 trial scales, then up to 5 rounds of
    coordinate descent on the weighted least-squares ratio. Returns (scale, L uint8)."""
    n, m = x.shape
    xmax = np.max(x, axis=0, initial=F32(0.0))
    zero = ~(xmax >= _GROUP_MAX_EPS)
    xmax = np.where(zero, F32(1.0), xmax)
    nm = F32(nmax)
    with np.errstate(all="ignore"):
        iscale = nm / xmax
        lv = (_nearest_int(x * iscale) & 0xFF).astype(np.float32)  # stored as uint8
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
        sumlx = _seq_sum((w * x) * lf)
        suml2 = _seq_sum((w * lf) * lf)
        levels = (li & 0xFF).astype(np.int32)  # the uint8 L[] of the C code
        # A round without any change leaves the state as it was, so running all five
        # rounds for every column equals C's early exit.
        for _ in range(5):
            for i in range(n):
                wi, xi = w[i], x[i]
                li_f = levels[i].astype(np.float32)
                slx = sumlx - (wi * xi) * li_f
                sl2 = suml2 - (wi * li_f) * li_f
                ok = (slx > 0) & (sl2 > 0)
                new_l = np.minimum(_nearest_int((xi * sl2) / slx), nmax)
                new_f = new_l.astype(np.float32)
                slx = slx + (wi * xi) * new_f
                sl2 = sl2 + (wi * new_f) * new_f
                take = ok & (new_l != levels[i]) & ((slx * slx) * suml2 > (sumlx * sumlx) * sl2)
                levels[i] = np.where(take, new_l & 0xFF, levels[i])
                sumlx = np.where(take, slx, sumlx)
                suml2 = np.where(take, sl2, suml2)
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
    #: legacy imatrix searches weight by the mean square of the whole row
    uses_row_sigma2: ClassVar[bool] = False
    #: blocks per internal chunk: keeps the search temporaries in cache
    chunk_blocks: ClassVar[int] = 4096

    def __init__(self) -> None:
        self.block_elems, self.block_bytes = GGML_QUANT_SIZES[self.qtype]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # public API --------------------------------------------------------------------

    def quantize_blocks(self, x: np.ndarray, imatrix: np.ndarray | None = None) -> U8Array:
        """float32 (n_blocks, block_elems) -> uint8 (n_blocks, block_bytes).

        ``imatrix``: importance weights, (block_elems,) shared by all blocks or one row
        per block. Each block is quantized as if it were a whole tensor row (this only
        matters for the legacy 32-element formats, whose imatrix search uses the row's
        mean square; ``quantize`` passes the real rows').
        """
        xb = np.ascontiguousarray(x, dtype=np.float32)
        if xb.ndim != 2 or xb.shape[1] != self.block_elems:
            raise ValueError(f"{self.qtype.name}: expected (n, {self.block_elems}), got {xb.shape}")
        qw = None
        if imatrix is not None:
            qw = np.ascontiguousarray(
                np.broadcast_to(np.asarray(imatrix, dtype=np.float32), xb.shape)
            )
        sigma2 = None
        if qw is not None and self.uses_row_sigma2:
            sigma2 = _seq_sum(np.ascontiguousarray((xb * xb).T)) / F32(self.block_elems)
        out = np.empty((xb.shape[0], self.block_bytes), dtype=np.uint8)
        for b0 in range(0, xb.shape[0], self.chunk_blocks):
            b1 = min(b0 + self.chunk_blocks, xb.shape[0])
            out[b0:b1] = self._encode(
                xb[b0:b1],
                None if qw is None else qw[b0:b1],
                None if sigma2 is None else sigma2[b0:b1],
            )
        return out

    def dequantize_blocks(self, q: np.ndarray) -> F32Array:
        """uint8 (n_blocks, block_bytes) -> float32 (n_blocks, block_elems)."""
        qb = np.ascontiguousarray(q, dtype=np.uint8)
        if qb.ndim != 2 or qb.shape[1] != self.block_bytes:
            raise ValueError(f"{self.qtype.name}: expected (n, {self.block_bytes}), got {qb.shape}")
        out = np.empty((qb.shape[0], self.block_elems), dtype=np.float32)
        step = 4 * self.chunk_blocks
        for b0 in range(0, qb.shape[0], step):
            out[b0 : b0 + step] = self._decode(qb[b0 : b0 + step])
        return out

    # per-format work ---------------------------------------------------------------

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        """x (n, block_elems) -> bytes; qw: per-block importance (or None); sigma2:
        per-block mean square of the block's tensor row (only with qw, legacy formats)."""
        raise NotImplementedError

    def _decode(self, q: U8Array) -> F32Array:
        raise NotImplementedError


def _legacy_weights(x: F32Array, qw: F32Array, sigma2: F32Array | None) -> F32Array:
    """Legacy imatrix weights: qw * sqrt(sigma2 + x^2), x and qw in column layout."""
    if sigma2 is None:
        raise ValueError("the legacy imatrix search needs the row mean square")
    return qw * np.sqrt(x * x + sigma2)


def _pack_nibbles_32(levels: U8Array) -> U8Array:
    """(n, 32) levels < 16 -> (n, 16): byte j = L[j] | L[j+16] << 4."""
    return levels[:, :16] | (levels[:, 16:] << 4)


def _pack_qh_32(levels: U8Array) -> U8Array:
    """(n, 32) 5-bit levels -> (n, 4) bytes of the little-endian u32 of their 5th bits."""
    bits = (levels >> 4) & 1
    return np.packbits(bits, axis=1, bitorder="little")


def _unpack_nibbles_32(qs: U8Array) -> U8Array:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _unpack_qh_32(qh: U8Array) -> U8Array:
    return np.unpackbits(qh, axis=1, bitorder="little")


#   Q8_0, 34 bytes per 32 values
#   +--------+----------------------------------+
#   | d  f16 | qs: int8[32]                     |   value[j] = d * qs[j]
#   +--------+----------------------------------+
#    0      2                                  34
class Q8_0(BlockFormat):
    """8-bit symmetric: d = max|x| / 127, qs = roundf(x / d) (half away from zero)."""

    qtype = GGMLQuantizationType.Q8_0
    chunk_blocks = 8192

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        # the imatrix is ignored, as in quantize_q8_0
        amax = np.maximum(x.max(axis=1), -x.min(axis=1))
        amax += F32(0.0)  # C's MAX(0.0f, ...) chain never yields -0.0
        d = amax / F32(127.0)
        with np.errstate(divide="ignore"):
            inv = F32(1.0) / d
        # 1/d = 0 when d = 0; when 1/d overflows C converts inf/NaN to int8 and gets 0,
        # which an inverse of 0 gives as well
        inv = np.where(np.isfinite(inv), inv, F32(0.0))
        v = x * inv[:, None]
        # roundf(v) == trunc(v + copysign(0.49999997f, v)) exactly, for every float v
        v += np.copysign(F32(0.49999997), v)
        out = np.empty((x.shape[0], 34), dtype=np.uint8)
        out[:, :2] = _fp16_bytes(d)
        out[:, 2:] = v.astype(np.int8).view(np.uint8)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = _fp16_bits_to_fp32(q[:, :2])
        return q[:, 2:].view(np.int8).astype(np.float32) * d[:, None]


class _SymmetricLegacy(BlockFormat):
    """Q4_0/Q5_0: d = max / -(nmax), q = (x / d + nmax + 0.5) truncated."""

    nmax: ClassVar[int]  # 8 or 16
    uses_row_sigma2 = True

    def _levels(self, x: F32Array, qw: F32Array | None,
                sigma2: F32Array | None) -> tuple[F32Array, U8Array]:
        nm = F32(self.nmax)
        if qw is None:
            vmax = _signed_absmax(x, axis=1)
            d = vmax / -nm
            with np.errstate(divide="ignore"):
                inv = F32(1.0) / d
            bad = ~np.isfinite(inv) & (d != 0)  # C: id = d ? 1/d : 0
            inv[~np.isfinite(inv)] = 0
            v = x * inv[:, None]
            v += nm + F32(0.5)
            q = np.minimum(_c_float_to_byte(v, bad, 0), 2 * self.nmax - 1)
            return d, q
        xc = _as_columns(x, 32)
        w = _legacy_weights(xc, np.ascontiguousarray(qw.T), sigma2)
        d, levels = _fit_symmetric(xc, w, self.nmax)
        return d, np.ascontiguousarray(levels.T).astype(np.uint8)


class _AffineLegacy(BlockFormat):
    """Q4_1/Q5_1: d = (max - min) / nmax, m = min, q = ((x - min) / d + 0.5) truncated."""

    nmax: ClassVar[int]  # 15 or 31
    uses_row_sigma2 = True

    def _levels(self, x: F32Array, qw: F32Array | None,
                sigma2: F32Array | None) -> tuple[F32Array, F32Array, U8Array]:
        if qw is None:
            xmin = _first_zero_fix(x.min(axis=1), x, axis=1)
            xmax = _first_zero_fix(x.max(axis=1), x, axis=1)
            d = (xmax - xmin) / F32(self.nmax)
            with np.errstate(divide="ignore"):
                inv = F32(1.0) / d
            bad = ~np.isfinite(inv) & (d != 0)  # C: id = d ? 1/d : 0
            inv[~np.isfinite(inv)] = 0
            v = x - xmin[:, None]
            v *= inv[:, None]
            v += F32(0.5)
            q = np.minimum(_c_float_to_byte(v, bad, 0), self.nmax)
            return d, xmin, q
        xc = _as_columns(x, 32)
        w = _legacy_weights(xc, np.ascontiguousarray(qw.T), sigma2)
        d, the_min, levels = _fit_scale_min(xc, w, self.nmax, -0.9, 0.05, 36)
        return d, -the_min, np.ascontiguousarray(levels.T).astype(np.uint8)


#   Q4_0, 18 bytes per 32 values
#   +--------+----------------------------------+
#   | d  f16 | qs: u8[16]                       |   byte j: low nibble = q[j],
#   +--------+----------------------------------+           high nibble = q[j+16]
#    0      2                                  18   value = d * (q - 8)
class Q4_0(_SymmetricLegacy):
    """4-bit symmetric; with an imatrix, make_qx_quants(nmax 8) weighted search."""

    qtype = GGMLQuantizationType.Q4_0
    nmax = 8

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        d, q = self._levels(x, qw, sigma2)
        out = np.empty((x.shape[0], 18), dtype=np.uint8)
        out[:, :2] = _fp16_bytes(d)
        out[:, 2:] = _pack_nibbles_32(q)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = _fp16_bits_to_fp32(q[:, :2])
        lv = _unpack_nibbles_32(q[:, 2:]).astype(np.int8) - np.int8(8)
        return lv.astype(np.float32) * d[:, None]


#   Q4_1, 20 bytes per 32 values
#   +--------+--------+-------------------------+
#   | d  f16 | m  f16 | qs: u8[16] (as Q4_0)    |   value = d * q + m
#   +--------+--------+-------------------------+
#    0      2        4                         20
class Q4_1(_AffineLegacy):
    """4-bit with offset; with an imatrix, make_qkx3_quants(nmax 15) weighted search."""

    qtype = GGMLQuantizationType.Q4_1
    nmax = 15

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        d, m, q = self._levels(x, qw, sigma2)
        out = np.empty((x.shape[0], 20), dtype=np.uint8)
        out[:, :2] = _fp16_bytes(d)
        out[:, 2:4] = _fp16_bytes(m)
        out[:, 4:] = _pack_nibbles_32(q)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = _fp16_bits_to_fp32(q[:, :2])
        m = _fp16_bits_to_fp32(q[:, 2:4])
        y = _unpack_nibbles_32(q[:, 4:]).astype(np.float32) * d[:, None]
        y += m[:, None]
        return y


#   Q5_0, 22 bytes per 32 values
#   +--------+------------------+----------------------+
#   | d  f16 | qh: u32 (LE)     | qs: u8[16] (as Q4_0) |  q = low nibble | bit j of qh << 4
#   +--------+------------------+----------------------+  value = d * (q - 16)
#    0      2                  6                      22
class Q5_0(_SymmetricLegacy):
    """5-bit symmetric; with an imatrix, make_qx_quants(nmax 16) weighted search."""

    qtype = GGMLQuantizationType.Q5_0
    nmax = 16

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        d, q = self._levels(x, qw, sigma2)
        out = np.empty((x.shape[0], 22), dtype=np.uint8)
        out[:, :2] = _fp16_bytes(d)
        out[:, 2:6] = _pack_qh_32(q)
        out[:, 6:] = _pack_nibbles_32(q & 0x0F)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = _fp16_bits_to_fp32(q[:, :2])
        lv = _unpack_nibbles_32(q[:, 6:]) | (_unpack_qh_32(q[:, 2:6]) << 4)
        return (lv.astype(np.int8) - np.int8(16)).astype(np.float32) * d[:, None]


#   Q5_1, 24 bytes per 32 values
#   +--------+--------+------------------+----------------------+
#   | d  f16 | m  f16 | qh: u32 (LE)     | qs: u8[16] (as Q4_0) |   value = d * q + m
#   +--------+--------+------------------+----------------------+
#    0      2        4                  8                      24
class Q5_1(_AffineLegacy):
    """5-bit with offset; with an imatrix, make_qkx3_quants(nmax 31) weighted search."""

    qtype = GGMLQuantizationType.Q5_1
    nmax = 31

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        d, m, q = self._levels(x, qw, sigma2)
        out = np.empty((x.shape[0], 24), dtype=np.uint8)
        out[:, :2] = _fp16_bytes(d)
        out[:, 2:4] = _fp16_bytes(m)
        out[:, 4:8] = _pack_qh_32(q)
        out[:, 8:] = _pack_nibbles_32(q & 0x0F)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = _fp16_bits_to_fp32(q[:, :2])
        m = _fp16_bits_to_fp32(q[:, 2:4])
        lv = _unpack_nibbles_32(q[:, 8:]) | (_unpack_qh_32(q[:, 4:8]) << 4)
        y = lv.astype(np.float32) * d[:, None]
        y += m[:, None]
        return y


def _pack_scale_min_k4(ls: U8Array, lm: U8Array) -> U8Array:
    """8 scales and 8 mins (n, 8) -> the 12 ``scales`` bytes of Q4_K/Q5_K, with C's
    exact uint8 arithmetic (values above 63 spill into neighbouring bits as in C)."""
    s = np.empty((ls.shape[0], 12), dtype=np.uint8)
    s[:, 0:4] = ls[:, 0:4]
    s[:, 4:8] = lm[:, 0:4]
    s[:, 8:12] = (ls[:, 4:8] & 0x0F) | ((lm[:, 4:8] & 0x0F) << 4)
    s[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    s[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    return s


def _unpack_scale_min_k4(s: U8Array) -> tuple[U8Array, U8Array]:
    """get_scale_min_k4 for j = 0..7: (n, 12) -> scales (n, 8), mins (n, 8)."""
    sc = np.empty((s.shape[0], 8), dtype=np.uint8)
    mn = np.empty((s.shape[0], 8), dtype=np.uint8)
    sc[:, :4] = s[:, 0:4] & 63
    mn[:, :4] = s[:, 4:8] & 63
    sc[:, 4:] = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    mn[:, 4:] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return sc, mn


class _ScaleMinSuper(BlockFormat):
    """Q4_K/Q5_K: 256 values = 8 sub-blocks of 32, each with a 6-bit scale and min that
    are themselves scaled by the f16 super-block d and dmin."""

    nmax: ClassVar[int]  # 15 or 31
    ref_search: ClassVar[tuple[float, float, int]]  # make_qkx2_quants rmin, rdelta, nstep
    clamp_impl_levels: ClassVar[bool]  # Q5_K's impl clamps the 6-bit levels to 63, Q4_K not
    chunk_blocks = 256

    def _header(self, x: F32Array, xc: F32Array,
                qw: F32Array | None) -> tuple[U8Array, U8Array, U8Array, F32Array]:
        """-> (d f16 bytes, dmin f16 bytes, 12 scale bytes, levels L (32, 8n) float)."""
        n = x.shape[0]
        if qw is None:
            # quantize_row_q4_K_ref / q5_K_ref
            sum_x2 = _seq_sum(xc * xc)
            av_x = np.sqrt(sum_x2 / F32(32.0))
            w = np.abs(xc)
            w += av_x
            scales, mins, levels = _fit_scale_min(xc, w, self.nmax, *self.ref_search)
            scales = scales.reshape(n, 8)
            mins = mins.reshape(n, 8)
            # C: max = 0; if (v > max) max = v;  -> never -0.0
            max_scale = np.fmax.reduce(scales, axis=1, initial=F32(0.0)) + F32(0.0)
            max_min = np.fmax.reduce(mins, axis=1, initial=F32(0.0)) + F32(0.0)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                inv_scale = np.where(max_scale > 0, F32(63.0) / max_scale, F32(0.0))
                inv_min = np.where(max_min > 0, F32(63.0) / max_min, F32(0.0))
                ls = np.minimum(_nearest_int(inv_scale[:, None] * scales) & 0xFF, 63)
                lm = np.minimum(_nearest_int(inv_min[:, None] * mins) & 0xFF, 63)
            d = max_scale / F32(63.0)
            dmin = max_min / F32(63.0)
        else:
            # quantize_row_q4_K_impl / q5_K_impl
            xt = np.ascontiguousarray(x.T)
            sum_x2 = _seq_sum(xt * xt)
            sigma2 = (F32(2.0) * sum_x2) / F32(256.0)
            sigma2_c = np.repeat(sigma2, 8)
            w = np.sqrt(xc * xc + sigma2_c)
            w *= _as_columns(qw, 32)
            sw = _seq_sum(w).reshape(n, 8)
            scales, mins, levels = _fit_scale_min(xc, w, self.nmax, -0.9, 0.05, 36)
            swt = np.ascontiguousarray(sw.T)
            d, ls8 = _fit_unsigned(np.ascontiguousarray(scales.reshape(n, 8).T), swt, 63)
            dmin, lm8 = _fit_unsigned(np.ascontiguousarray(mins.reshape(n, 8).T), swt, 63)
            ls, lm = ls8.T, lm8.T
            if self.clamp_impl_levels:
                ls = np.minimum(ls, 63)
                lm = np.minimum(lm, 63)
        packed = _pack_scale_min_k4(ls.astype(np.uint8), lm.astype(np.uint8))
        d16 = _fp16_bytes(d)
        dmin16 = _fp16_bytes(dmin)
        # Final levels from the stored (rounded) scales; sub-blocks with d == 0 keep the
        # levels of the search.
        sc, mn = _unpack_scale_min_k4(packed)
        d_sub = (_fp16_bits_to_fp32(d16)[:, None] * sc.astype(np.float32)).reshape(-1)
        dm_sub = (_fp16_bits_to_fp32(dmin16)[:, None] * mn.astype(np.float32)).reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            v = xc + dm_sub
            v /= d_sub
        requant = np.clip(_nearest_int(v), 0, self.nmax).astype(np.float32)
        keep = d_sub == 0
        if keep.any():
            requant[:, keep] = levels[:, keep]
        return d16, dmin16, packed, requant


#   Q4_K, 144 bytes per 256 values (8 sub-blocks s of 32)
#   +--------+-----------+------------------+------------------------------------------+
#   | d  f16 | dmin f16  | scales: u8[12]   | qs: u8[128] = 4 chunks c of 32 bytes      |
#   +--------+-----------+------------------+------------------------------------------+
#    0      2           4                  16                                        144
#   scales: s<4: sc = b[s] & 63, mn = b[s+4] & 63
#           s>=4: sc = b[s+4] & 15 | (b[s-4] >> 6) << 4, mn = b[s+4] >> 4 | (b[s] >> 6) << 4
#   chunk c byte l: low nibble = q[64c + l], high nibble = q[64c + 32 + l]
#   value[e] = d * sc[e // 32] * q[e] - dmin * mn[e // 32]
class Q4_K(_ScaleMinSuper):
    """4-bit k-quant: make_qkx2 (ref) / make_qkx3 + make_qp (imatrix) searches."""

    qtype = GGMLQuantizationType.Q4_K
    nmax = 15
    ref_search = (-1.0, 0.1, 20)
    clamp_impl_levels = False

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        n = x.shape[0]
        xc = _as_columns(x, 32)
        d16, dmin16, packed, lv = self._header(x, xc, qw)
        q = np.ascontiguousarray(lv.T).astype(np.uint8).reshape(n, 4, 2, 32)
        out = np.empty((n, 144), dtype=np.uint8)
        out[:, 0:2] = d16
        out[:, 2:4] = dmin16
        out[:, 4:16] = packed
        out[:, 16:] = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        n = q.shape[0]
        d = _fp16_bits_to_fp32(q[:, 0:2])
        dmin = _fp16_bits_to_fp32(q[:, 2:4])
        sc, mn = _unpack_scale_min_k4(q[:, 4:16])
        qs = q[:, 16:].reshape(n, 4, 1, 32)
        lv = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32)
        d1 = d[:, None] * sc.astype(np.float32)
        m1 = dmin[:, None] * mn.astype(np.float32)
        y = d1[:, :, None] * lv.astype(np.float32)
        y -= m1[:, :, None]
        return y.reshape(n, 256)


#   Q5_K, 176 bytes per 256 values (8 sub-blocks of 32)
#   +--------+-----------+----------------+---------------+---------------------------+
#   | d  f16 | dmin f16  | scales: u8[12] | qh: u8[32]    | qs: u8[128] (as Q4_K)     |
#   +--------+-----------+----------------+---------------+---------------------------+
#    0      2           4                16              48                         176
#   5th bit of q[64c + l] = bit 2c of qh[l], of q[64c + 32 + l] = bit 2c+1 of qh[l]
#   value[e] = d * sc[e // 32] * q[e] - dmin * mn[e // 32]    (scales as Q4_K)
class Q5_K(_ScaleMinSuper):
    """5-bit k-quant: make_qkx2 (ref) / make_qkx3 + make_qp (imatrix) searches."""

    qtype = GGMLQuantizationType.Q5_K
    nmax = 31
    ref_search = (-0.5, 0.1, 15)
    clamp_impl_levels = True

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        n = x.shape[0]
        xc = _as_columns(x, 32)
        d16, dmin16, packed, lv = self._header(x, xc, qw)
        q = np.ascontiguousarray(lv.T).astype(np.uint8).reshape(n, 4, 2, 32)
        out = np.empty((n, 176), dtype=np.uint8)
        out[:, 0:2] = d16
        out[:, 2:4] = dmin16
        out[:, 4:16] = packed
        high = (q >> 4).reshape(n, 8, 32)  # bit k of qh[l] = 5th bit of sub-block k
        qh = np.zeros((n, 32), dtype=np.uint8)
        for k in range(8):
            qh |= high[:, k] << k
        out[:, 16:48] = qh
        low = q & 0x0F
        out[:, 48:] = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(n, 128)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        n = q.shape[0]
        d = _fp16_bits_to_fp32(q[:, 0:2])
        dmin = _fp16_bits_to_fp32(q[:, 2:4])
        sc, mn = _unpack_scale_min_k4(q[:, 4:16])
        qh = q[:, 16:48]
        qs = q[:, 48:].reshape(n, 4, 1, 32)
        lv = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32)
        shifts = np.arange(8, dtype=np.uint8)[None, :, None]
        lv = lv | (((qh[:, None, :] >> shifts) & 1) << 4)
        d1 = d[:, None] * sc.astype(np.float32)
        m1 = dmin[:, None] * mn.astype(np.float32)
        y = d1[:, :, None] * lv.astype(np.float32)
        y -= m1[:, :, None]
        return y.reshape(n, 256)


#   Q6_K, 210 bytes per 256 values (16 sub-blocks of 16; two halves h of 128)
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
    """6-bit k-quant: make_qx_quants(nmax 32) per 16 values, 8-bit sub-block scales."""

    qtype = GGMLQuantizationType.Q6_K
    chunk_blocks = 256

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        n = x.shape[0]
        xc = _as_columns(x, 16)
        w = xc * xc if qw is None else _as_columns(qw, 16)
        scales, levels = _fit_symmetric(xc, w, 32)
        scales = scales.reshape(n, 16)
        first = np.argmax(np.abs(scales), axis=1)[:, None]
        max_scale = np.take_along_axis(scales, first, axis=1)[:, 0]
        zero = ~(np.abs(max_scale) >= _GROUP_MAX_EPS)
        max_scale[zero] = 1
        iscale = F32(-128.0) / max_scale
        d16 = _fp16_bytes(F32(1.0) / iscale)
        sc = np.minimum(_nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
        d_sub = (_fp16_bits_to_fp32(d16)[:, None] * sc.astype(np.float32)).reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            v = xc / d_sub
        requant = np.clip(_nearest_int(v), -32, 31) + 32
        keep = d_sub == 0
        if keep.any():
            requant[:, keep] = levels[:, keep]
        q = np.ascontiguousarray(requant.T).astype(np.uint8).reshape(n, 2, 4, 32)
        out = np.empty((n, 210), dtype=np.uint8)
        low = q & 0x0F
        ql = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4),
                             low[:, :, 1] | (low[:, :, 3] << 4)], axis=2)
        out[:, 0:128] = ql.reshape(n, 128)
        high = q >> 4
        qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)
        out[:, 128:192] = qh.reshape(n, 64)
        out[:, 192:208] = sc.view(np.uint8)
        out[:, 208:210] = d16
        out[zero] = 0
        return out

    def _decode(self, q: U8Array) -> F32Array:
        n = q.shape[0]
        ql = q[:, 0:128].reshape(n, 2, 2, 32)
        qh = q[:, 128:192].reshape(n, 2, 1, 32)
        sc = q[:, 192:208].view(np.int8).astype(np.float32)
        d = _fp16_bits_to_fp32(q[:, 208:210])
        low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # (n, 2, 4, 32): quarters 0..3
        shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]
        lv = low | (((qh >> shifts) & 3) << 4)
        lv_f = (lv.astype(np.int8) - np.int8(32)).astype(np.float32).reshape(n, 16, 16)
        ds = d[:, None] * sc
        return (ds[:, :, None] * lv_f).reshape(n, 256)


FORMATS: dict[GGMLQuantizationType, BlockFormat] = {
    f.qtype: f for f in (Q8_0(), Q4_0(), Q4_1(), Q5_0(), Q5_1(), Q4_K(), Q5_K(), Q6_K())
}


def _format(qtype: GGMLQuantizationType) -> BlockFormat:
    try:
        return FORMATS[GGMLQuantizationType(qtype)]
    except KeyError:
        raise ValueError(f"no modelkit kernel for {GGMLQuantizationType(qtype).name}") from None


# --------------------------------------------------------------------------------------
# Row-level entry points
# --------------------------------------------------------------------------------------


def quantize(
    qtype: GGMLQuantizationType, x: np.ndarray, imatrix: np.ndarray | None = None
) -> U8Array:
    """x float32 (rows, n_per_row) -> uint8 (rows, row_bytes), as ggml_quantize_chunk.

    ``imatrix``: float32 (n_per_row,) importance weights, or None. ``n_per_row`` must be
    a multiple of the block size. Rows are independent of each other.
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
        raise ValueError(
            f"{fmt.qtype.name}: row length {n_per_row} is not a multiple of {be}"
        )
    nb = n_per_row // be
    out = np.empty((rows, nb * bb), dtype=np.uint8)
    if rows == 0 or nb == 0:
        return out
    im_blocks: F32Array | None = None
    row_sigma2: F32Array | None = None
    if imatrix is not None and fmt.qtype != GGMLQuantizationType.Q8_0:
        im = np.asarray(imatrix, dtype=np.float32).reshape(-1)
        if im.shape[0] != n_per_row:
            raise ValueError(f"imatrix has {im.shape[0]} values, rows have {n_per_row}")
        im_blocks = np.ascontiguousarray(im.reshape(nb, be))
        if fmt.uses_row_sigma2:
            # sum of x^2 over the whole row, in order, divided by n_per_row
            sq = xa * xa
            row_sigma2 = np.cumsum(sq, axis=1, dtype=np.float32)[:, -1] + F32(0.0)
            row_sigma2 = row_sigma2 / F32(n_per_row)
    blocks = np.ascontiguousarray(xa).reshape(rows * nb, be)
    out_blocks = out.reshape(rows * nb, bb)
    total = rows * nb
    step = fmt.chunk_blocks
    for b0 in range(0, total, step):
        b1 = min(b0 + step, total)
        qw = sig = None
        if im_blocks is not None:
            idx = np.arange(b0, b1)
            qw = im_blocks[idx % nb]
            if row_sigma2 is not None:
                sig = row_sigma2[idx // nb]
        out_blocks[b0:b1] = fmt._encode(blocks[b0:b1], qw, sig)
    return out


def dequantize(
    qtype: GGMLQuantizationType, q: np.ndarray, n_per_row: int | None = None
) -> F32Array:
    """uint8 (rows, row_bytes) -> float32 (rows, n_per_row), as ggml's ``to_float``."""
    fmt = _format(qtype)
    qa = np.asarray(q, dtype=np.uint8)
    if qa.ndim == 1:
        if n_per_row is None:
            qa = qa[None, :]
        else:
            qa = qa.reshape(-1, n_per_row // fmt.block_elems * fmt.block_bytes)
    if qa.ndim != 2 or qa.shape[1] % fmt.block_bytes:
        raise ValueError(f"{fmt.qtype.name}: bad quantized shape {qa.shape}")
    rows = qa.shape[0]
    n = qa.shape[1] // fmt.block_bytes * fmt.block_elems
    if n_per_row is not None and n_per_row != n:
        raise ValueError(f"{fmt.qtype.name}: rows hold {n} values, not {n_per_row}")
    return fmt.dequantize_blocks(qa.reshape(-1, fmt.block_bytes)).reshape(rows, n)


_Converter = Callable[[np.ndarray], F32Array]


def _bf16_to_f32(a: np.ndarray) -> F32Array:
    bits = np.ascontiguousarray(a).view(np.uint16).astype(np.uint32) << np.uint32(16)
    return bits.view(np.float32)


_PLAIN: dict[GGMLQuantizationType, tuple[np.dtype[np.generic], _Converter]] = {
    GGMLQuantizationType.F32: (np.dtype(np.float32), lambda a: a.astype(np.float32)),
    GGMLQuantizationType.F16: (np.dtype(np.float16), lambda a: a.astype(np.float32)),
    GGMLQuantizationType.BF16: (np.dtype(np.uint16), _bf16_to_f32),
}


def to_float32(data: np.ndarray, qtype: GGMLQuantizationType) -> F32Array:
    """Any tensor data to float32 (rows, n_per_row).

    ``data`` is either typed values (float32/float16 arrays, uint16 for BF16) or the raw
    bytes as uint8 (rows, row_bytes) as gguf's reader returns them for block types.
    """
    qtype = GGMLQuantizationType(qtype)
    arr = np.asarray(data)
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    elif arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim > 2:
        arr = arr.reshape(-1, arr.shape[-1])
    if qtype in _PLAIN:
        dtype, convert = _PLAIN[qtype]
        if arr.dtype == np.uint8 or (qtype == GGMLQuantizationType.BF16 and arr.itemsize == 2):
            arr = np.ascontiguousarray(arr).view(dtype)
        return np.ascontiguousarray(convert(arr), dtype=np.float32)
    if qtype in FORMATS:
        return dequantize(qtype, np.ascontiguousarray(arr).view(np.uint8))
    from gguf import quants as gguf_quants

    raw = np.ascontiguousarray(arr).view(np.uint8)
    out = gguf_quants.dequantize(raw, qtype)
    return np.asarray(out, dtype=np.float32).reshape(raw.shape[0], -1)
