"""Read a GGUF header: our own parser, over a file or any byte supplier.

gguf's ``GGUFReader`` makes a numpy view per array element, which costs seconds for a
tokenizer vocabulary.  This parser reads the header sequentially from a supplier
``read(offset, n) -> bytes`` (a file, bytes in memory, HTTP range requests), fetching
bigger and bigger pieces, and decodes arrays in bulk: numeric arrays with one
``numpy.frombuffer``, string arrays with one pass that finds the strings and one UTF-8
decode that checks them all.  The Python lists are made on first access
(:class:`~modelkit.gguf_file.info.Metadata`).

Everything is checked before it is used, so garbage or a truncated file becomes one
``GGUFError`` naming the file, the place and (when it is short) by how many bytes, and
no count read from the file can make it allocate more than the file could hold.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType, Keys
from gguf.constants import GGUF_DEFAULT_ALIGNMENT

from modelkit.errors import GGUFError
from modelkit.gguf_file.format import (
    DTYPES,
    GGUF_MAGIC,
    HEADER,
    MAX_DIMS,
    SCALARS,
    SUPPORTED_VERSIONS,
    U32,
    U64,
    EncodedArray,
    pad,
)
from modelkit.gguf_file.info import GGUFInfo, Metadata, TensorInfo
from modelkit.quant.file_types import GGMLType, block_size, ggml_type_from_id, type_size

ReadAt = Callable[[int, int], bytes]
"""``read(offset, n)``: the ``n`` bytes at ``offset`` (fewer only at the end of the file)."""

FIRST_READ = 1 << 20  # the first piece read; each further piece doubles what is held
# The smallest possible encodings of one KV pair (8-byte key length, 4-byte type, 1-byte
# value) and one tensor info (8 + 4 + 4 + 8): used to reject absurd counts up front.
MIN_KV_BYTES = 13
MIN_TENSOR_INFO_BYTES = 24
_NESTED_ARRAY_BYTES = 12  # element type and count of an array inside an array
_VALUE_TYPES = {int(t): t for t in GGUFValueType}


class _Cursor:
    """The header bytes read so far, and the position of the next item."""

    def __init__(self, read: ReadAt, size: int, path: Path, limit: int | None = None) -> None:
        self.read = read
        self.size = size
        self.path = path
        self.limit = limit
        self.buf = bytearray()
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        """Make sure ``n`` bytes from ``pos`` are held; a short file is an error."""
        end = self.pos + n
        if end <= len(self.buf):
            return
        if end > self.size:
            raise self.short(n, what)
        if self.limit is not None and end > self.limit:
            raise GGUFError(
                f"{self.path}: the GGUF header is larger than the {self.limit >> 20} MiB limit "
                f"({what} at offset {self.pos} ends at {end}); not reading further")
        have = len(self.buf)
        want = min(self.size, max(end, 2 * have, FIRST_READ), self.limit or self.size)
        try:
            piece = self.read(have, want - have)
        except OSError as exc:
            raise GGUFError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        self.buf += piece  # amortized: the buffer at least doubles each time
        if len(self.buf) < end:  # the file shrank, or the supplier ran dry
            self.size = len(self.buf)
            raise self.short(n, what)

    def short(self, n: int, what: str) -> GGUFError:
        return GGUFError(
            f"{self.path}: truncated GGUF: {what} at offset {self.pos} needs {n} bytes, but "
            f"the file ends at {self.size} ({self.pos + n - self.size} bytes short)")

    def unpack(self, st: struct.Struct, what: str) -> Any:
        self.need(st.size, what)
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return value

    def raw(self, n: int, what: str) -> bytes:
        self.need(n, what)
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return data

    def text(self, what: str) -> str:
        data = self.raw(self.unpack(U64, what), what)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFError(f"{self.path}: {what} is corrupt: {exc}") from None

    def value_type(self, what: str) -> GGUFValueType:
        raw = self.unpack(U32, what)
        vtype = _VALUE_TYPES.get(raw)
        if vtype is None:
            raise GGUFError(f"{self.path}: corrupt GGUF: {what} has an unknown value type {raw}")
        return vtype


# ----------------------------------------------------------------------------- values
def _value(cur: _Cursor, vtype: GGUFValueType, what: str
           ) -> tuple[Any, tuple[GGUFValueType, ...]]:
    """One value of type ``vtype`` at the cursor, and its type tuple."""
    if vtype == GGUFValueType.STRING:
        return cur.text(what), (vtype,)
    scalar = SCALARS.get(vtype)
    if scalar is not None:
        return cur.unpack(scalar, what), (vtype,)
    sub = cur.value_type(what)
    n = cur.unpack(U64, what)
    element = DTYPES[sub].itemsize if sub in DTYPES else (
        U64.size if sub == GGUFValueType.STRING else _NESTED_ARRAY_BYTES)
    if n * element > cur.size - cur.pos:
        raise GGUFError(
            f"{cur.path}: corrupt or truncated GGUF: {what} is an array of {n} {sub.name} "
            f"needing at least {n * element} bytes at offset {cur.pos}, but the file ends at "
            f"{cur.size} ({cur.pos + n * element - cur.size} bytes short)")
    if sub == GGUFValueType.STRING:
        return _string_array(cur, n, what), (vtype, sub)
    if sub != GGUFValueType.ARRAY:
        raw = cur.raw(n * element, what)
        dtype = DTYPES[sub]
        return EncodedArray(n, raw, lambda: np.frombuffer(raw, dtype).tolist()), (vtype, sub)
    items: list[Any] = []
    types: tuple[GGUFValueType, ...] = (vtype, sub)
    for i in range(n):
        item, item_types = _value(cur, sub, what)
        items.append(item.decode() if isinstance(item, EncodedArray) else item)
        if i == 0:
            types = (vtype, *item_types)
    return items, types


def _string_array(cur: _Cursor, n: int, what: str) -> EncodedArray:
    """Step over the ``n`` strings at the cursor (their bytes are decoded on first use)."""
    first = cur.pos
    # Read ahead what a vocabulary's strings usually take, then step over them with
    # nothing but the length reads: a read past the bytes held raises, and the careful
    # walk (which reads more, or names the string that is short) takes over.
    cur.need(min(n * 32, cur.size - first, (cur.limit or cur.size) - first), what)
    buf = cur.buf
    unpack = U64.unpack_from
    pos = first
    try:
        for _ in repeat(None, n):
            pos += unpack(buf, pos)[0] + 8
    except (struct.error, OverflowError):  # past the bytes held (or any offset at all)
        pos = _walk_strings(cur, n, what)
    _short_string(cur, pos, n - 1, what)
    cur.pos = first
    cur.need(pos - first, what)
    cur.pos = pos
    with memoryview(buf) as view:
        region = bytes(view[first:pos])
    path = cur.path  # not the cursor: the header buffer is not kept alive
    return EncodedArray(n, region, lambda: _decode_strings(path, what, region, n))


def _walk_strings(cur: _Cursor, n: int, what: str) -> int:
    """The end of the ``n`` strings at the cursor, reading more as needed."""
    pos = cur.pos
    unpack = U64.unpack_from
    buf = cur.buf
    for i in range(n):
        if pos + 8 > len(buf):
            _short_string(cur, pos, i - 1, what)
            cur.pos = pos
            cur.need(8, f"{what} (string {i})")
        pos += unpack(buf, pos)[0] + 8
    return pos


def _short_string(cur: _Cursor, end: int, i: int, what: str) -> None:
    if end > cur.size:
        raise GGUFError(
            f"{cur.path}: truncated GGUF: {what} (string {i}) ends at offset {end}, but the "
            f"file ends at {cur.size} ({end - cur.size} bytes short)")


def _decode_strings(path: Path, what: str, region: bytes, n: int) -> list[str]:
    """The ``n`` length-prefixed UTF-8 strings that fill ``region``."""
    unpack = U64.unpack_from
    starts = [0] * n
    pos = 0
    for i in range(n):
        pos += 8
        starts[i] = pos
        pos += unpack(region, pos - 8)[0]
    # Every length prefix zeroed: eight NULs end any UTF-8 sequence, so the region
    # decodes exactly when every string does, and in one call.
    zeroed = np.frombuffer(region, np.uint8).copy()
    if n:
        prefixes = np.asarray(starts, dtype=np.int64) - 8
        zeroed[(prefixes[:, None] + np.arange(8)).ravel()] = 0
    try:
        joined = zeroed.tobytes().decode("utf-8")
    except UnicodeDecodeError:
        joined = ""
    if joined.count("\0") == 8 * n:  # no NUL inside a string: split on the prefixes
        return joined.split("\0" * 8)[1:] if n else []
    # A string holds a NUL, or one is not UTF-8: one at a time, naming the bad one.
    ends = [*(a - 8 for a in starts[1:]), len(region)]
    out = []
    for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
        try:
            out.append(region[a:b].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise GGUFError(f"{path}: {what} (string {i}) is corrupt: {exc}") from None
    return out


# ----------------------------------------------------------------------------- header
def _check_header(cur: _Cursor) -> tuple[int, int, int]:
    cur.need(min(cur.size, HEADER.size), "the header")
    head = cur.buf[:HEADER.size]
    if len(head) < 4 or head[:4] != GGUF_MAGIC:
        raise GGUFError(f"{cur.path}: not a GGUF file (bad magic)")
    if len(head) < HEADER.size:
        raise GGUFError(f"{cur.path}: truncated GGUF header ({cur.size} bytes)")
    _, version, n_tensors, n_kv = HEADER.unpack(head)
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"{cur.path}: unsupported GGUF version {version}")
    need = HEADER.size + n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES
    if need > cur.size:
        raise GGUFError(
            f"{cur.path}: corrupt or truncated GGUF: {n_kv} metadata entries and {n_tensors} "
            f"tensors need at least {need} bytes, but the file ends at {cur.size} "
            f"({need - cur.size} bytes short)")
    cur.pos = HEADER.size
    return version, n_tensors, n_kv


def _metadata(cur: _Cursor, n_kv: int
              ) -> tuple[dict[str, Any], dict[str, tuple[GGUFValueType, ...]]]:
    values: dict[str, Any] = {}
    types: dict[str, tuple[GGUFValueType, ...]] = {}
    for i in range(n_kv):
        key = cur.text(f"metadata entry {i}")
        what = f"metadata key {key!r}"
        if key in values:
            raise GGUFError(f"{cur.path}: corrupt GGUF: {what} appears twice")
        values[key], types[key] = _value(cur, cur.value_type(what), what)
    return values, types


def _alignment(cur: _Cursor, values: dict[str, Any],
               types: dict[str, tuple[GGUFValueType, ...]]) -> int:
    key = Keys.General.ALIGNMENT
    if key not in values:
        return GGUF_DEFAULT_ALIGNMENT
    value = values[key]
    if types[key] != (GGUFValueType.UINT32,) or value == 0:
        raise GGUFError(f"{cur.path}: corrupt GGUF: {key} must be a non-zero uint32, "
                        f"not {value!r}")
    return int(value)


def _tensor_table(cur: _Cursor, n_tensors: int
                  ) -> list[tuple[str, tuple[int, ...], GGMLType, int]]:
    table = []
    names: set[str] = set()
    for i in range(n_tensors):
        name = cur.text(f"tensor info {i}")
        what = f"tensor {name!r}"
        if name in names:
            raise GGUFError(f"{cur.path}: corrupt GGUF: {what} appears twice")
        names.add(name)
        n_dims = cur.unpack(U32, what)
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"{cur.path}: {what} has {n_dims} dimensions (1 to {MAX_DIMS})")
        shape = tuple(cur.unpack(U64, what) for _ in range(n_dims))
        raw_type = cur.unpack(U32, what)
        qtype = ggml_type_from_id(raw_type)
        if qtype is None:
            raise GGUFError(f"{cur.path}: corrupt GGUF: {what} has an unknown type {raw_type}")
        table.append((name, shape, qtype, cur.unpack(U64, what)))
    return table


def _tensor(cur: _Cursor, data_offset: int, name: str, shape: tuple[int, ...],
            qtype: GGMLType, offset: int) -> TensorInfo:
    if any(d <= 0 for d in shape):
        raise GGUFError(f"{cur.path}: tensor {name!r} has an invalid shape {list(shape)}")
    block = block_size(qtype)
    if shape[0] % block:
        raise GGUFError(
            f"{cur.path}: tensor {name!r}: row length {shape[0]} is not a multiple of "
            f"the {qtype.name} block size {block}"
        )
    n_elements = 1
    for d in shape:
        n_elements *= d
    n_bytes = n_elements // block * type_size(qtype)
    return TensorInfo(name, qtype, shape, n_elements, n_bytes, data_offset + offset)


def _check_data(cur: _Cursor, tensors: tuple[TensorInfo, ...]) -> None:
    """Every tensor's data lies in the file; else name the first that does not, and say
    how many bytes the file lacks for all of them."""
    outside = [t for t in tensors if t.offset + t.n_bytes > cur.size]
    if outside:
        t = outside[0]
        short = max(u.offset + u.n_bytes for u in outside) - cur.size
        raise GGUFError(
            f"{cur.path}: tensor {t.name!r} data [{t.offset}, {t.offset + t.n_bytes}) lies "
            f"outside the file ({cur.size} bytes): truncated GGUF ({short} bytes short)"
        )


def read_gguf_from(read: ReadAt, size: int, source: str | os.PathLike[str], *,
                   limit: int | None = None) -> GGUFInfo:
    """Parse the GGUF header that ``read(offset, n)`` supplies, of a file of ``size``
    bytes; ``source`` names it in messages (and becomes ``GGUFInfo.path``). With
    ``limit``, no read goes past that offset: a longer header is one ``GGUFError``.

    Raises ``GGUFError`` naming the source and the problem for anything that is not a
    complete, well-formed GGUF.  Reads only the header, never the tensor data.
    """
    cur = _Cursor(read, size, Path(source), limit)
    version, n_tensors, n_kv = _check_header(cur)
    values, types = _metadata(cur, n_kv)
    table = _tensor_table(cur, n_tensors)
    alignment = _alignment(cur, values, types)
    data_offset = pad(cur.pos, alignment)
    tensors = tuple(_tensor(cur, data_offset, *row) for row in table)
    _check_data(cur, tensors)
    return GGUFInfo(path=cur.path, version=version, size=size, alignment=alignment,
                    data_offset=data_offset, metadata=Metadata(values),
                    metadata_types=types, tensors=tensors)


def read_gguf_bytes(data: bytes, source: str | os.PathLike[str]) -> GGUFInfo:
    """:func:`read_gguf_from` over bytes in memory (a header, or a whole file)."""
    return read_gguf_from(lambda offset, n: data[offset:offset + n], len(data), source)


def read_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Open ``path``, validate its header and tensor table, return its description.

    Raises ``GGUFError`` naming the file and the problem for anything that is not a
    complete, well-formed GGUF.
    """
    p = Path(path)
    if p.is_dir():
        raise GGUFError(f"{p}: is a directory, not a GGUF file")
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        raise GGUFError(f"{p}: no such file") from None
    except OSError as exc:
        raise GGUFError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        size = os.fstat(fd).st_size
        return read_gguf_from(lambda offset, n: os.pread(fd, n, offset), size, p)
    finally:
        os.close(fd)


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """Sniff the magic only (used to decide how to treat a FROM file)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False
