"""Modelfile parser, formatter and PARAMETER conversion.

The expected outcomes come from Ollama's parser tests (``parser/parser_test.go``,
reference commit fb30760), restated here as tables, and from the behaviour described
in docs section a/b of the reference. ``_oracle`` below is an independent model of
Ollama's rune-by-rune reader, written from that description; hypothesis checks that
the Lark grammar agrees with it on generated inputs.

Deliberate differences from Ollama, asserted below:

* error positions: real line of the offending character (CRLF = one line break), plus
  a column; Ollama counts CR and LF separately and has already counted the newline
  that triggers an error (``FROM\\n`` is "line 2" there, 1:5 here);
* formatting is an exact inverse of parsing (Ollama's ``String()`` is not);
* NaN/Inf floats are rejected when converting parameters.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import unicodedata
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modelkit import gostrconv
from modelkit.errors import FileNotFoundModelkitError, ModelfileError, ParameterError
from modelkit.gojson import go_format_float, go_json_dumps
from modelkit.modelfile import (
    DEPRECATED_PARAMETERS,
    ERR_INVALID_COMMAND,
    ERR_INVALID_ROLE,
    ERR_MISSING_FROM,
    ERR_UNEXPECTED_EOF,
    PARAMETERS,
    Command,
    CommandKind,
    Modelfile,
    ParamType,
    convert_parameter,
    convert_parameters,
    decode_modelfile,
    format_modelfile,
    format_value,
    is_print,
    normalize_requires,
    params_json,
    parse,
    parse_file,
    parsing,
)

REPO = Path(__file__).resolve().parents[1]
HYPOTHESIS = settings(max_examples=200, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

KW = CommandKind.KEYWORD
PARAM = CommandKind.PARAMETER


def K(name: str, args: str) -> tuple[str, str, CommandKind]:
    return (name, args, KW)


def P(name: str, args: str) -> tuple[str, str, CommandKind]:
    return (name, args, PARAM)


def cmds(source: str | bytes) -> list[tuple[str, str, CommandKind | None]]:
    return [(c.name, c.args, c.kind) for c in parse(source).commands]


def error_of(source: str | bytes) -> ModelfileError:
    with pytest.raises(ModelfileError) as info:
        parse(source)
    return info.value


LLAMA3_TEMPLATE = (
    "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>"
    "{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}"
    "<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}"
    "<|eot_id|>"
)

# --------------------------------------------------------------------------- Ollama's cases
# (input, expected commands) -- TestParseFileFile, ...Draft, ...TrimSpace, ...From,
# ...Renderer, ...Parser, ...Messages, ...Quoted, ...Comments, UTF16 / MultiByte.
GOOD_CASES: list[tuple[str, list[tuple[str, str, CommandKind]]]] = [
    (
        "\nFROM model1\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\n"
        "PARAMETER param2 value2\nTEMPLATE \"\"\"" + LLAMA3_TEMPLATE + "\"\"\"    \n",
        [K("model", "model1"), K("adapter", "adapter1"), K("license", "MIT"),
         P("param1", "value1"), P("param2", "value2"), K("template", LLAMA3_TEMPLATE)],
    ),
    ("\nFROM base\nDRAFT ./assistant\n", [K("model", "base"), K("draft", "./assistant")]),
    (
        "\nFROM \"     model 1\"\nADAPTER      adapter3\nLICENSE \"MIT       \"\n"
        "PARAMETER param1        value1\nPARAMETER param2    value2\n"
        "TEMPLATE \"\"\"   " + LLAMA3_TEMPLATE + "   \"\"\"    \n",
        [K("model", "     model 1"), K("adapter", "adapter3"), K("license", "MIT       "),
         P("param1", "value1"), P("param2", "value2"),
         K("template", "   " + LLAMA3_TEMPLATE + "   ")],
    ),
    ('FROM "FOO  BAR  "', [K("model", "FOO  BAR  ")]),
    ('FROM "FOO BAR"\nPARAMETER param1 value1', [K("model", "FOO BAR"), P("param1", "value1")]),
    ("FROM     FOOO BAR    ", [K("model", "FOOO BAR")]),
    ("FROM /what/is/the path ", [K("model", "/what/is/the path")]),
    ("FROM foo", [K("model", "foo")]),
    ("FROM /path/to/model", [K("model", "/path/to/model")]),
    ("FROM /path/to/model/fp16.bin", [K("model", "/path/to/model/fp16.bin")]),
    ("FROM llama3:latest", [K("model", "llama3:latest")]),
    ("FROM llama3:7b-instruct-q4_K_M", [K("model", "llama3:7b-instruct-q4_K_M")]),
    ("PARAMETER param1 value1\nFROM foo", [P("param1", "value1"), K("model", "foo")]),
    ("PARAMETER what the \nFROM lemons make lemonade ",
     [P("what", "the"), K("model", "lemons make lemonade")]),
    ("\nFROM foo\nRENDERER renderer1\n", [K("model", "foo"), K("renderer", "renderer1")]),
    ("\nFROM foo\nPARSER parser1\n", [K("model", "foo"), K("parser", "parser1")]),
    ("\nFROM foo\nMESSAGE system You are a file parser. Always parse things.\n",
     [K("model", "foo"), K("message", "system: You are a file parser. Always parse things.")]),
    ("\nFROM foo\nMESSAGE system You are a file parser. Always parse things.",
     [K("model", "foo"), K("message", "system: You are a file parser. Always parse things.")]),
    (
        "\nFROM foo\nMESSAGE system You are a file parser. Always parse things.\n"
        "MESSAGE user Hey there!\nMESSAGE assistant Hello, I want to parse all the things!\n",
        [K("model", "foo"), K("message", "system: You are a file parser. Always parse things."),
         K("message", "user: Hey there!"),
         K("message", "assistant: Hello, I want to parse all the things!")],
    ),
    ('\nFROM foo\nMESSAGE system """\nYou are a multiline file parser. Always parse things.\n'
     '"""\n\t\t\t',
     [K("model", "foo"),
      K("message", "system: \nYou are a multiline file parser. Always parse things.\n")]),
    ('\nFROM foo\nSYSTEM """\nThis is a\nmultiline system.\n"""\n\t\t\t',
     [K("model", "foo"), K("system", "\nThis is a\nmultiline system.\n")]),
    ('\nFROM foo\nSYSTEM """\nThis is a\nmultiline system."""\n\t\t\t',
     [K("model", "foo"), K("system", "\nThis is a\nmultiline system.")]),
    ('\nFROM foo\nSYSTEM """This is a\nmultiline system."""\n\t\t\t',
     [K("model", "foo"), K("system", "This is a\nmultiline system.")]),
    ('\nFROM foo\nSYSTEM """This is a multiline system."""\n\t\t\t',
     [K("model", "foo"), K("system", "This is a multiline system.")]),
    ('\nFROM foo\nSYSTEM """\nThis is a multiline system with "quotes".\n"""\n',
     [K("model", "foo"), K("system", '\nThis is a multiline system with "quotes".\n')]),
    ('\nFROM foo\nSYSTEM """"""\n', [K("model", "foo"), K("system", "")]),
    ('\nFROM foo\nSYSTEM ""\n', [K("model", "foo"), K("system", "")]),
    ("\nFROM foo\nSYSTEM \"'\"\n", [K("model", "foo"), K("system", "'")]),
    ('\nFROM foo\nSYSTEM """\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'"""\n',
     [K("model", "foo"), K("system", '\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'')]),
    ('\nFROM foo\nTEMPLATE """\n{{ .Prompt }}\n"""',
     [K("model", "foo"), K("template", "\n{{ .Prompt }}\n")]),
    ("\n# comment\nFROM foo\n\t", [K("model", "foo")]),
    ("FROM test\n\tSYSTEM 你好👋", [K("model", "test"), K("system", "你好👋")]),
]

# TestParseFileParameters: "PARAMETER <k>" after "FROM foo" gives (name, value).
PARAMETER_LINES = {
    "numa true": ("numa", "true"),
    "num_ctx 1": ("num_ctx", "1"),
    "num_batch 1": ("num_batch", "1"),
    "num_gqa 1": ("num_gqa", "1"),
    "num_gpu 1": ("num_gpu", "1"),
    "main_gpu 1": ("main_gpu", "1"),
    "use_mmap true": ("use_mmap", "true"),
    "num_thread 1": ("num_thread", "1"),
    "num_keep 1": ("num_keep", "1"),
    "seed 1": ("seed", "1"),
    "num_predict 1": ("num_predict", "1"),
    "top_k 1": ("top_k", "1"),
    "top_p 1.0": ("top_p", "1.0"),
    "min_p 0.05": ("min_p", "0.05"),
    "typical_p 1.0": ("typical_p", "1.0"),
    "repeat_last_n 1": ("repeat_last_n", "1"),
    "temperature 1.0": ("temperature", "1.0"),
    "repeat_penalty 1.0": ("repeat_penalty", "1.0"),
    "presence_penalty 1.0": ("presence_penalty", "1.0"),
    "frequency_penalty 1.0": ("frequency_penalty", "1.0"),
    "penalize_newline true": ("penalize_newline", "true"),
    "stop ### User:": ("stop", "### User:"),
    "stop ### User: ": ("stop", "### User:"),
    'stop "### User:"': ("stop", "### User:"),
    'stop "### User: "': ("stop", "### User: "),
    'stop """### User:"""': ("stop", "### User:"),
    'stop """### User:\n"""': ("stop", "### User:\n"),
    "stop <|endoftext|>": ("stop", "<|endoftext|>"),
    "stop <|eot_id|>": ("stop", "<|eot_id|>"),
    "stop </s>": ("stop", "</s>"),
}

# Ollama's round-trip inputs (TestParseFileFormatParseFile).
ROUND_TRIP_CASES = [
    "\nFROM foo\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\n"
    "TEMPLATE template1\nMESSAGE system You are a file parser. Always parse things.\n"
    "MESSAGE user Hey there!\nMESSAGE assistant Hello, I want to parse all the things!\n",
    "\nFROM foo\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\n"
    'TEMPLATE template1\nMESSAGE system """\nYou are a store greeter. Always respond with '
    '"Hello!".\n"""\nMESSAGE user Hey there!\n'
    "MESSAGE assistant Hello, I want to parse all the things!\n",
    '\nFROM foo\nADAPTER adapter1\nLICENSE """\nVery long and boring legal text.\n'
    'Blah blah blah.\n"Oh look, a quote!"\n"""\n\nPARAMETER param1 value1\n'
    'PARAMETER param2 value2\nTEMPLATE template1\nMESSAGE system """\nYou are a store '
    'greeter. Always respond with "Hello!".\n"""\nMESSAGE user Hey there!\n'
    "MESSAGE assistant Hello, I want to parse all the things!\n",
    '\nFROM foo\nSYSTEM ""\n',
]


@pytest.mark.parametrize(("source", "expected"), GOOD_CASES)
def test_ollama_good_cases(source: str, expected: list[tuple[str, str, CommandKind]]) -> None:
    assert cmds(source) == expected
    assert _oracle(source) == [(n, a, k is PARAM) for n, a, k in expected]


@pytest.mark.parametrize("line", sorted(PARAMETER_LINES))
def test_ollama_parameter_lines(line: str) -> None:
    name, value = PARAMETER_LINES[line]
    assert cmds(f"FROM foo\nPARAMETER {line}\n") == [K("model", "foo"), P(name, value)]


@pytest.mark.parametrize("source", ROUND_TRIP_CASES)
def test_ollama_round_trip_cases(source: str) -> None:
    m = parse(source)
    assert parse(format_modelfile(m)) == m


def test_draft_is_formatted_as_draft() -> None:
    assert "DRAFT ./assistant\n" in format_modelfile(parse("FROM base\nDRAFT ./assistant\n"))


# --------------------------------------------------------------------------- errors
# (input, message, line, column). Ollama's cases: missing FROM (empty file, parameter
# only), "PARAMETER param1\n", BADCOMMAND (Ollama: line 3), bad role (line 3),
# "MESSAGE system" with and without newline, unclosed quotes.
BAD_CASES: list[tuple[str, str, int, int]] = [
    ("", ERR_MISSING_FROM, 0, 0),
    ("PARAMETER param1 value1", ERR_MISSING_FROM, 0, 0),
    ("# only a comment\n\n", ERR_MISSING_FROM, 0, 0),
    ("\nFROM foo\nPARAMETER param1\n", "unexpected EOF: param1", 3, 17),
    ("\nFROM foo\nBADCOMMAND param1 value1\n", ERR_INVALID_COMMAND, 3, 1),
    ("\nFROM foo\nMESSAGE badguy I'm a bad guy!\n", ERR_INVALID_ROLE, 3, 9),
    ("\nFROM foo\nMESSAGE system\n", "unexpected EOF: system", 3, 15),
    ("\nFROM foo\nMESSAGE system", ERR_UNEXPECTED_EOF, 3, 9),
    ('\nFROM foo\nSYSTEM """This is a multiline system.""\n\t\t\t', ERR_UNEXPECTED_EOF, 3, 8),
    ('\nFROM foo\nSYSTEM "\n\t\t\t', ERR_UNEXPECTED_EOF, 3, 8),
    # quirks (section a.2/a.3)
    ('FROM foo\nSYSTEM "hi" there\n', ERR_UNEXPECTED_EOF, 2, 8),
    ('FROM foo\nSYSTEM """a"\n', ERR_UNEXPECTED_EOF, 2, 8),
    ("FROM foo\nMESSAGE  user hi\n", ERR_INVALID_ROLE, 2, 9),
    ("FROM foo\nMESSAGE User hi\n", ERR_INVALID_ROLE, 2, 9),
    ("FROM foo\nMESSAGE users hi\n", ERR_INVALID_ROLE, 2, 9),
    ("FROM foo\nMESSAGE us-er hi\n", "unexpected EOF: us", 2, 11),
    ("FROM foo\nMESSAGE ", ERR_UNEXPECTED_EOF, 2, 9),
    ("FROM foo\nPARAMETER ", ERR_UNEXPECTED_EOF, 2, 11),
    ("FROM foo\nPARAMETER temperature", ERR_UNEXPECTED_EOF, 2, 11),
    ("FROM foo\nPARAMETER top-k 1\n", "unexpected EOF: top", 2, 14),
    ("FROM foo\nPARAMETER -x 1\n", "unexpected EOF: ", 2, 11),
    ("FROM foo\nPARAMETER t\u00a0k 1\n", "unexpected EOF: t", 2, 12),
    ("FROM\n", ERR_INVALID_COMMAND, 1, 5),  # Ollama: line 2
    ("FROM", ERR_UNEXPECTED_EOF, 1, 1),
    ("FROM foo\nBADCOMMAND", ERR_UNEXPECTED_EOF, 2, 1),  # EOF wins over validation
    ("FROM foo\nFROMX y\n", ERR_INVALID_COMMAND, 2, 1),
    ("1FROM foo\n", ERR_INVALID_COMMAND, 1, 1),
    ("FR-OM foo\n", ERR_INVALID_COMMAND, 1, 3),
    ("FROM foo\n\"x\" y\n", ERR_INVALID_COMMAND, 2, 3),
    ("FROM foo\n\"x y\n", ERR_INVALID_COMMAND, 2, 1),
    ("FROM foo\n  system\tbad\n  SYSTEMS x\n", ERR_INVALID_COMMAND, 3, 3),
    ("\u017fYSTEM x\nFROM foo\n", ERR_INVALID_COMMAND, 1, 1),  # no Unicode case folding
    ("FROM foo\nFROM\tbar\nPARAMETER\n", ERR_INVALID_COMMAND, 3, 10),
    # non-printable runes: skipped before a keyword, fatal inside one
    ("FR\u200dOM foo\n", ERR_INVALID_COMMAND, 1, 3),
    ("\u00a0\u00a0FROM foo\n", ERR_INVALID_COMMAND, 1, 2),
    ("\u00a0 FROM foo\n", ERR_INVALID_COMMAND, 1, 1),
    ("\u00a0# comment\nFROM foo\n", ERR_INVALID_COMMAND, 1, 2),
    ("FROM\u00a0foo\n", ERR_INVALID_COMMAND, 1, 5),
    # CRLF counts once (Ollama would report line 3 and 5)
    ("FROM a\r\nBAD x\r\n", ERR_INVALID_COMMAND, 2, 1),
    ("FROM a\r\n\r\nSYSTEM x\r\nMESSAGE bot x\r\n", ERR_INVALID_ROLE, 4, 9),
    # positions after multi-line values
    ('FROM a\nSYSTEM """\nx\n\n"""\nLICENCE y\n', ERR_INVALID_COMMAND, 6, 1),
]


@pytest.mark.parametrize(("source", "message", "line", "column"),
                         BAD_CASES)
def test_errors(source: str, message: str, line: int, column: int) -> None:
    err = error_of(source)
    assert (err.message, err.line, err.column) == (message, line, column)
    assert _oracle(source) == (message, line, column)


def test_error_carries_path_and_formats() -> None:
    with pytest.raises(ModelfileError) as info:
        parse("FROM x\nBAD y\n", path="dir/Modelfile")
    assert info.value.path == "dir/Modelfile"
    assert str(info.value) == f"dir/Modelfile:2:1: {ERR_INVALID_COMMAND}"
    with pytest.raises(ModelfileError) as info:
        parse("SYSTEM x\n")
    assert str(info.value) == "Modelfile: no FROM line"


def test_command_message_is_ollamas_wording() -> None:
    assert ERR_INVALID_COMMAND == (
        'command must be one of "from", "license", "template", "system", "adapter", "draft", '
        '"renderer", "parser", "parameter", "message", or "requires"')
    assert ERR_INVALID_ROLE == 'message role must be one of "system", "user", or "assistant"'


# --------------------------------------------------------------------------- quirks and details


def test_empty_parameter_name_quirk() -> None:
    # A second blank after PARAMETER ends an empty name; Ollama then rejects the
    # parameter when converting ("unknown parameter ''"). We keep the quirk.
    m = parse("FROM foo\nPARAMETER  temperature 0.5\n")
    assert m.parameters == [("", "temperature 0.5")]
    assert parse(format_modelfile(m)) == m
    with pytest.raises(ParameterError, match=r"^unknown parameter ''$"):
        m.converted_parameters()


def test_keywords_any_case_names_and_roles_verbatim() -> None:
    source = ("fRoM a\nsystem s\nTeMpLaTe t\nparameter Temperature 1\n"
              "Message user hi\nREQUIRES 0.1.0\nrenderer r\nPARSER p\nadapter x\n"
              "draft d\nLiCeNsE l\n")
    assert cmds(source) == [
        K("model", "a"), K("system", "s"), K("template", "t"), P("Temperature", "1"),
        K("message", "user: hi"), K("requires", "0.1.0"), K("renderer", "r"),
        K("parser", "p"), K("adapter", "x"), K("draft", "d"), K("license", "l")]


def test_comments_only_where_a_keyword_could_start() -> None:
    source = "# top\n  \t# indented\nFROM x # not a comment\nSYSTEM #hash\n#FROM y\n"
    assert cmds(source) == [K("model", "x # not a comment"), K("system", "#hash")]
    assert cmds('FROM x\nSYSTEM """\n# inside\n"""\n') == [K("model", "x"),
                                                          K("system", "\n# inside\n")]


def test_values_are_raw() -> None:
    assert cmds(r'FROM x\y' + '\nSYSTEM "a\\"b"\n') == [K("model", "x\\y"), K("system", 'a\\"b')]
    assert cmds('FROM x\nSYSTEM """say "hi""""\n')[1] == K("system", 'say "hi"')
    assert cmds('FROM x\nSYSTEM """""""\n')[1] == K("system", '"')
    assert cmds('FROM x\nSYSTEM """a""""\n')[1] == K("system", 'a"')
    assert cmds('FROM x\nSYSTEM ""a"\n')[1] == K("system", '"a')
    assert cmds('FROM x\nSYSTEM "" "\n')[1] == K("system", '" ')
    assert cmds("FROM x\nSYSTEM 'single'\n")[1] == K("system", "'single'")
    assert cmds("FROM x\nSYSTEM a\tb \t\n")[1] == K("system", "a\tb")
    assert cmds('FROM x\nSYSTEM "a" "b"\n')[1] == K("system", 'a" "b')


def test_quoted_value_closes_only_at_end_of_line() -> None:
    # 'SYSTEM "hi" there' does not end; a later line ending in a quote closes it.
    source = 'FROM x\nSYSTEM "hi" there\nFROM y"\n'
    assert cmds(source) == [K("model", "x"), K("system", 'hi" there\nFROM y')]


def test_empty_values() -> None:
    assert cmds("FROM ") == [K("model", "")]
    assert cmds("FROM x\nSYSTEM \t \nLICENSE\t\n") == [K("model", "x"), K("system", ""),
                                                        K("license", "")]


def test_crlf_and_cr() -> None:
    source = 'FROM a\r\nSYSTEM """x\r\ny"""\r\nPARAMETER stop b \r\n\r\nLICENSE l\rTEMPLATE t'
    m = parse(source)
    assert [(c.name, c.args) for c in m.commands] == [
        ("model", "a"), ("system", "x\r\ny"), ("stop", "b"), ("license", "l"), ("template", "t")]
    assert [c.line for c in m.commands] == [1, 2, 4, 6, 7]
    assert parse(format_modelfile(m)) == m


def test_command_lines() -> None:
    m = parse('\n# c\nFROM a\nSYSTEM """\n\n"""\n  PARAMETER stop x\n')
    assert [c.line for c in m.commands] == [3, 4, 7]


def test_nonprintable_runes() -> None:
    # dropped from values (TAB kept), skipped before a keyword, ignored in comments
    source = ("\u00a0FROM a\u200db\n#\x07 bell in a comment\n"
              "SYSTEM \u00a0x\u2028y\x00z\tw\u00a0\n"
              'TEMPLATE "q"\u200d\n'
              '\u00a0PARAMETER stop "\u00a0"\n'
              'LICENSE "\x01"x"\n')
    assert cmds(source) == [K("model", "ab"), K("system", "xyz\tw"), K("template", "q"),
                            P("stop", ""), K("license", '"x')]


def test_long_s_is_not_a_keyword_letter() -> None:
    assert error_of("FROM x\n\u017fystem y\n").message == ERR_INVALID_COMMAND


# --------------------------------------------------------------------------- encodings
UTF16_TEXT = "FROM bob\nPARAMETER param1 1\nPARAMETER param2 4096\nSYSTEM You are a utf16 file.\n"
UTF16_EXPECTED = [K("model", "bob"), P("param1", "1"), P("param2", "4096"),
                  K("system", "You are a utf16 file.")]


@pytest.mark.parametrize(("bom", "codec"), [(b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")])
def test_utf16_with_bom(bom: bytes, codec: str) -> None:
    assert cmds(bom + UTF16_TEXT.encode(codec)) == UTF16_EXPECTED


@pytest.mark.parametrize("encoded", [
    "FROM test\n\tSYSTEM 你好👋".encode(),
    b"\xff\xfe" + "FROM test\n\tSYSTEM 你好👋".encode("utf-16-le"),
    b"\xfe\xff" + "FROM test\n\tSYSTEM 你好👋".encode("utf-16-be"),
    b"\xef\xbb\xbf" + "FROM test\n\tSYSTEM 你好👋".encode(),
])
def test_multibyte_in_every_encoding(encoded: bytes) -> None:
    assert cmds(encoded) == [K("model", "test"), K("system", "你好👋")]


def test_utf8_bom_is_stripped() -> None:
    # Without stripping, U+FEFF (non-printable) before '#' would be an invalid command.
    assert cmds(b"\xef\xbb\xbf# comment\nFROM x\n") == [K("model", "x")]
    assert cmds("\ufeff# comment\nFROM x\n") == [K("model", "x")]


def test_invalid_utf8_becomes_one_replacement_per_byte() -> None:
    assert cmds(b"FROM x\nSYSTEM a\xffb\n")[1] == K("system", "a\ufffdb")
    # a truncated 3-byte sequence: Go replaces each byte (Python's "replace" would give one)
    assert cmds(b"FROM x\nSYSTEM a\xe4\xbdb\n")[1] == K("system", "a\ufffd\ufffdb")
    assert decode_modelfile(b"\xed\xa0\x80") == "\ufffd" * 3  # encoded surrogate
    assert decode_modelfile(b"ok \xf0\x9f\x91\x8b") == "ok 👋"


def test_utf16_bad_code_units() -> None:
    assert decode_modelfile(b"\xff\xfe" + "a".encode("utf-16-le") + b"\x00\xd8") == "a\ufffd"
    assert decode_modelfile(b"\xfe\xff\x00a\x00") == "a\ufffd"


def test_is_print_matches_categories() -> None:
    for ch in [" ", "a", "你", "👋", "\ufffd", "!", "\u0301", "٣"]:
        assert is_print(ch)
    for ch in ["\t", "\n", "\x00", "\x7f", "\u00a0", "\u200d", "\u2028", "\u3000", "\ufeff",
               "\ue000", "\U000e0001"]:
        assert not is_print(ch)


def test_is_print_agrees_with_str_isprintable_everywhere() -> None:
    # parse() uses str.isprintable() as a fast path; both must be the same predicate.
    bad = [c for c in range(sys.maxunicode + 1)
           if is_print(chr(c)) != chr(c).isprintable()]
    assert bad == []


# --------------------------------------------------------------------------- formatting


def test_format_rules() -> None:
    m = Modelfile((
        Command("model", "  spaced  "),
        Command("system", 'starts "bare'),
        Command("template", '"quoted'),
        Command("license", '""two'),
        Command("adapter", ""),
        Command.parameter("num_ctx", "1048576"),
        Command.parameter("system", "param named like a keyword"),
        Command.message("user", "multi\nline"),
        Command("parser", 'has "quote"\nand newline'),
    ))
    text = format_modelfile(m)
    assert text == (
        'FROM "  spaced  "\n'
        'SYSTEM starts "bare\n'
        'TEMPLATE ""quoted"\n'
        'LICENSE """""two"""\n'
        'ADAPTER ""\n'
        "PARAMETER num_ctx 1048576\n"
        "PARAMETER system param named like a keyword\n"
        'MESSAGE user "multi\nline"\n'
        'PARSER """has "quote"\nand newline"""\n'
    )
    assert parse(text) == m
    assert parse(text).commands[6].kind is PARAM


def test_format_uses_triple_quotes_when_a_line_ends_in_a_quote() -> None:
    v = 'say "hi"\nthen go'
    assert format_value(v) == '"""say "hi"\nthen go"""'
    assert parse("FROM x\nSYSTEM " + format_value(v) + "\n").system == v


@pytest.mark.parametrize("value", [
    'a"""\nb',          # closes a triple quote early, and a single quote too
    'x"""  \r\ny',
    "bell\x07",          # non-printable runes are dropped by the parser
    "nbsp\u00a0",
])
def test_unrepresentable_values(value: str) -> None:
    with pytest.raises(ModelfileError):
        format_value(value)
    # and indeed no spelling parses back to the value
    for spelling in (value, f'"{value}"', f'"""{value}"""'):
        try:
            got = parse(f"FROM x\nSYSTEM {spelling}\n").system
        except ModelfileError:
            continue
        assert got != value


def test_format_rejects_bad_commands() -> None:
    for c in (Command("bogus", "x", KW), Command.parameter("bad-name", "x"),
              Command("message", "robot: hi"), Command("message", "no separator")):
        with pytest.raises(ModelfileError):
            format_modelfile(Modelfile((Command("model", "x"), c)))


def test_command_kind_inference_and_equality() -> None:
    assert Command("model", "x").kind is KW
    assert Command("temperature", "1").kind is PARAM
    assert Command("system", "x") != Command("system", "x", PARAM)
    assert Command("system", "x", line=3) == Command("system", "x", line=9)


# --------------------------------------------------------------------------- merge accessors


def test_merge_accessors() -> None:
    m = parse(
        "FROM ./a.gguf\nFROM llama3\nADAPTER one\nADAPTER two\nDRAFT d1\nDRAFT d2\n"
        "TEMPLATE t1\nTEMPLATE t2\nSYSTEM s1\nSYSTEM s2\nLICENSE l1\nLICENSE l2\n"
        "RENDERER r1\nRENDERER r2\nPARSER p1\nPARSER p2\nREQUIRES 0.1\nREQUIRES v0.14.0\n"
        "MESSAGE user Hello there!\nMESSAGE assistant a: b\n"
        "PARAMETER stop a\nPARAMETER temperature 0.5\nPARAMETER stop b\n")
    assert m.froms == ("./a.gguf", "llama3") and m.from_ == "llama3"
    assert m.adapters == ("one", "two") and m.adapter == "two"
    assert m.drafts == ("d1", "d2") and m.draft == "d2"
    assert (m.template, m.system, m.renderer, m.parser) == ("t2", "s2", "r2", "p2")
    assert m.licenses == ["l1", "l2"]
    assert m.messages == [("user", "Hello there!"), ("assistant", "a: b")]
    assert m.parameters == [("stop", "a"), ("temperature", "0.5"), ("stop", "b")]
    assert m.requires == "0.14.0"
    assert m.converted_parameters() == ({"stop": ["a", "b"], "temperature": 0.5}, [])


def test_accessors_when_absent() -> None:
    m = parse("FROM x\n")
    assert (m.adapter, m.draft, m.template, m.system, m.renderer, m.parser, m.requires) == (
        None, None, None, None, None, None, None)
    assert (m.licenses, m.messages, m.parameters, m.adapters) == ([], [], [], ())


def test_ollama_create_request_cases() -> None:
    # TestCreateRequest: temperature float32(0.5), top_k int64(1), licenses, messages.
    m = parse("FROM test\nPARAMETER temperature 0.5\nPARAMETER top_k 1\nSYSTEM You are a bot.\n"
              "LICENSE license1\nLICENSE license2\nMESSAGE user Hello there!\n"
              "MESSAGE assistant Hi! How are you?\n")
    assert m.from_ == "test" and m.system == "You are a bot."
    assert m.licenses == ["license1", "license2"]
    assert m.messages == [("user", "Hello there!"), ("assistant", "Hi! How are you?")]
    params, warnings = m.converted_parameters()
    assert params == {"temperature": 0.5, "top_k": 1} and warnings == []
    assert type(params["top_k"]) is int and type(params["temperature"]) is float


@pytest.mark.parametrize(("value", "normalized"), [
    ("0.14.0", "0.14.0"), ("v0.14.0", "0.14.0"), ("1", "1"), ("1.2", "1.2"),
    ("1.2.3-rc.1+build.5", "1.2.3-rc.1+build.5"), ("0.0.0-alpha-1", "0.0.0-alpha-1"),
    ("1.2.3+001", "1.2.3+001"),
])
def test_requires_valid(value: str, normalized: str) -> None:
    assert normalize_requires(value) == normalized


@pytest.mark.parametrize("value", [
    "", "v", "V1.2.3", "01.2.3", "1.02.3", "1.2.03", "1.2.3-", "1.2.3-01", "1.2-rc1",
    "1.2.3+", "1.2.3-a..b", "1.2.3.4", "latest", " 1.2.3", "1.2.3 ", "vv1",
])
def test_requires_invalid(value: str) -> None:
    with pytest.raises(ModelfileError) as info:
        normalize_requires(value)
    assert info.value.message == "requires must be a valid semver (e.g. 0.14.0)"


def test_requires_error_has_line_and_every_requires_is_checked() -> None:
    m = parse("FROM x\nREQUIRES nope\nREQUIRES 0.1.0\n")
    with pytest.raises(ModelfileError) as info:
        _ = m.requires
    assert info.value.line == 2


# --------------------------------------------------------------------------- files


def test_parse_file(tmp_path: Path) -> None:
    p = tmp_path / "Modelfile"
    p.write_bytes(b"\xff\xfe" + "FROM x\nBAD y\n".encode("utf-16-le"))
    with pytest.raises(ModelfileError) as info:
        parse_file(p)
    assert (info.value.path, info.value.line) == (str(p), 2)
    p.write_text("FROM x\n", encoding="utf-8")
    assert parse_file(p).from_ == "x"
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundModelkitError,
                       match=re.escape(f"specified Modelfile wasn't found: {missing}")):
        parse_file(missing)
    with pytest.raises(ModelfileError):
        parse_file(tmp_path)


SAMPLES = sorted({*REPO.glob("samples/**/Modelfile"), *REPO.glob("samples/**/*.Modelfile")})


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_samples_round_trip(path: Path) -> None:
    m = parse_file(path)
    assert parse(format_modelfile(m)) == m
    assert format_modelfile(parse(format_modelfile(m))) == format_modelfile(m)
    convert_parameters(m.parameters)  # every sample's parameters are valid
    assert _oracle(decode_modelfile(path.read_bytes())) == [
        (c.name, c.args, c.kind is PARAM) for c in m.commands]


def test_liang_ai_sample() -> None:
    m = parse_file(REPO / "samples" / "liang-ai" / "Modelfile")
    assert m.from_ == "./liang-ai.gguf"
    assert m.system == "你是由崔亮创建的AI助手，你叫亮仔，你回答问题时需要使用中文。"
    assert m.converted_parameters() == ({"temperature": 0.5, "num_ctx": 4096}, [])


# --------------------------------------------------------------------------- grammar use


def test_grammar_file_drives_the_parser() -> None:
    grammar = (REPO / "grammars" / "modelfile.lark").read_text(encoding="utf-8")
    assert parsing._grammar_text() == grammar
    assert parsing._lark() is parsing._lark()  # built once


def test_grammar_shipped_in_the_package_is_preferred(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A built wheel carries the grammar as modelkit/grammars/modelfile.lark.
    (tmp_path / "grammars").mkdir()
    (tmp_path / "grammars" / "modelfile.lark").write_text("// shipped\n", encoding="utf-8")
    monkeypatch.setattr(parsing.importlib.resources, "files", lambda package: tmp_path)
    assert parsing._grammar_text() == "// shipped\n"


def test_parser_is_built_lazily() -> None:
    code = ("import sys, modelkit.modelfile.parsing as m; "
            "assert 'lark' not in sys.modules; m.parse('FROM x'); "
            "assert m._lark.cache_info().currsize == 1")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_large_modelfile_parses() -> None:
    # How long it takes is measured by bench/chat_templates.py, not here.
    block = ('PARAMETER stop "<|im_end|>"\nMESSAGE user """' + 'say "hi" # not a comment\n' * 20
             + '"""\n# comment\nSYSTEM plain text value with spaces\n')
    source = "FROM x\n" + block * (100_000 // len(block) + 1)
    assert len(source) >= 100_000
    m = parse(source)
    assert len(m.commands) > 100


# --------------------------------------------------------------------------- parameters
INT_CASES = [("4096", 4096), ("+5", 5), ("-1", -1), ("0", 0), ("007", 7),
             ("9223372036854775807", 2**63 - 1), ("-9223372036854775808", -(2**63))]
BAD_INTS = ["4096.0", "1e6", "1_000", "0x10", "", "+", "-", " 1", "1 ", "٣",
            "9223372036854775808", "-9223372036854775809", "abc"]
FLOAT_CASES = [
    ("0.5", 0.5), ("0.7", 0.7), ("1", 1.0), ("1.0", 1.0), ("-2", -2.0), ("+.5", 0.5),
    ("5.", 5.0), ("1e-5", 1e-05), ("1E3", 1000.0), ("0.1234567891", 0.12345679),
    ("0x1p-2", 0.25), ("0X1.8P1", 3.0), ("0x_1p0", 1.0), ("1_000.5", 1000.5),
    ("3.4028235e38", 3.4028235e38), ("1e-50", 0.0), ("1e-45", 1e-45), ("-0", -0.0),
    ("1e-1000000000", 0.0),
    # 1 + 2**-24 + 2**-80: double rounding through float64 would give 1.0
    ("1.00000005960464477539062582718061255302767487140869206996285356581211090087890625",
     1.0000001),
]
BAD_FLOATS = ["", "abc", "1e", "1e+", "e5", ".", "1__0", "_1", "1_", "1._5", "1e_5", "0x1",
              "0x", "0x1p", "--1", "3.5e38", "1e39", "0x1p128", "1e1000000000000", " 1",
              "1,5", "inf", "-Infinity", "NaN", "١"]
BOOL_CASES = [("1", True), ("t", True), ("T", True), ("TRUE", True), ("true", True),
              ("True", True), ("0", False), ("f", False), ("F", False), ("FALSE", False),
              ("false", False), ("False", False)]
BAD_BOOLS = ["yes", "tRue", "", "2", "on"]


@pytest.mark.parametrize(("text", "value"), INT_CASES)
def test_int_parameters(text: str, value: int) -> None:
    assert convert_parameter("num_ctx", text) == value
    assert type(convert_parameter("main_gpu", text)) is int


@pytest.mark.parametrize("text", BAD_INTS)
def test_bad_int_parameters(text: str) -> None:
    with pytest.raises(ParameterError, match=r"^invalid int value \[" + re.escape(text) + r"\]$"):
        convert_parameter("seed", text)


@pytest.mark.parametrize(("text", "value"), FLOAT_CASES)
def test_float_parameters(text: str, value: float) -> None:
    got = convert_parameter("temperature", text)
    assert type(got) is float and repr(got) == repr(value)


@pytest.mark.parametrize("text", BAD_FLOATS)
def test_bad_float_parameters(text: str) -> None:
    with pytest.raises(ParameterError, match=r"^invalid float value \[" + re.escape(text) + r"\]$"):
        convert_parameter("top_p", text)


@pytest.mark.parametrize(("text", "value"), BOOL_CASES)
def test_bool_parameters(text: str, value: bool) -> None:
    assert convert_parameter("use_mmap", text) is value


@pytest.mark.parametrize("text", BAD_BOOLS)
def test_bad_bool_parameters(text: str) -> None:
    with pytest.raises(ParameterError, match=r"^invalid bool value \[" + re.escape(text) + r"\]$"):
        convert_parameter("use_mmap", text)


@pytest.mark.parametrize("name", ["Temperature", "numa", "num_gqa", "tfs_z", "", "STOP"])
def test_unknown_parameters(name: str) -> None:
    with pytest.raises(ParameterError, match=r"^unknown parameter '" + re.escape(name) + "'$"):
        convert_parameters([(name, "1")])


def test_parameter_table() -> None:
    ints = {"num_ctx", "num_batch", "num_gpu", "num_thread", "draft_num_predict", "num_keep",
            "seed", "num_predict", "top_k", "repeat_last_n", "main_gpu"}
    floats = {"top_p", "min_p", "typical_p", "temperature", "repeat_penalty",
              "presence_penalty", "frequency_penalty"}
    assert {n for n, t in PARAMETERS.items() if t is ParamType.INT} == ints
    assert {n for n, t in PARAMETERS.items() if t is ParamType.FLOAT} == floats
    assert {n for n, t in PARAMETERS.items() if t is ParamType.BOOL} == {"use_mmap"}
    assert {n for n, t in PARAMETERS.items() if t is ParamType.STRING_LIST} == {"stop"}
    assert DEPRECATED_PARAMETERS == {"penalize_newline", "low_vram", "f16_kv", "logits_all",
                                     "vocab_only", "use_mlock", "mirostat", "mirostat_tau",
                                     "mirostat_eta"}


def test_convert_parameters_merges_and_warns() -> None:
    params, warnings = convert_parameters([
        ("stop", "a"), ("temperature", "0.1"), ("mirostat", "not even a number"),
        ("stop", "b"), ("temperature", "0.9"), ("penalize_newline", "true"), ("stop", "a"),
    ])
    assert params == {"stop": ["a", "b", "a"], "temperature": 0.9}
    assert warnings == ["parameter mirostat is deprecated",
                        "parameter penalize_newline is deprecated"]


# --------------------------------------------------------------------------- params JSON


def test_params_json_digest_vectors() -> None:
    params, _ = convert_parameters([("stop", "USER:"), ("stop", "ASSISTANT:"),
                                    ("temperature", "1"), ("top_k", "10")])
    blob = params_json(params)
    assert blob == b'{"stop":["USER:","ASSISTANT:"],"temperature":1,"top_k":10}\n'
    assert hashlib.sha256(blob).hexdigest().startswith("1d0ad712")

    params, _ = convert_parameters([("top_p", "0.7"), ("stop", "<|endoftext|>"),
                                    ("temperature", "0.6"), ("top_k", "10")])
    blob = params_json(params)
    assert blob == (b'{"stop":["\\u003c|endoftext|\\u003e"],"temperature":0.6,"top_k":10,'
                    b'"top_p":0.7}\n')
    assert hashlib.sha256(blob).hexdigest().startswith("12f58bb7")


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1"), (0.0, "0"), (-0.0, "-0"), (0.5, "0.5"), (1e-5, "0.00001"), (1e-6, "0.000001"),
    (1e-7, "1e-7"), (1.5e-7, "1.5e-7"), (1e-100, "1e-100"), (1e20, "100000000000000000000"),
    (1e21, "1e+21"), (123456789.125, "123456789.125"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"), (0.1 + 0.2, "0.30000000000000004"),
])
def test_go_float_format(value: float, text: str) -> None:
    assert go_format_float(value) == text


def test_go_json_strings_and_structure() -> None:
    assert go_json_dumps({"b": [1, True, None], "a": "x"}) == '{"b":[1,true,null],"a":"x"}'
    assert go_json_dumps({"b": 1, "a": {"d": 1, "c": 2}}, sort_keys=True) == (
        '{"a":{"c":2,"d":1},"b":1}')
    assert go_json_dumps("<>&\u2028\u2029\x01\x1f\b\f\n\r\t\"\\\x7f é你👋\ud800") == (
        '"\\u003c\\u003e\\u0026\\u2028\\u2029\\u0001\\u001f'
        '\\b\\f\\n\\r\\t\\"\\\\\x7f é你👋\\ufffd"')
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            go_json_dumps(bad)
    with pytest.raises(TypeError):
        go_json_dumps({1: 2})


@given(st.floats(allow_nan=False, allow_infinity=False))
@HYPOTHESIS
def test_go_float_format_round_trips(x: float) -> None:
    text = go_format_float(x)
    assert float(text) == x and float(json.loads(text)) == x
    a = abs(x)
    assert ("e" in text) == (a != 0 and (a < 1e-6 or a >= 1e21))
    assert not text.endswith(".0") and "e-0" not in text


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
@HYPOTHESIS
def test_float_parameters_keep_float32_shortest_repr(x: float) -> None:
    import numpy as np

    shortest = str(np.float32(x))
    got = convert_parameter("temperature", shortest)
    assert got == float(shortest) and np.float32(got) == np.float32(x)


@given(st.fractions(min_value=Fraction(-10**6), max_value=Fraction(10**6), max_denominator=10**9))
@HYPOTHESIS
def test_float32_rounding_is_correct(q: Fraction) -> None:
    import numpy as np

    got = gostrconv._round_float(q, 32)
    assert got is not None
    f32 = np.float32(got)
    assert float(f32) == got
    below = float(np.nextafter(f32, np.float32(-np.inf)))
    above = float(np.nextafter(f32, np.float32(np.inf)))
    err = abs(Fraction(got) - q)
    assert err <= abs(Fraction(below) - q) and err <= abs(Fraction(above) - q)


# --------------------------------------------------------------------------- oracle
# A model of Ollama's reader written from the reference description (section a):
# states between-commands / keyword / parameter-name / role / value / comment. It
# returns [(name, args, is_parameter)] or (message, line, column) using our position
# convention, so it cross-checks both the grammar and the error mapping.

_ORACLE_KEYWORDS = {"from": "model", "adapter": "adapter", "license": "license",
                    "template": "template", "system": "system", "draft": "draft",
                    "renderer": "renderer", "parser": "parser", "requires": "requires",
                    "parameter": None, "message": None}
_ASCII_LETTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _go_printable(ch: str) -> bool:
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def _position(text: str, pos: int) -> tuple[int, int]:
    before = text[:pos]
    line = len(re.findall(r"\r\n|\r|\n", before)) + 1
    start = max(before.rfind("\n"), before.rfind("\r")) + 1
    return line, pos - start + 1


def _unquote(s: str) -> tuple[bool, str]:
    if s.startswith('"""'):
        return (True, s[3:-3]) if len(s) >= 6 and s.endswith('"""') else (False, "")
    if s.startswith('"'):
        return (True, s[1:-1]) if len(s) >= 2 and s.endswith('"') else (False, "")
    return True, s


def _oracle(text: str) -> list[tuple[str, str, bool]] | tuple[str, int, int]:
    if text.startswith("\ufeff"):
        text = text[1:]
    out: list[tuple[str, str, bool]] = []
    state, buf, start = "between", "", 0
    name, is_param, role = "", False, ""

    def fail(message: str, at: int) -> tuple[str, int, int]:
        return (message, *_position(text, at))

    for i, ch in enumerate(text):
        newline, blank = ch in "\r\n", ch in " \t"
        if state == "between":
            if ch == "#":
                state = "comment"
            elif not (blank or newline):
                state, start = "keyword", i
                buf = ch if _go_printable(ch) else ""
        elif state == "comment":
            if newline:
                state = "between"
        elif state == "keyword":
            if ch in _ASCII_LETTERS:
                buf += ch
            elif blank:
                word = buf.lower()
                if word not in _ORACLE_KEYWORDS:
                    return fail(ERR_INVALID_COMMAND, start)
                if word == "parameter":
                    state, buf, start = "name", "", i + 1
                elif word == "message":
                    state, buf, start = "role", "", i + 1
                else:
                    state, buf, is_param, role = "value", "", False, ""
                    name = _ORACLE_KEYWORDS[word] or ""
            else:
                return fail(ERR_INVALID_COMMAND, i)
        elif state == "name":
            if ch in _ASCII_LETTERS or ch.isascii() and (ch.isdigit() or ch == "_"):
                buf += ch
            elif blank:
                state, name, is_param, role, buf = "value", buf, True, "", ""
            else:
                return fail(f"unexpected EOF: {buf}", i)
        elif state == "role":
            if ch in _ASCII_LETTERS:
                buf += ch
            elif blank:
                if buf not in ("system", "user", "assistant"):
                    return fail(ERR_INVALID_ROLE, start)
                state, name, is_param, role, buf = "value", "message", False, buf, ""
            else:
                return fail(f"unexpected EOF: {buf}", i)
        elif state == "value":
            if newline:
                ok, value = _unquote(buf.strip(" \t\r\n"))
                if ok:
                    out.append((name, f"{role}: {value}" if role else value, is_param))
                    state, buf = "between", ""
                    continue
                buf += ch
            elif blank or _go_printable(ch):
                if not buf.strip(" \t") and not blank:
                    start = i  # first visible rune of the value
                buf += ch
    if state == "value":
        ok, value = _unquote(buf.strip(" \t\r\n"))
        if not ok:
            return fail(ERR_UNEXPECTED_EOF, start)
        out.append((name, f"{role}: {value}" if role else value, is_param))
    elif state in ("keyword", "name", "role"):
        return fail(ERR_UNEXPECTED_EOF, start)
    if not any(n == "model" and not p for n, _, p in out):
        return (ERR_MISSING_FROM, 0, 0)
    return out


def _ours(text: str) -> list[tuple[str, str, bool]] | tuple[str, int, int]:
    try:
        m = parse(text)
    except ModelfileError as e:
        return (e.message, e.line, e.column)
    return [(c.name, c.args, c.kind is PARAM) for c in m.commands]


FRAGMENTS = [
    "FROM", "from", "FrOm", "PARAMETER", "parameter", "MESSAGE", "message", "SYSTEM",
    "TEMPLATE", "LICENSE", "ADAPTER", "DRAFT", "RENDERER", "PARSER", "REQUIRES", "FRO", "BAD",
    "user", "system", "assistant", "User", "temperature", "stop", "x1", "a-b", "_",
    '"', '"', '""', '"""', '"""', "'", " ", " ", "  ", "\t", "\n", "\n", "\r\n", "\r",
    "#", "# note", "abc", "x y", "你好", "👋", "\\", "1", ":", "\x00", "\u00a0", "\u200d",
    "\x07", "\u2028", "\ufeff", "\ufffd",
]


@st.composite
def modelfile_texts(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.sampled_from(FRAGMENTS), max_size=40))
    prefix = draw(st.sampled_from(["", "FROM m\n", "FROM m\r\n", "  from m\n# c\n"]))
    return prefix + "".join(parts)


@st.composite
def line_texts(draw: st.DrawFn) -> str:
    """Mostly well-formed lines, to reach deep into quoting."""
    lines = []
    for _ in range(draw(st.integers(1, 8))):
        kw = draw(st.sampled_from(["FROM", "SYSTEM", "TEMPLATE", "PARAMETER stop",
                                   "PARAMETER ", "MESSAGE user", "MESSAGE  user", "# c", ""]))
        sep = draw(st.sampled_from([" ", "\t", "  ", " \x00"]))
        body = "".join(draw(st.lists(st.sampled_from(
            ['"', '"""', "a", " ", "\t", "\n", "\r\n", "#", "\u00a0", "b c"]), max_size=10)))
        end = draw(st.sampled_from(["\n", "\r\n", "\r", " \n", '"\n', '"""\n']))
        lines.append(kw + sep + body + end)
    return "FROM m\n" + "".join(lines)


INNER = st.lists(st.sampled_from(
    ["a", "b c", " ", "\t", '"', '""', '"""', "\n", "\r\n", "\r", "#", "\x00", "\u00a0", "你",
     "' "]), max_size=8).map("".join)


@st.composite
def structured_texts(draw: st.DrawFn) -> str:
    """Lines shaped like real commands (mostly valid), with random quoting inside."""
    lines = []
    for _ in range(draw(st.integers(1, 7))):
        indent = draw(st.sampled_from(["", "", " ", "\t ", "\u200d"]))
        kind = draw(st.sampled_from(["kw", "kw", "kw", "param", "msg", "comment", "blank"]))
        if kind == "comment":
            lines.append(indent + "#" + draw(INNER).replace("\n", "").replace("\r", "") + "\n")
            continue
        if kind == "blank":
            lines.append(indent + draw(st.sampled_from(["\n", "\r\n", "\r"])))
            continue
        if kind == "kw":
            head = draw(st.sampled_from(["FROM", "from", "System", "TEMPLATE", "license",
                                         "ADAPTER", "DRAFT", "RENDERER", "PARSER", "REQUIRES"]))
        elif kind == "param":
            head = "PARAMETER" + draw(st.sampled_from([" ", "\t", "  "])) + draw(
                st.sampled_from(["stop", "temperature", "x_1", "", "Top9"]))
        else:
            head = "MESSAGE " + draw(st.sampled_from(["user", "system", "assistant", "bot"]))
        sep = draw(st.sampled_from([" ", "\t", "  ", " \x00", "\t\u00a0 "]))
        form = draw(st.sampled_from(["bare", "single", "triple", "raw"]))
        inner = draw(INNER)
        if form == "bare":
            value = inner.replace("\n", " ").replace("\r", " ").lstrip(' "\t')
        elif form == "single":
            value = '"' + inner + '"'
        elif form == "triple":
            value = '"""' + inner + '"""'
        else:
            value = inner
        trail = draw(st.sampled_from(["", "", " ", "\t\x00"]))
        end = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
        lines.append(indent + head + sep + value + trail + end)
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "FROM m\n")
    text = "".join(lines)
    return text if draw(st.integers(0, 3)) else text.rstrip("\r\n")


TEXTS = st.one_of(modelfile_texts(), line_texts(), structured_texts(), structured_texts())


@given(TEXTS)
@example("FROM m\nSYSTEM \"\x00\"\"x\n\"\"\"\n")
@example('FROM m\nSYSTEM "\u00a0"\n')
@example("FROM m\nMESSAGE user \"\"\"\"\"\n")
@HYPOTHESIS
def test_grammar_agrees_with_oracle(text: str) -> None:
    assert _ours(text) == _oracle(text)


@given(TEXTS)
@HYPOTHESIS
def test_format_of_parsed_text_round_trips(text: str) -> None:
    try:
        m = parse(text)
    except ModelfileError:
        return  # rejected texts are covered by test_grammar_agrees_with_oracle
    again = parse(format_modelfile(m))
    assert again == m
    assert format_modelfile(again) == format_modelfile(m)


# --------------------------------------------------------------------------- AST round trip
VALUE_CHARS = st.sampled_from(list('""" \t\n\r#\\\'abc:xyz你👋\ufffd') + ['"""', '" ', ' "'])
values = st.lists(VALUE_CHARS, max_size=12).map("".join)


def _representable(v: str) -> bool:
    try:
        format_value(v)
    except ModelfileError:
        return False
    return True


@st.composite
def commands(draw: st.DrawFn) -> Command:
    kind = draw(st.sampled_from(["keyword", "parameter", "message"]))
    value = draw(values.filter(_representable))
    if kind == "parameter":
        name = draw(st.from_regex(r"[A-Za-z0-9_]{0,8}", fullmatch=True)
                    | st.sampled_from(["system", "model", "message", "stop"]))
        return Command.parameter(name, value)
    if kind == "message":
        return Command.message(draw(st.sampled_from(["system", "user", "assistant"])), value)
    name = draw(st.sampled_from(["model", "adapter", "license", "template", "system", "draft",
                                 "renderer", "parser", "requires"]))
    return Command(name, value)


@st.composite
def modelfiles(draw: st.DrawFn) -> Modelfile:
    body = draw(st.lists(commands(), max_size=8))
    model = Command("model", draw(values.filter(_representable)))
    body.insert(draw(st.integers(0, len(body))), model)
    return Modelfile(tuple(body))


@given(modelfiles())
@HYPOTHESIS
def test_parse_inverts_format(m: Modelfile) -> None:
    assert parse(format_modelfile(m)) == m


@given(values)
@HYPOTHESIS
def test_format_value_is_exact_or_refuses(v: str) -> None:
    try:
        spelled = format_value(v)
    except ModelfileError:
        for spelling in (v, f'"{v}"', f'"""{v}"""'):
            try:
                got = parse(f"FROM x\nSYSTEM {spelling}\n").system
            except ModelfileError:
                continue
            assert got != v
        return
    assert parse(f"FROM x\nSYSTEM {spelled}\n").system == v
