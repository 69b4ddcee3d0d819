"""Which type each tensor gets when a model is quantized: llama.cpp's policy, in Python.

This mirrors ``llama_model_quantize`` of the llama.cpp vendored by llama-cpp-python 0.3.36
(``src/llama-quant.cpp``) and the options ``llama-quantize`` passes it: the order tensors
are processed and written in, which tensors are quantized at all, the user's overrides
(``--output-tensor-type``, ``--token-embedding-type``, ``--tensor-type PATTERN=TYPE``,
``--pure``, ``--leave-output-tensor``, ``COPY``), the mixture rules of
:mod:`modelkit.quant.rules`, the block-size fallbacks (counted in ``n_fallback``) and the
refusals: a type that needs an importance matrix without one (checked on each tensor's
final type), a fallback that does not exist, a source llama.cpp cannot convert.

Everything here is pure: no I/O, no module state.  The running counters llama.cpp keeps
in ``quantize_state_impl`` live in a local object created by each :func:`plan_quantization`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from gguf import GGMLQuantizationType, LlamaFileType

from modelkit.errors import ImatrixError, QuantizationError
from modelkit.quant.file_types import (
    FILE_TYPES,
    FileTypeId,
    GGMLType,
    block_size,
    default_tensor_type,
    fallback_type,
    file_type_name,
    ggml_type_name,
    guessed_file_type,
    is_quantized,
    parse_file_type,
    parse_ggml_type,
    requires_imatrix,
)
from modelkit.quant.rules import (
    Category,
    Counters,
    ModelHParams,
    RuleInput,
    allows_quantization,
    category,
    is_attn_v,
    order_key,
    output_order,
    rule_type,
    use_more_bits,
)

__all__ = [
    "FILE_TYPES",
    "ImatrixRequiredError",
    "ModelHParams",
    "QuantOptions",
    "QuantPlan",
    "TensorChoice",
    "TensorSpec",
    "TensorTypeOverride",
    "copy_file_type",
    "default_tensor_type",
    "fallback_warning",
    "file_type_name",
    "ggml_type_name",
    "output_order",
    "override_warning",
    "parse_file_type",
    "parse_tensor_type_option",
    "plan_quantization",
    "use_more_bits",
]

T = GGMLQuantizationType
FT = LlamaFileType


# --------------------------------------------------------------------------------------
# Inputs and results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """What the policy needs to know of one source tensor.

    ``shape`` is in GGUF order, ``ne[0]`` (the row length) first.
    """

    name: str
    shape: tuple[int, ...]
    source_type: GGMLType


@dataclass(frozen=True)
class TensorTypeOverride:
    """One ``--tensor-type PATTERN=TYPE``: ``pattern`` is searched in the tensor name
    (C++ ``std::regex_search``; the first matching option wins)."""

    pattern: str
    type: GGMLType
    regex: re.Pattern[str] = field(compare=False, repr=False)


# ECMAScript (std::regex) has none of these Python-only constructs; refuse rather than
# give them a meaning llama.cpp does not.
_PYTHON_ONLY = re.compile(r"\(\?P|\(\?<[=!]|\(\?[aiLmsux#]|\\[AZ]")


def parse_tensor_type_option(text: str) -> TensorTypeOverride:
    """``PATTERN=TYPE`` as llama-quantize's ``--tensor-type`` takes it: the pattern is
    lower-cased, TYPE is any ggml type name (case-insensitive).  A malformed option, an
    unknown type or an invalid regular expression raises :class:`QuantizationError`."""
    name, sep, type_text = text.partition("=")
    if not sep:
        raise QuantizationError(f"malformed tensor type '{text}': expected PATTERN=TYPE")
    if not name:
        raise QuantizationError(f"missing tensor name in tensor type '{text}'")
    if not type_text:
        raise QuantizationError(f"missing quantization type in tensor type '{text}'")
    pattern = name.lower()
    try:
        if _PYTHON_ONLY.search(pattern):
            raise re.error("syntax not in C++ std::regex")
        regex = re.compile(pattern)
    except re.error as exc:
        raise QuantizationError(f"invalid regular expression '{name}' in tensor type "
                                f"'{text}': {exc}") from None
    try:
        qtype = parse_ggml_type(type_text)
    except QuantizationError:
        raise QuantizationError(f"invalid quantization type '{type_text}' in tensor type "
                                f"'{text}'") from None
    return TensorTypeOverride(pattern, qtype, regex)


@dataclass(frozen=True)
class QuantOptions:
    """``llama_model_quantize_params`` as llama-quantize's options set them.

    ``has_imatrix``: importance data is given (changes some rules and lifts the
    requires-imatrix refusal); ``quantize_output``: False for ``--leave-output-tensor``;
    ``only_copy``: ``COPY``; ``allow_requantize``: modelkit requantizes by default (the
    caller warns), llama.cpp's library default is off.
    """

    has_imatrix: bool = False
    pure: bool = False
    quantize_output: bool = True
    output_tensor_type: GGMLType | None = None
    token_embedding_type: GGMLType | None = None
    tensor_types: tuple[TensorTypeOverride, ...] = ()
    only_copy: bool = False
    allow_requantize: bool = True


@dataclass(frozen=True)
class TensorChoice:
    """The decision for one tensor.

    ``target_type`` equals the source type when the tensor is copied unchanged;
    ``quantize`` is False exactly then (an F32 tensor whose target is F16 is converted).
    ``fallback_from`` is the type the rules wanted when llama.cpp counted a shape
    fallback; ``override_from`` the type a ``--tensor-type`` match replaced (only when
    it changed the type, as llama.cpp logs it); ``requires_imatrix`` as
    ``tensor_requires_imatrix`` of the final type.
    """

    name: str
    target_type: GGMLType
    quantize: bool
    fallback: bool
    fallback_from: GGMLType | None = None
    override_from: GGMLType | None = None
    requires_imatrix: bool = False


@dataclass(frozen=True)
class QuantPlan:
    """Every tensor's choice, in llama.cpp's output order, and the fallback count.
    ``file_type`` is what ``general.file_type`` gets."""

    file_type: int
    choices: tuple[TensorChoice, ...]
    n_fallback: int


class ImatrixRequiredError(ImatrixError):
    """A tensor whose final type cannot be made without an importance matrix."""

    def __init__(self, tensor: str, qtype: GGMLType) -> None:
        self.tensor = tensor
        self.qtype = qtype
        super().__init__(
            f"tensor {tensor}: type {ggml_type_name(qtype)} requires an importance matrix; "
            "compute one with llama-imatrix and pass it with --imatrix FILE")


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------


def _override(name: str, options: QuantOptions) -> GGMLType | None:
    for o in options.tensor_types:
        if o.regex.search(name):
            return o.type
    return None


def _tensor_type(spec: TensorSpec, cat: Category, default_type: GGMLType,
                 ftype: FileTypeId, hp: ModelHParams, qs: Counters,
                 options: QuantOptions) -> tuple[GGMLType, GGMLType | None, GGMLType | None]:
    """``llama_tensor_get_type`` for a tensor that may be quantized: (type, the type a
    shape fallback replaced, the type a manual override replaced)."""
    if options.token_embedding_type is not None and cat is Category.TOKEN_EMBD:
        # per_layer_token_embd may instead be named by a --tensor-type pattern.
        if spec.name != "per_layer_token_embd.weight" or _override(spec.name, options) is None:
            return options.token_embedding_type, None, None
    if options.output_tensor_type is not None and cat is Category.OUTPUT:
        return options.output_tensor_type, None, None
    new_type = default_type
    if not is_quantized(default_type):
        return new_type, None, None
    manual = _override(spec.name, options)
    overridden = None
    if manual is not None:
        if manual != new_type:
            overridden = new_type
        new_type = manual
    elif not options.pure:
        new_type = rule_type(
            RuleInput(spec.name, spec.shape, cat), new_type, ftype, hp, qs,
            has_imatrix=options.has_imatrix, output_tensor_type=options.output_tensor_type,
            token_embedding_type=options.token_embedding_type)
    ncols = int(spec.shape[0])
    if ncols % block_size(new_type) == 0:
        return new_type, None, overridden
    try:
        return fallback_type(new_type, ncols), new_type, overridden
    except QuantizationError as exc:
        raise QuantizationError(f"tensor {spec.name} (ne0 = {ncols}): {exc}") from None


def plan_quantization(
    tensors: Sequence[TensorSpec],
    hparams: ModelHParams,
    file_type: FileTypeId,
    options: QuantOptions | None = None,
    *,
    source_file_type: int | None = None,
    allow_requantize: bool | None = None,
) -> QuantPlan:
    """Choose every tensor's output type as ``llama_model_quantize`` does.

    Tensors are put in llama.cpp's output order first, since the ``attn_v``/``ffn_*``
    counters follow that order.  ``source_file_type`` is the source's
    ``general.file_type`` (only ``COPY`` writes it; see :func:`copy_file_type`).
    ``allow_requantize``, when given, replaces ``options.allow_requantize``.
    """
    options = options or QuantOptions()
    if allow_requantize is not None:
        options = QuantOptions(**{**options.__dict__, "allow_requantize": allow_requantize})
    default_type = default_tensor_type(file_type)
    ordered = sorted(tensors, key=lambda t: order_key(t.name))
    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if prev.name == cur.name:
            raise QuantizationError(f"invalid model: tensor '{cur.name}' is duplicated")

    # init_quantize_state_counters: attn_v-like tensors are counted over all names;
    # embeddings are tied until an output.weight is seen.
    categories = [category(t.name) for t in ordered]
    qs = Counters(
        n_attention_wv=sum(1 for c in categories if is_attn_v(c)),
        n_layer=hparams.n_layer,
        tied=Category.OUTPUT not in categories,
    )
    written_ftype = int(file_type)
    if options.only_copy:
        written_ftype = copy_file_type(source_file_type, ordered)

    # Preliminary loop: llama_tensor_get_type for each tensor, in order.
    choices: list[TensorChoice] = []
    n_fallback = 0
    for spec, cat in zip(ordered, categories, strict=True):
        allowed = (not options.only_copy
                   and (options.quantize_output or spec.name != "output.weight")
                   and allows_quantization(spec.name, spec.shape, hparams.architecture))
        if not allowed:
            choices.append(TensorChoice(spec.name, spec.source_type, False, False))
            continue
        new_type, fallback_from, override_from = _tensor_type(
            spec, cat, default_type, file_type, hparams, qs, options)
        n_fallback += fallback_from is not None
        needs = requires_imatrix(spec.name, new_type, file_type)
        if needs and not options.has_imatrix:
            raise ImatrixRequiredError(spec.name, new_type)
        choices.append(TensorChoice(
            name=spec.name, target_type=new_type, quantize=new_type != spec.source_type,
            fallback=fallback_from is not None, fallback_from=fallback_from,
            override_from=override_from, requires_imatrix=needs))

    # Main loop checks, in order: what llama.cpp refuses when it converts a tensor.
    for spec, choice in zip(ordered, choices, strict=True):
        if not choice.quantize:
            continue
        src = spec.source_type
        if is_quantized(src):
            if not options.allow_requantize:
                raise QuantizationError(
                    f"{spec.name}: requantizing from type {ggml_type_name(src)} is disabled")
        elif src not in (T.F32, T.F16, T.BF16):
            raise QuantizationError(
                f"{spec.name}: cannot dequantize/convert tensor type {ggml_type_name(src)}")

    return QuantPlan(file_type=written_ftype, choices=tuple(choices), n_fallback=n_fallback)




def copy_file_type(kv_file_type: int | None, ordered: Sequence[TensorSpec]) -> int:
    """The ``general.file_type`` ``COPY`` writes: the source's, or, when it has none,
    llama.cpp's guess from the most common tensor type (first to reach the maximum in
    output order) with the "guessed" bit 1024 set."""
    if kv_file_type is not None:
        return int(kv_file_type)
    counts: dict[int, int] = {}
    best, best_n = int(T.F32), 0
    for spec in ordered:
        n = counts[int(spec.source_type)] = counts.get(int(spec.source_type), 0) + 1
        if n > best_n:
            best, best_n = int(spec.source_type), n
    return guessed_file_type(best)


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
        f"{block_size(wanted):3d} (required for type {ggml_type_name(wanted):>7}) "
    )
    if choice.target_type == T.F16:
        line += "(WARNING: must use F16 due to unusual shape) "
    return line + f"-> falling back to {ggml_type_name(choice.target_type):>7}"


def override_warning(choice: TensorChoice) -> str | None:
    """llama.cpp's line for a ``--tensor-type`` override that changed a type."""
    if choice.override_from is None:
        return None
    manual = choice.fallback_from or choice.target_type  # logged before the shape fallback
    return (f"{choice.name:<36} - applying manual override: "
            f"{ggml_type_name(choice.override_from)} -> {ggml_type_name(manual)}")

