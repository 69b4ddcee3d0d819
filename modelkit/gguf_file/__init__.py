"""GGUF files: the one header reader (``read_gguf``: a ``GGUFInfo`` per file, read
once per command), the one header writer (``encode_header``) and the views ``show``
needs.  gguf-py supplies the constants; the parsing and packing are ours.

Modules: ``format`` (byte layout facts), ``reader``, ``writer``, ``info`` (``GGUFInfo``),
``summary`` (``show``'s views).
"""

from modelkit.gguf_file.format import GGUF_MAGIC
from modelkit.gguf_file.info import (
    GGUFInfo,
    Metadata,
    TensorInfo,
    describe_header,
    file_type_label,
)
from modelkit.gguf_file.reader import ReadAt, is_gguf, read_gguf, read_gguf_bytes, read_gguf_from
from modelkit.gguf_file.summary import (
    QuantizationView,
    TypeSummary,
    bits_per_weight,
    iter_metadata_display,
    quantization_view,
)
from modelkit.gguf_file.writer import KV, TensorSlot, encode_header, encode_kv

__all__ = [
    "GGUF_MAGIC", "KV", "GGUFInfo", "Metadata", "QuantizationView", "ReadAt", "TensorInfo",
    "TensorSlot", "TypeSummary", "bits_per_weight", "describe_header", "encode_header",
    "encode_kv",
    "file_type_label", "is_gguf", "iter_metadata_display", "quantization_view", "read_gguf",
    "read_gguf_bytes", "read_gguf_from",
]
