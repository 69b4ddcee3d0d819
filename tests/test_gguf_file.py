"""Our GGUF header writer and reader against gguf's GGUFWriter and GGUFReader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelkit.gguf_file import KV, TensorSlot, encode_header

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
