"""The bundled sample model: samples/liang-ai/{Modelfile,liang-ai.gguf}."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

gguf = pytest.importorskip("gguf")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
GENERATOR = SAMPLES / "make_sample_gguf.py"
SAMPLE_DIR = SAMPLES / "liang-ai"
GGUF_PATH = SAMPLE_DIR / "liang-ai.gguf"
MODELFILE = SAMPLE_DIR / "Modelfile"

SYSTEM_PROMPT = "你是由崔亮创建的AI助手，你叫亮仔，你回答问题时需要使用中文。"
EXPECTED_MODELFILE = [
    "FROM ./liang-ai.gguf",
    f'SYSTEM "{SYSTEM_PROMPT}"',
    "PARAMETER temperature 0.5",
    "PARAMETER num_ctx 4096",
]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_sample_gguf", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reader() -> Any:
    return gguf.GGUFReader(GGUF_PATH)


def _kv(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    assert field is not None, f"missing key {key}"
    return field.contents()


# --------------------------------------------------------------------------- Modelfile
def test_modelfile_content() -> None:
    lines = MODELFILE.read_text(encoding="utf-8").splitlines()
    body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    assert body == EXPECTED_MODELFILE
    assert (MODELFILE.parent / "liang-ai.gguf").is_file()


# --------------------------------------------------------------------------- reproducibility
def test_generator_is_deterministic_and_reproduces_committed_file(tmp_path: Path) -> None:
    outs = [tmp_path / "a.gguf", tmp_path / "b" / "b.gguf"]
    for out in outs:
        subprocess.run([sys.executable, str(GENERATOR), str(out)], check=True, cwd=tmp_path)
    digests = {_sha256(p) for p in outs}
    assert len(digests) == 1
    assert digests == {_sha256(GGUF_PATH)}, "committed GGUF differs from the generator's output"


def test_file_is_small() -> None:
    size = GGUF_PATH.stat().st_size
    assert 1_000_000 <= size <= 8 * 1024 * 1024


# --------------------------------------------------------------------------- metadata
def test_model_metadata(reader: Any, gen: ModuleType) -> None:
    assert _kv(reader, "general.architecture") == "llama"
    assert _kv(reader, "general.name") == "liang-ai"
    assert _kv(reader, "general.file_type") == 1  # MOSTLY_F16
    assert _kv(reader, "general.quantization_version") == gguf.GGML_QUANT_VERSION
    expected = {
        "llama.context_length": 4096,
        "llama.embedding_length": gen.N_EMBD,
        "llama.block_count": gen.N_LAYER,
        "llama.feed_forward_length": gen.N_FF,
        "llama.rope.dimension_count": gen.N_EMBD // gen.N_HEAD,
        "llama.attention.head_count": gen.N_HEAD,
        "llama.attention.head_count_kv": gen.N_HEAD_KV,
    }
    for key, value in expected.items():
        assert _kv(reader, key) == value, key
    assert _kv(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    assert _kv(reader, "llama.vocab_size") == len(_kv(reader, "tokenizer.ggml.tokens"))
    # K-quants (256-element blocks) must apply to every matrix row.
    assert gen.N_EMBD % 256 == 0 and gen.N_FF % 256 == 0
    assert gen.N_HEAD % gen.N_HEAD_KV == 0 and gen.N_HEAD_KV < gen.N_HEAD


def test_tensors(reader: Any) -> None:
    n_embd = _kv(reader, "llama.embedding_length")
    n_ff = _kv(reader, "llama.feed_forward_length")
    n_layer = _kv(reader, "llama.block_count")
    n_head = _kv(reader, "llama.attention.head_count")
    n_head_kv = _kv(reader, "llama.attention.head_count_kv")
    n_vocab = _kv(reader, "llama.vocab_size")
    n_embd_kv = n_embd // n_head * n_head_kv

    # GGUF shapes, ne[0] first.
    expected: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (n_embd, n_vocab),
        "output_norm.weight": (n_embd,),
        "output.weight": (n_embd, n_vocab),
    }
    for i in range(n_layer):
        expected |= {
            f"blk.{i}.attn_norm.weight": (n_embd,),
            f"blk.{i}.attn_q.weight": (n_embd, n_embd),
            f"blk.{i}.attn_k.weight": (n_embd, n_embd_kv),
            f"blk.{i}.attn_v.weight": (n_embd, n_embd_kv),
            f"blk.{i}.attn_output.weight": (n_embd, n_embd),
            f"blk.{i}.ffn_norm.weight": (n_embd,),
            f"blk.{i}.ffn_gate.weight": (n_embd, n_ff),
            f"blk.{i}.ffn_up.weight": (n_embd, n_ff),
            f"blk.{i}.ffn_down.weight": (n_ff, n_embd),
        }
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == set(expected)
    assert _kv(reader, "GGUF.tensor_count") == len(expected)
    for name, shape in expected.items():
        t = tensors[name]
        assert tuple(int(d) for d in t.shape) == shape, name
        want = gguf.GGMLQuantizationType.F32 if len(shape) == 1 else gguf.GGMLQuantizationType.F16
        assert t.tensor_type == want, name
        assert t.data.shape == shape[::-1], name  # numpy view is row-major (ne[1], ne[0])
    # random, but sane: finite, not constant, small
    q = tensors["blk.0.attn_q.weight"].data.astype("float64")
    assert q.std() == pytest.approx(0.02, rel=0.05)
    assert abs(q.mean()) < 1e-3
    assert (tensors["output_norm.weight"].data == 1.0).all()


# --------------------------------------------------------------------------- tokenizer
def test_tokenizer(reader: Any, gen: ModuleType) -> None:
    assert _kv(reader, "tokenizer.ggml.model") == "gpt2"
    assert _kv(reader, "tokenizer.ggml.pre") == "qwen2"
    tokens = _kv(reader, "tokenizer.ggml.tokens")
    types = _kv(reader, "tokenizer.ggml.token_type")
    merges = _kv(reader, "tokenizer.ggml.merges")
    assert len(tokens) == len(types) == _kv(reader, "llama.vocab_size")
    assert len(set(tokens)) == len(tokens)
    assert 200 <= len(merges) <= 1000

    # all 256 byte-level tokens, id == byte value
    b2u = gen.bytes_to_unicode()
    assert len(set(b2u.values())) == 256
    assert tokens[:256] == [b2u[b] for b in range(256)]

    vocab = set(tokens)
    for merge in merges:
        a, b = merge.split(" ")
        assert a in vocab and b in vocab and a + b in vocab, merge
    u2b = {c: b for b, c in b2u.items()}
    for tok, typ in zip(tokens, types, strict=True):
        if tok.startswith("<|"):
            continue
        assert typ == gguf.TokenType.NORMAL
        assert all(c in u2b for c in tok), tok  # byte-level text only

    normal = gguf.TokenType.NORMAL
    specials = {
        tok: i for i, (tok, typ) in enumerate(zip(tokens, types, strict=True)) if typ != normal
    }
    assert set(specials) == {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}
    assert all(types[i] == gguf.TokenType.CONTROL for i in specials.values())
    assert _kv(reader, "tokenizer.ggml.bos_token_id") == specials["<|endoftext|>"]
    assert _kv(reader, "tokenizer.ggml.eos_token_id") == specials["<|im_end|>"]
    assert _kv(reader, "tokenizer.ggml.add_bos_token") is False

    # the BPE learned something useful from both languages
    decoded = {bytes(u2b[c] for c in tok).decode("utf-8", "replace") for tok in tokens}
    assert {"亮仔", "中文", " the", " model"} <= decoded


def test_chat_template(reader: Any) -> None:
    template = _kv(reader, "tokenizer.chat_template")
    assert template == CHATML
    jinja2 = pytest.importorskip("jinja2")
    rendered = jinja2.Template(template).render(
        messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "你好"}],
        add_generation_prompt=True,
    )
    assert rendered == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    )


# --------------------------------------------------------------------------- llama.cpp
def _reference_bpe(gen: ModuleType, text: str, tokens: list[str], merges: list[str]) -> list[int]:
    """Plain-Python byte-level BPE over the generator's pre-tokenizer (ASCII/CJK text only)."""
    ranks = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
    ids = {tok: i for i, tok in enumerate(tokens)}
    b2u = gen.bytes_to_unicode()
    out: list[int] = []
    for piece in gen.PRETOKENIZE.findall(text):
        symbols = [b2u[b] for b in piece.encode("utf-8")]
        while len(symbols) > 1:
            pairs = [(ranks.get(p, len(ranks)), j) for j, p in enumerate(pairwise(symbols))]
            rank, j = min(pairs)
            if rank == len(ranks):
                break
            symbols[j : j + 2] = [symbols[j] + symbols[j + 1]]
        out += [ids[s] for s in symbols]
    return out


@pytest.fixture(scope="module")
def llm() -> Any:
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(GGUF_PATH), n_ctx=256, seed=1, verbose=False)


TEXTS = [
    "Hello, who are you? The model is tiny.",
    "你好！我是亮仔，我会使用中文回答你的问题。",
    "Mixed 中文 and English, 42 tokens.\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_llama_cpp_tokenize_roundtrip(llm: Any, reader: Any, gen: ModuleType, text: str) -> None:
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    assert ids and len(ids) < len(text.encode("utf-8"))  # merges were applied
    assert llm.detokenize(ids).decode("utf-8") == text
    tokens = _kv(reader, "tokenizer.ggml.tokens")
    merges = _kv(reader, "tokenizer.ggml.merges")
    assert ids == _reference_bpe(gen, text, tokens, merges)


def test_llama_cpp_special_tokens_and_generation(llm: Any, reader: Any) -> None:
    tokens = _kv(reader, "tokenizer.ggml.tokens")
    assert llm.n_vocab() == len(tokens)
    assert llm.n_embd() == _kv(reader, "llama.embedding_length")
    assert llm.token_eos() == tokens.index("<|im_end|>")
    ids = llm.tokenize(b"<|im_start|>user\nhi<|im_end|>", add_bos=False, special=True)
    assert ids[0] == tokens.index("<|im_start|>") and ids[-1] == tokens.index("<|im_end|>")

    out = llm("Hello", max_tokens=4, temperature=0.0)
    assert out["usage"]["completion_tokens"] >= 1


def test_llama_cpp_chat_template(llm: Any) -> None:
    import ctypes

    import llama_cpp

    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "你好"},
    ]
    prompt = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    prompt += "<|im_start|>assistant\n"

    # llama.cpp's own (C++) template engine recognises the GGUF's template as ChatML
    tmpl = llama_cpp.llama_model_chat_template(llm.model, None)
    assert tmpl is not None and tmpl.decode() == CHATML
    chat = (llama_cpp.llama_chat_message * len(messages))(
        *(
            llama_cpp.llama_chat_message(role=m["role"].encode(), content=m["content"].encode())
            for m in messages
        )
    )
    buf = ctypes.create_string_buffer(4096)
    n = llama_cpp.llama_chat_apply_template(tmpl, chat, len(messages), True, buf, len(buf))
    assert buf.raw[:n].decode("utf-8") == prompt

    # llama-cpp-python renders the same template with Jinja and generates from it
    result = llm.create_chat_completion(messages=messages, max_tokens=4, temperature=0.0)
    assert result["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(result["choices"][0]["message"]["content"], str)
    n_prompt = len(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
    assert result["usage"]["prompt_tokens"] == n_prompt
