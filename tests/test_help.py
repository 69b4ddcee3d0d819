"""Help a newcomer can use: every verb's --help explains each argument and ends with
examples that the parser accepts; create and quantize list the supported types."""

from __future__ import annotations

import argparse
import shlex

import pytest

from modelkit import api
from modelkit.cli import EXAMPLES, build_parser, main


def verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: p for name, p in sub.choices.items() if name != "ls"}


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("verb", sorted(verbs()))
def test_every_argument_is_explained_and_the_examples_parse(
        verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = verbs()[verb]
    for action in parser._actions:
        assert action.help, f"{verb}: {action.dest} has no help line"
    text = help_text(capsys, verb)
    for action in parser._actions:
        if action.option_strings:
            assert action.option_strings[-1] in text
        else:
            assert str(action.metavar or action.dest) in text
    examples = [line.strip() for line in text.split("examples:\n", 1)[1].splitlines()
                if line.strip()]
    assert 2 <= len(examples) <= 3 and examples == list(EXAMPLES[verb])
    for example in examples:
        argv = shlex.split(example, comments=True)
        argv = argv[:argv.index(">")] if ">" in argv else argv  # the shell's redirection
        assert argv[0] == "modelkit" and argv[1] in (verb, "ls")
        build_parser().parse_args(argv[1:])  # a usage error would exit 2


@pytest.mark.parametrize("verb", ["create", "quantize"])
def test_create_and_quantize_list_the_supported_types(
        verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(help_text(capsys, verb).split())
    listed = text.split("supported types: ", 1)[1].split(" examples:")[0]
    assert listed.split(", ") == list(api.FILE_TYPES)


def test_top_level_help_says_where_models_are_stored(
        capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(help_text(capsys).split())
    assert "MODELKIT_MODELS" in text and "~/.ollama/models" in text
    for verb in verbs():
        assert verb in text
