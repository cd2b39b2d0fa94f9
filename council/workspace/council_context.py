"""The workspace code a council request gets: what the researcher and the generator need to
write code that fits the project, within `workspace.council_context_tokens`.

In order, each kind taking what the ones before it left:

1. **Definitions** of the names the target uses that the current file does not define
   (an imported helper, a base class, a constant's module): without them a model guesses
   their signatures. Candidates from a module the file imports come first.
2. **Tests** that exercise the target: test files' chunks that name it, best BM25 match for
   the target's name and module first. They show how the code is called and what it must
   return.
3. **Similar code**: the chunks whose identifiers best match the target's, for the project's
   conventions (error handling, naming, the helpers it already has).

Definitions may take half the budget and tests up to three quarters of it (together with
the definitions); a chunk that does not fit whole is cut at a line, or left out when fewer
than `_MIN_LINES` lines fit.
"""

from __future__ import annotations

import ast
import builtins
import re
from collections.abc import Callable, Iterable
from typing import Any

from council.completion.context import approx_tokens
from council.schemas import WorkspaceSnippet
from council.symbols import parse, symbol_source, symbols
from council.workspace.chunks import is_test_path
from council.workspace.index import Chunk, Index

_BUILTINS = frozenset(dir(builtins))
_IDENT = re.compile(r"[A-Za-z_]\w*")
_CODE_WORD = re.compile(r"`?([A-Za-z_]\w*)(\()?")
_MIN_LINES = 3
_TARGET_CHARS = 20_000  # a whole-file target is read this far for names


def council_snippets(
    index: Index,
    *,
    path: str | None,
    text: str,
    symbol: str | None = None,
    selection: str | None = None,
    budget: int = 1500,
    count: Callable[[str], int] = approx_tokens,
) -> list[WorkspaceSnippet]:
    """Definitions, tests and similar code for the request (see the module docstring)."""
    if budget <= 0:
        return []
    target = _target(text, symbol, selection)
    if not target.strip():
        return []
    own = {s.name.rsplit(".", 1)[-1] for s in symbols(text)}
    chosen: list[WorkspaceSnippet] = []
    taken: set[int] = set()
    used = 0

    def take(chunks: Iterable[Chunk], reason: str, cap: int) -> None:
        nonlocal used
        for chunk in chunks:
            if chunk.id in taken or used >= cap:
                continue
            body = index.text(chunk)
            if not body:
                continue
            fitted = _fit(body, cap - used, count)
            if fitted is None:
                continue
            taken.add(chunk.id)
            used += count(fitted)
            lines = fitted.count("\n") + (not fitted.endswith("\n"))
            chosen.append(
                WorkspaceSnippet(
                    path=chunk.path,
                    start_line=chunk.start + 1,
                    end_line=chunk.start + lines,
                    reason=reason,  # type: ignore[arg-type]
                    name=chunk.name,
                    text=fitted,
                )
            )

    elsewhere: Callable[[Chunk], bool] = lambda c: c.path != path  # noqa: E731
    take(_definitions(index, target, text, own, elsewhere), "definition", budget // 2)
    name = symbol.rsplit(".", 1)[-1] if symbol else None
    module = path.rsplit("/", 1)[-1].removesuffix(".py") if path else None
    probe = name or module
    if probe:
        word = re.compile(rf"\b{re.escape(probe)}\b")

        def is_test(chunk: Chunk) -> bool:
            return elsewhere(chunk) and is_test_path(chunk.path)

        tests = index.search(" ".join(filter(None, [name, module])), 12, keep=is_test)
        mentioning = [h.chunk for h in tests if word.search(index.text(h.chunk) or "")]
        take(mentioning, "test", budget * 3 // 4)

    def similar(chunk: Chunk) -> bool:
        return elsewhere(chunk) and chunk.kind != "module" and chunk.id not in taken

    take((h.chunk for h in index.search(target, 8, keep=similar)), "similar", budget)
    return chosen


def _target(text: str, symbol: str | None, selection: str | None) -> str:
    if symbol:
        found = symbol_source(text, symbol)
        if found is not None:
            return found[0]
    if selection:
        return selection
    return text[:_TARGET_CHARS]


def used_names(code: str) -> list[str]:
    """Names `code` reads (calls, bases, annotations), first use first, then the attributes
    it reads (`geometry.area`, `self.helper`: weaker evidence, a method name is often
    shared), without builtins and the names it binds (parameters, assignments, its own
    definitions)."""
    tree = parse(code)
    if tree is None:
        return [n for n in dict.fromkeys(_IDENT.findall(code)) if n not in _BUILTINS]
    read: dict[str, int] = {}
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                read.setdefault(node.id, node.col_offset + 10_000 * node.lineno)
            else:
                bound.add(node.id)
        elif isinstance(node, ast.Attribute):
            read.setdefault(node.attr, node.col_offset + 10_000 * node.lineno + 10**12)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
    ordered = sorted(read, key=read.__getitem__)
    return [n for n in ordered if n not in bound and n not in _BUILTINS]


def _definitions(
    index: Index, target: str, text: str, own: set[str], keep: Callable[[Chunk], bool]
) -> list[Chunk]:
    """One definition per used name, preferring a module the file imports."""
    imported = _imported_modules(text)
    found: list[Chunk] = []
    for name in dict.fromkeys([*used_names(target), *_prose_names(target)]):
        if name in own:
            continue
        candidates = [c for c in index.definitions(name) if keep(c)]
        if not candidates:
            continue
        candidates.sort(key=lambda c: (_module_of(c.path) not in imported, c.path))
        found.append(candidates[0])
    return found


def _prose_names(code: str) -> list[str]:
    """Code names in the docstrings and comments of `code` (a stub has nothing else):
    `snake_case`, `CamelCase` or `called()` words, not plain English ones."""
    tree = parse(code)
    prose = []
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                prose.append(ast.get_docstring(node) or "")
    prose += re.findall(r"#[^\n]*", code)
    return [
        m.group(1)
        for m in _CODE_WORD.finditer("\n".join(prose))
        if "_" in m.group(1).strip("_") or m.group(2) or m.group(1)[1:] != m.group(1)[1:].lower()
    ]


def _imported_modules(text: str) -> set[str]:
    """Last parts of the modules `text` imports from (`from pkg.geometry import x` ->
    `geometry`, and `pkg`), matched against chunk paths' module names."""
    found: set[str] = set()
    for match in re.finditer(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", text, re.M):
        dotted = match.group(1) or match.group(2) or ""
        found.update(p for p in dotted.split(".") if p)
    return found


def _module_of(path: str) -> str:
    stem = path.rsplit("/", 1)[-1].removesuffix(".py")
    if stem == "__init__" and "/" in path:
        return path.rsplit("/", 2)[-2]
    return stem


def _fit(body: str, budget: int, count: Callable[[str], int]) -> str | None:
    """`body`, or its first lines within `budget` tokens (None: fewer than `_MIN_LINES`)."""
    if count(body) <= budget:
        return body
    kept: list[str] = []
    used = 0
    for line in body.splitlines(keepends=True):
        cost = count(line)
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    return "".join(kept) if len(kept) >= _MIN_LINES else None


def one_shot(
    root: Any, config: Any, *, path: str | None, text: str, symbol: str | None
) -> list[WorkspaceSnippet]:
    """For `council run`: index the workspace once, in this thread (`config` is the
    `[workspace]` settings), and pick the request's snippets from it."""
    from council.workspace.scan import Limits, build_now

    index = build_now(root, Limits.of(config))
    return council_snippets(
        index, path=path, text=text, symbol=symbol, budget=config.council_context_tokens
    )
