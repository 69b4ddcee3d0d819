"""Micro-benchmark: throughput of each modelkit kernel, optionally against ggml's own.

    python bench/kernels.py [--types Q2_K,IQ4_XS] [--mib 16] [--repeat 3] [--ggml-lib PATH]

For each type, quantizes a deterministic float32 matrix (rows of 4096 values, about
``--mib`` MiB, normal * 0.02) without and with an importance matrix, single-threaded,
and prints the best of ``--repeat`` runs as MB of float32 input per second; then the
dequantizer's throughput (MB of float32 output per second). glibc keeps freed memory for
reuse, as in the requantizer (``streaming.keep_freed_memory``), so that each internal
chunk's arrays do not page-fault in again.

``--ggml-lib``: a shared library exporting ggml's ``quantize_<type>`` functions (e.g.
llama-cpp-python's ``libggml-base.so``, or ``ggml-quants.c`` compiled alone with ``gcc -O3
-shared -fPIC`` and a few stubs: ``ggml_abort``, ``ggml_row_size``, ``ggml_type_size``,
``ggml_type_name``); its single-thread time on the same data is
measured the same way, and the ratio modelkit / ggml printed (lower is better; the
targets are <= 1.5x for every type, <= 1.0x for the q4_K_M mix as a whole, which
bench/quantize.py measures). The bytes are compared too.
"""

from __future__ import annotations

import argparse
import ctypes
import time
from collections.abc import Callable

import numpy as np

from modelkit.quant import kernels
from modelkit.quant.file_types import GGMLType, parse_ggml_type
from modelkit.quant.streaming import keep_freed_memory

N_PER_ROW = 4096


def best_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def init_quant_tables(lib: ctypes.CDLL, qtype: GGMLType) -> None:
    """The grid searches need ``ggml_quantize_init(type)`` (``ggml_quantize_chunk`` calls
    it itself); a library of ggml-quants.c alone exports the two init functions it uses."""
    if hasattr(lib, "ggml_quantize_init"):
        lib.ggml_quantize_init(ctypes.c_int(int(qtype)))
    elif qtype.name.startswith(("IQ2", "IQ1")) and hasattr(lib, "iq2xs_init_impl"):
        lib.iq2xs_init_impl(ctypes.c_int(int(qtype)))
    elif qtype.name in ("IQ3_XXS", "IQ3_S") and hasattr(lib, "iq3xs_init_impl"):
        lib.iq3xs_init_impl(ctypes.c_int(256 if qtype.name == "IQ3_XXS" else 512))


def ggml_quantizer(lib: ctypes.CDLL, name: str) -> Callable[[np.ndarray, np.ndarray | None],
                                                             np.ndarray] | None:
    fn = getattr(lib, f"quantize_{name.lower().replace('_k', '_K')}", None)
    if fn is None:
        return None
    init_quant_tables(lib, parse_ggml_type(name))
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                   ctypes.c_void_p]

    def run(x: np.ndarray, im: np.ndarray | None) -> np.ndarray:
        qtype = parse_ggml_type(name)
        out = np.empty((x.shape[0], kernels.FORMATS[qtype].block_bytes * x.shape[1]
                        // kernels.FORMATS[qtype].block_elems), dtype=np.uint8)
        fn(x.ctypes.data, out.ctypes.data, x.shape[0], x.shape[1],
           None if im is None else im.ctypes.data)
        return out

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(t.name for t in kernels.FORMATS))
    ap.add_argument("--mib", type=float, default=16.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ggml-lib", default=None)
    args = ap.parse_args()
    keep_freed_memory()  # as the requantizer runs the kernels: no page faults per chunk
    rows = max(1, int(args.mib * 2**20 / 4 / N_PER_ROW))
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((rows, N_PER_ROW)) * 0.02).astype(np.float32)
    im = np.exp(rng.standard_normal(N_PER_ROW)).astype(np.float32)
    mb = x.nbytes / 1e6
    lib = ctypes.CDLL(args.ggml_lib) if args.ggml_lib else None
    print(f"{rows} x {N_PER_ROW} float32 ({mb:.1f} MB), best of {args.repeat}")
    head = f"{'type':8} {'imatrix':7} {'quantize MB/s':>13} {'dequant MB/s':>12}"
    print(head + (f" {'ggml MB/s':>9} {'ratio':>6} {'same':>5}" if lib else ""))
    for name in args.types.split(","):
        qtype = parse_ggml_type(name)  # gguf's type, or modelkit's (Q2_0)
        ref = ggml_quantizer(lib, name) if lib else None
        for weights in (None, im):
            if weights is None and kernels.FORMATS[qtype].requires_imatrix:
                continue
            t = best_time(lambda w=weights, qt=qtype: kernels.quantize(qt, x, w), args.repeat)
            q = kernels.quantize(qtype, x, weights)
            td = best_time(lambda q=q, qt=qtype: kernels.dequantize(qt, q), args.repeat)
            line = (f"{name:8} {'yes' if weights is not None else 'no':7} {mb / t:13.1f} "
                    f"{mb / td:12.1f}")
            if ref is not None:
                tr = best_time(lambda w=weights, f=ref: f(x, w), args.repeat)
                same = ref(x, weights).tobytes() == q.tobytes()
                line += f" {mb / tr:9.1f} {t / tr:6.2f} {str(same):>5}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
