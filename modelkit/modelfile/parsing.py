"""Modelfile text to AST: decoding as Ollama does, the Lark grammar
(``grammars/modelfile.lark``, LALR + contextual lexer), and Lark's errors turned into
Ollama's messages with real positions."""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from modelkit.errors import FileNotFoundModelkitError, ModelfileError
from modelkit.gostrconv import is_print
from modelkit.modelfile.commands import (
    ERR_INVALID_COMMAND,
    ERR_INVALID_ROLE,
    ERR_MISSING_FROM,
    ERR_UNEXPECTED_EOF,
    KEYWORDS,
    Command,
    CommandKind,
    Modelfile,
)

if TYPE_CHECKING:
    from lark import Lark, Token, Tree
    from lark.exceptions import UnexpectedInput


# ---------------------------------------------------------------------- decoding

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


def has_nonprintable(v: str) -> bool:
    """Does ``v`` hold a rune ``strconv.IsPrint`` rejects, other than TAB, CR, LF?"""
    return not v.translate(_DROP_TAB_NEWLINE).isprintable()


def _mask_nonprintable(text: str) -> str:
    if text.translate(_DROP_TAB_NEWLINE).isprintable():  # fast path: nothing to mask
        return text
    return "".join(ch if ch in "\t\r\n" or is_print(ch) else _NP for ch in text)


# ---------------------------------------------------------------------- grammar


def _grammar_text() -> str:
    try:
        shipped = importlib.resources.files("modelkit") / "grammars" / "modelfile.lark"
        if shipped.is_file():
            return shipped.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):  # pragma: no cover
        pass
    repo = Path(__file__).resolve().parents[2] / "grammars" / "modelfile.lark"
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

    def error(message: str, at: int, hint: str = "") -> ModelfileError:
        line, column = where(at)
        return ModelfileError(message, path=path, line=line, column=column, hint=hint)

    if pos >= n:
        return error(ERR_UNEXPECTED_EOF, n)

    if "BARE" in expected:
        # A value opened a quote here that no later line closes: Ollama reads to EOF.
        quote = '"""' if text.startswith('"""', pos) else '"'
        closed = quote in text[pos + len(quote):]
        return error(ERR_UNEXPECTED_EOF, pos,
                     f"the {quote} opened here must close at the end of a line" if closed
                     else f"the {quote} opened here is never closed")

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


# ---------------------------------------------------------------------- parsing


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
        first = value.children[0] if value.children else head
        column = where(getattr(first, "start_pos", None) or 0)[1]
        if node.data == "simple":
            commands.append(Command(KEYWORDS[head.type], args, CommandKind.KEYWORD, line,
                                    column))
        elif node.data == "parameter":
            name = str(node.children[1]) if len(node.children) == 3 else ""
            commands.append(Command(name, args, CommandKind.PARAMETER, line, column))
        else:  # message
            role = str(node.children[1])
            commands.append(Command("message", f"{role}: {args}", CommandKind.KEYWORD, line,
                                    column))

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
