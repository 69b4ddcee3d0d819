"""Benchmark: modelkit's quantizer against llama.cpp's, and against the I/O floor.

    python bench/quantize.py [--params 1e9] [--types q8_0,q4_K_M] [--threads N] [--keep DIR]
                             [--llama-quantize PATH] [--imatrix] [--repeat N]

1. Builds a deterministic synthetic F16 llama model of about ``--params`` parameters
   (default 1 billion: ~2 GB), streamed to disk tensor by tensor.
2. For each type, quantizes it with ``modelkit quantize`` and, when ``llama_cpp``
   (llama-cpp-python) can be imported, with llama.cpp's ``llama_model_quantize`` at the
   same thread count (or with the ``llama-quantize`` binary given by ``--llama-quantize``),
   each in its own process; measures wall time, CPU time (user + system) and the peak
   resident memory of the whole process tree (sampled from /proc every 20 ms). On a
   shared machine the CPU times are the steadier comparison. Any llama.cpp file type works
   (q2_K, q3_K_M, iq4_xs, ...; the i-quants that need an importance matrix only with
   ``--imatrix``).
   ``--imatrix``: both quantize with a deterministic synthetic importance matrix (legacy
   ``.dat`` format, see :func:`write_imatrix`); the llama.cpp side needs ``--llama-quantize``.
   ``--repeat N``: each type N times, the two tools alternating (a slower spell of a shared
   machine then falls on both), reporting the best of the N (least wall and CPU time,
   largest RSS) and each pair's wall-time ratio.
3. Measures ``cp`` + ``sha256sum`` of the source as the I/O floor.
4. Prints a table and the ratios modelkit / llama.cpp (lower is better; targets: q8_0
   <= 1.0x, q4_K_M <= 1.0x and every other type <= 1.5x wall time, RSS <= 1.0x).

llama-cpp-python is optional and not a dependency: it builds from source in about 25
minutes on 2 cores (``pip install llama-cpp-python``). Never run this in CI.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

LLAMA_CPP_QUANTIZE = r"""
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.nthread = int(sys.argv[4])
params.ftype = int(sys.argv[3])
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(),
                                    ctypes.byref(params))
sys.exit(rc)
"""



def llama_ftype(qtype: str) -> int:
    """llama.cpp's ``llama_ftype`` number of a type name such as ``q4_K_M`` or ``iq4_xs``."""
    import gguf

    return int(gguf.LlamaFileType[f"MOSTLY_{qtype.upper()}"])


def synthetic_dims(params: float) -> tuple[int, int, int, int]:
    """(n_embd, n_ff, n_layer, n_vocab) of a llama with about ``params`` parameters."""
    n_embd, n_vocab = 2048, 32000
    n_ff = 5632
    # q and o are n_embd x n_embd; k and v a quarter of that (GQA 16/4); three FFN matrices.
    per_layer = 2 * n_embd * n_embd + 2 * n_embd * (n_embd // 4) + 3 * n_embd * n_ff
    fixed = 2 * n_vocab * n_embd
    n_layer = max(1, round((params - fixed) / per_layer))
    return n_embd, n_ff, n_layer, n_vocab


N_HEAD, N_HEAD_KV = 16, 4


def tensor_shapes(params: float) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, numpy shape, is a matrix) of every tensor of the synthetic model, in order."""
    n_embd, n_ff, n_layer, n_vocab = synthetic_dims(params)
    n_head, n_head_kv = N_HEAD, N_HEAD_KV
    shapes: list[tuple[str, tuple[int, ...], bool]] = [
        ("token_embd.weight", (n_vocab, n_embd), True),
        ("output_norm.weight", (n_embd,), False),
        ("output.weight", (n_vocab, n_embd), True),
    ]
    for i in range(n_layer):
        p = f"blk.{i}."
        shapes += [
            (p + "attn_norm.weight", (n_embd,), False),
            (p + "attn_q.weight", (n_embd, n_embd), True),
            (p + "attn_k.weight", (n_embd // n_head * n_head_kv, n_embd), True),
            (p + "attn_v.weight", (n_embd // n_head * n_head_kv, n_embd), True),
            (p + "attn_output.weight", (n_embd, n_embd), True),
            (p + "ffn_norm.weight", (n_embd,), False),
            (p + "ffn_gate.weight", (n_ff, n_embd), True),
            (p + "ffn_up.weight", (n_ff, n_embd), True),
            (p + "ffn_down.weight", (n_embd, n_ff), True),
        ]
    return shapes


def write_imatrix(path: Path, params: float) -> int:
    """A deterministic synthetic importance matrix for the synthetic model, in llama.cpp's
    legacy ``.dat`` format (which llama-quantize and modelkit both read): one entry per
    matrix except the token embeddings (llama-imatrix never has one), ncall 1, weights
    exp(N(0, 1)) per input column; then the chunk count and a dataset name.
    Returns the number of entries."""
    rng = np.random.default_rng(4321)
    entries = [(name, shape[1]) for name, shape, is_matrix in tensor_shapes(params)
               if is_matrix and name != "token_embd.weight"]
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, ne0 in entries:
            raw = name.encode()
            f.write(struct.pack("<i", len(raw)) + raw + struct.pack("<ii", 1, ne0))
            f.write(np.exp(rng.standard_normal(ne0)).astype("<f4").tobytes())
        dataset = b"modelkit-bench-synthetic"
        f.write(struct.pack("<ii", 1, len(dataset)) + dataset)
    return len(entries)


def build_model(path: Path, params: float) -> int:
    """Write the synthetic model with gguf's writer, one tensor at a time."""
    import gguf

    n_embd, n_ff, n_layer, n_vocab = synthetic_dims(params)
    n_head, n_head_kv = N_HEAD, N_HEAD_KV
    shapes = tensor_shapes(params)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("modelkit-bench")
    w.add_context_length(4096)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>".encode() for i in range(n_vocab)])
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([1] * n_vocab)
    for name, shape, is_matrix in shapes:
        dtype = np.float16 if is_matrix else np.float32
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        w.add_tensor_info(name, shape, np.dtype(dtype), nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    total = 0
    rng = np.random.default_rng(1234)
    for _name, shape, is_matrix in shapes:
        if is_matrix:
            arr = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
        else:
            arr = (1 + 0.05 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        w.write_tensor_data(arr)
        total += arr.size
        del arr
    w.close()
    return total


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants, in KiB."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None
            ) -> tuple[float, float, int, int]:
    """Run ``cmd``; return (wall seconds, CPU seconds (user + system, the whole process
    tree), peak tree RSS in KiB, exit code)."""
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_kib(proc.pid))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    stop.set()
    sampler.join()
    elapsed = time.monotonic() - start
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if proc.returncode:
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return elapsed, cpu, peak, proc.returncode


def have_llama_cpp() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=float, default=1e9)
    ap.add_argument("--types", default="q8_0,q4_K_M")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--keep", type=Path, help="work in this folder and keep the files")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--llama-quantize", type=Path,
                    help="llama.cpp's llama-quantize binary, used instead of llama_cpp")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each type this many times, the tools alternating, and report "
                         "the best of the runs (least time, largest RSS)")
    ap.add_argument("--imatrix", action="store_true",
                    help="quantize with a synthetic importance matrix (both tools; the "
                         "llama.cpp side then needs --llama-quantize)")
    args = ap.parse_args()
    if args.imatrix and args.llama_quantize is None and have_llama_cpp():
        print("--imatrix compares against llama.cpp only through --llama-quantize",
              file=sys.stderr)
        return 2

    work = args.keep or Path(tempfile.mkdtemp(prefix="modelkit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "synthetic-f16.gguf"
    if not src.exists():
        t0 = time.monotonic()
        n = build_model(src, args.params)
        print(f"built {src} ({n / 1e9:.2f}B parameters, {src.stat().st_size / 1e9:.2f} GB) "
              f"in {time.monotonic() - t0:.1f} s", flush=True)
    size = src.stat().st_size
    imatrix_opt: list[str] = []
    if args.imatrix:
        imatrix = work / "synthetic.imatrix.dat"
        n_entries = write_imatrix(imatrix, args.params)
        print(f"wrote {imatrix} ({n_entries} entries)", flush=True)
        imatrix_opt = ["--imatrix", str(imatrix)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    results: dict[str, dict[str, float]] = {}

    # The I/O floor: copy, then hash, the same bytes.
    t0 = time.monotonic()
    shutil.copyfile(src, work / "copy.gguf")
    subprocess.run(["sha256sum", str(work / "copy.gguf")], check=True, capture_output=True)
    results["cp+sha256sum"] = {"seconds": time.monotonic() - t0, "cpu_seconds": 0.0,
                               "rss_mib": 0.0}
    (work / "copy.gguf").unlink()

    llama = args.llama_quantize is not None or (have_llama_cpp() and not args.imatrix)

    def keep_best(key: str, secs: float, cpu: float, rss: int) -> None:
        """Best of the repeats: least wall and CPU time, largest peak RSS."""
        old = results.setdefault(key, {"seconds": secs, "cpu_seconds": cpu,
                                       "rss_mib": rss / 1024})
        old["seconds"] = min(secs, old["seconds"])
        old["cpu_seconds"] = min(cpu, old["cpu_seconds"])
        old["rss_mib"] = max(rss / 1024, old["rss_mib"])

    for qtype in args.types.split(","):
        out_mk = work / f"modelkit-{qtype}.gguf"
        out_ll = work / f"llama-{qtype}.gguf"
        # the two tools alternate, so that a slower spell of a shared machine falls on both
        for rep in range(args.repeat):
            secs, cpu, rss, rc = measure([sys.executable, "-m", "modelkit", "quantize",
                                          *imatrix_opt, str(src), str(out_mk), qtype,
                                          "--workers", str(args.threads)], env)
            if rc:
                print(f"modelkit failed on {qtype}", file=sys.stderr)
                return 1
            keep_best(f"modelkit {qtype}", secs, cpu, rss)
            print(f"modelkit  {qtype:7} {secs:8.1f} s  {cpu:8.1f} s CPU  {rss / 1024:8.0f} MiB",
                  flush=True)
            if not llama:
                continue
            mk_secs = secs
            if args.llama_quantize is not None:
                cmd = [str(args.llama_quantize), *imatrix_opt, str(src), str(out_ll),
                       qtype.upper(), str(args.threads)]
            else:
                cmd = [sys.executable, "-c", LLAMA_CPP_QUANTIZE, str(src), str(out_ll),
                       str(llama_ftype(qtype)), str(args.threads)]
            secs, cpu, rss, rc = measure(cmd)
            keep_best(f"llama.cpp {qtype}", secs, cpu, rss)
            print(f"llama.cpp {qtype:7} {secs:8.1f} s  {cpu:8.1f} s CPU  "
                  f"{rss / 1024:8.0f} MiB  (this pair: {mk_secs / secs:.2f}x)", flush=True)
            if rep == 0:
                same = sha256_file(out_mk) == sha256_file(out_ll)
                results[f"llama.cpp {qtype}"]["identical"] = float(same)
                print(f"          {qtype:7} output identical to llama.cpp's: {same}",
                      flush=True)
            out_ll.unlink()
        out_mk.unlink()

    floor = results["cp+sha256sum"]["seconds"]
    print(f"\nsource {size / 1e9:.2f} GB, {args.threads} threads"
          + (", synthetic imatrix" if args.imatrix else "")
          + (f", best of {args.repeat}" if args.repeat > 1 else ""))
    print(f"{'run':22} {'seconds':>9} {'CPU s':>7} {'peak RSS MiB':>13} {'x llama.cpp':>12} "
          f"{'CPU x':>6} "
          f"{'RSS x':>7} {'x I/O floor':>12}")
    for key, r in results.items():
        line = f"{key:22} {r['seconds']:9.1f} {r['cpu_seconds']:7.1f} {r['rss_mib']:13.0f}"
        if key.startswith("modelkit"):
            ref = results.get(key.replace("modelkit", "llama.cpp"))
            if ref:
                line += f" {r['seconds'] / ref['seconds']:11.2f}x"
                line += f" {r['cpu_seconds'] / ref['cpu_seconds']:5.2f}x"
                line += f" {r['rss_mib'] / ref['rss_mib']:6.2f}x"
            else:
                line += f" {'n/a':>12} {'n/a':>6} {'n/a':>7}"
            line += f" {r['seconds'] / floor:11.2f}x"
        print(line)
    if args.json:
        print(json.dumps({"source_bytes": size, "threads": args.threads,
                          "imatrix": args.imatrix, "results": results}))
    if not llama:
        print("\nllama-cpp-python is not installed: no llama.cpp comparison "
              "(pip install llama-cpp-python, ~25 min build)")
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
