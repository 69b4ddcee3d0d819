"""Hash and write the GGUF in threads behind the converter.

sha256 and a file's ``write`` both release the GIL, and so does numpy's conversion of
the next chunk. Hashing and writing are each about as much work as converting an F16
file, so each gets a thread of its own: on two cores the three overlap instead of
following one another. Each thread has its own queue of at most ``depth`` pieces, so
memory stays flat; the pieces handed over must not change afterwards (the converter
hands over freshly made arrays, headers and padding).

A regular file is written with ``O_DIRECT`` where the file system takes it: copying a
multi-gigabyte output into the page cache (only to flush it at the final fsync) costs
more system time than the whole conversion, varies several-fold with memory pressure,
and evicts everything else; a direct write goes from an aligned staging buffer to the
disk. Anything else (a pipe, a BytesIO, a store blob writer, a file system without
``O_DIRECT``) gets plain writes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import queue
import stat
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

Piece = bytes | memoryview


class Writable(Protocol):
    """Where a GGUF is streamed: a file, a store BlobWriter, a BytesIO."""

    def write(self, data: Any, /) -> Any: ...


_DIRECT_ALIGN = 4096  # offsets, lengths and the buffer address of O_DIRECT writes
_STAGE_BYTES = 8 << 20
_O_DIRECT: int | None = getattr(os, "O_DIRECT", None)


class DirectFileWriter:
    """Writes to the open regular file ``f`` from its current (aligned) position with
    O_DIRECT, through a page-aligned staging buffer; ``close`` writes the unaligned
    tail without it, restores the descriptor's flags and leaves ``f`` positioned after
    the data. Falls back to plain writes if the file system refuses O_DIRECT."""

    def __init__(self, f: Any) -> None:
        f.flush()
        self._file = f
        self._fd: int = f.fileno()
        self._offset: int = f.tell()
        self._flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
        assert _O_DIRECT is not None
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags | _O_DIRECT)
            self._direct = True
        except OSError:  # a file system without O_DIRECT: staged plain writes
            self._direct = False
        self._stage = mmap.mmap(-1, _STAGE_BYTES)  # anonymous maps are page-aligned
        self._view = memoryview(self._stage)
        self._fill = 0

    @staticmethod
    def usable(f: Any) -> bool:
        """``f`` is a regular file at an aligned position on a system with O_DIRECT."""
        if _O_DIRECT is None or not hasattr(f, "fileno") or not hasattr(f, "tell"):
            return False
        try:
            return (stat.S_ISREG(os.fstat(f.fileno()).st_mode)
                    and f.tell() % _DIRECT_ALIGN == 0)
        except (OSError, ValueError):  # io.UnsupportedOperation is both
            return False

    def _plain(self) -> None:
        if self._direct:
            self._direct = False
            fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags)

    def _pwrite(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            try:
                done += os.pwrite(self._fd, view[done:], self._offset + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self._direct:
                    raise
                self._plain()  # O_DIRECT refused (or misaligned after a short write)
        self._offset += done

    def write(self, piece: bytes | memoryview) -> None:
        data = memoryview(piece).cast("B")
        while len(data):
            n = min(len(data), _STAGE_BYTES - self._fill)
            self._view[self._fill:self._fill + n] = data[:n]
            self._fill += n
            data = data[n:]
            if self._fill == _STAGE_BYTES:
                self._pwrite(self._view)
                self._fill = 0

    def close(self) -> None:
        """Write what is staged and give the file back as it was, positioned after
        the data (also after a failure, when it only restores the flags)."""
        try:
            aligned = self._fill - self._fill % _DIRECT_ALIGN
            if aligned:
                self._pwrite(self._view[:aligned])
            self._plain()
            if self._fill > aligned:
                self._pwrite(self._view[aligned:self._fill])
            self._fill = 0
        finally:
            self._plain()
            self._file.seek(self._offset)
            with contextlib.suppress(BufferError):  # a failure's traceback holds a slice
                self._view.release()
                self._stage.close()


class _Barrier:
    """Runs ``action`` when the last of ``count`` consumer threads reaches it."""

    def __init__(self, action: Callable[[], object], count: int) -> None:
        self._action = action
        self._count = count
        self._lock = threading.Lock()

    def arrive(self) -> None:
        with self._lock:
            self._count -= 1
            last = self._count == 0
        if last:
            self._action()


class _Consumer:
    """One thread applying ``use`` to every queued piece, in order; it keeps the first
    error and drains the rest, so a ``put`` waiting on a full queue always returns."""

    def __init__(self, name: str, use: Callable[[Piece], object], depth: int) -> None:
        self.use = use
        self.queue: queue.Queue[Piece | _Barrier | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (piece := self.queue.get()) is not None:
            if isinstance(piece, _Barrier):
                try:
                    piece.arrive()
                except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                    self.error = self.error or exc
            elif self.error is None:
                try:
                    self.use(piece)
                except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
                    self.error = exc

    def stop(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()


class BackgroundWriter:
    """``put`` queues a piece; one thread writes the pieces to ``out`` in order, another
    hashes them. A failure in a thread (a full disk) is raised by the next ``put`` or
    by ``finish``; leaving the ``with`` block always stops the threads."""

    def __init__(self, out: Writable, depth: int = 4) -> None:
        self._hash = hashlib.sha256()
        self._direct = DirectFileWriter(out) if DirectFileWriter.usable(out) else None
        write = out.write if self._direct is None else self._direct.write
        self._consumers = [_Consumer("gguf-write", write, depth),
                           _Consumer("gguf-hash", self._hash.update, depth)]

    def _raise(self) -> None:
        for c in self._consumers:
            if c.error is not None:
                raise c.error

    def put(self, piece: Piece) -> None:
        self._raise()
        for c in self._consumers:
            c.queue.put(piece)

    def after(self, action: Callable[[], object]) -> None:
        """Run ``action`` (in a writer thread) once every piece put so far is hashed
        and written."""
        self._raise()
        barrier = _Barrier(action, len(self._consumers))
        for c in self._consumers:
            c.queue.put(barrier)

    def _stop(self) -> None:
        for c in self._consumers:
            c.stop()
        if self._direct is not None:
            direct, self._direct = self._direct, None
            if self._consumers[0].error is None:
                direct.close()
            else:
                with contextlib.suppress(OSError):
                    direct.close()

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
