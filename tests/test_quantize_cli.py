"""create -q, modelkit quantize and show --quantization, end to end against llama.cpp's bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import GOLDEN, SAMPLE_DIR
from modelkit.cli import main
from modelkit.store import Store

MIXES = GOLDEN / "mixes"
needs_golden = pytest.mark.golden("mixes")


def mk(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def golden(model: str) -> dict:  # type: ignore[type-arg]
    return json.loads((MIXES / f"{model}.json").read_text())


@needs_golden
@pytest.mark.parametrize("ftype", ["q4_K_M", "q8_0"])
def test_create_q_stores_exactly_what_llama_cpp_writes(models_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       ftype: str) -> None:
    (tmp_path / "Modelfile").write_text(f"FROM {MIXES / 'llama-L10.gguf'}\n")
    code, out, _ = mk(capsys, "create", "mix", "-f", str(tmp_path / "Modelfile"),
                      "--quantize", ftype)
    assert code == 0
    want = golden("llama-L10")["results"][ftype]
    assert f"quantizing F16 model to {ftype.upper()}" in out
    assert f"creating new layer sha256:{want['output_sha256']}" in out
    store = Store(models_dir)
    (model,) = store.list_models()
    layer = model.manifest.layers[0]
    assert str(layer.digest) == f"sha256:{want['output_sha256']}"
    assert layer.size == want["output_size"]
    # The F16 original was never stored: only the quantized weights, config and params.
    assert not any(p.stat().st_size == (MIXES / "llama-L10.gguf").stat().st_size
                   for p in (models_dir / "blobs").iterdir())
    info = json.loads(mk(capsys, "show", "mix", "--json")[1])
    assert info["details"]["quantization_level"] == ftype.upper()


@needs_golden
def test_quantize_command_writes_llama_cpps_file(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out_path = tmp_path / "out.gguf"
    code, out, _ = mk(capsys, "quantize", str(MIXES / "qwen2-L2.gguf"), str(out_path), "Q6_K",
                      "--json")
    assert code == 0
    result = json.loads(out.splitlines()[-1])
    want = golden("qwen2-L2")["results"]["q6_K"]
    assert hashlib.sha256(out_path.read_bytes()).hexdigest() == want["output_sha256"]
    assert result["file_type"] == "Q6_K" and result["size"] == want["output_size"]
    events = [json.loads(line) for line in out.splitlines()[:-1]]
    assert events[-1]["completed"] == events[-1]["total"] == len(want["tensors"])


def test_quantize_report_and_rmse_gate(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    src = SAMPLE_DIR / "liang-ai.gguf"
    code, out, _ = mk(capsys, "quantize", str(src), str(tmp_path / "a.gguf"), "q8_0",
                      "--report", "--json")
    assert code == 0
    result = json.loads(out.splitlines()[-1])
    report = {t["name"]: t for t in result["report"]}
    assert report["output_norm.weight"]["rmse"] == 0.0  # copied, unchanged
    q8 = report["blk.0.attn_q.weight"]
    assert 0 < q8["rmse"] < q8["max_abs_error"] < 0.001
    # --report alone: the whole-model RMSE and its worst tensor, and no gate
    assert result["max_rmse"] is None and result["passed"] is True
    assert result["rmse"] > 0 and result["worst_tensor"] in report
    code, out, _ = mk(capsys, "quantize", str(src), str(tmp_path / "c.gguf"), "q8_0",
                      "--max-rmse", "1", "--json")
    gated = json.loads(out.splitlines()[-1])
    assert code == 0 and gated["max_rmse"] == 1.0 and gated["passed"] is True
    code, out, err = mk(capsys, "quantize", str(src), str(tmp_path / "b.gguf"), "q4_0",
                        "--max-rmse", "1e-9")
    assert code == 7 and "is above --max-rmse" in err and "worst tensor" in err
    assert not (tmp_path / "b.gguf").exists()  # make or CI must not pick it up


def test_quantize_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = str(SAMPLE_DIR / "liang-ai.gguf")
    code, _, err = mk(capsys, "quantize", src, str(tmp_path / "x.gguf"), "q9_9")
    assert code == 7 and err.startswith("Error: invalid quantization type 'q9_9'")
    assert " Q4_K_M " in err and " IQ4_XS " in err and "bpw" in err  # the menu follows
    assert not (tmp_path / "x.gguf").exists()
    code, _, err = mk(capsys, "quantize", str(tmp_path / "absent.gguf"), "o.gguf", "q8_0")
    assert code == 4 and "no such file" in err
    code, _, err = mk(capsys, "quantize", src, src, "q8_0")
    assert code == 7 and "overwrite the input" in err
    # An output that cannot be written is refused before any work, by the user's name.
    bad = tmp_path / "no" / "such" / "out.gguf"
    code, out, err = mk(capsys, "quantize", src, str(bad), "q8_0")
    assert code == 4 and err == f"Error: {bad}: cannot write: folder {bad.parent} does not exist\n"
    assert out == ""  # no quantizing status: nothing was done
    code, _, err = mk(capsys, "quantize", src, str(tmp_path), "q8_0")
    assert code == 4 and "is a directory" in err


@pytest.mark.parametrize("workers", ["0", "-3", "two"])
def test_quantize_workers_must_be_at_least_one(tmp_path: Path, workers: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["quantize", str(SAMPLE_DIR / "liang-ai.gguf"), str(tmp_path / "o.gguf"), "q8_0",
              "--workers", workers])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: argument --workers: ") and "\n" not in err.rstrip("\n")
    assert not (tmp_path / "o.gguf").exists()


def test_requantizing_a_quantized_file_warns(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    q8 = tmp_path / "q8.gguf"
    assert mk(capsys, "quantize", str(SAMPLE_DIR / "liang-ai.gguf"), str(q8), "q8_0")[0] == 0
    code, out, _ = mk(capsys, "quantize", str(q8), str(tmp_path / "q4.gguf"), "q4_K_S")
    assert code == 0
    assert "warning: requantizing an already quantized model" in out
    # Going up in precision loses nothing: no warning.
    code, out, err = mk(capsys, "quantize", str(q8), str(tmp_path / "f16.gguf"), "f16")
    assert code == 0, err
    assert "warning" not in out


def test_show_quantization_view(models_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = mk(capsys, "create", "q", "-f", str(SAMPLE_DIR / "Modelfile"), "-q", "q4_K_M")
    assert code == 0
    view = json.loads(mk(capsys, "show", "q", "--quantization", "--json")[1])
    by_type = {t["type"]: t for t in view["by_type"]}
    assert set(by_type) == {"Q4_K", "Q6_K", "F32"}
    assert by_type["Q4_K"]["bits_per_weight"] == 4.5  # 144 bytes per 256 weights
    assert by_type["Q6_K"]["bits_per_weight"] == 6.5625
    assert sum(t["bytes"] for t in view["tensors"]) == view["bytes"]
    assert [x["layer"] for x in view["by_layer"]] == ["-", "0", "1"]
    text = mk(capsys, "show", "q", "--quantization")[1]
    assert text.startswith("  Quantization\n") and "bits/weight" in text
    text = mk(capsys, "show", str(SAMPLE_DIR / "liang-ai.gguf"), "--quantization")[1]
    assert "    F16      16 " in text


# --------------------------------------------------------------------------------------
# The menu, options, imatrix and --dry-run on the command line
# --------------------------------------------------------------------------------------

MENU = GOLDEN / "quant-menu"
needs_menu = pytest.mark.skipif(not MENU.is_dir(), reason=f"golden data absent: {MENU}")
SAMPLE = str(SAMPLE_DIR / "liang-ai.gguf")


def test_list_prints_the_menu(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = mk(capsys, "quantize", "--list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "allowed quantization types:"
    names = [line.split(":")[0].split()[-1] for line in lines[1:]]
    assert names[:3] == ["Q1_0", "Q2_0", "Q4_0"] and "COPY" in names and "Q4_K_L" in names
    assert any(line.startswith("  15  or  Q4_K_M") and "4.500 bpw q4_K" in line
               for line in lines)


@pytest.mark.parametrize(("args", "message"), [
    (["--tensor-type", "attn_(v=q8_0"], "invalid regular expression 'attn_(v'"),
    (["--tensor-type", "attn_v=q9_k"], "invalid quantization type 'q9_k'"),
    (["--tensor-type", "attn_v"], "malformed tensor type"),
    (["--output-tensor-type", "q7"], "invalid ggml_type 'q7'"),
    (["--include-weights", "ffn"], "need --imatrix"),
])
def test_bad_overrides_one_line_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          args: list[str], message: str) -> None:
    out = tmp_path / "o.gguf"
    code, _, err = mk(capsys, "quantize", *args, SAMPLE, str(out), "q4_K_M")
    assert code == 7 and err.startswith("Error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_bad_imatrix_one_line_no_output(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.gguf"
    bad = tmp_path / "bad.imatrix"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00truncated")
    for path, message in ((bad, "corrupt or truncated"), (tmp_path / "none", "cannot read")):
        code, _, err = mk(capsys, "quantize", "--imatrix", str(path), SAMPLE, str(out), "q4_K_M")
        assert code == 13 and message in err and err.count("\n") == 1, err
        assert not out.exists() and list(tmp_path.iterdir()) == [bad]
    # an imatrix for another model
    code, _, err = mk(capsys, "quantize", "--imatrix",
                      str(MENU / "llama-h384-f32.imatrix.gguf"), SAMPLE, str(out), "q4_K_M")
    assert code == 13 and "another model" in err and not out.exists()


def test_type_that_needs_an_imatrix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.gguf"
    code, _, err = mk(capsys, "quantize", SAMPLE, str(out), "iq2_xxs")
    assert code == 13 and "requires an importance matrix" in err and "llama-imatrix" in err
    assert "blk.0." in err and "iq2_xxs" in err and not out.exists()


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.gguf"
    code, text, _ = mk(capsys, "quantize", "--dry-run", SAMPLE, str(out), "q4_K_L")
    assert code == 0 and not out.exists()
    assert "token_embd.weight" in text and "-> q8_0" in text and "BPW" in text
    assert "nothing written (--dry-run)" in text
    code, js, _ = mk(capsys, "quantize", "--dry-run", "--json", SAMPLE, "q4_K_L")
    plan = json.loads(js)
    assert code == 0 and plan["file_type"] == "Q4_K_L" and plan["general.file_type"] == 15
    assert sum(t["bytes"] for t in plan["totals"].values()) == sum(
        t["bytes"] for t in plan["tensors"])
    # the real run writes exactly the size the plan announced, with the same types
    code, _, _ = mk(capsys, "quantize", SAMPLE, str(out), "q4_K_L")
    assert code == 0 and out.stat().st_size == plan["output_size"]
    code, shown, _ = mk(capsys, "show", "--json", "--quantization", str(out))
    assert code == 0


def test_create_dry_run_and_options(models_dir: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Modelfile").write_text(f"FROM {SAMPLE}\n")
    mf = str(tmp_path / "Modelfile")
    code, out, _ = mk(capsys, "create", "m", "-f", mf, "-q", "q4_K_M", "--pure", "--dry-run",
                      "--json")
    assert code == 0 and not list(models_dir.rglob("manifests/**/m"))
    types = {t["name"]: t["type"] for t in json.loads(out)["tensors"]}
    assert types["output.weight"] == "Q4_K"  # --pure: no Q6_K output
    code, out, _ = mk(capsys, "create", "m", "-f", mf, "-q", "q4_K_M",
                      "--tensor-type", "ffn_down=q8_0", "--leave-output-tensor")
    assert code == 0
    code, out, _ = mk(capsys, "show", "m", "--quantization", "--json")
    assert code == 0 and "Q8_0" in out and "F16" in out


@needs_menu
def test_imatrix_options_match_llama_quantize(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(MENU)
    result = json.loads((MENU / "llama-L10.json").read_text())["results"][
        "Q4_K_M+imatrix+exclude_ffn_down"]
    out = tmp_path / "o.gguf"
    code, _, err = mk(capsys, "quantize", *result["args"][:-4], "../mixes/llama-L10.gguf",
                      str(out), "q4_k_m")
    assert code == 0, err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == result["output_sha256"]


def test_options_need_a_type(models_dir: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Modelfile").write_text(f"FROM {SAMPLE}\n")
    code, _, err = mk(capsys, "create", "m", "-f", str(tmp_path / "Modelfile"), "--pure")
    assert code == 7 and "--pure needs a quantization type" in err
