"""The sub-block scale search of the lattice types (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
IQ3_S), as ggml's ``quantize_row_iq2_*_impl`` / ``quantize_row_iq3_*_impl`` run it, with
every trial scale of a chunk rounded at once.

ggml tries a range of scales per sub-block (the ``is`` loop): each trial rounds every point
(``width`` values) to levels, replaces an off-grid point by its best grid neighbour at the
trial's scale (``iq_search.best_neighbour``), and keeps the trial with the largest
``sumqx^2/sumq2``. The neighbour searches are nearly all of the cost. Levels are
nondecreasing in the trial's inverse scale, so a point's packed index changes only a few
times over the trials (runs of about 5-6 trials): each run of one off-grid index is
searched at its two ends, and the trials in between take the ends' winner when it
provably wins there too; otherwise they are searched as well.

Why the carried-over winner is C's: for a point with values ``x``, weights ``w`` and
candidates ``c`` (coordinates ``q_c``), let ``f_c(s) = sum_i w_i (s q_ci - x_i)^2`` in exact
arithmetic. ``f_c(s) - f_k(s) = s * ((A_c - A_k) s - 2 (B_c - B_k))`` (``A = sum w q^2``,
``B = sum w q x``) is ``s`` times a linear function of ``s``: if it is positive at two
scales ``s1, s2 > 0`` it is at least ``s * min(D(s1)/s1, D(s2)/s2)`` in between. C's
float32 ``d2`` differs from ``f_c(s)`` by less than ``E(s) = 2**-18 * sum_i |w_i| (2 s
qmax + |x_i|)^2`` (about ten roundings of each term, with a wide margin), which grows with
``s``. So when both ends pick the same winner ``k`` and every other candidate's C ``d2``
is more than ``2 E`` above it at each end (``R = min over ends (gap - 2 E)/s``), then in
between every other candidate's C ``d2`` exceeds ``k``'s whenever ``s_lo * R > 2 E(s_hi)``:
C's strict ``<`` picks ``k`` there. NaN or infinite values fail the test (and are
searched).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelkit.quant.kernels.common import F32, BoolArray, F32Array
from modelkit.quant.kernels.common import seq_sum as _seq_sum
from modelkit.quant.kernels.iq_search import (
    best_neighbour_gap,
    pack_points,
    point_elements,
    project,
    rounded_levels,
)
from modelkit.quant.kernels.iq_tables import SearchTables

_ERR = 2.0**-18  # E(s)'s factor: far above the ~10 float32 roundings (2**-24 each) of a term


@dataclass(frozen=True)
class ScaleSearch:
    """How one IQ type searches its sub-block scale (the C constants)."""

    kmaxq: int             # levels 0..kmaxq-1, coordinates 2l+1
    steps: range           # the ``is`` loop
    step: float            # id = (2*kmaxq - 1 + is*step) / base
    start_on_grid: bool    # is_on_grid[] before the loop
    refine: str            # "off-grid": re-project off-grid points; "all": every point
                           # when any is off grid; "always": every point, no tracking


def fit_scale(t: SearchTables, xval: F32Array, weight: F32Array, base: F32Array,
              scale0: F32Array, active: BoolArray, how: ScaleSearch
              ) -> tuple[npt.NDArray[np.int8], F32Array]:
    """The scale search of one sub-block per column: levels (elements, n) and scales (n,).

    ``base`` is the value the trial inverse scales divide (the sub-block max, or IQ2_XXS's
    effective max), ``scale0`` the scale kept when no trial improves; inactive columns get
    zero levels and scale 0."""
    e, n = xval.shape
    levels = np.zeros((e, n), dtype=np.int8)
    scales = np.zeros(n, dtype=np.float32)
    cols = np.flatnonzero(active)
    if cols.size == 0:
        return levels, scales
    xv, w, m = xval[:, cols], weight[:, cols], base[cols]
    waux = np.sqrt(w)
    width = t.coords.shape[1]
    nc = cols.size
    steps = np.array([F32(s) * F32(how.step) for s in how.steps], dtype=np.float32)
    inv = (F32(2 * how.kmaxq - 1) + steps)[:, None] / m  # (trials, nc): C's id
    lv, on = _project_trials(t, xv, waux, inv, F32(1) / inv, how.kmaxq - 1)
    best = np.zeros(nc, dtype=np.float32)
    scale = scale0[cols]
    pick = np.full(nc, -1, dtype=np.intp)
    wx = w * xv
    for trial in range(len(steps)):  # C's comparisons, trial after trial
        q = F32(2) * lv[trial].astype(np.float32) + F32(1)
        sumqx = _seq_sum(wx * q)
        sumq2 = _seq_sum(w * q * q)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        scale = np.where(better, sumqx / sumq2, scale)
        best = np.where(better, scale * sumqx, best)
        pick = np.where(better, trial, pick)
    c_idx = np.arange(nc)
    chosen = pick >= 0
    L = np.where(chosen, lv[np.maximum(pick, 0), :, c_idx].T, np.int8(0))
    on_grid = np.where(chosen, on[np.maximum(pick, 0), :, c_idx].T, how.start_on_grid)
    redo = scale > 0
    if how.refine != "always":
        redo &= (~on_grid).any(axis=0)
    if redo.any():
        r = np.flatnonzero(redo)
        lr, _, _ = project(t, xv[:, r], waux[:, r], F32(1) / scale[r], scale[r],
                           how.kmaxq - 1)
        if how.refine == "off-grid":
            lr = np.where(np.repeat(on_grid[:, r], width, axis=0), L[:, r], lr)
        L[:, r] = lr
        q = F32(2) * lr.astype(np.float32) + F32(1)
        sumqx = _seq_sum(w[:, r] * xv[:, r] * q)
        sumq2 = _seq_sum(w[:, r] * q * q)
        scale[r] = np.where(sumq2 > 0, sumqx / sumq2, scale[r])
    levels[:, cols] = L
    scales[cols] = scale
    return levels, scales


def _project_trials(t: SearchTables, xv: F32Array, waux: F32Array, inv: F32Array,
                    scale: F32Array, lmax: int
                    ) -> tuple[npt.NDArray[np.int8], BoolArray]:
    """``iq_search.project`` of every trial: ``inv``, ``scale`` (trials, n) -> levels
    (trials, elements, n) with off-grid points at their best neighbour, and whether each
    point was on the grid (trials, points, n).

    Each run of one off-grid index over consecutive trials is searched at its ends; the
    trials in between take the ends' winner where it provably wins (module docstring),
    else the middle trial is searched and both halves are tried again."""
    trials = inv.shape[0]
    e, nc = xv.shape
    width = t.coords.shape[1]
    lv = rounded_levels(inv[:, None, :] * xv, lmax)
    u = pack_points(lv.reshape(trials * e, nc), t).reshape(trials, e // width, nc)
    gidx = t.kmap[u].astype(np.int64)
    on: BoolArray = gidx >= 0
    if on.all():
        return lv, on
    runs = _Runs(t, xv, waux, scale, u, gidx)
    off = ~on
    same_prev = np.zeros_like(on)
    same_prev[1:] = u[1:] == u[:-1]
    steps = np.arange(trials)[:, None, None]
    # the last trial of the run each entry belongs to
    last = np.minimum.accumulate(np.where(same_prev[1:], trials - 1, steps[:-1])[::-1],
                                 axis=0)[::-1]
    last = np.concatenate([last, np.full((1, *on.shape[1:]), trials - 1)]).reshape(-1)
    first = np.flatnonzero(off & ~same_prev)
    per_trial = on[0].size
    t_a, column = np.divmod(first, per_trial)
    t_b = last.take(first)
    runs.search(np.concatenate([first, (column + t_b * per_trial)[t_b > t_a]]))
    open_ = t_b - t_a >= 2
    t_a, t_b, column = t_a[open_], t_b[open_], column[open_]
    while t_a.size:
        carry = runs.carries(column + t_a * per_trial, column + t_b * per_trial)
        runs.fill(t_a[carry], t_b[carry], column[carry])
        t_a, t_b, column = t_a[~carry], t_b[~carry], column[~carry]
        mid = (t_a + t_b) // 2
        runs.search(column + mid * per_trial)
        t_a, t_b, column = np.concatenate([t_a, mid]), np.concatenate([mid, t_b]), \
            np.concatenate([column, column])
        open_ = t_b - t_a >= 2
        t_a, t_b, column = t_a[open_], t_b[open_], column[open_]
    # every point's levels from its grid position (on-grid ones: their rounding)
    by_point = t.level_bytes.take(runs.gidx, axis=0).reshape(trials, e // width, nc, width)
    return np.ascontiguousarray(by_point.transpose(0, 1, 3, 2)).reshape(trials, e, nc), on


def margin(xs: F32Array, ws: F32Array, s: F32Array, least: F32Array, second: F32Array,
           qmax: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """A searched point's ``E(s)`` (the bound of C's rounding of any candidate's d2) and
    ``R = (second - least - 2 E) / s`` (``best_neighbour_gap``'s least d2 and its bound
    of the others'): a lower bound of ``(f_c(s) - f_winner(s)) / s`` over the others."""
    s64 = s.astype(np.float64)
    err = _ERR * (np.abs(ws.astype(np.float64))
                  * (2 * s64 * qmax + np.abs(xs.astype(np.float64))) ** 2).sum(axis=0)
    ratio: npt.NDArray[np.float64] = (second.astype(np.float64) - least - 2 * err) / s64
    return err, ratio


def carries(win_a: npt.NDArray[np.int64], win_b: npt.NDArray[np.int64], s_a: F32Array,
            s_b: F32Array, at_a: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
            at_b: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]) -> BoolArray:
    """Whether one point's winner at scales ``s_a`` and ``s_b`` (with ``margin``'s
    ``(E, R)`` there) is C's winner at every scale between them: the same winner, and
    ``s_lo * min(R) > 2 * E(s_hi)`` (module docstring). NaN fails."""
    s_lo = np.minimum(s_a, s_b).astype(np.float64)
    r = np.minimum(at_a[1], at_b[1])
    ok: BoolArray = ((win_a == win_b) & (s_lo > 0) & np.isfinite(s_lo)
                     & (r * s_lo > 2 * np.maximum(at_a[0], at_b[0])))
    return ok


class _Runs:
    """The neighbour searches of ``_project_trials`` over flat (trial, point, column)
    positions, with each searched position's winner, error bound ``E`` and ratio ``R``."""

    def __init__(self, t: SearchTables, xv: F32Array, waux: F32Array, scale: F32Array,
                 u: npt.NDArray[np.int64], gidx: npt.NDArray[np.int64]) -> None:
        self.t, self.xv, self.waux = t, xv, waux
        self.scale = scale.reshape(-1)
        self.u = u.reshape(-1)
        self.gidx = gidx.reshape(-1)
        self.nc = xv.shape[1]
        self.points = u.shape[1]
        self.err = np.zeros(u.size)
        self.ratio = np.zeros(u.size)

    def search(self, pos: npt.NDArray[np.intp]) -> None:
        if not pos.size:
            return
        width = self.t.coords.shape[1]
        tp, c = np.divmod(pos, self.nc)
        trial, p = np.divmod(tp, self.points)
        at = point_elements(p, c, width, self.nc)
        xs, ws = self.xv.take(at), self.waux.take(at)
        s = self.scale.take(trial * self.nc + c)
        found, least, second = best_neighbour_gap(self.t, self.u.take(pos), xs, ws, s)
        self.gidx[pos] = found
        self.err[pos], self.ratio[pos] = margin(xs, ws, s, least, second,
                                                float(self.t.level_coords[-1]))

    def carries(self, a: npt.NDArray[np.intp], b: npt.NDArray[np.intp]) -> BoolArray:
        """Whether the winner at positions ``a`` (searched) provably wins at every trial
        up to ``b`` (searched, same point and index)."""
        per_trial = self.points * self.nc
        c = a % self.nc
        return carries(self.gidx.take(a), self.gidx.take(b),
                       self.scale.take((a // per_trial) * self.nc + c),
                       self.scale.take((b // per_trial) * self.nc + c),
                       (self.err.take(a), self.ratio.take(a)),
                       (self.err.take(b), self.ratio.take(b)))

    def fill(self, t_a: npt.NDArray[np.intp], t_b: npt.NDArray[np.intp],
             column: npt.NDArray[np.intp]) -> None:
        """Trials strictly between ``t_a`` and ``t_b`` take the winner at ``t_a``."""
        n = t_b - t_a - 1
        if not n.size:
            return
        per_trial = self.points * self.nc
        winner = self.gidx.take(column + t_a * per_trial)
        k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        self.gidx[np.repeat(column + t_a * per_trial, n) + (k + 1) * per_trial] = np.repeat(
            winner, n)
