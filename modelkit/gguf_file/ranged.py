"""A GGUF header read over byte ranges of a remote file (a hub file, a registry blob).

The transport (a hub client's session, the registry client) supplies one ranged GET as
``fetch(offset, n) -> chunks``; :class:`RangedFile` asks for nothing past
``HEADER_LIMIT``, counts every byte that arrives, and stops taking bytes as soon as
it has what it asked for, so a server that ignores ``Range`` and starts sending the
whole file is cut off after at most one request's worth.  The header reader decides
how much to ask for: 1 MiB first, then doubling what it holds (geometric growth).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from modelkit.errors import RemoteReadError
from modelkit.gguf_file.info import GGUFInfo
from modelkit.gguf_file.reader import read_gguf_from

HEADER_LIMIT = 256 << 20  # a GGUF header (metadata + tensor table) larger than this is refused
TEXT_LIMIT = 1 << 20  # a template, system prompt, params or license file

# fetch(offset, n): (HTTP status, the body's chunks). The chunks are taken only as far
# as needed; the caller's iterator closes the response when it is dropped or closed.
Fetch = Callable[[int, int], tuple[int, Iterable[bytes]]]


def take(chunks: Iterable[bytes], n: int) -> bytes:
    """At most ``n`` bytes of ``chunks``; reading stops once they are there."""
    out = bytearray()
    for chunk in chunks:
        out += chunk[:n - len(out)]
        if len(out) >= n:
            break
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
    return bytes(out)


@dataclass
class ByteCounter:
    """Bytes received over every ranged read of one command."""

    total: int = 0
    requests: int = 0
    files: list[str] = field(default_factory=list)


class RangedFile:
    """``read(offset, n)`` over ranged GETs of one remote file of ``size`` bytes."""

    def __init__(self, fetch: Fetch, size: int, source: str, counter: ByteCounter,
                 guard: Callable[[], AbstractContextManager[object]] = nullcontext) -> None:
        self.fetch = fetch
        self.size = size
        self.source = source
        self.counter = counter
        # Turns the transport's exceptions into ModelkitErrors before the header reader
        # sees them (it would take an OSError for a local read failure).
        self.guard = guard

    def read(self, offset: int, n: int) -> bytes:
        n = max(0, min(n, self.size - offset))
        if n == 0:
            return b""
        with self.guard():
            status, chunks = self.fetch(offset, n)
            data = take(chunks, n)
        self.counter.total += len(data)
        self.counter.requests += 1
        if status == 200 and (offset > 0 or n < self.size):
            raise RemoteReadError(
                f"{self.source}: the server ignored the Range request (answered HTTP 200 with "
                f"the whole {self.size}-byte file); stopped after {len(data)} bytes")
        if status != 206 and status != 200:
            raise RemoteReadError(f"{self.source}: a ranged read answered HTTP {status}")
        return data

    def text(self, limit: int = TEXT_LIMIT) -> str:
        """A small file whole (a template, a license), refused past ``limit``."""
        if self.size > limit:
            raise RemoteReadError(f"{self.source}: {self.size} bytes, larger than the "
                                f"{limit}-byte limit for a text file")
        return self.read(0, self.size).decode("utf-8", "replace")

    def gguf(self, limit: int | None = None) -> GGUFInfo:
        """The GGUF header and tensor table, read by growing ranges up to ``limit``
        (default ``HEADER_LIMIT``)."""
        self.counter.files.append(self.source)
        return read_gguf_from(self.read, self.size, self.source,
                              limit=limit if limit is not None else HEADER_LIMIT)
