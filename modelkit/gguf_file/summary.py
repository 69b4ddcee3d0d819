"""Views of a GGUF header for ``show``: metadata as Ollama lists it, and what a
quantization did tensor by tensor."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gguf import Keys

from modelkit.gguf_file.info import GGUFInfo, TensorInfo


def iter_metadata_display(info: GGUFInfo, *, array_limit: int | None = 5
                          ) -> Iterator[tuple[str, Any]]:
    """Metadata as ``show`` reports it (Ollama's model_info): sorted keys, without
    ``general.name`` and ``tokenizer.chat_template``; long arrays elided unless verbose."""
    for key in sorted(info.metadata):
        if key in (Keys.General.NAME, Keys.Tokenizer.CHAT_TEMPLATE):
            continue
        length = info.metadata.array_length(key)
        if array_limit is not None and length is not None and length > array_limit:
            yield key, []  # without decoding it
        else:
            yield key, info.metadata[key]


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
