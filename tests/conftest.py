"""Shared fixtures: an isolated models directory and GGUF files written with gguf.GGUFWriter."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_golden() -> Path:
    """``../shared/golden`` next to the checkout (or next to a parent folder of it, for
    worktrees); ``MODELKIT_GOLDEN`` names it explicitly."""
    if os.environ.get("MODELKIT_GOLDEN"):
        return Path(os.environ["MODELKIT_GOLDEN"])
    for parent in REPO.parents:
        if (parent / "shared" / "golden").is_dir():
            return parent / "shared" / "golden"
    return REPO.parent / "shared" / "golden"


GOLDEN = _find_golden()


def needs_golden(path: Path) -> pytest.MarkDecorator:
    """The ``golden`` mark for the golden data at ``path`` (see ``golden_data``)."""
    return pytest.mark.golden(str(path.relative_to(GOLDEN)))
SAMPLE_DIR = REPO / "samples" / "liang-ai"
GOLDEN_MISSING = "golden-data-missing"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fast", action="store_true",
                     help="leave out the tests marked slow (local runs only: CI runs all)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--fast"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


def golden_stems(folder: str, pattern: str) -> list[Any]:
    """The stems of the golden files ``GOLDEN/folder/pattern``, to parametrize over. With
    none, one placeholder marked ``golden`` on the missing files, so the test is still
    collected and the ``golden_data`` fixture reports it (never an empty parameter set,
    which pytest would only skip)."""
    found = sorted(p.stem for p in (GOLDEN / folder).glob(pattern))
    return found or [pytest.param(GOLDEN_MISSING, marks=pytest.mark.golden(folder, pattern))]


@pytest.fixture(autouse=True)
def golden_data(request: pytest.FixtureRequest) -> None:
    """The one rule for golden data: a test marked ``golden(*parts)`` needs
    ``GOLDEN/parts``. When it is missing the test skips, except under CI (env ``CI``
    set), where it fails: there, missing reference data must never pass as a skip."""
    for mark in request.node.iter_markers("golden"):
        path = GOLDEN.joinpath(*mark.args)
        if not path.exists():
            message = f"golden data not found: {path}"
            if os.environ.get("CI"):
                pytest.fail(f"{message} (CI is set: golden data is required)", pytrace=False)
            pytest.skip(message)


def write_gguf(path: Path, arch: str = "test", *, kv: Mapping[str, Any] | None = None,
               tensors: Mapping[str, np.ndarray] | None = None,
               raw_tensors: Sequence[tuple[str, np.ndarray, gguf.GGMLQuantizationType]] = (),
               ) -> Path:
    """A GGUF the way Ollama's tests make them: gguf's writer, keys in the order given."""
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in (kv or {}).items():
        if isinstance(value, tuple):  # (value, GGUFValueType) for an explicit type
            w.add_key_value(key, value[0], value[1])
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
        else:
            raise TypeError(key)
    for name, array in (tensors or {}).items():
        w.add_tensor(name, array)
    for name, array, qtype in raw_tensors:
        w.add_tensor(name, array, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    if tensors or raw_tensors:
        w.write_tensors_to_file()  # writes the tensor infos first
    else:
        w.write_ti_data_to_file()  # no data section, no padding: Ollama's 68-byte test file
    w.close()
    return path


def tiny_llama_tensors(n_embd: int = 64, n_ff: int = 128, n_vocab: int = 32,
                       n_layer: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t: dict[str, np.ndarray] = {
        "token_embd.weight": rng.standard_normal((n_vocab, n_embd)).astype(np.float16),
        "output_norm.weight": np.ones(n_embd, np.float32),
    }
    for i in range(n_layer):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = np.ones(n_embd, np.float32)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t[p + name + ".weight"] = rng.standard_normal((n_embd, n_embd)).astype(np.float16)
        t[p + "ffn_norm.weight"] = np.ones(n_embd, np.float32)
        t[p + "ffn_gate.weight"] = rng.standard_normal((n_ff, n_embd)).astype(np.float16)
        t[p + "ffn_up.weight"] = rng.standard_normal((n_ff, n_embd)).astype(np.float16)
        t[p + "ffn_down.weight"] = rng.standard_normal((n_embd, n_ff)).astype(np.float16)
    return t


def _is_loopback(host: object) -> bool:
    if host is None:
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    if text.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(text.strip("[]")).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the network: resolving any name but loopback fails the call."""
    real = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host):
            raise OSError(f"test tried to reach {host!r}: tests must stay on loopback")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty models directory that every api/cli call in the test uses."""
    root = tmp_path / "models"
    monkeypatch.setenv("MODELKIT_MODELS", str(root))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    return root


@pytest.fixture
def gguf_factory(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1_000_000))

    def make(name: str | None = None, arch: str = "llama", **kw: Any) -> Path:
        path = tmp_path / (name or f"model{next(counter)}.gguf")
        if "tensors" not in kw and "raw_tensors" not in kw:
            kw["tensors"] = tiny_llama_tensors()
        return write_gguf(path, arch, **kw)

    return make


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every file under root with the sha256 of its bytes (for before/after checks)."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, str]]:
    return tree_snapshot


@pytest.fixture
def chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path

