"""K-quants with 32-value sub-blocks and Q6_K: Q4_K, Q5_K, Q6_K."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from gguf import GGMLQuantizationType

from modelkit.quant.kernels.block import BlockFormat
from modelkit.quant.kernels.common import (
    F32,
    GROUP_MAX_EPS,
    F32Array,
    I32Array,
    U8Array,
    as_columns,
    final_levels,
    from_columns,
    nearest_int,
    seq_sum,
    signed_absmax,
)
from modelkit.quant.kernels.floats import fp16_bytes, fp16_to_f32
from modelkit.quant.kernels.searches import fit_q3, fit_scale_min, fit_symmetric, fit_unsigned


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
    d = fp16_to_f32(q[:, 0:2])
    dmin = fp16_to_f32(q[:, 2:4])
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
    # the searches run faster on wide (32, 8192) columns than on cache-sized ones
    chunk_blocks = 1024
    weighted_chunk_blocks = 1024

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        header, levels = self._quantize(x, qw)
        out = np.empty((x.shape[0], self.block_bytes), dtype=np.uint8)
        out[:, 0:16] = header
        self._pack_levels(levels, out)
        return out

    def _pack_levels(self, levels: U8Array, out: U8Array) -> None:
        """Write the (n, 256) levels into the blocks ``out`` after their 16-byte header."""
        raise NotImplementedError

    def _quantize(self, x: F32Array, qw: F32Array | None) -> tuple[U8Array, U8Array]:
        """-> (the 16 header bytes d, dmin, scales (n, 16), levels (n, 256) uint8)."""
        n = x.shape[0]
        xc = as_columns(x, 32)
        if qw is None:  # quantize_row_q4_K_ref / q5_K_ref
            av_x = np.sqrt(seq_sum(xc * xc) / F32(32.0))
            w = np.abs(xc)
            w += av_x
            scales, mins, levels = fit_scale_min(xc, w, self.nmax, *self.ref_search)
            scales = scales.reshape(n, 8)
            mins = mins.reshape(n, 8)
            # C: max = 0; if (v > max) max = v; -- never -0.0, NaN skipped
            max_scale = np.fmax.reduce(scales, axis=1, initial=F32(0.0)) + F32(0.0)
            max_min = np.fmax.reduce(mins, axis=1, initial=F32(0.0)) + F32(0.0)
            inv_scale = np.where(max_scale > 0, F32(63.0) / max_scale, F32(0.0))
            inv_min = np.where(max_min > 0, F32(63.0) / max_min, F32(0.0))
            ls = np.minimum(nearest_int(inv_scale[:, None] * scales) & 0xFF, 63)
            lm = np.minimum(nearest_int(inv_min[:, None] * mins) & 0xFF, 63)
            d = max_scale / F32(63.0)
            dmin = max_min / F32(63.0)
        else:  # quantize_row_q4_K_impl / q5_K_impl
            sigma2 = (F32(2.0) * seq_sum(as_columns(x * x, 256))) / F32(256.0)
            w = np.sqrt(np.repeat(sigma2, 8) + xc * xc)
            w *= as_columns(qw, 32)
            scales, mins, levels = fit_scale_min(xc, w, self.nmax, -0.9, 0.05, 36)
            # make_qp_quants of the scales and of the mins, side by side in one call
            sw = seq_sum(w).reshape(n, 8).T
            both = np.concatenate([scales.reshape(n, 8).T, mins.reshape(n, 8).T], axis=1)
            dd, lsm = fit_unsigned(both, np.ascontiguousarray(np.tile(sw, 2)), 63)
            d, dmin = dd[:n], dd[n:]
            ls, lm = lsm[:, :n].T, lsm[:, n:].T
            if self.clamp_impl_levels:
                ls = np.minimum(ls, 63)
                lm = np.minimum(lm, 63)
        header = np.empty((n, 16), dtype=np.uint8)
        header[:, 0:2] = fp16_bytes(d)
        header[:, 2:4] = fp16_bytes(dmin)
        header[:, 4:16] = _pack_scale_min_k4(ls.astype(np.uint8), lm.astype(np.uint8))
        # final levels from the stored (rounded) scales
        sc, mn = _unpack_scale_min_k4(header[:, 4:16])
        d_sub = fp16_to_f32(header[:, 0:2])[:, None] * sc.astype(np.float32)
        dm_sub = fp16_to_f32(header[:, 2:4])[:, None] * mn.astype(np.float32)
        levels = final_levels(xc, dm_sub.reshape(-1), d_sub.reshape(-1), 0, self.nmax, levels)
        return header, from_columns(levels, 256)


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
    nmax, ref_search, clamp_impl_levels = 15, (-1.0, 0.1, 20), False

    def _pack_levels(self, levels: U8Array, out: U8Array) -> None:
        q = levels.reshape(-1, 4, 2, 32)
        out[:, 16:144] = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)

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
    nmax, ref_search, clamp_impl_levels = 31, (-0.5, 0.1, 15), True

    def _pack_levels(self, levels: U8Array, out: U8Array) -> None:
        n = levels.shape[0]
        q = levels.reshape(n, 8, 32)
        qh = np.zeros((n, 32), dtype=np.uint8)
        for s in range(8):
            qh |= (q[:, s] >> 4) << s
        low = (q & 0x0F).reshape(n, 4, 2, 32)
        out[:, 16:48] = qh
        out[:, 48:176] = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(n, 128)

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
    chunk_blocks = weighted_chunk_blocks = 512  # (16, 8192) columns

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        n = x.shape[0]
        xc = as_columns(x, 16)
        # quantize_row_q6_K_ref weighs by x^2, the _impl by the imatrix alone
        w = xc * xc if qw is None else as_columns(qw, 16)
        scales, levels = fit_symmetric(xc, w, 32)
        scales = scales.reshape(n, 16)
        max_scale = signed_absmax(scales, 1)  # the first largest |scale|
        zero = ~(np.abs(max_scale) >= GROUP_MAX_EPS)
        max_scale[zero] = 1
        iscale = F32(-128.0) / max_scale
        d16 = fp16_bytes(F32(1.0) / iscale)
        sc = np.minimum(nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
        d_sub = fp16_to_f32(d16)[:, None] * sc.astype(np.float32)
        levels = final_levels(xc, None, d_sub.reshape(-1), -32, 31, levels - F32(32.0))
        q = (from_columns(levels + F32(32.0), 256)).reshape(n, 2, 4, 32)
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
        d = fp16_to_f32(q[:, 208:210])
        low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # quarters 0..3 of each half
        shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]
        levels = low | (((qh >> shifts) & 3) << 4)
        signed = (levels.astype(np.int8) - np.int8(32)).astype(np.float32).reshape(n, 16, 16)
        ds = d[:, None] * sc
        return (ds[:, :, None] * signed).reshape(n, 256)  # type: ignore[no-any-return]



# ---------------------------------------------------------------- Q2_K / Q3_K (16-value sub-blocks)


def _pack_2bit(levels: U8Array) -> U8Array:
    """(n, 256) 2-bit levels -> qs (n, 64): element 128h + 32j + l is bits 2j..2j+1 of
    qs[32h + l]."""
    q = levels.reshape(-1, 2, 4, 32)
    packed = q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)
    return packed.reshape(-1, 64).astype(np.uint8)


def _unpack_2bit(qs: U8Array) -> U8Array:
    """qs (n, 64) -> levels (n, 16, 16), one row per 16-value sub-block."""
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]
    levels: U8Array = (qs.reshape(-1, 2, 1, 32) >> shifts) & np.uint8(3)
    return levels.reshape(-1, 16, 16)


def _k16_weights(x: F32Array, xc: F32Array, qw: F32Array, sigma2_factor: float) -> F32Array:
    """The _impl weights qw * sqrt(sigma2 + x^2) per 16-value column, with sigma2 =
    sigma2_factor * sum(x^2 over the 256 values) / 256, summed in order."""
    sigma2 = (F32(sigma2_factor) * seq_sum(as_columns(x * x, 256))) / F32(256.0)
    w: F32Array = np.sqrt(np.repeat(sigma2, 16) + xc * xc)
    w *= as_columns(qw, 16)
    return w


#   Q2_K: 84 bytes per 256 values (16 sub-blocks s of 16)
#   +-----------------+-------------------------------+--------+-----------+
#   | scales: u8[16]  | qs: u8[64] (2-bit q)          | d  f16 | dmin f16  |
#   +-----------------+-------------------------------+--------+-----------+
#    0               16                              80       82          84
#   scales[s]: low nibble = sc, high nibble = mn of sub-block s
#   q[128h + 32j + l] = (qs[32h + l] >> 2j) & 3          (h < 2, j < 4, l < 32)
#   value[e] = d * sc[e // 16] * q[e] - dmin * mn[e // 16]
class Q2_K(BlockFormat):
    """2-bit k-quant: make_qkx2 (absolute error) per 16 values (ref), or make_qkx3 and
    make_qp for the 4-bit scales and mins (imatrix)."""

    qtype = GGMLQuantizationType.Q2_K
    chunk_blocks = weighted_chunk_blocks = 512  # (16, 8192) columns

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        n = x.shape[0]
        xc = as_columns(x, 16)
        if qw is None:  # quantize_row_q2_K_ref
            scales, mins, levels = fit_scale_min(xc, np.abs(xc), 3, -0.5, 0.1, 15, mad=True)
            d, ls = _max_scaled(scales.reshape(n, 16), 15)
            dmin, lm = _max_scaled(mins.reshape(n, 16), 15)
        else:  # quantize_row_q2_K_impl
            w = _k16_weights(x, xc, qw, 1.0)
            scales, mins, levels = fit_scale_min(xc, w, 3, -0.9, 0.05, 36)
            sw = seq_sum(w).reshape(n, 16).T
            both = np.concatenate([scales.reshape(n, 16).T, mins.reshape(n, 16).T], axis=1)
            dd, lsm = fit_unsigned(both, np.ascontiguousarray(np.tile(sw, 2)), 15)
            d, dmin = dd[:n], dd[n:]
            ls, lm = lsm[:, :n].T.astype(np.int32), lsm[:, n:].T.astype(np.int32)
        out = np.empty((n, 84), dtype=np.uint8)
        out[:, 0:16] = (ls | (lm << 4)) & 0xFF
        out[:, 80:82] = fp16_bytes(d)
        out[:, 82:84] = fp16_bytes(dmin)
        # final levels from the stored (rounded) scales
        d_sub = fp16_to_f32(out[:, 80:82])[:, None] * (out[:, 0:16] & 0x0F).astype(np.float32)
        dm_sub = fp16_to_f32(out[:, 82:84])[:, None] * (out[:, 0:16] >> 4).astype(np.float32)
        levels = final_levels(xc, dm_sub.reshape(-1), d_sub.reshape(-1), 0, 3, levels)
        out[:, 16:80] = _pack_2bit(from_columns(levels, 256))
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = fp16_to_f32(q[:, 80:82])
        dmin = fp16_to_f32(q[:, 82:84])
        dl = d[:, None] * (q[:, 0:16] & 0x0F).astype(np.float32)
        ml = dmin[:, None] * (q[:, 0:16] >> 4).astype(np.float32)
        y = dl[:, :, None] * _unpack_2bit(q[:, 16:80]).astype(np.float32)
        y -= ml[:, :, None]
        return y.reshape(-1, 256)


def _max_scaled(values: F32Array, nmax: int) -> tuple[F32Array, np.ndarray]:
    """Q2_K's ref scale coding of (n, 16) non-negative values: with max = the largest
    (C: ``if (v > max) max = v`` from 0), levels nearest_int(nmax/max * v) (int32, unclamped
    as in C) and the super-block scale max/nmax; both 0 where max is not > 0."""
    vmax = np.fmax.reduce(values, axis=1, initial=F32(0.0)) + F32(0.0)
    some = vmax > 0
    inv = np.where(some, F32(nmax) / vmax, F32(0.0))
    levels = np.where(some[:, None], nearest_int(inv[:, None] * values), 0)
    return np.where(some, vmax / F32(nmax), F32(0.0)), levels


def _pack_scales_q3(ls: np.ndarray) -> U8Array:
    """16 6-bit scale levels (n, 16) -> Q3_K's 12 ``scales`` bytes: the low nibbles of
    s and s + 8 share byte s (< 8), the high 2 bits of s are bits 2*(s//4) of byte 8 + s%4."""
    out = np.empty((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:8] = (ls[:, 0:8] & 0x0F) | ((ls[:, 8:16] & 0x0F) << 4)
    hi = (ls >> 4).reshape(-1, 4, 4)
    out[:, 8:12] = hi[:, 0] | (hi[:, 1] << 2) | (hi[:, 2] << 4) | (hi[:, 3] << 6)
    return out


def _unpack_scales_q3(b: U8Array) -> I32Array:
    """Q3_K's 12 ``scales`` bytes -> the 16 signed sub-block scales sc - 32, int32 (n, 16)."""
    low = np.concatenate([b[:, 0:8] & 0x0F, b[:, 0:8] >> 4], axis=1)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)[None, :, None]
    hi = ((b[:, None, 8:12] >> shifts) & 3).reshape(-1, 16)
    signed: I32Array = (low | (hi << 4)).astype(np.int32) - 32
    return signed


#   Q3_K: 110 bytes per 256 values (16 sub-blocks s of 16)
#   +-------------------+-------------------------+------------------+--------+
#   | hmask: u8[32]     | qs: u8[64] (as Q2_K)    | scales: u8[12]   | d  f16 |
#   +-------------------+-------------------------+------------------+--------+
#    0                 32                        96                108      110
#   sc[s] = (scales[s % 8] >> 4*(s // 8)) & 15 | ((scales[8 + s % 4] >> 2*(s // 4)) & 3) << 4
#   element e = 32b + m (b < 8): low 2 bits as Q2_K, third bit = bit b of hmask[m]
#   q[e] = low2 - 4 if that bit is 0 else low2;   value[e] = d * (sc[e // 16] - 32) * q[e]
class Q3_K(BlockFormat):
    """3-bit k-quant: make_q3_quants per 16 values (ref), or make_qx_quants with the
    imatrix weights and again for the 6-bit scales (imatrix)."""

    qtype = GGMLQuantizationType.Q3_K
    chunk_blocks, weighted_chunk_blocks = 1024, 512  # (16, 16384) and (16, 8192) columns

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        n = x.shape[0]
        xc = as_columns(x, 16)
        if qw is None:  # quantize_row_q3_K_ref
            scales, levels = fit_q3(xc, 4)
            sc = scales.reshape(n, 16)
            max_scale = signed_absmax(sc, 1)  # the first largest |scale|
            some = max_scale != 0
            iscale = np.where(some, F32(-32.0) / max_scale, F32(1.0))
            raw = nearest_int(iscale[:, None] * sc)
            raw = ((raw + 128) & 0xFF) - 128  # C keeps it in an int8_t
            ls = np.where(some[:, None], np.clip(raw, -32, 31) + 32, 0)
            d = np.where(some, F32(1.0) / iscale, F32(0.0))
        else:  # quantize_row_q3_K_impl
            w = _k16_weights(x, xc, qw, 2.0)
            sw = np.ascontiguousarray(seq_sum(w).reshape(n, 16).T)
            scales, levels = fit_symmetric(xc, w, 4)
            d, lsf = fit_symmetric(np.ascontiguousarray(scales.reshape(n, 16).T), sw, 32)
            ls = lsf.T.astype(np.int32)
        out = np.empty((n, 110), dtype=np.uint8)
        out[:, 96:108] = _pack_scales_q3(ls)
        out[:, 108:110] = fp16_bytes(d)
        sc = _unpack_scales_q3(out[:, 96:108]).astype(np.float32)
        d_sub = fp16_to_f32(out[:, 108:110])[:, None] * sc
        levels = final_levels(xc, None, d_sub.reshape(-1), -4, 3, levels - F32(4.0))
        q = from_columns(levels + F32(4.0), 256)
        high = (q >> 2).reshape(n, 8, 32)
        hmask = high[:, 0]
        for b in range(1, 8):
            hmask = hmask | (high[:, b] << b)
        out[:, 0:32] = hmask
        out[:, 32:96] = _pack_2bit(q & np.uint8(3))
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = fp16_to_f32(q[:, 108:110])
        dl = d[:, None] * _unpack_scales_q3(q[:, 96:108]).astype(np.float32)
        shifts = np.arange(8, dtype=np.uint8)[None, :, None]
        missing = 1 - ((q[:, None, 0:32] >> shifts) & 1)  # (n, 8, 32): 1 where q -= 4
        levels = _unpack_2bit(q[:, 32:96]).astype(np.int8)
        levels -= (missing.reshape(-1, 16, 16) << 2).astype(np.int8)
        y = dl[:, :, None] * levels.astype(np.float32)
        return y.reshape(-1, 256)
