"""Executable evidence from what the user already wrote: docstring examples and existing tests.

In local council mode no model writes tests, so the tester runs what the user already gave:
the doctest examples and `assert` lines in the symbol's docstring, plus test files in the
workspace that exercise the symbol. This module extracts the examples, turns them into a pytest
module (one test per example, so a candidate earns credit per example it satisfies) and finds
the relevant existing test files.
"""

from __future__ import annotations

import ast
import doctest
import logging
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from council.symbols import definitions, find_definition, parse, reindent

log = logging.getLogger(__name__)

_MAX_ASSERT_LINES = 10
_MAX_TEST_FILE_BYTES = 1_000_000
_IDENTIFIER_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")
_RESERVED = {"_m", "_doctest", "_name", "_run_doctest"}  # names the generated module uses
_SKIP_DIRS = {"node_modules", "site-packages", "build", "dist", "__pycache__", "venv", "htmlcov"}


class Example(BaseModel):
    """One runnable example from a docstring."""

    kind: Literal["doctest", "assert"]
    source: str
    want: str | None
    line: int


# -- extraction ----------------------------------------------------------------------------------


def _docstring_node(source: str, symbol: str) -> ast.Constant | None:
    """The docstring of `symbol`, when its examples can run against the module.

    A function nested in a function (`outer.inner`) is not an attribute of the module, so its
    examples could not be run by the generated test module: they are not evidence.
    """
    tree = parse(source)
    if tree is None:
        return None
    node = find_definition(tree, symbol)
    importable = {name for name, _, reachable in definitions(tree) if reachable}
    if node is None or symbol not in importable:
        return None
    if not node.body or not isinstance(node.body[0], ast.Expr):
        return None
    value = node.body[0].value
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value
    return None


def _doctest_examples(doc: str, first_line: int) -> list[Example]:
    """Doctest examples; `first_line` is the file line on which the docstring text starts."""
    try:
        parsed = doctest.DocTestParser().get_examples(doc)
    except ValueError as error:  # inconsistent indentation, missing blank after the prompt
        log.info("docstring examples not usable as doctests: %s", error)
        return []
    return [
        Example(
            kind="doctest",
            source=example.source.removesuffix("\n"),
            want=example.want.removesuffix("\n"),
            line=first_line + example.lineno,
        )
        for example in parsed
    ]


def _doctest_lines(examples: Sequence[Example]) -> set[int]:
    """File lines taken by doctest examples (prompts, continuations and expected output)."""
    taken: set[int] = set()
    for example in examples:
        size = example.source.count("\n") + 1
        size += example.want.count("\n") + 1 if example.want else 0
        taken.update(range(example.line, example.line + size))
    return taken


def _parse_assert(lines: Sequence[str], start: int) -> str | None:
    """The assert statement beginning at `lines[start]`, following continuation lines."""
    for end in range(start + 1, min(start + _MAX_ASSERT_LINES, len(lines)) + 1):
        text = "\n".join(line.strip() for line in lines[start:end])
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        if len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
            return text
        return None
    return None


def _assert_examples(doc: str, first_line: int, taken: set[int]) -> list[Example]:
    lines = doc.split("\n")
    found: list[Example] = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        line_no = first_line + index
        if line_no in taken or not re.match(r"assert\b", stripped):
            continue
        statement = _parse_assert(lines, index)
        if statement is None:
            log.debug("docstring line %d looks like an assert but does not parse", line_no)
            continue
        found.append(Example(kind="assert", source=statement, want=None, line=line_no))
    return found


def docstring_examples(source: str, symbol: str) -> list[Example]:
    """Doctest examples and `assert` lines from the docstring of `symbol`, in file order.

    Lines are exact unless the docstring spells newlines as escapes (`\\n`), which `ast` has
    already turned into real ones. Empty when there is no docstring or `source` does not parse.
    """
    node = _docstring_node(source, symbol)
    if node is None:
        return []
    doc: str = node.value
    doctests = _doctest_examples(doc, node.lineno)
    asserts = _assert_examples(doc, node.lineno, _doctest_lines(doctests))
    return sorted([*doctests, *asserts], key=lambda example: example.line)


# -- the generated test module -------------------------------------------------------------------

_HEADER = '''\
"""Examples from the docstring of {symbol}, generated by the council (local mode)."""

import doctest as _doctest

import {module} as _m

for _name in dir(_m):
    # Public names, so examples read as written; test* names would be collected as tests.
    if not _name.startswith("_") and not _name.lower().startswith("test"):
        globals()[_name] = getattr(_m, _name)
{binding}

def _run_doctest(source, want, line):
    """Run one example the way doctest would, with the module's globals."""
    lines = source.splitlines() or [""]
    prompts = [">>> " + lines[0]] + ["... " + rest for rest in lines[1:]]
    expected = [text or "<BLANKLINE>" for text in want.splitlines()]
    text = "\\n".join(prompts + expected) + "\\n"
    test = _doctest.DocTestParser().get_doctest(
        text, dict(vars(_m)), "{module}.{symbol}", getattr(_m, "__file__", None), line - 1
    )
    if not test.examples:
        return  # blank or comment only: doctest checks nothing either
    # The text round trip lets doctest parse directives and tracebacks; the exact source and
    # output are restored in case an output line looked like a "..." continuation.
    example = test.examples[0]
    example.source = source.rstrip("\\n") + "\\n"
    example.want = "\\n".join(expected) + "\\n" if expected else ""
    test.examples = [example]
    report = []
    runner = _doctest.DocTestRunner(verbose=False)
    if runner.run(test, out=report.append, clear_globs=False).failed:
        raise AssertionError("".join(report))
'''


def _check_dotted(value: str, what: str) -> None:
    if not _IDENTIFIER_PATH.match(value):
        raise ValueError(f"{what} must be a dotted Python name, got {value!r}")


def _assert_body(example: Example) -> str:
    try:
        ast.parse(example.source)
    except SyntaxError as error:
        message = f"example on line {example.line} is not valid Python: {error.msg}"
        return f"    raise AssertionError({message!r})\n"
    return "".join(line + "\n" for line in reindent(example.source, "    "))


def _test_function(number: int, example: Example) -> str:
    header = f"\n\ndef test_example_{number}_line_{example.line}():\n"
    if example.kind == "assert":
        return header + _assert_body(example)
    call = f"_run_doctest({example.source!r}, {(example.want or '')!r}, {example.line})"
    return header + f"    {call}\n"


def examples_test_module(module_name: str, symbol: str, examples: Sequence[Example]) -> str:
    """A pytest module with one test per example, importing `module_name` as `_m`.

    Public names of the module are bound as globals at import time (no `import *`, which
    would also drag in the module's own `test*` functions) and `symbol`'s top-level name is
    bound explicitly, so it is available even when private. Doctest examples run through
    `doctest.DocTestRunner`, so output is compared exactly as doctest compares it (including
    `# doctest:` directives); asserts run as written, with pytest's assertion messages.
    """
    _check_dotted(module_name, "module_name")
    _check_dotted(symbol, "symbol")
    top = symbol.split(".")[0]
    binding = "" if top in _RESERVED else f"{top} = _m.{top}\n"
    parts = [_HEADER.format(module=module_name, symbol=symbol, binding=binding)]
    parts += [_test_function(n, ex) for n, ex in enumerate(examples, start=1)]
    return "".join(parts)


# -- existing tests ------------------------------------------------------------------------------


def _is_test_file(name: str) -> bool:
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def _skip_dir(path: Path, name: str) -> bool:
    if name.startswith(".") or name in _SKIP_DIRS or name.endswith(".egg-info"):
        return True
    return (path / name / "pyvenv.cfg").exists()  # a virtual environment under any name


def _test_files(workspace: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(workspace):
        here = Path(root)
        dirs[:] = [name for name in dirs if not _skip_dir(here, name)]
        for name in files:
            if _is_test_file(name):
                yield here / name


def _module_matches(imported: str, module_name: str) -> bool:
    return imported == module_name or imported.endswith("." + module_name)


def _imports_module(tree: ast.AST, module_name: str) -> bool:
    """`import m`, `import pkg.m`, `from m import`, `from pkg.m import`, `from pkg import m`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(_module_matches(alias.name, module_name) for alias in node.names):
                return True
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if base and _module_matches(base, module_name):
                return True
            joined = (f"{base}.{alias.name}" if base else alias.name for alias in node.names)
            if any(_module_matches(name, module_name) for name in joined):
                return True
    return False


def _mentions(text: str, symbol: str) -> bool:
    return all(re.search(rf"\b{re.escape(part)}\b", text) for part in symbol.split("."))


def _is_relevant(path: Path, module_name: str, symbol: str) -> bool:
    try:
        if path.stat().st_size > _MAX_TEST_FILE_BYTES:
            return False
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        log.debug("cannot read %s: %s", path, error)
        return False
    if not _mentions(text, symbol):
        return False
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        log.debug("skipping unparsable test file %s", path)
        return False
    return _imports_module(tree, module_name)


def existing_tests_for(
    workspace: Path, module_name: str, symbol: str, *, limit: int = 20
) -> list[Path]:
    """Workspace-relative test files that import `module_name` and mention `symbol`.

    Test files are `test_*.py` and `*_test.py` anywhere in the workspace outside hidden
    directories, virtual environments, `node_modules`, `site-packages` and build output.
    A dotted symbol ("Class.method") must have every part mentioned. Sorted, at most `limit`.
    """
    workspace = Path(workspace)
    found = [
        path.relative_to(workspace)
        for path in _test_files(workspace)
        if _is_relevant(path, module_name, symbol)
    ]
    return sorted(found, key=lambda path: path.as_posix())[: max(limit, 0)]
