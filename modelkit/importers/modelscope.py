"""``modelscope.cn/{user}/{repo}[:{tag}]`` through the ``modelscope`` client.

The ``modelscope`` package is a thin shim over ``modelscope_hub`` since 1.38; its own
``HubApi.get_model_files`` drops the sha256 of each file, so the listing and the
downloads use ``modelscope_hub`` (installed with ``modelscope``) directly:

- ``HubApi.legacy.list_repo_files`` gives path, size, sha256 and the commit of each
  file; the newest commit is recorded as the revision;
- ``DownloadManager.download_file`` is given the listed sha256 and size: the client
  hashes the bytes before they replace anything in its cache
  (``$MODELSCOPE_CACHE/models/{owner}--{name}/snapshots/{branch}/``), re-checks cache
  hits the same way, and resumes an interrupted download from its ``.incomplete`` file
  with a Range request, in the next process too.

The branch is always passed (``master`` by default): without one, the client asks the
public site for the newest release tag, whatever endpoint is configured. The endpoint
is ``$MODELSCOPE_ENDPOINT`` at call time (else ``https://modelscope.cn``), the token
``$MODELSCOPE_API_TOKEN`` or the saved ``modelscope login``. ModelScope has no offline
switch of its own: ``offline=True`` builds from the cache, where the client keeps no
digests (it checked them when it downloaded the files).

modelscope_hub (and requests, tqdm) is imported inside the functions that use it, for
start-up cost only (about half a second, which commands that never touch a hub should
not pay).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelkit import errors
from modelkit.importers.choose import RepoEntry
from modelkit.importers.common import (
    Listing,
    TranslatesClientErrors,
    digest_error,
    one_line,
    transfer_status,
)
from modelkit.names import ModelName
from modelkit.progress import ByteProgress, ProgressCallback, ProgressEvent, ignore_progress

DEFAULT_ENDPOINT = "https://modelscope.cn"
DEFAULT_BRANCH = "master"
_PARTIAL_SUFFIXES = (".incomplete", ".parallel_tmp", ".lock")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def _endpoint() -> str:
    value = (os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN")
             or DEFAULT_ENDPOINT).strip()
    if not value.lower().startswith(("http://", "https://")):
        value = f"https://{value}"
    return value.rstrip("/")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The client draws tqdm bars and logs INFO lines on every download, with no switch
    to turn them off; modelkit reports progress through its callback instead."""
    # deferred for start-up cost only (see the module docstring)
    import tqdm.auto
    from modelscope_hub import _download

    module: Any = _download
    saved = module.tqdm
    logger = logging.getLogger("modelscope_hub")
    level = logger.level
    module.tqdm = functools.partial(tqdm.auto.tqdm, disable=True)
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        module.tqdm = saved
        logger.setLevel(level)


class ModelScopeBackend(TranslatesClientErrors):
    def __init__(self, name: ModelName, *, offline: bool | None, revision: str | None) -> None:
        # deferred for start-up cost only (see the module docstring)
        from modelscope_hub import HubApi
        from modelscope_hub.config import HubConfig

        self.name = name
        self.repo = name.repository
        self.endpoint = _endpoint()
        self.hub = urlsplit(self.endpoint).netloc or self.endpoint
        # A fresh config reads MODELSCOPE_CACHE / MODELSCOPE_HOME / MODELSCOPE_API_TOKEN
        # now, not when the client's process-wide default was first created.
        self.config = HubConfig(endpoint=self.endpoint)
        self.api = HubApi(self.config)
        self.offline = bool(offline)
        self.branch = revision or DEFAULT_BRANCH
        self.stage = "listing"
        self.current: RepoEntry | None = None

    # ----------------------------------------------------------------- listing
    def listing(self) -> Listing:
        if self.offline:
            return self._cached_listing()
        raw = self.api.legacy.list_repo_files(self.repo, "model", revision=self.branch,
                                              recursive=True)
        entries = []
        commits: list[tuple[int, str]] = []
        for item in raw:
            if (item.get("Type") or "blob") == "tree":
                continue
            path = item.get("Path") or item.get("path") or item.get("Name") or ""
            sha = item.get("Sha256") or item.get("sha256")
            entries.append(RepoEntry(path, int(item.get("Size") or 0),
                                     sha.lower() if sha else None))
            if item.get("Revision"):
                commits.append((int(item.get("CommittedDate") or 0), str(item["Revision"])))
        self.stage = "download"
        # The newest commit touching a file is the branch head as far as these files go.
        pinned = _COMMIT_RE.match(self.branch) is not None
        revision = max(commits)[1] if commits and not pinned else self.branch
        return Listing(revision, tuple(entries))

    def _cached_listing(self) -> Listing:
        owner, model = self.repo.split("/", 1)
        root = self.config.cache_dir
        # The client reads the pre-1.38 layouts first when they exist; so do we.
        legacy = model.replace(".", "___")
        for folder in (root / "models" / owner / legacy, root / "hub" / "models" / owner / legacy,
                       root / "models" / f"{owner}--{model}" / "snapshots" / self.branch):
            if folder.is_dir() and any(folder.iterdir()):
                break
        else:
            raise errors.HubError(f"{self.name}: {self.repo} is not in the ModelScope cache "
                                  f"({root}) and modelkit is offline")
        entries = [
            RepoEntry(p.relative_to(folder).as_posix(), p.stat().st_size)
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(
                _PARTIAL_SUFFIXES)]
        self.stage = "download"
        return Listing(self.branch, tuple(entries), cached=True)

    # --------------------------------------------------------------- download
    def download(self, entry: RepoEntry, progress: ProgressCallback) -> Path:
        # deferred for start-up cost only (see the module docstring)
        from modelscope_hub import ProgressCallback as ClientCallback

        status, digest = transfer_status(entry)
        report = ByteProgress(progress, status, digest)
        seen = [0]

        class Callback(ClientCallback):
            def update(self, size: int) -> None:
                seen[0] += size
                report(seen[0], entry.size or seen[0])

        self.current = entry
        with _quiet():
            path = self.api.downloader.download_file(
                self.repo, "model", entry.path, revision=self.branch,
                expected_sha256=entry.sha256, file_size=entry.size or None,
                local_files_only=self.offline, progress_callbacks=[Callback])
        if not seen[0]:  # a cache hit (verified by the client against the listed sha256)
            progress(ProgressEvent(status, digest, total=entry.size, completed=entry.size))
        self.current = None
        return Path(path).resolve()

    def read_text(self, entry: RepoEntry) -> str:
        return self.download(entry, ignore_progress).read_text(encoding="utf-8",
                                                                errors="replace")

    # ----------------------------------------------------------------- errors
    def _translate(self, exc: Exception) -> errors.ModelkitError:
        # deferred for start-up cost only (see the module docstring)
        import requests
        from modelscope_hub import errors as ms

        name, repo, hub = self.name, self.repo, self.hub
        detail = one_line(getattr(exc, "message", None) or exc)
        if isinstance(exc, ms.FileIntegrityError) and not isinstance(
                exc, ms.FileSizeMismatchError) and self.current and self.current.sha256:
            got = re.search(r"got ([0-9a-f]+)", detail)
            return _digest_error(self.current, str(name), got.group(1) + "…" if got else "?")
        if isinstance(exc, ms.NotExistError):
            if self.stage == "listing":
                return errors.ModelNotFoundError(
                    f'model "{name}" not found: repository {repo} does not exist on {hub} '
                    f"(branch {self.branch})")
            return errors.HubError(f"{name}: a file of {repo} is missing on {hub}: {detail}")
        if isinstance(exc, ms.AuthenticationError | ms.PermissionDeniedError):
            code = 401 if isinstance(exc, ms.AuthenticationError) else 403
            return errors.UnauthorizedError(
                f"{name}: {hub} refused access to repository {repo} (HTTP {code}): set "
                "MODELSCOPE_API_TOKEN to an access token with access to it, or run "
                "'modelscope login'")
        if isinstance(exc, ms.CacheNotFound):
            return errors.HubError(f"{name}: not available offline from the ModelScope cache "
                                   f"({self.config.cache_dir}): {detail}")
        if isinstance(exc, ms.NetworkError | ms.RequestTimeoutError | requests.RequestException):
            return errors.HubError(f"{name}: cannot reach {self.endpoint}: {detail}")
        return errors.HubError(f"{name}: {hub}: {detail}")


def _digest_error(entry: RepoEntry, where: str, got: str) -> errors.DigestError:
    return digest_error(entry, where, got, note="the client discarded the download")
