"""modelkit: build Ollama- and llama.cpp-compatible models with no daemon.

The Python API (``modelkit.api``) is re-exported here: ``create``, ``show``,
``list_models``, ``copy``, ``remove``, ``prune``, ``pull``, ``push``, ``quantize``,
``parse_modelfile``, ``format_modelfile``. Nothing inside the package imports this
module; modules import each other directly (see docs/architecture.md).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType, TracebackType

# A Ctrl-C while the library is still importing (the first second of every command) must
# be one line and exit 130, never a traceback, whatever the import it broke turns it into
# (numpy re-raises it as an ImportError). Both hooks are in place for the imports below
# only, and put back as soon as they are done.
_interrupted = False


def _note_interrupt(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _one_line_interrupt(kind: type[BaseException], exc: BaseException,
                        tb: TracebackType | None) -> None:
    if _interrupted or issubclass(kind, KeyboardInterrupt):
        sys.stderr.write("Error: interrupted\n")
        sys.stderr.flush()
        os._exit(130)
    _previous_hook(kind, exc, tb)


_previous_hook, sys.excepthook = sys.excepthook, _one_line_interrupt
try:
    _previous_sigint = signal.signal(signal.SIGINT, _note_interrupt)
except ValueError:  # imported from a thread other than the main one
    _previous_sigint = None

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
from modelkit.version import __version__  # noqa: E402

sys.excepthook = _previous_hook
if _previous_sigint is not None:
    signal.signal(signal.SIGINT, _previous_sigint)

__all__ = ["__version__", "copy", "create", "format_modelfile", "list_models",
           "parse_modelfile", "prune", "pull", "push", "quantize", "remove", "show"]
