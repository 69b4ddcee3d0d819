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


def ignore_progress(event: ProgressEvent) -> None:
    """The default callback: the caller does not want progress."""


def byte_progress(callback: ProgressCallback, status: str,
                  digest: str | None = None) -> Callable[[int, int], None]:
    """Adapt a (done, total) byte counter to progress events under one status."""

    def report(done: int, total: int) -> None:
        callback(ProgressEvent(status, digest=digest, total=total, completed=done))

    return report
