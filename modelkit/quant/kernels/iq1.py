"""IQ1_S and IQ1_M: ternary points (-1, 0, 1 plus a shift of +-1/8) on an 8-wide grid, as
ggml's ``quantize_row_iq1_s_impl`` / ``quantize_row_iq1_m_impl``.

Each sub-block (32 values for IQ1_S, 16 for IQ1_M) is solved exactly: its values are sorted
(a stable sort: glibc's qsort of such small arrays is a merge sort), and every split of the
sorted values into three groups (levels 0, 1, 2 -> -1, 0, 1) with either shift
(``x_p = {-7/8, 1/8, 9/8}``, ``x_m = {-9/8, -1/8, 7/8}``; IQ1_M picks the shift per half)
is scored by ``sumqx^2 / sumq2`` from prefix sums, in C loop order, keeping the first best
(``_first_best``). Points that are off the grid take their best neighbour
(``iq1_find_best_neighbour2``), after which the scale is refitted.

IQ1_S block, 256 values, 50 bytes (needs an importance matrix)::

    d   f16      @0    fp16(max_scale / 15 * 1.125)
    qs  u8[32]   @2    low 8 bits of the iq1s_grid index of point 4*ib + k
    qh  u16[8]   @34   sub-block ib: 3 high index bits of point k at bits 3k..3k+2,
                       3-bit scale s at bits 12-14, shift sign (1: -1/8) at bit 15
    value = d * (2s + 1) * (grid + delta)

IQ1_M block, 256 values, 56 bytes::

    qs     u8[32]   @0    low 8 bits of the index of point 2*ib + k (ib: 16-value sub-block)
    qh     u8[16]   @32   sub-block ib: high index bits of point 0 (bits 0-2) and point 1
                          (bits 4-6), shift sign of point 0 (bit 3) and point 1 (bit 7)
    scales u16[4]   @48   3-bit scale of sub-block ib at bits 3(ib%4) of word ib/4; the top
                          nibbles of the 4 words hold the f16 super-scale, low nibble first
    value = d * (2s + 1) * (grid + delta)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType
from gguf.constants import QK_K

from modelkit.quant.kernels import iq_search as srch
from modelkit.quant.kernels.common import (
    F32,
    BoolArray,
    F32Array,
    I64Array,
    U8Array,
    hits_2d,
    seq_sum,
)
from modelkit.quant.kernels.floats import fp16_bytes, fp16_to_f32, fp32_to_fp16_bits
from modelkit.quant.kernels.iq_tables import SearchTables, fixed_tables, search_tables

X_P = np.array([-1 + 0.125, 0.125, 1 + 0.125], dtype=np.float32)
X_M = np.array([-1 - 0.125, -0.125, 1 - 0.125], dtype=np.float32)
_FLT_MAX = F32(np.finfo(np.float32).max)
_OVERFLOW_SAFE = 1e15  # |sumqx| below this: sumqx^2 and best*sumq2 stay finite
_NEAR_TOP = F32(1 - 2.0**-16)  # ratios this close to a column's largest can win
_TINY_TOP = F32(1e-30)  # a largest ratio below this: products may underflow, replay all


def _first_best(qx: F32Array, q2: F32Array, scale0: F32Array, plain: bool | None = None
                ) -> tuple[I64Array, F32Array]:
    """C's ``if (sumq2 > 0 && sumqx*sumqx > best*sumq2) {scale = sumqx/sumq2; best =
    scale*sumqx;}`` over candidates (C, n) in order, from ``best = -FLT_MAX``.

    Returns (winning candidate or -1, scale). Only candidates whose ratio
    ``(sumqx/sumq2)*sumqx`` (C's ``best`` once taken) is within ``_NEAR_TOP`` of the
    column's largest are replayed. C takes a candidate only when its ratio exceeds
    ``best`` (up to a few float32 roundings), so ``best`` only grows and ends at the
    largest ratio: the last candidate taken is near the top. The first candidate near the
    top is taken whatever came before (all earlier ratios are lower), and so is the first
    one within rounding of the top, after which ``best`` is at the top and only candidates
    near it can be taken: replaying the near-top candidates alone gives C's winner and
    scale.

    ``plain``: the caller's proof that every ``q2`` is positive and every sum far from
    overflow (None: checked here)."""
    # near float32 overflow (sumqx^2 or best*sumq2 -> inf) or underflow, and with NaN,
    # C's comparisons stop tracking the ratio: such columns replay every candidate. The
    # usual case, every sumq2 positive and every sum far from overflow, is told by four
    # whole-array reductions (NaN fails them) or the caller's ``plain``, and skips the
    # per-candidate masks.
    if plain is None:
        plain = bool(q2.min(initial=F32(1)) > 0 and q2.max(initial=F32(0)) < _OVERFLOW_SAFE**2
                     and qx.max(initial=F32(0)) < _OVERFLOW_SAFE
                     and qx.min(initial=F32(0)) > -_OVERFLOW_SAFE)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = qx / q2
    ratio *= qx
    valid = None if plain else q2 > 0
    if valid is not None:
        ratio = np.where(valid, ratio, F32(-np.inf))
    top = ratio.max(axis=0)
    keep = ratio >= top * _NEAR_TOP
    risky = ~(top > _TINY_TOP)
    if valid is None:
        keep[:, risky] = True
    else:
        keep &= valid
        risky |= (~(np.abs(qx).max(axis=0) < _OVERFLOW_SAFE)
                  | ~(q2.max(axis=0) < _OVERFLOW_SAFE**2))
        keep[:, risky] = valid[:, risky]
    n = qx.shape[1]
    # the few kept per column, grouped by column in candidate order: a stable sort of
    # the row-major hits (4x faster than scanning the transposed mask)
    cand, col = hits_2d(keep)
    by_col = np.argsort(col, kind="stable")
    cand, col = cand.take(by_col), col.take(by_col)
    counts = np.bincount(col, minlength=n)
    rank = np.arange(col.size) - np.concatenate([[0], np.cumsum(counts)[:-1]])[col]
    order = np.full((int(counts.max(initial=0)), n), -1, dtype=np.int64)
    order[rank, col] = cand
    # the kept candidates of each column in order, row by row; padding has sumq2 = 0
    a_all = qx[np.maximum(order, 0), np.arange(n)]
    b_all = np.where(order >= 0, q2[np.maximum(order, 0), np.arange(n)], F32(0))
    best = np.full(n, -_FLT_MAX, dtype=np.float32)
    scale = scale0.copy()
    winner = np.full(n, -1, dtype=np.int64)
    for c, a, b in zip(order, a_all, b_all, strict=True):
        take = (b > 0) & (a * a > best * b)
        s = a / b
        scale = np.where(take, s, scale)
        best = np.where(take, s * a, best)
        winner = np.where(take, c, winner)
    return winner, scale


def _sorted_sums(xt: F32Array, w: F32Array, split: int
                 ) -> tuple[I64Array, list[F32Array], list[F32Array]]:
    """Stable sort of each column; prefix sums of w*x and w in sorted order, from 0, kept
    per part of the sub-block (``split`` consecutive elements each: IQ1_M's halves)."""
    order = np.argsort(xt, axis=0, kind="stable")
    xs = np.take_along_axis(xt, order, axis=0)
    ws = np.take_along_axis(w, order, axis=0)
    part = order // split
    wx = ws * xs
    e, n = xt.shape
    px: list[F32Array] = []
    pw: list[F32Array] = []
    for h in range(e // split):
        mine = part == h
        for src, sums in ((wx, px), (ws, pw)):
            terms = np.where(mine, src, F32(0))
            out = np.empty((e + 1, n), dtype=np.float32)
            out[0] = 0
            # row by row: np.cumsum along the first axis is about 5x slower
            for i in range(e):
                np.add(out[i], terms[i], out=out[i + 1])
            sums.append(out)
    return order, px, pw


def _levels(order: I64Array, i1: I64Array, i2: I64Array) -> npt.NDArray[np.int8]:
    """Levels 0/1/2 of each value: its sorted position below i1, below i2, or above."""
    j = np.arange(order.shape[0])[:, None]
    ls = (j >= i1).astype(np.int8) + (j >= i2).astype(np.int8)
    out = np.empty_like(ls)
    np.put_along_axis(out, order, ls, axis=0)
    return out


def _on_grid(t: SearchTables, levels: npt.NDArray[np.int8], xt: F32Array, w: F32Array,
             scale: F32Array, values: F32Array) -> tuple[I64Array, BoolArray]:
    """Grid positions (points, n) of the levels, off-grid points replaced by their best
    neighbour (values (points, n, 3): the level values of each point); whether all were
    on the grid, per column."""
    u = srch.pack_points(levels, t)
    gidx = t.kmap64.take(u)
    on = gidx >= 0
    if not on.all():
        p_idx, c_idx = hits_2d(~on)
        at = srch.point_elements(p_idx, c_idx, 8, xt.shape[1])
        gidx[p_idx, c_idx] = srch.best_neighbour(t, u[p_idx, c_idx], xt.take(at), w.take(at),
                                                 scale[c_idx],
                                                 values[p_idx, c_idx])
    all_on: BoolArray = np.asarray(on.all(axis=0))
    return gidx, all_on


def _point_values(t: SearchTables, gidx: I64Array, values: F32Array) -> F32Array:
    """(points, n) grid positions -> (points*8, n) level values of their elements."""
    lv = (t.coords[gidx] - 1) // 2  # (points, n, 8)
    q = np.take_along_axis(values, lv.reshape(*lv.shape[:2], 8).astype(np.int64), axis=2)
    return np.ascontiguousarray(q.transpose(0, 2, 1)).reshape(-1, gidx.shape[1])


def _refit(q: F32Array, xt: F32Array, w: F32Array, scale: F32Array, redo: BoolArray
           ) -> F32Array:
    """The scale after the neighbour search: sumqx/sumq2 when both are positive."""
    sumqx = seq_sum((w * q) * xt)
    sumq2 = seq_sum((w * q) * q)
    out: F32Array = np.where(redo & (sumqx > 0) & (sumq2 > 0), sumqx / sumq2, scale)
    return out


def _place(t: SearchTables, xt: F32Array, w: F32Array, levels: npt.NDArray[np.int8],
           scale: F32Array, shifts: tuple[I64Array, I64Array, int],
           values_of: Callable[[I64Array], F32Array], found: BoolArray
           ) -> tuple[I64Array, F32Array, I64Array]:
    """From the winning split to grid points: a negative scale flips the levels and the
    shift (``shifts`` = (shift, flipped shift, shift of an unused sub-block)); off-grid
    points take their best neighbour, then the scale is refitted. Sub-blocks not
    ``found`` get point 0, scale 0 and the idle shift."""
    shift, flipped, idle = shifts
    neg = scale < 0
    levels = np.where(neg, 2 - levels, levels).astype(np.int8)
    shift = np.where(neg, flipped, shift)
    scale = np.abs(scale)
    values = values_of(shift)
    gidx, all_on = _on_grid(t, levels, xt, w, scale, values)
    scale = _refit(_point_values(t, gidx, values), xt, w, scale, ~all_on)
    return (np.where(found, gidx, 0), np.where(found, scale, F32(0)),
            np.where(found, shift, idle))


def _s_values(shift: I64Array) -> F32Array:
    """IQ1_S: one shift per sub-block -> level values (4 points, n, 3)."""
    out: F32Array = np.broadcast_to(np.where((shift == 1)[:, None], X_P, X_M),
                                    (4, shift.shape[0], 3))
    return out


def _pairs(n: int) -> tuple[I64Array, I64Array]:
    """Every split i1 <= i2 in 0..n, in C loop order (i1 outer)."""
    i1, i2 = np.triu_indices(n + 1)
    return i1.astype(np.int64), i2.astype(np.int64)


def _encode_s(x: F32Array, qw: F32Array | None) -> U8Array:
    if qw is None:
        raise ValueError("IQ1_S needs an importance matrix")
    t = search_tables("IQ1_S")
    xt, qt, sigma2 = srch.prepare(x, qw, 32, 2)
    assert qt is not None
    w = qt * np.sqrt(sigma2 + xt * xt)
    n = xt.shape[1]
    mx = np.abs(xt).max(axis=0)
    order, (sx,), (sw,) = _sorted_sums(xt, w, 32)
    i1, i2 = _pairs(32)
    qx, q2 = [], []
    for v in (X_P, X_M):
        qx.append((sx[i1] - sx[0]) * v[0] + (sx[i2] - sx[i1]) * v[1] + (sx[32] - sx[i2]) * v[2])
        q2.append((sw[i1] - sw[0]) * v[0] * v[0] + (sw[i2] - sw[i1]) * v[1] * v[1]
                  + (sw[32] - sw[i2]) * v[2] * v[2])
    win, scale = _first_best(np.stack(qx, axis=1).reshape(-1, n),
                             np.stack(q2, axis=1).reshape(-1, n), mx)
    found = ~(mx < F32(1e-12)) & (win >= 0)
    win = np.maximum(win, 0)
    shift = np.where(win % 2 == 0, 1, -1)
    gidx, scale, shift = _place(t, xt, w, _levels(order, i1[win // 2], i2[win // 2]), scale,
                                (shift, -shift, 1), _s_values, found)
    d, ls, zero = srch.super_scales(scale, 8, 7)
    hi = ((gidx >> 8) << (3 * np.arange(4))[:, None]).sum(axis=0)
    ls = np.where(zero[:, None], 0, ls | np.where(shift == -1, 8, 0).reshape(-1, 8))
    qh = hi | (ls.reshape(-1) << 12)
    nb = n // 8
    out = srch.new_blocks("IQ1_S", nb)
    out[:, :2] = fp16_bytes(d * F32(1.125))
    out[:, 2:34] = (gidx.T.reshape(nb, 32) & 255).astype(np.uint8)
    out[:, 34:] = qh.astype("<u2").view(np.uint8).reshape(nb, 16)
    return out


_MASKS = np.array([0x00, 0x80, 0x08, 0x88], dtype=np.int64)


def _m_values(k: I64Array) -> F32Array:
    """Shift combination k (0: ++, 1: +-, 2: -+, 3: --) -> level values (2 points, n, 3)."""
    first = np.where((k < 2)[:, None], X_P, X_M)
    second = np.where((k % 2 == 0)[:, None], X_P, X_M)
    return np.stack([first, second])


def _m_sums(xt: F32Array, w: F32Array
            ) -> tuple[I64Array, list[F32Array], list[F32Array], F32Array, F32Array]:
    """IQ1_M's split search sums: the sort order, each half's prefix sums of w*x and w,
    and sumqx, sumq2 of every candidate (split, then shifts ++ +- -+ --) as rows, in C's
    float32 order. Products of a prefix sum and a constant are taken before the gather
    (the same roundings, on 17 rows instead of 153)."""
    n = xt.shape[1]
    order, px, pw = _sorted_sums(xt, w, 8)
    i1, i2 = _pairs(16)
    p2, m2 = X_P[2], X_M[2]
    cp1, cp2 = X_P[0] * X_P[0] - X_P[1] * X_P[1], X_P[1] * X_P[1] - X_P[2] * X_P[2]
    cm1, cm2 = X_M[0] * X_M[0] - X_M[1] * X_M[1], X_M[1] * X_M[1] - X_M[2] * X_M[2]
    qxp, qxm, q2p, q2m = [], [], [], []
    for h in range(2):
        sx = px[h][i1] + px[h][i2]
        qxp.append(px[h][16] * p2 - sx)
        qxm.append(px[h][16] * m2 - sx)
        q2p.append((pw[h][16] * p2 * p2 + (pw[h] * cp1)[i1]) + (pw[h] * cp2)[i2])
        q2m.append((pw[h][16] * m2 * m2 + (pw[h] * cm1)[i1]) + (pw[h] * cm2)[i2])
    qx = np.empty((i1.size, 4, n), dtype=np.float32)
    q2 = np.empty_like(qx)
    for combo, (a, b) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):  # shifts ++ +- -+ --
        np.add((qxp, qxm)[a][0], (qxp, qxm)[b][1], out=qx[:, combo])
        np.add((q2p, q2m)[a][0], (q2p, q2m)[b][1], out=q2[:, combo])
    return order, px, pw, qx.reshape(-1, n), q2.reshape(-1, n)


def _m_plain(w: F32Array, px: list[F32Array], pw: list[F32Array]) -> bool:
    """``_first_best``'s ``plain`` for IQ1_M, from the prefix sums (a fortieth of the
    candidates' size). With every weight >= 0 the prefix sums of each half grow, 0 <= pw_i1
    <= pw_i2 <= pw_16, and a half's exact ``q2`` is at least ``pw_16 / 64`` (the X_P terms:
    ``1.265625 pw_16 + 0.75 pw_i1 - 1.25 pw_i2``; X_M's: ``0.765625 pw_16 + 1.25 pw_i1 -
    0.75 pw_i2``); its six float32 roundings, of values at most ``2.6 pw_16``, cost under
    ``2**-20 pw_16`` (a subnormal product's ``2**-150`` is nothing beside it), so ``pw_16
    >= 2**-100`` in both halves keeps every ``q2`` positive. ``|px| < 1e14`` keeps
    ``|qx| <= 6.25 max|px|`` and ``pw_16 < 1e28`` keeps ``q2 <= 6.6 pw_16`` far from
    overflow. NaN fails every test."""
    return bool(w.min() >= 0
                and all(p[-1].min() >= F32(2.0**-100) and p[-1].max() < F32(1e28) for p in pw)
                and all(np.abs(p).max() < F32(1e14) for p in px))


def _encode_m(x: F32Array, qw: F32Array | None) -> U8Array:
    t = search_tables("IQ1_M")
    xt, qt, sigma2 = srch.prepare(x, qw, 16, 2)
    w: F32Array = xt * xt if qt is None else qt * np.sqrt(sigma2 + xt * xt)
    n = xt.shape[1]
    mx = np.abs(xt).max(axis=0)
    order, px, pw, qx, q2 = _m_sums(xt, w)
    i1, i2 = _pairs(16)
    win, scale = _first_best(qx, q2, mx, _m_plain(w, px, pw))
    found = ~(mx < F32(1e-7)) & (win >= 0)
    win = np.maximum(win, 0)
    gidx, scale, k = _place(t, xt, w, _levels(order, i1[win // 4], i2[win // 4]), scale,
                            (win % 4, 3 - win % 4, 0), _m_values, found)
    d, ls, zero = srch.super_scales(scale, 16, 7)
    ls = ls.reshape(-1)
    # the super-scale: refitted over the whole block with the final levels and scales
    q = _point_values(t, gidx, _m_values(k)) * (2 * ls + 1).astype(np.float32)
    sumqx = seq_sum(srch.whole_blocks((w * q) * xt, 16))
    sumq2 = seq_sum(srch.whole_blocks((w * q) * q, 16))
    d = np.where(sumq2 > 0, sumqx / sumq2, d)
    s16 = fp32_to_fp16_bits(d * F32(1.1125)).astype(np.int64)
    nb = n // 16
    words = (ls.reshape(nb, 4, 4) << (3 * np.arange(4))).sum(axis=2)
    words |= ((s16[:, None] >> (4 * np.arange(4))) & 15) << 12
    qh = (gidx[0] >> 8) | ((gidx[1] >> 8) << 4)
    qh = np.where(np.repeat(zero, 16), qh, qh | _MASKS[k])
    words = np.where(zero[:, None], 0, words)
    out = srch.new_blocks("IQ1_M", nb)
    out[:, :32] = (gidx.T.reshape(nb, 32) & 255).astype(np.uint8)
    out[:, 32:48] = qh.reshape(nb, 16).astype(np.uint8)
    out[:, 48:] = words.astype("<u2").view(np.uint8).reshape(nb, 8)
    return out


def _grid_values(idx: I64Array) -> F32Array:
    """iq1s_grid entries (..., points) -> their int8 values (..., points*8) as float32."""
    v = np.ascontiguousarray(fixed_tables()["iq1s_grid"][idx]).view(np.int8)
    return v.reshape(*idx.shape[:-1], -1).astype(np.float32)


def _decode_s(qb: U8Array) -> F32Array:
    d = fp16_to_f32(qb[:, :2])
    qh = np.ascontiguousarray(qb[:, 34:]).view("<u2").astype(np.int64)  # (nb, 8)
    dl = d[:, None] * (2 * ((qh >> 12) & 7) + 1).astype(np.float32)
    delta = np.where(qh & 0x8000, F32(-0.125), F32(0.125))
    idx = qb[:, 2:34].reshape(-1, 8, 4).astype(np.int64) | (
        ((qh[..., None] >> (3 * np.arange(4))) & 7) << 8)
    y: F32Array = dl[..., None] * (_grid_values(idx)
                                   + np.repeat(delta, 32, axis=1).reshape(-1, 8, 32))
    return y.reshape(-1, QK_K)


def _decode_m(qb: U8Array) -> F32Array:
    sc = np.ascontiguousarray(qb[:, 48:]).view("<u2").astype(np.int64)  # (nb, 4)
    s16 = (sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0xF0) | ((sc[:, 2] >> 4) & 0xF00) \
        | (sc[:, 3] & 0xF000)
    d = s16.astype(np.uint16).view(np.float16).astype(np.float32)
    ls = (sc[..., None] >> (3 * np.arange(4))) & 7  # (nb, 4 words, 4) -> sub-block ib
    dl = d[:, None] * (2 * ls.reshape(-1, 16) + 1).astype(np.float32)
    qh = qb[:, 32:48].astype(np.int64)  # (nb, 16)
    idx = qb[:, :32].reshape(-1, 16, 2).astype(np.int64) | np.stack(
        [(qh << 8) & 0x700, (qh << 4) & 0x700], axis=2)
    delta = np.where(np.stack([qh & 0x08, qh & 0x80], axis=2) != 0, F32(-0.125), F32(0.125))
    vals = _grid_values(idx).reshape(-1, 16, 2, 8) + delta[..., None]
    y: F32Array = dl[..., None, None] * vals
    return y.reshape(-1, QK_K)


class IQ1_S(srch.GridFormat):
    qtype = GGMLQuantizationType.IQ1_S
    requires_imatrix = True
    chunk_blocks = weighted_chunk_blocks = 32  # the split search holds ~1000 x 256 floats
    codec = (_encode_s, _decode_s)


class IQ1_M(srch.GridFormat):
    qtype = GGMLQuantizationType.IQ1_M
    # the split search holds ~600 x 1024 floats (16-value sub-blocks): 64 blocks measured
    # 3% faster than 32, 128 slower
    chunk_blocks = weighted_chunk_blocks = 64
    codec = (_encode_m, _decode_m)
