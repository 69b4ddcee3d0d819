"""Go's ``strconv``, the parts Modelfiles, Go templates and Go's JSON encoder need: number
literals (``ParseInt``/``ParseUint``/``ParseFloat`` with their underscore rule), number
formatting (``FormatFloat`` with shortest digits), quoting (``Quote``, ``Unquote``,
``UnquoteChar``) and ``IsPrint``. Each rule lives here once; callers add their own policy
(Ollama rejects NaN parameters, Go's JSON encoder picks ``'e'`` or ``'f'``).

Runes are classified with Python's Unicode tables, which can differ from Go's for code
points assigned in newer Unicode versions.
"""

from __future__ import annotations

import math
import re
import struct
import unicodedata
from decimal import Decimal
from fractions import Fraction

__all__ = ["SYNTAX", "RANGE", "StrconvError", "format_float", "is_print", "parse_float",
           "parse_int", "parse_uint", "quote", "underscore_ok", "unquote", "unquote_char"]

SYNTAX = "invalid syntax"
RANGE = "value out of range"


class StrconvError(ValueError):
    """A literal Go would reject; the message is Go's reason (``invalid syntax``)."""


def underscore_ok(s: str) -> bool:
    """Go's ``underscoreOK``: an underscore may only stand between digits, or right after
    a base prefix (``0x_1`` is fine, ``1__0``, ``_1`` and ``1_`` are not)."""
    saw = "^"
    i = 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexadecimal = False
    if len(s) >= 2 and s[0] == "0" and s[1] in "bBoOxX":
        i, saw, hexadecimal = 2, "0", s[1] in "xX"
    for ch in s[i:]:
        if "0" <= ch <= "9" or (hexadecimal and ch in "abcdefABCDEF"):
            saw = "0"
        elif ch == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


def is_print(ch: str) -> bool:
    """Go's ``strconv.IsPrint`` for one rune: letters, marks, numbers, punctuation,
    symbols (Unicode categories L, M, N, P, S) and the ASCII space.
    (Equal to ``str.isprintable`` for a single character.)"""
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


# ----------------------------------------------------------------------- integers
def parse_uint(s: str, base: int = 0) -> int | None:
    """``strconv.ParseUint(s, base, 64)``; None on any error. Base 0 reads the prefix
    (``0b``, ``0o``, ``0x``, a bare leading ``0`` is octal) and allows underscores."""
    if not s:
        return None
    original = s
    if base == 0:
        base = 10
        if s[0] == "0":
            if len(s) >= 3 and s[1].lower() in "box":
                base, s = {"b": 2, "o": 8, "x": 16}[s[1].lower()], s[2:]
            else:
                base, s = 8, s[1:]
        underscores_allowed = True
    else:
        underscores_allowed = False
    value = 0
    underscores = False
    for c in s:
        if c == "_" and underscores_allowed:
            underscores = True
            continue
        digit = int(c, 36) if c.isascii() and c.isalnum() else 99
        if digit >= base:
            return None
        value = value * base + digit
    if value >= 1 << 64:
        return None
    if underscores and not underscore_ok(original):
        return None
    return value


def parse_int(s: str, base: int = 0) -> int | None:
    """``strconv.ParseInt(s, base, 64)``; None on any error."""
    if not s:
        return None
    negative = s[0] == "-"
    body = s[1:] if s[0] in "+-" else s
    value = parse_uint(body, base)
    if value is None:
        return None
    if (negative and value > 1 << 63) or (not negative and value >= 1 << 63):
        return None
    return -value if negative else value


# ------------------------------------------------------------------------- floats
# Go float literals; underscores are checked separately (underscore_ok).
_DEC_FLOAT = re.compile(
    r"(?P<sign>[+-]?)(?P<int>[0-9_]*)(?:\.(?P<frac>[0-9_]*))?"
    r"(?:[eE](?P<esign>[+-]?)(?P<exp>[0-9][0-9_]*))?"
)
_HEX_FLOAT = re.compile(
    r"(?P<sign>[+-]?)0[xX](?P<int>[0-9a-fA-F_]*)(?:\.(?P<frac>[0-9a-fA-F_]*))?"
    r"[pP](?P<esign>[+-]?)(?P<exp>[0-9][0-9_]*)"
)
_SPECIAL_FLOAT = re.compile(r"(?P<sign>[+-]?)(?P<word>(?i:inf|infinity|nan))", re.ASCII)
# (mantissa bits, smallest normal exponent, the power of two that overflows) per size
_FLOAT_FORMATS = {32: (23, -126, 2**128), 64: (52, -1022, 2**1024)}


def parse_float(s: str, bits: int = 64) -> tuple[float | None, str]:
    """``strconv.ParseFloat(s, bits)``: the value (for 32 bits, the float32 value as a
    Python float) and ``""``, or None and Go's reason (``SYNTAX`` or ``RANGE``).
    ``inf``, ``infinity`` and ``nan`` (any case, signed) are accepted, as in Go."""
    special = _SPECIAL_FLOAT.fullmatch(s)
    if special:
        word = special.group("word").lower()
        if word == "nan":
            return (math.nan, "") if not special.group("sign") else (None, SYNTAX)
        return (-math.inf if special.group("sign") == "-" else math.inf), ""
    unsigned = s[1:] if s[:1] in ("+", "-") else s
    if len(unsigned) > 2 and unsigned[:2] in ("0x", "0X"):
        m, base = _HEX_FLOAT.fullmatch(s), 16  # a hex mantissa needs a p exponent
    else:
        m, base = _DEC_FLOAT.fullmatch(s), 10
    if m is None:
        return None, SYNTAX
    int_part = (m.group("int") or "").replace("_", "")
    frac_part = (m.group("frac") or "").replace("_", "")
    if not int_part and not frac_part:
        return None, SYNTAX
    if "_" in s and not underscore_ok(s):
        return None, SYNTAX
    # Go stops accumulating the exponent once it reaches 10000 (enough to over/underflow).
    exp = 0
    for ch in (m.group("exp") or "").replace("_", ""):
        if exp < 10000:
            exp = exp * 10 + int(ch)
    if m.group("esign") == "-":
        exp = -exp
    mantissa = int(int_part + frac_part or "0", base)
    neg = m.group("sign") == "-"
    zero = -0.0 if neg else 0.0
    if mantissa == 0:
        return zero, ""
    if base == 16:
        exp2 = exp - 4 * len(frac_part)
        magnitude = mantissa.bit_length() + exp2  # value < 2**magnitude
        if magnitude > 1100:
            return None, RANGE
        if magnitude < -1200:
            return zero, ""
        q = Fraction(mantissa) * Fraction(2) ** exp2
    else:
        exp10 = exp - len(frac_part)
        magnitude = len(str(mantissa)) + exp10  # value < 10**magnitude
        if magnitude > 330:
            return None, RANGE
        if magnitude < -360:
            return zero, ""
        q = Fraction(mantissa) * Fraction(10) ** exp10
    value = _round_float(-q if neg else q, bits)
    return (None, RANGE) if value is None else (value, "")


def _round_float(q: Fraction, bits: int) -> float | None:
    """Round the rational ``q`` to the nearest float of ``bits`` (ties to even), as a
    Python float (exact); None when that overflows (Go: ErrRange)."""
    if q == 0:
        return 0.0
    neg = q < 0
    q = abs(q)
    mant_bits, min_exp, overflow = _FLOAT_FORMATS[bits]
    e = q.numerator.bit_length() - q.denominator.bit_length()  # 2**e <= q < 2**(e+2)
    if q < Fraction(2) ** e:
        e -= 1
    elif q >= Fraction(2) ** (e + 1):
        e += 1
    quantum = max(e, min_exp) - mant_bits
    m = round(q / Fraction(2) ** quantum)  # Fraction rounds half to even
    value = Fraction(m) * Fraction(2) ** quantum
    if value >= overflow:
        return None
    return -float(value) if neg else float(value)


def _shortest32(x: float) -> str:
    """The fewest significant digits that read back as ``x`` rounded to a float32 (of
    those, the closest to it). Just above a power of two the nearest decimal of a length
    may miss while the next one up reads back, so both neighbours are tried."""
    (x,) = struct.unpack("<f", struct.pack("<f", x))
    exact = Decimal(x)
    for precision in range(1, 10):
        nearest = Decimal(f"{x:.{precision}g}")
        unit = Decimal((0, (1,), nearest.adjusted() - precision + 1))
        hits = [d for d in (nearest, nearest + unit, nearest - unit)
                if parse_float(str(d), 32)[0] == x]
        if hits:
            return str(min(hits, key=lambda d: abs(d - exact)))
    raise AssertionError("nine digits always read back")  # FLT_DECIMAL_DIG


def format_float(x: float, fmt: str, bits: int = 64) -> str:
    """``strconv.FormatFloat(x, fmt, -1, bits)`` for ``fmt`` ``'e'``, ``'f'`` or ``'g'``
    (what ``fmt``'s ``%v`` prints): the shortest digits that read back as the same
    float of ``bits`` bits."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    shortest = repr(float(x)) if bits == 64 else _shortest32(x)
    sign, digits, exponent = Decimal(shortest).as_tuple()
    assert isinstance(exponent, int)
    while len(digits) > 1 and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    if digits == (0,):
        exponent = 0
    minus = "-" if sign else ""
    exp10 = exponent + len(digits) - 1
    if fmt == "g":  # shortest: %e when the exponent is < -4 or >= 6 (Go's eprec)
        fmt = "e" if exp10 < -4 or exp10 >= 6 else "f"
    if fmt == "f":
        return minus + format(Decimal((0, digits, exponent)), "f")
    if fmt != "e":
        raise ValueError(f"format_float: unsupported format {fmt!r}")
    text = "".join(map(str, digits))
    mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
    return f"{minus}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"


# ------------------------------------------------------------------------- quoting
_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                  "\t": "\\t", "\v": "\\v"}
_UNQUOTE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                    "v": "\v", "\\": "\\"}


def quote(s: str) -> str:
    """``strconv.Quote`` (what fmt's ``%q`` prints for a string)."""
    out = ['"']
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif is_print(ch):
            out.append(ch)
        elif ch in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def unquote_char(s: str, quote_char: str) -> tuple[str, str]:
    """``strconv.UnquoteChar``: the first (possibly escaped) character of ``s``, and the
    rest. Raises :class:`StrconvError`."""
    if not s or s[0] == quote_char:
        raise StrconvError(SYNTAX)
    c = s[0]
    if c != "\\":
        return c, s[1:]
    if len(s) <= 1:
        raise StrconvError(SYNTAX)
    c, s = s[1], s[2:]
    if c in _UNQUOTE_ESCAPES:
        return _UNQUOTE_ESCAPES[c], s
    if c in "xuU":
        n = {"x": 2, "u": 4, "U": 8}[c]
        digits = s[:n]
        if len(digits) < n or any(d not in "0123456789abcdefABCDEF" for d in digits):
            raise StrconvError(SYNTAX)
        value = int(digits, 16)
        if c != "x" and (value > 0x10FFFF or 0xD800 <= value <= 0xDFFF):
            raise StrconvError(SYNTAX)
        return chr(value), s[n:]
    if "0" <= c <= "7":
        digits = c + s[:2]
        if len(digits) < 3 or any(not "0" <= d <= "7" for d in digits):
            raise StrconvError(SYNTAX)
        value = int(digits, 8)
        if value > 255:
            raise StrconvError(SYNTAX)
        return chr(value), s[2:]
    if c in "'\"" and c == quote_char:
        return c, s
    raise StrconvError(SYNTAX)


def unquote(token: str) -> str:
    """``strconv.Unquote`` for ``"..."`` and raw ```...``` strings. Raises
    :class:`StrconvError`."""
    if len(token) < 2:
        raise StrconvError(SYNTAX)
    quote_char, body = token[0], token[1:-1]
    if quote_char == "`":
        if "`" in body or token[-1] != "`":
            raise StrconvError(SYNTAX)
        return body.replace("\r", "")
    if quote_char != '"' or token[-1] != '"' or "\n" in body:
        raise StrconvError(SYNTAX)
    out = []
    while body:
        ch, body = unquote_char(body, '"')
        out.append(ch)
    return "".join(out)
