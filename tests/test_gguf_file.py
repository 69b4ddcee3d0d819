"""Our GGUF header writer and reader against gguf's GGUFWriter and GGUFReader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFValueType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import GOLDEN, SAMPLE_DIR, write_gguf
from modelkit.errors import GGUFError
from modelkit.gguf_file import (
    KV,
    GGUFInfo,
    TensorSlot,
    describe_header,
    encode_header,
    read_gguf,
    read_gguf_bytes,
    read_gguf_from,
)
from modelkit.gguf_file.format import pad
from modelkit.quant.file_types import ExtraType

V = GGUFValueType
T = GGMLQuantizationType

_INTS = {V.UINT8: (0, 255), V.INT8: (-128, 127), V.UINT16: (0, 65535),
         V.INT16: (-32768, 32767), V.UINT32: (0, 2**32 - 1), V.INT32: (-2**31, 2**31 - 1),
         V.UINT64: (0, 2**64 - 1), V.INT64: (-2**63, 2**63 - 1)}
_KEY = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
               max_size=12)
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


def _scalar(vtype: GGUFValueType) -> st.SearchStrategy[Any]:
    if vtype in _INTS:
        lo, hi = _INTS[vtype]
        return st.integers(lo, hi)
    if vtype == V.FLOAT32:
        return st.floats(width=32, allow_nan=False)
    if vtype == V.FLOAT64:
        return st.floats(allow_nan=False)
    if vtype == V.BOOL:
        return st.booleans()
    return _TEXT


_SCALAR_TYPES = [*_INTS, V.FLOAT32, V.FLOAT64, V.BOOL, V.STRING]


@st.composite
def kv_values(draw: st.DrawFn) -> tuple[Any, GGUFValueType, GGUFValueType | None]:
    vtype = draw(st.sampled_from([*_SCALAR_TYPES, V.ARRAY]))
    if vtype != V.ARRAY:
        return draw(_scalar(vtype)), vtype, None
    sub = draw(st.sampled_from(_SCALAR_TYPES))
    return draw(st.lists(_scalar(sub), min_size=1, max_size=8)), vtype, sub


_QTYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_K, T.Q6_K, T.IQ4_NL]


@st.composite
def tensor_slots(draw: st.DrawFn) -> TensorSlot:
    qtype = draw(st.sampled_from(_QTYPES))
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    dims = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    shape = (dims[0] * block, *dims[1:])
    n = int(np.prod(shape)) // block * size
    return TensorSlot(draw(_TEXT.filter(bool)), shape, qtype, n)


@st.composite
def headers(draw: st.DrawFn) -> tuple[list[KV], list[TensorSlot], int]:
    keys = draw(st.lists(_KEY, max_size=6, unique=True))
    kvs = [KV(k, *draw(kv_values())) for k in keys]
    slots = draw(st.lists(tensor_slots(), max_size=4, unique_by=lambda t: t.name))
    return kvs, slots, draw(st.sampled_from([1, 8, 32, 64]))


def _gguf_writer_bytes(path: Path, kvs: list[KV], slots: list[TensorSlot],
                       alignment: int) -> bytes:
    w = gguf.GGUFWriter(path, "x")
    w.kv_data = [{}]
    w.data_alignment = alignment
    for kv in kvs:
        w.add_key_value(kv.key, kv.value, kv.type, sub_type=kv.subtype)
    for t in slots:
        w.add_tensor_info(t.name, tuple(reversed(t.shape)), np.dtype(np.float32), t.n_bytes,
                          raw_dtype=t.type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    assert w.fout is not None
    w.write_padding(w.fout[0], w.fout[0].tell())
    w.close()
    return path.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers())
def test_encode_header_writes_what_gguf_writer_writes(
        tmp_path_factory: Any, header: tuple[list[KV], list[TensorSlot], int]) -> None:
    kvs, slots, alignment = header
    path = tmp_path_factory.mktemp("w") / "ref.gguf"
    assert encode_header(kvs, slots, alignment) == _gguf_writer_bytes(path, kvs, slots,
                                                                      alignment)


def test_encode_header_writes_empty_arrays_with_their_element_type() -> None:
    data = encode_header([KV("a", [], V.ARRAY, V.INT64), KV("b", [], V.ARRAY, V.STRING)], [])
    # magic, version 3, no tensors, 2 KVs; then per KV: key, ARRAY, element type, count 0
    want = b"GGUF" + (3).to_bytes(4, "little") + (0).to_bytes(8, "little") + \
        (2).to_bytes(8, "little")
    for key, sub in (b"a", V.INT64), (b"b", V.STRING):
        want += len(key).to_bytes(8, "little") + key + int(V.ARRAY).to_bytes(4, "little") + \
            int(sub).to_bytes(4, "little") + (0).to_bytes(8, "little")
    want += bytes(-len(want) % 32)
    assert data == want


# --------------------------------------------------------------------------------------
# The reader against gguf's GGUFReader
# --------------------------------------------------------------------------------------


def _reference(path: Path) -> dict[str, Any]:
    """What GGUFReader says about ``path``, as plain values (our reader's layout)."""
    reader = gguf.GGUFReader(path)
    metadata: dict[str, Any] = {}
    types: dict[str, tuple[GGUFValueType, ...]] = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value = field.contents()
        metadata[name] = value.item() if isinstance(value, np.generic) else value
        ftypes = tuple(GGUFValueType(t) for t in field.types)
        if ftypes == (V.ARRAY,):  # GGUFReader drops an empty array's element type
            ftypes = (V.ARRAY, GGUFValueType(int(field.parts[3][0])))
        types[name] = ftypes
    tensors = [(t.name, GGMLQuantizationType(t.tensor_type), tuple(int(d) for d in t.shape),
                int(t.n_elements), int(t.n_bytes), int(t.data_offset)) for t in reader.tensors]
    return {"metadata": metadata, "types": types, "tensors": tensors,
            "alignment": int(reader.alignment), "data_offset": int(reader.data_offset)}


def _ours(info: GGUFInfo) -> dict[str, Any]:
    return {"metadata": dict(info.metadata), "types": info.metadata_types,
            "tensors": [(t.name, t.type, t.shape, t.n_elements, t.n_bytes, t.offset)
                        for t in info.tensors],
            "alignment": info.alignment, "data_offset": info.data_offset}


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert list(a["metadata"]) == list(b["metadata"])  # file order
    for key in a["metadata"]:
        assert a["metadata"][key] == b["metadata"][key], key
        assert a["types"][key] == b["types"][key], key
    assert a["tensors"] == b["tensors"]
    assert (a["alignment"], a["data_offset"]) == (b["alignment"], b["data_offset"])


def _golden_files() -> list[Path]:
    files = sorted((GOLDEN / "mixes").glob("*.gguf"))
    if not files:
        message = f"golden data not found at {GOLDEN / 'mixes'}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return files


def test_reader_equals_gguf_reader_on_the_sample() -> None:
    path = SAMPLE_DIR / "liang-ai.gguf"
    _same(_ours(read_gguf(path)), _reference(path))


def test_reader_equals_gguf_reader_on_every_golden_mix() -> None:
    seen_types: set[GGUFValueType] = set()
    for path in _golden_files():
        info = read_gguf(path)
        _same(_ours(info), _reference(path))
        # the same header from bytes in memory
        _same(_ours(read_gguf_bytes(path.read_bytes(), path)), _ours(info))
        seen_types.update(t for types in info.metadata_types.values() for t in types)
    assert seen_types == set(V)  # every value type was compared at least once


def _write_with_gguf(path: Path, kvs: list[KV], slots: list[TensorSlot],
                     alignment: int) -> None:
    w = gguf.GGUFWriter(path, "x")
    w.kv_data = [{}]
    if alignment != 32:
        w.add_custom_alignment(alignment)
    for kv in kvs:
        w.add_key_value(kv.key, kv.value, kv.type, sub_type=kv.subtype)
    for i, t in enumerate(slots):
        data = np.random.default_rng(i).integers(0, 256, t.n_bytes, dtype=np.uint8)
        shape = (*reversed(t.shape[1:]), t.n_bytes // int(np.prod(t.shape[1:])))
        w.add_tensor(t.name, data.reshape(shape), raw_dtype=t.type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers())
def test_reader_equals_gguf_reader_on_generated_files(
        tmp_path_factory: Any, header: tuple[list[KV], list[TensorSlot], int]) -> None:
    kvs, slots, alignment = header
    kvs = [kv for kv in kvs if kv.key != "general.alignment"]
    path = tmp_path_factory.mktemp("r") / "m.gguf"
    _write_with_gguf(path, kvs, slots, alignment)
    info = read_gguf(path)
    _same(_ours(info), _reference(path))
    # and written back by our writer, the header is the same bytes
    fresh = read_gguf(path)  # arrays still encoded: written back without decoding
    assert encode_header([fresh.kv(k) for k in fresh.metadata], [], info.alignment) == \
        encode_header([info.kv(k) for k in info.metadata], [], info.alignment)
    kvs_back = [info.kv(k) for k in info.metadata]
    slots_back = [TensorSlot(t.name, t.shape, t.type, t.n_bytes) for t in info.tensors]
    back = encode_header(kvs_back, slots_back, info.alignment)
    assert back == path.read_bytes()[:info.data_offset]
    # and described from what was written, it is what reading gives
    assert describe_header(path, kvs_back, slots_back, alignment=info.alignment,
                           data_offset=len(back), size=info.size) == info


# --------------------------------------------------------------------------------------
# Truncated, corrupt and lying files: one GGUFError, bounded work
# --------------------------------------------------------------------------------------


def _small(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "s.gguf", "llama", kv={
        "tokenizer.ggml.tokens": ["<s>", "a", "bé", ""],
        "tokenizer.ggml.scores": [0.0, -1.5, 2.0, 3.0],
        "llama.block_count": 1,
        "general.name": "small",
    }, tensors={"token_embd.weight": np.ones((4, 32), np.float16),
                "output_norm.weight": np.ones(32, np.float32)})


def test_every_truncation_of_the_header_says_how_short(tmp_path: Path) -> None:
    data = _small(tmp_path).read_bytes()
    info = read_gguf_bytes(data, "s.gguf")
    for cut in range(info.data_offset):
        with pytest.raises(GGUFError) as exc:
            read_gguf_bytes(data[:cut], "s.gguf")
        message = str(exc.value)
        if cut < 4:
            assert message == "s.gguf: not a GGUF file (bad magic)"
        elif cut < 24:
            assert message == f"s.gguf: truncated GGUF header ({cut} bytes)"
        else:
            assert message.startswith("s.gguf: ") and "truncated" in message, message
            assert f"the file ends at {cut} (" in message \
                or f"lies outside the file ({cut} bytes)" in message, message
            assert f"({len(data) - cut} bytes short)" in message or \
                "the header" not in message and " bytes short)" in message, message


def test_truncated_tensor_data_says_how_short(tmp_path: Path) -> None:
    data = _small(tmp_path).read_bytes()
    with pytest.raises(GGUFError, match=r"output_norm.weight.*truncated GGUF \(5 bytes short\)"):
        read_gguf_bytes(data[:-5], "s.gguf")


def _offset_of(data: bytes, key: bytes) -> int:
    """The offset just after the key string ``key`` (at its value type)."""
    return data.index(len(key).to_bytes(8, "little") + key) + 8 + len(key)


@pytest.mark.parametrize(("key", "skip", "count", "pattern"), [
    # an array's element count: 2**60 strings, 2**61 float32
    (b"tokenizer.ggml.tokens", 8, 2**60, r"array of 1152921504606846976 STRING needing at "
     r"least 9223372036854775808 bytes.*bytes short\)"),
    (b"tokenizer.ggml.scores", 8, 2**61, r"array of 2305843009213693952 FLOAT32.*bytes short"),
    # the first string's length
    (b"tokenizer.ggml.tokens", 16, 2**63, r"tokens' \(string 0\) ends at offset "
     r"9223372036854775930, but the file ends at 800 \(9223372036854775130 bytes short\)"),
    # a scalar string's length
    (b"general.name", 4, 2**40, r"'general.name' at offset \d+ needs 1099511627776 bytes"),
])
def test_lying_counts_are_refused_without_allocating(tmp_path: Path, key: bytes, skip: int,
                                                     count: int, pattern: str) -> None:
    data = bytearray(_small(tmp_path).read_bytes())
    at = _offset_of(bytes(data), key) + skip  # after the value type (and element type)
    data[at:at + 8] = count.to_bytes(8, "little")
    with pytest.raises(GGUFError, match=pattern):
        read_gguf_bytes(bytes(data), "s.gguf")


def test_lying_header_counts_are_refused(tmp_path: Path) -> None:
    data = bytearray(_small(tmp_path).read_bytes())
    data[16:24] = (2**40).to_bytes(8, "little")
    with pytest.raises(GGUFError, match="1099511627776 metadata entries and 2 tensors need "
                                        "at least 14293651161160 bytes, but the file ends at 800"):
        read_gguf_bytes(bytes(data), "s.gguf")


def test_bad_utf8_and_bad_types_are_named(tmp_path: Path) -> None:
    data = _small(tmp_path).read_bytes()
    bad = data.replace("bé".encode(), b"b\xff\xff")
    info = read_gguf_bytes(bad, "s.gguf")  # the vocabulary is decoded when first used
    with pytest.raises(GGUFError, match=r"s.gguf: metadata key 'tokenizer.ggml.tokens' "
                       r"\(string 2\) is corrupt: 'utf-8' codec can't decode byte 0xff in "
                       "position 1"):
        info.metadata["tokenizer.ggml.tokens"]
    with pytest.raises(GGUFError, match=r"metadata key 'general.name' is corrupt: 'utf-8'"):
        read_gguf_bytes(data.replace(b"small", b"sm\xc3ll"), "s.gguf")
    at = _offset_of(data, b"llama.block_count")
    bad = data[:at] + (99).to_bytes(4, "little") + data[at + 4:]
    with pytest.raises(GGUFError, match="'llama.block_count' has an unknown value type 99"):
        read_gguf_bytes(bad, "s.gguf")
    at = _offset_of(data, b"output_norm.weight") + 4 + 8
    bad = data[:at] + (1000).to_bytes(4, "little") + data[at + 4:]
    with pytest.raises(GGUFError, match="tensor 'output_norm.weight' has an unknown type 1000"):
        read_gguf_bytes(bad, "s.gguf")


def test_q2_0_a_type_gguf_cannot_name_is_read_and_written(tmp_path: Path) -> None:
    # ggml type 42: 64 values in 18 bytes (modelkit's ExtraType; gguf 0.19 lacks it).
    kvs = [KV("general.architecture", "llama", V.STRING)]
    slots = [TensorSlot("blk.0.attn_q.weight", (128, 3), ExtraType.Q2_0, 3 * 2 * 18),
             TensorSlot("blk.0.attn_norm.weight", (128,), T.F32, 512)]
    header = encode_header(kvs, slots, 32)
    assert header.count((42).to_bytes(4, "little") + (0).to_bytes(8, "little")) == 1
    data = header + bytes(pad(108, 32)) + bytes(512)
    path = tmp_path / "q2.gguf"
    path.write_bytes(data)
    info = read_gguf(path)
    (q2, norm) = info.tensors
    assert (q2.type, q2.type_name, q2.n_elements, q2.n_bytes) == (ExtraType.Q2_0, "Q2_0", 384,
                                                                 108)
    assert (norm.type, norm.offset) == (T.F32, len(header) + 128)
    described = describe_header(path, kvs, slots, alignment=32, data_offset=len(header),
                                size=len(data))
    assert described.tensors == info.tensors
    with pytest.raises(ValueError, match=r"42\)? is not a valid GGMLQuantizationType"):
        gguf.GGUFReader(path)  # why modelkit reads such files itself
    short_row = encode_header(kvs, [TensorSlot("x", (96,), ExtraType.Q2_0, 27)], 32)
    with pytest.raises(GGUFError, match="row length 96 is not a multiple of the Q2_0 block "
                                        "size 64"):
        read_gguf_bytes(short_row + bytes(32), "s.gguf")


def test_strings_with_nul_bytes_and_empty_strings_decode(tmp_path: Path) -> None:
    tokens = ["", "a\0", "\0\0\0\0\0\0\0\0\0", "é", ""]
    path = write_gguf(tmp_path / "n.gguf", kv={"t": tokens, "u": ["x", "", "y"]})
    info = read_gguf(path)
    assert info.metadata["t"] == tokens and info.metadata["u"] == ["x", "", "y"]
    assert info.metadata.array_length("t") == 5
    assert info.metadata.array_length("general.architecture") is None


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupt_headers_give_a_gguf_error_or_a_valid_info(data: st.DataObject) -> None:
    raw = bytearray(_SMALL_BYTES)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, 400))
        raw[at] = data.draw(st.integers(0, 255))
    try:
        info = read_gguf_bytes(bytes(raw), "c.gguf")
        dict(info.metadata)  # every array decodes, or says what is wrong
    except GGUFError as exc:
        assert str(exc).startswith("c.gguf: ")


_SMALL_BYTES = b""


@pytest.fixture(autouse=True, scope="module")
def _small_bytes(tmp_path_factory: pytest.TempPathFactory) -> None:
    global _SMALL_BYTES
    _SMALL_BYTES = _small(tmp_path_factory.mktemp("c")).read_bytes()


def test_supplier_reads_only_the_header_in_growing_pieces(tmp_path: Path) -> None:
    data = _small(tmp_path).read_bytes()
    big = data + bytes(50 << 20)  # a file of 50 MiB more data than the header needs
    reads: list[tuple[int, int]] = []

    def read(offset: int, n: int) -> bytes:
        reads.append((offset, n))
        return big[offset:offset + n]

    info = read_gguf_from(read, len(big), "remote")
    assert str(info.path) == "remote" and info.size == len(big)
    assert _ours(info) == _ours(read_gguf_bytes(data, "local"))
    assert reads == [(0, 1 << 20)]  # one piece: the header is small


def test_long_string_arrays_are_read_in_growing_pieces(tmp_path: Path) -> None:
    """Strings longer than the read-ahead guess: the reader fetches more as it goes."""
    words = [f"{i:06d}" + "é" * 60 for i in range(40_000)]  # 4.9 MB of strings
    path = write_gguf(tmp_path / "long.gguf", kv={"t": words, "after": 7})
    data = path.read_bytes()
    reads: list[tuple[int, int]] = []

    def read(offset: int, n: int) -> bytes:
        reads.append((offset, n))
        return data[offset:offset + n]

    info = read_gguf_from(read, len(data), path)
    _same(_ours(info), _reference(path))
    assert len(reads) > 2  # consecutive pieces, each read once
    assert all(a + n == b for (a, n), (b, _) in zip(reads, reads[1:], strict=False))
    cut = len(data) // 2
    with pytest.raises(GGUFError, match=rf"metadata key 't' \(string \d+\) at offset \d+ needs "
                       rf"\d+ bytes, but the file ends at {cut} \(\d+ bytes short\)|'t' \(string "
                       rf"\d+\) ends at offset \d+, but the file ends at {cut}"):
        read_gguf_bytes(data[:cut], "long.gguf")


def test_nested_arrays_are_read_as_lists_of_lists(tmp_path: Path) -> None:
    path = tmp_path / "nested.gguf"
    w = gguf.GGUFWriter(path, "x")
    w.add_key_value("n", [[1, 2], [3]], V.ARRAY)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    info = read_gguf(path)
    assert info.metadata["n"] == [[1, 2], [3]]
    assert info.metadata_types["n"] == (V.ARRAY, V.ARRAY, V.INT32)
    # gguf's reader flattens them; its types agree
    assert tuple(gguf.GGUFReader(path).fields["n"].types) == (V.ARRAY, V.ARRAY, V.INT32)
    with pytest.raises(GGUFError, match="metadata key n: arrays of arrays are not supported"):
        info.kv("n")
