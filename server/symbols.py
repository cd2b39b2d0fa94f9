"""Finding what the cursor is on, from the document text alone.

Code actions must answer fast and work on code that is half-typed, so this module uses `ast`
when the file parses and falls back to an indentation scan of `def`/`class` lines when it
does not. Lines and columns are 0-based, as in LSP.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Literal

_DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async\s+)?(?P<kind>def|class)\s+(?P<name>\w+)")
_TODO = re.compile(r"#\s*TODO\b[:\s]*(?P<text>.*)", re.I)


@dataclass(frozen=True)
class Symbol:
    name: str  # dotted for methods: Class.method
    kind: Literal["function", "class"]
    start: int  # first line (decorators included), 0-based
    end: int  # last line, 0-based, inclusive
    is_stub: bool = False
    has_docstring: bool = False


def symbols(text: str) -> list[Symbol]:
    """All functions and classes, outermost first; empty-ish on unparsable text (see scan)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return _scan(text)
    found: list[Symbol] = []

    def visit(nodes: list[ast.stmt], prefix: str) -> None:
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{node.name}"
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
                found.append(
                    Symbol(
                        name=name,
                        kind="class" if isinstance(node, ast.ClassDef) else "function",
                        start=start,
                        end=(node.end_lineno or node.lineno) - 1,
                        is_stub=_is_stub(node),
                        has_docstring=ast.get_docstring(node) is not None,
                    )
                )
                visit(node.body, f"{name}.")

    visit(tree.body, "")
    return found


def _is_stub(node: ast.AST) -> bool:
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    body = list(node.body)
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and (isinstance(body[0].value.value, str))
    ):
        body = body[1:]
    if len(body) != 1:
        return not body
    stmt = body[0]
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return stmt.value.value is Ellipsis
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        target = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(target, ast.Name) and target.id == "NotImplementedError"
    return False


def _scan(text: str) -> list[Symbol]:
    """Indentation-based fallback for text that does not parse."""
    lines = text.splitlines()
    found: list[Symbol] = []
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = _DEF.match(line)
        if not match:
            continue
        indent = len(match["indent"].expandtabs())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        name = ".".join([*(n for _, n in stack), match["name"]])
        end = number
        for later in range(number + 1, len(lines)):
            stripped = lines[later].strip()
            if stripped and len(lines[later]) - len(lines[later].lstrip()) <= indent:
                break
            if stripped:
                end = later
        kind: Literal["function", "class"] = "class" if match["kind"] == "class" else "function"
        found.append(Symbol(name=name, kind=kind, start=number, end=end))
        stack.append((indent, match["name"]))
    return found


def symbol_at(text: str, line: int) -> Symbol | None:
    """The innermost function or class containing `line`."""
    best: Symbol | None = None
    for symbol in symbols(text):
        if symbol.start <= line <= symbol.end and (best is None or symbol.start >= best.start):
            best = symbol
    return best


def find_symbol(text: str, name: str) -> Symbol | None:
    return next((s for s in symbols(text) if s.name == name), None)


def todo_at(text: str, line: int) -> str | None:
    lines = text.splitlines()
    if 0 <= line < len(lines):
        match = _TODO.search(lines[line])
        if match:
            return match["text"].strip() or "implement this"
    return None
