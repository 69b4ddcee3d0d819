"""A hub repository of safetensors weights and no GGUF: the GGUF ``convert`` would
produce, without fetching the weights.

The files a conversion reads (``importers.choose.conversion_entries``, as ``pull`` and
``convert`` use) are read by ranges: the small ones (config, tokenizer, model card)
whole, each ``.safetensors`` file only its header. They are laid out in a temporary
folder, each safetensors file as a sparse file of its full size holding just the
header, and the converter plans the conversion there as it would for the real folder
(it reads headers and shapes, never tensor data). The folder is removed at once.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelkit.convert.converter import outtype_sizes, plan_conversion
from modelkit.convert.one_pass import plan_quantized
from modelkit.convert.safetensors_file import MAX_HEADER
from modelkit.errors import ConvertError, RemoteReadError
from modelkit.gguf_file import GGUFInfo, read_gguf_from
from modelkit.gguf_file.ranged import RangedFile
from modelkit.gguf_file.reader import FIRST_READ
from modelkit.importers.choose import RepoEntry
from modelkit.quant.policy import parse_file_type

SMALL_FILE_LIMIT = 64 << 20  # a tokenizer.json of a large vocabulary is tens of MB


@dataclass(frozen=True)
class Conversion:
    """What converting the repository would give."""

    gguf: GGUFInfo  # the header convert would write (default outtype)
    hf_architecture: str
    sizes: dict[str, int]  # outtype (and q4_K_M) -> GGUF file size


def safetensors_header(file: RangedFile) -> bytes:
    """The 8-byte length and the JSON header of a remote safetensors file."""
    head = file.read(0, min(file.size, FIRST_READ))
    if len(head) < 8:
        raise ConvertError(f"{file.source}: truncated safetensors file ({file.size} bytes)")
    (n,) = struct.unpack_from("<Q", head)
    if n > MAX_HEADER or 8 + n > file.size:
        raise ConvertError(f"{file.source}: safetensors header length {n} does not fit in "
                           f"the file ({file.size} bytes) or the {MAX_HEADER}-byte limit")
    if 8 + n > len(head):
        head += file.read(len(head), 8 + n - len(head))
    return head[:8 + n]


def _lay_out(folder: Path, entries: Sequence[RepoEntry],
             ranged: Callable[[RepoEntry], RangedFile]) -> None:
    for entry in entries:
        path = folder / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        file = ranged(entry)
        if entry.path.endswith(".safetensors"):
            with open(path, "wb") as out:
                out.write(safetensors_header(file))
                out.truncate(entry.size)  # sparse: the data is never read
        elif entry.size > SMALL_FILE_LIMIT:
            raise RemoteReadError(f"{file.source}: {entry.size} bytes, larger than the "
                                  f"{SMALL_FILE_LIMIT >> 20} MiB limit for a tokenizer or "
                                  "config file")
        else:
            path.write_bytes(file.read(0, entry.size))


def plan_remote_conversion(entries: Sequence[RepoEntry],
                           ranged: Callable[[RepoEntry], RangedFile],
                           where: str) -> Conversion:
    """Plan the conversion of the repository files ``entries`` (``where`` names the
    repository in messages and becomes the GGUF's path)."""
    with tempfile.TemporaryDirectory(prefix=".tmp-show-") as tmp:
        folder = Path(tmp) / where.rsplit("/", 1)[-1]
        _lay_out(folder, entries, ranged)
        try:
            plan = plan_conversion(folder, "auto")
        except ConvertError as exc:
            raise ConvertError(str(exc).replace(str(folder), where)) from None
        try:
            header, size = plan.header(), plan.size
            sizes = outtype_sizes(plan)
            sizes["q4_K_M"] = plan_quantized(plan, parse_file_type("q4_K_M")).size
            hf_arch = plan.folder.hf_arch
        finally:
            plan.model.close()

    def read(offset: int, n: int) -> bytes:
        piece = header[offset:offset + n]
        return piece + bytes(min(n, size - offset) - len(piece))

    return Conversion(read_gguf_from(read, size, where), hf_arch, sizes)
