"""Q1_0 and Q2_0: one- and two-bit blocks with one f16 scale, as ggml's ``quantize_row_q*_ref``.

The importance matrix is ignored (ggml quantizes row by row with the same reference code).

Q1_0 block, 128 values, 18 bytes::

    d  f16    @0   d = (sum of |x|, float32, in order) / 128
    qs u8[16] @2   bit e%8 of qs[e//8] = 1 when x[e] >= 0
    value = +d for a 1 bit, -d for a 0 bit

Q2_0 block, 64 values, 18 bytes::

    d  f16    @0   d = max |x|
    qs u8[16] @2   bits 2*(e%4)..2*(e%4)+1 of qs[e//4] = q = clamp(roundf(x/d) + 1, 0, 3)
    value = (q - 1) * d        (roundf: half away from zero)
"""

from __future__ import annotations

import numpy as np

from modelkit.quant.iq_wip.blocks import (
    F32Array,
    U8Array,
    byte_blocks,
    c_round_int,
    float_blocks,
    quiet,
)
from modelkit.quant.kernels.floats import fp16_bytes as _fp16_bytes
from modelkit.quant.kernels.floats import fp16_to_f32 as _fp16_to_f32

QK1_0 = 128
Q1_0_BYTES = 18
QK2_0 = 64
Q2_0_BYTES = 18
_BIT = np.arange(8, dtype=np.uint8)
_PAIR = np.arange(4, dtype=np.uint8) * np.uint8(2)


@quiet
def quantize_q1_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> U8Array:
    """float32 (rows, n_per_row) -> uint8 (rows, n_per_row/128*18); imatrix ignored."""
    b, rows = float_blocks(x, QK1_0, "Q1_0")
    col = np.ascontiguousarray(np.abs(b).T)  # (128, n): reduce adds whole rows in order
    d = np.add.reduce(col, axis=0, initial=np.float32(0.0)) / np.float32(QK1_0)
    out = np.empty((b.shape[0], Q1_0_BYTES), dtype=np.uint8)
    out[:, :2] = _fp16_bytes(d)
    bits = (b >= 0).astype(np.uint8).reshape(-1, 16, 8) << _BIT
    out[:, 2:] = np.bitwise_or.reduce(bits, axis=2)
    return out.reshape(rows, -1)


@quiet
def dequantize_q1_0(q: np.ndarray, n_per_row: int) -> F32Array:
    """uint8 (rows, row_bytes) -> float32 (rows, n_per_row), as ggml's to_float."""
    qb, rows = byte_blocks(q, Q1_0_BYTES, QK1_0, n_per_row, "Q1_0")
    d = _fp16_to_f32(qb[:, :2])[:, None]
    bit = ((qb[:, 2:, None] >> _BIT) & 1).reshape(-1, QK1_0).astype(bool)
    return np.where(bit, d, -d).astype(np.float32).reshape(rows, n_per_row)


@quiet
def quantize_q2_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> U8Array:
    """float32 (rows, n_per_row) -> uint8 (rows, n_per_row/64*18); imatrix ignored."""
    b, rows = float_blocks(x, QK2_0, "Q2_0")
    d = np.max(np.abs(b), axis=1, initial=np.float32(0.0))
    inv = np.where(d > 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    q = np.clip(c_round_int(b * inv[:, None]) + 1, 0, 3).astype(np.uint8)
    out = np.empty((b.shape[0], Q2_0_BYTES), dtype=np.uint8)
    out[:, :2] = _fp16_bytes(d)
    out[:, 2:] = np.bitwise_or.reduce(q.reshape(-1, 16, 4) << _PAIR, axis=2)
    return out.reshape(rows, -1)


@quiet
def dequantize_q2_0(q: np.ndarray, n_per_row: int) -> F32Array:
    """uint8 (rows, row_bytes) -> float32 (rows, n_per_row), as ggml's to_float."""
    qb, rows = byte_blocks(q, Q2_0_BYTES, QK2_0, n_per_row, "Q2_0")
    d = _fp16_to_f32(qb[:, :2])[:, None]
    level = ((qb[:, 2:, None] >> _PAIR) & 3).reshape(-1, QK2_0).astype(np.float32) - 1
    out: F32Array = (level * d).reshape(rows, n_per_row)
    return out
