"""Docstring examples, the pytest module built from them, and discovery of existing tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from council.examples import (
    Example,
    docstring_examples,
    examples_test_module,
    existing_tests_for,
)

SOURCE = '''\
"""Arithmetic."""


def add(a, b):
    """Add two numbers.

    >>> add(2, 3)
    5
    >>> add(
    ...     "a", "b")
    'ab'
    >>> total = add(1, 1)

    Examples:
        assert add(2, 3) == 5
        assert add(-1, 1) == 0, "opposites cancel"
        assert add(
            10, 5
        ) == 15
        assert that this line is prose
    """
    return a + b


class Stack:
    def push(self, item):
        """Push.

        >>> s = Stack(); s.push(1)
        [1]
        """
        self.items = [*getattr(self, "items", []), item]
        return self.items
'''

CORRECT = SOURCE
WRONG = SOURCE.replace("return a + b", "return a - b if isinstance(a, int) else a + b")


# -- docstring_examples -------------------------------------------------------------------------


def test_doctest_and_assert_examples_with_lines():
    examples = docstring_examples(SOURCE, "add")
    assert [(e.kind, e.line) for e in examples] == [
        ("doctest", 7),
        ("doctest", 9),
        ("doctest", 12),
        ("assert", 15),
        ("assert", 16),
        ("assert", 17),
    ]
    lines = SOURCE.splitlines()
    assert lines[7 - 1].strip() == ">>> add(2, 3)"
    assert lines[15 - 1].strip() == "assert add(2, 3) == 5"


def test_example_fields():
    first, second, third, *asserts = docstring_examples(SOURCE, "add")
    assert (first.source, first.want) == ("add(2, 3)", "5")
    assert second.source == 'add(\n    "a", "b")'
    assert second.want == "'ab'"
    assert (third.source, third.want) == ("total = add(1, 1)", "")
    assert [a.want for a in asserts] == [None, None, None]
    assert asserts[1].source == 'assert add(-1, 1) == 0, "opposites cancel"'
    assert asserts[2].source == "assert add(\n10, 5\n) == 15"


def test_method_docstring_by_dotted_name():
    (example,) = docstring_examples(SOURCE, "Stack.push")
    assert (example.kind, example.line, example.want) == ("doctest", 29, "[1]")


def test_no_examples():
    assert docstring_examples(SOURCE, "missing") == []
    assert docstring_examples("def f():\n    return 1\n", "f") == []
    assert docstring_examples('def f():\n    """Just prose."""\n', "f") == []
    assert docstring_examples("def f(:\n", "f") == []


def test_assert_in_doctest_prompt_is_a_doctest_only():
    source = 'def f():\n    """\n    >>> assert f() == 1\n    """\n    return 1\n'
    assert [(e.kind, e.line) for e in docstring_examples(source, "f")] == [("doctest", 3)]


# -- examples_test_module -----------------------------------------------------------------------


def run_pytest(
    tmp_path: Path, implementation: str, test_module: str
) -> subprocess.CompletedProcess:
    (tmp_path / "arith.py").write_text(implementation)
    (tmp_path / "test_arith_examples.py").write_text(test_module)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_module_compiles_and_names_tests():
    module = examples_test_module("arith", "add", docstring_examples(SOURCE, "add"))
    compile(module, "test_arith_examples.py", "exec")
    for name in ["test_example_1_line_7", "test_example_4_line_15", "test_example_6_line_17"]:
        assert f"def {name}():" in module
    assert "import arith as _m" in module
    assert "import *" not in module


def test_generated_module_passes_for_correct_implementation(tmp_path):
    examples = docstring_examples(SOURCE, "add") + docstring_examples(SOURCE, "Stack.push")
    result = run_pytest(tmp_path, CORRECT, examples_test_module("arith", "add", examples))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout


def test_generated_module_fails_for_wrong_implementation(tmp_path):
    examples = docstring_examples(SOURCE, "add")
    result = run_pytest(tmp_path, WRONG, examples_test_module("arith", "add", examples))
    assert result.returncode == 1, result.stdout + result.stderr
    # add(2, 3) and the asserts fail; string concatenation and the assignment still pass.
    assert "4 failed, 2 passed" in result.stdout
    assert "Expected:" in result.stdout  # the doctest report, as doctest prints it
    assert "test_example_1_line_7" in result.stdout


def test_doctest_directives_and_exceptions(tmp_path):
    examples = [
        Example(kind="doctest", source="list(range(20))", want="[0, 1, ..., 19]", line=3),
        Example(kind="doctest", source="add(1, 2)  # doctest: +ELLIPSIS", want="...", line=4),
        Example(
            kind="doctest",
            source="add(1, None)",
            want=(
                "Traceback (most recent call last):\n    ...\n"
                "TypeError: unsupported operand type(s) for +: 'int' and 'NoneType'"
            ),
            line=5,
        ),
    ]
    module = examples_test_module("arith", "add", examples)
    result = run_pytest(tmp_path, CORRECT, module)
    # Without +ELLIPSIS the first example fails, exactly as doctest would judge it.
    assert "1 failed, 2 passed" in result.stdout, result.stdout + result.stderr
    assert "test_example_1_line_3" in result.stdout


def test_invalid_assert_example_still_gives_a_valid_module(tmp_path):
    examples = [Example(kind="assert", source="assert add(1,", want=None, line=9)]
    module = examples_test_module("arith", "add", examples)
    compile(module, "t.py", "exec")
    result = run_pytest(tmp_path, CORRECT, module)
    assert "1 failed" in result.stdout
    assert "not valid Python" in result.stdout


def test_private_symbol_and_test_names_in_module(tmp_path):
    implementation = (
        "def _twice(x):\n    return 2 * x\n\n\ndef test_helper():\n    raise SystemExit\n"
    )
    examples = [Example(kind="assert", source="assert _twice(4) == 8", want=None, line=1)]
    result = run_pytest(tmp_path, implementation, examples_test_module("arith", "_twice", examples))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_rejects_non_identifier_names():
    with pytest.raises(ValueError):
        examples_test_module("arith; import os", "add", [])
    with pytest.raises(ValueError):
        examples_test_module("arith", "add()", [])


# -- existing_tests_for -------------------------------------------------------------------------


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_existing_tests_for_finds_relevant_files(tmp_path):
    write(tmp_path, "tests/test_arith.py", "from arith import add\n\ndef test(): add(1, 2)\n")
    write(tmp_path, "tests/unit/test_deep.py", "import arith\n\ndef test(): arith.add(1, 2)\n")
    write(tmp_path, "arith_test.py", "from pkg.arith import add\n")
    write(tmp_path, "test_pkg.py", "from pkg import arith\narith.add\n")
    write(tmp_path, "test_local.py", "def test():\n    from arith import add\n")
    # Not relevant: wrong symbol, wrong module, not a test file, inside skipped directories.
    write(tmp_path, "tests/test_other.py", "from arith import sub\n")
    write(tmp_path, "tests/test_mention.py", "# add is tested elsewhere\nimport arithmetic\n")
    write(tmp_path, "tests/test_addition.py", "from arith import addition\n")
    write(tmp_path, "tests/helpers.py", "from arith import add\n")
    write(tmp_path, ".venv/lib/test_arith.py", "from arith import add\n")
    write(tmp_path, "env/pyvenv.cfg", "home = /usr\n")
    write(tmp_path, "env/lib/test_arith.py", "from arith import add\n")
    write(tmp_path, "node_modules/x/test_arith.py", "from arith import add\n")
    write(tmp_path, "build/lib/test_arith.py", "from arith import add\n")
    write(tmp_path, "tests/test_broken.py", "from arith import add\ndef (:\n")

    found = existing_tests_for(tmp_path, "arith", "add")
    assert found == [
        Path("arith_test.py"),
        Path("test_local.py"),
        Path("test_pkg.py"),
        Path("tests/test_arith.py"),
        Path("tests/unit/test_deep.py"),
    ]
    assert existing_tests_for(tmp_path, "arith", "add", limit=2) == found[:2]


def test_existing_tests_for_dotted_symbol(tmp_path):
    write(tmp_path, "test_stack.py", "from arith import Stack\n\ndef test(): Stack().push(1)\n")
    write(tmp_path, "test_pop.py", "from arith import Stack\n\ndef test(): Stack().pop()\n")
    assert existing_tests_for(tmp_path, "arith", "Stack.push") == [Path("test_stack.py")]


def test_existing_tests_for_empty_workspace(tmp_path):
    assert existing_tests_for(tmp_path, "arith", "add") == []
