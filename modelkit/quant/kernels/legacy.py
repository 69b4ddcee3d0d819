"""The legacy 32-value formats: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from gguf import GGMLQuantizationType

from modelkit.quant.kernels.block import BlockFormat
from modelkit.quant.kernels.common import (
    F32,
    F32Array,
    U8Array,
    as_columns,
    c_trunc_to_byte,
    first_zero_fix,
    from_columns,
    max_min,
    pack_nibbles,
    signed_absmax,
    unpack_nibbles,
)
from modelkit.quant.kernels.floats import fp16_bytes, fp16_to_f32
from modelkit.quant.kernels.searches import fit_scale_min, fit_symmetric

_NEARLY_HALF_BITS = np.uint32(0x3EFFFFFF)  # bits of 0.49999997f, the float below 0.5


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
        out = np.empty((x.shape[0], self.block_bytes), dtype=np.uint8)
        if self.affine:
            d, m, q = self._scale_min_and_levels(x, qw, sigma2)
            out[:, 2:4] = fp16_bytes(m)
        else:
            d, q = self._scale_and_levels(x, qw, sigma2)
        out[:, 0:2] = fp16_bytes(d)
        qh, qs = self._offsets()
        if self.fifth_bit:
            out[:, qh:qs] = _pack_fifth_bits(q)
        out[:, qs:] = pack_nibbles(q)
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

    def _scale_and_levels(self, x: F32Array, qw: F32Array | None,
                          sigma2: F32Array | None) -> tuple[F32Array, U8Array]:
        if qw is not None:  # quantize_row_q4_0_impl / q5_0_impl
            xc = as_columns(x, 32)
            d, levels = fit_symmetric(xc, _legacy_weights(xc, qw, sigma2), self.nmax)
            return d, from_columns(levels, 32)
        nm = F32(self.nmax)
        d = signed_absmax(x, axis=1) / -nm
        inv = F32(1.0) / d
        overflowed = ~np.isfinite(inv) & (d != 0)
        inv[~np.isfinite(inv)] = 0  # C: id = d ? 1/d : 0
        v = x * inv[:, None]
        v += nm + F32(0.5)
        q = c_trunc_to_byte(v, overflowed)
        return d, np.minimum(q, 2 * self.nmax - 1)

    def _scale_min_and_levels(self, x: F32Array, qw: F32Array | None,
                              sigma2: F32Array | None) -> tuple[F32Array, F32Array, U8Array]:
        if qw is not None:  # quantize_row_q4_1_impl / q5_1_impl
            xc = as_columns(x, 32)
            w = _legacy_weights(xc, qw, sigma2)
            d, the_min, levels = fit_scale_min(xc, w, self.nmax, -0.9, 0.05, 36)
            return d, -the_min, from_columns(levels, 32)
        xmax, xmin = max_min(x, axis=1)
        xmax = first_zero_fix(xmax, x, axis=1)
        xmin = first_zero_fix(xmin, x, axis=1)
        d = (xmax - xmin) / F32(self.nmax)
        inv = F32(1.0) / d
        overflowed = ~np.isfinite(inv) & (d != 0)
        inv[~np.isfinite(inv)] = 0  # C: id = d ? 1/d : 0
        v = x - xmin[:, None]
        v *= inv[:, None]
        v += F32(0.5)
        q = c_trunc_to_byte(v, overflowed)
        return d, xmin, np.minimum(q, self.nmax)


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
