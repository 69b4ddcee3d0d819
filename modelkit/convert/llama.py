"""llama and mistral (and Mixtral): q/k rows permuted from HF's rotate-half layout to
GGML's interleaved RoPE, llama-3 ``rope_freqs``, Mixtral experts stacked per layer."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from gguf import MODEL_ARCH, MODEL_TENSOR, Keys

from modelkit.convert import tokenizer
from modelkit.convert.architecture import (
    Architecture,
    OutTensor,
    Source,
    constant,
    register,
)
from modelkit.convert.kvs import KVList
from modelkit.convert.special_tokens import fixed_special_kvs
from modelkit.errors import ConvertError

F32 = np.float32


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Within each head, interleave the first and second half of its rows."""
    out: np.ndarray = (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
                       .swapaxes(1, 2).reshape(w.shape))
    return out


def llama3_rope_factors(rope: dict[str, object], dim: int) -> np.ndarray:
    """One factor per rotary pair, in float32 as the reference computes it."""
    base = F32(float(rope.get("rope_theta", 10000.0)))  # type: ignore[arg-type]
    factor = float(rope.get("factor", 8.0))  # type: ignore[arg-type]
    low = float(rope.get("low_freq_factor", 1.0))  # type: ignore[arg-type]
    high = float(rope.get("high_freq_factor", 4.0))  # type: ignore[arg-type]
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))  # type: ignore[arg-type]
    freqs = F32(1.0) / (base ** (np.arange(0, dim, 2, dtype=F32) / F32(dim)))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for freq in freqs:
        wavelen = F32(2 * math.pi) / freq
        if wavelen < F32(high_wavelen):
            out.append(F32(1.0))
        elif wavelen > F32(low_wavelen):
            out.append(F32(factor))
        else:
            smooth = (F32(old_ctx) / wavelen - F32(low)) / F32(high - low)
            out.append(F32(1.0) / ((F32(1.0) - smooth) / F32(factor) + smooth))
    return np.array(out, dtype=F32)


@register
class Llama(Architecture):
    gguf_arch = MODEL_ARCH.LLAMA
    hf_names = ("LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM",
                "MixtralForCausalLM", "LlamaModel")

    def head_dim(self) -> int:
        hd = self.hp.get("head_dim")
        return int(hd) if hd else int(self.hp["hidden_size"]) // int(self.hp["num_attention_heads"])

    def extra_tensors(self) -> Iterable[OutTensor]:
        rope = self.rope.get("full_attention", self.rope)
        if rope and str(rope.get("rope_type", "")).lower() == "llama3":
            factors = llama3_rope_factors(rope, self.head_dim())
            yield OutTensor(self.tensor_name(MODEL_TENSOR.ROPE_FREQS), factors.shape, False,
                            constant(factors), "rope_freqs")

    def modify(self, src: Source, bid: int | None) -> Iterable[OutTensor]:
        name = src.name
        if self.folder.hf_arch == "LlamaModel":
            name = "model." + name
        n_head = int(self.folder.require("n_heads", "num_attention_heads"))
        n_kv = int(self.folder.require("n_kv_heads", "num_key_value_heads"))
        if "block_sparse_moe.experts" in name:
            assert bid is not None
            return self._expert(src, name, bid)
        heads = (n_head if name.endswith(("q_proj.weight", "q_proj.bias")) else
                 n_kv if name.endswith(("k_proj.weight", "k_proj.bias")) else None)
        gguf_name = self.map_name(name)
        if heads is None:
            return [self.out(gguf_name, src)]
        self.check_shape(gguf_name, src)
        if src.shape[0] % (2 * heads):
            raise ConvertError(f"{src.entry.path}: tensor {src.entry.name!r}: {src.shape[0]} "
                               f"rows cannot be split into {heads} heads")
        n = heads
        return [self.out(gguf_name, src, lambda w: permute(w, n), moves_only=True)]

    def _expert(self, src: Source, name: str, bid: int) -> list[OutTensor]:
        return self.stack_expert(src, name, bid, int(self.hp["num_local_experts"]), tuple(
            (f"model.layers.{bid}.block_sparse_moe.experts.{{x}}.{wid}.weight",
             f"layers.{bid}.feed_forward.experts.{wid}.weight") for wid in ("w1", "w2", "w3")))

    def set_params(self, kv: KVList, file_type: int) -> None:
        super().set_params(kv, file_type)
        kv.u32(self.key(Keys.LLM.VOCAB_SIZE), self.hp["vocab_size"])
        kv.u32(self.key(Keys.Rope.DIMENSION_COUNT), self.head_dim())

    def set_vocab(self, kv: KVList) -> None:
        cfg = self.folder.json_object("tokenizer_config.json") or {}
        if cfg.get("add_prefix_space") is not None:
            kv.boolean(Keys.Tokenizer.ADD_PREFIX, cfg["add_prefix_space"])
        if self.folder.has("tokenizer.model"):
            tokenizer.spm_vocab(self.folder, kv)
        elif tokenizer.is_llama_hf(self.folder):
            tokenizer.llama_hf_vocab(self.folder, kv)
        else:
            tokenizer.gpt2_vocab(self.folder, kv)
        if self.hp.get("vocab_size", 32000) == 32016:  # CodeLlama
            fixed_special_kvs(self.folder, kv, {"prefix": 32007, "suffix": 32008,
                                                "middle": 32009, "eot": 32010})
        if self.hp.get("vocab_size", 32000) == 49152:
            kv.boolean(Keys.Tokenizer.ADD_BOS, False)
