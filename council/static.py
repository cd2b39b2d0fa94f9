"""Static analysis of generated code: cheap evidence that needs no model and runs no code.

In local council mode (no chat model reachable) this module *is* the debugger: candidates
sampled from a completion model are ranked partly by what it finds. In the full council it sits
next to the model's debug report as evidence the model cannot hallucinate.

Locating, classifying and splicing symbols lives in `council.symbols`.

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

from council.symbols import stub_form

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


def _callee_name(call: ast.Call) -> str:
    target = call.func
    if isinstance(target, ast.Attribute):
        return target.attr
    return target.id if isinstance(target, ast.Name) else ""


def _stubs(tree: ast.AST) -> Iterator[Finding]:
    """Functions with no real body: a model that 'answers' with a stub did not do the work.

    Overloads and abstract methods are stubs by design and are not reported.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and stub_form(node):
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
    return isinstance(default, ast.Call) and _callee_name(default) in _MUTABLE_FACTORIES


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
