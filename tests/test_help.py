"""Help a newcomer can use: every verb's --help explains each argument and ends with
examples that the parser accepts; create and quantize list the supported types."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

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


def test_version_and_import_load_no_heavy_module() -> None:
    """``modelkit --version`` and ``import modelkit`` load neither the library nor numpy,
    gguf, lark or the hub clients; the API still loads on first use."""
    import subprocess
    import sys

    from conftest import REPO

    heavy = ("numpy", "gguf", "lark", "huggingface_hub", "modelscope", "modelscope_hub",
             "safetensors", "tokenizers", "modelkit.api")
    probe = ("import runpy, sys; sys.argv = ['modelkit', '--version']\n"
             "try:\n    runpy.run_module('modelkit', run_name='__main__')\n"
             "except SystemExit as e:\n    assert e.code == 0\n"
             f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
             "import modelkit\nmodelkit.list_models\n"
             f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    version, before, after = proc.stdout.splitlines()
    assert version.startswith("modelkit ") and before == "[]"
    assert "'modelkit.api'" in after and "'numpy'" not in after  # list needs only the store
    # ... and a name whose module needs numpy loads it on first use
    probe = "import sys, modelkit\nmodelkit.quantize\nprint('numpy' in sys.modules)\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.stdout.strip() == "True", proc.stderr


# What each command may not load (the import cost of `list` and `show NAME` is part of
# issue 12's start-up target: bench/startup.py measures the time).
NOT_LOADED = {
    "list": ("numpy", "gguf", "ssl", "huggingface_hub", "modelscope", "safetensors",
             "tokenizers", "modelkit.convert", "modelkit.registry", "modelkit.quant",
             "modelkit.build"),
    "show": ("ssl", "huggingface_hub", "modelscope", "safetensors", "tokenizers",
             "modelkit.convert", "modelkit.registry", "modelkit.peek", "modelkit.importers",
             "modelkit.build", "modelkit.quant.requantize"),
}


@pytest.mark.parametrize("verb", sorted(NOT_LOADED))
def test_list_and_show_load_only_what_they_use(verb: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import REPO, SAMPLE_DIR

    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
           "MODELKIT_MODELS": str(tmp_path / "models")}
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {SAMPLE_DIR / 'liang-ai.gguf'}\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "modelkit", "create", "sample", "-f", str(modelfile)],
                   env=env, check=True, capture_output=True, timeout=120)
    argv = ["modelkit", "list"] if verb == "list" else ["modelkit", "show", "sample"]
    probe = (f"import sys; sys.argv = {argv!r}\n"
             "from modelkit.__main__ import main\ncode = main(sys.argv[1:])\n"
             "sys.stdout.flush()\n"
             f"loaded = sorted(m for m in {NOT_LOADED[verb]!r} if m in sys.modules)\n"
             "print('LOADED', loaded, code, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=env, timeout=120)
    assert "sample" in proc.stdout or "llama" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "LOADED [] 0", proc.stderr
