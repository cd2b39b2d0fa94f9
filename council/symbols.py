"""The one place that knows what a "symbol" in a Python file is.

Everything that asks "which function is at the cursor?", "where is `Stack.push`?", "is this
function a stub?" or "put this new code where `outer.inner` was" comes here: the code actions,
the LSP commands, the edit planner, local council mode, the docstring-example extractor and the
static checks. Before this module each had its own rules, and they disagreed (a nested stub was
offered for generation but could not be found again; local mode refused `raise
NotImplementedError` stubs the code action offered).

Rules, decided once:
- A qualified name joins the enclosing definitions' names with dots, through classes *and*
  functions: `Stack.push`, `outer.inner`, `Outer.Inner.method`. Only the direct bodies of
  definitions are searched (not `if` blocks); when a name is defined twice at one level, the
  last definition wins, as it does at runtime.
- A function is a **stub** when its body, after an optional docstring, holds nothing but `pass`,
  `...`, bare strings and `raise NotImplementedError[(...)]` (or nothing at all). Functions
  decorated `@overload` or `@abstractmethod` are stubs by design and are never reported as
  stubs to fill.
- Code actions must answer fast on half-typed code, so `symbols` falls back on an indentation
  scan of `def`/`class` lines when the file does not parse (no stub classification then).

Lines in `Symbol` are 0-based, as in LSP; `ast` nodes and `symbol_source` use 1-based lines.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
StubForm = Literal["empty", "pass", "ellipsis", "not-implemented"]
"""How a stub says "not written yet": `empty` is a docstring and nothing else."""

_DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async\s+)?(?P<kind>def|class)\s+(?P<name>\w+)")
_TODO = re.compile(r"#\s*TODO\b[:\s]*(?P<text>.*)", re.I)
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
_INTENTIONAL_STUB_DECORATORS = {"overload", "abstractmethod"}
_PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError)


@dataclass(frozen=True)
class Symbol:
    """A function or class found in a document."""

    name: str  # qualified: Class.method, outer.inner
    kind: Literal["function", "class"]
    start: int  # first line (decorators included), 0-based
    end: int  # last line, 0-based, inclusive
    stub: StubForm | None = None
    has_docstring: bool = False
    importable: bool = True  # reachable as module.A.b: no function on the way

    @property
    def is_stub(self) -> bool:
        return self.stub is not None


# -- parsing and walking -------------------------------------------------------------------------


def parse(source: str) -> ast.Module | None:
    """`ast.parse`, or None for text that is not (yet) valid Python."""
    try:
        return ast.parse(source)
    except _PARSE_ERRORS:
        return None


def definitions(tree: ast.Module) -> Iterator[tuple[str, Definition, bool]]:
    """(qualified name, node, importable) for every definition, outermost first."""

    def walk(
        body: list[ast.stmt], prefix: str, importable: bool
    ) -> Iterator[tuple[str, Definition, bool]]:
        for node in body:
            if isinstance(node, Definition):
                name = f"{prefix}{node.name}"
                yield name, node, importable
                inner = importable and isinstance(node, ast.ClassDef)
                yield from walk(node.body, f"{name}.", inner)

    yield from walk(tree.body, "", True)


def find_definition(tree: ast.Module, name: str, *, loose: bool = False) -> Definition | None:
    """The definition with qualified name `name`; the last one when it is defined twice.

    `loose` is for code a model wrote: asked for `Stack.push`, a model may answer with a bare
    `def push` or nest it differently. Then the definition whose qualified name shares the
    longest dotted suffix with `name` is taken (the last among equals), as long as at least the
    final name matches.
    """
    body: list[ast.stmt] = tree.body
    found: Definition | None = None
    for part in name.split("."):
        matches = [n for n in body if isinstance(n, Definition) and n.name == part]
        if not matches:
            found = None
            break
        found = matches[-1]
        body = found.body
    if found is not None or not loose:
        return found
    wanted = name.split(".")
    best, best_score = None, 0
    for qualified, node, _ in definitions(tree):
        parts = qualified.split(".")
        score = 0
        while score < min(len(parts), len(wanted)) and parts[-1 - score] == wanted[-1 - score]:
            score += 1
        if score and score >= best_score:
            best, best_score = node, score
    return best


def definition_lines(node: Definition) -> tuple[int, int]:
    """First line (decorators included) and last line of a definition, 1-based, inclusive."""
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return start, node.end_lineno or node.lineno


# -- stubs ---------------------------------------------------------------------------------------


def _decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute):
        return target.attr
    return target.id if isinstance(target, ast.Name) else ""


def _stub_statement(stmt: ast.stmt) -> StubForm | Literal["string"] | None:
    if isinstance(stmt, ast.Pass):
        return "pass"
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        if stmt.value.value is Ellipsis:
            return "ellipsis"
        return "string" if isinstance(stmt.value.value, str) else None
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
            return "not-implemented"
    return None


def _docstring_end(node: Definition) -> int:
    """Index of the first body statement after the docstring."""
    first = node.body[0] if node.body else None
    is_doc = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
    return 1 if is_doc else 0


def stub_form(node: ast.AST) -> StubForm | None:
    """How function `node` is a stub, or None when it has a body (or is a stub by design)."""
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    if {_decorator_name(d) for d in node.decorator_list} & _INTENTIONAL_STUB_DECORATORS:
        return None
    forms = [_stub_statement(stmt) for stmt in node.body[_docstring_end(node) :]]
    if None in forms:
        return None
    return next((f for f in forms if f != "string"), "empty")  # type: ignore[return-value]


def stub_body(node: Definition) -> tuple[ast.stmt | None, ast.stmt | None]:
    """(docstring statement or None, last statement) of a stub, for splicing a body in.

    The body to replace runs from after the docstring (or the `def` line's colon) to the end of
    the last statement; `last` is None for a docstring-only stub.
    """
    start = _docstring_end(node)
    docstring = node.body[0] if start else None
    rest = node.body[start:]
    return docstring, (rest[-1] if rest else None)


# -- symbols of a document -----------------------------------------------------------------------


def symbols(text: str) -> list[Symbol]:
    """All functions and classes, outermost first (see the module docstring for the rules)."""
    tree = parse(text)
    if tree is None:
        return _scan(text)
    found: list[Symbol] = []
    for name, node, importable in definitions(tree):
        start, end = definition_lines(node)
        found.append(
            Symbol(
                name=name,
                kind="class" if isinstance(node, ast.ClassDef) else "function",
                start=start - 1,
                end=end - 1,
                stub=stub_form(node),
                has_docstring=ast.get_docstring(node) is not None,
                importable=importable,
            )
        )
    return found


def _scan(text: str) -> list[Symbol]:
    """Indentation-based fallback for text that does not parse."""
    lines = text.splitlines()
    found: list[Symbol] = []
    stack: list[tuple[int, str, str]] = []  # indent, name, kind
    for number, line in enumerate(lines):
        match = _DEF.match(line)
        if not match:
            continue
        indent = len(match["indent"].expandtabs())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name = ".".join([*(n for _, n, _ in stack), match["name"]])
        end = number
        for later in range(number + 1, len(lines)):
            stripped = lines[later].strip()
            if stripped and len(lines[later]) - len(lines[later].lstrip()) <= indent:
                break
            if stripped:
                end = later
        kind: Literal["function", "class"] = "class" if match["kind"] == "class" else "function"
        importable = all(k == "class" for _, _, k in stack)
        found.append(Symbol(name=name, kind=kind, start=number, end=end, importable=importable))
        stack.append((indent, match["name"], match["kind"]))
    return found


def symbol_at(text: str, line: int) -> Symbol | None:
    """The innermost function or class containing 0-based `line`."""
    best: Symbol | None = None
    for symbol in symbols(text):
        if symbol.start <= line <= symbol.end and (best is None or symbol.start >= best.start):
            best = symbol
    return best


def find_symbol(text: str, name: str) -> Symbol | None:
    """The symbol with qualified name `name` (the last one when it is defined twice)."""
    return next((s for s in reversed(symbols(text)) if s.name == name), None)


def todo_at(text: str, line: int) -> str | None:
    """The text of a `# TODO` comment on 0-based `line`."""
    lines = text.splitlines()
    if 0 <= line < len(lines):
        match = _TODO.search(lines[line])
        if match:
            return match["text"].strip() or "implement this"
    return None


# -- a symbol's source: cutting it out and splicing it back --------------------------------------


def split_lines(source: str) -> list[str]:
    """Lines with their endings, split exactly where Python's tokenizer splits them.

    `str.splitlines` also splits on form feeds and Unicode separators, which would shift
    line numbers against the ones `ast` reports.
    """
    return _LINE_RE.findall(source)


def _locate(source: str, name: str, loose: bool) -> tuple[list[str], int, int] | None:
    tree = parse(source)
    node = find_definition(tree, name, loose=loose) if tree is not None else None
    if node is None:
        return None
    start, end = definition_lines(node)
    return split_lines(source), start, end


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _string_interior_lines(code: str) -> set[int]:
    """1-based lines that begin inside a multi-line string literal (docstrings excepted).

    Re-indenting such a line would change the string's value.
    """
    tree = parse(code)
    if tree is None:
        return set()
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    interior: set[int] = set()
    for node in ast.walk(tree):
        is_string = isinstance(node, ast.JoinedStr) or (
            isinstance(node, ast.Constant) and isinstance(node.value, str | bytes)
        )
        if is_string and id(node) not in docstrings and node.end_lineno:
            interior.update(range(node.lineno + 1, node.end_lineno + 1))
    return interior


def reindent(code: str, indent: str) -> list[str]:
    """`code` as lines (without endings) moved to `indent`, multi-line strings left intact.

    The margin removed is the indentation of the first non-blank line, which for a definition
    is its decorator or `def`/`class` line.
    """
    lines = [line.rstrip("\r\n") for line in split_lines(code)]
    first = next((line for line in lines if line.strip()), "")
    margin = _indent_of(first)
    stripped = [line.removeprefix(margin) for line in lines]
    interior = _string_interior_lines("\n".join(stripped))
    result: list[str] = []
    for number, (original, line) in enumerate(zip(lines, stripped, strict=True), start=1):
        if number in interior:
            result.append(original)
        else:
            result.append(indent + line if line.strip() else "")
    return result


def symbol_source(source: str, name: str, *, loose: bool = False) -> tuple[str, int] | None:
    """Source of function/class `name` (decorators included, dedented) and its first line.

    Dedenting lets a method be analysed or shown to a model on its own; the line number maps
    findings back to the file. None if the symbol is absent or `source` does not parse.
    `loose` as in `find_definition`, for code a model wrote.
    """
    located = _locate(source, name, loose)
    if located is None:
        return None
    lines, start, end = located
    text = "".join(lines[start - 1 : end])
    body = "\n".join(reindent(text, ""))
    return body + "\n", start


def _newline_of(lines: Sequence[str]) -> str:
    for line in lines:
        for ending in ("\r\n", "\r", "\n"):
            if line.endswith(ending):
                return ending
    return "\n"


def replace_symbol(source: str, name: str, new_code: str) -> str:
    """`source` with function/class `name` (decorators included) replaced by `new_code`.

    `new_code` may come at any indentation (models usually answer at column 0); it is moved to
    the original definition's indentation. Raises KeyError if `name` is not found (or `source`
    does not parse, since then nothing can be found).
    """
    located = _locate(source, name, False)
    if located is None:
        raise KeyError(name)
    lines, start, end = located
    newline = _newline_of(lines)
    replacement = [line + newline for line in reindent(new_code, _indent_of(lines[start - 1]))]
    while replacement and not replacement[-1].strip():
        replacement.pop()  # trailing blank lines would pile up on every replacement
    if end == len(lines) and not lines[-1].endswith(("\n", "\r")) and replacement:
        replacement[-1] = replacement[-1].rstrip("\r\n")
    return "".join([*lines[: start - 1], *replacement, *lines[end:]])
