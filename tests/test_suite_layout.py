"""The test suite's own shape: test modules share code through helper modules, never through
each other (importing a test module runs its module-level code and drags its fixtures and
tests into the importer's namespace, where pytest may run them twice)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def imported_modules(source: str, module: str) -> set[str]:
    """Every module `source` (the text of dotted `module`) may import, absolute; for
    `from a import b`, both `a` and `a.b` (b may be a module)."""
    package = module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found = ".".join([*base, *([node.module] if node.module else [])])
            else:
                found = node.module or ""
            names.add(found)
            names.update(f"{found}.{alias.name}" for alias in node.names)
    return names


def is_test_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "tests" and parts[-1].startswith("test_")


def test_no_test_module_imports_another() -> None:
    modules = sorted(TESTS.rglob("test_*.py"))
    assert len(modules) > 20  # the glob found the suite
    offenders = {}
    for path in modules:
        dotted = ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)
        text = path.read_text(encoding="utf-8")
        found = sorted(n for n in imported_modules(text, dotted) if is_test_module(n))
        if found:
            offenders[dotted] = found
    assert offenders == {}, "share through a helper module (tests/scenarios.py), not a test"


@pytest.mark.parametrize(
    ("source", "imports"),
    [
        ("from tests.test_pipeline import plan", "tests.test_pipeline"),
        ("import tests.test_cli", "tests.test_cli"),
        ("from tests import test_server", "tests.test_server"),
        ("from . import test_commands", "tests.vscode.test_commands"),
        ("from ..test_neovim import FIM", "tests.test_neovim"),
        ("from .harness import chat", None),
        ("from tests.scenarios import plan\nimport tests.waits", None),
    ],
)
def test_the_check_sees_every_form_of_import(source: str, imports: str | None) -> None:
    found = {n for n in imported_modules(source, "tests.vscode.test_x") if is_test_module(n)}
    assert found == ({imports} if imports else set())
