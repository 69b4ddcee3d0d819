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
from gguf import GGMLQuantizationType
from gguf.constants import QK_K

from modelkit.quant.kernels.block import BlockFormat
from modelkit.quant.kernels.common import F32, F32Array, U8Array, c_round_int
from modelkit.quant.kernels.floats import fp16_bytes, fp16_to_f32

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
    amax = np.max(np.abs(b), axis=1, initial=F32(0.0))
    inv = np.where(amax != 0, F32(1.0) / amax, F32(0.0)).astype(np.float32)
    return c_round_int(b * inv[:, None], from_long=True) + 1, amax


def _dequant(t: npt.NDArray[np.int64], d_bytes: U8Array) -> F32Array:
    out: F32Array = (t - 1).astype(np.float32) * fp16_to_f32(d_bytes)[:, None]
    return out


class TQ1_0(BlockFormat):
    qtype = GGMLQuantizationType.TQ1_0
    uses_imatrix = False

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        t, amax = _trits(x)
        t = np.concatenate([t, np.zeros((t.shape[0], 1), dtype=np.int64)], axis=1)
        v = (t[:, _TQ1_INDEX] * _POW3).sum(axis=2) & 0xFF  # C keeps q in a uint8
        out = np.empty((x.shape[0], self.block_bytes), dtype=np.uint8)
        out[:, :52] = (v * 256 + 242) // 243
        out[:, 52:] = fp16_bytes(amax)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        pow3 = np.array([1, 3, 9, 27, 81], dtype=np.uint16)
        qq = (q[:, :52, None].astype(np.uint16) * pow3) & 0xFF
        t = np.empty((q.shape[0], QK_K + 1), dtype=np.int64)
        t[:, _TQ1_INDEX] = (qq * 3) >> 8
        return _dequant(t[:, :QK_K], q[:, 52:])


class TQ2_0(BlockFormat):
    qtype = GGMLQuantizationType.TQ2_0
    uses_imatrix = False

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        t, amax = _trits(x)
        q = (t & 3).astype(np.uint8).reshape(-1, 2, 4, 32)  # (block, c, n, m)
        out = np.empty((x.shape[0], self.block_bytes), dtype=np.uint8)
        out[:, :64] = np.bitwise_or.reduce(q << _TQ2_SHIFT[:, None], axis=2).reshape(-1, 64)
        out[:, 64:] = fp16_bytes(amax)
        return out

    def _decode(self, q: U8Array) -> F32Array:
        qs = q[:, :64].reshape(-1, 2, 1, 32)
        t = ((qs >> _TQ2_SHIFT[:, None]) & 3).astype(np.int64).reshape(-1, QK_K)
        return _dequant(t, q[:, 64:])
