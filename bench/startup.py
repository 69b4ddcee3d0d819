"""Benchmark: start-up time of the ``modelkit`` command (issue 12, point 5).

    python bench/startup.py [--runs 7] [--importtime]

Runs ``python -m modelkit --version``, ``python -m modelkit list`` and ``python -m
modelkit show liang-ai`` (on a models directory holding only the bundled sample, created
first) as fresh child processes ``--runs`` times each and prints the median and the best
wall time and CPU time (user + system of the child), next to a bare ``python -c pass``
(the interpreter's own start-up, which no change here can remove). The target is a median
under 0.3 s for each command (``show NAME`` reads only the header, so its time does not
grow with the model: bench/store.py times it on a 0.8 GB model). The machine is shared, so CPU time
is the steadier figure; quote medians. ``--importtime`` also lists the ten modules whose
import costs most (``python -X importtime``), cumulative, for ``list`` and ``show``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.3  # seconds


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def import_costs(env: dict[str, str], argv: list[str],
                 top: int = 10) -> list[tuple[int, str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "modelkit", *argv],
                          env=env, capture_output=True, text=True, check=True)
    costs = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        costs.append((int(cumulative), name))
    return sorted(costs, reverse=True)[:top]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--importtime", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as models:
        env = {**os.environ, "PYTHONPATH": str(REPO), "MODELKIT_MODELS": models}
        env.pop("MODELKIT_DEBUG", None)
        subprocess.run([sys.executable, "-m", "modelkit", "create", "liang-ai", "-f",
                        str(REPO / "samples" / "liang-ai" / "Modelfile")],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "modelkit --version": [sys.executable, "-m", "modelkit", "--version"],
            "modelkit list": [sys.executable, "-m", "modelkit", "list"],
            "modelkit show NAME": [sys.executable, "-m", "modelkit", "show", "liang-ai"],
        }
        print(f"{'command':<20} {'median wall':>12} {'best wall':>10} {'median cpu':>11}")
        for label, argv in commands.items():
            runs = [timed(argv, env) for _ in range(args.runs)]
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            verdict = "" if label.startswith("python") else (
                "  ok" if wall < TARGET else f"  over the {TARGET} s target")
            print(f"{label:<20} {wall:>11.3f}s {min(w for w, _ in runs):>9.3f}s "
                  f"{cpu:>10.3f}s{verdict}")
        if args.importtime:
            for argv in (["list"], ["show", "liang-ai"]):
                print(f"\nmost expensive imports of 'modelkit {' '.join(argv)}' "
                      "(cumulative, ms):")
                for micros, name in import_costs(env, argv):
                    print(f"{micros / 1000:>9.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
