"""``show --modelfile`` prints a Modelfile that ``create`` accepts and that rebuilds the
same model, layer for layer, for every model modelkit builds: the samples, the golden
mixes, a GGUF carrying a Jinja chat template (autodetected, or not), and models with
every command (ADAPTER, DRAFT, a projector, LICENSE, MESSAGE, REQUIRES, ...).
Hub imports are checked in tests/test_importers.py with the loopback hub."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import GOLDEN, REPO, SAMPLE_DIR, tiny_llama_tensors, write_gguf
from modelkit.cli import main
from modelkit.manifest import Manifest
from modelkit.names import ModelName
from modelkit.store import Store

MIXES = sorted((GOLDEN / "mixes").glob("*.gguf"))
# A Jinja template no autodetection rule knows, and ChatML, which one does.
JINJA_UNKNOWN = "{% for m in messages %}<<{{ m['role'] }}>>{{ m['content'] }}{% endfor %}"
JINJA_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def stored(models_dir: Path, name: str) -> Manifest:
    return Store(models_dir).get(ModelName.parse(name)).manifest


def show_modelfile(capsys: pytest.CaptureFixture[str], model: str) -> str:
    capsys.readouterr()
    assert main(["show", model, "--modelfile"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def assert_round_trips(capsys: pytest.CaptureFixture[str], models_dir: Path, tmp: Path,
                       name: str) -> str:
    """create -> show --modelfile -> create again: the same manifest (same digest)."""
    text = show_modelfile(capsys, name)
    again = tmp / f"{name.replace(':', '_').replace('/', '_')}.roundtrip"
    again.write_text(text, encoding="utf-8")
    code = main(["create", "roundtrip-" + name.replace("/", "-").replace(":", "-"),
                 "-f", str(again)])
    err = capsys.readouterr().err
    assert code == 0, err
    first = stored(models_dir, name)
    second = stored(models_dir, "roundtrip-" + name.replace("/", "-").replace(":", "-"))
    assert second.layers == first.layers
    assert second.config == first.config
    assert second.digest == first.digest
    return text


def test_the_sample_round_trips(models_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create", "liang-ai", "-f", str(SAMPLE_DIR / "Modelfile")]) == 0
    text = assert_round_trips(capsys, models_dir, tmp_path, "liang-ai")
    assert "PARAMETER num_ctx 4096" in text and "TEMPLATE" in text  # autodetected ChatML


def test_every_command_round_trips(models_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """samples/modelfiles/quoting-edge-cases.Modelfile: ADAPTER, DRAFT, quoted TEMPLATE,
    empty and quoted LICENSEs, stop lists, MESSAGEs, RENDERER, PARSER, REQUIRES."""
    folder = tmp_path / "edge"
    folder.mkdir()
    shutil.copy(REPO / "samples/modelfiles/quoting-edge-cases.Modelfile", folder / "Modelfile")
    write_gguf(folder / "model.gguf", "llama", tensors=tiny_llama_tensors())
    write_gguf(folder / "draft.gguf", "llama", tensors=tiny_llama_tensors(seed=5))
    write_gguf(folder / "lora adapter.gguf", "llama",
               kv={"general.type": "adapter", "adapter.type": "lora"},
               tensors={"blk.0.attn_q.weight.lora_a": np.ones((4, 64), np.float32)})
    assert main(["create", "edge", "-f", str(folder / "Modelfile")]) == 0, \
        capsys.readouterr().err
    text = assert_round_trips(capsys, models_dir, tmp_path, "edge")
    for keyword in ("ADAPTER ", "DRAFT ", "TEMPLATE ", "RENDERER qwen3-coder",
                    "PARSER qwen3-coder", "REQUIRES 0.14.0", "MESSAGE user"):
        assert keyword in text


def test_a_model_with_a_projector_round_trips(models_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    write_gguf(tmp_path / "m.gguf", "llama", tensors=tiny_llama_tensors())
    write_gguf(tmp_path / "mmproj.gguf", "clip", kv={"general.type": "mmproj",
                                                     "clip.has_vision_encoder": True},
               tensors={"v.patch_embd.weight": np.ones((4, 32), np.float16)})
    (tmp_path / "Modelfile").write_text("FROM ./m.gguf\nFROM ./mmproj.gguf\nSYSTEM hi\n")
    assert main(["create", "vision", "-f", str(tmp_path / "Modelfile")]) == 0
    assert_round_trips(capsys, models_dir, tmp_path, "vision")


@pytest.mark.parametrize("jinja", [JINJA_UNKNOWN, JINJA_CHATML], ids=["unknown", "chatml"])
def test_a_jinja_chat_template_round_trips(models_dir: Path, tmp_path: Path, jinja: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The GGUF's Jinja template is not printed as a Go TEMPLATE: from the GGUF file the
    Modelfile is its FROM; from the stored model, TEMPLATE only if it has that layer."""
    gguf = write_gguf(tmp_path / "chat.gguf", "llama", kv={"tokenizer.chat_template": jinja},
                      tensors=tiny_llama_tensors())
    from_file = show_modelfile(capsys, str(gguf))
    assert "{%" not in from_file and "TEMPLATE" not in from_file
    (tmp_path / "Modelfile").write_text(from_file)
    assert main(["create", "chat-from-file", "-f", str(tmp_path / "Modelfile")]) == 0
    (tmp_path / "Direct").write_text(f"FROM {gguf}\n")
    assert main(["create", "chat", "-f", str(tmp_path / "Direct")]) == 0
    assert stored(models_dir, "chat-from-file").digest == stored(models_dir, "chat").digest
    text = assert_round_trips(capsys, models_dir, tmp_path, "chat")
    assert "{%" not in text
    assert ("TEMPLATE" in text) == (jinja == JINJA_CHATML)


@pytest.mark.golden("mixes")
@pytest.mark.parametrize("path", MIXES, ids=[p.stem for p in MIXES])
def test_golden_mixes_round_trip(models_dir: Path, tmp_path: Path, path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Modelfile").write_text(f"FROM {path}\nPARAMETER stop <end>\n"
                                        "PARAMETER temperature 0.7\n")
    assert main(["create", path.stem.lower(), "-f", str(tmp_path / "Modelfile")]) == 0
    assert_round_trips(capsys, models_dir, tmp_path, path.stem.lower())
