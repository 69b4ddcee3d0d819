"""modelkit: build Ollama- and llama.cpp-compatible models with no daemon.

The Python API (``modelkit.api``) is re-exported here: ``create``, ``show``,
``list_models``, ``copy``, ``remove``, ``prune``, ``pull``, ``push``, ``quantize``,
``parse_modelfile``, ``format_modelfile``. Nothing inside the package imports this
module; modules import each other directly (see docs/architecture.md).
"""

from __future__ import annotations

from modelkit.api import (
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
from modelkit.version import __version__

__all__ = ["__version__", "copy", "create", "format_modelfile", "list_models",
           "parse_modelfile", "prune", "pull", "push", "quantize", "remove", "show"]
