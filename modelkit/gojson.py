"""JSON text exactly as Go's ``encoding/json`` writes it (``json.Marshal`` / ``Encoder.Encode``).

Ollama's blobs (params layer, config, manifest) are written by Go, and their digests
depend on the exact bytes. Go's encoder differs from :func:`json.dumps` in ways that
matter:

* output is compact (no spaces after ``,`` and ``:``);
* ``<``, ``>`` and ``&`` are escaped as ``\\u003c``, ``\\u003e``, ``\\u0026`` (HTML-safe
  default), and so are U+2028 and U+2029;
* control characters use ``\\b \\f \\n \\r \\t`` where they exist (Go >= 1.22), otherwise
  ``\\u00XX`` with lower-case hex; DEL and all other non-ASCII runes are written as UTF-8,
  unescaped; invalid UTF-8 (here: lone surrogates) becomes the escape ``\\ufffd``;
* floats use the shortest representation that round-trips, in plain decimal notation
  unless ``|x| < 1e-6`` or ``|x| >= 1e21`` (then ``1e-7`` style, exponent without
  leading zeros); whole floats have no ``.0`` (``1.0`` -> ``1``); NaN and infinities are
  an error, as in Go.

Dict keys are written in the order given: Go sorts map keys but keeps struct field
order, so callers that emulate a Go map sort their keys first (``sort_keys=True``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from modelkit.gostrconv import format_float

__all__ = ["go_json_dumps", "go_format_float"]

_ESCAPE_RE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    if "\ud800" <= ch <= "\udfff":
        # A lone surrogate cannot be encoded as UTF-8: Go writes invalid UTF-8 as \ufffd.
        return "\\ufffd"
    return f"\\u{ord(ch):04x}"


def _quote(s: str) -> str:
    return '"' + _ESCAPE_RE.sub(_escape_char, s) + '"'


def go_format_float(x: float) -> str:
    """Format a float64 the way encoding/json does (see module docstring): strconv's
    shortest digits in ``'f'`` form, or ``'e'`` form with ``e-07`` shortened to ``e-7``."""
    if not math.isfinite(x):
        raise ValueError(f"json: unsupported value: {format_float(x, 'f')}")
    a = abs(x)
    fmt = "e" if a != 0 and (a < 1e-6 or a >= 1e21) else "f"
    s = format_float(x, fmt)
    if fmt == "e" and s[-4:-1] == "e-0":
        s = s[:-2] + s[-1]
    return s


def _encode(obj: object, out: list[str], sort_keys: bool) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(_quote(obj))
    elif isinstance(obj, int):
        out.append(str(int(obj)))
    elif isinstance(obj, float):
        out.append(go_format_float(obj))
    elif isinstance(obj, Mapping):
        items = list(obj.items())
        if sort_keys:
            items.sort(key=lambda kv: kv[0])
        out.append("{")
        for i, (k, v) in enumerate(items):
            if not isinstance(k, str):
                raise TypeError(f"JSON object keys must be str, not {type(k).__name__}")
            if i:
                out.append(",")
            out.append(_quote(k))
            out.append(":")
            _encode(v, out, sort_keys)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, v in enumerate(obj):
            if i:
                out.append(",")
            _encode(v, out, sort_keys)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as Go JSON")


def go_json_dumps(obj: object, *, sort_keys: bool = False) -> str:
    """Serialize ``obj`` as Go's ``json.Marshal`` would (no trailing newline).

    Supports None, bool, int, float, str, mappings with str keys and lists/tuples.
    Mapping keys keep their order unless ``sort_keys`` is true (Go sorts map keys at
    every level, by byte value, which for str equals code-point order).
    ``json.Encoder.Encode`` adds a trailing ``"\\n"``; append it yourself when needed.
    """
    out: list[str] = []
    _encode(obj, out, sort_keys)
    return "".join(out)
