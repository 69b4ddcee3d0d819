"""``modelkit convert``, ``FROM ./hf-folder`` / ``FROM hf.co/...`` in create, ``show`` of a
folder and of a converted model, and bad input through the CLI (one line, non-zero exit,
no output file, nothing added to the store)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from hf_fixtures import decoder_weights, write_config, write_spm, write_weights
from hubserver import HubServer
from test_convert_archs import DIMS, llama_config, make_llama
from test_importers import FakeRepo, data, hub  # noqa: F401 - fixtures

from modelkit import api, cli
from modelkit.convert import convert


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def store_files(models: Path) -> list[str]:
    return sorted(str(p.relative_to(models)) for p in models.rglob("*") if p.is_file()) \
        if models.exists() else []


def test_cli_convert_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m"
    make_llama(src)
    out = tmp_path / "m.gguf"
    code, stdout, _ = run(capsys, "convert", str(src), "-o", str(out), "--outtype", "q8_0",
                          "--json")
    assert code == 0
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["architecture"] == "llama" and result["file_type"] == "Q8_0"
    assert result["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert result["size"] == out.stat().st_size


@pytest.mark.parametrize(("setup", "pattern"), [
    ("missing", "no such folder"),
    ("arch", "'GPT2LMHeadModel' is not supported (supported: "),
    ("shape", "tensor 'model.layers.0.mlp.down_proj.weight': shape [64, 96] disagrees"),
])
def test_cli_bad_input_one_line(setup: str, pattern: str, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "bad"
    if setup == "arch":
        write_config(src, {"architectures": ["GPT2LMHeadModel"], "n_layer": 2})
    elif setup == "shape":
        make_llama(src, intermediate_size=80)
    out = tmp_path / "o.gguf"
    code, stdout, stderr = run(capsys, "convert", str(src), "-o", str(out))
    assert code != 0
    assert stderr.count("\n") == 1 and stderr.startswith("Error: ") and pattern in stderr
    assert "Traceback" not in stderr
    assert not out.exists() and not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_create_from_folder_quantized_in_one_pass(tmp_path: Path, models_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "Tiny-Chat"
    write_config(src, llama_config(hidden_size=256, intermediate_size=512))
    write_spm(src)
    dims = dict(DIMS, n_embd=256, n_ff=512, head_dim=64)
    write_weights(src, decoder_weights(np.random.default_rng(9), n_vocab=300, **dims), "BF16")
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM ./Tiny-Chat\nSYSTEM be brief\n")
    code, _, err = run(capsys, "create", "tiny", "-f", str(mf), "-q", "q4_K_M")
    assert code == 0, err
    info = api.show("tiny")
    assert info.quantization == "Q4_K_M" and info.architecture == "llama"
    expected = tmp_path / "expected.gguf"
    convert(src, expected, "q4_K_M")
    assert Path(info.path).read_bytes() == expected.read_bytes()
    source = dict(info.config.extra)["source"] if info.config else None
    assert source["folder"] == str(src.resolve())
    assert source["converted"]["outtype"] == "q4_K_M"
    code, out, _ = run(capsys, "show", "tiny")
    assert "Source" in out and "outtype q4_K_M" in out and str(src.resolve()) in out
    # no intermediate F16 file anywhere
    assert not [p for p in models_dir.rglob("*") if p.name.startswith(".tmp-")]


def test_create_from_bad_folder_adds_nothing(tmp_path: Path, models_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "broken"
    make_llama(src)
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    mf = tmp_path / "Modelfile"
    mf.write_text(f"FROM {src}\n")
    before = store_files(models_dir)
    code, _, err = run(capsys, "create", "broken", "-f", str(mf))
    assert code != 0 and err.startswith("Error: ") and "model.safetensors: tensor" in err
    assert err.count("\n") == 1
    assert [f for f in store_files(models_dir) if "blobs/sha256" in f or "manifests" in f] \
        == [f for f in before if "blobs/sha256" in f or "manifests" in f]


def test_show_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "f"
    make_llama(src)
    code, out, _ = run(capsys, "show", str(src), "--json")
    info = json.loads(out)
    assert code == 0 and info["architecture"] == "llama" and info["tensors"] == 21
    sizes = info["sizes"]
    assert set(sizes) >= {"f32", "f16", "bf16", "q8_0", "q4_K_M"}
    out_path = tmp_path / "f16.gguf"
    convert(src, out_path, "f16")
    assert sizes["f16"] == out_path.stat().st_size
    assert sizes["f32"] > sizes["f16"] > sizes["q8_0"]


def _safetensors_repo(tmp_path: Path) -> FakeRepo:
    src = tmp_path / "repo"
    make_llama(src)
    files = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*")
             if p.is_file()}
    files["pytorch_model.bin"] = b"not needed"
    files["notes/extra.txt"] = b"not needed either"
    return FakeRepo(files)


def test_convert_from_hub(tmp_path: Path, hub: HubServer,  # noqa: F811
                          capsys: pytest.CaptureFixture[str]) -> None:
    hub.repos["acme/Tiny-Llama"] = _safetensors_repo(tmp_path)
    out = tmp_path / "hub.gguf"
    code, _, err = run(capsys, "convert", "hf.co/acme/Tiny-Llama", "-o", str(out),
                       "--outtype", "f16")
    assert code == 0, err
    local = tmp_path / "local.gguf"
    convert(tmp_path / "repo", local, "f16")
    # the same tensors; general.name comes from the folder's name (the repository's)
    a, b = gguf.GGUFReader(out), gguf.GGUFReader(local)
    assert out.read_bytes()[a.data_offset:] == local.read_bytes()[b.data_offset:]
    assert a.fields["general.name"].contents() == "Tiny Llama"
    assert b.fields["general.name"].contents() == "Repo"
    got = [r["path"] for r in hub.requests("GET")]
    assert not any("pytorch_model.bin" in p or "extra.txt" in p for p in got)
    assert any(p.endswith("model.safetensors") for p in got)


def test_create_from_hub_repo_without_gguf(tmp_path: Path, hub: HubServer,  # noqa: F811
                                           models_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    hub.repos["acme/Tiny-Llama"] = _safetensors_repo(tmp_path)
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM hf.co/acme/Tiny-Llama\n")
    code, _, err = run(capsys, "create", "t", "-f", str(mf))
    assert code == 0, err
    info = api.show("hf.co/acme/Tiny-Llama")  # the base create pulled first
    source = dict(info.config.extra)["source"] if info.config else None
    assert source["repo"] == "acme/Tiny-Llama" and source["revision"]
    assert source["converted"]["file_type"] == "F16"
    assert info.gguf.metadata["general.name"] == "Tiny Llama"
