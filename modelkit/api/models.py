"""The store side of the API: the ``store`` argument, ``parse_modelfile``,
``list_models``, ``copy``, ``remove``, ``prune`` and ``verify``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from modelkit.errors import (
    ModelNotFoundError,
)
from modelkit.manifest import ModelConfig
from modelkit.modelfile import Modelfile, parse, parse_file
from modelkit.names import ModelName
from modelkit.progress import ByteProgress, ProgressCallback, ignore_progress
from modelkit.store import (
    DamagedCallback,
    PrunePlan,
    Store,
    StoredModel,
)
from modelkit.store.verify import VerifyReport, verify_store

StoreArg = Store | str | os.PathLike[str] | None


def _store(store: StoreArg) -> Store:
    return store if isinstance(store, Store) else Store(store)


def parse_modelfile(source: str | bytes | os.PathLike[str]) -> Modelfile:
    """Parse Modelfile text (str or bytes), or the file at a path (``Path``)."""
    if isinstance(source, os.PathLike):
        return parse_file(source)
    return parse(source)


@dataclass(frozen=True)
class ModelSummary:
    name: str  # shortest display form
    model: ModelName
    id: str  # first 12 hex of the manifest digest
    digest: str
    size: int
    modified: float  # manifest mtime, seconds since the epoch
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""


def list_models(prefix: str | None = None, *, store: StoreArg = None,
                on_damaged: DamagedCallback | None = None) -> list[ModelSummary]:
    """Stored models, newest first; ``prefix`` filters names case-insensitively. A
    damaged manifest is skipped and reported to ``on_damaged`` (as Ollama's list skips it)."""
    s = _store(store)
    out = []
    for stored in s.list_models(on_damaged):
        display = stored.name.display_shortest()
        if prefix and not display.lower().startswith(prefix.lower()):
            continue
        config = None
        try:
            config = ModelConfig.from_bytes(s.read_blob(stored.manifest.config.digest))
        except Exception:  # a missing config still lists, as in Ollama  # noqa: BLE001
            config = None
        out.append(ModelSummary(
            name=display, model=stored.name, id=stored.id,
            digest=str(stored.manifest.digest), size=stored.manifest.total_size,
            modified=stored.mtime,
            family=config.model_family if config else "",
            parameter_size=config.model_type if config else "",
            quantization=config.file_type if config else "",
        ))
    out.sort(key=lambda m: m.modified, reverse=True)
    return out


def _stored(s: Store, name: ModelName, as_typed: str) -> StoredModel:
    """The stored model; not found is reported with the name as the user typed it."""
    try:
        return s.get(name)
    except ModelNotFoundError:
        raise ModelNotFoundError(f'model "{as_typed}" not found') from None


def copy(source: str, destination: str, *, store: StoreArg = None) -> ModelName:
    """Copy a model's manifest verbatim under a new name (same ID, no blob copied)."""
    s = _store(store)
    src, dst = ModelName.parse(source), ModelName.parse(destination)
    with s.lock(exclusive=False):
        existing = _stored(s, src, source)
        target = s.canonical(dst)
        if target.filepath_parts() != existing.name.filepath_parts():
            s.write_manifest(target, existing.manifest)
    return target


def remove(name: str, *, store: StoreArg = None) -> tuple[ModelName, PrunePlan]:
    """Delete a model and every blob of it that no other model uses. A damaged
    manifest is deleted too; the blobs it used are left for ``prune``."""
    s = _store(store)
    model = ModelName.parse(name)
    with s.lock(exclusive=True):
        existing = s.resolve(model)
        if existing is None:
            raise ModelNotFoundError(f'model "{name}" not found')
        removed = s.delete_manifest(existing)
        plan = PrunePlan()
        if isinstance(removed, StoredModel):
            plan = s.plan_prune({layer.digest for layer in removed.manifest.all_layers()})
            s.execute_prune(plan)
    return removed.name, plan


def prune(*, dry_run: bool = False, store: StoreArg = None) -> PrunePlan:
    """Delete unreferenced blobs, leftover temporary files and empty manifest folders.
    With ``dry_run``, only compute and return the plan."""
    s = _store(store)
    if not s.root.exists():
        return PrunePlan()
    with s.lock(exclusive=True):
        plan = s.plan_prune()
        if not dry_run:
            s.execute_prune(plan)
    return plan


def verify(names: Sequence[str] = (), *, store: StoreArg = None,
           progress: ProgressCallback = ignore_progress) -> VerifyReport:
    """Re-hash the blobs of the named models (default: every blob in the store) and
    report missing, damaged and unreferenced ones. Holds the lock shared, so no prune
    or rm runs meanwhile."""
    s = _store(store)
    models = [ModelName.parse(n) for n in names]
    for text, model in zip(names, models, strict=True):
        if s.resolve(model) is None:
            raise ModelNotFoundError(f'model "{text}" not found')
    if not s.root.exists():
        return VerifyReport()
    with s.lock(exclusive=False):
        return verify_store(s, models, ByteProgress(progress, "verifying sha256 digests"))
