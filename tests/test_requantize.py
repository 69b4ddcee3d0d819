"""Tests for modelkit.quant.requantize: the streaming GGUF -> GGUF quantizer."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType, LlamaFileType

from conftest import GOLDEN, golden_stems
from modelkit.errors import ImatrixError, QuantizationError, UnknownQuantTypeError
from modelkit.gguf_file import GGUFInfo, read_gguf
from modelkit.progress import ProgressEvent
from modelkit.quant import kernels, streaming
from modelkit.quant.file_types import (
    FILE_TYPES,
    ExtraType,
    default_tensor_type,
    parse_file_type,
)
from modelkit.quant.imatrix import Imatrix
from modelkit.quant.requantize import (
    RequantizeResult,
    quantize_file,
    quantize_into_store,
    requantize,
)

MIXES = GOLDEN / "mixes"
MODELS = golden_stems("mixes", "*.json")
FTYPES = ("q4_K_M", "q4_K_S", "q5_K_M", "q6_K", "q8_0", "q4_0")
needs_golden = pytest.mark.golden("mixes")

_GOLDEN_JSON: dict[str, dict[str, Any]] = {}
_INFOS: dict[str, GGUFInfo] = {}


def _golden(model: str) -> dict[str, Any]:
    if model not in _GOLDEN_JSON:
        _GOLDEN_JSON[model] = json.loads((MIXES / f"{model}.json").read_text())
    return _GOLDEN_JSON[model]


def _info(model: str) -> GGUFInfo:
    if model not in _INFOS:
        _INFOS[model] = read_gguf(MIXES / f"{model}.gguf")
    return _INFOS[model]


def _run(src: Any, ftype: str | LlamaFileType, **kw: Any) -> tuple[bytes, RequantizeResult]:
    buf = io.BytesIO()
    result = requantize(src, buf, ftype, **kw)
    return buf.getvalue(), result


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _kv_entry(info: GGUFInfo, key: str) -> dict[str, Any]:
    return {"type": info.metadata_types[key][0].name, "value": info.metadata[key]}


def _kv_diff(src: GGUFInfo, out: GGUFInfo) -> dict[str, Any]:
    added = {k: _kv_entry(out, k) for k in out.metadata if k not in src.metadata}
    removed = [k for k in src.metadata if k not in out.metadata]
    changed = {}
    for k in src.metadata:
        if k in out.metadata and (
            src.metadata[k] != out.metadata[k]
            or src.metadata_types[k] != out.metadata_types[k]
        ):
            changed[k] = {"source": _kv_entry(src, k), "output": _kv_entry(out, k)}
    return {"added": added, "removed": removed, "changed": changed}


# --------------------------------------------------------------------------------------
# Golden: 9 models x 6 ftypes against llama.cpp's own output
# --------------------------------------------------------------------------------------


@needs_golden
@pytest.mark.parametrize("ftype", FTYPES)
@pytest.mark.parametrize("model", MODELS)
def test_golden_mix(model: str, ftype: str, tmp_path: Path) -> None:
    expected = _golden(model)["results"][ftype]
    data, result = _run(_info(model), ftype, workers=1)

    # Per tensor: order, name, shape, type, offset, size and bytes.
    want = expected["tensors"]
    assert [s.name for s in result.tensors] == [t["name"] for t in want]
    bad = []
    for s, t in zip(result.tensors, want, strict=True):
        start = result.data_offset + s.offset
        sha = _sha(data[start:start + s.nbytes])
        got: dict[str, Any] = {"name": s.name, "shape": list(s.shape),
                               "type": s.target_type.name, "nbytes": s.nbytes,
                               "offset": s.offset, "sha256": sha}
        if got != t:
            bad.append(f"{s.name}: got {s.target_type.name} {s.nbytes} B @{s.offset} "
                       f"{sha[:12]}, want {t['type']} {t['nbytes']} B @{t['offset']} "
                       f"{t['sha256'][:12]}")
    assert not bad, f"{len(bad)}/{len(want)} tensors differ:\n" + "\n".join(bad)
    assert result.n_fallback == expected["n_fallback"]
    assert list(result.fallback_log) == expected["fallback_log"]
    assert result.file_type == LlamaFileType(expected["ftype"])

    # The header: KV order and the KV diff against the source.
    path = tmp_path / "out.gguf"
    path.write_bytes(data)
    out_info = read_gguf(path)
    assert list(out_info.metadata) == expected["output_kv_order"]
    assert _kv_diff(_info(model), out_info) == expected["kv_diff"]
    assert out_info.metadata["general.file_type"] == expected["general.file_type"]
    assert out_info.alignment == expected["alignment"]
    assert result.gguf_info(path) == out_info  # what it wrote, known without reading it

    # The whole file.
    assert result.output_size == len(data) == expected["output_size"]
    assert _sha(data) == expected["output_sha256"]


# --------------------------------------------------------------------------------------
# Determinism across workers, executors and chunk sizes
# --------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_golden
@pytest.mark.parametrize(("model", "ftype", "small"), [("llama-moe8-L6", "q4_K_M", 13),
                                                       ("llama-h384-f32", "q4_0", 1)])
def test_same_bytes_for_any_workers_and_chunks(model: str, ftype: str, small: int) -> None:
    expected = _golden(model)["results"][ftype]["output_sha256"]
    runs: dict[str, dict[str, Any]] = {
        "1 worker, default chunks": {"workers": 1},
        f"1 worker, {small}-row chunks": {"workers": 1, "chunk_rows": small},
        "2 processes, 29-row chunks": {"workers": 2, "chunk_rows": 29},
        "2 processes, default chunks": {"workers": 2},
        "3 threads, 40-row chunks": {"workers": 3, "chunk_rows": 40, "use_threads": True},
    }
    for label, kw in runs.items():
        data, _ = _run(_info(model), ftype, **kw)
        assert _sha(data) == expected, label


# --------------------------------------------------------------------------------------
# Synthetic sources
# --------------------------------------------------------------------------------------


def _write_model(path: Path, tensors: dict[str, np.ndarray], *,
                 extra: Callable[[gguf.GGUFWriter], None] | None = None,
                 writer_cls: type[gguf.GGUFWriter] = gguf.GGUFWriter) -> Path:
    w = writer_cls(path, "llama")
    w.add_block_count(1)
    w.add_embedding_length(next(iter(tensors.values())).shape[-1])
    w.add_head_count(8)
    w.add_file_type(1)
    if extra is not None:
        extra(w)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _matrix(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)


def test_memory_stays_flat_as_tensors_grow(tmp_path: Path) -> None:
    """Peak traced allocations depend on the chunk size, not on the tensor size."""
    peaks = {}
    for rows in (1024, 4096):  # 4 MiB and 16 MiB of float32 per tensor
        src = _write_model(tmp_path / f"m{rows}.gguf", {
            "blk.0.ffn_up.weight": _matrix(rows, 1024),
            "blk.0.ffn_norm.weight": np.ones(1024, np.float32),
        })
        info = read_gguf(src)
        with open(tmp_path / f"o{rows}.gguf", "wb") as out:
            tracemalloc.start()
            try:
                requantize(info, out, "q8_0", workers=1, chunk_rows=64)
                peaks[rows] = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    chunk_f32 = 64 * 1024 * 4
    assert peaks[4096] < 2 << 20 and peaks[1024] < 2 << 20, peaks  # < 2 MiB each
    assert peaks[4096] < 4096 * 1024 * 4 / 8, peaks  # far below the tensor itself
    assert peaks[4096] < peaks[1024] + 2 * chunk_f32, peaks  # flat


def test_report_gives_errors_without_changing_bytes(tmp_path: Path) -> None:
    src = _write_model(tmp_path / "m.gguf", {
        "blk.0.attn_q.weight": _matrix(64, 512, 1),
        "blk.0.ffn_down.weight": _matrix(64, 256, 2),
        "blk.0.attn_norm.weight": np.ones(512, np.float32),
    })
    plain, r0 = _run(src, "q4_K_M", workers=1)
    reported, r1 = _run(src, "q4_K_M", workers=1, report=True, chunk_rows=5)
    assert plain == reported
    assert r0.rmse is None and all(s.rmse is None for s in r0.tensors)
    by_name = {s.name: s for s in r1.tensors}
    norm = by_name["blk.0.attn_norm.weight"]
    assert norm.action == "copied" and norm.rmse == 0.0 and norm.max_abs_error == 0.0
    for name in ("blk.0.attn_q.weight", "blk.0.ffn_down.weight"):
        s = by_name[name]
        assert s.action == "quantized"
        assert s.rmse is not None and s.max_abs_error is not None
        assert 0 < s.rmse < 0.01 and s.rmse <= s.max_abs_error < 0.05
    # Check one tensor's figures against a direct computation.
    q = by_name["blk.0.attn_q.weight"]
    x = _matrix(64, 512, 1).astype(np.float32)
    y = kernels.dequantize(q.target_type, kernels.quantize(q.target_type, x))
    assert q.rmse == pytest.approx(float(np.sqrt(np.mean((y - x).astype(np.float64) ** 2))))
    assert q.max_abs_error == pytest.approx(float(np.max(np.abs(y - x))))
    assert r1.worst_tensor in by_name and r1.rmse is not None and 0 < r1.rmse < 0.01


# --------------------------------------------------------------------------------------
# Requantizing, copying, errors
# --------------------------------------------------------------------------------------


@needs_golden
def test_requantize_quantized_source_warns(tmp_path: Path) -> None:
    q8 = tmp_path / "q8.gguf"
    quantize_file(_info("llama-L10"), q8, "q8_0", workers=1)
    events: list[ProgressEvent] = []
    data, result = _run(q8, "q4_0", workers=1, progress=events.append, report=True)
    warnings = [e for e in events if e.warning]
    assert len(warnings) == 1
    assert "quality" in warnings[0].status and "requantiz" in warnings[0].status
    assert result.requantized
    # Same type choices as from the F16 original; every Q8_0 tensor went through
    # dequantize -> quantize.
    golden = _golden("llama-L10")["results"]["q4_0"]["tensors"]
    assert [s.target_type.name for s in result.tensors] == [t["type"] for t in golden]
    x_info = read_gguf(q8)
    for s in result.tensors:
        if s.source_type == T.Q8_0 and s.target_type == T.Q4_0:
            src_t = x_info.tensor(s.name)
            assert src_t is not None
            raw = np.fromfile(q8, np.uint8, src_t.n_bytes, offset=src_t.offset)
            x = kernels.to_float32(raw.reshape(-1, src_t.n_bytes // (src_t.n_elements
                                                                      // s.shape[0])), T.Q8_0)
            start = result.data_offset + s.offset
            assert data[start:start + s.nbytes] == kernels.quantize(T.Q4_0, x).tobytes()
            assert s.rmse is not None and s.rmse > 0


@needs_golden
def test_same_type_source_is_copied_as_is(tmp_path: Path) -> None:
    q8 = tmp_path / "q8.gguf"
    first = quantize_file(_info("qwen2-L2"), q8, "q8_0", workers=1)
    events: list[ProgressEvent] = []
    data, again = _run(q8, "Q8_0", workers=1, progress=events.append)
    assert not any(e.warning for e in events) and not again.requantized
    assert again.n_quantized == 0 and again.n_copied == first.tensor_count
    assert data == q8.read_bytes()


def test_unknown_type_and_types_without_a_kernel(tmp_path: Path) -> None:
    src = _write_model(tmp_path / "m.gguf", {"blk.0.attn_q.weight": _matrix(8, 256)})
    with pytest.raises(UnknownQuantTypeError, match="'q4_k_x'.*--list"):
        _run(src, "q4_k_x")
    with pytest.raises(QuantizationError, match="requires an importance matrix"):
        _run(src, LlamaFileType.MOSTLY_IQ2_XXS)
    # Every file type on the menu has a quantizer for its default tensor type (Q2_0, the
    # type gguf cannot name, included).
    missing = [n for n in FILE_TYPES if n != "COPY"
               and default_tensor_type(parse_file_type(n)) not in kernels.SUPPORTED_TYPES]
    assert missing == []


def test_a_type_without_a_quantizer_is_refused_before_writing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _write_model(tmp_path / "m.gguf", {"blk.0.attn_q.weight": _matrix(8, 256)})
    monkeypatch.delitem(kernels.FORMATS, ExtraType.Q2_0)
    buf = io.BytesIO()
    with pytest.raises(QuantizationError, match="type q2_0 has no quantizer in modelkit yet"):
        requantize(src, buf, "q2_0")
    assert buf.getvalue() == b""


def test_progress_one_event_per_tensor(tmp_path: Path) -> None:
    src = _write_model(tmp_path / "m.gguf", {
        "blk.0.attn_q.weight": _matrix(16, 256),
        "blk.0.attn_norm.weight": np.ones(256, np.float32),
        "output.weight": _matrix(32, 256),
    })
    events: list[ProgressEvent] = []
    _, result = _run(src, "q4_K_M", workers=1, chunk_rows=3, progress=events.append)
    assert [e.completed for e in events] == [0, 1, 2, 3]
    assert {e.total for e in events} == {3}
    assert {e.status for e in events} == {"quantizing F16 model to Q4_K_M"}
    assert result.tensor_count == 3 and result.n_quantized == 2 and result.n_copied == 1


def test_f16_target_converts_f32(tmp_path: Path) -> None:
    x = (np.random.default_rng(3).standard_normal((8, 64)) * 0.02).astype(np.float32)
    x[0, :3] = [np.nan, -np.nan, np.inf]
    src = _write_model(tmp_path / "m.gguf", {"blk.0.attn_q.weight": x})
    data, result = _run(src, "f16", workers=1)
    (s,) = result.tensors
    assert s.target_type == T.F16 and s.action == "quantized"
    got = np.frombuffer(data, np.uint16, s.nbytes // 2, result.data_offset + s.offset)
    want = x.astype(np.float16).view(np.uint16).ravel().copy()
    want[0], want[1] = 0x7E00, 0xFE00  # ggml's NaN, sign kept
    assert np.array_equal(got, want)


# --------------------------------------------------------------------------------------
# imatrix
# --------------------------------------------------------------------------------------


def test_imatrix_is_passed_to_the_kernels(tmp_path: Path) -> None:
    x = _matrix(16, 512, 5)
    src = _write_model(tmp_path / "m.gguf", {"blk.0.attn_q.weight": x})
    im = np.random.default_rng(6).uniform(0.1, 4.0, 512).astype(np.float32)
    plain, _ = _run(src, "q4_K_S", workers=1)
    data, result = _run(src, "q4_K_S", workers=1, chunk_rows=3,
                        imatrix=_im({"blk.0.attn_q.weight": im, "unknown.weight": im}))
    (s,) = result.tensors
    start = result.data_offset + s.offset
    want = kernels.quantize(T.Q4_K, x.astype(np.float32), im).tobytes()
    assert data[start:start + s.nbytes] == want
    assert data != plain
    out = tmp_path / "out.gguf"
    with pytest.raises(ImatrixError, match="imatrix size 100 is different from tensor size 512"):
        quantize_file(src, out, "q4_K_S", imatrix=_im({"blk.0.attn_q.weight": im[:100]}))
    with pytest.raises(ImatrixError, match="another model"):
        quantize_file(src, out, "q4_K_S", imatrix=_im({"blk.9.attn_q.weight": im}))
    assert not out.exists()


def _im(weights: dict[str, np.ndarray]) -> Imatrix:
    return Imatrix("test.imatrix", weights, (), 0, False)


def test_imatrix_per_expert(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    exps = (rng.standard_normal((4, 6, 256), dtype=np.float32) * 0.02).astype(np.float16)
    src = _write_model(tmp_path / "m.gguf", {"blk.0.ffn_up_exps.weight": exps})
    im = rng.uniform(0.1, 4.0, (4, 256)).astype(np.float32)
    data, result = _run(src, "q4_K_S", workers=1, chunk_rows=4,
                        imatrix=_im({"blk.0.ffn_up_exps.weight": im.ravel()}))
    (s,) = result.tensors
    start = result.data_offset + s.offset
    want = b"".join(kernels.quantize(T.Q4_K, exps[e].astype(np.float32), im[e]).tobytes()
                    for e in range(4))
    assert data[start:start + s.nbytes] == want


# --------------------------------------------------------------------------------------
# Metadata edge cases
# --------------------------------------------------------------------------------------


class _EmptyArrayWriter(gguf.GGUFWriter):
    """gguf's writer refuses empty arrays, which the format allows: a source with some."""

    def _pack_val(self, val: Any, vtype: GGUFValueType, add_vtype: bool,
                  sub_type: GGUFValueType | None = None) -> bytes:
        if vtype == GGUFValueType.ARRAY and sub_type is not None and len(val) == 0:
            prefix = self._pack("I", vtype) if add_vtype else b""
            return prefix + self._pack("I", sub_type) + self._pack("Q", 0)
        return bytes(super()._pack_val(val, vtype, add_vtype, sub_type))


def test_metadata_types_kept_including_empty_arrays(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_key_value("x.empty_i64", [], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT64)
        w.add_key_value("x.empty_str", [], GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
        w.add_key_value("x.u8s", [1, 2, 255], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT8)
        w.add_key_value("x.f64", 0.1, GGUFValueType.FLOAT64)
        w.add_key_value("x.i16", -5, GGUFValueType.INT16)
        w.add_key_value("split.count", 1, GGUFValueType.UINT16)

    src = _write_model(tmp_path / "m.gguf", {"blk.0.attn_q.weight": _matrix(4, 64)},
                       extra=extra, writer_cls=_EmptyArrayWriter)
    out = tmp_path / "o.gguf"
    result = quantize_file(src, out, "q8_0", workers=1)
    a, b = read_gguf(src), read_gguf(out)
    assert result.gguf_info(out) == b
    assert "split.count" not in b.metadata
    for key in ("x.empty_i64", "x.empty_str", "x.u8s", "x.f64", "x.i16"):
        assert b.metadata[key] == a.metadata[key] and b.metadata_types[key] == \
            a.metadata_types[key], key
    fields = gguf.GGUFReader(out).fields
    assert int(fields["x.empty_i64"].parts[3][0]) == GGUFValueType.INT64
    assert int(fields["x.empty_str"].parts[3][0]) == GGUFValueType.STRING


def test_source_alignment_is_honoured(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_custom_alignment(64)

    src = _write_model(tmp_path / "m.gguf", {
        "blk.0.attn_q.weight": _matrix(3, 64),
        "blk.0.attn_k.weight": _matrix(5, 64),
    }, extra=extra)
    out = tmp_path / "o.gguf"
    result = quantize_file(src, out, "q8_0", workers=1)
    info = read_gguf(out)
    assert result.alignment == info.alignment == 64
    assert all(t.offset % 64 == 0 for t in info.tensors)
    assert info.size == result.output_size


# --------------------------------------------------------------------------------------
# Atomic file output, store output
# --------------------------------------------------------------------------------------


def test_quantize_file_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _write_model(tmp_path / "m.gguf", {
        "blk.0.attn_q.weight": _matrix(64, 256),
        "blk.0.attn_k.weight": _matrix(64, 256),
    })
    outdir = tmp_path / "out"
    outdir.mkdir()
    dst = outdir / "model.gguf"
    real = streaming._quantize
    calls = {"n": 0}

    def failing(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk on fire")
        return real(*args)

    monkeypatch.setattr(streaming, "_quantize", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        quantize_file(src, dst, "q8_0", workers=1, chunk_rows=8)
    assert calls["n"] == 5  # it failed midway, after writing some data
    assert list(outdir.iterdir()) == []

    dst.write_bytes(b"previous")
    calls["n"] = 0
    with pytest.raises(RuntimeError):
        quantize_file(src, dst, "q8_0", workers=1, chunk_rows=8)
    assert dst.read_bytes() == b"previous" and list(outdir.iterdir()) == [dst]

    monkeypatch.setattr(streaming, "_quantize", real)
    result = quantize_file(src, dst, "q8_0", workers=1)
    assert dst.stat().st_size == result.output_size and list(outdir.iterdir()) == [dst]


@needs_golden
def test_quantize_into_store(tmp_path: Path) -> None:
    from modelkit.store import Store

    store = Store(tmp_path / "models")
    events: list[ProgressEvent] = []
    written, info = quantize_into_store(store, _info("gemma-L2-tied"), "q4_K_M", events.append)
    expected = _golden("gemma-L2-tied")["results"]["q4_K_M"]
    assert written.digest.hex == expected["output_sha256"]
    assert written.size == expected["output_size"] and written.created
    assert info.file_type == expected["ftype"]
    assert [t.name for t in info.tensors] == [t["name"] for t in expected["tensors"]]
    assert events and events[-1].completed == events[-1].total == len(info.tensors)
    assert not [p for p in store.blobs.iterdir() if p.name.startswith(".")]
