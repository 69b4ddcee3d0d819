"""A client for one repository of one registry: URLs, auth challenges, redirects, errors.

``request`` returns whatever status the registry answers, after it has answered 401
challenges (once each) and followed redirects. The Authorization header is only ever
sent to the registry's own scheme and host: a redirect to blob storage on another host
(S3, R2, a CDN) gets no credentials, like Go's http client and Ollama.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Mapping

from modelkit.errors import RegistryError, UnauthorizedError
from modelkit.names import ModelName
from modelkit.registry import transport
from modelkit.registry.auth import (
    Challenge,
    Credentials,
    fetch_token,
    find_credentials,
    parse_challenges,
    unauthorized_message,
)
from modelkit.registry.transport import Body, Response, SentProgress

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
MAX_ERROR_BODY = 64 << 10


class UnreachableError(RegistryError):
    """The connection failed (refused, reset, timed out): worth a retry."""


class RegistryClient:
    def __init__(self, name: ModelName, *, insecure: bool = False,
                 credentials: Credentials | None = None,
                 timeout: float = transport.DEFAULT_TIMEOUT) -> None:
        if name.scheme == "http" and not insecure:
            raise RegistryError("insecure protocol http: pass --insecure to use plain http")
        # As in Ollama, --insecure means plain http (a local or in-cluster registry).
        self.scheme = "http" if insecure else "https"
        self.host = name.host
        self.repository = name.repository
        self.base = f"{self.scheme}://{self.host}"
        self.credentials = credentials if credentials is not None else find_credentials(
            self.host)
        self.timeout = timeout
        self._auth: str | None = None  # the Authorization header that last worked
        self._lock = threading.Lock()  # part downloads share the client

    def url(self, path: str) -> str:
        """``<scheme>://<host>/v2/<namespace>/<model>/<path>``."""
        return f"{self.base}/v2/{self.repository}/{path}"

    def _is_ours(self, url: str) -> bool:
        parts = urllib.parse.urlsplit(url)
        return parts.scheme == self.scheme and parts.netloc.lower() == self.host.lower()

    # --------------------------------------------------------------- requests
    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                body: Body = None, follow_redirects: bool = True,
                on_sent: SentProgress | None = None) -> Response:
        challenged = False
        for _ in range(MAX_REDIRECTS + 1):
            sent_auth = self._auth if self._is_ours(url) else None
            all_headers = dict(headers or {})
            if sent_auth:
                all_headers["Authorization"] = sent_auth
            resp = self._send(method, url, all_headers, body, on_sent)
            if resp.status == 401 and self._is_ours(url):
                challenges = parse_challenges(resp.headers.get_all("WWW-Authenticate") or [])
                detail = error_detail(resp)
                resp.close()
                if challenged or not challenges:
                    raise UnauthorizedError(unauthorized_message(
                        self.host, self.credentials, "" if challenges else detail))
                self._answer(challenges[0], sent_auth)
                challenged = True
                continue
            if resp.status in REDIRECTS and follow_redirects:
                location = resp.header("Location")
                resp.close()
                if not location:
                    raise RegistryError(f"{self.host}: redirect without a Location")
                url = urllib.parse.urljoin(url, location)
                if resp.status == 303:
                    method, body = "GET", None
                continue
            return resp
        raise RegistryError(f"{self.host}: too many redirects")

    def _send(self, method: str, url: str, headers: Mapping[str, str], body: Body,
              on_sent: SentProgress | None) -> Response:
        try:
            return transport.send(method, url, headers=headers, body=body,
                                  timeout=self.timeout, on_sent=on_sent)
        except (OSError, http.client.HTTPException) as exc:
            netloc = urllib.parse.urlsplit(url).netloc
            raise UnreachableError(f"registry unreachable: {netloc}: "
                                   f"{transport.describe_oserror(exc)}") from None

    def _answer(self, challenge: Challenge, sent_auth: str | None) -> None:
        """Set the Authorization header that answers ``challenge``."""
        with self._lock:
            if self._auth != sent_auth:
                return  # another thread answered the same challenge meanwhile
            if challenge.scheme == "bearer":
                token = fetch_token(challenge, self.credentials, self.host, self.timeout)
                self._auth = f"Bearer {token}"
            elif challenge.scheme == "basic":
                basic = self.credentials.basic_header()
                if basic is None or sent_auth == basic:
                    raise UnauthorizedError(unauthorized_message(self.host, self.credentials))
                self._auth = basic
            else:
                raise UnauthorizedError(
                    f"unauthorized: {self.host} asks for {challenge.scheme} authentication, "
                    "which modelkit does not support (Bearer and Basic are)")

    def failure(self, what: str, resp: Response) -> RegistryError:
        """The error for an unexpected status: ``<what>: <status>: <registry message>``;
        403 is an UnauthorizedError (the credentials do not grant this)."""
        detail = error_detail(resp)
        resp.close()
        if resp.status == 403:
            return UnauthorizedError(unauthorized_message(
                self.host, self.credentials, detail or "access denied"))
        return RegistryError(f"{what}: {resp.status}: {detail or 'no details'}")


def error_detail(resp: Response) -> str:
    """The registry's error in one line: the ``errors`` of a distribution error body
    (``message (CODE)``), else the first line of the body."""
    try:
        data = resp.read_limited(MAX_ERROR_BODY)
    except (OSError, http.client.HTTPException):
        return ""
    text = data.decode("utf-8", "replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("errors"), list):
        parts = []
        for err in obj["errors"]:
            if isinstance(err, dict):
                message, code = str(err.get("message", "")), str(err.get("code", ""))
                parts.append(f"{message} ({code})" if message and code else message or code)
        text = "; ".join(p for p in parts if p)
    line = text.splitlines()[0] if text else ""
    return line[:200]
