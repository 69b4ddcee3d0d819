"""Which files of a hub repository a tag means: pure rules, no I/O.

Ollama's hub names carry a tag that the hubs map to a GGUF file; modelkit does the
mapping itself, with the same rules as the Hugging Face bridge:

- the tag is compared case-insensitively with the quantization label of each GGUF file
  name (``Llama-3.2-1B-Instruct-Q4_K_M.gguf`` has the label ``Q4_K_M``), or with the
  whole file name (``:Llama-3.2-1B-Instruct-IQ3_M.gguf``, with or without ``.gguf``),
  or with the end of the name (``:UD-Q4_K_XL``);
- no tag (``latest``) takes ``Q4_K_M`` when the repository has it, else the first of
  ``DEFAULT_PREFERENCE`` it has, else the smallest quantized file, else the smallest
  file (F16/BF16/F32 only);
- split GGUFs (``name-00001-of-00003.gguf``) count as one file; ``mmproj`` files are
  never the model: the best one becomes the vision projector;
- a repository file called ``template``, ``system`` or ``params`` overrides what the
  GGUF implies, as on the Hugging Face bridge.

When several files match, a file at the top of the repository wins over one in a
folder, then the shorter path, then alphabetical order: the choice never depends on
the order of the listing.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from modelkit.errors import HubError, ModelNotFoundError

SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
# A quantization label: Q4_K_M, IQ3_XXS, TQ1_0, Q4_0_4_8, F16, BF16, FP16, F32, MXFP4...
# delimited by anything that is not a letter or digit; the last one in a name wins.
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(?:T?I?Q\d+(?:_[A-Za-z0-9]+)*|B?FP?(?:16|32|64)|MXFP4(?:_[A-Za-z0-9]+)*)"
    r"(?![A-Za-z0-9])", re.IGNORECASE)
DEFAULT_PREFERENCE = ("Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_XS", "IQ4_NL", "Q5_K_M", "Q5_K_S",
                      "Q5_0", "Q6_K", "Q8_0")
FULL_PRECISION = frozenset({"F16", "BF16", "F32", "F64", "FP16", "FP32"})
PROJECTOR_PREFERENCE = ("F16", "BF16", "Q8_0", "F32")
OVERRIDE_FILES = ("template", "system", "params")


@dataclass(frozen=True)
class RepoEntry:
    """A file in a repository listing."""

    path: str  # repository path, '/'-separated
    size: int
    sha256: str | None = None  # from the hub's metadata (LFS), lowercase hex

    @property
    def basename(self) -> str:
        return posixpath.basename(self.path)


@dataclass(frozen=True)
class Candidate:
    """One model file: a single GGUF or a complete or incomplete set of split shards."""

    entries: tuple[RepoEntry, ...]  # shards in order; one entry when not split
    label: str | None  # quantization label, upper case
    stem: str  # the name without .gguf and without the split suffix
    split_count: int = 0  # 0 when not split
    missing: tuple[int, ...] = ()  # 1-based numbers of shards the listing lacks

    @property
    def path(self) -> str:
        return self.entries[0].path

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    @property
    def names(self) -> tuple[str, ...]:
        """Everything a tag may spell out in full: the file names and the stem."""
        return (*(e.basename.lower() for e in self.entries), self.stem.lower())

    def rank(self) -> tuple[int, int, str]:
        return (self.path.count("/"), len(self.path), self.path)


@dataclass(frozen=True)
class Selection:
    model: Candidate
    projector: RepoEntry | None = None
    overrides: dict[str, RepoEntry] = field(default_factory=dict)

    @property
    def entries(self) -> tuple[RepoEntry, ...]:
        """Every GGUF to download: the model (all shards), then the projector."""
        extra = (self.projector,) if self.projector is not None else ()
        return (*self.model.entries, *extra)


def quant_label(filename: str) -> str | None:
    """The quantization a GGUF file name announces (``Q4_K_M``), upper case, or None."""
    stem = posixpath.basename(filename)
    m = SPLIT_RE.match(stem)
    stem = m.group("stem") if m else re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
    found = _QUANT_RE.findall(stem)
    return found[-1].upper() if found else None


def is_projector(path: str) -> bool:
    return "mmproj" in posixpath.basename(path).lower()


def _is_gguf(path: str) -> bool:
    name = posixpath.basename(path).lower()
    # imatrix files are calibration data that llama.cpp now also writes as GGUF.
    return name.endswith(".gguf") and "imatrix" not in name


def candidates(entries: Iterable[RepoEntry]) -> list[Candidate]:
    """The model files of a listing (projectors excluded), split shards grouped."""
    singles: list[Candidate] = []
    splits: dict[tuple[str, str, int], dict[int, RepoEntry]] = {}
    for e in entries:
        if not _is_gguf(e.path) or is_projector(e.path):
            continue
        m = SPLIT_RE.match(e.basename)
        if m is None:
            singles.append(Candidate((e,), quant_label(e.path), e.basename[:-5]))
            continue
        key = (posixpath.dirname(e.path), m.group("stem"), int(m.group("count")))
        splits.setdefault(key, {})[int(m.group("no"))] = e
    for (_, stem, count), parts in splits.items():
        missing = tuple(n for n in range(1, count + 1) if n not in parts)
        ordered = tuple(parts[n] for n in sorted(parts) if 1 <= n <= count)
        if ordered:
            singles.append(Candidate(ordered, quant_label(stem + ".gguf"), stem, count, missing))
    return sorted(singles, key=Candidate.rank)


def available(found: Sequence[Candidate]) -> str:
    """The quantizations a repository offers, for error messages."""
    labels = sorted({c.label or c.entries[0].basename for c in found})
    return ", ".join(labels)


def _default(found: Sequence[Candidate]) -> Candidate:
    by_label: dict[str, Candidate] = {}
    for c in found:  # already in rank order: the first of each label is the best
        if c.label is not None:
            by_label.setdefault(c.label, c)
    for label in DEFAULT_PREFERENCE:
        if label in by_label:
            return by_label[label]
    return min(found, key=lambda c: ((c.label or "") in FULL_PRECISION, c.size, c.rank()))


def _match(found: Sequence[Candidate], tag: str) -> Candidate | None:
    """The best candidate for ``tag``: a whole file name, else the label, else the end
    of the name; the first rule that matches anything decides."""
    t = tag.lower()

    def whole_name(c: Candidate) -> bool:
        return t in c.names or f"{t}.gguf" in c.names

    def label(c: Candidate) -> bool:
        return (c.label or "").lower() == t

    def name_end(c: Candidate) -> bool:
        return c.stem.lower().endswith((f"-{t}", f".{t}", f"_{t}"))

    for test in (whole_name, label, name_end):
        matches = [c for c in found if test(c)]
        if matches:
            return matches[0]
    return None


def _projector(entries: Sequence[RepoEntry], model: Candidate) -> RepoEntry | None:
    projectors = [e for e in entries if _is_gguf(e.path) and is_projector(e.path)]
    if not projectors:
        return None
    model_dir = posixpath.dirname(model.path)

    def key(e: RepoEntry) -> tuple[int, int, int, str]:
        label = quant_label(e.path) or ""
        pref = PROJECTOR_PREFERENCE.index(label) if label in PROJECTOR_PREFERENCE else 99
        same_dir = 0 if posixpath.dirname(e.path) == model_dir else 1
        return (same_dir, pref, e.path.count("/"), e.path)

    return min(projectors, key=key)


def choose(entries: Sequence[RepoEntry], tag: str, *, name: str, repo: str,
           hub: str) -> Selection:
    """The files ``tag`` means in a repository listing.

    ``name`` (as the user wrote it), ``repo`` and ``hub`` only word the errors:
    ``ModelNotFoundError`` when nothing matches (listing what the repository has),
    ``HubError`` when the chosen split set lacks shards.
    """
    found = candidates(entries)
    if not found:
        raise ModelNotFoundError(
            f'model "{name}" not found: repository {repo} on {hub} has no GGUF files')
    if tag.lower() == "latest":
        model = _default(found)
    else:
        match = _match(found, tag)
        if match is None:
            raise ModelNotFoundError(
                f'model "{name}" not found: no GGUF file in {repo} matches the tag "{tag}"; '
                f"available quantizations: {available(found)}")
        model = match
    if model.missing:
        raise HubError(
            f"{name}: split GGUF {model.stem} in {repo} lacks part(s) "
            f"{', '.join(str(n) for n in model.missing)} of {model.split_count}")
    overrides = {e.path: e for e in entries if e.path in OVERRIDE_FILES}
    return Selection(model, _projector(entries, model), overrides)


# What converting a Hugging Face model folder reads (config, weights, tokenizer, model
# card, sentence-transformers pooling): nothing else of the repository is downloaded.
CONVERSION_FILES = re.compile(
    r"(config\.json|generation_config\.json|model(-\d+-of-\d+)?\.safetensors"
    r"|model\.safetensors\.index\.json|tokenizer\.json|tokenizer\.model"
    r"|tokenizer_config\.json|special_tokens_map\.json|added_tokens\.json|merges\.txt"
    r"|chat_template\.jinja|chat_template\.json|README\.md|modules\.json"
    r"|adapter_config\.json|adapter_model\.safetensors"
    r"|additional_chat_templates/[^/]+\.jinja|\d+_Pooling/config\.json)")


def conversion_entries(entries: Sequence[RepoEntry]) -> list[RepoEntry] | None:
    """The files to download to convert a repository that holds no GGUF, or None when
    it is not a Hugging Face model (no config.json or no safetensors weights)."""
    if candidates(entries):
        return None
    names = {e.path for e in entries}
    if "config.json" not in names or not any(
            n.endswith(".safetensors") and "/" not in n for n in names):
        return None
    return [e for e in entries if CONVERSION_FILES.fullmatch(e.path)]
