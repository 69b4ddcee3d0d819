"""Imports run one way (docs/architecture.md): every module's imports, read with ``ast``,
go only to its own layer or a lower one; nothing inside the package imports
``modelkit/__init__.py``; ``cli`` reaches the library only through ``api``; no import of a
modelkit module is deferred into a function (except by the entry points and the API's
lazy names, for start-up cost); any other deferred import says why."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "modelkit"

# Lowest first. A module is in the layer of the longest prefix that names it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("leaf", ("modelkit.version", "modelkit.errors", "modelkit.names")),
    ("pure", ("modelkit.modelfile", "modelkit.manifest", "modelkit.gojson",
              "modelkit.gostrconv", "modelkit.humanize", "modelkit.progress",
              "modelkit.chat_templates", "modelkit.gotemplate", "modelkit.quant",
              "modelkit.quant.kernels", "modelkit.quant.policy", "modelkit.quant.file_types")),
    ("io", ("modelkit.store", "modelkit.gguf_file", "modelkit.quant.requantize",
            "modelkit.quant.streaming", "modelkit.quant.imatrix", "modelkit.quant.fileplan",
            "modelkit.importers", "modelkit.registry", "modelkit.convert", "modelkit.peek")),
    ("orchestration", ("modelkit.build",)),
    ("api", ("modelkit.api",)),
    ("front", ("modelkit.cli", "modelkit.__main__", "modelkit")),
)
# Leaves that import nothing from modelkit at all.
BARE_LEAVES = frozenset({"modelkit.version", "modelkit.errors"})
# What the CLI package may import besides its own modules: the API and the leaves (the
# version, the error classes).
CLI_MAY_IMPORT = frozenset({"modelkit.api", "modelkit.version", "modelkit.errors"})
DEFERRED_NOTE = "deferred for start-up cost"
# The package's entry points may defer the library below them (with the note above), so
# that `modelkit --version` stays cheap and a Ctrl-C while it loads is caught; so may the
# API, whose names load on first use (api/__init__) and whose show loads the hub and
# registry clients only for a model not in the store (api/info), so that `modelkit list`
# and `show NAME` need neither numpy's nor ssl's import cost they do not use. No module
# below the API may.
FRONT_DOORS = frozenset({"modelkit", "modelkit.__main__", "modelkit.api", "modelkit.api.info"})


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the modelkit module (or third-party module) imported
    line: int
    top_level: bool  # at module level (or in its ``if TYPE_CHECKING:`` block)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    return best


def is_package_module(dotted: str, root: Path = PACKAGE) -> bool:
    rel = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    base = root / rel
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path, root: Path = PACKAGE) -> list[Import]:
    """Every import in ``path``; ``from modelkit.x import y`` counts as importing
    ``modelkit.x.y`` when that is a module, else ``modelkit.x``."""
    module = module_name(path, root)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top: set[int] = set()
    for node in tree.body:
        top.add(id(node))
        if isinstance(node, ast.If):  # if TYPE_CHECKING: ... imports
            top.update(id(child) for child in node.body)
    found: list[Import] = []
    for node in ast.walk(tree):
        is_top = id(node) in top
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno, is_top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if base.startswith("modelkit") and is_package_module(sub, root) \
                    else base
                found.append(Import(module, target, node.lineno, is_top))
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        rank = layer_of(module)
        if rank < 0:
            problems.append(f"{module}: in no layer (add it to LAYERS and the docs)")
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for imp in imports_of(path, root):
            where = f"{path.relative_to(root.parent)}:{imp.line}"
            ours = imp.target == "modelkit" or imp.target.startswith("modelkit.")
            if not imp.top_level:
                above = " ".join(lines[max(0, imp.line - 5):imp.line]).lower()
                if ours and not (module in FRONT_DOORS and DEFERRED_NOTE in above):
                    problems.append(f"{where}: {imp.target} imported inside a function")
                elif DEFERRED_NOTE not in above:
                    problems.append(f"{where}: deferred import of {imp.target} without a "
                                    f"'{DEFERRED_NOTE}' comment")
            if not ours:
                continue
            if imp.target == "modelkit":
                problems.append(f"{where}: imports modelkit/__init__.py")
                continue
            target_rank = layer_of(imp.target)
            if target_rank > rank:
                problems.append(f"{where}: {module} ({LAYERS[rank][0]}) imports "
                                f"{imp.target} ({LAYERS[target_rank][0]})")
            if module in BARE_LEAVES:
                problems.append(f"{where}: {module} is a leaf but imports {imp.target}")
            in_cli = module == "modelkit.cli" or module.startswith("modelkit.cli.")
            if in_cli and imp.target not in CLI_MAY_IMPORT \
                    and not imp.target.startswith("modelkit.cli."):
                problems.append(f"{where}: cli imports {imp.target}, not through api")
        problems += [f"{path.relative_to(root.parent)}:{line}: importlib.import_module "
                     "outside the entry points and the API's lazy names"
                     for line in dynamic_imports(path) if module not in FRONT_DOORS]
    return problems


def dynamic_imports(path: Path) -> list[int]:
    """Lines that call ``importlib.import_module`` or ``__import__`` (imports the ast
    walk above cannot see)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) \
                else ""
            if name in ("import_module", "__import__"):
                lines.append(node.lineno)
    return lines


def test_imports_run_one_way() -> None:
    assert violations() == []


def test_every_layer_prefix_names_existing_code() -> None:
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            # modules other helpers are adding may not exist yet; the rest must
            if prefix in ("modelkit.quant.file_types", "modelkit.quant.imatrix",
                          "modelkit.convert"):
                continue
            assert is_package_module(prefix), (name, prefix)


@pytest.mark.parametrize(("source", "problem"), [
    ("from modelkit.build import Builder\n", "(pure) imports modelkit.build (orchestration)"),
    ("from modelkit import __version__\n", "imports modelkit/__init__.py"),
    ("import modelkit\n", "imports modelkit/__init__.py"),
    ("def f():\n    from modelkit import errors\n", "imported inside a function"),
    ("def f():\n    import json\n", "without a 'deferred for start-up cost' comment"),
    ("import importlib\nm = importlib.import_module('modelkit.build')\n",
     "importlib.import_module outside"),
])
def test_the_checker_catches(tmp_path: Path, source: str, problem: str) -> None:
    root = tmp_path / "modelkit"
    root.mkdir()
    for name in ("__init__", "errors", "build", "version", "manifest"):
        (root / f"{name}.py").write_text("", encoding="utf-8")
    (root / "manifest.py").write_text(source, encoding="utf-8")
    found = violations(root)
    assert len(found) == 1 and problem in found[0], found


def test_the_checker_catches_cli_bypassing_api(tmp_path: Path) -> None:
    root = tmp_path / "modelkit"
    root.mkdir()
    for name in ("__init__", "api", "humanize"):
        (root / f"{name}.py").write_text("", encoding="utf-8")
    (root / "cli.py").write_text("from modelkit.humanize import human_bytes\n"
                                 "from modelkit import api\n"
                                 "def f():\n"
                                 "    # deferred for start-up cost only\n"
                                 "    import tqdm\n", encoding="utf-8")
    assert violations(root) == ["modelkit/cli.py:1: cli imports modelkit.humanize, "
                                "not through api"]
