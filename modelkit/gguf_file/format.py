"""Facts of the GGUF container format that both the reader and the writer need.

The type numbers themselves come from ``gguf.constants``; this module adds the byte
layout: the fixed header, how each scalar value type is packed, and alignment padding.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np
from gguf import GGUFValueType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor count, kv count
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")

# How each scalar value type is stored (little-endian struct format): one table for
# packing, unpacking and the numpy dtypes of bulk-decoded arrays.
SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
    GGUFValueType.BOOL: "?",
}
SCALARS: dict[GGUFValueType, struct.Struct] = {
    t: struct.Struct("<" + f) for t, f in SCALAR_FORMATS.items()
}
DTYPES: dict[GGUFValueType, np.dtype[np.generic]] = {
    t: np.dtype("<" + f) for t, f in SCALAR_FORMATS.items()
}
MAX_DIMS = 4


def pad(n: int, align: int) -> int:
    """``n`` rounded up to a multiple of ``align``."""
    return (n + align - 1) // align * align


class EncodedArray:
    """An array value as a file holds it: ``length`` elements encoded in ``data`` (no
    element type, no count), and how to decode them into a list.  The reader keeps
    arrays this way until they are used; the writer copies ``data`` as it is."""

    __slots__ = ("data", "decode", "length")

    def __init__(self, length: int, data: bytes, decode: Callable[[], list[Any]]) -> None:
        self.length = length
        self.data = data
        self.decode = decode

    def __len__(self) -> int:
        return self.length
