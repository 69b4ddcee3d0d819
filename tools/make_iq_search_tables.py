"""Store the IQ1/IQ2/IQ3 quantizers' search tables (``kmap``, ``neighbours``) in the package.

    python tools/make_iq_search_tables.py [OUT]

The tables are derived from the ``kgrid`` tables of ``data/iq_grids.npz`` by
``modelkit.quant.kernels.iq_tables.compute_search_tables`` (as llama.cpp's
``iq2xs_init_impl`` / ``iq3xs_init_impl`` do at ``ggml_quantize_init``); computing them takes
seconds, loading them a fraction of that, and every worker process needs them. OUT defaults
to ``modelkit/quant/kernels/data/iq_search_tables.npz`` (LZMA: the neighbour lists shrink
to about a quarter); the bytes depend only on the tables. Rerun after ``make_iq_tables.py``
changes the grids; tests/test_iquant_kernels.py recomputes the file and compares.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
from make_iq_tables import write_npz  # the directory of this script is on sys.path

from modelkit.quant.kernels.iq_tables import SEARCH_DATA, SPECS, compute_search_tables


def search_tables() -> dict[str, np.ndarray]:
    tables: dict[str, np.ndarray] = {}
    for qtype in SPECS:
        tables[f"{qtype}__kmap"], tables[f"{qtype}__neighbours"] = compute_search_tables(qtype)
    return tables


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0]) if argv else SEARCH_DATA
    write_npz(out, search_tables(), zipfile.ZIP_LZMA)
    print(f"{out}: {len(SPECS)} grids")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
