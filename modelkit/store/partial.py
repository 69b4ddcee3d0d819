"""A blob being downloaded in parts, resumable across runs, verified before it is stored.

On disk, next to the blobs and hidden from everything but ``prune``::

    blobs/.tmp-sha256-<hex>-partial        the data, a sparse file of the full size
    blobs/.tmp-sha256-<hex>-partial.json   {"digest", "size", "parts": [{offset, size,
                                            completed}]}: what is already in the data

Both names start with ``store.TEMP_PREFIX``, so ``modelkit prune`` removes abandoned
ones, and neither parses as a digest, so nothing mistakes them for blobs. The data file
is locked (flock) while a process works on it, so two pulls of the same blob take turns
instead of writing over each other. The state is saved after the data it describes was
written; whatever the state claims, the final sha256 over the whole file decides.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelkit.errors import DigestError, StoreError
from modelkit.names import Digest
from modelkit.store import TEMP_PREFIX, Store, fsync_dir

HASH_CHUNK = 8 << 20


@dataclass
class Part:
    offset: int
    size: int
    completed: int = 0

    @property
    def done(self) -> bool:
        return self.completed >= self.size


def plan_parts(size: int, count: int, min_size: int, max_size: int) -> list[Part]:
    """Ollama's split: ``size/count`` clamped to ``[min_size, max_size]``."""
    part = min(max(size // count, min_size), max_size)
    part = max(part, 1)
    return [Part(off, min(part, size - off)) for off in range(0, size, part)]


class PartialBlob:
    """The on-disk download state of one blob. Use as a context manager: it holds the
    data file open and locked until closed."""

    def __init__(self, store: Store, digest: Digest, size: int) -> None:
        self.store = store
        self.digest = digest
        self.size = size
        self.data_path = store.blobs / f"{TEMP_PREFIX}{digest.filename}-partial"
        self.state_path = self.data_path.with_name(self.data_path.name + ".json")
        self.parts: list[Part] = []
        self.lock = threading.Lock()  # guards Part.completed between worker threads
        self._fd = -1

    # ---------------------------------------------------------------- lifecycle
    def open(self, plan: list[Part]) -> bool:
        """Open (creating or resuming) and lock the partial file; ``plan`` is used when
        there is no valid earlier state. False when, while we waited for the lock,
        another process finished the blob."""
        try:
            self.store.blobs.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)  # waits for another pull of this blob
                ours = _same_file(fd, self.data_path)
                if self.store.has_blob(self.digest):
                    if ours:  # the empty file we just created
                        self.data_path.unlink()
                    os.close(fd)
                    return False
                if ours:
                    break
                os.close(fd)  # the file we locked was renamed meanwhile: start over
            self._fd = fd
            parts = self._load_state()
            if parts is None or os.fstat(fd).st_size != self.size:
                os.ftruncate(fd, 0)
                os.ftruncate(fd, self.size)  # sparse: parts land at their offsets
                self.parts = plan
                self.save()
            else:
                self.parts = parts
        except OSError as exc:
            self.close()
            raise StoreError(f"{self.data_path}: cannot write: {exc.strerror or exc}") from None
        return True

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock
            self._fd = -1

    def __enter__(self) -> PartialBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------- state
    def _load_state(self) -> list[Part] | None:
        try:
            obj: Any = json.loads(self.state_path.read_text(encoding="utf-8"))
            if obj["digest"] != str(self.digest) or obj["size"] != self.size:
                return None
            parts = [Part(int(p["offset"]), int(p["size"]), int(p["completed"]))
                     for p in obj["parts"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        # The parts must tile the blob exactly, or the state is not ours to trust.
        pos = 0
        for p in parts:
            if p.offset != pos or p.size <= 0 or not 0 <= p.completed <= p.size:
                return None
            pos += p.size
        return parts if pos == self.size else None

    def save(self) -> None:
        """Write the parts' progress atomically (a crash leaves the old or new state)."""
        with self.lock:
            obj = {"digest": str(self.digest), "size": self.size,
                   "parts": [{"offset": p.offset, "size": p.size, "completed": p.completed}
                             for p in self.parts]}
        temp = self.state_path.with_name(f"{TEMP_PREFIX}{secrets.token_hex(8)}")
        try:
            temp.write_text(json.dumps(obj), encoding="utf-8")
            os.replace(temp, self.state_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise StoreError(f"{self.state_path}: cannot write: {exc.strerror or exc}") \
                from None

    @property
    def completed(self) -> int:
        with self.lock:
            return sum(p.completed for p in self.parts)

    @property
    def done(self) -> bool:
        with self.lock:
            return all(p.done for p in self.parts)

    # --------------------------------------------------------------------- data
    def write_at(self, part: Part, data: bytes) -> None:
        """Append ``data`` to ``part`` (called from that part's worker thread only)."""
        os.pwrite(self._fd, data, part.offset + part.completed)
        with self.lock:
            part.completed += len(data)

    def verify(self) -> None:
        """Hash the whole file; on a mismatch delete the download and raise."""
        h = hashlib.sha256()
        os.lseek(self._fd, 0, os.SEEK_SET)
        while chunk := os.read(self._fd, HASH_CHUNK):
            h.update(chunk)
        got = Digest("sha256", h.hexdigest())
        if got != self.digest:
            self.discard()
            raise DigestError(f"digest mismatch, file must be downloaded again: "
                              f"want {self.digest}, got {got}")

    def install(self) -> None:
        """Rename the verified file to its blob name (the store's temp+rename scheme)."""
        os.fsync(self._fd)
        final = self.store.blob_path(self.digest)
        if final.exists():
            self.data_path.unlink()
        else:
            os.chmod(self.data_path, 0o644)
            os.replace(self.data_path, final)
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()
        fsync_dir(self.store.blobs)

    def discard(self) -> None:
        for path in (self.data_path, self.state_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False
