"""The Modelfile AST: ``Command`` (one line, as Ollama stores it) and ``Modelfile``
(every command in file order, with Ollama's merge rules), the keywords, and the error
messages parsing shares with Ollama."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from modelkit.errors import ModelfileError
from modelkit.modelfile.parameters import convert_parameters

# ---------------------------------------------------------------------- messages

ERR_INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", '
    '"renderer", "parser", "parameter", "message", or "requires"'
)
ERR_INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
ERR_MISSING_FROM = "no FROM line"
ERR_UNEXPECTED_EOF = "unexpected EOF"
ERR_REQUIRES = "requires must be a valid semver (e.g. 0.14.0)"

# ---------------------------------------------------------------------- data model

#: Keyword (as written, upper case) -> stored command name.
KEYWORDS: Mapping[str, str] = {
    "FROM": "model",
    "ADAPTER": "adapter",
    "LICENSE": "license",
    "TEMPLATE": "template",
    "SYSTEM": "system",
    "DRAFT": "draft",
    "RENDERER": "renderer",
    "PARSER": "parser",
    "REQUIRES": "requires",
    "MESSAGE": "message",
}
KEYWORD_OF_NAME = {name: kw for kw, name in KEYWORDS.items()}
MESSAGE_ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})


class CommandKind(enum.Enum):
    """Whether a command came from a keyword line or from ``PARAMETER <name> <value>``."""

    KEYWORD = "keyword"
    PARAMETER = "parameter"


@dataclass(frozen=True)
class Command:
    """One Modelfile line, as Ollama stores it.

    ``name`` is the stored command name (``"model"`` for FROM, the lower-case keyword
    otherwise) or, for ``kind=PARAMETER``, the parameter name verbatim (case kept, may be
    empty). ``args`` is the unquoted value; for ``message`` it is ``"<role>: <content>"``.
    ``kind`` is inferred when omitted: KEYWORD for the stored keyword names, PARAMETER
    otherwise; pass it explicitly for a parameter named like a keyword.
    ``line`` and ``column`` (1-based, of the value; 0 if unknown) are informational and
    not part of equality.
    """

    name: str
    args: str
    kind: CommandKind | None = None
    line: int = field(compare=False, default=0)
    column: int = field(compare=False, default=0)

    def __post_init__(self) -> None:
        if self.kind is None:
            kind = CommandKind.KEYWORD if self.name in KEYWORD_OF_NAME else CommandKind.PARAMETER
            object.__setattr__(self, "kind", kind)

    @property
    def is_parameter(self) -> bool:
        return self.kind is CommandKind.PARAMETER

    def is_keyword(self, name: str) -> bool:
        """True for a keyword command with stored name ``name`` (e.g. ``"model"``)."""
        return self.kind is CommandKind.KEYWORD and self.name == name

    @classmethod
    def parameter(cls, name: str, value: str, line: int = 0) -> Command:
        return cls(name, value, CommandKind.PARAMETER, line)

    @classmethod
    def message(cls, role: str, content: str, line: int = 0) -> Command:
        return cls("message", f"{role}: {content}", CommandKind.KEYWORD, line)


class _Every:
    """A ``Modelfile`` attribute: every value of one keyword command, in file order."""

    def __init__(self, name: str, doc: str = "") -> None:
        self.name, self.__doc__ = name, doc

    def __get__(self, modelfile: Modelfile, owner: object = None) -> tuple[str, ...]:
        return modelfile._values(self.name)


class _Last:
    """A ``Modelfile`` attribute: the last value of one keyword command (it wins), or None."""

    def __init__(self, name: str, doc: str = "") -> None:
        self.name, self.__doc__ = name, doc

    def __get__(self, modelfile: Modelfile, owner: object = None) -> str | None:
        values = modelfile._values(self.name)
        return values[-1] if values else None


@dataclass(frozen=True)
class Modelfile:
    """A parsed Modelfile: every command in file order, plus Ollama's merge rules.

    Merging (Ollama ``Modelfile.CreateRequest``): the last FROM, ADAPTER, DRAFT,
    TEMPLATE, SYSTEM, RENDERER, PARSER and REQUIRES wins; LICENSE and MESSAGE
    accumulate; PARAMETERs are merged by :func:`convert_parameters`. Whether a FROM is
    a local path or a model name is for the caller to decide (all FROMs are in
    :attr:`froms`; Ollama hashes every FROM that is an existing path and uses the last
    one that is not as the base model name).
    """

    commands: tuple[Command, ...]

    def _values(self, name: str) -> tuple[str, ...]:
        return tuple(c.args for c in self.commands if c.is_keyword(name))

    froms = _Every("model", "Every FROM value, in order.")
    from_ = _Last("model", "The last FROM value.")
    adapters = _Every("adapter", "Every ADAPTER value, in order (Ollama uses only the last).")
    adapter = _Last("adapter")
    drafts = _Every("draft", "Every DRAFT value, in order (Ollama merges their files).")
    draft = _Last("draft")
    template = _Last("template")
    system = _Last("system")
    renderer = _Last("renderer")
    parser = _Last("parser")

    @property
    def licenses(self) -> list[str]:
        return list(self._values("license"))

    @property
    def messages(self) -> list[tuple[str, str]]:
        """(role, content) pairs, split at the first ``": "`` as Ollama does."""
        out: list[tuple[str, str]] = []
        for args in self._values("message"):
            role, _, content = args.partition(": ")
            out.append((role, content))
        return out

    @property
    def parameters(self) -> list[tuple[str, str]]:
        """Raw (name, value) pairs of every PARAMETER line, in order."""
        return [(c.name, c.args) for c in self.commands if c.kind is CommandKind.PARAMETER]

    @property
    def requires(self) -> str | None:
        """The last REQUIRES, normalized (see :func:`normalize_requires`).

        Every REQUIRES is validated, in order, as Ollama does; an invalid one raises
        :class:`ModelfileError` carrying its line.
        """
        result: str | None = None
        for c in self.commands:
            if c.is_keyword("requires"):
                try:
                    result = normalize_requires(c.args)
                except ModelfileError as exc:
                    raise ModelfileError(exc.message, line=c.line, column=c.column) from None
        return result

    def converted_parameters(self) -> tuple[dict[str, int | float | bool | list[str]], list[str]]:
        """:func:`convert_parameters` applied to :attr:`parameters`."""
        return convert_parameters(self.parameters)


# ---------------------------------------------------------------------- REQUIRES

_SEMVER_PRE_IDENT = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER_RE = re.compile(
    r"v(?:0|[1-9][0-9]*)"
    r"(?:\.(?:0|[1-9][0-9]*)"
    r"(?:\.(?:0|[1-9][0-9]*)"
    rf"(?:-{_SEMVER_PRE_IDENT}(?:\.{_SEMVER_PRE_IDENT})*)?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
    r")?)?"
)


def normalize_requires(value: str) -> str:
    """REQUIRES as Ollama stores it: prefix ``v`` if missing, check it with
    golang.org/x/mod/semver (which also accepts ``v1`` and ``v1.2``), drop the ``v``.
    """
    v = value if value.startswith("v") else "v" + value
    if not _SEMVER_RE.fullmatch(v):
        raise ModelfileError(ERR_REQUIRES)
    return v[1:]
