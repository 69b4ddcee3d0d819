"""Extract the fixed lookup tables of the IQ/FP4 kernels from llama.cpp's C source.

    python tools/make_iq_tables.py SRC [OUT]

SRC is llama-cpp-python's sdist (``pip download llama-cpp-python --no-deps --no-binary
:all:``; the .tar.gz or its unpacked folder) or a llama.cpp checkout; OUT defaults to the
package's data file. The tables are read, not retyped:

* ``ggml/src/ggml-common.h``: every ``GGML_TABLE_BEGIN(type, name, size) ... GGML_TABLE_END()``
  block of the C variant (the sign tables, the IQ2/IQ3/IQ1 dequantizer grids, ``kvalues``);
  ``iq1s_grid_gpu`` (a GPU-only repacking) is skipped.
* ``ggml/src/ggml-quants.c``: the quantizers' compressed grids, ``static const uint16_t
  kgrid_*[N] = {...};`` inside ``iq2xs_init_impl`` and ``iq3xs_init_impl``, stored as
  ``quant__<function>__<name>``.

Each table is stored with its C type (little-endian) in an .npz written with fixed zip
timestamps, so running the script twice gives the same bytes.
"""

from __future__ import annotations

import io
import re
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

CTYPES = {"uint8_t": "<u1", "int8_t": "<i1", "uint16_t": "<u2", "uint32_t": "<u4",
          "uint64_t": "<u8"}
SIZES = {"NGRID_IQ1S": 2048}
SKIP = {"iq1s_grid_gpu"}
DEFAULT_OUT = (Path(__file__).resolve().parents[1] / "modelkit" / "quant" / "kernels" / "data"
               / "iq_grids.npz")


def _read_sources(src: Path) -> tuple[str, str]:
    names = ("ggml/src/ggml-common.h", "ggml/src/ggml-quants.c")
    if src.is_file():
        with tarfile.open(src) as tar:
            found = {}
            for member in tar.getmembers():
                for name in names:
                    if member.name.endswith("vendor/llama.cpp/" + name):
                        data = tar.extractfile(member)
                        assert data is not None
                        found[name] = data.read().decode()
        return found[names[0]], found[names[1]]
    roots = [src, src / "vendor" / "llama.cpp"]
    root = next(r for r in roots if (r / names[0]).is_file())
    return (root / names[0]).read_text(), (root / names[1]).read_text()


def _values(body: str) -> list[int]:
    body = re.sub(r"//[^\n]*", "", body)
    return [int(tok, 0) for tok in re.findall(r"-?(?:0x[0-9a-fA-F]+|\d+)", body)]


def common_tables(text: str) -> dict[str, np.ndarray]:
    pattern = re.compile(r"GGML_TABLE_BEGIN\((\w+),\s*(\w+),\s*(\w+)\)(.*?)GGML_TABLE_END\(\)",
                         re.S)
    tables: dict[str, np.ndarray] = {}
    for ctype, name, size, body in pattern.findall(text):
        if ctype not in CTYPES or name in SKIP or name in tables:
            continue  # the macro's own definitions; a GPU-only table
        n = SIZES[size] if size in SIZES else int(size)
        values = _values(body)
        if len(values) != n:
            raise ValueError(f"{name}: {len(values)} values, declared {n}")
        tables[name] = np.array(values, dtype=np.uint64 if ctype == "uint64_t" else np.int64
                                ).astype(CTYPES[ctype])
    return tables


def kgrid_tables(text: str) -> dict[str, np.ndarray]:
    tables: dict[str, np.ndarray] = {}
    for func in ("iq2xs_init_impl", "iq3xs_init_impl"):
        start = text.index(f"void {func}(")
        end = text.index("\n}\n", start)
        pattern = re.compile(r"static const uint16_t (kgrid_\w+)\[(\w+)\] = \{(.*?)\};", re.S)
        for name, size, body in pattern.findall(text[start:end]):
            values = _values(body)
            if len(values) != (SIZES[size] if size in SIZES else int(size)):
                raise ValueError(f"{func}.{name}: {len(values)} values, declared {size}")
            tables[f"quant__{func}__{name}"] = np.array(values, dtype="<u2")
    return tables


def write_npz(path: Path, tables: dict[str, np.ndarray],
              compression: int = zipfile.ZIP_DEFLATED) -> None:
    """An .npz (numpy reads any zip compression) with fixed timestamps: same tables, same
    bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name in sorted(tables):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(tables[name]),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            zf.writestr(info, buf.getvalue())


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    common, quants = _read_sources(Path(argv[0]))
    tables = {**common_tables(common), **kgrid_tables(quants)}
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    write_npz(out, tables)
    print(f"{out}: {len(tables)} tables")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
