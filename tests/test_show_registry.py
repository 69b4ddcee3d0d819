"""``show`` of a registry model that is not in the store: manifest, config and small
layers whole, the model layer's GGUF header by ranged blob GETs, against the real
distribution registry on 127.0.0.1 (with the recording proxy of registry_fixtures)."""

from __future__ import annotations

import hashlib
import http.client
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from registry_fixtures import Proxy, RegistryProcess
from remote_fixtures import big_llama
from test_registry import _isolated, anon_registry, proxy_to  # noqa: F401

from modelkit import api, cli
from modelkit.errors import ModelNotFoundError
from modelkit.manifest import Layer, Manifest, MediaType, ModelConfig
from modelkit.names import Digest, ModelName
from modelkit.store import Store

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "liang-ai" / "Modelfile"


def test_registry_model_shows_as_when_stored(tmp_path: Path,
                                             anon_registry: RegistryProcess,  # noqa: F811
                                             proxy_to: Callable[[RegistryProcess], Proxy],  # noqa: F811
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    src = Store(tmp_path / "src")
    name = f"{anon_registry.host}/team/liang:v1"
    api.create(name, SAMPLE, store=src)
    api.push(name, insecure=True, store=src)
    stored = api.show(name, store=src)
    proxy = proxy_to(anon_registry)
    via = f"{proxy.host}/team/liang:v1"
    remote = api.show(via, store=tmp_path / "empty", insecure=True)
    assert remote.remote is not None and stored.remote is None
    assert cli.render_show(remote, verbose=True) == cli.render_show(stored, verbose=True)
    for key in ("parameters", "template", "system", "license", "capabilities", "model_info"):
        assert cli.show_json(remote, verbose=False)[key] == cli.show_json(stored,
                                                                           verbose=False)[key]
    assert remote.gguf.tensors == stored.gguf.tensors
    # Every byte counted: what the proxy passed on for the blobs and the manifest.
    assert remote.bytes_read == served_by(proxy, "", remote.bytes_read)
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("*"))
    monkeypatch.setenv("MODELKIT_MODELS", str(tmp_path / "empty"))
    assert cli.main(["show", "--insecure", "--system", via]) == 0
    assert capsys.readouterr().out == stored.system


def served_by(proxy: Proxy, contains: str, expected: int | None) -> int:
    """Body bytes the proxy sent for GETs whose path contains ``contains``; the proxy
    counts a piece just after sending it, so give its threads a moment to catch up."""
    served = 0
    for _ in range(100):
        served = sum(s.body_bytes for s in proxy.requests("GET", contains))
        if served == expected:
            break
        time.sleep(0.02)
    return served


def _put_sparse_blob(registry: RegistryProcess, repository: str, head: bytes, size: int,
                     ) -> Digest:
    """A blob of ``size`` bytes (``head`` then zeros) placed in the registry's storage as
    a sparse file, linked into ``repository``: a gigabyte that takes no disk."""
    digest = Digest.parse("sha256:" + hashlib.sha256(head + str(size).encode()).hexdigest())
    data = registry.blob_file(str(digest))
    data.parent.mkdir(parents=True, exist_ok=True)
    with open(data, "wb") as f:
        f.write(head)
        f.truncate(size)
    hex_ = str(digest).split(":", 1)[1]
    link = (registry.storage / "docker" / "registry" / "v2" / "repositories" / repository
            / "_layers" / "sha256" / hex_ / "link")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(str(digest))
    return digest


def test_1gb_registry_model_reads_under_one_percent(
        tmp_path: Path, anon_registry: RegistryProcess,  # noqa: F811
        proxy_to: Callable[[RegistryProcess], Proxy]) -> None:  # noqa: F811
    body, slots = big_llama()
    repository = f"team/big{os.getpid()}"
    model = _put_sparse_blob(anon_registry, repository, body.head, body.size)
    config_bytes = ModelConfig(model_family="llama", file_type="Q8_0").to_bytes()
    config = _put_sparse_blob(anon_registry, repository, config_bytes, len(config_bytes))
    manifest = Manifest(config=Layer(MediaType.CONFIG, config, len(config_bytes)),
                        layers=(Layer(MediaType.MODEL, model, body.size),))
    raw = manifest.to_bytes()
    conn = http.client.HTTPConnection(anon_registry.host)
    conn.request("PUT", f"/v2/{repository}/manifests/v1", body=raw,
                 headers={"Content-Type": MediaType.MANIFEST.value})
    assert conn.getresponse().status == 201
    conn.close()
    proxy = proxy_to(anon_registry)
    info = api.show(f"{proxy.host}/{repository}:v1", store=tmp_path / "m", insecure=True)
    assert [t.name for t in info.tensors] == [s.name for s in slots]
    assert info.quantization == "Q8_0" and info.remote is not None
    assert info.remote.size > 1_000_000_000 and info.bytes_read is not None
    header_bytes = info.bytes_read - len(raw) - len(config_bytes)
    assert served_by(proxy, str(model), header_bytes) == header_bytes
    assert info.bytes_read < info.remote.size / 100


def test_missing_registry_model_is_one_line(tmp_path: Path,
                                            anon_registry: RegistryProcess,  # noqa: F811
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELKIT_MODELS", str(tmp_path / "m"))
    assert cli.main(["show", "--insecure", f"{anon_registry.host}/team/none:v1"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "file does not exist" in err
    # A bare name is looked up in the store only: no registry is asked.
    with pytest.raises(ModelNotFoundError):
        api.show("team/none:v1", store=tmp_path / "m")
    assert ModelName.parse("team/none:v1").host == "registry.ollama.ai"


def test_unreachable_registry_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from registry_fixtures import free_port
    monkeypatch.setenv("MODELKIT_MODELS", str(tmp_path / "m"))
    assert cli.main(["show", "--insecure", f"127.0.0.1:{free_port()}/team/m:v1"]) == 9
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "registry unreachable" in err
