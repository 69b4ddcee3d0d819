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
from modelkit.gguf_file import read_gguf
from modelkit.manifest import MediaType


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


# ------------------------------------------------------------------------- LoRA
def make_peft(folder: Path, rank: int = 4) -> dict[str, np.ndarray]:
    from safetensors.numpy import save_file
    rng = np.random.default_rng(11)
    t = {}
    for i in range(2):
        for mod, (out_dim, in_dim) in {"self_attn.q_proj": (64, 64),
                                       "self_attn.k_proj": (32, 64),
                                       "mlp.up_proj": (96, 64)}.items():
            p = f"base_model.model.model.layers.{i}.{mod}"
            t[f"{p}.lora_A.weight"] = rng.standard_normal((rank, in_dim)).astype(np.float32)
            t[f"{p}.lora_B.weight"] = rng.standard_normal((out_dim, rank)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(t, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(
        {"lora_alpha": 16, "r": rank, "peft_type": "LORA", "base_model_name_or_path": "x/y"}))
    return t


def test_lora_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_convert_archs import interleave_heads, read, values
    base = tmp_path / "base"
    make_llama(base)
    peft = tmp_path / "my-adapter"
    t = make_peft(peft)
    out = tmp_path / "lora.gguf"
    code, _, err = run(capsys, "convert", str(peft), "--lora", "--base", str(base),
                       "-o", str(out))
    assert code == 0, err
    kv, tensors, order = read(out)
    assert order[:3] == ["general.architecture", "general.type", "adapter.type"]
    assert kv["general.type"] == "adapter" and kv["adapter.type"] == "lora"
    assert kv["adapter.lora.alpha"] == 16.0
    assert not any(k.startswith("llama.") or k.startswith("tokenizer.") for k in kv)
    assert "general.file_type" not in kv
    names = list(tensors)
    assert names[:2] == ["blk.0.ffn_up.weight.lora_a", "blk.0.ffn_up.weight.lora_b"]
    a = tensors["blk.1.attn_q.weight.lora_a"]
    assert [int(d) for d in a.shape] == [64, 4] and a.tensor_type == gguf.GGMLQuantizationType.F32
    pre = "base_model.model.model.layers.1.self_attn"
    np.testing.assert_array_equal(values(a), t[f"{pre}.q_proj.lora_A.weight"])
    # the base's q/k permutation applies to lora_b's rows
    np.testing.assert_array_equal(values(tensors["blk.1.attn_q.weight.lora_b"]),
                                  interleave_heads(t[f"{pre}.q_proj.lora_B.weight"], 4))
    np.testing.assert_array_equal(values(tensors["blk.1.attn_k.weight.lora_b"]),
                                  interleave_heads(t[f"{pre}.k_proj.lora_B.weight"], 2))
    # the same adapter against the base's GGUF instead of its folder
    base_gguf = tmp_path / "base.gguf"
    convert(base, base_gguf, "f16")
    out2 = tmp_path / "lora2.gguf"
    assert cli.main(["convert", str(peft), "--lora", "--base", str(base_gguf), "-o",
                     str(out2)]) == 0
    assert out2.read_bytes() == out.read_bytes()


def test_lora_adapter_in_modelfile(tmp_path: Path, models_dir: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base"
    make_llama(base)
    make_peft(tmp_path / "peft")
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM ./base\nADAPTER ./peft\n")
    code, _, err = run(capsys, "create", "with-lora", "-f", str(mf))
    assert code == 0, err
    stored = api.show("with-lora")
    assert stored.manifest is not None
    layer = stored.manifest.first(MediaType.ADAPTER)
    assert layer is not None
    adapter = read_gguf(models_dir / "blobs" / layer.digest.filename)
    assert adapter.general_type == "adapter" and adapter.architecture == "llama"
    bad = tmp_path / "bad-peft"
    make_peft(bad)
    (bad / "adapter_config.json").write_text("{}")
    mf.write_text("FROM ./base\nADAPTER ./bad-peft\n")
    code, _, err = run(capsys, "create", "bad", "-f", str(mf))
    assert code != 0 and "no numeric 'lora_alpha'" in err and err.count("\n") == 1


def test_convert_from_modelscope(tmp_path: Path, hub: HubServer,  # noqa: F811
                                 capsys: pytest.CaptureFixture[str]) -> None:
    hub.repos["acme/Tiny-Llama"] = _safetensors_repo(tmp_path)
    out = tmp_path / "ms.gguf"
    code, stdout, err = run(capsys, "convert", "modelscope.cn/acme/Tiny-Llama", "-o", str(out),
                            "--outtype", "q8_0", "--json")
    assert code == 0, err
    assert json.loads(stdout.strip().splitlines()[-1])["file_type"] == "Q8_0"
    local = tmp_path / "local.gguf"
    convert(tmp_path / "repo", local, "q8_0")
    a, b = gguf.GGUFReader(out), gguf.GGUFReader(local)
    assert out.read_bytes()[a.data_offset:] == local.read_bytes()[b.data_offset:]


def test_create_q8_0_is_llama_quantize_of_f16(tmp_path: Path, models_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """create -q q8_0 stores what llama-quantize makes of the F16 conversion (not the
    converter's own q8_0, which differs for rows that are not a multiple of 32)."""
    from modelkit.quant.requantize import quantize_file
    src = tmp_path / "m"
    make_llama(src, intermediate_size=80)
    w = decoder_weights(np.random.default_rng(14), n_vocab=300, **dict(DIMS, n_ff=80))
    write_weights(src, w, "F16")
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM ./m\n")
    code, _, err = run(capsys, "create", "q8", "-f", str(mf), "-q", "q8_0")
    assert code == 0, err
    f16 = tmp_path / "f16.gguf"
    convert(src, f16, "f16")
    want = tmp_path / "want.gguf"
    quantize_file(f16, want, "q8_0", workers=1)
    assert Path(api.show("q8").path).read_bytes() == want.read_bytes()
