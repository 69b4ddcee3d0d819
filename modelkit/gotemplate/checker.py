"""The checks Go's text/template parser makes beyond syntax, and the ones ``ollama
create`` adds: number literals (Go's parse.newNumber), the function set Ollama registers,
Go's IsEmptyTree, and ``{{template "name"}}`` without an argument."""

from __future__ import annotations

from typing import NamedTuple

from modelkit.gostrconv import StrconvError, parse_float, parse_int, parse_uint, quote, unquote_char
from modelkit.gotemplate.lexer import (
    CHAR_CONSTANT,
    COMPLEX,
)

#: Go's builtin template functions plus the ones Ollama registers (template/template.go).
GO_BUILTINS = frozenset({
    "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf",
    "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
})
OLLAMA_FUNCS = frozenset({"json", "currentDate", "yesterdayDate", "toTypeScriptType"})
FUNCTIONS = GO_BUILTINS | OLLAMA_FUNCS

#: What Go's unicode.IsSpace accepts (used by bytes.TrimSpace in parse.IsEmptyTree).
GO_SPACE = (" \t\n\r\v\f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
            "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


class Node(NamedTuple):
    """What the checks need of a parse-tree node.

    ``kind`` is "text" (``text`` holds it), "template" (``text`` is "pipe" when the call has
    an argument), "list", "if"/"range"/"with" (children: pipeline, body, else body), "pipe",
    "action" or "break".
    """

    kind: str
    text: str = ""
    children: tuple[Node, ...] = ()


def _parse_float(s: str) -> float | None:
    """Go's strconv.ParseFloat(s, 64) for the spellings the lexer can produce; None on error."""
    value, _ = parse_float(s)
    return value


def _complex_error(text: str) -> str | None:
    """The error fmt.Sscan gives for a complex literal such as ``1+2i`` (None if it parses)."""
    pos = 0

    def accept(chars: str) -> bool:
        nonlocal pos
        if pos < len(text) and text[pos] in chars:
            pos += 1
            return True
        return False

    def float_token() -> str:
        start = pos
        if accept("nN") and accept("aA") and accept("nN"):
            return text[start:pos]
        accept("+-")
        if accept("iI") and accept("nN") and accept("fF"):
            return text[start:pos]
        digits, exponent = "0123456789_", "eEpP"
        if accept("0") and accept("xX"):
            digits, exponent = "0123456789aAbBcCdDeEfF_", "pP"
        while accept(digits):
            pass
        if accept("."):
            while accept(digits):
                pass
        if accept(exponent):
            accept("+-")
            while accept("0123456789_"):
                pass
        return text[start:pos]

    real = float_token()
    sign_at = pos
    if not accept("+-"):
        return "syntax error scanning complex number"
    imag = text[sign_at] + float_token()
    if not accept("i"):
        return "syntax error scanning complex number"
    for part in (real, imag):
        value, reason = parse_float(part)
        if value is None:
            return f"strconv.ParseFloat: parsing {quote(part)}: {reason}"
    return None


def check_number(text: str, typ: int) -> None:
    """The checks of Go's parse.newNumber; raises StrconvError with Go's message."""
    if typ == CHAR_CONSTANT:
        _, tail = unquote_char(text[1:], text[0])
        if tail != "'":
            raise StrconvError(f"malformed character constant: {text}")
        return
    if typ == COMPLEX:
        error = _complex_error(text)
        if error is not None:
            raise StrconvError(error)
        return
    if text.endswith("i") and _parse_float(text[:-1]) is not None:
        return
    if parse_uint(text) is not None or parse_int(text) is not None:
        return
    if _parse_float(text) is not None:
        if not any(c in text for c in ".eEpP"):
            raise StrconvError(f"integer overflow: {quote(text)}")
        return
    raise StrconvError(f"illegal number syntax: {quote(text)}")


def is_empty_tree(nodes: list[Node]) -> bool:
    """Go's parse.IsEmptyTree for a template's top-level list."""
    return all(node.kind == "text" and not node.text.strip(GO_SPACE) for node in nodes)


def has_template_without_pipe(nodes: tuple[Node, ...] | list[Node]) -> bool:
    for node in nodes:
        if node.kind == "template" and not node.text:
            return True
        if node.kind in ("if", "range", "with", "list") and has_template_without_pipe(
            node.children
        ):
            return True
    return False
