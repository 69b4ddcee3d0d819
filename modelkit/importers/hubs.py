"""Which hub serves a model name: Ollama's ``hf.co``/``huggingface.co`` and
``modelscope.cn`` hosts, each with its importer (the hub's client backend driven by
``common.fetch_from_hub``)."""

from __future__ import annotations

from typing import ClassVar

from modelkit.importers import ImportedModel, Importer
from modelkit.importers.common import fetch_from_hub
from modelkit.importers.huggingface import HuggingFaceBackend
from modelkit.importers.modelscope import ModelScopeBackend
from modelkit.names import ModelName
from modelkit.progress import ProgressCallback, ignore_progress

HF_HOSTS = frozenset({"hf.co", "huggingface.co"})
MODELSCOPE_HOSTS = frozenset({"modelscope.cn", "www.modelscope.cn"})


class _HubImporter:
    """An Importer over one hub client's backend; its errors leave as ModelkitErrors."""

    backend: ClassVar[type[HuggingFaceBackend] | type[ModelScopeBackend]]

    def fetch(self, name: ModelName, *, progress: ProgressCallback = ignore_progress,
              offline: bool | None = None, revision: str | None = None) -> ImportedModel:
        backend = self.backend(name, offline=offline, revision=revision)
        with backend.errors():
            return fetch_from_hub(name, backend, progress)


class HuggingFaceImporter(_HubImporter):
    """The Importer for ``hf.co`` and ``huggingface.co`` names."""

    backend = HuggingFaceBackend


class ModelScopeImporter(_HubImporter):
    """The Importer for ``modelscope.cn`` names."""

    backend = ModelScopeBackend


def hub_for(name: ModelName) -> Importer | None:
    """The importer for ``name``'s host, or None when the host is not a model hub."""
    host = name.host.lower()
    if host in HF_HOSTS:
        return HuggingFaceImporter()
    if host in MODELSCOPE_HOSTS:
        return ModelScopeImporter()
    return None


def backend_for(name: ModelName, *, offline: bool | None = None,
                revision: str | None = None) -> HuggingFaceBackend | ModelScopeBackend | None:
    """The hub client backend for ``name``'s host (for ranged reads), or None."""
    importer = hub_for(name)
    if not isinstance(importer, _HubImporter):
        return None
    return importer.backend(name, offline=offline, revision=revision)
