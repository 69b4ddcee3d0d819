"""Large remote models that exist only as a header: a GGUF whose tensor table describes
about a gigabyte of Q8_0 weights, served as a ``SparseBody`` (the header, then zeros)."""

from __future__ import annotations

import json
import struct

from gguf import GGMLQuantizationType, GGUFValueType
from gguf.constants import GGML_QUANT_SIZES
from hubserver import SparseBody

from modelkit.gguf_file import KV, TensorSlot, encode_header
from modelkit.gguf_file.format import pad

Q8 = GGMLQuantizationType.Q8_0
F32 = GGMLQuantizationType.F32
U32 = GGUFValueType.UINT32


def _slot(name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType) -> TensorSlot:
    block, size = GGML_QUANT_SIZES[qtype]
    n = 1
    for d in shape:
        n *= d
    return TensorSlot(name, shape, qtype, n // block * size)


def big_llama(n_layer: int = 20, n_embd: int = 2048, n_ff: int = 5632, n_vocab: int = 32000,
              n_head: int = 16, n_head_kv: int = 4, extra: tuple[KV, ...] = ()
              ) -> tuple[SparseBody, tuple[TensorSlot, ...]]:
    """A llama GGUF of about 1.1 GB (Q8_0) with a 32000-token vocabulary, as a sparse
    body; and its tensor table."""
    kvs = [KV("general.architecture", "llama", GGUFValueType.STRING),
           KV("general.name", "Big", GGUFValueType.STRING),
           KV("general.file_type", 7, U32),
           KV("llama.block_count", n_layer, U32),
           KV("llama.context_length", 4096, U32),
           KV("llama.embedding_length", n_embd, U32),
           KV("llama.feed_forward_length", n_ff, U32),
           KV("llama.attention.head_count", n_head, U32),
           KV("llama.attention.head_count_kv", n_head_kv, U32),
           KV("llama.attention.layer_norm_rms_epsilon", 1e-5, GGUFValueType.FLOAT32),
           KV("tokenizer.ggml.model", "llama", GGUFValueType.STRING),
           KV("tokenizer.ggml.tokens", [f"tok{i}" for i in range(n_vocab)],
              GGUFValueType.ARRAY, GGUFValueType.STRING),
           *extra]
    kv_dim = n_embd // n_head * n_head_kv
    slots = [_slot("token_embd.weight", (n_embd, n_vocab), Q8),
             _slot("output_norm.weight", (n_embd,), F32),
             _slot("output.weight", (n_embd, n_vocab), Q8)]
    for i in range(n_layer):
        p = f"blk.{i}."
        slots += [_slot(p + "attn_norm.weight", (n_embd,), F32),
                  _slot(p + "attn_q.weight", (n_embd, n_embd), Q8),
                  _slot(p + "attn_k.weight", (n_embd, kv_dim), Q8),
                  _slot(p + "attn_v.weight", (n_embd, kv_dim), Q8),
                  _slot(p + "attn_output.weight", (n_embd, n_embd), Q8),
                  _slot(p + "ffn_norm.weight", (n_embd,), F32),
                  _slot(p + "ffn_gate.weight", (n_embd, n_ff), Q8),
                  _slot(p + "ffn_up.weight", (n_embd, n_ff), Q8),
                  _slot(p + "ffn_down.weight", (n_ff, n_embd), Q8)]
    header = encode_header(kvs, slots, 32)
    size = len(header) + sum(pad(s.n_bytes, 32) for s in slots)
    return SparseBody(header, size), tuple(slots)


def huge_string_header(size: int = 1 << 30) -> SparseBody:
    """A GGUF whose first metadata value claims to be a 300 MiB string: a header past
    any sane limit (the bytes after the claim are zeros, which the reader never needs)."""
    key = b"general.description"
    head = (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
            + struct.pack("<IQ", int(GGUFValueType.STRING), 300 << 20))
    return SparseBody(head, size)


def sparse_safetensors(shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> SparseBody:
    """A safetensors file of these tensors (2 bytes an element) whose data is zeros and
    never in memory: the header, then the data's length."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        n = 2
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return SparseBody(struct.pack("<Q", len(text)) + text, 8 + len(text) + offset)
