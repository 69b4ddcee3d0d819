"""Everyday trust: a damaged store entry, verify, linked blobs, the digest cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import mk, sample

from modelkit.store import Store

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
