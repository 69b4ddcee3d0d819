"""The built wheel ships the grammar and templates and works outside the source tree."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import lark
import pytest

from conftest import REPO, SAMPLE_DIR
from modelkit.quant.kernels import iq_tables

pytestmark = pytest.mark.slow  # builds a wheel and a venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                    str(out), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel_path,) = out.glob("modelkit-*.whl")
    return wheel_path


def test_wheel_contains_grammar_templates_and_entry_point(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "modelkit/grammars/modelfile.lark" in names
    assert "modelkit/templates/chatml.gotmpl" in names
    grammar = zipfile.ZipFile(wheel).read("modelkit/grammars/modelfile.lark")
    assert grammar == (REPO / "grammars" / "modelfile.lark").read_bytes()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert b"modelkit = modelkit.__main__:main" in zipfile.ZipFile(wheel).read(entry_points)
    grids = iq_tables.DATA.relative_to(REPO).as_posix()  # the IQ kernels' lookup tables
    assert zipfile.ZipFile(wheel).read(grids) == iq_tables.DATA.read_bytes()


def test_installed_wheel_parses_a_modelfile_in_a_fresh_venv(wheel: Path,
                                                            tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    # Dependencies come from this environment's site-packages (no network needed); the
    # source tree is not on the path, so the grammar must come from the installed wheel.
    deps = str(Path(lark.__file__).resolve().parents[1])
    code = ("import sys, modelkit, modelkit.modelfile as mf; "
            "assert modelkit.__file__.startswith(sys.prefix), modelkit.__file__; "
            "m = mf.parse_file(sys.argv[1]); print(m.froms[0], m.system)")
    proc = subprocess.run([str(python), "-c", code, str(SAMPLE_DIR / "Modelfile")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("./liang-ai.gguf "
                                   "你是由崔亮创建的AI助手，你叫亮仔，你回答问题时需要使用中文。")
