"""``push``: a stored model to a registry, the way Ollama's ``PushModel`` does.

``retrieving manifest``; then for each layer and the config, ``pushing <12 hex>``:

1. ``HEAD /v2/<repo>/blobs/<digest>``: a 200 means the registry has it; nothing is sent.
2. ``POST /v2/<repo>/blobs/uploads/``, with ``?mount=<digest>&from=<repo>`` when the
   layer records the model it came from (its ``from``) on this same registry: a 201
   means the registry linked the blob from that repository, again nothing is sent.
3. Otherwise the blob goes up in ``PATCH`` chunks (``Content-Range: a-b``), each to the
   Location the previous answer gave, and ``PUT <location>&digest=<digest>`` closes it.

Then ``pushing manifest``: ``PUT /v2/<repo>/manifests/<tag>`` with the stored manifest
bytes unchanged and its media type as Content-Type; ``success``.
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

from modelkit.errors import InvalidNameError, RegistryError, StoreError, UnauthorizedError
from modelkit.manifest import Layer
from modelkit.names import Digest, ModelName
from modelkit.progress import ByteProgress, ProgressCallback, ProgressEvent, ignore_progress
from modelkit.registry.auth import Credentials
from modelkit.registry.client import RegistryClient
from modelkit.registry.pulling import unique_layers
from modelkit.registry.transport import FileBody
from modelkit.store import Store

Outcome = Literal["uploaded", "mounted", "existing"]
CHUNK_SIZE = 64 << 20  # bytes per PATCH: a failure costs one chunk, not the blob
TICK = 0.2


@dataclass
class PushResult:
    name: ModelName
    digest: Digest  # the manifest's digest
    uploaded: list[Digest] = field(default_factory=list)
    mounted: list[Digest] = field(default_factory=list)
    existing: list[Digest] = field(default_factory=list)  # the registry had them


def push(store: Store, name: ModelName | str, *, insecure: bool = False,
         progress: ProgressCallback = ignore_progress,
         credentials: Credentials | None = None) -> PushResult:
    model = name if isinstance(name, ModelName) else ModelName.parse(name)
    progress(ProgressEvent("retrieving manifest"))
    # Held shared: an rm or prune must not delete a blob while we send it.
    with store.lock(exclusive=False):
        stored = store.get(model)
        manifest = stored.manifest
        for layer in manifest.all_layers():
            if not store.has_blob(layer.digest, layer.size):
                raise StoreError(f"cannot push {model.display_shortest()}: blob "
                                 f"{layer.digest} is missing or has the wrong size")
        client = RegistryClient(model, insecure=insecure, credentials=credentials)
        result = PushResult(model, manifest.digest)
        lists = {"uploaded": result.uploaded, "mounted": result.mounted,
                 "existing": result.existing}
        for layer in unique_layers(manifest):
            lists[_push_blob(client, store, layer, progress)].append(layer.digest)
        progress(ProgressEvent("pushing manifest"))
        resp = client.request("PUT", client.url(f"manifests/{model.tag}"),
                              headers={"Content-Type": manifest.media_type},
                              body=manifest.to_bytes())
        if resp.status not in (200, 201, 202):
            raise client.failure("push manifest", resp)
        resp.close()
    progress(ProgressEvent("success"))
    return result


def _mount_source(layer: Layer, target: RegistryClient) -> str | None:
    """The repository to mount ``layer`` from: that of the model named by its ``from``,
    if it lives on the registry we push to and is another repository."""
    if not layer.from_:
        return None
    try:
        source = ModelName.parse(layer.from_)
    except InvalidNameError:
        return None  # Ollama also records file names there
    if source.host.lower() != target.host.lower() or source.repository == target.repository:
        return None
    return source.repository


def _push_blob(client: RegistryClient, store: Store, layer: Layer,
               progress: ProgressCallback) -> Outcome:
    """Send one blob unless the registry has it; which of ``PushResult``'s lists it
    belongs to."""
    size = layer.size
    report = ByteProgress(progress, f"pushing {layer.digest.short()}", str(layer.digest), size)
    report(0)
    resp = client.request("HEAD", client.url(f"blobs/{layer.digest}"))
    resp.close()
    if resp.status == 200:
        report(size)
        return "existing"
    if resp.status != 404:
        raise client.failure(f"push {layer.digest.short()}", resp)

    location = _start_upload(client, layer)
    if location is None:
        report(size)
        return "mounted"
    path = store.blob_path(layer.digest)
    offset = 0
    last = 0.0

    def sent(n: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= TICK:
            last = now
            report(offset + n)

    while offset < size:
        length = min(CHUNK_SIZE, size - offset)
        resp = client.request("PATCH", location, body=FileBody(path, offset, length),
                              on_sent=sent, headers={
                                  "Content-Type": "application/octet-stream",
                                  "Content-Range": f"{offset}-{offset + length - 1}"})
        if resp.status != 202:
            raise client.failure(f"push {layer.digest.short()}", resp)
        location = _location(client, resp.url, resp.header("Location"))
        resp.close()
        offset += length
        report(offset)
    sep = "&" if urllib.parse.urlsplit(location).query else "?"
    resp = client.request("PUT", location + f"{sep}digest={urllib.parse.quote(str(layer.digest))}")
    if resp.status not in (201, 204):
        raise client.failure(f"push {layer.digest.short()}", resp)
    resp.close()
    report(size)
    return "uploaded"


def _start_upload(client: RegistryClient, layer: Layer) -> str | None:
    """The upload session's URL, or None when the blob was mounted."""
    url = client.url("blobs/uploads/")
    source = _mount_source(layer, client)
    if source is not None:
        query = urllib.parse.urlencode({"mount": str(layer.digest), "from": source})
        try:
            resp = client.request("POST", f"{url}?{query}")
        except UnauthorizedError:
            # We may not read the source repository: upload the blob instead.
            resp = client.request("POST", url)
    else:
        resp = client.request("POST", url)
    if resp.status == 201:
        resp.close()
        return None
    if resp.status != 202:
        raise client.failure(f"push {layer.digest.short()}", resp)
    location = _location(client, resp.url, resp.header("Docker-Upload-Location")
                         or resp.header("Location"))
    resp.close()
    return location


def _location(client: RegistryClient, base: str, location: str | None) -> str:
    if not location:
        raise RegistryError(f"push: {client.host} did not say where to upload (no Location)")
    return urllib.parse.urljoin(base, location)
