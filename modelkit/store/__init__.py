"""The models directory, in Ollama's own layout; the only writer under it.

(``modelkit.store.partial`` adds resumable downloads in parts, for registry pulls.)

Layout (``root`` is ``$MODELKIT_MODELS``, else ``$OLLAMA_MODELS``, else ``~/.ollama/models``)::

    root/blobs/sha256-<64 hex>                         content-addressed blobs
    root/manifests/<host>/<namespace>/<model>/<tag>    one JSON manifest per model
    root/.modelkit.lock                                cross-process lock (flock)

Crash safety: every file is written to a hidden temporary file in its target folder,
hashed while written, fsynced, then renamed into place, and the folder is fsynced. A
manifest is written only after all of its blobs are in place, so a crash at any moment
leaves at worst an unreferenced blob or a hidden temporary file, both of which
``prune`` removes; never a manifest pointing at a missing blob, never a partial blob
under a final name.

Concurrency: writers (create, pull, cp) hold the lock shared while they add blobs and
manifests; anything that deletes (rm, prune, the clean-up after a re-create) holds it
exclusively, so a blob is never deleted between the moment a create reuses it and the
moment its manifest is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from modelkit.errors import DigestError, ModelNotFoundError, StoreError
from modelkit.manifest import Manifest
from modelkit.names import Digest, ModelName

TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".modelkit.lock"
COPY_CHUNK = 8 << 20
FICLONE = 0x40049409  # linux/fs.h: share extents with another file (reflink)

# (bytes done, bytes total) -> None
ByteProgress = Callable[[int, int], None]


def default_root() -> Path:
    for var in ("MODELKIT_MODELS", "OLLAMA_MODELS"):
        value = os.environ.get(var)
        if value:
            return Path(value).expanduser()
    return Path.home() / ".ollama" / "models"


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (best effort where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class BlobWrite:
    digest: Digest
    size: int
    created: bool  # False when the store already had this blob


@dataclass(frozen=True)
class StoredModel:
    name: ModelName
    path: Path
    manifest: Manifest
    mtime: float

    @property
    def id(self) -> str:
        """``ollama list`` ID: first 12 hex of the sha256 of the manifest file bytes."""
        return self.manifest.digest.short()


@dataclass(frozen=True)
class PrunePlan:
    blobs: tuple[Path, ...] = ()  # unreferenced blobs
    temp_files: tuple[Path, ...] = ()  # leftovers of interrupted writes
    empty_dirs: tuple[Path, ...] = ()  # manifest folders left empty
    bytes_freed: int = 0

    @property
    def empty(self) -> bool:
        return not (self.blobs or self.temp_files or self.empty_dirs)


class BlobWriter:
    """A blob being written: hashed as it is written, committed atomically."""

    def __init__(self, store: Store) -> None:
        self._store = store
        store.blobs.mkdir(parents=True, exist_ok=True)
        self.temp_path = store.blobs / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        self._file: BinaryIO = open(self.temp_path, "xb")  # noqa: SIM115
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)

    def tell(self) -> int:
        return self.size

    def commit(self, expected: Digest | None = None) -> BlobWrite:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = Digest("sha256", self._hash.hexdigest())
        if expected is not None and expected != digest:
            self.abort()
            raise DigestError(
                f"digest mismatch: want {expected}, got {digest}"
            )
        self._done = True
        return self._store._install_temp(self.temp_path, digest, self.size)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp_path.unlink()
        self._done = True

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._done:
            self.abort()


class Store:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"

    # ----------------------------------------------------------------- locking
    @contextlib.contextmanager
    def lock(self, *, exclusive: bool) -> Iterator[None]:
        """Cross-process lock: shared for adding, exclusive for deleting."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot use models directory: "
                             f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # ------------------------------------------------------------------- blobs
    def blob_path(self, digest: Digest | str) -> Path:
        d = digest if isinstance(digest, Digest) else Digest.parse(digest)
        return self.blobs / d.filename

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def read_blob(self, digest: Digest) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from {self.blobs}") from None

    def open_writer(self) -> BlobWriter:
        try:
            return BlobWriter(self)
        except OSError as exc:
            raise StoreError(f"{self.blobs}: cannot write: {exc.strerror or exc}") from None

    def write_blob(self, data: bytes) -> BlobWrite:
        digest = Digest("sha256", hashlib.sha256(data).hexdigest())
        if self.has_blob(digest, len(data)):
            self._touch(digest)
            return BlobWrite(digest, len(data), False)
        with self.open_writer() as w:
            w.write(data)
            return w.commit()

    def import_file(self, path: Path, *, link: bool = False,
                    progress: ByteProgress | None = None) -> BlobWrite:
        """Store a file's bytes unchanged. One read both hashes and copies it; with
        ``link`` the blob shares the file's storage (reflink, else hard link) when the
        filesystem allows, falling back to a copy."""
        total = path.stat().st_size
        if link:
            linked = self._import_linked(path, total, progress)
            if linked is not None:
                return linked
        with self.open_writer() as w, open(path, "rb") as src:
            buf = bytearray(COPY_CHUNK)
            view = memoryview(buf)
            while True:
                n = src.readinto(buf)
                if not n:
                    break
                w.write(view[:n])
                if progress:
                    progress(w.size, total)
            return w.commit()

    def _import_linked(self, path: Path, total: int,
                       progress: ByteProgress | None) -> BlobWrite | None:
        digest = hash_file(path, progress)
        if self.has_blob(digest, total):
            self._touch(digest)
            return BlobWrite(digest, total, False)
        self.blobs.mkdir(parents=True, exist_ok=True)
        temp = self.blobs / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            with open(path, "rb") as src, open(temp, "xb") as dst:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            try:
                os.link(path, temp)
            except OSError:
                return None
        # The file may have changed between hashing and linking: hash what we linked.
        if hash_file(temp) != digest:
            temp.unlink()
            return None
        return self._install_temp(temp, digest, total)

    def _install_temp(self, temp: Path, digest: Digest, size: int) -> BlobWrite:
        final = self.blob_path(digest)
        if final.exists():
            temp.unlink()
            self._touch(digest)
            return BlobWrite(digest, size, False)
        os.chmod(temp, 0o644)
        os.replace(temp, final)
        fsync_dir(self.blobs)
        return BlobWrite(digest, size, True)

    def _touch(self, digest: Digest) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.blob_path(digest))

    # --------------------------------------------------------------- manifests
    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests.joinpath(*name.filepath_parts())

    def iter_names(self) -> Iterator[tuple[ModelName, Path]]:
        """Every valid manifest path (exactly host/namespace/model/tag, all valid)."""
        if not self.manifests.is_dir():
            return
        for host in sorted(self.manifests.iterdir()):
            for ns in _subdirs(host):
                for model in _subdirs(ns):
                    for tag in sorted(model.iterdir()) if model.is_dir() else ():
                        if not tag.is_file():
                            continue
                        name = ModelName.from_filepath_parts(
                            (host.name, ns.name, model.name, tag.name))
                        if name is not None:
                            yield name, tag

    def resolve(self, name: ModelName) -> ModelName | None:
        """The existing model ``name`` refers to, or None. An exact spelling wins;
        otherwise parts compare case-insensitively, as Ollama resolves names."""
        match = None
        for existing, _ in self.iter_names():
            if existing.filepath_parts() == name.filepath_parts():
                return existing
            if match is None and existing.casefold_key() == name.casefold_key():
                match = existing
        return match

    def canonical(self, name: ModelName) -> ModelName:
        """``name`` spelled as an existing model when one matches, else as given."""
        return self.resolve(name) or name

    def read_manifest(self, name: ModelName) -> Manifest:
        return self.get(name).manifest

    def get(self, name: ModelName) -> StoredModel:
        """The stored model ``name`` resolves to (one walk of the manifests folder)."""
        existing = self.resolve(name)
        if existing is not None:
            path = self.manifest_path(existing)
            try:
                data, mtime = path.read_bytes(), path.stat().st_mtime
            except FileNotFoundError:
                pass  # removed by another process meanwhile
            else:
                return StoredModel(existing, path, Manifest.from_bytes(data, where=str(path)),
                                   mtime)
        raise ModelNotFoundError(f'model "{name.display_shortest()}" not found')

    def write_manifest(self, name: ModelName, manifest: Manifest) -> Path:
        for layer in manifest.all_layers():
            if not self.has_blob(layer.digest):
                raise StoreError(f"refusing to write manifest {name}: blob {layer.digest} "
                                 "is missing")
        path = self.manifest_path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as f:
                f.write(manifest.to_bytes())
        except OSError as exc:
            raise StoreError(f"{path}: cannot write manifest: {exc.strerror or exc}") from None
        return path

    def delete_manifest(self, name: ModelName) -> Manifest:
        stored = self.get(name)
        manifest, path = stored.manifest, stored.path
        path.unlink()
        fsync_dir(path.parent)
        self._remove_empty_dirs(path.parent)
        return manifest

    def _remove_empty_dirs(self, start: Path) -> None:
        d = start
        while d != self.manifests and self.manifests in d.parents:
            try:
                d.rmdir()
            except OSError:
                return
            d = d.parent

    def list_models(self) -> list[StoredModel]:
        models = []
        for name, path in self.iter_names():
            manifest = Manifest.from_bytes(path.read_bytes(), where=str(path))
            models.append(StoredModel(name, path, manifest, path.stat().st_mtime))
        return models

    # ----------------------------------------------------------------- pruning
    def referenced_digests(self) -> set[Digest]:
        """Digests used by any manifest. A corrupt manifest raises StoreError: we then
        cannot know what it references, so nothing may be deleted (Ollama does the same)."""
        used: set[Digest] = set()
        for _, path in self.iter_names():
            manifest = Manifest.from_bytes(path.read_bytes(), where=str(path))
            used.update(layer.digest for layer in manifest.all_layers())
        return used

    def plan_prune(self, candidates: set[Digest] | None = None) -> PrunePlan:
        """What a prune would delete. With ``candidates``, only those blobs are
        considered (rm and re-create clean up after themselves this way); without,
        every unreferenced blob, every stale temporary file and every empty manifest
        folder. Call with the exclusive lock held."""
        used = self.referenced_digests()
        blobs: list[Path] = []
        temps: list[Path] = []
        freed = 0
        if self.blobs.is_dir():
            for entry in sorted(self.blobs.iterdir()):
                digest = Digest.from_filename(entry.name)
                if digest is None:
                    if candidates is None and entry.name.startswith(TEMP_PREFIX):
                        temps.append(entry)
                        freed += _size(entry)
                    continue
                if digest in used or (candidates is not None and digest not in candidates):
                    continue
                blobs.append(entry)
                freed += _size(entry)
        dirs: list[Path] = []
        if candidates is None and self.manifests.is_dir():
            for dirpath, dirnames, filenames in os.walk(self.manifests, topdown=False):
                p = Path(dirpath)
                if p == self.manifests:
                    continue
                for f in filenames:
                    if f.startswith(TEMP_PREFIX):
                        temps.append(p / f)
                live = [f for f in filenames if not f.startswith(TEMP_PREFIX)]
                if not live and all((p / d) in dirs for d in dirnames):
                    dirs.append(p)
        return PrunePlan(tuple(blobs), tuple(temps), tuple(dirs), freed)

    def execute_prune(self, plan: PrunePlan) -> None:
        for path in (*plan.blobs, *plan.temp_files):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for d in plan.empty_dirs:
            with contextlib.suppress(OSError):
                d.rmdir()
        if plan.blobs or plan.temp_files:
            fsync_dir(self.blobs)


def _subdirs(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_dir())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def hash_file(path: Path, progress: ByteProgress | None = None) -> Digest:
    """The sha256 of a file, read in chunks, reporting (done, total) bytes."""
    total = path.stat().st_size
    h = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return Digest("sha256", h.hexdigest())


@contextlib.contextmanager
def atomic_file(path: Path, *, mode: int | None = 0o644) -> Iterator[BinaryIO]:
    """Write ``path`` all or nothing: a hidden temporary file in the same folder,
    fsynced, renamed over ``path`` when the block ends; on any error ``path`` is left as
    it was and the temporary file removed. ``mode=None`` keeps the umask's mode."""
    temp = path.parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    try:
        with open(temp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    fsync_dir(path.parent)
