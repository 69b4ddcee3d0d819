"""llama.cpp's mixture rules: which type each tensor category gets for each file type.

``llama_tensor_get_type_impl`` of ``src/llama-quant.cpp`` (llama.cpp as vendored by
llama-cpp-python 0.3.36), with the helpers it relies on: the tensor order
(``weight_name_comparer``), the broad categories (``tensor_get_category``), the
tensors never quantized (``tensor_allows_quantization``), ``use_more_bits``, the running
counters of ``quantize_state_impl`` and the hyper-parameters the rules read.  Pure: the
counters live in a :class:`Counters` object owned by one plan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from numbers import Integral

from gguf import GGMLQuantizationType, LlamaFileType

from modelkit.errors import QuantizationError
from modelkit.quant.file_types import ExtraFileType, FileTypeId, GGMLType, block_size

__all__ = [
    "Category",
    "Counters",
    "ModelHParams",
    "allows_quantization",
    "category",
    "is_attn_v",
    "layer_of",
    "order_key",
    "output_order",
    "RuleInput",
    "layer_info",
    "rule_type",
    "use_more_bits",
]

T = GGMLQuantizationType
FT = LlamaFileType


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


# --------------------------------------------------------------------------------------
# Tensor order
# --------------------------------------------------------------------------------------

# sscanf(name, "blk.%d.", &layer): "%d" skips C whitespace and takes an optional sign;
# the trailing "." of the format does not affect the result.
_BLK_RE = re.compile(r"blk\.[ \t\n\v\f\r]*([+-]?[0-9]+)")


def layer_of(name: str) -> int | None:
    m = _BLK_RE.match(name)
    return int(m.group(1)) if m else None


def order_key(name: str) -> tuple[int, str]:
    """``llama_model_loader::weight_name_comparer``: layer number (-1 outside ``blk.``),
    then the name as a byte string (code-point order is UTF-8 byte order)."""
    layer = layer_of(name)
    return (-1 if layer is None else layer, name)


def output_order(names: Iterable[str]) -> list[str]:
    """Tensor names in the order llama.cpp processes and writes them.

    ``weights_map`` is a ``std::map`` sorted by (layer, name), so non-``blk.`` tensors come
    first; this order also drives the ``attn_v`` and ``ffn_*`` counters.
    """
    return sorted(names, key=order_key)


# --------------------------------------------------------------------------------------
# Categories and the tensors never quantized
# --------------------------------------------------------------------------------------


class Category(Enum):
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
_CATEGORY_SUBSTRINGS: tuple[tuple[str, Category], ...] = (
    ("attn_qkv.weight", Category.ATTENTION_QKV),
    ("attn_kv_b.weight", Category.ATTENTION_KV_B),
    ("attn_v.weight", Category.ATTENTION_V),
    ("attn_k.weight", Category.ATTENTION_K),
    ("attn_q.weight", Category.ATTENTION_Q),
    ("attn_output.weight", Category.ATTENTION_OUTPUT),
    ("ffn_up", Category.FFN_UP),
    ("ffn_gate", Category.FFN_GATE),
    ("ffn_down", Category.FFN_DOWN),
)


def category(name: str) -> Category:
    """``tensor_get_category``: exact names for output/token embeddings, else substrings."""
    if name == "output.weight":
        return Category.OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return Category.TOKEN_EMBD
    for needle, cat in _CATEGORY_SUBSTRINGS:
        if needle in name:
            return cat
    return Category.OTHER


def is_attn_v(cat: Category) -> bool:
    """``category_is_attn_v``: attn_v, fused attn_qkv and MLA attn_kv_b share the rules."""
    return cat in (Category.ATTENTION_V, Category.ATTENTION_QKV, Category.ATTENTION_KV_B)


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


def allows_quantization(name: str, shape: Sequence[int], arch: str) -> bool:
    """``tensor_allows_quantization``: 2-D/3-D tensors named ``*weight``, minus a list of
    small or sensitive tensors that are copied unchanged."""
    if _n_dims(shape) < 2:
        return False
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


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth of the layers, and every
    third layer in between (C integer division; the ``%`` operand is never negative there
    because the first clause already caught ``i_layer < n_layers/8``)."""
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


class Counters:
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


def layer_info(i_counter: int, n_layer: int, name: str, n_expert: int) -> tuple[int, int]:
    """``layer_info``: the counter is the layer for dense models; with more than one
    expert (whose FFN tensors need not be consecutive) the layer is parsed from the name."""
    if max(1, n_expert) > 1:
        layer = layer_of(name)
        if layer is None:
            raise QuantizationError(f"Failed to determine layer for tensor {name}")
        if layer < 0 or layer >= n_layer:
            raise QuantizationError(
                f"Bad layer {layer} for tensor {name}. Must be in [0, {n_layer})"
            )
        return layer, n_layer
    return i_counter, n_layer


# --------------------------------------------------------------------------------------
# llama_tensor_get_type_impl
# --------------------------------------------------------------------------------------

# File types whose output tensor gets Q5_K, and the low-bit i-quant families.
_IQ1_IQ2 = frozenset({FT.MOSTLY_IQ2_XXS, FT.MOSTLY_IQ2_XS, FT.MOSTLY_IQ1_S, FT.MOSTLY_IQ2_S,
                      FT.MOSTLY_IQ2_M, FT.MOSTLY_IQ1_M})
_OUTPUT_Q5_K = _IQ1_IQ2 | {FT.MOSTLY_IQ3_XXS}
_IQ2_S_M = frozenset({FT.MOSTLY_IQ2_S, FT.MOSTLY_IQ2_M})
# attn_output of an 8-expert model: Q5_K for these.
_MOE8_ATTN_OUTPUT_Q5_K = frozenset({
    FT.MOSTLY_Q2_K, FT.MOSTLY_IQ3_XS, FT.MOSTLY_IQ3_XXS, FT.MOSTLY_Q3_K_S, FT.MOSTLY_Q3_K_M,
    FT.MOSTLY_IQ4_NL, FT.MOSTLY_Q4_K_S, FT.MOSTLY_Q4_K_M, FT.MOSTLY_IQ3_S, FT.MOSTLY_IQ3_M,
    FT.MOSTLY_IQ4_XS})
# attn_output of other models (not falcon).
_ATTN_OUTPUT: dict[int, GGMLType] = {
    FT.MOSTLY_Q2_K: T.Q3_K, FT.MOSTLY_IQ3_XXS: T.IQ3_S, FT.MOSTLY_Q3_K_M: T.Q4_K,
    FT.MOSTLY_Q3_K_L: T.Q5_K, FT.MOSTLY_IQ3_M: T.Q4_K}
# Untied token embeddings.
_TOKEN_EMBD: dict[int, GGMLType] = {
    FT.MOSTLY_IQ2_XXS: T.Q2_K, FT.MOSTLY_IQ2_XS: T.Q2_K, FT.MOSTLY_IQ1_S: T.Q2_K,
    FT.MOSTLY_IQ1_M: T.Q2_K, FT.MOSTLY_IQ2_S: T.IQ3_S, FT.MOSTLY_IQ2_M: T.IQ3_S,
    FT.MOSTLY_IQ3_XXS: T.IQ3_S, FT.MOSTLY_TQ1_0: T.Q4_K, FT.MOSTLY_TQ2_0: T.Q4_K,
    ExtraFileType.MOSTLY_Q2_0: T.Q4_K}


@dataclass(frozen=True)
class RuleInput:
    """One tensor as the rules see it."""

    name: str
    shape: tuple[int, ...]
    category: Category


def rule_type(t: RuleInput, new_type: GGMLType, ftype: FileTypeId, hp: ModelHParams,
              qs: Counters, *, has_imatrix: bool = False,
              output_tensor_type: GGMLType | None = None,
              token_embedding_type: GGMLType | None = None) -> GGMLType:
    """``llama_tensor_get_type_impl``: the type of one tensor under the mixture rules of
    ``ftype``, starting from the default type ``new_type``.  The counters in ``qs``
    advance exactly where llama.cpp's do (the caller runs tensors in output order)."""
    name, cat, arch = t.name, t.category, hp.architecture
    if arch == "glm5-next" and any(s in name for s in ("attn_q_a", "attn_q_b", "nextn.eh_proj")):
        if new_type not in (T.F32, T.BF16, T.F16):
            return T.Q8_0
    if cat is Category.OUTPUT or (qs.has_tied_embeddings and cat is Category.TOKEN_EMBD):
        if output_tensor_type is not None:
            return output_tensor_type
        if ftype == FT.MOSTLY_MXFP4_MOE:
            return T.Q8_0
        if arch == "falcon" or int(t.shape[0]) % block_size(new_type) != 0:
            return T.Q8_0
        if ftype in _OUTPUT_Q5_K:
            return T.Q5_K
        return new_type if new_type == T.Q8_0 else T.Q6_K
    if ftype == FT.MOSTLY_MXFP4_MOE:
        # Expert tensors (3-D) MXFP4, everything else Q8_0.
        moe_role = cat in (Category.FFN_UP, Category.FFN_GATE, Category.FFN_DOWN)
        is_expert = len(t.shape) > 2 and int(t.shape[2]) > 1
        return T.MXFP4 if is_expert and (arch != "bailingmoe3" or moe_role) else T.Q8_0
    if cat is Category.TOKEN_EMBD:
        if token_embedding_type is not None:
            return token_embedding_type
        return _TOKEN_EMBD.get(int(ftype), new_type)
    if ftype in _IQ1_IQ2:
        return _iq1_iq2_rule(t, new_type, ftype, hp, qs)
    if is_attn_v(cat):
        return _attn_v_rule(new_type, ftype, hp, qs, has_imatrix)
    if cat is Category.ATTENTION_K or cat is Category.ATTENTION_Q:
        if cat is Category.ATTENTION_K and hp.n_expert == 8:
            return T.Q8_0
        if ftype == FT.MOSTLY_IQ3_XS:
            return T.IQ3_XXS
        return T.IQ2_S if ftype == FT.MOSTLY_IQ3_XXS else new_type
    if cat is Category.FFN_DOWN:
        i_layer, n_layer = layer_info(qs.i_ffn_down, qs.n_ffn, name, hp.n_expert)
        new_type = _ffn_down_rule(i_layer, n_layer, new_type, ftype, hp, has_imatrix)
        qs.i_ffn_down += 1
        return new_type
    if cat is Category.ATTENTION_OUTPUT:
        if arch == "falcon":
            return T.Q4_K if ftype == FT.MOSTLY_Q3_K_L else new_type
        if hp.n_expert == 8:
            return T.Q5_K if ftype in _MOE8_ATTN_OUTPUT_Q5_K else new_type
        return _ATTN_OUTPUT.get(int(ftype), new_type)
    # (ATTENTION_QKV never gets here: is_attn_v caught it above.)
    if cat is Category.FFN_GATE or cat is Category.FFN_UP:
        gate = cat is Category.FFN_GATE
        counter = qs.i_ffn_gate if gate else qs.i_ffn_up
        i_layer, n_layer = layer_info(counter, qs.n_ffn, name, hp.n_expert)
        if ftype == FT.MOSTLY_IQ3_XS and n_layer // 8 <= i_layer < 7 * n_layer // 8:
            new_type = T.IQ3_XXS
        if gate:
            qs.i_ffn_gate += 1
        else:
            qs.i_ffn_up += 1
    return new_type


def _iq1_iq2_rule(t: RuleInput, new_type: GGMLType, ftype: FileTypeId, hp: ModelHParams,
                  qs: Counters) -> GGMLType:
    """The IQ1_S/IQ1_M/IQ2_* branch (token embeddings and output handled before)."""
    cat = t.category
    low = T.IQ3_S if ftype in _IQ2_S_M else T.Q2_K
    if is_attn_v(cat):
        qs.i_attention_wv += 1
        return T.Q4_K if hp.n_gqa >= 4 or hp.n_expert >= 4 else low
    if hp.n_expert == 8 and cat is Category.ATTENTION_K:
        return T.Q4_K
    if cat is Category.FFN_DOWN:
        if qs.i_ffn_down < qs.n_ffn // 8:
            new_type = low
        qs.i_ffn_down += 1
        return new_type
    if cat is Category.ATTENTION_OUTPUT:
        if hp.n_expert == 8:
            return T.Q5_K
        if ftype in (FT.MOSTLY_IQ1_S, FT.MOSTLY_IQ1_M):
            return T.IQ2_XXS
        return T.IQ3_S if ftype in _IQ2_S_M else new_type
    return new_type


def _attn_v_rule(new_type: GGMLType, ftype: FileTypeId, hp: ModelHParams, qs: Counters,
                 has_imatrix: bool) -> GGMLType:
    """attn_v, fused attn_qkv and MLA attn_kv_b (``category_is_attn_v``)."""
    gqa4 = hp.n_gqa >= 4
    if ftype == FT.MOSTLY_Q2_K:
        new_type = T.Q4_K if gqa4 else T.Q3_K
    elif ftype == FT.MOSTLY_Q2_K_S and gqa4:
        new_type = T.Q4_K
    elif ftype == FT.MOSTLY_IQ3_XXS:
        new_type = T.Q4_K if gqa4 else (T.IQ3_XXS if has_imatrix else T.IQ3_S)
    elif ftype in (FT.MOSTLY_IQ3_XS, FT.MOSTLY_IQ3_S) and gqa4:
        new_type = T.Q4_K
    elif ftype == FT.MOSTLY_IQ3_M:
        new_type = T.Q4_K
    elif ftype == FT.MOSTLY_Q3_K_M:
        new_type = T.Q5_K if qs.i_attention_wv < 2 else T.Q4_K
    elif ftype == FT.MOSTLY_Q3_K_L:
        new_type = T.Q5_K
    elif ftype in (FT.MOSTLY_IQ4_NL, FT.MOSTLY_IQ4_XS) and gqa4:
        new_type = T.Q5_K
    elif ftype in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q5_K_M) and use_more_bits(
            qs.i_attention_wv, qs.n_attention_wv):
        new_type = T.Q6_K
    elif ftype == FT.MOSTLY_Q4_K_S and qs.i_attention_wv < 4:
        new_type = T.Q5_K
    if hp.is_70b and new_type in (T.Q3_K, T.Q4_K):
        # 70B: attn_v is 8x smaller than attn_q (GQA), so more bits are cheap.
        new_type = T.Q5_K
    if hp.n_expert == 8:
        new_type = T.Q8_0
    qs.i_attention_wv += 1
    return new_type


def _ffn_down_rule(i_layer: int, n_layer: int, new_type: GGMLType, ftype: FileTypeId,
                   hp: ModelHParams, has_imatrix: bool) -> GGMLType:
    falcon = hp.architecture == "falcon"
    more = use_more_bits(i_layer, n_layer)
    first_eighth = i_layer < n_layer // 8
    if ftype == FT.MOSTLY_Q2_K:
        return T.Q3_K
    if ftype == FT.MOSTLY_Q2_K_S:
        return T.Q4_K if first_eighth else new_type
    if ftype == FT.MOSTLY_IQ3_XXS and not has_imatrix:
        return T.Q4_K if first_eighth else T.Q3_K
    if ftype == FT.MOSTLY_Q3_K_M:
        if i_layer < n_layer // 16:
            return T.Q5_K
        return T.Q4_K if not falcon or more else T.Q3_K
    if ftype == FT.MOSTLY_IQ3_M and (first_eighth or (hp.n_expert == 8 and more)):
        return T.Q4_K
    if ftype == FT.MOSTLY_Q3_K_L:
        return T.Q4_K if falcon else T.Q5_K
    if ftype == FT.MOSTLY_Q4_K_M:
        if falcon:
            if i_layer < n_layer // 16:
                return T.Q6_K
            return T.Q5_K if more else T.Q4_K
        return T.Q6_K if more else new_type
    if first_eighth and ftype in (FT.MOSTLY_IQ4_NL, FT.MOSTLY_IQ4_XS) and not has_imatrix:
        return T.Q5_K
    if ftype == FT.MOSTLY_Q5_K_M and more:
        return T.Q6_K
    if ftype == FT.MOSTLY_Q4_K_S and not falcon and first_eighth:
        return T.Q5_K
    if ftype in (FT.MOSTLY_Q4_0, FT.MOSTLY_Q5_0) and has_imatrix and first_eighth:
        # Q4_1/Q5_1 "go crazy" on ffn_down without an imatrix: only with one.
        return T.Q4_1 if ftype == FT.MOSTLY_Q4_0 else T.Q5_1
    return new_type


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
