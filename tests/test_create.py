"""create through the Python API: layers, digests, ordering and merging as Ollama does them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

import modelkit
from conftest import SAMPLE_DIR, write_gguf
from modelkit.errors import (
    FileNotFoundModelkitError,
    GGUFError,
    ModelNotFoundError,
    ParameterError,
    TemplateError,
)
from modelkit.manifest import MediaType, ModelConfig
from modelkit.store import Store

TEST_GGUF_SHA = "89a2116c3a82d6a97f59f748d86ed4417214353fd178ee54df418fde32495fad"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create(tmp_path: Path, text: str, name: str = "m") -> modelkit.api.CreateResult:
    mf = tmp_path / "Modelfile"
    mf.write_text(text, encoding="utf-8")
    return modelkit.create(name, mf)


def layer_blobs(models_dir: Path, result: modelkit.api.CreateResult) -> list[tuple[str, bytes]]:
    store = Store(models_dir)
    return [(str(getattr(layer.media_type, "short", layer.media_type)),
             store.blob_path(layer.digest).read_bytes()) for layer in result.manifest.layers]


def test_ollama_test_model_gives_ollamas_manifest(models_dir: Path, tmp_path: Path) -> None:
    write_gguf(tmp_path / "test.gguf")
    result = create(tmp_path, "FROM ./test.gguf\n")
    manifest_file = models_dir / "manifests/registry.ollama.ai/library/m/latest"
    data = manifest_file.read_bytes()
    assert sha(data)[:12] == "f75369d1dd1f"  # Ollama's `list` ID for this model
    assert str(result.manifest.config.digest).startswith("sha256:99759ad5")
    assert [str(x.digest) for x in result.manifest.layers] == [f"sha256:{TEST_GGUF_SHA}"]
    assert (models_dir / f"blobs/sha256-{TEST_GGUF_SHA}").read_bytes() == \
        (tmp_path / "test.gguf").read_bytes()


def test_text_layers_have_ollamas_digests_and_order(models_dir: Path, tmp_path: Path) -> None:
    write_gguf(tmp_path / "test.gguf")
    result = create(tmp_path, "\n".join([
        "FROM ./test.gguf",
        'MESSAGE assistant "What is my purpose?"',
        "PARAMETER top_k 10",
        "LICENSE MIT",
        "SYSTEM Say hi!",
        "PARAMETER stop USER:",
        "TEMPLATE {{ .Prompt }}",
        "PARAMETER stop ASSISTANT:",
        "PARAMETER temperature 1",
        "LICENSE Apache-2.0",
    ]) + "\n")
    kinds = [k for k, _ in layer_blobs(models_dir, result)]
    assert kinds == ["model", "template", "system", "license", "license", "params", "messages"]
    digests = [str(layer.digest)[7:15] for layer in result.manifest.layers]
    assert digests[1:6] == ["b507b9c2", "f29e82a8", "e5dcffe8", "2af71558", "1d0ad712"]
    params = dict(layer_blobs(models_dir, result))["params"]
    assert params == b'{"stop":["USER:","ASSISTANT:"],"temperature":1,"top_k":10}\n'
    messages = dict(layer_blobs(models_dir, result))["messages"]
    assert messages == b'[{"role":"assistant","content":"What is my purpose?"}]\n'


def test_params_json_escapes_like_go(models_dir: Path, tmp_path: Path) -> None:
    write_gguf(tmp_path / "test.gguf")
    result = create(tmp_path, 'FROM ./test.gguf\nPARAMETER stop "<|endoftext|>"\n'
                              "PARAMETER temperature 0.6\nPARAMETER top_k 10\n"
                              "PARAMETER top_p 0.7\n")
    params = dict(layer_blobs(models_dir, result))["params"]
    assert params == (b'{"stop":["\\u003c|endoftext|\\u003e"],"temperature":0.6,'
                      b'"top_k":10,"top_p":0.7}\n')
    assert sha(params).startswith("12f58bb7")


def test_phi3_chat_template_is_autodetected(models_dir: Path, tmp_path: Path) -> None:
    phi3 = ("{% for message in messages %}{% if message['role'] == 'system' %}"
            "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == "
            "'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role']"
            " == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}"
            "{{ eos_token }}{% endif %}")
    write_gguf(tmp_path / "phi.gguf", kv={"tokenizer.chat_template": phi3})
    events: list[str] = []
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM ./phi.gguf\n")
    result = modelkit.create("phi", mf, progress=lambda e: events.append(e.status))
    assert "using autodetected template phi-3" in events
    kinds = [k for k, _ in layer_blobs(models_dir, result)]
    assert kinds == ["model", "template", "params"]
    params = dict(layer_blobs(models_dir, result))["params"]
    assert sha(params).startswith("0d79f567")


def test_status_lines_follow_ollama(models_dir: Path, tmp_path: Path) -> None:
    write_gguf(tmp_path / "test.gguf")
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM ./test.gguf\nSYSTEM hi\n")
    events: list[str] = []
    modelkit.create("m", mf, progress=lambda e: events.append(e.status))
    statuses = [s for s in events if not s.startswith("copying")]
    assert statuses == [
        "gathering model components", "parsing GGUF",
        f"creating new layer sha256:{TEST_GGUF_SHA}",
        f"creating new layer sha256:{sha(b'hi')}",
        "writing manifest", "success"]
    events.clear()
    modelkit.create("m2", mf, progress=lambda e: events.append(e.status))
    assert f"using existing layer sha256:{TEST_GGUF_SHA}" in events


def test_config_comes_from_the_gguf(models_dir: Path, gguf_factory: Callable[..., Path],
                                    tmp_path: Path) -> None:
    path = gguf_factory("llama.gguf", kv={"general.file_type": 1,
                                          "llama.context_length": 4096})
    result = create(tmp_path, f"FROM {path}\n")
    config = ModelConfig.from_bytes(Store(models_dir).read_blob(result.manifest.config.digest))
    assert (config.model_family, config.model_families, config.file_type) == \
        ("llama", ("llama",), "F16")
    n_params = 32 * 64 + 64 + 64 + 4 * 64 * 64 + 64 + 3 * 128 * 64
    assert config.model_type == f"{n_params / 1000:.0f}K"


def test_relative_and_home_paths(models_dir: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "proj"
    sub.mkdir()
    write_gguf(sub / "test.gguf")
    (sub / "Modelfile").write_text("FROM ./test.gguf\n")
    monkeypatch.chdir(tmp_path)  # relative to the Modelfile, not the working directory
    assert modelkit.create("rel", sub / "Modelfile").manifest.layers[0].size == 68
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "Modelfile").write_text("FROM ~/proj/test.gguf\n")
    assert modelkit.create("home", tmp_path / "Modelfile").manifest.layers[0].size == 68


def test_from_an_existing_model_reuses_layers_and_merges(models_dir: Path,
                                                         tmp_path: Path) -> None:
    write_gguf(tmp_path / "test.gguf")
    base = create(tmp_path, "FROM ./test.gguf\nSYSTEM base\nPARAMETER top_k 10\n"
                            "PARAMETER stop a\nLICENSE MIT\n", name="base")
    child = create(tmp_path, "FROM base\nPARAMETER temperature 0.5\nPARAMETER stop b\n",
                   name="child")
    by_kind = {str(getattr(x.media_type, "short", "")): x for x in child.manifest.layers}
    assert by_kind["model"].digest == base.manifest.layers[0].digest
    assert by_kind["model"].from_ == "base:latest"
    assert by_kind["system"].from_ == "base:latest"
    params = Store(models_dir).read_blob(by_kind["params"].digest)
    assert json.loads(params) == {"stop": ["b"], "temperature": 0.5, "top_k": 10}
    kinds = [str(getattr(x.media_type, "short", "")) for x in child.manifest.layers]
    assert kinds == ["model", "system", "license", "params"]


def test_recreate_deletes_blobs_only_the_old_version_used(models_dir: Path,
                                                          tmp_path: Path) -> None:
    write_gguf(tmp_path / "test.gguf")
    first = create(tmp_path, "FROM ./test.gguf\nSYSTEM one\n")
    store = Store(models_dir)
    old_system = first.manifest.layers[1].digest
    create(tmp_path, "FROM ./test.gguf\nSYSTEM two\n")
    assert not store.has_blob(old_system)
    assert store.has_blob(first.manifest.layers[0].digest)


def test_create_under_other_casing_replaces_the_same_model(models_dir: Path,
                                                           tmp_path: Path) -> None:
    write_gguf(tmp_path / "test.gguf")
    create(tmp_path, "FROM ./test.gguf\n", name="Liang")
    create(tmp_path, "FROM ./test.gguf\nSYSTEM x\n", name="liang")
    assert [m.name for m in modelkit.list_models()] == ["Liang:latest"]


@pytest.mark.parametrize("text,error,match", [
    ("FROM ./missing.gguf\n", FileNotFoundModelkitError,
     r"Modelfile:1: FROM ./missing.gguf: no such file"),
    ("FROM 127.0.0.1:9/x/nosuch\n", ModelNotFoundError,
     'model "127.0.0.1:9/x/nosuch:latest" not found locally'),
    ("FROM ./test.gguf\nPARAMETER nope 1\n", ParameterError, "unknown parameter 'nope'"),
    ("FROM ./test.gguf\nPARAMETER num_ctx abc\n", ParameterError, r"invalid int value \[abc\]"),
    ("FROM ./test.gguf\nTEMPLATE {{ .Prompt\n", TemplateError, "template error"),
    ("FROM ./test.gguf\nADAPTER ./nope.gguf\n", FileNotFoundModelkitError, "nope.gguf"),
    ("FROM ./garbage.gguf\n", GGUFError, "not a GGUF file"),
])
def test_bad_input_leaves_the_store_untouched(models_dir: Path, tmp_path: Path,
                                              snapshot: Callable[[Path], dict[str, str]],
                                              text: str, error: type[Exception],
                                              match: str) -> None:
    write_gguf(tmp_path / "test.gguf")
    (tmp_path / "garbage.gguf").write_bytes(b"not a gguf at all")
    create(tmp_path, "FROM ./test.gguf\n", name="existing")
    before = snapshot(models_dir)
    with pytest.raises(error, match=match):
        create(tmp_path, text, name="new")
    assert snapshot(models_dir) == before


def test_the_sample_builds(models_dir: Path) -> None:
    result = modelkit.create("liang-ai", SAMPLE_DIR / "Modelfile")
    blobs = dict(layer_blobs(models_dir, result))
    assert blobs["model"] == (SAMPLE_DIR / "liang-ai.gguf").read_bytes()
    system = "你是由崔亮创建的AI助手，你叫亮仔，你回答问题时需要使用中文。"
    assert blobs["system"].decode() == system
    assert json.loads(blobs["params"])["temperature"] == 0.5
    assert json.loads(blobs["params"])["num_ctx"] == 4096
    info = modelkit.show("liang-ai")
    assert (info.architecture, info.quantization, info.context_length) == ("llama", "F16", 4096)
    assert MediaType.TEMPLATE in [x.media_type for x in result.manifest.layers]
