"""Peek at a registry model: its manifest, config and small layers whole, and the
model (and projector) layer's GGUF header by blob GETs with ``Range`` through
``modelkit.registry``'s client (auth challenges and redirects to blob storage as in
``pull``; the Authorization header never leaves the registry's host)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable, Iterator
from typing import Any

from modelkit.errors import ModelNotFoundError, RegistryError
from modelkit.gguf_file.ranged import TEXT_LIMIT, ByteCounter, Fetch, RangedFile
from modelkit.manifest import Layer, MediaType, ModelConfig
from modelkit.names import ModelName
from modelkit.peek.model import PeekedModel
from modelkit.registry.client import RegistryClient
from modelkit.registry.pulling import fetch_manifest, parse_manifest

CHUNK = 1 << 16


def _blob_fetch(client: RegistryClient, layer: Layer) -> Fetch:
    url = client.url(f"blobs/{layer.digest}")

    def fetch(offset: int, n: int) -> tuple[int, Iterable[bytes]]:
        resp = client.request("GET", url, headers={"Range": f"bytes={offset}-{offset + n - 1}"})
        if resp.status == 404:
            resp.close()
            raise ModelNotFoundError(f"{client.host}/{client.repository}: blob {layer.digest} "
                                     "does not exist on the registry")
        if resp.status not in (200, 206):
            raise client.failure(f"read blob {layer.digest}", resp)

        def chunks() -> Iterator[bytes]:
            with resp:
                try:
                    while chunk := resp.read_some(CHUNK):
                        yield chunk
                except (OSError, http.client.HTTPException) as exc:
                    raise RegistryError(f"read blob {layer.digest}: {client.host}: "
                                        f"{exc}") from None

        return resp.status, chunks()

    return fetch


def peek_registry(name: ModelName, *, insecure: bool = False) -> PeekedModel:
    """The model ``name`` on its registry, read without pulling it."""
    client = RegistryClient(name, insecure=insecure)
    counter = ByteCounter()
    raw = fetch_manifest(client, name.tag)
    counter.total += len(raw)
    manifest = parse_manifest(raw, f"{name.host}/{name.repository}:{name.tag}")
    where = f"{name.host}/{name.repository}"

    def ranged(layer: Layer) -> RangedFile:
        return RangedFile(_blob_fetch(client, layer), layer.size, f"{where}@{layer.digest}",
                          counter)

    def text(layer: Layer | None) -> str:
        return ranged(layer).text(TEXT_LIMIT) if layer is not None else ""

    def loaded(media: MediaType) -> Any:
        body = text(manifest.first(media))
        try:
            return json.loads(body) if body else None
        except ValueError:
            raise RegistryError(f"{where}: the {media.value} layer is not JSON") from None

    config = ModelConfig.from_bytes(text(manifest.config).encode(), where=f"{where} config")
    model = manifest.first(MediaType.MODEL)
    if model is None:
        raise RegistryError(f"{where}:{name.tag}: the manifest has no model layer")
    gguf = ranged(model).gguf()
    projector_layer = manifest.first(MediaType.PROJECTOR)
    projector = ranged(projector_layer).gguf() if projector_layer is not None else None
    params, messages = loaded(MediaType.PARAMS), loaded(MediaType.MESSAGES)
    return PeekedModel(
        source=str(name), revision=str(manifest.digest),
        filenames=tuple(str(layer.digest) for layer in manifest.layers), gguf=gguf,
        shards=(gguf,), size=manifest.total_size, counter=counter, projector=projector,
        template=text(manifest.first(MediaType.TEMPLATE)) or text(
            manifest.first(MediaType.PROMPT)),
        system=text(manifest.first(MediaType.SYSTEM)),
        params=params if isinstance(params, dict) else {},
        licenses=[text(layer) for layer in manifest.of_type(MediaType.LICENSE)],
        messages=messages if isinstance(messages, list) else [],
        manifest=manifest, config=config)
