"""``show`` of a model that is not in the store: read its GGUF header and tensor table
(and its small text files) from the hub or registry by HTTP range requests.

Nothing is written anywhere: not to the store, not to the hub clients' caches. The
files are the ones ``pull`` would fetch (the same ``importers.choose`` rules); every
byte received is counted (``PeekedModel.bytes_read``), and no header read goes past
``gguf_file.ranged.HEADER_LIMIT``.

Modules: ``hub`` (hf.co and modelscope.cn through their clients' sessions),
``registry`` (OCI registries through ``modelkit.registry``'s client).
"""

from __future__ import annotations

from modelkit.importers.hubs import backend_for
from modelkit.names import ModelName
from modelkit.peek.hub import peek_hub
from modelkit.peek.model import PeekedModel
from modelkit.peek.registry import peek_registry


def names_a_host(text: str) -> bool:
    """Whether the name as typed spells out a host (``host/namespace/model``): only then
    is a model that is not in the store looked up on its registry."""
    return text.rpartition("://")[2].count("/") >= 2


def peek(name: ModelName, *, insecure: bool = False) -> PeekedModel:
    """The remote model ``name`` (hub or registry), read by ranges, stored nowhere."""
    backend = backend_for(name)
    if backend is not None:
        return peek_hub(name, backend)
    return peek_registry(name, insecure=insecure)


__all__ = ["PeekedModel", "names_a_host", "peek"]
