"""The sub-block scale search of the lattice types (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
IQ3_S), as ggml's ``quantize_row_iq2_*_impl`` / ``quantize_row_iq3_*_impl`` run it, with
every trial scale of a chunk rounded at once.

ggml tries a range of scales per sub-block (the ``is`` loop): each trial rounds every point
(``width`` values) to levels, replaces an off-grid point by its best grid neighbour at the
trial's scale (``iq_search.best_neighbour``), and keeps the trial with the largest
``sumqx^2/sumq2``. The neighbour searches are nearly all of the cost. Levels are
nondecreasing in the trial's inverse scale, so a point's packed index changes only a few
times over the trials (runs of about 5-6 trials). Within a run the candidates are fixed and
each is a line in the scale (below), so a run's winners follow from the lines at a few
scales (``run_winners``): one or two winners, proven over their trials. Runs of one or
two trials and whatever is not proven are searched trial by trial. A proof holds for every
scale between its part's ends, so the final re-projection at the best trial's scale takes
a proven winner wherever that scale falls between two trials of one proven part with the
same packed index (``_proven_between``: about 2 in 3 of its searches on IQ3_S).

Why the proven winner is C's: for a point with values ``x``, weights ``w`` and candidates
``c`` (coordinates ``q_c``), let ``f_c(s) = sum_i w_i (s q_ci - x_i)^2`` in exact
arithmetic: ``f_c(s) = s L_c(s) + sum w x^2`` with the line ``L_c(s) = A_c s - 2 B_c``
(``A = sum w q^2``, ``B = sum w q x``). Let ``N(s) = sum_i |w_i| (s qmax + |x_i|)^2``,
which grows with ``s``. C's float32 ``d2`` (per coordinate ``scale*q``, ``- x``,
``w*diff``, ``*diff``, then a running sum of ``width <= 8`` terms) differs from
``f_c(s)`` by at most ``E(s) = 13 * 2**-24 N(s)`` to first order: each term is within
six roundings of ``|w_i| (s q_i + |x_i|)^2`` of exact, and the running sum adds at most
seven more, as long as nothing overflows: every product, term and partial sum is at most
about ``N(s)``, so ``N(s_hi) < 2**126`` keeps them finite, and larger ones prove nothing.
``L_c - L_k`` is linear: if it exceeds ``2 E(s_hi) / s_lo`` at both ends of ``[s_lo,
s_hi]`` it does in between, so there every other candidate's C ``d2`` exceeds ``k``'s and
C's strict ``<`` picks ``k``.

The lines are computed in float32. Every partial sum of a line is at most ``N(s)/s`` in
size; each term (``(w q) q``, ``(w q) (-2x)``) rounds twice in float32, is summed in at
most three rounds (pairs and quads of terms, or in order), then ``A s - 2 B`` rounds
twice more: a line is within ``7 * 2**-24 N(s)/s`` of exact. The test, ``L_c > L_k +
margin``, rounds that sum once more (the margin is under ``2**-17 N(s)/s``): it is off the
exact comparison by less than ``16 * 2**-24 N(s)/s``. So the test asks a lead of ``48 *
2**-24 N(s_hi) / s_lo`` (``_LEAD``: 26 for C's roundings, 16 for the lines', 6 to spare;
second-order terms are some 2**-20 of these). ``N`` is summed in float32: its roundings,
some ``10 * 2**-24`` of it, come out of the spare.

Near float32's underflow a rounding may be off by up to ``2**-150`` whatever the size of
its result: at most 26 such in two candidates' ``d2`` (``26 * 2**-150 / s_lo`` in the
lines' units) and some 20 in the lines and the test (``2**-146 (1 + s)``). The margin adds
a floor for them, and for float32 underflow in ``N``: ``N(s_hi) + 2**-110 (1 + s_hi)^2``
(``_FLOOR``) in place of ``N(s_hi)``, whose extra ``_LEAD * 2**-110 (1 + s_hi)^2 / s_lo``
is at least ``48 * 2**-134 (1/s_lo + 1 + s_hi)``, over 2**10 times what they can cost.
NaN or infinite values fail the test (and are searched).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from modelkit.quant.kernels.common import F32, BoolArray, F32Array, I64Array, gather
from modelkit.quant.kernels.common import seq_sum as _seq_sum
from modelkit.quant.kernels.iq_search import (
    KnownNeighbours,
    best_neighbour,
    best_neighbour_twice,
    expand_lists,
    first_at,
    packed_levels,
    point_elements,
    project,
    summed_terms,
)
from modelkit.quant.kernels.iq_tables import SearchTables

_LEAD = 48 * 2.0**-24  # the lead asked of a winner's line, times N(s_hi) / s_lo: 2 E(s)
                       # for C's roundings (26), 16 for the float32 lines', 6 to spare
_FLOOR = 2.0**-110  # times (1 + s_hi)^2, added to N: roundings near float32 underflow
_NO_OVERFLOW = 2.0**126  # N(s) under this keeps every product, term and partial sum of
                         # C's d2 finite


@dataclass(frozen=True)
class ScaleSearch:
    """How one IQ type searches its sub-block scale (the C constants)."""

    kmaxq: int             # levels 0..kmaxq-1, coordinates 2l+1
    steps: range           # the ``is`` loop
    step: float            # id = (2*kmaxq - 1 + is*step) / base
    start_on_grid: bool    # is_on_grid[] before the loop
    refine: str            # "off-grid": re-project off-grid points; "all": every point
                           # when any is off grid; "always": every point, no tracking
    runs_per_call: int = 8192  # runs per run_winners call, so that its per-candidate
                               # arrays stay in cache: fewer for long neighbour lists
    short_run: int = 2     # runs of at most this many trials are searched trial by trial,
                           # which costs less than proving them (measured; IQ2_XS, with
                           # ~58-candidate lists, only single trials)


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
    trial_scale = F32(1) / inv
    lv, on, proj = _project_trials(t, xv, waux, inv, trial_scale, how)
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
                           how.kmaxq - 1, _proven_between(proj, trial_scale, scale, r))
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
                    scale: F32Array, how: ScaleSearch
                    ) -> tuple[npt.NDArray[np.int8], BoolArray, TrialPoints]:
    """``iq_search.project`` of every trial: ``inv``, ``scale`` (trials, n) -> levels
    (trials, elements, n) with off-grid points at their best neighbour, whether each
    point was on the grid (trials, points, n), and what ``_proven_between`` needs.

    Each run of one off-grid index over more than ``how.short_run`` consecutive trials
    gets its winners from ``run_winners``; what that cannot prove, and shorter runs, are
    searched trial by trial. A run's later trials then copy the grid position of the
    trial before them."""
    trials, lmax, per_call = inv.shape[0], how.kmaxq - 1, how.runs_per_call
    e, nc = xv.shape
    width = t.coords.shape[1]
    # |inv * x| <= max|inv| max|x| up to its float32 rounding; NaN or inf give no bound
    bound = float(np.abs(inv).max(initial=0)) * float(np.abs(xv).max(initial=0)) * 1.01 + 1
    u = np.empty((trials, e // width, nc), dtype=np.int64)
    for k in range(trials):  # one trial at a time: its (elements, n) floats stay in cache
        u[k] = packed_levels(inv[k] * xv, lmax, t, bound)
    gidx = gather(t.kmap64, u)
    on: BoolArray = gidx >= 0
    same_prev = np.zeros_like(on)
    same_prev[1:] = u[1:] == u[:-1]
    # the last trial of the run each entry belongs to (a loop over the trials: numpy's
    # accumulate along the first axis is several times slower)
    last_of = np.empty(on.shape, dtype=np.int8)
    last_of[-1] = trials - 1
    for k in range(trials - 2, -1, -1):
        last_of[k] = np.where(same_prev[k + 1], last_of[k + 1], np.int8(k))
    last = last_of.reshape(-1)
    first = np.flatnonzero(~on & ~same_prev)
    per_trial = on[0].size
    t_a, column = np.divmod(first, per_trial)
    t_b = last.take(first).astype(np.intp)
    flat_u, flat_gidx = u.reshape(-1), gidx.reshape(-1)
    # an entry that is not a head takes the grid position of the trial before it: the
    # rest of a run's trials after each part's first, which gets the part's winner
    head = ~same_prev
    flat_head = head.reshape(-1)
    # masks become index arrays once: np.take is several times faster than boolean
    # indexing, and most masks select from more than one array
    short = t_b - t_a < how.short_run
    two = short & (t_b == t_a + 1) if width == 4 else np.zeros_like(short)
    sel = np.flatnonzero(two)
    if sel.size:  # runs of two trials on the 4-wide grids: both searches at once
        at_a = column.take(sel) + t_a.take(sel) * per_trial
        tp, c = np.divmod(at_a, nc)
        trial, p = np.divmod(tp, e // width)
        at = point_elements(p, c, width, nc)
        pair = np.stack([trial * nc + c, (trial + 1) * nc + c])
        both = np.stack([at_a, at_a + per_trial])
        flat_gidx[both] = best_neighbour_twice(t, gather(flat_u, at_a), gather(xv, at),
                                               gather(waux, at), gather(scale, pair))
        flat_head[both] = True
    sel = np.flatnonzero(short & ~two)
    todo = [_trial_positions(t_a.take(sel), t_b.take(sel), column.take(sel), per_trial)[0]]
    sel = np.flatnonzero(~short)
    lo, hi, col = t_a.take(sel), t_b.take(sel), column.take(sel)
    for last_round in (False, True):
        # a point's runs side by side: its lines table is built once for all of them
        point_order = np.argsort(col, kind="stable")
        lo, hi, col = lo.take(point_order), hi.take(point_order), col.take(point_order)
        retry: list[tuple[npt.NDArray[np.intp], ...]] = []
        for i in range(0, lo.size, per_call):
            ta, tb, cc = lo[i:i + per_call], hi[i:i + per_call], col[i:i + per_call]
            new_point = np.ones(cc.size, dtype=bool)
            np.not_equal(cc[1:], cc[:-1], out=new_point[1:])
            points = cc[new_point]
            at = point_elements(points // nc, points % nc, width, nc)
            found = run_winners(t, gather(flat_u, cc + ta * per_trial), gather(xv, at),
                                gather(waux, at), scale, ta, tb, np.cumsum(new_point) - 1,
                                cc % nc)
            split = found.end_a < tb
            for side, p_lo, p_hi, winner, ok in (
                    (0, ta, found.end_a, found.winner_a, found.proven_a),
                    (1, found.end_a + 1, tb, found.winner_b, found.proven_b)):
                sel = np.flatnonzero(ok)
                part_first = cc.take(sel) + p_lo.take(sel) * per_trial
                flat_gidx[part_first] = winner.take(sel)
                flat_head[part_first] = True
                again = ~ok & split & (not last_round)
                sel = np.flatnonzero(~ok & ~again)
                todo.append(_trial_positions(p_lo.take(sel), p_hi.take(sel), cc.take(sel),
                                             per_trial)[0])
                # a failing part of a split run: nearly always a near-tie at its trial
                # next to the crossing, or a third winner; that trial is searched and
                # the rest tried once more
                sel = np.flatnonzero(again)
                edge = (p_hi if side == 0 else p_lo).take(sel)
                todo.append(cc.take(sel) + edge * per_trial)
                retry.append((p_lo.take(sel) + side, p_hi.take(sel) - (1 - side), cc.take(sel)))
        lo, hi, col = (np.concatenate([r[k] for r in retry]) if retry
                       else np.zeros(0, dtype=np.intp) for k in range(3))
        sel = np.flatnonzero(lo == hi)
        todo.append(col.take(sel) + lo.take(sel) * per_trial)
        sel = np.flatnonzero(hi > lo)
        lo, hi, col = lo.take(sel), hi.take(sel), col.take(sel)
    pos = np.concatenate(todo)
    if pos.size:
        tp, c = np.divmod(pos, nc)
        trial, p = np.divmod(tp, e // width)
        at = point_elements(p, c, width, nc)
        flat_gidx[pos] = best_neighbour(t, gather(flat_u, pos), gather(xv, at),
                                        gather(waux, at), gather(scale, trial * nc + c))
        flat_head[pos] = True
    follows = ~head
    for k in range(1, trials):
        np.copyto(gidx[k], gidx[k - 1], where=follows[k])
    # every point's levels from its grid position (on-grid ones: their rounding)
    by_point = t.level_bytes.take(gidx, axis=0).reshape(trials, e // width, nc, width)
    levels = np.ascontiguousarray(by_point.transpose(0, 1, 3, 2)).reshape(trials, e, nc)
    # an off-grid entry that is not a head copies the trial before it: both are in one
    # proven part of a run
    return levels, on, TrialPoints(u, gidx, follows & ~on)


class TrialPoints(NamedTuple):
    """Every trial's points (trials, points, n): packed indices, grid positions, and
    whether the entry and the one of the trial before are in one proven part."""

    u: I64Array
    gidx: I64Array
    proven_with_previous: BoolArray


def _proven_between(proj: TrialPoints, trial_scale: F32Array, scale: F32Array,
                    cols: npt.NDArray[np.intp]) -> KnownNeighbours:
    """The best neighbours already known at the final scales ``scale[cols]``: a point
    whose packed index there is that of two consecutive trials of one proven part whose
    scales bracket the final one takes the part's winner, which ``run_winners`` proved
    for every scale between its ends (trial scales do not grow with the trial)."""
    trials, points, nc = proj.u.shape
    s_f = scale.take(cols)
    # k: the last trial whose scale is >= the final one; the bracket is k, k + 1
    k = (trial_scale[:, cols] >= s_f).sum(axis=0) - 1
    valid = (k >= 0) & (k < trials - 1)
    nxt = np.where(valid, k + 1, 0)
    flat_u, flat_gidx = proj.u.reshape(-1), proj.gidx.reshape(-1)
    flat_proven = proj.proven_with_previous.reshape(-1)

    def known(p_idx: npt.NDArray[np.intp], g_idx: npt.NDArray[np.intp], u: I64Array
              ) -> tuple[BoolArray, I64Array]:
        at = (nxt.take(g_idx) * points + p_idx) * nc + cols.take(g_idx)
        hit: BoolArray = (gather(valid, g_idx) & gather(flat_proven, at)
                          & (gather(flat_u, at) == u))
        return hit, gather(flat_gidx, at)

    return known


def _trial_positions(lo: npt.NDArray[np.intp], hi: npt.NDArray[np.intp],
                     column: npt.NDArray[np.intp], per_trial: int
                     ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The flat positions of trials ``lo..hi`` (inclusive; none where ``hi < lo``) of
    each point ``column`` (its flat position within a trial), one range after another,
    and each range's length."""
    n = np.maximum(hi - lo + 1, 0)
    # entry k of range r: column[r] + (lo[r] + k - start[r]) * per_trial, start[r] the
    # number of entries before range r
    total = int(n.sum())
    pos: npt.NDArray[np.intp] = np.arange(0, total * per_trial, per_trial, dtype=np.intp)
    pos += np.repeat(column + (lo - (np.cumsum(n) - n)) * per_trial, n)
    return pos, n


@dataclass(frozen=True)
class RunWinners:
    """``run_winners``' answer for R runs: trials ``t_a..end_a`` take ``winner_a`` where
    ``proven_a``; trials ``end_a+1..t_b`` (none when ``end_a == t_b``) take ``winner_b``
    where ``proven_b``. Unproven parts must be searched."""

    winner_a: npt.NDArray[np.int64]
    end_a: npt.NDArray[np.intp]
    proven_a: BoolArray
    winner_b: npt.NDArray[np.int64]
    proven_b: BoolArray


def run_winners(t: SearchTables, u: npt.NDArray[np.int64], xs: F32Array, ws: F32Array,
                scales: F32Array, t_a: npt.NDArray[np.intp], t_b: npt.NDArray[np.intp],
                point: npt.NDArray[np.intp] | None = None,
                column: npt.NDArray[np.intp] | None = None) -> RunWinners:
    """C's neighbour-search winners over R runs, each one off-grid packed index ``u``
    (R,) of one point over trials ``t_a`` to ``t_b`` (R,) of its column's trial scales,
    column ``column[r]`` of ``scales`` (trials, C; default: C = R, column r), which do not
    grow with the trial. The points' values and weights are ``xs``, ``ws`` (width, P);
    run r is of point ``point[r]`` (default: P = R, run r of point r), so that runs of one
    point share its table of terms.

    Every candidate's ``L_c(s) = A_c s - 2 B_c`` is a line (module docstring), summed
    in float32 from a table of each point's terms. The least line at the first trial
    (``k_a``) and at the last (``k_b``) split the run where their lines cross; each part
    is proven when every other candidate's line is above its winner's by ``_LEAD *
    N(s_hi) / s_lo`` at both of its ends."""
    m = u.size
    cand, owner, starts, _ = expand_lists(t, u)
    q = t.level_coords[:, None]
    # (width, levels, P) A terms + i * -2B terms: (w q) q and (w q) (-2 x) in float32
    # (two roundings each; the factor -2 is exact), written into the halves of one complex
    # table (float64 products cast into those halves cost about six times as much)
    wq = ws[:, None, :] * q
    lines = np.empty(wq.shape, dtype=np.complex64)
    np.multiply(wq, q, out=lines.real)
    np.multiply(wq, F32(-2) * xs[:, None, :], out=lines.imag)
    qmax = float(t.level_coords[-1])
    err = _error_terms(xs, ws, qmax)
    run_point = np.arange(m) if point is None else point
    ab = _candidate_sums(t, lines, cand, gather(run_point, owner), xs.shape[1])
    err = err.take(run_point, axis=1)  # per run from here
    a, b2 = ab.real, ab.imag  # A and -2B
    # no copy: the callers' scales are float32 and contiguous
    flat_s = np.ascontiguousarray(scales, dtype=np.float32).reshape(-1)
    col = np.arange(m) if column is None else column
    n_col = scales.shape[1]

    def scale_at(trial: npt.NDArray[np.intp], cols: npt.NDArray[np.intp] = col) -> F32Array:
        out: F32Array = gather(flat_s, trial * n_col + cols)
        return out

    s_a, s_b = scale_at(t_a), scale_at(t_b)

    def line_at(s: F32Array) -> F32Array:
        out: F32Array = a * gather(s, owner)
        out += b2
        return out

    l_a, l_b = line_at(s_a), line_at(s_b)
    # a candidate above its list's first by more than the run's margin at both ends (so
    # in between) is neither least nor failing any part's test: only the rest go on
    # (compared as l > first + margin: the sum's rounding stands in for the difference's)
    thr = _margin(err, s_a, s_b)
    keep = ~((l_a > gather(gather(l_a, starts) + thr, owner))
             & (l_b > gather(gather(l_b, starts) + thr, owner)))
    keep[starts] = True
    sel = np.flatnonzero(keep)
    cand, owner = gather(cand, sel), gather(owner, sel)
    l_a, l_b = gather(l_a, sel), gather(l_b, sel)
    a, b2 = gather(a, sel), gather(b2, sel)
    starts = np.zeros(m, dtype=np.intp)
    np.cumsum(np.bincount(owner, minlength=m)[:-1], out=starts[1:])
    k_a, k_b = _least(l_a, owner, starts), _least(l_b, owner, starts)
    # where k_b's line crosses k_a's: the trials above it (larger scales) are k_a's
    with np.errstate(all="ignore"):
        cross = (gather(b2, k_a) - gather(b2, k_b)) / (gather(a, k_b) - gather(a, k_a))
    # the scales do not grow with the trial: those above the crossing are the first ones,
    # found by bisection (each split run's first trial at or below it, or t_b + 1)
    end_a = t_b.copy()
    two = np.flatnonzero(k_a != k_b)
    lo, hi, last = gather(t_a, two), gather(t_b, two) + 1, gather(t_b, two)
    two_col, cross = gather(col, two), gather(cross, two)
    while True:
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) >> 1
        up = scale_at(np.minimum(mid, last), two_col) > cross
        lo = np.where(active & up, mid + 1, lo)
        hi = np.where(active & ~up, mid, hi)
    end_a[two] = np.maximum(lo - 1, gather(t_a, two))
    start_b = np.minimum(end_a + 1, t_b)
    s_end_a, s_start_b = scale_at(end_a), scale_at(start_b)
    proven_a = _proven(l_a, line_at(s_end_a), k_a, owner, err, s_a, s_end_a)
    proven_b = _proven(line_at(s_start_b), l_b, k_b, owner, err, s_start_b, s_b)
    return RunWinners(gather(cand, k_a).astype(np.int64), end_a, proven_a,
                      gather(cand, k_b).astype(np.int64), proven_b & (end_a < t_b))


def _candidate_sums(t: SearchTables, terms: npt.NDArray[np.complex64],
                    cand: npt.NDArray[np.intp], owner: npt.NDArray[np.intp], m: int
                    ) -> npt.NDArray[np.complex64]:
    """Each candidate's sum of its coordinates' ``terms`` (width, levels, M); on the
    8-wide grids through pre-added groups of four coordinates (a quarter of the
    gathers)."""
    if terms.shape[0] == 8:  # quads: two gathers; the table is cheap, the gathers not
        pairs = terms[1::2, :, None, :] + terms[0::2, None, :, :]  # (4, nl, nl, M)
        quads = pairs[1::2, :, :, None, None, :] + pairs[0::2, None, None, :, :, :]
        return summed_terms(quads.reshape(-1), t.quad_codes * m, cand, owner)
    return summed_terms(terms.reshape(-1), t.term_codes * m, cand, owner)


def _least(v: F32Array, owner: npt.NDArray[np.intp], starts: npt.NDArray[np.intp]
           ) -> npt.NDArray[np.intp]:
    """Each list's position of its first least value (lists grouped by ``owner``, in
    order, starting at ``starts``); NaN is never least, and a list without a number gives
    its first position. Any position would do where the answer is not the least: ``_proven``
    rejects it."""
    least = np.full(starts.size, np.inf, dtype=np.float32)
    np.fmin.at(least, owner, v)
    hits = first_at(v, least, owner)
    out: npt.NDArray[np.intp] = starts.copy()
    out[gather(owner, hits)] = hits
    return out


def _proven(l_1: F32Array, l_2: F32Array,
            k: npt.NDArray[np.intp], owner: npt.NDArray[np.intp],
            err: F32Array, s_1: F32Array, s_2: F32Array) -> BoolArray:
    """Whether candidate ``k`` of each list is C's winner at every scale from ``s_1`` to
    ``s_2``, given every candidate's line there (``l_1``, ``l_2``): every other line above
    ``k``'s by more than the margin (``_margin``) at both ends. NaN, infinite or
    non-positive scales and C sums that may overflow fail."""
    thr = _margin(err, s_1, s_2)
    ok = ((l_1 > gather(gather(l_1, k) + thr, owner))
          & (l_2 > gather(gather(l_2, k) + thr, owner)))
    # k itself fails (l_k > l_k + thr is false for thr >= 0): proven when it is the only one
    fails = np.bincount(gather(owner, np.flatnonzero(~ok)), minlength=s_1.size)
    proven: BoolArray = (fails == 1) & (np.minimum(s_1, s_2) > 0) & np.isfinite(thr)
    return proven


def _error_terms(xs: F32Array, ws: F32Array, qmax: float) -> F32Array:
    """Each point's ``N(s) = sum_i |w_i| (s qmax + |x_i|)^2`` (module docstring) as a
    quadratic in ``s``: (3, points), the coefficients of ``s**2``, ``s`` and 1, in
    float32 (module docstring: roundings and underflow are inside the lead's spare and
    floor)."""
    aw, ax = np.abs(ws), np.abs(xs)
    with np.errstate(over="ignore", under="ignore"):  # inf: the margin is NaN
        out: F32Array = np.stack([
            F32(qmax * qmax) * aw.sum(axis=0), F32(2 * qmax) * (aw * ax).sum(axis=0),
            (aw * ax * ax).sum(axis=0)])
    return out


def _margin(err: F32Array, s_1: F32Array, s_2: F32Array) -> F32Array:
    """``_LEAD * (N(s_hi) + _FLOOR (1 + s_hi)^2) / s_lo`` over ``[s_lo, s_hi]`` (the ends
    ``s_1``, ``s_2`` in either order; ``N`` from ``_error_terms``), in float32: how far
    every other line must be above the winner's at both ends (module docstring); NaN
    where ``N(s_hi) >= _NO_OVERFLOW``."""
    s_lo = np.minimum(s_1, s_2)
    s_hi = np.maximum(s_1, s_2)
    with np.errstate(all="ignore"):
        n_hi = (err[0] * s_hi + err[1]) * s_hi + err[2]
        one_s = F32(1) + s_hi
        thr: F32Array = F32(_LEAD) * (n_hi + F32(_FLOOR) * (one_s * one_s)) / s_lo
    # where C's d2 may overflow (values near float32's limit) the bound E does not hold:
    # NaN, which proves nothing and drops nothing
    thr[~(n_hi < _NO_OVERFLOW)] = np.nan
    return thr
