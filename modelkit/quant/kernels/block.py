"""``BlockFormat``: what every block family implements."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from modelkit.quant.file_types import GGMLType, block_size, type_size
from modelkit.quant.kernels.common import (
    F32,
    F32Array,
    U8Array,
    as_columns,
    seq_sum,
)


class BlockFormat:
    """One ggml block format: ``block_elems`` floats <-> ``block_bytes`` bytes."""

    qtype: ClassVar[GGMLType]
    #: legacy imatrix searches weight by the mean square of the block's whole row
    uses_row_sigma2: ClassVar[bool] = False
    #: false for the types whose quantizer ignores importance weights (Q8_0)
    uses_imatrix: ClassVar[bool] = True
    #: ggml_quantize_requires_imatrix: ggml aborts without importance weights
    #: (IQ2_XXS, IQ2_XS, IQ1_S); ``quantize`` raises ValueError instead
    requires_imatrix: ClassVar[bool] = False
    #: blocks per internal chunk, without / with an imatrix search: small enough for the
    #: temporaries to stay in cache, large enough to amortise numpy's per-call overhead
    chunk_blocks: ClassVar[int] = 8192
    weighted_chunk_blocks: ClassVar[int] = 2048

    def __init__(self) -> None:
        self.block_elems, self.block_bytes = block_size(self.qtype), type_size(self.qtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def quantize_blocks(self, x: np.ndarray, imatrix: np.ndarray | None = None) -> U8Array:
        """float32 (n_blocks, block_elems) -> uint8 (n_blocks, block_bytes).

        ``imatrix``: importance weights, (block_elems,) shared by all blocks or
        (n_blocks, block_elems). Each block is quantized as if it were a tensor row of
        its own (this only matters for the legacy 32-value formats, whose imatrix search
        uses the row's mean square; ``quantize`` passes whole rows).
        """
        xb = np.ascontiguousarray(x, dtype=np.float32)
        if xb.ndim != 2 or xb.shape[1] != self.block_elems:
            raise ValueError(f"{self.qtype.name}: expected blocks of shape "
                             f"(n, {self.block_elems}), got {xb.shape}")
        qw = sigma2 = None
        if imatrix is not None and self.uses_imatrix:
            qw = np.ascontiguousarray(np.broadcast_to(
                np.asarray(imatrix, dtype=np.float32), xb.shape))
            if self.uses_row_sigma2:
                sigma2 = seq_sum(as_columns(xb * xb, self.block_elems))
                sigma2 /= F32(self.block_elems)
        out = np.empty((xb.shape[0], self.block_bytes), dtype=np.uint8)
        step = self.chunk_blocks if qw is None else self.weighted_chunk_blocks
        with np.errstate(all="ignore"):
            for b0 in range(0, xb.shape[0], step):
                b1 = b0 + step
                out[b0:b1] = self._encode(xb[b0:b1], None if qw is None else qw[b0:b1],
                                          None if sigma2 is None else sigma2[b0:b1])
        return out

    def dequantize_blocks(self, q: np.ndarray) -> F32Array:
        """uint8 (n_blocks, block_bytes) -> float32 (n_blocks, block_elems)."""
        qb = np.ascontiguousarray(q, dtype=np.uint8)
        if qb.ndim != 2 or qb.shape[1] != self.block_bytes:
            raise ValueError(f"{self.qtype.name}: expected blocks of shape "
                             f"(n, {self.block_bytes}), got {qb.shape}")
        out = np.empty((qb.shape[0], self.block_elems), dtype=np.float32)
        step = 4 * self.weighted_chunk_blocks
        with np.errstate(all="ignore"):  # inf*0 and inf-inf give NaN, as in C
            for b0 in range(0, qb.shape[0], step):
                out[b0:b0 + step] = self._decode(qb[b0:b0 + step])
        return out

    def _encode(self, x: F32Array, qw: F32Array | None, sigma2: F32Array | None) -> U8Array:
        """x (n, block_elems) -> (n, block_bytes). ``qw``: per-block importance weights
        or None; ``sigma2``: per-block mean square of its row (legacy imatrix only)."""
        raise NotImplementedError

    def _decode(self, q: U8Array) -> F32Array:
        raise NotImplementedError

