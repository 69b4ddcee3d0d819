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
import io
import os
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from modelkit.errors import DigestError, ModelkitError, ModelNotFoundError, StoreError
from modelkit.manifest import Manifest
from modelkit.names import Digest, ModelName
from modelkit.progress import ByteCounter
from modelkit.store.digests import CACHE_NAME, DigestCache

TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".modelkit.lock"
COPY_CHUNK = 8 << 20
FICLONE = 0x40049409  # linux/fs.h: share extents with another file (reflink)

# (method, bytes done, bytes total) -> None; method: copying, reflinking, hard-linking, unchanged
ImportProgress = Callable[[str, int, int], None]
# How import_file stores a file: copy it, reflink it (copy where impossible), hard-link it.
LinkMode = Literal["copy", "reflink", "hard"]
LINK_MODES: tuple[LinkMode, ...] = ("copy", "reflink", "hard")


def link_mode(value: bool | str) -> LinkMode:
    """``True`` (the API's old ``link=True``) means reflink, ``False`` copy."""
    if isinstance(value, bool):
        return "reflink" if value else "copy"
    for mode in LINK_MODES:
        if value == mode:
            return mode
    raise StoreError(f"unknown link mode {value!r}: use one of {', '.join(LINK_MODES)}")



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
class DamagedManifest:
    """A manifest file that cannot be read or parsed: listed apart, removable by
    ``rm``, and a reason for ``prune`` to keep every unreferenced blob."""

    name: ModelName
    path: Path
    reason: str


# Called with each damaged manifest met while walking the store.
DamagedCallback = Callable[[DamagedManifest], None]


@dataclass(frozen=True)
class PrunePlan:
    blobs: tuple[Path, ...] = ()  # unreferenced blobs
    temp_files: tuple[Path, ...] = ()  # leftovers of interrupted writes
    empty_dirs: tuple[Path, ...] = ()  # manifest folders left empty
    bytes_freed: int = 0
    # Unreferenced blobs kept because a damaged manifest might reference them.
    kept: tuple[Path, ...] = ()
    damaged: tuple[DamagedManifest, ...] = ()

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

    def copy_from(self, src: io.BufferedReader, progress: ByteCounter | None = None,
                  total: int = 0) -> None:
        """Write all of ``src``, reading it once: each chunk is hashed here while a
        second thread writes it (both release the GIL), so a copy costs about the
        slower of hashing and writing rather than their sum."""
        buffers = (bytearray(COPY_CHUNK), bytearray(COPY_CHUNK))
        with ThreadPoolExecutor(1) as pool:
            pending: Future[int] | None = None
            turn = 0
            # A buffer is refilled two turns after its write was submitted, and that
            # write was waited for one turn ago.
            while n := src.readinto(buffers[turn % 2]):
                view = memoryview(buffers[turn % 2])[:n]
                if pending is not None:
                    pending.result()
                pending = pool.submit(self._file.write, view)
                self._hash.update(view)
                self.size += n
                turn += 1
                if progress:
                    progress(self.size, total)
            if pending is not None:
                pending.result()

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
        self.digest_cache = DigestCache(self.root / CACHE_NAME)

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

    def import_file(self, path: Path, *, link: LinkMode = "copy",
                    progress: ImportProgress | None = None) -> BlobWrite:
        """Store a file's bytes unchanged, reading the file once.

        ``link="copy"`` hashes while copying; ``"reflink"`` shares the file's extents
        (copy-on-write: later edits of the file do not reach the blob) where the
        filesystem can, else copies; ``"hard"`` hard-links, so the blob IS the file and
        editing it damages the blob (``verify`` notices). ``progress`` gets the method
        (``copying``, ``reflinking``, ``hard-linking``, or ``unchanged`` when the digest
        cache knows the file and the blob is stored) with bytes done and total.
        A file whose (device, inode, size, mtime, ctime) is in the digest cache and
        whose blob is stored is not read at all."""
        report: ImportProgress = progress or (lambda method, done, total: None)
        try:
            before = path.stat()
        except OSError as exc:
            raise StoreError(f"{path}: cannot read: {exc.strerror or exc}") from None
        total = before.st_size
        cached = self.digest_cache.lookup(before)
        if cached is not None and self.has_blob(cached, total):
            self._touch(cached)
            report("unchanged", total, total)
            return BlobWrite(cached, total, False)
        started = time.time_ns()
        linked = self._link_temp(path, link) if link != "copy" else None
        if linked is not None:
            temp, method = linked
            # Hash what was linked: a reflink is a snapshot; a hard link is the file.
            digest = hash_file(temp, lambda done, n: report(method, done, n))
            written = self._install_temp(temp, digest, total)
        else:
            with self.open_writer() as w, open(path, "rb") as src:
                w.copy_from(src, lambda done, n: report("copying", done, n), total)
                written = w.commit()
        self._remember(path, before, started, written.digest)
        return written

    def _link_temp(self, path: Path, link: LinkMode) -> tuple[Path, str] | None:
        """A hidden temporary blob sharing ``path``'s storage, and how; None when the
        filesystem cannot (then the caller copies)."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        temp = self.blobs / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        try:
            if link == "hard":
                os.link(path, temp)
                return temp, "hard-linking"
            with open(path, "rb") as src, open(temp, "xb") as dst:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return temp, "reflinking"
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            return None

    def _remember(self, path: Path, before: os.stat_result, started: int,
                  digest: Digest) -> None:
        """Record a file's digest in the cache when it provably did not change."""
        try:
            after = path.stat()
        except OSError:
            return
        if self.digest_cache.record(before, after, started, digest, path.resolve()):
            with contextlib.suppress(OSError), atomic_file(self.root / CACHE_NAME) as f:
                f.write(self.digest_cache.to_bytes())

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
        """The existing model ``name`` refers to, or None. The exact spelling's manifest
        path is tried first (one stat); only when it is absent are the manifests walked,
        comparing parts case-insensitively, as Ollama resolves names."""
        if self.manifest_path(name).is_file():
            return name
        for existing, _ in self.iter_names():
            if existing.casefold_key() == name.casefold_key():
                return existing
        return None

    def canonical(self, name: ModelName) -> ModelName:
        """``name`` spelled as an existing model when one matches, else as given."""
        return self.resolve(name) or name

    def read_manifest(self, name: ModelName) -> Manifest:
        return self.get(name).manifest

    def get(self, name: ModelName) -> StoredModel:
        """The stored model ``name`` resolves to (resolved once)."""
        existing = self.resolve(name)
        stored = self._read_stored(existing) if existing is not None else None
        if stored is None:  # absent, or removed by another process meanwhile
            raise ModelNotFoundError(f'model "{name.display_shortest()}" not found')
        return stored

    def _read_stored(self, name: ModelName) -> StoredModel | None:
        path = self.manifest_path(name)
        try:
            data, mtime = path.read_bytes(), path.stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None
        return StoredModel(name, path, Manifest.from_bytes(data, where=str(path)), mtime)

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

    def replace_manifest(self, name: ModelName, manifest: Manifest, *,
                         also_unused: Iterable[Digest] = ()) -> set[Digest]:
        """Write ``name``'s manifest (``name`` spelled as stored: see ``canonical``;
        call with the shared lock held) and return what may now be unused: the blobs of
        the manifest it replaced, and ``also_unused`` (e.g. intermediate blobs), less
        the new manifest's. Pass them to :meth:`prune_unused` once the lock is released.
        An unreadable previous manifest counts as none."""
        try:
            previous = self._read_stored(name)
        except ModelkitError:
            previous = None
        self.write_manifest(name, manifest)
        stale = set(also_unused)
        if previous is not None:
            stale.update(layer.digest for layer in previous.manifest.all_layers())
        return stale - {layer.digest for layer in manifest.all_layers()}

    def prune_unused(self, candidates: Collection[Digest]) -> PrunePlan:
        """Delete those of ``candidates`` that no manifest uses, under the exclusive lock
        (do not hold the shared one), as Ollama does after a re-create or re-pull. A
        damaged manifest anywhere keeps everything (``kept``): we cannot know what it uses."""
        if not candidates:
            return PrunePlan()
        with self.lock(exclusive=True):
            try:
                plan = self.plan_prune(set(candidates))
            except ModelkitError:
                return PrunePlan()
            self.execute_prune(plan)
        return plan

    def delete_manifest(self, name: ModelName) -> StoredModel | DamagedManifest:
        """Delete the manifest ``name`` resolves to; the model as it was, or the damaged
        entry (deleted all the same: ``rm`` is how a user gets rid of it)."""
        existing = self.resolve(name)
        if existing is None:
            raise ModelNotFoundError(f'model "{name.display_shortest()}" not found')
        path = self.manifest_path(existing)
        loaded = self._load(existing, path)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            raise ModelNotFoundError(f'model "{name.display_shortest()}" not found') from None
        fsync_dir(path.parent)
        self._remove_empty_dirs(path.parent)
        return loaded

    def _remove_empty_dirs(self, start: Path) -> None:
        d = start
        while d != self.manifests and self.manifests in d.parents:
            try:
                d.rmdir()
            except OSError:
                return
            d = d.parent

    def _load(self, name: ModelName, path: Path) -> StoredModel | DamagedManifest:
        try:
            data, mtime = path.read_bytes(), path.stat().st_mtime
            return StoredModel(name, path, Manifest.from_bytes(data, where=str(path)), mtime)
        except StoreError as exc:
            return DamagedManifest(name, path, str(exc))
        except OSError as exc:
            return DamagedManifest(name, path, f"{path}: cannot read manifest: "
                                               f"{exc.strerror or exc}")

    def scan(self) -> tuple[list[StoredModel], list[DamagedManifest]]:
        """Every manifest, read once: the good ones and the damaged ones."""
        models: list[StoredModel] = []
        damaged: list[DamagedManifest] = []
        for name, path in self.iter_names():
            loaded = self._load(name, path)
            if isinstance(loaded, StoredModel):
                models.append(loaded)
            elif path.exists():  # not removed by another process meanwhile
                damaged.append(loaded)
        return models, damaged

    def list_models(self, on_damaged: DamagedCallback | None = None) -> list[StoredModel]:
        """The readable models; each damaged manifest goes to ``on_damaged``."""
        models, damaged = self.scan()
        for entry in damaged:
            if on_damaged is not None:
                on_damaged(entry)
        return models

    # ----------------------------------------------------------------- pruning
    def referenced_digests(self) -> tuple[set[Digest], list[DamagedManifest]]:
        """Digests used by any readable manifest, and the damaged manifests: what those
        reference is unknown, so no unreferenced blob may be deleted while one exists
        (Ollama refuses to prune then; we keep the blobs and say why)."""
        models, damaged = self.scan()
        used = {layer.digest for m in models for layer in m.manifest.all_layers()}
        return used, damaged

    def plan_prune(self, candidates: set[Digest] | None = None) -> PrunePlan:
        """What a prune would delete. With ``candidates``, only those blobs are
        considered (rm and re-create clean up after themselves this way); without,
        every unreferenced blob, every stale temporary file and every empty manifest
        folder. A damaged manifest moves every blob that would go into ``kept``.
        Call with the exclusive lock held."""
        used, damaged = self.referenced_digests()
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
        if damaged:
            freed -= sum(_size(b) for b in blobs)
            return PrunePlan((), tuple(temps), tuple(dirs), freed, tuple(blobs), tuple(damaged))
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


def hash_file(path: Path, progress: ByteCounter | None = None) -> Digest:
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
