"""Whole files against llama-quantize: every case of ``golden/quant-menu/*.json``.

Each case runs ``modelkit quantize`` with llama-quantize's own arguments, from the
quant-menu folder (so that the imatrix path written into the file is the same string),
and compares the output per tensor (type, shape, sha256), ``general.file_type``, the KV
diff, the KV order and the whole file's sha256.  Refused cases must be refused with no
output file.  Every case runs: modelkit has a quantizer for every type of the menu
(Q2_0, the type gguf cannot name, included).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from gguf import GGMLQuantizationType

from conftest import GOLDEN, needs_golden
from modelkit.cli import _quant_spec as quant_spec_from_args
from modelkit.cli import build_parser, main
from modelkit.errors import QuantizationError
from modelkit.gguf_file import GGUFInfo, read_gguf
from modelkit.quant import kernels
from modelkit.quant.file_types import ExtraType
from modelkit.quant.fileplan import plan_file

MENU = GOLDEN / "quant-menu"
MODELS = sorted(p.stem for p in MENU.glob("*.json")) if MENU.is_dir() else []
FLOATS = {"F32", "F16", "BF16"}
# A representative slice runs by default (every refusal, an imatrix run and a K-quant mix
# per model, every option and format once); the rest carries the `slow` marker.
QUICK_CASES = {"Q4_K_M+imatrix", "Q3_K_M"}
QUICK_L10 = {"Q2_K", "IQ4_XS+imatrix", "Q4_K_M+imatrix_dat", "Q4_K_M+imatrix+exclude_ffn_down",
             "Q4_K_M+q4_K_L", "Q4_K_M+pure", "Q4_K_M+tensor_type_regex", "Q4_K_M+leave_output",
             "Q4_K_M+requant_from_Q8_0_refused", "COPY", "BF16"}


def _quick(model: str, case: str) -> bool:
    result = _golden(model)["results"][case]
    return ("error" in result and "requantizing" not in " ".join(result["error"])) \
        or case in QUICK_CASES or (model == "llama-L10" and case in QUICK_L10)


def _available() -> set[str]:
    return {t.name for t in kernels.FORMATS} | FLOATS


@functools.cache
def _golden(model: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MENU / f"{model}.json").read_text())
    return data


def _cases() -> list[Any]:
    out = []
    for model in MODELS:
        for case in _golden(model)["results"]:
            marks = [] if _quick(model, case) else [pytest.mark.slow]
            out.append(pytest.param(model, case, marks=marks, id=f"{model}:{case}"))
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def q8_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The requantize cases' input: each model's plain Q8_0 output (checked against the
    golden ``requant_source`` sha256), made once per session."""
    return {"dir": tmp_path_factory.mktemp("q8")}


def _q8_source(q8_sources: dict[str, Path], model: str) -> Path:
    path = q8_sources["dir"] / f"{model}.Q8_0.gguf"
    if not path.exists():
        golden = _golden(model)
        args = golden["requant_source"]["args"]
        assert main(["quantize", str(MENU / args[0]), str(path), args[2], "1"]) == 0
        assert _sha(path.read_bytes()) == golden["requant_source"]["sha256"]
    return path


def _kv_type_name(types: tuple[Any, ...]) -> str:
    return str(types[0].name)


@needs_golden(MENU)
def test_quant_menu_golden_present() -> None:
    assert len(MODELS) == 9


@pytest.mark.parametrize(("model", "case"), _cases())
def test_quant_menu_case(model: str, case: str, tmp_path: Path, q8_sources: dict[str, Path],
                         monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    golden = _golden(model)
    result = golden["results"][case]
    refused_requant = "error" in result and "requantizing from type" in " ".join(result["error"])
    if refused_requant:
        # modelkit requantizes (with a warning) where llama-quantize wants
        # --allow-requantize: the same bytes as the allowed run.
        result = golden["results"][case.removesuffix("_refused")]
    args = list(golden["results"][case]["args"])
    out = tmp_path / "OUT.gguf"
    args = [str(out) if a == "OUT.gguf" else a for a in args]
    if "Q8_0-SOURCE.gguf" in args:
        args[args.index("Q8_0-SOURCE.gguf")] = str(_q8_source(q8_sources, model))
    monkeypatch.chdir(MENU)
    code = main(["quantize", *args])
    err = capsys.readouterr().err
    if "error" in result:
        first, *rest = err.splitlines()
        assert code != 0 and first.startswith("Error: "), err
        assert not rest or rest[0] == "allowed quantization types:", err  # unknown: the menu
        assert not out.exists() and not list(tmp_path.iterdir())
        return
    assert code == 0, err
    _compare(golden, result, out)


def _compare(golden: dict[str, Any], result: dict[str, Any], out: Path) -> None:
    info = read_gguf(out)
    data = out.read_bytes()
    got = [{"name": t.name, "type": t.type.name, "shape": list(t.shape),
            "sha256": _sha(data[t.offset:t.offset + t.n_bytes])} for t in info.tensors]
    want = [{k: t[k] for k in ("name", "type", "shape", "sha256")} for t in result["tensors"]]
    bad = [f"{g['name']}: got {g['type']} {g['sha256'][:12]}, want {w['type']} "
           f"{w['sha256'][:12]}" for g, w in zip(got, want, strict=False) if g != w]
    assert len(got) == len(want) and not bad, "\n".join(bad[:10])
    assert info.metadata["general.file_type"] == result["general.file_type"]
    diff = result["kv_diff"]
    for key, kv in {**diff["added"], **{k: v["output"] for k, v in diff["changed"].items()}
                    }.items():
        assert _kv_type_name(info.metadata_types[key]) == kv["type"], key
        if kv["type"] != "ARRAY":
            assert info.metadata[key] == kv["value"], key
    assert not set(diff["removed"]) & set(info.metadata)
    assert list(info.metadata) == result["output_kv_order"]
    assert len(data) == result["output_size"]
    assert _sha(data) == result["output_sha256"]


def test_registry_is_queried() -> None:
    # Which types have a quantizer comes from the kernels registry, not a hard-coded list.
    assert {"Q4_K", "Q6_K", "Q8_0"} <= _available()
    assert all(isinstance(t, (GGMLQuantizationType, ExtraType)) for t in kernels.FORMATS)
    assert ExtraType.Q2_0 in kernels.FORMATS  # the type gguf cannot name has its kernel


@functools.cache
def _info(path: Path) -> GGUFInfo:
    return read_gguf(path)


@pytest.mark.parametrize("model", MODELS)
def test_dry_run_every_case(model: str, q8_sources: dict[str, Path],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan behind ``--dry-run`` for every case (no kernel needed), from the CLI's own
    parsing of llama-quantize's arguments: the types, the exact output size of
    llama-quantize's file, the imatrix KVs, the refusals.  (The command itself is run
    in tests/test_quantize_cli.py; here the source header is read once per model.)"""
    golden = _golden(model)
    monkeypatch.chdir(MENU)
    parser = build_parser()
    for case, result in golden["results"].items():
        if "error" in result and "requantizing" in " ".join(result["error"]):
            result = golden["results"][case.removesuffix("_refused")]
        args = parser.parse_args(["quantize", "--dry-run", *result["args"]])
        src = MENU / args.source
        if args.source == "Q8_0-SOURCE.gguf":
            src = _q8_source(q8_sources, model)
        try:
            spec = quant_spec_from_args(args, args.type)
            assert spec is not None
            fp = plan_file(_info(src), spec.type, spec.options, spec.imatrix)
        except QuantizationError as exc:
            assert "error" in result, (case, str(exc))
            continue
        assert "error" not in result, case
        assert fp.output_size == result["output_size"], case
        assert [(p.tensor.name, p.target.name) for p in fp.tensors] == [
            (t["name"], t["type"]) for t in result["tensors"]], case
        assert fp.plan.file_type == result["general.file_type"]
        assert fp.plan.n_fallback == result["n_fallback"]
        assert {k: v for k, v, _ in fp.imatrix_kvs} == {
            k: v["value"] for k, v in result["kv_diff"]["added"].items()
            if k.startswith("quantize.imatrix.")}, case
        assert {p.tensor.name for p in fp.tensors if p.weights is not None} == set(
            result["imatrix_tensors"]), case
        assert fp.missing_kernels() == [], case
        assert {t["type"] for t in result["tensors"]} <= _available(), case
