"""Loopback registries for the registry tests: all on 127.0.0.1, nothing else.

- ``RegistryProcess``: the real CNCF distribution registry (Debian's ``docker-registry``
  package, v2.8) with filesystem storage in a temp folder, anonymous, with htpasswd
  (Basic challenge), or with token auth (Bearer challenge).
- ``TokenServer``: Docker's token protocol. Tokens are RS256 JWTs signed with the
  ``openssl`` CLI, carrying their self-signed certificate in ``x5c``; the registry
  trusts that certificate (``rootcertbundle``).
- ``Proxy``: sits between the client and a registry and records every request, and on
  demand cuts blob downloads short, refuses them, slows them down, redirects them to
  another host name (``localhost``, as blob storage would be), or serves canned answers.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGISTRY_BINARY = shutil.which("docker-registry") or shutil.which("registry")
HTPASSWD = shutil.which("htpasswd")
OPENSSL = shutil.which("openssl")
SERVICE = "modelkit-test"
ISSUER = "modelkit-test-issuer"
BLOB_GET = "/blobs/sha256:"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(host: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection(host, timeout=1)
            conn.request("GET", "/v2/")
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ------------------------------------------------------------------ registry
class RegistryProcess:
    def __init__(self, workdir: Path, auth: dict[str, Any] | None = None) -> None:
        assert REGISTRY_BINARY is not None
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.storage = workdir / "data"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = workdir / "registry.log"
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if auth:
            config["auth"] = auth
        # JSON is YAML: no YAML writer needed.
        (workdir / "config.yml").write_text(json.dumps(config, indent=1))
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(workdir / "config.yml")],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for_http(self.host)
        except OSError:
            self.stop()
            raise RuntimeError("registry did not start: "
                               + self.log_path.read_text(errors="replace")[-2000:]) from None

    def blob_file(self, digest: str) -> Path:
        hex_ = digest.split(":", 1)[1]
        return (self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_[:2]
                / hex_ / "data")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def make_htpasswd(path: Path, user: str, password: str) -> None:
    assert HTPASSWD is not None
    line = subprocess.run([HTPASSWD, "-Bbn", user, password], check=True,
                          capture_output=True, text=True).stdout.strip()
    path.write_text(line + "\n")


# ------------------------------------------------------------------- tokens
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: Any


def _serve(handler: type[http.server.BaseHTTPRequestHandler], owner: Any) -> _Server:
    server = _Server(("127.0.0.1", 0), handler)
    server.owner = owner
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server


class TokenServer:
    """GET /token (Basic or anonymous) and POST /token (refresh_token grant)."""

    def __init__(self, workdir: Path, users: dict[str, str]) -> None:
        assert OPENSSL is not None
        self.openssl = OPENSSL
        self.users = users
        self.refresh_tokens = {"refresh-" + secrets.token_hex(8): u for u in users}
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(self.key), "-out", str(self.cert), "-days", "2", "-subj",
                        "/CN=modelkit-test-token"], check=True, capture_output=True)
        der = subprocess.run([OPENSSL, "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode("ascii")
        self.requests: list[dict[str, Any]] = []
        self.server = _serve(_TokenHandler, self)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def registry_auth(self) -> dict[str, Any]:
        return {"token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER,
                          "rootcertbundle": str(self.cert)}}

    def sign(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if user and kind == "repository":
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 600,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = subprocess.run([self.openssl, "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), check=True,
                                   capture_output=True).stdout
        return signing_input + "." + _b64url(signature)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        owner: TokenServer = self.server.owner
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        user = ""
        auth = self.headers.get("Authorization")
        owner.requests.append({"method": "GET", "query": query, "authorization": auth})
        if auth:
            name, _, password = base64.b64decode(auth.split()[1]).decode().partition(":")
            if owner.users.get(name) != password:
                self._answer(401, {"details": "incorrect username or password"})
                return
            user = name
        token = owner.sign(user, query.get("scope", []))
        self._answer(200, {"token": token, "expires_in": 600})

    def do_POST(self) -> None:
        owner: TokenServer = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        owner.requests.append({"method": "POST", "form": form})
        user = owner.refresh_tokens.get(form.get("refresh_token", [""])[0])
        if form.get("grant_type") != ["refresh_token"] or user is None:
            self._answer(401, {"error": "invalid_grant"})
            return
        self._answer(200, {"access_token": owner.sign(user, form.get("scope", []))})


# -------------------------------------------------------------------- proxy
@dataclass
class Seen:
    method: str
    path: str
    host: str
    range: str | None
    authorization: str | None
    status: int = 0
    body_bytes: int = 0  # response body bytes passed on to the client


@dataclass
class Proxy:
    upstream: str  # host:port of the registry
    seen: list[Seen] = field(default_factory=list)
    cut_after: int | None = None  # cut ranged blob downloads after this many bytes...
    cuts_left: int = 0  # ...this many times
    refuse_blobs: bool = False  # answer 503 to ranged blob downloads
    refuse_blobs_after_cuts: bool = False  # set refuse_blobs once cuts_left is used up
    throttle: float = 0.0  # seconds of sleep per 16 KiB of blob body
    redirect_blobs_to: str | None = None  # host:port to 307 blob downloads to
    storage_auth: str | None = None  # Authorization the "storage" host itself adds
    canned: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server = _serve(_ProxyHandler, self)
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()

    def requests(self, method: str | None = None, contains: str = "") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen
                    if (method is None or s.method == method) and contains in s.path]


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _reply(self, seen: Seen, status: int, headers: dict[str, str], body: bytes) -> None:
        seen.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            seen.body_bytes = len(body)
        self.close_connection = True

    def _proxy(self) -> None:
        p: Proxy = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        seen = Seen(self.command, self.path, self.headers.get("Host", ""),
                    self.headers.get("Range"), self.headers.get("Authorization"))
        with p.lock:
            p.seen.append(seen)
        if self.path in p.canned:
            self._reply(seen, *p.canned[self.path])
            return
        is_blob_get = self.command == "GET" and BLOB_GET in self.path
        ranged = is_blob_get and seen.range not in (None, "bytes=0-0")
        path = self.path
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        if path.startswith("/storage/"):
            path = path[len("/storage"):]
            headers.pop("Authorization", None)
            if p.storage_auth:
                headers["Authorization"] = p.storage_auth
        elif is_blob_get and p.redirect_blobs_to:
            self._reply(seen, 307, {"Location": f"http://{p.redirect_blobs_to}/storage"
                                                f"{self.path}"}, b"")
            return
        with p.lock:
            if ranged and p.refuse_blobs_after_cuts and p.cuts_left == 0:
                p.refuse_blobs = True
        if ranged and p.refuse_blobs:
            self._reply(seen, 503, {}, b"refused by the test proxy")
            return
        cut = None
        if ranged and p.cut_after is not None:
            with p.lock:
                if p.cuts_left > 0:
                    p.cuts_left -= 1
                    cut = p.cut_after
        conn = http.client.HTTPConnection(p.upstream, timeout=30)
        try:
            conn.request(self.command, path, body=body, headers=headers)
            resp = conn.getresponse()
            seen.status = resp.status
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding"):
                    self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if self.command == "HEAD":
                return
            for chunk in iter(lambda: resp.read(16384), b""):
                if cut is not None and seen.body_bytes + len(chunk) > cut:
                    self.wfile.write(chunk[:cut - seen.body_bytes])
                    seen.body_bytes = cut
                    self.wfile.flush()
                    with contextlib.suppress(OSError):  # the client may be gone already
                        self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops
                    return
                if ranged and p.throttle:
                    time.sleep(p.throttle)
                self.wfile.write(chunk)
                seen.body_bytes += len(chunk)
        finally:
            conn.close()


# ------------------------------------------------------------------ helpers
def running(workdir: Path, auth: dict[str, Any] | None = None) -> Iterator[RegistryProcess]:
    workdir.mkdir(parents=True, exist_ok=True)
    reg = RegistryProcess(workdir, auth)
    try:
        yield reg
    finally:
        reg.stop()


def env_without_registry_auth() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELKIT_REGISTRY_")}
