"""MXFP4 and NVFP4: E2M1 (4-bit float) values with power-of-two or UE4M3 scales.

As ggml's ``quantize_row_mxfp4_ref`` / ``quantize_row_nvfp4_ref``; the importance matrix is
ignored. Values are ``kvalues_fp4`` = the 16 E2M1 codes doubled (so they are integers):
nibble n = sign (bit 3), exponent e (bits 1-2), mantissa m (bit 0); E2M1 is ``m/2`` for
e = 0 and ``(1 + m/2) * 2^(e-1)`` otherwise, doubled: 0 1 2 3 4 6 8 12 and their negatives.
Each element takes the *first* of the equally close table entries ``|kv[i]*d - x|``.

MXFP4 block, 32 values, 17 bytes::

    e  u8     @0   E8M0 exponent: e = floor(log2f(amax)) - 2 + 127 (0 for an all-zero block)
    qs u8[16] @1   byte j: elem j (low nibble), elem j+16 (high nibble)
    value = kv[nibble] * d, d = 2^(e-128) (the "half" E8M0: kv is doubled)

NVFP4 block, 64 values in 4 sub-blocks of 16, 36 bytes::

    d  u8[4]  @0   UE4M3 scale per sub-block: 4 exponent bits (bias 7), 3 mantissa bits;
                   ggml_fp32_to_ue4m3(amax / 6) (6 = largest E2M1 value)
    qs u8[32] @4   sub-block s: qs[8s + j] holds elem 16s+j (low), 16s+8+j (high nibble)
    value = kv[nibble] * ue4m3(d[s]) / 2
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType

from modelkit.quant.kernels.block import BlockFormat
from modelkit.quant.kernels.common import F32Array, U8Array


def _e2m1_doubled() -> npt.NDArray[np.int8]:
    n = np.arange(16)
    e, m = (n >> 1) & 3, n & 1
    mag = np.where(e == 0, m, (2 + m) << np.maximum(e - 1, 0))
    return np.where(n >= 8, -mag, mag).astype(np.int8)


KVALUES_FP4 = _e2m1_doubled()
_KV = KVALUES_FP4.astype(np.float32)


_POS = _KV[:8]  # 0 1 2 3 4 6 8 12
_BELOW = np.searchsorted(2 * _POS, np.arange(25), side="right") - 1  # 2*|x|/d -> entry


def _best_index(x: F32Array, d: F32Array) -> U8Array:
    """x (..., k), d (..., 1): the first i with the smallest |kv[i]*d - x| (best_index_mxfp4).

    Rounding is symmetric, so a negative x sees the negative entries (9..15) exactly as |x|
    sees the positive ones (1..7), and entry 0 comes first in both orders; the opposite
    sign is never closer. Over |x| the float32 errors of the ascending entries 0..7 fall
    and then rise, so the first minimum is the entry just below |x| or the one above it
    (only when strictly closer, as C's ``<`` keeps the first). The entry below comes from
    |x|/d (within one step: corrected with C's own products ``kv[i]*d``)."""
    m = np.abs(x)
    ratio = np.fmin(m / np.where(d > 0, d, np.float32(1)), np.float32(12))  # NaN -> 12
    lo = _BELOW[(ratio * np.float32(2)).astype(np.int32)]
    lo -= _POS[lo] * d > m
    up = np.minimum(lo + 1, 7)
    lo = np.where(_POS[up] * d <= m, up, lo)
    hi = np.minimum(lo + 1, 7)
    closer = np.abs(_POS[hi] * d - m) < np.abs(_POS[lo] * d - m)
    best: U8Array = np.where(d > 0, np.where(closer, hi, lo), 0).astype(np.uint8)  # d = 0: ties
    best += ((x < 0) & (best > 0)).astype(np.uint8) << np.uint8(3)
    return best


def _e8m0_half(e: U8Array) -> F32Array:
    """ggml_e8m0_to_fp32_half: 2^(e-128), with e = 0/1 the subnormals 2^-128 / 2^-127."""
    e32 = e.astype(np.uint32)
    bits = np.where(e32 < 2, np.uint32(0x00200000) << e32, (e32 - 1) << np.uint32(23))
    out: F32Array = bits.astype(np.uint32).view(np.float32)
    return out


def _mxfp4_exponent(amax: F32Array) -> U8Array:
    """(uint8_t)(floorf(log2f(amax)) - 2 + 127), 0 when amax is not > 0 (x86 conversion:
    the float goes through int32, whose low byte is kept)."""
    lg = np.log2(amax.astype(np.float64)).astype(np.float32)  # log2f, correctly rounded
    v = np.where(amax > 0, np.floor(lg) - np.float32(2) + np.float32(127), np.float32(0))
    out: U8Array = (v.astype(np.int64) & 0xFF).astype(np.uint8)
    return out


def _pack_halves(idx: U8Array, half: int) -> U8Array:
    """(..., 2*half) nibbles -> (..., half) bytes: elem j low, elem j+half high."""
    out: U8Array = idx[..., :half] | (idx[..., half:] << np.uint8(4))
    return out


def _unpack_halves(qs: U8Array) -> npt.NDArray[np.float32]:
    nib = np.concatenate([qs & np.uint8(15), qs >> np.uint8(4)], axis=-1)
    out: F32Array = _KV[nib]
    return out


class MXFP4(BlockFormat):
    qtype = GGMLQuantizationType.MXFP4
    uses_imatrix = False

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        amax = np.max(np.abs(x), axis=1, initial=np.float32(0.0))
        e = _mxfp4_exponent(amax)
        out = np.empty((x.shape[0], self.block_bytes), dtype=np.uint8)
        out[:, 0] = e
        out[:, 1:] = _pack_halves(_best_index(x, _e8m0_half(e)[:, None]), 16)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        out: F32Array = _unpack_halves(q[:, 1:]) * _e8m0_half(q[:, 0])[:, None]
        return out


def _ue4m3_table() -> F32Array:
    """ggml_ue4m3_to_fp32 of every byte (already halved, like kvalues_fp4 is doubled)."""
    x = np.arange(256)
    exp, man = (x >> 3) & 15, (x & 7).astype(np.float64)
    raw = np.where(exp == 0, man * 2.0**-9, (1.0 + man / 8.0) * 2.0 ** (exp - 7.0))
    raw[(x == 0) | (x == 0x7F)] = 0.0
    return (raw * 0.5).astype(np.float32)


_UE4M3 = _ue4m3_table()


def _fp32_to_ue4m3(x: F32Array) -> U8Array:
    """ggml_fp32_to_ue4m3: round the mantissa to 3 bits (half up), saturate at 0x7E."""
    x = np.minimum(x, np.float32(448.0))  # NaN is caught by the "not > 0" test below
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.int64)
    exp = ((bits >> 23) & 0xFF) - 127 + 7  # decides the subnormal branch, before rounding
    man = ((bits >> 20) & 7) + ((bits >> 19) & 1)
    rounded_exp = np.where(man > 7, exp + 1, exp)
    normal = np.where(rounded_exp >= 15, 0x7E,
                      (np.clip(rounded_exp, 0, 15) << 3) | np.where(man > 7, 0, man))
    sub = np.clip((x * np.float32(512.0) + np.float32(0.5)).astype(np.int64), 0, 7)
    out = np.where(x > 0, np.where(exp <= 0, sub, normal), 0)
    return out.astype(np.uint8)


class NVFP4(BlockFormat):
    qtype = GGMLQuantizationType.NVFP4
    uses_imatrix = False

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        sub = x.reshape(-1, 4, 16)
        amax = np.max(np.abs(sub), axis=2, initial=np.float32(0.0))
        ue = _fp32_to_ue4m3(amax / np.float32(6.0))
        out = np.empty((x.shape[0], self.block_bytes), dtype=np.uint8)
        out[:, :4] = ue
        out[:, 4:] = _pack_halves(_best_index(sub, _UE4M3[ue][..., None]), 8).reshape(-1, 32)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        v = _unpack_halves(q[:, 4:].reshape(-1, 4, 8)) * _UE4M3[q[:, :4]][..., None]
        out: F32Array = v.reshape(-1, 64)
        return out
