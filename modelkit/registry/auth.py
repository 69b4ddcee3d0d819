"""Registry credentials and the two challenge schemes registries use.

Where credentials come from, first match wins:

1. ``MODELKIT_REGISTRY_AUTH=user:password`` (split at the first ``:``);
2. ``MODELKIT_REGISTRY_USERNAME`` and ``MODELKIT_REGISTRY_PASSWORD``;
3. Docker's ``config.json`` (``$DOCKER_CONFIG/config.json``, else
   ``~/.docker/config.json``), the ``auths`` entry for the registry host: ``auth``
   (base64 ``user:password``), or ``username``/``password``, or ``identitytoken``
   (an OAuth2 refresh token, exchanged at the token endpoint). Credential helpers
   (``credsStore``, ``credHelpers``) are not run; when one holds the host's
   credentials, the ``unauthorized`` error says so.

The environment variables apply to whichever registry the command talks to, so set
them for one command only. Credentials are only sent in answer to a challenge:
``Basic`` to the registry itself, ``Bearer`` to the token realm when that realm is
https or on the registry's own host name (never in clear text to a third host).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelkit.errors import RegistryError, UnauthorizedError
from modelkit.registry import transport

ENV_AUTH = "MODELKIT_REGISTRY_AUTH"
ENV_USERNAME = "MODELKIT_REGISTRY_USERNAME"
ENV_PASSWORD = "MODELKIT_REGISTRY_PASSWORD"
MAX_TOKEN_RESPONSE = 1 << 20

# Docker stores Docker Hub's credentials under its v1 index address.
_HOST_ALIASES = {"docker.io": "index.docker.io", "registry-1.docker.io": "index.docker.io"}


@dataclass(frozen=True)
class Credentials:
    """What we may present to a registry; all empty means anonymous."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    source: str = ""  # where they came from, for error messages
    note: str = ""  # why there are none although the user may expect some

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token)

    def basic_header(self) -> str | None:
        if not (self.username or self.password):
            return None
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def find_credentials(host: str, environ: Mapping[str, str] | None = None) -> Credentials:
    """Credentials for registry ``host`` (``host[:port]``), from the sources above."""
    env = os.environ if environ is None else environ
    if env.get(ENV_AUTH):
        user, sep, password = env[ENV_AUTH].partition(":")
        if not sep:
            raise RegistryError(f"{ENV_AUTH} must be user:password")
        return Credentials(user, password, source=ENV_AUTH)
    if env.get(ENV_USERNAME) or env.get(ENV_PASSWORD):
        return Credentials(env.get(ENV_USERNAME, ""), env.get(ENV_PASSWORD, ""),
                           source=f"{ENV_USERNAME}/{ENV_PASSWORD}")
    return _from_docker_config(host, env)


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    folder = env.get("DOCKER_CONFIG")
    if folder:
        return Path(folder).expanduser() / "config.json"
    return Path.home() / ".docker" / "config.json"


def _normalize_host(key: str) -> str:
    """``https://Index.Docker.io/v1/`` -> ``index.docker.io``; ``host:5000`` unchanged."""
    text = key.strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    return _HOST_ALIASES.get(text, text)


def _from_docker_config(host: str, env: Mapping[str, str]) -> Credentials:
    path = docker_config_path(env)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Credentials()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Credentials(note=f"{path} is unreadable ({exc})")
    if not isinstance(config, dict):
        return Credentials(note=f"{path} is not a JSON object")
    wanted = _normalize_host(host)
    auths = config.get("auths")
    for key, entry in (auths.items() if isinstance(auths, dict) else ()):
        if _normalize_host(str(key)) != wanted or not isinstance(entry, dict):
            continue
        found = _from_auth_entry(entry, f"{path} auths[{key!r}]")
        if found is not None:
            return found
    helpers = config.get("credHelpers")
    helper = helpers.get(host) if isinstance(helpers, dict) else None
    helper = helper or config.get("credsStore")
    if helper:
        return Credentials(note=f"{path} keeps credentials in the helper "
                                f"docker-credential-{helper}, which modelkit does not run; "
                                f"set {ENV_AUTH}=user:password instead")
    return Credentials()


def _from_auth_entry(entry: Mapping[str, object], where: str) -> Credentials | None:
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        user = entry.get("username")
        return Credentials(username=user if isinstance(user, str) else "",
                           identity_token=token, source=where)
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryError(f"{where}.auth is not base64 of user:password") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise RegistryError(f"{where}.auth is not base64 of user:password")
        return Credentials(user, password, source=where)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and (name or secret):
        return Credentials(name, secret, source=where)
    return None


# ------------------------------------------------------------------ challenges
@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lowercased
    params: dict[str, str]


# Either a parameter (token = token / quoted-string) or a bare token starting a new
# challenge (RFC 7235); commas between them carry no meaning for us.
_ITEM_RE = re.compile(r'[\s,]*(?:([\w.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)|([\w.-]+))')


def parse_challenges(values: list[str]) -> list[Challenge]:
    """The challenges of ``WWW-Authenticate`` headers, Bearer first."""
    out: list[Challenge] = []
    for value in values:
        for m in _ITEM_RE.finditer(value):
            key, raw, scheme = m.groups()
            if scheme:
                out.append(Challenge(scheme.lower(), {}))
            elif key and out:
                if raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                out[-1].params[key.lower()] = raw
    out.sort(key=lambda c: c.scheme != "bearer")
    return out


def may_send_credentials(realm: str, registry_netloc: str) -> bool:
    """Credentials go to a token realm over https, or to the registry's own host."""
    parts = urllib.parse.urlsplit(realm)
    if parts.scheme == "https":
        return True
    return (parts.hostname or "") == (urllib.parse.urlsplit(f"//{registry_netloc}").hostname
                                      or "")


def fetch_token(challenge: Challenge, credentials: Credentials, registry_netloc: str,
                timeout: float) -> str:
    """Exchange a Bearer challenge for a token at its realm (Docker's token protocol,
    with the OAuth2 refresh-token grant when we hold an identity token)."""
    realm = challenge.params.get("realm", "")
    try:
        scheme, netloc, _ = transport.split_url(realm)
    except ValueError:
        raise RegistryError(f"registry {registry_netloc} sent an invalid token realm: "
                            f"{realm!r}") from None
    service = challenge.params.get("service", "")
    scopes = challenge.params.get("scope", "").split()
    send_creds = not credentials.anonymous and may_send_credentials(realm, registry_netloc)
    headers = {"Accept": "application/json"}
    body: bytes | None = None
    if send_creds and credentials.identity_token:
        # OAuth2: trade the refresh token `docker login` stored for an access token.
        form = [("grant_type", "refresh_token"), ("refresh_token", credentials.identity_token),
                ("service", service), ("client_id", "modelkit")]
        form += [("scope", s) for s in scopes]
        method, url = "POST", realm
        body = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    else:
        # One `scope` parameter per scope: a mount needs two repositories.
        query = urllib.parse.urlencode(
            ([("service", service)] if service else []) + [("scope", s) for s in scopes])
        method = "GET"
        url = f"{realm}{'&' if '?' in realm else '?'}{query}" if query else realm
        basic = credentials.basic_header() if send_creds else None
        if basic:
            headers["Authorization"] = basic
    try:
        with transport.send(method, url, headers=headers, body=body, timeout=timeout) as resp:
            data = resp.read_limited(MAX_TOKEN_RESPONSE)
            status = resp.status
    except (OSError, http.client.HTTPException) as exc:
        raise RegistryError(f"registry unreachable: {netloc}: "
                            f"{transport.describe_oserror(exc)}") from None
    if status in (401, 403):
        withheld = not credentials.anonymous and not send_creds
        raise UnauthorizedError(unauthorized_message(
            registry_netloc, Credentials(note=credentials.note) if withheld else credentials,
            f"credentials are not sent to the plain-http token service {netloc}"
            if withheld else ""))
    if status != 200:
        raise RegistryError(f"token request to {scheme}://{netloc}: HTTP {status}")
    try:
        obj = json.loads(data)
        token = obj.get("token") or obj.get("access_token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise RegistryError(f"token request to {scheme}://{netloc}: no token in the answer")
    return token


def unauthorized_message(netloc: str, credentials: Credentials, detail: str = "") -> str:
    """``unauthorized: ...`` in one line, saying which credentials were tried."""
    if credentials.anonymous:
        why = (f"{netloc} requires credentials; set {ENV_AUTH}=user:password or add "
               f"{netloc} to the auths of {docker_config_path()}")
        if credentials.note:
            why += f" ({credentials.note})"
    else:
        why = f"{netloc} rejected the credentials from {credentials.source}"
    if detail:
        why += f": {detail}"
    return f"unauthorized: {why}"
