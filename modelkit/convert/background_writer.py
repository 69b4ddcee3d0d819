"""Hash and write the GGUF in a thread behind the converter.

sha256 and a file's ``write`` both release the GIL, and so does numpy's conversion of
the next chunk: on two cores the output side (about a third of an F16 conversion's
work) then overlaps the conversion instead of following it. At most ``depth`` pieces
wait in the queue, so memory stays flat; the pieces handed over must not change
afterwards (the converter hands over freshly made arrays, headers and padding).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from types import TracebackType
from typing import Any, Protocol


class Writable(Protocol):
    """Where a GGUF is streamed: a file, a store BlobWriter, a BytesIO."""

    def write(self, data: Any, /) -> Any: ...


class BackgroundWriter:
    """``put`` queues a piece; a thread hashes it and writes it to ``out`` in order.
    A failure in the thread (a full disk) is raised by the next ``put`` or by
    ``finish``; leaving the ``with`` block always stops the thread."""

    def __init__(self, out: Writable, depth: int = 4) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gguf-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            piece = self._queue.get()
            if piece is None:
                return
            if self._error is not None:
                continue  # drain, so a put waiting on a full queue returns
            try:
                self._hash.update(piece)
                self._out.write(piece)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, piece: bytes | memoryview) -> None:
        self._raise()
        self._queue.put(piece)

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> str:
        """Wait until everything is written; the sha256 of it all."""
        self._stop()
        self._raise()
        return self._hash.hexdigest()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()
