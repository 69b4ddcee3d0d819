"""Non-linear 4-bit formats: IQ4_NL and IQ4_XS, whose levels index a fixed table.

Both come from ggml's ``quantize_row_iq4_nl_impl`` with ``ntry = 7`` (what
``ggml_quantize_chunk`` calls, with or without an importance matrix): per 32 values, a
first scale -max/-127, then 15 trial scales (itry - 127)/max, keeping the one that
maximises sum(w*q*x)^2 / sum(w*q^2), where q = the table value nearest to x/d
(``best_index_int8``: ties go to the larger value). Weights are x^2 without an
imatrix, imatrix * sqrt(sigma2 + x^2) with one (sigma2 = 2 * the block's mean square).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType

from modelkit.quant.kernels.block import BlockFormat
from modelkit.quant.kernels.common import (
    F32,
    GROUP_MAX_EPS,
    F32Array,
    U8Array,
    as_columns,
    from_columns,
    nearest_int,
    pack_nibbles,
    seq_sum,
    signed_absmax,
    unpack_nibbles,
)
from modelkit.quant.kernels.floats import fp16_bytes, fp16_to_f32

#: kvalues_iq4nl, ascending
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10,
                          1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
_KV = KVALUES_IQ4NL.astype(np.float32)
_NTRY = 7


# best_index_int8's choice between neighbours a < b, ``v - a < b - v`` in float32, is the
# exact ``v < (a + b)/2`` for every float32 v (near a midpoint both differences are exact),
# and every midpoint is a multiple of 1/2: so the index depends only on floor(2v). The
# tables hold, for k = floor(2v) in [-232, 203] (stored at k mod 436), the index and value.
_LUT_LO, _LUT_HI = -232, 203
_LUT_INDEX = np.empty(_LUT_HI - _LUT_LO + 1, dtype=np.uint8)
for _k in range(_LUT_LO, _LUT_HI + 1):
    _LUT_INDEX[_k % _LUT_INDEX.size] = sum(
        int(a) + int(b) <= _k  # 2 * midpoint <= k, in integers
        for a, b in zip(KVALUES_IQ4NL[:-1], KVALUES_IQ4NL[1:], strict=True))
_LUT_VALUE = _KV[_LUT_INDEX]


def _lut_keys(v2: F32Array) -> npt.NDArray[np.intp]:
    """floor(v2) clipped to the table's range, as (possibly negative) table indices, NaN
    to the top one (the C binary search ends at index 15); ``v2`` (2v) is overwritten."""
    np.floor(v2, out=v2)
    np.fmin(v2, F32(_LUT_HI), out=v2)  # fmin: NaN -> _LUT_HI
    np.maximum(v2, F32(_LUT_LO), out=v2)
    return v2.astype(np.intp)


def best_index(v: F32Array) -> U8Array:
    """``best_index_int8(16, kvalues_iq4nl, v)`` elementwise: the index of the nearest
    table value, the larger one on a tie (NaN -> 15, as the C binary search ends)."""
    return np.take(_LUT_INDEX, _lut_keys(v * F32(2.0)))


def _weights(xc: F32Array, qw: F32Array | None, sigma2: F32Array | None,
             group: int) -> F32Array:
    """x^2, or qw * sqrt(sigma2 + x^2) with sigma2 per block repeated over its columns."""
    if qw is None or sigma2 is None:
        return xc * xc
    w: F32Array = np.sqrt(np.repeat(sigma2, group) + xc * xc)
    w *= as_columns(qw, 32)
    return w


def _block_sigma2(x: F32Array) -> F32Array:
    """sigma2 = sum(x^2) * (2 / block_elems), the sum in order (x: (n, block_elems))."""
    total: F32Array = seq_sum(as_columns(x * x, x.shape[1]))
    total *= F32(2.0 / x.shape[1])
    return total


def _search_scales(xc: F32Array, w: F32Array) -> F32Array:
    """The per-32-value scale search of quantize_row_iq4_nl_impl; xc, w (32, m).
    Returns d (m,), 0 for all-zero groups."""
    vmax = signed_absmax(xc, axis=0)
    zero = ~(np.abs(vmax) >= GROUP_MAX_EPS)
    vmax[zero] = 1
    prod = np.empty_like(xc)

    def sums(iscale: F32Array) -> tuple[F32Array, F32Array]:
        # x * (2 iscale) == 2 fl(x * iscale) exactly here: iscale is finite and at most
        # 127e15, and where the product underflows the index is 8 either way
        q = np.take(_LUT_VALUE, _lut_keys(np.multiply(xc, F32(2.0) * iscale, out=prod)))
        np.multiply(w, q, out=prod)  # C: w*q*x == (w*q)*x
        q *= prod
        sumq2 = seq_sum(q)
        return seq_sum(np.multiply(prod, xc, out=prod)), sumq2

    sumqx, sumq2 = sums(F32(1.0) / (-vmax / _KV[0]))
    d = np.where(sumq2 > 0, sumqx / sumq2, F32(0.0))
    best = d * sumqx
    for itry in range(-_NTRY, _NTRY + 1):
        sumqx, sumq2 = sums(F32(itry + int(KVALUES_IQ4NL[0])) / vmax)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        if better.any():
            d = np.where(better, sumqx / sumq2, d)
            best = np.where(better, d * sumqx, best)
    d[zero] = 0
    return d


def _inverse(d: F32Array) -> F32Array:
    """C's ``d ? 1/d : 0``."""
    nonzero = d != 0
    inv: F32Array = np.where(nonzero, F32(1.0) / np.where(nonzero, d, F32(1.0)), F32(0.0))
    return inv


#   IQ4_NL: 18 bytes per 32 values
#   +--------+----------------------------------+
#   | d  f16 | qs: u8[16]                       |   byte j: low nibble = q[j],
#   +--------+----------------------------------+           high nibble = q[j+16]
#    0      2                                  18   value = d * kvalues_iq4nl[q]
class IQ4_NL(BlockFormat):
    """4-bit non-linear, one f16 scale per 32 values."""

    qtype = GGMLQuantizationType.IQ4_NL
    chunk_blocks = weighted_chunk_blocks = 2048

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        xc = as_columns(x, 32)
        w = _weights(xc, qw, None if qw is None else _block_sigma2(x), 1)
        d = _search_scales(xc, w)
        levels = best_index(xc * _inverse(d))  # from the float32 d, not the stored f16
        out = np.empty((x.shape[0], 18), dtype=np.uint8)
        out[:, 0:2] = fp16_bytes(d)
        out[:, 2:18] = pack_nibbles(np.ascontiguousarray(levels.T))
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = fp16_to_f32(q[:, 0:2])
        y: F32Array = d[:, None] * _KV[unpack_nibbles(q[:, 2:18])]
        return y


#   IQ4_XS: 136 bytes per 256 values (8 sub-blocks g of 32)
#   +--------+----------------+-------------------+------------------------------------+
#   | d  f16 | scales_h: u16  | scales_l: u8[4]   | qs: u8[128] = 8 x 16 bytes          |
#   +--------+----------------+-------------------+------------------------------------+
#    0      2                4                   8                                  136
#   ls[g] = (scales_l[g // 2] >> 4*(g % 2)) & 15 | ((scales_h >> 2g) & 3) << 4
#   qs[16g:16g+16]: nibbles as IQ4_NL for elements 32g..32g+31
#   value[e] = d * (ls[e // 32] - 32) * kvalues_iq4nl[q[e]]
class IQ4_XS(BlockFormat):
    """4-bit non-linear with 6-bit sub-block scales under one f16 super-block scale."""

    qtype = GGMLQuantizationType.IQ4_XS
    chunk_blocks = weighted_chunk_blocks = 256

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        n = x.shape[0]
        xc = as_columns(x, 32)
        w = _weights(xc, qw, None if qw is None else _block_sigma2(x), 8)
        scales = _search_scales(xc, w).reshape(n, 8)
        max_scale = signed_absmax(scales, 1)  # the first largest |scale|
        max_scale = np.where(np.abs(max_scale) > 0, max_scale, F32(0.0))
        d = -max_scale / F32(32.0)
        ls = np.clip(nearest_int(_inverse(d)[:, None] * scales), -32, 31)
        dl = d[:, None] * ls.astype(np.float32)
        levels = best_index(xc * _inverse(dl.reshape(-1)))
        ls += 32
        out = np.empty((n, 136), dtype=np.uint8)
        out[:, 0:2] = fp16_bytes(d)
        high = ls >> 4
        scales_h = high[:, 0]
        for g in range(1, 8):
            scales_h = scales_h | (high[:, g] << (2 * g))
        out[:, 2:4] = scales_h.astype("<u2").view(np.uint8).reshape(n, 2)
        out[:, 4:8] = (ls[:, 0::2] & 15) | ((ls[:, 1::2] & 15) << 4)
        q = from_columns(levels, 32)  # (8n, 32)
        out[:, 8:136] = pack_nibbles(q).reshape(n, 128)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        n = q.shape[0]
        d = fp16_to_f32(q[:, 0:2])
        scales_h = q[:, 2:4].copy().view("<u2")[:, 0].astype(np.int32)
        low = np.stack([q[:, 4:8] & 15, q[:, 4:8] >> 4], axis=2).reshape(n, 8)
        ls = low.astype(np.int32) | (((scales_h[:, None] >> (2 * np.arange(8))) & 3) << 4)
        dl = d[:, None] * (ls - 32).astype(np.float32)
        values = _KV[unpack_nibbles(q[:, 8:136].reshape(n * 8, 16))].reshape(n, 8, 32)
        return (dl[:, :, None] * values).reshape(n, 256)  # type: ignore[no-any-return]
