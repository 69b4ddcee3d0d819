"""Tests for modelkit.quant.imatrix: llama.cpp's importance-matrix files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGUFValueType

from conftest import GOLDEN, needs_golden
from modelkit.errors import ImatrixError
from modelkit.quant.imatrix import (
    KEY_CHUNKS,
    KEY_DATASET,
    KEY_ENTRIES,
    KEY_FILE,
    check_model,
    imatrix_kvs,
    load_imatrix,
    weights_for,
)

MENU = GOLDEN / "quant-menu"


def _write_imatrix(path: Path, entries: dict[str, tuple[np.ndarray, np.ndarray]], *,
                   datasets: list[str] | None = None, chunks: int = 3,
                   metadata: bool = True) -> Path:
    """A GGUF imatrix as llama-imatrix writes it: in_sum2 [ne0, n_mat], counts [1, n_mat]."""
    w = gguf.GGUFWriter(str(path), "unused")
    w.kv_data = [{}]
    w.add_string("general.type", "imatrix")
    if metadata:
        w.add_array("imatrix.datasets", datasets if datasets is not None else ["calib.txt"])
        w.add_uint32("imatrix.chunk_count", chunks)
        w.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, counts) in sorted(entries.items()):
        w.add_tensor(f"{name}.in_sum2", sums.astype(np.float32))
        w.add_tensor(f"{name}.counts", counts.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _write_dat(path: Path, entries: dict[str, tuple[int, np.ndarray]],
               trailer: tuple[int, str] | None = (7, "data.txt")) -> Path:
    out = struct.pack("<i", len(entries))
    for name, (ncall, values) in entries.items():
        raw = name.encode()
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, values.size)
        out += values.astype("<f4").tobytes()
    if trailer is not None:
        out += struct.pack("<ii", trailer[0], len(trailer[1].encode())) + trailer[1].encode()
    path.write_bytes(out)
    return path


def test_gguf_weights_formula(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    sums = rng.random((3, 64), dtype=np.float32) * 100  # n_mat=3 experts, ne0=64
    counts = np.array([[10.4, 0.0, 2.5]], dtype=np.float32)  # lround: 10, 0, 3
    dense = rng.random((1, 32), dtype=np.float32)
    p = _write_imatrix(tmp_path / "im.gguf", {"blk.0.ffn_up_exps.weight": (sums, counts),
                                              "blk.0.attn_q.weight": (dense, np.array([[4.0]]))})
    im = load_imatrix(p)
    w = im.weights["blk.0.ffn_up_exps.weight"].reshape(3, 64)
    assert w.dtype == np.float32
    assert np.array_equal(w[0], sums[0] / np.float32(10))
    assert np.array_equal(w[1], np.ones(64, np.float32))  # count 0: weight 1
    assert np.array_equal(w[2], sums[2] / np.float32(3))
    assert np.array_equal(im.weights["blk.0.attn_q.weight"], dense[0] / np.float32(4))
    assert (im.datasets, im.chunk_count, im.legacy, im.file) == (("calib.txt",), 3, False, str(p))
    assert weights_for(im, "blk.0.ffn_up_exps.weight", (64, 16, 3)) is not None
    assert weights_for(im, "output.weight", (64, 16)) is None
    with pytest.raises(ImatrixError, match="size 192 is different from tensor size 64 for"):
        weights_for(im, "blk.0.ffn_up_exps.weight", (64, 16))
    with pytest.raises(ImatrixError, match="another model"):
        weights_for(im, "blk.0.attn_q.weight", (48, 16))


def test_legacy_weights_and_trailer(tmp_path: Path) -> None:
    values = np.linspace(0.5, 9.0, 32, dtype=np.float32)
    p = _write_dat(tmp_path / "im.dat", {"blk.0.attn_q.weight": (3, values),
                                         "blk.0.attn_k.weight": (0, values)})
    im = load_imatrix(p)
    assert im.legacy and im.datasets == ("data.txt",) and im.chunk_count == 7
    assert np.array_equal(im.weights["blk.0.attn_q.weight"], values / np.float32(3))
    assert np.array_equal(im.weights["blk.0.attn_k.weight"], values)  # ncall 0: as stored
    bare = load_imatrix(_write_dat(tmp_path / "b.dat", {"x.weight": (1, values)}, None))
    assert bare.datasets == () and bare.chunk_count == 0


def test_include_exclude_and_kvs(tmp_path: Path) -> None:
    e = {f"blk.{i}.{n}.weight": (np.ones((1, 32)), np.array([[2.0]]))
         for i in range(2) for n in ("attn_q", "ffn_down")}
    p = _write_imatrix(tmp_path / "im.gguf", e, datasets=["d1", "d2"], chunks=0)
    assert len(load_imatrix(p, exclude=["ffn_down"]).weights) == 2
    assert sorted(load_imatrix(p, include=["blk.1."]).weights) == [
        "blk.1.attn_q.weight", "blk.1.ffn_down.weight"]
    with pytest.raises(ImatrixError, match="cannot be used together"):
        load_imatrix(p, include=["a"], exclude=["b"])
    long_name = "x" * 200
    im = load_imatrix(p)
    kvs = imatrix_kvs(im)
    assert [k for k, _, _ in kvs] == [KEY_FILE, KEY_DATASET, KEY_ENTRIES]  # chunks 0: absent
    assert kvs[1][1] == "d1" and kvs[2] == (KEY_ENTRIES, 4, GGUFValueType.UINT32)
    renamed = type(im)(long_name, im.weights, (), 5, False)
    kvs = imatrix_kvs(renamed)
    assert [k for k, _, _ in kvs] == [KEY_FILE, KEY_ENTRIES, KEY_CHUNKS]  # no dataset
    assert kvs[0][1] == "x" * 127
    assert imatrix_kvs(load_imatrix(p, include=["nothing"])) == []
    check_model(im, ["blk.0.attn_q.weight"])
    with pytest.raises(ImatrixError, match="for another model"):
        check_model(im, ["token_embd.weight", "blk.0.attn_v.weight"])


def test_bad_files(tmp_path: Path) -> None:
    good = _write_imatrix(tmp_path / "im.gguf", {"a.weight": (np.ones((1, 32)),
                                                             np.array([[1.0]]))})
    data = good.read_bytes()
    (tmp_path / "trunc.gguf").write_bytes(data[: len(data) - 40])
    with pytest.raises(ImatrixError, match="corrupt or truncated"):
        load_imatrix(tmp_path / "trunc.gguf")
    dat = _write_dat(tmp_path / "im.dat", {"a.weight": (1, np.ones(32, np.float32))}, None)
    (tmp_path / "trunc.dat").write_bytes(dat.read_bytes()[:-9])
    with pytest.raises(ImatrixError, match="corrupt or truncated"):
        load_imatrix(tmp_path / "trunc.dat")
    (tmp_path / "junk").write_bytes(b"\xff\xff\xff\xffnot an imatrix")
    with pytest.raises(ImatrixError, match="not an imatrix file"):
        load_imatrix(tmp_path / "junk")
    with pytest.raises(ImatrixError, match="cannot read"):
        load_imatrix(tmp_path / "absent.gguf")
    nometa = _write_imatrix(tmp_path / "nometa.gguf", {"a.weight": (np.ones((1, 32)),
                                                                   np.array([[1.0]]))},
                            metadata=False)
    with pytest.raises(ImatrixError, match="missing imatrix metadata"):
        load_imatrix(nometa)
    key = b"imatrix.chunk_count"  # then its value type: UINT32 (4) made INT32 (5)
    at = data.index(key) + len(key)
    assert data[at:at + 4] == (4).to_bytes(4, "little")
    (tmp_path / "i32.gguf").write_bytes(data[:at] + (5).to_bytes(4, "little") + data[at + 4:])
    with pytest.raises(ImatrixError, match="imatrix.chunk_count must be a uint32, not 3"):
        load_imatrix(tmp_path / "i32.gguf")
    nan = np.ones((1, 32))
    nan[0, 3] = np.inf
    with pytest.raises(ImatrixError, match="non-finite"):
        load_imatrix(_write_imatrix(tmp_path / "nan.gguf", {"a.weight": (nan,
                                                                        np.array([[1.0]]))}))


@needs_golden(MENU)
@pytest.mark.parametrize("model", ["llama-L10", "llama-moe8-L6"])
def test_golden_imatrix_files(model: str) -> None:
    meta = json.loads((MENU / f"{model}.json").read_text())["imatrix_files"]
    for name, m in meta.items():
        im = load_imatrix(MENU / name)
        assert len(im.weights) == m["entries"] and list(im.datasets) == m["datasets"]
        assert im.chunk_count == m["chunk_count"] and im.legacy == name.endswith(".dat")
    gg = load_imatrix(MENU / f"{model}.imatrix.gguf")
    if model == "llama-moe8-L6":  # expert 1 of every blk.0 expert tensor was never routed
        w = gg.weights["blk.0.ffn_up_exps.weight"].reshape(8, -1)
        assert np.all(w[1] == 1) and not np.all(w[0] == 1)
