"""The registry of block formats and the row-level entry points."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

from modelkit.quant.file_types import ExtraType, GGMLType, ggml_type_from_id
from modelkit.quant.kernels.block import BlockFormat
from modelkit.quant.kernels.common import F32, F32Array, U8Array
from modelkit.quant.kernels.floats import FLOAT_TYPES, decode_floats, encode_floats
from modelkit.quant.kernels.fp4 import MXFP4, NVFP4
from modelkit.quant.kernels.iq1 import IQ1_M, IQ1_S
from modelkit.quant.kernels.iq2 import IQ2_S, IQ2_XS, IQ2_XXS
from modelkit.quant.kernels.iq3 import IQ3_S, IQ3_XXS
from modelkit.quant.kernels.kquants import Q2_K, Q3_K, Q4_K, Q5_K, Q6_K
from modelkit.quant.kernels.legacy import Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
from modelkit.quant.kernels.lowbit import Q1_0, Q2_0
from modelkit.quant.kernels.nonlinear import IQ4_NL, IQ4_XS
from modelkit.quant.kernels.ternary import TQ1_0, TQ2_0

#: every block format modelkit quantizes and dequantizes, by type (gguf's, or an
#: ``ExtraType`` gguf cannot name); a new family adds its classes here
FORMATS: dict[GGMLType, BlockFormat] = {
    f.qtype: f for f in (Q8_0(), Q4_0(), Q4_1(), Q5_0(), Q5_1(), Q2_K(), Q3_K(), Q4_K(), Q5_K(),
                         Q6_K(), IQ4_NL(), IQ4_XS(), IQ2_XXS(), IQ2_XS(), IQ2_S(), IQ3_XXS(),
                         IQ3_S(), IQ1_S(), IQ1_M(), TQ1_0(), TQ2_0(), MXFP4(), NVFP4(),
                         Q1_0(), Q2_0())
}

#: every type ``quantize`` and ``dequantize`` accept: the block formats and F32/F16/BF16
SUPPORTED_TYPES: frozenset[GGMLType] = frozenset(FORMATS) | frozenset(FLOAT_TYPES)


def _type(qtype: int) -> GGMLType:
    """``qtype`` as its enum, gguf's or modelkit's (a plain ggml id is accepted)."""
    if isinstance(qtype, (GGMLQuantizationType, ExtraType)):
        return qtype
    t = ggml_type_from_id(qtype)
    if t is None:
        raise ValueError(f"unknown ggml type {qtype}")
    return t


def _format(qtype: GGMLType) -> BlockFormat:
    qtype = _type(qtype)
    if qtype not in FORMATS:
        raise ValueError(f"no modelkit kernel for {qtype.name}")
    return FORMATS[qtype]


def _as_matrix(x: np.ndarray) -> F32Array:
    xa = np.asarray(x, dtype=np.float32)
    if xa.ndim == 1:
        xa = xa[None, :]
    if xa.ndim != 2:
        raise ValueError(f"expected a (rows, n_per_row) matrix, got shape {xa.shape}")
    return xa


# --------------------------------------------------------------------------------------
# Row-level entry points
# --------------------------------------------------------------------------------------


def _row_mean_squares(x: F32Array) -> F32Array:
    """sum(x*x)/n_per_row per row, summed in order (the legacy imatrix sigma2)."""
    out = np.empty(x.shape[0], dtype=np.float32)
    step = max(1, (1 << 20) // max(1, x.shape[1]))
    for r0 in range(0, x.shape[0], step):
        sq = x[r0:r0 + step] * x[r0:r0 + step]
        out[r0:r0 + step] = np.cumsum(sq, axis=1, dtype=np.float32)[:, -1]  # sequential
    out += F32(0.0)  # C's sum starts from +0.0
    out /= F32(x.shape[1])
    return out


def quantize(qtype: GGMLType, x: np.ndarray,
             imatrix: np.ndarray | None = None) -> U8Array:
    """x float32 (rows, n_per_row) -> uint8 (rows, row_bytes), as ggml_quantize_chunk.

    ``qtype``: any of ``SUPPORTED_TYPES`` (F32/F16/BF16 convert element by element).
    ``imatrix``: float32 (n_per_row,) importance weights, or None (ignored by the types
    whose ``uses_imatrix`` is false: Q8_0 and the float types).
    ``n_per_row`` must be a multiple of the block size. Rows are independent.
    """
    if qtype in FLOAT_TYPES:
        return encode_floats(GGMLQuantizationType(qtype), _as_matrix(x))
    fmt = _format(qtype)
    xa = _as_matrix(x)
    rows, n_per_row = xa.shape
    be, bb = fmt.block_elems, fmt.block_bytes
    if n_per_row % be:
        raise ValueError(f"{fmt.qtype.name}: row length {n_per_row} is not a multiple "
                         f"of the block size {be}")
    nb = n_per_row // be
    out = np.empty((rows, nb * bb), dtype=np.uint8)
    if out.size == 0:
        return out
    if imatrix is None and fmt.requires_imatrix:
        raise ValueError(f"{fmt.qtype.name} cannot quantize without an importance matrix")
    im_blocks = row_sigma2 = None
    if imatrix is not None and fmt.uses_imatrix:
        im = np.asarray(imatrix, dtype=np.float32).reshape(-1)
        if im.shape[0] != n_per_row:
            raise ValueError(f"imatrix has {im.shape[0]} values, rows have {n_per_row}")
        im_blocks = np.ascontiguousarray(im.reshape(nb, be))
        if fmt.uses_row_sigma2:
            row_sigma2 = _row_mean_squares(xa)
    blocks = np.ascontiguousarray(xa).reshape(rows * nb, be)
    out_blocks = out.reshape(rows * nb, bb)
    step = fmt.chunk_blocks if im_blocks is None else fmt.weighted_chunk_blocks
    with np.errstate(all="ignore"):
        for b0 in range(0, rows * nb, step):
            b1 = min(b0 + step, rows * nb)
            qw = sigma2 = None
            if im_blocks is not None:  # block k of a row takes imatrix[k*be:(k+1)*be]
                idx = np.arange(b0, b1)
                qw = im_blocks[idx % nb]
                if row_sigma2 is not None:
                    sigma2 = row_sigma2[idx // nb]
            out_blocks[b0:b1] = fmt._encode(blocks[b0:b1], qw, sigma2)
    return out


def dequantize(qtype: GGMLType, q: np.ndarray,
               n_per_row: int | None = None) -> F32Array:
    """uint8 (rows, row_bytes) -> float32 (rows, n_per_row), as ggml's ``to_float``.

    A 1-D ``q`` is one row, or rows of ``n_per_row`` values when that is given."""
    qa = np.asarray(q, dtype=np.uint8)
    if qtype in FLOAT_TYPES:
        size = FLOAT_TYPES[GGMLQuantizationType(qtype)]
        rows = qa.reshape(-1, qa.shape[-1] if n_per_row is None else n_per_row * size)
        return decode_floats(GGMLQuantizationType(qtype), rows)
    fmt = _format(qtype)
    if qa.ndim == 1:
        row_bytes = qa.shape[0] if n_per_row is None else n_per_row // fmt.block_elems \
            * fmt.block_bytes
        qa = qa.reshape(-1, row_bytes)
    if qa.ndim != 2 or qa.shape[1] % fmt.block_bytes:
        raise ValueError(f"{fmt.qtype.name}: rows of {qa.shape[-1]} bytes are not whole "
                         f"blocks of {fmt.block_bytes}")
    n = qa.shape[1] // fmt.block_bytes * fmt.block_elems
    if n_per_row is not None and n_per_row != n:
        raise ValueError(f"{fmt.qtype.name}: rows hold {n} values, not {n_per_row}")
    y = fmt.dequantize_blocks(qa.reshape(-1, fmt.block_bytes))
    return y.reshape(qa.shape[0], n)


def to_float32(data: np.ndarray, qtype: GGMLType) -> F32Array:
    """Tensor data of any type -> float32 (rows, n_per_row).

    ``data`` is either the values (float32 / float16 arrays, uint16 bit patterns for BF16)
    or the raw bytes as uint8 (rows, row_bytes), which is how gguf's reader returns
    block-quantized tensors. F32/F16/BF16 convert directly, the ``FORMATS`` use our
    dequantizers, any other type gguf can dequantize goes through gguf.quants.
    """
    qtype = _type(qtype)
    arr = np.asarray(data)
    if arr.ndim <= 1:
        arr = arr.reshape(1, -1)
    elif arr.ndim > 2:
        arr = arr.reshape(-1, arr.shape[-1])
    if qtype in FLOAT_TYPES:
        return decode_floats(GGMLQuantizationType(qtype), arr)
    raw = np.ascontiguousarray(arr).view(np.uint8)
    if qtype in FORMATS:
        return dequantize(qtype, raw)
    if not isinstance(qtype, GGMLQuantizationType):  # pragma: no cover (all have formats)
        raise ValueError(f"no dequantizer for {qtype.name}")
    out = np.asarray(gguf_quants.dequantize(raw, qtype), dtype=np.float32)
    return out.reshape(raw.shape[0], -1)
