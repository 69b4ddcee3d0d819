"""IQ3_XXS and IQ3_S: 3-bit points on a 4-wide lattice grid, as ggml's ``quantize_row_iq3_*_impl``.

Each 32-value sub-block is split in 8 points of 4 magnitudes; signs are stored apart. The
quantizer tries a range of scales (``is`` in -15..15 for IQ3_XXS, -9..9 for IQ3_S), rounds
each point to ``l = nearest_int(0.5*(x/scale - 1))`` (levels 0..7, coordinate ``2l+1``),
replaces off-grid points by their best grid neighbour, keeps the scale with the largest
``sumqx^2/sumq2``, then re-projects the off-grid points at that scale. Weights are ``x^2``,
or ``imatrix * sqrt(sigma2 + x^2)`` with an importance matrix.

IQ3_XXS block, 256 values, 98 bytes::

    d   f16      @0    fp16(max_scale / 31 * 1.0125)
    qs  u8[64]   @2    iq3xxs_grid index of point k of sub-block ib at qs[8*ib + k]
    ss  u32[8]   @66   sub-block ib: 4 x 7-bit sign indices (ksigns_iq2xs, groups of 8; the
                       8th sign is the parity, forced even by flipping the least important
                       value) | 4-bit scale s << 28
    value = d * (0.5 + s) * 0.5 * grid * sign

IQ3_S block, 256 values, 110 bytes::

    d      f16     @0    fp16(max_scale / 31 * 1.033)
    qs     u8[64]  @2    low 8 bits of the iq3s_grid index of each point (see below)
    qh     u8[8]   @66   bit k of qh[ib] = 9th index bit of point k of sub-block ib
    signs  u8[32]  @74   one sign bit per value, 8 values a byte
    scales u8[4]   @106  4-bit scale per sub-block, two a byte (low nibble first)
    value = d * (1 + 2s) * grid * sign

  An all-zero sub-block writes nothing and does not advance the qs/signs write position
  (llama.cpp's loop skips the pointer increments), so the next sub-blocks' qs and signs
  move up; qh and scales are indexed by sub-block and do not move.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType
from gguf.constants import QK_K

from modelkit.quant.kernels import iq_scale
from modelkit.quant.kernels import iq_search as srch
from modelkit.quant.kernels.common import F32, BoolArray, F32Array, U8Array, hits_2d
from modelkit.quant.kernels.floats import fp16_bytes as _fp16_bytes
from modelkit.quant.kernels.floats import fp16_to_f32 as _fp16_to_f32
from modelkit.quant.kernels.iq_tables import fixed_tables, search_tables

SUB = 32
_XXS = iq_scale.ScaleSearch(kmaxq=8, steps=range(-15, 16), step=0.2, start_on_grid=True,
                            refine="off-grid")
_S = iq_scale.ScaleSearch(kmaxq=8, steps=range(-9, 10), step=0.2, start_on_grid=False,
                          refine="all")


def _prepare(x: F32Array, qw: F32Array | None) -> tuple[F32Array, F32Array]:
    """Blocks -> (values (32, n_sub), weights: imatrix * sqrt(sigma2 + x^2) or x^2)."""
    xt, qt, sigma2 = srch.prepare(x, qw, SUB, 2)
    w: F32Array = xt * xt if qt is None else qt * np.sqrt(sigma2 + xt * xt)
    return xt, w


def _search(name: str, xval: F32Array, w: F32Array, active: BoolArray,
            how: iq_scale.ScaleSearch) -> tuple[npt.NDArray[np.int64], F32Array]:
    """Fit every sub-block; (grid positions (8, n), scales (n,), made non-negative)."""
    t = search_tables(name)
    mx = xval.max(axis=0)
    levels, scales = iq_scale.fit_scale(t, xval, w, mx, mx / F32(15), active, how)
    return t.kmap64.take(srch.pack_points(levels, t)), scales


def _encode_xxs(x: F32Array, qw: F32Array | None) -> U8Array:
    xt, w = _prepare(x, qw)
    n = xt.shape[1]
    xval, signs = srch.even_signs(xt, w)
    active = ~(xval.max(axis=0) < F32(1e-8))
    gidx, scales = _search("IQ3_XXS", xval, w, active, _XXS)
    signs = np.where(scales < 0, ~signs & np.uint8(127), signs)
    signs[:, ~active] = 0  # a skipped sub-block keeps its zero word
    d, ls, zero = srch.super_scales(np.abs(scales), SUB // 4)
    word = signs.astype(np.uint32)
    packed = word[0] | word[1] << 7 | word[2] << 14 | word[3] << 21
    packed = packed | (ls.reshape(-1).astype(np.uint32) << np.uint32(28))
    nb = n // 8
    out = srch.new_blocks("IQ3_XXS", nb)
    out[:, :2] = _fp16_bytes(d * F32(1.0125))
    out[:, 2:66] = gidx.T.reshape(nb, 64).astype(np.uint8)
    out[:, 66:] = packed.astype("<u4").view(np.uint8).reshape(nb, 32)
    out[zero] = 0
    return out


def _encode_s(x: F32Array, qw: F32Array | None) -> U8Array:
    xt, w = _prepare(x, qw)
    n = xt.shape[1]
    neg = ~(xt >= 0)
    xval = np.where(neg, -xt, xt)
    written = xval.max(axis=0) != 0
    gidx, scales = _search("IQ3_S", xval, w, written, _S)
    neg = np.where(scales < 0, ~neg, neg)
    d, ls, zero = srch.super_scales(np.abs(scales), SUB // 4)
    nb = n // 8
    sign_bytes = srch.sign_bytes(neg.reshape(4, 8, n))
    # qs/signs of a sub-block land at its rank among the block's non-zero sub-blocks
    written = written.reshape(nb, 8)
    slot = np.cumsum(written, axis=1) - 1
    qs = np.zeros((nb, 8, 8), dtype=np.uint8)
    sg = np.zeros((nb, 8, 4), dtype=np.uint8)
    b_idx, s_idx = hits_2d(written)
    col = b_idx * 8 + s_idx
    qs[b_idx, slot[b_idx, s_idx]] = (gidx[:, col] & 255).T.astype(np.uint8)
    sg[b_idx, slot[b_idx, s_idx]] = sign_bytes[:, col].T
    qh = np.bitwise_or.reduce(((gidx >> 8) << np.arange(8)[:, None]).astype(np.uint8), axis=0)
    lsb = ls.reshape(nb, 4, 2)
    out = srch.new_blocks("IQ3_S", nb)
    out[:, :2] = _fp16_bytes(np.where(zero, F32(0), d * F32(1.033)))
    out[:, 2:66] = qs.reshape(nb, 64)
    out[:, 66:74] = qh.reshape(nb, 8)
    out[:, 74:106] = sg.reshape(nb, 32)
    out[:, 106:] = np.where(zero[:, None], 0, lsb[..., 0] | (lsb[..., 1] << 4))
    return out


def _decode_xxs(qb: U8Array) -> F32Array:
    tabs = fixed_tables()
    d = _fp16_to_f32(qb[:, :2])
    words = np.ascontiguousarray(qb[:, 66:]).view("<u4").astype(np.int64)  # (nb, 8)
    db = (d[:, None] * (F32(0.5) + (words >> 28).astype(np.float32))) * F32(0.5)
    sidx = (words[..., None] >> (7 * np.arange(4))) & 127  # (nb, 8, 4)
    signs = tabs["ksigns_iq2xs"][sidx]
    sbits = (signs[..., None] >> np.arange(8)) & 1  # (nb, 8, 4, 8)
    vals = srch.grid_bytes(tabs["iq3xxs_grid"], qb[:, 2:66].reshape(-1, 8, 8))
    y = srch.signed_values((db[..., None] * vals), sbits.reshape(-1, 8, 32).astype(bool))
    return y.reshape(-1, QK_K)


def _decode_s(qb: U8Array) -> F32Array:
    tabs = fixed_tables()
    d = _fp16_to_f32(qb[:, :2])
    sc = qb[:, 106:].astype(np.int64)
    ls = np.stack([sc & 15, sc >> 4], axis=2).reshape(-1, 8)
    db = d[:, None] * (1 + 2 * ls).astype(np.float32)
    hi = (qb[:, 66:74, None].astype(np.int64) >> np.arange(8)) & 1  # (nb, 8, 8)
    idx = qb[:, 2:66].reshape(-1, 8, 8).astype(np.int64) | (hi << 8)
    vals = srch.grid_bytes(tabs["iq3s_grid"], idx)
    sbits = ((qb[:, 74:106, None] >> np.arange(8, dtype=np.uint8)) & 1).reshape(-1, 8, 32)
    y = srch.signed_values(db[..., None] * vals, sbits.astype(bool))
    return y.reshape(-1, QK_K)


class IQ3_XXS(srch.GridFormat):
    qtype = GGMLQuantizationType.IQ3_XXS
    codec = (_encode_xxs, _decode_xxs)


class IQ3_S(srch.GridFormat):
    qtype = GGMLQuantizationType.IQ3_S
    codec = (_encode_s, _decode_s)
