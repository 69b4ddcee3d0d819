"""File types (llama-quantize's menu) and block types: names, sizes, predicates.

The one home for what a quantization name means: the ``llama_ftype`` numbers and the
names ``llama-quantize`` accepts (``tools/quantize/quantize.cpp``'s ``QUANT_OPTIONS``,
in its order, with its descriptions), each file type's default tensor type
(``llama_ftype_get_default_type``), ggml's spelling of tensor types
(``ggml_type_name``), block sizes, the shape fallbacks (``tensor_type_fallback``) and
which types need an importance matrix (``tensor_requires_imatrix``).

gguf 0.19 predates ggml type 42 (``Q2_0``) and ``llama_ftype`` 41 (``MOSTLY_Q2_0``):
:class:`ExtraType` and :class:`ExtraFileType` hold them, and :func:`block_size` /
:func:`type_size` know Q2_0's block (64 elements, 18 bytes).  Every other size comes
from ``gguf.constants.GGML_QUANT_SIZES``.  Nothing here patches gguf.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import IntEnum

from gguf import GGMLQuantizationType, LlamaFileType
from gguf.constants import GGML_QUANT_SIZES

from modelkit.errors import QuantizationError, UnknownQuantTypeError

__all__ = [
    "FILE_TYPES",
    "ExtraFileType",
    "ExtraType",
    "FileTypeId",
    "GGMLType",
    "QuantName",
    "UnknownQuantTypeError",
    "block_size",
    "default_tensor_type",
    "fallback_type",
    "file_type_from_id",
    "file_type_name",
    "ggml_type_from_id",
    "ggml_type_name",
    "guessed_file_type",
    "is_quantized",
    "menu_lines",
    "parse_file_type",
    "parse_ggml_type",
    "parse_quant_name",
    "requires_imatrix",
    "row_bytes",
    "type_size",
]

T = GGMLQuantizationType
FT = LlamaFileType


class ExtraType(IntEnum):
    """ggml tensor types that gguf 0.19's ``GGMLQuantizationType`` does not have."""

    Q2_0 = 42


class ExtraFileType(IntEnum):
    """``llama_ftype`` values that gguf 0.19's ``LlamaFileType`` does not have."""

    MOSTLY_Q2_0 = 41


GGMLType = GGMLQuantizationType | ExtraType
FileTypeId = LlamaFileType | ExtraFileType

# (elements per block, bytes per block) of the types gguf does not know.
_EXTRA_SIZES: dict[int, tuple[int, int]] = {ExtraType.Q2_0: (64, 18)}


# --------------------------------------------------------------------------------------
# Tensor types
# --------------------------------------------------------------------------------------


def _sizes(t: int) -> tuple[int, int]:
    if t in _EXTRA_SIZES:
        return _EXTRA_SIZES[t]
    return GGML_QUANT_SIZES[GGMLQuantizationType(t)]


# Every tensor type a GGUF may hold, by ggml id: gguf's with a known block size, and ours.
_BY_ID: dict[int, GGMLType] = {
    **{int(t): t for t in GGMLQuantizationType if t in GGML_QUANT_SIZES},
    **{int(t): t for t in ExtraType}}


def ggml_type_from_id(value: int) -> GGMLType | None:
    """The tensor type whose ggml id (``ggml_type``) is ``value``; None for an id that
    neither gguf nor modelkit knows the block of."""
    return _BY_ID.get(value)


def block_size(t: GGMLType) -> int:
    """Elements per block (``ggml_blck_size``): 1 for F32/F16/BF16 and the integer types."""
    return _sizes(t)[0]


def type_size(t: GGMLType) -> int:
    """Bytes per block (``ggml_type_size``)."""
    return _sizes(t)[1]


def row_bytes(t: GGMLType, n_per_row: int) -> int:
    """``ggml_row_size``: bytes of ``n_per_row`` elements (a multiple of the block)."""
    block, size = _sizes(t)
    return n_per_row // block * size


def type_bits_per_weight(t: GGMLType) -> float:
    """Bits per element of a tensor of type ``t`` (``ggml_type_size * 8 / ggml_blck_size``)."""
    block, size = _sizes(t)
    return size * 8 / block


def is_quantized(t: GGMLType) -> bool:
    """``ggml_is_quantized``: a block type."""
    return block_size(t) > 1


def ggml_type_name(t: GGMLType) -> str:
    """ggml's own spelling of a type (``ggml_type_name``): ``q4_K``, ``iq2_xxs``, ``f16``."""
    name = t.name.lower()
    return name[:-2] + "_K" if name.endswith("_k") else name


_ALL_TYPES: tuple[GGMLType, ...] = (*GGMLQuantizationType, *ExtraType)


def parse_ggml_type(text: str) -> GGMLType:
    """A tensor type named as ggml names it, case-insensitively (``q5_k``, ``IQ4_NL``,
    ``f16``), as llama-quantize's ``--tensor-type``/``--output-tensor-type`` take it."""
    wanted = text.lower()
    for t in _ALL_TYPES:
        if ggml_type_name(t).lower() == wanted:
            return t
    raise QuantizationError(f"invalid ggml_type '{text}'")


# ``tensor_type_fallback``: the type to use when ne[0] is not a multiple of the block.
_FALLBACK: dict[int, GGMLType] = {
    T.IQ1_S: T.IQ4_NL,
    T.IQ1_M: T.IQ4_NL,
    T.IQ2_XXS: T.IQ4_NL,
    T.IQ2_XS: T.IQ4_NL,
    T.IQ2_S: T.IQ4_NL,
    T.IQ3_XXS: T.IQ4_NL,
    T.IQ3_S: T.IQ4_NL,
    T.IQ4_XS: T.IQ4_NL,
    ExtraType.Q2_0: T.Q4_0,
    T.Q2_K: T.Q4_0,
    T.Q3_K: T.Q4_0,
    T.TQ1_0: T.Q4_0,
    T.TQ2_0: T.Q4_0,
    T.Q4_K: T.Q5_0,
    T.Q5_K: T.Q5_1,
    T.Q6_K: T.Q8_0,
}


def fallback_type(target: GGMLType, ncols: int) -> GGMLType:
    """``tensor_type_fallback`` for a row of ``ncols`` elements that ``target``'s block
    does not divide: a type with a smaller block, or F16 when even that does not fit (a
    type of 32 or fewer elements per block goes straight to F16).  A larger block with
    no fallback (Q1_0, NVFP4) is an error, as in llama.cpp."""
    out = _FALLBACK.get(target)
    if out is None:
        if block_size(target) > 32:
            raise QuantizationError(
                f"no tensor type fallback is defined for type {ggml_type_name(target)}")
        out = target
    return T.F16 if ncols % block_size(out) else out


_NEEDS_IMATRIX = frozenset({T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S})


def requires_imatrix(name: str, t: GGMLType, ftype: FileTypeId) -> bool:
    """``tensor_requires_imatrix``: the very low-bit types, and Q2_K inside a Q2_K_S
    file; never the output tensor or the token embeddings."""
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    if t == T.Q2_K:
        return ftype == FT.MOSTLY_Q2_K_S
    return t in _NEEDS_IMATRIX


# --------------------------------------------------------------------------------------
# File types: llama-quantize's menu
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Option:
    name: str  # as llama-quantize spells it
    ftype: FileTypeId
    description: str
    alias: bool = False


# QUANT_OPTIONS of tools/quantize/quantize.cpp, in its order (COPY last, as there).
_OPTIONS: tuple[_Option, ...] = (
    _Option("Q1_0", FT.MOSTLY_Q1_0, " 1.125 bpw quantization"),
    _Option("Q2_0", ExtraFileType.MOSTLY_Q2_0, " 2.25 bpw quantization (group 64)"),
    _Option("Q4_0", FT.MOSTLY_Q4_0, " 4.34G, +0.4685 ppl @ Llama-3-8B"),
    _Option("Q4_1", FT.MOSTLY_Q4_1, " 4.78G, +0.4511 ppl @ Llama-3-8B"),
    _Option("MXFP4_MOE", FT.MOSTLY_MXFP4_MOE, " MXFP4 MoE"),
    _Option("Q5_0", FT.MOSTLY_Q5_0, " 5.21G, +0.1316 ppl @ Llama-3-8B"),
    _Option("Q5_1", FT.MOSTLY_Q5_1, " 5.65G, +0.1062 ppl @ Llama-3-8B"),
    _Option("IQ2_XXS", FT.MOSTLY_IQ2_XXS, " 2.06 bpw quantization"),
    _Option("IQ2_XS", FT.MOSTLY_IQ2_XS, " 2.31 bpw quantization"),
    _Option("IQ2_S", FT.MOSTLY_IQ2_S, " 2.5  bpw quantization"),
    _Option("IQ2_M", FT.MOSTLY_IQ2_M, " 2.7  bpw quantization"),
    _Option("IQ1_S", FT.MOSTLY_IQ1_S, " 1.56 bpw quantization"),
    _Option("IQ1_M", FT.MOSTLY_IQ1_M, " 1.75 bpw quantization"),
    _Option("TQ1_0", FT.MOSTLY_TQ1_0, " 1.69 bpw ternarization"),
    _Option("TQ2_0", FT.MOSTLY_TQ2_0, " 2.06 bpw ternarization"),
    _Option("Q2_K", FT.MOSTLY_Q2_K, " 2.96G, +3.5199 ppl @ Llama-3-8B"),
    _Option("Q2_K_S", FT.MOSTLY_Q2_K_S, " 2.96G, +3.1836 ppl @ Llama-3-8B"),
    _Option("IQ3_XXS", FT.MOSTLY_IQ3_XXS, " 3.06 bpw quantization"),
    _Option("IQ3_S", FT.MOSTLY_IQ3_S, " 3.44 bpw quantization"),
    _Option("IQ3_M", FT.MOSTLY_IQ3_M, " 3.66 bpw quantization mix"),
    _Option("Q3_K", FT.MOSTLY_Q3_K_M, "alias for Q3_K_M", alias=True),
    _Option("IQ3_XS", FT.MOSTLY_IQ3_XS, " 3.3 bpw quantization"),
    _Option("Q3_K_S", FT.MOSTLY_Q3_K_S, " 3.41G, +1.6321 ppl @ Llama-3-8B"),
    _Option("Q3_K_M", FT.MOSTLY_Q3_K_M, " 3.74G, +0.6569 ppl @ Llama-3-8B"),
    _Option("Q3_K_L", FT.MOSTLY_Q3_K_L, " 4.03G, +0.5562 ppl @ Llama-3-8B"),
    _Option("IQ4_NL", FT.MOSTLY_IQ4_NL, " 4.50 bpw non-linear quantization"),
    _Option("IQ4_XS", FT.MOSTLY_IQ4_XS, " 4.25 bpw non-linear quantization"),
    _Option("Q4_K", FT.MOSTLY_Q4_K_M, "alias for Q4_K_M", alias=True),
    _Option("Q4_K_S", FT.MOSTLY_Q4_K_S, " 4.37G, +0.2689 ppl @ Llama-3-8B"),
    _Option("Q4_K_M", FT.MOSTLY_Q4_K_M, " 4.58G, +0.1754 ppl @ Llama-3-8B"),
    _Option("Q5_K", FT.MOSTLY_Q5_K_M, "alias for Q5_K_M", alias=True),
    _Option("Q5_K_S", FT.MOSTLY_Q5_K_S, " 5.21G, +0.1049 ppl @ Llama-3-8B"),
    _Option("Q5_K_M", FT.MOSTLY_Q5_K_M, " 5.33G, +0.0569 ppl @ Llama-3-8B"),
    _Option("Q6_K", FT.MOSTLY_Q6_K, " 6.14G, +0.0217 ppl @ Llama-3-8B"),
    _Option("Q8_0", FT.MOSTLY_Q8_0, " 7.96G, +0.0026 ppl @ Llama-3-8B"),
    _Option("F16", FT.MOSTLY_F16, "14.00G, +0.0020 ppl @ Mistral-7B"),
    _Option("BF16", FT.MOSTLY_BF16, "14.00G, -0.0050 ppl @ Mistral-7B"),
    _Option("F32", FT.ALL_F32, "26.00G              @ 7B"),
    _Option("COPY", FT.ALL_F32, "only copy tensors, no quantizing"),
)

# llama_ftype_get_default_type
_DEFAULT_TYPE: dict[int, GGMLType] = {
    FT.MOSTLY_Q4_0: T.Q4_0, FT.MOSTLY_Q4_1: T.Q4_1, FT.MOSTLY_Q5_0: T.Q5_0,
    FT.MOSTLY_Q5_1: T.Q5_1, FT.MOSTLY_Q8_0: T.Q8_0, FT.MOSTLY_F16: T.F16,
    FT.MOSTLY_BF16: T.BF16, FT.ALL_F32: T.F32, FT.MOSTLY_Q1_0: T.Q1_0,
    ExtraFileType.MOSTLY_Q2_0: ExtraType.Q2_0, FT.MOSTLY_MXFP4_MOE: T.MXFP4,
    FT.MOSTLY_Q2_K_S: T.Q2_K, FT.MOSTLY_Q2_K: T.Q2_K, FT.MOSTLY_IQ3_XS: T.IQ3_S,
    FT.MOSTLY_Q3_K_S: T.Q3_K, FT.MOSTLY_Q3_K_M: T.Q3_K, FT.MOSTLY_Q3_K_L: T.Q3_K,
    FT.MOSTLY_Q4_K_S: T.Q4_K, FT.MOSTLY_Q4_K_M: T.Q4_K, FT.MOSTLY_Q5_K_S: T.Q5_K,
    FT.MOSTLY_Q5_K_M: T.Q5_K, FT.MOSTLY_Q6_K: T.Q6_K, FT.MOSTLY_TQ1_0: T.TQ1_0,
    FT.MOSTLY_TQ2_0: T.TQ2_0, FT.MOSTLY_IQ2_XXS: T.IQ2_XXS, FT.MOSTLY_IQ2_XS: T.IQ2_XS,
    FT.MOSTLY_IQ2_S: T.IQ2_XS, FT.MOSTLY_IQ2_M: T.IQ2_S, FT.MOSTLY_IQ3_XXS: T.IQ3_XXS,
    FT.MOSTLY_IQ1_S: T.IQ1_S, FT.MOSTLY_IQ1_M: T.IQ1_M, FT.MOSTLY_IQ4_NL: T.IQ4_NL,
    FT.MOSTLY_IQ4_XS: T.IQ4_XS, FT.MOSTLY_IQ3_S: T.IQ3_S, FT.MOSTLY_IQ3_M: T.IQ3_S,
}

# llama_model_loader's guess of a file type from its most common tensor type, where it
# differs from the first file type (above) with that default type.
_GUESS_EXCEPTIONS: dict[int, int] = {
    T.Q2_K: FT.MOSTLY_Q2_K, T.Q3_K: FT.MOSTLY_Q3_K_M, T.Q4_K: FT.MOSTLY_Q4_K_M,
    T.Q5_K: FT.MOSTLY_Q5_K_M, T.IQ3_S: FT.MOSTLY_IQ3_S, T.IQ2_S: FT.MOSTLY_IQ2_S,
    T.NVFP4: FT.MOSTLY_NVFP4, T.MXFP4: FT.ALL_F32}
_GUESSED = 1024  # LLAMA_FTYPE_GUESSED


def guessed_file_type(t: int) -> int:
    """The ``general.file_type`` llama.cpp assumes for a file without one whose most
    common tensor type is ``t``, with the "guessed" bit 1024 set (F32 for types it does
    not know)."""
    if t in _GUESS_EXCEPTIONS:
        return _GUESS_EXCEPTIONS[t] | _GUESSED
    for ftype, default in _DEFAULT_TYPE.items():
        if default == t:
            return ftype | _GUESSED
    return int(FT.ALL_F32) | _GUESSED


FILE_TYPES: tuple[str, ...] = tuple(o.name for o in _OPTIONS)

# modelkit's shorthand: q4_K_M with Q8_0 output and token embeddings (bartowski/unsloth's
# "Q4_K_L"); general.file_type stays q4_K_M's.
_SHORTHANDS: dict[str, tuple[FileTypeId, GGMLType]] = {"Q4_K_L": (FT.MOSTLY_Q4_K_M, T.Q8_0)}


@dataclass(frozen=True)
class QuantName:
    """What a quantization name on the command line stands for.

    ``copy`` is llama-quantize's ``COPY`` (every tensor kept, the source's
    ``general.file_type``); ``output_type``/``token_embedding_type`` are set by a
    shorthand such as ``Q4_K_L``.
    """

    name: str
    file_type: FileTypeId
    copy: bool = False
    output_type: GGMLType | None = None
    token_embedding_type: GGMLType | None = None


def parse_quant_name(text: str) -> QuantName:
    """A name from the menu, case-insensitively (``q4_K_M``, ``Q4_K``, ``iq4_xs``,
    ``COPY``), its ``llama_ftype`` number (``15``), or ``Q4_K_L``.  NVFP4 is refused as
    llama-quantize refuses it (not on its menu).  Unknown names raise
    :class:`UnknownQuantTypeError`."""
    upper = text.strip().upper()
    for o in _OPTIONS:
        if o.name == upper:
            return QuantName(o.name, o.ftype, copy=o.name == "COPY")
    if upper in _SHORTHANDS:
        ftype, t = _SHORTHANDS[upper]
        return QuantName(upper, ftype, output_type=t, token_embedding_type=t)
    if upper.isdigit():
        for o in _OPTIONS:
            if int(o.ftype) == int(upper):
                return QuantName(o.name, o.ftype, copy=o.name == "COPY")
    raise UnknownQuantTypeError(
        f"invalid quantization type '{text}' (see 'modelkit quantize --list' for the menu)")


def parse_file_type(text: str) -> FileTypeId:
    """The ``llama_ftype`` of a quantization name (see :func:`parse_quant_name`)."""
    return parse_quant_name(text).file_type


def file_type_from_id(value: int) -> FileTypeId:
    """The ``llama_ftype`` numbered ``value``: gguf's enum, or modelkit's for the file
    types gguf lacks (``MOSTLY_Q2_0``).  An unknown number is refused."""
    if isinstance(value, (LlamaFileType, ExtraFileType)):
        return value
    with contextlib.suppress(ValueError):
        return LlamaFileType(value)
    with contextlib.suppress(ValueError):
        return ExtraFileType(value)
    raise QuantizationError(f"invalid output file type {int(value)}")


def default_tensor_type(ftype: FileTypeId) -> GGMLType:
    """``llama_ftype_get_default_type``; an ftype with none (NVFP4) is refused."""
    t = _DEFAULT_TYPE.get(int(ftype))
    if t is None:
        raise QuantizationError(f"invalid output file type {int(ftype)}")
    return t


def file_type_name(ft: int) -> str:
    """Display name of a ``llama_ftype``: ``Q4_K_M``, ``Q8_0``, ``F16``, ``IQ2_XXS``."""
    for o in _OPTIONS:
        if int(o.ftype) == int(ft) and not o.alias:
            return o.name
    try:
        return LlamaFileType(ft).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"ftype {int(ft)}"


def menu_lines() -> list[str]:
    """llama-quantize's list of allowed types, with the bits per weight of each file
    type's default tensor type, and modelkit's shorthands."""
    lines = []
    for o in _OPTIONS:
        head = "          " if o.name == "COPY" else f"  {int(o.ftype):2d}  or  "
        bpw = ""
        if o.name != "COPY":
            t = default_tensor_type(o.ftype)
            bpw = f"{type_bits_per_weight(t):6.3f} bpw {ggml_type_name(t):<7} "
        lines.append(f"{head}{o.name:<9} : {bpw or ' ' * 23}{o.description.strip()}")
    for name, (ft, t) in _SHORTHANDS.items():
        lines.append(f"          {name:<9} : {'':23}modelkit shorthand: {file_type_name(ft)} "
                     f"with {ggml_type_name(t)} output and token embeddings")
    return lines
