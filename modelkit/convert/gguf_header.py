"""Stand-in for ``gguf_file.encode_header`` / ``KV`` / ``TensorSlot`` (same contract) until
that lands on main; then this module goes and the imports point at gguf_file.

GGUF v3 layout: magic, version u32, n_tensors u64, n_kv u64; each KV as key (u64 length +
UTF-8), value type u32, value (arrays: item type u32, count u64, items); each tensor info
as name, n_dims u32, ne[] u64 (ne[0] first), type u32, offset u64 relative to the data
start; zero padding to ``alignment``. Each tensor's data is padded to ``alignment`` too.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

T = GGUFValueType
_SCALAR = {
    T.UINT8: "<B", T.INT8: "<b", T.UINT16: "<H", T.INT16: "<h", T.UINT32: "<I",
    T.INT32: "<i", T.FLOAT32: "<f", T.UINT64: "<Q", T.INT64: "<q", T.FLOAT64: "<d",
    T.BOOL: "<?",
}
_NUMPY = {
    T.UINT8: "<u1", T.INT8: "<i1", T.UINT16: "<u2", T.INT16: "<i2", T.UINT32: "<u4",
    T.INT32: "<i4", T.FLOAT32: "<f4", T.UINT64: "<u8", T.INT64: "<i8", T.FLOAT64: "<f8",
    T.BOOL: "?",
}


@dataclass(frozen=True)
class KV:
    key: str
    value: Any
    type: GGUFValueType
    subtype: GGUFValueType | None = None


@dataclass(frozen=True)
class TensorSlot:
    name: str
    shape: tuple[int, ...]  # GGUF order: ne[0] first
    type: GGMLQuantizationType
    n_bytes: int


def _string(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def _value(vtype: GGUFValueType, value: Any, subtype: GGUFValueType | None) -> bytes:
    if vtype == T.STRING:
        return _string(value)
    if vtype == T.ARRAY:
        assert subtype is not None
        head = struct.pack("<IQ", subtype, len(value))
        if subtype == T.STRING:
            return head + b"".join(_string(v) for v in value)
        return head + np.asarray(value, dtype=_NUMPY[subtype]).tobytes()
    return struct.pack(_SCALAR[vtype], value)


def pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


def encode_header(kvs: Sequence[KV], tensors: Sequence[TensorSlot], alignment: int = 32,
                  version: int = 3) -> bytes:
    parts = [b"GGUF", struct.pack("<IQQ", version, len(tensors), len(kvs))]
    for kv in kvs:
        parts.append(_string(kv.key))
        parts.append(struct.pack("<I", kv.type))
        parts.append(_value(kv.type, kv.value, kv.subtype))
    offset = 0
    for t in tensors:
        parts.append(_string(t.name))
        parts.append(struct.pack("<I", len(t.shape)))
        parts.append(struct.pack(f"<{len(t.shape)}Q", *t.shape))
        parts.append(struct.pack("<IQ", t.type, offset))
        offset += pad(t.n_bytes, alignment)
    out = b"".join(parts)
    return out + b"\0" * (pad(len(out), alignment) - len(out))
