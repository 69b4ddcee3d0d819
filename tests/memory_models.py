"""Tiny GGUFs of sliding-window architectures (gemma2, gemma3) that llama.cpp loads, for
the memory figures: zero weights, the golden gemma model's tokenizer. Deterministic, so
tools/record_memory_figures.py and tests/test_memory.py make the same files."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from modelkit.gguf_file import read_gguf

TOKENIZER_FROM = "mixes/gemma-L2-tied.gguf"  # under the golden folder
SWA_MODELS = {  # name -> (architecture, extra keys)
    "gemma2-swa-L6": ("gemma2", {"attention.sliding_window": 512}),
    "gemma3-swa-L8": ("gemma3", {"attention.sliding_window": 256}),
}
N_EMBD, N_HEAD, N_HEAD_KV, HEAD_DIM, N_FF = 384, 6, 2, 64, 768


def write_swa_model(golden: Path, name: str, out: Path) -> Path:
    arch, extra = SWA_MODELS[name]
    n_layer = int(name.rsplit("L", 1)[1])
    source = read_gguf(golden / TOKENIZER_FROM)
    w = gguf.GGUFWriter(str(out), arch)
    w.add_context_length(8192)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    for key, value in extra.items():
        w.add_uint32(f"{arch}.{key}", value)
    for key in source.metadata:
        if key.startswith("tokenizer."):
            types = source.metadata_types[key]
            w.add_key_value(key, source.metadata[key], types[0],
                            types[1] if len(types) > 1 else None)
    n_vocab = source.metadata.array_length("tokenizer.ggml.tokens") or 0
    zeros = np.zeros
    w.add_tensor("token_embd.weight", zeros((n_vocab, N_EMBD), np.float16))
    w.add_tensor("output_norm.weight", zeros(N_EMBD, np.float32))
    for i in range(n_layer):
        p = f"blk.{i}."
        for norm in ("attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"):
            w.add_tensor(p + norm + ".weight", zeros(N_EMBD, np.float32))
        if arch == "gemma3":
            w.add_tensor(p + "attn_q_norm.weight", zeros(HEAD_DIM, np.float32))
            w.add_tensor(p + "attn_k_norm.weight", zeros(HEAD_DIM, np.float32))
        w.add_tensor(p + "attn_q.weight", zeros((N_HEAD * HEAD_DIM, N_EMBD), np.float16))
        w.add_tensor(p + "attn_k.weight", zeros((N_HEAD_KV * HEAD_DIM, N_EMBD), np.float16))
        w.add_tensor(p + "attn_v.weight", zeros((N_HEAD_KV * HEAD_DIM, N_EMBD), np.float16))
        w.add_tensor(p + "attn_output.weight", zeros((N_EMBD, N_HEAD * HEAD_DIM), np.float16))
        w.add_tensor(p + "ffn_gate.weight", zeros((N_FF, N_EMBD), np.float16))
        w.add_tensor(p + "ffn_up.weight", zeros((N_FF, N_EMBD), np.float16))
        w.add_tensor(p + "ffn_down.weight", zeros((N_EMBD, N_FF), np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
