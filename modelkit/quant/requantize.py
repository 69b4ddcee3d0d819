"""Streaming GGUF -> GGUF quantization, byte-compatible with ``llama_model_quantize``.

``requantize`` reads a GGUF through a memory map and writes a quantized GGUF as it goes:

1. The plan (:func:`modelkit.quant.policy.plan_quantization`) fixes every output
   tensor's type, so every size and offset is known before a byte of data is produced.
   The header (KV pairs and all tensor infos) is written first, by
   :func:`modelkit.gguf_file.encode_header`, then the tensor data one tensor at a
   time, in llama.cpp's output order, each followed by zero padding to the alignment.
2. A tensor to convert is cut into chunks of whole rows (rows are independent for every
   type, so the bytes do not depend on where the cuts are).  Each chunk is read from the
   memory map, converted to float32 (dequantized when the source is already quantized),
   quantized and handed back as bytes; chunks are written strictly in order.  Tensors
   that keep their type are copied from the map in slices of :data:`COPY_SLICE` bytes.
3. With ``workers > 1`` a pool of processes (or threads) quantizes chunks ahead of the
   writer, at most ``2 * workers`` chunks in flight.  Each worker process maps the
   source itself (in the pool initializer); only job descriptions go to the workers and
   only quantized bytes come back.

Output is identical for any worker count and any chunk size, and identical to what
llama.cpp writes (same KV order with ``general.quantization_version`` and
``general.file_type`` moved last, same tensor order, alignment, padding and bytes).

Memory bound
------------
Peak memory does not grow with the tensor or model size.  With ``E = chunk_rows *
n_per_row`` elements per chunk (by default ``chunk_rows`` is chosen so that ``E`` is
about :data:`CHUNK_ELEMENTS` = 1 Mi elements) and ``W`` workers:

    peak ~= W * (4 B * E float32 input + quantized bytes of the chunk (<= 4 B * E)
                 + kernel scratch (the kernels work in fixed-size block groups: < 9 MiB))
            + 2 * W * quantized bytes of one chunk (results waiting to be written)
            + COPY_SLICE (8 MiB, copied tensors are written straight from the map)
            + the source's metadata (tokenizer arrays...; independent of the tensors)

``report=True`` adds about ``8 B * E`` per worker (the float64 differences).  Measured
with tracemalloc for one worker and default chunks: 6-8 MiB of allocations in total
(16-17 MiB with ``report``), the same for a 16 MiB and a 512 MiB (float32) tensor.

Mapped source pages are released after each chunk and copy slice
(``madvise(MADV_DONTNEED)``: clean file pages, so they only leave this process's
resident set; the page cache keeps them), so the resident set does not accumulate the
model either: the peak RSS of the whole process measured ~80 MiB (interpreter, numpy,
gguf and a 32k-token vocabulary included) for both a 0.4 GB and a 1.35 GB F16 source.
"""

from __future__ import annotations

import bisect
import concurrent.futures as cf
import contextlib
import math
import mmap
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType
from gguf.constants import GGML_QUANT_SIZES

from modelkit.errors import GGUFError, QuantizationError
from modelkit.gguf_file import (
    KV,
    GGUFInfo,
    TensorInfo,
    TensorSlot,
    describe_header,
    encode_header,
    read_gguf,
)
from modelkit.gguf_file.format import pad
from modelkit.progress import ProgressCallback, ProgressEvent
from modelkit.quant import kernels
from modelkit.quant.file_types import FileTypeId, file_type_name, ggml_type_name
from modelkit.quant.fileplan import FilePlan, plan_file
from modelkit.quant.imatrix import Imatrix
from modelkit.quant.policy import QuantOptions, TensorChoice, fallback_warning
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

T = GGMLQuantizationType
F32Array = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]

CHUNK_ELEMENTS = 1 << 20  # default elements per quantization job (4 MiB as float32)
COPY_SLICE = 8 << 20  # bytes per slice when copying a tensor unchanged
# Below this many elements to convert, a pool costs more than it saves: with
# ``workers=None`` such models are quantized in-process (same bytes either way).
POOL_MIN_ELEMENTS = 8 << 20

_FLOAT_TYPES = (T.F32, T.F16, T.BF16)


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
    source_type: GGMLQuantizationType
    target_type: GGMLQuantizationType
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


# --------------------------------------------------------------------------------------
# Conversions: every type (float and block) in modelkit.quant.kernels
# --------------------------------------------------------------------------------------


def _to_float32(raw: U8Array, qtype: GGMLQuantizationType, n_per_row: int) -> F32Array:
    """Rows of raw source bytes -> float32 ``(rows, n_per_row)``."""
    out = kernels.to_float32(raw, qtype)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(raw.shape[0], n_per_row)


def _quantize(qtype: GGMLQuantizationType, x: F32Array, imatrix: F32Array | None) -> U8Array:
    """float32 rows -> raw bytes of ``qtype`` ``(rows, row_bytes)``."""
    if qtype not in kernels.SUPPORTED_TYPES:
        raise QuantizationError(f"no quantizer for type {qtype.name}")
    return kernels.quantize(qtype, x, imatrix)


def _dequantize(qtype: GGMLQuantizationType, q: U8Array, n_per_row: int) -> F32Array:
    """Raw bytes of ``qtype`` -> float32 rows (for the error report)."""
    return kernels.dequantize(qtype, q, n_per_row)


# --------------------------------------------------------------------------------------
# Source memory map
# --------------------------------------------------------------------------------------

_MADV_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)


class _Source:
    """Read-only memory maps of the source file, or of a split set's parts laid end to
    end (offsets run on from one part into the next, as :func:`_joined` numbers the
    tensors).  Views are taken per chunk and the pages are released once the chunk has
    been converted."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.maps: list[mmap.mmap] = []
        self.bases: list[int] = []
        base = 0
        try:
            for path in paths:
                with open(path, "rb") as f:
                    self.maps.append(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
                self.bases.append(base)
                base += len(self.maps[-1])
        except BaseException:
            self.close()
            raise

    def _locate(self, offset: int) -> tuple[mmap.mmap, int]:
        i = bisect.bisect_right(self.bases, offset) - 1
        return self.maps[i], offset - self.bases[i]

    def view(self, offset: int, nbytes: int) -> U8Array:
        mm, local = self._locate(offset)
        return np.frombuffer(mm, dtype=np.uint8, count=nbytes, offset=local)

    def release(self, offset: int, nbytes: int) -> None:
        """Drop the pages of ``[offset, offset+nbytes)`` from this process's resident set."""
        if _MADV_DONTNEED is None or nbytes <= 0:
            return
        mm, local = self._locate(offset)
        start = local - local % mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(_MADV_DONTNEED, start, local + nbytes - start)

    def close(self) -> None:
        for mm in self.maps:
            with contextlib.suppress(BufferError):
                mm.close()


def _joined(parts: Sequence[GGUFInfo]) -> GGUFInfo:
    """One source over the parts of a split set: the first part's metadata (its
    ``split.*`` keys are dropped from the output anyway) and every part's tensors, their
    offsets counted through the parts laid end to end."""
    if len(parts) == 1:
        return parts[0]
    tensors: list[TensorInfo] = []
    base = 0
    for part in parts:
        tensors.extend(replace(t, offset=base + t.offset) for t in part.tensors)
        base += part.size
    return replace(parts[0], tensors=tuple(tensors))


# --------------------------------------------------------------------------------------
# Jobs: a row range of one tensor, quantized anywhere
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    offset: int  # absolute offset of the first source row
    rows: int
    n_per_row: int
    src_type: GGMLQuantizationType
    dst_type: GGMLQuantizationType
    imatrix: F32Array | None
    report: bool


@dataclass(frozen=True)
class _JobResult:
    data: bytes
    sumsq: float = 0.0  # sum of squared errors (report only)
    maxabs: float = 0.0


def _row_bytes(qtype: GGMLQuantizationType, n_per_row: int) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return n_per_row // block * size


def _run_job(source: _Source, job: _Job) -> _JobResult:
    src_row = _row_bytes(job.src_type, job.n_per_row)
    nbytes = src_row * job.rows
    raw = source.view(job.offset, nbytes).reshape(job.rows, src_row)
    x = _to_float32(raw, job.src_type, job.n_per_row)
    del raw
    source.release(job.offset, nbytes)
    q = _quantize(job.dst_type, x, job.imatrix)
    if not job.report:
        return _JobResult(q.tobytes())
    y = _dequantize(job.dst_type, q, job.n_per_row)
    with np.errstate(invalid="ignore", over="ignore"):
        d = y.astype(np.float64).ravel()
        del y
        d -= x.ravel()
        sumsq = float(np.dot(d, d))
        maxabs = float(np.max(np.abs(d, out=d))) if d.size else 0.0
    return _JobResult(q.tobytes(), sumsq, maxabs)


# Per-process state of pool workers: each maps the source once, in the initializer.
_WORKER_SOURCE: list[_Source] = []


def _worker_init(paths: list[str]) -> None:
    _WORKER_SOURCE.clear()
    _WORKER_SOURCE.append(_Source([Path(p) for p in paths]))


def _worker_run(job: _Job) -> _JobResult:
    return _run_job(_WORKER_SOURCE[0], job)


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


class _Writable(Protocol):
    def write(self, data: Any, /) -> Any: ...


class _Sink:
    """Counts what goes to ``out``."""

    def __init__(self, out: _Writable) -> None:
        self._out = out
        self.pos = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = memoryview(data).nbytes
        if n:
            self._out.write(data)
            self.pos += n
        return n

    def zeros(self, n: int) -> None:
        if n > 0:
            self.write(bytes(n))

    def flush(self) -> None:
        flush = getattr(self._out, "flush", None)
        if callable(flush):
            flush()

    def tell(self) -> int:
        return self.pos


def _slots(items: Sequence[_Item]) -> tuple[TensorSlot, ...]:
    return tuple(TensorSlot(it.tensor.name, it.tensor.shape, it.target, it.nbytes)
                 for it in items)


# --------------------------------------------------------------------------------------
# The plan, laid out
# --------------------------------------------------------------------------------------


@dataclass
class _Item:
    tensor: TensorInfo
    choice: TensorChoice
    target: GGMLQuantizationType  # choice.target_type, a type we can write
    nbytes: int
    offset: int  # in the data section
    imatrix: F32Array | None = None
    sumsq: float = 0.0
    maxabs: float = 0.0

    @property
    def n_per_row(self) -> int:
        return self.tensor.shape[0]

    @property
    def rows(self) -> int:
        return self.tensor.n_elements // self.tensor.shape[0]


@dataclass(frozen=True)
class _Step:
    """One unit of output, in write order: a quantization job or a copy slice."""

    item: int
    job: _Job | None = None
    copy_offset: int = 0
    copy_bytes: int = 0
    last: bool = False  # the last step of its tensor


def _layout(fp: FilePlan, alignment: int) -> list[_Item]:
    items: list[_Item] = []
    offset = 0
    for p in fp.tensors:
        target = _kernel_type(p.choice) if p.choice.quantize else p.tensor.type
        weights = p.weights if target not in _FLOAT_TYPES else None  # floats ignore them
        items.append(_Item(p.tensor, p.choice, target, p.nbytes, offset, weights))
        offset += pad(p.nbytes, alignment)
    return items


def _kernel_type(choice: TensorChoice) -> GGMLQuantizationType:
    """The target type of a tensor to convert, refused when modelkit has no quantizer
    for it yet (the plan covers llama.cpp's whole menu; the kernels come type by type)."""
    t = choice.target_type
    if isinstance(t, GGMLQuantizationType) and (t in kernels.FORMATS or t in _FLOAT_TYPES):
        return t
    raise QuantizationError(
        f"tensor {choice.name}: type {ggml_type_name(t)} has no quantizer in modelkit yet")


def _steps(items: Sequence[_Item], chunk_rows: int | None, report: bool) -> Iterator[_Step]:
    for i, it in enumerate(items):
        t = it.tensor
        if not it.choice.quantize:
            if it.nbytes == 0:
                yield _Step(i, last=True)
                continue
            done = 0
            while done < it.nbytes:
                n = min(COPY_SLICE, it.nbytes - done)
                yield _Step(i, copy_offset=t.offset + done, copy_bytes=n,
                            last=done + n == it.nbytes)
                done += n
            continue
        n_per_row = it.n_per_row
        per = chunk_rows or max(1, CHUNK_ELEMENTS // n_per_row)
        src_row = _row_bytes(t.type, n_per_row)
        # A per-expert imatrix changes at each 2-D matrix: chunks never straddle one.
        im = it.imatrix
        per_matrix = im is not None and im.size != n_per_row
        mat_rows = t.shape[1] if per_matrix else it.rows
        for m0 in range(0, it.rows, mat_rows):
            vec = None
            if im is not None:
                k = m0 // mat_rows
                vec = im[k * n_per_row:(k + 1) * n_per_row] if per_matrix else im
            for r0 in range(m0, m0 + mat_rows, per):
                rows = min(per, m0 + mat_rows - r0)
                job = _Job(t.offset + r0 * src_row, rows, n_per_row, t.type,
                           it.target, vec, report)
                yield _Step(i, job=job, last=r0 + rows == it.rows)


# --------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------


class _Runner:
    """Runs jobs in order-preserving fashion: in-process, or in a pool with look-ahead."""

    def __init__(self, source: _Source, paths: Sequence[Path], workers: int,
                 use_threads: bool) -> None:
        self.source = source
        self.workers = workers
        self.pool: cf.Executor | None = None
        if workers > 1:
            if use_threads:
                self.pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="requantize")
            else:
                self.pool = cf.ProcessPoolExecutor(
                    workers, mp_context=_mp_context(), initializer=_worker_init,
                    initargs=([str(p) for p in paths],))

    def submit(self, job: _Job) -> cf.Future[_JobResult]:
        assert self.pool is not None
        if isinstance(self.pool, cf.ThreadPoolExecutor):
            return self.pool.submit(_run_job, self.source, job)
        return self.pool.submit(_worker_run, job)

    def close(self, *, cancel: bool) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=cancel)
            self.pool = None


def _mp_context() -> multiprocessing.context.BaseContext:
    """``fork`` where it is safe and cheap (Linux, no other threads in this process);
    else ``forkserver``/``spawn``.  Workers get only a path and open the map themselves,
    so any start method gives the same result."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def _execute(steps: Sequence[_Step], runner: _Runner,
             handle: Callable[[_Step, _JobResult | None], None],
             start: Callable[[], None] = lambda: None) -> None:
    """Run every step, handing results to ``handle`` in step order.  With a pool, keeps
    up to ``2 * workers`` jobs in flight ahead of the one being written.  ``start`` runs
    before the first ``handle``; with a pool, after the first jobs are submitted, so
    that the workers are already busy while it runs (it writes the header)."""
    if runner.pool is None:
        start()
        for step in steps:
            handle(step, _run_job(runner.source, step.job) if step.job is not None else None)
        return
    window = 2 * runner.workers
    pending: deque[tuple[int, cf.Future[_JobResult]]] = deque()
    next_submit = 0

    def fill() -> None:
        nonlocal next_submit
        while next_submit < len(steps) and len(pending) < window:
            job = steps[next_submit].job
            if job is not None:
                pending.append((next_submit, runner.submit(job)))
            next_submit += 1

    with contextlib.suppress(cf.process.BrokenProcessPool):  # met again, and handled, below
        fill()
    start()
    for i, step in enumerate(steps):
        if runner.pool is None:  # the pool broke: finish in-process
            handle(step, _run_job(runner.source, step.job) if step.job is not None else None)
            continue
        try:
            fill()
            if step.job is None:
                handle(step, None)
                continue
            idx, fut = pending.popleft()
            assert idx == i
            result = fut.result()
        except cf.process.BrokenProcessPool:
            # A worker could not start or died (e.g. forkserver/spawn cannot re-import a
            # __main__ read from stdin).  Jobs are pure, so doing this one and the rest
            # here gives the same bytes.
            runner.close(cancel=True)
            pending.clear()
            handle(step, _run_job(runner.source, step.job) if step.job is not None else None)
            continue
        handle(step, result)


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


def _is_block_type(t: GGMLQuantizationType) -> bool:
    return GGML_QUANT_SIZES[t][0] > 1


def _bits_per_weight(t: GGMLQuantizationType) -> float:
    block_size, type_size = GGML_QUANT_SIZES[t]
    return type_size * 8 / block_size


GGUFSource = str | os.PathLike[str] | GGUFInfo | Sequence[GGUFInfo]


def requantize(
    src: GGUFSource,
    out: _Writable | BinaryIO,
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
    info = _joined(parts)
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    emit = progress or (lambda _event: None)

    fp = plan_file(info, file_type, options, imatrix)
    plan = fp.plan
    alignment = fp.alignment
    items = _layout(fp, alignment)
    kvs = fp.kvs
    slots = _slots(items)

    target = fp.name
    status = f"quantizing {_source_label(info)} model to {target}"
    # Going up in precision (Q8_0 to F16) loses nothing; only fewer bits re-round values.
    requantized = [it.tensor.name for it in items
                   if it.choice.quantize and _is_block_type(it.tensor.type)
                   and _bits_per_weight(it.target) < _bits_per_weight(it.tensor.type)]
    if requantized:
        emit(ProgressEvent(
            f"warning: requantizing an already quantized model ({_source_label(info)}) to "
            f"{target}: {len(requantized)} tensors are dequantized and quantized again, "
            "which loses quality; quantize from the F16/BF16/F32 original instead "
            "(Ollama refuses this)", warning=True))
    fallback_log = tuple(
        line for it in items
        if (line := fallback_warning(it.choice, it.n_per_row)) is not None)

    paths = [part.path for part in parts]
    try:
        source = _Source(paths)
    except (OSError, ValueError) as exc:
        raise GGUFError(f"{info.path}: cannot map: {exc}") from None

    total_convert = sum(it.tensor.n_elements for it in items if it.choice.quantize)
    n_workers = workers if workers is not None else _cpu_count()
    if workers is None and total_convert < POOL_MIN_ELEMENTS:
        n_workers = 1
    n_workers = max(1, n_workers)

    sink = _Sink(out)
    runner: _Runner | None = None
    ok = False
    try:
        data_offset = 0
        done_tensors = 0
        runner = _Runner(source, paths, n_workers, use_threads)

        def start() -> None:
            nonlocal data_offset
            sink.write(encode_header(kvs, slots, alignment))
            data_offset = sink.pos
            emit(ProgressEvent(status, total=len(items), completed=0, unit="tensors"))

        def handle(step: _Step, result: _JobResult | None) -> None:
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

        _execute(list(_steps(items, chunk_rows, report)), runner, handle, start)
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

