"""Progress events: what the library reports while it works, and only that.

The library never prints. Long operations call a ``ProgressCallback`` with events shaped
like Ollama's streamed ``ProgressResponse`` (status, digest, total, completed); the CLI
renders them as status lines and bars on a terminal, or as JSON lines with ``--json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
    # A warning is a status the user should see even when progress is not shown.
    warning: bool = False
    unit: str = "B"  # what total/completed count: bytes, or e.g. "tensors"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.digest:
            out["digest"] = self.digest
        if self.total is not None:
            out["total"] = self.total
        if self.completed is not None:
            out["completed"] = self.completed
        if self.warning:
            out["warning"] = True
        if self.total is not None and self.unit != "B":
            out["unit"] = self.unit
        return out


ProgressCallback = Callable[[ProgressEvent], None]
# Ollama's status while a pulled blob's digest is checked (registry and hub pulls).
VERIFYING = "verifying sha256 digest"
# What copies, hashes and transfers call with (bytes done, bytes total); ByteProgress is one.
ByteCounter = Callable[[int, int], None]


def ignore_progress(event: ProgressEvent) -> None:
    """The default callback: the caller does not want progress."""


class ByteProgress:
    """Turns byte counts into progress events under one status (and digest), for any
    copy, hash, download or upload: ``report(done, total)``, or ``report(done)`` when
    the total was given up front. A count equal to the last one sent is not sent again."""

    def __init__(self, callback: ProgressCallback, status: str, digest: str | None = None,
                 total: int | None = None) -> None:
        self.callback, self.status, self.digest, self.total = callback, status, digest, total
        self._last: tuple[int, int | None] | None = None

    def __call__(self, done: int, total: int | None = None) -> None:
        key = (done, self.total if total is None else total)
        if key != self._last:
            self._last = key
            self.callback(ProgressEvent(self.status, self.digest, key[1], done))

