"""``FROM ./model.gguf`` and ``FROM ./folder`` under the importers' contract.

A folder contributes every GGUF in it: models first, then ``mmproj`` projectors. Split
shards (``-00001-of-0000N.gguf``) come as one file of several shards, which the store
merges like hub downloads; naming one shard of a set names the set.
Roles come from the file names; build still reads each GGUF to tell adapters and
projectors apart by their metadata, as Ollama does.
"""

from __future__ import annotations

from pathlib import Path

from modelkit.errors import FileNotFoundModelkitError, GGUFError
from modelkit.importers import MODEL, PROJECTOR, ImportedFile, ImportedModel
from modelkit.importers.choose import SPLIT_RE, RepoEntry, candidates, is_projector
from modelkit.progress import ProgressCallback, ignore_progress


def _ggufs(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.glob("*.gguf") if p.is_file())
        if not found:
            raise FileNotFoundModelkitError(f"{path}: no GGUF files found in directory")
        return found
    if not path.is_file():
        raise FileNotFoundModelkitError(f"{path}: no such file")
    m = SPLIT_RE.match(path.name)
    if m is None:
        return [path]
    # One shard names its whole set: its siblings with the same stem and count.
    return sorted(p for p in path.parent.glob(f"*-of-{m.group('count')}.gguf")
                  if (s := SPLIT_RE.match(p.name)) and s.group("stem") == m.group("stem"))


def import_local(path: Path, *, progress: ProgressCallback = ignore_progress) -> ImportedModel:
    """The GGUFs at ``path`` (a file or a folder); a split set comes as its shards."""
    if path.is_file() and SPLIT_RE.match(path.name) is None:
        # A file named explicitly is taken whatever its name (a blob path from
        # ``show --modelfile`` has no .gguf suffix); build reads its metadata for its role.
        return ImportedModel(source=str(path), repo=str(path), revision="",
                             filenames=(path.name,), files=(ImportedFile(path, MODEL, None),))
    if path.is_dir() and not any(path.glob("*.gguf")) and (path / "config.json").is_file():
        # A Hugging Face model folder: build converts it.
        return ImportedModel(source=str(path), repo=str(path), revision="", filenames=(),
                             files=(), folder=path)
    files = _ggufs(path)
    folder = files[0].parent
    entries = [RepoEntry(p.name, p.stat().st_size) for p in files]
    models: list[ImportedFile] = []
    used: list[str] = []
    for c in candidates(entries):
        used.extend(e.path for e in c.entries)
        if c.missing:
            raise GGUFError(f"{folder / c.path}: split GGUF {c.stem} lacks part(s) "
                            f"{', '.join(str(n) for n in c.missing)} of {c.split_count}")
        shards = tuple(folder / e.path for e in c.entries) if c.split_count else ()
        models.append(ImportedFile(folder / c.path, MODEL, None, shards=shards))
    projectors = [ImportedFile(p, PROJECTOR, None) for p in files if is_projector(p.name)]
    used.extend(p.path.name for p in projectors)
    return ImportedModel(source=str(path), repo=str(path), revision="",
                         filenames=tuple(used), files=(*models, *projectors))
