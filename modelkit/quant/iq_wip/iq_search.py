"""Searches shared by the IQ1/IQ2/IQ3 quantizers, vectorised across groups.

Arrays are element-major: ``(elements, groups)``, so that ``_seq_sum`` adds values in C
loop order (float32, one rounding per operation, no FMA). A *point* is ``width`` (8 or 4)
consecutive elements; its packed index ``u`` (``bits`` per coordinate, coordinate 0 lowest)
selects a ``kmap`` entry: a grid position, or a list of neighbours to search
(``iq_tables``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelkit.quant.iq_wip.iq_tables import SearchTables
from modelkit.quant.kernels import _nearest_int, _seq_sum

F32 = np.float32
F32Array = npt.NDArray[np.float32]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

__all__ = ["best_neighbour", "grid_levels", "pack_points", "project", "sequential_sum",
           "sub_block_weights"]

sequential_sum = _seq_sum


def sub_block_weights(xt: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> F32Array:
    """The searches' weights: ``qw * sqrtf(sigma2 + x*x)`` with an importance matrix, else
    ``x*x``. ``xt``, ``qw`` (elements, groups); ``sigma2`` (groups,)."""
    if qw is None or sigma2 is None:
        out: F32Array = xt * xt
        return out
    out = qw * np.sqrt(sigma2 + xt * xt)
    return out


def block_sigma2(xt: F32Array, per_block: int) -> F32Array:
    """``2 * sum(x*x) / 256`` of each 256-value block, repeated for its ``per_block`` groups.
    ``xt`` (elements, groups) holds consecutive groups of one block side by side."""
    e, n = xt.shape
    sq = (xt * xt).reshape(e, n // per_block, per_block).transpose(2, 0, 1)
    sumx2 = _seq_sum(np.ascontiguousarray(sq.reshape(e * per_block, n // per_block)))
    sigma2: F32Array = F32(2) * sumx2 / F32(e * per_block)
    return np.repeat(sigma2, per_block)


def pack_points(levels: npt.NDArray[np.integer], t: SearchTables) -> I64Array:
    """(elements, groups) levels -> (points, groups) packed kmap indices."""
    width = t.coords.shape[1]
    lv = levels.reshape(-1, width, levels.shape[-1]).astype(np.int64)
    u: I64Array = lv[:, 0].copy()
    for i in range(1, width):
        u |= lv[:, i] << (t.bits * i)
    return u


def grid_levels(t: SearchTables, gidx: I64Array) -> npt.NDArray[np.int8]:
    """Grid positions (points, groups) -> levels (points*width, groups): (coord - 1) / 2."""
    lv = ((t.coords[gidx] - 1) // 2).astype(np.int8)  # (points, groups, width)
    return np.ascontiguousarray(lv.transpose(0, 2, 1)).reshape(-1, gidx.shape[-1])


def best_neighbour(t: SearchTables, u: I64Array, xs: F32Array, ws: F32Array,
                   scale: F32Array) -> I64Array:
    """``iq*_find_best_neighbour`` for M off-grid points at once.

    ``u`` (M,) packed indices with ``kmap[u] < 0``; ``xs``, ``ws`` (M, width) values and
    weights; ``scale`` (M,). Minimises ``sum_i ws*(scale*q - x)^2`` (summed in order) over
    the neighbour list of each point; the first minimum wins.
    """
    off = -t.kmap[u].astype(np.int64) - 1
    counts = t.neighbours[off].astype(np.int64)
    total = int(counts.sum())
    seg = np.repeat(np.arange(len(u)), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(total) - starts[seg] + off[seg] + 1
    cand = t.neighbours[pos].astype(np.int64)
    q = t.coords[cand].astype(np.float32)  # (total, width)
    sc = scale[seg]
    d2 = np.zeros(total, dtype=np.float32)
    for i in range(q.shape[1]):
        diff = sc * q[:, i] - xs[seg, i]
        d2 += (ws[seg, i] * diff) * diff
    best = np.minimum.reduceat(d2, starts)
    first = np.minimum.reduceat(np.where(d2 == best[seg], np.arange(total), total), starts)
    out: I64Array = cand[np.minimum(first, total - 1)]
    return out


def project(t: SearchTables, xval: F32Array, waux: F32Array, inv: F32Array,
            scale: F32Array, lmax: int) -> tuple[npt.NDArray[np.int8], I64Array, BoolArray]:
    """Round every point to ``nearest_int(0.5*(inv*x - 1))`` clamped to 0..lmax; points that
    are off the grid take their best neighbour at ``scale``.

    ``xval``, ``waux`` (elements, groups); ``inv``, ``scale`` (groups,). Returns levels
    (elements, groups), grid positions (points, groups) and whether each point was on the
    grid before the neighbour search.
    """
    lv = np.clip(_nearest_int(F32(0.5) * (inv * xval - F32(1))), 0, lmax).astype(np.int8)
    u = pack_points(lv, t)
    gidx = t.kmap[u].astype(np.int64)
    on = gidx >= 0
    if not on.all():
        width = t.coords.shape[1]
        p_idx, g_idx = np.nonzero(~on)
        xs = xval.reshape(-1, width, xval.shape[-1])[p_idx, :, g_idx]
        ws = waux.reshape(-1, width, waux.shape[-1])[p_idx, :, g_idx]
        found = best_neighbour(t, u[p_idx, g_idx], xs, ws, scale[g_idx])
        gidx[p_idx, g_idx] = found
        lv3 = lv.reshape(-1, width, lv.shape[-1])
        lv3[p_idx, :, g_idx] = (t.coords[found] - 1) // 2
    return lv, gidx, on
