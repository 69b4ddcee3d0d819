"""iq_scale.fit_scale, which searches the neighbours of a run of trials only where the
winner can change, against a plain trial-by-trial replay of ggml's scale loop."""

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


@pytest.mark.parametrize("pre_rank", [True, False])
@pytest.mark.parametrize("qtype", ["IQ2_XXS", "IQ3_S"])
def test_best_neighbour_gap_bounds_every_other_candidate(qtype: str, pre_rank: bool,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """The winner's C d2 exactly, and a lower bound of C's d2 of every other candidate
    (exactly the second least when every candidate is summed)."""
    monkeypatch.setattr(iq_search, "_PRE_RANK_FROM", 0 if pre_rank else 10**9)
    t = iq_tables.search_tables(qtype)
    rng = np.random.default_rng(4)
    m, width = 300, t.coords.shape[1]
    u = rng.choice(np.flatnonzero(t.kmap < 0), m).astype(np.int64)
    scale = (rng.random(m) + 0.5).astype(np.float32)
    xs = (rng.random((width, m)) * 2 * t.nlevels * scale).astype(np.float32)
    ws = rng.random((width, m)).astype(np.float32)
    xs[:, :50] = 2 * scale[:50]  # ties
    ws[:, :50] = 1
    found, least, second = iq_search.best_neighbour_gap(t, u, xs, ws, scale)
    for k in range(m):
        at = -int(t.kmap[u[k]]) - 1
        d2s = {}
        for g in t.neighbours[at + 1:at + 1 + int(t.neighbours[at])]:
            d2 = np.float32(0)
            for i in range(width):
                diff = scale[k] * t.fcoords[g, i] - xs[i, k]
                d2 = d2 + ws[i, k] * diff * diff
            d2s.setdefault(int(g), d2)
        assert least[k] == d2s[int(found[k])] == min(d2s.values())
        others = [v for g, v in d2s.items() if g != found[k]]
        lowest = min(others, default=np.float32(np.inf))
        assert second[k] <= lowest
        if not pre_rank:
            assert second[k] == lowest


@pytest.mark.parametrize("qtype", ["IQ2_XXS", "IQ3_XXS", "IQ3_S"])
def test_a_carried_winner_wins_at_every_scale_in_between(qtype: str) -> None:
    """Points whose two best candidates swap places near the interval's ends (crossings
    just inside or outside it): wherever ``carries`` accepts the ends' winner, the C loop
    picks it at 40 scales in between; and near-crossings do occur and get refused."""
    t = iq_tables.search_tables(qtype)
    rng = np.random.default_rng(8)
    m, width = 4000, t.coords.shape[1]
    u = rng.choice(np.flatnonzero(t.kmap < 0), m).astype(np.int64)
    s1 = (rng.random(m) + 0.5).astype(np.float32)
    s2 = (s1 * (1 + rng.random(m) * 0.1)).astype(np.float32)
    # values between the grid coordinates at s1: the best neighbour changes with s
    xs = ((rng.random((width, m)) * 2 * (t.nlevels - 1) + 1) * s1).astype(np.float32)
    ws = (rng.random((width, m)) + 0.01).astype(np.float32)
    qmax = float(t.level_coords[-1])
    wins, margins = [], []
    for s in (s1, s2):
        found, least, second = iq_search.best_neighbour_gap(t, u, xs, ws, s)
        wins.append(found)
        margins.append(iq_scale.margin(xs, ws, s, least, second, qmax))
    ok = iq_scale.carries(wins[0], wins[1], s1, s2, margins[0], margins[1])
    same = wins[0] == wins[1]
    assert ok.any() and (same & ~ok).any()  # both outcomes occur
    for f in np.linspace(0, 1, 40, dtype=np.float32):
        s = (s1 + (s2 - s1) * f).astype(np.float32)
        found = iq_search.best_neighbour(t, u, xs, ws, s)
        assert np.array_equal(found[ok], wins[0][ok])
