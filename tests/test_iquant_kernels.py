"""Low-bit kernels (TQ, FP4, Q1_0/Q2_0, IQ1/IQ2/IQ3) against llama.cpp's own bytes."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from conftest import GOLDEN, REPO, needs_golden
from modelkit.quant.file_types import parse_ggml_type
from modelkit.quant.kernels import dequantize, iq_tables, quantize

KERNELS = GOLDEN / "kernels"


class Kernel(NamedTuple):
    quantize: Callable[[np.ndarray, np.ndarray | None], np.ndarray]
    dequantize: Callable[[np.ndarray, int], np.ndarray]


def _registered(name: str) -> Kernel:
    qtype = parse_ggml_type(name)  # gguf's type, or modelkit's ExtraType (Q2_0)
    return Kernel(lambda x, im: quantize(qtype, x, im), lambda q, n: dequantize(qtype, q, n))


TYPES: dict[str, Kernel] = {
    name: _registered(name) for name in ("TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0",
                                         "IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS", "IQ2_S",
                                         "IQ1_S", "IQ1_M")
}


@functools.cache
def _golden(name: str) -> dict[str, np.ndarray]:
    with np.load(KERNELS / f"{name}.npz") as z:
        return {key: z[key] for key in z.files}


def _params(with_deq: bool) -> list[object]:
    params: list[object] = []
    for name in TYPES:
        path = KERNELS / f"{name}.npz"
        if not path.is_file():  # skipped, failed under CI (conftest.golden_data)
            params.append(pytest.param(name, "missing", marks=needs_golden(path),
                                       id=f"{name}-missing"))
            continue
        for case in map(str, _golden(name)["cases"]):
            if not with_deq or f"{case}__deq" in _golden(name):
                params.append(pytest.param(name, case, id=f"{name}-{case}"))
    return params


def _block_mismatch(name: str, got: np.ndarray, expected: np.ndarray) -> str:
    meta = json.loads(str(_golden(name)["meta_json"]))
    bb = meta["block_bytes"]
    g, e = got.reshape(-1, bb), expected.reshape(-1, bb)
    bad = np.flatnonzero((g != e).any(axis=1))
    first = int(bad[0])
    return (f"{bad.size} of {len(e)} blocks differ; first is block {first}\n"
            f"  expected {e[first].tobytes().hex()}\n  got      {g[first].tobytes().hex()}")


@pytest.mark.parametrize(("name", "case"), _params(with_deq=False))
def test_quantize_matches_llama_cpp(name: str, case: str) -> None:
    z = _golden(name)
    x = z[f"{case}__x"]
    imatrix = z.get(f"{case}__imatrix")
    got = TYPES[name].quantize(x, imatrix)
    expected = z[f"{case}__q"]
    assert got.shape == expected.shape
    if got.tobytes() != expected.tobytes():
        pytest.fail(f"{name}/{case}: {_block_mismatch(name, got, expected)}")


@pytest.mark.parametrize(("name", "case"), _params(with_deq=True))
def test_dequantize_matches_llama_cpp(name: str, case: str) -> None:
    z = _golden(name)
    q, expected = z[f"{case}__q"], z[f"{case}__deq"]
    got = TYPES[name].dequantize(q, expected.shape[1])
    assert got.dtype == np.float32 and got.shape == expected.shape
    bad = np.flatnonzero(got.view(np.uint32) != expected.view(np.uint32))
    assert bad.size == 0, (f"{name}/{case}: {bad.size} values differ, first at {bad[0]}: "
                           f"{got.flat[bad[0]]!r} != {expected.flat[bad[0]]!r}")


GRID_TYPES = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ3_XXS", "IQ3_S")


@needs_golden(KERNELS / "iq_grids.npz")
def test_shipped_grids_equal_the_c_source_tables() -> None:
    """The package's data file holds exactly the tables llama.cpp's source has."""
    golden = KERNELS / "iq_grids.npz"
    shipped = iq_tables.fixed_tables()
    with np.load(golden) as z:
        expected = {name: z[name] for name in z.files if name != "meta_json"}
    assert sorted(shipped) == sorted(expected)
    for name, table in expected.items():
        assert shipped[name].dtype == table.dtype, name
        assert np.array_equal(shipped[name], table), name


@needs_golden(KERNELS / "iq_init_tables.npz")
@pytest.mark.parametrize("qtype", GRID_TYPES)
def test_search_tables_equal_ggml_quantize_init(qtype: str) -> None:
    golden = KERNELS / "iq_init_tables.npz"
    tables = iq_tables.search_tables(qtype)
    with np.load(golden) as z:
        assert np.array_equal(tables.kmap, z[f"{qtype}__kmap"])
        assert np.array_equal(tables.neighbours, z[f"{qtype}__neighbours"])
    # every grid point maps to itself; the coordinates agree with the dequantizer grid
    assert np.array_equal(tables.kmap[tables.kmap >= 0], np.arange(len(tables.grid)))
    assert iq_tables.search_tables("IQ1_M") is iq_tables.search_tables("IQ1_S")


@pytest.mark.slow
def test_shipped_search_tables_are_their_derivation(tmp_path: Path) -> None:
    """data/iq_search_tables.npz is what tools/make_iq_search_tables.py writes now: the
    tables computed from the shipped grids, byte for byte."""
    import importlib.util
    import sys
    sys.path.insert(0, str(REPO / "tools"))
    try:
        spec = importlib.util.spec_from_file_location(
            "make_iq_search_tables", REPO / "tools" / "make_iq_search_tables.py")
        assert spec and spec.loader
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
    finally:
        sys.path.remove(str(REPO / "tools"))
    out = tmp_path / "tables.npz"
    assert tool.main([str(out)]) == 0
    assert out.read_bytes() == iq_tables.SEARCH_DATA.read_bytes()
    kmap, neighbours = iq_tables.compute_search_tables("IQ3_S")
    assert np.array_equal(iq_tables.search_tables("IQ3_S").kmap, kmap)
    assert np.array_equal(iq_tables.search_tables("IQ3_S").neighbours, neighbours)


def test_make_iq_tables_is_deterministic_and_reads_the_source(tmp_path: Path) -> None:
    """The generator script parses C table blocks (a tiny synthetic source here)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_iq_tables",
                                                  REPO / "tools" / "make_iq_tables.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = tmp_path / "ggml" / "src"
    src.mkdir(parents=True)
    (src / "ggml-common.h").write_text(
        "#define GGML_TABLE_BEGIN(type, name, size) static const type name[size] = {\n"
        "GGML_TABLE_BEGIN(uint8_t, kmask_iq2xs, 8)\n    1, 2, 4, 8, 16, 32, 64, 128\n"
        "GGML_TABLE_END()\nGGML_TABLE_BEGIN(uint64_t, g, 2)\n 0xffffffffffffffff, 0x0801,\n"
        "GGML_TABLE_END()\nGGML_TABLE_BEGIN(int8_t, kv, 3)\n -127, 0, 5, // note\n"
        "GGML_TABLE_END()\n")
    (src / "ggml-quants.c").write_text(
        "void iq2xs_init_impl(enum ggml_type type) {\n"
        "    static const uint16_t kgrid_a[NGRID_IQ1S] = {\n" + "1, " * 2048 + "\n    };\n}\n"
        "void iq3xs_init_impl(int grid_size) {\n"
        "    static const uint16_t kgrid_b[2] = {\n 7, 4032,\n    };\n}\n")
    out1, out2 = tmp_path / "a.npz", tmp_path / "b.npz"
    assert tool.main([str(tmp_path), str(out1)]) == 0
    assert tool.main([str(tmp_path), str(out2)]) == 0
    assert out1.read_bytes() == out2.read_bytes()
    with np.load(out1) as z:
        assert z["g"].dtype == np.dtype("<u8") and list(z["g"]) == [2**64 - 1, 0x801]
        assert list(z["kv"]) == [-127, 0, 5] and z["kv"].dtype == np.int8
        assert z["quant__iq2xs_init_impl__kgrid_a"].shape == (2048,)
        assert list(z["quant__iq3xs_init_impl__kgrid_b"]) == [7, 4032]


def test_fp4_nearest_entry_matches_the_c_loop_on_ties_and_random_values() -> None:
    """fp4._best_index's shortcut equals best_index_mxfp4's loop (first of equal errors),
    on exact midpoints between table entries, their float32 neighbours and random values."""
    from modelkit.quant.kernels import fp4

    rng = np.random.default_rng(11)
    kv = fp4.KVALUES_FP4.astype(np.float32)
    d = np.concatenate([np.float32(2.0) ** rng.integers(-20, 20, 64),
                        fp4._UE4M3[rng.integers(1, 127, 64)]]).astype(np.float32)[:, None]
    mids = np.array([0.5, 1.5, 2.5, 3.5, 5, 7, 10, 13, 0, 12, 20], dtype=np.float32)
    x = np.concatenate([mids * d, np.nextafter(mids * d, np.float32(np.inf)),
                        np.nextafter(mids * d, np.float32(0)),
                        rng.standard_normal((d.shape[0], 32)).astype(np.float32) * 6 * d],
                       axis=1)
    x = np.concatenate([x, -x], axis=1)
    err = np.abs(kv[None, None, :] * d[:, :, None] - x[:, :, None])
    expected = np.argmin(err, axis=2)  # the first of equal errors, as C's strict '<'
    assert np.array_equal(fp4._best_index(x, d), expected)


@pytest.mark.parametrize("plain", [False, True])
def test_iq1_split_search_pruning_matches_a_full_replay(plain: bool) -> None:
    """iq1._first_best replays only near-best candidates; it must pick what C's loop over
    every candidate picks, also with exact ties, ratios within rounding of each other and of
    the near-top margin, zero and negative sums and near-overflow; ``plain``: every sumq2
    positive and no sum near overflow (the path without per-candidate masks), with
    columns whose ratios underflow."""
    from modelkit.quant.kernels import iq1

    rng = np.random.default_rng(5)
    c, n = 300, 400
    qx = rng.standard_normal((c, n)).astype(np.float32)
    q2 = rng.random((c, n)).astype(np.float32) + np.float32(0.1)
    qx[rng.random((c, n)) < 0.2] = 0
    if not plain:
        q2[rng.random((c, n)) < 0.1] = 0
    qx[::7] = qx[3]  # exact ties with an earlier candidate
    q2[::7] = q2[3]
    # sumqx^2 overflows float32; plain: ratios below the tiny-top bound, down to 0
    qx[:, :20] *= np.float32(3e-23 if plain else 3e18)
    # ratios a few float32 roundings to ~1e-5 apart: around the near-top band's edge
    q2[:, 20:100] = (rng.random((c, 80)) + 0.5).astype(np.float32)
    near = rng.standard_normal((c, 40))
    qx[:, 20:60] = np.sqrt(q2[:, 20:60] * (1 + near * 1e-5)).astype(np.float32)
    qx[:, 60:100] = np.sqrt(q2[:, 60:100] * (1 + near * 1e-7)).astype(np.float32)
    scale0 = np.abs(qx).max(axis=0)
    assert plain == bool(q2.min() > 0 and np.abs(qx).max() < 1e15)
    best = np.full(n, -np.finfo(np.float32).max, dtype=np.float32)
    scale, winner = scale0.copy(), np.full(n, -1)
    with np.errstate(all="ignore"):
        win, got = iq1._first_best(qx, q2, scale0)
        for k in range(c):  # the C loop, candidate by candidate
            a, b = qx[k], q2[k]
            take = (b > 0) & (a * a > best * b)
            s = a / b
            scale = np.where(take, s, scale)
            best = np.where(take, s * a, best)
            winner = np.where(take, k, winner)
    assert np.array_equal(win, winner)
    assert np.array_equal(got.view(np.uint32), scale.view(np.uint32))


@pytest.mark.parametrize("pre_rank", [True, False])
@pytest.mark.parametrize("qtype", ["IQ2_XXS", "IQ1_S", "IQ3_S"])
def test_best_neighbour_matches_the_c_loop(qtype: str, pre_rank: bool,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """iq_search.best_neighbour, pre-ranking by pair sums (8-wide grids) or evaluating
    every candidate, picks what C's loop picks: the first least float32 d2, also with
    exact ties (values on the midpoints between levels, equal weights), negative weights
    and zero weights, NaN level values, and sums near float32's underflow."""
    from modelkit.quant.kernels import iq_search

    monkeypatch.setattr(iq_search, "_PRE_RANK_FROM", 0 if pre_rank else 10**9)
    t = iq_tables.search_tables(qtype)
    rng = np.random.default_rng(3)
    off_grid = np.flatnonzero(t.kmap < 0)
    m = 240
    u = rng.choice(off_grid, m).astype(np.int64)
    scale = (rng.random(m) + np.float32(0.5)).astype(np.float32)
    width = t.coords.shape[1]
    xs = (rng.random((m, width)) * 2 * t.nlevels * scale[:, None]).astype(np.float32)
    ws = rng.random((m, width)).astype(np.float32)
    xs[:60] = 2 * scale[:60, None]  # midway between coordinates 1 and 3: ties
    xs[30:60, ::2] = 4 * scale[30:60, None]
    ws[:60] = 1
    ws[60:90, 3] = -ws[60:90, 3]  # the pre-ranking bound needs terms >= 0
    ws[90:120, :5] = 0
    # d2 near float32's underflow, where roundings are off by 2**-150 whatever the sum
    tiny = slice(150, 240)
    scale[tiny] *= np.float32(2.0**-60)
    xs[tiny] *= np.float32(2.0**-60)
    ws[tiny] *= np.ldexp(np.float32(1), rng.integers(-30, -5, (90, 1))).astype(np.float32)
    values = None
    if qtype == "IQ1_S":
        values = np.sort(rng.standard_normal((m, 3)), axis=1).astype(np.float32)
        values[120:150, 2] = np.nan  # candidates using level 2 have a NaN d2: never taken
    got = iq_search.best_neighbour(t, u, np.ascontiguousarray(xs.T), np.ascontiguousarray(ws.T),
                                   scale, values)
    for k in range(m):
        at = -int(t.kmap[u[k]]) - 1
        best, pick = np.float32(np.finfo(np.float32).max), -1
        for g in t.neighbours[at + 1:at + 1 + int(t.neighbours[at])]:
            d2 = np.float32(0)
            for i in range(width):
                q = t.fcoords[g, i] if values is None else values[k, t.levels[g, i]]
                diff = scale[k] * q - xs[k, i]
                d2 = d2 + ws[k, i] * diff * diff
            if d2 < best:
                best, pick = d2, int(g)
        if pick >= 0:  # else C aborts
            assert got[k] == pick, k


@pytest.mark.parametrize("qtype", ["IQ3_S", "IQ3_XXS"])
def test_best_neighbour_twice_is_best_neighbour_at_each_scale(
        qtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """iq_search.best_neighbour_twice (two scales through one complex table) answers what
    best_neighbour answers at each scale, also with exact ties, zero and negative weights,
    NaN values and chunks that split the points."""
    from modelkit.quant.kernels import iq_search

    monkeypatch.setattr(iq_search, "_CHUNK_POINTS", 70)
    t = iq_tables.search_tables(qtype)
    rng = np.random.default_rng(8)
    m, width = 300, t.coords.shape[1]
    u = rng.choice(np.flatnonzero(t.kmap < 0), m).astype(np.int64)
    scales = (rng.random((2, m)) + np.float32(0.5)).astype(np.float32)
    scales[1, :100] = scales[0, :100] * np.float32(0.98)
    xs = (rng.random((width, m)) * 2 * t.nlevels * scales[0]).astype(np.float32)
    ws = rng.random((width, m)).astype(np.float32)
    xs[:, :40] = 2 * scales[0, :40]  # midway between coordinates 1 and 3 at the first scale
    ws[:, :40] = 1
    ws[1, 40:80] = 0
    ws[2, 80:120] = -ws[2, 80:120]
    xs[0, 120:130] = np.nan
    got = iq_search.best_neighbour_twice(t, u, xs, ws, scales)
    for k in range(2):
        assert np.array_equal(got[k], iq_search.best_neighbour(t, u, xs, ws, scales[k]))


def test_iq1_m_plain_proof_implies_the_direct_check() -> None:
    """iq1._m_plain vouches from the prefix sums that every sumq2 of IQ1_M's split search
    is positive and no sum is near overflow; wherever it does, the candidates' own sums
    must say so, over weights and values from subnormal to near overflow, zero halves
    and NaN. It must also vouch for ordinary data (or the fast path is never taken)."""
    from modelkit.quant.kernels import iq1

    rng = np.random.default_rng(11)
    vouched = refused = 0
    for case in range(240):
        n = 64
        x = rng.standard_normal((16, n)).astype(np.float32)
        w = rng.random((16, n)).astype(np.float32)
        kind = case % 8
        with np.errstate(all="ignore"):
            if kind == 1:  # weights from subnormal to huge
                w *= np.float32(10.0 ** rng.integers(-44, 30))
            elif kind == 2:  # values from tiny to near the bound
                x *= np.float32(10.0 ** rng.integers(-30, 15))
            elif kind == 3:  # a half with no weight, a tiny one, or a sub-block with none
                w[rng.integers(0, 2) * 8:][:8, : n // 2] = 0
                w[:8, n // 2:] *= np.float32(1e-35)
                if case % 16 == 3:
                    w[:, 0] = 0
            elif kind == 4:  # a few zero weights and exact ties
                w[rng.random((16, n)) < 0.3] = 0
                x[::3] = x[1]
            elif kind == 5:  # a NaN, or a negative weight
                if rng.random() < 0.5:
                    x[rng.integers(16), rng.integers(n)] = np.nan
                else:
                    w[rng.integers(16), rng.integers(n)] *= -1
            elif kind == 6 and case % 16 == 6:  # both near the bounds at once
                x *= np.float32(3e13) / 16
                w *= np.float32(9e27) / 8
            elif kind == 6:  # huge weights on tiny values
                x *= np.float32(1e-18)
                w *= np.float32(1e30)
            elif kind == 7:  # subnormal weights everywhere
                w *= np.float32(2.0**-140)
            _, px, pw, qx, q2 = iq1._m_sums(x, w)
            direct = bool(q2.min() > 0 and q2.max() < np.float32(1e30)
                          and np.abs(qx).max() < np.float32(1e15))
        if iq1._m_plain(w, px, pw):
            vouched += 1
            assert direct, f"case {case}: vouched for sums the direct check rejects"
        else:
            refused += 1
    assert vouched >= 60 and refused >= 60
