"""``hf.co/{user}/{repo}[:{tag}]`` through ``huggingface_hub``.

Everything goes through the client and its cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub``):
``HfApi.model_info(files_metadata=True)`` lists the repository with the sha256 of every
LFS file and the commit it describes; files are fetched at that commit.

Two things the client does not do are added here, with the client's own pieces:

- huggingface_hub only compares sizes; every GGUF is hashed against the listed sha256
  before it may enter the cache's ``blobs/`` (and so before it can reach the store);
- huggingface_hub 2.x restarts an interrupted download from zero in the next process.
  GGUFs are therefore fetched with the client's ``http_get`` into
  ``blobs/<etag>.incomplete``, which the next run continues with a Range request,
  under the client's own per-blob lock; ``hf_hub_download`` then links the finished
  blob into ``snapshots/<commit>/`` as usual.

Plain HTTP is used for GGUFs even on Xet-backed repositories: the hub serves them over
HTTP too, and only HTTP gives a resumable partial file.

Settings are read at call time: ``HF_ENDPOINT``, ``HF_HUB_CACHE``/``HF_HOME`` and
``HF_HUB_OFFLINE`` (falling back to what the client read at import); the token is the
client's (``HF_TOKEN``, then the saved login).

huggingface_hub (and httpx2) is imported inside the functions that use it, for start-up cost only
(about half a second, which commands that never touch a hub should not pay).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from modelkit.errors import (
    DigestError,
    HubError,
    ModelkitError,
    ModelNotFoundError,
    UnauthorizedError,
)
from modelkit.importers.choose import RepoEntry
from modelkit.importers.common import (
    Listing,
    TranslatesClientErrors,
    env_path,
    env_true,
    one_line,
    transfer_status,
    verify,
)
from modelkit.names import ModelName
from modelkit.progress import ByteProgress, ProgressCallback, ProgressEvent

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _bar_class(report: Any) -> Any:
    """A tqdm stand-in for the client's ``tqdm_class``: byte counts go to ``report``
    (or nowhere), so the client never draws its own bars."""

    class Bar:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.n = int(kwargs.get("initial") or 0)
            self.total = int(kwargs.get("total") or 0)
            if report and self.total:
                report(self.n, self.total)

        def update(self, n: float | None = 1) -> None:
            self.n += int(n or 0)
            if report and self.total:
                report(self.n, self.total)

        def close(self) -> None:
            pass

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    return Bar


def _network_errors() -> tuple[type[BaseException], ...]:
    """The transport's exceptions: httpx2 for huggingface_hub 2.x (requests before)."""
    try:
        # deferred for start-up cost only (see the module docstring)
        import httpx2
    except ImportError:  # pragma: no cover - older huggingface_hub
        return ()
    return (httpx2.HTTPError,)


def _has_model(snapshot: Path) -> bool:
    """A cached snapshot with a GGUF, or a Hugging Face model folder to convert."""
    return any(snapshot.rglob("*.gguf")) or (snapshot / "config.json").is_file()


def _same_origin(a: str, b: str) -> bool:
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.netloc) == (y.scheme, y.netloc)


class HuggingFaceBackend(TranslatesClientErrors):
    def __init__(self, name: ModelName, *, offline: bool | None, revision: str | None) -> None:
        # deferred for start-up cost only (see the module docstring)
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        self.name = name
        self.repo = name.repository
        self.endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        self.hub = urlsplit(self.endpoint).netloc or self.endpoint
        home = env_path("HF_HOME")
        self.cache_dir = (env_path("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
                          or (home / "hub" if home else None) or Path(constants.HF_HUB_CACHE))
        self.offline = offline if offline is not None else (
            env_true("HF_HUB_OFFLINE") or env_true("TRANSFORMERS_OFFLINE")
            or constants.HF_HUB_OFFLINE)
        self.revision = revision
        self.folder = repo_folder_name(repo_id=self.repo, repo_type="model")
        self.storage = self.cache_dir / self.folder
        self.commit = ""

    # ----------------------------------------------------------------- listing
    def listing(self) -> Listing:
        if self.offline:
            return self._cached_listing()
        # deferred for start-up cost only (see the module docstring)
        from huggingface_hub import HfApi

        info = HfApi(endpoint=self.endpoint).model_info(
            self.repo, revision=self.revision, files_metadata=True)
        if not info.sha:
            raise HubError(f"{self.name}: {self.hub} did not say which commit it lists")
        self.commit = info.sha
        entries = tuple(
            RepoEntry(s.rfilename, s.size or 0, s.lfs.sha256.lower() if s.lfs else None)
            for s in info.siblings or ())
        if self.revision is None or not _COMMIT_RE.match(self.revision):
            self._remember_ref(self.revision or "main", info.sha)
        return Listing(info.sha, entries)

    def _remember_ref(self, ref: str, commit: str) -> None:
        """``refs/<branch>``, as hf_hub_download keeps it, so that offline runs (ours
        and the client's) know which snapshot the branch meant."""
        path = self.storage / "refs" / ref
        with contextlib.suppress(OSError):
            if path.is_file() and path.read_text() == commit:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(commit)
            os.replace(tmp, path)

    def _cached_listing(self) -> Listing:
        commit = self._cached_commit()
        if commit is None:
            raise HubError(f"{self.name}: {self.repo} is not in the Hugging Face cache "
                           f"({self.cache_dir}) and offline mode is on (HF_HUB_OFFLINE)")
        self.commit = commit
        snapshot = self.storage / "snapshots" / commit
        entries = []
        for path in sorted(snapshot.rglob("*")):
            if not path.is_file():
                continue
            blob = path.resolve()
            # The blob's name is the etag: the sha256 for LFS files, as the hub reported it.
            sha = blob.name if _SHA256_RE.match(blob.name) else None
            entries.append(RepoEntry(path.relative_to(snapshot).as_posix(),
                                     blob.stat().st_size, sha))
        return Listing(commit, tuple(entries), cached=True)

    def _cached_commit(self) -> str | None:
        snapshots = self.storage / "snapshots"
        wanted = self.revision or "main"
        if _COMMIT_RE.match(wanted):
            return wanted if (snapshots / wanted).is_dir() else None
        ref = self.storage / "refs" / wanted
        if ref.is_file():
            commit = ref.read_text().strip()
            if _has_model(snapshots / commit):
                return commit
        if self.revision is not None or not snapshots.is_dir():
            return None
        # No ref for main (files fetched by commit only): the newest snapshot with a GGUF.
        dirs = [d for d in snapshots.iterdir() if d.is_dir() and _has_model(d)]
        return max(dirs, key=lambda d: d.stat().st_mtime).name if dirs else None

    # --------------------------------------------------------------- download
    def download(self, entry: RepoEntry, progress: ProgressCallback) -> Path:
        status, digest = transfer_status(entry)
        if self.offline:
            path = (self.storage / "snapshots" / self.commit / entry.path).resolve()
            progress(ProgressEvent(status, digest, total=entry.size, completed=entry.size))
            verify(path, entry, str(self.name), progress)
            return path
        # deferred for start-up cost only (see the module docstring)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.repo, entry.path, cache_dir=self.cache_dir,
                                        revision=self.commit)
        if isinstance(cached, str):
            pointer = Path(cached)
            progress(ProgressEvent(status, digest, total=entry.size, completed=entry.size))
            try:
                verify(pointer.resolve(), entry, str(self.name), progress)
                return pointer.resolve()
            except DigestError:
                # A damaged cache entry: drop it and fetch the file again.
                pointer.resolve().unlink(missing_ok=True)
                pointer.unlink(missing_ok=True)
        return self._download(entry, progress, status, digest)

    def _download(self, entry: RepoEntry, progress: ProgressCallback, status: str,
                  digest: str | None) -> Path:
        # deferred for start-up cost only (see the module docstring)
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
        from huggingface_hub import utils as hf_utils
        from huggingface_hub.file_download import http_get

        client_utils: Any = hf_utils  # WeakFileLock and build_hf_headers are not re-exported

        url = hf_hub_url(self.repo, entry.path, revision=self.commit, endpoint=self.endpoint)
        meta = get_hf_file_metadata(url, endpoint=self.endpoint)
        if not meta.etag:
            raise HubError(f"{self.name}: {self.hub} gave no ETag for {entry.path}")
        blob = self.storage / "blobs" / meta.etag
        lock = self.cache_dir / ".locks" / self.folder / f"{meta.etag}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        blob.parent.mkdir(parents=True, exist_ok=True)
        verified = False
        with client_utils.WeakFileLock(lock):
            if not blob.exists():
                partial = blob.with_name(f"{meta.etag}.incomplete")
                headers = client_utils.build_hf_headers()
                if not _same_origin(url, meta.location):
                    headers.pop("authorization", None)  # never send the token to a CDN
                bar = _bar_class(ByteProgress(progress, status, digest))
                with open(partial, "ab") as fh:
                    resume = fh.tell()
                    if meta.size is not None and resume > meta.size:
                        fh.truncate(0)
                        resume = 0
                    http_get(meta.location, fh, resume_size=resume, headers=headers,
                             expected_size=meta.size, displayed_filename=entry.basename,
                             tqdm_class=bar)
                try:
                    verify(partial, entry, str(self.name), progress)
                except DigestError:
                    partial.unlink(missing_ok=True)
                    raise
                os.replace(partial, blob)
                verified = True
        # The client links the finished blob into snapshots/<commit>/ as it always does.
        pointer = Path(hf_hub_download(
            self.repo, entry.path, revision=self.commit, cache_dir=self.cache_dir,
            endpoint=self.endpoint, tqdm_class=cast(Any, _bar_class(None))))
        path = pointer.resolve()
        if not verified:
            try:
                verify(path, entry, str(self.name), progress)
            except DigestError:
                path.unlink(missing_ok=True)
                pointer.unlink(missing_ok=True)
                raise
        return path

    def read_text(self, entry: RepoEntry) -> str:
        if self.offline:
            path = self.storage / "snapshots" / self.commit / entry.path
        else:
            # deferred for start-up cost only (see the module docstring)
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(
                self.repo, entry.path, revision=self.commit, cache_dir=self.cache_dir,
                endpoint=self.endpoint, tqdm_class=cast(Any, _bar_class(None))))
        return path.read_text(encoding="utf-8", errors="replace")

    # ----------------------------------------------------------------- errors
    def _translate(self, exc: Exception) -> ModelkitError:
        # deferred for start-up cost only (see the module docstring)
        from huggingface_hub import errors as hf

        name, repo, hub = self.name, self.repo, self.hub
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, hf.GatedRepoError):
            return UnauthorizedError(
                f"{name}: repository {repo} on {hub} is gated: accept its conditions at "
                f"{self.endpoint}/{repo} and set HF_TOKEN to a token of that account")
        if isinstance(exc, hf.RepositoryNotFoundError):
            if status in (401, 403):
                return UnauthorizedError(
                    f"{name}: {hub} refused access to repository {repo} (HTTP {status}): it "
                    f"does not exist, or it is private: {self._token_hint()}")
            return ModelNotFoundError(
                f'model "{name}" not found: repository {repo} does not exist on {hub}')
        if isinstance(exc, hf.RevisionNotFoundError):
            return ModelNotFoundError(f'model "{name}" not found: revision {self.revision} '
                                      f"does not exist in {repo} on {hub}")
        if isinstance(exc, hf.OfflineModeIsEnabled | hf.LocalEntryNotFoundError) and self.offline:
            return HubError(f"{name}: not available offline from the Hugging Face cache "
                            f"({self.cache_dir}): {one_line(exc)}")
        if isinstance(exc, hf.HfHubHTTPError) and status in (401, 403):
            return UnauthorizedError(f"{name}: {hub} refused the request (HTTP {status}): "
                                     f"{self._token_hint()}")
        if isinstance(exc, hf.HfHubHTTPError):
            detail = exc.server_message or str(exc).splitlines()[0]
            return HubError(f"{name}: {hub} answered HTTP {status}: {one_line(detail)}")
        if isinstance(exc, _network_errors() + (hf.LocalEntryNotFoundError, ConnectionError)):
            return HubError(f"{name}: cannot reach {self.endpoint}: {one_line(exc)} "
                            "(--offline builds from the Hugging Face cache)")
        return HubError(f"{name}: download from {hub} failed: {type(exc).__name__}: "
                        f"{one_line(exc)}")

    @staticmethod
    def _token_hint() -> str:
        # deferred for start-up cost only (see the module docstring)
        from huggingface_hub import get_token

        if get_token():
            return "the token in use (HF_TOKEN or the saved login) has no access to it"
        return "set HF_TOKEN to a token with access to it"
