"""The safetensors reader (fuzzed), bad input folders, and the per-outtype dtype rules."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from hf_fixtures import (
    decoder_weights,
    write_config,
    write_raw_safetensors,
    write_spm,
    write_weights,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from test_convert_archs import DIMS, llama_config, make_llama, read, values

from modelkit.convert import convert, plan_conversion
from modelkit.convert.safetensors_file import SafetensorsFile, parse_header
from modelkit.errors import ConvertError
from modelkit.quant import kernels
from modelkit.quant.kernels.floats import fp32_to_bf16_bits as fp32_to_bf16

Q = gguf.GGMLQuantizationType


def header_bytes(header: object, pad_to: int = 8) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % pad_to)
    return struct.pack("<Q", len(raw)) + raw


# ----------------------------------------------------------------- header reader
def test_reader_reads_f16_and_widens_bf16(tmp_path: Path) -> None:
    x = np.array([[1.5, -2.25], [3.0, 1e-3]], dtype=np.float32)
    bf = (x.view(np.uint32) >> 16).astype(np.uint16)
    write_raw_safetensors(tmp_path / "a.safetensors", {
        "h": ("F16", (2, 2), x.astype(np.float16).tobytes()),
        "b": ("BF16", (2, 2), bf.tobytes()), "i": ("I64", (3,), np.arange(3).tobytes())})
    f = SafetensorsFile(tmp_path / "a.safetensors")
    np.testing.assert_array_equal(f.array("h"), x.astype(np.float16))
    np.testing.assert_array_equal(f.array("b"), (bf.astype(np.uint32) << 16).view(np.float32))
    assert f.array("b").dtype == np.float32
    np.testing.assert_array_equal(f.array("i"), [0, 1, 2])
    f.close()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda h: h["t"].update(dtype="F8_E9"), "tensor 't': unknown dtype 'F8_E9'"),
    (lambda h: h["t"].update(data_offsets=[0, 400]), "tensor 't': data_offsets .* out of range"),
    (lambda h: h["t"].update(data_offsets=[0, 6]), "tensor 't': data_offsets span 6 bytes"),
    (lambda h: h["u"].update(data_offsets=[4, 12]), "tensor 'u': data overlaps tensor 't'"),
    (lambda h: h["t"].update(shape=[2, -1]), "tensor 't': bad shape"),
])
def test_reader_rejects_bad_entries(tmp_path: Path, mutate: object, message: str) -> None:
    header = {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "u": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    mutate(header)  # type: ignore[operator]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(header_bytes(header) + bytes(16))
    with pytest.raises(ConvertError, match=f"{path}: {message}"):
        SafetensorsFile(path)


@pytest.mark.parametrize(("data", "message"), [
    (b"", "truncated safetensors file"),
    (struct.pack("<Q", 10**6) + b"{}", "header length 1000000 does not fit"),
    (struct.pack("<Q", 4) + b"{ab}", "not valid JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
])
def test_reader_rejects_bad_headers(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(ConvertError, match=message):
        SafetensorsFile(path)


_entry = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I8", "U8", "F8_E4M3", "X"]),
    "shape": st.lists(st.integers(-2, 5), max_size=3),
    "data_offsets": st.lists(st.integers(-5, 70), min_size=0, max_size=3)})


@settings(max_examples=300, deadline=None)
@given(entries=st.dictionaries(st.text(min_size=1, max_size=4), _entry, max_size=4),
       data_len=st.integers(0, 64), cut=st.integers(0, 400), length_delta=st.integers(-3, 3))
def test_header_fuzz(entries: dict[str, object], data_len: int, cut: int,
                     length_delta: int) -> None:
    """Any header: either entries that fit the file without overlap, or ConvertError."""
    raw = header_bytes(entries)
    n = struct.unpack("<Q", raw[:8])[0] + length_delta
    blob = (struct.pack("<Q", max(n, 0)) + raw[8:] + bytes(data_len))[:cut]
    try:
        got = parse_header(Path("x.safetensors"), blob, len(blob))
    except ConvertError as exc:
        assert str(exc).startswith("x.safetensors: ")
        return
    data_start = 8 + max(n, 0)
    end = 0
    for e in got:
        assert data_start <= e.begin <= e.end <= len(blob)
        assert e.begin >= end or e.begin == e.end
        end = max(end, e.end)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_header_fuzz_random_bytes(blob: bytes) -> None:
    try:
        parse_header(Path("r.safetensors"), blob, len(blob))
    except ConvertError:
        pass


# ---------------------------------------------------------------- bad folders
def _assert_fails(src: Path, out: Path, pattern: str) -> None:
    with pytest.raises(ConvertError, match=pattern):
        convert(src, out, "f16")
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".tmp-")] == []


def test_missing_config_and_tokenizer(tmp_path: Path) -> None:
    src = tmp_path / "m"
    src.mkdir()
    _assert_fails(src, tmp_path / "o.gguf", "config.json: missing")
    write_config(src, llama_config())
    write_weights(src, decoder_weights(np.random.default_rng(0), n_vocab=300, **DIMS))
    _assert_fails(src, tmp_path / "o.gguf", "tokenizer.json: missing")


def test_unsupported_architecture_lists_supported(tmp_path: Path) -> None:
    src = tmp_path / "u"
    write_config(src, {"architectures": ["FalconForCausalLM"], "num_hidden_layers": 1})
    _assert_fails(src, tmp_path / "o.gguf",
                  r"'FalconForCausalLM' is not supported \(supported: .*LlamaForCausalLM")


def test_truncated_and_lying_weights(tmp_path: Path) -> None:
    src = tmp_path / "t"
    make_llama(src)
    st_file = src / "model.safetensors"
    data = st_file.read_bytes()
    st_file.write_bytes(data[: len(data) - 100])
    _assert_fails(src, tmp_path / "o.gguf", r"model.safetensors: tensor '.*': data_offsets")
    st_file.write_bytes(struct.pack("<Q", len(data)) + data[8:])
    _assert_fails(src, tmp_path / "o.gguf", "header length .* does not fit")


def test_shape_disagrees_with_config(tmp_path: Path) -> None:
    src = tmp_path / "s"
    make_llama(src, intermediate_size=80)
    _assert_fails(src, tmp_path / "o.gguf",
                  r"model.safetensors: tensor 'model.layers.0.mlp.down_proj.weight': shape "
                  r"\[64, 96\] disagrees with config.json \(expected \[64, 80\]\)")


def test_missing_shard(tmp_path: Path) -> None:
    src = tmp_path / "sh"
    make_llama(src, shards=2)
    (src / "model-00002-of-00002.safetensors").unlink()
    _assert_fails(src, tmp_path / "o.gguf",
                  "model.safetensors.index.json: names shard 'model-00002-of-00002"
                  ".safetensors' which is missing")


def test_vocab_smaller_than_tokenizer(tmp_path: Path) -> None:
    src = tmp_path / "v"
    from hf_fixtures import write_bpe
    write_config(src, llama_config(vocab_size=100))
    write_bpe(src)
    write_weights(src, decoder_weights(np.random.default_rng(0), n_vocab=100, **DIMS))
    _assert_fails(src, tmp_path / "o.gguf",
                  r"tokenizer.json: token id \d+ does not fit the vocabulary of 100")


# ------------------------------------------------------------------- outtypes
def test_bf16_rounding_rule() -> None:
    x = np.array([1.0, 1.00390625, 1.005859375, -3.0e38, np.inf, 65504.0], np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    want = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    np.testing.assert_array_equal(fp32_to_bf16(x), want)
    nan = np.array([np.nan], np.float32)
    assert fp32_to_bf16(nan)[0] & 0x7FC0 == 0x7FC0  # stays a quiet NaN
    assert fp32_to_bf16(np.array([1.00390625], np.float32))[0] == 0x3F80  # tie to even


def _every_bf16_pattern(repeats: int) -> np.ndarray:
    """All 65536 BF16 bit patterns, shuffled, ``repeats`` times (several cache-sized
    pieces of the converters), as a (rows, 512) matrix."""
    bits = np.tile(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16), repeats)
    return np.random.default_rng(5).permutation(bits).reshape(-1, 512)


def test_float_shortcuts_match_numpy_casts() -> None:
    """The BF16 -> F16 / F16-as-float32 / BF16 conversions from the stored bits, and the
    F16 -> float32 widening, give exactly what numpy's (or ggml's) casts give, for every
    16-bit pattern, in every position of a multi-piece array, and for a non-contiguous
    view."""
    from modelkit.quant.kernels.floats import (
        bf16_requantized,
        bf16_to_f16_bits,
        bf16_to_f16_to_f32,
        bf16_to_f32,
    )
    for bits in (_every_bf16_pattern(3), _every_bf16_pattern(1)[:, ::-1].T):
        with np.errstate(over="ignore", invalid="ignore"):
            f16 = bf16_to_f32(bits).astype(np.float16)
        got = bf16_to_f16_bits(bits)
        assert got.shape == bits.shape and got.dtype == np.uint16
        np.testing.assert_array_equal(got, f16.view(np.uint16))
        wide = bf16_to_f16_to_f32(bits)
        assert wide.shape == bits.shape
        np.testing.assert_array_equal(wide.view(np.uint32),
                                      f16.astype(np.float32).view(np.uint32))
        np.testing.assert_array_equal(bf16_requantized(bits),
                                      fp32_to_bf16(bf16_to_f32(bits)))
    halves = _every_bf16_pattern(3)  # the same 16-bit patterns, read as float16
    from modelkit.quant.kernels.floats import decode_floats, f16_to_f32_values
    for h in (halves.view(np.float16), halves[:, ::-1].T.view(np.float16)):
        want = h.astype(np.float32).view(np.uint32)
        np.testing.assert_array_equal(f16_to_f32_values(h).view(np.uint32), want)
        np.testing.assert_array_equal(
            decode_floats(gguf.GGMLQuantizationType.F16, h).view(np.uint32), want)
    from modelkit.quant.kernels.floats import f32_to_f16_values
    lo, hi = 0x38800000, 0x477FF000  # the integer path: 2**-14 <= |x| < 65520
    rng = np.random.default_rng(6)
    u = np.concatenate([np.arange(lo - 5000, lo + 5000), np.arange(hi - 5000, hi + 5000),
                        rng.integers(0, 1 << 32, 1 << 20),  # any pattern (NaN, inf, ...)
                        rng.integers(lo, hi, 1 << 20)]).astype(np.uint32)
    u[::2] |= np.uint32(0x80000000)
    for x in (u.view(np.float32), u.view(np.float32).reshape(-1, 32)[:, ::-1].T):
        with np.errstate(over="ignore", invalid="ignore"):
            want = x.astype(np.float16)
        np.testing.assert_array_equal(f32_to_f16_values(x).view(np.uint16),
                                      want.view(np.uint16))
    # edges of the shortcut: +-0, 2**-15 (an F16 subnormal), 2**-14 (the least normal),
    # 65280 (the largest BF16 below 2**16), 2**16 and inf (both overflow to inf)
    edges = np.array([0x0000, 0x8000, 0x3800, 0x3880, 0x477F, 0x4780, 0xFF80], np.uint16)
    np.testing.assert_array_equal(bf16_to_f16_bits(edges),
                                  [0x0000, 0x8000, 0x0200, 0x0400, 0x7BF8, 0x7C00, 0xFC00])


@pytest.mark.parametrize("outtype", ["bf16", "q8_0", "auto"])
def test_outtypes(outtype: str, tmp_path: Path) -> None:
    src = tmp_path / "o"
    write_config(src, llama_config(intermediate_size=80))
    write_spm(src)
    dims = dict(DIMS, n_ff=80)  # ffn_down rows of 80: not a multiple of 32
    w = decoder_weights(np.random.default_rng(7), n_vocab=300, **dims)
    write_weights(src, w, "F32")
    out = tmp_path / "o.gguf"
    result = convert(src, out, outtype)
    kv, tensors, _ = read(out)
    want_ft = {"bf16": 32, "q8_0": 7, "auto": 1}[outtype]  # auto on F32 sources is F16
    assert kv["general.file_type"] == want_ft
    up, down, emb = (tensors["blk.0.ffn_up.weight"], tensors["blk.0.ffn_down.weight"],
                     tensors["token_embd.weight"])
    assert tensors["blk.0.attn_norm.weight"].tensor_type == Q.F32
    if outtype == "bf16":
        assert up.tensor_type == Q.BF16
        want = fp32_to_bf16(w["model.layers.0.mlp.up_proj.weight"])
        np.testing.assert_array_equal(np.asarray(up.data).view(np.uint16).reshape(want.shape),
                                      want)
    elif outtype == "q8_0":
        assert up.tensor_type == emb.tensor_type == Q.Q8_0  # token_embd quantized too
        want_q = kernels.quantize(Q.Q8_0, w["model.layers.0.mlp.up_proj.weight"])
        assert np.asarray(up.data).tobytes() == want_q.tobytes()
        assert down.tensor_type == Q.F16  # 80-wide rows fall back to F16
        assert any("falling back to F16" in m for m in result.warnings)
    else:
        assert up.tensor_type == Q.F16
        np.testing.assert_array_equal(values(up), w["model.layers.0.mlp.up_proj.weight"]
                                      .astype(np.float16).astype(np.float32))


def test_plan_reads_no_tensor_data(tmp_path: Path) -> None:
    src = tmp_path / "p"
    make_llama(src)
    plan = plan_conversion(src, "q8_0")
    assert plan.size == len(plan.header()) + sum(
        (p.n_bytes + 31) // 32 * 32 for p in plan.tensors)
    assert plan.parameter_count == sum(int(np.prod(p.tensor.shape)) for p in plan.tensors)
    plan.model.close()


# ------------------------------------------------------- one pass = convert + quantize
@pytest.mark.parametrize("ftype", ["q4_K_M", "q5_K_S", "Q6_K", "q4_0"])
def test_one_pass_equals_f16_then_quantize(ftype: str, tmp_path: Path) -> None:
    from modelkit.quant.requantize import quantize_file
    src = tmp_path / "l"
    write_config(src, llama_config(hidden_size=256, intermediate_size=512, vocab_size=300))
    write_spm(src)
    dims = dict(DIMS, n_embd=256, n_ff=512, head_dim=64)
    write_weights(src, decoder_weights(np.random.default_rng(8), n_vocab=300, **dims), "BF16")
    f16 = tmp_path / "f16.gguf"
    convert(src, f16, "f16")
    two_step = tmp_path / "two.gguf"
    quantize_file(f16, two_step, ftype, workers=1)
    one = tmp_path / "one.gguf"
    result = convert(src, one, ftype)
    assert one.read_bytes() == two_step.read_bytes()
    assert result.sha256 == hashlib.sha256(two_step.read_bytes()).hexdigest()
    kv, tensors, _ = read(one)
    assert tensors["blk.0.ffn_up.weight"].tensor_type != Q.F16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f16.gguf", "l", "one.gguf",
                                                           "two.gguf"]


def test_unknown_outtype(tmp_path: Path) -> None:
    src = tmp_path / "l"
    make_llama(src)
    with pytest.raises(ConvertError, match="unknown outtype 'q9_X'"):
        convert(src, tmp_path / "o.gguf", "q9_X")
    assert not (tmp_path / "o.gguf").exists()


def test_chunked_streaming_gives_the_same_bytes(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Large tensors are streamed in row chunks; the bytes do not depend on the cut."""
    from modelkit.convert import converter
    src = tmp_path / "c"
    make_llama(src, dtype="BF16")
    whole = {t: tmp_path / f"whole-{t}.gguf" for t in ("f16", "q8_0", "q4_0")}
    for t, path in whole.items():
        convert(src, path, t)
    monkeypatch.setattr(converter, "CHUNK_ELEMENTS", 1000)  # embeddings: 300 x 64
    for t, path in whole.items():
        chunked = tmp_path / f"chunked-{t}.gguf"
        convert(src, chunked, t)
        assert chunked.read_bytes() == path.read_bytes()


def test_one_pass_pool_gives_the_same_bytes(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from modelkit.convert import converter, one_pass
    from modelkit.convert import plan as plan_any
    src = tmp_path / "l"
    write_config(src, llama_config(hidden_size=256, intermediate_size=512))
    write_spm(src)
    write_weights(src, decoder_weights(np.random.default_rng(13), n_vocab=300,
                                       **dict(DIMS, n_embd=256, n_ff=512, head_dim=64)))
    monkeypatch.setattr(converter, "CHUNK_ELEMENTS", 20000)  # several chunks per tensor
    outs = []
    for workers in (1, 2):
        conv = plan_any(src, "q4_K_M")
        assert conv.quantized is not None
        buf = io.BytesIO()
        one_pass.write_quantized(conv.quantized, buf, workers=workers)
        conv.close()
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]


def test_auto_skips_f32_matrices(tmp_path: Path) -> None:
    """auto: the first BF16 or F16 matrix decides; F32 ones before it are skipped."""
    from hf_fixtures import to_bf16_bits, write_raw_safetensors
    src = tmp_path / "mixed"
    make_llama(src)
    w = decoder_weights(np.random.default_rng(15), n_vocab=300, **DIMS)
    tensors = {}
    for name, x in w.items():
        if name == "lm_head.weight":  # sorts first: F32
            tensors[name] = ("F32", x.shape, x.astype(np.float32).tobytes())
        else:
            tensors[name] = ("BF16", x.shape, to_bf16_bits(x).tobytes())
    write_raw_safetensors(src / "model.safetensors", tensors)
    plan = plan_conversion(src, "auto")
    plan.model.close()
    assert plan.file_type == gguf.LlamaFileType.MOSTLY_BF16


@pytest.mark.parametrize("outtype", ["f16", "q4_K_M"])
def test_a_failing_write_is_raised_in_the_caller(outtype: str, tmp_path: Path) -> None:
    """The output is hashed and written in a thread: its error (a full disk) still
    reaches the caller as itself, and the thread is gone afterwards."""
    import errno
    import io
    import threading

    from modelkit.convert import plan as plan_any

    class FullDisk(io.BytesIO):
        def write(self, data: object, /) -> int:
            if self.tell() > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)  # type: ignore[arg-type]

    src = tmp_path / "l"
    make_llama(src, dtype="BF16")
    conv = plan_any(src, outtype)
    try:
        with pytest.raises(OSError, match="No space left"):
            conv.write(FullDisk())
    finally:
        conv.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("gguf-")]
