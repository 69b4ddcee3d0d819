"""``verify``: re-hash stored blobs and say which are missing, damaged or unreferenced.

What Ollama users lack after a disk fault or an edited hard-linked GGUF: every blob a
manifest references must exist, have the size the manifest gives and hash to its name.
Verifying the whole store also re-hashes unreferenced blobs and lists them (``prune``
removes them); naming models checks only their blobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelkit.errors import ModelNotFoundError
from modelkit.names import Digest, ModelName
from modelkit.progress import ByteCounter
from modelkit.store import (
    DamagedManifest,
    Store,
    StoredModel,
    _size,
    hash_file,
)


@dataclass(frozen=True)
class BlobProblem:
    digest: Digest
    path: Path
    problem: str  # what is wrong, in words
    models: tuple[str, ...] = ()  # models that use the blob (shortest names)


@dataclass(frozen=True)
class VerifyReport:
    checked: int = 0  # blobs re-hashed
    bytes_checked: int = 0
    missing: tuple[BlobProblem, ...] = ()
    damaged: tuple[BlobProblem, ...] = ()
    unreferenced: tuple[Path, ...] = ()  # only when the whole store was verified
    damaged_manifests: tuple[DamagedManifest, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not (self.missing or self.damaged or self.damaged_manifests)


def _selected(store: Store, names: Sequence[ModelName]
              ) -> tuple[list[StoredModel], list[DamagedManifest]]:
    if not names:
        return store.scan()
    models, damaged = store.scan()
    by_path = {m.path: m for m in models}
    by_path_damaged = {d.path: d for d in damaged}
    chosen: list[StoredModel] = []
    chosen_damaged: list[DamagedManifest] = []
    for name in names:
        existing = store.resolve(name)
        if existing is None:
            raise ModelNotFoundError(f'model "{name.display_shortest()}" not found')
        path = store.manifest_path(existing)
        if path in by_path:
            chosen.append(by_path[path])
        elif path in by_path_damaged:
            chosen_damaged.append(by_path_damaged[path])
    return chosen, chosen_damaged


def verify_store(store: Store, names: Sequence[ModelName] = (),
                 progress: ByteCounter | None = None) -> VerifyReport:
    """Re-hash the blobs of ``names`` (default: every blob in the store)."""
    models, damaged_manifests = _selected(store, names)
    wanted: dict[Digest, tuple[int, list[str]]] = {}
    for m in models:
        for layer in m.manifest.all_layers():
            _, users = wanted.setdefault(layer.digest, (layer.size, []))
            if m.name.display_shortest() not in users:
                users.append(m.name.display_shortest())
    unreferenced: list[Path] = []
    to_hash: dict[Digest, Path] = {}
    missing: list[BlobProblem] = []
    damaged: list[BlobProblem] = []
    if not names and store.blobs.is_dir():
        for entry in sorted(store.blobs.iterdir()):
            digest = Digest.from_filename(entry.name)
            if digest is not None and entry.is_file():
                to_hash[digest] = entry
                if digest not in wanted:
                    unreferenced.append(entry)
    for digest, (size, users) in sorted(wanted.items(), key=lambda kv: str(kv[0])):
        path = store.blob_path(digest)
        if not path.is_file():
            missing.append(BlobProblem(digest, path, "missing", tuple(users)))
        elif path.stat().st_size != size:
            damaged.append(BlobProblem(
                digest, path, f"size {path.stat().st_size} bytes, the manifest says {size}",
                tuple(users)))
            to_hash.pop(digest, None)
        else:
            to_hash[digest] = path
    total = sum(_size(p) for p in to_hash.values())
    done = 0
    for digest, path in sorted(to_hash.items(), key=lambda kv: str(kv[0])):
        base = done

        def report(n: int, _size_of_file: int, base: int = base) -> None:
            if progress is not None:
                progress(base + n, total)

        try:
            actual = hash_file(path, report)
        except OSError as exc:
            actual = None
            problem = f"cannot read: {exc.strerror or exc}"
        else:
            problem = f"content hashes to {actual}"
        done = base + _size(path)
        if actual != digest:
            users = wanted.get(digest, (0, []))[1]
            damaged.append(BlobProblem(digest, path, problem, tuple(users)))
    damaged.sort(key=lambda b: str(b.digest))
    return VerifyReport(len(to_hash), total, tuple(missing), tuple(damaged),
                        tuple(unreferenced), tuple(damaged_manifests))
