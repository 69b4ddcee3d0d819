"""Push and pull against a real distribution registry on 127.0.0.1 (see registry_fixtures).

The registry tests skip when ``docker-registry`` (Debian package of the same name) is
not installed; the Basic-auth tests also need ``htpasswd`` (apache2-utils) and the
Bearer-token tests ``openssl``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from registry_fixtures import (
    HTPASSWD,
    OPENSSL,
    REGISTRY_BINARY,
    Proxy,
    RegistryProcess,
    TokenServer,
    running,
)

from conftest import write_gguf
from modelkit import api
from modelkit.errors import DigestError, ModelNotFoundError, RegistryError, UnauthorizedError
from modelkit.manifest import Layer, Manifest, MediaType, ModelConfig
from modelkit.names import Digest, ModelName
from modelkit.progress import ProgressEvent
from modelkit.registry import Credentials, ensure_model, find_credentials, pull, pulling, push
from modelkit.registry.auth import (
    may_send_credentials,
    parse_challenges,
    unauthorized_message,
)
from modelkit.registry.client import RegistryClient
from modelkit.store import Store
from modelkit.store.partial import PartialBlob, plan_parts

REPO = Path(__file__).resolve().parents[1]
USER, PASSWORD = "alice", "s3cret-pw"
KiB = 1024


# ------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials from the developer's environment; small parts, quick retries."""
    for key in list(os.environ):
        if key.startswith("MODELKIT_REGISTRY_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setattr(pulling, "MIN_PART_SIZE", 32 * KiB)
    monkeypatch.setattr(pulling, "RETRY_DELAY", 0.01)


def _need_registry() -> None:
    if REGISTRY_BINARY is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")


@pytest.fixture(scope="session")
def anon_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    _need_registry()
    yield from running(tmp_path_factory.mktemp("anon"))


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    _need_registry()
    if HTPASSWD is None:
        pytest.skip("htpasswd is not installed (apt-get install apache2-utils)")
    from registry_fixtures import make_htpasswd

    work = tmp_path_factory.mktemp("basic")
    make_htpasswd(work / "htpasswd", USER, PASSWORD)
    yield from running(work, {"htpasswd": {"realm": "modelkit-test",
                                           "path": str(work / "htpasswd")}})


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    _need_registry()
    if OPENSSL is None:
        pytest.skip("openssl is not installed")
    server = TokenServer(tmp_path_factory.mktemp("token"), {USER: PASSWORD})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory,
                   token_server: TokenServer) -> Iterator[RegistryProcess]:
    yield from running(tmp_path_factory.mktemp("bearer"), token_server.registry_auth())


@pytest.fixture
def proxy_to() -> Iterator[Callable[[RegistryProcess], Proxy]]:
    proxies: list[Proxy] = []

    def make(registry: RegistryProcess) -> Proxy:
        proxies.append(Proxy(registry.host))
        return proxies[-1]

    yield make
    for p in proxies:
        p.stop()


class Events(list[ProgressEvent]):
    def __call__(self, event: ProgressEvent) -> None:
        self.append(event)

    def statuses(self) -> list[str]:
        out: list[str] = []
        for e in self:
            if not out or out[-1] != e.status:
                out.append(e.status)
        return out


def repo_name(host: str, tag: str = "v1") -> ModelName:
    return ModelName.parse(f"{host}/team/m{secrets.token_hex(4)}:{tag}")


def make_model(store: Store, name: ModelName, *, size: int = 300 * KiB,
               from_: str | None = None, model_blob: bytes | None = None) -> Manifest:
    """A model whose weights are random bytes (the registry does not look inside)."""
    weights = store.write_blob(model_blob if model_blob is not None else os.urandom(size))
    template = store.write_blob(b"{{ .Prompt }}")
    config = store.write_blob(ModelConfig(model_family="test").to_bytes())
    manifest = Manifest(
        config=Layer(MediaType.CONFIG, config.digest, config.size),
        layers=(Layer(MediaType.MODEL, weights.digest, weights.size, from_=from_),
                Layer(MediaType.TEMPLATE, template.digest, template.size)))
    store.write_manifest(name, manifest)
    return store.read_manifest(name)


def stored_blobs(store: Store) -> dict[str, bytes]:
    if not store.blobs.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in store.blobs.iterdir()
            if Digest.from_filename(p.name) is not None}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------- unit tests
def test_parse_challenges() -> None:
    [bearer] = parse_challenges(['Bearer realm="https://auth.example/token",'
                                 'service="registry.example",'
                                 'scope="repository:a/b:pull,push repository:c/d:pull"'])
    assert bearer.scheme == "bearer"
    assert bearer.params == {"realm": "https://auth.example/token",
                             "service": "registry.example",
                             "scope": "repository:a/b:pull,push repository:c/d:pull"}
    both = parse_challenges(['Basic realm="x"', 'Bearer realm="q\\"uoted", error=invalid'])
    assert [c.scheme for c in both] == ["bearer", "basic"]
    assert both[0].params == {"realm": 'q"uoted', "error": "invalid"}
    assert parse_challenges(["Basic"])[0].params == {}


def test_credentials_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_credentials("ghcr.io").anonymous
    monkeypatch.setenv("MODELKIT_REGISTRY_USERNAME", "bob")
    monkeypatch.setenv("MODELKIT_REGISTRY_PASSWORD", "pw")
    creds = find_credentials("ghcr.io")
    assert (creds.username, creds.password) == ("bob", "pw")
    monkeypatch.setenv("MODELKIT_REGISTRY_AUTH", "carol:pa:ss")  # wins; ':' in password
    creds = find_credentials("ghcr.io")
    assert (creds.username, creds.password, creds.source) == (
        "carol", "pa:ss", "MODELKIT_REGISTRY_AUTH")
    monkeypatch.setenv("MODELKIT_REGISTRY_AUTH", "no-colon")
    with pytest.raises(RegistryError, match="user:password"):
        find_credentials("ghcr.io")


def test_credentials_from_docker_config(tmp_path: Path) -> None:
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    token = base64.b64encode(b"dave:pw:1").decode()
    config.write_text(json.dumps({
        "auths": {
            "https://Registry.Example:5000/v1/": {"auth": token},
            "plain.example": {"username": "erin", "password": "pw2"},
            "oauth.example": {"identitytoken": "refresh-1"},
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
            "broken.example": {"auth": "%%%"},
        },
        "credsStore": "desktop",
    }))
    env = {"DOCKER_CONFIG": str(config.parent)}
    creds = find_credentials("registry.example:5000", env)
    assert (creds.username, creds.password) == ("dave", "pw:1")
    assert "config.json" in creds.source
    creds = find_credentials("plain.example", env)
    assert (creds.username, creds.password) == ("erin", "pw2")
    assert find_credentials("oauth.example", env).identity_token == "refresh-1"
    assert find_credentials("docker.io", env).username == "hub"
    helper = find_credentials("elsewhere.example", env)
    assert helper.anonymous and "docker-credential-desktop" in helper.note
    assert "docker-credential-desktop" in unauthorized_message("elsewhere.example", helper)
    with pytest.raises(RegistryError, match="not base64"):
        find_credentials("broken.example", env)
    assert find_credentials("x.example", {"DOCKER_CONFIG": str(tmp_path / "none")}).anonymous


def test_credentials_go_only_to_https_realms_or_the_registry_host() -> None:
    assert may_send_credentials("https://auth.example/token", "registry.example")
    assert may_send_credentials("http://127.0.0.1:9/token", "127.0.0.1:5000")
    assert not may_send_credentials("http://evil.example/token", "registry.example")


def test_parts_follow_ollama() -> None:
    mb = 1_000_000
    assert [p.size for p in plan_parts(250 * mb, 16, 100 * mb, 1000 * mb)] == [
        100 * mb, 100 * mb, 50 * mb]
    assert len(plan_parts(32_000 * mb, 16, 100 * mb, 1000 * mb)) == 32  # 1000 MB cap
    assert len(plan_parts(3200 * mb, 16, 100 * mb, 1000 * mb)) == 16
    assert plan_parts(0, 16, 100, 1000) == []


def test_partial_state_that_does_not_fit_is_started_over(tmp_path: Path) -> None:
    store = Store(tmp_path / "m")
    digest = Digest.of(b"x" * 100)
    plan = plan_parts(100, 4, 10, 1000)
    with PartialBlob(store, digest, 100) as partial:
        assert partial.open(plan)
        partial.write_at(partial.parts[0], b"x" * 7)
        partial.save()
    with PartialBlob(store, digest, 100) as partial:  # resumed
        assert partial.open(plan_parts(100, 4, 10, 1000)) and partial.completed == 7
    state = json.loads(partial.state_path.read_text())
    state["parts"][1]["offset"] += 1  # parts that no longer tile the blob
    partial.state_path.write_text(json.dumps(state))
    with PartialBlob(store, digest, 100) as partial:
        assert partial.open(plan_parts(100, 4, 10, 1000)) and partial.completed == 0
    partial.state_path.write_text("{not json")
    with PartialBlob(store, digest, 100) as partial:
        assert partial.open(plan_parts(100, 4, 10, 1000)) and partial.completed == 0
        assert partial.data_path.stat().st_size == 100
    # prune knows them: they are hidden temporary files.
    assert {p.name for p in store.plan_prune().temp_files} == {
        partial.data_path.name, partial.state_path.name}


def test_http_name_needs_insecure() -> None:
    with pytest.raises(RegistryError, match="insecure protocol http"):
        RegistryClient(ModelName.parse("http://127.0.0.1:1/team/m:v1"))
    assert RegistryClient(ModelName.parse("ghcr.io/team/m:v1")).base == "https://ghcr.io"


def test_unreachable_registry(tmp_path: Path) -> None:
    from registry_fixtures import free_port

    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError) as err:
        pull(Store(tmp_path / "m"), f"{host}/team/m:v1", insecure=True)
    assert str(err.value) == f"registry unreachable: {host}: Connection refused"


# --------------------------------------------------------- push and pull
def test_push_then_pull_reproduces_the_model(tmp_path: Path,
                                             anon_registry: RegistryProcess) -> None:
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    name = repo_name(anon_registry.host)
    manifest = make_model(src, name)
    events = Events()
    pushed = push(src, name, insecure=True, progress=events)
    shorts = [x.digest.short() for x in (*manifest.layers, manifest.config)]
    assert events.statuses() == ["retrieving manifest", *[f"pushing {s}" for s in shorts],
                                 "pushing manifest", "success"]
    assert pushed.digest == manifest.digest and len(pushed.uploaded) == 3

    events = Events()
    pulled = pull(dst, str(name), insecure=True, progress=events)
    assert events.statuses() == ["pulling manifest", *[f"pulling {s}" for s in shorts],
                                 "verifying sha256 digest", "writing manifest", "success"]
    bars = [e for e in events if e.status.startswith("pulling ") and e.total is not None]
    assert all(e.digest and e.digest.startswith("sha256:") for e in bars)
    assert bars[-1].completed == bars[-1].total
    assert dst.manifest_path(name).read_bytes() == src.manifest_path(name).read_bytes()
    assert stored_blobs(dst) == stored_blobs(src)
    assert pulled.manifest.digest == manifest.digest
    # Nothing is left behind: no partial files, no state.
    assert sorted(p.name for p in dst.blobs.iterdir()) == sorted(stored_blobs(src))


def test_second_push_uploads_nothing(tmp_path: Path, anon_registry: RegistryProcess,
                                     proxy_to: Callable[[RegistryProcess], Proxy]) -> None:
    proxy = proxy_to(anon_registry)
    store = Store(tmp_path / "m")
    name = repo_name(proxy.host)
    make_model(store, name)
    push(store, name, insecure=True)
    assert len(proxy.requests("PATCH")) == 3
    proxy.clear()
    result = push(store, name, insecure=True)
    assert len(result.existing) == 3 and not result.uploaded
    assert [(s.method, s.status) for s in proxy.requests()] == [("HEAD", 200)] * 3 + [
        ("PUT", 201)]
    assert "/manifests/v1" in proxy.requests("PUT")[0].path


def test_push_mounts_layers_from_their_source_repository(
        tmp_path: Path, anon_registry: RegistryProcess,
        proxy_to: Callable[[RegistryProcess], Proxy]) -> None:
    proxy = proxy_to(anon_registry)
    store = Store(tmp_path / "m")
    base = repo_name(proxy.host)
    base_manifest = make_model(store, base)
    push(store, base, insecure=True)
    derived = repo_name(proxy.host)
    weights = store.read_blob(base_manifest.layers[0].digest)
    make_model(store, derived, model_blob=weights, from_=base.display_shortest())
    proxy.clear()
    result = push(store, derived, insecure=True)
    assert result.mounted == [base_manifest.layers[0].digest]
    [mount] = [s for s in proxy.requests("POST") if "mount=" in s.path]
    assert f"from={base.namespace}%2F{base.model}" in mount.path and mount.status == 201
    # Registries link blobs per repository: the others (no ``from``) are uploaded.
    assert result.uploaded == [x.digest for x in (*base_manifest.layers[1:],
                                                   base_manifest.config)]
    assert len(proxy.requests("PATCH")) == 2


def test_pull_fetches_ranged_parts_in_parallel(
        tmp_path: Path, anon_registry: RegistryProcess,
        proxy_to: Callable[[RegistryProcess], Proxy]) -> None:
    proxy = proxy_to(anon_registry)
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    name = repo_name(proxy.host)
    manifest = make_model(src, name, size=500 * KiB)
    push(src, name, insecure=True)
    proxy.clear()
    pull(dst, name, insecure=True)
    weights = manifest.layers[0].digest
    ranges = sorted(s.range or "" for s in proxy.requests("GET", str(weights))
                    if s.range != "bytes=0-0")
    assert len(ranges) == 16  # 500 KiB / 16 parts, 32 KiB each (the test's minimum)
    covered = sorted(tuple(int(x) for x in r[len("bytes="):].split("-")) for r in ranges)
    assert covered[0][0] == 0 and covered[-1][1] == 500 * KiB - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(covered, covered[1:], strict=False))
    assert stored_blobs(dst) == stored_blobs(src)


def test_cut_connections_are_retried_within_the_pull(
        tmp_path: Path, anon_registry: RegistryProcess,
        proxy_to: Callable[[RegistryProcess], Proxy]) -> None:
    proxy = proxy_to(anon_registry)
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    name = repo_name(proxy.host)
    make_model(src, name)
    push(src, name, insecure=True)
    proxy.cut_after, proxy.cuts_left = 10_000, 5
    pull(dst, name, insecure=True)
    assert proxy.cuts_left == 0
    assert stored_blobs(dst) == stored_blobs(src)


def _ranged_bytes(proxy: Proxy, digest: Digest) -> int:
    return sum(s.body_bytes for s in proxy.requests("GET", str(digest))
               if s.range not in (None, "bytes=0-0") and s.status == 206)


def test_interrupted_pull_resumes_where_it_stopped(
        tmp_path: Path, anon_registry: RegistryProcess,
        proxy_to: Callable[[RegistryProcess], Proxy],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pulling, "RETRIES", 1)
    proxy = proxy_to(anon_registry)
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    name = repo_name(proxy.host)
    manifest = make_model(src, name)
    weights = manifest.layers[0]
    push(src, name, insecure=True)
    # First run: six downloads are cut after 10 kB, then the registry stops answering.
    proxy.cut_after, proxy.cuts_left, proxy.refuse_blobs_after_cuts = 10_000, 6, True
    with pytest.raises(RegistryError, match="run the pull again to resume") as err:
        pull(dst, name, insecure=True)
    assert str(err.value).startswith(f"pull {weights.digest.short()}: HTTP 503")
    assert not dst.manifest_path(name).exists() and not stored_blobs(dst)
    parts = json.loads(next(dst.blobs.glob(".tmp-*-partial.json")).read_text())["parts"]
    first = sum(p["completed"] for p in parts)
    assert 0 < first <= 60_000  # a cut part may stop early once another one failed

    # Second run: only the missing byte ranges are asked for.
    proxy.refuse_blobs = proxy.refuse_blobs_after_cuts = False
    proxy.clear()
    pull(dst, name, insecure=True)
    assert _ranged_bytes(proxy, weights.digest) == weights.size - first
    asked = sorted(s.range or "" for s in proxy.requests("GET", str(weights.digest))
                   if s.range != "bytes=0-0")
    assert asked == sorted(f"bytes={p['offset'] + p['completed']}-{p['offset'] + p['size'] - 1}"
                           for p in parts)
    assert stored_blobs(dst) == stored_blobs(src)
    assert not list(dst.blobs.glob(".tmp-*"))


def test_killed_pull_resumes(tmp_path: Path, anon_registry: RegistryProcess,
                             proxy_to: Callable[[RegistryProcess], Proxy]) -> None:
    proxy = proxy_to(anon_registry)
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    name = repo_name(proxy.host)
    manifest = make_model(src, name, size=1024 * KiB)
    weights = manifest.layers[0]
    push(src, name, insecure=True)
    proxy.throttle = 0.05  # per 16 KiB: the 1 MiB blob takes about 3 s
    script = ("import sys; import modelkit.registry.pulling as p; p.MIN_PART_SIZE = 65536; "
              "from modelkit.store import Store; "
              "p.pull(Store(sys.argv[1]), sys.argv[2], insecure=True)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(dst.root), str(name)], env=env)
    state_file = dst.blobs / f".tmp-{weights.digest.filename}-partial.json"
    deadline = time.monotonic() + 20
    done = 0
    while done < 128 * KiB and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
        try:
            done = sum(p["completed"] for p in json.loads(state_file.read_text())["parts"])
        except (OSError, ValueError):
            continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads(state_file.read_text())
    done = sum(p["completed"] for p in state["parts"])
    assert 0 < done < weights.size and len(state["parts"]) == 16
    proxy.throttle = 0
    proxy.clear()
    pull(dst, name, insecure=True)
    assert _ranged_bytes(proxy, weights.digest) == weights.size - done
    assert stored_blobs(dst) == stored_blobs(src)


def test_corrupted_blob_on_the_server_is_rejected(
        tmp_path: Path, anon_registry: RegistryProcess) -> None:
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    name = repo_name(anon_registry.host)
    manifest = make_model(src, name)
    push(src, name, insecure=True)
    weights = manifest.layers[0].digest
    blob = anon_registry.blob_file(str(weights))
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestError) as err:
        pull(dst, name, insecure=True)
    got = Digest.of(bytes(data))
    assert str(err.value) == (f"digest mismatch, file must be downloaded again: "
                              f"want {weights}, got {got}")
    assert not dst.manifests.exists() or not any(dst.manifests.rglob("*"))
    assert not stored_blobs(dst)
    assert not list(dst.blobs.glob(f"*{weights.hex}*"))  # the bad download is gone


def test_concurrent_pulls_of_one_model_share_the_work(
        tmp_path: Path, anon_registry: RegistryProcess) -> None:
    import threading

    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    name = repo_name(anon_registry.host)
    make_model(src, name, size=600 * KiB)
    push(src, name, insecure=True)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pull(dst, name, insecure=True)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert stored_blobs(dst) == stored_blobs(src) and not list(dst.blobs.glob(".tmp-*"))


def test_missing_manifest_is_model_not_found(tmp_path: Path,
                                             anon_registry: RegistryProcess) -> None:
    with pytest.raises(ModelNotFoundError, match="^pull model manifest: file does not exist$"):
        pull(Store(tmp_path / "m"), f"{anon_registry.host}/team/nothing:here", insecure=True)


def test_bad_digest_in_a_manifest_never_becomes_a_path(
        tmp_path: Path, anon_registry: RegistryProcess,
        proxy_to: Callable[[RegistryProcess], Proxy]) -> None:
    proxy = proxy_to(anon_registry)
    evil = json.dumps({"schemaVersion": 2, "mediaType": MediaType.MANIFEST.value,
                       "config": {"mediaType": MediaType.CONFIG.value,
                                  "digest": "sha256:../../../../etc/passwd", "size": 1},
                       "layers": []}).encode()
    proxy.canned["/v2/team/evil/manifests/latest"] = (200, {}, evil)
    store = Store(tmp_path / "m")
    with pytest.raises(RegistryError, match="invalid digest format"):
        pull(store, f"{proxy.host}/team/evil", insecure=True)
    assert not store.blobs.exists() or not any(store.blobs.iterdir())


def test_manifest_is_checked_against_the_served_digest(
        tmp_path: Path, anon_registry: RegistryProcess,
        proxy_to: Callable[[RegistryProcess], Proxy]) -> None:
    proxy = proxy_to(anon_registry)
    src = Store(tmp_path / "src")
    name = repo_name(proxy.host)
    raw = make_model(src, name).to_bytes()
    wrong = Digest.of(b"something else")
    proxy.canned[f"/v2/{name.repository}/manifests/{name.tag}"] = (
        200, {"Docker-Content-Digest": str(wrong)}, raw[:-1])  # truncated in transit
    store = Store(tmp_path / "dst")
    with pytest.raises(DigestError, match=f"^pull model manifest: digest mismatch: want {wrong}"):
        pull(store, name, insecure=True)
    assert not store.manifests.exists()


def test_repull_removes_unused_layers(tmp_path: Path,
                                      anon_registry: RegistryProcess) -> None:
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    name = repo_name(anon_registry.host)
    old = make_model(src, name)
    push(src, name, insecure=True)
    pull(dst, name, insecure=True)
    new = make_model(src, name)  # new weights under the same name
    push(src, name, insecure=True)
    events = Events()
    result = pull(dst, name, insecure=True, progress=events)
    assert "removing unused layers" in events.statuses()
    assert result.cached == [new.layers[1].digest, new.config.digest]
    assert not dst.has_blob(old.layers[0].digest) and dst.has_blob(new.layers[0].digest)


def test_ensure_model_pulls_only_when_missing(tmp_path: Path,
                                              anon_registry: RegistryProcess) -> None:
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    name = repo_name(anon_registry.host)
    make_model(src, name)
    push(src, name, insecure=True)
    events = Events()
    assert ensure_model(dst, str(name), insecure=True, progress=events) == name
    assert events.statuses()[:2] == ["pulling model", "pulling manifest"]
    # Present: no request at all (this host does not even answer); any spelling works.
    from registry_fixtures import free_port

    local = ModelName.parse(f"127.0.0.1:{free_port()}/team/local:v1")
    make_model(dst, local)
    events = Events()
    assert ensure_model(dst, str(local).upper(), progress=events) == local
    assert not events


# ------------------------------------------------------------------- auth
def test_pull_follows_a_redirect_without_forwarding_authorization(
        tmp_path: Path, basic_registry: RegistryProcess,
        proxy_to: Callable[[RegistryProcess], Proxy],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELKIT_REGISTRY_AUTH", f"{USER}:{PASSWORD}")
    proxy = proxy_to(basic_registry)
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    name = repo_name(proxy.host)
    manifest = make_model(src, name)
    push(src, name, insecure=True)
    # Blob GETs now answer 307 to another host name, like a registry backed by S3; that
    # "storage" host reaches the registry with its own credentials (a presigned URL).
    proxy.redirect_blobs_to = f"localhost:{proxy.port}"
    proxy.storage_auth = basic(USER, PASSWORD)
    proxy.clear()
    pull(dst, name, insecure=True)
    assert stored_blobs(dst) == stored_blobs(src)
    storage = proxy.requests("GET", "/storage/")
    assert storage and all(s.authorization is None for s in storage)
    assert all(s.host.startswith("localhost:") for s in storage)
    # One redirect per blob: the weights' 10 parts go to the storage URL directly.
    weights = str(manifest.layers[0].digest)
    assert len([s for s in proxy.requests("GET", weights) if s.status == 307]) == 1
    assert len([s for s in storage if weights in s.path]) == 10
    # The registry itself got the credentials (after its challenge).
    assert proxy.requests("GET", "/manifests/")[-1].authorization == basic(USER, PASSWORD)


def test_basic_auth_with_credentials_from_the_environment(
        tmp_path: Path, basic_registry: RegistryProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELKIT_REGISTRY_AUTH", f"{USER}:{PASSWORD}")
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    name = repo_name(basic_registry.host)
    make_model(src, name)
    push(src, name, insecure=True)
    pull(dst, name, insecure=True)
    assert stored_blobs(dst) == stored_blobs(src)


def test_basic_auth_from_docker_config(tmp_path: Path, basic_registry: RegistryProcess) -> None:
    config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    config.parent.mkdir(parents=True)
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {basic_registry.host: {"auth": auth}}}))
    src = Store(tmp_path / "src")
    name = repo_name(basic_registry.host)
    make_model(src, name)
    assert push(src, name, insecure=True).uploaded


def test_basic_auth_wrong_credentials(tmp_path: Path, basic_registry: RegistryProcess,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELKIT_REGISTRY_AUTH", f"{USER}:wrong")
    with pytest.raises(UnauthorizedError) as err:
        pull(Store(tmp_path / "m"), f"{basic_registry.host}/team/any:v1", insecure=True)
    assert str(err.value) == (f"unauthorized: {basic_registry.host} rejected the "
                              "credentials from MODELKIT_REGISTRY_AUTH")


def test_basic_auth_without_credentials(tmp_path: Path,
                                        basic_registry: RegistryProcess) -> None:
    src = Store(tmp_path / "m")
    name = repo_name(basic_registry.host)
    make_model(src, name)
    with pytest.raises(UnauthorizedError) as err:
        push(src, name, insecure=True)
    message = str(err.value)
    assert message.startswith(f"unauthorized: {basic_registry.host} requires credentials")
    assert "MODELKIT_REGISTRY_AUTH=user:password" in message and "\n" not in message


def test_bearer_token_push_mount_and_pull(
        tmp_path: Path, token_registry: RegistryProcess, token_server: TokenServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELKIT_REGISTRY_AUTH", f"{USER}:{PASSWORD}")
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    base = repo_name(token_registry.host)
    base_manifest = make_model(src, base)
    token_server.requests.clear()
    push(src, base, insecure=True)
    scopes = [s for r in token_server.requests for s in r["query"].get("scope", [])]
    granted = {(s.rpartition(":")[0], frozenset(s.rpartition(":")[2].split(",")))
               for s in scopes}
    assert (f"repository:{base.repository}", frozenset({"pull", "push"})) in granted
    assert all(r["authorization"] == basic(USER, PASSWORD) for r in token_server.requests)

    derived = repo_name(token_registry.host)
    weights = src.read_blob(base_manifest.layers[0].digest)
    make_model(src, derived, model_blob=weights, from_=base.display_shortest())
    assert push(src, derived, insecure=True).mounted == [base_manifest.layers[0].digest]

    pull(dst, derived, insecure=True)
    assert dst.manifest_path(derived).read_bytes() == src.manifest_path(derived).read_bytes()


def test_bearer_token_identity_token_from_docker_config(
        tmp_path: Path, token_registry: RegistryProcess, token_server: TokenServer) -> None:
    config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    config.parent.mkdir(parents=True)
    refresh = next(iter(token_server.refresh_tokens))
    config.write_text(json.dumps({"auths": {token_registry.host: {"identitytoken": refresh}}}))
    src = Store(tmp_path / "src")
    name = repo_name(token_registry.host)
    make_model(src, name)
    token_server.requests.clear()
    assert push(src, name, insecure=True).uploaded
    assert token_server.requests and all(r["method"] == "POST" for r in token_server.requests)


def test_bearer_token_wrong_credentials(tmp_path: Path, token_registry: RegistryProcess,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELKIT_REGISTRY_AUTH", f"{USER}:wrong")
    with pytest.raises(UnauthorizedError, match="^unauthorized: .* rejected the credentials"):
        pull(Store(tmp_path / "m"), f"{token_registry.host}/team/any:v1", insecure=True)


def test_bearer_token_anonymous_is_denied(tmp_path: Path,
                                          token_registry: RegistryProcess) -> None:
    with pytest.raises(UnauthorizedError, match="^unauthorized: .* requires credentials"):
        pull(Store(tmp_path / "m"), f"{token_registry.host}/team/any:v1", insecure=True,
             credentials=Credentials())


# -------------------------------------------------------------------- CLI
def test_cli_has_registry_commands() -> None:
    for verb in ("pull", "push"):
        probe = subprocess.run([sys.executable, "-m", "modelkit", verb, "--help"],
                               capture_output=True, text=True, cwd=REPO)
        assert probe.returncode == 0, probe.stderr
        assert "--insecure" in probe.stdout, f"modelkit {verb} has no --insecure"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelkit", *args], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, **env}, timeout=60)


def test_cli_push_and_pull_json(tmp_path: Path, anon_registry: RegistryProcess) -> None:
    src = Store(tmp_path / "src")
    name = repo_name(anon_registry.host)
    make_model(src, name)
    pushed = _cli("push", str(name), "--insecure", "--json",
                  env={"MODELKIT_MODELS": str(src.root)})
    assert pushed.returncode == 0, pushed.stderr
    statuses = [json.loads(line).get("status") for line in pushed.stdout.splitlines()]
    assert statuses[0] == "retrieving manifest" and "pushing manifest" in statuses
    pulled = _cli("pull", str(name), "--insecure", "--json",
                  env={"MODELKIT_MODELS": str(tmp_path / "dst")})
    assert pulled.returncode == 0, pulled.stderr
    events = [json.loads(line) for line in pulled.stdout.splitlines()]
    assert events[0] == {"status": "pulling manifest"}
    assert any(e.get("digest") and e.get("total") for e in events)
    assert {"status": "success"} in events
    assert stored_blobs(Store(tmp_path / "dst")) == stored_blobs(src)


def test_cli_unauthorized_is_one_line(tmp_path: Path, basic_registry: RegistryProcess
                                      ) -> None:
    done = _cli("pull", f"{basic_registry.host}/team/any:v1", "--insecure",
                env={"MODELKIT_MODELS": str(tmp_path / "m"),
                     "MODELKIT_REGISTRY_AUTH": f"{USER}:wrong"})
    assert done.returncode == 10
    assert done.stderr == (f"Error: unauthorized: {basic_registry.host} rejected the "
                           "credentials from MODELKIT_REGISTRY_AUTH\n")


def test_create_from_a_registry_name_pulls_the_base(
        tmp_path: Path, anon_registry: RegistryProcess) -> None:
    src, dst = Store(tmp_path / "src"), Store(tmp_path / "dst")
    base = repo_name(anon_registry.host)
    gguf = write_gguf(tmp_path / "base.gguf")
    (tmp_path / "Modelfile").write_text(f"FROM {gguf}\n")
    api.create(str(base), tmp_path / "Modelfile", store=src)
    push(src, base, insecure=True)
    (tmp_path / "Derived").write_text(f"FROM {base}\nSYSTEM hello\n")
    events = Events()
    result = api.create("derived", tmp_path / "Derived", store=dst, progress=events,
                        insecure=True)
    assert events.statuses()[:3] == ["gathering model components", "pulling model",
                                     "pulling manifest"]
    assert dst.manifest_path(base).read_bytes() == src.manifest_path(base).read_bytes()
    assert result.manifest.layers[0].from_ == base.display_shortest()


def test_cli_pull_prints_ollamas_lines_and_show_modelfile_rebuilds_it(
        tmp_path: Path, anon_registry: RegistryProcess, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A model pulled from a registry: its printed Modelfile re-creates the same manifest."""
    from modelkit.cli import main

    name = str(repo_name(anon_registry.host))
    monkeypatch.setenv("MODELKIT_MODELS", str(tmp_path / "src"))
    assert main(["create", name, "-f", str(REPO / "samples/liang-ai/Modelfile")]) == 0
    assert main(["push", name, "--insecure"]) == 0
    monkeypatch.setenv("MODELKIT_MODELS", str(tmp_path / "dst"))
    capsys.readouterr()
    assert main(["pull", name, "--insecure"]) == 0
    out, err = capsys.readouterr()
    pulled = Store(tmp_path / "dst").get(ModelName.parse(name)).manifest
    shorts = [x.digest.short() for x in (*pulled.layers, pulled.config)]
    assert (out.splitlines(), err) == (["pulling manifest", *[f"pulling {s}" for s in shorts],
                                        "verifying sha256 digest", "writing manifest",
                                        "success"], "")
    assert main(["show", name, "--modelfile"]) == 0
    (tmp_path / "Modelfile").write_text(capsys.readouterr().out)
    assert main(["create", "copy", "-f", str(tmp_path / "Modelfile")]) == 0
    dst = Store(tmp_path / "dst")
    assert dst.get(ModelName.parse("copy")).manifest.digest == pulled.digest
