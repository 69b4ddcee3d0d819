"""Read safetensors files without torch: our own header parser and memory-mapped tensors.

Layout of a ``.safetensors`` file::

    u64 LE  N                  length of the JSON header
    N bytes JSON               {"__metadata__": {...}, name: {"dtype", "shape",
                                "data_offsets": [begin, end]}, ...}
    ...     data               offsets are relative to the end of the header

Every entry is checked before any data is touched: a known dtype, a shape of
non-negative integers, offsets inside the data section whose span is exactly
``prod(shape) * itemsize``, and no two tensors overlapping. Any violation is one
``ConvertError`` line naming the file and the tensor.

Tensors are numpy views into a read-only memory map; BF16 (which numpy lacks) is widened
to float32 exactly by shifting its 16 bits into the top half of a 32-bit word.
A sharded model (``model.safetensors.index.json``) is a ``ShardedModel``.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelkit.errors import ConvertError
from modelkit.quant.kernels.floats import bf16_to_f32

INDEX_NAME = "model.safetensors.index.json"
_MADV_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)
MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit

# dtype name -> numpy storage dtype. BF16 is stored as uint16 and widened on read.
DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of one file: where its bytes are and what they mean."""

    name: str
    dtype: str  # safetensors dtype name ("BF16", "F16", ...)
    shape: tuple[int, ...]  # numpy order (the HF shape)
    begin: int  # absolute file offset of the first byte
    end: int  # absolute file offset after the last byte
    path: Path

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _fail(path: Path, what: str, tensor: str | None = None) -> ConvertError:
    where = f"{path}: tensor {tensor!r}: " if tensor is not None else f"{path}: "
    return ConvertError(where + what)


def _shape(path: Path, name: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise _fail(path, f"bad shape {raw!r}", name)
    return tuple(raw)


def parse_header(path: Path, head: bytes, file_size: int) -> list[TensorEntry]:
    """The entries of a safetensors header, validated against the file size.

    ``head`` holds at least the first ``8 + N`` bytes of the file (all of it is fine).
    Entries come back in the order of their data offsets.
    """
    if file_size < 8 or len(head) < 8:
        raise _fail(path, f"truncated safetensors file ({file_size} bytes, no header)")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER or 8 + n > file_size:
        raise _fail(path, f"safetensors header length {n} does not fit in the "
                          f"{file_size}-byte file")
    if len(head) < 8 + n:
        raise _fail(path, "truncated safetensors header")
    try:
        header = json.loads(head[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _fail(path, "safetensors header is not a JSON object")
    data_start = 8 + n
    data_len = file_size - data_start
    entries: list[TensorEntry] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise _fail(path, "entry is not an object", name)
        dtype = info.get("dtype")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise _fail(path, f"unknown dtype {dtype!r}", name)
        shape = _shape(path, name, info.get("shape"))
        offsets = info.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise _fail(path, f"bad data_offsets {offsets!r}", name)
        begin, end = offsets
        if not 0 <= begin <= end <= data_len:
            raise _fail(path, f"data_offsets [{begin}, {end}] out of range (data section is "
                              f"{data_len} bytes)", name)
        n_el = 1
        for d in shape:
            n_el *= d
        expected = n_el * DTYPES[dtype].itemsize
        if end - begin != expected:
            raise _fail(path, f"data_offsets span {end - begin} bytes but {dtype} "
                              f"{list(shape)} needs {expected}", name)
        entries.append(TensorEntry(name, dtype, shape, data_start + begin, data_start + end,
                                   path))
    entries.sort(key=lambda e: (e.begin, e.end))
    reach: TensorEntry | None = None  # the entry reaching furthest so far
    for cur in entries:
        if reach is not None and cur.begin < reach.end and cur.end > cur.begin:
            raise _fail(path, f"data overlaps tensor {reach.name!r}", cur.name)
        if reach is None or cur.end > reach.end:
            reach = cur
    return entries


class SafetensorsFile:
    """One memory-mapped safetensors file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = open(path, "rb")
        except FileNotFoundError:
            raise _fail(path, "no such file") from None
        except OSError as exc:
            raise _fail(path, f"cannot open: {exc.strerror or exc}") from None
        size = path.stat().st_size
        head = self._file.read(8)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            if n <= MAX_HEADER and 8 + n <= size:
                head += self._file.read(n)
        entries = parse_header(path, head, size)
        self.entries: dict[str, TensorEntry] = {e.name: e for e in entries}
        self._map: mmap.mmap | None = (
            mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None)

    def close(self) -> None:
        # Views handed out keep the map alive through their buffer; the file can close.
        self._file.close()

    def raw(self, name: str, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """The tensor's stored values as a read-only numpy view (BF16 as uint16); with
        ``lo``/``hi``, only those rows (the leading axis)."""
        e = self.entries[name]
        assert self._map is not None or e.begin == e.end
        if not e.shape:
            return np.frombuffer(self._map or b"", dtype=DTYPES[e.dtype], count=1,
                                 offset=e.begin).reshape(())
        rows = e.shape[0]
        hi = rows if hi is None else hi
        row_bytes = (e.end - e.begin) // rows if rows else 0
        count = (hi - lo) * row_bytes
        if count == 0:
            return np.empty((hi - lo, *e.shape[1:]), dtype=DTYPES[e.dtype])
        buf = np.frombuffer(self._map, dtype=np.uint8, count=count,  # type: ignore[arg-type]
                            offset=e.begin + lo * row_bytes)
        return buf.view(DTYPES[e.dtype]).reshape(hi - lo, *e.shape[1:])

    def array(self, name: str, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """The tensor (or rows ``lo:hi``) as numpy: F16/F32 as stored (a view), BF16
        widened to float32."""
        e = self.entries[name]
        data = self.raw(name, lo, hi)
        if e.dtype == "BF16":
            return bf16_to_f32(data)
        return data

    def release(self, name: str) -> None:
        """Drop the tensor's pages from this process's resident set (the page cache
        keeps them): peak memory then follows one tensor, not the whole model."""
        e = self.entries[name]
        if self._map is None or _MADV_DONTNEED is None or e.end <= e.begin:
            return
        start = e.begin - e.begin % mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError):
            self._map.madvise(_MADV_DONTNEED, start, e.end - start)


def _read_index(folder: Path) -> dict[str, str]:
    path = folder / INDEX_NAME
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"cannot read the shard index ({exc})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise _fail(path, "no 'weight_map' object mapping tensor names to files")
    return weight_map


class ShardedModel:
    """All safetensors parts of a model folder, in the converter's order: the parts
    sorted by file name (the index's distinct file names, or ``model*.safetensors``),
    and inside each part the tensor names sorted as strings."""

    def __init__(self, folder: Path, prefix: str = "model") -> None:
        self.folder = folder
        index_path = folder / INDEX_NAME
        weight_map: Mapping[str, str] = {}
        if prefix == "model" and index_path.is_file():
            weight_map = _read_index(folder)
            names = sorted(set(weight_map.values()))
            for part in names:
                if not (folder / part).is_file():
                    missing = sorted(t for t, f in weight_map.items() if f == part)
                    raise _fail(index_path, f"names shard {part!r} which is missing "
                                            f"(it holds {len(missing)} tensors, first "
                                            f"{missing[0]!r})")
        else:
            names = sorted(p.name for p in folder.glob(f"{prefix}*.safetensors"))
        if not names:
            raise ConvertError(f"{folder}: no {prefix}*.safetensors files")
        self.parts = [SafetensorsFile(folder / n) for n in names]
        self.where: dict[str, SafetensorsFile] = {}
        for sf in self.parts:
            for name in sf.entries:
                self.where[name] = sf
        if weight_map:
            for name, file in weight_map.items():
                if name not in self.where:
                    raise _fail(index_path, f"lists tensor {name!r} in {file!r} but that "
                                            "file does not hold it")
            for name, sf in self.where.items():
                if name not in weight_map:
                    raise _fail(sf.path, "is not listed in " + INDEX_NAME, name)

    def entries(self) -> Iterator[TensorEntry]:
        """Every tensor in emission order (parts by name, names sorted within a part)."""
        for part in self.parts:
            for name in sorted(part.entries):
                yield part.entries[name]

    def array(self, name: str, lo: int = 0, hi: int | None = None) -> np.ndarray:
        return self.where[name].array(name, lo, hi)

    def raw(self, name: str, lo: int = 0, hi: int | None = None) -> np.ndarray:
        return self.where[name].raw(name, lo, hi)

    def release(self, name: str) -> None:
        self.where[name].release(name)

    def close(self) -> None:
        for p in self.parts:
            p.close()
