"""gemma, gemma2, gemma3 (text): 1 added to every tensor whose HF name ends
``norm.weight`` (in the source precision: an F16 sum is rounded to F16), ``lm_head``
dropped for gemma 1/2 (tied), gemma3's token embedding rows cut to the real vocabulary,
SentencePiece vocabularies with ``add_space_prefix`` false, and each generation's own
hyper-parameter KV order."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from gguf import MODEL_ARCH, Keys

from modelkit.convert import tokenizer
from modelkit.convert.architecture import Architecture, OutTensor, Source, register
from modelkit.convert.kvs import KVList
from modelkit.convert.special_tokens import fixed_special_kvs


def plus_one(w: np.ndarray) -> np.ndarray:
    out: np.ndarray = w + w.dtype.type(1)
    return out


class _GemmaBase(Architecture):
    def filter(self, name: str) -> str | None:
        if name == "lm_head.weight" and self.gguf_arch != MODEL_ARCH.GEMMA3:
            return None
        return super().filter(name)

    def modify(self, src: Source, bid: int | None) -> Iterable[OutTensor]:
        name = self.map_name(src.name)
        if src.name.endswith("norm.weight"):
            return [self.out(name, src, plus_one)]
        return [self.out(name, src)]

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = super().expected_shapes()
        shapes.pop("token_embd.weight", None)  # gemma3 may carry extra rows
        return shapes

    def gemma_params(self, kv: KVList, file_type: int) -> None:
        hp, k = self.hp, self.key
        kv.u32(k(Keys.LLM.CONTEXT_LENGTH), hp["max_position_embeddings"])
        kv.u32(k(Keys.LLM.EMBEDDING_LENGTH), hp["hidden_size"])
        kv.u32(k(Keys.LLM.BLOCK_COUNT), self.block_count)
        kv.u32(k(Keys.LLM.FEED_FORWARD_LENGTH), hp["intermediate_size"])
        kv.u32(k(Keys.Attention.HEAD_COUNT), hp["num_attention_heads"])
        kv.u32(k(Keys.Attention.HEAD_COUNT_KV),
               hp.get("num_key_value_heads", hp["num_attention_heads"]))
        kv.f32(k(Keys.Attention.LAYERNORM_RMS_EPS), hp["rms_norm_eps"])
        kv.u32(k(Keys.Attention.KEY_LENGTH), hp["head_dim"])
        kv.u32(k(Keys.Attention.VALUE_LENGTH), hp["head_dim"])
        kv.u32(Keys.General.FILE_TYPE, file_type)

    def set_vocab(self, kv: KVList) -> None:
        tokenizer.spm_vocab(self.folder, kv)
        kv.boolean(Keys.Tokenizer.ADD_PREFIX, False)


@register
class Gemma(_GemmaBase):
    gguf_arch = MODEL_ARCH.GEMMA
    hf_names = ("GemmaForCausalLM",)

    def set_params(self, kv: KVList, file_type: int) -> None:
        self.gemma_params(kv, file_type)

    def set_vocab(self, kv: KVList) -> None:
        tokenizer.spm_vocab(self.folder, kv)
        # CodeGemma's fill-in-the-middle tokens: only eot has a GGUF key.
        fixed_special_kvs(self.folder, kv, {"prefix": 67, "suffix": 69, "middle": 68,
                                            "fsep": 70, "eot": 107})
        kv.boolean(Keys.Tokenizer.ADD_PREFIX, False)


@register
class Gemma2(_GemmaBase):
    gguf_arch = MODEL_ARCH.GEMMA2
    hf_names = ("Gemma2ForCausalLM",)

    def set_params(self, kv: KVList, file_type: int) -> None:
        self.gemma_params(kv, file_type)
        kv.f32(self.key(Keys.LLM.ATTN_LOGIT_SOFTCAPPING), self.hp["attn_logit_softcapping"])
        kv.f32(self.key(Keys.LLM.FINAL_LOGIT_SOFTCAPPING), self.hp["final_logit_softcapping"])
        kv.u32(self.key(Keys.Attention.SLIDING_WINDOW), self.hp["sliding_window"])


@register
class Gemma3(_GemmaBase):
    gguf_arch = MODEL_ARCH.GEMMA3
    hf_names = ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration")

    def real_vocab(self) -> int:
        if self.folder.has("tokenizer.model"):
            return len(tokenizer.spm_tokens(self.folder)[0])
        data = self.folder.json_object("tokenizer.json") or {}
        return len((data.get("model") or {}).get("vocab") or {}) + len(
            data.get("added_tokens") or [])

    def modify(self, src: Source, bid: int | None) -> Iterable[OutTensor]:
        if "embed_tokens.weight" in src.name:
            n = min(self.real_vocab(), src.shape[0])
            name = self.map_name(src.name)
            return [OutTensor(name, (n, *src.shape[1:]), src.keeps_f16,
                              lambda: np.ascontiguousarray(src.load()[:n]), src.entry.name)]
        return super().modify(src, bid)

    def set_params(self, kv: KVList, file_type: int) -> None:
        Architecture.set_params(self, kv, file_type)
        hp, k = self.hp, self.key
        kv.u32(k(Keys.LLM.CONTEXT_LENGTH), hp.get("max_position_embeddings", 131072))
        kv.u32(k(Keys.Attention.HEAD_COUNT), hp.get("num_attention_heads", 8))
        kv.f32(k(Keys.Attention.LAYERNORM_RMS_EPS), hp.get("rms_norm_eps", 1e-6))
        kv.u32(k(Keys.Attention.KEY_LENGTH), hp.get("head_dim", 256))
        kv.u32(k(Keys.Attention.VALUE_LENGTH), hp.get("head_dim", 256))
        rope = self.rope.get("full_attention", self.rope)
        kv.f32(k(Keys.Rope.FREQ_BASE), rope.get("rope_theta", 1_000_000.0))
        if hp.get("final_logit_softcapping"):
            kv.f32(k(Keys.LLM.FINAL_LOGIT_SOFTCAPPING), hp["final_logit_softcapping"])
        if hp.get("sliding_window_pattern") != 1:
            kv.u32(k(Keys.Attention.SLIDING_WINDOW), hp["sliding_window"])
        kv.u32(k(Keys.Attention.HEAD_COUNT_KV), hp.get("num_key_value_heads", 4))

    def set_vocab(self, kv: KVList) -> None:
        if self.folder.has("tokenizer.model"):
            super().set_vocab(kv)
        else:
            tokenizer.gpt2_vocab(self.folder, kv)
