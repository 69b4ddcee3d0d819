"""Byte identity with llama.cpp's convert_hf_to_gguf.py on the golden cases.

Each case's JSON describes the reference output: every KV (type, value or hashes of
array payloads), every tensor (name, shape, type, offset, sha256) and the file's sha256.
The comparison goes KV by KV, then tensor by tensor, then the whole file, so a failure
names the first thing that differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from conftest import GOLDEN as GOLDEN_ROOT
from conftest import needs_golden
from modelkit.convert import convert

GOLDEN = GOLDEN_ROOT / "convert"
CASES = ["llama-spm", "llama-tied-f32", "qwen2", "bert-minilm"]
OUTTYPES = ["f16", "f32"]


def _golden(case: str, outtype: str) -> dict[str, Any]:
    path = GOLDEN / case / f"{outtype}.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _field_value(field: gguf.ReaderField) -> Any:
    return field.contents()


def _array_payload(field: gguf.ReaderField) -> bytes:
    # parts: key len, key, type, item type, count, then the items' parts
    return b"".join(bytes(p.tobytes()) for p in field.parts[5:])


def _compare_kvs(reader: gguf.GGUFReader, golden: dict[str, Any]) -> None:
    fields = [f for f in reader.fields.values() if not f.name.startswith("GGUF.")]
    names = [f.name for f in fields]
    assert names == [k["key"] for k in golden["kv"]], "KV keys or order differ"
    for field, want in zip(fields, golden["kv"], strict=True):
        key = want["key"]
        assert field.types[0].name == want["type"], f"{key}: value type"
        if want["type"] == "ARRAY":
            assert field.types[-1].name == want["item_type"], f"{key}: item type"
            values = _field_value(field)
            assert len(values) == want["len"], f"{key}: length"
            if "value" in want:
                assert values == want["value"], f"{key}: values"
            else:
                got = hashlib.sha256(_array_payload(field)).hexdigest()
                assert got == want["sha256_raw"], f"{key}: array payload differs"
        elif want["type"] == "FLOAT32":
            assert np.float32(_field_value(field)) == np.float32(want["value"]), key
        else:
            assert _field_value(field) == want["value"], f"{key}: value"


def _compare_tensors(reader: gguf.GGUFReader, golden: dict[str, Any]) -> None:
    assert [t.name for t in reader.tensors] == [t["name"] for t in golden["tensors"]]
    base = reader.data_offset
    assert base == golden["gguf"]["data_offset"], "tensor data starts elsewhere"
    for t, want in zip(reader.tensors, golden["tensors"], strict=True):
        assert [int(d) for d in t.shape] == want["shape"], f"{t.name}: shape"
        assert t.tensor_type.name == want["type"], f"{t.name}: type"
        assert t.data_offset - base == want["offset"], f"{t.name}: offset"
        assert int(t.n_bytes) == want["nbytes"], f"{t.name}: size"
        got = hashlib.sha256(np.ascontiguousarray(t.data).tobytes()).hexdigest()
        assert got == want["sha256"], f"{t.name}: data differs"


@needs_golden(GOLDEN)
@pytest.mark.parametrize("outtype", OUTTYPES)
@pytest.mark.parametrize("case", CASES)
def test_golden_identical(case: str, outtype: str, tmp_path: Path) -> None:
    golden = _golden(case, outtype)
    out = tmp_path / f"{case}-{outtype}.gguf"
    result = convert(GOLDEN / case / "hf", out, outtype)
    reader = gguf.GGUFReader(out)
    _compare_kvs(reader, golden)
    _compare_tensors(reader, golden)
    assert result.size == golden["file"]["size"] == out.stat().st_size
    assert hashlib.sha256(out.read_bytes()).hexdigest() == golden["file"]["sha256"]
    assert result.sha256 == golden["file"]["sha256"]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp file left


@needs_golden(GOLDEN)
@pytest.mark.parametrize("case", ["llama-spm", "bert-minilm"])
def test_golden_one_pass_quantize(case: str, tmp_path: Path) -> None:
    """convert --outtype q4_K_M == convert --outtype f16 (the golden file) + quantize."""
    from modelkit.quant.requantize import quantize_file
    f16 = tmp_path / "f16.gguf"
    convert(GOLDEN / case / "hf", f16, "f16")
    assert hashlib.sha256(f16.read_bytes()).hexdigest() == _golden(case, "f16")["file"]["sha256"]
    two = tmp_path / "two.gguf"
    quantize_file(f16, two, "q4_K_M", workers=1)
    one = tmp_path / "one.gguf"
    convert(GOLDEN / case / "hf", one, "q4_K_M")
    assert one.read_bytes() == two.read_bytes()
