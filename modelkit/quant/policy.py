"""Which type each tensor gets when a model is quantized: llama.cpp's policy, in Python.

This mirrors ``llama_model_quantize`` of the llama.cpp vendored by llama-cpp-python 0.3.36
(``src/llama-quant.cpp``): the order tensors are processed and written in, which tensors
are quantized at all (``tensor_allows_quantization``), the per-category rules of
``llama_tensor_get_type_impl`` with their running counters, and the block-size fallbacks
of ``tensor_type_fallback`` (counted in ``n_fallback``).  It runs with llama.cpp's default
parameters: no importance matrix, no ``--tensor-type`` overrides, not ``--pure``, output
tensor quantized, no ``--output-tensor-type``/``--token-embedding-type``.

Everything here is pure: no I/O, no module state.  The running counters llama.cpp keeps in
``quantize_state_impl`` live in a local object created by each :func:`plan_quantization`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from numbers import Integral

from gguf import GGMLQuantizationType, LlamaFileType
from gguf.constants import GGML_QUANT_SIZES

from modelkit.errors import QuantizationError

__all__ = [
    "SUPPORTED_FILE_TYPES",
    "ModelHParams",
    "QuantPlan",
    "TensorChoice",
    "TensorSpec",
    "default_tensor_type",
    "fallback_warning",
    "file_type_name",
    "ggml_type_name",
    "output_order",
    "parse_file_type",
    "plan_quantization",
    "use_more_bits",
]

T = GGMLQuantizationType
FT = LlamaFileType


# --------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """What the policy needs to know of one source tensor.

    ``shape`` is in GGUF order, ``ne[0]`` (the row length) first, as
    ``gguf.GGUFReader``'s ``ReaderTensor.shape`` gives it.
    """

    name: str
    shape: tuple[int, ...]
    source_type: GGMLQuantizationType


@dataclass(frozen=True)
class ModelHParams:
    """The hyper-parameters llama.cpp's type choice reads (``llama_model::load_hparams``).

    * ``architecture``: ``general.architecture``; decides the falcon rules, the
      glm5-next rules and which architectures can be a "70B" model.
    * ``n_layer``: ``<arch>.block_count`` (``hparams.n_layer_all``); the ``n`` of the
      ``ffn_down``/``ffn_gate``/``ffn_up`` layer rules.
    * ``n_expert``: ``<arch>.expert_count``, 0 when absent; ``== 8`` triggers the
      8-expert rules, ``> 1`` makes layer numbers come from tensor names.
    * ``n_head``/``n_head_kv``: ``<arch>.attention.head_count``/``head_count_kv`` of layer
      0 (first element when the key is a per-layer array); ``n_head_kv`` defaults to
      ``n_head``.  Used to tell LLaMA-2-70B (GQA) from LLaMA-65B, and for ``n_gqa``.
    * ``n_layer_nextn``: ``<arch>.nextn_predict_layers`` (0 when absent); llama.cpp's
      ``n_layer()`` used to derive the model size is ``n_layer - n_layer_nextn``.
    """

    architecture: str
    n_layer: int
    n_expert: int = 0
    n_head: int = 0
    n_head_kv: int = 0
    n_layer_nextn: int = 0

    @classmethod
    def from_kv(cls, kv: Mapping[str, object]) -> ModelHParams:
        """Build from a plain ``{GGUF key: python value}`` mapping.

        Missing ``general.architecture`` or ``<arch>.block_count`` is an error, as in
        llama.cpp's loader (``key not found in model: ...``).
        """
        arch = kv.get("general.architecture")
        if not isinstance(arch, str):
            raise QuantizationError("key not found in model: general.architecture")
        block_count = _kv_int(kv, f"{arch}.block_count")
        if block_count is None:
            raise QuantizationError(f"key not found in model: {arch}.block_count")
        if block_count <= 0:
            raise QuantizationError(f"invalid {arch}.block_count: {block_count}")
        n_head = _kv_int(kv, f"{arch}.attention.head_count") or 0
        n_head_kv = _kv_int(kv, f"{arch}.attention.head_count_kv")
        return cls(
            architecture=arch,
            n_layer=block_count,
            n_expert=_kv_int(kv, f"{arch}.expert_count") or 0,
            n_head=n_head,
            n_head_kv=n_head if n_head_kv is None else n_head_kv,
            n_layer_nextn=_kv_int(kv, f"{arch}.nextn_predict_layers") or 0,
        )

    @property
    def n_gqa(self) -> int:
        """``hparams.n_gqa()`` of layer 0: heads per KV head, 0 without KV heads."""
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        """Whether llama.cpp sets ``model.type = LLM_TYPE_70B`` (bumps ``attn_v``).

        Mirrors the ``load_arch_hparams`` of each architecture that can produce that type:
        llama/llama-embed with 80 layers and GQA (``n_head != n_head_kv``; not with 8
        experts), qwen2/deci/olmo with 80 layers, jais2 with 68.
        """
        n = self.n_layer - self.n_layer_nextn
        arch = self.architecture
        if arch in ("llama", "llama-embed"):
            return self.n_expert != 8 and n == 80 and self.n_head != self.n_head_kv
        if arch in ("qwen2", "deci", "olmo"):
            return n == 80
        if arch == "jais2":
            return n == 68
        return False


@dataclass(frozen=True)
class TensorChoice:
    """The decision for one tensor.

    ``target_type`` equals the source type when the tensor is copied unchanged;
    ``quantize`` is False exactly then (llama.cpp: ``quantize = cur_type != new_type``;
    an F32 tensor whose target is F16 is converted, so ``quantize`` is True).
    ``fallback`` is True when llama.cpp counted the tensor in ``n_fallback``;
    ``fallback_from`` is then the type the rules wanted before the fallback.
    """

    name: str
    target_type: GGMLQuantizationType
    quantize: bool
    fallback: bool
    fallback_from: GGMLQuantizationType | None = None


@dataclass(frozen=True)
class QuantPlan:
    """Every tensor's choice, in llama.cpp's output order, and the fallback count."""

    file_type: LlamaFileType
    choices: tuple[TensorChoice, ...]
    n_fallback: int


# --------------------------------------------------------------------------------------
# File types
# --------------------------------------------------------------------------------------

# Canonical spelling (as llama-quantize prints it) and default tensor type
# (``llama_ftype_get_default_type``) of every file type this policy implements.  Other
# ftypes (Q2_K, Q3_K_*, IQ*, TQ*, MXFP4_MOE, ...) have rules of their own in llama.cpp
# that are not ported, and modelkit has no kernels for their types.
_FILE_TYPES: dict[LlamaFileType, tuple[str, GGMLQuantizationType]] = {
    FT.MOSTLY_Q4_0: ("q4_0", T.Q4_0),
    FT.MOSTLY_Q4_1: ("q4_1", T.Q4_1),
    FT.MOSTLY_Q5_0: ("q5_0", T.Q5_0),
    FT.MOSTLY_Q5_1: ("q5_1", T.Q5_1),
    FT.MOSTLY_Q8_0: ("q8_0", T.Q8_0),
    FT.MOSTLY_Q4_K_S: ("q4_K_S", T.Q4_K),
    FT.MOSTLY_Q4_K_M: ("q4_K_M", T.Q4_K),
    FT.MOSTLY_Q5_K_S: ("q5_K_S", T.Q5_K),
    FT.MOSTLY_Q5_K_M: ("q5_K_M", T.Q5_K),
    FT.MOSTLY_Q6_K: ("q6_K", T.Q6_K),
    FT.MOSTLY_F16: ("F16", T.F16),
    FT.MOSTLY_BF16: ("BF16", T.BF16),
    FT.ALL_F32: ("F32", T.F32),
}

SUPPORTED_FILE_TYPES: tuple[str, ...] = tuple(name for name, _ in _FILE_TYPES.values())

# Accepted spellings, upper-cased.  "Q4_K" means Q4_K_M (Ollama's ParseFileType and
# llama-quantize agree); "Q5_K" means Q5_K_M (llama-quantize).
_PARSE: dict[str, LlamaFileType] = {name.upper(): ft for ft, (name, _) in _FILE_TYPES.items()}
_PARSE["Q4_K"] = FT.MOSTLY_Q4_K_M
_PARSE["Q5_K"] = FT.MOSTLY_Q5_K_M


def parse_file_type(text: str) -> LlamaFileType:
    """Parse a quantization name, case-insensitively (``q4_K_M``, ``Q4_K``, ``f16``...).

    Unknown names raise :class:`QuantizationError` with Ollama's wording, listing the
    supported types.
    """
    ft = _PARSE.get(text.upper())
    if ft is None:
        supported = ", ".join(name.upper() for name in SUPPORTED_FILE_TYPES)
        raise QuantizationError(
            f"unsupported quantization type {text.upper()} - supported types are {supported}"
        )
    return ft


def file_type_name(ft: LlamaFileType) -> str:
    """Upper-case display name of a file type: ``Q4_K_M``, ``Q8_0``, ``F16``, ``IQ2_XXS``."""
    if ft in _FILE_TYPES:
        return _FILE_TYPES[ft][0].upper()
    return ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")


def default_tensor_type(ft: LlamaFileType) -> GGMLQuantizationType:
    """``llama_ftype_get_default_type`` for the supported file types."""
    if ft not in _FILE_TYPES:
        raise QuantizationError(
            f"unsupported file type {file_type_name(ft)} - supported types are "
            + ", ".join(name.upper() for name in SUPPORTED_FILE_TYPES)
        )
    return _FILE_TYPES[ft][1]


def ggml_type_name(t: GGMLQuantizationType) -> str:
    """ggml's own spelling of a type (``ggml_type_name``): ``q4_K``, ``q8_0``, ``f16``."""
    name = t.name.lower()
    return name[:-2] + "_K" if name.endswith("_k") else name


# --------------------------------------------------------------------------------------
# Tensor order
# --------------------------------------------------------------------------------------

# sscanf(name, "blk.%d.", &layer): "%d" skips C whitespace and takes an optional sign;
# the trailing "." of the format does not affect the result.
_BLK_RE = re.compile(r"blk\.[ \t\n\v\f\r]*([+-]?[0-9]+)")


def _layer_of(name: str) -> int | None:
    m = _BLK_RE.match(name)
    return int(m.group(1)) if m else None


def _order_key(name: str) -> tuple[int, str]:
    """``llama_model_loader::weight_name_comparer``: layer number (-1 outside ``blk.``),
    then the name as a byte string (code-point order is UTF-8 byte order)."""
    layer = _layer_of(name)
    return (-1 if layer is None else layer, name)


def output_order(names: Iterable[str]) -> list[str]:
    """Tensor names in the order llama.cpp processes and writes them.

    ``weights_map`` is a ``std::map`` sorted by (layer, name), so non-``blk.`` tensors come
    first; this order also drives the ``attn_v`` and ``ffn_*`` counters.
    """
    return sorted(names, key=_order_key)


# --------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------


class _Category(Enum):
    """``tensor_category``: broad roles, found by substring as ``tensor_get_category``."""

    TOKEN_EMBD = auto()
    ATTENTION_Q = auto()
    ATTENTION_V = auto()
    ATTENTION_K = auto()
    ATTENTION_QKV = auto()
    ATTENTION_KV_B = auto()
    ATTENTION_OUTPUT = auto()
    FFN_UP = auto()
    FFN_GATE = auto()
    FFN_DOWN = auto()
    OUTPUT = auto()
    OTHER = auto()


# First match wins, in llama.cpp's order (so "attn_qkv.weight" is never "attn_v").
_CATEGORY_SUBSTRINGS: tuple[tuple[str, _Category], ...] = (
    ("attn_qkv.weight", _Category.ATTENTION_QKV),
    ("attn_kv_b.weight", _Category.ATTENTION_KV_B),
    ("attn_v.weight", _Category.ATTENTION_V),
    ("attn_k.weight", _Category.ATTENTION_K),
    ("attn_q.weight", _Category.ATTENTION_Q),
    ("attn_output.weight", _Category.ATTENTION_OUTPUT),
    ("ffn_up", _Category.FFN_UP),
    ("ffn_gate", _Category.FFN_GATE),
    ("ffn_down", _Category.FFN_DOWN),
)


def _category(name: str) -> _Category:
    """``tensor_get_category``: exact names for output/token embeddings, else substrings."""
    if name == "output.weight":
        return _Category.OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return _Category.TOKEN_EMBD
    for needle, cat in _CATEGORY_SUBSTRINGS:
        if needle in name:
            return cat
    return _Category.OTHER


def _is_attn_v(cat: _Category) -> bool:
    """``category_is_attn_v``: attn_v, fused attn_qkv and MLA attn_kv_b share the rules."""
    return cat in (_Category.ATTENTION_V, _Category.ATTENTION_QKV, _Category.ATTENTION_KV_B)


# Names containing any of these are never quantized (``tensor_allows_quantization``).
_KEEP_SUBSTRINGS: tuple[str, ...] = (
    "_norm.weight",  # norms
    "ffn_gate_inp.weight",  # MoE router
    "ffn_gate_tid2eid.weight",  # DeepSeek-V4 token->expert table (i32)
    "altup",  # Gemma-3n, tiny
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",  # Mamba/Kimi conv1d
    "shortconv.conv.weight",
    "indexer.k_proj.weight",  # MiniMax indexer
    "indexer.q_proj.weight",
    "time_mix_first.weight",  # RWKV small 2-D tensors
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",  # T5 relative position bias
    ".position_embd",  # multimodal
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",  # audio codebooks
    "mm.a.code_embd",
)

_KEEP_SUBSTRINGS_GLM5_NEXT: tuple[str, ...] = (
    "hc_",
    "indexer.attn_q_b",
    "indexer.attn_k",
    "indexer.proj",
    "indexer_compressor_gate",
    "indexer_compressor_ape",
    "ssm_f_a.weight",
    "ssm_f_b.weight",
    "ssm_g_a.weight",
    "ssm_g_b.weight",
    "ssm_beta.weight",
    "attn_kv_a_mqa.weight",
    "attn_k_b.weight",
    "attn_v_b.weight",
)

# Exact names never quantized: BERT's positional embeddings and token types
# (``LLM_TN(arch)(LLM_TENSOR_POS_EMBD/TOKEN_TYPES, "weight")`` is the same for every arch).
_KEEP_NAMES = frozenset({"position_embd.weight", "token_types.weight"})


def _n_dims(shape: Sequence[int]) -> int:
    """``ggml_n_dims``: the number of dimensions ignoring trailing 1s (at least 1)."""
    for i in range(len(shape) - 1, 0, -1):
        if int(shape[i]) > 1:
            return i + 1
    return 1


def _allows_quantization(spec: TensorSpec, arch: str) -> bool:
    """``tensor_allows_quantization``: 2-D/3-D tensors named ``*weight``, minus a list of
    small or sensitive tensors that are copied unchanged."""
    if _n_dims(spec.shape) < 2:
        return False
    name = spec.name
    # llama.cpp tests `name.rfind("weight") == name.size() - 6`; for a 5-character name
    # both sides are npos (size_t wrap-around), so such a name counts as ending in "weight".
    if not (name.endswith("weight") or len(name) == 5):
        return False
    if name in _KEEP_NAMES:
        return False
    if any(s in name for s in _KEEP_SUBSTRINGS):
        return False
    if arch == "glm5-next" and any(s in name for s in _KEEP_SUBSTRINGS_GLM5_NEXT):
        return False
    return True


def _block_size(t: GGMLQuantizationType) -> int:
    return GGML_QUANT_SIZES[t][0]


def _is_quantized(t: GGMLQuantizationType) -> bool:
    """``ggml_is_quantized``: block types (F32/F16/BF16/I8.../F64 have blocks of 1)."""
    return _block_size(t) > 1


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the layers, and every
    third layer in between (C integer division; the ``%`` operand is never negative there
    because the first clause already caught ``i_layer < n_layers/8``)."""
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


class _Counters:
    """The running state of ``quantize_state_impl``, local to one plan."""

    def __init__(self, n_attention_wv: int, n_layer: int, tied: bool) -> None:
        self.n_attention_wv = n_attention_wv
        # n_ffn_down/gate/up are all hparams.n_layer_all (the block count).
        self.n_ffn = n_layer
        self.i_attention_wv = 0
        self.i_ffn_down = 0
        self.i_ffn_gate = 0
        self.i_ffn_up = 0
        self.has_tied_embeddings = tied


def _layer_info(i_counter: int, n_layer: int, name: str, n_expert: int) -> tuple[int, int]:
    """``layer_info``: the counter is the layer for dense models; with more than one
    expert (whose FFN tensors need not be consecutive) the layer is parsed from the name."""
    if max(1, n_expert) > 1:
        layer = _layer_of(name)
        if layer is None:
            raise QuantizationError(f"Failed to determine layer for tensor {name}")
        if layer < 0 or layer >= n_layer:
            raise QuantizationError(
                f"Bad layer {layer} for tensor {name}. Must be in [0, {n_layer})"
            )
        return layer, n_layer
    return i_counter, n_layer


def _rule_type(
    spec: TensorSpec,
    cat: _Category,
    new_type: GGMLQuantizationType,
    ft: LlamaFileType,
    hp: ModelHParams,
    qs: _Counters,
) -> GGMLQuantizationType:
    """``llama_tensor_get_type_impl`` for the supported ftypes (no imatrix).

    ``new_type`` is the ftype's default type; the counters in ``qs`` advance exactly where
    llama.cpp's do.
    """
    name = spec.name
    arch = hp.architecture
    is_falcon = arch == "falcon"

    # glm5-next: these projections never go below Q8_0.
    if arch == "glm5-next" and any(s in name for s in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
        if new_type not in (T.F32, T.BF16, T.F16):
            return T.Q8_0

    # Output tensor, and the token embeddings when they double as the output (no
    # output.weight): Q8_0 for falcon or when ne[0] does not fit the default type's
    # block, else Q6_K unless the default is already Q8_0.
    if cat is _Category.OUTPUT or (qs.has_tied_embeddings and cat is _Category.TOKEN_EMBD):
        nx = int(spec.shape[0])
        if is_falcon or nx % _block_size(new_type) != 0:
            return T.Q8_0
        return new_type if new_type == T.Q8_0 else T.Q6_K

    if cat is _Category.TOKEN_EMBD:
        # Untied token embeddings only change for IQ*/TQ* ftypes: default type here.
        return new_type

    if _is_attn_v(cat):
        # attn_v / attn_qkv / attn_kv_b, counted over the model in output order.
        if ft in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q5_K_M) and use_more_bits(
            qs.i_attention_wv, qs.n_attention_wv
        ):
            new_type = T.Q6_K
        elif ft == FT.MOSTLY_Q4_K_S and qs.i_attention_wv < 4:
            new_type = T.Q5_K
        if hp.is_70b and new_type in (T.Q3_K, T.Q4_K):
            # 70B: attn_v is 8x smaller than attn_q (GQA), so more bits are cheap.
            new_type = T.Q5_K
        if hp.n_expert == 8:
            new_type = T.Q8_0
        qs.i_attention_wv += 1
        return new_type

    if cat is _Category.ATTENTION_K:
        return T.Q8_0 if hp.n_expert == 8 else new_type

    if cat is _Category.FFN_DOWN:
        i_layer, n_layer = _layer_info(qs.i_ffn_down, qs.n_ffn, name, hp.n_expert)
        if ft == FT.MOSTLY_Q4_K_M:
            if is_falcon:
                if i_layer < n_layer // 16:
                    new_type = T.Q6_K
                elif use_more_bits(i_layer, n_layer):
                    new_type = T.Q5_K
                else:
                    new_type = T.Q4_K
            elif use_more_bits(i_layer, n_layer):
                new_type = T.Q6_K
        elif ft == FT.MOSTLY_Q5_K_M:
            if use_more_bits(i_layer, n_layer):
                new_type = T.Q6_K
        elif ft == FT.MOSTLY_Q4_K_S and not is_falcon and i_layer < n_layer // 8:
            new_type = T.Q5_K
        # (Q4_0/Q5_0 bump the first eighth to Q4_1/Q5_1 only with an imatrix.)
        qs.i_ffn_down += 1
        return new_type

    if cat is _Category.ATTENTION_OUTPUT:
        if not is_falcon and hp.n_expert == 8 and ft in (FT.MOSTLY_Q4_K_S, FT.MOSTLY_Q4_K_M):
            new_type = T.Q5_K
        return new_type

    # ATTENTION_QKV never gets here (category_is_attn_v caught it above), so the
    # Q5_K/Q6_K rule llama.cpp still has for it is dead code.
    if cat is _Category.FFN_GATE:
        # Only IQ3_XS changes ffn_gate, but layer_info may still reject the name.
        _layer_info(qs.i_ffn_gate, qs.n_ffn, name, hp.n_expert)
        qs.i_ffn_gate += 1
    elif cat is _Category.FFN_UP:
        _layer_info(qs.i_ffn_up, qs.n_ffn, name, hp.n_expert)
        qs.i_ffn_up += 1
    return new_type


# ``tensor_type_fallback``: a 256-block type whose block does not divide ne[0] is
# replaced by a 32-block type of similar quality.
_FALLBACK: dict[GGMLQuantizationType, GGMLQuantizationType] = {
    T.IQ1_S: T.IQ4_NL,
    T.IQ1_M: T.IQ4_NL,
    T.IQ2_XXS: T.IQ4_NL,
    T.IQ2_XS: T.IQ4_NL,
    T.IQ2_S: T.IQ4_NL,
    T.IQ3_XXS: T.IQ4_NL,
    T.IQ3_S: T.IQ4_NL,
    T.IQ4_XS: T.IQ4_NL,
    T.Q2_K: T.Q4_0,
    T.Q3_K: T.Q4_0,
    T.TQ1_0: T.Q4_0,
    T.TQ2_0: T.Q4_0,
    T.Q4_K: T.Q5_0,
    T.Q5_K: T.Q5_1,
    T.Q6_K: T.Q8_0,
}


def _fallback_type(spec: TensorSpec, target: GGMLQuantizationType) -> GGMLQuantizationType:
    """``tensor_type_fallback``: the type to use when ne[0] is not a multiple of the
    target's block size; F16 when even the fallback (or a 32-block target) does not fit.

    In this llama.cpp a Q8_0/Q4_0/... target with ne[0] not a multiple of 32 does not
    abort: it becomes F16 (counted as a fallback).
    """
    ncols = int(spec.shape[0])
    out = _FALLBACK.get(target)
    if out is None:
        if _block_size(target) > 32:
            raise QuantizationError(
                f"no tensor type fallback is defined for type {ggml_type_name(target)}"
                f" (tensor {spec.name})"
            )
        out = target
    if ncols % _block_size(out) != 0:
        out = T.F16
    return out


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------


def plan_quantization(
    tensors: Sequence[TensorSpec],
    hparams: ModelHParams,
    file_type: LlamaFileType,
    *,
    allow_requantize: bool = True,
) -> QuantPlan:
    """Choose every tensor's output type as ``llama_model_quantize`` does.

    Tensors are put in llama.cpp's output order first, since the ``attn_v``/``ffn_*``
    counters follow that order.  ``allow_requantize`` is llama-quantize's
    ``--allow-requantize``, which Ollama always passes (llama.cpp's library default is
    off); without it, converting an already quantized tensor is an error.
    """
    default_type = default_tensor_type(file_type)
    ordered = sorted(tensors, key=lambda t: _order_key(t.name))
    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if prev.name == cur.name:
            raise QuantizationError(f"invalid model: tensor '{cur.name}' is duplicated")

    # init_quantize_state_counters: attn_v-like tensors are counted over all names;
    # embeddings are tied until an output.weight is seen.
    categories = [_category(t.name) for t in ordered]
    qs = _Counters(
        n_attention_wv=sum(1 for c in categories if _is_attn_v(c)),
        n_layer=hparams.n_layer,
        tied=_Category.OUTPUT not in categories,
    )

    # Preliminary loop: llama_tensor_get_type for each tensor, in order.
    choices: list[TensorChoice] = []
    n_fallback = 0
    for spec, cat in zip(ordered, categories, strict=True):
        if not _allows_quantization(spec, hparams.architecture):
            choices.append(TensorChoice(spec.name, spec.source_type, False, False))
            continue
        new_type = default_type
        fallback_from: GGMLQuantizationType | None = None
        # Per-tensor rules and fallbacks apply only for quantized defaults; F16/BF16/F32
        # ftypes convert every quantizable tensor to the default type.
        if _is_quantized(default_type):
            new_type = _rule_type(spec, cat, new_type, file_type, hparams, qs)
            if int(spec.shape[0]) % _block_size(new_type) != 0:
                n_fallback += 1
                fallback_from = new_type
                new_type = _fallback_type(spec, new_type)
        choices.append(
            TensorChoice(
                name=spec.name,
                target_type=new_type,
                quantize=new_type != spec.source_type,
                fallback=fallback_from is not None,
                fallback_from=fallback_from,
            )
        )

    # Main loop checks, in order: what llama.cpp refuses when it converts a tensor.
    for spec, choice in zip(ordered, choices, strict=True):
        if not choice.quantize:
            continue
        src = spec.source_type
        if _is_quantized(src):
            if not allow_requantize:
                raise QuantizationError(
                    f"{spec.name}: requantizing from type {ggml_type_name(src)} is disabled"
                )
        elif src not in (T.F32, T.F16, T.BF16):
            raise QuantizationError(
                f"{spec.name}: cannot dequantize/convert tensor type {ggml_type_name(src)}"
            )

    return QuantPlan(file_type=file_type, choices=tuple(choices), n_fallback=n_fallback)


def fallback_warning(choice: TensorChoice, ncols: int) -> str | None:
    """llama.cpp's warning line for a fallback tensor (None when there was none).

    ``ncols`` is the tensor's ``ne[0]``.  Matches the ``fallback_log`` lines of the
    golden data, without the trailing newline.
    """
    if choice.fallback_from is None:
        return None
    wanted = choice.fallback_from
    line = (
        f"warning: {choice.name:<36} - ncols {ncols:6d} not divisible by "
        f"{_block_size(wanted):3d} (required for type {ggml_type_name(wanted):>7}) "
    )
    if choice.target_type == T.F16:
        line += "(WARNING: must use F16 due to unusual shape) "
    return line + f"-> falling back to {ggml_type_name(choice.target_type):>7}"


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _kv_int(kv: Mapping[str, object], key: str) -> int | None:
    """An integer KV, or the first element of a per-layer array (layer 0); None if absent."""
    value = kv.get(key)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise QuantizationError(f"key {key} has wrong type: expected an integer")
    return int(value)
