"""The legacy 32-value formats: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from gguf import GGMLQuantizationType

from modelkit.quant.kernels.block import BlockFormat
from modelkit.quant.kernels.common import (
    F32,
    TILE,
    BoolArray,
    F32Array,
    U8Array,
    as_columns,
    first_zero_fix,
    from_columns,
    max_min,
    pack_nibbles,
    signed_absmax_of,
    unpack_nibbles,
)
from modelkit.quant.kernels.floats import fp16_bytes, fp16_to_f32
from modelkit.quant.kernels.searches import fit_scale_min, fit_symmetric

_NEARLY_HALF_BITS = np.uint32(0x3EFFFFFF)  # bits of 0.49999997f, the float below 0.5
# (4, 32): row k weighs the bits j = 8k..8k+7 by 2^(j - 8k); sums < 256 are exact in
# float32, so a matmul packs the 32 fifth bits of a block into its 4 qh bytes (packbits
# along a middle axis is much slower)
_BIT_WEIGHTS = np.array([[2.0 ** (j - 8 * k) if j // 8 == k else 0.0 for j in range(32)]
                         for k in range(4)], dtype=np.float32)


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
    return as_columns(qw, 32) * np.sqrt(sigma2 + xc * xc)


class _Legacy(BlockFormat):
    """Q4_0/Q5_0 (symmetric): d = max / -nmax (max = the value of largest magnitude),
    q = (int8_t)(x/d + nmax + 0.5) capped at 2*nmax - 1, value d * (q - nmax).
    Q4_1/Q5_1 (``affine``): d = (max - min) / nmax, m = min, q = (int)((x - min)/d + 0.5),
    value d * q + m. Layout: d f16, then m f16 if affine, then the 5th bits (u32) if
    ``fifth_bit``, then 16 bytes of nibbles."""

    nmax: ClassVar[int]  # symmetric: 8 or 16; affine: 15 or 31
    affine: ClassVar[bool]
    fifth_bit: ClassVar[bool]
    uses_row_sigma2 = True

    def _offsets(self) -> tuple[int, int]:
        """Byte offsets of qh and qs."""
        qh = 4 if self.affine else 2
        return qh, qh + (4 if self.fifth_bit else 0)

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        if qw is None:
            return self._encode_ref(x)
        out = np.empty((x.shape[0], self.block_bytes), dtype=np.uint8)
        xc = as_columns(x, 32)
        w = _legacy_weights(xc, qw, sigma2)
        if self.affine:  # quantize_row_q4_1_impl / q5_1_impl
            d, the_min, levels = fit_scale_min(xc, w, self.nmax, -0.9, 0.05, 36)
            out[:, 2:4] = fp16_bytes(-the_min)
        else:  # quantize_row_q4_0_impl / q5_0_impl
            d, levels = fit_symmetric(xc, w, self.nmax)
        q = from_columns(levels, 32)
        out[:, 0:2] = fp16_bytes(d)
        qh, qs = self._offsets()
        if self.fifth_bit:
            out[:, qh:qs] = _pack_fifth_bits(q)
        out[:, qs:] = pack_nibbles(q)
        return out

    def _encode_ref(self, x: F32Array) -> U8Array:
        """quantize_row_q4_0_ref .. q5_1_ref. Symmetric: d = max / -nmax, q =
        (int8_t)(x/d + nmax + 0.5) capped at 2*nmax - 1; affine: d = (max - min) / nmax,
        q = (int)((x - min)/d + 0.5) capped at nmax. Worked on tiles of TILE blocks
        transposed to (32, TILE), so that every operation runs along rows of TILE values
        (per-block rows of 32 are slow in numpy); the last n % TILE blocks as one tile."""
        n = x.shape[0]
        out = np.empty((n, self.block_bytes), dtype=np.uint8)
        full = n - n % TILE
        parts: list[tuple[int, int, F32Array]] = []
        if full:
            parts.append((0, full, np.ascontiguousarray(
                x[:full].reshape(-1, TILE, 32).transpose(0, 2, 1))))
        if full < n:
            parts.append((full, n, np.ascontiguousarray(x[full:].T)[None]))
        qh, qs = self._offsets()
        nm = F32(self.nmax)
        for b0, b1, t in parts:
            xb = x[b0:b1]
            shape = (t.shape[0], 1, t.shape[2])  # one value per block, broadcast over 32
            mx, mn = t.max(axis=1).reshape(-1), t.min(axis=1).reshape(-1)
            if self.affine:
                _skip_nan(mx, mn, xb)
                xmax = first_zero_fix(mx, xb, axis=1)
                xmin = first_zero_fix(mn, xb, axis=1)
                d = (xmax - xmin) / nm
                inv, overflowed = _inverse(d)
                v = np.subtract(t, xmin.reshape(shape))
                v *= inv.reshape(shape)
                v += F32(0.5)
                top = self.nmax
                out[b0:b1, 2:4] = fp16_bytes(xmin)
            else:
                d = signed_absmax_of(mx, mn, xb, axis=1) / -nm
                inv, overflowed = _inverse(d)
                v = np.multiply(t, inv.reshape(shape))
                v += nm + F32(0.5)
                top = 2 * self.nmax - 1
            if overflowed.any():  # C converts inf/NaN to INT_MIN: low byte 0
                np.copyto(v, F32(0.0), where=overflowed.reshape(shape))
            q = v.astype(np.uint8)  # v is in [0, 32) (truncation toward zero)
            # np.minimum with a scalar is several times slower than with an array
            np.minimum(q, np.full(shape, top, dtype=np.uint8), out=q)
            out[b0:b1, 0:2] = fp16_bytes(d)
            # the output bytes seen in the tile layout: [tile, byte, block]
            dst = out[b0:b1].reshape(t.shape[0], t.shape[2], -1).transpose(0, 2, 1)
            if self.fifth_bit:  # bit j of qh is L[j] >> 4: byte k = sum 2^(j - 8k) * bit j
                high = np.matmul(_BIT_WEIGHTS, (q >> np.uint8(4)).astype(np.float32))
                np.copyto(dst[:, qh:qs], high, casting="unsafe")
            np.bitwise_or(q[:, :16] & np.uint8(0x0F), q[:, 16:] << np.uint8(4), out=dst[:, qs:])
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = fp16_to_f32(q[:, 0:2])
        qh, qs = self._offsets()
        levels = unpack_nibbles(q[:, qs:])
        if self.fifth_bit:
            levels |= _unpack_fifth_bits(q[:, qh:qs])
        if self.affine:
            y = levels.astype(np.float32) * d[:, None]
            y += fp16_to_f32(q[:, 2:4])[:, None]
            return y
        signed = levels.astype(np.int8) - np.int8(self.nmax)
        return signed.astype(np.float32) * d[:, None]  # type: ignore[no-any-return]


def _skip_nan(mx: F32Array, mn: F32Array, x: F32Array) -> None:
    """C's ``if (v < min) min = v; if (v > max) max = v;`` from min = FLT_MAX, max =
    -FLT_MAX never takes a NaN (numpy's max and min propagate it): in place, the blocks
    (rows of ``x``) with a NaN get the max and min of their other values."""
    nan = np.isnan(mx)
    if nan.any():
        sub = x[nan]
        big = F32(np.finfo(np.float32).max)
        mx[nan] = np.where(np.isnan(sub), -big, sub).max(axis=1)
        mn[nan] = np.where(np.isnan(sub), big, sub).min(axis=1)


def _inverse(d: F32Array) -> tuple[F32Array, BoolArray]:
    """C's ``id = d ? 1.0f/d : 0.0f``, and where 1/d overflowed (inf/NaN in C)."""
    inv = F32(1.0) / d
    bad = ~np.isfinite(inv)
    overflowed = bad & (d != 0)
    inv[bad] = 0
    return inv, overflowed


#   Q8_0: 34 bytes per 32 values
#   +--------+----------------------------------+
#   | d  f16 | qs: int8[32]                     |   value[j] = d * qs[j]
#   +--------+----------------------------------+
#    0      2                                  34
class Q8_0(BlockFormat):
    """8-bit symmetric: d = max|x| / 127, qs = roundf(x / d) (half away from zero)."""

    qtype = GGMLQuantizationType.Q8_0
    uses_imatrix = False  # quantize_q8_0 ignores the weights

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        mx, mn = max_min(x, axis=1)  # the imatrix is ignored, as in quantize_q8_0
        amax = np.maximum(mx, -mn)
        amax += F32(0.0)  # C's MAX(0.0f, |v|) chain never yields -0.0
        nan = np.isnan(amax)
        if nan.any():
            # C's amax = MAX(amax, fabsf(v)) = amax > |v| ? amax : |v| becomes NaN at a
            # NaN and restarts from the next value: the max of |v| after the last NaN
            sub = np.abs(x[nan])
            after_last = np.cumsum(np.isnan(sub)[:, ::-1], axis=1)[:, ::-1] == 0
            last_is_nan = ~after_last[:, -1]
            amax[nan] = np.where(last_is_nan, np.nan, np.where(after_last, sub, 0).max(axis=1))
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
        out[:, 0:2] = fp16_bytes(d)
        out[:, 2:34] = v.astype(np.int8).view(np.uint8)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = fp16_to_f32(q[:, 0:2])
        return q[:, 2:34].view(np.int8).astype(np.float32) * d[:, None]


#   Q4_0: 18 bytes per 32 values
#   +--------+----------------------------------+
#   | d  f16 | qs: u8[16]                       |   byte j: low nibble = q[j],
#   +--------+----------------------------------+           high nibble = q[j+16]
#    0      2                                  18   value = d * (q - 8)
class Q4_0(_Legacy):
    """4-bit symmetric; with an imatrix, the weighted make_qx_quants search (nmax 8)."""

    qtype = GGMLQuantizationType.Q4_0
    nmax, affine, fifth_bit = 8, False, False


#   Q4_1: 20 bytes per 32 values
#   +--------+--------+-------------------------+
#   | d  f16 | m  f16 | qs: u8[16] (as Q4_0)    |   value = d * q + m
#   +--------+--------+-------------------------+
#    0      2        4                         20
class Q4_1(_Legacy):
    """4-bit with offset; with an imatrix, the weighted make_qkx3_quants search."""

    qtype = GGMLQuantizationType.Q4_1
    nmax, affine, fifth_bit = 15, True, False


#   Q5_0: 22 bytes per 32 values
#   +--------+------------------+----------------------+
#   | d  f16 | qh: u32 (LE)     | qs: u8[16] (as Q4_0) |   q[j] = nibble | (bit j of qh) << 4
#   +--------+------------------+----------------------+   value = d * (q - 16)
#    0      2                  6                      22
class Q5_0(_Legacy):
    """5-bit symmetric; with an imatrix, the weighted make_qx_quants search (nmax 16)."""

    qtype = GGMLQuantizationType.Q5_0
    nmax, affine, fifth_bit = 16, False, True


#   Q5_1: 24 bytes per 32 values
#   +--------+--------+------------------+----------------------+
#   | d  f16 | m  f16 | qh: u32 (LE)     | qs: u8[16] (as Q4_0) |   value = d * q + m
#   +--------+--------+------------------+----------------------+
#    0      2        4                  8                      24
class Q5_1(_Legacy):
    """5-bit with offset; with an imatrix, the weighted make_qkx3_quants search."""

    qtype = GGMLQuantizationType.Q5_1
    nmax, affine, fifth_bit = 31, True, True
