"""Store layout, manifest and config bytes, atomic writes, locks and pruning."""

from __future__ import annotations

import fcntl
import hashlib
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import write_gguf
from modelkit.errors import ModelNotFoundError, StoreError
from modelkit.manifest import Layer, Manifest, MediaType, ModelConfig
from modelkit.names import Digest, ModelName
from modelkit.store import TEMP_PREFIX, Store, default_root

TEST_GGUF_SHA = "89a2116c3a82d6a97f59f748d86ed4417214353fd178ee54df418fde32495fad"
TEST_CONFIG_SHA = "99759ad5b91e723db0393d698ffbb448b1b7df5ff6377a108c49254583b1bc8c"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_config_blob_of_ollama_test_model_has_the_known_digest() -> None:
    config = ModelConfig(model_family="test", model_families=("test",), model_type="0",
                         file_type="unknown")
    data = config.to_bytes()
    assert data == (b'{"model_format":"gguf","model_family":"test","model_families":["test"],'
                    b'"model_type":"0","file_type":"unknown","architecture":"amd64",'
                    b'"os":"linux"}\n')
    assert len(data) == 147
    assert sha(data) == TEST_CONFIG_SHA


def test_manifest_bytes_id_and_size_match_ollama() -> None:
    manifest = Manifest(
        config=Layer(MediaType.CONFIG, Digest("sha256", TEST_CONFIG_SHA), 147),
        layers=(Layer(MediaType.MODEL, Digest("sha256", TEST_GGUF_SHA), 68),),
    )
    data = manifest.to_bytes()
    assert data == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        b'"config":{"mediaType":"application/vnd.docker.container.image.v1+json",'
        b'"digest":"sha256:' + TEST_CONFIG_SHA.encode() + b'","size":147},'
        b'"layers":[{"mediaType":"application/vnd.ollama.image.model",'
        b'"digest":"sha256:' + TEST_GGUF_SHA.encode() + b'","size":68}]}\n')
    assert manifest.digest.short() == "f75369d1dd1f"
    assert manifest.total_size == 215
    assert Manifest.from_bytes(data) == manifest


def test_layer_json_keeps_from_and_name_in_ollama_order() -> None:
    layer = Layer(MediaType.MODEL, Digest("sha256", TEST_GGUF_SHA), 68, from_="llama3:latest")
    assert list(layer.to_json()) == ["mediaType", "digest", "size", "from"]
    assert Layer.from_json(layer.to_json()) == layer


def test_unknown_media_types_and_config_keys_survive_a_round_trip() -> None:
    obj = {"mediaType": "application/vnd.example.future", "digest": "sha256:" + "a" * 64,
           "size": 1}
    assert Layer.from_json(obj).to_json() == obj
    data = b'{"model_format":"gguf","model_family":"x","model_families":["x"],' \
           b'"model_type":"1","file_type":"F16","newer_key":[1],"architecture":"amd64",' \
           b'"os":"linux"}\n'
    assert ModelConfig.from_bytes(data).to_bytes() == data


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"config":{"digest":"md5:x"}}',
                                  b'{"config":{"mediaType":"a","digest":"sha256:../../x",'
                                  b'"size":1}}'])
def test_corrupt_manifests_raise_store_error(data: bytes) -> None:
    with pytest.raises(StoreError):
        Manifest.from_bytes(data)


def test_root_comes_from_modelkit_then_ollama_env(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("MODELKIT_MODELS", str(tmp_path / "a"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "b"))
    assert default_root() == tmp_path / "a"
    monkeypatch.delenv("MODELKIT_MODELS")
    assert default_root() == tmp_path / "b"
    monkeypatch.delenv("OLLAMA_MODELS")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".ollama" / "models"


def test_blobs_are_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = store.write_blob(b"Say hi!")
    again = store.write_blob(b"Say hi!")
    assert first.created and not again.created
    assert first.digest == again.digest
    path = tmp_path / "blobs" / f"sha256-{sha(b'Say hi!')}"
    assert path.read_bytes() == b"Say hi!"
    assert sha(b"Say hi!").startswith("f29e82a8")  # Ollama's system-layer vector
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == [path.name]


def test_import_file_copies_bytes_unchanged_and_hashes_in_one_pass(tmp_path: Path) -> None:
    src = write_gguf(tmp_path / "t.gguf")
    store = Store(tmp_path / "models")
    seen: list[tuple[str, int, int]] = []
    written = store.import_file(src, progress=lambda *event: seen.append(event))
    assert str(written.digest) == f"sha256:{TEST_GGUF_SHA}"
    assert store.blob_path(written.digest).read_bytes() == src.read_bytes()
    assert seen[-1] == ("copying", 68, 68)


def test_import_file_with_a_hard_link_shares_the_inode(tmp_path: Path) -> None:
    src = write_gguf(tmp_path / "t.gguf")
    store = Store(tmp_path / "models")
    written = store.import_file(src, link="hard")
    blob = store.blob_path(written.digest)
    assert blob.read_bytes() == src.read_bytes()
    assert written.created and blob.stat().st_ino == src.stat().st_ino


def test_blob_writer_checks_an_expected_digest_and_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    w = store.open_writer()
    w.write(b"tampered")
    with pytest.raises(Exception, match="digest mismatch"):
        w.commit(expected=Digest("sha256", "0" * 64))
    assert list((tmp_path / "blobs").iterdir()) == []


def test_an_abandoned_writer_leaves_no_blob_under_a_final_name(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(RuntimeError), store.open_writer() as w:
        w.write(b"partial")
        raise RuntimeError("killed")
    assert list((tmp_path / "blobs").iterdir()) == []


def _manifest_for(store: Store, text: bytes) -> Manifest:
    config = store.write_blob(ModelConfig(model_family="test").to_bytes())
    layer = store.write_blob(text)
    return Manifest(Layer(MediaType.CONFIG, config.digest, config.size),
                    (Layer(MediaType.SYSTEM, layer.digest, layer.size),))


def test_manifest_path_layout_and_case_insensitive_resolution(tmp_path: Path) -> None:
    store = Store(tmp_path)
    name = ModelName.parse("Liang-AI")
    store.write_manifest(name, _manifest_for(store, b"x"))
    path = tmp_path / "manifests" / "registry.ollama.ai" / "library" / "Liang-AI" / "latest"
    assert path.is_file()
    assert store.resolve(ModelName.parse("liang-ai")) == name
    assert store.resolve(ModelName.parse("LIANG-AI:LATEST")) == name
    assert store.resolve(ModelName.parse("other")) is None
    with pytest.raises(ModelNotFoundError, match='model "nope:latest" not found'):
        store.read_manifest(ModelName.parse("nope"))


def test_an_exact_name_resolves_without_walking_the_manifests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    name = ModelName.parse("Liang-AI")
    manifest = _manifest_for(store, b"x")
    store.write_manifest(name, manifest)
    walks: list[int] = []
    real = Store.iter_names

    def counted(self: Store) -> Iterator[tuple[ModelName, Path]]:
        walks.append(1)
        return real(self)

    monkeypatch.setattr(Store, "iter_names", counted)
    assert store.get(ModelName.parse("Liang-AI")).manifest == manifest
    assert store.canonical(name) == name
    assert walks == []
    assert store.resolve(ModelName.parse("liang-ai")) == name  # a case-insensitive match walks
    assert walks == [1]


def test_replacing_a_manifest_prunes_only_what_nothing_uses(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a, b = ModelName.parse("a"), ModelName.parse("b")
    old = _manifest_for(store, b"old")
    store.write_manifest(a, old)
    store.write_manifest(b, old)  # b still uses old's blobs
    extra = store.write_blob(b"intermediate").digest
    new = _manifest_for(store, b"new")
    with store.lock(exclusive=False):
        stale = store.replace_manifest(a, new, also_unused=[extra])
    assert stale == {old.layers[0].digest, extra}  # the shared config is still used by new
    plan = store.prune_unused(stale)
    assert {p.name for p in plan.blobs} == {extra.filename}  # b still uses old's layer
    assert store.read_manifest(a) == new and store.has_blob(old.layers[0].digest)
    store.delete_manifest(b)
    assert store.prune_unused(store.replace_manifest(a, new, also_unused=stale)).blobs == (
        store.blob_path(old.layers[0].digest),)


def test_writing_a_manifest_with_a_missing_blob_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    manifest = Manifest(Layer(MediaType.CONFIG, Digest("sha256", "1" * 64), 1), ())
    with pytest.raises(StoreError, match="is missing"):
        store.write_manifest(ModelName.parse("m"), manifest)
    assert not (tmp_path / "manifests").exists()


def test_listing_ignores_hidden_and_misplaced_files(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write_manifest(ModelName.parse("a"), _manifest_for(store, b"a"))
    lib = tmp_path / "manifests" / "registry.ollama.ai" / "library"
    (lib / "a" / ".hidden").write_text("{}")
    (lib / "stray").write_text("{}")
    (lib / "a" / f"{TEMP_PREFIX}123").write_text("{")
    assert [str(m.name) for m in store.list_models()] == ["registry.ollama.ai/library/a:latest"]


def test_prune_plan_then_execute(tmp_path: Path) -> None:
    store = Store(tmp_path)
    keep = _manifest_for(store, b"keep")
    store.write_manifest(ModelName.parse("keep"), keep)
    orphan = store.write_blob(b"orphan")
    (tmp_path / "blobs" / f"{TEMP_PREFIX}dead").write_bytes(b"half")
    legacy = tmp_path / "blobs" / "not-a-digest"  # not ours: never deleted
    legacy.write_bytes(b"?")
    empty = tmp_path / "manifests" / "h" / "n" / "m"
    empty.mkdir(parents=True)
    plan = store.plan_prune()
    assert [p.name for p in plan.blobs] == [orphan.digest.filename]
    assert [p.name for p in plan.temp_files] == [f"{TEMP_PREFIX}dead"]
    assert empty in plan.empty_dirs
    assert plan.bytes_freed == len(b"orphan") + len(b"half")
    assert store.has_blob(orphan.digest)  # planning deletes nothing
    store.execute_prune(plan)
    assert not store.has_blob(orphan.digest)
    assert legacy.exists() and not empty.exists()
    for layer in keep.all_layers():
        assert store.has_blob(layer.digest)
    assert store.plan_prune().empty


def test_prune_keeps_every_blob_when_a_manifest_is_corrupt(tmp_path: Path) -> None:
    store = Store(tmp_path)
    orphan = store.write_blob(b"orphan")
    bad = tmp_path / "manifests" / "registry.ollama.ai" / "library" / "bad" / "latest"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"{garbage")
    plan = store.plan_prune()
    assert plan.blobs == () and plan.bytes_freed == 0
    assert [p.name for p in plan.kept] == [orphan.digest.filename]
    (damaged,) = plan.damaged
    assert damaged.path == bad and "corrupt manifest" in damaged.reason


def _hold_lock(root: str, exclusive: bool, ready: multiprocessing.Event,  # type: ignore[valid-type]
               release: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    with Store(root).lock(exclusive=exclusive):
        ready.set()  # type: ignore[attr-defined]
        release.wait(10)  # type: ignore[attr-defined]


@pytest.mark.parametrize("held_exclusive,want_exclusive,blocks", [
    (False, False, False),  # two creates at once
    (False, True, True),    # rm waits for a create
    (True, False, True),    # a create waits for rm
])
def test_cross_process_lock(tmp_path: Path, held_exclusive: bool, want_exclusive: bool,
                            blocks: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(tmp_path), held_exclusive, ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        fd = os.open(tmp_path / ".modelkit.lock", os.O_RDWR)
        mode = fcntl.LOCK_EX if want_exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            got = True
        except BlockingIOError:
            got = False
        os.close(fd)
        assert got is not blocks
    finally:
        release.set()
        proc.join(30)
    assert proc.exitcode == 0
    # The holder is gone, and so is its lock: an exclusive lock is free at once.
    fd = os.open(tmp_path / ".modelkit.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_the_network_guard_refuses_non_loopback_names() -> None:
    import socket
    with pytest.raises(OSError, match="tests must stay on loopback"):
        socket.getaddrinfo("registry.ollama.ai", 443)
    assert socket.getaddrinfo("127.0.0.1", 80)

