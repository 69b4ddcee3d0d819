"""Everyday trust: a damaged store entry, verify, linked blobs, the digest cache."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from gguf.constants import GGUFValueType
from test_cli import mk, sample

from conftest import REPO, SAMPLE_DIR, write_gguf
from modelkit.build import Builder
from modelkit.cli import EXIT_CODES, main
from modelkit.errors import InvalidNameError
from modelkit.names import Digest, ModelName
from modelkit.store import BlobWriter, Store
from modelkit.store.digests import CACHE_NAME, DigestCache

__all__ = ["sample"]  # a fixture, used by name


def _damage(models_dir: Path, name: str, data: bytes) -> Path:
    path = models_dir / "manifests" / "registry.ollama.ai" / "library" / name / "latest"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data", [b"", b"{garbage"])
def test_list_skips_a_damaged_manifest_and_names_it(models_dir: Path, sample: str, data: bytes,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = _damage(models_dir, "broken", data)
    code, out, err = mk(capsys, "list")
    assert code == 0
    assert "liang-ai:latest" in out and "broken" not in out
    assert str(bad) in err and "modelkit rm broken" in err
    code, out, err = mk(capsys, "list", "--json")
    assert code == 0 and [m["name"] for m in json.loads(out)] == ["liang-ai:latest"]


def test_rm_removes_a_damaged_entry(models_dir: Path, sample: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = _damage(models_dir, "broken", b"")
    code, out, err = mk(capsys, "rm", "broken")
    assert (code, out, err) == (0, "deleted 'broken'\n", "")
    assert not bad.exists() and not bad.parent.exists()
    code, out, err = mk(capsys, "list")
    assert code == 0 and err == "" and "liang-ai" in out


def test_prune_keeps_blobs_a_damaged_manifest_might_use(models_dir: Path, sample: str,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    store = Store(models_dir)
    orphan = store.write_blob(b"orphan")
    (models_dir / "blobs" / ".tmp-dead").write_bytes(b"half")
    bad = _damage(models_dir, "broken", b"{")
    code, out, err = mk(capsys, "prune", "--dry-run")
    assert code == 0
    assert "would keep 1 unreferenced blob(s)" in err and str(bad) in err
    code, out, err = mk(capsys, "prune", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["blobs"] == [] and plan["kept"] == [orphan.digest.filename]
    assert plan["damaged"] == [str(bad)] and "kept 1 unreferenced" in err
    assert store.has_blob(orphan.digest)  # kept
    assert not (models_dir / "blobs" / ".tmp-dead").exists()  # temp files still go
    # Removing the damaged entry makes the blob prunable again.
    assert mk(capsys, "rm", "broken")[0] == 0
    code, out, err = mk(capsys, "prune")
    assert code == 0 and err == "" and "removed 1 file(s)" in out
    assert not store.has_blob(orphan.digest)
    assert mk(capsys, "show", sample)[0] == 0


def test_rm_of_a_good_model_beside_a_damaged_one_keeps_its_blobs(
        models_dir: Path, sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(models_dir)
    (stored,) = store.list_models()
    _damage(models_dir, "broken", b"")
    code, out, err = mk(capsys, "rm", sample)
    assert code == 0, err
    assert all(store.has_blob(layer.digest) for layer in stored.manifest.all_layers())


# ------------------------------------------------------------------------ verify
def test_verify_reports_missing_damaged_and_unreferenced_blobs(
        models_dir: Path, sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = mk(capsys, "verify")
    assert code == 0 and err == "" and out.endswith("all intact\n")
    store = Store(models_dir)
    (stored,) = store.list_models()
    model = stored.manifest.layers[0]
    system = next(la for la in stored.manifest.layers if la.media_type.endswith(".system"))
    orphan = store.write_blob(b"orphan")
    blob = store.blob_path(model.digest)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1  # one flipped bit, same size
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    store.blob_path(system.digest).unlink()
    code, out, err = mk(capsys, "verify", "--json")
    assert code == 6 and err.startswith("Error: 2 blob(s) missing or damaged")
    report = json.loads(out)
    assert not report["ok"]
    assert [b["digest"] for b in report["missing"]] == [str(system.digest)]
    assert [(b["digest"], b["models"]) for b in report["damaged"]] == [
        (str(model.digest), ["liang-ai:latest"])]
    assert report["damaged"][0]["problem"].startswith("content hashes to sha256:")
    assert report["unreferenced"] == [str(store.blob_path(orphan.digest))]
    # Naming the model checks only its blobs: the orphan is not mentioned.
    code, out, err = mk(capsys, "verify", sample)
    assert code == 6 and "orphan" not in out and str(orphan.digest) not in out
    assert f"damaged {blob}: content hashes to" in out and "(used by liang-ai:latest)" in out
    assert f"missing {store.blob_path(system.digest)}" in out


def test_verify_names_a_damaged_manifest_and_an_unknown_model(
        models_dir: Path, sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _damage(models_dir, "broken", b"")
    code, out, err = mk(capsys, "verify")
    assert code == 6 and f"damaged manifest {bad}" in out
    code, out, err = mk(capsys, "verify", "nosuch")
    assert code == 4 and err == 'Error: model "nosuch" not found\n'


# ------------------------------------------------------------------ linked blobs
def _modelfile_beside_copy(tmp_path: Path) -> tuple[Path, Path]:
    gguf = tmp_path / "src" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes((SAMPLE_DIR / "liang-ai.gguf").read_bytes())
    modelfile = gguf.parent / "Modelfile"
    modelfile.write_text("FROM ./model.gguf\n")
    return gguf, modelfile


def test_link_hard_shares_the_file_and_verify_notices_an_edit(
        models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gguf, modelfile = _modelfile_beside_copy(tmp_path)
    code, out, err = mk(capsys, "create", "m", "-f", str(modelfile), "--link=hard")
    assert code == 0, err
    assert "hard-linking file model.gguf" in out.splitlines()
    (stored,) = Store(models_dir).list_models()
    blob = Store(models_dir).blob_path(stored.manifest.layers[0].digest)
    assert blob.stat().st_ino == gguf.stat().st_ino
    with open(gguf, "r+b") as f:  # edit the source in place: the blob changes too
        f.seek(-1, 2)
        f.write(b"\xff")
    code, out, err = mk(capsys, "verify")
    assert code == 6 and f"damaged {blob}" in out


def test_link_reflinks_or_copies_never_hard_links(
        models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gguf, modelfile = _modelfile_beside_copy(tmp_path)
    code, out, err = mk(capsys, "create", "m", "-f", str(modelfile), "--link")
    assert code == 0, err
    lines = out.splitlines()
    assert ("reflinking file model.gguf" in lines) != ("copying file model.gguf" in lines)
    (stored,) = Store(models_dir).list_models()
    blob = Store(models_dir).blob_path(stored.manifest.layers[0].digest)
    assert blob.stat().st_ino != gguf.stat().st_ino and blob.stat().st_nlink == 1
    with open(gguf, "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\xff")
    assert mk(capsys, "verify")[0] == 0  # the stored model did not change


def test_import_file_falls_back_to_a_copy_without_reflink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 1000)
    store = Store(tmp_path / "models")
    methods: list[str] = []

    def no_reflink(*args: object) -> None:
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr("modelkit.store.fcntl.ioctl", no_reflink)
    written = store.import_file(src, link="reflink",
                                progress=lambda m, done, total: methods.append(m))
    assert set(methods) == {"copying"} and written.created
    assert store.blob_path(written.digest).stat().st_ino != src.stat().st_ino


# ------------------------------------------------------------------ digest cache
def test_recreating_from_an_unchanged_file_neither_reads_nor_copies_it(
        models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, modelfile = _modelfile_beside_copy(tmp_path)
    time.sleep(0.15)  # a file written this instant is never cached (timestamp granularity)
    code, out, _ = mk(capsys, "create", "m", "-f", str(modelfile))
    assert code == 0 and "copying file model.gguf" in out.splitlines()
    first = Store(models_dir).get(ModelName.parse("m")).manifest
    assert (models_dir / CACHE_NAME).is_file()

    def must_not_copy(*args: object, **kwargs: object) -> None:
        raise AssertionError("the unchanged file was copied again")

    monkeypatch.setattr(BlobWriter, "copy_from", must_not_copy)
    monkeypatch.setattr("modelkit.store.hash_file", must_not_copy)
    code, out, err = mk(capsys, "create", "m", "-f", str(modelfile))
    assert code == 0, err
    assert "model.gguf is unchanged and already stored" in out.splitlines()
    assert Store(models_dir).get(ModelName.parse("m")).manifest.digest == first.digest


def test_the_digest_cache_is_not_trusted_for_a_changed_file(
        models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gguf, modelfile = _modelfile_beside_copy(tmp_path)
    time.sleep(0.15)
    assert mk(capsys, "create", "m", "-f", str(modelfile))[0] == 0
    first = Store(models_dir).get(ModelName.parse("m")).manifest
    st = gguf.stat()
    with open(gguf, "r+b") as f:  # same size, and the old mtime put back
        f.seek(-1, 2)
        f.write(b"\xfe")
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (gguf.stat().st_size, gguf.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    code, out, err = mk(capsys, "create", "m", "-f", str(modelfile))
    assert code == 0, err
    assert "copying file model.gguf" in out.splitlines()
    again = Store(models_dir).get(ModelName.parse("m")).manifest
    assert again.layers[0].digest != first.layers[0].digest
    assert mk(capsys, "verify")[0] == 0


def test_the_digest_cache_records_only_files_that_settled(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    st = f.stat()
    cache = DigestCache(tmp_path / CACHE_NAME)
    digest = Digest("sha256", "0" * 64)
    # Modified within the settling margin before the read began: not recorded.
    assert not cache.record(st, st, st.st_mtime_ns + 1000, digest, f)
    assert cache.lookup(st) is None
    # Changed while read: not recorded.
    f.write_bytes(b"abd")
    assert not cache.record(st, f.stat(), st.st_mtime_ns + 10**10, digest, f)
    st = f.stat()
    assert cache.record(st, st, st.st_mtime_ns + 10**10, digest, f)
    assert cache.lookup(st) == digest
    # A damaged cache file is ignored, not an error.
    (tmp_path / CACHE_NAME).write_bytes(b"{not json")
    assert DigestCache(tmp_path / CACHE_NAME).lookup(st) is None


# ------------------------------------------------------------ everyday messages
def test_two_from_lines_naming_one_file_make_one_layer(
        models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gguf, modelfile = _modelfile_beside_copy(tmp_path)
    (tmp_path / "alias.gguf").symlink_to(gguf)
    modelfile.write_text(f"FROM ./model.gguf\nFROM ./model.gguf\nFROM {tmp_path / 'alias.gguf'}\n")
    code, _, err = mk(capsys, "create", "m", "-f", str(modelfile))
    assert code == 0, err
    manifest = Store(models_dir).get(ModelName.parse("m")).manifest
    digests = [str(layer.digest) for layer in manifest.layers]
    assert len(digests) == len(set(digests))
    assert sum(la.media_type.endswith(".model") for la in manifest.layers) == 1


def test_adapter_must_be_an_adapter_gguf(models_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    gguf, modelfile = _modelfile_beside_copy(tmp_path)
    modelfile.write_text("FROM ./model.gguf\nADAPTER ./model.gguf\n")
    code, _, err = mk(capsys, "create", "m", "-f", str(modelfile))
    assert code == 5
    assert err.startswith(f"Error: {gguf}: ADAPTER needs a LoRA adapter GGUF")
    assert not (models_dir / "manifests").exists()


def test_invalid_model_names_have_their_own_exit_code(models_dir: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    code, _, err = mk(capsys, "show", "bad/name/../x")
    assert code == 11 and err.startswith("Error: invalid model name")
    assert EXIT_CODES[0] == (InvalidNameError, 11)
    assert "11 invalid model name" in (REPO / "README.md").read_text().replace("\n", " ")


def test_create_without_a_modelfile_or_with_a_folder_says_so(
        models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    code, _, err = mk(capsys, "create", "x")
    assert code == 4 and err.startswith(f"Error: no Modelfile in {empty}: name one with -f")
    code, _, err = mk(capsys, "create", "x", "-f", str(empty) + "/")
    assert code == 4 and err.startswith(f"Error: {empty}: is a directory, not a Modelfile")


@pytest.mark.parametrize("text,where,message", [
    ("FROM {gguf}\nPARAMETER temperature hot\n", "2:23", "invalid float value [hot]"),
    ("FROM {gguf}\n\nPARAMETER gpu_layers 3\n", "3:22", "unknown parameter 'gpu_layers'"),
    ("FROM {gguf}\nTEMPLATE {{{{ .Prompt }}\n", "2:10", "template"),
    ("FROM {gguf}\nREQUIRES banana\n", "2:10", "requires must be a valid semver"),
    ("FROM {gguf}\nDRAFT {gguf}\n", "2:7", "DRAFT must not reference the same local path"),
    ('FROM {gguf}\nSYSTEM """hello\nworld\n', "2:8",
     'unexpected EOF (the """ opened here is never closed)'),
    ('FROM {gguf}\n\nSYSTEM "hi" there\n', "3:8",
     'unexpected EOF (the " opened here must close at the end of a line)'),
])
def test_modelfile_value_errors_name_the_file_and_line(
        models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        text: str, where: str, message: str) -> None:
    gguf, _ = _modelfile_beside_copy(tmp_path)
    modelfile = tmp_path / "my.Modelfile"
    modelfile.write_text(text.format(gguf=gguf))
    code, _, err = mk(capsys, "create", "m", "-f", str(modelfile))
    assert code == 3
    assert err.startswith(f"Error: {modelfile}:{where}: "), err
    assert message in err


def test_show_verbose_prints_float32_metadata_as_ollama(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    path = write_gguf(tmp_path / "f.gguf", "llama", kv={
        "llama.attention.layer_norm_rms_epsilon": 1e-6, "llama.rope.freq_base": 1e6,
        "llama.rope.scale": 0.1, "test.values": (
            [0.1, 2.5], GGUFValueType.ARRAY)})
    code, out, err = mk(capsys, "show", str(path), "-v")
    assert code == 0, err
    rows = {line.split()[0]: line.split(None, 1)[1].strip() for line in out.splitlines()
            if line.startswith("    ") and len(line.split()) > 1}
    assert rows["llama.attention.layer_norm_rms_epsilon"] == "1e-06"
    assert rows["llama.rope.freq_base"] == "1e+06"
    assert rows["llama.rope.scale"] == "0.1"
    code, out, _ = mk(capsys, "show", str(path), "-v", "--json")
    info = json.loads(out)["model_info"]
    assert info["llama.attention.layer_norm_rms_epsilon"] == 1e-06
    assert '"llama.rope.scale": 0.1' in out


# ------------------------------------------------------- interrupts and pipes
def test_a_broken_pipe_ends_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelkit", "quantize", str(SAMPLE_DIR / "liang-ai.gguf"),
         str(tmp_path / "o.gguf"), "q8_0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ,
                                                             "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1` exits
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)
    assert err == ""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2, 0.5])
def test_ctrl_c_while_starting_exits_130_without_a_traceback(tmp_path: Path,
                                                             delay: float) -> None:
    # -X importtime reports each import as it completes: the Ctrl-C is sent after the
    # first modelkit module has loaded (before that, Python itself is still starting).
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "modelkit", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO),
                                 "MODELKIT_MODELS": str(tmp_path)})
    assert proc.stderr is not None
    for line in proc.stderr:
        if b"| modelkit." in line or b"|   modelkit." in line or b" modelkit." in line:
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    err = b"".join(x for x in rest.splitlines(keepends=True) if not x.startswith(b"import time:"))
    assert b"Traceback" not in err, err
    # 130, or killed by SIGINT after the one line (what a shell shows as 130); 0 if done.
    assert proc.returncode in (0, 130, -signal.SIGINT), err
    assert err in (b"", b"Error: interrupted\n")


def test_an_interrupt_after_success_keeps_exit_0(models_dir: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = Builder.build

    def build_then_interrupted(self: Builder, *args: Any, **kwargs: Any) -> Any:
        real(self, *args, **kwargs)  # prints success
        raise KeyboardInterrupt

    monkeypatch.setattr(Builder, "build", build_then_interrupted)
    code, out, err = mk(capsys, "create", "m", "-f", str(SAMPLE_DIR / "Modelfile"))
    assert out.splitlines()[-1] == "success"
    assert code == 0 and err == ""


def test_hub_library_loggers_are_silent_unless_debugging(
        models_dir: Path, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from modelscope_hub.utils.logger import get_logger

    monkeypatch.delenv("MODELKIT_DEBUG", raising=False)
    assert main(["list"]) == 0
    get_logger("modelscope_hub.download").warning("a hub library warning")
    logging.getLogger("huggingface_hub.file_download").warning("another one")
    out, err = capfd.readouterr()
    assert "hub library warning" not in err + out and "another one" not in err + out
