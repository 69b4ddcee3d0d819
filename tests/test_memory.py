"""``show --memory``: llama.cpp's KV cache layout (padding, per-layer heads and head
sizes, sliding-window layers by architecture), the cache types, and the figures
llama.cpp itself reported for the sample and the golden models (recorded in
tests/data/memory_figures.json by tools/record_memory_figures.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gguf import GGUFValueType
from memory_models import TOKENIZER_FROM, write_swa_model

from conftest import GOLDEN, REPO
from modelkit import api, cli
from modelkit.errors import ModelkitError
from modelkit.gguf_file import KV, GGUFInfo, describe_header, read_gguf
from modelkit.gguf_file.memory import HyperParameters, estimate_memory

SAMPLE = REPO / "samples" / "liang-ai" / "liang-ai.gguf"
FIGURES = REPO / "tests" / "data" / "memory_figures.json"
GOLDEN_DIR = GOLDEN
MiB = 1 << 20
U32 = GGUFValueType.UINT32


def header(arch: str, n_layer: int = 6, **kv: Any) -> GGUFInfo:
    """A GGUF description with these hyper-parameters (no tensors needed)."""
    kvs = [KV("general.architecture", arch, GGUFValueType.STRING),
           KV(f"{arch}.block_count", n_layer, U32),
           KV(f"{arch}.embedding_length", 256, U32),
           KV(f"{arch}.attention.head_count", 8, U32),
           KV(f"{arch}.attention.head_count_kv", 2, U32)]
    for key, value in kv.items():
        full = f"{arch}.{key.replace('__', '.')}"
        if isinstance(value, list):
            sub = GGUFValueType.BOOL if isinstance(value[0], bool) else GGUFValueType.INT32
            kvs.append(KV(full, value, GGUFValueType.ARRAY, sub))
        elif isinstance(value, bool):
            kvs.append(KV(full, value, GGUFValueType.BOOL))
        else:
            kvs.append(KV(full, value, U32))
    return describe_header("x.gguf", kvs, [], alignment=32, data_offset=0, size=0)


def per_layer_bytes(kv_dim: int, cells: int, bytes_per_value: float = 2) -> int:
    return int(2 * kv_dim * cells * bytes_per_value)  # K and V


def test_context_is_padded_to_256_cells() -> None:
    info = header("llama")
    for n_ctx, cells in ((1, 256), (1000, 1024), (4096, 4096), (4097, 4352)):
        m = estimate_memory(info, n_ctx=n_ctx)
        assert m.n_ctx == cells
        assert m.kv == 6 * per_layer_bytes(2 * 32, cells)  # 2 KV heads of 256/8


def test_parallel_sequences_each_get_padded_cells() -> None:
    m = estimate_memory(header("llama"), n_ctx=1000, parallel=3)
    assert m.n_ctx == 3 * 512  # pad(pad(1000) / 3) = pad(341) = 512 cells a sequence
    assert m.kv == 6 * per_layer_bytes(64, 3 * 512)


def test_key_and_value_lengths_and_per_layer_heads() -> None:
    info = header("qwen3", n_layer=4, attention__key_length=128, attention__value_length=64,
                  attention__head_count_kv=[4, 2, 0, 2])
    m = estimate_memory(info, n_ctx=512)
    assert m.kv == sum((128 + 64) * h * 512 * 2 for h in (4, 2, 0, 2))


def test_kv_cache_types() -> None:
    info = header("llama")
    f16 = estimate_memory(info, n_ctx=2048).kv
    assert estimate_memory(info, n_ctx=2048, kv_type="q8_0").kv * 32 == f16 // 2 * 34
    assert estimate_memory(info, n_ctx=2048, kv_type="q4_0").kv * 32 == f16 // 2 * 18
    odd = header("llama", embedding_length=8 * 20)  # 2 heads of 20: not a q8_0 row
    with pytest.raises(ModelkitError, match="not a multiple of its block size 32"):
        estimate_memory(odd, n_ctx=512, kv_type="q8_0")
    with pytest.raises(ModelkitError, match="unknown KV cache type"):
        estimate_memory(info, n_ctx=512, kv_type="q5_1")


@pytest.mark.parametrize(("arch", "kv", "sliding", "window"), [
    # gemma2: every other layer slides, window 4096 unless the GGUF says otherwise
    ("gemma2", {}, [True, False] * 3, 4096),
    ("gemma2", {"attention__sliding_window": 1024}, [True, False] * 3, 1024),
    # gemma3: 5 sliding then 1 full, only when the GGUF names a window
    ("gemma3", {}, [False] * 6, 0),
    ("gemma3", {"attention__sliding_window": 512}, [True] * 5 + [False], 512),
    # llama4: chunked attention on 3 of 4 layers, 8192 tokens; a window of 0 turns it off
    ("llama4", {}, [True, True, True, False] * 2, 8192),
    ("llama4", {"attention__sliding_window": 0}, [False] * 8, 0),
    ("cohere2", {"attention__sliding_window": 4096}, [True, True, True, False] * 2, 4096),
    ("gpt-oss", {"attention__sliding_window": 128}, [True, False] * 3, 128),
    # an explicit pattern (a count, or one flag a layer) wins over the default
    ("gemma3", {"attention__sliding_window": 512, "attention__sliding_window_pattern": 3},
     [True, True, False] * 2, 512),
    ("gemma3", {"attention__sliding_window": 512,
                "attention__sliding_window_pattern": [False, True, True, False, True, True]},
     [False, True, True, False, True, True], 512),
    # plain llama and phi3 keep every layer full even with a window key
    ("phi3", {"attention__sliding_window": 2048}, [False] * 6, 0),
])
def test_sliding_window_layers(arch: str, kv: dict[str, Any], sliding: list[bool],
                               window: int) -> None:
    n_layer = len(sliding)
    info = header(arch, n_layer=n_layer, **kv)
    hp = HyperParameters.of(info)
    assert list(hp.swa) == sliding and hp.window == window
    m = estimate_memory(info, n_ctx=32768)
    swa_cells = -(-min(32768, window + 512) // 256) * 256 if any(sliding) else 0
    assert m.swa_cells == swa_cells
    assert m.kv_swa == sum(sliding) * per_layer_bytes(64, swa_cells)
    assert m.kv_full == (n_layer - sum(sliding)) * per_layer_bytes(64, 32768)


def test_encoder_keeps_no_kv_cache() -> None:
    m = estimate_memory(header("bert", attention__causal=False), n_ctx=512)
    assert m.kv == 0 and m.compute > 0


def test_weights_and_total() -> None:
    info = read_gguf(SAMPLE)
    m = estimate_memory(info, n_ctx=2048)
    assert m.weights == sum(t.n_bytes for t in info.tensors)
    assert m.total == m.weights + m.kv + m.compute


def test_cli_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["show", "--memory", "--ctx", "1000", "--json", str(SAMPLE)]) == 0
    out = json.loads(capsys.readouterr().out)["memory"]
    m = api.memory(api.show(SAMPLE), ctx=1000)
    assert out["context"] == 1024 and out["kv_cache"] == m.kv and out["total"] == m.total
    assert cli.main(["show", "--memory", "--kv-type", "q8_0", "--parallel", "2",
                     str(SAMPLE)]) == 0
    text = capsys.readouterr().out
    assert "KV cache" in text and "q8_0" in text and "2 sequences" in text
    with pytest.raises(SystemExit) as exit_:
        cli.main(["show", "--memory", "--kv-type", "q5_1", str(SAMPLE)])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------ llama.cpp's own figures
COMPUTE_TOLERANCE = 0.10  # the compute buffer is an estimate: within 10% of llama.cpp's


def _records() -> list[Any]:
    data = json.loads(FIGURES.read_text())
    out = []
    for r in data["records"]:
        marks = []
        if r["model"].startswith("golden:"):
            marks.append(pytest.mark.golden(*r["model"].split(":", 1)[1].split("/")))
        if r["model"].startswith("generated:"):  # made with the golden gemma's tokenizer
            marks.append(pytest.mark.golden(*TOKENIZER_FROM.split("/")))
        swa = "-swa_full" if r["swa_full"] else ""
        out.append(pytest.param(r, marks=marks, id=f"{Path(r['model']).stem.split(':')[-1]}-"
                                                    f"{r['n_ctx']}-{r['kv_type']}{swa}"))
    return out


def _model(record: dict[str, Any], tmp_path: Path) -> GGUFInfo:
    name = record["model"]
    if name.startswith("generated:"):
        stem = name.split(":", 1)[1]
        return read_gguf(write_swa_model(GOLDEN_DIR, stem, tmp_path / f"{stem}.gguf"))
    return read_gguf(GOLDEN_DIR.joinpath(name.split(":", 1)[1]) if name.startswith("golden:")
                     else REPO / name)


def _estimate(record: dict[str, Any], tmp_path: Path) -> Any:
    return estimate_memory(_model(record, tmp_path), n_ctx=record["n_ctx"],
                           kv_type=record["kv_type"], swa_full=record["swa_full"])


@pytest.mark.parametrize("record", _records())
def test_kv_cache_is_what_llama_cpp_allocates(record: dict[str, Any], tmp_path: Path) -> None:
    m = _estimate(record, tmp_path)
    caches = record["kv_caches"]
    if not caches:  # an encoder: llama.cpp made no KV cache
        assert m.kv == 0
        return
    # llama.cpp logs the non-SWA cache first, then the SWA one, in MiB to 2 decimals.
    ours = [(m.n_ctx, m.kv_full)] + ([(m.swa_cells, m.kv_swa)] if m.swa_cells else [])
    assert [c["cells"] for c in caches] == [cells for cells, _ in ours]
    assert [f"{c['mib']:.2f}" for c in caches] == [f"{b / MiB:.2f}" for _, b in ours]


@pytest.mark.parametrize("record", [r for r in _records() if not r.values[0]["flash_attn"]])
def test_compute_buffer_estimate_is_near_llama_cpp(record: dict[str, Any],
                                                   tmp_path: Path) -> None:
    m = _estimate(record, tmp_path)
    theirs = record["compute_buffer_mib"]["CPU"] * MiB
    assert abs(m.compute - theirs) <= COMPUTE_TOLERANCE * theirs, (m.compute / MiB, theirs / MiB)


@pytest.mark.parametrize("record", _records())
def test_weights_are_llama_cpp_model_buffer(record: dict[str, Any], tmp_path: Path) -> None:
    m = _estimate(record, tmp_path)
    theirs = sum(record["model_buffer_mib"].values()) * MiB
    assert abs(m.weights - theirs) <= 0.01 * MiB + 0.001 * theirs
