"""Ollama Modelfile: parse, format, and convert PARAMETER values.

The package: ``commands`` (the AST: ``Command``, ``Modelfile``), ``parsing`` (text to
AST via Lark), ``formatting`` (AST to text, the exact inverse) and ``parameters`` (the
one table of PARAMETER names and types, and their conversion).

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

from modelkit.gostrconv import is_print
from modelkit.modelfile.commands import (
    ERR_INVALID_COMMAND,
    ERR_INVALID_ROLE,
    ERR_MISSING_FROM,
    ERR_REQUIRES,
    ERR_UNEXPECTED_EOF,
    KEYWORDS,
    MESSAGE_ROLES,
    Command,
    CommandKind,
    Modelfile,
    normalize_requires,
)
from modelkit.modelfile.formatting import format_command, format_modelfile, format_value
from modelkit.modelfile.parameters import (
    DEPRECATED_PARAMETERS,
    PARAMETERS,
    ParamType,
    convert_parameter,
    convert_parameters,
    params_json,
)
from modelkit.modelfile.parsing import decode_modelfile, parse, parse_file

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
