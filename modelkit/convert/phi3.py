"""phi3: fused ``qkv_proj`` (-> attn_qkv) and ``gate_up_proj`` (-> ffn_up) kept as they
are; long-rope factors as ``rope_factors_long``/``short`` tensors with the attention
factor KV; its own SentencePiece variant (added tokens from tokenizer.json too) unless
the tokenizer is GPT2Tokenizer (Phi-4)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from gguf import MODEL_ARCH, MODEL_TENSOR, Keys, TokenType

from modelkit.convert import tokenizer
from modelkit.convert.architecture import Architecture, OutTensor, constant, register
from modelkit.convert.kvs import KVList
from modelkit.errors import ConvertError


@register
class Phi3(Architecture):
    gguf_arch = MODEL_ARCH.PHI3
    hf_names = ("Phi3ForCausalLM",)

    def rope_dims(self) -> int:
        n_embd = int(self.folder.require("hidden_size", "n_embd"))
        n_head = int(self.folder.require("num_attention_heads", "n_head"))
        return int(float(self.rope.get("partial_rotary_factor", 1.0)) * n_embd) // n_head

    def _attn_factor(self) -> float | None:
        if not self.rope.get("long_factor"):
            return None
        scale = self.folder.require("n_positions", "max_position_embeddings") / \
            self.rope["original_max_position_embeddings"]
        kind = str(self.rope.get("rope_type", "")).lower()
        orig = self.rope["original_max_position_embeddings"]
        if kind in ("su", "longrope"):
            return math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
        if kind == "yarn":
            return 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
        raise ConvertError(f"{self.folder.path / 'config.json'}: rope scaling type {kind!r} "
                           "is not supported for phi3")

    def early_kvs(self, kv: KVList) -> None:
        if (factor := self._attn_factor()) is not None:
            kv.f32(self.key(Keys.Rope.SCALING_ATTN_FACTOR), factor)

    def extra_tensors(self) -> Iterable[OutTensor]:
        long, short = self.rope.get("long_factor"), self.rope.get("short_factor")
        if not long:
            return
        if not short or len(long) != len(short) or len(long) != self.rope_dims() / 2:
            raise ConvertError(f"{self.folder.path / 'config.json'}: rope long/short factors "
                               f"must both have {self.rope_dims() // 2} values")
        for key, values in ((MODEL_TENSOR.ROPE_FACTORS_LONG, long),
                            (MODEL_TENSOR.ROPE_FACTORS_SHORT, short)):
            arr = np.array(values, dtype=np.float32)
            yield OutTensor(self.tensor_name(key), arr.shape, False, constant(arr), key.name)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = super().expected_shapes()
        for k in ("ffn_up.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight"):
            shapes.pop(k, None)
        return shapes

    def set_params(self, kv: KVList, file_type: int) -> None:
        f, k = self.folder, self.key
        kv.u32(k(Keys.LLM.CONTEXT_LENGTH), f.require("n_positions", "max_position_embeddings"))
        kv.u32(k(Keys.Rope.SCALING_ORIG_CTX_LEN), self.rope["original_max_position_embeddings"])
        kv.u32(k(Keys.LLM.EMBEDDING_LENGTH), f.require("hidden_size", "n_embd"))
        kv.u32(k(Keys.LLM.FEED_FORWARD_LENGTH), f.require("intermediate_size"))
        kv.u32(k(Keys.LLM.BLOCK_COUNT), self.block_count)
        kv.u32(k(Keys.Attention.HEAD_COUNT), f.require("num_attention_heads", "n_head"))
        kv.u32(k(Keys.Attention.HEAD_COUNT_KV), f.require("num_key_value_heads", "n_head_kv"))
        kv.f32(k(Keys.Attention.LAYERNORM_RMS_EPS), f.require("rms_norm_eps"))
        kv.u32(k(Keys.Rope.DIMENSION_COUNT), self.rope_dims())
        kv.f32(k(Keys.Rope.FREQ_BASE), self.rope.get("full_attention", self.rope)["rope_theta"])
        kv.u32(Keys.General.FILE_TYPE, file_type)
        kv.u32(k(Keys.Attention.SLIDING_WINDOW), self.hp.get("sliding_window") or 0)

    def set_vocab(self, kv: KVList) -> None:
        cfg = self.folder.json_object("tokenizer_config.json") or {}
        if cfg.get("tokenizer_class") == "GPT2Tokenizer":
            tokenizer.gpt2_vocab(self.folder, kv)
            return
        if not self.folder.has("tokenizer.model"):
            raise ConvertError(f"{self.folder.path / 'tokenizer.model'}: missing (phi3 needs "
                               "its SentencePiece model)")
        tokens, scores, types = tokenizer.spm_tokens(self.folder, overrides=False)
        added = [(int(key), data) for key, data in
                 (cfg.get("added_tokens_decoder") or {}).items()]
        tj = self.folder.json_object("tokenizer.json") or {}
        added += [(int(a["id"]), a) for a in tj.get("added_tokens") or []]
        for tid, data in added:
            if tid >= len(tokens):
                raise ConvertError(f"{self.folder.path}: added token id {tid} does not fit "
                                   f"the vocabulary of {len(tokens)}")
            tokens[tid] = str(data["content"]).encode("utf-8")
            scores[tid] = -1000.0
            types[tid] = int(TokenType.CONTROL if data.get("special")
                             else TokenType.USER_DEFINED)
        tokenizer.write_spm(self.folder, kv, tokens, scores, types)
