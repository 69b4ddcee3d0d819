"""iq_scale.fit_scale, which takes a run of trials' neighbour winners from the candidates'
lines where it can prove them, against a plain trial-by-trial replay of ggml's scale loop."""

from __future__ import annotations

import numpy as np
import pytest

from modelkit.quant.kernels import iq2, iq3, iq_scale, iq_search, iq_tables
from modelkit.quant.kernels.common import F32, seq_sum

SEARCHES = {"IQ2_XXS": iq2._XXS, "IQ2_XS": iq2._XS, "IQ2_S": iq2._XS,
            "IQ3_XXS": iq3._XXS, "IQ3_S": iq3._S}


def _trial_by_trial(t: iq_tables.SearchTables, xv: np.ndarray, w: np.ndarray,
                    base: np.ndarray, scale0: np.ndarray, how: iq_scale.ScaleSearch
                    ) -> tuple[np.ndarray, np.ndarray]:
    """ggml's loop as written: every trial projects every point (iq_search.project,
    itself checked against the C neighbour loop), then the C comparisons."""
    e, n = xv.shape
    width = t.coords.shape[1]
    waux = np.sqrt(w)
    best = np.zeros(n, dtype=np.float32)
    scale = scale0.copy()
    L = np.zeros((e, n), dtype=np.int8)
    on_grid = np.full((e // width, n), how.start_on_grid)
    for step in how.steps:
        inv = (F32(2 * how.kmaxq - 1) + F32(step) * F32(how.step)) / base
        lv, _, on = iq_search.project(t, xv, waux, inv, F32(1) / inv, how.kmaxq - 1)
        q = F32(2) * lv.astype(np.float32) + F32(1)
        sumqx, sumq2 = seq_sum(w * xv * q), seq_sum(w * q * q)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        scale = np.where(better, sumqx / sumq2, scale)
        best = np.where(better, scale * sumqx, best)
        L = np.where(better, lv, L)
        on_grid = np.where(better, on, on_grid)
    redo = scale > 0
    if how.refine != "always":
        redo &= (~on_grid).any(axis=0)
    for c in np.flatnonzero(redo):
        lv, _, _ = iq_search.project(t, xv[:, c:c + 1], waux[:, c:c + 1],
                                     F32(1) / scale[c:c + 1], scale[c:c + 1], how.kmaxq - 1)
        if how.refine == "off-grid":
            lv = np.where(np.repeat(on_grid[:, c:c + 1], width, axis=0), L[:, c:c + 1], lv)
        L[:, c:c + 1] = lv
        q = F32(2) * lv.astype(np.float32) + F32(1)
        sumqx, sumq2 = seq_sum(w[:, c:c + 1] * xv[:, c:c + 1] * q), seq_sum(
            w[:, c:c + 1] * q * q)
        scale[c] = sumqx[0] / sumq2[0] if sumq2[0] > 0 else scale[c]
    return L, scale


def _columns(rng: np.random.Generator, e: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-block values (magnitudes) and weights, with the cases that make neighbours tie
    or nearly tie: repeated values, values on rounding midpoints, equal and zero weights,
    one huge value, denormals, NaN."""
    xv = np.abs(rng.standard_normal((e, n))).astype(np.float32)
    w = (rng.random((e, n)) + 0.1).astype(np.float32)
    xv[:, 0:40] = xv[0, 0:40]  # all values equal
    xv[::2, 40:80] = xv[1::2, 40:80]  # pairs of equal values
    xv[:, 80:120] = np.round(xv[:, 80:120] * 4) / 4  # on a lattice: rounding midpoints
    w[:, 40:160] = 1
    w[: e // 2, 160:200] = 0
    xv[3, 200:220] = 1e30
    xv[:, 220:240] *= np.float32(1e-40)
    xv[5, 240:250] = np.nan
    w[:, 250:300] = (w[:, 250:300] * 1e-3).astype(np.float32)
    return xv, w


@pytest.mark.parametrize("qtype", sorted(SEARCHES))
def test_fit_scale_matches_a_trial_by_trial_replay(qtype: str) -> None:
    t = iq_tables.search_tables(qtype)
    how = SEARCHES[qtype]
    e = 32 if qtype in ("IQ2_XXS", "IQ3_XXS", "IQ3_S") else 16
    rng = np.random.default_rng(11)
    xv, w = _columns(rng, e, 600)
    with np.errstate(all="ignore"):
        base = xv.max(axis=0)
        scale0 = base / F32(7)
        active = ~(base < F32(1e-30))
        got_l, got_s = iq_scale.fit_scale(t, xv, w, base, scale0, active, how)
        cols = np.flatnonzero(active)
        ref_l, ref_s = _trial_by_trial(t, xv[:, cols], w[:, cols], base[cols],
                                       scale0[cols], how)
    assert np.array_equal(got_l[:, cols], ref_l)
    assert np.array_equal(got_s[cols].view(np.uint32), ref_s.view(np.uint32))
    assert not got_l[:, ~active].any() and not got_s[~active].any()


@pytest.mark.parametrize("qtype", ["IQ2_XXS", "IQ2_S", "IQ3_XXS", "IQ3_S"])
def test_run_winners_are_the_c_winners_at_every_scale_of_their_parts(qtype: str) -> None:
    """Runs over which the best neighbour changes once or more, or nearly (values between
    the grid coordinates, ties, zero weights): wherever ``run_winners`` proves a part,
    the C loop (``best_neighbour``) picks its winner at each of the part's trial scales
    and at 12 scales between each two; same-winner runs, split runs and unproven parts
    all occur."""
    t = iq_tables.search_tables(qtype)
    rng = np.random.default_rng(8)
    m, width, trials = 3000, t.coords.shape[1], 19
    u = rng.choice(np.flatnonzero(t.kmap < 0), m).astype(np.int64)
    top = (rng.random(m) + 0.5).astype(np.float32)
    # decreasing trial scales, up to ~20% apart over a run
    steps = np.sort(rng.random((trials, m)), axis=0) * rng.random(m) * 0.2
    scales = (top * (1 - steps)).astype(np.float32)
    xs = ((rng.random((width, m)) * 2 * (t.nlevels - 1) + 1) * top).astype(np.float32)
    ws = (rng.random((width, m)) + 0.01).astype(np.float32)
    xs[:, :300] = 2 * top[:300]  # ties
    ws[:, :300] = 1
    ws[: width // 2, 300:400] = 0
    t_a = rng.integers(0, trials - 1, m)
    t_b = np.minimum(t_a + rng.integers(1, 10, m), trials - 1)
    first = iq_scale.run_winners(t, u, xs, ws, scales, t_a, t_b)
    # near-crossings: the last trial of a split run's first part moved onto the float32
    # rounding of the exact crossing (where float32 may pick either candidate)
    split = np.flatnonzero(first.end_a < t_b)
    q_a, q_b = (t.fcoords[w].T.astype(np.float64) for w in (first.winner_a, first.winner_b))
    w64, x64 = ws.astype(np.float64), xs.astype(np.float64)
    da = (w64 * (q_b * q_b - q_a * q_a)).sum(axis=0)
    db = (w64 * x64 * (q_b - q_a)).sum(axis=0)
    with np.errstate(all="ignore"):
        cross = (2 * db / da).astype(np.float32)
    near = split[(cross[split] < scales[first.end_a[split], split])
                 & (cross[split] > scales[np.minimum(first.end_a[split] + 1, trials - 1),
                                          split])]
    scales[first.end_a[near], near] = np.nextafter(cross[near],
                                                   np.float32(np.inf) * (near % 2 - 0.5))
    got = iq_scale.run_winners(t, u, xs, ws, scales, t_a, t_b)
    # the same runs with their trial scales as scattered columns of a wider array
    column = rng.permutation(m + 50)[:m]
    wide = rng.random((trials, m + 50)).astype(np.float32)
    wide[:, column] = scales
    by_column = iq_scale.run_winners(t, u, xs, ws, wide, t_a, t_b, column=column)
    for field in ("winner_a", "end_a", "proven_a", "winner_b", "proven_b"):
        assert np.array_equal(getattr(by_column, field), getattr(got, field)), field
    split = got.end_a < t_b
    assert near.size > 30
    assert got.proven_a.any() and (~got.proven_a).any()
    assert (split & got.proven_b).any() and (~split & got.proven_a).any()
    assert not got.proven_b[~split].any()
    cols = np.arange(m)
    for lo, hi, winner, ok in ((t_a, got.end_a, got.winner_a, got.proven_a),
                               (got.end_a + 1, t_b, got.winner_b, got.proven_b)):
        for trial in range(trials):
            inside = ok & (lo <= trial) & (trial <= hi)
            s_here = scales[trial]
            s_next = scales[min(trial + 1, trials - 1)]
            fractions = [0.0] if trial == trials - 1 else np.linspace(0, 1, 12)
            for f in fractions:
                s = (s_here + (s_next - s_here) * np.float32(f)).astype(np.float32)
                if f > 0:  # between two trials of the part
                    inside &= trial + 1 <= hi
                found = iq_search.best_neighbour(t, u, xs, ws, s)
                assert np.array_equal(found[cols[inside]], winner[inside])


@pytest.mark.parametrize("qtype", ["IQ2_XXS", "IQ3_S"])
def test_run_winners_prove_nothing_where_c_sums_may_overflow(qtype: str) -> None:
    """Values near float32's limit: C's d2 can overflow (its error bound fails), so no
    run is proven, though the lines (well inside float32) pick a clear least; the same
    runs scaled down by 2**-40 are proven."""
    t = iq_tables.search_tables(qtype)
    rng = np.random.default_rng(5)
    m, width, trials = 200, t.coords.shape[1], 6
    u = rng.choice(np.flatnonzero(t.kmap < 0), m).astype(np.int64)
    top = np.float32(1e30) / np.float32(t.level_coords[-1])
    scales = np.repeat((top * np.linspace(1, 0.95, trials))[:, None], m, axis=1)
    xs = (rng.random((width, m)) * 2 * t.level_coords[-1] * top).astype(np.float32)
    ws = (rng.random((width, m)) + 0.5).astype(np.float32)
    t_a, t_b = np.zeros(m, dtype=np.intp), np.full(m, trials - 1, dtype=np.intp)
    small = np.float32(2.0**-40)
    tame = iq_scale.run_winners(t, u, xs * small, ws, (scales * small).astype(np.float32),
                                t_a, t_b)
    assert tame.proven_a.sum() > m // 2
    huge = iq_scale.run_winners(t, u, xs, ws, scales.astype(np.float32), t_a, t_b)
    assert not huge.proven_a.any() and not huge.proven_b.any()


def test_proven_between_takes_a_winner_only_inside_one_proven_part() -> None:
    """The final-scale lookup: a hit needs the scale between two trials of one proven
    part (trials 1-2 of column 0 here) and the same packed index; above the first
    trial, below the last, outside a part or with another index it searches."""
    trials, points, nc = 3, 1, 6
    u = np.full((trials, points, nc), 5, dtype=np.int64)
    gidx = np.full((trials, points, nc), 7, dtype=np.int64)
    proven = np.ones((trials, points, nc), dtype=bool)
    proven[0] = False  # trial 0 starts every part
    proven[2, 0, 4] = False  # column 4: trials 1 and 2 are in different parts
    trial_scale = np.repeat(np.array([[3.0], [2.0], [1.0]], dtype=np.float32), nc, axis=1)
    scale = np.array([1.5, 1.5, 3.5, 0.5, 1.5, 2.5], dtype=np.float32)
    known = iq_scale._proven_between(iq_scale.TrialPoints(u, gidx, proven), trial_scale,
                                     scale, np.arange(nc))
    packed = np.array([5, 6, 5, 5, 5, 5], dtype=np.int64)
    hit, found = known(np.zeros(nc, dtype=np.intp), np.arange(nc), packed)
    assert hit.tolist() == [True, False, False, False, False, True]
    assert found[hit].tolist() == [7, 7]


@pytest.mark.parametrize("width, qmax", [(8, 5), (4, 15)])
def test_c_d2_stays_within_its_share_of_the_lead(width: int, qmax: int) -> None:
    """The proofs' lead (``_LEAD * N(s_hi) / s_lo``) keeps ``16 * 2**-24 N`` for the float32
    lines and the rest for two candidates' C rounding errors: C's float32 ``d2`` (in C's
    order) stays within half the rest of exact, on scales, values and weights (of either
    sign) over many orders of magnitude."""
    rng = np.random.default_rng(11)
    n = 200_000
    s = (rng.random(n) * 10.0 ** rng.uniform(-6, 6, n)).astype(np.float32)
    q = (2 * rng.integers(0, (qmax + 1) // 2, (width, n)) + 1).astype(np.float32)
    x = (rng.random((width, n)) * 2 * qmax * s).astype(np.float32)
    w = (rng.standard_normal((width, n)) * 10.0 ** rng.uniform(-6, 6, (width, n))
         ).astype(np.float32)
    d2 = np.zeros(n, dtype=np.float32)
    for i in range(width):  # C: diff = scale*q - x; d2 += w*diff*diff
        diff = s * q[i] - x[i]
        d2 = d2 + (w[i] * diff) * diff
    s64, x64, w64 = s.astype(np.float64), x.astype(np.float64), w.astype(np.float64)
    exact = (w64 * (s64 * q - x64) ** 2).sum(axis=0)  # float64: 2**-50 of N at worst
    big_n = (np.abs(w64) * (s64 * qmax + np.abs(x64)) ** 2).sum(axis=0)
    share = (iq_scale._LEAD - 16 * 2.0**-24) / 2
    assert (np.abs(d2 - exact) <= share * big_n).all()
    # and the bound is not vacuous: some errors come within a fifth of it
    assert (np.abs(d2 - exact) > share * big_n / 5).any()


@pytest.mark.parametrize("width, qmax", [(8, 5), (4, 15)])
def test_c_d2_near_underflow_stays_within_the_floor(width: int, qmax: int) -> None:
    """Where C's d2 rounds near float32's underflow its errors no longer shrink with N:
    they stay within the share of the lead once the floor (``_FLOOR (1 + s)^2``) is added
    to N, over scales, values and weights down to subnormal; without the floor they
    would not."""
    rng = np.random.default_rng(12)
    n = 200_000
    s = np.ldexp(rng.random(n) + 0.5, rng.integers(-90, 8, n)).astype(np.float32)
    q = (2 * rng.integers(0, (qmax + 1) // 2, (width, n)) + 1).astype(np.float32)
    x = (rng.random((width, n)) * 2 * qmax * s).astype(np.float32)
    w = np.ldexp(rng.standard_normal((width, n)), rng.integers(-149, -60, (width, n))
                 ).astype(np.float32)
    d2 = np.zeros(n, dtype=np.float32)
    with np.errstate(under="ignore"):
        for i in range(width):  # C: diff = scale*q - x; d2 += w*diff*diff
            diff = s * q[i] - x[i]
            d2 = d2 + (w[i] * diff) * diff
    s64, x64, w64 = s.astype(np.float64), x.astype(np.float64), w.astype(np.float64)
    exact = (w64 * (s64 * q - x64) ** 2).sum(axis=0)
    big_n = (np.abs(w64) * (s64 * qmax + np.abs(x64)) ** 2).sum(axis=0)
    share = (iq_scale._LEAD - 16 * 2.0**-24) / 2
    err = np.abs(d2 - exact)
    assert (err <= share * (big_n + iq_scale._FLOOR * (1 + s64) ** 2)).all()
    assert (err > share * big_n).any()


def test_margin_in_float32_keeps_the_lead() -> None:
    """``_margin`` sums N in float32: wherever it gives a finite margin, that margin is
    the exact lead (float64) to within a 2**-18 part, over values, weights and scales of
    many magnitudes, subnormal ones included; it is NaN exactly where N may overflow C's
    sums, never below the lead."""
    rng = np.random.default_rng(13)
    width, n, qmax = 4, 100_000, 15.0
    xs = np.ldexp(rng.random((width, n)), rng.integers(-140, 60, (1, n))).astype(np.float32)
    ws = np.ldexp(rng.standard_normal((width, n)), rng.integers(-149, 60, (width, n))
                  ).astype(np.float32)
    s_1 = np.ldexp(rng.random(n) + 0.5, rng.integers(-120, 60, n)).astype(np.float32)
    s_2 = (s_1 * (1 - rng.random(n) * 0.3)).astype(np.float32)
    with np.errstate(all="ignore"):
        thr = iq_scale._margin(iq_scale._error_terms(xs, ws, qmax), s_1, s_2)
    x64, w64 = xs.astype(np.float64), ws.astype(np.float64)
    s_lo = np.minimum(s_1, s_2).astype(np.float64)
    s_hi = np.maximum(s_1, s_2).astype(np.float64)
    big_n = (np.abs(w64) * (s_hi * qmax + np.abs(x64)) ** 2).sum(axis=0)
    exact = iq_scale._LEAD * (big_n + iq_scale._FLOOR * (1 + s_hi) ** 2) / s_lo
    finite = np.isfinite(thr)
    assert (thr[finite] >= exact[finite] * (1 - 2.0**-18)).all()
    assert not (thr < exact * (1 - 2.0**-18)).any()  # NaN and inf compare False
    clear = np.abs(big_n / iq_scale._NO_OVERFLOW - 1) > 2.0**-20  # off float32's rounding
    assert np.array_equal(np.isnan(thr)[clear], (big_n >= iq_scale._NO_OVERFLOW)[clear])
    assert finite.sum() > n // 2 and (big_n < 2.0**-120).any() and np.isnan(thr).any()
