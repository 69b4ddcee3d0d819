"""What the hub importers share: the fetch sequence, hashing, overrides.

A hub backend knows how to list a repository and get one file, verified, from its
client; ``fetch_from_hub`` does the rest the same way for every hub: choose the files
for the tag, download them, read the repository's overrides.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from modelkit.errors import DigestError, HubError, ModelkitError, ModelNotFoundError
from modelkit.importers import MODEL, PROJECTOR, ImportedFile, ImportedModel
from modelkit.importers.choose import RepoEntry, choose, conversion_entries
from modelkit.names import ModelName
from modelkit.progress import VERIFYING, ByteProgress, ProgressCallback, ProgressEvent
from modelkit.store import hash_file

HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class Listing:
    revision: str  # the commit the listing describes (or a branch name, when unknown)
    entries: tuple[RepoEntry, ...]
    cached: bool = False  # read from the client's cache (offline): only what was downloaded


class TranslatesClientErrors:
    """Mixin for hub backends: any exception of a hub client leaves as a ModelkitError
    with a one-line message (``_translate`` knows the client's exception classes)."""

    def _translate(self, exc: Exception) -> ModelkitError:
        raise NotImplementedError

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except ModelkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - nothing from the client may escape
            raise self._translate(exc) from None


class Backend(Protocol):
    """One hub, through its official client."""

    hub: str  # for messages: "huggingface.co", "modelscope.cn", or the endpoint's host

    def listing(self) -> Listing: ...

    def download(self, entry: RepoEntry, progress: ProgressCallback) -> Path:
        """The file's local path, its sha256 checked against ``entry.sha256`` when known
        (a mismatch raises DigestError and leaves nothing behind)."""
        ...

    def read_text(self, entry: RepoEntry) -> str: ...


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """A client's (often multi-line) message as one line for our error."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def transfer_status(entry: RepoEntry) -> tuple[str, str | None]:
    """Ollama's ``pulling <12 hex>`` when the digest is known, else the file name."""
    if entry.sha256:
        return f"pulling {entry.sha256[:12]}", f"sha256:{entry.sha256}"
    return f"downloading {entry.basename}", None


def digest_error(entry: RepoEntry, where: str, got: str, *, note: str) -> DigestError:
    return DigestError(f"{entry.path} from {where}: sha256 mismatch: the hub lists "
                       f"sha256:{entry.sha256}, the download has sha256:{got}; {note}")


def verify(path: Path, entry: RepoEntry, where: str, progress: ProgressCallback) -> str | None:
    """Hash ``path``; raise DigestError when it is not the file the hub lists (the
    caller decides what to delete). Returns the digest, or None when the hub gave none."""
    if not entry.sha256:
        return None
    got = hash_file(path, ByteProgress(progress, VERIFYING,
                                   f"sha256:{entry.sha256}")).hex
    if got != entry.sha256:
        raise digest_error(entry, where, got, note="the file was not used")
    return got


def parse_overrides(texts: dict[str, str], where: str
                    ) -> tuple[str | None, str | None, dict[str, Any] | None]:
    params: dict[str, Any] | None = None
    if "params" in texts:
        try:
            loaded = json.loads(texts["params"])
        except ValueError as exc:
            raise HubError(f"{where}: the repository's params file is not valid JSON: "
                           f"{one_line(exc)}") from None
        if not isinstance(loaded, dict):
            raise HubError(f"{where}: the repository's params file is not a JSON object")
        params = loaded
    return texts.get("template"), texts.get("system"), params


def fetch_folder(name: ModelName, backend: Backend, listing: Listing,
                 entries: list[RepoEntry], progress: ProgressCallback) -> ImportedModel:
    """Download the files a conversion needs and lay them out as a model folder: links
    to the client's cached files under their repository paths, in a hidden temporary
    folder (named after the repository, as a clone would be) that the caller removes."""
    progress(ProgressEvent(f"{name.repository}@{listing.revision[:12]} has no GGUF files: "
                           f"fetching {len(entries)} files to convert"))
    paths = [(e, backend.download(e, progress)) for e in entries]
    top = Path(tempfile.mkdtemp(prefix=".tmp-hf-"))
    folder = top / name.repository.rsplit("/", 1)[-1]
    try:
        for entry, path in paths:
            link = folder / entry.path
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    except OSError as exc:
        shutil.rmtree(top, ignore_errors=True)
        raise HubError(f"{name}: cannot lay out the downloaded files: {exc}") from None
    return ImportedModel(source=str(name), repo=name.repository, revision=listing.revision,
                         filenames=tuple(e.path for e in entries), files=(),
                         temporary=(top,), folder=folder)


def fetch_from_hub(name: ModelName, backend: Backend, progress: ProgressCallback
                   ) -> ImportedModel:
    where = f"{name.host}/{name.repository}"
    listing = backend.listing()
    to_convert = conversion_entries(listing.entries)
    if to_convert is not None:
        return fetch_folder(name, backend, listing, to_convert, progress)
    try:
        selection = choose(listing.entries, name.tag, name=str(name), repo=name.repository,
                           hub=backend.hub)
    except ModelNotFoundError as exc:
        if listing.cached:  # say why the choice is narrower than on the hub
            raise ModelNotFoundError(f"{exc} (offline: only files in the cache count)") from None
        raise
    parts = selection.model.split_count
    progress(ProgressEvent(f"using {selection.model.path}{f' ({parts} parts)' if parts else ''}"
                           f" from {name.repository}@{listing.revision[:12]}"))
    paths = [backend.download(e, progress) for e in selection.model.entries]
    files = []
    if selection.projector is not None:
        files.append(ImportedFile(backend.download(selection.projector, progress), PROJECTOR,
                                  selection.projector.sha256))
    texts = {key: backend.read_text(entry) for key, entry in selection.overrides.items()}
    template, system, params = parse_overrides(texts, where)
    if parts:  # the store merges the shards
        files.insert(0, ImportedFile(paths[0], MODEL, None, shards=tuple(paths)))
    else:
        files.insert(0, ImportedFile(paths[0], MODEL, selection.model.entries[0].sha256))
    return ImportedModel(
        source=str(name), repo=name.repository, revision=listing.revision,
        filenames=tuple(e.path for e in selection.entries), files=tuple(files),
        template=template, system=system, params=params)


def env_path(*names: str) -> Path | None:
    """The first of the environment variables ``names`` that is set, as a path."""
    for var in names:
        value = os.environ.get(var)
        if value:
            return Path(os.path.expandvars(os.path.expanduser(value)))
    return None


def env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
