"""Ollama Modelfile: parse, format, and convert PARAMETER values.

The syntax is defined by ``grammars/modelfile.lark`` (parsed with Lark, LALR +
contextual lexer) and matches Ollama's own parser (``parser/parser.go``): the same
files are accepted, the same commands come out, and rejected files get Ollama's error
wording. Python does only what a grammar cannot express well:

* before parsing: decoding (UTF-8, UTF-8 BOM stripped, UTF-16 LE/BE with BOM, invalid
  UTF-8 bytes -> one U+FFFD per byte as Go does) and replacing every rune that Go's
  ``strconv.IsPrint`` rejects (other than TAB/CR/LF) by NUL, which the grammar treats
  as "non-printable";
* after parsing: unquoting values, dropping those non-printable runes from values, and
  turning Lark's errors into Ollama's messages.

Deliberate differences from Ollama (all documented in the tests):

* Error positions are real: ``line`` is the line of the offending character with CRLF
  counted as one line break (Go counts CR and LF separately and has already counted the
  newline that triggers an error), and a 1-based ``column`` is given. For an unfinished
  keyword, name or quote the position is where it starts; for a premature end of
  input, the end of the file. ``no FROM line`` has no position.
* :func:`format_modelfile` is an exact inverse of :func:`parse` (Ollama's
  ``Modelfile.String`` is not): it quotes every value that needs it (FROM included) and
  prefers bare, then ``"..."``, then ``\"\"\"...\"\"\"``. Values that no Modelfile can
  express raise :class:`~modelkit.errors.ModelfileError`; :func:`parse` never produces
  one (see :func:`format_value`).
* ``convert_parameters`` rejects NaN/Inf floats (Go's ParseFloat accepts them and the
  request then fails later in JSON encoding).

Kept on purpose (Ollama behaviour, however odd): ``PARAMETER  temperature 0.5`` (two
blanks) is a parameter with an empty name and the value ``temperature 0.5``, rejected
later as ``unknown parameter ''``; ``SYSTEM "hi" there`` never ends (``unexpected
EOF``); ``FROM foo\nBADCOMMAND`` at the end of the file is ``unexpected EOF``, not an
invalid command. Runes are classified with Python's Unicode tables, which can differ
from Go's for code points assigned in newer Unicode versions.
"""

from __future__ import annotations

import bisect
import enum
import functools
import importlib.resources
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modelkit.errors import FileNotFoundModelkitError, ModelfileError, ParameterError
from modelkit.gojson import go_json_dumps
from modelkit.gostrconv import format_float, is_print, parse_float, parse_int

if TYPE_CHECKING:
    from lark import Lark, Token, Tree
    from lark.exceptions import UnexpectedInput

__all__ = [
    "Command",
    "CommandKind",
    "Modelfile",
    "ParamType",
    "PARAMETERS",
    "DEPRECATED_PARAMETERS",
    "KEYWORDS",
    "MESSAGE_ROLES",
    "parse",
    "parse_file",
    "decode_modelfile",
    "format_modelfile",
    "format_command",
    "format_value",
    "is_print",
    "convert_parameters",
    "convert_parameter",
    "params_json",
    "normalize_requires",
    "ERR_INVALID_COMMAND",
    "ERR_INVALID_ROLE",
    "ERR_MISSING_FROM",
    "ERR_UNEXPECTED_EOF",
    "ERR_REQUIRES",
]

# --------------------------------------------------------------------------- messages

ERR_INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", '
    '"renderer", "parser", "parameter", "message", or "requires"'
)
ERR_INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
ERR_MISSING_FROM = "no FROM line"
ERR_UNEXPECTED_EOF = "unexpected EOF"
ERR_REQUIRES = "requires must be a valid semver (e.g. 0.14.0)"

# --------------------------------------------------------------------------- data model

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
_KEYWORD_OF_NAME = {name: kw for kw, name in KEYWORDS.items()}
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
    ``line`` (1-based, 0 if unknown) is informational and not part of equality.
    """

    name: str
    args: str
    kind: CommandKind | None = None
    line: int = field(compare=False, default=0)

    def __post_init__(self) -> None:
        if self.kind is None:
            kind = CommandKind.KEYWORD if self.name in _KEYWORD_OF_NAME else CommandKind.PARAMETER
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

    def _last(self, name: str) -> str | None:
        values = self._values(name)
        return values[-1] if values else None

    @property
    def froms(self) -> tuple[str, ...]:
        """Every FROM value, in order."""
        return self._values("model")

    @property
    def from_(self) -> str | None:
        """The last FROM value."""
        return self._last("model")

    @property
    def adapters(self) -> tuple[str, ...]:
        """Every ADAPTER value, in order (Ollama uses only the last: :attr:`adapter`)."""
        return self._values("adapter")

    @property
    def adapter(self) -> str | None:
        return self._last("adapter")

    @property
    def drafts(self) -> tuple[str, ...]:
        """Every DRAFT value, in order (Ollama merges their files)."""
        return self._values("draft")

    @property
    def draft(self) -> str | None:
        return self._last("draft")

    @property
    def template(self) -> str | None:
        return self._last("template")

    @property
    def system(self) -> str | None:
        return self._last("system")

    @property
    def renderer(self) -> str | None:
        return self._last("renderer")

    @property
    def parser(self) -> str | None:
        return self._last("parser")

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
                    raise ModelfileError(exc.message, line=c.line) from None
        return result

    def converted_parameters(self) -> tuple[dict[str, int | float | bool | list[str]], list[str]]:
        """:func:`convert_parameters` applied to :attr:`parameters`."""
        return convert_parameters(self.parameters)


# --------------------------------------------------------------------------- decoding

_SURROGATE_ESCAPES = re.compile("[\udc80-\udcff]")


def decode_modelfile(data: bytes) -> str:
    """Decode Modelfile bytes as Ollama does (``unicode.BOMOverride(UTF8 decoder)``).

    A UTF-8 BOM is stripped; a UTF-16 LE/BE BOM selects UTF-16 (bad code units become
    U+FFFD); otherwise UTF-8, where every byte that is not part of a valid sequence
    becomes one U+FFFD (Go's per-byte replacement, not Python's maximal-subpart rule).
    """
    if data.startswith(b"\xff\xfe"):
        return data[2:].decode("utf-16-le", "replace")
    if data.startswith(b"\xfe\xff"):
        return data[2:].decode("utf-16-be", "replace")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    text = data.decode("utf-8", "surrogateescape")  # one lone surrogate per bad byte
    if _SURROGATE_ESCAPES.search(text):
        text = _SURROGATE_ESCAPES.sub("\ufffd", text)
    return text


_NP = "\x00"  # what every non-printable rune becomes before the grammar sees the text
_DROP_TAB_NEWLINE = str.maketrans("", "", "\t\r\n")


def _mask_nonprintable(text: str) -> str:
    if text.translate(_DROP_TAB_NEWLINE).isprintable():  # fast path: nothing to mask
        return text
    return "".join(ch if ch in "\t\r\n" or is_print(ch) else _NP for ch in text)


# --------------------------------------------------------------------------- grammar


def _grammar_text() -> str:
    try:
        shipped = importlib.resources.files("modelkit") / "grammars" / "modelfile.lark"
        if shipped.is_file():
            return shipped.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):  # pragma: no cover
        pass
    repo = Path(__file__).resolve().parent.parent / "grammars" / "modelfile.lark"
    return repo.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    # Deferred for start-up cost only: lark loads on the first parse (tested).
    from lark import Lark

    return Lark(_grammar_text(), parser="lalr", lexer="contextual", maybe_placeholders=False)


class _Locator:
    """Offset -> (line, column), both 1-based; CRLF, CR and LF each end one line."""

    __slots__ = ("_starts",)

    def __init__(self, text: str) -> None:
        self._starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]

    def __call__(self, pos: int) -> tuple[int, int]:
        i = bisect.bisect_right(self._starts, pos) - 1
        return i + 1, pos - self._starts[i] + 1


_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NAME_CHARS = _LETTERS | frozenset("0123456789_")


def _syntax_error(exc: UnexpectedInput, text: str, where: _Locator, path: str | None
                  ) -> ModelfileError:
    """Map a Lark error to Ollama's message, reconstructing the state Ollama was in."""
    # Deferred for start-up cost only: lark loads on the first parse (tested).
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    n = len(text)
    pos: int
    expected: frozenset[str]
    if isinstance(exc, UnexpectedCharacters):
        pos, expected = exc.pos_in_stream or 0, frozenset(exc.allowed)
    elif isinstance(exc, UnexpectedToken):
        pos = n if exc.token.type == "$END" else exc.token.start_pos or 0
        expected = frozenset(exc.expected)
    elif isinstance(exc, UnexpectedEOF):  # pragma: no cover - LALR reports $END tokens
        pos, expected = n, frozenset(exc.expected)
    else:  # pragma: no cover
        pos, expected = n, frozenset()

    def error(message: str, at: int) -> ModelfileError:
        line, column = where(at)
        return ModelfileError(message, path=path, line=line, column=column)

    if pos >= n:
        return error(ERR_UNEXPECTED_EOF, n)

    if "BARE" in expected:
        # A value opened a quote here that no later line closes: Ollama reads to EOF.
        return error(ERR_UNEXPECTED_EOF, pos)

    if "ROLE" in expected or "PARAM_NAME" in expected:
        # Ollama reads the role (letters) or name (letters, digits, _) until a blank.
        allowed = _LETTERS if "ROLE" in expected else _NAME_CHARS
        i = pos
        while i < n and text[i] in allowed:
            i += 1
        if i == n:
            return error(ERR_UNEXPECTED_EOF, pos)
        if text[i] in " \t" and "ROLE" in expected:
            return error(ERR_INVALID_ROLE, pos)
        return error(f"{ERR_UNEXPECTED_EOF}: {text[pos:i]}", i)

    if "FROM" in expected:
        # A keyword starts here: any first rune (a non-printable one is skipped), then
        # ASCII letters. It must end with a blank and be a known keyword.
        i = pos + 1
        while i < n and text[i] in _LETTERS:
            i += 1
        if i == n:
            return error(ERR_UNEXPECTED_EOF, pos)
        if text[i] in " \t":
            return error(ERR_INVALID_COMMAND, pos)
        return error(ERR_INVALID_COMMAND, i)

    return error(ERR_UNEXPECTED_EOF, pos)  # pragma: no cover - grammar leaves no other case


# --------------------------------------------------------------------------- parsing


def _value_of(tree: Tree[Token]) -> str:
    if not tree.children:
        return ""
    tok = tree.children[0]
    kind = getattr(tok, "type", "")
    s = str(tok)
    if _NP in s:
        s = s.replace(_NP, "")
    if kind == "TRIPLE":
        return s[3:-3]
    if kind == "SINGLE":
        return s[1:-1]
    return s


def parse(text: str | bytes, *, path: str | None = None) -> Modelfile:
    """Parse a Modelfile (bytes are decoded as Ollama does; a leading U+FEFF is dropped).

    Raises :class:`ModelfileError` (with ``path``, ``line``, ``column``) on a syntax
    error, with Ollama's message, or ``no FROM line``.
    """
    # Deferred for start-up cost only: lark loads on the first parse (tested).
    from lark import Token, Tree
    from lark.exceptions import UnexpectedInput

    if isinstance(text, (bytes, bytearray, memoryview)):
        source = decode_modelfile(bytes(text))
    else:
        source = text[1:] if text.startswith("\ufeff") else text
    masked = _mask_nonprintable(source)
    where = _Locator(masked)
    try:
        tree = _lark().parse(masked)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, masked, where, path) from None

    commands: list[Command] = []
    for node in tree.children:
        assert isinstance(node, Tree)
        head = node.children[0]
        assert isinstance(head, Token)
        line = where(head.start_pos or 0)[0]
        value = node.children[-1]
        assert isinstance(value, Tree)
        args = _value_of(value)
        if node.data == "simple":
            commands.append(Command(KEYWORDS[head.type], args, CommandKind.KEYWORD, line))
        elif node.data == "parameter":
            name = str(node.children[1]) if len(node.children) == 3 else ""
            commands.append(Command(name, args, CommandKind.PARAMETER, line))
        else:  # message
            role = str(node.children[1])
            commands.append(Command("message", f"{role}: {args}", CommandKind.KEYWORD, line))

    if not any(c.is_keyword("model") for c in commands):
        raise ModelfileError(ERR_MISSING_FROM, path=path)
    return Modelfile(tuple(commands))


def parse_file(path: str | os.PathLike[str]) -> Modelfile:
    """Read and parse a Modelfile.

    A missing file raises :class:`FileNotFoundModelkitError`
    (``specified Modelfile wasn't found: <path>``).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundModelkitError(f"specified Modelfile wasn't found: {path}") from None
    except IsADirectoryError:
        raise ModelfileError(f"read {path}: is a directory", path=str(path)) from None
    return parse(data, path=str(path))


# --------------------------------------------------------------------------- formatting

_TRIM = " \t\r\n"  # what Go's TrimSpace can meet in a value (the rest is non-printable)


def _has_nonprintable(v: str) -> bool:
    return not v.translate(_DROP_TAB_NEWLINE).isprintable()


def _quoted_ok(v: str, q: str) -> bool:
    """Would ``q + v + q`` on a keyword line parse back to exactly ``v``?

    Ollama ends a quoted value at the first line break where the text so far, trimmed,
    ends with the closing quote(s) without overlapping the opening ones; that break
    must be the one after our closing quote, not one inside ``v``. With a single ``"``,
    the text must also not start with three quotes (that would open a triple quote).
    """
    if q == '"' and (q + v + q).startswith('"""'):
        return False  # v is '"' or starts with '""': that opens a triple quote
    text = q + v
    last = -1  # index in text of the last character not in _TRIM
    for i, ch in enumerate(text):
        if ch in "\r\n":
            if last + 1 >= 2 * len(q) and text.endswith(q, 0, last + 1):
                return False
        elif ch not in _TRIM:
            last = i
    return True


def format_value(v: str) -> str:
    """The shortest Modelfile spelling of value ``v``: bare, ``"v"`` or ``\"\"\"v\"\"\"``.

    Bare when ``v`` is non-empty, on one line, has no leading/trailing blank and does
    not start with ``"``. Otherwise quoted. A value cannot be written at all when it
    contains a rune that ``strconv.IsPrint`` rejects (other than TAB, CR, LF; the parser
    drops those), or when some line break inside it follows a line ending in ``\"\"\"``
    (ignoring trailing blanks) -- that closes a triple quote early and, as it also ends
    in ``"``, a single quote too. :func:`parse` never returns such values. Raises
    :class:`ModelfileError` for them.
    """
    if _has_nonprintable(v):
        raise ModelfileError(f"value cannot be written in a Modelfile (non-printable rune): {v!r}")
    if (v and "\n" not in v and "\r" not in v and v[0] not in ' \t"' and v[-1] not in " \t"):
        return v
    if _quoted_ok(v, '"'):
        return f'"{v}"'
    if _quoted_ok(v, '"""'):
        return f'"""{v}"""'
    raise ModelfileError(f"value cannot be written in a Modelfile: {v!r}")


_PARAM_NAME_RE = re.compile(r"[A-Za-z0-9_]*")


def format_command(c: Command) -> str:
    """One command as a Modelfile line (without the line break)."""
    if c.kind is CommandKind.PARAMETER:
        if not _PARAM_NAME_RE.fullmatch(c.name):
            raise ModelfileError(f"invalid parameter name: {c.name!r}")
        return f"PARAMETER {c.name} {format_value(c.args)}"
    if c.name == "message":
        role, sep, content = c.args.partition(": ")
        if not sep or role not in MESSAGE_ROLES:
            raise ModelfileError(f"invalid message: {c.args!r}")
        return f"MESSAGE {role} {format_value(content)}"
    keyword = _KEYWORD_OF_NAME.get(c.name)
    if keyword is None:
        raise ModelfileError(f"unknown command: {c.name!r}")
    return f"{keyword} {format_value(c.args)}"


def format_modelfile(m: Modelfile) -> str:
    """Render ``m`` as Modelfile text, one command per line, each ending in ``"\\n"``.

    Exact inverse of :func:`parse`: ``parse(format_modelfile(m)) == m`` for every
    Modelfile that :func:`parse` can return (and every other one whose values are
    expressible, see :func:`format_value`). Numbers keep their spelling
    (``PARAMETER num_ctx 1048576``) because the AST holds the raw text.
    """
    return "".join(format_command(c) + "\n" for c in m.commands)


# --------------------------------------------------------------------------- parameters


class ParamType(enum.Enum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STRING_LIST = "string-list"


#: Every name Ollama's ``api.FormatParams`` accepts (the JSON tags of ``api.Options``),
#: and its type. ``typical_p`` is still a field of ``api.Options`` at the reference commit.
PARAMETERS: Mapping[str, ParamType] = {
    # api.Runner
    "num_ctx": ParamType.INT,
    "num_batch": ParamType.INT,
    "num_gpu": ParamType.INT,
    "main_gpu": ParamType.INT,
    "use_mmap": ParamType.BOOL,
    "num_thread": ParamType.INT,
    "draft_num_predict": ParamType.INT,
    # api.Options
    "num_keep": ParamType.INT,
    "seed": ParamType.INT,
    "num_predict": ParamType.INT,
    "top_k": ParamType.INT,
    "top_p": ParamType.FLOAT,
    "min_p": ParamType.FLOAT,
    "typical_p": ParamType.FLOAT,
    "repeat_last_n": ParamType.INT,
    "temperature": ParamType.FLOAT,
    "repeat_penalty": ParamType.FLOAT,
    "presence_penalty": ParamType.FLOAT,
    "frequency_penalty": ParamType.FLOAT,
    "stop": ParamType.STRING_LIST,
}

#: Accepted by Ollama with ``warning: parameter <name> is deprecated`` and dropped.
DEPRECATED_PARAMETERS: frozenset[str] = frozenset({
    "penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock",
    "mirostat", "mirostat_tau", "mirostat_eta",
})

_BOOLS = {
    "1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False,
}


def convert_parameter(name: str, value: str) -> int | float | bool | list[str]:
    """Validate and convert one PARAMETER value (``api.FormatParams`` for one name).

    Raises :class:`ParameterError` with Ollama's message. Deprecated names are not
    handled here (see :func:`convert_parameters`).
    """
    ptype = PARAMETERS.get(name)
    if ptype is None:
        raise ParameterError(f"unknown parameter '{name}'")
    if ptype is ParamType.INT:
        i = parse_int(value, 10)
        if i is None:
            raise ParameterError(f"invalid int value [{value}]")
        return i
    if ptype is ParamType.FLOAT:
        # NaN/Inf: valid for Go, but not encodable as JSON (see module doc)
        f, _ = parse_float(value, 32)
        if f is None or not math.isfinite(f):
            raise ParameterError(f"invalid float value [{value}]")
        # Ollama's CLI sends float32 values through JSON (shortest float32 digits) and the
        # server re-reads them as float64, so 0.7 stays 0.7, not 0.699999988079071.
        return float(format_float(f, "e", 32))
    if ptype is ParamType.BOOL:
        b = _BOOLS.get(value)
        if b is None:
            raise ParameterError(f"invalid bool value [{value}]")
        return b
    return [value]


def convert_parameters(pairs: Iterable[tuple[str, str]]
                       ) -> tuple[dict[str, int | float | bool | list[str]], list[str]]:
    """Validate, convert and merge PARAMETER (name, value) pairs, as Ollama's client does.

    Returns ``(params, warnings)``. List parameters (``stop``) accumulate in order;
    for scalars the last value wins. Deprecated names are dropped with a warning
    ``"parameter <name> is deprecated"`` (Ollama prints it prefixed by ``warning: ``).
    Errors: :class:`ParameterError` ``unknown parameter 'x'``, ``invalid int value [v]``,
    ``invalid float value [v]``, ``invalid bool value [v]``.
    """
    params: dict[str, int | float | bool | list[str]] = {}
    warnings: list[str] = []
    for name, value in pairs:
        if name in DEPRECATED_PARAMETERS:
            warnings.append(f"parameter {name} is deprecated")
            continue
        converted = convert_parameter(name, value)
        existing = params.get(name)
        if isinstance(existing, list) and isinstance(converted, list):
            existing.extend(converted)
        else:
            params[name] = converted
    return params, warnings


def params_json(params: Mapping[str, object]) -> bytes:
    """The params layer blob: Go ``json.Encoder.Encode`` of the map (sorted keys,
    compact, HTML-escaped, Go float format, trailing newline)."""
    return (go_json_dumps(dict(params), sort_keys=True) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- REQUIRES

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
