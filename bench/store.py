"""Benchmark: the everyday ``create`` path against ``sha256sum`` on the same file.

    python bench/store.py [--params 4e8] [--repeat 3] [--keep DIR]

1. Writes a deterministic synthetic F16 llama GGUF of about ``--params`` parameters
   (default 0.4 billion: ~0.8 GB) with bench/quantize.py's generator.
2. Reads it once so that every measurement starts from the page cache, then times
   ``sha256sum`` on it (the floor: one read and one hash).
3. Times ``create`` of a Modelfile ``FROM`` that file into an empty models directory
   (one read: hashed while copied, fsynced), and re-creating the unchanged model (the
   digest cache answers: nothing is read or copied).
4. Prints the best of ``--repeat`` runs of each and the ratios (targets: create <= 1.1x
   sha256sum; re-create < 0.5 s).

Timing is in-process through ``modelkit.api`` (the interpreter's start-up and imports are
measured by the start-up benchmark, not here). Never run this in CI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from quantize import build_model  # noqa: E402  (bench/quantize.py, beside this file)

from modelkit import api  # noqa: E402
from modelkit.gguf_file import read_gguf  # noqa: E402
from modelkit.store import Store  # noqa: E402


def best_of(repeat: int, run: Callable[[], None], before: Callable[[], None] | None = None
            ) -> float:
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=float, default=4e8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="keep the files in this folder")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="modelkit-bench-store-"))
    work.mkdir(parents=True, exist_ok=True)
    gguf_path = work / "bench.gguf"
    try:
        if not gguf_path.exists():
            build_model(gguf_path, args.params)
        size = gguf_path.stat().st_size
        (work / "Modelfile").write_text("FROM ./bench.gguf\n")
        models = work / "models"
        subprocess.run(["sha256sum", str(gguf_path)], check=True, capture_output=True)
        time.sleep(0.2)  # past the digest cache's settling margin for a fresh file

        def sha256sum() -> None:
            subprocess.run(["sha256sum", str(gguf_path)], check=True, capture_output=True)

        def empty_store() -> None:
            shutil.rmtree(models, ignore_errors=True)

        def create() -> None:
            api.create("bench", work / "Modelfile", store=models)

        def import_only() -> None:
            Store(models).import_file(gguf_path)

        def header_only() -> None:
            read_gguf(gguf_path)

        t_sum = best_of(args.repeat, sha256sum)
        t_header = best_of(args.repeat, header_only)
        t_import = best_of(args.repeat, import_only, empty_store)
        t_create = best_of(args.repeat, create, empty_store)
        create()  # the models directory now holds the model and the file's digest
        t_again = best_of(args.repeat, create)
        mb = size / 1e6
        print(f"file: {mb:.0f} MB ({gguf_path})")
        print(f"sha256sum            {t_sum:7.2f} s  {mb / t_sum:7.0f} MB/s")
        print(f"  header parse       {t_header:7.2f} s  (read_gguf, part of create)")
        print(f"  store copy + hash  {t_import:7.2f} s  {mb / t_import:7.0f} MB/s"
              "  (Store.import_file, part of create)")
        print(f"create (fresh store) {t_create:7.2f} s  {mb / t_create:7.0f} MB/s")
        print(f"re-create unchanged  {t_again:7.3f} s")
        print(f"ratio create / sha256sum: {t_create / t_sum:.2f}x (target <= 1.10x)")
        print(f"ratio store copy + hash / sha256sum: {t_import / t_sum:.2f}x")
        print(f"re-create: {t_again:.3f} s (target < 0.5 s)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
