"""Merge split GGUF shards (``name-00001-of-0000N.gguf``) into one GGUF.

Ollama and llama.cpp's loader want one file per layer, so a split model is merged as
``llama-gguf-split --merge`` does: the first shard's metadata without the ``split.*``
keys, then every shard's tensors in shard order, their bytes copied unchanged. Each
shard is checked against its own ``split.*`` keys first, so a shard from another set,
a missing shard or shards in the wrong order are refused before anything is written.

``gguf.GGUFWriter`` writes the header, metadata and tensor table; the tensor data is
streamed from the shards in chunks, so memory use does not grow with the model.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys

from modelkit.errors import GGUFError
from modelkit.gguf_file import GGUFInfo, read_gguf

SPLIT_NO = Keys.Split.LLM_KV_SPLIT_NO
SPLIT_COUNT = Keys.Split.LLM_KV_SPLIT_COUNT
SPLIT_TENSORS = Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT
CHUNK = 8 << 20

ByteProgress = Callable[[int, int], None]


def check_shards(infos: Sequence[GGUFInfo]) -> int:
    """Check shards against their split.* keys; return the total tensor count."""
    count = len(infos)
    total = infos[0].metadata.get(SPLIT_TENSORS)
    seen: dict[str, Path] = {}
    for i, info in enumerate(infos):
        where = f"{info.path} (part {i + 1} of {count})"
        for key, want in ((SPLIT_COUNT, count), (SPLIT_NO, i)):
            got = info.metadata.get(key)
            if got != want:
                raise GGUFError(f"{where}: {key} is {got}, expected {want}")
        got_total = info.metadata.get(SPLIT_TENSORS, total)
        if got_total != total:
            raise GGUFError(f"{where}: {SPLIT_TENSORS} is {got_total}, the first part says "
                            f"{total}")
        for t in info.tensors:
            if t.name in seen:
                raise GGUFError(f"{where}: tensor {t.name!r} is also in {seen[t.name]}")
            seen[t.name] = info.path
    if not isinstance(total, int) or len(seen) != total:
        raise GGUFError(f"{infos[0].path}: the parts hold {len(seen)} tensors, but "
                        f"{SPLIT_TENSORS} says {total}")
    return total


def _field_value(field: Any) -> tuple[Any, GGUFValueType, GGUFValueType | None]:
    """A metadata value as GGUFWriter takes it, bytes-exact: strings stay bytes."""
    types = [GGUFValueType(t) for t in field.types]
    main = types[0]
    if main == GGUFValueType.STRING:
        return bytes(field.parts[-1]), main, None
    if main != GGUFValueType.ARRAY:
        return field.contents(), main, None
    if len(types) != 2:
        raise GGUFError(f"metadata key {field.name!r}: nested arrays cannot be merged")
    sub = types[1]
    if not field.data:
        raise GGUFError(f"metadata key {field.name!r}: an empty array cannot be written")
    if sub == GGUFValueType.STRING:
        return [bytes(field.parts[i]) for i in field.data], main, sub
    return field.contents(), main, sub


def _copy_metadata(writer: GGUFWriter, first: Path) -> None:
    reader = GGUFReader(first)
    # GGUFWriter adds general.architecture itself; start empty so that the merged file
    # keeps the first shard's keys in the first shard's order.
    writer.kv_data = [{}]
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name.startswith("split."):
            continue
        try:
            value, vtype, sub = _field_value(field)
        except GGUFError as exc:
            raise GGUFError(f"{first}: {exc}") from None
        writer.add_key_value(name, value, vtype, sub)


def merge(shards: Sequence[Path], out: Path, progress: ByteProgress | None = None) -> GGUFInfo:
    """Merge ``shards`` (in order) into ``out``; return the merged file's description.

    Raises GGUFError when a shard is not a valid GGUF or does not belong to the set.
    On failure ``out`` does not exist.
    """
    infos = [read_gguf(p) for p in shards]
    check_shards(infos)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.partial")
    try:
        _write(infos, tmp, progress)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    merged = read_gguf(out)
    if [t.name for t in merged.tensors] != [t.name for i in infos for t in i.tensors]:
        raise GGUFError(f"{out}: the merged file does not hold the parts' tensors")
    return merged


def _write(infos: Sequence[GGUFInfo], out: Path, progress: ByteProgress | None) -> None:
    first = infos[0]
    writer = GGUFWriter(out, first.architecture)
    writer.data_alignment = first.alignment
    _copy_metadata(writer, first.path)
    for info in infos:
        for t in info.tensors:
            # GGUFWriter takes numpy order (outermost first); GGUFInfo has GGUF order.
            # The float32 dtype is a placeholder: raw_dtype sets the stored type.
            writer.add_tensor_info(t.name, tuple(reversed(t.shape)), np.dtype(np.float32),
                                   t.n_bytes, raw_dtype=t.type)
    total = sum(t.n_bytes for i in infos for t in i.tensors)
    done = 0
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        fout = writer.fout[0]
        for info in infos:
            with open(info.path, "rb") as src:
                for t in info.tensors:
                    writer.write_padding(fout, fout.tell())
                    src.seek(t.offset)
                    left = t.n_bytes
                    while left:
                        chunk = src.read(min(CHUNK, left))
                        if not chunk:
                            raise GGUFError(f"{info.path}: tensor {t.name!r} is truncated")
                        fout.write(chunk)
                        left -= len(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                    writer.write_padding(fout, t.n_bytes)
        fout.flush()
        os.fsync(fout.fileno())
    finally:
        writer.close()
