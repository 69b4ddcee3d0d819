"""Which hub serves a model name: Ollama's ``hf.co``/``huggingface.co`` and
``modelscope.cn`` hosts, each with its importer."""

from __future__ import annotations

from modelkit.importers import Importer
from modelkit.importers.huggingface import HuggingFaceImporter
from modelkit.importers.modelscope import ModelScopeImporter
from modelkit.names import ModelName

HF_HOSTS = frozenset({"hf.co", "huggingface.co"})
MODELSCOPE_HOSTS = frozenset({"modelscope.cn", "www.modelscope.cn"})


def hub_for(name: ModelName) -> Importer | None:
    """The importer for ``name``'s host, or None when the host is not a model hub."""
    host = name.host.lower()
    if host in HF_HOSTS:
        return HuggingFaceImporter()
    if host in MODELSCOPE_HOSTS:
        return ModelScopeImporter()
    return None
