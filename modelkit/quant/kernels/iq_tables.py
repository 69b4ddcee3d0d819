"""The lookup tables of the IQ1/IQ2/IQ3 kernels: fixed grids (data) and search tables (computed).

**Fixed grids** come from ``data/iq_grids.npz``, which ``tools/make_iq_tables.py`` extracts
from llama.cpp's C source (``ggml-common.h``: ``iq2xxs_grid``, ``iq2xs_grid``, ``iq2s_grid``,
``iq3xxs_grid``, ``iq3s_grid``, ``iq1s_grid``, ``ksigns_iq2xs``, ...; ``ggml-quants.c``: the
quantizers' ``kgrid_*`` tables). Entry k of a dequantizer grid holds 8 (IQ2, IQ1) or 4 (IQ3)
byte values; entry k of the matching ``kgrid`` table packs the same point as 2-bit (IQ2/IQ1)
or 3-bit (IQ3) fields ``l``, coordinate 0 in the lowest bits. The quantizers search in the
coordinates ``2*l + 1``.

**Search tables** are what ``ggml_quantize_init`` builds once per process
(``iq2xs_init_impl`` / ``iq3xs_init_impl``). ``compute_search_tables`` derives them the same
way (a few seconds of numpy for all six grids); ``tools/make_iq_search_tables.py`` stores
its result in ``data/iq_search_tables.npz``, which is what the kernels load (once per
process, a fraction of the compute time), and a test recomputes and compares it:

* ``kmap`` (int32, one entry per packed point: 43692 for the 8-wide grids, 4096 for IQ3):
  the grid position of a point that is on the grid, else ``-(offset + 1)``;
* ``neighbours`` (uint16): at ``offset``, n, then the n grid positions nearest to that point
  (squared distance in ``2l+1`` coordinates, ties in grid order) that cover its ``nwant``
  smallest distinct distances (IQ2_XXS 2, IQ2_XS 2, IQ2_S 1, IQ1_S/IQ1_M 3, IQ3_XXS 2,
  IQ3_S 3). Off-grid points are numbered in increasing packed order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

DATA = Path(__file__).resolve().parent / "data" / "iq_grids.npz"
SEARCH_DATA = DATA.with_name("iq_search_tables.npz")

# type -> (dequantizer grid, kgrid table, coordinates per point, bits per coordinate, nwant)
SPECS: dict[str, tuple[str, str, int, int, int]] = {
    "IQ2_XXS": ("iq2xxs_grid", "quant__iq2xs_init_impl__kgrid_2bit_256", 8, 2, 2),
    "IQ2_XS": ("iq2xs_grid", "quant__iq2xs_init_impl__kgrid_2bit_512", 8, 2, 2),
    "IQ2_S": ("iq2s_grid", "quant__iq2xs_init_impl__kgrid_2bit_1024", 8, 2, 1),
    "IQ1_S": ("iq1s_grid", "quant__iq2xs_init_impl__kgrid_1bit_2048", 8, 2, 3),
    "IQ3_XXS": ("iq3xxs_grid", "quant__iq3xs_init_impl__kgrid_256", 4, 3, 2),
    "IQ3_S": ("iq3s_grid", "quant__iq3xs_init_impl__kgrid_512", 4, 3, 3),
}
_KMAP_SIZE = {8: 43692, 4: 4096}
_CHUNK = 2048  # off-grid points per distance matrix


@functools.cache
def fixed_tables() -> dict[str, np.ndarray]:
    """Every table of ``data/iq_grids.npz`` (C types, little-endian)."""
    with np.load(DATA) as z:
        return {name: z[name] for name in z.files}


@dataclass
class SearchTables:
    """One grid with what the quantizer needs to search it."""

    grid: npt.NDArray[np.uint8]       # (G, width) dequantizer values (bytes of the C grid)
    coords: npt.NDArray[np.int8]      # (G, width) quantizer coordinates 2*l + 1
    kmap: npt.NDArray[np.int32]       # as ggml's kmap
    neighbours: npt.NDArray[np.uint16]  # as ggml's neighbour list
    bits: int                         # bits per packed coordinate

    @functools.cached_property
    def kmap64(self) -> npt.NDArray[np.int64]:
        """``kmap`` as int64: gathering int64 from it is about twice as fast as gathering
        int32 and converting (the kernels index with what they look up)."""
        return self.kmap.astype(np.int64)

    @functools.cached_property
    def neighbours64(self) -> npt.NDArray[np.intp]:
        """``neighbours`` as intp: what the searches gather counts and candidates from
        (gathering uint16 and converting costs a pass more)."""
        return self.neighbours.astype(np.intp)

    @functools.cached_property
    def fcoords(self) -> npt.NDArray[np.float32]:
        """``coords`` as float32 (what the neighbour searches multiply)."""
        return self.coords.astype(np.float32)

    @functools.cached_property
    def coord_columns(self) -> npt.NDArray[np.float32]:
        """(width, G) ``fcoords`` transposed: coordinate i of every grid point, contiguous."""
        return np.ascontiguousarray(self.fcoords.T)

    @functools.cached_property
    def levels(self) -> npt.NDArray[np.intp]:
        """(G, width) the level l of each coordinate 2l+1."""
        return ((self.coords - 1) // 2).astype(np.intp)

    @functools.cached_property
    def level_bytes(self) -> npt.NDArray[np.int8]:
        """``levels`` as int8."""
        return self.levels.astype(np.int8)

    @functools.cached_property
    def nlevels(self) -> int:
        """How many levels a coordinate takes (3 on the 8-wide grids, 8 on IQ3's)."""
        return int(self.levels.max()) + 1

    @functools.cached_property
    def level_coords(self) -> npt.NDArray[np.float32]:
        """(nlevels,) the coordinate 2l+1 of each level, float32."""
        return (2 * np.arange(self.nlevels) + 1).astype(np.float32)

    @functools.cached_property
    def term_codes(self) -> npt.NDArray[np.intp]:
        """(width, G): where coordinate i of grid point g finds its term in a point's
        (width, nlevels) table of per-coordinate terms, flattened: ``i*nlevels + l``."""
        width = self.coords.shape[1]
        codes: npt.NDArray[np.intp] = (np.arange(width) * self.nlevels + self.levels).T
        return np.ascontiguousarray(codes)

    @functools.cached_property
    def pair_codes(self) -> npt.NDArray[np.intp]:
        """(width/2, G): where grid point g finds the sum of its terms for coordinates 2p
        and 2p+1 in a point's (width/2, nlevels, nlevels) table of pair sums, flattened:
        ``(p*nlevels + l[2p+1])*nlevels + l[2p]``."""
        width, nl = self.coords.shape[1], self.nlevels
        lv = self.levels
        codes = (np.arange(width // 2) * nl + lv[:, 1::2]) * nl + lv[:, 0::2]
        return np.ascontiguousarray(codes.T.astype(np.intp))


    @functools.cached_property
    def quad_codes(self) -> npt.NDArray[np.intp]:
        """(width/4, G): where grid point g finds the sum of its terms for coordinates
        4h..4h+3 in a point's (width/4, nlevels^4) table of quad sums, flattened:
        ``((h*nl + l[4h+3])*nl + l[4h+2])*nl^2 + l[4h+1]*nl + l[4h]`` (pairs of
        ``pair_codes``' pairs)."""
        nl, lv = self.nlevels, self.levels
        h = np.arange(self.coords.shape[1] // 4)
        codes = (((h * nl + lv[:, 3::4]) * nl + lv[:, 2::4]) * nl * nl
                 + lv[:, 1::4] * nl + lv[:, 0::4])
        return np.ascontiguousarray(codes.T.astype(np.intp))


def _distinct_cut(d2: npt.NDArray[np.int16], nwant: int) -> npt.NDArray[np.int16]:
    """Per row, the nwant-th smallest distinct value (or the largest there is)."""
    cut = d2.min(axis=1)
    big = np.iinfo(np.int16).max
    for _ in range(nwant - 1):
        nxt = np.where(d2 > cut[:, None], d2, np.int16(big)).min(axis=1)
        cut = np.where(nxt == big, cut, nxt)
    out: npt.NDArray[np.int16] = cut.astype(np.int16)
    return out


def search_tables(qtype: str) -> SearchTables:
    """The tables ``ggml_quantize_init`` builds for ``qtype`` (IQ1_M uses IQ1_S's)."""
    return _load("IQ1_S" if qtype == "IQ1_M" else qtype)


def _grid_levels(qtype: str) -> npt.NDArray[np.int64]:
    """(G, width) the level l of each coordinate of each ``kgrid`` point."""
    _, kname, width, bits, _ = SPECS[qtype]
    kgrid = fixed_tables()[kname].astype(np.int64)
    levels: npt.NDArray[np.int64] = (kgrid[:, None] >> (bits * np.arange(width))) & (
        (1 << bits) - 1)
    return levels


@functools.cache
def _load(qtype: str) -> SearchTables:
    gname, _, width, bits, _ = SPECS[qtype]
    grid = np.ascontiguousarray(fixed_tables()[gname]).view(np.uint8).reshape(-1, width)
    coords = (2 * _grid_levels(qtype) + 1).astype(np.int8)
    with np.load(SEARCH_DATA) as z:
        kmap, neighbours = z[f"{qtype}__kmap"], z[f"{qtype}__neighbours"]
    return SearchTables(grid, coords, kmap, neighbours, bits)


def compute_search_tables(qtype: str) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint16]]:
    """``kmap`` and ``neighbours`` of ``qtype``, derived from its ``kgrid`` table as
    ``iq2xs_init_impl`` / ``iq3xs_init_impl`` do (what ``data/iq_search_tables.npz`` holds)."""
    _, _, width, bits, nwant = SPECS[qtype]
    levels = _grid_levels(qtype)
    shifts = bits * np.arange(width)
    coords = (2 * levels + 1).astype(np.int8)
    size = _KMAP_SIZE[width]
    kmap = np.full(size, -1, dtype=np.int32)
    kmap[(levels << shifts).sum(axis=1)] = np.arange(len(levels), dtype=np.int32)

    off = np.flatnonzero(kmap < 0)
    pos = (2 * ((off[:, None] >> shifts) & ((1 << bits) - 1)) + 1).astype(np.float32)
    g = coords.astype(np.float32)
    g2 = (g * g).sum(axis=1)
    rows_l, cols_l, d_l = [], [], []
    for c0 in range(0, len(off), _CHUNK):
        p = pos[c0:c0 + _CHUNK]
        # exact: small integers (at most 8 * 6^2), computed in float32 with BLAS
        d2 = ((p * p).sum(axis=1)[:, None] + g2 - 2 * (p @ g.T)).astype(np.int16)
        cut = _distinct_cut(d2, nwant)
        r, c = np.nonzero(d2 <= cut[:, None])
        rows_l.append(r + c0)
        cols_l.append(c)
        d_l.append(d2[r, c])
    rows, cols, dist = (np.concatenate(a) for a in (rows_l, cols_l, d_l))
    order = np.lexsort((cols, dist, rows))  # by point, then distance, then grid position
    rows, cols = rows[order], cols[order]
    counts = np.bincount(rows, minlength=len(off))
    offsets = np.concatenate([[0], np.cumsum(counts + 1)[:-1]])
    neighbours = np.empty(int(np.sum(counts + 1)), dtype=np.uint16)
    neighbours[offsets] = counts
    rank = np.arange(len(rows)) - np.concatenate([[0], np.cumsum(counts)[:-1]])[rows]
    neighbours[offsets[rows] + 1 + rank] = cols
    kmap[off] = -(offsets + 1)
    return kmap, neighbours
