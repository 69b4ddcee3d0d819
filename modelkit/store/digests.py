"""A cache of file digests, so re-creating a model from an unchanged GGUF reads nothing.

An entry is keyed by the file's device and inode and holds its size, mtime and ctime
(nanoseconds) with the sha256 found when the file was last read. It is trusted only when
all of them match the file as it is now: an edit changes mtime and ctime (``touch -d`` can
restore mtime, never ctime), a replacement changes the inode. An entry is recorded only
when the file did not change while it was read and was last modified comfortably before
the read began, so a write landing in the same clock tick as the read cannot hide.

The cache lives in the models directory (``CACHE_NAME``, beside the lock file), written
atomically; losing it or finding it corrupt only costs a re-read.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from modelkit.names import Digest

CACHE_NAME = ".modelkit-digests.json"
MAX_ENTRIES = 512
# A file modified less than this before its read began may still be inside the
# filesystem's timestamp granularity (a coarse clock tick): not recorded.
SETTLE_NS = 100_000_000


def file_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class DigestCache:
    """Load on first use, save after each new entry (the store calls ``save``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, dict[str, object]] | None = None

    def _load(self) -> dict[str, dict[str, object]]:
        if self._entries is None:
            try:
                obj = json.loads(self.path.read_bytes())
                entries = obj.get("files") if isinstance(obj, dict) else None
                self._entries = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def lookup(self, st: os.stat_result) -> Digest | None:
        """The digest of the file ``st`` describes, if it has not changed since."""
        entry = self._load().get(file_key(st))
        if not isinstance(entry, dict) or entry.get("stat") != _signature(st):
            return None
        text = entry.get("digest")
        return Digest.from_filename(text.replace(":", "-", 1)) if isinstance(text, str) \
            else None

    def record(self, before: os.stat_result, after: os.stat_result, started_ns: int,
               digest: Digest, path: Path) -> bool:
        """Remember ``digest`` for a file read between ``before`` and ``after`` (stats
        taken around the read, which began at ``started_ns``); False when the file
        changed meanwhile or too recently to be sure."""
        if _signature(before) != _signature(after) or file_key(before) != file_key(after):
            return False
        if before.st_mtime_ns > started_ns - SETTLE_NS or \
                before.st_ctime_ns > started_ns - SETTLE_NS:
            return False
        entries = self._load()
        entries.pop(file_key(before), None)
        entries[file_key(before)] = {"stat": _signature(before), "digest": str(digest),
                                     "path": str(path), "seen": time.time_ns()}
        while len(entries) > MAX_ENTRIES:
            entries.pop(next(iter(entries)))
        return True

    def to_bytes(self) -> bytes:
        return (json.dumps({"version": 1, "files": self._load()}, indent=1) + "\n").encode()
