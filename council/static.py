"""Static analysis of generated code: cheap evidence that needs no model and runs no code.

In local council mode (no chat model reachable) this module *is* the debugger: candidates
sampled from a completion model are ranked partly by what it finds. In the full council it sits
next to the model's debug report as evidence the model cannot hallucinate.

Besides findings, it locates and replaces a single function or class in a file, so a fix for one
symbol can be spliced back without touching the rest of the user's code.

Columns are 0-based (as in `ast` and LSP); lines are 1-based.
"""

from __future__ import annotations

import ast
import itertools
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from pydantic import BaseModel
from pyflakes import messages as pfm
from pyflakes.checker import Checker

log = logging.getLogger(__name__)

Severity = Literal["error", "warning", "info"]

_PENALTY: dict[str, float] = {"error": 0.5, "warning": 0.1, "info": 0.02}


class Finding(BaseModel):
    """One problem in the analysed text."""

    line: int
    column: int = 0
    severity: Severity
    code: str
    message: str


# -- pyflakes ------------------------------------------------------------------------------

# Keyed by class name, not class, so a pyflakes release that drops or adds a message class
# degrades to the fallback instead of failing at import time.
_PYFLAKES_CODES: dict[str, tuple[str, Severity]] = {
    "UndefinedName": ("undefined-name", "error"),
    "UndefinedLocal": ("undefined-local", "error"),
    "UndefinedExport": ("undefined-export", "error"),
    "DuplicateArgument": ("duplicate-argument", "error"),
    "ReturnOutsideFunction": ("return-outside-function", "error"),
    "YieldOutsideFunction": ("yield-outside-function", "error"),
    "ContinueOutsideLoop": ("continue-outside-loop", "error"),
    "BreakOutsideLoop": ("break-outside-loop", "error"),
    "DefaultExceptNotLast": ("default-except-not-last", "error"),
    "TwoStarredExpressions": ("two-starred-expressions", "error"),
    "TooManyExpressionsInStarredAssignment": ("too-many-starred-targets", "error"),
    "LateFutureImport": ("late-future-import", "error"),
    "FutureFeatureNotDefined": ("undefined-future-feature", "error"),
    "ImportStarNotPermitted": ("import-star-not-permitted", "error"),
    "ForwardAnnotationSyntaxError": ("annotation-syntax", "error"),
    "InvalidPrintSyntax": ("invalid-print-syntax", "error"),
    "RaiseNotImplemented": ("raise-not-implemented", "error"),
    "StringDotFormatMissingArgument": ("format-missing-argument", "error"),
    "StringDotFormatMixingAutomatic": ("format-mixing-automatic", "error"),
    "StringDotFormatInvalidFormat": ("format-invalid", "error"),
    "PercentFormatInvalidFormat": ("format-invalid", "error"),
    "PercentFormatMixedPositionalAndNamed": ("format-mixed", "error"),
    "PercentFormatUnsupportedFormatCharacter": ("format-invalid", "error"),
    "PercentFormatPositionalCountMismatch": ("format-count-mismatch", "error"),
    "PercentFormatMissingArgument": ("format-missing-argument", "error"),
    "PercentFormatExpectedMapping": ("format-expected-mapping", "error"),
    "PercentFormatExpectedSequence": ("format-expected-sequence", "error"),
    "PercentFormatStarRequiresSequence": ("format-expected-sequence", "error"),
    "UnusedImport": ("unused-import", "warning"),
    "UnusedVariable": ("unused-variable", "warning"),
    "UnusedAnnotation": ("unused-variable", "warning"),
    "UnusedIndirectAssignment": ("unused-variable", "warning"),
    "RedefinedWhileUnused": ("redefined", "warning"),
    "ImportShadowedByLoopVar": ("redefined", "warning"),
    "ImportStarUsed": ("import-star", "warning"),
    "ImportStarUsage": ("import-star", "warning"),
    "MultiValueRepeatedKeyLiteral": ("repeated-key", "warning"),
    "MultiValueRepeatedKeyVariable": ("repeated-key", "warning"),
    "IfTuple": ("if-tuple", "warning"),
    "AssertTuple": ("assert-tuple", "warning"),
    "IsLiteral": ("is-literal", "warning"),
    "StringDotFormatExtraPositionalArguments": ("format-extra-argument", "warning"),
    "StringDotFormatExtraNamedArguments": ("format-extra-argument", "warning"),
    "PercentFormatExtraNamedArguments": ("format-extra-argument", "warning"),
    "FStringMissingPlaceholders": ("fstring-without-placeholders", "info"),
    "TStringMissingPlaceholders": ("fstring-without-placeholders", "info"),
}


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _from_pyflakes(message: pfm.Message) -> Finding:
    kind = type(message).__name__
    code, severity = _PYFLAKES_CODES.get(kind, (_kebab(kind), "warning"))
    return Finding(
        line=message.lineno,
        column=message.col,
        severity=severity,
        code=code,
        message=message.message % message.message_args,
    )


def _pyflakes_findings(tree: ast.Module, filename: str, known: set[str]) -> list[Finding]:
    """Run pyflakes on an already parsed tree; `known` names count as defined (builtins)."""
    checker = Checker(tree, filename=filename, builtins=known)
    return [_from_pyflakes(m) for m in checker.messages]


# -- checks pyflakes lacks -------------------------------------------------------------------

_TERMINATORS = (ast.Return, ast.Raise, ast.Continue, ast.Break)
_MUTABLE_LITERALS = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
_MUTABLE_FACTORIES = {"list", "dict", "set", "bytearray", "defaultdict", "OrderedDict", "deque"}
_STUB_EXEMPT_DECORATORS = {"overload", "abstractmethod"}


def _statement_blocks(tree: ast.AST) -> Iterator[list[ast.stmt]]:
    """Every list of statements in the tree (bodies, else/finally branches, handlers, cases)."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block


def _unreachable(tree: ast.AST) -> Iterator[Finding]:
    for block in _statement_blocks(tree):
        for stmt, following in itertools.pairwise(block):
            if isinstance(stmt, _TERMINATORS):
                keyword = type(stmt).__name__.lower()
                yield Finding(
                    line=following.lineno,
                    column=following.col_offset,
                    severity="warning",
                    code="unreachable",
                    message=f"code after '{keyword}' (line {stmt.lineno}) never runs",
                )
                break


def _decorator_name(node: ast.expr) -> str:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute):
        return target.attr
    return target.id if isinstance(target, ast.Name) else ""


def _is_stub_statement(stmt: ast.stmt) -> bool:
    """`pass`, `...`, a bare string (docstring) or `raise NotImplementedError`."""
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return stmt.value.value is Ellipsis or isinstance(stmt.value.value, str)
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def _stubs(tree: ast.AST) -> Iterator[Finding]:
    """Functions with no real body: a model that 'answers' with a stub did not do the work.

    Overloads and abstract methods are stubs by design and are not reported.
    """
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if {_decorator_name(d) for d in node.decorator_list} & _STUB_EXEMPT_DECORATORS:
            continue
        if all(_is_stub_statement(stmt) for stmt in node.body):
            yield Finding(
                line=node.lineno,
                column=node.col_offset,
                severity="info",
                code="stub-body",
                message=f"function {node.name!r} has no implementation",
            )


def _bare_excepts(tree: ast.AST) -> Iterator[Finding]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is None:
            yield Finding(
                line=node.lineno,
                column=node.col_offset,
                severity="warning",
                code="bare-except",
                message="bare 'except:' also catches KeyboardInterrupt and SystemExit",
            )


def _is_mutable(default: ast.expr) -> bool:
    if isinstance(default, _MUTABLE_LITERALS):
        return True
    return isinstance(default, ast.Call) and _decorator_name(default) in _MUTABLE_FACTORIES


def _mutable_defaults(tree: ast.AST) -> Iterator[Finding]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        defaults = [*node.args.defaults, *node.args.kw_defaults]
        for default in defaults:
            if default is not None and _is_mutable(default):
                yield Finding(
                    line=default.lineno,
                    column=default.col_offset,
                    severity="warning",
                    code="mutable-default",
                    message="mutable default argument is shared between calls",
                )


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _none_comparisons(tree: ast.AST) -> Iterator[Finding]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
            if isinstance(op, ast.Eq | ast.NotEq) and (_is_none(left) or _is_none(right)):
                wanted = "is" if isinstance(op, ast.Eq) else "is not"
                yield Finding(
                    line=node.lineno,
                    column=node.col_offset,
                    severity="info",
                    code="none-comparison",
                    message=f"comparison to None should use '{wanted}'",
                )
                break


_AST_CHECKS = (_unreachable, _stubs, _bare_excepts, _mutable_defaults, _none_comparisons)


# -- analyse and score -------------------------------------------------------------------------


def _syntax_finding(error: SyntaxError) -> Finding:
    offset = error.offset or 1
    return Finding(
        line=max(error.lineno or 1, 1),
        column=max(offset - 1, 0),
        severity="error",
        code="syntax",
        message=error.msg or str(error),
    )


def _parse(source: str, filename: str) -> ast.Module | Finding:
    """The tree, or the single finding that explains why there is none."""
    try:
        return ast.parse(source, filename=filename)
    except SyntaxError as error:
        return _syntax_finding(error)
    except (ValueError, RecursionError, MemoryError) as error:
        # Null bytes (older Pythons) or nesting too deep for the parser.
        return Finding(line=1, severity="error", code="syntax", message=str(error) or "unparsable")


def _compile_finding(tree: ast.Module, filename: str) -> Finding | None:
    """Errors only the compiler sees (e.g. `nonlocal` at module level, `await` outside async)."""
    try:
        compile(tree, filename, "exec", dont_inherit=True)
    except SyntaxError as error:
        return _syntax_finding(error)
    except (ValueError, RecursionError, MemoryError) as error:
        log.debug("compile check skipped: %s", error)
    return None


def _sorted_unique(findings: Iterable[Finding]) -> list[Finding]:
    unique = {
        (f.line, f.column, f.severity, f.code, f.message): f
        for f in findings  # keeps the first of identical findings
    }
    return sorted(unique.values(), key=lambda f: (f.line, f.column, f.code, f.message))


def analyse(
    source: str, *, filename: str = "<generated>", known_names: Iterable[str] = ()
) -> list[Finding]:
    """Findings for `source`, sorted by position, without duplicates.

    A syntax error yields exactly one finding: nothing else about unparsable code is reliable.
    `known_names` are names defined elsewhere (the rest of the user's file when only one
    function is analysed), so they are not reported as undefined.
    """
    parsed = _parse(source, filename)
    if isinstance(parsed, Finding):
        return [parsed]
    findings = _pyflakes_findings(parsed, filename, set(known_names))
    for check in _AST_CHECKS:
        findings.extend(check(parsed))
    compiled = _compile_finding(parsed, filename)
    error_lines = {f.line for f in findings if f.severity == "error"}
    if compiled is not None and compiled.line not in error_lines:
        findings.append(compiled)
    log.debug("static analysis of %s: %d findings", filename, len(findings))
    return _sorted_unique(findings)


def score(findings: Sequence[Finding]) -> float:
    """1.0 for clean code, lowered per finding by severity, floored at 0.0.

    Weights make one error outweigh several warnings: a candidate that cannot run should lose
    to one that merely has untidy imports.
    """
    total = 1.0 - sum(_PENALTY[f.severity] for f in findings)
    return max(round(total, 6), 0.0)


# -- locating and replacing symbols ------------------------------------------------------------

_Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
_LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def split_lines(source: str) -> list[str]:
    """Lines with their endings, split exactly where Python's tokenizer splits them.

    `str.splitlines` also splits on form feeds and Unicode separators, which would shift
    line numbers against the ones `ast` reports.
    """
    return _LINE_RE.findall(source)


def find_definition(tree: ast.Module, name: str) -> _Definition | None:
    """The function or class `name` ("func", "Class", "Class.method", "Outer.Inner.m").

    Lookup is by top-level and class-body definitions only; when a name is defined twice the
    last definition wins, as it does at runtime.
    """
    body: list[ast.stmt] = tree.body
    found: _Definition | None = None
    for part in name.split("."):
        matches = [n for n in body if isinstance(n, _Definition) and n.name == part]
        if not matches:
            return None
        found = matches[-1]
        body = found.body if isinstance(found, ast.ClassDef) else []
    return found


def _span(node: _Definition) -> tuple[int, int]:
    """First line (decorators included) and last line of a definition, 1-based, inclusive."""
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return start, node.end_lineno or node.lineno


def _locate(source: str, name: str) -> tuple[list[str], int, int] | None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    node = find_definition(tree, name)
    if node is None:
        return None
    start, end = _span(node)
    return split_lines(source), start, end


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _string_interior_lines(code: str) -> set[int]:
    """1-based lines that begin inside a multi-line string literal (docstrings excepted).

    Re-indenting such a line would change the string's value.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
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


def symbol_source(source: str, name: str) -> tuple[str, int] | None:
    """Source of function/class `name` (decorators included, dedented) and its first line.

    Dedenting lets a method be analysed or shown to a model on its own; the line number maps
    findings back to the file. None if the symbol is absent or `source` does not parse.
    """
    located = _locate(source, name)
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
    located = _locate(source, name)
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
