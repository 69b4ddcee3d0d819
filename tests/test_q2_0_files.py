"""Whole Q2_0 files (ggml type 42, which gguf 0.19 cannot name): made by ``quantize``,
``create -q`` and ``convert``, then read back by ``show`` (plain, ``-v``,
``--quantization``, ``--json``), planned by ``--dry-run`` and requantized to other
types, which must give what dequantizing and quantizing again gives."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from test_convert_archs import make_llama

from conftest import GOLDEN, SAMPLE_DIR, needs_golden
from modelkit.cli import main
from modelkit.convert import convert
from modelkit.gguf_file import GGUFInfo, read_gguf
from modelkit.quant import kernels
from modelkit.quant.file_types import ExtraType
from modelkit.quant.requantize import quantize_file

MENU = GOLDEN / "quant-menu"
MENU_MODELS = sorted(p.stem for p in MENU.glob("*.json")) if MENU.is_dir() else []
SAMPLE = SAMPLE_DIR / "liang-ai.gguf"


def mk(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def sample_q2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample model quantized to Q2_0 by modelkit."""
    out = tmp_path_factory.mktemp("q2") / "liang-ai.Q2_0.gguf"
    assert main(["quantize", str(SAMPLE), str(out), "q2_0"]) == 0
    return out


def _raw(path: Path, info: GGUFInfo, name: str) -> np.ndarray:
    t = info.tensor(name)
    assert t is not None
    with open(path, "rb") as f:
        f.seek(t.offset)
        return np.frombuffer(f.read(t.n_bytes), np.uint8)


def assert_requantized(src: Path, out: Path) -> None:
    """Every tensor of ``out`` is the ``src`` tensor copied (same type) or dequantized to
    float32 and quantized to its new type, row by row, with modelkit's kernels."""
    a, b = read_gguf(src), read_gguf(out)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for t in b.tensors:
        s = a.tensor(t.name)
        assert s is not None and s.shape == t.shape
        raw = _raw(src, a, t.name)
        want = raw
        if s.type != t.type:
            x = kernels.to_float32(raw.reshape(s.n_elements // s.shape[0], -1), s.type)
            want = kernels.quantize(t.type, x).ravel()
        assert np.array_equal(_raw(out, b, t.name), want), t.name


def test_sample_q2_0_file_is_read_by_modelkit(sample_q2: Path) -> None:
    info = read_gguf(sample_q2)
    types = {t.name: t.type for t in info.tensors}
    assert types["blk.0.attn_q.weight"] is ExtraType.Q2_0
    assert info.metadata["general.file_type"] == 41  # LLAMA_FTYPE_MOSTLY_Q2_0
    q2 = [t for t in info.tensors if t.type is ExtraType.Q2_0]
    assert len(q2) == 14 and all(t.n_bytes == t.n_elements // 64 * 18 for t in q2)


def test_the_api_takes_q2_0_by_its_llama_ftype_number(sample_q2: Path, tmp_path: Path) -> None:
    out = tmp_path / "41.gguf"
    assert quantize_file(SAMPLE, out, 41, workers=1).file_type_name == "Q2_0"
    assert out.read_bytes() == sample_q2.read_bytes()


def test_show_a_q2_0_file(sample_q2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = mk(capsys, "show", str(sample_q2))
    assert code == 0, err
    assert "quantization        Q2_0" in out
    code, out, err = mk(capsys, "show", str(sample_q2), "--json")
    assert code == 0, err
    assert json.loads(out)["details"]["quantization_level"] == "Q2_0"
    code, out, err = mk(capsys, "show", str(sample_q2), "-v")
    assert code == 0, err
    assert "    blk.0.attn_q.weight         Q2_0    [256 256]" in out
    code, out, err = mk(capsys, "show", str(sample_q2), "-v", "--json")
    assert code == 0, err
    shown = {t["name"]: t["type"] for t in json.loads(out)["tensors"]}
    assert shown["blk.1.ffn_down.weight"] == "Q2_0" and shown["output.weight"] == "Q6_K"


def test_show_quantization_lists_q2_0_tensors(sample_q2: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = mk(capsys, "show", str(sample_q2), "--quantization", "--json")
    assert code == 0, err
    view = json.loads(out)
    by_type = {t["type"]: t for t in view["by_type"]}
    info = read_gguf(sample_q2)
    q2 = [t for t in info.tensors if t.type is ExtraType.Q2_0]
    assert by_type["Q2_0"]["tensors"] == len(q2)
    assert by_type["Q2_0"]["bytes"] == sum(t.n_bytes for t in q2)
    assert by_type["Q2_0"]["bits_per_weight"] == 2.25  # 18 bytes per 64 weights
    assert {t["name"] for t in view["tensors"] if t["type"] == "Q2_0"} == {t.name for t in q2}
    code, out, err = mk(capsys, "show", str(sample_q2), "--quantization")
    assert code == 0, err
    assert "    Q2_0     14         1179648       331776    2.25" in out


def test_requantize_from_q2_0_dequantizes_and_quantizes_again(
        sample_q2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for ftype in ("q8_0", "f16", "q4_K_M"):
        out = tmp_path / f"{ftype}.gguf"
        code, stdout, err = mk(capsys, "quantize", str(sample_q2), str(out), ftype)
        assert code == 0, err
        assert f"quantizing Q2_0 model to {ftype.upper()}" in stdout
        assert_requantized(sample_q2, out)
        types = {t.type for t in read_gguf(out).tensors}
        assert ExtraType.Q2_0 not in types
    # --report compares with the dequantized Q2_0 values.
    code, stdout, err = mk(capsys, "quantize", str(sample_q2), str(tmp_path / "r.gguf"), "q8_0",
                           "--report", "--json")
    assert code == 0, err
    report = json.loads(stdout.splitlines()[-1])
    row = {t["name"]: t for t in report["report"]}["blk.0.attn_q.weight"]
    assert (row["source_type"], row["type"]) == ("Q2_0", "Q8_0")
    info = read_gguf(sample_q2)
    x = kernels.to_float32(_raw(sample_q2, info, "blk.0.attn_q.weight").reshape(256, -1),
                           ExtraType.Q2_0)
    y = kernels.dequantize(T.Q8_0, kernels.quantize(T.Q8_0, x))
    d = y.astype(np.float64) - x
    assert row["rmse"] == pytest.approx(float(np.sqrt(np.mean(d * d))), rel=1e-9)
    assert row["rmse"] > 0


def test_dry_run_from_and_to_q2_0(sample_q2: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.gguf"
    code, stdout, err = mk(capsys, "quantize", "--dry-run", "--json", str(sample_q2), str(out),
                           "q4_K_M")
    assert code == 0, err
    plan = json.loads(stdout)
    sources = {t["name"]: t["source_type"] for t in plan["tensors"]}
    assert sources["blk.0.attn_q.weight"] == "Q2_0" and plan["missing_kernels"] == []
    assert not out.exists()
    code, stdout, err = mk(capsys, "quantize", "--dry-run", str(sample_q2), str(out), "q8_0")
    assert code == 0, err
    assert "blk.0.attn_q.weight                  - [   256,    256],    q2_0 -> q8_0 " in stdout
    assert mk(capsys, "quantize", str(sample_q2), str(out), "q8_0")[0] == 0
    assert f"output: Q8_0, {out.stat().st_size} bytes" in stdout  # the plan was exact
    code, stdout, err = mk(capsys, "quantize", "--dry-run", str(SAMPLE), str(out), "q2_0")
    assert code == 0, err
    assert f"output: Q2_0, {sample_q2.stat().st_size} bytes" in stdout
    assert "has no quantizer" not in stdout


def test_create_q_q2_0_and_from_a_q2_0_file(sample_q2: Path, tmp_path: Path, models_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = mk(capsys, "create", "q2", "-f", str(SAMPLE_DIR / "Modelfile"), "-q",
                        "q2_0")
    assert code == 0, err
    # The stored blob is the file `modelkit quantize` writes.
    assert f"creating new layer sha256:{_sha(sample_q2.read_bytes())}" in out
    view = json.loads(mk(capsys, "show", "q2", "--quantization", "--json")[1])
    assert "Q2_0" in {t["type"] for t in view["by_type"]}
    (tmp_path / "Modelfile").write_text(f"FROM {sample_q2}\n")
    code, out, err = mk(capsys, "create", "from-q2", "-f", str(tmp_path / "Modelfile"),
                        "-q", "q8_0")
    assert code == 0, err
    assert "quantizing Q2_0 model to Q8_0" in out
    assert json.loads(mk(capsys, "show", "from-q2", "--json")[1])["details"][
        "quantization_level"] == "Q8_0"
    assert mk(capsys, "verify")[0] == 0


def test_a_q2_0_model_given_as_imatrix_is_named(sample_q2: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.gguf"
    code, _, err = mk(capsys, "quantize", "--imatrix", str(sample_q2), str(SAMPLE), str(out),
                      "q4_K_M")
    assert code == 13 and err.count("\n") == 1, err
    assert err.startswith(f"Error: {sample_q2}: missing imatrix metadata"), err
    assert not out.exists()


def test_convert_to_q2_0_is_quantize_of_the_f16_conversion(tmp_path: Path) -> None:
    make_llama(tmp_path / "m")
    convert(tmp_path / "m", tmp_path / "q2.gguf", "q2_0")
    convert(tmp_path / "m", tmp_path / "f16.gguf", "f16")
    quantize_file(tmp_path / "f16.gguf", tmp_path / "want.gguf", "q2_0", workers=1)
    assert (tmp_path / "q2.gguf").read_bytes() == (tmp_path / "want.gguf").read_bytes()
    assert ExtraType.Q2_0 in {t.type for t in read_gguf(tmp_path / "q2.gguf").tensors}


def _menu_params() -> list[Any]:
    return [pytest.param(m, marks=[] if m == "llama-moe8-L6" else [pytest.mark.slow], id=m)
            for m in MENU_MODELS]


@needs_golden(MENU)
@pytest.mark.parametrize("model", _menu_params())
def test_golden_q2_0_files_show_and_requantize(model: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """llama-quantize's Q2_0 file of each quant-menu source (made here, checked by its
    sha256): ``show --quantization`` counts its types as llama-quantize did, and
    requantizing it to Q8_0 and F16 dequantizes the Q2_0 tensors."""
    result = json.loads((MENU / f"{model}.json").read_text())["results"]["Q2_0"]
    q2 = tmp_path / "q2.gguf"
    monkeypatch.chdir(MENU)
    args = [str(q2) if a == "OUT.gguf" else a for a in result["args"]]
    assert mk(capsys, "quantize", *args)[0] == 0
    assert _sha(q2.read_bytes()) == result["output_sha256"]
    code, out, err = mk(capsys, "show", str(q2), "--quantization", "--json")
    assert code == 0, err
    assert {t["type"]: t["tensors"] for t in json.loads(out)["by_type"]} == result["type_counts"]
    for ftype in ("q8_0", "f16"):
        out_path = tmp_path / f"{ftype}.gguf"
        code, _, err = mk(capsys, "quantize", str(q2), str(out_path), ftype)
        assert code == 0, err
        assert_requantized(q2, out_path)
        types = {t.type for t in read_gguf(out_path).tensors}
        assert ExtraType.Q2_0 not in types and T.F32 in types
