"""IQ2_XXS, IQ2_XS and IQ2_S: 2-bit points on an 8-wide lattice grid, as ggml's
``quantize_row_iq2_*_impl``.

Values are taken in groups of 8 (a point: 8 magnitudes, coordinates ``2l+1`` with l in 0..2)
plus 8 signs. Each sub-block (32 values for IQ2_XXS, 16 for IQ2_XS/IQ2_S) tries a range of
scales, projects each point onto the grid (off-grid points take their best neighbour) and
keeps the scale with the largest ``sumqx^2/sumq2`` (``iq_scale.fit_scale``). IQ2_XXS and
IQ2_XS store 7 signs per point and force an even count of negatives (the 8th sign is the
parity); they need an importance matrix. Weights: ``imatrix * sqrt(sigma2 + x^2)`` (sigma2 =
mean x^2 of the block, doubled for IQ2_S); IQ2_S without one: ``sigma2/4 + x^2``.

IQ2_XXS block, 256 values, 66 bytes::

    d   f16        @0   fp16(max_scale / 31)
    qs  u32[16]    @2   sub-block ib (32 values): qs[2ib] = 4 x 8-bit iq2xxs_grid indices,
                        qs[2ib+1] = 4 x 7-bit ksigns_iq2xs indices | 4-bit scale s << 28
    value = d * (0.5 + s) * 0.25 * grid * sign

IQ2_XS block, 256 values, 74 bytes::

    d      f16      @0    fp16(max_scale / 31)
    qs     u16[32]  @2    point p: 9-bit iq2xs_grid index | 7-bit sign index << 9
    scales u8[8]    @66   4-bit scale per 16 values (low nibble first)
    value = d * (0.5 + s) * 0.25 * grid * sign

IQ2_S block, 256 values, 82 bytes::

    d      f16      @0    fp16(max_scale / 31 * 0.9875)
    qs     u8[32]   @2    low 8 bits of the iq2s_grid index of point p
    signs  u8[32]   @34   8 sign bits of point p
    qh     u8[8]    @66   bits 2(p%4)..2(p%4)+1 of qh[p/4]: index bits 8-9
    scales u8[8]    @74   as IQ2_XS
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType
from gguf.constants import QK_K

from modelkit.quant.kernels import iq_scale
from modelkit.quant.kernels import iq_search as srch
from modelkit.quant.kernels.common import F32, F32Array, U8Array
from modelkit.quant.kernels.floats import fp16_bytes as _fp16_bytes
from modelkit.quant.kernels.floats import fp16_to_f32 as _fp16_to_f32
from modelkit.quant.kernels.iq_tables import fixed_tables, search_tables
from modelkit.quant.kernels.searches import fit_unsigned as _fit_unsigned

# neighbour lists of ~27 (IQ2_XXS) and ~58 (IQ2_XS) candidates: 4096 runs a call measured
# 4-9% faster than 8192 (with the requantizer's malloc settings); the shorter lists of the
# other grids keep 8192
_XXS = iq_scale.ScaleSearch(kmaxq=3, steps=range(-6, 7), step=0.1, start_on_grid=True,
                            refine="always", runs_per_call=4096)
_XS = iq_scale.ScaleSearch(kmaxq=3, steps=range(-9, 10), step=0.1, start_on_grid=True,
                           refine="off-grid", runs_per_call=4096, short_run=1)


def _weights(x: F32Array, qw: F32Array | None, name: str, sub: int, factor: int
             ) -> tuple[F32Array, F32Array]:
    xt, qt, sigma2 = srch.prepare(x, qw, sub, factor)
    if qt is None:
        if name != "IQ2_S":
            raise ValueError(f"{name} needs an importance matrix")
        w: F32Array = F32(0.25) * sigma2 + xt * xt
    else:
        w = qt * np.sqrt(sigma2 + xt * xt)
    return xt, w


def _nibbles(ls: npt.NDArray[np.int64]) -> U8Array:
    """(n_sub,) 4-bit scales of 16-value sub-blocks -> (blocks, 8) bytes, low nibble first."""
    pair = ls.reshape(-1, 8, 2)
    out: U8Array = (pair[..., 0] | (pair[..., 1] << 4)).astype(np.uint8)
    return out


def _encode_xxs(x: F32Array, qw: F32Array | None) -> U8Array:
    t = search_tables("IQ2_XXS")
    xt, w = _weights(x, qw, "IQ2_XXS", 32, 1)
    n = xt.shape[1]
    xval, signs = srch.even_signs(xt, w)
    scale0, _ = _fit_unsigned(xval, w, 4)  # make_qp_quants(32, kMaxQ+1, ...)
    eff_max = scale0 * F32(3)
    active = ~(xval.max(axis=0) < F32(1e-15)) & ~(eff_max <= 0)
    levels, scales = iq_scale.fit_scale(t, xval, w, eff_max, scale0, active, _XXS)
    gidx = t.kmap[srch.pack_points(levels, t)].astype(np.uint32)  # (4, n)
    signs = np.where(scales < 0, ~signs & np.uint8(127), signs).astype(np.uint32)
    signs[:, ~active] = 0
    d, ls, zero = srch.super_scales(np.abs(scales), 8)
    words = np.empty((n, 2), dtype="<u4")
    words[:, 0] = gidx[0] | gidx[1] << 8 | gidx[2] << 16 | gidx[3] << 24
    words[:, 1] = (signs[0] | signs[1] << 7 | signs[2] << 14 | signs[3] << 21
                   | ls.reshape(-1).astype(np.uint32) << np.uint32(28))
    nb = n // 8
    out = srch.new_blocks("IQ2_XXS", nb)
    out[:, :2] = _fp16_bytes(d)
    out[:, 2:] = words.view(np.uint8).reshape(nb, 64)
    out[zero] = 0
    return out


def _fit16(name: str, xval: F32Array, w: F32Array, eps: float
           ) -> tuple[npt.NDArray[np.int64], F32Array, npt.NDArray[np.bool_]]:
    """IQ2_XS/IQ2_S search of 16-value sub-blocks: (grid positions (2, n), scales, active)."""
    t = search_tables(name)
    mx = xval.max(axis=0)
    active = ~(mx < F32(eps))
    levels, scales = iq_scale.fit_scale(t, xval, w, mx, mx / F32(5), active, _XS)
    return t.kmap64.take(srch.pack_points(levels, t)), scales, active


def _encode_xs(x: F32Array, qw: F32Array | None) -> U8Array:
    xt, w = _weights(x, qw, "IQ2_XS", 16, 1)
    n = xt.shape[1]
    xval, signs = srch.even_signs(xt, w)
    gidx, scales, active = _fit16("IQ2_XS", xval, w, 1e-15)
    signs = np.where(scales < 0, ~signs & np.uint8(127), signs).astype(np.int64)
    q2 = np.where(active, gidx | (signs << 9), 0)  # (2, n)
    d, ls, zero = srch.super_scales(np.abs(scales), 16)
    nb = n // 16
    out = srch.new_blocks("IQ2_XS", nb)
    out[:, :2] = _fp16_bytes(d)
    out[:, 2:66] = np.ascontiguousarray(q2.T, dtype="<u2").view(np.uint8).reshape(nb, 64)
    out[:, 66:] = _nibbles(ls)
    out[zero] = 0
    return out


def _encode_s(x: F32Array, qw: F32Array | None) -> U8Array:
    xt, w = _weights(x, qw, "IQ2_S", 16, 2)
    n = xt.shape[1]
    neg = ~(xt >= 0)
    xval = np.where(neg, -xt, xt)
    gidx, scales, active = _fit16("IQ2_S", xval, w, 1e-8)
    neg = np.where(scales < 0, ~neg, neg)
    signs = np.where(active, srch.sign_bytes(neg.reshape(2, 8, n)), 0)
    gidx = np.where(active, gidx, 0)
    d, ls, zero = srch.super_scales(np.abs(scales), 16)
    nb = n // 16
    hi = (gidx.T.reshape(nb, 8, 4) >> 8) << (2 * np.arange(4))
    out = srch.new_blocks("IQ2_S", nb)
    out[:, :2] = _fp16_bytes(d * F32(0.9875))
    out[:, 2:34] = (gidx.T.reshape(nb, 32) & 255).astype(np.uint8)
    out[:, 34:66] = signs.T.reshape(nb, 32).astype(np.uint8)
    out[:, 66:74] = np.bitwise_or.reduce(hi, axis=2).astype(np.uint8)
    out[:, 74:] = _nibbles(ls)
    out[zero, :2] = 0  # llama.cpp skips only the scales: the points stay written
    out[zero, 74:] = 0
    return out


def _sign_bits(signs: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """(..., points) sign bytes -> (..., points*8) booleans, bit j = element j."""
    bits = (signs[..., None].astype(np.int64) >> np.arange(8)) & 1
    return bits.reshape(*signs.shape[:-1], -1).astype(bool)


def _scales16(d: F32Array, sc: U8Array) -> F32Array:
    """``d * (0.5 + s) * 0.25`` per 16-value sub-block, from the 8 scale bytes."""
    ls = np.stack([sc & 15, sc >> 4], axis=2).reshape(-1, 16).astype(np.float32)
    out: F32Array = (d[:, None] * (F32(0.5) + ls)) * F32(0.25)
    return out


def _decode_xxs(qb: U8Array) -> F32Array:
    tabs = fixed_tables()
    d = _fp16_to_f32(qb[:, :2])
    words = np.ascontiguousarray(qb[:, 2:]).view("<u4").reshape(-1, 8, 2).astype(np.int64)
    db = (d[:, None] * (F32(0.5) + (words[..., 1] >> 28).astype(np.float32))) * F32(0.25)
    idx = (words[..., :1] >> (8 * np.arange(4))) & 255  # (nb, 8, 4)
    signs = tabs["ksigns_iq2xs"][(words[..., 1:] >> (7 * np.arange(4))) & 127]
    vals = srch.grid_bytes(tabs["iq2xxs_grid"], idx)  # (nb, 8, 32)
    y = srch.signed_values(db[..., None] * vals, _sign_bits(signs))
    return y.reshape(-1, QK_K)


def _decode_xs(qb: U8Array) -> F32Array:
    tabs = fixed_tables()
    db = _scales16(_fp16_to_f32(qb[:, :2]), qb[:, 66:])
    qs = np.ascontiguousarray(qb[:, 2:66]).view("<u2").reshape(-1, 16, 2).astype(np.int64)
    vals = srch.grid_bytes(tabs["iq2xs_grid"], qs & 511)  # (nb, 16, 16)
    signs = tabs["ksigns_iq2xs"][qs >> 9]
    y = srch.signed_values(db[..., None] * vals, _sign_bits(signs))
    return y.reshape(-1, QK_K)


def _decode_s(qb: U8Array) -> F32Array:
    tabs = fixed_tables()
    db = _scales16(_fp16_to_f32(qb[:, :2]), qb[:, 74:])
    hi = (qb[:, 66:74, None].astype(np.int64) >> (2 * np.arange(4))) & 3  # (nb, 8, 4)
    idx = (qb[:, 2:34].reshape(-1, 8, 4).astype(np.int64) | (hi << 8)).reshape(-1, 16, 2)
    vals = srch.grid_bytes(tabs["iq2s_grid"], idx)
    signs = qb[:, 34:66].reshape(-1, 16, 2)
    y = srch.signed_values(db[..., None] * vals, _sign_bits(signs))
    return y.reshape(-1, QK_K)


class IQ2_XXS(srch.GridFormat):
    qtype = GGMLQuantizationType.IQ2_XXS
    requires_imatrix = True
    codec = (_encode_xxs, _decode_xxs)


class IQ2_XS(srch.GridFormat):
    qtype = GGMLQuantizationType.IQ2_XS
    requires_imatrix = True
    codec = (_encode_xs, _decode_xs)


class IQ2_S(srch.GridFormat):
    qtype = GGMLQuantizationType.IQ2_S
    codec = (_encode_s, _decode_s)
