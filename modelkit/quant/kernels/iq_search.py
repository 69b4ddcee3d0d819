"""Searches shared by the IQ1/IQ2/IQ3 quantizers, vectorised across groups.

Arrays are element-major: ``(elements, groups)``, so that ``_seq_sum`` adds values in C
loop order (float32, one rounding per operation, no FMA). A *point* is ``width`` (8 or 4)
consecutive elements; its packed index ``u`` (``bits`` per coordinate, coordinate 0 lowest)
selects a ``kmap`` entry: a grid position, or a list of neighbours to search
(``iq_tables``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType
from gguf.constants import GGML_QUANT_SIZES, QK_K

from modelkit.quant.kernels.block import BlockFormat
from modelkit.quant.kernels.common import (
    F32,
    RINT_SAFE,
    BoolArray,
    F32Array,
    I64Array,
    T,
    gather,
    hits_2d,
)
from modelkit.quant.kernels.common import nearest_int as _nearest_int
from modelkit.quant.kernels.common import seq_sum as _seq_sum
from modelkit.quant.kernels.iq_tables import SearchTables

# best_neighbour's pre-ranking: sums of 8 float32 terms >= 0 added in two orders differ
# by at most ~11 roundings (2**-24 each) of the sum; 64 leave a wide margin. The terms
# are C's own, so only additions differ, and those stay relative near underflow too
# (adding subnormals is exact): no absolute floor is needed
_NEAR_BEST = F32(2.0**-18)
_SUM_SAFE = F32(1e37)  # a least sum below this: the margin cannot overflow
_PRE_RANK_FROM = 16  # candidates per point (IQ2_S has ~10, IQ2_XXS ~27, IQ1 ~90)
_QUADS_FROM = 48  # candidates per point from which pre-added groups of four (levels^4
# entries per group) cost less than pairs: IQ1's lists, not IQ2_XXS's


def whole_blocks(a: F32Array, per_block: int) -> F32Array:
    """(elements, groups) -> (elements*per_block, blocks): each block's values in order,
    when ``per_block`` consecutive groups make a block."""
    e, n = a.shape
    t = a.reshape(e, n // per_block, per_block).transpose(2, 0, 1)
    return np.ascontiguousarray(t.reshape(e * per_block, n // per_block))


def block_sigma2(xt: F32Array, per_block: int, factor: int) -> F32Array:
    """``factor * sum(x*x) / 256`` of each 256-value block, repeated for its ``per_block``
    groups. ``xt`` (elements, groups) holds consecutive groups of one block side by side."""
    e, n = xt.shape
    sumx2 = _seq_sum(whole_blocks(xt * xt, per_block))
    sigma2: F32Array = F32(factor) * sumx2 / F32(e * per_block)
    return np.repeat(sigma2, per_block)


def pack_points(levels: npt.NDArray[np.integer], t: SearchTables) -> I64Array:
    """(elements, groups) levels -> (points, groups) packed kmap indices."""
    width = t.coords.shape[1]
    lv = levels.reshape(-1, width, levels.shape[-1]).astype(np.int64)
    u: I64Array = lv[:, 0].copy()
    for i in range(1, width):
        u |= lv[:, i] << (t.bits * i)
    return u


def point_elements(p_idx: npt.NDArray[np.intp], g_idx: npt.NDArray[np.intp], width: int,
                   groups: int) -> npt.NDArray[np.intp]:
    """Flat indices (width, M) of the elements of points ``p_idx`` in columns ``g_idx`` of
    an (elements, groups) array: ``a.take`` of them gives each point's values as a
    column (what ``best_neighbour`` takes)."""
    first = p_idx * (width * groups) + g_idx
    out: npt.NDArray[np.intp] = first + (np.arange(width) * groups)[:, None]
    return out


def best_neighbour(t: SearchTables, u: I64Array, xs: F32Array, ws: F32Array,
                   scale: F32Array, values: F32Array | None = None) -> I64Array:
    """``iq*_find_best_neighbour`` (IQ1: ``iq1_find_best_neighbour2``) for M off-grid
    points at once.

    ``u`` (M,) packed indices with ``kmap[u] < 0``; ``xs``, ``ws`` (width, M) values and
    weights (each point a column: ``point_elements``); ``scale`` (M,). Minimises
    ``d2 = sum_i ws*(scale*q - x)^2`` (summed in order, float32) over the neighbour list of
    each point; the first minimum wins (C's strict ``<``). ``q`` is the grid coordinate
    ``2l+1``, or ``values[m, l]`` when a (M, levels) table is given.

    With long neighbour lists (the 8-wide grids but IQ2_S) each term, which depends only
    on the point, the coordinate and its level, is computed once, and the candidates are
    ranked by sums of pre-added coordinate pairs (or groups of four): those are within a
    few float32 roundings of C's sequential ``d2`` when all terms are >= 0, so only
    candidates within ``_NEAR_BEST`` of the least one can be C's minimum, and only those
    (one per point, nearly always) are summed in C's order.
    """
    return _in_chunks(t, u, xs, ws, scale, values)


def best_neighbour_twice(t: SearchTables, u: I64Array, xs: F32Array, ws: F32Array,
                         scales: F32Array) -> I64Array:
    """``best_neighbour`` of the same M points at two scales (``scales`` (2, M)), on the
    4-wide grids: (2, M). Each point's terms at both scales share one complex64 table
    (real: the first scale), so one gather per coordinate serves both searches; complex
    addition adds the halves apart, each in float32 and in C's order."""
    out = np.empty((2, u.size), dtype=np.int64)
    for i in range(0, u.size, _CHUNK_POINTS):
        part = slice(i, i + _CHUNK_POINTS)
        out[:, part] = _twice_d2(t, u[part], xs[:, part], ws[:, part], scales[:, part])
    return out


def _twice_d2(t: SearchTables, u: I64Array, xs: F32Array, ws: F32Array, scales: F32Array
              ) -> I64Array:
    width, m = xs.shape
    cand, owner, _, _ = expand_lists(t, u)
    q = t.level_coords[:, None]
    terms = np.empty((width, q.size, m), dtype=np.complex64)
    for half, scale in ((terms.real, scales[0]), (terms.imag, scales[1])):
        diff = (q * scale)[None, :, :] - xs[:, None, :]
        np.multiply(ws[:, None, :] * diff, diff, out=half)
    d2 = summed_terms(terms.reshape(-1), t.term_codes * m, cand, owner)
    found = np.empty((2, m), dtype=np.int64)
    for k, half in enumerate((d2.real, d2.imag)):
        v = np.fmin(half, F32(np.inf))  # NaN counts as +inf
        found[k] = gather(cand, first_at(v, _per_point_min(v, owner, m), owner))
    return found


_CHUNK_POINTS = 8192  # points per search call: one call over a whole chunk of trials (40k+
# points) measured ~1.4x slower; 2048-16384 measured alike


def _in_chunks(t: SearchTables, u: I64Array, xs: F32Array, ws: F32Array, scale: F32Array,
               values: F32Array | None) -> I64Array:
    m = u.size
    if m <= _CHUNK_POINTS:
        return _candidates_d2(t, u, xs, ws, scale, values)
    return np.concatenate([
        _candidates_d2(t, u[i:i + _CHUNK_POINTS], xs[:, i:i + _CHUNK_POINTS],
                       ws[:, i:i + _CHUNK_POINTS], scale[i:i + _CHUNK_POINTS],
                       None if values is None else values[i:i + _CHUNK_POINTS])
        for i in range(0, m, _CHUNK_POINTS)])


def _candidates_d2(t: SearchTables, u: I64Array, xs: F32Array, ws: F32Array,
                   scale: F32Array, values: F32Array | None) -> I64Array:
    width, m = xs.shape
    cand, owner, starts, counts = expand_lists(t, u)
    if width == 8 and cand.size > _PRE_RANK_FROM * m:
        cand, owner, d2 = _near_best_d2(t, cand, owner, starts, xs, ws, scale, values)
    elif width == 4:
        d2 = _table_d2(t, cand, owner, xs, ws, scale, values)
    else:
        d2 = _all_d2(t, cand, counts, xs, ws, scale, values)
    v = np.fmin(d2, F32(np.inf))  # NaN counts as +inf
    least = _per_point_min(v, owner, m)
    found: I64Array = gather(cand, first_at(v, least, owner)).astype(np.int64)
    return found


def expand_lists(t: SearchTables, u: I64Array) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp],
                                                   npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The neighbour lists of off-grid packed indices ``u`` (M,), one after another:
    (candidates, the point each belongs to, where each point's list starts, list lengths)."""
    m = u.size
    off = -gather(t.kmap64, u) - 1
    counts = gather(t.neighbours64, off)  # >= 1 (ggml asserts it)
    total = int(counts.sum())
    starts = np.zeros(m, dtype=np.intp)
    np.cumsum(counts[:-1], out=starts[1:])
    # candidates are grouped by point, in list order: candidate k of the whole is entry
    # k - starts[p] + 1 of its point p's list (np.repeat and a gather: 1.6-1.8x faster
    # than running sums of steps with numpy 2.4)
    owner = np.repeat(np.arange(m), counts)
    pos = np.arange(1, total + 1, dtype=np.intp)
    pos += gather(off - starts, owner)
    cand = gather(t.neighbours64, pos)
    return cand, owner, starts, counts


def summed_terms(flat: npt.NDArray[T], codes: npt.NDArray[np.intp],
                 cand: npt.NDArray[np.intp], base: npt.NDArray[np.intp]) -> npt.NDArray[T]:
    """Each candidate's sum of its table entries, added in the order of ``codes``' rows
    (coordinates, or groups of them): row i's entry for candidate k is ``flat[codes[i,
    cand[k]] + base[k]]``, ``base`` placing the candidate's point in the table (its index
    when codes are scaled by the point count, or its row start)."""
    total = gather(flat, gather(codes[0], cand) + base)
    for i in range(1, codes.shape[0]):
        np.add(total, gather(flat, gather(codes[i], cand) + base), out=total)
    return total


def _per_point_min(v: F32Array, owner: npt.NDArray[np.intp], m: int) -> F32Array:
    """The least of each of the ``m`` points' values (+inf for none); ``np.minimum.at``
    is about 3x faster than ``reduceat`` on such short segments."""
    least = np.full(m, np.inf, dtype=np.float32)
    np.minimum.at(least, owner, v)
    return least


def first_at(v: F32Array, least: F32Array, owner: npt.NDArray[np.intp]
             ) -> npt.NDArray[np.intp]:
    """Each point's first candidate (in list order) whose value is its least: C's ``if
    (d2 < best_d2)`` from ``FLT_MAX``. Candidates are grouped by point, points in
    increasing order; a point none of whose values equals its least (NaN) has no entry,
    so ``best_neighbour`` makes NaN +inf first (it never wins; a list without a finite
    d2 makes C abort, here it gives its first candidate)."""
    hits = np.flatnonzero(v == gather(least, owner))
    at_owner = gather(owner, hits)
    first = np.ones(hits.size, dtype=bool)
    np.not_equal(at_owner[1:], at_owner[:-1], out=first[1:])
    out: npt.NDArray[np.intp] = hits[first]
    return out


def _all_d2(t: SearchTables, cand: npt.NDArray[np.intp], counts: npt.NDArray[np.intp],
            xs: F32Array, ws: F32Array, scale: F32Array, values: F32Array | None) -> F32Array:
    """C's d2 of every candidate of the 8-wide grids' short lists, one coordinate at a
    time over all candidates (contiguous columns: each point's value repeated over its
    candidates)."""
    width = xs.shape[0]

    def spread(a: F32Array) -> F32Array:
        """A point's value for each of its candidates."""
        out: F32Array = np.repeat(a, counts)
        return out

    s = spread(scale)
    rows = None if values is None else np.repeat(values, counts, axis=0)
    d2: F32Array | None = None
    for i in range(width):  # summed in coordinate order
        if rows is None:
            q = gather(t.coord_columns[i], cand)
        else:
            q = np.take_along_axis(rows, t.levels[cand, i][:, None], axis=1)[:, 0]
        diff = s * q
        diff -= spread(xs[i])
        diff *= spread(ws[i]) * diff  # (w*diff)*diff: products commute
        d2 = diff if d2 is None else d2 + diff  # C's 0 + first term: the first term
    assert d2 is not None
    return d2


def _table_d2(t: SearchTables, cand: npt.NDArray[np.intp], owner: npt.NDArray[np.intp],
              xs: F32Array, ws: F32Array, scale: F32Array, values: F32Array | None) -> F32Array:
    """C's d2 of every candidate from a table of each point's terms, (coordinate, level)
    -> ``w*diff*diff``, built once per point (32 terms on IQ3's 4-wide grids), then
    gathered and summed in coordinate order: fewer gathers than ``_all_d2``."""
    width, m = xs.shape
    q = t.level_coords[:, None] if values is None else values.T
    diff = (q * scale)[None, :, :] - xs[:, None, :]
    terms = ((ws[:, None, :] * diff) * diff).reshape(-1)  # (width, levels, M) flattened
    # coordinate i, level l of a grid point -> (i*levels + l)*M
    d2: F32Array = summed_terms(terms, t.term_codes * m, cand, owner)
    return d2


def _near_best_d2(t: SearchTables, cand: npt.NDArray[np.intp], owner: npt.NDArray[np.intp],
                  starts: npt.NDArray[np.intp], xs: F32Array, ws: F32Array, scale: F32Array,
                  values: F32Array | None
                  ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], F32Array]:
    """C's d2 of the candidates that can be a point's least: (those candidates, their
    points, their d2). A point's (width, levels) terms are computed once; candidates are ranked by
    sums of pre-added coordinate pairs (half the gathers), or on long lists of groups of
    four (a quarter)."""
    width, m = xs.shape
    # built with the points on the last axis (long contiguous loops), then transposed so
    # that each point's entries are together for the gathers
    q = t.level_coords[:, None] if values is None else values.T
    diff = (q * scale)[None, :, :] - xs[:, None, :]
    by_coord = (ws[:, None, :] * diff) * diff  # (width, levels, M): C's weight*diff*diff
    by_pair = by_coord[1::2, :, None, :] + by_coord[0::2, None, :, :]
    terms = np.ascontiguousarray(by_coord.transpose(2, 0, 1))  # (M, width, levels)
    if cand.size > _QUADS_FROM * m:  # long lists (IQ1): groups of four, two gathers each
        by_quad = by_pair[1::2, :, :, None, None, :] + by_pair[0::2, None, None, :, :, :]
        groups, codes = np.ascontiguousarray(by_quad.reshape(-1, m).T), t.quad_codes
    else:
        groups, codes = np.ascontiguousarray(by_pair.reshape(-1, m).T), t.pair_codes
    approx = summed_terms(groups.reshape(-1), codes, cand, owner * groups.shape[1])
    lo = np.fmin.reduceat(approx, starts)
    limit = lo + lo * _NEAR_BEST
    # the bound needs terms >= 0 and finite sums: other points keep every candidate
    limit[~((ws >= 0).all(axis=0) & (lo < _SUM_SAFE))] = np.inf
    kept = ~(approx > gather(limit, owner))
    sel = np.flatnonzero(kept)
    owner, cand = gather(owner, sel), gather(cand, sel)
    d2 = summed_terms(terms.reshape(-1), t.term_codes, cand, owner * terms[0].size)
    return cand, owner, d2


def rounded_levels(v: F32Array, lmax: int) -> npt.NDArray[np.int8]:
    """``clamp(nearest_int(0.5*(v - 1)), 0, lmax)`` (``v`` = id * x), computed in place of
    ``v``: np.rint (also half to even) when every value is small enough, which it is but
    for inf/NaN input."""
    v -= F32(1)
    v *= F32(0.5)
    if not (v.max(initial=F32(0)) < RINT_SAFE and v.min(initial=F32(0)) > -RINT_SAFE):
        out: npt.NDArray[np.int8] = np.clip(_nearest_int(v), 0, lmax).astype(np.int8)
        return out
    np.rint(v, out=v)
    np.clip(v, F32(0), F32(lmax), out=v)
    return v.astype(np.int8)


def packed_levels(v: F32Array, lmax: int, t: SearchTables, bound: float = np.inf) -> I64Array:
    """``pack_points(rounded_levels(v, lmax), t)`` for ``v`` (..., elements, groups),
    flattened to (points, groups), packed in float32 (exact: at most 16 bits) without
    the int8 levels. ``v`` is overwritten. ``bound``: a bound on ``|v|`` the caller
    knows, which spares the two passes that check ``v`` is in ``np.rint``'s safe range."""
    width, n = t.coords.shape[1], v.shape[-1]
    v -= F32(1)
    v *= F32(0.5)
    if not (bound < RINT_SAFE) and not (
            v.max(initial=F32(0)) < RINT_SAFE and v.min(initial=F32(0)) > -RINT_SAFE):
        return pack_points(np.clip(_nearest_int(v), 0, lmax).reshape(-1, n), t)
    np.rint(v, out=v)
    np.clip(v, F32(0), F32(lmax), out=v)
    lv = v.reshape(-1, width, n)
    u = lv[:, width - 1].copy()
    for i in range(width - 2, -1, -1):  # Horner: coordinate 0 lowest
        u *= F32(1 << t.bits)
        u += lv[:, i]
    packed: I64Array = u.astype(np.int64)
    return packed


KnownNeighbours = Callable[[npt.NDArray[np.intp], npt.NDArray[np.intp], I64Array],
                           tuple[BoolArray, I64Array]]


def project(t: SearchTables, xval: F32Array, waux: F32Array, inv: F32Array,
            scale: F32Array, lmax: int, known: KnownNeighbours | None = None
            ) -> tuple[npt.NDArray[np.int8], I64Array, BoolArray]:
    """Round every point to ``nearest_int(0.5*(inv*x - 1))`` clamped to 0..lmax; points that
    are off the grid take their best neighbour at ``scale``.

    ``xval``, ``waux`` (elements, groups); ``inv``, ``scale`` (groups,). Returns levels
    (elements, groups), grid positions (points, groups) and whether each point was on the
    grid before the neighbour search. ``known(points, groups, packed indices)`` of the
    off-grid points, when given, says which best neighbours are already known (a mask)
    and what they are; only the others are searched.
    """
    lv = rounded_levels(inv * xval, lmax)
    u = pack_points(lv, t)
    gidx = t.kmap64.take(u)
    on = gidx >= 0
    if not on.all():
        p_idx, g_idx = hits_2d(~on)
        at = point_elements(p_idx, g_idx, t.coords.shape[1], xval.shape[1])
        u_off = u[p_idx, g_idx]
        found = np.empty(u_off.size, dtype=np.int64)
        miss: slice | npt.NDArray[np.intp] = slice(None)  # all: views, no copies
        if known is not None:
            hit, found = known(p_idx, g_idx, u_off)
            miss = np.flatnonzero(~hit)
        at_miss = at[:, miss]
        found[miss] = best_neighbour(t, u_off[miss], xval.take(at_miss), waux.take(at_miss),
                                     scale.take(g_idx[miss]))
        gidx[p_idx, g_idx] = found
        np.put(lv, at, t.levels[found].T)
    return lv, gidx, on


def prepare(x: F32Array, qw: F32Array | None, sub: int, sigma_factor: int
            ) -> tuple[F32Array, F32Array | None, F32Array]:
    """Blocks (n, 256) -> (values (sub, n*256/sub) element-major, the importance weights
    laid out the same way or None, ``sigma_factor * sum(x*x) / 256`` per sub-block)."""
    xt = np.ascontiguousarray(x.reshape(-1, sub).T)
    qt = None if qw is None else np.ascontiguousarray(qw.reshape(-1, sub).T)
    return xt, qt, block_sigma2(xt, QK_K // sub, sigma_factor)


def even_signs(xt: F32Array, w: F32Array) -> tuple[F32Array, npt.NDArray[np.uint8]]:
    """|x| with the sign parity of each group of 8 made even, as IQ2_XXS/IQ2_XS/IQ3_XXS do:
    an odd count of negatives flips the value with the least ``w*x*x`` (the first such)
    back to negative. Returns (xval (elements, n), 7-bit sign indices (elements/8, n))."""
    e, n = xt.shape
    x8 = xt.reshape(e // 8, 8, n)
    neg = ~(x8 >= 0)
    xval = np.where(neg, -x8, x8)
    signs = sign_bytes(neg)
    odd = neg.sum(axis=1) % 2 == 1
    imin = np.argmin((w.reshape(e // 8, 8, n) * x8) * x8, axis=1)
    k_idx, c_idx = hits_2d(odd)
    xval[k_idx, imin[k_idx, c_idx], c_idx] *= F32(-1)
    signs[k_idx, c_idx] ^= np.uint8(1) << imin[k_idx, c_idx].astype(np.uint8)
    out: npt.NDArray[np.uint8] = signs & np.uint8(127)
    return xval.reshape(e, n), out


def sign_bytes(neg: BoolArray) -> npt.NDArray[np.uint8]:
    """(groups of 8, 8, n) booleans -> (groups, n) bytes, element i at bit i."""
    bit = np.uint8(1) << np.arange(8, dtype=np.uint8)[:, None]
    out: npt.NDArray[np.uint8] = np.bitwise_or.reduce(np.where(neg, bit, np.uint8(0)), axis=1)
    return out


def super_scales(scales: F32Array, per_block: int, lmax: int = 15
                 ) -> tuple[F32Array, npt.NDArray[np.int64], BoolArray]:
    """Sub-block scales (n_sub,) -> (d = max/(2*lmax+1) per block, scale level per sub-block
    ``nearest_int(0.5*(s/d - 1))`` in 0..lmax, all-zero block)."""
    sc = scales.reshape(-1, per_block)
    max_scale = sc.max(axis=1, initial=F32(0))
    d = max_scale / F32(2 * lmax + 1)
    ls = np.clip(_nearest_int(F32(0.5) * ((F32(1) / d)[:, None] * sc - F32(1))), 0, lmax)
    return d, ls.astype(np.int64), max_scale == 0


def signed_values(vals: F32Array, sign_bits: BoolArray) -> F32Array:
    """``value * (sign ? -1.f : 1.f)``, as the dequantizers write it."""
    out: F32Array = vals * np.where(sign_bits, F32(-1), F32(1))
    return out


def grid_bytes(grid: np.ndarray, idx: npt.NDArray[np.integer]) -> F32Array:
    """Grid positions (..., points) -> the byte values of each entry, (..., points*width)."""
    v = np.ascontiguousarray(grid[idx]).view(np.uint8)
    return v.reshape(*idx.shape[:-1], -1).astype(np.float32)


def new_blocks(name: str, n: int) -> npt.NDArray[np.uint8]:
    """n zeroed blocks of type ``name``."""
    return np.zeros((n, GGML_QUANT_SIZES[GGMLQuantizationType[name]][1]), dtype=np.uint8)


class GridFormat(BlockFormat):
    """A lattice-grid type: ``codec`` = the ``encode(blocks, imatrix blocks or None)`` and
    ``decode(bytes)`` functions of its module; chunks small enough for the searches'
    temporaries."""

    codec: ClassVar[tuple[Callable[[F32Array, F32Array | None], npt.NDArray[np.uint8]],
                          Callable[[npt.NDArray[np.uint8]], F32Array]]]
    chunk_blocks = weighted_chunk_blocks = 256

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None
                ) -> npt.NDArray[np.uint8]:
        return self.codec[0](x, qw)

    def _decode(self, q: npt.NDArray[np.uint8]) -> F32Array:
        return self.codec[1](q)
