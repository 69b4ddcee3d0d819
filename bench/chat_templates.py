"""Benchmark: chat template auto-detection on a long template, and Modelfile parsing.

    PYTHONPATH=. python bench/chat_templates.py [--kb 100] [--repeat 5]

Targets (2 cores): detecting the family of a ~100 kB Jinja chat template, and of the
longest reference template with a small edit (the edit-distance search), under 2 s;
parsing a ~100 kB Modelfile under 1 s (after the first parse has built the parser).
Prints the best of ``--repeat`` runs of each. Timing lives here, not in the tests.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from modelkit import chat_templates
from modelkit.modelfile import parse


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def long_chat_template(size: int) -> str:
    """The longest reference Jinja template shipped with modelkit, repeated to ``size``."""
    longest = max((text for _, text in chat_templates._references()), key=len)
    return longest * (size // len(longest) + 1)


def long_modelfile(size: int) -> str:
    block = ('PARAMETER stop "<|im_end|>"\nMESSAGE user """' + 'say "hi" # not a comment\n' * 20
             + '"""\n# comment\nSYSTEM plain text value with spaces\n')
    return "FROM x\n" + block * (size // len(block) + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", type=int, default=100, help="input size in kB (default 100)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    size = args.kb * 1000

    template = long_chat_template(size)
    # A reference with a small edit: the edit-distance search runs against every
    # reference of about its length (a long template's length rules them all out).
    reference = max((text for _, text in chat_templates._references()), key=len)
    middle = len(reference) // 2
    edited = reference[:middle] + "x" * 20 + reference[middle + 20:]
    for label, text in (("long", template), ("edited", edited)):
        seconds = best_of(args.repeat, lambda t=text: chat_templates.detect_template(t))
        print(f"detect_template ({label:8}) {len(text) / 1000:6.0f} kB  {seconds:8.3f} s"
              "  (target < 2 s)")

    text = long_modelfile(size)
    parse(text)  # the first parse builds the Lark parser
    seconds = best_of(args.repeat, lambda: parse(text))
    print(f"parse Modelfile             {len(text) / 1000:6.0f} kB  {seconds:8.3f} s"
          "  (target < 1 s)")


if __name__ == "__main__":
    main()
