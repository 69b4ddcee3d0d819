"""Merge split GGUF shards (``name-00001-of-0000N.gguf``) into one GGUF.

Ollama and llama.cpp's loader want one file per layer, so a split model is merged as
``llama-gguf-split --merge`` does: the first shard's metadata without the ``split.*``
keys, then every shard's tensors in shard order, their bytes copied unchanged. Each
shard is checked against its own ``split.*`` keys first, so a shard from another set,
a missing shard or shards in the wrong order are refused before anything is written.

:func:`modelkit.gguf_file.encode_header` writes the header, metadata and tensor table;
the tensor data is streamed from the shards in chunks, so memory use does not grow with
the model.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from gguf import Keys

from modelkit.errors import GGUFError
from modelkit.gguf_file import GGUFInfo, TensorSlot, encode_header, read_gguf
from modelkit.gguf_file.format import pad

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
    kvs = [first.kv(key) for key in first.metadata if not key.startswith("split.")]
    slots = [TensorSlot(t.name, t.shape, t.type, t.n_bytes) for i in infos for t in i.tensors]
    total = sum(t.n_bytes for t in slots)
    done = 0
    with open(out, "wb") as fout:
        fout.write(encode_header(kvs, slots, first.alignment))
        for info in infos:
            with open(info.path, "rb") as src:
                for t in info.tensors:
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
                    fout.write(bytes(pad(t.n_bytes, first.alignment) - t.n_bytes))
        fout.flush()
        os.fsync(fout.fileno())
