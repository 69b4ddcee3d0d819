"""TQ1_0 and TQ2_0: ternary (BitNet b1.58 / TriLM) blocks, as ggml's ``quantize_row_tq*_ref``.

Both use one scale ``d = max |x|`` per 256 values and trits ``t = lroundf(x/d) + 1`` in 0..2
(``lroundf``: half away from zero); the importance matrix is ignored, as in ggml.

TQ1_0 block, 54 bytes::

    qs u8[48] @0   qs[m]    (m < 32) holds elems m + 32n        (n = 0..4)  -> elems 0..159
                   qs[32+m] (m < 16) holds elems 160 + m + 16n  (n = 0..4)  -> elems 160..239
    qh u8[4]  @48  qh[j]             holds elems 240 + j + 4n   (n = 0..3, then a 0 trit)
    d  f16    @52

  A byte stores v = sum t_n * 3^(4-n) (trit 0 most significant) as ceil(v * 256 / 243);
  trit n decodes as (((byte * 3^n) mod 256) * 3) >> 8.

TQ2_0 block, 66 bytes::

    qs u8[64] @0   elem 128c + 32n + m = bits 2n..2n+1 of qs[32c + m]  (c < 2, n < 4, m < 32)
    d  f16    @64

Value of an element: ``(t - 1) * d``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from modelkit.quant.iq_wip import blocks
from modelkit.quant.iq_wip.blocks import F32Array, U8Array, byte_blocks, float_blocks, quiet
from modelkit.quant.kernels.floats import fp16_bytes as _fp16_bytes
from modelkit.quant.kernels.floats import fp16_to_f32 as _fp16_to_f32

QK_K = 256
TQ1_0_BYTES = 54
TQ2_0_BYTES = 66
_PAD = QK_K  # index of an extra all-zero trit column (the 5th trit of a qh byte)


def _tq1_index() -> npt.NDArray[np.intp]:
    """(52, 5): the element held by trit n of byte b (``_PAD`` for qh's unused 5th trit)."""
    idx = np.full((52, 5), _PAD, dtype=np.intp)
    n5 = np.arange(5)
    idx[:32] = np.arange(32)[:, None] + 32 * n5
    idx[32:48] = 160 + np.arange(16)[:, None] + 16 * n5
    idx[48:, :4] = 240 + np.arange(4)[:, None] + 4 * np.arange(4)
    return idx


_TQ1_INDEX = _tq1_index()
_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.int64)  # weight of trit n in a byte
_TQ2_SHIFT = np.arange(4, dtype=np.uint8) * np.uint8(2)


def _trits(b: F32Array) -> tuple[npt.NDArray[np.int64], F32Array]:
    """Blocks (n, 256) -> (trits 0..2 as lroundf(x/amax)+1, amax per block)."""
    amax = np.max(np.abs(b), axis=1, initial=np.float32(0.0))
    inv = np.where(amax != 0, np.float32(1.0) / amax, np.float32(0.0)).astype(np.float32)
    t = blocks.c_round_int(b * inv[:, None], from_long=True) + 1
    return t, amax


def _tq_dequant(t: npt.NDArray[np.int64], d_bytes: U8Array) -> F32Array:
    d = _fp16_to_f32(d_bytes)
    out: F32Array = (t - 1).astype(np.float32) * d[:, None]
    return out


@quiet
def quantize_tq1_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> U8Array:
    """float32 (rows, n_per_row) -> uint8 (rows, n_per_row/256*54); imatrix ignored."""
    b, rows = float_blocks(x, QK_K, "TQ1_0")
    t, amax = _trits(b)
    t = np.concatenate([t, np.zeros((t.shape[0], 1), dtype=np.int64)], axis=1)
    v = (t[:, _TQ1_INDEX] * _POW3).sum(axis=2) & 0xFF  # C keeps q in a uint8
    out = np.empty((b.shape[0], TQ1_0_BYTES), dtype=np.uint8)
    out[:, :52] = (v * 256 + 242) // 243
    out[:, 52:] = _fp16_bytes(amax)
    return out.reshape(rows, -1)


@quiet
def dequantize_tq1_0(q: np.ndarray, n_per_row: int) -> F32Array:
    """uint8 (rows, row_bytes) -> float32 (rows, n_per_row), as ggml's to_float."""
    qb, rows = byte_blocks(q, TQ1_0_BYTES, QK_K, n_per_row, "TQ1_0")
    pow3 = np.array([1, 3, 9, 27, 81], dtype=np.uint16)
    qq = (qb[:, :52, None].astype(np.uint16) * pow3) & 0xFF
    trit = (qq * 3) >> 8
    t = np.empty((qb.shape[0], QK_K + 1), dtype=np.int64)
    t[:, _TQ1_INDEX] = trit
    return _tq_dequant(t[:, :QK_K], qb[:, 52:]).reshape(rows, n_per_row)


@quiet
def quantize_tq2_0(x: np.ndarray, imatrix: np.ndarray | None = None) -> U8Array:
    """float32 (rows, n_per_row) -> uint8 (rows, n_per_row/256*66); imatrix ignored."""
    b, rows = float_blocks(x, QK_K, "TQ2_0")
    t, amax = _trits(b)
    q = (t & 3).astype(np.uint8).reshape(-1, 2, 4, 32)  # (block, c, n, m)
    out = np.empty((b.shape[0], TQ2_0_BYTES), dtype=np.uint8)
    out[:, :64] = np.bitwise_or.reduce(q << _TQ2_SHIFT[:, None], axis=2).reshape(-1, 64)
    out[:, 64:] = _fp16_bytes(amax)
    return out.reshape(rows, -1)


@quiet
def dequantize_tq2_0(q: np.ndarray, n_per_row: int) -> F32Array:
    """uint8 (rows, row_bytes) -> float32 (rows, n_per_row), as ggml's to_float."""
    qb, rows = byte_blocks(q, TQ2_0_BYTES, QK_K, n_per_row, "TQ2_0")
    qs = qb[:, :64].reshape(-1, 2, 1, 32)
    t = ((qs >> _TQ2_SHIFT[:, None]) & 3).astype(np.int64).reshape(-1, QK_K)
    return _tq_dequant(t, qb[:, 64:]).reshape(rows, n_per_row)
