"""What every architecture shares: source tensors, planned output tensors, name mapping,
the base hyper-parameter KVs (llama.cpp's TextModel order) and the registry.

A conversion is planned before any tensor data is read: each ``OutTensor`` knows its
GGUF name and shape and carries a ``load`` that produces its values on demand (after
the architecture's transform: q/k permutation, +1 on norms, expert stacking). The
writer then streams them one at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import gguf
import numpy as np
from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, MODEL_TENSOR, MODEL_TENSORS, TENSOR_NAMES, Keys

from modelkit.convert import tokenizer
from modelkit.convert.hf_folder import HFFolder
from modelkit.convert.kvs import KVList
from modelkit.convert.safetensors_file import ShardedModel, TensorEntry
from modelkit.errors import ConvertError

Loader = Callable[[], np.ndarray]

# Multimodal prefixes/parts a text conversion drops (llama.cpp's TextModel filter).
_MM_PREFIXES = ("mlp", "vit.", "vpm.", "siglip2.", "conformer.", "merger.", "resampler.",
                "sound_encoder.", "sound_projection.", "speech_embeddings.")
_MM_PARTS = ("visual.", "vision.", "audio.", "talker.", "vision_", "audio_", "token2wav.",
             "code2wav.", "projector.", "pre_mm_projector_norm", "image_newline",
             "view_seperator", "patch_embed", "patch_embedding", "patch_merger.",
             "patch_merge_mlp.", "model.connector.")
_SKIPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")

# Tensors llama.cpp always keeps in F32 (when the architecture has them).
_F32_TENSORS = (MODEL_TENSOR.FFN_GATE_INP, MODEL_TENSOR.FFN_GATE_INP_SHEXP,
                MODEL_TENSOR.POS_EMBD, MODEL_TENSOR.TOKEN_TYPES, MODEL_TENSOR.SSM_CONV1D)


@dataclass(frozen=True)
class Source:
    """One tensor of the input, under its (filtered) HF name."""

    name: str
    entry: TensorEntry
    model: ShardedModel

    @property
    def shape(self) -> tuple[int, ...]:
        return self.entry.shape

    @property
    def keeps_f16(self) -> bool:
        return self.entry.dtype == "F16"

    def load(self) -> np.ndarray:
        """F16 and F32 as stored; any other dtype widened to float32 (BF16 exactly)."""
        return self.rows(0, self.shape[0] if self.shape else None)

    @property
    def is_bf16(self) -> bool:
        return self.entry.dtype == "BF16"

    def stored_rows(self, lo: int, hi: int | None) -> np.ndarray:
        """Rows ``lo:hi`` (all with ``None``) as stored, BF16 as uint16 bit patterns."""
        return self.model.raw(self.entry.name, lo, hi)

    def rows(self, lo: int, hi: int | None) -> np.ndarray:
        a = self.model.array(self.entry.name, lo, hi)
        if a.dtype not in (np.float16, np.float32):
            a = a.astype(np.float32)
        return a

    def release(self) -> None:
        self.model.release(self.entry.name)


@dataclass(frozen=True)
class OutTensor:
    name: str  # GGUF name
    shape: tuple[int, ...]  # numpy order (reverse of GGUF ne)
    f16: bool  # values are float16 (an F16 source through shape-only transforms)
    load: Loader
    source: str = ""  # HF name, for messages
    # Rows lo:hi of the values, when they can be produced piecewise (no whole-tensor
    # transform); the writer then streams a large tensor in row chunks.
    rows: Callable[[int, int], np.ndarray] | None = None
    release: Callable[[], None] | None = None  # drop the source pages once written
    # A BF16 source (through a transform that only moves values, if any): rows lo:hi of
    # the output as BF16 bit patterns (uint16), so the writer converts the stored bits
    # straight to the output type without widening them to float32 first. Called for
    # row chunks only when ``rows`` is set, else once with (0, shape[0]).
    bf16_rows: Callable[[int, int], np.ndarray] | None = None


def block_id(name: str) -> int | None:
    for part in name.split("."):
        if part.isdecimal():
            return int(part)
    return None


class Architecture:
    gguf_arch: ClassVar[MODEL_ARCH]
    hf_names: ClassVar[tuple[str, ...]]

    def __init__(self, folder: HFFolder) -> None:
        self.folder = folder
        self.hp = folder.hparams
        n = folder.find("n_layers", "num_hidden_layers", "n_layer", "num_layers")
        if not isinstance(n, int):
            raise ConvertError(f"{folder.path / 'config.json'}: missing 'num_hidden_layers'")
        self.block_count = n
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self._experts: dict[int, dict[str, Source]] = {}  # held back until a layer's set is whole
        self.tensor_map = gguf.get_tensor_name_map(self.gguf_arch, n)
        rope = self.hp.get("rope_parameters", self.hp.get("rope_scaling")) or {}
        self.rope: dict[str, Any] = dict(rope)
        theta = folder.find("global_rope_theta", "rope_global_theta", "rope_theta_global",
                            "rope_theta", "rotary_emb_base")
        local = folder.find("local_rope_theta", "rope_local_theta", "rope_theta_local",
                            "swa_rope_theta", "rope_local_base_freq")
        if "full_attention" not in self.rope and "sliding_attention" not in self.rope:
            if local is not None:
                self.rope["sliding_attention"] = {"rope_theta": local}
            if "rope_theta" not in self.rope and theta is not None:
                self.rope["rope_theta"] = theta
            if "rope_type" not in self.rope and self.rope.get("type") is not None:
                self.rope["rope_type"] = self.rope["type"]
            for key in ("partial_rotary_factor", "original_max_position_embeddings"):
                if key not in self.rope and self.hp.get(key) is not None:
                    self.rope[key] = self.hp[key]

    # ------------------------------------------------------------------ names
    @property
    def arch_name(self) -> str:
        return MODEL_ARCH_NAMES[self.gguf_arch]

    def key(self, template: str) -> str:
        return template.format(arch=self.arch_name)

    def tensor_name(self, key: MODEL_TENSOR, bid: int | None = None,
                    suffix: str = ".weight") -> str:
        return TENSOR_NAMES[key].format(bid=bid) + suffix

    def filter(self, name: str) -> str | None:
        """The HF name a tensor goes by, or None to drop it."""
        if name.startswith(_MM_PREFIXES) or any(p in name for p in _MM_PARTS):
            return None
        if name.endswith("e_score_correction_bias"):
            name = name.replace("e_score_correction_bias", "e_score_correction.bias")
        return name.replace("language_model.", "")

    def map_name(self, name: str) -> str:
        new = self.tensor_map.get_name(key=name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ConvertError(f"{self.folder.path}: tensor {name!r}: no GGUF name for it in "
                               f"the {self.arch_name} architecture")
        return new

    def f32_names(self) -> re.Pattern[str]:
        keys = [k for k in _F32_TENSORS if k in MODEL_TENSORS[self.gguf_arch]]
        pats = [re.escape(TENSOR_NAMES[k]).replace(re.escape("{bid}"), r"\d+") + r"\.weight"
                for k in keys]
        return re.compile("|".join(pats) if pats else r"(?!)")

    # ---------------------------------------------------------------- tensors
    def plan(self, sources: Iterable[Source]) -> Iterator[OutTensor]:
        yield from self.extra_tensors()
        for src in sources:
            if src.name.endswith(_SKIPPED_SUFFIXES):
                continue
            yield from self.modify(src, block_id(src.name))
        self.finish()

    def extra_tensors(self) -> Iterable[OutTensor]:
        return ()

    def modify(self, src: Source, bid: int | None) -> Iterable[OutTensor]:
        return [self.out(self.map_name(src.name), src)]

    def out(self, name: str, src: Source, transform: Callable[[np.ndarray], np.ndarray]
            | None = None, *, f16: bool | None = None, moves_only: bool = False,
            ) -> OutTensor:
        """``src`` under GGUF ``name``, through ``transform`` if given; ``moves_only``:
        the transform only rearranges values (any dtype), never computes with them."""
        self.check_shape(name, src)
        load: Loader = src.load if transform is None else (lambda: transform(src.load()))
        bf16_rows: Callable[[int, int], np.ndarray] | None = None
        if src.is_bf16 and src.shape:
            if transform is None:
                bf16_rows = src.stored_rows
            elif moves_only:
                bf16_rows = lambda lo, hi: transform(src.stored_rows(lo, hi))  # noqa: E731
        return OutTensor(name, src.shape, src.keeps_f16 if f16 is None else f16, load,
                         src.entry.name, src.rows if transform is None and src.shape else None,
                         src.release, bf16_rows)

    def finish(self) -> None:
        """Called after the last source: complain about anything left half-done."""
        left = sorted(n for d in self._experts.values() for n in d)
        if left:
            raise ConvertError(f"{self.folder.path}: incomplete expert set, first {left[0]!r}")

    def stack_expert(self, src: Source, key: str, bid: int, n_experts: int,
                     parts: tuple[tuple[str, str], ...]) -> list[OutTensor]:
        """Hold back expert tensor ``src`` (named ``key``) of layer ``bid`` until all
        ``n_experts`` of every part have come, then give each part's experts stacked on a
        new first axis, in expert order. ``parts``: (the name of expert ``{x}``, the HF
        name the stacked tensor is named from)."""
        layer = self._experts.setdefault(bid, {})
        layer[key] = src
        if len(layer) < n_experts * len(parts):
            return []
        outs = []
        for each, stacked in parts:
            try:
                srcs = [layer.pop(each.format(x=x)) for x in range(n_experts)]
            except KeyError as exc:
                raise ConvertError(f"{self.folder.path}: layer {bid}: expert tensor "
                                   f"{exc.args[0]!r} is missing") from None
            loaders: list[Loader] = [s.load for s in srcs]
            merged = self.map_name(stacked)
            outs.append(OutTensor(merged, (n_experts, *srcs[0].shape),
                                  all(s.keeps_f16 for s in srcs), stack_experts(loaders),
                                  merged, None, release_all(srcs)))
        return outs

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """GGUF base name (without ``blk.N.``) -> the numpy shape config.json implies."""
        hp = self.hp
        try:
            n_embd, n_vocab = int(hp["hidden_size"]), int(hp["vocab_size"])
        except (KeyError, TypeError, ValueError):
            return {}
        shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (n_vocab, n_embd),
                                              "output.weight": (n_vocab, n_embd)}
        n_head = hp.get("num_attention_heads")
        n_kv = hp.get("num_key_value_heads") or n_head
        if isinstance(n_head, int) and n_head > 0 and isinstance(n_kv, int):
            head_dim = int(hp.get("head_dim") or n_embd // n_head)
            shapes["attn_q.weight"] = (n_head * head_dim, n_embd)
            shapes["attn_k.weight"] = (n_kv * head_dim, n_embd)
            shapes["attn_v.weight"] = (n_kv * head_dim, n_embd)
        n_ff = hp.get("intermediate_size")
        if isinstance(n_ff, int) and "num_experts" not in hp:
            shapes["ffn_up.weight"] = (n_ff, n_embd)
            shapes["ffn_gate.weight"] = (n_ff, n_embd)
            shapes["ffn_down.weight"] = (n_embd, n_ff)
        return shapes

    def skip_shape_checks(self) -> None:
        self._shapes = {}

    def check_shape(self, name: str, src: Source) -> None:
        base = re.sub(r"^blk\.\d+\.", "", name)
        if self._shapes is None:
            self._shapes = self.expected_shapes()
        want = self._shapes.get(base)
        if want is not None and tuple(src.shape) != want:
            raise ConvertError(f"{src.entry.path}: tensor {src.entry.name!r}: shape "
                               f"{list(src.shape)} disagrees with config.json (expected "
                               f"{list(want)})")

    # ------------------------------------------------------------------- KVs
    def early_kvs(self, kv: KVList) -> None:
        """KVs llama.cpp adds while preparing tensors (right after the architecture)."""

    def set_params(self, kv: KVList, file_type: int) -> None:
        """llama.cpp's TextModel.set_gguf_parameters, in its order."""
        f, k = self.folder, self.key
        kv.u32(k(Keys.LLM.BLOCK_COUNT), self.block_count)
        if (n_ctx := f.find("max_position_embeddings", "n_ctx", "n_positions", "max_length",
                            "max_sequence_length", "model_max_length")) is not None:
            kv.u32(k(Keys.LLM.CONTEXT_LENGTH), n_ctx)
        if (n_embd := f.find("hidden_size", "n_embd", "dim")) is not None:
            kv.u32(k(Keys.LLM.EMBEDDING_LENGTH), n_embd)
        if (n_ff := f.find("prefix_dense_intermediate_size", "dense_intermediate_size",
                           "intermediate_size", "n_inner", "hidden_dim")) is not None:
            kv.u32(k(Keys.LLM.FEED_FORWARD_LENGTH), n_ff)
        if (n_head := f.find("num_attention_heads", "n_head", "n_heads")) is not None:
            kv.u32(k(Keys.Attention.HEAD_COUNT), n_head)
        if (n_kv := f.find("num_key_value_heads", "n_kv_heads")) is not None:
            kv.u32(k(Keys.Attention.HEAD_COUNT_KV), n_kv)
        if self.hp.get("is_causal") is False:
            kv.boolean(k(Keys.Attention.CAUSAL), False)
        rope = self.rope.get("full_attention", self.rope)
        if (rope_type := rope.get("rope_type")) is not None:
            factor = rope.get("factor")
            if rope_type == "linear" and factor is not None:
                kv.string(k(Keys.Rope.SCALING_TYPE), "linear")
                kv.f32(k(Keys.Rope.SCALING_FACTOR), factor)
            elif rope_type == "yarn" and factor is not None:
                kv.string(k(Keys.Rope.SCALING_TYPE), "yarn")
                kv.f32(k(Keys.Rope.SCALING_FACTOR), factor)
                kv.u32(k(Keys.Rope.SCALING_ORIG_CTX_LEN),
                       rope["original_max_position_embeddings"])
                for src_key, dst in (("extrapolation_factor", Keys.Rope.SCALING_YARN_EXT_FACTOR),
                                     ("beta_fast", Keys.Rope.SCALING_YARN_BETA_FAST),
                                     ("beta_slow", Keys.Rope.SCALING_YARN_BETA_SLOW)):
                    if rope.get(src_key) is not None:
                        kv.f32(k(dst), rope[src_key])
                attn = rope.get("attention_factor", rope.get("attn_factor"))
                if attn is not None:
                    kv.f32(k(Keys.Rope.SCALING_YARN_ATTN_FACTOR), attn)
            elif rope_type in ("su", "longrope"):
                kv.string(k(Keys.Rope.SCALING_TYPE), "longrope")
        if (theta := rope.get("rope_theta")) is not None:
            kv.f32(k(Keys.Rope.FREQ_BASE), theta)
        local = self.rope.get("sliding_attention", {}).get("rope_theta")
        if local is not None:
            kv.f32(k(Keys.Rope.FREQ_BASE_SWA), local)
        if (eps := f.find("rms_norm_eps", "norm_eps")) is not None:
            kv.f32(k(Keys.Attention.LAYERNORM_RMS_EPS), eps)
        if (eps := f.find("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon")) is not None:
            kv.f32(k(Keys.Attention.LAYERNORM_EPS), eps)
        if (n := f.find("num_local_experts", "num_experts", "n_routed_experts")) is not None:
            kv.u32(k(Keys.LLM.EXPERT_COUNT), n)
        if (n := f.find("num_experts_per_tok", "num_experts_per_token",
                        "top_k_experts")) is not None:
            kv.u32(k(Keys.LLM.EXPERT_USED_COUNT), n)
        if (head_dim := self.hp.get("head_dim")) is not None:
            kv.u32(k(Keys.Attention.KEY_LENGTH), head_dim)
            kv.u32(k(Keys.Attention.VALUE_LENGTH), head_dim)
        kv.u32(Keys.General.FILE_TYPE, file_type)

    def set_vocab(self, kv: KVList) -> None:
        tokenizer.gpt2_vocab(self.folder, kv)


REGISTRY: dict[str, type[Architecture]] = {}


def register(cls: type[Architecture]) -> type[Architecture]:
    for name in cls.hf_names:
        REGISTRY[name] = cls
    return cls


def constant(values: np.ndarray) -> Loader:
    def load() -> np.ndarray:
        return values
    return load


def release_all(sources: list[Source]) -> Callable[[], None]:
    def release() -> None:
        for s in sources:
            s.release()
    return release


def stack_experts(loaders: list[Loader]) -> Loader:
    """A loader of the experts stacked on a new first axis, in expert order."""
    def load() -> np.ndarray:
        return np.stack([one() for one in loaders], axis=0)
    return load
