"""Convert and quantize in one pass: the GGUF ``llama-quantize`` would make of the F16
conversion, without writing that F16 file.

The F16 conversion is planned (names, shapes, types, KVs) without reading data; the
quantization policy (:func:`modelkit.quant.policy.plan_quantization`) then chooses every
tensor's type from that plan exactly as it would from the F16 file, and the KVs are the
F16 file's with ``general.quantization_version`` and ``general.file_type`` moved last
(what llama-quantize writes). Tensors are then produced one at a time in the
quantizer's output order: converted to their F16-file bytes, widened to float32 and
quantized, or copied when the policy keeps their type.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
from gguf import GGML_QUANT_VERSION, GGMLQuantizationType, GGUFValueType, Keys

from modelkit.convert.background_writer import BackgroundWriter, Writable
from modelkit.convert.converter import (
    ALIGNMENT,
    ConversionPlan,
    Encoded,
    PlannedTensor,
    encode,
    stream_tensors,
)
from modelkit.errors import ConvertError, QuantizationError
from modelkit.gguf_file import KV, TensorSlot, encode_header
from modelkit.gguf_file.format import pad
from modelkit.progress import ProgressCallback, ignore_progress
from modelkit.quant import kernels
from modelkit.quant.file_types import FileTypeId, GGMLType, row_bytes
from modelkit.quant.kernels.floats import bf16_to_f16_to_f32
from modelkit.quant.policy import ModelHParams, QuantPlan, TensorSpec, plan_quantization

_MOVED = (Keys.General.QUANTIZATION_VERSION, Keys.General.FILE_TYPE)
POOL_MIN_ELEMENTS = 8 << 20  # below this much to quantize, a pool costs more than it saves


@dataclass(frozen=True)
class _Out:
    source: PlannedTensor
    type: GGMLType
    quantize: bool
    n_bytes: int


@dataclass
class QuantizedPlan:
    conversion: ConversionPlan
    quant: QuantPlan
    kvs: list[KV]
    tensors: list[_Out]

    def header(self) -> bytes:
        slots = [TensorSlot(o.source.tensor.name, tuple(reversed(o.source.tensor.shape)),
                            o.type, o.n_bytes) for o in self.tensors]
        return encode_header(self.kvs, slots, ALIGNMENT)

    @property
    def size(self) -> int:
        return len(self.header()) + sum(pad(o.n_bytes, ALIGNMENT) for o in self.tensors)


def plan_quantized(conversion: ConversionPlan, file_type: FileTypeId) -> QuantizedPlan:
    """``conversion`` must be an F16 (or F32/BF16) plan: the file llama-quantize reads."""
    specs = [TensorSpec(p.tensor.name, tuple(reversed(p.tensor.shape)), p.type)
             for p in conversion.tensors]
    meta = {kv.key: kv.value for kv in conversion.kvs}
    try:
        quant = plan_quantization(specs, ModelHParams.from_kv(meta), file_type)
    except QuantizationError as exc:
        raise ConvertError(f"{conversion.folder.path}: {exc}") from None
    by_name = {p.tensor.name: p for p in conversion.tensors}
    outs = []
    for choice in quant.choices:
        p = by_name[choice.name]
        target = choice.target_type
        n_bytes = row_bytes(target, p.n_elements) if choice.quantize else p.n_bytes
        outs.append(_Out(p, target, choice.quantize, n_bytes))
    kvs = [kv for kv in conversion.kvs if kv.key not in _MOVED]
    kvs.append(KV(Keys.General.QUANTIZATION_VERSION, GGML_QUANT_VERSION, GGUFValueType.UINT32))
    kvs.append(KV(Keys.General.FILE_TYPE, int(file_type), GGUFValueType.UINT32))
    return QuantizedPlan(conversion, quant, kvs, outs)


def quantize_chunk(f16_file: np.ndarray, src: GGMLQuantizationType,
                   dst: GGMLType, ne0: int) -> np.ndarray:
    """Rows of the F16 file's values -> ``dst`` bytes (what llama-quantize computes)."""
    x = kernels.to_float32(f16_file.reshape(-1, ne0), src)
    return kernels.quantize(dst, x.reshape(-1, ne0))


def quantize_bf16_chunk(bits: np.ndarray, dst: GGMLType, ne0: int) -> np.ndarray:
    """Rows of a BF16 source (bit patterns) planned F16 -> ``dst`` bytes: the same as
    ``quantize_chunk`` of their F16-file values, without making that F16 file."""
    x = bf16_to_f16_to_f32(bits)
    return kernels.quantize(dst, x.reshape(-1, ne0))


def _encoder(o: _Out, pool: Executor | None) -> Callable[[np.ndarray], Encoded]:
    """Values -> the bytes of the output: the F16 file's bytes, quantized when the
    policy says so (from those bytes, as llama-quantize reads them), in ``pool``."""
    p = o.source
    ne0 = p.tensor.shape[-1] if p.tensor.shape else 1

    def run(values: np.ndarray) -> Encoded:
        if not o.quantize:
            return encode(values, p.type)
        if values.dtype == np.uint16 and p.type == GGMLQuantizationType.F16:
            # BF16 bits (see converter.encode): widened to the F16 file's float32 values
            # in the worker, which also ships half the bytes of float32.
            job: Callable[[], np.ndarray] = partial(
                quantize_bf16_chunk, np.ascontiguousarray(values), o.type, ne0)
        else:
            job = partial(quantize_chunk, np.ascontiguousarray(encode(values, p.type)), p.type,
                          o.type, ne0)
        return job() if pool is None else pool.submit(job)
    return run


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def write_quantized(plan: QuantizedPlan, f: Writable,
                    progress: ProgressCallback = ignore_progress,
                    workers: int | None = None) -> str:
    """Stream the quantized GGUF into ``f``; returns its sha256. Quantization runs in
    ``workers`` processes (default: every core; in-process for small models); the
    bytes are the same for any count."""
    work = sum(o.source.n_elements for o in plan.tensors if o.quantize)
    n = workers if workers is not None else (_cpu_count() if work >= POOL_MIN_ELEMENTS else 1)
    status = "converting and quantizing tensors"
    with BackgroundWriter(f) as out:
        out.put(plan.header())
        if n <= 1:
            stream_tensors([(o.source, _encoder(o, None), o.n_bytes) for o in plan.tensors],
                           out, progress, status)
            return out.finish()
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
            stream_tensors([(o.source, _encoder(o, pool), o.n_bytes) for o in plan.tensors],
                           out, progress, status, lookahead=2 * n)
        return out.finish()
