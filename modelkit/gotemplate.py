"""Go ``text/template`` validation: the parse step of ``ollama create``'s TEMPLATE check.

:func:`validate_go_template` re-implements the parse step of Go's ``text/template``: its lexer
(trim markers, comments, strings, raw strings, character constants, numbers) and its parser
(pipelines, declarations, ``if``/``range``/``with``/``block``/``define``/``template``,
``else if``/``else with``, ``break``/``continue``, variable scopes, and the function set that
Ollama registers). It reports Go's own message, prefixed the way ``ollama create`` prefixes it:
``template error: template: :1: unexpected EOF``. Errors found only at execution time are out of
scope, as they are for Ollama at create time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, NoReturn

from modelkit.errors import TemplateError
from modelkit.gostrconv import (
    StrconvError,
    is_print,
    parse_float,
    parse_int,
    parse_uint,
    quote,
    unquote,
    unquote_char,
)

__all__ = ["validate_go_template"]


# ---------------------------------------------------------------------------------------------
# Go text/template: formatting helpers (Go's %q and %#U)
# ---------------------------------------------------------------------------------------------

def _go_rune(ch: str | None) -> str:
    """Go's %#U."""
    if ch is None:
        return "U+FFFFFFFFFFFFFFFF"
    text = f"U+{ord(ch):04X}"
    return f"{text} '{ch}'" if is_print(ch) else text


# ---------------------------------------------------------------------------------------------
# Go text/template: lexer
# ---------------------------------------------------------------------------------------------

# Token types. Keywords sort after _KEYWORD.
(
    _ERROR, _BOOL, _CHAR, _CHAR_CONSTANT, _COMPLEX, _ASSIGN, _DECLARE, _EOF, _FIELD,
    _IDENTIFIER, _LEFT_DELIM, _LEFT_PAREN, _NUMBER, _PIPE, _RAW_STRING, _RIGHT_DELIM,
    _RIGHT_PAREN, _SPACE, _STRING, _TEXT, _VARIABLE, _KEYWORD, _BLOCK, _BREAK, _CONTINUE, _DOT,
    _DEFINE, _ELSE, _END, _IF, _NIL, _RANGE, _TEMPLATE, _WITH,
) = range(34)

_KEYWORDS = {
    ".": _DOT, "block": _BLOCK, "break": _BREAK, "continue": _CONTINUE, "define": _DEFINE,
    "else": _ELSE, "end": _END, "if": _IF, "range": _RANGE, "nil": _NIL, "template": _TEMPLATE,
    "with": _WITH,
}

_LEFT = "{{"
_RIGHT = "}}"
_SPACE_CHARS = " \t\r\n"


class _Token(NamedTuple):
    typ: int
    pos: int
    val: str
    line: int

    def __str__(self) -> str:
        if self.typ == _EOF:
            return "EOF"
        if self.typ == _ERROR:
            return self.val
        if self.typ > _KEYWORD:
            return f"<{self.val}>"
        if len(self.val.encode("utf-8", "surrogatepass")) > 10:
            return quote(self.val[:10]) + "..."
        return quote(self.val)


def _is_space(ch: str | None) -> bool:
    return ch is not None and ch in _SPACE_CHARS


def _is_alnum(ch: str | None) -> bool:
    return ch is not None and (ch == "_" or ch.isalpha() or ch.isdecimal())


def _in(ch: str | None, chars: str) -> bool:
    return ch is not None and ch in chars


_State = Callable[[], "_State | None"]


class _Lexer:
    """A port of the state machine of Go's text/template/parse lexer (default delimiters)."""

    def __init__(self, text: str) -> None:
        self.input = text
        self.pos = 0
        self.start = 0
        self.at_eof = False
        self.paren_depth = 0
        self.line = 1
        self.start_line = 1
        self.inside_action = False
        self.item = _Token(_EOF, 0, "EOF", 1)

    # -- character access ------------------------------------------------------------------
    def next(self) -> str | None:
        if self.pos >= len(self.input):
            self.at_eof = True
            return None
        ch = self.input[self.pos]
        self.pos += 1
        if ch == "\n":
            self.line += 1
        return ch

    def peek(self) -> str | None:
        ch = self.next()
        self.backup()
        return ch

    def backup(self) -> None:
        if not self.at_eof and self.pos > 0:
            self.pos -= 1
            if self.input[self.pos] == "\n":
                self.line -= 1

    def accept(self, valid: str) -> bool:
        if _in(self.next(), valid):
            return True
        self.backup()
        return False

    def accept_run(self, valid: str) -> None:
        while _in(self.next(), valid):
            pass
        self.backup()

    # -- items -------------------------------------------------------------------------------
    def this_item(self, typ: int) -> _Token:
        tok = _Token(typ, self.start, self.input[self.start:self.pos], self.start_line)
        self.start = self.pos
        self.start_line = self.line
        return tok

    def emit(self, typ: int) -> None:
        self.item = self.this_item(typ)

    def emit_item(self, tok: _Token) -> None:
        self.item = tok

    def ignore(self) -> None:
        self.line += self.input.count("\n", self.start, self.pos)
        self.start = self.pos
        self.start_line = self.line

    def errorf(self, message: str) -> None:
        self.item = _Token(_ERROR, self.start, message, self.start_line)
        self.start = 0
        self.pos = 0
        self.input = ""

    def next_item(self) -> _Token:
        self.item = _Token(_EOF, self.pos, "EOF", self.start_line)
        state: _State | None = self.lex_inside_action if self.inside_action else self.lex_text
        while state is not None:
            state = state()
        return self.item

    # -- helpers -----------------------------------------------------------------------------
    def _left_trim_marker_at(self, i: int) -> bool:
        s = self.input
        return i + 1 < len(s) and s[i] == "-" and s[i + 1] in _SPACE_CHARS

    def _right_trim_marker_at(self, i: int) -> bool:
        s = self.input
        return 0 <= i and i + 1 < len(s) and s[i] in _SPACE_CHARS and s[i + 1] == "-"

    def at_right_delim(self) -> tuple[bool, bool]:
        if self._right_trim_marker_at(self.pos) and self.input.startswith(_RIGHT, self.pos + 2):
            return True, True
        if self.input.startswith(_RIGHT, self.pos):
            return True, False
        return False, False

    def _left_trim_length(self, i: int) -> int:
        j = i
        while j < len(self.input) and self.input[j] in _SPACE_CHARS:
            j += 1
        return j - i

    def at_terminator(self) -> bool:
        ch = self.peek()
        if ch is None or _is_space(ch) or ch in ".,|:)(":
            return True
        return self.input.startswith(_RIGHT, self.pos)

    # -- states ------------------------------------------------------------------------------
    def lex_text(self) -> _State | None:
        x = self.input.find(_LEFT, self.pos)
        if x >= 0:
            if x > self.pos:
                self.pos = x
                trim = 0
                if self._left_trim_marker_at(self.pos + len(_LEFT)):
                    text = self.input[self.start:self.pos]
                    trim = len(text) - len(text.rstrip(_SPACE_CHARS))
                self.pos -= trim
                self.line += self.input.count("\n", self.start, self.pos)
                tok = self.this_item(_TEXT)
                self.pos += trim
                self.ignore()
                if tok.val:
                    self.emit_item(tok)
                    return None
            return self.lex_left_delim
        self.pos = len(self.input)
        if self.pos > self.start:
            self.line += self.input.count("\n", self.start, self.pos)
            self.emit(_TEXT)
            return None
        self.emit(_EOF)
        return None

    def lex_left_delim(self) -> _State | None:
        self.pos += len(_LEFT)
        after = 2 if self._left_trim_marker_at(self.pos) else 0
        if self.input.startswith("/*", self.pos + after):
            self.pos += after
            self.ignore()
            return self.lex_comment
        tok = self.this_item(_LEFT_DELIM)
        self.inside_action = True
        self.pos += after
        self.ignore()
        self.paren_depth = 0
        self.emit_item(tok)
        return None

    def lex_comment(self) -> _State | None:
        self.pos += 2
        x = self.input.find("*/", self.pos)
        if x < 0:
            self.errorf("unclosed comment")
            return None
        self.pos = x + 2
        delim, trim = self.at_right_delim()
        if not delim:
            self.errorf("comment ends before closing delimiter")
            return None
        self.line += self.input.count("\n", self.start, self.pos)
        self.this_item(_TEXT)  # comments are not emitted; this only moves start
        if trim:
            self.pos += 2
        self.pos += len(_RIGHT)
        if trim:
            self.pos += self._left_trim_length(self.pos)
        self.ignore()
        return self.lex_text

    def lex_right_delim(self) -> _State | None:
        _, trim = self.at_right_delim()
        if trim:
            self.pos += 2
            self.ignore()
        self.pos += len(_RIGHT)
        tok = self.this_item(_RIGHT_DELIM)
        if trim:
            self.pos += self._left_trim_length(self.pos)
            self.ignore()
        self.inside_action = False
        self.emit_item(tok)
        return None

    def lex_inside_action(self) -> _State | None:
        delim, _ = self.at_right_delim()
        if delim:
            if self.paren_depth == 0:
                return self.lex_right_delim
            self.errorf("unclosed left paren")
            return None
        ch = self.next()
        if ch is None:
            self.errorf("unclosed action")
            return None
        if _is_space(ch):
            self.backup()
            return self.lex_space
        if ch == "=":
            self.emit(_ASSIGN)
            return None
        if ch == ":":
            if self.next() != "=":
                self.errorf("expected :=")
                return None
            self.emit(_DECLARE)
            return None
        if ch == "|":
            self.emit(_PIPE)
            return None
        if ch == '"':
            return self.lex_quote
        if ch == "`":
            return self.lex_raw_quote
        if ch == "$":
            return self.lex_variable
        if ch == "'":
            return self.lex_char
        if ch == ".":
            if self.pos < len(self.input) and not "0" <= self.input[self.pos] <= "9":
                return self.lex_field
            self.backup()
            return self.lex_number
        if ch in "+-" or "0" <= ch <= "9":
            self.backup()
            return self.lex_number
        if _is_alnum(ch):
            self.backup()
            return self.lex_identifier
        if ch == "(":
            self.paren_depth += 1
            self.emit(_LEFT_PAREN)
            return None
        if ch == ")":
            self.paren_depth -= 1
            if self.paren_depth < 0:
                self.errorf("unexpected right paren")
                return None
            self.emit(_RIGHT_PAREN)
            return None
        if " " <= ch <= "~":
            self.emit(_CHAR)
            return None
        self.errorf(f"unrecognized character in action: {_go_rune(ch)}")
        return None

    def lex_space(self) -> _State | None:
        count = 0
        while _is_space(self.peek()):
            self.next()
            count += 1
        if self._right_trim_marker_at(self.pos - 1) and self.input.startswith(
            _RIGHT, self.pos + 1
        ):
            self.backup()
            if count == 1:
                return self.lex_right_delim
        self.emit(_SPACE)
        return None

    def lex_identifier(self) -> _State | None:
        while True:
            ch = self.next()
            if _is_alnum(ch):
                continue
            self.backup()
            word = self.input[self.start:self.pos]
            if not self.at_terminator():
                self.errorf(f"bad character {_go_rune(ch)}")
                return None
            if word in _KEYWORDS:
                self.emit(_KEYWORDS[word])
            elif word in ("true", "false"):
                self.emit(_BOOL)
            else:
                self.emit(_IDENTIFIER)
            return None

    def lex_field(self) -> _State | None:
        return self._lex_field_or_variable(_FIELD)

    def lex_variable(self) -> _State | None:
        if self.at_terminator():
            self.emit(_VARIABLE)
            return None
        return self._lex_field_or_variable(_VARIABLE)

    def _lex_field_or_variable(self, typ: int) -> _State | None:
        if self.at_terminator():
            self.emit(_VARIABLE if typ == _VARIABLE else _DOT)
            return None
        while True:
            ch = self.next()
            if not _is_alnum(ch):
                self.backup()
                break
        if not self.at_terminator():
            self.errorf(f"bad character {_go_rune(ch)}")
            return None
        self.emit(typ)
        return None

    def _lex_escaped(self, close: str, typ: int, what: str) -> _State | None:
        """A '...' or "..." literal: backslash escapes, no newline inside."""
        while True:
            ch = self.next()
            if ch == "\\":
                after = self.next()
                if after is not None and after != "\n":
                    continue
                self.errorf(f"unterminated {what}")
                return None
            if ch is None or ch == "\n":
                self.errorf(f"unterminated {what}")
                return None
            if ch == close:
                break
        self.emit(typ)
        return None

    def lex_char(self) -> _State | None:
        return self._lex_escaped("'", _CHAR_CONSTANT, "character constant")

    def lex_number(self) -> _State | None:
        if not self._scan_number():
            self.errorf(f"bad number syntax: {quote(self.input[self.start:self.pos])}")
            return None
        if _in(self.peek(), "+-"):
            if not self._scan_number() or self.input[self.pos - 1] != "i":
                self.errorf(f"bad number syntax: {quote(self.input[self.start:self.pos])}")
                return None
            self.emit(_COMPLEX)
            return None
        self.emit(_NUMBER)
        return None

    def _scan_number(self) -> bool:
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        if _is_alnum(self.peek()):
            self.next()
            return False
        return True

    def lex_quote(self) -> _State | None:
        return self._lex_escaped('"', _STRING, "quoted string")

    def lex_raw_quote(self) -> _State | None:
        while True:
            ch = self.next()
            if ch is None:
                self.errorf("unterminated raw quoted string")
                return None
            if ch == "`":
                break
        self.emit(_RAW_STRING)
        return None


# ---------------------------------------------------------------------------------------------
# Go strconv: literals
# ---------------------------------------------------------------------------------------------

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


def _check_number(text: str, typ: int) -> None:
    """The checks of Go's parse.newNumber; raises StrconvError with Go's message."""
    if typ == _CHAR_CONSTANT:
        _, tail = unquote_char(text[1:], text[0])
        if tail != "'":
            raise StrconvError(f"malformed character constant: {text}")
        return
    if typ == _COMPLEX:
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


# ---------------------------------------------------------------------------------------------
# Go text/template: parser
# ---------------------------------------------------------------------------------------------

#: Go's builtin template functions plus the ones Ollama registers (template/template.go).
_GO_BUILTINS = frozenset({
    "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf",
    "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
})
_OLLAMA_FUNCS = frozenset({"json", "currentDate", "yesterdayDate", "toTypeScriptType"})
_FUNCTIONS = _GO_BUILTINS | _OLLAMA_FUNCS

_NON_EXECUTABLE = frozenset({"bool", "dot", "nil", "number", "string"})
#: What Go's unicode.IsSpace accepts (used by bytes.TrimSpace in parse.IsEmptyTree).
_GO_SPACE = (" \t\n\r\v\f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
             "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


class _ParseError(Exception):
    pass


class _Marker:
    """{{end}} or {{else}}: ends an item list."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class _Operand(NamedTuple):
    kind: str  # identifier, dot, nil, variable, field, bool, number, string, pipe, chain
    text: str


class _Node(NamedTuple):
    """What the checks need of a parse-tree node.

    ``kind`` is "text" (``text`` holds it), "template" (``text`` is "pipe" when the call has
    an argument), "list", "if"/"range"/"with" (children: pipeline, body, else body), "pipe",
    "action" or "break".
    """

    kind: str
    text: str = ""
    children: tuple[_Node, ...] = ()


class _Tree:
    """One template being parsed: a port of Go's parse.Tree (its own look-ahead buffer)."""

    def __init__(self, name: str, lexer: _Lexer, tree_set: dict[str, list[_Node]]) -> None:
        self.name = name
        self.lex = lexer
        self.tree_set = tree_set
        self.token: list[_Token] = [_Token(_EOF, 0, "EOF", 1)] * 3
        self.peek_count = 0
        self.vars: list[str] = ["$"]
        self.action_line = 0
        self.range_depth = 0
        self.root: list[_Node] = []

    # -- token buffer ------------------------------------------------------------------------
    def next(self) -> _Token:
        if self.peek_count > 0:
            self.peek_count -= 1
        else:
            self.token[0] = self.lex.next_item()
        return self.token[self.peek_count]

    def backup(self) -> None:
        self.peek_count += 1

    def backup2(self, t1: _Token) -> None:
        self.token[1] = t1
        self.peek_count = 2

    def backup3(self, t2: _Token, t1: _Token) -> None:
        self.token[1] = t1
        self.token[2] = t2
        self.peek_count = 3

    def peek(self) -> _Token:
        if self.peek_count > 0:
            return self.token[self.peek_count - 1]
        self.peek_count = 1
        self.token[0] = self.lex.next_item()
        return self.token[0]

    def next_non_space(self) -> _Token:
        while True:
            tok = self.next()
            if tok.typ != _SPACE:
                return tok

    def peek_non_space(self) -> _Token:
        tok = self.next_non_space()
        self.backup()
        return tok

    # -- errors ------------------------------------------------------------------------------
    def errorf(self, message: str) -> NoReturn:
        raise _ParseError(f"template: :{self.token[0].line}: {message}")

    def expect(self, expected: int, context: str) -> _Token:
        tok = self.next_non_space()
        if tok.typ != expected:
            self.unexpected(tok, context)
        return tok

    def unexpected(self, tok: _Token, context: str) -> NoReturn:
        if tok.typ == _ERROR:
            extra = ""
            if self.action_line != 0 and self.action_line != tok.line:
                extra = f" in action started at :{self.action_line}"
                if tok.val.endswith(" action"):
                    extra = extra[len(" in action"):]
            self.errorf(f"{tok}{extra}")
        self.errorf(f"unexpected {tok} in {context}")

    def literal(self, check: Callable[[], object]) -> None:
        try:
            check()
        except StrconvError as err:
            self.errorf(str(err))

    # -- structure ---------------------------------------------------------------------------
    def parse(self) -> None:
        while self.peek().typ != _EOF:
            if self.peek().typ == _LEFT_DELIM:
                delim = self.next()
                if self.next_non_space().typ == _DEFINE:
                    _Tree("definition", self.lex, self.tree_set).parse_definition()
                    continue
                self.backup2(delim)
            node = self.text_or_action()
            if isinstance(node, _Marker):
                self.errorf(f"unexpected {node}")
            else:
                self.root.append(node)
        self.add()

    def add(self) -> None:
        existing = self.tree_set.get(self.name)
        if existing is None or _is_empty(existing):
            self.tree_set[self.name] = self.root
            return
        if not _is_empty(self.root):
            self.errorf(f"template: multiple definition of template {quote(self.name)}")

    def parse_definition(self) -> None:
        context = "define clause"
        tok = self.next_non_space()
        if tok.typ not in (_STRING, _RAW_STRING):
            self.unexpected(tok, context)
        try:
            self.name = unquote(tok.val)
        except StrconvError as err:
            self.errorf(str(err))
        self.expect(_RIGHT_DELIM, context)
        self.root, end = self.item_list()
        if str(end) != "{{end}}":
            self.errorf(f"unexpected {end} in {context}")
        self.add()

    def item_list(self) -> tuple[list[_Node], _Marker]:
        nodes: list[_Node] = []
        while self.peek_non_space().typ != _EOF:
            node = self.text_or_action()
            if isinstance(node, _Marker):
                return nodes, node
            nodes.append(node)
        self.errorf("unexpected EOF")

    def text_or_action(self) -> _Node | _Marker:
        tok = self.next_non_space()
        if tok.typ == _TEXT:
            return _Node("text", tok.val)
        if tok.typ == _LEFT_DELIM:
            self.action_line = tok.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        self.unexpected(tok, "input")

    def action(self) -> _Node | _Marker:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == _BLOCK:
            return self.block_control()
        if typ in (_BREAK, _CONTINUE):
            word = "{{break}}" if typ == _BREAK else "{{continue}}"
            after = self.next_non_space()
            if after.typ != _RIGHT_DELIM:
                self.unexpected(after, word)
            if self.range_depth == 0:
                self.errorf(f"{word} outside {{{{range}}}}")
            return _Node("break")
        if typ == _ELSE:
            peek = self.peek_non_space()
            if peek.typ not in (_IF, _WITH):
                self.expect(_RIGHT_DELIM, "else")
            return _Marker("{{else}}")
        if typ == _END:
            self.expect(_RIGHT_DELIM, "end")
            return _Marker("{{end}}")
        if typ in (_IF, _RANGE, _WITH):
            return self.control({_IF: "if", _RANGE: "range", _WITH: "with"}[typ])
        if typ == _TEMPLATE:
            return self.template_control()
        self.backup()
        self.peek()
        return _Node("action", children=(self.pipeline("command", _RIGHT_DELIM),))

    def control(self, context: str) -> _Node:
        depth = len(self.vars)
        try:
            pipe = self.pipeline(context, _RIGHT_DELIM)
            if context == "range":
                self.range_depth += 1
            body, end = self.item_list()
            if context == "range":
                self.range_depth -= 1
            children = [pipe, _Node("list", children=tuple(body))]
            if str(end) == "{{else}}":
                if context == "if" and self.peek().typ == _IF:
                    self.next()
                    children.append(_Node("list", children=(self.control("if"),)))
                elif context == "with" and self.peek().typ == _WITH:
                    self.next()
                    children.append(_Node("list", children=(self.control("with"),)))
                else:
                    else_body, end = self.item_list()
                    if str(end) != "{{end}}":
                        self.errorf(f"expected end; found {end}")
                    children.append(_Node("list", children=tuple(else_body)))
            return _Node(context, children=tuple(children))
        finally:
            del self.vars[depth:]

    def block_control(self) -> _Node:
        context = "block clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = self.pipeline(context, _RIGHT_DELIM)
        block = _Tree(name, self.lex, self.tree_set)
        block.root, end = block.item_list()
        if str(end) != "{{end}}":
            self.errorf(f"unexpected {end} in {context}")
        block.add()
        return _Node("template", "pipe", children=(pipe,))

    def template_control(self) -> _Node:
        context = "template clause"
        tok = self.next_non_space()
        self.template_name(tok, context)
        if self.next_non_space().typ != _RIGHT_DELIM:
            self.backup()
            return _Node("template", "pipe", children=(self.pipeline(context, _RIGHT_DELIM),))
        return _Node("template", "")

    def template_name(self, tok: _Token, context: str) -> str:
        if tok.typ not in (_STRING, _RAW_STRING):
            self.unexpected(tok, context)
        try:
            return unquote(tok.val)
        except StrconvError as err:
            self.errorf(str(err))

    # -- pipelines ---------------------------------------------------------------------------
    def pipeline(self, context: str, end: int) -> _Node:
        self.peek_non_space()
        declared = 0
        while True:  # declarations; the loop stands for Go's "goto decls"
            v = self.peek_non_space()
            if v.typ != _VARIABLE:
                break
            self.next()
            after = self.peek()
            nxt = self.peek_non_space()
            if nxt.typ in (_ASSIGN, _DECLARE):
                self.next_non_space()
                declared += 1
                self.vars.append(v.val)
            elif nxt.typ == _CHAR and nxt.val == ",":
                self.next_non_space()
                declared += 1
                self.vars.append(v.val)
                if context == "range" and declared < 2:
                    if self.peek_non_space().typ in (_VARIABLE, _RIGHT_DELIM, _RIGHT_PAREN):
                        continue
                    self.errorf("range can only initialize variables")
                self.errorf(f"too many declarations in {context}")
            elif after.typ == _SPACE:
                self.backup3(v, after)
            else:
                self.backup2(v)
            break
        commands: list[list[_Operand]] = []
        while True:
            tok = self.next_non_space()
            if tok.typ == end:
                if not commands:
                    self.errorf(f"missing value for {context}")
                for stage, command in enumerate(commands[1:], start=2):
                    if command[0].kind in _NON_EXECUTABLE:
                        self.errorf(f"non executable command in pipeline stage {stage}")
                return _Node("pipe")
            if tok.typ in (_BOOL, _CHAR_CONSTANT, _COMPLEX, _DOT, _FIELD, _IDENTIFIER, _NUMBER,
                           _NIL, _RAW_STRING, _STRING, _VARIABLE, _LEFT_PAREN):
                self.backup()
                commands.append(self.command())
            else:
                self.unexpected(tok, context)

    def command(self) -> list[_Operand]:
        args: list[_Operand] = []
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                args.append(operand)
            tok = self.next()
            if tok.typ == _SPACE:
                continue
            if tok.typ in (_RIGHT_DELIM, _RIGHT_PAREN):
                self.backup()
            elif tok.typ != _PIPE:
                self.unexpected(tok, "operand")
            break
        if not args:
            self.errorf("empty command")
        return args

    def operand(self) -> _Operand | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == _FIELD:
            while self.peek().typ == _FIELD:
                self.next()
            if node.kind in _NON_EXECUTABLE:
                self.errorf(f"unexpected . after term {quote(node.text)}")
            if node.kind not in ("field", "variable"):
                node = _Operand("chain", node.text)
        return node

    def term(self) -> _Operand | None:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == _IDENTIFIER:
            if tok.val not in _FUNCTIONS:
                self.errorf(f"function {quote(tok.val)} not defined")
            return _Operand("identifier", tok.val)
        if typ == _DOT:
            return _Operand("dot", ".")
        if typ == _NIL:
            return _Operand("nil", "nil")
        if typ == _VARIABLE:
            if tok.val not in self.vars:
                self.errorf(f"undefined variable {quote(tok.val)}")
            return _Operand("variable", tok.val)
        if typ == _FIELD:
            return _Operand("field", tok.val)
        if typ == _BOOL:
            return _Operand("bool", tok.val)
        if typ in (_CHAR_CONSTANT, _COMPLEX, _NUMBER):
            self.literal(lambda: _check_number(tok.val, typ))
            return _Operand("number", tok.val)
        if typ == _LEFT_PAREN:
            self.pipeline("parenthesized pipeline", _RIGHT_PAREN)
            return _Operand("pipe", "")
        if typ in (_STRING, _RAW_STRING):
            self.literal(lambda: unquote(tok.val))
            return _Operand("string", tok.val)
        self.backup()
        return None


def _is_empty(nodes: list[_Node]) -> bool:
    """Go's parse.IsEmptyTree for a template's top-level list."""
    return all(node.kind == "text" and not node.text.strip(_GO_SPACE) for node in nodes)


def _has_template_without_pipe(nodes: tuple[_Node, ...] | list[_Node]) -> bool:
    for node in nodes:
        if node.kind == "template" and not node.text:
            return True
        if node.kind in ("if", "range", "with", "list") and _has_template_without_pipe(
            node.children
        ):
            return True
    return False


def validate_go_template(text: str) -> None:
    """Check *text* the way ``ollama create`` checks a TEMPLATE; raise :class:`TemplateError`.

    The message is Go's parse error prefixed with ``template error: ``, for example
    ``template error: template: :1: function "foo" not defined``.
    """
    tree_set: dict[str, list[_Node]] = {}
    try:
        _Tree("", _Lexer(text), tree_set).parse()
    except _ParseError as err:
        raise TemplateError(f"template error: {err}") from None
    except RecursionError:
        raise TemplateError("template error: template is nested too deeply") from None
    # Ollama walks every parsed template and rejects {{template "name"}} without an argument.
    if any(_has_template_without_pipe(nodes) for nodes in tree_set.values()):
        raise TemplateError("template error: undefined template specified")
