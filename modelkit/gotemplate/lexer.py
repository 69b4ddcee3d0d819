"""Go ``text/template``'s lexer (a port of the state machine of text/template/parse's
lexer, default delimiters) and its token types."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from modelkit.gostrconv import is_print, quote


def go_rune(ch: str | None) -> str:
    """Go's %#U."""
    if ch is None:
        return "U+FFFFFFFFFFFFFFFF"
    text = f"U+{ord(ch):04X}"
    return f"{text} '{ch}'" if is_print(ch) else text


# Token types. Keywords sort after KEYWORD.
(
    ERROR, BOOL, CHAR, CHAR_CONSTANT, COMPLEX, ASSIGN, DECLARE, EOF, FIELD,
    IDENTIFIER, LEFT_DELIM, LEFT_PAREN, NUMBER, PIPE, RAW_STRING, RIGHT_DELIM,
    RIGHT_PAREN, SPACE, STRING, TEXT, VARIABLE, KEYWORD, BLOCK, BREAK, CONTINUE, DOT,
    DEFINE, ELSE, END, IF, NIL, RANGE, TEMPLATE, WITH,
) = range(34)

_KEYWORDS = {
    ".": DOT, "block": BLOCK, "break": BREAK, "continue": CONTINUE, "define": DEFINE,
    "else": ELSE, "end": END, "if": IF, "range": RANGE, "nil": NIL, "template": TEMPLATE,
    "with": WITH,
}

_LEFT = "{{"
_RIGHT = "}}"
_SPACE_CHARS = " \t\r\n"


class Token(NamedTuple):
    typ: int
    pos: int
    val: str
    line: int

    def __str__(self) -> str:
        if self.typ == EOF:
            return "EOF"
        if self.typ == ERROR:
            return self.val
        if self.typ > KEYWORD:
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


class Lexer:
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
        self.item = Token(EOF, 0, "EOF", 1)

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
    def this_item(self, typ: int) -> Token:
        tok = Token(typ, self.start, self.input[self.start:self.pos], self.start_line)
        self.start = self.pos
        self.start_line = self.line
        return tok

    def emit(self, typ: int) -> None:
        self.item = self.this_item(typ)

    def emit_item(self, tok: Token) -> None:
        self.item = tok

    def ignore(self) -> None:
        self.line += self.input.count("\n", self.start, self.pos)
        self.start = self.pos
        self.start_line = self.line

    def errorf(self, message: str) -> None:
        self.item = Token(ERROR, self.start, message, self.start_line)
        self.start = 0
        self.pos = 0
        self.input = ""

    def next_item(self) -> Token:
        self.item = Token(EOF, self.pos, "EOF", self.start_line)
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
                tok = self.this_item(TEXT)
                self.pos += trim
                self.ignore()
                if tok.val:
                    self.emit_item(tok)
                    return None
            return self.lex_left_delim
        self.pos = len(self.input)
        if self.pos > self.start:
            self.line += self.input.count("\n", self.start, self.pos)
            self.emit(TEXT)
            return None
        self.emit(EOF)
        return None

    def lex_left_delim(self) -> _State | None:
        self.pos += len(_LEFT)
        after = 2 if self._left_trim_marker_at(self.pos) else 0
        if self.input.startswith("/*", self.pos + after):
            self.pos += after
            self.ignore()
            return self.lex_comment
        tok = self.this_item(LEFT_DELIM)
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
        self.this_item(TEXT)  # comments are not emitted; this only moves start
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
        tok = self.this_item(RIGHT_DELIM)
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
            self.emit(ASSIGN)
            return None
        if ch == ":":
            if self.next() != "=":
                self.errorf("expected :=")
                return None
            self.emit(DECLARE)
            return None
        if ch == "|":
            self.emit(PIPE)
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
            self.emit(LEFT_PAREN)
            return None
        if ch == ")":
            self.paren_depth -= 1
            if self.paren_depth < 0:
                self.errorf("unexpected right paren")
                return None
            self.emit(RIGHT_PAREN)
            return None
        if " " <= ch <= "~":
            self.emit(CHAR)
            return None
        self.errorf(f"unrecognized character in action: {go_rune(ch)}")
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
        self.emit(SPACE)
        return None

    def lex_identifier(self) -> _State | None:
        while True:
            ch = self.next()
            if _is_alnum(ch):
                continue
            self.backup()
            word = self.input[self.start:self.pos]
            if not self.at_terminator():
                self.errorf(f"bad character {go_rune(ch)}")
                return None
            if word in _KEYWORDS:
                self.emit(_KEYWORDS[word])
            elif word in ("true", "false"):
                self.emit(BOOL)
            else:
                self.emit(IDENTIFIER)
            return None

    def lex_field(self) -> _State | None:
        return self._lex_field_or_variable(FIELD)

    def lex_variable(self) -> _State | None:
        if self.at_terminator():
            self.emit(VARIABLE)
            return None
        return self._lex_field_or_variable(VARIABLE)

    def _lex_field_or_variable(self, typ: int) -> _State | None:
        if self.at_terminator():
            self.emit(VARIABLE if typ == VARIABLE else DOT)
            return None
        while True:
            ch = self.next()
            if not _is_alnum(ch):
                self.backup()
                break
        if not self.at_terminator():
            self.errorf(f"bad character {go_rune(ch)}")
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
        return self._lex_escaped("'", CHAR_CONSTANT, "character constant")

    def lex_number(self) -> _State | None:
        if not self._scan_number():
            self.errorf(f"bad number syntax: {quote(self.input[self.start:self.pos])}")
            return None
        if _in(self.peek(), "+-"):
            if not self._scan_number() or self.input[self.pos - 1] != "i":
                self.errorf(f"bad number syntax: {quote(self.input[self.start:self.pos])}")
                return None
            self.emit(COMPLEX)
            return None
        self.emit(NUMBER)
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
        return self._lex_escaped('"', STRING, "quoted string")

    def lex_raw_quote(self) -> _State | None:
        while True:
            ch = self.next()
            if ch is None:
                self.errorf("unterminated raw quoted string")
                return None
            if ch == "`":
                break
        self.emit(RAW_STRING)
        return None
