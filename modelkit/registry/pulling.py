"""``pull``: a model from a registry into the store, the way Ollama's ``PullModel`` does.

1. ``pulling manifest``: GET the manifest by tag (Ollama's Accept header), keep its bytes.
2. For each layer, then the config: a blob already in the store is a cache hit (a full
   bar); any other is fetched in ranged parts by a few threads into a hidden, sparse
   partial file whose parts are recorded, so an interrupted pull continues where it
   stopped. A redirect to blob storage is resolved once per blob, then the parts go
   there directly (without our Authorization header when it is another host).
3. ``verifying sha256 digest``: every downloaded blob is hashed in full; only when all
   match are they renamed into ``blobs/``. A mismatch deletes that download and fails,
   leaving the store as it was.
4. ``writing manifest`` (the bytes as served), ``removing unused layers`` (those of the
   model's previous manifest that nothing uses now), ``success``.
"""

from __future__ import annotations

import concurrent.futures as cf
import http.client
import threading
import urllib.parse
from dataclasses import dataclass, field

from modelkit.errors import (
    DigestError,
    ModelNotFoundError,
    RegistryError,
    StoreError,
)
from modelkit.manifest import Layer, Manifest, MediaType
from modelkit.names import Digest, ModelName
from modelkit.progress import (
    VERIFYING,
    ByteProgress,
    ProgressCallback,
    ProgressEvent,
    ignore_progress,
)
from modelkit.registry.auth import Credentials
from modelkit.registry.client import REDIRECTS, RegistryClient, UnreachableError
from modelkit.store import Store
from modelkit.store.partial import Part, PartialBlob, plan_parts

# Ollama's numbers: 16 parts of 100 MB to 1000 MB; we fetch them with fewer threads.
PART_COUNT = 16
MIN_PART_SIZE = 100_000_000
MAX_PART_SIZE = 1_000_000_000
WORKERS = 4
RETRIES = 6  # per part, with exponential backoff from RETRY_DELAY seconds
RETRY_DELAY = 1.0
READ_CHUNK = 1 << 20
TICK = 0.2  # seconds between progress events and state saves
MAX_MANIFEST = 4 << 20


@dataclass
class PullResult:
    name: ModelName  # as stored (an existing spelling of the name wins)
    manifest: Manifest
    downloaded: list[Digest] = field(default_factory=list)  # blobs fetched now
    cached: list[Digest] = field(default_factory=list)  # blobs the store had


class _Retry(Exception):
    """A transient failure of one part: the part is fetched again from where it is."""


def fetch_manifest(client: RegistryClient, tag: str) -> bytes:
    resp = client.request("GET", client.url(f"manifests/{tag}"),
                          headers={"Accept": MediaType.MANIFEST.value})
    if resp.status == 404:
        resp.close()
        raise ModelNotFoundError("pull model manifest: file does not exist")
    if resp.status != 200:
        raise client.failure("pull model manifest", resp)
    with resp:
        try:
            data = resp.read_limited(MAX_MANIFEST + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(f"pull model manifest: {client.host}: {exc}") from None
        served = resp.header("Docker-Content-Digest")
    if len(data) > MAX_MANIFEST:
        raise RegistryError(f"pull model manifest: larger than {MAX_MANIFEST} bytes")
    # The registry names the digest of what it meant to send: check what arrived.
    if served and served.startswith("sha256:") and Digest.parse(served) != Digest.of(data):
        raise DigestError(f"pull model manifest: digest mismatch: want {served}, "
                          f"got {Digest.of(data)}")
    return data


def parse_manifest(data: bytes, where: str) -> Manifest:
    """The manifest, with every digest validated before any becomes a path."""
    try:
        return Manifest.from_bytes(data, where=where)
    except StoreError as exc:
        raise RegistryError(f"pull model manifest: {exc}") from None


def unique_layers(manifest: Manifest) -> list[Layer]:
    seen: set[Digest] = set()
    out = []
    for layer in (*manifest.layers, manifest.config):  # Ollama's order: config last
        if layer.digest not in seen:
            seen.add(layer.digest)
            out.append(layer)
    return out


def pull(store: Store, name: ModelName | str, *, insecure: bool = False,
         progress: ProgressCallback = ignore_progress,
         credentials: Credentials | None = None) -> PullResult:
    model = name if isinstance(name, ModelName) else ModelName.parse(name)
    client = RegistryClient(model, insecure=insecure, credentials=credentials)
    progress(ProgressEvent("pulling manifest"))
    raw = fetch_manifest(client, model.tag)
    manifest = parse_manifest(raw, f"{model.host}/{model.repository}:{model.tag}")
    target = store.canonical(model)
    result = PullResult(target, manifest)
    with store.lock(exclusive=False):
        partials: list[PartialBlob] = []
        try:
            for layer in unique_layers(manifest):
                bar = ByteProgress(progress, f"pulling {layer.digest.short()}",
                                   str(layer.digest), layer.size)
                partial = PartialBlob(store, layer.digest, layer.size)
                plan = plan_parts(layer.size, PART_COUNT, MIN_PART_SIZE, MAX_PART_SIZE)
                # A blob in the store is a cache hit, as is one that another process
                # stored while we waited for its partial file.
                if store.has_blob(layer.digest) or not partial.open(plan):
                    result.cached.append(layer.digest)
                    bar(layer.size)
                    continue
                partials.append(partial)
                _download(client, partial, bar)
            progress(ProgressEvent(VERIFYING))
            for partial in partials:
                partial.verify()
            for partial in partials:
                partial.install()
                result.downloaded.append(partial.digest)
        finally:
            for partial in partials:
                partial.close()
        progress(ProgressEvent("writing manifest"))
        stale = store.replace_manifest(target, manifest)
    if stale:
        progress(ProgressEvent("removing unused layers"))
        store.prune_unused(stale)
    progress(ProgressEvent("success"))
    return result


# ------------------------------------------------------------------ one blob
def _download(client: RegistryClient, partial: PartialBlob, bar: ByteProgress) -> None:
    """Fetch the missing bytes of every part, a few parts at a time. Progress events
    and state saves happen on this thread only: callbacks need not be thread-safe."""
    bar(partial.completed)
    pending = [p for p in partial.parts if not p.done]
    if not pending:
        return
    # Resolve a redirect once for many parts; a lone part just follows it.
    url = (_direct_url(client, partial.digest) if len(pending) > 1
           else client.url(f"blobs/{partial.digest}"))
    stop = threading.Event()
    pool = cf.ThreadPoolExecutor(max_workers=min(WORKERS, len(pending)))
    try:
        futures = [pool.submit(_fetch_part, client, url, partial, p, stop) for p in pending]
        not_done: set[cf.Future[None]] = set(futures)
        while not_done:
            done, not_done = cf.wait(not_done, timeout=TICK,
                                     return_when=cf.FIRST_EXCEPTION)
            partial.save()
            bar(partial.completed)
            for future in done:
                future.result()  # the first failure (after its retries) ends the pull
    finally:
        stop.set()  # a failure or Ctrl-C: the other parts stop after their next chunk
        pool.shutdown(wait=True, cancel_futures=True)
        partial.save()
    bar(partial.completed)


def _direct_url(client: RegistryClient, digest: Digest) -> str:
    """The blob's URL, or where the registry redirects it (S3, R2, a CDN). Asking for
    one byte keeps this cheap when the registry serves the blob itself."""
    url = client.url(f"blobs/{digest}")
    resp = client.request("GET", url, headers={"Range": "bytes=0-0"}, follow_redirects=False)
    if resp.status in REDIRECTS:
        location = resp.header("Location")
        resp.close()
        if not location:
            raise RegistryError(f"pull {digest.short()}: redirect without a Location")
        return urllib.parse.urljoin(url, location)
    if resp.status in (200, 206):
        resp.close()
        return url
    if resp.status == 404:
        resp.close()
        raise RegistryError(f"pull {digest.short()}: blob {digest} not found in "
                            f"{client.repository} on {client.host}")
    raise client.failure(f"pull {digest.short()}", resp)


def _fetch_part(client: RegistryClient, url: str, partial: PartialBlob, part: Part,
                stop: threading.Event) -> None:
    """Fetch one part, retrying transient failures from the byte where it stopped. The
    retry budget is reset whenever an attempt made progress, so a flaky connection
    slows a pull down but does not fail it."""
    attempt = 0
    while not (stop.is_set() or part.done):
        before = part.completed
        try:
            _fetch_range(client, url, partial, part, stop)
            continue
        except (_Retry, UnreachableError) as exc:
            if part.completed > before:
                attempt = 0
            elif attempt >= RETRIES:
                raise RegistryError(f"pull {partial.digest.short()}: {exc} (gave up after "
                                    f"{RETRIES + 1} attempts; run the pull again to "
                                    "resume)") from None
        stop.wait(RETRY_DELAY * 2 ** attempt)
        attempt += 1


def _fetch_range(client: RegistryClient, url: str, partial: PartialBlob, part: Part,
                 stop: threading.Event) -> None:
    start = part.offset + part.completed
    end = part.offset + part.size - 1
    resp = client.request("GET", url, headers={"Range": f"bytes={start}-{end}"})
    with resp:
        if resp.status == 206:
            got = (resp.header("Content-Range") or "").strip()
            if not got.startswith(f"bytes {start}-"):
                raise _Retry(f"asked for bytes {start}-{end}, got {got or 'no range'}")
            skip = 0
        elif resp.status == 200:
            skip = start  # the server ignores ranges: read up to our bytes
        elif resp.status in (408, 429) or resp.status >= 500:
            raise _Retry(f"HTTP {resp.status}")
        else:
            raise client.failure(f"pull {partial.digest.short()}", resp)
        try:
            while skip:
                data = resp.read_some(min(READ_CHUNK, skip))
                if not data:
                    raise _Retry("connection closed early")
                skip -= len(data)
            while not part.done and not stop.is_set():
                data = resp.read_some(min(READ_CHUNK, part.size - part.completed))
                if not data:
                    raise _Retry(f"connection closed after {part.offset + part.completed} "
                                 f"of {partial.size} bytes")
                partial.write_at(part, data)
        except (OSError, http.client.HTTPException) as exc:
            raise _Retry(f"connection lost: {exc or type(exc).__name__}") from None


def ensure_model(store: Store, name: ModelName | str, *, insecure: bool = False,
                 progress: ProgressCallback = ignore_progress,
                 credentials: Credentials | None = None) -> ModelName:
    """The stored model ``name`` refers to, pulled first when the store lacks it (what
    Ollama does for ``FROM <name>``). Call it before taking the store lock."""
    model = name if isinstance(name, ModelName) else ModelName.parse(name)
    existing = store.resolve(model)
    if existing is not None:
        return existing
    progress(ProgressEvent("pulling model"))
    return pull(store, model, insecure=insecure, progress=progress,
                credentials=credentials).name
