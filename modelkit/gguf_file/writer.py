"""The one GGUF header writer: header, metadata, tensor infos and the padding after them.

The bytes are those llama.cpp's ``gguf_write_to_file`` and gguf-py's ``GGUFWriter``
write (little-endian, version 3 by default), with one addition gguf-py refuses: an
empty array, which the format allows and llama.cpp copies.  Tensor data offsets are
laid out in the given order, each tensor's data padded to the alignment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGUFValueType

from modelkit.gguf_file.format import (
    DTYPES,
    GGUF_MAGIC,
    HEADER,
    SCALARS,
    U32,
    U64,
    EncodedArray,
    pad,
)
from modelkit.quant.file_types import GGMLType


@dataclass(frozen=True)
class KV:
    """One metadata pair as it will be written.

    ``value`` is a ``str``/``bytes`` (STRING), an int/float/bool (scalars) or a sequence
    (ARRAY: a list, a numpy array for numeric elements, or an ``EncodedArray`` as the
    reader gives it, whose bytes are copied).  ``subtype`` is the element
    type of an ARRAY; when None it is taken from the first element (as gguf's writer
    does), so an empty array needs it.
    """

    key: str
    value: Any
    type: GGUFValueType
    subtype: GGUFValueType | None = None


@dataclass(frozen=True)
class TensorSlot:
    """One tensor info as it will be written; ``shape`` in GGUF order, ``ne[0]`` first."""

    name: str
    shape: tuple[int, ...]
    type: GGMLType
    n_bytes: int


def _string(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return U64.pack(len(raw)) + raw


def _array(key: str, value: Any, subtype: GGUFValueType | None) -> list[bytes]:
    """An array's element type, count and elements, as pieces (joined once, later)."""
    if subtype is None:
        if len(value) == 0:
            raise ValueError(f"metadata key {key!r}: an empty array needs its element type")
        subtype = GGUFValueType.get_type(value[0])
    head = U32.pack(subtype) + U64.pack(len(value))
    if isinstance(value, EncodedArray):  # as read from a file: the same bytes
        return [head, value.data]
    if subtype == GGUFValueType.STRING:
        return [head, *(_string(s) for s in value)]
    dtype = DTYPES.get(subtype)
    if dtype is None:
        raise ValueError(f"metadata key {key!r}: arrays of {subtype.name} are not supported")
    return [head, np.asarray(value, dtype=dtype).tobytes()]


def _kv_pieces(kv: KV) -> list[bytes]:
    out = [_string(kv.key) + U32.pack(kv.type)]
    if kv.type == GGUFValueType.STRING:
        out.append(_string(kv.value))
    elif kv.type == GGUFValueType.ARRAY:
        out.extend(_array(kv.key, kv.value, kv.subtype))
    else:
        out.append(SCALARS[kv.type].pack(kv.value))
    return out


def encode_kv(kv: KV) -> bytes:
    """One metadata pair: key, value type, value."""
    return b"".join(_kv_pieces(kv))


def encode_header(kvs: Sequence[KV], tensors: Sequence[TensorSlot], alignment: int = 32,
                  version: int = 3) -> bytes:
    """Header, metadata, tensor infos and zero padding to ``alignment``: everything of a
    GGUF file before its data section (whose offset is the length of the result).

    Each tensor's data offset is the previous one's plus its size padded to
    ``alignment``, in the given order.
    """
    parts = [HEADER.pack(GGUF_MAGIC, version, len(tensors), len(kvs))]
    for kv in kvs:
        parts.extend(_kv_pieces(kv))
    offset = 0
    for t in tensors:
        parts.append(_string(t.name) + U32.pack(len(t.shape))
                     + b"".join(U64.pack(d) for d in t.shape)
                     + U32.pack(t.type) + U64.pack(offset))
        offset += pad(t.n_bytes, alignment)
    size = sum(len(p) for p in parts)
    parts.append(bytes(pad(size, alignment) - size))
    return b"".join(parts)  # the one copy of the pieces
