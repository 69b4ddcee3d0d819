"""Importing from Hugging Face and ModelScope with the real clients, against a loopback
fake hub (tests/hubserver.py), plus the tag rules, split merging and local folders.

Nothing here touches the network: both clients are pointed at 127.0.0.1 through their
environment variables, read at call time by the importers; the few settings
huggingface_hub reads at import (telemetry, Xet, offline, token file) are patched.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("MODELSCOPE_DOWNLOAD_INTRA_CLOUD", "false")

import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hubserver import COMMIT, TOKEN, FakeRepo, HubServer  # noqa: E402

from conftest import REPO, tiny_llama_tensors, write_gguf  # noqa: E402
from modelkit.errors import (  # noqa: E402
    DigestError,
    GGUFError,
    HubError,
    ModelNotFoundError,
    UnauthorizedError,
)
from modelkit.gguf_file import read_gguf  # noqa: E402
from modelkit.importers import MODEL, PROJECTOR, ImportedModel  # noqa: E402
from modelkit.importers.choose import RepoEntry, choose, quant_label  # noqa: E402
from modelkit.importers.hubs import hub_for  # noqa: E402
from modelkit.importers.local import import_local  # noqa: E402
from modelkit.importers.split import merge  # noqa: E402
from modelkit.names import ModelName  # noqa: E402
from modelkit.progress import ProgressEvent  # noqa: E402
from modelkit.quant.requantize import quantize_file  # noqa: E402

MiB = 1 << 20
TEMPLATE = "{{ .Prompt }}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ test data
def gguf_bytes(tmp: Path, arch: str = "llama", seed: int = 0, **kw: object) -> bytes:
    path = tmp / f"g-{arch}-{seed}-{len(list(tmp.iterdir()))}.gguf"
    if "tensors" not in kw:
        kw["tensors"] = tiny_llama_tensors(seed=seed)
    return write_gguf(path, arch, **kw).read_bytes()  # type: ignore[arg-type]


def split_files(tmp: Path, stem: str, max_tensors: int = 4) -> dict[str, bytes]:
    """Shards as llama.cpp writes them: full metadata in part 1, split.* in every part."""
    folder = tmp / f"split-{stem}"
    folder.mkdir()
    w = gguf.GGUFWriter(folder / f"{stem}.gguf", "llama", split_max_tensors=max_tensors)
    w.add_string("general.name", "tiny")
    w.add_uint32("llama.block_count", 1)
    w.add_float32("llama.rope.freq_base", 10000.5)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "héllo"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.5, 2.25])
    w.add_string("tokenizer.chat_template", "{{ messages }}")
    for name, array in tiny_llama_tensors().items():
        w.add_tensor(name, array)
    q8 = np.random.default_rng(1).integers(0, 255, (2, 34), dtype=np.uint8)
    w.add_tensor("blk.0.q8.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"{stem}-*-of-*.gguf"))}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("ggufs")
    out = {
        "q4": gguf_bytes(tmp, seed=1), "q8": gguf_bytes(tmp, seed=2),
        "bf16": gguf_bytes(tmp, seed=3),
        "mmproj": gguf_bytes(tmp, "clip", kv={"general.type": "mmproj"},
                             tensors={"v.patch_embd.weight": np.ones((4, 32), np.float16)}),
        "mmproj32": gguf_bytes(tmp, "clip", seed=9, kv={"general.type": "mmproj"},
                               tensors={"v.patch_embd.weight": np.ones((4, 32), np.float32)}),
    }
    for name, body in split_files(tmp, "Tiny-Q8_0").items():
        out[name] = body
    return out


def tiny_repo(data: dict[str, bytes], *, gated: bool = False, private: bool = False
              ) -> FakeRepo:
    return FakeRepo({
        "README.md": b"# tiny\n",
        "Tiny-Q4_K_M.gguf": data["q4"],
        "Tiny-Q8_0.gguf": data["q8"],
        "Tiny-BF16.gguf": data["bf16"],
    }, gated=gated, private=private)


# -------------------------------------------------------------------- fixture
@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: dict[str, bytes]
        ) -> Iterator[HubServer]:
    server = HubServer().start()
    server.repos["TheBloke/tiny-GGUF"] = tiny_repo(data)
    env = {
        "HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
        "MODELSCOPE_ENDPOINT": server.url, "MODELSCOPE_CACHE": str(tmp_path / "ms"),
        "MODELSCOPE_HOME": str(tmp_path / "mshome"), "MODELSCOPE_DOWNLOAD_INTRA_CLOUD": "false",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE",
                "HUGGINGFACE_HUB_CACHE", "MODELSCOPE_API_TOKEN", "MODELSCOPE_DOMAIN",
                "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    # What huggingface_hub read when it was imported: no telemetry call to the real hub,
    # no Xet, online, and never a developer's saved token.
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "tokens"))
    from modelscope_hub import _download
    monkeypatch.setattr(_download, "DOWNLOAD_INTEGRITY_RETRY_BACKOFF", 0.0)
    yield server
    server.stop()


def fetch(text: str, **kw: object) -> tuple[ImportedModel, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    name = ModelName.parse(text)
    importer = hub_for(name)
    assert importer is not None
    return importer.fetch(name, progress=events.append, **kw), events  # type: ignore[arg-type]


def hf_storage(tmp_path: Path, repo: str) -> Path:
    return tmp_path / "hf" / "hub" / ("models--" + repo.replace("/", "--"))


# ---------------------------------------------------------------- tag rules
def entries(*names: str) -> list[RepoEntry]:
    return [RepoEntry(n, 100 + i) for i, n in enumerate(names)]


def pick(tag: str, *names: str) -> str:
    return choose(entries(*names), tag, name="n", repo="u/r", hub="h").model.path


def test_quant_labels_come_from_file_names() -> None:
    assert quant_label("Llama-3.2-1B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_label("qwen2.5-coder-7b-instruct-q8_0.gguf") == "Q8_0"
    assert quant_label("Qwen3-30B-A3B-UD-Q4_K_XL-00001-of-00002.gguf") == "Q4_K_XL"
    assert quant_label("gemma.IQ3_M.gguf") == "IQ3_M"
    assert quant_label("mmproj-model-f16.gguf") == "F16"
    assert quant_label("model-BF16.gguf") == "BF16"
    assert quant_label("model.gguf") is None


def test_tags_choose_files_case_insensitively() -> None:
    repo = ("m-Q8_0.gguf", "m-Q4_K_M.gguf", "m-IQ3_M.gguf", "m-UD-Q4_K_XL.gguf", "m-BF16.gguf")
    assert pick("latest", *repo) == "m-Q4_K_M.gguf"
    assert pick("iq3_m", *repo) == "m-IQ3_M.gguf"
    assert pick("q8_0", *repo) == "m-Q8_0.gguf"
    assert pick("m-BF16.gguf", *repo) == "m-BF16.gguf"
    assert pick("M-bf16", *repo) == "m-BF16.gguf"
    assert pick("UD-Q4_K_XL", *repo) == "m-UD-Q4_K_XL.gguf"
    # No Q4_K_M: the preference list, then the smallest quantized file, then the rest.
    assert pick("latest", "m-Q8_0.gguf", "m-Q5_K_M.gguf", "m-Q4_K_S.gguf") == "m-Q4_K_S.gguf"
    assert pick("latest", "m-Q3_K_L.gguf", "m-Q2_K.gguf", "m-F16.gguf") == "m-Q3_K_L.gguf"
    assert pick("latest", "m-F32.gguf", "m-F16.gguf") == "m-F32.gguf"
    # A top-level file wins over one in a folder.
    assert pick("Q4_K_M", "sub/m-Q4_K_M.gguf", "m-Q4_K_M.gguf") == "m-Q4_K_M.gguf"


def test_no_match_lists_the_quantizations() -> None:
    with pytest.raises(ModelNotFoundError) as err:
        pick("Q3_K_S", "m-Q8_0.gguf", "m-Q4_K_M.gguf", "mmproj-F16.gguf")
    assert str(err.value) == ('model "n" not found: no GGUF file in u/r matches the tag '
                              '"Q3_K_S"; available quantizations: Q4_K_M, Q8_0')
    with pytest.raises(ModelNotFoundError, match="has no GGUF files"):
        pick("latest", "README.md", "mmproj-F16.gguf")


def test_split_sets_projectors_and_overrides_in_a_listing() -> None:
    listing = entries("Q8_0/m-Q8_0-00002-of-00002.gguf", "Q8_0/m-Q8_0-00001-of-00002.gguf",
                      "m-Q4_K_M.gguf", "mmproj-F32.gguf", "mmproj-F16.gguf", "template",
                      "params", "m.imatrix.gguf")
    sel = choose(listing, "Q8_0", name="n", repo="u/r", hub="h")
    assert [e.path for e in sel.model.entries] == ["Q8_0/m-Q8_0-00001-of-00002.gguf",
                                                   "Q8_0/m-Q8_0-00002-of-00002.gguf"]
    assert sel.projector is not None and sel.projector.path == "mmproj-F16.gguf"
    assert sorted(sel.overrides) == ["params", "template"]
    with pytest.raises(HubError, match=r"lacks part\(s\) 2 of 2"):
        choose(entries("m-Q8_0-00001-of-00002.gguf"), "Q8_0", name="n", repo="u/r", hub="h")


def test_hub_for_routes_by_host() -> None:
    for text in ("hf.co/u/r", "huggingface.co/u/r:Q8_0", "HF.co/u/r"):
        assert type(hub_for(ModelName.parse(text))).__name__ == "HuggingFaceImporter"
    for text in ("modelscope.cn/u/r", "www.modelscope.cn/u/r:q4_k_m"):
        assert type(hub_for(ModelName.parse(text))).__name__ == "ModelScopeImporter"
    assert hub_for(ModelName.parse("llama3.2")) is None
    # The host is kept as written: that is where the manifest goes.
    assert ModelName.parse("huggingface.co/u/r:Q4_K_M").filepath_parts()[0] == "huggingface.co"


# ------------------------------------------------------------- Hugging Face
def test_hf_download_is_verified_and_byte_identical(hub: HubServer, tmp_path: Path,
                                                    data: dict[str, bytes]) -> None:
    result, events = fetch("hf.co/TheBloke/tiny-GGUF")
    (model,) = result.files
    assert model.role == MODEL and model.path.read_bytes() == data["q4"]
    assert model.sha256 == sha(data["q4"])
    assert (result.repo, result.revision, result.filenames) == (
        "TheBloke/tiny-GGUF", COMMIT, ("Tiny-Q4_K_M.gguf",))
    assert result.source == "hf.co/TheBloke/tiny-GGUF:latest" and result.temporary == ()
    # The client's cache layout: a snapshot link at the commit to a blob named by sha256.
    storage = hf_storage(tmp_path, "TheBloke/tiny-GGUF")
    link = storage / "snapshots" / COMMIT / "Tiny-Q4_K_M.gguf"
    assert link.is_symlink() and link.resolve() == model.path == storage / "blobs" / sha(data["q4"])
    assert (storage / "refs" / "main").read_text() == COMMIT
    pulls = [e for e in events if e.status == f"pulling {sha(data['q4'])[:12]}"]
    assert pulls and pulls[-1].completed == pulls[-1].total == len(data["q4"])
    assert pulls[-1].digest == f"sha256:{sha(data['q4'])}"
    assert any(e.status == "verifying sha256 digest" for e in events)
    # A second fetch uses the cache: only the listing goes to the hub.
    before = len(hub.log)
    again, _ = fetch("huggingface.co/TheBloke/tiny-GGUF:q4_k_m")
    assert again.files[0].path == model.path
    assert [r["path"] for r in hub.log[before:]] == ["/api/models/TheBloke/tiny-GGUF"]


def test_imported_files_build_a_model_whose_layer_is_the_hub_file(
        hub: HubServer, models_dir: Path, tmp_path: Path, data: dict[str, bytes]) -> None:
    """What build will do with an import (wired by build/api): the model layer's digest
    is the hub's sha256 and the manifest lands under the host as written."""
    from modelkit.api import create

    result, _ = fetch("huggingface.co/TheBloke/tiny-GGUF:Q8_0")
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {result.files[0].path}\n")
    created = create(result.source, modelfile)
    assert str(created.manifest.layers[0].digest) == f"sha256:{sha(data['q8'])}"
    assert (models_dir / "manifests/huggingface.co/TheBloke/tiny-GGUF/Q8_0").is_file()


def test_hf_projector_and_repo_overrides(hub: HubServer, data: dict[str, bytes]) -> None:
    repo = tiny_repo(data)
    repo.files.update({"mmproj-Tiny-F32.gguf": data["mmproj32"],
                       "mmproj-Tiny-F16.gguf": data["mmproj"], "template": TEMPLATE.encode(),
                       "system": b"You are tiny.",
                       "params": b'{"stop": ["</s>"], "temperature": 0.5}'})
    hub.repos["ggml-org/tiny-vision-GGUF"] = repo
    result, _ = fetch("hf.co/ggml-org/tiny-vision-GGUF:Q8_0")
    model, projector = result.files
    assert (model.role, projector.role) == (MODEL, PROJECTOR)
    assert model.path.read_bytes() == data["q8"]
    assert projector.path.read_bytes() == data["mmproj"]
    assert projector.sha256 == sha(data["mmproj"])
    assert result.filenames == ("Tiny-Q8_0.gguf", "mmproj-Tiny-F16.gguf")
    assert (result.template, result.system, result.params) == (
        TEMPLATE, "You are tiny.", {"stop": ["</s>"], "temperature": 0.5})
    assert result.parameter_pairs() == (("stop", "</s>"), ("temperature", "0.5"))


def test_hf_split_gguf_is_merged(hub: HubServer, data: dict[str, bytes],
                                 tmp_path: Path) -> None:
    shards = {k: v for k, v in data.items() if "-of-" in k}
    assert len(shards) == 3
    hub.repos["TheBloke/split-GGUF"] = FakeRepo({f"Q8_0/{k}": v for k, v in shards.items()})
    result, _ = fetch("hf.co/TheBloke/split-GGUF:Q8_0")
    (model,) = result.files
    assert result.temporary == () and model.path == model.shards[0]
    assert result.filenames == tuple(f"Q8_0/{k}" for k in sorted(shards))
    cached = [hf_storage(tmp_path, "TheBloke/split-GGUF") / "snapshots" / COMMIT / "Q8_0" / k
              for k in sorted(shards)]
    assert [p.resolve() for p in model.shards] == [p.resolve() for p in cached]
    merged = tmp_path / "merged.gguf"
    info = merge(model.shards, merged)
    assert_merged(merged, cached)
    assert info == read_gguf(merged)  # described without reading it back


def assert_merged(merged: Path, shards: list[Path]) -> None:
    """One valid GGUF: part 1's metadata minus split.*, every tensor byte-identical."""
    out = read_gguf(merged)
    parts = [read_gguf(p) for p in shards]
    want = {k: v for k, v in parts[0].metadata.items() if not k.startswith("split.")}
    assert list(out.metadata.items()) == list(want.items())
    assert out.metadata_types == {k: parts[0].metadata_types[k] for k in want}
    tensors = [(p, t) for p in parts for t in p.tensors]
    assert [t.name for t in out.tensors] == [t.name for _, t in tensors]
    blob = merged.read_bytes()
    for got, (part, t) in zip(out.tensors, tensors, strict=True):
        assert (got.type, got.shape) == (t.type, t.shape)
        src = part.path.read_bytes()[t.offset:t.offset + t.n_bytes]
        assert blob[got.offset:got.offset + got.n_bytes] == src


def test_hf_tampered_file_is_rejected(hub: HubServer, tmp_path: Path,
                                      data: dict[str, bytes]) -> None:
    hub.tamper.add("TheBloke/tiny-GGUF/Tiny-Q8_0.gguf")
    with pytest.raises(DigestError) as err:
        fetch("hf.co/TheBloke/tiny-GGUF:Q8_0")
    message = str(err.value)
    assert "\n" not in message and "Tiny-Q8_0.gguf" in message
    tampered = data["q8"][:-1] + bytes([data["q8"][-1] ^ 0xFF])
    assert f"sha256:{sha(data['q8'])}" in message and f"sha256:{sha(tampered)}" in message
    # Nothing kept: no blob, no partial file, no snapshot link.
    storage = hf_storage(tmp_path, "TheBloke/tiny-GGUF")
    assert not any((storage / "blobs").iterdir())
    assert not (storage / "snapshots" / COMMIT / "Tiny-Q8_0.gguf").exists()


def test_hf_offline_builds_from_the_cache(hub: HubServer, monkeypatch: pytest.MonkeyPatch,
                                          data: dict[str, bytes]) -> None:
    online, _ = fetch("hf.co/TheBloke/tiny-GGUF:Q8_0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.log)
    offline, _ = fetch("hf.co/TheBloke/tiny-GGUF:Q8_0")
    assert len(hub.log) == before  # not one request
    assert offline.files == online.files and offline.revision == COMMIT
    assert offline.files[0].sha256 == sha(data["q8"])
    # latest offline: among the cached files (only Q8_0 here).
    latest, _ = fetch("hf.co/TheBloke/tiny-GGUF")
    assert latest.filenames == ("Tiny-Q8_0.gguf",)
    with pytest.raises(ModelNotFoundError, match=r"available quantizations: Q8_0 \(offline"):
        fetch("hf.co/TheBloke/tiny-GGUF:Q4_K_M")
    with pytest.raises(HubError, match="not in the Hugging Face cache"):
        fetch("hf.co/TheBloke/other-GGUF")
    assert len(hub.log) == before


def test_hf_missing_private_and_gated_repos(hub: HubServer, monkeypatch: pytest.MonkeyPatch,
                                            data: dict[str, bytes]) -> None:
    with pytest.raises(ModelNotFoundError) as missing:
        fetch("hf.co/nobody/missing-GGUF")
    host = hub.url.removeprefix("http://")
    assert str(missing.value) == ('model "hf.co/nobody/missing-GGUF:latest" not found: '
                                  f"repository nobody/missing-GGUF does not exist on {host}")
    hub.repos["me/private-GGUF"] = tiny_repo(data, private=True)
    with pytest.raises(UnauthorizedError, match="set HF_TOKEN") as private:
        fetch("hf.co/me/private-GGUF")
    assert "HTTP 401" in str(private.value) and "\n" not in str(private.value)
    hub.repos["meta/gated-GGUF"] = tiny_repo(data, gated=True)
    with pytest.raises(UnauthorizedError, match="is gated: accept its conditions"):
        fetch("hf.co/meta/gated-GGUF:Q8_0")
    with pytest.raises(ModelNotFoundError, match="available quantizations: BF16, Q4_K_M, Q8_0"):
        fetch("hf.co/TheBloke/tiny-GGUF:Q2_K")
    # HF_TOKEN, read at call time, opens both.
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert fetch("hf.co/me/private-GGUF")[0].files[0].path.read_bytes() == data["q4"]
    assert fetch("hf.co/meta/gated-GGUF:Q8_0")[0].files[0].path.read_bytes() == data["q8"]
    assert hub.requests("GET", "/meta/gated-GGUF/resolve/")[-1]["auth"] == f"Bearer {TOKEN}"


def test_hf_token_never_goes_to_the_cdn(hub: HubServer, monkeypatch: pytest.MonkeyPatch,
                                        data: dict[str, bytes]) -> None:
    hub.repos["me/private-GGUF"] = tiny_repo(data, private=True)
    hub.cdn = True
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result, _ = fetch("hf.co/me/private-GGUF:Q8_0")
    assert result.files[0].path.read_bytes() == data["q8"]
    (cdn_get,) = hub.requests("GET", "/cdn/")
    assert cdn_get["auth"] is None
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in hub.requests(contains="/resolve/"))


def test_hf_unreachable_hub_is_a_hub_error(hub: HubServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    hub.stop()
    with pytest.raises(HubError, match="cannot reach http://127.0.0.1") as err:
        fetch("hf.co/TheBloke/tiny-GGUF")
    assert "--offline builds from the Hugging Face cache" in str(err.value)
    assert "HF_HUB_OFFLINE" not in str(err.value)


# ------------------------------------------------------- resume across runs
def big_gguf(tmp: Path, size: int) -> bytes:
    n = size // 4
    return gguf_bytes(tmp, "llama", tensors={"big.weight": np.arange(n, dtype=np.float32)})


def kill_mid_download(name: str, partial: Path, at_least: int) -> int:
    """Run a fetch in another process, kill -9 it once ``partial`` holds ``at_least``
    bytes; return the partial file's size."""
    script = ("import sys; from modelkit.importers.hubs import hub_for; "
              "from modelkit.names import ModelName; n = ModelName.parse(sys.argv[1]); "
              "hub_for(n).fetch(n)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script, name], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    try:
        while not (partial.exists() and partial.stat().st_size >= at_least):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    return partial.stat().st_size


def test_hf_interrupted_download_resumes_in_the_next_run(hub: HubServer, tmp_path: Path
                                                         ) -> None:
    body = big_gguf(tmp_path, 11 * MiB)
    hub.repos["TheBloke/big-GGUF"] = FakeRepo({"big-Q4_K_M.gguf": body})
    # The first GET sends 10.5 MiB and stalls; the client has written its first 10 MiB.
    hub.stall["TheBloke/big-GGUF/big-Q4_K_M.gguf"] = 10 * MiB + MiB // 2
    partial = hf_storage(tmp_path, "TheBloke/big-GGUF") / "blobs" / f"{sha(body)}.incomplete"
    done = kill_mid_download("hf.co/TheBloke/big-GGUF", partial, 10 * MiB)
    hub.release.set()
    result, _ = fetch("hf.co/TheBloke/big-GGUF")
    gets = hub.requests("GET", "/TheBloke/big-GGUF/resolve/")
    assert [g["range"] for g in gets] == [None, f"bytes={done}-"] and done == 10 * MiB
    assert gets[-1]["status"] == 206
    assert result.files[0].path.read_bytes() == body and not partial.exists()


def test_modelscope_interrupted_download_resumes_in_the_next_run(hub: HubServer,
                                                                 tmp_path: Path) -> None:
    body = big_gguf(tmp_path, 3 * MiB)
    hub.repos["Qwen/big-GGUF"] = FakeRepo({"big-Q4_K_M.gguf": body})
    hub.stall["Qwen/big-GGUF/big-Q4_K_M.gguf"] = 2 * MiB + MiB // 2
    partial = (tmp_path / "ms" / "models" / "Qwen--big-GGUF" / "snapshots" / "master"
               / "big-Q4_K_M.gguf.incomplete")
    done = kill_mid_download("modelscope.cn/Qwen/big-GGUF", partial, 2 * MiB)
    hub.release.set()
    result, _ = fetch("modelscope.cn/Qwen/big-GGUF")
    gets = hub.requests("GET", "/api/v1/models/Qwen/big-GGUF/repo")
    gets = [g for g in gets if "FilePath" in g["query"]]
    assert [g["range"] for g in gets] == [None, f"bytes={done}-"] and done >= 2 * MiB
    assert result.files[0].path.read_bytes() == body


# --------------------------------------------------------------- ModelScope
def test_modelscope_download_listing_and_revision(hub: HubServer, tmp_path: Path,
                                                  data: dict[str, bytes]) -> None:
    repo = tiny_repo(data)
    repo.files.update({"mmproj-Tiny-F16.gguf": data["mmproj"], "system": b"Be brief."})
    hub.repos["Qwen/tiny-GGUF"] = repo
    result, events = fetch("modelscope.cn/Qwen/tiny-GGUF:q8_0")
    model, projector = result.files
    assert model.path.read_bytes() == data["q8"] and model.sha256 == sha(data["q8"])
    assert projector.role == PROJECTOR and projector.path.read_bytes() == data["mmproj"]
    assert (result.revision, result.system) == (COMMIT, "Be brief.")
    assert model.path == (tmp_path / "ms" / "models" / "Qwen--tiny-GGUF" / "snapshots"
                          / "master" / "Tiny-Q8_0.gguf")
    assert events[-1].status.startswith("pulling ") or any(
        e.status == f"pulling {sha(data['q8'])[:12]}" and e.completed == len(data["q8"])
        for e in events)
    files = [r for r in hub.requests("GET", "/repo") if "FilePath" in r["query"]]
    assert all("Revision=master" in r["query"] for r in files)
    assert not hub.requests(contains="/revisions")  # the branch is always given
    latest, _ = fetch("www.modelscope.cn/Qwen/tiny-GGUF")
    assert latest.filenames[0] == "Tiny-Q4_K_M.gguf"


def test_modelscope_tampered_file_is_rejected(hub: HubServer, tmp_path: Path,
                                              data: dict[str, bytes]) -> None:
    hub.repos["Qwen/tiny-GGUF"] = tiny_repo(data)
    hub.tamper.add("Qwen/tiny-GGUF/Tiny-Q4_K_M.gguf")
    with pytest.raises(DigestError) as err:
        fetch("modelscope.cn/Qwen/tiny-GGUF")
    message = str(err.value)
    assert "Tiny-Q4_K_M.gguf" in message and f"sha256:{sha(data['q4'])}" in message
    assert "the download has sha256:" in message and "\n" not in message
    folder = tmp_path / "ms" / "models" / "Qwen--tiny-GGUF" / "snapshots" / "master"
    assert not folder.exists() or not any(folder.iterdir())


def test_modelscope_offline_missing_and_private(hub: HubServer, data: dict[str, bytes],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    hub.repos["Qwen/tiny-GGUF"] = tiny_repo(data)
    online, _ = fetch("modelscope.cn/Qwen/tiny-GGUF")
    before = len(hub.log)
    offline, _ = fetch("modelscope.cn/Qwen/tiny-GGUF", offline=True)
    assert len(hub.log) == before and offline.files[0].path == online.files[0].path
    with pytest.raises(HubError, match="not in the ModelScope cache"):
        fetch("modelscope.cn/Qwen/other-GGUF", offline=True)
    with pytest.raises(ModelNotFoundError) as missing:
        fetch("modelscope.cn/nobody/missing-GGUF")
    assert str(missing.value).startswith('model "modelscope.cn/nobody/missing-GGUF:latest" '
                                         "not found: repository nobody/missing-GGUF")
    hub.repos["me/private-GGUF"] = tiny_repo(data, private=True)
    with pytest.raises(UnauthorizedError, match="MODELSCOPE_API_TOKEN"):
        fetch("modelscope.cn/me/private-GGUF")
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", TOKEN)
    assert fetch("modelscope.cn/me/private-GGUF")[0].files[0].path.read_bytes() == data["q4"]


# ---------------------------------------------------------- local and merge
def test_local_folder_merges_splits_and_finds_projectors(tmp_path: Path,
                                                         data: dict[str, bytes]) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    shards = sorted(k for k in data if "-of-" in k)
    for name in shards:
        (folder / name).write_bytes(data[name])
    (folder / "mmproj-F16.gguf").write_bytes(data["mmproj"])
    result = import_local(folder)
    model, projector = result.files
    assert (model.role, projector.role) == (MODEL, PROJECTOR)
    assert model.shards == tuple(folder / n for n in shards) and projector.shards == ()
    assert result.temporary == ()
    # One shard named alone stands for its whole set.
    single = import_local(folder / shards[1])
    assert single.filenames == tuple(shards) and single.files == (model,)
    (folder / shards[2]).unlink()
    with pytest.raises(GGUFError, match=r"lacks part\(s\) 3 of 3"):
        import_local(folder)


def _count_header_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every header parse from now on, by file name; gguf's reader may not be used."""
    import modelkit.gguf_file.reader as reader

    reads: list[str] = []
    parse = reader.read_gguf_from

    def counted(read: Any, size: int, source: Any) -> Any:
        reads.append(Path(source).name)
        return parse(read, size, source)

    def refused(*_args: object, **_kw: object) -> None:
        raise AssertionError("gguf.GGUFReader used")

    monkeypatch.setattr(reader, "read_gguf_from", counted)
    monkeypatch.setattr(gguf, "GGUFReader", refused)
    return reads


@pytest.mark.parametrize("quantize", [None, "q8_0"])
def test_split_folder_is_merged_into_the_store_reading_each_header_once(
        tmp_path: Path, models_dir: Path, data: dict[str, bytes],
        monkeypatch: pytest.MonkeyPatch, quantize: str | None) -> None:
    from modelkit.api import create, show
    from modelkit.store import Store

    folder = tmp_path / "model"
    folder.mkdir()
    shards = sorted(k for k in data if "-of-" in k)
    for name in shards:
        (folder / name).write_bytes(data[name])
    (tmp_path / "Modelfile").write_text("FROM ./model\n")
    reads = _count_header_reads(monkeypatch)
    result = create("split", tmp_path / "Modelfile", quantize=quantize)
    assert sorted(reads) == shards  # each shard's header once; nothing read back
    blob = Store(models_dir).blob_path(result.manifest.layers[0].digest)
    merge([folder / n for n in shards], tmp_path / "merged.gguf")
    if quantize is None:
        assert blob.read_bytes() == (tmp_path / "merged.gguf").read_bytes()
    else:  # quantized from the parts where they are: as from the merged file
        quantize_file(tmp_path / "merged.gguf", tmp_path / "q.gguf", quantize)
        assert blob.read_bytes() == (tmp_path / "q.gguf").read_bytes()
        assert show("split").quantization == "Q8_0"
    # Nothing but the blobs themselves: no merged or scratch file left behind.
    assert [p.name for p in blob.parent.iterdir() if not p.name.startswith("sha256-")] == []


@pytest.mark.parametrize("kw", [{"workers": 1, "chunk_rows": 3},
                                {"workers": 2, "chunk_rows": 5},
                                {"workers": 2, "use_threads": True}])
def test_requantize_reads_split_parts_where_they_are(
        tmp_path: Path, data: dict[str, bytes], kw: dict[str, Any]) -> None:
    paths = []
    for name in sorted(k for k in data if "-of-" in k):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data[name])
    merge(paths, tmp_path / "merged.gguf")
    want = quantize_file(tmp_path / "merged.gguf", tmp_path / "want.gguf", "q4_0", **kw)
    got = quantize_file([read_gguf(p) for p in paths], tmp_path / "got.gguf", "q4_0", **kw)
    assert (tmp_path / "got.gguf").read_bytes() == (tmp_path / "want.gguf").read_bytes()
    assert got.gguf_info(tmp_path / "got.gguf") == read_gguf(tmp_path / "got.gguf")
    assert got.n_quantized == want.n_quantized > 0


def test_create_q_reads_the_source_header_once(
        tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelkit.api import create, show

    (tmp_path / "m.gguf").write_bytes(gguf_bytes(tmp_path, seed=4,
                                                 kv={"llama.block_count": 1}))
    (tmp_path / "Modelfile").write_text("FROM ./m.gguf\n")
    reads = _count_header_reads(monkeypatch)
    create("q", tmp_path / "Modelfile", quantize="q8_0")
    assert reads == ["m.gguf"]
    assert show("q").quantization == "Q8_0"


def test_merge_refuses_shards_that_do_not_belong(tmp_path: Path,
                                                 data: dict[str, bytes]) -> None:
    paths = []
    for name in sorted(k for k in data if "-of-" in k):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data[name])
    with pytest.raises(GGUFError, match="split.no is 1, expected 0"):
        merge([paths[1], paths[0], paths[2]], tmp_path / "out.gguf")
    with pytest.raises(GGUFError, match="split.count is 3, expected 2"):
        merge(paths[:2], tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------ through the API and the CLI
def test_cli_pull_stores_the_hub_file_under_the_hub_name(
        hub: HubServer, models_dir: Path, data: dict[str, bytes],
        capsys: pytest.CaptureFixture[str]) -> None:
    from modelkit.cli import main
    from modelkit.manifest import ModelConfig
    from modelkit.store import Store

    assert main(["pull", "hf.co/TheBloke/tiny-GGUF:Q8_0", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"status": "success"} in records
    path = models_dir / "manifests/hf.co/TheBloke/tiny-GGUF/Q8_0"
    assert path.is_file()
    store = Store(models_dir)
    (model,) = store.list_models()
    assert str(model.manifest.layers[0].digest) == f"sha256:{sha(data['q8'])}"
    config = ModelConfig.from_bytes(store.read_blob(model.manifest.config.digest))
    source = dict(config.extra)["source"]
    assert source["repo"] == "TheBloke/tiny-GGUF" and len(source["revision"]) == 40
    assert source["files"] == ["Tiny-Q8_0.gguf"]
    # Pulling again downloads nothing and keeps the same manifest.
    before = len(hub.log)
    assert main(["pull", "hf.co/TheBloke/tiny-GGUF:Q8_0"]) == 0
    assert not [r for r in hub.log[before:] if "resolve" in r["path"] and r["method"] == "GET"]


def test_from_a_hub_name_pulls_the_base_then_builds_on_it(
        hub: HubServer, models_dir: Path, tmp_path: Path, data: dict[str, bytes]) -> None:
    from modelkit.api import create, list_models

    (tmp_path / "Modelfile").write_text("FROM hf.co/TheBloke/tiny-GGUF\nSYSTEM hi\n")
    result = create("mine", tmp_path / "Modelfile")
    assert str(result.manifest.layers[0].digest) == f"sha256:{sha(data['q4'])}"  # latest
    assert result.manifest.layers[0].from_ == "hf.co/TheBloke/tiny-GGUF:latest"
    assert sorted(m.name for m in list_models()) == ["hf.co/TheBloke/tiny-GGUF:latest",
                                                     "mine:latest"]


def test_pull_bf16_with_quantize_and_offline_rebuild(
        hub: HubServer, models_dir: Path, tmp_path: Path) -> None:
    from modelkit.api import pull, show

    f16 = gguf_bytes(tmp_path, seed=4, kv={"llama.block_count": 1})
    hub.repos["u/full-GGUF"] = FakeRepo({"Full-F16.gguf": f16})
    result = pull("hf.co/u/full-GGUF:F16", quantize="q8_0")
    assert show("hf.co/u/full-GGUF:F16").quantization == "Q8_0"
    assert str(result.manifest.layers[0].digest) != f"sha256:{sha(f16)}"
    # From the client's cache alone, no request at all.
    before = len(hub.log)
    again = pull("hf.co/u/full-GGUF:F16", quantize="q8_0", offline=True)
    assert again.manifest.layers == result.manifest.layers
    assert hub.log[before:] == []


def test_pull_from_modelscope_and_missing_repos(
        hub: HubServer, models_dir: Path, data: dict[str, bytes],
        capsys: pytest.CaptureFixture[str]) -> None:
    from modelkit.cli import main

    hub.repos["Qwen/tiny-GGUF"] = tiny_repo(data)
    assert main(["pull", "modelscope.cn/Qwen/tiny-GGUF:q8_0"]) == 0
    assert (models_dir / "manifests/modelscope.cn/Qwen/tiny-GGUF/q8_0").is_file()
    capsys.readouterr()
    assert main(["pull", "hf.co/nobody/nothing"]) == 4
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1
    assert main(["pull", "hf.co/TheBloke/tiny-GGUF:IQ1_XXS"]) == 4
    assert "Q4_K_M" in capsys.readouterr().err  # lists what the repo has


def test_show_modelfile_of_a_hub_import_rebuilds_its_layers(
        hub: HubServer, models_dir: Path, tmp_path: Path, data: dict[str, bytes],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The printed Modelfile re-creates the pulled model's layers, Jinja chat template and
    all; the config differs only by the hub provenance (the copy was not pulled)."""
    from modelkit.cli import main
    from modelkit.manifest import ModelConfig
    from modelkit.store import Store

    jinja = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
    hub.repos["u/chat-GGUF"] = FakeRepo({"Chat-Q8_0.gguf": gguf_bytes(
        tmp_path, seed=6, kv={"tokenizer.chat_template": jinja}),
        "params": b'{"stop": ["[user]"], "temperature": 0.25}'})
    store = Store(models_dir)
    for name in ("hf.co/u/chat-GGUF:Q8_0", "hf.co/TheBloke/tiny-GGUF:Q8_0"):
        assert main(["pull", name]) == 0
        capsys.readouterr()
        assert main(["show", name, "--modelfile"]) == 0
        text = capsys.readouterr().out
        assert "{%" not in text
        (tmp_path / "Modelfile").write_text(text)
        assert main(["create", "copy", "-f", str(tmp_path / "Modelfile")]) == 0
        first = store.get(ModelName.parse(name)).manifest
        second = store.get(ModelName.parse("copy")).manifest
        assert second.layers == first.layers
        configs = [ModelConfig.from_bytes(store.read_blob(m.config.digest))
                   for m in (first, second)]
        assert configs[1] == replace(configs[0], extra=())


def test_cli_pull_prints_ollamas_status_lines_and_nothing_from_the_clients(
        hub: HubServer, models_dir: Path, data: dict[str, bytes]) -> None:
    """The real command, as a child process: Ollama's pull lines on stdout (one
    ``pulling <12 hex>`` per layer and for the config), nothing at all on stderr (no
    client logger, warning or tqdm bar), the first time and from the cache."""
    from modelkit.store import Store

    hub.repos["Qwen/tiny-GGUF"] = tiny_repo(data)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MODELKIT_DEBUG", None)
    for name in ("hf.co/TheBloke/tiny-GGUF:Q8_0", "modelscope.cn/Qwen/tiny-GGUF:q8_0",
                 "hf.co/TheBloke/tiny-GGUF:Q8_0"):
        proc = subprocess.run([sys.executable, "-m", "modelkit", "pull", name],
                              capture_output=True, text=True, env=env, timeout=120)
        assert (proc.returncode, proc.stderr) == (0, "")
        lines = proc.stdout.splitlines()
        manifest = Store(models_dir).get(ModelName.parse(name)).manifest
        pulled = [f"pulling {x.digest.short()}" for x in (*manifest.layers, manifest.config)]
        assert lines[0] == "pulling manifest"
        assert lines[1].startswith("using Tiny-Q8_0.gguf from ")
        assert [line for line in lines if line.startswith("pulling ")][1:] == pulled
        assert lines.count("verifying sha256 digest") == 1
        assert lines[-2:] == ["writing manifest", "success"]
        assert len(lines) == 2 + len(pulled) + 3, lines
