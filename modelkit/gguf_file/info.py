"""What a GGUF header says: ``GGUFInfo`` (metadata, tensor table) and ``TensorInfo``.

Metadata arrays (a tokenizer's vocabulary, scores, merges) are kept as the reader found
them and turned into Python lists on first access: ``show`` and ``create`` read many
headers and need few of the arrays.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType, Keys

from modelkit.errors import GGUFError
from modelkit.gguf_file.format import EncodedArray, pad
from modelkit.gguf_file.writer import KV, TensorSlot
from modelkit.quant.file_types import GGMLType, file_type_name


class Metadata(Mapping[str, Any]):
    """Metadata key -> plain Python value, in file order; arrays are lists, made from
    the raw bytes on first access."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values  # a value is an EncodedArray until first accessed
        self._encoded = {k: v for k, v in values.items() if isinstance(v, EncodedArray)}

    def __getitem__(self, key: str) -> Any:
        value = self._values[key]
        if isinstance(value, EncodedArray):
            value = self._values[key] = value.decode()
        return value

    def encoded(self, key: str) -> EncodedArray | None:
        """The array ``key`` as the file encodes it (None for a scalar, or a value that
        was not read from a file): copied by the writer without decoding."""
        return self._encoded.get(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __repr__(self) -> str:
        return f"Metadata({len(self)} keys)"

    def array_length(self, key: str) -> int | None:
        """The length of the array ``key`` without decoding it; None for a scalar."""
        value = self._values[key]
        if isinstance(value, (EncodedArray, list)):
            return len(value)
        return None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: GGMLType  # gguf's GGMLQuantizationType, or an ExtraType (Q2_0) gguf lacks
    shape: tuple[int, ...]  # GGUF order: ne[0] (the row length) first
    n_elements: int
    n_bytes: int
    offset: int  # absolute offset of the data in the file

    @property
    def type_name(self) -> str:
        return self.type.name


@dataclass(frozen=True)
class GGUFInfo:
    """Everything about a GGUF file except its tensor data.

    ``metadata_types`` holds each key's value type and, for an array, its element type
    (empty arrays included): ``(STRING,)``, ``(ARRAY, INT32)``, ``(ARRAY, ARRAY, ...)``.
    """

    path: Path
    version: int
    size: int
    alignment: int
    data_offset: int
    metadata: Metadata
    metadata_types: dict[str, tuple[GGUFValueType, ...]]
    tensors: tuple[TensorInfo, ...]

    @property
    def architecture(self) -> str:
        arch = self.metadata.get(Keys.General.ARCHITECTURE)
        return arch if isinstance(arch, str) else ""

    @property
    def parameter_count(self) -> int:
        """Ollama counts parameters as the sum of all tensors' element counts."""
        return sum(t.n_elements for t in self.tensors)

    @property
    def file_type(self) -> int | None:
        value = self.metadata.get(Keys.General.FILE_TYPE)
        return int(value) if isinstance(value, int) else None

    @property
    def file_type_label(self) -> str:
        return file_type_label(self.file_type)

    def arch_value(self, key_template: str) -> Any:
        """A value of an ``{arch}.*`` key such as ``Keys.LLM.CONTEXT_LENGTH``."""
        return self.metadata.get(key_template.format(arch=self.architecture))

    @property
    def context_length(self) -> int | None:
        value = self.arch_value(Keys.LLM.CONTEXT_LENGTH)
        return int(value) if isinstance(value, (int, float)) else None

    @property
    def embedding_length(self) -> int | None:
        value = self.arch_value(Keys.LLM.EMBEDDING_LENGTH)
        return int(value) if isinstance(value, (int, float)) else None

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get(Keys.Tokenizer.CHAT_TEMPLATE)
        return value if isinstance(value, str) else None

    @property
    def general_type(self) -> str | None:
        value = self.metadata.get(Keys.General.TYPE)
        return value if isinstance(value, str) else None

    def kv(self, key: str) -> KV:
        """The metadata pair ``key`` as :func:`encode_header` writes it back, byte for byte."""
        types = self.metadata_types[key]
        encoded = self.metadata.encoded(key)
        value = encoded if encoded is not None else self.metadata[key]
        if types[0] != GGUFValueType.ARRAY:
            return KV(key, value, types[0])
        if types[1] == GGUFValueType.ARRAY:
            raise GGUFError(f"{self.path}: metadata key {key}: arrays of arrays are not supported")
        return KV(key, value, types[0], types[1])

    def tensor(self, name: str) -> TensorInfo | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None

    def dominant_type_label(self) -> str:
        """The file type to show when ``general.file_type`` is missing or 0: the type
        holding the most parameters among 2-D tensors (Ollama repairs ``unknown`` the
        same way, from the GGUF itself)."""
        counts: dict[str, int] = {}
        for t in self.tensors:
            if len(t.shape) >= 2:
                counts[t.type_name] = counts.get(t.type_name, 0) + t.n_elements
        if not counts:
            return "unknown"
        return max(counts.items(), key=lambda kv: kv[1])[0]


def file_type_label(value: int | None) -> str:
    """``general.file_type`` as Ollama's config ``file_type`` spells it ("Q4_K_M", "F16").

    A missing value, 0 (all F32) or an unknown number gives ``unknown`` as in Ollama.
    """
    if not value:
        return "unknown"
    name = file_type_name(value)  # the one home of file-type names
    return "unknown" if name.startswith("ftype ") else name


def _plain(value: Any) -> Any:
    """A KV value as the reader gives it back: str for strings, lists for arrays (an
    ``EncodedArray`` stays one, decoded on first access)."""
    if isinstance(value, EncodedArray):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def describe_header(path: str | os.PathLike[str], kvs: Sequence[KV],
                    tensors: Sequence[TensorSlot], *, alignment: int, data_offset: int,
                    size: int, version: int = 3) -> GGUFInfo:
    """The ``GGUFInfo`` of a file written with ``encode_header(kvs, tensors, alignment,
    version)`` (``data_offset`` long) followed by the tensors' data: what reading it back
    would give, without reading it."""
    infos = []
    offset = data_offset
    for t in tensors:
        n_elements = 1
        for d in t.shape:
            n_elements *= d
        infos.append(TensorInfo(t.name, t.type, tuple(t.shape), n_elements, t.n_bytes, offset))
        offset += pad(t.n_bytes, alignment)
    types: dict[str, tuple[GGUFValueType, ...]] = {}
    for kv in kvs:
        if kv.type != GGUFValueType.ARRAY:
            types[kv.key] = (kv.type,)
        else:
            sub = kv.subtype if kv.subtype is not None else GGUFValueType.get_type(kv.value[0])
            types[kv.key] = (kv.type, sub)
    return GGUFInfo(path=Path(path), version=version, size=size, alignment=alignment,
                    data_offset=data_offset,
                    metadata=Metadata({kv.key: _plain(kv.value) for kv in kvs}),
                    metadata_types=types, tensors=tuple(infos))
