"""One HTTP exchange over ``http.client``: the only place that opens sockets.

Deliberately small: no connection pool (each request opens its own connection, so the
parallel part downloads never share one), no redirects and no auth (``client.py`` does
both, because both depend on which host a URL points at). Request bodies are bytes or a
slice of a file streamed from disk, so a multi-gigabyte layer is never held in memory
and can be sent again after an auth challenge.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from modelkit.version import __version__

USER_AGENT = f"modelkit/{__version__}"
SEND_CHUNK = 1 << 20
DEFAULT_TIMEOUT = 30.0  # seconds without a byte: a stalled part is retried, as Ollama does

# (bytes of the body sent so far) -> None
SentProgress = Callable[[int], None]

_SSL_CONTEXT: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    # One context for all connections: loading the CA bundle is the slow part.
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return _SSL_CONTEXT


@dataclass(frozen=True)
class FileBody:
    """``length`` bytes of ``path`` from ``offset``: a request body read as it is sent."""

    path: Path
    offset: int
    length: int

    def chunks(self) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            left = self.length
            while left > 0:
                data = f.read(min(SEND_CHUNK, left))
                if not data:
                    raise OSError(f"{self.path} is shorter than expected")
                left -= len(data)
                yield data


Body = bytes | FileBody | None


class Response:
    """A response whose body is read on demand; close it (or use ``with``)."""

    def __init__(self, url: str, conn: http.client.HTTPConnection,
                 resp: http.client.HTTPResponse) -> None:
        self.url = url
        self.status = resp.status
        self.headers = resp.headers
        self._conn = conn
        self._resp = resp

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def read(self, n: int = -1) -> bytes:
        return self._resp.read(n) if n >= 0 else self._resp.read()

    def read_some(self, n: int) -> bytes:
        """What has arrived, up to ``n`` bytes, after at most one wait: bytes already
        received are never lost to a connection reset that follows them."""
        return self._resp.read1(n)

    def read_limited(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body (error pages and manifests are small; a
        hostile server must not make us buffer gigabytes)."""
        return self._resp.read(limit)

    def close(self) -> None:
        self._resp.close()
        self._conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_url(url: str) -> tuple[str, str, str]:
    """``(scheme, netloc, path?query)`` of an absolute http(s) URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.scheme, parts.netloc, target


def send(method: str, url: str, *, headers: Mapping[str, str] | None = None,
         body: Body = None, timeout: float = DEFAULT_TIMEOUT,
         on_sent: SentProgress | None = None) -> Response:
    """Send one request and return the response with its headers read.

    Raises ``OSError`` or ``http.client.HTTPException`` when the exchange fails; the
    caller turns them into messages that name the host.
    """
    scheme, netloc, target = split_url(url)
    conn: http.client.HTTPConnection
    if scheme == "https":
        conn = http.client.HTTPSConnection(netloc, timeout=timeout, context=_ssl_context())
    else:
        conn = http.client.HTTPConnection(netloc, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        length = 0 if body is None else (len(body) if isinstance(body, bytes) else body.length)
        if body is not None or method in ("PUT", "POST", "PATCH"):
            all_headers["Content-Length"] = str(length)
        for key, value in all_headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        if isinstance(body, bytes):
            if body:
                conn.send(body)
            if on_sent:
                on_sent(len(body))
        elif isinstance(body, FileBody):
            sent = 0
            for chunk in body.chunks():
                conn.send(chunk)
                sent += len(chunk)
                if on_sent:
                    on_sent(sent)
        resp = conn.getresponse()
    except BaseException:
        conn.close()
        raise
    return Response(url, conn, resp)


def describe_oserror(exc: BaseException) -> str:
    """A short reason for a failed connection (``Connection refused``, ``timed out``)."""
    if isinstance(exc, socket.gaierror):
        return exc.strerror or "cannot resolve host"
    if isinstance(exc, ssl.SSLError):
        return getattr(exc, "verify_message", None) or exc.reason or str(exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
