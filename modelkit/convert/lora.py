"""PEFT LoRA adapters to GGUF LoRA adapters, as llama.cpp's convert_lora_to_gguf.py does.

Input: ``adapter_config.json`` (``lora_alpha``) and ``adapter_model.safetensors`` with
``base_model.model.<name>.lora_A.weight`` / ``.lora_B.weight`` pairs. Each pair is
named after the base weight, mapped with the base architecture's rules, and written as
``<gguf name>.lora_a`` (r x in) then ``.lora_b`` (out x r); row transforms of the base
weight (llama's q/k permutation) apply to ``lora_b``; ``token_embd``'s ``lora_a`` is
transposed. KVs: general.architecture, ``general.type`` adapter, ``adapter.type`` lora,
the adapter folder's general.* metadata, ``adapter.lora.alpha``, quantization version;
no hyper-parameters, no vocabulary. The default outtype is f32.

The base architecture comes from a base model folder's config.json, or from the base
GGUF's metadata (``ADAPTER`` in a Modelfile, where the base is the FROM model).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGUFValueType, Keys

from modelkit.convert.architecture import REGISTRY, Architecture, OutTensor, Source
from modelkit.convert.converter import (
    OUTTYPES,
    ConversionPlan,
    PlannedTensor,
    architecture_for,
    byte_size,
    tensor_type,
)
from modelkit.convert.hf_folder import HFFolder, open_folder, read_json_object, with_defaults
from modelkit.convert.kvs import KVList
from modelkit.convert.metadata import general_kvs, load_metadata, sampling_kvs
from modelkit.convert.safetensors_file import ShardedModel
from modelkit.errors import ConvertError

_PAIR = re.compile(r"^(?:base_model\.model\.)?(?P<base>.+)\."
                   r"(?P<ab>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.weight)?$")


@dataclass(frozen=True)
class _Pair:
    base: str  # the base weight's HF name
    a: Source
    b: Source


def base_from_gguf(metadata: Mapping[str, Any], adapter_dir: Path) -> HFFolder:
    """The base model's hyper-parameters as config.json would give them, from its GGUF."""
    arch = str(metadata.get("general.architecture", ""))
    hf = next((name for name, cls in REGISTRY.items()
               if gguf.MODEL_ARCH_NAMES[cls.gguf_arch] == arch), None)
    if hf is None:
        raise ConvertError(f"{adapter_dir}: LoRA adapters for a {arch or 'unknown'} base "
                           f"model are not supported")

    def get(key: str) -> Any:
        value = metadata.get(f"{arch}.{key}")
        return value[0] if isinstance(value, list) and value else value

    config = {"architectures": [hf], "num_hidden_layers": get("block_count"),
              "hidden_size": get("embedding_length"),
              "num_attention_heads": get("attention.head_count"),
              "num_key_value_heads": get("attention.head_count_kv"),
              "head_dim": get("attention.key_length")}
    config = {k: v for k, v in config.items() if v is not None}
    return HFFolder(adapter_dir, config, with_defaults(config), hf)


def _pairs(model: ShardedModel, arch: Architecture, where: Path) -> list[_Pair]:
    halves: dict[str, dict[str, Source]] = {}
    for entry in model.entries():
        if entry.name.endswith(".base_layer.weight"):
            continue
        m = _PAIR.match(entry.name)
        if m is None:
            hint = (" (embeddings in an adapter: new tokens added while fine-tuning are "
                    "not supported)" if entry.name.endswith(("embed_tokens.weight",
                                                             "lm_head.weight")) else "")
            raise ConvertError(f"{entry.path}: tensor {entry.name!r}: not a lora_A or lora_B "
                               f"tensor{hint}")
        base = arch.filter(m.group("base") + ".weight")
        if base is None:
            if m.group("base").endswith("lm_head"):
                raise ConvertError(f"{entry.path}: tensor {entry.name!r}: the adapter changes "
                                   f"lm_head, which the {arch.arch_name} base does not have "
                                   "(tied embeddings)")
            continue
        side = "a" if m.group("ab").endswith("A") else "b"
        halves.setdefault(base, {})[side] = Source(entry.name, entry, model)
    out = []
    for base, ab in halves.items():
        if "a" not in ab or "b" not in ab:
            raise ConvertError(f"{where}: {base!r} has only lora_{'A' if 'a' in ab else 'B'}")
        out.append(_Pair(base, ab["a"], ab["b"]))
    return out


def _lora_tensors(arch: Architecture, pair: _Pair) -> list[OutTensor]:
    arch.skip_shape_checks()  # adapters are r x in / out x r, not the base's shapes
    b_as_weight = Source(pair.base, pair.b.entry, pair.b.model)
    mapped = list(arch.modify(b_as_weight, None if not pair.base else _bid(pair.base)))
    if len(mapped) != 1:
        raise ConvertError(f"{pair.b.entry.path}: tensor {pair.b.entry.name!r}: LoRA on "
                           "this tensor is not supported")
    b_out = mapped[0]
    name = b_out.name
    a = pair.a
    if "token_embd.weight" in name:
        a_out = OutTensor(name + ".lora_a", tuple(reversed(a.shape)), a.keeps_f16,
                          lambda: np.ascontiguousarray(a.load().T), a.entry.name)
    else:
        a_out = OutTensor(name + ".lora_a", a.shape, a.keeps_f16, a.load, a.entry.name)
    return [a_out, OutTensor(name + ".lora_b", b_out.shape, b_out.f16, b_out.load,
                             pair.b.entry.name)]


def _bid(name: str) -> int | None:
    for part in name.split("."):
        if part.isdecimal():
            return int(part)
    return None


def plan_lora(adapter_dir: Path, base: Path | HFFolder, outtype: str = "f32") -> ConversionPlan:
    """Plan converting the PEFT adapter in ``adapter_dir`` for ``base`` (a base model
    folder, or hyper-parameters from its GGUF via :func:`base_from_gguf`)."""
    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.is_file():
        raise ConvertError(f"{cfg_path}: missing (a PEFT adapter folder needs it)")
    lcfg = read_json_object(cfg_path) or {}
    alpha = lcfg.get("lora_alpha")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise ConvertError(f"{cfg_path}: no numeric 'lora_alpha'")
    folder = base if isinstance(base, HFFolder) else open_folder(base)
    arch = architecture_for(folder)
    if outtype not in OUTTYPES:
        raise ConvertError(f"unknown LoRA outtype {outtype!r} (f32, f16, bf16, q8_0)")
    ftype = OUTTYPES[outtype]
    model = ShardedModel(adapter_dir, prefix="adapter_model")
    tensors: list[PlannedTensor] = []
    warnings: list[str] = []
    f32_names = arch.f32_names()
    for pair in _pairs(model, arch, adapter_dir):
        for t in _lora_tensors(arch, pair):
            qtype = tensor_type(t, ftype, f32_names, warnings)
            tensors.append(PlannedTensor(t, qtype, byte_size(qtype, t.shape)))
    kv = KVList()
    kv.string(Keys.General.ARCHITECTURE, arch.arch_name)
    kv.string(Keys.General.TYPE, "adapter")
    kv.string(Keys.Adapter.TYPE, "lora")
    adapter = HFFolder(adapter_dir, {}, {}, folder.hf_arch)
    sampling_kvs(adapter, kv)
    total = 0  # llama.cpp counts each pair as the base weight it adapts (out x in)
    for a, b in zip(tensors[::2], tensors[1::2], strict=True):
        total += b.tensor.shape[0] * a.tensor.shape[-1]
    md = load_metadata(adapter, -total)
    if md.fields.get("size_label") is None and total > 0:
        md.fields["size_label"] = gguf.size_label(-total, total, 0, 0)
    general_kvs(md, kv)
    kv.f32(Keys.Adapter.LORA_ALPHA, float(alpha))
    kv.add(Keys.General.QUANTIZATION_VERSION, gguf.GGML_QUANT_VERSION, GGUFValueType.UINT32)
    return ConversionPlan(folder, arch, model, ftype, tensors, kv.items(), warnings)
