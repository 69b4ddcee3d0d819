"""Model sources other than the store: Hugging Face, ModelScope and local GGUF files.

Every source answers with the same ``ImportedModel``: the local GGUF files to put in the
store (model first, then an optional vision projector), the revision they came from and
the repository's own ``template``/``system``/``params`` overrides. Build then treats an
import from a hub exactly like a local file, which keeps the store's single writer.

A repository or folder without GGUF files but with ``config.json`` and safetensors is
handed over as ``folder``: build converts it (``modelkit.convert``).

Hub names are Ollama's: ``hf.co/{user}/{repo}[:{tag}]`` (also ``huggingface.co``) and
``modelscope.cn/{user}/{repo}[:{tag}]``. The tag picks a GGUF file (see ``choose``).

Which importer serves a name is ``hubs.hub_for``; the hub clients themselves are
imported only when a hub is used (see ``huggingface.py``, ``modelscope.py``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from modelkit.names import ModelName
from modelkit.progress import ProgressCallback, ignore_progress

MODEL = "model"
PROJECTOR = "projector"


@dataclass(frozen=True)
class ImportedFile:
    path: Path  # a local file (in the client's cache) to store; the first of ``shards``
    role: str  # MODEL | PROJECTOR
    sha256: str | None  # verified digest (hex) when known; None for local files
    shards: tuple[Path, ...] = ()  # a split GGUF's parts, in order: stored merged


@dataclass(frozen=True)
class ImportedModel:
    source: str  # the name as asked for, e.g. "hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M"
    repo: str  # "user/repo" (a hub) or the path (local)
    revision: str  # the commit the files came from ("" for local files)
    filenames: tuple[str, ...]  # repository paths of every file used (all shards)
    files: tuple[ImportedFile, ...]  # model first, then projector
    template: str | None = None  # repository overrides, as the Hugging Face bridge reads them
    system: str | None = None
    params: dict[str, Any] | None = None
    temporary: tuple[Path, ...] = ()  # what cleanup() deletes (a fetched folder to convert)
    # A Hugging Face model folder (safetensors, no GGUF) for build to convert; ``files``
    # is then empty.
    folder: Path | None = None

    def provenance(self) -> dict[str, Any]:
        """What to record with the model so that a rebuild fetches the same bytes."""
        return {"name": self.source, "repo": self.repo, "revision": self.revision,
                "files": list(self.filenames)}

    def parameter_pairs(self) -> tuple[tuple[str, str], ...]:
        """The repository's ``params`` as Modelfile PARAMETER (name, value) pairs, lists
        spread over repeated names, for ``BuildSpec.parameters``."""
        pairs: list[tuple[str, str]] = []
        for key, value in (self.params or {}).items():
            for item in value if isinstance(value, list) else [value]:
                text = json.dumps(item) if not isinstance(item, str) else item
                pairs.append((key, text))
        return tuple(pairs)

    def cleanup(self) -> None:
        """Delete the temporary files (call after the files are in the store)."""
        for path in self.temporary:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


class Importer(Protocol):
    def fetch(self, name: ModelName, *, progress: ProgressCallback = ignore_progress,
              offline: bool | None = None, revision: str | None = None) -> ImportedModel:
        """Resolve ``name`` on the hub, download (or find in the cache) and verify its
        files. ``offline`` None follows the hub's own setting (``HF_HUB_OFFLINE``);
        ``revision`` pins a commit (for reproducible rebuilds). A split GGUF comes as
        its shards; the store merges them."""
        ...


__all__ = ["MODEL", "PROJECTOR", "ImportedFile", "ImportedModel", "Importer"]
