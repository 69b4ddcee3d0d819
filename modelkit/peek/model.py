"""What a peek at a remote model found: ``PeekedModel``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelkit.gguf_file import GGUFInfo
from modelkit.gguf_file.ranged import ByteCounter
from modelkit.manifest import Manifest, ModelConfig
from modelkit.peek.folder import Conversion


@dataclass
class PeekedModel:
    """What a remote model's headers and text files say."""

    source: str  # the name as asked for
    revision: str  # hub commit, or the manifest digest
    filenames: tuple[str, ...]  # repository paths (hub) or layer digests (registry) read
    gguf: GGUFInfo  # the model; a split GGUF as its merged file would be
    shards: tuple[GGUFInfo, ...]  # every shard's own header (one entry when not split)
    size: int  # bytes of the files ``pull`` would fetch
    counter: ByteCounter
    projector: GGUFInfo | None = None
    template: str = ""
    system: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    licenses: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    manifest: Manifest | None = None
    config: ModelConfig | None = None
    conversion: Conversion | None = None  # a safetensors repository: what convert gives

    @property
    def bytes_read(self) -> int:
        return self.counter.total

