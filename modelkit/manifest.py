"""Manifests, layers, media types and the config blob, byte-compatible with Ollama.

``MediaType`` is the only place media-type strings live. Serialisation follows Go's
``encoding/json`` as Ollama uses it (struct field order, ``omitempty``, compact, HTML-safe
escaping, trailing newline), so digests match what Ollama writes for the same content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from modelkit.errors import StoreError
from modelkit.gojson import go_json_dumps
from modelkit.names import Digest


def _json_object(data: bytes, problem: str) -> dict[str, Any]:
    """A JSON object from bytes, or StoreError("<problem>: <why>")."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{problem}: {exc}") from None
    if not isinstance(obj, dict):
        raise StoreError(f"{problem}: not an object")
    return obj


class MediaType(str, Enum):
    MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    CONFIG = "application/vnd.docker.container.image.v1+json"
    MODEL = "application/vnd.ollama.image.model"
    PROJECTOR = "application/vnd.ollama.image.projector"
    ADAPTER = "application/vnd.ollama.image.adapter"
    DRAFT = "application/vnd.ollama.image.draft"
    TEMPLATE = "application/vnd.ollama.image.template"
    PROMPT = "application/vnd.ollama.image.prompt"  # legacy: read as a template
    SYSTEM = "application/vnd.ollama.image.system"
    PARAMS = "application/vnd.ollama.image.params"
    MESSAGES = "application/vnd.ollama.image.messages"
    LICENSE = "application/vnd.ollama.image.license"
    TENSOR = "application/vnd.ollama.image.tensor"
    JSON = "application/vnd.ollama.image.json"
    EMBED = "application/vnd.ollama.image.embed"  # deprecated, ignored

    @classmethod
    def parse(cls, text: str) -> MediaType | str:
        """Known media types as members; unknown ones kept verbatim (a pulled manifest
        may carry types newer than ours, and we must not lose them)."""
        try:
            return cls(text)
        except ValueError:
            return text

    @property
    def short(self) -> str:
        return self.value.rsplit(".", 1)[-1]


# Layers that are GGUF files (weights) rather than small text/JSON blobs.
GGUF_MEDIA_TYPES = frozenset({MediaType.MODEL, MediaType.PROJECTOR, MediaType.ADAPTER,
                              MediaType.DRAFT})


@dataclass(frozen=True)
class Layer:
    media_type: MediaType | str
    digest: Digest
    size: int
    from_: str | None = None
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        # Field order and omitempty as Ollama's manifest.Layer.
        out: dict[str, Any] = {
            "mediaType": str(getattr(self.media_type, "value", self.media_type)),
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.from_:
            out["from"] = self.from_
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Layer:
        if not isinstance(obj, dict):
            raise StoreError("manifest layer is not an object")
        try:
            size = obj["size"]
            if not isinstance(size, int) or size < 0:
                raise StoreError(f"manifest layer has an invalid size: {size!r}")
            return cls(
                media_type=MediaType.parse(str(obj["mediaType"])),
                digest=Digest.parse(str(obj["digest"])),
                size=size,
                from_=obj.get("from") or None,
                name=obj.get("name") or None,
            )
        except KeyError as exc:
            raise StoreError(f"manifest layer lacks {exc.args[0]!r}") from None

    def with_from(self, source: str | None) -> Layer:
        return replace(self, from_=source)


@dataclass(frozen=True)
class Manifest:
    config: Layer
    layers: tuple[Layer, ...]
    schema_version: int = 2
    media_type: str = MediaType.MANIFEST.value
    # The bytes this manifest was read from (pulled manifests are stored as served).
    raw: bytes | None = field(default=None, compare=False, repr=False)

    def to_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        obj = {
            "schemaVersion": self.schema_version,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        return (go_json_dumps(obj) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "manifest") -> Manifest:
        obj = _json_object(data, f"{where}: corrupt manifest")
        if "config" not in obj:
            raise StoreError(f"{where}: corrupt manifest: no config")
        try:
            layers = obj.get("layers") or []
            if not isinstance(layers, list):
                raise StoreError("layers is not a list")
            return cls(
                config=Layer.from_json(obj["config"]),
                layers=tuple(Layer.from_json(x) for x in layers),
                schema_version=int(obj.get("schemaVersion", 2)),
                media_type=str(obj.get("mediaType", MediaType.MANIFEST.value)),
                raw=data,
            )
        except StoreError as exc:
            raise StoreError(f"{where}: corrupt manifest: {exc}") from None
        except Exception as exc:  # a malformed digest or type in a hand-edited file
            raise StoreError(f"{where}: corrupt manifest: {exc}") from None

    @property
    def digest(self) -> Digest:
        return Digest("sha256", hashlib.sha256(self.to_bytes()).hexdigest())

    @property
    def total_size(self) -> int:
        """What ``ollama list`` shows as SIZE: config plus every layer."""
        return self.config.size + sum(layer.size for layer in self.layers)

    def all_layers(self) -> tuple[Layer, ...]:
        return (*self.layers, self.config)

    def first(self, media_type: MediaType) -> Layer | None:
        for layer in self.layers:
            if layer.media_type == media_type:
                return layer
        return None

    def of_type(self, media_type: MediaType) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type == media_type]


@dataclass(frozen=True)
class ModelConfig:
    """Ollama's ConfigV2 plus the RootFS wrapper fields it writes last."""

    model_format: str = "gguf"
    model_family: str = ""
    model_families: tuple[str, ...] = ()
    model_type: str = ""
    file_type: str = ""
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    remote_host: str = ""
    remote_model: str = ""
    capabilities: tuple[str, ...] = ()
    context_length: int = 0
    embedding_length: int = 0
    base_name: str = ""
    architecture: str = "amd64"  # Ollama hard-codes these two, whatever the host
    os: str = "linux"
    # Keys we do not model (a config written by a newer Ollama), kept on rewrite.
    extra: tuple[tuple[str, Any], ...] = ()

    def to_bytes(self) -> bytes:
        obj: dict[str, Any] = {
            "model_format": self.model_format,
            "model_family": self.model_family,
            "model_families": list(self.model_families) or None,
            "model_type": self.model_type,
            "file_type": self.file_type,
        }
        optional: Sequence[tuple[str, Any]] = (
            ("renderer", self.renderer), ("parser", self.parser), ("requires", self.requires),
            ("remote_host", self.remote_host), ("remote_model", self.remote_model),
            ("capabilities", list(self.capabilities)),
            ("context_length", self.context_length),
            ("embedding_length", self.embedding_length), ("base_name", self.base_name),
        )
        for key, value in optional:
            if value:
                obj[key] = value
        for key, value in self.extra:
            obj[key] = value
        obj["architecture"] = self.architecture
        obj["os"] = self.os
        return (go_json_dumps(obj) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "config") -> ModelConfig:
        obj = _json_object(data, f"{where}: corrupt config blob")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        kwargs: dict[str, Any] = {}
        for key in known:
            if key in obj and obj[key] is not None:
                value = obj[key]
                if key in ("model_families", "capabilities"):
                    value = tuple(str(v) for v in value)
                kwargs[key] = value
        extra = tuple((k, v) for k, v in obj.items() if k not in known)
        return cls(**kwargs, extra=extra)
