"""modelkit: build Ollama- and llama.cpp-compatible models with no daemon.

The Python API (``modelkit.api``) is re-exported here: ``create``, ``show``,
``list_models``, ``copy``, ``remove``, ``prune``, ``pull``, ``push``, ``quantize``,
``parse_modelfile``, ``format_modelfile``. They load on first use (PEP 562), so that
``import modelkit`` and ``modelkit --version`` cost next to nothing. Nothing inside the
package imports this module; modules import each other directly (docs/architecture.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from modelkit.errors import one_line_interrupt

if sys.argv[:1] == ["-m"] or Path(sys.argv[0] if sys.argv else "").name == "modelkit":
    # The command is starting (``python -m modelkit`` or the ``modelkit`` script): a
    # Ctrl-C before its handlers are in place is one line. modelkit.__main__ puts the
    # default hook back once the CLI is loaded; a library import never gets here.
    sys.excepthook = one_line_interrupt

from modelkit.version import __version__  # noqa: E402

__all__ = ["__version__", "copy", "create", "format_modelfile", "list_models",
           "parse_modelfile", "prune", "pull", "push", "quantize", "remove", "show"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'modelkit' has no attribute {name!r}")
    # Deferred for start-up cost: the API loads numpy, gguf and the rest on first use.
    from modelkit import api

    value = getattr(api, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
