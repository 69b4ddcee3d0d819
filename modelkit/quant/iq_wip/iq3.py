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

from modelkit.quant.iq_wip import iq_search as srch
from modelkit.quant.iq_wip.blocks import F32Array, U8Array, byte_blocks, float_blocks, quiet
from modelkit.quant.iq_wip.iq_tables import SearchTables, fixed_tables, search_tables
from modelkit.quant.kernels import _fp16_bytes, _fp16_to_f32, _nearest_int

F32 = np.float32
QK_K = 256
SUB = 32
IQ3_XXS_BYTES = 98
IQ3_S_BYTES = 110
_KMAXQ = 8


def _fit(t: SearchTables, xval: F32Array, weight: F32Array, steps: range, eps: float,
         start_on_grid: bool, refine_all: bool) -> tuple[npt.NDArray[np.int8], F32Array]:
    """The scale search of one sub-block per column: returns levels (32, n) and scales (n,).
    Columns whose max is below ``eps`` (IQ3_S: exactly 0) give zero levels and scale 0."""
    n = xval.shape[1]
    mx = xval.max(axis=0)
    active = np.flatnonzero(~(mx < F32(eps)) if eps else mx != 0)
    levels = np.zeros((SUB, n), dtype=np.int8)
    scales = np.zeros(n, dtype=np.float32)
    if active.size == 0:
        return levels, scales
    xv, w, m = xval[:, active], weight[:, active], mx[active]
    waux = np.sqrt(w)
    best = np.zeros(active.size, dtype=np.float32)
    scale = m / F32(2 * _KMAXQ - 1)
    L = np.zeros_like(xv, dtype=np.int8)
    on_grid = np.full((SUB // 4, active.size), start_on_grid)
    for step in steps:
        inv = (F32(2 * _KMAXQ - 1) + F32(step) * F32(0.2)) / m
        lv, _, on = srch.project(t, xv, waux, inv, F32(1) / inv, _KMAXQ - 1)
        q = F32(2) * lv.astype(np.float32) + F32(1)
        sumqx = srch.sequential_sum(w * xv * q)
        sumq2 = srch.sequential_sum(w * q * q)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        scale = np.where(better, sumqx / sumq2, scale)
        best = np.where(better, scale * sumqx, best)
        L = np.where(better, lv, L)
        on_grid = np.where(better, on, on_grid)
    redo = (~on_grid).any(axis=0) & (scale > 0)
    if redo.any():
        cols = np.flatnonzero(redo)
        lv, _, _ = srch.project(t, xv[:, cols], waux[:, cols], F32(1) / scale[cols],
                                scale[cols], _KMAXQ - 1)
        keep = np.repeat(on_grid[:, cols], 4, axis=0) if not refine_all else None
        new = lv if keep is None else np.where(keep, L[:, cols], lv)
        L[:, cols] = new
        q = F32(2) * new.astype(np.float32) + F32(1)
        sumqx = srch.sequential_sum(w[:, cols] * xv[:, cols] * q)
        sumq2 = srch.sequential_sum(w[:, cols] * q * q)
        scale[cols] = np.where(sumq2 > 0, sumqx / sumq2, scale[cols])
    levels[:, active] = L
    scales[active] = scale
    return levels, scales


def _prepare(x: np.ndarray, imatrix: np.ndarray | None, name: str
             ) -> tuple[F32Array, F32Array, int]:
    """Rows -> (values (32, n_sub) element-major, weights (32, n_sub), rows)."""
    b, rows = float_blocks(x, QK_K, name)
    xt = np.ascontiguousarray(b.reshape(-1, SUB).T)
    qw = sigma2 = None
    if imatrix is not None:
        im = np.asarray(imatrix, dtype=np.float32).reshape(-1)
        if im.shape[0] != b.shape[0] // rows * QK_K:
            raise ValueError(f"{name}: imatrix has {im.shape[0]} values, rows have "
                             f"{b.shape[0] // rows * QK_K}")
        qw = np.ascontiguousarray(np.tile(im.reshape(-1, SUB), (rows, 1)).T)
        sigma2 = srch.block_sigma2(xt, QK_K // SUB)
    return xt, srch.sub_block_weights(xt, qw, sigma2), rows


def _super_scales(scales: F32Array, fudge: float) -> tuple[F32Array, npt.NDArray[np.int64],
                                                           npt.NDArray[np.bool_]]:
    """Sub-block scales (n_sub,) -> (d per block, 4-bit scale per sub-block, zero block)."""
    sc = scales.reshape(-1, QK_K // SUB)
    max_scale = sc.max(axis=1, initial=F32(0))
    d = max_scale / F32(31)
    ls = np.clip(_nearest_int(F32(0.5) * ((F32(1) / d)[:, None] * sc - F32(1))), 0, 15)
    return d * F32(fudge), ls.astype(np.int64), max_scale == 0


@quiet
def quantize_iq3_xxs(x: np.ndarray, imatrix: np.ndarray | None = None) -> U8Array:
    """float32 (rows, n_per_row) -> uint8 (rows, n_per_row/256*98)."""
    t = search_tables("IQ3_XXS")
    xt, w, rows = _prepare(x, imatrix, "IQ3_XXS")
    n = xt.shape[1]
    x8 = xt.reshape(4, 8, n)
    neg = ~(x8 >= 0)
    xval = np.where(neg, -x8, x8)
    bit = np.uint8(1) << np.arange(8, dtype=np.uint8)[:, None]
    signs = np.bitwise_or.reduce(np.where(neg, bit, np.uint8(0)), axis=1)  # (4, n)
    odd = neg.sum(axis=1) % 2 == 1
    imin = np.argmin((w.reshape(4, 8, n) * x8) * x8, axis=1)  # first least important
    k_idx, c_idx = np.nonzero(odd)
    xval[k_idx, imin[k_idx, c_idx], c_idx] *= F32(-1)
    signs[k_idx, c_idx] ^= np.uint8(1) << imin[k_idx, c_idx].astype(np.uint8)
    signs &= np.uint8(127)
    xval = xval.reshape(SUB, n)
    levels, scales = _fit(t, xval, w, range(-15, 16), 1e-8, True, False)
    flip = scales < 0
    scales = np.abs(scales)
    signs = np.where(flip, ~signs & np.uint8(127), signs)
    signs[:, xval.max(axis=0) < F32(1e-8)] = 0  # a skipped sub-block keeps its zero word
    gidx = t.kmap[srch.pack_points(levels, t)]  # (8, n)
    d, ls, zero = _super_scales(scales, 1.0125)
    word = signs.astype(np.uint32)
    packed = word[0] | word[1] << 7 | word[2] << 14 | word[3] << 21
    packed = packed | (ls.reshape(-1).astype(np.uint32) << np.uint32(28))
    nb = n // 8
    out = np.zeros((nb, IQ3_XXS_BYTES), dtype=np.uint8)
    out[:, :2] = _fp16_bytes(d)
    out[:, 2:66] = gidx.T.reshape(nb, 64).astype(np.uint8)
    out[:, 66:] = packed.astype("<u4").view(np.uint8).reshape(nb, 32)
    out[zero] = 0
    return out.reshape(rows, -1)


@quiet
def quantize_iq3_s(x: np.ndarray, imatrix: np.ndarray | None = None) -> U8Array:
    """float32 (rows, n_per_row) -> uint8 (rows, n_per_row/256*110)."""
    t = search_tables("IQ3_S")
    xt, w, rows = _prepare(x, imatrix, "IQ3_S")
    n = xt.shape[1]
    neg = ~(xt >= 0)
    xval = np.where(neg, -xt, xt)
    levels, scales = _fit(t, xval, w, range(-9, 10), 0.0, False, True)
    flip = scales < 0
    scales = np.abs(scales)
    neg = np.where(flip, ~neg, neg)
    gidx = t.kmap[srch.pack_points(levels, t)].astype(np.int64)  # (8, n)
    d, ls, zero = _super_scales(scales, 1.033)
    nb = n // 8
    bit = np.uint8(1) << np.arange(8, dtype=np.uint8)[:, None]
    sign_bytes = np.bitwise_or.reduce(np.where(neg.reshape(4, 8, n), bit, np.uint8(0)), axis=1)
    # qs/signs of a sub-block land at its rank among the block's non-zero sub-blocks
    written = (xval.max(axis=0) != 0).reshape(nb, 8)
    slot = np.cumsum(written, axis=1) - 1
    qs = np.zeros((nb, 8, 8), dtype=np.uint8)
    sg = np.zeros((nb, 8, 4), dtype=np.uint8)
    b_idx, s_idx = np.nonzero(written)
    col = b_idx * 8 + s_idx
    qs[b_idx, slot[b_idx, s_idx]] = (gidx[:, col] & 255).T.astype(np.uint8)
    sg[b_idx, slot[b_idx, s_idx]] = sign_bytes[:, col].T
    qh = np.bitwise_or.reduce(((gidx >> 8) << np.arange(8)[:, None]).astype(np.uint8), axis=0)
    lsb = ls.reshape(nb, 4, 2)
    out = np.zeros((nb, IQ3_S_BYTES), dtype=np.uint8)
    out[:, :2] = _fp16_bytes(np.where(zero, F32(0), d))
    out[:, 2:66] = qs.reshape(nb, 64)
    out[:, 66:74] = qh.reshape(nb, 8)
    out[:, 74:106] = sg.reshape(nb, 32)
    out[:, 106:] = np.where(zero[:, None], 0, lsb[..., 0] | (lsb[..., 1] << 4))
    return out.reshape(rows, -1)


def _signed(grid_vals: F32Array, sign_bits: npt.NDArray[np.bool_]) -> F32Array:
    out: F32Array = grid_vals * np.where(sign_bits, F32(-1), F32(1))
    return out


def _point_values(grid: npt.NDArray[np.uint32], idx: npt.NDArray[np.integer]) -> F32Array:
    """Grid positions (..., points) -> their 4 byte values each, (..., points*4) float32."""
    v = np.ascontiguousarray(grid[idx]).view(np.uint8)
    return v.reshape(*idx.shape[:-1], -1).astype(np.float32)


@quiet
def dequantize_iq3_xxs(q: np.ndarray, n_per_row: int) -> F32Array:
    """uint8 (rows, row_bytes) -> float32 (rows, n_per_row), as ggml's to_float."""
    qb, rows = byte_blocks(q, IQ3_XXS_BYTES, QK_K, n_per_row, "IQ3_XXS")
    tabs = fixed_tables()
    d = _fp16_to_f32(qb[:, :2])
    words = np.ascontiguousarray(qb[:, 66:]).view("<u4").astype(np.int64)  # (nb, 8)
    db = (d[:, None] * (F32(0.5) + (words >> 28).astype(np.float32))) * F32(0.5)
    sidx = (words[..., None] >> (7 * np.arange(4))) & 127  # (nb, 8, 4)
    signs = tabs["ksigns_iq2xs"][sidx]
    sbits = (signs[..., None] >> np.arange(8)) & 1  # (nb, 8, 4, 8)
    vals = _point_values(tabs["iq3xxs_grid"], qb[:, 2:66].reshape(-1, 8, 8))
    y = _signed((db[..., None] * vals), sbits.reshape(-1, 8, 32).astype(bool))
    return y.reshape(rows, n_per_row)


@quiet
def dequantize_iq3_s(q: np.ndarray, n_per_row: int) -> F32Array:
    """uint8 (rows, row_bytes) -> float32 (rows, n_per_row), as ggml's to_float."""
    qb, rows = byte_blocks(q, IQ3_S_BYTES, QK_K, n_per_row, "IQ3_S")
    tabs = fixed_tables()
    d = _fp16_to_f32(qb[:, :2])
    sc = qb[:, 106:].astype(np.int64)
    ls = np.stack([sc & 15, sc >> 4], axis=2).reshape(-1, 8)
    db = d[:, None] * (1 + 2 * ls).astype(np.float32)
    hi = (qb[:, 66:74, None].astype(np.int64) >> np.arange(8)) & 1  # (nb, 8, 8)
    idx = qb[:, 2:66].reshape(-1, 8, 8).astype(np.int64) | (hi << 8)
    vals = _point_values(tabs["iq3s_grid"], idx)
    sbits = ((qb[:, 74:106, None] >> np.arange(8, dtype=np.uint8)) & 1).reshape(-1, 8, 32)
    y = _signed(db[..., None] * vals, sbits.astype(bool))
    return y.reshape(rows, n_per_row)
