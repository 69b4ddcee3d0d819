"""The plan of one whole quantization, before any byte is written.

:func:`plan_file` turns a source GGUF's description, a quantization name (or
``llama_ftype``), llama-quantize's options and an importance matrix into a
:class:`FilePlan`: every tensor's type (policy), its output size, the importance weights
it gets, and the ``quantize.imatrix.*`` KVs.  The streaming requantizer writes exactly
this plan; ``--dry-run`` prints it.  The checks llama.cpp makes while it converts (an
imatrix entry of the wrong size, a very low-bit tensor without weights) happen here, so
a refused quantization never starts an output file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType, GGUFValueType, Keys
from gguf.constants import GGUF_DEFAULT_ALIGNMENT

from modelkit.errors import GGUFError, ImatrixError, QuantizationError
from modelkit.gguf_file import KV, GGUFInfo, TensorInfo, TensorSlot, encode_header
from modelkit.gguf_file.format import pad
from modelkit.quant import kernels
from modelkit.quant.file_types import (
    FileTypeId,
    GGMLType,
    QuantName,
    file_type_from_id,
    file_type_name,
    ggml_type_name,
    is_quantized,
    parse_quant_name,
    row_bytes,
)
from modelkit.quant.imatrix import Imatrix, check_model, imatrix_kvs, weights_for
from modelkit.quant.policy import (
    ModelHParams,
    QuantOptions,
    QuantPlan,
    TensorChoice,
    TensorSpec,
    plan_quantization,
)

__all__ = ["GGML_QNT_VERSION", "FilePlan", "PlannedTensor", "QuantizeSpec", "describe",
           "output_alignment", "output_kvs", "plan_file", "plan_json", "plan_lines"]

T = GGMLQuantizationType
F32Array = npt.NDArray[np.float32]

GGML_QNT_VERSION = 2  # what llama.cpp writes as general.quantization_version
# Keys llama.cpp drops from the output (split metadata) or re-adds last.
_DROPPED_KEYS = (Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT,
                 Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)
_MOVED_KEYS = (Keys.General.QUANTIZATION_VERSION, Keys.General.FILE_TYPE)
_FLOATS = frozenset({T.F32, T.F16, T.BF16})


@dataclass(frozen=True)
class QuantizeSpec:
    """A quantization as the user asks for it: a name from the menu (or ``Q4_K_L``),
    llama-quantize's options, and the importance matrix (already read)."""

    type: str
    options: QuantOptions = QuantOptions()
    imatrix: Imatrix | None = None

    @property
    def plain(self) -> bool:
        """Just a file type: no option, no imatrix, not a shorthand such as Q4_K_L."""
        name = parse_quant_name(self.type)
        return (self.options == QuantOptions() and self.imatrix is None
                and name.output_type is None and name.token_embedding_type is None)


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: ``target`` is its output type, ``nbytes`` its data size,
    ``weights`` the importance vector(s) llama.cpp hands its quantizer (``ne0 *
    n_expert``; F32/F16/BF16 conversions ignore them)."""

    tensor: TensorInfo
    choice: TensorChoice
    target: GGMLType
    nbytes: int
    weights: F32Array | None = None


@dataclass(frozen=True)
class FilePlan:
    """Everything a quantization will do.  ``name`` is the quantization as displayed
    (``Q4_K_M``, ``Q4_K_L``, ``COPY``), ``kvs`` the output's KV pairs in order,
    ``imatrix_kvs`` those of them about the imatrix (``quantize.imatrix.*``)."""

    name: str
    plan: QuantPlan
    tensors: tuple[PlannedTensor, ...]
    kvs: tuple[KV, ...]
    imatrix_kvs: tuple[tuple[str, str | int, GGUFValueType], ...]
    imatrix: Imatrix | None
    alignment: int

    @property
    def data_offset(self) -> int:
        """The header's size with its padding (where the tensor data starts)."""
        slots = [TensorSlot(p.tensor.name, p.tensor.shape, p.target, p.nbytes)
                 for p in self.tensors]
        return len(encode_header(self.kvs, slots, self.alignment))

    @property
    def output_size(self) -> int:
        """The exact size of the output file."""
        return self.data_offset + sum(pad(p.nbytes, self.alignment) for p in self.tensors)

    @property
    def n_elements(self) -> int:
        return sum(p.tensor.n_elements for p in self.tensors)

    @property
    def tensor_bytes(self) -> int:
        return sum(p.nbytes for p in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        """Tensor bytes * 8 / elements, as llama-quantize reports it."""
        return self.tensor_bytes * 8 / self.n_elements if self.n_elements else 0.0

    def totals_by_type(self) -> dict[str, tuple[int, int]]:
        """{ggml type name: (tensors, bytes)}, in order of first appearance."""
        out: dict[str, tuple[int, int]] = {}
        for p in self.tensors:
            n, b = out.get(ggml_type_name(p.target), (0, 0))
            out[ggml_type_name(p.target)] = (n + 1, b + p.nbytes)
        return out

    def missing_kernels(self) -> list[str]:
        """Output types of converted tensors that have no quantizer in the kernels'
        registry yet (the run refuses them; ``--dry-run`` lists them)."""
        available = frozenset(kernels.FORMATS) | _FLOATS
        missing: list[str] = []
        for p in self.tensors:
            name = ggml_type_name(p.target)
            if p.choice.quantize and p.target not in available and name not in missing:
                missing.append(name)
        return missing


def _resolve(quant: str | FileTypeId | int, options: QuantOptions | None
             ) -> tuple[QuantName, QuantOptions]:
    if isinstance(quant, str):
        name = parse_quant_name(quant)
    else:
        ft = file_type_from_id(quant)
        name = QuantName(file_type_name(ft), ft)
    opts = options or QuantOptions()
    return name, replace(
        opts, only_copy=opts.only_copy or name.copy,
        output_tensor_type=opts.output_tensor_type or name.output_type,
        token_embedding_type=opts.token_embedding_type or name.token_embedding_type)


def plan_file(info: GGUFInfo, quant: str | FileTypeId | int,
              options: QuantOptions | None = None, imatrix: Imatrix | None = None
              ) -> FilePlan:
    """Plan the quantization of ``info`` (see the module docstring).

    Raises :class:`QuantizationError` (:class:`ImatrixError` for imatrix problems) for
    everything llama-quantize would refuse, before any output exists.
    """
    name, opts = _resolve(quant, options)
    if imatrix is not None and not imatrix.weights:
        imatrix = None  # --include/--exclude-weights left nothing: as if none was given
    opts = replace(opts, has_imatrix=imatrix is not None)
    check_model(imatrix, [t.name for t in info.tensors])
    specs = [TensorSpec(t.name, t.shape, t.type) for t in info.tensors]
    kv_ftype = info.metadata.get("general.file_type")
    try:
        plan = plan_quantization(
            specs, ModelHParams.from_kv(info.metadata), name.file_type, opts,
            source_file_type=kv_ftype if isinstance(kv_ftype, int) else None)
    except QuantizationError as exc:
        exc.args = (f"{info.path}: {exc}",)  # same class (and attributes), file named
        raise
    by_name = {t.name: t for t in info.tensors}
    tensors = [_planned(by_name[c.name], c, imatrix) for c in plan.choices]
    extra = tuple(imatrix_kvs(imatrix))
    return FilePlan(name.name, plan, tuple(tensors), tuple(output_kvs(info, plan.file_type, extra)),
                    extra, imatrix, output_alignment(info))


def output_kvs(info: GGUFInfo, ftype: int,
               extra: Sequence[tuple[str, Any, GGUFValueType]] = ()) -> list[KV]:
    """The output KV pairs, as llama.cpp writes them: the source's in source order
    minus split keys, then ``general.quantization_version`` and ``general.file_type``
    (u32), then ``extra`` (llama-quantize's ``quantize.imatrix.*``), each removed from
    wherever it was."""
    kvs: list[KV] = []
    moved = {*_MOVED_KEYS, *(key for key, _, _ in extra)}
    for key in info.metadata:
        if key in _DROPPED_KEYS or key in moved:
            continue
        try:
            kvs.append(info.kv(key))
        except GGUFError as exc:
            raise QuantizationError(str(exc)) from None
    kvs.append(KV(Keys.General.QUANTIZATION_VERSION, GGML_QNT_VERSION, GGUFValueType.UINT32))
    kvs.append(KV(Keys.General.FILE_TYPE, int(ftype), GGUFValueType.UINT32))
    kvs += [KV(key, value, vtype) for key, value, vtype in extra]
    return kvs


def output_alignment(info: GGUFInfo) -> int:
    """The output alignment.

    llama.cpp copies ``general.alignment`` into the output but lays the data out with
    the default 32 whatever it says, which makes an invalid file when it is not 32.  We
    lay the data out with the alignment the file declares (32 when absent), so the
    output is valid and still identical to llama.cpp's for every ordinary source.
    """
    value = info.metadata.get(Keys.General.ALIGNMENT)
    if isinstance(value, int) and value > 0 and value & (value - 1) == 0:
        return value
    return GGUF_DEFAULT_ALIGNMENT


def _planned(t: TensorInfo, choice: TensorChoice, im: Imatrix | None) -> PlannedTensor:
    if not choice.quantize:
        return PlannedTensor(t, choice, t.type, t.n_bytes)
    weights = weights_for(im, t.name, t.shape)
    if weights is None and choice.requires_imatrix:
        raise ImatrixError(
            f"missing importance matrix for tensor {t.name} in a very low-bit quantization "
            f"({ggml_type_name(choice.target_type)}): the imatrix has no entry for it")
    return PlannedTensor(t, choice, choice.target_type,
                         row_bytes(choice.target_type, t.n_elements), weights)


def describe(plan: FilePlan) -> Sequence[str]:
    """Short notes about a plan for the user: fallbacks, tensors without weights."""
    notes = [f"{plan.plan.n_fallback} of {len(plan.tensors)} tensor(s) required fallback "
             "quantization"] if plan.plan.n_fallback else []
    if plan.imatrix is not None:
        missing = [p.tensor.name for p in plan.tensors
                   if p.choice.quantize and is_quantized(p.target) and p.weights is None]
        if missing:
            notes.append(f"the imatrix has no weights for {len(missing)} tensor(s) "
                         f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    return notes


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:8.3f} MiB"


def plan_lines(fp: FilePlan) -> list[str]:
    """``--dry-run``'s text: one line per tensor (as llama-quantize's log), then the
    sizes, bits per weight and notes."""
    n = len(fp.tensors)
    lines = []
    for i, p in enumerate(fp.tensors, 1):
        shape = ", ".join(f"{d:6d}" for d in p.tensor.shape)
        size = _mib(p.nbytes) if not p.choice.quantize else \
            f"{_mib(p.tensor.n_bytes)} -> {_mib(p.nbytes)}"
        lines.append(f"[{i:4d}/{n:4d}] {p.tensor.name:<36} - [{shape}], "
                     f"{p.tensor.type.name.lower():>7} -> {p.target.name.lower():<7} {size}")
    source = sum(p.tensor.n_bytes for p in fp.tensors)
    lines.append(f"model size = {_mib(source)} ({source * 8 / max(1, fp.n_elements):.2f} BPW)")
    lines.append(f"quant size = {_mib(fp.tensor_bytes)} ({fp.bits_per_weight:.2f} BPW)")
    lines.append(f"output: {fp.name}, {fp.output_size} bytes, {fp.plan.n_fallback} "
                 "fallback(s); nothing written (--dry-run)")
    lines += [f"note: {note}" for note in describe(fp)]
    missing = fp.missing_kernels()
    if missing:
        lines.append("note: modelkit has no quantizer yet for " + ", ".join(missing)
                     + ": the real run would refuse")
    return lines


def plan_json(fp: FilePlan) -> dict[str, Any]:
    """``--dry-run --json``: the plan as one JSON object."""
    return {
        "file_type": fp.name, "general.file_type": fp.plan.file_type,
        "tensors": [{"name": p.tensor.name, "shape": list(p.tensor.shape),
                     "source_type": p.tensor.type.name, "type": p.target.name,
                     "bytes": p.nbytes, "fallback": p.choice.fallback,
                     "imatrix": p.weights is not None} for p in fp.tensors],
        "totals": {t: {"tensors": n, "bytes": b} for t, (n, b) in fp.totals_by_type().items()},
        "n_fallback": fp.plan.n_fallback, "output_size": fp.output_size,
        "bits_per_weight": round(fp.bits_per_weight, 4),
        "kvs": {k: v for k, v, _ in fp.imatrix_kvs},
        "missing_kernels": fp.missing_kernels()}
