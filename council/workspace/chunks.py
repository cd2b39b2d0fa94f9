"""Cutting a Python file into chunks, and the identifier tokens BM25 scores them by.

A chunk is what a model is shown and what a query is matched against, so it should be one
thing a programmer would name: a top-level function, a class (or, when the class is long,
its header and each of its methods), or a run of the module's own statements (imports,
constants, `if __name__ == "__main__":`). Definitions come from `council.symbols`' parser
rules (decorators belong to their definition); text that does not parse, or is too big to
parse without holding the interpreter for long, is cut at column-0 `def`/`class`/`@`
lines instead. A chunk longer than `MAX_LINES` is split, so no chunk dominates a prompt.

Tokens are identifiers, lower-cased, plus their snake_case and camelCase parts: a query
naming `parse_duration` then matches that definition strongly (the whole name is rare) and
`parse_date` or `DurationError` a little (a shared part). Keywords and `self`/`cls` are
left out. A chunk's own name is counted `NAME_BOOST` more times, so the definition of a
name outranks the places that merely use it.
"""

from __future__ import annotations

import ast
import functools
import keyword
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from council.symbols import definition_lines, parse, split_lines

MAX_LINES = 60  # longer chunks are split into parts of this many lines
PARSE_LIMIT = 200_000  # characters; bigger files are cut by the regex (ast.parse holds the GIL)
NAME_BOOST = 2

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_TOP = re.compile(r"^(?:@|(?:async[ \t]+)?def[ \t]|class[ \t])")
_DEF_NAME = re.compile(r"^(?:async[ \t]+)?(def|class)[ \t]+([A-Za-z_]\w*)")
_STOP = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | {"self", "cls"}


@functools.lru_cache(maxsize=16_384)  # the common identifiers; a miss costs ~2 µs
def identifier_tokens(identifier: str) -> tuple[str, ...]:
    """`parseISODuration` -> ('parseisoduration', 'parse', 'iso', 'duration')."""
    if identifier in _STOP or len(identifier) < 2:
        return ()
    whole = identifier.lower()
    parts = [p.lower() for piece in identifier.split("_") for p in _PARTS.findall(piece)]
    if len(parts) <= 1:
        return (whole,)
    return (whole, *[p for p in parts if len(p) > 1 and p != whole])


def tokens(text: str) -> list[str]:
    """Every identifier token of `text`, in order, repeats included."""
    out: list[str] = []
    for match in _IDENT.finditer(text):
        out.extend(identifier_tokens(match.group(0)))
    return out


@dataclass(frozen=True, slots=True)
class Piece:
    """A chunk of one file before it is indexed: lines `start`..`end` (0-based, inclusive)."""

    name: str  # qualified (`Stack.push`), or "<module>" for the module's own statements
    kind: str  # "function", "class" or "module"
    start: int
    end: int
    text: str

    def counts(self) -> Counter[str]:
        """Term frequencies, the chunk's own name boosted."""
        found = Counter(tokens(self.text))
        if self.kind != "module":
            for token in identifier_tokens(self.name.rsplit(".", 1)[-1]):
                found[token] += NAME_BOOST
        return found


Stamp = tuple[int, int] | None  # (size, mtime_ns) of a file on disk; None: an open buffer


@dataclass
class Prepared:
    """A file chunked and tokenized, ready to swap in (done without holding the lock)."""

    path: str
    pieces: list[Piece]
    counts: list[dict[str, int]]
    stamp: Stamp
    text: str | None
    absolute: Path | None
    digests: list[int] = field(default_factory=list)


def prepare(path: str, text: str, *, stamp: Stamp = None, absolute: Path | None = None) -> Prepared:
    """Chunk and tokenize `text` (the expensive part of an update; no lock needed)."""
    found = pieces(text)
    return Prepared(
        path,
        found,
        [dict(p.counts()) for p in found],
        stamp,
        text if stamp is None else None,
        absolute,
        [hash((p.name, p.text)) for p in found],
    )


def pieces(text: str) -> list[Piece]:
    """The chunks of a file (see the module docstring)."""
    lines = split_lines(text)
    tree = parse(text) if len(text) <= PARSE_LIMIT else None
    spans = _ast_spans(tree, len(lines)) if tree is not None else _regex_spans(lines)
    out: list[Piece] = []
    for name, kind, start, end in spans:
        while end >= start and not lines[end].strip():
            end -= 1  # trailing blank lines belong to no one
        if end < start:
            continue
        for part, first in enumerate(range(start, end + 1, MAX_LINES)):
            last = min(end, first + MAX_LINES - 1)
            label = name if part == 0 else f"{name} (part {part + 1})"
            out.append(Piece(label, kind, first, last, "".join(lines[first : last + 1])))
    return out


Span = tuple[str, str, int, int]


def _ast_spans(tree: ast.Module, total: int) -> list[Span]:
    spans: list[Span] = []
    module: list[int] = []  # [start, end] of the statements gathered so far

    def flush() -> None:
        if module:
            spans.append(("<module>", "module", module[0], module[1]))
            module.clear()

    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            flush()
            start, end = (n - 1 for n in definition_lines(node))
            if isinstance(node, ast.ClassDef) and end - start + 1 > MAX_LINES:
                spans += _class_spans(node, start, end)
            else:
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                spans.append((node.name, kind, start, end))
            continue
        start, end = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        if module:
            module[1] = end
        else:
            module[:] = [start, end]
    flush()
    return [(n, k, s, min(e, total - 1)) for n, k, s, e in spans]


def _class_spans(node: ast.ClassDef, start: int, end: int) -> list[Span]:
    """A long class: its header (up to the first method) and each method on its own."""
    methods = [n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if not methods:
        return [(node.name, "class", start, end)]
    spans: list[Span] = []
    first = definition_lines(methods[0])[0] - 2
    if first >= start:
        spans.append((node.name, "class", start, first))
    for i, method in enumerate(methods):
        m_start, m_end = (n - 1 for n in definition_lines(method))
        if i + 1 == len(methods):
            m_end = max(m_end, end)  # class-level code after the last method stays with it
        spans.append((f"{node.name}.{method.name}", "function", m_start, m_end))
    return spans


def _regex_spans(lines: list[str]) -> list[Span]:
    """Text that does not parse: a chunk starts at each column-0 `def`, `class` or `@`."""
    spans: list[Span] = []
    name, kind, start = "<module>", "module", 0
    pending = False  # inside a decorator run: the definition's name is still to come
    for number, line in enumerate(lines):
        if not _TOP.match(line):
            continue
        match = _DEF_NAME.match(line)
        if pending and match:
            name, kind, pending = match.group(2), _kind(match.group(1)), False
            continue
        if number > start:
            spans.append((name, kind, start, number - 1))
        start = number
        if match:
            name, kind = match.group(2), _kind(match.group(1))
        else:
            name, kind, pending = "<decorated>", "function", True
    if lines:
        spans.append((name, kind, start, len(lines) - 1))
    return spans


def _kind(word: str) -> str:
    return "class" if word == "class" else "function"


def is_test_path(path: str) -> bool:
    """`tests/...`, `test_x.py`, `x_test.py`, `conftest.py`: files whose code exercises code."""
    parts = path.split("/")
    name = parts[-1]
    return (
        name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
        or any(p in ("tests", "test") for p in parts[:-1])
    )
