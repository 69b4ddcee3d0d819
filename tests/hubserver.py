"""A loopback fake of the Hugging Face and ModelScope hubs, for the real clients.

It speaks the endpoints that huggingface_hub 2.x and modelscope_hub use (see
shared/docs/hub-protocols.md): HF ``/api/models/{id}[/revision/{rev}]`` and
``HEAD``/``GET /{id}/resolve/{rev}/{file}``; ModelScope ``/api/v1/models/{id}/repo/files``
and ``/api/v1/models/{id}/repo?FilePath=``. Files honour ``Range``; errors carry HF's
``X-Error-Code`` headers and ModelScope's JSON envelopes.

Faults for tests: ``cdn`` redirects HF LFS downloads to another origin (``localhost``
instead of ``127.0.0.1``, same port) as the real hub redirects to its CDN; ``tamper``
serves different bytes (same size) than the listed sha256; ``stall`` sends the first N
bytes of the first GET of a file and then holds the connection until ``release`` is
set (a client killed meanwhile leaves a partial file).
``ignore_range`` answers every GET with HTTP 200 and the whole file, as a server without
Range support does. A file may be a ``SparseBody`` (a GGUF header followed by zeros,
gigabytes long, never held in memory). Every request is logged with its method, path,
Range and Authorization headers and the body bytes sent (``sent``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

TOKEN = "hf_loopback_token"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".gguf",)


@dataclass(frozen=True)
class SparseBody:
    """A large file that is never in memory: ``head``, then zeros up to ``size`` bytes.
    Its digests are made up (from the head and the size): no test downloads it whole."""

    head: bytes
    size: int

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: slice) -> bytes:
        start, stop, _ = index.indices(self.size)
        if stop <= start:
            return b""
        part = self.head[start:stop]
        return part + bytes(stop - start - len(part))

    def digest(self, algorithm: str) -> str:
        return hashlib.new(algorithm, self.head + str(self.size).encode()).hexdigest()


Body = bytes | SparseBody


def git_blob_sha1(data: Body) -> str:
    if isinstance(data, SparseBody):
        return data.digest("sha1")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    files: dict[str, Body]
    commit: str = COMMIT
    gated: bool = False  # listing works, downloads need TOKEN (HF: X-Error-Code GatedRepo)
    private: bool = False  # everything needs TOKEN

    def sha256(self, path: str) -> str:
        data = self.files[path]
        if isinstance(data, SparseBody):
            return data.digest("sha256")
        return hashlib.sha256(data).hexdigest()


@dataclass
class HubServer:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    tamper: set[str] = field(default_factory=set)  # "repo/path" served with a flipped byte
    stall: dict[str, int] = field(default_factory=dict)  # "repo/path" -> bytes before stalling
    cdn: bool = False  # HF: 302 LFS files to another origin (localhost), as HF does
    ignore_range: bool = False  # answer ranged GETs with 200 and the whole file
    release: threading.Event = field(default_factory=threading.Event)
    _httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubServer:
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def requests(self, method: str | None = None, contains: str = "") -> list[dict[str, Any]]:
        return [r for r in list(self.log)
                if (method is None or r["method"] == method) and contains in r["path"]]

    def bytes_sent(self, contains: str = "") -> int:
        """Body bytes sent for the requests whose path contains ``contains``."""
        return sum(r["sent"] for r in self.requests(contains=contains))


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    # ------------------------------------------------------------------ plumbing
    def _record(self, status: int) -> None:
        self.hub.log.append({
            "method": self.command, "path": urlsplit(self.path).path, "status": status,
            "query": urlsplit(self.path).query, "range": self.headers.get("Range"),
            "auth": self.headers.get("Authorization"), "cookie": self.headers.get("Cookie"),
            "sent": 0,
        })

    def _send(self, status: int, body: Body = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", start: int = 0,
              stop: int | None = None) -> None:
        """Send ``body[start:stop]`` in pieces (a SparseBody is never whole in memory);
        a client that hangs up early just ends the response."""
        stop = len(body) if stop is None else stop
        self._record(status)
        record = self.hub.log[-1]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(stop - start))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            for at in range(start, stop, 1 << 20):
                piece = body[at:min(stop, at + (1 << 20))]
                self.wfile.write(piece)
                record["sent"] += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _authorized(self) -> bool:
        return (self.headers.get("Authorization") == f"Bearer {TOKEN}"
                or f"m_session_id={TOKEN}" in (self.headers.get("Cookie") or ""))

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/") if p]
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        if parts[:1] == ["cdn"] and len(parts) >= 4:
            repo_id, path = f"{parts[1]}/{parts[2]}", "/".join(parts[3:])
            return self._serve_file(repo_id, self.hub.repos[repo_id], path, {})
        if parts[:2] == ["api", "v1"]:
            return self._modelscope(parts[2:], query)
        if parts[:1] == ["api"]:
            return self._hf_api(parts[1:])
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._hf_file(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        self._send(404, b"not found")

    # -------------------------------------------------------------- file bytes
    def _body(self, repo_id: str, repo: FakeRepo, path: str) -> Body:
        data = repo.files[path]
        if f"{repo_id}/{path}" in self.hub.tamper and isinstance(data, bytes):
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    def _serve_file(self, repo_id: str, repo: FakeRepo, path: str,
                    headers: dict[str, str]) -> None:
        data = self._body(repo_id, repo, path)
        start, stop = 0, len(data)
        rng = self.headers.get("Range")
        status = 200
        if rng and rng.startswith("bytes=") and self.command == "GET" \
                and not self.hub.ignore_range:
            first, _, last = rng[6:].partition("-")
            start = int(first)
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            stop = min(len(data), int(last) + 1) if last else len(data)
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{stop - 1}/{len(data)}"}
        headers = {**headers, "Accept-Ranges": "bytes"}
        key = f"{repo_id}/{path}"
        if self.command == "GET" and key in self.hub.stall:
            cut = self.hub.stall.pop(key)
            self._record(status)
            self.send_response(status)
            self.send_header("Content-Length", str(len(data) - start))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data[start:cut])
            self.wfile.flush()
            self.hub.release.wait(30)
            self.close_connection = True
            return
        self._send(status, data, headers, "application/octet-stream", start, stop)

    # --------------------------------------------------------------------- HF
    def _hf_error(self, status: int, code: str, message: str,
                  headers: dict[str, str] | None = None) -> None:
        self._json(status, {"error": message},
                   {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})

    def _hf_repo(self, repo_id: str, *, download: bool) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            # HF answers 401 for private repos without a token, 404 otherwise.
            status = 401 if repo is not None else 404
            self._hf_error(status, "RepoNotFound", "Repository not found")
            return None
        if repo.gated and download and not self._authorized():
            self._hf_error(401, "GatedRepo", f"Access to model {repo_id} is restricted.")
            return None
        return repo

    def _hf_api(self, parts: list[str]) -> None:
        if parts[:1] != ["models"] or len(parts) < 3:
            return self._send(404, b"not found")
        repo_id = f"{parts[1]}/{parts[2]}"
        repo = self._hf_repo(repo_id, download=False)
        if repo is None:
            return
        rest = parts[3:]
        rev = rest[1] if rest[:1] == ["revision"] and len(rest) > 1 else "main"
        if rev not in ("main", repo.commit):
            return self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        siblings = []
        for path, data in repo.files.items():
            sib: dict[str, Any] = {"rfilename": path, "size": len(data),
                                   "blobId": git_blob_sha1(data)}
            if path.endswith(LFS_SUFFIXES):
                sib["lfs"] = {"sha256": repo.sha256(path), "size": len(data),
                              "pointerSize": 134}
            siblings.append(sib)
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": repo.commit,
                         "private": repo.private, "gated": "auto" if repo.gated else False,
                         "siblings": siblings})

    def _hf_file(self, repo_id: str, rev: str, path: str) -> None:
        repo = self._hf_repo(repo_id, download=True)
        if repo is None:
            return
        if rev not in ("main", repo.commit):
            return self._hf_error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if path not in repo.files:
            return self._hf_error(404, "EntryNotFound", f"{path} does not exist",
                                  {"X-Repo-Commit": repo.commit})
        data = repo.files[path]
        etag = repo.sha256(path) if path.endswith(LFS_SUFFIXES) else git_blob_sha1(data)
        if self.hub.cdn and path.endswith(LFS_SUFFIXES):
            port = self.hub.url.rsplit(":", 1)[1]
            return self._send(302, b"", {
                "X-Repo-Commit": repo.commit, "X-Linked-Etag": f'"{etag}"',
                "X-Linked-Size": str(len(data)),
                "Location": f"http://localhost:{port}/cdn/{repo_id}/{path}"})
        self._serve_file(repo_id, repo, path, {"X-Repo-Commit": repo.commit,
                                               "ETag": f'"{etag}"'})

    # -------------------------------------------------------------- ModelScope
    def _ms_error(self, status: int, message: str) -> None:
        self._json(status, {"Code": status, "Success": False, "Message": message,
                            "RequestId": "loopback"})

    def _modelscope(self, parts: list[str], query: dict[str, str]) -> None:
        if parts[:1] != ["models"] or len(parts) < 3:
            return self._send(404, b"not found")
        repo_id = f"{parts[1]}/{parts[2]}"
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._ms_error(404, f"model {repo_id} not found")
        if (repo.private or (repo.gated and parts[3:4] == ["repo"]
                             and "FilePath" in query)) and not self._authorized():
            return self._ms_error(401, "authentication required")
        rest = parts[3:]
        if rest == ["revisions"]:
            return self._json(200, {"Data": {"RevisionMap": {"Branches": [
                {"Revision": "master", "CreatedAt": 1700000000}], "Tags": []}}})
        if rest == ["repo", "files"]:
            files = [{"Name": p.rsplit("/", 1)[-1], "Path": p, "Type": "blob", "Size": len(d),
                      "Sha256": repo.sha256(p), "IsLFS": p.endswith(LFS_SUFFIXES),
                      "Revision": repo.commit, "CommittedDate": 1700000000}
                     for p, d in repo.files.items()]
            return self._json(200, {"Code": 200, "Success": True, "Data": {"Files": files}})
        if rest == ["repo"] and "FilePath" in query:
            path = query["FilePath"]
            if path not in repo.files:
                return self._ms_error(404, f"file {path} not found")
            headers = {"X-Linked-ETag": f'"{repo.sha256(path)}"'} \
                if path.endswith(LFS_SUFFIXES) else {}
            return self._serve_file(repo_id, repo, path, headers)
        if not rest:
            return self._json(200, {"Code": 200, "Data": {"Name": parts[2]}})
        self._ms_error(404, "not found")
