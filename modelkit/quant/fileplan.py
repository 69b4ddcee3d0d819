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

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType, GGUFValueType, LlamaFileType

from modelkit.errors import ImatrixError, QuantizationError
from modelkit.gguf_file import GGUFInfo, TensorInfo
from modelkit.quant.file_types import (
    ExtraFileType,
    FileTypeId,
    GGMLType,
    QuantName,
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

__all__ = ["FilePlan", "PlannedTensor", "QuantizeSpec", "describe", "plan_file"]

T = GGMLQuantizationType
F32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class QuantizeSpec:
    """A quantization as the user asks for it: a name from the menu (or ``Q4_K_L``),
    llama-quantize's options, and the importance matrix (already read)."""

    type: str
    options: QuantOptions = QuantOptions()
    imatrix: Imatrix | None = None


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: ``target`` is its output type, ``nbytes`` its data size,
    ``weights`` the importance vector(s) its quantizer gets (``ne0 * n_expert``)."""

    tensor: TensorInfo
    choice: TensorChoice
    target: GGMLType
    nbytes: int
    weights: F32Array | None = None


@dataclass(frozen=True)
class FilePlan:
    """Everything a quantization will do.  ``name`` is the quantization as displayed
    (``Q4_K_M``, ``Q4_K_L``, ``COPY``), ``kvs`` the KVs appended after
    ``general.file_type`` (``quantize.imatrix.*``)."""

    name: str
    plan: QuantPlan
    tensors: tuple[PlannedTensor, ...]
    kvs: tuple[tuple[str, str | int, GGUFValueType], ...]
    imatrix: Imatrix | None

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

    def missing_kernels(self, available: frozenset[GGMLQuantizationType]) -> list[str]:
        """Output types of converted tensors that have no quantizer in ``available``."""
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
        ft = quant if isinstance(quant, (LlamaFileType, ExtraFileType)) else LlamaFileType(quant)
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
    return FilePlan(name.name, plan, tuple(tensors), tuple(imatrix_kvs(imatrix)), imatrix)


def _planned(t: TensorInfo, choice: TensorChoice, im: Imatrix | None) -> PlannedTensor:
    if not choice.quantize:
        return PlannedTensor(t, choice, t.type, t.n_bytes)
    weights = weights_for(im, t.name, t.shape)
    if weights is None and choice.requires_imatrix:
        raise ImatrixError(
            f"missing importance matrix for tensor {t.name} in a very low-bit quantization "
            f"({ggml_type_name(choice.target_type)}): the imatrix has no entry for it")
    if not is_quantized(choice.target_type):
        weights = None  # F32/F16/BF16 conversions take no weights
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
