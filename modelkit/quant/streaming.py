"""The streaming half of :mod:`modelkit.quant.requantize`: the source map, the chunk
jobs, the worker pool and the sink.

The plan laid out (:func:`layout`) gives every output tensor its type, size and offset;
:func:`chunk_steps` turns it into steps in write order.  A tensor to convert is cut into
chunks of whole rows (rows are independent for every type, so the bytes do not depend on
where the cuts are).  Each chunk is read from the memory map, converted to float32
(dequantized when the source is already quantized), quantized and handed back as bytes;
chunks are written strictly in order.  Tensors that keep their type are copied from the
map in slices of :data:`COPY_SLICE` bytes.  With ``workers > 1`` a pool of processes (or
threads) quantizes chunks ahead of the writer (:func:`execute`), at most ``2 * workers``
chunks in flight.  Each worker process maps the source itself (in the pool initializer);
only job descriptions go to the workers and only quantized bytes come back.

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
import ctypes
import ctypes.util
import mmap
import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType

from modelkit.errors import QuantizationError
from modelkit.gguf_file import GGUFInfo, TensorInfo
from modelkit.gguf_file.format import pad
from modelkit.quant import kernels
from modelkit.quant.file_types import GGMLType, ggml_type_name, row_bytes
from modelkit.quant.fileplan import FilePlan
from modelkit.quant.policy import TensorChoice

__all__ = [
    "CHUNK_ELEMENTS",
    "COPY_SLICE",
    "Item",
    "Job",
    "JobResult",
    "Runner",
    "Sink",
    "Source",
    "Step",
    "Writable",
    "chunk_steps",
    "execute",
    "joined",
    "layout",
]

T = GGMLQuantizationType
F32Array = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]

CHUNK_ELEMENTS = 1 << 20  # default elements per quantization job (4 MiB as float32)
COPY_SLICE = 8 << 20  # bytes per slice when copying a tensor unchanged

_FLOAT_TYPES = (T.F32, T.F16, T.BF16)


# --------------------------------------------------------------------------------------
# Conversions: every type (float and block) in modelkit.quant.kernels
# --------------------------------------------------------------------------------------


def _to_float32(raw: U8Array, qtype: GGMLType, n_per_row: int) -> F32Array:
    """Rows of raw source bytes -> float32 ``(rows, n_per_row)``."""
    out = kernels.to_float32(raw, qtype)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(raw.shape[0], n_per_row)


def _quantize(qtype: GGMLType, x: F32Array, imatrix: F32Array | None) -> U8Array:
    """float32 rows -> raw bytes of ``qtype`` ``(rows, row_bytes)``."""
    if qtype not in kernels.SUPPORTED_TYPES:
        raise QuantizationError(f"no quantizer for type {qtype.name}")
    return kernels.quantize(qtype, x, imatrix)


def _dequantize(qtype: GGMLType, q: U8Array, n_per_row: int) -> F32Array:
    """Raw bytes of ``qtype`` -> float32 rows (for the error report)."""
    return kernels.dequantize(qtype, q, n_per_row)


# --------------------------------------------------------------------------------------
# Source memory map
# --------------------------------------------------------------------------------------

_MADV_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)


class Source:
    """Read-only memory maps of the source file, or of a split set's parts laid end to
    end (offsets run on from one part into the next, as :func:`joined` numbers the
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


def joined(parts: Sequence[GGUFInfo]) -> GGUFInfo:
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
class Job:
    offset: int  # absolute offset of the first source row
    rows: int
    n_per_row: int
    src_type: GGMLType
    dst_type: GGMLType
    imatrix: F32Array | None
    report: bool


@dataclass(frozen=True)
class JobResult:
    data: bytes
    sumsq: float = 0.0  # sum of squared errors (report only)
    maxabs: float = 0.0


def _run_job(source: Source, job: Job) -> JobResult:
    src_row = row_bytes(job.src_type, job.n_per_row)
    nbytes = src_row * job.rows
    raw = source.view(job.offset, nbytes).reshape(job.rows, src_row)
    x = _to_float32(raw, job.src_type, job.n_per_row)
    del raw
    source.release(job.offset, nbytes)
    q = _quantize(job.dst_type, x, job.imatrix)
    if not job.report:
        return JobResult(q.tobytes())
    y = _dequantize(job.dst_type, q, job.n_per_row)
    with np.errstate(invalid="ignore", over="ignore"):
        d = y.astype(np.float64).ravel()
        del y
        d -= x.ravel()
        sumsq = float(np.dot(d, d))
        maxabs = float(np.max(np.abs(d, out=d))) if d.size else 0.0
    return JobResult(q.tobytes(), sumsq, maxabs)


# Per-process state of pool workers: each maps the source once, in the initializer.
_WORKER_SOURCE: list[Source] = []


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_HEAP_KEEP_BYTES = 256 << 20  # freed heap memory kept for reuse, at most
_MMAP_FROM_BYTES = 64 << 20  # blocks this large or larger still get their own mapping


def keep_freed_memory() -> None:
    """Let glibc reuse freed memory instead of returning it to the kernel.

    Every chunk allocates and frees a few MiB of arrays; by default glibc maps large
    blocks afresh and trims the heap, so with the k-quants' 1 MiB search arrays each
    chunk's arrays page-fault in again (measured for a 0.3B q4_K_M, one worker: 708k
    minor faults and 2.9 s of system time without this, 21k and 0.7-0.9 s with it).
    Peak memory stays bounded by the chunk size (the same peak RSS as before). Nothing
    happens without glibc; forked workers inherit the setting."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM_BYTES)
    mallopt(_M_TRIM_THRESHOLD, _HEAP_KEEP_BYTES)


def _worker_init(paths: list[str]) -> None:
    keep_freed_memory()
    _WORKER_SOURCE.clear()
    _WORKER_SOURCE.append(Source([Path(p) for p in paths]))


def _worker_run(job: Job) -> JobResult:
    return _run_job(_WORKER_SOURCE[0], job)


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


class Writable(Protocol):
    def write(self, data: Any, /) -> Any: ...


class Sink:
    """Counts what goes to ``out``."""

    def __init__(self, out: Writable) -> None:
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

# --------------------------------------------------------------------------------------
# The plan, laid out
# --------------------------------------------------------------------------------------


@dataclass
class Item:
    tensor: TensorInfo
    choice: TensorChoice
    target: GGMLType  # choice.target_type, a type we can write
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
class Step:
    """One unit of output, in write order: a quantization job or a copy slice."""

    item: int
    job: Job | None = None
    copy_offset: int = 0
    copy_bytes: int = 0
    last: bool = False  # the last step of its tensor


def layout(fp: FilePlan, alignment: int) -> list[Item]:
    items: list[Item] = []
    offset = 0
    for p in fp.tensors:
        target = _kernel_type(p.choice) if p.choice.quantize else p.tensor.type
        weights = p.weights if target not in _FLOAT_TYPES else None  # floats ignore them
        items.append(Item(p.tensor, p.choice, target, p.nbytes, offset, weights))
        offset += pad(p.nbytes, alignment)
    return items


def _kernel_type(choice: TensorChoice) -> GGMLType:
    """The target type of a tensor to convert, refused when modelkit has no quantizer
    for it yet (the plan covers llama.cpp's whole menu; the kernels come type by type)."""
    t = choice.target_type
    if t in kernels.FORMATS or t in _FLOAT_TYPES:
        return t
    raise QuantizationError(
        f"tensor {choice.name}: type {ggml_type_name(t)} has no quantizer in modelkit yet")


def chunk_steps(items: Sequence[Item], chunk_rows: int | None, report: bool) -> Iterator[Step]:
    for i, it in enumerate(items):
        t = it.tensor
        if not it.choice.quantize:
            if it.nbytes == 0:
                yield Step(i, last=True)
                continue
            done = 0
            while done < it.nbytes:
                n = min(COPY_SLICE, it.nbytes - done)
                yield Step(i, copy_offset=t.offset + done, copy_bytes=n,
                            last=done + n == it.nbytes)
                done += n
            continue
        n_per_row = it.n_per_row
        per = chunk_rows or max(1, CHUNK_ELEMENTS // n_per_row)
        src_row = row_bytes(t.type, n_per_row)
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
                job = Job(t.offset + r0 * src_row, rows, n_per_row, t.type,
                           it.target, vec, report)
                yield Step(i, job=job, last=r0 + rows == it.rows)


# --------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------


class Runner:
    """Runs jobs in order-preserving fashion: in-process, or in a pool with look-ahead."""

    def __init__(self, source: Source, paths: Sequence[Path], workers: int,
                 use_threads: bool) -> None:
        self.source = source
        self.workers = workers
        self.pool: cf.Executor | None = None
        keep_freed_memory()
        if workers > 1:
            if use_threads:
                self.pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="requantize")
            else:
                self.pool = cf.ProcessPoolExecutor(
                    workers, mp_context=_mp_context(), initializer=_worker_init,
                    initargs=([str(p) for p in paths],))

    def submit(self, job: Job) -> cf.Future[JobResult]:
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


def execute(steps: Sequence[Step], runner: Runner,
             handle: Callable[[Step, JobResult | None], None],
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
    pending: deque[tuple[int, cf.Future[JobResult]]] = deque()
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
