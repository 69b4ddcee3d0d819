"""The shared scale searches of ggml-quants.c, on element-major ``(n, m)`` arrays
(one column per group of values, so that sums run in C order)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelkit.quant.kernels.common import (
    F32,
    F32_TINY,
    GROUP_MAX_EPS,
    MAGIC,
    RINT_SAFE,
    BoolArray,
    F32Array,
    U8Array,
    clamped_levels,
    first_zero_fix,
    nearest_int,
    seq_sum,
    signed_absmax,
)


def fit_symmetric(x: F32Array, w: F32Array, nmax: int) -> tuple[F32Array, F32Array]:
    """make_qx_quants (rmse_type 1): per column, levels L in [0, 2*nmax) and a scale d
    with x ~ d * (L - nmax), maximising sum(w*x*l)^2 / sum(w*l^2) over the inverse
    scales -(nmax + 0.1*k)/max, k = 0, -9..9. Returns (d (m,), L (n, m) float)."""
    m = x.shape[1]
    amax_signed = signed_absmax(x, axis=0)
    zero = ~(np.abs(amax_signed) >= GROUP_MAX_EPS)
    vmax = np.where(zero, F32(1.0), amax_signed)
    nonfinite = ~np.isfinite(vmax)
    unsafe = nonfinite if nonfinite.any() else None  # else |iscale * x| <= nmax + 1
    # one scratch array for the products, each summed while still in cache: the fewer
    # arrays a try touches, the better
    wx = w * x
    prod = np.empty_like(x)
    lv = np.empty_like(x)
    # the clamp bounds as full arrays: np.minimum/np.maximum with a scalar are slow
    lo, hi = np.full_like(x, -nmax), np.full_like(x, nmax - 1)
    nm = F32(nmax)
    sums = np.empty((2, m), dtype=np.float32)  # sumlx, suml2
    # state: scale, best = scale*sumlx, the inverse scale of the levels; cand: a try's
    state = np.empty((3, m), dtype=np.float32)
    cand = np.empty((3, m), dtype=np.float32)

    def try_scale(c: F32) -> None:
        """Levels and sums for the inverse scale -c/max, into cand[2] and sums. |x| <=
        |max| bounds |iscale*x| by c (plus rounding): the clamps that rint cannot
        reach are skipped."""
        iscale = np.divide(-c, vmax, out=cand[2])
        np.multiply(x, iscale, out=lv)
        np.rint(lv, out=lv)
        if c > nm - F32(0.55):
            np.minimum(lv, hi, out=lv)
        if c > nm + F32(0.45):
            np.maximum(lv, lo, out=lv)
        if unsafe is not None:
            lv[:, unsafe] = np.clip(nearest_int(x[:, unsafe] * iscale[unsafe]), -nmax,
                                    nmax - 1).astype(np.float32)
        seq_sum(np.multiply(wx, lv, out=prod), out=sums[0])  # C: w*x*l == (w*x)*l
        np.multiply(w, lv, out=prod)
        seq_sum(np.multiply(prod, lv, out=prod), out=sums[1])  # C: w*l*l == (w*l)*l

    try_scale(nm)
    state[0] = np.where(sums[1] != 0, sums[0] / sums[1], F32(0.0))
    state[1] = state[0] * sums[0]
    state[2] = cand[2]
    better = np.empty(m, dtype=np.bool_)
    flag = np.empty(m, dtype=np.bool_)
    t1, t2 = np.empty(m, dtype=np.float32), np.empty(m, dtype=np.float32)
    for k in range(-9, 10):
        if k == 0:
            continue
        try_scale(nm + F32(0.1) * F32(k))
        sumlx, suml2 = sums
        np.greater(np.multiply(sumlx, sumlx, out=t1), np.multiply(state[1], suml2, out=t2),
                   out=better)
        better &= np.greater(suml2, 0, out=flag)
        if better.any():
            np.divide(sumlx, suml2, out=cand[0])
            np.multiply(cand[0], sumlx, out=cand[1])
            select_columns(state, cand, better)
    scale = state[0].copy()
    levels = clamped_levels(x, state[2], -nmax, nmax - 1, lv, unsafe)
    levels += nm
    levels[:, zero] = 0
    scale[zero] = 0
    return scale, levels


def fit_scale_min(x: F32Array, w: F32Array, nmax: int, rmin: float, rdelta: float,
                  nstep: int, mad: bool = False) -> tuple[F32Array, F32Array, F32Array]:
    """make_qkx2_quants / make_qkx3_quants (the same for finite input): per column,
    levels L in [0, nmax], a scale and an offset min <= 0 with x ~ scale*L + min,
    minimising the weighted squared error (``mad``: the weighted absolute error).
    Tries the inverse scales (rmin + rdelta*k + nmax) / (max - min), k = 0..nstep,
    each followed by a weighted least-squares fit of scale and min; an accepted fit
    moves ``min`` for the next try.
    Returns (scale (m,), the_min = -min (m,), L (n, m) float)."""
    n, m = x.shape
    xmax = x.max(axis=0)
    xmin = first_zero_fix(x.min(axis=0), x, axis=0)  # -min may be stored (Q4_1, Q5_1)
    # sums[0:2]: sum_w, sum_x (C starts these two from element 0); sums[2:5]: each
    # try's sum_l, sum_l2, sum_xl
    sums = np.empty((5, m), dtype=np.float32)
    sums[0] = seq_sum(w, from_zero=False)
    sums[1] = seq_sum(w * x, from_zero=False)
    # state[0:5] best error, scale, min, and the (iscale, min) that made the levels;
    # cand[0:5] a try's values for the same five, so that one select accepts a try
    state = np.empty((5, m), dtype=np.float32)
    cand = np.empty((5, m), dtype=np.float32)
    cur_min = state[2]
    np.copyto(cur_min, np.where(xmin > 0, F32(0.0), xmin))
    flat = ~(xmax > cur_min)
    inv_num = [F32(rmin) + F32(rdelta) * F32(k) + F32(nmax) for k in range(nstep + 1)]
    c_max = max(abs(c) for c in inv_num) + F32(nmax)
    # Columns where rint is safe for every min in [-2**100, 0] (every min the search
    # can hold): max > 0 and c*(min - x) / (max - min) <= c*(-xmin)/xmax small
    calm = bool(np.all((xmax > c_max * F32_TINY) & (-xmin * c_max < RINT_SAFE * xmax)
                       & (xmax < F32(2.0**100)) & (xmin > F32(-(2.0**100)))))

    def unsafe_columns(mins: F32Array) -> BoolArray | None:
        if calm and mins.min() >= F32(-(2.0**100)):
            return None
        # iscale = c/(max - m) times (x - m): rint is safe if c*max|x - m|/|max - m| is
        # small, and c/(max - m) must not overflow either
        span = np.abs(xmax - mins)
        reach = np.maximum(span, np.abs(xmin - mins))
        unsafe = ~((reach * c_max < RINT_SAFE * span) & (span > c_max * F32_TINY))
        return unsafe if unsafe.any() else None

    def below_max(unsafe: BoolArray | None) -> bool:
        # min < max in every column: then x - min <= max - min keeps iscale*(x - min)
        # <= c, and the tries with c < nmax + 1/2 need no upper clamp
        return unsafe is None and (calm or bool(np.all(xmax > cur_min)))

    lv = np.empty_like(x)
    zeros = np.zeros_like(x)  # np.maximum with a full array is much faster than a scalar
    wl = np.empty_like(x)
    # one scratch array for the products (w*l)*l, (w*l)*x and the error terms, each
    # summed while still in cache: the fewer arrays a try touches, the better
    err = np.empty_like(x)

    def levels_for(iscale: F32Array, c: F32, unsafe: BoolArray | None,
                   upper_free: bool) -> None:
        if unsafe is None and upper_free and c < F32(nmax) + F32(0.49):
            np.subtract(x, cur_min, out=lv)
            np.multiply(lv, iscale, out=lv)
            np.rint(lv, out=lv)
            np.maximum(lv, zeros, out=lv)
        else:
            clamped_levels(x, iscale, 0, nmax, lv, unsafe, cur_min)

    def weighted_error(scale: F32Array, offset: F32Array, out: F32Array) -> None:
        # sum of w * (scale*l + offset - x)^2 (or w * |...|) in C's operation order
        np.multiply(lv, scale, out=err)
        np.add(err, offset, out=err)
        np.subtract(err, x, out=err)
        if mad:
            np.abs(err, out=err)
        else:
            np.square(err, out=err)
        np.multiply(err, w, out=err)
        seq_sum(err, out=out)

    unsafe = unsafe_columns(cur_min)
    upper_free = below_max(unsafe)
    span = xmax - cur_min
    iscale = F32(nmax) / span
    state[1] = F32(1.0) / iscale
    clamped_levels(x, iscale, 0, nmax, lv, unsafe, cur_min)
    weighted_error(state[1], cur_min, state[0])
    # the winning levels are recomputed at the end from the (iscale, min) that made them
    state[3] = iscale
    state[4] = cur_min
    # the products of det = sum_w*sum_l2 - sum_l*sum_l and of the numerators
    # sum_w*sum_xl - sum_x*sum_l (scale), sum_l2*sum_x - sum_l*sum_xl (min), in one call
    pair_a = np.array([0, 2, 0, 1, 3, 2])
    pair_b = np.array([3, 2, 4, 2, 1, 4])
    fit = np.empty((3, m), dtype=np.float32)
    better = np.empty(m, dtype=np.bool_)
    flag = np.empty(m, dtype=np.bool_)
    for c in inv_num:
        iscale = np.divide(c, span, out=cand[3])
        levels_for(iscale, c, unsafe, upper_free)
        np.multiply(w, lv, out=wl)
        seq_sum(wl, out=sums[2])
        np.multiply(wl, lv, out=err)  # C: w*l*l == (w*l)*l
        seq_sum(err, out=sums[3])
        np.multiply(wl, x, out=err)  # C: w*l*x[i] == (w*l)*x
        seq_sum(err, out=sums[4])
        terms = np.multiply(sums[pair_a], sums[pair_b])
        np.subtract(terms[0::2], terms[1::2], out=fit)
        det = fit[0]
        np.divide(fit[1:], det, out=cand[1:3])  # this_scale, this_min
        positive = np.greater(cand[2], 0, out=flag)
        if positive.any():
            np.copyto(cand[2], F32(0.0), where=positive)
            np.copyto(cand[1], sums[4] / sums[3], where=positive)
        weighted_error(cand[1], cand[2], cand[0])
        np.less(cand[0], state[0], out=better)
        better &= np.greater(det, 0, out=flag)
        if better.any():
            np.copyto(cand[4], cur_min)
            select_columns(state, cand, better)
            np.subtract(xmax, cur_min, out=span)
            unsafe = unsafe_columns(cur_min)
            upper_free = below_max(unsafe)
    l_min = state[4]
    levels = clamped_levels(x, state[3], 0, nmax, lv, unsafe_columns(l_min), l_min)
    levels[:, flat] = 0
    scale = state[1].copy()
    scale[flat] = 0
    return scale, -cur_min, levels


def select_columns(dst: F32Array, src: F32Array, take: BoolArray) -> None:
    """``dst[:, take] = src[:, take]`` for float32 (k, m) arrays, as a bitwise select
    (a masked copy or np.where is several times slower)."""
    mask = np.negative(take, dtype=np.int32, casting="unsafe")
    d, s = dst.view(np.int32), src.view(np.int32)
    diff = np.bitwise_xor(d, s)
    np.bitwise_and(diff, mask, out=diff)
    np.bitwise_xor(d, diff, out=d)


def fit_unsigned(x: F32Array, w: F32Array, nmax: int) -> tuple[F32Array, U8Array]:
    """make_qp_quants: quantize non-negative x (n, m) (the k-quants' sub-block scales
    or mins) to levels in [0, nmax] with weights w: the best of 9 trial scales, then up
    to 5 rounds of coordinate descent on sum(w*x*l)^2 / sum(w*l^2).
    Returns (scale (m,), L (n, m) uint8)."""
    xmax = np.max(x, axis=0, initial=F32(0.0))
    zero = ~(xmax >= GROUP_MAX_EPS)
    xmax = np.where(zero, F32(1.0), xmax)
    nm = F32(nmax)
    iscale = nm / xmax
    lv = (nearest_int(x * iscale) & 0xFF).astype(np.float32)  # C stores it in a uint8
    diff = x - (F32(1.0) / iscale) * lv
    best_mse = seq_sum((w * diff) * diff)
    for k in range(-4, 5):
        if k == 0:
            continue
        iscale_k = (F32(0.1) * F32(k) + nm) / xmax
        lk = np.minimum(nearest_int(x * iscale_k), nmax).astype(np.float32)
        diff = x - (F32(1.0) / iscale_k) * lk
        mse = seq_sum((w * diff) * diff)
        better = mse < best_mse
        best_mse = np.where(better, mse, best_mse)
        iscale = np.where(better, iscale_k, iscale)
    li = np.minimum(nearest_int(x * iscale), nmax)
    lf = li.astype(np.float32)
    wx = w * x  # C: w*x[i]*l == (w*x)*l
    sums = seq_sum(wx * lf), seq_sum((w * lf) * lf)
    levels = (li & 0xFF).astype(np.float32)  # the uint8 L[] of the C code
    sumlx, suml2 = _refine_levels(x, w, wx, levels, sums, None, nmax)
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0.0))
    scale[zero] = 0
    out = levels.astype(np.uint8)
    out[:, zero] = 0
    return scale, out


def _refine_levels(x: F32Array, w: F32Array, wx: F32Array, levels: F32Array,
                   sums: tuple[F32Array, F32Array], lo: int | None,
                   hi: int) -> tuple[F32Array, F32Array]:
    """The coordinate descent of make_qp_quants / make_q3_quants, in place on the
    (integer-valued float32) ``levels`` (n, m), from ``sums`` = (sumlx, suml2): up to 5
    rounds; in each, element i (in order) moves to clamp(nearest_int(x*sl2/slx), lo, hi)
    when that raises sumlx^2/suml2. Returns the final (sumlx, suml2).

    make_qp_quants (``lo`` None: no lower bound, levels kept as uint8) needs ``slx > 0
    and sl2 > 0`` before trying, make_q3_quants ``slx > 0`` before and ``sl2 > 0``
    after. As in C, a column stops after a round without change: each round works on
    the columns the previous one changed."""
    sumlx, suml2 = sums[0].copy(), sums[1].copy()
    act: npt.NDArray[np.intp] | None = None  # None: every column
    xa, wa, wxa, la, sx, s2 = x, w, wx, levels, sumlx, suml2
    bias = 0x00400000  # nearest_int's offset, folded into the clamp bounds
    lo_b, hi_b = (-(2**31) if lo is None else lo + bias), hi + bias
    for _ in range(5):
        m = sx.shape[0]
        changed = np.zeros(m, dtype=np.bool_)
        # scratch rows, reused by every element (no allocation in the loop)
        slx, sl2, t1, t2, new_f = (np.empty(m, dtype=np.float32) for _ in range(5))
        raw = np.empty(m, dtype=np.int32)
        ok, flag = np.empty(m, dtype=np.bool_), np.empty(m, dtype=np.bool_)
        for i in range(x.shape[0]):
            l_i = la[i]
            np.subtract(sx, np.multiply(wxa[i], l_i, out=t1), out=slx)
            np.multiply(wa[i], l_i, out=t1)
            np.subtract(s2, np.multiply(t1, l_i, out=t1), out=sl2)
            # new_l = clamp(nearest_int(x*sl2/slx)): the bit trick, bias kept until the end
            np.multiply(xa[i], sl2, out=t1)
            np.divide(t1, slx, out=t1)
            t1 += MAGIC
            np.bitwise_and(t1.view(np.int32), 0x007FFFFF, out=raw)
            np.minimum(np.maximum(raw, lo_b, out=raw), hi_b, out=raw)
            raw -= bias
            np.copyto(new_f, raw, casting="unsafe")
            if lo is None:
                np.greater(slx, 0, out=ok)
                ok &= np.greater(sl2, 0, out=flag)
            else:
                np.greater(slx, 0, out=ok)
            ok &= np.not_equal(new_f, l_i, out=flag)
            slx += np.multiply(wxa[i], new_f, out=t1)
            np.multiply(wa[i], new_f, out=t1)
            sl2 += np.multiply(t1, new_f, out=t1)
            np.multiply(np.multiply(slx, slx, out=t1), s2, out=t1)
            np.multiply(np.multiply(sx, sx, out=t2), sl2, out=t2)
            ok &= np.greater(t1, t2, out=flag)
            if lo is not None:
                ok &= np.greater(sl2, 0, out=flag)
            if ok.any():
                changed |= ok
                if lo is None:  # C keeps L[i] in a uint8
                    np.copyto(new_f, np.bitwise_and(raw, 0xFF, out=raw), casting="unsafe")
                np.copyto(l_i, new_f, where=ok)
                np.copyto(sx, slx, where=ok)
                np.copyto(s2, sl2, where=ok)
        if act is not None:
            levels[:, act] = la
            sumlx[act] = sx
            suml2[act] = s2
        keep = np.flatnonzero(changed)
        if keep.size == 0:
            break
        act = keep if act is None else act[keep]
        xa, wa, wxa, la = x[:, act], w[:, act], wx[:, act], levels[:, act]
        sx, s2 = sumlx[act], suml2[act]
    return sumlx, suml2


IntpArray = npt.NDArray[np.intp]
_BIAS = 0x00400000  # nearest_int's offset: (bits & 0x7FFFFF) - _BIAS is the integer


def _screen_moves(x: F32Array, wxl: F32Array, wll: F32Array, lv: F32Array, sx: F32Array,
                  s2: F32Array, out: BoolArray) -> None:
    """out = the elements make_q3_quants would try to move against the sums sx, s2
    (broadcast): slx > 0 and nearest_int(x*sl2/slx) != L before the clamp, a superset
    (x*sl2/slx + MAGIC equals L + MAGIC only if it rounds to L; huge, infinite and NaN
    quotients are kept). ``wxl``, ``wll``: w*x*L and w*L*L."""
    slx = np.subtract(sx, wxl)
    t = np.subtract(s2, wll)
    np.multiply(x, t, out=t)
    np.divide(t, slx, out=t)
    t += MAGIC
    np.not_equal(t, np.add(lv, MAGIC), out=out)
    out &= slx > 0


def _try_moves(x: F32Array, lv: F32Array, sx: F32Array, s2: F32Array, lo: int,
               hi: int) -> tuple[BoolArray, F32Array, F32Array, F32Array]:
    """One element's move in make_q3_quants, for 1-D arrays of (x, L, sumlx, suml2), in
    C's float order. Returns (accepted, the new level, the new sumlx, the new suml2)."""
    w = x * x
    wx = w * x
    slx = sx - wx * lv
    wl = w * lv
    wl *= lv
    sl2 = s2 - wl
    t = x * sl2
    t /= slx
    t += MAGIC
    raw = t.view(np.int32)
    raw &= 0x007FFFFF
    np.maximum(raw, lo + _BIAS, out=raw)
    np.minimum(raw, hi + _BIAS, out=raw)
    raw -= _BIAS
    new_l = raw.astype(np.float32)
    new_lx = wx * new_l
    new_lx += slx
    new_l2 = w * new_l
    new_l2 *= new_l
    new_l2 += sl2
    ok = slx > 0
    ok &= new_l != lv
    ok &= new_l2 > 0
    lhs = new_lx * new_lx
    lhs *= s2
    rhs = sx * sx
    rhs *= new_l2
    ok &= lhs > rhs
    return ok, new_l, new_lx, new_l2


def _next_moves(ok: BoolArray, col: IntpArray, elem: IntpArray, pos: IntpArray, k: int,
                n: int) -> tuple[IntpArray, BoolArray, BoolArray]:
    """Per column, from the candidates' (ok, column, element): the candidate C moves
    next, the first accepted one after ``pos`` (``later``), else the first accepted one
    (in the next round); ``has``: whether there is one. Returns (candidate, has, later)."""
    idx = np.flatnonzero(ok)
    c = col[idx]
    e = elem[idx]
    # one minimum per column of (next round?, element, candidate) packed in an int64
    key = np.less_equal(e, pos[c]).astype(np.int64)
    key *= n
    key += e
    key <<= 32
    key |= idx
    none = np.iinfo(np.int64).max
    best = np.full(k, none)
    np.minimum.at(best, c, key)
    has = best < none
    later = best < (n << 32)
    best &= 0xFFFFFFFF
    return best, has, later


def _refine_by_moves(x: F32Array, levels: F32Array, products: tuple[F32Array, F32Array],
                     sums: tuple[F32Array, F32Array], lo: int,
                     hi: int) -> tuple[F32Array, F32Array]:
    """make_q3_quants' coordinate descent (``_refine_levels`` with a lower bound, weights
    x^2), in place on ``levels``, one accepted move at a time instead of one element at
    a time: most columns never move and the rest move a few times. ``products``: w*x*L
    and w*L*L of the starting levels. Returns the final (sumlx, suml2).

    Until a column's next move its sums stay fixed, so the element C visits next that
    moves is the first accepted one after the last move's position in this round, else
    the first accepted one in the next round (if any round is left); a column without
    one has finished (a round without change, or the 5 rounds used). The first step
    screens every element row by row (arrays that stay in cache), then tries only the
    few candidates."""
    n, m = x.shape
    sumlx, suml2 = sums[0].copy(), sums[1].copy()
    cand = np.empty((n, m), dtype=np.bool_)
    for i in range(n):
        _screen_moves(x[i], products[0][i], products[1][i], levels[i], sumlx, suml2,
                      cand[i])
    flat = np.flatnonzero(cand)
    elem, col = np.divmod(flat, m)
    ok, new_l, new_lx, new_l2 = _try_moves(x.reshape(-1)[flat], levels.reshape(-1)[flat],
                                           sumlx[col], suml2[col], lo, hi)
    pick, has, _ = _next_moves(ok, col, elem, np.full(m, -1), m, n)
    act = np.flatnonzero(has)
    if act.size == 0:
        return sumlx, suml2
    # the moving columns, compacted into (column, element) rows
    xa, la = (np.ascontiguousarray(a[:, act].T) for a in (x, levels))
    wa = xa * xa
    wxa = wa * xa
    pick = pick[act]
    rnd = np.zeros(act.size, dtype=np.intp)  # the round of each column's move
    # the finished columns' (column, levels, sumlx, suml2), written back at the end in
    # one scatter each (a strided scatter per step is slow)
    done: list[tuple[IntpArray, F32Array, F32Array, F32Array]] = []
    while True:
        k = act.size
        pos = elem[pick]
        la[np.arange(k), pos] = new_l[pick]
        sx, s2 = new_lx[pick], new_l2[pick]
        wxl = wxa * la
        wll = wa * la
        wll *= la
        cand = np.empty((k, n), dtype=np.bool_)
        _screen_moves(xa, wxl, wll, la, sx[:, None], s2[:, None], cand)
        flat = np.flatnonzero(cand)
        col, elem = np.divmod(flat, n)
        ok, new_l, new_lx, new_l2 = _try_moves(xa.reshape(-1)[flat], la.reshape(-1)[flat],
                                               sx[col], s2[col], lo, hi)
        pick, has, later = _next_moves(ok, col, elem, pos, k, n)
        rnd += ~later
        go = has & (rnd < 5)
        if not go.all():
            fin = np.flatnonzero(~go)  # integer gathers: a boolean mask is slower
            done.append((act[fin], la[fin], sx[fin], s2[fin]))
            keep = np.flatnonzero(go)
            if keep.size == 0:
                break
            act, pick, rnd = act[keep], pick[keep], rnd[keep]
            xa, wa, wxa, la = xa[keep], wa[keep], wxa[keep], la[keep]
    cols = np.concatenate([d[0] for d in done])
    levels[:, cols] = np.concatenate([d[1] for d in done]).T
    sumlx[cols] = np.concatenate([d[2] for d in done])
    suml2[cols] = np.concatenate([d[3] for d in done])
    return sumlx, suml2


def fit_q3(x: F32Array, nmax: int) -> tuple[F32Array, F32Array]:
    """make_q3_quants with do_rmse (weights x^2): levels L in [0, 2*nmax) with
    x ~ d * (L - nmax), from the first guess -nmax/max refined by coordinate descent.
    Returns (d (m,), L (n, m) float)."""
    amax_signed = signed_absmax(x, axis=0)
    zero = ~(np.abs(amax_signed) >= GROUP_MAX_EPS)
    iscale = -F32(nmax) / np.where(zero, F32(1.0), amax_signed)
    levels = np.clip(nearest_int(x * iscale), -nmax, nmax - 1).astype(np.float32)
    w = x * x
    wx = w * x
    products = wx * levels, (w * levels) * levels
    sums = seq_sum(products[0]), seq_sum(products[1])
    sumlx, suml2 = _refine_by_moves(x, levels, products, sums, -nmax, nmax - 1)
    scale = np.where(suml2 > 0, sumlx / suml2, F32(0.0))
    scale[zero] = 0
    out = levels + F32(nmax)
    out[:, zero] = 0
    return scale, out
