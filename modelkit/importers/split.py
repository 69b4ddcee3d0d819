"""Merge split GGUF shards (``name-00001-of-0000N.gguf``) into one GGUF.

Ollama and llama.cpp's loader want one file per layer, so a split model is merged as
``llama-gguf-split --merge`` does: the first shard's metadata without the ``split.*``
keys, then every shard's tensors in shard order, their bytes copied unchanged. Each
shard is checked against its own ``split.*`` keys first, so a shard from another set,
a missing shard or shards in the wrong order are refused before anything is written.

:func:`modelkit.gguf_file.encode_header` writes the header, metadata and tensor table;
the tensor data is streamed from the shards in chunks, so memory use does not grow with
the model: into a store blob (``merge_into_store``) or a file (``merge``).  Each shard's
header is read once; the merged file's ``GGUFInfo`` is known without reading it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gguf import Keys

from modelkit.errors import GGUFError
from modelkit.gguf_file import KV, GGUFInfo, TensorSlot, describe_header, encode_header, read_gguf
from modelkit.gguf_file.format import pad
from modelkit.progress import ByteCounter
from modelkit.store import BlobWrite, Store, atomic_file

SPLIT_NO = Keys.Split.LLM_KV_SPLIT_NO
SPLIT_COUNT = Keys.Split.LLM_KV_SPLIT_COUNT
SPLIT_TENSORS = Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT
CHUNK = 8 << 20


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


@dataclass(frozen=True)
class MergePlan:
    """A checked split set and the merged file's header, ready to be streamed."""

    infos: tuple[GGUFInfo, ...]
    kvs: tuple[KV, ...]
    slots: tuple[TensorSlot, ...]
    alignment: int
    header: bytes

    @property
    def size(self) -> int:
        return len(self.header) + sum(pad(t.n_bytes, self.alignment) for t in self.slots)

    def describe(self, path: Path) -> GGUFInfo:
        """The merged file's description (at ``path``), without reading it back."""
        return describe_header(path, self.kvs, self.slots, alignment=self.alignment,
                               data_offset=len(self.header), size=self.size)


def plan_merge(shards: Sequence[Path]) -> MergePlan:
    """Read each shard's header (once), check the set, lay out the merged header.

    Raises GGUFError when a shard is not a valid GGUF or does not belong to the set.
    """
    return plan_from_headers(tuple(read_gguf(p) for p in shards))


def plan_from_headers(infos: tuple[GGUFInfo, ...]) -> MergePlan:
    """:func:`plan_merge` of shards whose headers are already read (local or remote)."""
    check_shards(infos)
    first = infos[0]
    kvs = tuple(first.kv(key) for key in first.metadata if not key.startswith("split."))
    slots = tuple(TensorSlot(t.name, t.shape, t.type, t.n_bytes)
                  for i in infos for t in i.tensors)
    return MergePlan(infos, kvs, slots, first.alignment,
                     encode_header(kvs, slots, first.alignment))


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


def write_merged(plan: MergePlan, out: _Writable, progress: ByteCounter | None = None) -> None:
    """Stream the merged GGUF to ``out``: the header, then every tensor's bytes from its
    shard, in chunks, each padded to the alignment."""
    out.write(plan.header)
    total = sum(t.n_bytes for t in plan.slots)
    done = 0
    for info in plan.infos:
        with open(info.path, "rb") as src:
            for t in info.tensors:
                src.seek(t.offset)
                left = t.n_bytes
                while left:
                    chunk = src.read(min(CHUNK, left))
                    if not chunk:
                        raise GGUFError(f"{info.path}: tensor {t.name!r} is truncated")
                    out.write(chunk)
                    left -= len(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
                out.write(bytes(pad(t.n_bytes, plan.alignment) - t.n_bytes))


def merge(shards: Sequence[Path], out: Path, progress: ByteCounter | None = None) -> GGUFInfo:
    """Merge ``shards`` (in order) into the file ``out``, atomically; return its
    description.  On failure ``out`` does not exist (or is left as it was)."""
    plan = plan_merge(shards)
    with atomic_file(out, mode=None) as f:
        write_merged(plan, f, progress)
    return plan.describe(out)


def merge_into_store(store: Store, plan: MergePlan, progress: ByteCounter | None = None
                     ) -> tuple[BlobWrite, GGUFInfo]:
    """Merge straight into a new blob of ``store``; the blob and its description."""
    with store.open_writer() as w:
        write_merged(plan, w, progress)
        written = w.commit()
    return written, plan.describe(store.blob_path(written.digest))
