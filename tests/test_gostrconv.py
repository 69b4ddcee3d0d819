"""gostrconv: Go's strconv rules, one home for Modelfiles, Go templates and Go's JSON."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelkit.gostrconv import (
    RANGE,
    SYNTAX,
    StrconvError,
    format_float,
    parse_float,
    parse_int,
    parse_uint,
    quote,
    underscore_ok,
    unquote,
    unquote_char,
)

HYPOTHESIS = settings(max_examples=300, deadline=None)


@pytest.mark.parametrize(("text", "base", "want"), [
    ("0", 0, 0), ("42", 0, 42), ("0x_1F", 0, 31), ("0b101", 0, 5), ("0o17", 0, 15),
    ("017", 0, 15), ("1_000", 0, 1000), ("18446744073709551615", 0, 2**64 - 1),
    ("18446744073709551616", 0, None), ("1__0", 0, None), ("_1", 0, None), ("1_", 0, None),
    ("0x", 0, None), ("", 0, None), ("12a", 0, None), ("1_000", 10, None), ("0x10", 10, None),
    ("007", 10, 7), ("٣", 10, None),
])
def test_parse_uint(text: str, base: int, want: int | None) -> None:
    assert parse_uint(text, base) == want


@pytest.mark.parametrize(("text", "base", "want"), [
    ("-9223372036854775808", 10, -(2**63)), ("9223372036854775807", 10, 2**63 - 1),
    ("9223372036854775808", 10, None), ("-9223372036854775809", 10, None),
    ("+5", 10, 5), ("-0x10", 0, -16), ("+", 10, None), ("-", 0, None),
])
def test_parse_int(text: str, base: int, want: int | None) -> None:
    assert parse_int(text, base) == want


@pytest.mark.parametrize(("text", "bits", "want", "reason"), [
    ("1.5", 64, 1.5, ""), ("+.5", 64, 0.5, ""), ("1e3", 64, 1000.0, ""),
    ("0x1p-2", 64, 0.25, ""), ("0x1.8p1", 64, 3.0, ""), ("1_0.5", 64, 10.5, ""),
    ("1e400", 64, None, RANGE), ("1e-400", 64, 0.0, ""), ("1e39", 32, None, RANGE),
    ("3.4028235e38", 32, float(np.float32(3.4028235e38)), ""), ("Inf", 64, math.inf, ""),
    ("-infinity", 32, -math.inf, ""), ("+nan", 64, None, SYNTAX), ("0x1", 64, None, SYNTAX),
    (".", 64, None, SYNTAX), ("1e", 64, None, SYNTAX), ("1e_5", 64, None, SYNTAX),
    ("_1.5", 64, None, SYNTAX), ("0b1.0", 64, None, SYNTAX),
])
def test_parse_float(text: str, bits: int, want: float | None, reason: str) -> None:
    assert parse_float(text, bits) == (want, reason)


def test_parse_float_nan() -> None:
    value, reason = parse_float("NaN")
    assert value is not None and math.isnan(value) and reason == ""


@given(st.floats(allow_nan=False, allow_infinity=False))
@HYPOTHESIS
def test_parse_float_64_reads_back_every_float(x: float) -> None:
    assert parse_float(repr(x)) == (x, "")
    assert parse_float(float.hex(x)) == (x, "")


@given(st.floats(allow_nan=False, allow_infinity=False, width=64))
@HYPOTHESIS
def test_parse_float_32_rounds_as_float32(x: float) -> None:
    value, reason = parse_float(repr(x), 32)
    with np.errstate(over="ignore"):
        want = float(np.float32(x))
    if math.isinf(want):
        assert (value, reason) == (None, RANGE)
    else:
        assert (value, reason) == (want, "")


@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["e", "f"]))
@HYPOTHESIS
def test_format_float_is_shortest_and_reads_back(x: float, fmt: str) -> None:
    text = format_float(x, fmt)
    assert float(text) == x
    if fmt == "e":
        mantissa, _, exponent = text.partition("e")
        assert exponent[0] in "+-" and len(exponent) >= 3
        assert not ("." in mantissa and mantissa.endswith("0"))  # no trailing zeros
    else:
        assert "e" not in text


@pytest.mark.parametrize(("x", "fmt", "bits", "want"), [
    (1e-7, "e", 64, "1e-07"), (1e21, "e", 64, "1e+21"), (123.456, "e", 64, "1.23456e+02"),
    (1e21, "f", 64, "1000000000000000000000"), (-0.0, "f", 64, "-0"), (0.5, "f", 64, "0.5"),
    (float(np.float32(0.7)), "e", 32, "7e-01"), (math.inf, "f", 64, "+Inf"),
    (math.nan, "e", 64, "NaN"),
])
def test_format_float_examples(x: float, fmt: str, bits: int, want: str) -> None:
    assert format_float(x, fmt, bits) == want


@pytest.mark.parametrize(("text", "ok"), [
    ("1_000", True), ("0x_1", True), ("0b_1_0", True), ("1__0", False), ("_1", False),
    ("1_", False), ("-1_0", True), ("1_.5", False), ("1.5_0", True),
])
def test_underscore_ok(text: str, ok: bool) -> None:
    assert underscore_ok(text) is ok


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
@HYPOTHESIS
def test_quote_round_trips(s: str) -> None:
    quoted = quote(s)
    assert quoted.startswith('"') and quoted.endswith('"')
    assert unquote(quoted) == s


@pytest.mark.parametrize(("s", "want"), [
    ('a"b', '"a\\"b"'), ("tab\t", '"tab\\t"'), ("\x00", '"\\x00"'), ("\u200b", '"\\u200b"'),
    ("é", '"é"'), ("\U000e0001", '"\\U000e0001"'),
])
def test_quote_examples(s: str, want: str) -> None:
    assert quote(s) == want


@pytest.mark.parametrize("token", ['"', '"a', '"\\q"', '"\\x4"', '"\\400"', '"\\uD800"',
                                   '"a\nb"', "`a`b`", "'a'"])
def test_unquote_rejects(token: str) -> None:
    with pytest.raises(StrconvError, match=SYNTAX):
        unquote(token)


def test_unquote_char() -> None:
    assert unquote_char("\\x41rest", "'") == ("A", "rest")
    assert unquote_char("\\'", "'") == ("'", "")
    assert unquote(r'"\101\u00e9\U0001F600"') == "Aé\U0001f600"
    assert unquote("`raw\r\n`") == "raw\n"
    with pytest.raises(StrconvError):
        unquote_char("\\'", '"')
