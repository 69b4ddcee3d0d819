"""Record llama.cpp's own memory figures for tests/data/memory_figures.json.

Run with a Python that has llama-cpp-python (the reference build, not a modelkit
dependency), from the repository root:

    /opt/ref/llvenv/bin/python tools/record_memory_figures.py [MODEL.gguf ...]

Each model is loaded in a child process per context size with llama-cpp-python's
defaults (n_batch = n_ubatch = 512, one sequence, flash attention off, f16 cache, the
small SWA cache of llama-server; the full-size one too for the SWA models) and
once with a q8_0 cache (which needs flash attention); the lines llama.cpp logs while it
allocates are parsed: ``llama_kv_cache: size = ... MiB (... cells, ... layers ...)``,
``... compute buffer size = ... MiB`` and ``... model buffer size = ... MiB``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "memory_figures.json"
GOLDEN = Path("/work/shared/golden/mixes")
DEFAULT_MODELS = [ROOT / "samples" / "liang-ai" / "liang-ai.gguf",
                  *sorted(GOLDEN.glob("*.gguf"))]
CONTEXTS = (512, 2048, 8192)  # the SWA models' windows (256, 512) are below most
GGML_TYPE_Q8_0 = 8

KV_LINE = re.compile(
    r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers, +(\d+)/(\d+) "
    r"seqs\), K \((\w+)\): +([\d.]+) MiB, V \((\w+)\): +([\d.]+) MiB")
COMPUTE_LINE = re.compile(r"(\S+) compute buffer size = +([\d.]+) MiB")
MODEL_LINE = re.compile(r"(\S+) model buffer size = +([\d.]+) MiB")

CHILD = f"""
import sys, llama_cpp
path, n_ctx, q8 = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
kw = dict(type_k={GGML_TYPE_Q8_0}, type_v={GGML_TYPE_Q8_0}, flash_attn=True) if q8 else {{}}
llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=1,
                verbose=True, swa_full=sys.argv[4] == "1", **kw)
"""


def load(path: Path, n_ctx: int, q8: bool, swa_full: bool) -> dict[str, object] | None:
    run = subprocess.run([sys.executable, "-c", CHILD, str(path), str(n_ctx), "1" if q8 else "0",
                          "1" if swa_full else "0"], capture_output=True, text=True, timeout=600)
    log = run.stderr
    if run.returncode != 0:
        print(f"{path.name} n_ctx={n_ctx}: llama.cpp could not load it: "
              f"{log.strip().splitlines()[-1] if log.strip() else run.returncode}")
        return None
    caches = [{"mib": float(m[0]), "cells": int(m[1]), "layers": int(m[2]),
               "k_type": m[5], "k_mib": float(m[6]), "v_type": m[7], "v_mib": float(m[8])}
              for m in KV_LINE.findall(log)]
    compute = {m[0]: float(m[1]) for m in COMPUTE_LINE.findall(log)}
    model = {m[0]: float(m[1]) for m in MODEL_LINE.findall(log)}
    return {"n_ctx": n_ctx, "n_ubatch": 512, "kv_type": "q8_0" if q8 else "f16",
            "flash_attn": q8, "swa_full": swa_full, "kv_caches": caches,
            "compute_buffer_mib": compute, "model_buffer_mib": model}


def _generated(folder: Path) -> list[tuple[str, Path]]:
    """The sliding-window models of tests/memory_models.py, written to ``folder``."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from memory_models import SWA_MODELS, write_swa_model  # the tests' own generator

    return [(f"generated:{name}", write_swa_model(GOLDEN.parent, name, folder / f"{name}.gguf"))
            for name in SWA_MODELS]


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        models = [(None, Path(a)) for a in argv] or [
            *((None, p) for p in DEFAULT_MODELS), *_generated(Path(tmp))]
        return _record(models)


def _record(models: list[tuple[str | None, Path]]) -> int:
    records = []
    for label, path in models:
        for n_ctx in CONTEXTS:
            for q8, swa_full in _variants(n_ctx, label is not None):
                figures = load(path, n_ctx, q8, swa_full)
                if figures is not None:
                    name = label or (str(path.relative_to(ROOT)) if path.is_relative_to(ROOT)
                                     else f"golden:mixes/{path.name}")
                    records.append({"model": name, **figures})
                    print(name, figures["n_ctx"], figures["kv_type"],
                          [c["mib"] for c in figures["kv_caches"]],  # type: ignore[union-attr]
                          figures["compute_buffer_mib"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"llama_cpp_python": _version(), "records": records}, indent=1)
                   + "\n")
    return 0


def _variants(n_ctx: int, sliding: bool) -> list[tuple[bool, bool]]:
    """(q8_0 cache, full-size SWA cache) pairs: llama-cpp-python's default is a full-size
    SWA cache (the library's default); llama-server and llama-cli use the small one."""
    out = [(False, False)]
    if n_ctx == CONTEXTS[0]:
        out.append((True, False))
    if sliding:
        out.append((False, True))
    return out


def _version() -> str:
    import llama_cpp  # the reference build: only this tool needs it

    return str(llama_cpp.__version__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
