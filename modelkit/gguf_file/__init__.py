"""Open and validate a GGUF file through ``gguf.GGUFReader``; summaries for ``show``.

Parsing is the ``gguf`` package's job. This module adds what a model store needs on
top: bounded sanity checks so that garbage or truncated input becomes one clear
``GGUFError`` instead of a numpy traceback, plain-Python metadata values, and the
figures ``show`` and the config blob need (architecture, parameter count, file type).

Opening maps the file and reads only the header: tensor data is never touched here.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType, Keys, LlamaFileType
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from modelkit.errors import GGUFError
from modelkit.gguf_file.format import GGUF_MAGIC, HEADER, MAX_DIMS, SUPPORTED_VERSIONS
from modelkit.gguf_file.writer import KV, TensorSlot, encode_header, encode_kv

__all__ = [
    "GGUF_MAGIC", "KV", "GGUFInfo", "TensorInfo", "TensorSlot", "encode_header", "encode_kv",
    "file_type_label", "is_gguf", "iter_metadata_display", "quantization_view", "read_gguf",
]
# The smallest possible encodings of one KV pair (8-byte key length, 4-byte type, 1-byte
# value) and one tensor info (8 + 4 + 4 + 8): used to reject absurd counts up front.
MIN_KV_BYTES = 13
MIN_TENSOR_INFO_BYTES = 24


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: GGMLQuantizationType
    shape: tuple[int, ...]  # GGUF order: ne[0] (the row length) first
    n_elements: int
    n_bytes: int
    offset: int  # absolute offset of the data in the file

    @property
    def type_name(self) -> str:
        return self.type.name


@dataclass(frozen=True)
class GGUFInfo:
    """Everything about a GGUF file except its tensor data."""

    path: Path
    version: int
    size: int
    alignment: int
    data_offset: int
    metadata: dict[str, Any]  # key -> plain Python value, file order
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
        value = self.metadata[key]
        if types[0] != GGUFValueType.ARRAY:
            return KV(key, value, types[0])
        if len(types) > 2 or (len(types) == 2 and types[1] == GGUFValueType.ARRAY):
            raise GGUFError(f"{self.path}: metadata key {key}: arrays of arrays are not supported")
        sub = types[1] if len(types) == 2 else _empty_array_subtype(self.path, key)
        return KV(key, list(value), types[0], sub)

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
    try:
        member = LlamaFileType(value)
    except ValueError:
        return "unknown"
    return member.name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _check_header(path: Path, size: int) -> tuple[int, int, int]:
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
    if len(head) < 4 or head[:4] != GGUF_MAGIC:
        raise GGUFError(f"{path}: not a GGUF file (bad magic)")
    if len(head) < HEADER.size:
        raise GGUFError(f"{path}: truncated GGUF header ({size} bytes)")
    _, version, n_tensors, n_kv = HEADER.unpack(head)
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"{path}: unsupported GGUF version {version}")
    if n_kv * MIN_KV_BYTES > size or n_tensors * MIN_TENSOR_INFO_BYTES > size:
        raise GGUFError(
            f"{path}: corrupt GGUF header: {n_kv} metadata entries and {n_tensors} tensors "
            f"cannot fit in {size} bytes"
        )
    return version, n_tensors, n_kv


def _field_value(field: Any) -> Any:
    value = field.contents()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Open ``path``, validate its header and tensor table, return its description.

    Raises ``GGUFError`` naming the file and the problem for anything that is not a
    complete, well-formed GGUF.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise GGUFError(f"{p}: no such file") from None
    if p.is_dir():
        raise GGUFError(f"{p}: is a directory, not a GGUF file")
    version, _, _ = _check_header(p, size)
    try:
        reader = GGUFReader(p)
    except (ValueError, IndexError, KeyError, UnicodeDecodeError, OverflowError,
            TypeError, struct.error) as exc:
        raise GGUFError(f"{p}: corrupt or truncated GGUF: {exc}") from None
    except OSError as exc:
        raise GGUFError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        return _describe(reader, p, version, size)
    finally:
        # Drop the memory map promptly; callers that need data reopen with open_tensors.
        del reader


def _describe(reader: GGUFReader, path: Path, version: int, size: int) -> GGUFInfo:
    metadata: dict[str, Any] = {}
    types: dict[str, tuple[GGUFValueType, ...]] = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        try:
            metadata[name] = _field_value(field)
        except (UnicodeDecodeError, ValueError) as exc:
            raise GGUFError(f"{path}: metadata key {name!r} is corrupt: {exc}") from None
        types[name] = tuple(GGUFValueType(t) for t in field.types)
    tensors: list[TensorInfo] = []
    for t in reader.tensors:
        shape = tuple(int(d) for d in t.shape)
        if not 1 <= len(shape) <= MAX_DIMS or any(d <= 0 for d in shape):
            raise GGUFError(f"{path}: tensor {t.name!r} has an invalid shape {list(shape)}")
        block, _ = GGML_QUANT_SIZES[t.tensor_type]
        if shape[0] % block:
            raise GGUFError(
                f"{path}: tensor {t.name!r}: row length {shape[0]} is not a multiple of "
                f"the {t.tensor_type.name} block size {block}"
            )
        end = t.data_offset + t.n_bytes
        if t.data_offset < reader.data_offset or end > size:
            raise GGUFError(
                f"{path}: tensor {t.name!r} data [{t.data_offset}, {end}) lies outside "
                f"the file ({size} bytes): truncated GGUF"
            )
        tensors.append(TensorInfo(t.name, GGMLQuantizationType(t.tensor_type), shape,
                                  int(t.n_elements), int(t.n_bytes), int(t.data_offset)))
    return GGUFInfo(path=path, version=version, size=size, alignment=int(reader.alignment),
                    data_offset=int(reader.data_offset), metadata=metadata,
                    metadata_types=types, tensors=tuple(tensors))


def _empty_array_subtype(path: Path, key: str) -> GGUFValueType:
    # parts: key length, key, value type, element type, element count
    return GGUFValueType(int(GGUFReader(path).fields[key].parts[3][0]))


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """Sniff the magic only (used to decide how to treat a FROM file)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def iter_metadata_display(info: GGUFInfo, *, array_limit: int | None = 5
                          ) -> Iterator[tuple[str, Any]]:
    """Metadata as ``show`` reports it (Ollama's model_info): sorted keys, without
    ``general.name`` and ``tokenizer.chat_template``; long arrays elided unless verbose."""
    for key in sorted(info.metadata):
        if key in (Keys.General.NAME, Keys.Tokenizer.CHAT_TEMPLATE):
            continue
        value = info.metadata[key]
        if array_limit is not None and isinstance(value, list) and len(value) > array_limit:
            value = []
        yield key, value


# ----------------------------------------------------------- quantization view
LAYER_NAME = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class TypeSummary:
    type_name: str
    count: int
    parameters: int
    bytes: int

    @property
    def bits_per_weight(self) -> float:
        return self.bytes * 8 / self.parameters if self.parameters else 0.0


@dataclass(frozen=True)
class QuantizationView:
    """What a quantization did, tensor by tensor: for ``show --quantization``."""

    tensors: tuple[TensorInfo, ...]
    by_type: tuple[TypeSummary, ...]  # most bytes first
    by_layer: tuple[tuple[str, int, int], ...]  # (layer, parameters, bytes); "-" = not in a block
    parameters: int
    bytes: int

    @property
    def bits_per_weight(self) -> float:
        return self.bytes * 8 / self.parameters if self.parameters else 0.0


def bits_per_weight(t: TensorInfo) -> float:
    return t.n_bytes * 8 / t.n_elements if t.n_elements else 0.0


def quantization_view(info: GGUFInfo) -> QuantizationView:
    types: dict[str, list[int]] = {}
    layers: dict[str, list[int]] = {}
    for t in info.tensors:
        entry = types.setdefault(t.type_name, [0, 0, 0])
        entry[0] += 1
        entry[1] += t.n_elements
        entry[2] += t.n_bytes
        m = LAYER_NAME.match(t.name)
        layer = layers.setdefault(m.group(1) if m else "-", [0, 0])
        layer[0] += t.n_elements
        layer[1] += t.n_bytes
    by_type = sorted((TypeSummary(k, *v) for k, v in types.items()),
                     key=lambda s: (-s.bytes, s.type_name))
    by_layer = sorted(((k, v[0], v[1]) for k, v in layers.items()),
                      key=lambda x: (x[0] != "-", int(x[0]) if x[0] != "-" else -1))
    return QuantizationView(info.tensors, tuple(by_type), tuple(by_layer),
                            sum(t.n_elements for t in info.tensors),
                            sum(t.n_bytes for t in info.tensors))
