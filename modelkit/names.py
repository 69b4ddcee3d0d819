"""Model names and blob digests, with Ollama's rules.

Model names
-----------
A name is ``[scheme://][host/][namespace/]model[:tag]``, parsed the way Ollama's
``types/model`` ``ParseName`` does and then filled with the defaults
``registry.ollama.ai`` / ``library`` / ``latest``:

1. The tag is split off at the last ``:``, but only when that colon comes after the
   last ``/`` (so ``host:port/ns/m`` has no tag and ``host:port`` stays the host).
2. ``model``, ``namespace`` and ``host`` are then split from the right at ``/``.
   Whatever is left over stays in the host, so ``a/b/c/d`` has host ``a/b`` and is
   invalid.
3. A separator with nothing on one side (``m:``, ``/m``, ``h//m``) promises a part
   that is empty, which is invalid; only parts that are *absent* get defaults.
4. A ``scheme://`` prefix is only recognised in front of the host, that is when all
   of host, namespace and model are written (``https://m`` is invalid, as in Ollama).
   Ollama accepts any scheme text there; we require RFC 3986 scheme syntax. The
   ``scheme`` field is ``"http"`` when the prefix is ``http://`` (any case) and
   ``"https"`` otherwise, including for other schemes, which Ollama also accepts.
5. ``@digest`` is not parsed (Ollama dropped it): ``m@d`` is the model ``m@d``,
   which is invalid.
6. Ollama's ``:cloud`` / ``:local`` source suffixes (``internal/modelref``) are not
   special here: ``m:cloud`` is simply the tag ``cloud``. The optional ``kind`` part
   of newer Ollama versions (``ns/skill/m``) is not supported either.

Every part must then be valid: the first character is one of ``[A-Za-z0-9_]``, the
rest come from ``[A-Za-z0-9_-]`` plus ``.`` and ``:`` for the host and ``.`` for the
model and tag; the host is 1-350 characters, the other parts 1-80; anything
non-ASCII is invalid. Hence no part can be empty, ``.``, ``..``, contain ``/``,
``\\`` or NUL, or be an absolute path: the four parts of a valid name are always
single, safe path components below ``manifests/``. (Exception: on Windows a host
such as ``c:`` would be read as a drive by ``os.path.join``; modelkit's store
targets POSIX file systems, as Ollama's does, where ``:`` is an ordinary character.)

Case is kept exactly as written. Two names that differ only in case address the
same model for Ollama's server, which resolves names case-insensitively against
the manifests that exist; :meth:`ModelName.casefold_key` is the key for that.

Equality of :class:`ModelName` ignores ``scheme``: ``http://h/n/m:t`` and
``h/n/m:t`` name the same manifest, and ``ModelName.parse(str(n)) == n`` holds.

Digests
-------
:class:`Digest` is a ``sha256`` digest. ``Digest.parse`` accepts ``sha256:<hex>``
and ``sha256-<hex>`` (either case of hex, normalised to lowercase, like Ollama's
``BlobsPath``); ``str()`` is ``sha256:<hex>`` and ``filename`` is ``sha256-<hex>``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from modelkit.errors import DigestError, InvalidNameError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NAMESPACE",
    "DEFAULT_SCHEME",
    "DEFAULT_TAG",
    "Digest",
    "ModelName",
    "is_valid_name",
    "is_valid_part",
]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"

# --------------------------------------------------------------------------- parts

_FIRST_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_BASE_CHARS = _FIRST_CHARS | frozenset("-")

# part kind -> (extra characters allowed after the first, maximum length)
_PART_RULES: dict[str, tuple[str, int]] = {
    "host": (".:", 350),
    "namespace": ("", 80),
    "model": (".", 80),
    "tag": (".", 80),
}
_ALLOWED = {kind: _BASE_CHARS | frozenset(extra) for kind, (extra, _) in _PART_RULES.items()}

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")


def _describe(kind: str) -> str:
    extra = _PART_RULES[kind][0]
    return "letters, digits, '_', '-'" + "".join(f", '{c}'" for c in extra)


def _part_problem(kind: str, value: str) -> str | None:
    """Why ``value`` is not a valid ``kind`` part, or None when it is valid."""
    max_len = _PART_RULES[kind][1]
    if value == "":
        return f"empty {kind}"
    if not value.isascii():
        return f"{kind} '{_show(value)}' contains non-ASCII characters"
    if len(value) > max_len:
        return f"{kind} is {len(value)} characters long (at most {max_len})"
    if "://" in value:
        return f"{kind} '{_show(value)}' contains '://' (a scheme may only come first)"
    if "/" in value:
        return "too many '/'-separated parts; the most is host/namespace/model"
    if value[0] not in _FIRST_CHARS:
        return f"{kind} '{_show(value)}' must start with a letter, digit or '_'"
    allowed = _ALLOWED[kind]
    for ch in value:
        if ch not in allowed:
            if ch == "@" and kind in ("model", "tag"):
                return "'@digest' references are not supported"
            if ch == ":" and kind in ("namespace", "model"):
                return f"{kind} '{_show(value)}' contains ':', which only separates the tag"
            return f"{kind} '{_show(value)}' contains {ch!r}; allowed are {_describe(kind)}"
    return None


def is_valid_part(kind: str, value: str) -> bool:
    """Whether ``value`` is a valid ``kind`` part (``host``/``namespace``/``model``/``tag``).

    ``is_valid_part("namespace", user)`` is Ollama's ``IsValidNamespace``.
    """
    if kind not in _PART_RULES:
        raise ValueError(f"unknown name part kind: {kind!r}")
    return _part_problem(kind, value) is None


def _show(text: str) -> str:
    """``text`` for an error message: verbatim when printable, escaped otherwise."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def _cut_last(text: str, sep: str) -> tuple[str, str] | None:
    """Split ``text`` at the last ``sep``; None when there is none."""
    i = text.rfind(sep)
    if i < 0:
        return None
    return text[:i], text[i + len(sep):]


@dataclass(frozen=True)
class _RawName:
    """The parts as written; None = absent (defaulted), "" = promised but empty."""

    scheme: str | None
    host: str | None
    namespace: str | None
    model: str
    tag: str | None


def _split(text: str) -> _RawName:
    rest = text
    tag: str | None = None
    if rest.rfind(":") > rest.rfind("/"):
        cut = _cut_last(rest, ":")
        assert cut is not None
        rest, tag = cut

    cut = _cut_last(rest, "/")
    if cut is None:
        return _RawName(None, None, None, rest, tag)
    rest, model = cut

    cut = _cut_last(rest, "/")
    if cut is None:
        return _RawName(None, None, rest, model, tag)
    rest, namespace = cut

    scheme: str | None = None
    before, sep, after = rest.partition("://")
    if sep:
        scheme, rest = before, after
    return _RawName(scheme, rest, namespace, model, tag)


# --------------------------------------------------------------------------- names


def _invalid(text: str, reason: str | None) -> InvalidNameError:
    message = f"invalid model name: {_show(text)}"
    if reason:
        message += f" ({reason})"
    err = InvalidNameError(message)
    err.name = text  # type: ignore[attr-defined]
    err.reason = reason  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class ModelName:
    """A fully qualified, valid model name ``host/namespace/model:tag``.

    Every instance is valid: the constructor checks all parts (raising
    :class:`InvalidNameError`), so ``filepath_parts()`` is always safe to join
    under the manifests directory. ``scheme`` (``"https"`` or ``"http"``) is kept
    for registry URLs but takes no part in equality, hashing or ``str()``.
    """

    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = field(default=DEFAULT_SCHEME, compare=False)

    def __post_init__(self) -> None:
        for kind in ("host", "namespace", "model", "tag"):
            value = getattr(self, kind)
            if not isinstance(value, str):
                raise _invalid(repr(value), f"{kind} must be a string")
            problem = _part_problem(kind, value)
            if problem is not None:
                raise _invalid(self._joined(), problem)
        if self.scheme not in ("http", "https"):
            raise _invalid(self._joined(), f"unsupported scheme {self.scheme!r}")

    def _joined(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    # ------------------------------------------------------------------ parsing

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """Parse ``text`` like Ollama's ``ParseName`` (defaults filled) and validate it.

        Raises :class:`InvalidNameError` ``"invalid model name: <text> (<reason>)"``.
        """
        if not isinstance(text, str):
            raise _invalid(repr(text), "not a string")
        raw = _split(text)
        scheme = DEFAULT_SCHEME
        if raw.scheme is not None:
            if not _SCHEME_RE.match(raw.scheme):
                raise _invalid(text, f"invalid scheme {_show(raw.scheme)!r}")
            if raw.scheme.lower() == "http":
                scheme = "http"
        elif "://" in text:
            raise _invalid(text, "a scheme:// is only allowed before host/namespace/model")

        host = DEFAULT_HOST if raw.host is None else raw.host
        namespace = DEFAULT_NAMESPACE if raw.namespace is None else raw.namespace
        tag = DEFAULT_TAG if raw.tag is None else raw.tag
        for kind, value in (("host", host), ("namespace", namespace),
                            ("model", raw.model), ("tag", tag)):
            problem = _part_problem(kind, value)
            if problem is not None:
                raise _invalid(text, problem)
        return cls(host, namespace, raw.model, tag, scheme)

    @classmethod
    def is_valid(cls, text: str) -> bool:
        """Whether :meth:`parse` accepts ``text``."""
        return is_valid_name(text)

    @classmethod
    def from_filepath_parts(cls, parts: Sequence[str]) -> ModelName | None:
        """The name stored at ``manifests/<host>/<namespace>/<model>/<tag>``.

        ``parts`` are the four path components below ``manifests/`` (a string is
        split at the OS separator, like Ollama's ``ParseNameFromFilepath``).
        Returns None unless there are exactly four components and all are valid,
        so ``.hidden`` files, stray files at other depths and ``..`` are ignored.
        """
        if isinstance(parts, str):
            items: list[str] = parts.split(os.sep)
        else:
            items = list(parts)
        if len(items) != 4 or not all(isinstance(p, str) for p in items):
            return None
        host, namespace, model, tag = items
        for kind, value in (("host", host), ("namespace", namespace),
                            ("model", model), ("tag", tag)):
            if _part_problem(kind, value) is not None:
                return None
        return cls(host, namespace, model, tag)

    # ------------------------------------------------------------------ display

    def __str__(self) -> str:
        return self._joined()

    def display_shortest(self) -> str:
        """``model:tag`` / ``namespace/model:tag`` / full, like Ollama's DisplayShortest.

        The host and namespace are compared to the defaults case-insensitively. This
        is the NAME of ``ollama list`` and the ``from`` of layers taken from a model.
        """
        if self.host.lower() != DEFAULT_HOST:
            return self._joined()
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    # ------------------------------------------------------------------ store

    def filepath_parts(self) -> tuple[str, str, str, str]:
        """``(host, namespace, model, tag)``: the manifest path below ``manifests/``."""
        return (self.host, self.namespace, self.model, self.tag)

    def casefold_key(self) -> tuple[str, str, str, str]:
        """The parts lowercased, for case-insensitive matching against manifests."""
        # All parts are ASCII, so lower() is exactly Go's strings.EqualFold here.
        return (self.host.lower(), self.namespace.lower(), self.model.lower(),
                self.tag.lower())

    @property
    def repository(self) -> str:
        """``namespace/model``, the repository in registry URLs (``/v2/<repo>/...``)."""
        return f"{self.namespace}/{self.model}"


def is_valid_name(text: str) -> bool:
    """Whether ``ModelName.parse(text)`` succeeds."""
    try:
        ModelName.parse(text)
    except InvalidNameError:
        return False
    return True


# --------------------------------------------------------------------------- digests

_DIGEST_RE = re.compile(r"sha256[:-]([0-9a-fA-F]{64})\Z")
_HEX_RE = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True, order=True)
class Digest:
    """A sha256 content digest; ``hex`` is 64 lowercase hex characters."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        if (self.algorithm != "sha256" or not isinstance(self.hex, str)
                or not _HEX_RE.match(self.hex)):
            raise DigestError(f"invalid digest format: {self.algorithm}:{self.hex}")

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``sha256:<hex>`` or ``sha256-<hex>`` (hex in either case)."""
        m = _DIGEST_RE.match(text) if isinstance(text, str) else None
        if m is None:
            shown = _show(text) if isinstance(text, str) else repr(text)
            raise DigestError(f"invalid digest format: {shown}")
        return cls("sha256", m.group(1).lower())

    @classmethod
    def from_filename(cls, name: str) -> Digest | None:
        """The digest of blob file ``name``, or None if it is not a canonical blob name.

        Only ``sha256-<64 lowercase hex>`` is a blob name: temporary files, partial
        downloads, legacy ``sha256:<hex>`` names and uppercase hex give None.
        """
        if not name.startswith("sha256-") or not _HEX_RE.match(name[7:]):
            return None
        return cls("sha256", name[7:])

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The digest of ``data``."""
        return cls("sha256", hashlib.sha256(data).hexdigest())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def filename(self) -> str:
        """The blob file name, ``sha256-<hex>``."""
        return f"{self.algorithm}-{self.hex}"

    def short(self) -> str:
        """The first 12 hex characters (``ollama list`` ID, ``pulling <12 hex>``)."""
        return self.hex[:12]
