"""Streaming GGUF -> GGUF quantization, byte-compatible with ``llama_model_quantize``.

``requantize`` reads a GGUF through a memory map and writes a quantized GGUF as it goes:

1. The plan (:func:`modelkit.quant.policy.plan_quantization`) fixes every output
   tensor's type, so every size and offset is known before a byte of data is produced.
   The header (KV pairs and all tensor infos) is written first, by
   :func:`modelkit.gguf_file.encode_header`, then the tensor data one tensor at a
   time, in llama.cpp's output order, each followed by zero padding to the alignment.
2. The tensors are then streamed one at a time, in row chunks, by
   :mod:`modelkit.quant.streaming` (optionally in a pool of worker processes); its
   docstring describes the chunking and the memory bound (independent of the model size).

Output is identical for any worker count and any chunk size, and identical to what
llama.cpp writes (same KV order with ``general.quantization_version`` and
``general.file_type`` moved last, same tensor order, alignment, padding and bytes).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from modelkit.errors import GGUFError, QuantizationError
from modelkit.gguf_file import (
    KV,
    GGUFInfo,
    TensorSlot,
    describe_header,
    encode_header,
    read_gguf,
)
from modelkit.gguf_file.format import pad
from modelkit.progress import ProgressCallback, ProgressEvent
from modelkit.quant.file_types import (
    FileTypeId,
    GGMLType,
    file_type_name,
    is_quantized,
    type_bits_per_weight,
)
from modelkit.quant.fileplan import plan_file
from modelkit.quant.imatrix import Imatrix
from modelkit.quant.policy import QuantOptions, fallback_warning
from modelkit.quant.streaming import (
    CHUNK_ELEMENTS,
    COPY_SLICE,
    Item,
    JobResult,
    Runner,
    Sink,
    Source,
    Step,
    Writable,
    chunk_steps,
    execute,
    joined,
    layout,
)
from modelkit.store import atomic_file

if TYPE_CHECKING:
    from modelkit.store import BlobWrite, Store

__all__ = [
    "CHUNK_ELEMENTS",
    "COPY_SLICE",
    "RequantizeResult",
    "TensorSummary",
    "quantize_file",
    "quantize_into_store",
    "requantize",
]

# Below this many elements to convert, a pool costs more than it saves: with
# ``workers=None`` such models are quantized in-process (same bytes either way).
POOL_MIN_ELEMENTS = 8 << 20


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSummary:
    """One output tensor.  ``offset`` is relative to the start of the data section.

    ``action`` is ``"quantized"`` (converted to another type, F32->F16 included) or
    ``"copied"`` (bytes unchanged).  ``rmse``/``max_abs_error`` compare the source (as
    float32) with the dequantized output; they are set only with ``report=True``.
    """

    name: str
    source_type: GGMLType
    target_type: GGMLType
    shape: tuple[int, ...]
    nbytes: int
    offset: int
    action: str
    fallback: bool = False
    rmse: float | None = None
    max_abs_error: float | None = None


@dataclass(frozen=True)
class RequantizeResult:
    """What :func:`requantize` wrote.

    ``rmse`` is the error over every element of the model (copied tensors count with
    zero error) and ``worst_tensor`` the tensor with the largest RMSE; both only with
    ``report=True``.  ``requantized`` is True when already-quantized source tensors were
    dequantized and quantized again.
    """

    file_type: int
    output_size: int
    data_offset: int
    alignment: int
    tensor_count: int
    n_quantized: int
    n_copied: int
    n_fallback: int
    tensors: tuple[TensorSummary, ...]
    requantized: bool = False
    fallback_log: tuple[str, ...] = ()
    rmse: float | None = None
    worst_tensor: str | None = None
    seconds: float = 0.0
    header: tuple[tuple[KV, ...], tuple[TensorSlot, ...]] = ((), ())  # what was written

    @property
    def file_type_name(self) -> str:
        return file_type_name(self.file_type)

    def gguf_info(self, path: str | os.PathLike[str]) -> GGUFInfo:
        """The description of the GGUF written (stored at ``path``), without reading it."""
        kvs, slots = self.header
        return describe_header(path, kvs, slots, alignment=self.alignment,
                               data_offset=self.data_offset, size=self.output_size)


def _slots(items: Sequence[Item]) -> tuple[TensorSlot, ...]:
    return tuple(TensorSlot(it.tensor.name, it.tensor.shape, it.target, it.nbytes)
                 for it in items)


# --------------------------------------------------------------------------------------
# The public API
# --------------------------------------------------------------------------------------


def _cpu_count() -> int:
    """The cores this process may run on (``os.cpu_count()`` unless restricted)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _source_label(info: GGUFInfo) -> str:
    label = info.file_type_label
    if label == "unknown":
        label = info.dominant_type_label()
    return label


GGUFSource = str | os.PathLike[str] | GGUFInfo | Sequence[GGUFInfo]


def requantize(
    src: GGUFSource,
    out: Writable | BinaryIO,
    file_type: str | FileTypeId,
    *,
    options: QuantOptions | None = None,
    imatrix: Imatrix | None = None,
    workers: int | None = None,
    chunk_rows: int | None = None,
    progress: ProgressCallback | None = None,
    report: bool = False,
    use_threads: bool = False,
) -> RequantizeResult:
    """Quantize the GGUF ``src`` to ``file_type``, writing the new GGUF to ``out``.

    ``src`` is a path, a ``GGUFInfo``, or the ``GGUFInfo`` of each part of a split set
    in order (checked by the caller, e.g. ``importers.split.plan_merge``): the parts are
    read where they are, as one model.

    ``out`` needs only ``write`` (a ``BlobWriter``, an open file, a ``BytesIO``); it is
    written sequentially from its current position and not closed.  ``workers``
    defaults to ``os.cpu_count()`` (in-process for small models); ``chunk_rows`` to
    about :data:`CHUNK_ELEMENTS` elements per job.  ``file_type`` is a name from
    llama-quantize's menu (or ``Q4_K_L``) or a ``llama_ftype``; ``options`` are
    llama-quantize's (overrides, ``--pure``, ...); ``imatrix`` an importance matrix read
    by :func:`modelkit.quant.imatrix.load_imatrix`.
    ``report`` adds per-tensor RMSE and max absolute error against the source.
    ``use_threads`` uses a thread pool instead of processes.

    Raises :class:`QuantizationError` for an unsupported type (listing the supported
    ones), a source llama.cpp would refuse, or a bad imatrix; ``GGUFError`` for an
    unreadable source.
    """
    started = time.monotonic()
    if isinstance(src, GGUFInfo):
        parts: Sequence[GGUFInfo] = (src,)
    elif isinstance(src, (str, os.PathLike)):
        parts = (read_gguf(src),)
    else:
        parts = tuple(src)
    info = joined(parts)
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    emit = progress or (lambda _event: None)

    fp = plan_file(info, file_type, options, imatrix)
    plan = fp.plan
    alignment = fp.alignment
    items = layout(fp, alignment)
    kvs = fp.kvs
    slots = _slots(items)

    target = fp.name
    source_label = _source_label(info)
    status = f"quantizing {source_label} model to {target}"
    # Going up in precision (Q8_0 to F16) loses nothing; only fewer bits re-round values.
    requantized = [it.tensor.name for it in items
                   if it.choice.quantize and is_quantized(it.tensor.type)
                   and type_bits_per_weight(it.target) < type_bits_per_weight(it.tensor.type)]
    if requantized:
        emit(ProgressEvent(
            f"warning: requantizing an already quantized model ({source_label}) to "
            f"{target}: {len(requantized)} tensors are dequantized and quantized again, "
            "which loses quality; quantize from the F16/BF16/F32 original instead "
            "(Ollama refuses this)", warning=True))
    fallback_log = tuple(
        line for it in items
        if (line := fallback_warning(it.choice, it.n_per_row)) is not None)

    paths = [part.path for part in parts]
    try:
        source = Source(paths)
    except (OSError, ValueError) as exc:
        raise GGUFError(f"{info.path}: cannot map: {exc}") from None

    total_convert = sum(it.tensor.n_elements for it in items if it.choice.quantize)
    n_workers = workers if workers is not None else _cpu_count()
    if workers is None and total_convert < POOL_MIN_ELEMENTS:
        n_workers = 1
    n_workers = max(1, n_workers)

    sink = Sink(out)
    runner: Runner | None = None
    ok = False
    try:
        data_offset = 0
        done_tensors = 0
        runner = Runner(source, paths, n_workers, use_threads)

        def start() -> None:
            nonlocal data_offset
            sink.write(encode_header(kvs, slots, alignment))
            data_offset = sink.pos
            emit(ProgressEvent(status, total=len(items), completed=0, unit="tensors"))

        def handle(step: Step, result: JobResult | None) -> None:
            nonlocal done_tensors
            it = items[step.item]
            if result is not None:
                sink.write(result.data)
                it.sumsq += result.sumsq
                it.maxabs = max(it.maxabs, result.maxabs)
            elif step.copy_bytes:
                view = source.view(step.copy_offset, step.copy_bytes)
                sink.write(view.data)
                del view
                source.release(step.copy_offset, step.copy_bytes)
            if step.last:
                if sink.pos != data_offset + it.offset + it.nbytes:  # pragma: no cover
                    raise QuantizationError(
                        f"{it.tensor.name}: wrote {sink.pos - data_offset - it.offset} "
                        f"bytes, expected {it.nbytes}")
                sink.zeros(pad(it.nbytes, alignment) - it.nbytes)
                done_tensors += 1
                emit(ProgressEvent(status, total=len(items), completed=done_tensors,
                                   unit="tensors"))

        execute(list(chunk_steps(items, chunk_rows, report)), runner, handle, start)
        sink.flush()
        ok = True
    finally:
        if runner is not None:
            runner.close(cancel=not ok)
        source.close()

    summaries = []
    for it in items:
        rmse = maxabs = None
        if report:
            n = it.tensor.n_elements
            rmse = math.sqrt(it.sumsq / n) if it.choice.quantize and n else 0.0
            maxabs = it.maxabs if it.choice.quantize else 0.0
        summaries.append(TensorSummary(
            name=it.tensor.name, source_type=it.tensor.type, target_type=it.target,
            shape=it.tensor.shape, nbytes=it.nbytes, offset=it.offset,
            action="quantized" if it.choice.quantize else "copied",
            fallback=it.choice.fallback, rmse=rmse, max_abs_error=maxabs))
    overall = worst = None
    if report:
        n_all = sum(it.tensor.n_elements for it in items)
        overall = math.sqrt(sum(it.sumsq for it in items) / n_all) if n_all else 0.0
        ranked = [s for s in summaries if s.action == "quantized" and s.rmse is not None]
        if ranked:
            worst = max(ranked, key=lambda s: cast(float, s.rmse)).name
    n_quantized = sum(1 for it in items if it.choice.quantize)
    return RequantizeResult(
        file_type=plan.file_type, output_size=sink.pos, data_offset=data_offset,
        alignment=alignment, tensor_count=len(items), n_quantized=n_quantized,
        n_copied=len(items) - n_quantized,
        n_fallback=plan.n_fallback, tensors=tuple(summaries), requantized=bool(requantized),
        fallback_log=fallback_log, rmse=overall, worst_tensor=worst,
        seconds=time.monotonic() - started, header=(kvs, slots))


def quantize_file(src: GGUFSource, dst_path: str | os.PathLike[str],
                  file_type: str | FileTypeId, **kw: Any) -> RequantizeResult:
    """:func:`requantize` into the file ``dst_path``, atomically: the data goes to a
    hidden temporary file in the same folder, which is fsynced and renamed over
    ``dst_path`` only when complete.  On any failure ``dst_path`` is untouched (an
    existing file stays as it was) and the temporary file is removed."""
    with atomic_file(Path(dst_path), mode=None) as f:
        return requantize(src, f, file_type, **kw)


def quantize_into_store(store: Store, src_info: GGUFInfo | Sequence[GGUFInfo], file_type: str,
                        progress: ProgressCallback | None = None,
                        **kw: Any) -> tuple[BlobWrite, GGUFInfo]:
    """Quantize ``src_info`` straight into a new blob of ``store`` (``create -q``).

    Returns the committed blob and the description of the stored GGUF.  Nothing is
    left in the store when quantization fails.
    """
    with store.open_writer() as w:
        result = requantize(src_info, w, file_type, progress=progress, **kw)
        written = w.commit()
    return written, result.gguf_info(store.blob_path(written.digest))

