"""modelkit.quant.kernels against llama.cpp's own bytes (golden data) and basic properties."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.constants import GGML_QUANT_SIZES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import GOLDEN as GOLDEN_ROOT
from conftest import needs_golden
from modelkit.quant.kernels import FORMATS, SUPPORTED_TYPES, dequantize, quantize, to_float32
from modelkit.quant.kernels.common import nearest_int, seq_sum
from modelkit.quant.kernels.floats import fp32_to_fp16_bits
from modelkit.quant.kernels.nonlinear import KVALUES_IQ4NL, best_index

GOLDEN = GOLDEN_ROOT / "kernels"
TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
         "IQ4_NL", "IQ4_XS"]
FLOATS = ["F16", "BF16"]


@functools.cache
def _golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"{name}.npz") as z:
        return {key: z[key] for key in z.files}


def _golden_params(types: list[str], with_deq: bool = False) -> list[object]:
    """One (type, case) per golden case; with_deq: only the cases with a ``__deq``.
    A missing file is one skipped param (a failing one under CI)."""
    params: list[object] = []
    for name in types:
        path = GOLDEN / f"{name}.npz"
        if not path.is_file():
            params.append(pytest.param(name, "missing", marks=needs_golden(path),
                                       id=f"{name}-missing"))
            continue
        z = _golden(name)
        for case in map(str, z["cases"]):
            if not with_deq or f"{case}__deq" in z:
                params.append(pytest.param(name, case, id=f"{name}-{case}"))
    return params


def _describe_mismatch(
    name: str, case: str, x: np.ndarray, got: np.ndarray, expected: np.ndarray
) -> str:
    block_elems, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[name]]
    g = got.reshape(-1, block_bytes)
    e = expected.reshape(-1, block_bytes)
    bad = np.flatnonzero((g != e).any(axis=1))
    first = int(bad[0])
    values = x.reshape(-1, block_elems)[first]
    return (
        f"{name}/{case}: {bad.size} of {len(e)} blocks differ; first is block {first} "
        f"(row {first // (x.shape[1] // block_elems)})\n"
        f"  expected {e[first].tobytes().hex()}\n"
        f"  got      {g[first].tobytes().hex()}\n"
        f"  input    {np.array2string(values, precision=9, max_line_width=120)}"
    )


@pytest.mark.parametrize(("name", "case"), _golden_params(TYPES + FLOATS))
def test_quantize_matches_llama_cpp(name: str, case: str) -> None:
    z = _golden(name)
    x = z[f"{case}__x"]
    imatrix = z.get(f"{case}__imatrix")
    expected = z[f"{case}__q"]
    got = quantize(GGMLQuantizationType[name], x, imatrix)
    assert got.dtype == np.uint8
    assert got.shape == expected.shape
    if got.tobytes() != expected.tobytes():
        pytest.fail(_describe_mismatch(name, case, x, got, expected))


@pytest.mark.parametrize(("name", "case"), _golden_params(TYPES + FLOATS, with_deq=True))
def test_dequantize_matches_llama_cpp(name: str, case: str) -> None:
    z = _golden(name)
    expected = z[f"{case}__deq"]
    got = dequantize(GGMLQuantizationType[name], z[f"{case}__q"])
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    # bit patterns, so that -0.0, inf and the x86 default NaN (huge_1e6) all count
    diff = np.flatnonzero(got.view(np.uint32) != expected.view(np.uint32))
    assert diff.size == 0, (
        f"{name}/{case}: {diff.size} of {expected.size} values differ; first at flat "
        f"index {diff[0]}: expected {expected.flat[diff[0]]!r}, got {got.flat[diff[0]]!r}"
    )


@needs_golden(GOLDEN)
def test_golden_meta_agrees_with_gguf_block_sizes() -> None:
    for name in TYPES:
        meta = json.loads(str(_golden(name)["meta_json"]))
        qtype = GGMLQuantizationType[name]
        assert (meta["block_elems"], meta["block_bytes"]) == GGML_QUANT_SIZES[qtype]
        assert (FORMATS[qtype].block_elems, FORMATS[qtype].block_bytes) == (
            GGML_QUANT_SIZES[qtype]
        )


# ---------------------------------------------------------------- exactness helpers


@pytest.mark.parametrize("shape", [(32, 1), (32, 2), (16, 5), (32, 4099), (2, 8, 3), (3, 1, 7)])
def test_seq_sum_is_the_c_loop(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7)
    a = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 6, shape)).astype(np.float32)
    for from_zero in (True, False):
        acc = np.zeros_like(a[..., 0, :]) if from_zero else a[..., 0, :].copy()
        for i in range(0 if from_zero else 1, a.shape[-2]):
            acc = acc + a[..., i, :]
        got = seq_sum(np.ascontiguousarray(a), from_zero=from_zero)
        assert got.tobytes() == acc.tobytes()
    # C starts from +0.0: an all -0.0 sum is +0.0
    neg = np.full((4, 3), -0.0, dtype=np.float32)
    assert not np.signbit(seq_sum(neg)).any()


def _ggml_fp32_to_fp16_reference(f: np.ndarray) -> np.ndarray:
    """ggml_compute_fp32_to_fp16's own bit manipulation, transcribed in numpy (an
    implementation independent of the cast the kernels use)."""
    f = np.ascontiguousarray(f, dtype=np.float32)
    base = (np.abs(f) * np.float32(2.0**112)) * np.float32(2.0**-110)
    w = f.view(np.uint32)
    shl1 = w << np.uint32(1)
    sign = w & np.uint32(0x80000000)
    bias = np.maximum(shl1 & np.uint32(0xFF000000), np.uint32(0x71000000))
    base = ((bias >> np.uint32(1)) + np.uint32(0x07800000)).view(np.float32) + base
    bits = base.view(np.uint32)
    nonsign = ((bits >> np.uint32(13)) & np.uint32(0x7C00)) + (bits & np.uint32(0x0FFF))
    out = np.where(shl1 > np.uint32(0xFF000000), np.uint32(0x7E00), nonsign)
    return (out | (sign >> np.uint32(16))).astype(np.uint16)


def test_fp16_conversion_is_ggmls() -> None:
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    f = bits.view(np.float32)  # NaNs with every payload included
    edge = np.array([0.0, -0.0, 65504.0, 65520.0, -65520.0, 6e-8, 2.0**-25, 2.0**-24,
                     3 * 2.0**-26, 1e-45, np.inf, -np.inf, np.nan, -np.nan], dtype=np.float32)
    f = np.concatenate([f, edge])
    with np.errstate(over="ignore", invalid="ignore"):
        want = _ggml_fp32_to_fp16_reference(f)
    assert np.array_equal(fp32_to_fp16_bits(f), want)
    nan = np.array([np.nan, -np.nan], dtype=np.float32)
    assert list(fp32_to_fp16_bits(nan)) == [0x7E00, 0xFE00]  # ggml's NaN


def test_nearest_int_rounds_half_to_even() -> None:
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 3.49999, -7.5, 4194303.0], dtype=np.float32)
    assert list(nearest_int(v)) == [0, 2, 2, 0, -2, 3, -8, 4194303]


def test_q8_0_rounds_half_away_from_zero() -> None:
    # max |x| = 127 gives d = 1, so every other value is an exact tie
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997] + [0.0] * 24],
                 dtype=np.float32)
    q = quantize(GGMLQuantizationType.Q8_0, x)
    assert list(q[0, 2:10].view(np.int8)) == [127, 1, 2, 3, -1, -2, -3, 0]


# ---------------------------------------------------------------- API behaviour


@pytest.mark.parametrize("name", TYPES)
def test_shapes_dtypes_and_errors(name: str) -> None:
    qtype = GGMLQuantizationType[name]
    be, bb = GGML_QUANT_SIZES[qtype]
    x = np.random.default_rng(1).standard_normal((3, 2 * be)).astype(np.float32)
    q = quantize(qtype, x)
    assert q.dtype == np.uint8 and q.shape == (3, 2 * bb)
    y = dequantize(qtype, q)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert dequantize(qtype, q, n_per_row=2 * be).shape == x.shape
    assert quantize(qtype, np.zeros((0, be), np.float32)).shape == (0, bb)
    with pytest.raises(ValueError):
        quantize(qtype, np.zeros((2, be + 16), np.float32))
    with pytest.raises(ValueError):
        dequantize(qtype, q, n_per_row=be)
    fmt = FORMATS[qtype]
    blocks = x.reshape(-1, be)
    assert np.array_equal(fmt.quantize_blocks(blocks), q.reshape(-1, bb))
    assert np.array_equal(fmt.dequantize_blocks(q.reshape(-1, bb)), y.reshape(-1, be))


@pytest.mark.parametrize("name", TYPES)
def test_quantize_blocks_with_imatrix_treats_each_block_as_a_row(name: str) -> None:
    qtype = GGMLQuantizationType[name]
    be = GGML_QUANT_SIZES[qtype][0]
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((5, be)) * 0.02).astype(np.float32)
    im = np.exp(rng.standard_normal(be)).astype(np.float32)
    assert np.array_equal(FORMATS[qtype].quantize_blocks(x, im), quantize(qtype, x, im))


@pytest.mark.parametrize("name", TYPES)
def test_chunking_does_not_change_bytes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    qtype = GGMLQuantizationType[name]
    be = GGML_QUANT_SIZES[qtype][0]
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((7, 3 * be)) * 0.02).astype(np.float32)
    x[2, :be] = 0.0
    im = np.exp(rng.standard_normal(3 * be)).astype(np.float32)
    expected = [quantize(qtype, x), quantize(qtype, x, im)]
    fmt_class = type(FORMATS[qtype])
    monkeypatch.setattr(fmt_class, "chunk_blocks", 5)
    monkeypatch.setattr(fmt_class, "weighted_chunk_blocks", 2)
    assert np.array_equal(quantize(qtype, x), expected[0])
    assert np.array_equal(quantize(qtype, x, im), expected[1])


def test_q8_0_ignores_the_imatrix() -> None:
    x = np.random.default_rng(4).standard_normal((4, 64)).astype(np.float32)
    im = np.linspace(0.1, 5, 64, dtype=np.float32)
    qtype = GGMLQuantizationType.Q8_0
    assert np.array_equal(quantize(qtype, x, im), quantize(qtype, x))


def test_imatrix_length_is_checked() -> None:
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(ValueError):
        quantize(GGMLQuantizationType.Q4_0, x, np.ones(32, np.float32))


def test_to_float32_plain_types() -> None:
    x = np.random.default_rng(5).standard_normal((3, 8)).astype(np.float32)
    assert np.array_equal(to_float32(x, GGMLQuantizationType.F32), x)
    assert np.array_equal(to_float32(x.view(np.uint8), GGMLQuantizationType.F32), x)
    h = x.astype(np.float16)
    assert np.array_equal(to_float32(h, GGMLQuantizationType.F16), h.astype(np.float32))
    assert np.array_equal(to_float32(h.view(np.uint8), GGMLQuantizationType.F16),
                          h.astype(np.float32))
    bf = (x.view(np.uint32) >> 16).astype(np.uint16)
    expected = (bf.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(to_float32(bf, GGMLQuantizationType.BF16), expected)
    assert np.array_equal(to_float32(bf.view(np.uint8), GGMLQuantizationType.BF16), expected)


def test_to_float32_block_types() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    qtype = GGMLQuantizationType.Q4_K
    q = quantize(qtype, x)
    assert np.array_equal(to_float32(q, qtype), dequantize(qtype, q))
    # the low-bit types route to modelkit's dequantizers too (gguf's are not bit-exact)
    for other in (GGMLQuantizationType.IQ1_M, GGMLQuantizationType.TQ1_0):
        assert other in FORMATS
        raw = quantize(other, x)
        assert np.array_equal(to_float32(raw, other), dequantize(other, raw))


# ---------------------------------------------------------------- properties

# Round trip error bound relative to the block's max |x|: half a step of each format's
# grid plus slack for the f16 scales (K formats: their 6-/8-bit sub-block scales).
ERROR_BOUND = {"Q8_0": 0.006, "Q4_0": 0.13, "Q4_1": 0.07, "Q5_0": 0.065, "Q5_1": 0.035,
               "Q2_K": 0.7, "Q3_K": 0.45, "Q4_K": 0.2, "Q5_K": 0.1, "Q6_K": 0.04,
               "IQ4_NL": 0.15, "IQ4_XS": 0.2}


@st.composite
def _matrices(draw: st.DrawFn, name: str) -> np.ndarray:
    be = GGML_QUANT_SIZES[GGMLQuantizationType[name]][0]
    rows = draw(st.integers(1, 4))
    n = be * draw(st.integers(1, 2))
    values = draw(hnp.arrays(np.float32, (rows, n), elements=st.floats(
        -1000, 1000, width=32, allow_subnormal=False)))
    scale = draw(st.sampled_from([1e-3, 0.02, 1.0, 10.0]))
    scaled: np.ndarray = (values * np.float32(scale)).astype(np.float32)
    return scaled


_SETTINGS = settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", TYPES)
@_SETTINGS
@given(data=st.data())
def test_rows_are_independent(name: str, data: st.DataObject) -> None:
    qtype = GGMLQuantizationType[name]
    x = data.draw(_matrices(name))
    use_imatrix = data.draw(st.booleans())
    im = None
    if use_imatrix:
        im = data.draw(hnp.arrays(np.float32, x.shape[1], elements=st.floats(
            0, 100, width=32, allow_subnormal=False)))
    rows = data.draw(st.lists(st.integers(0, x.shape[0] - 1), min_size=1, max_size=4))
    whole = quantize(qtype, x, im)
    part = quantize(qtype, x[rows], im)
    assert np.array_equal(part, whole[rows])


@pytest.mark.parametrize("name", TYPES)
@_SETTINGS
@given(data=st.data())
def test_round_trip_error_is_bounded(name: str, data: st.DataObject) -> None:
    qtype = GGMLQuantizationType[name]
    be = GGML_QUANT_SIZES[qtype][0]
    x = data.draw(_matrices(name))
    y = dequantize(qtype, quantize(qtype, x))
    assert y.shape == x.shape and y.dtype == np.float32
    xb = x.reshape(-1, be)
    err = np.abs(y.reshape(-1, be) - xb).max(axis=1)
    bound = ERROR_BOUND[name] * np.abs(xb).max(axis=1) + 1e-3
    worst = int(np.argmax(err - bound))
    assert (err <= bound).all(), (
        f"block {worst}: error {err[worst]} > bound {bound[worst]}; input {xb[worst]}"
    )


def test_iq4_best_index_is_the_c_binary_search() -> None:
    """The table lookup against a transcription of best_index_int8, on every midpoint
    and its float32 neighbours, the table values, the ends and random values."""
    kv = [int(v) for v in KVALUES_IQ4NL]

    def c_best_index(x: np.float32) -> int:
        if x <= kv[0]:
            return 0
        if x >= kv[-1]:
            return 15
        ml, mu = 0, 15
        while mu - ml > 1:
            mav = (ml + mu) // 2
            if x < kv[mav]:
                mu = mav
            else:
                ml = mav
        return mu - 1 if (x - np.float32(kv[mu - 1])) < (np.float32(kv[mu]) - x) else mu

    mids = np.array([(a + b) / 2 for a, b in zip(kv[:-1], kv[1:], strict=True)], np.float32)
    v = np.concatenate([mids, np.nextafter(mids, np.float32(-1e9)),
                        np.nextafter(mids, np.float32(1e9)), np.array(kv, np.float32),
                        np.array([-1e30, -128, 114, 1e30, 0.0, -0.0], np.float32),
                        np.random.default_rng(9).uniform(-140, 140, 2000).astype(np.float32)])
    with np.errstate(invalid="ignore"):
        got = best_index(v)
    assert [int(i) for i in got] == [c_best_index(x) for x in v]
    assert int(best_index(np.array([np.nan], np.float32))[0]) == 15


@pytest.mark.parametrize(("name", "size"), [("F32", 4), ("F16", 2), ("BF16", 2)])
def test_float_types_through_the_same_entry_points(name: str, size: int) -> None:
    qtype = GGMLQuantizationType[name]
    assert qtype in SUPPORTED_TYPES and qtype not in FORMATS
    x = np.random.default_rng(10).standard_normal((3, 40)).astype(np.float32)
    q = quantize(qtype, x, np.ones(40, np.float32))  # the imatrix is ignored
    assert q.dtype == np.uint8 and q.shape == (3, 40 * size)
    assert np.array_equal(q, quantize(qtype, x))
    y = dequantize(qtype, q)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.array_equal(y, to_float32(q, qtype))
    assert np.array_equal(dequantize(qtype, q.reshape(-1), n_per_row=40), y)
    assert np.array_equal(quantize(qtype, y), q)  # a stored value converts to itself


def test_bf16_rounds_half_to_even_and_keeps_nan_quiet() -> None:
    bits = np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF, 0x7F800001, 0xFF800000],
                    dtype=np.uint32)
    q = quantize(GGMLQuantizationType.BF16, bits.view(np.float32)[None, :])
    assert list(q.view("<u2")[0]) == [0x3F80, 0x3F82, 0x3F81, 0x7F80, 0x7FC0, 0xFF80]


@pytest.mark.parametrize("name", ["Q4_0", "Q5_0", "Q4_1", "Q5_1", "Q8_0"])
def test_nan_is_skipped_by_the_block_extremes(name: str) -> None:
    """ggml's ``if (amax < fabsf(v))`` / ``if (v < min)`` / ``if (v > max)`` never take a
    NaN (Q8_0's MAX chain restarts after it): a block starting with a NaN gets the scale
    of its other values, and only the NaN's own level differs from the same block with a
    copy of its second value there (numpy's max would propagate the NaN)."""
    qtype = GGMLQuantizationType[name]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 32)).astype(np.float32)
    x[:, 0] = x[:, 1]  # the extremes do not depend on element 0
    with_nan = x.copy()
    with_nan[:, 0] = np.nan
    q_copy, q_nan = quantize(qtype, x), quantize(qtype, with_nan)
    head = 4 if name in ("Q4_1", "Q5_1") else 2  # d (and m)
    assert np.array_equal(q_nan[:, :head], q_copy[:, :head])
    deq_copy = dequantize(qtype, q_copy)
    deq_nan = dequantize(qtype, q_nan)
    assert np.array_equal(deq_nan[:, 1:], deq_copy[:, 1:])
    assert np.all(np.isfinite(deq_nan))


def test_q8_0_block_ending_in_nan_has_a_nan_scale() -> None:
    """Q8_0's ``amax = MAX(amax, fabsf(v))`` ends as NaN when the last value is NaN: d is
    NaN and every quant 0 (1/d is NaN, which C converts to int8 0)."""
    x = np.random.default_rng(5).standard_normal((3, 32)).astype(np.float32)
    x[:, 31] = np.nan
    q = quantize(GGMLQuantizationType.Q8_0, x)
    assert np.all(q[:, 2:] == 0)
    assert np.all(np.isnan(dequantize(GGMLQuantizationType.Q8_0, q)))


def test_q3_k_sub_block_whose_sums_overflow_keeps_the_block_scale() -> None:
    """A sub-block of huge values (x^2 overflows: make_q3_quants returns NaN) is skipped
    by quantize_row_q3_K_ref's ``fabsf(scale) > amax``: its 6-bit scale is 0 and the
    others, and d, are those of the same block with that sub-block all zero."""
    qtype = GGMLQuantizationType.Q3_K
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    huge = x.copy()
    huge[:, 16:32] = 3e30 * np.sign(x[:, 16:32])
    zero = x.copy()
    zero[:, 16:32] = 0
    q_huge, q_zero = quantize(qtype, huge), quantize(qtype, zero)
    assert np.array_equal(q_huge[:, 96:110], q_zero[:, 96:110])  # scales and d
    deq_huge, deq_zero = dequantize(qtype, q_huge), dequantize(qtype, q_zero)
    assert np.array_equal(deq_huge[:, 16:32], np.zeros((4, 16), np.float32))
    assert np.array_equal(np.delete(deq_huge, np.s_[16:32], axis=1),
                          np.delete(deq_zero, np.s_[16:32], axis=1))


def test_iq4_nl_blocks_with_nan_or_inf_quantize_like_ggml() -> None:
    """NaN and +-inf used to crash the table lookup. ggml: best_index_int8 sends NaN to
    index 15; a NaN makes every try's sums NaN, so the block's d is 0 (``sumq2 > 0``
    fails); the other blocks of the row are unaffected."""
    qtype = GGMLQuantizationType.IQ4_NL
    x = np.random.default_rng(6).standard_normal((3, 64)).astype(np.float32)
    bad = x.copy()
    bad[:, 5] = [np.nan, np.inf, -np.inf]
    q, q_clean = quantize(qtype, bad), quantize(qtype, x)
    assert np.array_equal(q[:, 18:], q_clean[:, 18:])
    assert np.all(dequantize(qtype, q[:1])[0, :32] == 0)
