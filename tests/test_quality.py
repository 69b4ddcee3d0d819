"""The code stays ruff- and mypy-clean (both are test dependencies)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.parametrize("args", [["ruff", "check", "."], ["mypy", "modelkit"]],
                         ids=["ruff", "mypy"])
def test_linters_pass(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
