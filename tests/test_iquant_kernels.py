"""Low-bit kernels (TQ, FP4, Q1_0/Q2_0, IQ1/IQ2/IQ3) against llama.cpp's own bytes."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest

from conftest import GOLDEN
from modelkit.quant.iq_wip import fp4, lowbit, ternary

KERNELS = GOLDEN / "kernels"


class Kernel(NamedTuple):
    quantize: Callable[[np.ndarray, np.ndarray | None], np.ndarray]
    dequantize: Callable[[np.ndarray, int], np.ndarray]


TYPES: dict[str, Kernel] = {
    "TQ1_0": Kernel(ternary.quantize_tq1_0, ternary.dequantize_tq1_0),
    "TQ2_0": Kernel(ternary.quantize_tq2_0, ternary.dequantize_tq2_0),
    "MXFP4": Kernel(fp4.quantize_mxfp4, fp4.dequantize_mxfp4),
    "NVFP4": Kernel(fp4.quantize_nvfp4, fp4.dequantize_nvfp4),
    "Q1_0": Kernel(lowbit.quantize_q1_0, lowbit.dequantize_q1_0),
    "Q2_0": Kernel(lowbit.quantize_q2_0, lowbit.dequantize_q2_0),
}


def _missing(what: str) -> list[object]:
    """Missing golden data: a failure under CI (env CI set), else a visible skip."""
    if os.environ.get("CI"):
        return [pytest.param(None, None, id=f"missing-{what}")]
    return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"{what} not found"))]


@functools.cache
def _golden(name: str) -> dict[str, np.ndarray]:
    with np.load(KERNELS / f"{name}.npz") as z:
        return {key: z[key] for key in z.files}


def _params(with_deq: bool) -> list[object]:
    params: list[object] = []
    for name in TYPES:
        if not (KERNELS / f"{name}.npz").is_file():
            params += _missing(str(KERNELS / f"{name}.npz"))
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
def test_quantize_matches_llama_cpp(name: str | None, case: str | None) -> None:
    assert name is not None and case is not None, "golden data missing under CI"
    z = _golden(name)
    x = z[f"{case}__x"]
    imatrix = z.get(f"{case}__imatrix")
    got = TYPES[name].quantize(x, imatrix)
    expected = z[f"{case}__q"]
    assert got.shape == expected.shape
    if got.tobytes() != expected.tobytes():
        pytest.fail(f"{name}/{case}: {_block_mismatch(name, got, expected)}")


@pytest.mark.parametrize(("name", "case"), _params(with_deq=True))
def test_dequantize_matches_llama_cpp(name: str | None, case: str | None) -> None:
    assert name is not None and case is not None, "golden data missing under CI"
    z = _golden(name)
    q, expected = z[f"{case}__q"], z[f"{case}__deq"]
    got = TYPES[name].dequantize(q, expected.shape[1])
    assert got.dtype == np.float32 and got.shape == expected.shape
    bad = np.flatnonzero(got.view(np.uint32) != expected.view(np.uint32))
    assert bad.size == 0, (f"{name}/{case}: {bad.size} values differ, first at {bad[0]}: "
                           f"{got.flat[bad[0]]!r} != {expected.flat[bad[0]]!r}")
