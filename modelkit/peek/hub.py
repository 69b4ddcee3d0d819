"""Peek at an ``hf.co`` or ``modelscope.cn`` model: the listing and the tag's choice as
``pull`` makes them, then ranged GETs through each client's own HTTP session.

- Hugging Face: ``hf_hub_url`` at the listed commit, ``get_session()`` (the client's
  httpx client, redirects to the CDN followed, the token dropped on another origin by
  the client), ``build_hf_headers`` (token, user agent), ``hf_raise_for_status`` (the
  client's error classes, translated by the backend like a download's).
- ModelScope: the client's download URL (``/api/v1/models/{id}/repo?FilePath=``) and its
  requests session with its login cookie.

Nothing goes through the clients' download functions, so their caches stay as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from modelkit import chat_templates, errors
from modelkit.gguf_file import GGUFInfo
from modelkit.gguf_file.ranged import ByteCounter, Fetch, RangedFile
from modelkit.importers.choose import RepoEntry, choose, conversion_entries
from modelkit.importers.common import parse_overrides
from modelkit.importers.huggingface import HuggingFaceBackend
from modelkit.importers.modelscope import ModelScopeBackend
from modelkit.importers.split import plan_from_headers
from modelkit.names import ModelName
from modelkit.peek.folder import plan_remote_conversion
from modelkit.peek.model import PeekedModel

CHUNK = 1 << 16
TIMEOUT = 30.0


def _range(offset: int, n: int) -> dict[str, str]:
    return {"Range": f"bytes={offset}-{offset + n - 1}", "Accept-Encoding": "identity"}


def _hf_fetch(backend: HuggingFaceBackend, entry: RepoEntry) -> Fetch:
    # deferred for start-up cost only (see importers/huggingface.py)
    from huggingface_hub import get_session, hf_hub_url
    from huggingface_hub import utils as hf_utils

    client_utils: Any = hf_utils  # build_hf_headers and hf_raise_for_status are not re-exported

    url = hf_hub_url(backend.repo, entry.path, revision=backend.commit,
                     endpoint=backend.endpoint)

    def fetch(offset: int, n: int) -> tuple[int, Iterable[bytes]]:
        stack = contextlib.ExitStack()
        resp = stack.enter_context(get_session().stream(
            "GET", url, headers={**client_utils.build_hf_headers(), **_range(offset, n)},
            follow_redirects=True, timeout=TIMEOUT))
        if resp.status_code >= 400:
            with stack:
                resp.read()
                client_utils.hf_raise_for_status(resp)

        def chunks() -> Iterator[bytes]:
            with stack:
                yield from resp.iter_bytes(CHUNK)

        return resp.status_code, chunks()

    return fetch


def _ms_fetch(backend: ModelScopeBackend, entry: RepoEntry) -> Fetch:
    legacy = cast(Any, backend.api.legacy)
    url = legacy.get_download_url(backend.repo, "model", entry.path, backend.branch)
    legacy._ensure_session_auth()  # the login cookie, as the client's own downloads send
    session = legacy._session

    def fetch(offset: int, n: int) -> tuple[int, Iterable[bytes]]:
        resp = session.get(url, headers=_range(offset, n), stream=True, timeout=TIMEOUT)
        if resp.status_code >= 400:
            with resp:
                raise _ms_status_error(backend, entry, resp.status_code)

        def chunks() -> Iterator[bytes]:
            with resp:
                yield from resp.iter_content(CHUNK)

        return int(resp.status_code), chunks()

    return fetch


def _ms_status_error(backend: ModelScopeBackend, entry: RepoEntry,
                     status: int) -> errors.ModelkitError:
    name, repo, hub = backend.name, backend.repo, backend.hub
    if status in (401, 403):
        return errors.UnauthorizedError(
            f"{name}: {hub} refused access to {entry.path} in {repo} (HTTP {status}): set "
            "MODELSCOPE_API_TOKEN to an access token with access to it, or run "
            "'modelscope login'")
    return errors.HubError(f"{name}: {hub} answered HTTP {status} for {entry.path} in {repo}")


def peek_hub(name: ModelName, backend: HuggingFaceBackend | ModelScopeBackend) -> PeekedModel:
    """The model ``name`` on its hub, read by ranges (header, tensor table, overrides);
    for a repository of safetensors, the GGUF that converting it would give."""
    if backend.offline:
        raise errors.HubError(
            f"{name}: not in the store, and showing it reads its header from {backend.hub}, "
            "but offline mode is on (HF_HUB_OFFLINE); pull it first, or go online")
    counter = ByteCounter()
    where = f"{name.host}/{name.repository}"

    def ranged(entry: RepoEntry) -> RangedFile:
        fetch = (_hf_fetch(backend, entry) if isinstance(backend, HuggingFaceBackend)
                 else _ms_fetch(backend, entry))
        return RangedFile(fetch, entry.size, f"{where}/{entry.path}", counter, backend.errors)

    with backend.errors():
        listing = backend.listing()
        to_convert = conversion_entries(listing.entries)
        if to_convert is not None:
            conversion = plan_remote_conversion(to_convert, ranged, where)
            return _peeked(name, listing.revision, to_convert, conversion.gguf, (),
                           counter, conversion=conversion)
        selection = choose(listing.entries, name.tag, name=str(name), repo=name.repository,
                           hub=backend.hub)
        shards = tuple(ranged(e).gguf() for e in selection.model.entries)
        projector = ranged(selection.projector).gguf() if selection.projector else None
        texts = {key: ranged(entry).text() for key, entry in selection.overrides.items()}
    template, system, params = parse_overrides(texts, where)
    gguf = shards[0]
    if len(shards) > 1:
        gguf = plan_from_headers(shards).describe(Path(shards[0].path))
    return _peeked(name, listing.revision, selection.entries, gguf, shards, counter,
                   projector=projector, template=template, system=system or "",
                   params=params or {})


def _peeked(name: ModelName, revision: str, entries: Sequence[RepoEntry], gguf: GGUFInfo,
            shards: tuple[GGUFInfo, ...], counter: ByteCounter, *,
            template: str | None = None, params: dict[str, Any] | None = None,
            **more: Any) -> PeekedModel:
    # As create does: the GGUF's chat template, recognised, unless the repository has one.
    detected = chat_templates.detect_template(gguf.chat_template or "")
    if template is None and detected is not None:
        template = detected.template
        params = {**(detected.parameters or {}), **(params or {})}
    return PeekedModel(
        source=str(name), revision=revision, filenames=tuple(e.path for e in entries),
        gguf=gguf, shards=shards or (gguf,), size=sum(e.size for e in entries),
        counter=counter, template=template or "", params=params or {}, **more)
