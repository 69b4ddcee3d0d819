"""Block quantizers and dequantizers, byte-identical to llama.cpp's reference C code.

One module per block family, each a set of ``BlockFormat`` classes working on
``(n_blocks, block_elems)`` arrays with its bit layout drawn in a comment:

* ``legacy``: the 32-value formats Q8_0, Q4_0, Q4_1, Q5_0, Q5_1;
* ``kquants``: Q4_K, Q5_K, Q6_K;
* ``floats``: F32/F16/BF16, and the float32/float16/bfloat16 conversions everything uses;
* ``ternary``: TQ1_0, TQ2_0; ``fp4``: MXFP4, NVFP4; ``lowbit``: Q1_0, Q2_0 (ggml type 42,
  which gguf cannot name: keyed by ``file_types.ExtraType.Q2_0``);
* ``iq1``: IQ1_S, IQ1_M; ``iq2``: IQ2_XXS, IQ2_XS, IQ2_S; ``iq3``: IQ3_XXS, IQ3_S, searching
  lattice grids
  (``iq_tables``: the grids, shipped in ``data/iq_grids.npz``, and the neighbour tables
  computed from them; ``iq_search``: the shared scale and neighbour searches).

Shared pieces: ``common`` (exact C semantics in numpy: ``nearest_int``, sequential sums,
first-extreme min/max), ``searches`` (ggml's scale searches), ``block`` (the
``BlockFormat`` base), ``registry`` (the type -> format table and the row-level entry
points below). Every type is quantized exactly as ``ggml_quantize_chunk`` does it:
``quantize_row_<type>_ref`` without an importance matrix, the weighted
``quantize_row_<type>_impl`` searches with one.

Entry points: ``quantize(qtype, x, imatrix=None)`` float32 (rows, n_per_row) -> uint8
(rows, row_bytes); ``dequantize(qtype, q, n_per_row=None)`` back to float32 (ggml's
``to_float``); ``to_float32(data, qtype)`` for any tensor data (other types through
gguf's dequantizers); ``FORMATS`` (block formats by type) and ``SUPPORTED_TYPES``.

Inputs are expected to be finite; NaN/inf inputs give deterministic bytes that are not
guaranteed to match C.
"""

from __future__ import annotations

from modelkit.quant.kernels.block import BlockFormat
from modelkit.quant.kernels.kquants import Q4_K, Q5_K, Q6_K
from modelkit.quant.kernels.legacy import Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
from modelkit.quant.kernels.registry import (
    FORMATS,
    SUPPORTED_TYPES,
    dequantize,
    quantize,
    to_float32,
)

__all__ = [
    "FORMATS",
    "SUPPORTED_TYPES",
    "BlockFormat",
    "Q4_0",
    "Q4_1",
    "Q4_K",
    "Q5_0",
    "Q5_1",
    "Q5_K",
    "Q6_K",
    "Q8_0",
    "dequantize",
    "quantize",
    "to_float32",
]
