"""Q1_0 and Q2_0: one- and two-bit blocks with one f16 scale, as ggml's ``quantize_row_q*_ref``.

The importance matrix is ignored (ggml quantizes row by row with the same reference code).

Q1_0 block, 128 values, 18 bytes::

    d  f16    @0   d = (sum of |x|, float32, in order) / 128
    qs u8[16] @2   bit e%8 of qs[e//8] = 1 when x[e] >= 0
    value = +d for a 1 bit, -d for a 0 bit

Q2_0 block, 64 values, 18 bytes (ggml type 42; gguf 0.19 has no enum member for it, so it
is not in ``FORMATS``: ``quantize_q2_0`` / ``dequantize_q2_0`` work on rows)::

    d  f16    @0   d = max |x|
    qs u8[16] @2   bits 2*(e%4)..2*(e%4)+1 of qs[e//4] = q = clamp(roundf(x/d) + 1, 0, 3)
    value = (q - 1) * d        (roundf: half away from zero)
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from modelkit.quant.kernels.block import BlockFormat
from modelkit.quant.kernels.common import F32, F32Array, U8Array, c_round_int
from modelkit.quant.kernels.floats import fp16_bytes, fp16_to_f32

GGML_TYPE_Q2_0 = 42
Q2_0_SIZES = (64, 18)  # values, bytes per block
_BIT = np.arange(8, dtype=np.uint8)
_PAIR = np.arange(4, dtype=np.uint8) * np.uint8(2)


class Q1_0(BlockFormat):
    qtype = GGMLQuantizationType.Q1_0
    uses_imatrix = False

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        col = np.ascontiguousarray(np.abs(x).T)  # (128, n): reduce adds whole rows in order
        d = np.add.reduce(col, axis=0, initial=F32(0.0)) / F32(128)
        out = np.empty((x.shape[0], self.block_bytes), dtype=np.uint8)
        out[:, :2] = fp16_bytes(d)
        bits = (x >= 0).astype(np.uint8).reshape(-1, 16, 8) << _BIT
        out[:, 2:] = np.bitwise_or.reduce(bits, axis=2)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = fp16_to_f32(q[:, :2])[:, None]
        bit = ((q[:, 2:, None] >> _BIT) & 1).reshape(-1, 128).astype(bool)
        return np.where(bit, d, -d).astype(np.float32)


def _encode_q2_0(x: F32Array) -> U8Array:
    d = np.max(np.abs(x), axis=1, initial=F32(0.0))
    inv = np.where(d > 0, F32(1.0) / d, F32(0.0)).astype(np.float32)
    q = np.clip(c_round_int(x * inv[:, None]) + 1, 0, 3).astype(np.uint8)
    out = np.empty((x.shape[0], Q2_0_SIZES[1]), dtype=np.uint8)
    out[:, :2] = fp16_bytes(d)
    out[:, 2:] = np.bitwise_or.reduce(q.reshape(-1, 16, 4) << _PAIR, axis=2)
    return out


def quantize_q2_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> U8Array:
    """float32 (rows, n_per_row) -> uint8 (rows, n_per_row/64*18); imatrix ignored."""
    xa = np.ascontiguousarray(x, dtype=np.float32)
    xa = xa.reshape(1, -1) if xa.ndim == 1 else xa
    if xa.ndim != 2 or xa.shape[1] % Q2_0_SIZES[0]:
        raise ValueError(f"Q2_0: rows of shape {xa.shape} are not whole blocks of 64")
    with np.errstate(all="ignore"):
        return _encode_q2_0(xa.reshape(-1, Q2_0_SIZES[0])).reshape(xa.shape[0], -1)


def dequantize_q2_0(q: np.ndarray, n_per_row: int) -> F32Array:
    """uint8 (rows, n_per_row/64*18) -> float32 (rows, n_per_row), as ggml's to_float."""
    qa = np.ascontiguousarray(q, dtype=np.uint8)
    if n_per_row % Q2_0_SIZES[0] or qa.size % Q2_0_SIZES[1]:
        raise ValueError(f"Q2_0: {qa.size} bytes are not whole blocks for rows of "
                         f"{n_per_row}")
    qb = qa.reshape(-1, Q2_0_SIZES[1])
    d = fp16_to_f32(qb[:, :2])[:, None]
    level = ((qb[:, 2:, None] >> _PAIR) & 3).reshape(-1, 64).astype(np.float32) - 1
    with np.errstate(all="ignore"):
        out: F32Array = (level * d).reshape(-1, n_per_row)
    return out
