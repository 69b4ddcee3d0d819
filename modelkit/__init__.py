"""modelkit: build Ollama- and llama.cpp-compatible models with no daemon.

The Python API (``modelkit.api``) is re-exported here: ``create``, ``show``,
``list_models``, ``copy``, ``remove``, ``prune``, ``quantize``, ``parse_modelfile``,
``format_modelfile``. It is imported on first use, so ``import modelkit.names`` stays
cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

API = ("create", "show", "list_models", "copy", "remove", "prune", "pull", "quantize",
       "parse_modelfile", "format_modelfile")
__all__ = [*API, "__version__"]

if TYPE_CHECKING:
    from modelkit.api import (  # noqa: F401
        copy,
        create,
        format_modelfile,
        list_models,
        parse_modelfile,
        prune,
        pull,
        quantize,
        remove,
        show,
    )


def __getattr__(name: str) -> Any:
    if name in API:
        from modelkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'modelkit' has no attribute {name!r}")
