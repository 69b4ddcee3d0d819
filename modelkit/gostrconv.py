"""Go's ``strconv`` number-literal rules that both Modelfile values and Go templates follow."""

from __future__ import annotations


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
