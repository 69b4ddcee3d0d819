"""Tiny Hugging Face model folders for converter tests, written from scratch.

Weights are written with the ``safetensors`` numpy API (F16/F32) or with
``write_raw_safetensors`` (BF16, or deliberately broken headers); tokenizers are a
SentencePiece model trained in-process on a small corpus, or a byte-level BPE
``tokenizer.json`` built with ``tokenizers``.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

CORPUS = ["hello world this is a tiny corpus for testing the converter",
          "the quick brown fox jumps over the lazy dog",
          "numbers 1 2 3 4 5 and symbols ! ? ."] * 20


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> BF16 bits, round to nearest even (no NaNs in test data)."""
    b = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def write_raw_safetensors(path: Path, tensors: Mapping[str, tuple[str, tuple[int, ...], bytes]],
                          header_extra: Mapping[str, Any] | None = None) -> None:
    """name -> (dtype, shape, bytes), data back to back in the given order."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    header.update(header_extra or {})
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw
                     + b"".join(d for _, _, d in tensors.values()))


def write_weights(folder: Path, tensors: Mapping[str, np.ndarray], dtype: str = "F16",
                  shards: int = 1) -> None:
    """Weights as float32 arrays, stored as ``dtype`` in 1 file or ``shards`` files."""
    names = list(tensors)
    groups = [names[i::shards] for i in range(shards)]
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups):
        fname = ("model.safetensors" if shards == 1
                 else f"model-{i + 1:05d}-of-{shards:05d}.safetensors")
        if dtype == "BF16":
            write_raw_safetensors(folder / fname, {
                n: ("BF16", tensors[n].shape, to_bf16_bits(tensors[n]).tobytes())
                for n in group})
        else:
            np_dtype = np.float16 if dtype == "F16" else np.float32
            save_file({n: tensors[n].astype(np_dtype) for n in group}, str(folder / fname),
                      metadata={"format": "pt"})
        weight_map.update({n: fname for n in group})
    if shards > 1:
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": weight_map}))


def write_spm(folder: Path, vocab_size: int = 300) -> None:
    f = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=f, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, minloglevel=2, bos_id=1, eos_id=2, unk_id=0,
        hard_vocab_limit=False)
    (folder / "tokenizer.model").write_bytes(f.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
        "eos_token": "</s>", "unk_token": "<unk>",
        "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}))


def write_bpe(folder: Path) -> int:
    """A byte-level BPE tokenizer.json: 256 byte tokens, a few merges, 3 added tokens.
    Returns the number of ids it uses."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "t"), ("Ġt", "h")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>"])
    tok.add_tokens(["<think>"])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "eos_token": "<|endoftext|>", "bos_token": None, "add_bos_token": False,
        "chat_template": "{{ messages }}"}))
    return len(vocab) + 3


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (0.02 * rng.standard_normal(shape)).astype(np.float32)


def norm(rng: np.random.Generator, n: int) -> np.ndarray:
    return (1.0 + 0.05 * rng.standard_normal(n)).astype(np.float32)


def decoder_weights(rng: np.random.Generator, *, n_layer: int, n_embd: int, n_head: int,
                    n_kv: int, head_dim: int, n_ff: int, n_vocab: int, lm_head: bool = True,
                    qk_norm: bool = False, bias: bool = False) -> dict[str, np.ndarray]:
    """llama-style decoder tensors under their HF names."""
    t = {"model.embed_tokens.weight": rand(rng, n_vocab, n_embd),
         "model.norm.weight": norm(rng, n_embd)}
    if lm_head:
        t["lm_head.weight"] = rand(rng, n_vocab, n_embd)
    for i in range(n_layer):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(rng, n_embd)
        t[p + "post_attention_layernorm.weight"] = norm(rng, n_embd)
        t[p + "self_attn.q_proj.weight"] = rand(rng, n_head * head_dim, n_embd)
        t[p + "self_attn.k_proj.weight"] = rand(rng, n_kv * head_dim, n_embd)
        t[p + "self_attn.v_proj.weight"] = rand(rng, n_kv * head_dim, n_embd)
        t[p + "self_attn.o_proj.weight"] = rand(rng, n_embd, n_head * head_dim)
        if bias:
            t[p + "self_attn.q_proj.bias"] = rand(rng, n_head * head_dim)
            t[p + "self_attn.k_proj.bias"] = rand(rng, n_kv * head_dim)
            t[p + "self_attn.v_proj.bias"] = rand(rng, n_kv * head_dim)
        if qk_norm:
            t[p + "self_attn.q_norm.weight"] = norm(rng, head_dim)
            t[p + "self_attn.k_norm.weight"] = norm(rng, head_dim)
        t[p + "mlp.gate_proj.weight"] = rand(rng, n_ff, n_embd)
        t[p + "mlp.up_proj.weight"] = rand(rng, n_ff, n_embd)
        t[p + "mlp.down_proj.weight"] = rand(rng, n_embd, n_ff)
    return t


def write_config(folder: Path, config: Mapping[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(dict(config), indent=1, sort_keys=True))
