"""modelkit: build Ollama- and llama.cpp-compatible models with no daemon.

The Python API (``modelkit.api``) is re-exported here: ``create``, ``show``,
``list_models``, ``copy``, ``remove``, ``prune``, ``pull``, ``push``, ``quantize``,
``parse_modelfile``, ``format_modelfile``. Nothing inside the package imports this
module; modules import each other directly (see docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelkit.version import __version__

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    """The API functions, imported on first use: ``import modelkit`` (and the command's
    entry point, which lives in this package) stays cheap and safe to interrupt."""
    if name in __all__ and name != "__version__":
        # The API is deferred for start-up cost: the entry point lives in this package.
        from modelkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'modelkit' has no attribute {name!r}")

__all__ = ["__version__", "copy", "create", "format_modelfile", "list_models",
           "parse_modelfile", "prune", "pull", "push", "quantize", "remove", "show"]
