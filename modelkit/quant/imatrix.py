"""Importance matrices: llama.cpp's imatrix files, read as llama-quantize reads them.

Two formats (``common/imatrix-loader.cpp``, ``tools/quantize/quantize.cpp``):

* GGUF, as ``llama-imatrix`` writes it today: KVs ``imatrix.datasets`` (array of string),
  ``imatrix.chunk_count`` and ``imatrix.chunk_size`` (u32); per entry two F32 tensors,
  ``<name>.in_sum2`` ``[ne0, n_mat]`` (sums of squared activations) and ``<name>.counts``
  ``[1, n_mat]`` (token counts; ``n_mat`` is the number of experts of a 3-D tensor).
  Weight = ``float32(in_sum2) / float32(lround(counts[j]))`` for expert ``j``; every
  column of an expert whose count is 0 gets weight 1.
* legacy ``.dat``: int32 entry count; per entry int32 name length, name, int32 ncall,
  int32 nval, float32[nval] (already ``sum/count*ncall``); optionally int32 chunk count,
  int32 length and the dataset name.  Weight = ``float32(value) / float32(ncall)``.

``--exclude-weights``/``--include-weights`` drop or keep entries whose name contains one
of the given strings.  The ``quantize.imatrix.*`` KVs llama-quantize writes come from
:func:`imatrix_kvs`; :func:`weights_for` hands each tensor its weights (``ne0 * n_expert``
float32) with llama.cpp's checks.  Reading is I/O; the rest is pure.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType, GGUFValueType, Keys

from modelkit.errors import GGUFError, ImatrixError
from modelkit.gguf_file import GGUFInfo, TensorInfo, read_gguf_bytes

__all__ = [
    "KEY_CHUNKS",
    "KEY_DATASET",
    "KEY_ENTRIES",
    "KEY_FILE",
    "Imatrix",
    "check_model",
    "imatrix_kvs",
    "load_imatrix",
    "weights_for",
]

F32Array = npt.NDArray[np.float32]

KEY_FILE = "quantize.imatrix.file"
KEY_DATASET = "quantize.imatrix.dataset"
KEY_ENTRIES = "quantize.imatrix.entries_count"
KEY_CHUNKS = "quantize.imatrix.chunks_count"
_MAX_STR = 127  # llama-quantize copies strings into a char[128] (strncpy 127)
# The KVs llama-imatrix writes (common/imatrix-loader.cpp reads them back).
KEY_DATASETS = Keys.IMatrix.DATASETS
KEY_CHUNK_COUNT = Keys.IMatrix.CHUNK_COUNT
KEY_CHUNK_SIZE = Keys.IMatrix.CHUNK_SIZE


@dataclass(frozen=True)
class Imatrix:
    """The importance weights of one file, after ``--include``/``--exclude-weights``.

    ``file`` is the path as the user typed it (written into the output as is);
    ``weights`` maps tensor names to float32 vectors of ``ne0 * n_mat`` values.
    """

    file: str
    weights: dict[str, F32Array]
    datasets: tuple[str, ...]
    chunk_count: int
    legacy: bool


def load_imatrix(path: str | os.PathLike[str], *, include: Sequence[str] = (),
                 exclude: Sequence[str] = ()) -> Imatrix:
    """Read an imatrix file (GGUF or legacy ``.dat``) and compute the weights.

    Raises :class:`ImatrixError` for a missing, corrupt or truncated file, GGUF data
    without llama-imatrix's metadata, non-F32 or unpaired entries, both ``include`` and
    ``exclude``, and any non-finite weight.
    """
    if include and exclude:
        raise ImatrixError("--include-weights and --exclude-weights cannot be used together")
    text = os.fspath(path)
    try:
        data = Path(text).read_bytes()
    except OSError as exc:
        raise ImatrixError(f"{text}: cannot read imatrix file: {exc.strerror or exc}") from None
    legacy = data[:4] != b"GGUF"
    weights, datasets, chunks = _read_legacy(text, data) if legacy else _read_gguf(text, data)
    for name in list(weights):
        if any(s in name for s in exclude):
            del weights[name]
    if include:
        weights = {n: w for n, w in weights.items() if any(s in n for s in include)}
    for name, w in weights.items():
        bad = ~np.isfinite(w)
        if bad.any():
            raise ImatrixError(f"{text}: imatrix entry {name} contains a non-finite weight "
                               f"({float(w[bad][0])})")
    return Imatrix(text, weights, tuple(datasets), chunks, legacy)


# --------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------


def _read_gguf(text: str, data: bytes) -> tuple[dict[str, F32Array], list[str], int]:
    """The weights, datasets and chunk count of a GGUF imatrix held in ``data``, read
    with modelkit's own header reader (any tensor type a model may hold is understood,
    so a model given by mistake is named for what it lacks, not as corrupt)."""
    try:
        info = read_gguf_bytes(data, text)
        datasets = _datasets(info)
    except GGUFError as exc:
        raise ImatrixError(f"{text}: corrupt or truncated imatrix file: "
                           f"{str(exc).removeprefix(f'{text}: ')}") from None
    if not info.tensors:
        raise ImatrixError(f"{text}: no data in imatrix file")
    if not all(k in info.metadata for k in (KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE)):
        raise ImatrixError(f"{text}: missing imatrix metadata ({KEY_DATASETS}, "
                           f"{KEY_CHUNK_COUNT}, {KEY_CHUNK_SIZE}): not a llama-imatrix file")
    chunks = info.metadata[KEY_CHUNK_COUNT]
    if info.metadata_types[KEY_CHUNK_COUNT] != (GGUFValueType.UINT32,):
        raise ImatrixError(f"{text}: {KEY_CHUNK_COUNT} must be a uint32, not {chunks!r}")
    pairs: dict[str, dict[str, TensorInfo]] = {}
    for t in info.tensors:
        for suffix in (".in_sum2", ".counts"):
            if t.name.endswith(suffix) and t.name != suffix:
                pairs.setdefault(t.name[: -len(suffix)], {})[suffix] = t
    weights: dict[str, F32Array] = {}
    for name in sorted(pairs):
        pair = pairs[name]
        if len(pair) != 2:
            raise ImatrixError(f"{text}: mismatched sums and counts for {name}")
        sums_t, counts_t = pair[".in_sum2"], pair[".counts"]
        if not sums_t.type == counts_t.type == GGMLQuantizationType.F32:
            raise ImatrixError(f"{text}: sums and counts for {name} must be F32")
        sums = np.frombuffer(data, np.float32, sums_t.n_elements, sums_t.offset)
        counts = np.frombuffer(data, np.float32, counts_t.n_elements, counts_t.offset)
        if counts.size == 0 or sums.size % counts.size:
            raise ImatrixError(f"{text}: entry {name} has {sums.size} sums for "
                               f"{counts.size} counts")
        weights[name] = _gguf_weights(sums, counts)
    return weights, datasets, int(chunks)


def _datasets(info: GGUFInfo) -> list[str]:
    """``imatrix.datasets`` when it is an array of strings (else none)."""
    if info.metadata_types.get(KEY_DATASETS, ())[:2] != (GGUFValueType.ARRAY,
                                                          GGUFValueType.STRING):
        return []
    return list(info.metadata[KEY_DATASETS])


def _gguf_weights(sums: F32Array, counts: F32Array) -> F32Array:
    """``sums / float(lround(count))`` per expert, 1 where the count is 0."""
    n = counts.size
    ne0 = sums.size // n
    # lround: half away from zero; then to float32 as (float) of an int64.
    with np.errstate(invalid="ignore"):
        c = np.where(np.isfinite(counts), np.trunc(counts.astype(np.float64)
                                                   + np.copysign(0.5, counts)), 0.0)
    c32 = c.astype(np.float32)
    out = np.ones((n, ne0), dtype=np.float32)
    live = c32 > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out[live] = sums.reshape(n, ne0)[live] / c32[live, None]
    return out.ravel()


# --------------------------------------------------------------------------------------
# Legacy .dat
# --------------------------------------------------------------------------------------


class _Cursor:
    def __init__(self, text: str, data: bytes) -> None:
        self.text, self.data, self.pos = text, data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ImatrixError(f"{self.text}: corrupt or truncated imatrix file: "
                               f"cannot read {what} at byte {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def i32(self, what: str) -> int:
        return int(struct.unpack("<i", self.take(4, what))[0])


def _read_legacy(text: str, data: bytes) -> tuple[dict[str, F32Array], list[str], int]:
    cur = _Cursor(text, data)
    n_entries = cur.i32("the entry count") if len(data) >= 4 else 0
    if n_entries < 1:
        raise ImatrixError(f"{text}: not an imatrix file (no GGUF header, no legacy entries)")
    weights: dict[str, F32Array] = {}
    for i in range(n_entries):
        name = cur.take(cur.i32(f"entry {i + 1}"), f"the name of entry {i + 1}")
        ncall = cur.i32(f"entry {i + 1}")
        nval = cur.i32(f"entry {i + 1}")
        if nval < 1:
            raise ImatrixError(f"{text}: corrupt imatrix file: entry {i + 1} has {nval} values")
        values = np.frombuffer(cur.take(4 * nval, f"the data of entry {i + 1}"), "<f4")
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            w = values / np.float32(ncall) if ncall > 0 else values.copy()
        weights[name.split(b"\0", 1)[0].decode("utf-8", "replace")] = w.astype(np.float32)
    datasets: list[str] = []
    chunks = 0
    if cur.pos < len(data):  # optional trailer: chunk count, dataset name
        if cur.pos + 4 <= len(data):
            chunks = cur.i32("the chunk count")
            if cur.pos + 4 <= len(data):
                n = cur.i32("the dataset name")
                if 0 < n <= len(data) - cur.pos:
                    datasets.append(cur.take(n, "the dataset name").split(b"\0", 1)[0]
                                    .decode("utf-8", "replace"))
    return weights, datasets, chunks


# --------------------------------------------------------------------------------------
# Use
# --------------------------------------------------------------------------------------


def _capped(text: str) -> str:
    """At most 127 bytes of UTF-8 (a character cut in two is dropped)."""
    return text.encode()[:_MAX_STR].decode("utf-8", "ignore")


def imatrix_kvs(im: Imatrix | None) -> list[tuple[str, str | int, GGUFValueType]]:
    """The ``quantize.imatrix.*`` KVs llama-quantize appends, in its order: file (as
    typed), first dataset (if any), entries left after filtering, chunk count (if > 0).
    Nothing when no entry is left."""
    if im is None or not im.weights:
        return []
    kvs: list[tuple[str, str | int, GGUFValueType]] = [
        (KEY_FILE, _capped(im.file), GGUFValueType.STRING)]
    if im.datasets:
        kvs.append((KEY_DATASET, _capped(im.datasets[0]), GGUFValueType.STRING))
    kvs.append((KEY_ENTRIES, len(im.weights), GGUFValueType.UINT32))
    if im.chunk_count > 0:
        kvs.append((KEY_CHUNKS, im.chunk_count, GGUFValueType.UINT32))
    return kvs


def check_model(im: Imatrix | None, tensor_names: Sequence[str]) -> None:
    """Refuse an imatrix none of whose entries names a tensor of the model: it was made
    for another model (llama.cpp would quietly quantize everything without weights)."""
    if im is None or not im.weights:
        return
    names = set(tensor_names)
    if not any(n in names for n in im.weights):
        example = next(iter(sorted(im.weights)))
        raise ImatrixError(f"{im.file}: none of its {len(im.weights)} entries (e.g. {example}) "
                           "is a tensor of this model: is this imatrix for another model?")


def weights_for(im: Imatrix | None, name: str, shape: Sequence[int]) -> F32Array | None:
    """The weights of tensor ``name`` (GGUF shape, ``ne0`` first): ``ne0 * ne2`` values,
    one vector per expert of a 3-D tensor; None when the imatrix has no entry for it.
    An entry of another size is an imatrix for another model (token embeddings excepted,
    as in llama.cpp: they are then quantized without weights)."""
    if im is None or name not in im.weights:
        return None
    w = im.weights[name]
    ne0 = int(shape[0])
    n_mat = int(shape[2]) if len(shape) > 2 else 1
    if w.size == ne0 * n_mat:
        return w
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return None
    raise ImatrixError(
        f"{im.file}: imatrix size {w.size} is different from tensor size {ne0 * n_mat} for "
        f"{name}: is this imatrix for another model?")
