"""AST to Modelfile text: the exact inverse of ``parse`` (every value quoted only as
much as it must be, so ``parse(format_modelfile(m)) == m``)."""

from __future__ import annotations

import re

from modelkit.errors import ModelfileError
from modelkit.modelfile.commands import (
    KEYWORD_OF_NAME,
    MESSAGE_ROLES,
    Command,
    CommandKind,
    Modelfile,
)
from modelkit.modelfile.parsing import has_nonprintable

# ---------------------------------------------------------------------- formatting

_TRIM = " \t\r\n"  # what Go's TrimSpace can meet in a value (the rest is non-printable)


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
    if has_nonprintable(v):
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
    keyword = KEYWORD_OF_NAME.get(c.name)
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
