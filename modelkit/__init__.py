"""modelkit: build Ollama- and llama.cpp-compatible models with no daemon.

The Python API (``modelkit.api``) is re-exported here: ``create``, ``show``,
``list_models``, ``copy``, ``remove``, ``prune``, ``pull``, ``push``, ``quantize``,
``parse_modelfile``, ``format_modelfile``. Nothing inside the package imports this
module; modules import each other directly (see docs/architecture.md).
"""

from __future__ import annotations

import sys
from types import TracebackType

from modelkit.version import __version__


def _one_line_interrupt(kind: type[BaseException], exc: BaseException,
                        tb: TracebackType | None) -> None:
    """A Ctrl-C while the library is still importing (the first second of a command)
    is one line, not a traceback; Python then exits as killed by SIGINT (130)."""
    if issubclass(kind, KeyboardInterrupt):
        sys.stderr.write("Error: interrupted\n")
    else:
        _previous_hook(kind, exc, tb)


# Only for the duration of the imports below; put back as soon as they are done.
_previous_hook, sys.excepthook = sys.excepthook, _one_line_interrupt

from modelkit.api import (  # noqa: E402
    copy,
    create,
    format_modelfile,
    list_models,
    parse_modelfile,
    prune,
    pull,
    push,
    quantize,
    remove,
    show,
)

sys.excepthook = _previous_hook

__all__ = ["__version__", "copy", "create", "format_modelfile", "list_models",
           "parse_modelfile", "prune", "pull", "push", "quantize", "remove", "show"]
