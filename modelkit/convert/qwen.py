"""qwen2 / qwen3 (no transforms) and qwen2-moe / qwen3-moe (per-expert tensors stacked
into one 3-D tensor per projection, emitted down, gate, up when a layer's last expert
arrives; the fused v5 layout ``mlp.experts.gate_up_proj`` split in two)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from gguf import MODEL_ARCH, Keys

from modelkit.convert import tokenizer
from modelkit.convert.architecture import (
    Architecture,
    Loader,
    OutTensor,
    Source,
    register,
)
from modelkit.convert.kvs import KVList
from modelkit.errors import ConvertError


def row_slice(src: Source, lo: int, n: int) -> Loader:
    def load() -> np.ndarray:
        return np.ascontiguousarray(src.load()[..., lo:lo + n, :])
    return load


def pooling_kvs(arch: Architecture, kv: KVList) -> None:
    """``pooling_type`` from sentence-transformers' modules.json -> */config.json."""
    modules = arch.folder.json("modules.json")
    path = None
    if isinstance(modules, list):
        for mod in modules:
            if isinstance(mod, dict) and str(mod.get("type", "")).endswith("Pooling"):
                path = mod.get("path")
                break
    if path is None:
        return
    pooling = arch.folder.json_object(f"{path}/config.json") or {}
    modes = {"mean": 1, "cls": 2, "lasttoken": 3}
    if pooling.get("pooling_mode_mean_tokens"):
        ptype = 1
    elif pooling.get("pooling_mode_cls_token"):
        ptype = 2
    elif pooling.get("pooling_mode_lasttoken"):
        ptype = 3
    elif pooling.get("pooling_mode") in modes:
        ptype = modes[pooling["pooling_mode"]]
    else:
        raise ConvertError(f"{arch.folder.path / path / 'config.json'}: only mean, cls and "
                           "last-token pooling are supported")
    kv.u32(arch.key(Keys.LLM.POOLING_TYPE), ptype)


def spm_or_gpt2(arch: Architecture, kv: KVList) -> None:
    if arch.folder.has("tokenizer.model"):
        tokenizer.spm_vocab(arch.folder, kv)
    else:
        tokenizer.gpt2_vocab(arch.folder, kv)


@register
class Qwen2(Architecture):
    gguf_arch = MODEL_ARCH.QWEN2
    hf_names = ("Qwen2ForCausalLM", "Qwen2Model")

    def modify(self, src: Source, bid: int | None) -> Iterable[OutTensor]:
        name = f"model.{src.name}" if self.folder.hf_arch.endswith("Model") else src.name
        return [self.out(self.map_name(name), src)]

    def set_params(self, kv: KVList, file_type: int) -> None:
        super().set_params(kv, file_type)
        pooling_kvs(self, kv)

    def set_vocab(self, kv: KVList) -> None:
        spm_or_gpt2(self, kv)


@register
class Qwen3(Qwen2):
    gguf_arch = MODEL_ARCH.QWEN3
    hf_names = ("Qwen3ForCausalLM", "Qwen3Model")


@register
class Qwen2Moe(Architecture):
    gguf_arch = MODEL_ARCH.QWEN2MOE
    hf_names = ("Qwen2MoeForCausalLM",)

    def modify(self, src: Source, bid: int | None) -> Iterable[OutTensor]:
        name = src.name
        if name.endswith(("mlp.experts.down_proj", "mlp.experts.down_proj.weight")):
            return [self.out(self.map_name(name.removesuffix(".weight") + ".weight"), src)]
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj.weight")):
            if len(src.shape) < 3 or src.shape[-2] % 2:
                raise ConvertError(f"{src.entry.path}: tensor {src.entry.name!r}: unexpected "
                                   f"gate_up_proj shape {list(src.shape)}")
            n_ff = src.shape[-2] // 2
            base = name.removesuffix(".weight").removesuffix(".gate_up_proj")
            shape = (*src.shape[:-2], n_ff, src.shape[-1])
            return [OutTensor(self.map_name(f"{base}.{part}.weight"), shape, src.keeps_f16,
                              row_slice(src, lo, n_ff), src.entry.name)
                    for part, lo in (("gate_proj", 0), ("up_proj", n_ff))]
        if "experts" in name and "shared_expert" not in name:
            assert bid is not None
            return self._expert(src, bid)
        return [self.out(self.map_name(name), src)]

    def _expert(self, src: Source, bid: int) -> list[OutTensor]:
        n_experts = int(self.folder.require("num_local_experts", "num_experts"))
        return self.stack_expert(src, src.name, bid, n_experts, tuple(
            (f"model.layers.{bid}.mlp.experts.{{x}}.{w}.weight",
             f"model.layers.{bid}.mlp.experts.{w}.weight")
            for w in ("down_proj", "gate_proj", "up_proj")))

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = super().expected_shapes()
        for k in ("ffn_up.weight", "ffn_gate.weight", "ffn_down.weight"):
            shapes.pop(k, None)
        return shapes

    def set_params(self, kv: KVList, file_type: int) -> None:
        super().set_params(kv, file_type)
        if (n := self.hp.get("moe_intermediate_size")) is not None:
            kv.u32(self.key(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH), n)
        if (n := self.hp.get("shared_expert_intermediate_size")) is not None:
            kv.u32(self.key(Keys.LLM.EXPERT_SHARED_FEED_FORWARD_LENGTH), n)


@register
class Qwen3Moe(Qwen2Moe):
    gguf_arch = MODEL_ARCH.QWEN3MOE
    hf_names = ("Qwen3MoeForCausalLM",)
