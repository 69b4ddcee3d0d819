"""Q1_0 and Q2_0: one- and two-bit blocks with one f16 scale, as ggml's ``quantize_row_q*_ref``.

The importance matrix is ignored (ggml quantizes row by row with the same reference code).

Q1_0 block, 128 values, 18 bytes::

    d  f16    @0   d = (sum of |x|, float32, in order) / 128
    qs u8[16] @2   bit e%8 of qs[e//8] = 1 when x[e] >= 0
    value = +d for a 1 bit, -d for a 0 bit

Q2_0 block, 64 values, 18 bytes (ggml type 42, which gguf 0.19 cannot name: its type is
``file_types.ExtraType.Q2_0``)::

    d  f16    @0   d = max |x|
    qs u8[16] @2   bits 2*(e%4)..2*(e%4)+1 of qs[e//4] = q = clamp(roundf(x/d) + 1, 0, 3)
    value = (q - 1) * d        (roundf: half away from zero)
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from modelkit.quant.file_types import ExtraType
from modelkit.quant.kernels.block import BlockFormat
from modelkit.quant.kernels.common import F32, F32Array, U8Array, c_round_int
from modelkit.quant.kernels.floats import fp16_bytes, fp16_to_f32

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


class Q2_0(BlockFormat):
    qtype = ExtraType.Q2_0
    uses_imatrix = False

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        d = np.max(np.abs(x), axis=1, initial=F32(0.0))
        inv = np.where(d > 0, F32(1.0) / d, F32(0.0)).astype(np.float32)
        q = np.clip(c_round_int(x * inv[:, None]) + 1, 0, 3).astype(np.uint8)
        out = np.empty((x.shape[0], self.block_bytes), dtype=np.uint8)
        out[:, :2] = fp16_bytes(d)
        out[:, 2:] = np.bitwise_or.reduce(q.reshape(-1, 16, 4) << _PAIR, axis=2)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        d = fp16_to_f32(q[:, :2])[:, None]
        level = ((q[:, 2:, None] >> _PAIR) & 3).reshape(-1, 64).astype(np.float32) - 1
        out: F32Array = level * d
        return out
