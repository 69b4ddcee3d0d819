"""Plan a conversion (every output tensor's name, shape and type, every KV) without
reading tensor data, then stream the tensors one at a time into the GGUF.

Per-tensor output type (llama.cpp's rules, in order): 1-D tensors, names ending
``_norm.weight``, names not ending ``.weight`` and a few special tensors (MoE routers,
position/token-type embeddings) are F32; everything else takes the outtype (f32, f16,
bf16, q8_0); a q8_0 tensor whose rows are not a multiple of 32 falls back to F16.
``auto`` picks bf16 when the first BF16-or-F16 tensor with 2+ dimensions is BF16, else
f16 (also when every tensor is F32).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, Keys, LlamaFileType

from modelkit.convert import bert, gemma, llama, phi3, qwen  # noqa: F401 - they register
from modelkit.convert.architecture import REGISTRY, Architecture, OutTensor, Source
from modelkit.convert.background_writer import BackgroundWriter, Writable
from modelkit.convert.hf_folder import HFFolder, open_folder
from modelkit.convert.kvs import KVList
from modelkit.convert.metadata import general_kvs, load_metadata, sampling_kvs
from modelkit.convert.safetensors_file import ShardedModel
from modelkit.errors import ConvertError
from modelkit.gguf_file import KV, TensorSlot, encode_header
from modelkit.gguf_file.format import pad
from modelkit.progress import ProgressCallback, ProgressEvent, ignore_progress
from modelkit.quant import kernels
from modelkit.quant.kernels.floats import (
    bf16_requantized,
    bf16_to_f16_bits,
    bf16_to_f32,
    f32_to_f16_values,
    fp32_to_bf16_bits,
)

Q = GGMLQuantizationType
ALIGNMENT = 32
CHUNK_ELEMENTS = 1 << 22  # values per piece when a large tensor is streamed in row chunks
OUTTYPES: dict[str, LlamaFileType] = {
    "f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16,
    "bf16": LlamaFileType.MOSTLY_BF16, "q8_0": LlamaFileType.MOSTLY_Q8_0,
}
_TENSOR_TYPE = {LlamaFileType.ALL_F32: Q.F32, LlamaFileType.MOSTLY_F16: Q.F16,
                LlamaFileType.MOSTLY_BF16: Q.BF16, LlamaFileType.MOSTLY_Q8_0: Q.Q8_0}


@dataclass(frozen=True)
class PlannedTensor:
    tensor: OutTensor
    type: GGMLQuantizationType
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.tensor.shape, dtype=np.int64))


@dataclass
class ConversionPlan:
    folder: HFFolder
    arch: Architecture
    model: ShardedModel
    file_type: int  # llama_ftype
    tensors: list[PlannedTensor]
    kvs: list[KV]
    warnings: list[str]

    def header(self) -> bytes:
        slots = [TensorSlot(p.tensor.name, tuple(reversed(p.tensor.shape)), p.type, p.n_bytes)
                 for p in self.tensors]
        return encode_header(self.kvs, slots, ALIGNMENT)

    @property
    def size(self) -> int:
        return len(self.header()) + sum(pad(p.n_bytes, ALIGNMENT) for p in self.tensors)

    @property
    def parameter_count(self) -> int:
        return sum(p.n_elements for p in self.tensors)


@dataclass(frozen=True)
class ConvertResult:
    path: Path
    size: int
    sha256: str
    architecture: str
    file_type: int  # llama_ftype
    n_tensors: int
    warnings: tuple[str, ...]


def supported_architectures() -> list[str]:
    return sorted(REGISTRY)


def architecture_for(folder: HFFolder) -> Architecture:
    cls = REGISTRY.get(folder.hf_arch)
    if cls is None:
        raise ConvertError(f"{folder.path / 'config.json'}: architecture {folder.hf_arch!r} "
                           f"is not supported (supported: {', '.join(supported_architectures())})")
    return cls(folder)


def byte_size(qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape, dtype=np.int64))
    return n // block * size


def tensor_type(t: OutTensor, ftype: LlamaFileType, f32_names: re.Pattern[str],
                warnings: list[str]) -> GGMLQuantizationType:
    if len(t.shape) <= 1 or t.name.endswith("_norm.weight"):
        return Q.F32
    if f32_names.fullmatch(t.name) or t.name[-7:] not in (".weight", ".lora_a", ".lora_b"):
        return Q.F32
    qtype = _TENSOR_TYPE[ftype]
    if qtype == Q.Q8_0 and t.shape[-1] % GGML_QUANT_SIZES[Q.Q8_0][0]:
        warnings.append(f"{t.name}: row length {t.shape[-1]} is not a multiple of 32, "
                        "falling back to F16")
        return Q.F16
    return qtype


def auto_file_type(sources: list[Source]) -> LlamaFileType:
    """The first BF16 or F16 tensor of 2+ dimensions decides (others are skipped);
    f16 when there is none."""
    for s in sources:
        if len(s.shape) >= 2 and s.entry.dtype in ("BF16", "F16"):
            return LlamaFileType.MOSTLY_BF16 if s.entry.dtype == "BF16" else \
                LlamaFileType.MOSTLY_F16
    return LlamaFileType.MOSTLY_F16


def _sources(arch: Architecture, model: ShardedModel) -> list[Source]:
    by_name: dict[str, Source] = {}
    for entry in model.entries():
        name = arch.filter(entry.name)
        if name is not None:
            by_name[name] = Source(name, entry, model)
    return list(by_name.values())


def _counts(tensors: list[PlannedTensor]) -> tuple[int, int, int, int]:
    total = shared = expert = expert_sum = n_expert = 0
    for p in tensors:
        shape, size = p.tensor.shape, p.n_elements
        if "_exps." in p.tensor.name and len(shape) >= 3:
            count = shape[-2 if ".bias" in p.tensor.name else -3]
            expert += size // count
            expert_sum += count
            n_expert += 1
        else:
            shared += size
        total += size
    return total, shared, expert, (expert_sum // n_expert if n_expert else 0)


def plan_conversion(src: Path, outtype: str = "auto", pre: str | None = None,
                    ) -> ConversionPlan:
    """Everything about the GGUF ``src`` converts to, without reading tensor data.
    ``pre`` overrides the BPE pre-tokenizer name the hash look-up would choose."""
    folder = open_folder(src)
    folder.pre = pre
    arch = architecture_for(folder)
    model = ShardedModel(folder.path)
    sources = _sources(arch, model)
    if outtype == "auto":
        ftype = auto_file_type(sources)
    elif outtype in OUTTYPES:
        ftype = OUTTYPES[outtype]
    else:
        raise ConvertError(f"unknown outtype {outtype!r} (f32, f16, bf16, q8_0, auto)")
    warnings: list[str] = []
    f32_names = arch.f32_names()
    tensors = []
    for t in arch.plan(sources):
        qtype = tensor_type(t, ftype, f32_names, warnings)
        tensors.append(PlannedTensor(t, qtype, byte_size(qtype, t.shape)))
    kv = KVList()
    kv.string(Keys.General.ARCHITECTURE, arch.arch_name)
    arch.early_kvs(kv)
    kv.string(Keys.General.TYPE, "model")
    sampling_kvs(folder, kv)
    total, shared, expert, n_experts = _counts(tensors)
    md = load_metadata(folder, total)
    if md.fields.get("size_label") is None and total > 0:
        md.fields["size_label"] = gguf.size_label(total, shared, expert, n_experts)
    general_kvs(md, kv)
    arch.set_params(kv, int(ftype))
    kv.add(Keys.General.QUANTIZATION_VERSION, gguf.GGML_QUANT_VERSION, GGUFValueType.UINT32)
    arch.set_vocab(kv)
    return ConversionPlan(folder, arch, model, ftype, tensors, kv.items(), warnings)


def encode(values: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """float32/float16 values, or BF16 bit patterns (uint16: a BF16 source read as
    stored, see ``OutTensor.bf16_rows``) -> the tensor's data as ``qtype``. BF16 to
    F16/BF16 goes straight from the bits (the same bytes as through float32)."""
    if values.dtype == np.uint16:
        if qtype == Q.F16:
            return bf16_to_f16_bits(values).view(np.float16)
        if qtype == Q.BF16:
            return bf16_requantized(values)
        values = bf16_to_f32(values)
    if qtype == Q.F32:
        return np.ascontiguousarray(values, dtype=np.float32)
    if qtype == Q.F16:
        if values.dtype == np.float32:
            return f32_to_f16_values(values)
        return np.ascontiguousarray(values.astype(np.float16, copy=False))
    if qtype == Q.BF16:
        return fp32_to_bf16_bits(values)
    rows = values.astype(np.float32, copy=False).reshape(-1, values.shape[-1])
    return kernels.quantize(qtype, rows)


def encoder(qtype: GGMLQuantizationType) -> Callable[[np.ndarray], np.ndarray]:
    def run(values: np.ndarray) -> np.ndarray:
        return encode(values, qtype)
    return run


def value_chunks(p: PlannedTensor) -> Iterator[np.ndarray]:
    """A tensor's values in file order (BF16 bit patterns when ``bf16_rows`` gives them):
    whole, or in row chunks of about ``CHUNK_ELEMENTS`` when it can be produced piecewise
    (so memory follows the chunk)."""
    t = p.tensor
    n = p.n_elements
    if t.rows is None or len(t.shape) < 2 or n <= CHUNK_ELEMENTS:
        values = t.load() if t.bf16_rows is None else t.bf16_rows(0, t.shape[0])
        if tuple(values.shape) != tuple(t.shape):
            raise ConvertError(f"tensor {t.source!r}: produced shape {list(values.shape)}, "
                               f"planned {list(t.shape)}")
        yield values
        return
    read = t.rows if t.bf16_rows is None else t.bf16_rows
    rows = t.shape[0]
    step = max(1, CHUNK_ELEMENTS // (n // rows))
    for lo in range(0, rows, step):
        yield read(lo, min(rows, lo + step))


Encoded = np.ndarray | Future[np.ndarray]


def stream_tensors(tensors: Sequence[tuple[PlannedTensor, Callable[[np.ndarray], Encoded],
                                           int]],
                   out: BackgroundWriter, progress: ProgressCallback, status: str,
                   lookahead: int = 0) -> None:
    """Write each tensor's encoded chunks in order, check its size, pad it, release its
    source. An encoder may return a Future (work done in a pool): up to ``lookahead``
    chunks are then in flight ahead of the writer."""
    total = len(tensors)
    queue: deque[tuple[Encoded | None, int]] = deque()  # (chunk, or None: end of tensor i)
    written = 0

    def flush(keep: int) -> None:
        nonlocal written
        while len(queue) > keep:
            item, i = queue.popleft()
            p, _, n_bytes = tensors[i]
            if item is not None:
                data = np.ascontiguousarray(item.result() if isinstance(item, Future) else item)
                out.put(memoryview(data).cast("B"))  # type: ignore[arg-type]
                written += data.nbytes
                continue
            if written != n_bytes:  # pragma: no cover - a planning bug
                raise ConvertError(f"{p.tensor.name}: wrote {written} bytes, planned {n_bytes}")
            written = 0
            out.put(b"\0" * (pad(n_bytes, ALIGNMENT) - n_bytes))
            if p.tensor.release is not None:
                # Drop the source pages once nothing reads them any more: a chunk may be
                # a view of them until it is pickled for a worker, hashed and written,
                # and pages read back after an early release would stay resident.
                out.after(p.tensor.release)
            progress(ProgressEvent(status, total=total, completed=i + 1, unit="tensors"))

    try:
        for i, (p, encode_chunk, _) in enumerate(tensors):
            for chunk in value_chunks(p):
                queue.append((encode_chunk(chunk), i))
                flush(lookahead)
            queue.append((None, i))
        flush(0)
    finally:
        for item, _ in queue:
            if isinstance(item, Future):
                item.cancel()


def write_plan(plan: ConversionPlan, f: Writable,
               progress: ProgressCallback = ignore_progress) -> str:
    """Stream the GGUF into ``f``; returns its sha256."""
    with BackgroundWriter(f) as out:
        out.put(plan.header())
        stream_tensors([(p, encoder(p.type), p.n_bytes) for p in plan.tensors], out,
                       progress, "converting tensors")
        return out.finish()


def outtype_sizes(plan: ConversionPlan) -> dict[str, int]:
    """The GGUF's size for each of the converter's outtypes (types and offsets are the
    same length whatever the outtype, so only the tensor data sizes change)."""
    header = len(plan.header())
    f32_names = plan.arch.f32_names()
    sizes = {}
    for name, ftype in OUTTYPES.items():
        types = [tensor_type(p.tensor, ftype, f32_names, []) for p in plan.tensors]
        sizes[name] = header + sum(pad(byte_size(t, p.tensor.shape), ALIGNMENT)
                                   for t, p in zip(types, plan.tensors, strict=True))
    return sizes
