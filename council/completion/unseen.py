"""Single-line completion on code a model never saw, asked and scored as an editor would.

`council bench inline` (through a real LSP session) and `council train eval` (through the
same `Completer` in process) share this: the cases, the scoring and the summary, so
their figures mean the same thing.

A case is one line of a held-out file where a statement starts (from `ast`, so docstring
and continuation lines are not cases). The editor's user has just typed the line's
indentation: the document holds the whole file with that line reduced to its indentation,
the cursor sits after it, and an *automatic* request is made there (what a user gets
without asking). The answer's first line is compared with the line's code after its
indentation, trailing whitespace ignored (exact match), and by `difflib`'s ratio (edit
similarity, as CodeXGLUE's line completion reports it).

Cases are spread evenly over the packages, files shuffled with a seed: the same packages
and seed give the same cases on every machine.
"""

from __future__ import annotations

import ast
import difflib
import random
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELDOUT_PACKAGES = ("anyio", "click", "httpx2", "jinja2", "rich")
"""The default unseen packages: installed with the project (so every machine has them),
pure Python from five domains (async I/O, a CLI framework, an HTTP client, a template
completer, terminal rendering), 0.4-1.2 MB each, about 1.5% of the environment's code. The
default model's corpus is built with `--exclude` for each (the Makefile's default-model
recipe); pip's vendored copy of rich is skipped by the corpus builder as vendored code."""


@dataclass(frozen=True)
class Case:
    package: str
    name: str  # the file's name, for display and for the document's URI
    text: str  # the file with the case's line reduced to its indentation
    line: int  # 0-based
    column: int  # after the indentation (spaces/tabs: code points = UTF-16 units)
    expected: str

    @property
    def offset(self) -> int:
        """The cursor as a code-point offset into `text`."""
        lines = self.text.split("\n")
        return sum(len(line) + 1 for line in lines[: self.line]) + self.column


def statement_lines(source: str) -> list[int]:
    """0-based lines where a statement starts first on its line ([] if it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.split("\n")
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt):
            continue
        number = node.lineno - 1
        if number >= len(lines):
            continue
        line = lines[number]
        indent = len(line) - len(line.lstrip(" \t"))
        if node.col_offset == indent and line.strip():
            found.add(number)
    return sorted(found)


def _cases_in(package: str, path: Path, quota: int, rng: random.Random) -> list[Case]:
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    candidates = statement_lines(source)
    if not candidates:
        return []
    lines = source.split("\n")
    cases = []
    for number in sorted(rng.sample(candidates, min(quota, len(candidates)))):
        line = lines[number]
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        text = "\n".join([*lines[:number], indent, *lines[number + 1 :]])
        cases.append(Case(package, path.name, text, number, len(indent), line.strip()))
    return cases


def build_cases(
    files: Iterable[tuple[str, Path]], count: int, *, seed: int = 0, per_file: int = 4
) -> list[Case]:
    """About `count` cases, an equal share per package, at most `per_file` per file."""
    by_package: dict[str, list[Path]] = defaultdict(list)
    for package, path in files:
        by_package[package].append(path)
    if not by_package or count < 1:
        return []
    rng = random.Random(seed)
    names = sorted(by_package)
    cases: list[Case] = []
    for index, package in enumerate(names):
        share = count // len(names) + (index < count % len(names))
        paths = sorted(by_package[package])
        rng.shuffle(paths)
        taken: list[Case] = []
        for path in paths:
            if len(taken) >= share:
                break
            taken += _cases_in(package, path, min(per_file, share - len(taken)), rng)
        cases += taken
    return cases


def score(answer: str, expected: str) -> tuple[bool, float]:
    """(exact match, edit similarity) of the answer's first line against the expected code."""
    first = answer.split("\n", 1)[0].rstrip()
    return first == expected, difflib.SequenceMatcher(None, first, expected).ratio()


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values * 2 if len(values) == 1 else values)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2), "max_ms": round(max(values), 2)}


def summarize(results: list[tuple[Case, str, float]], *, examples: int = 5) -> dict[str, Any]:
    """Exact match, edit similarity and latency over (case, answer, latency ms) triples."""
    if not results:
        return {"cases": 0}
    exact: list[bool] = []
    similar: list[float] = []
    per_package: dict[str, list[bool]] = defaultdict(list)
    shown = []
    answered = 0
    for case, answer, _ in results:
        hit, ratio = score(answer, case.expected)
        exact.append(hit)
        similar.append(ratio)
        per_package[case.package].append(hit)
        answered += bool(answer.strip())
        if len(shown) < examples:
            got = answer.split("\n", 1)[0]
            shown.append({"expected": case.expected, "got": got, "match": hit})
    return {
        "cases": len(results),
        "exact_match": round(sum(exact) / len(exact), 4),
        "edit_similarity": round(statistics.fmean(similar), 4),
        "answered": round(answered / len(results), 4),
        "per_package": {
            name: {"cases": len(hits), "exact_match": round(sum(hits) / len(hits), 4)}
            for name, hits in sorted(per_package.items())
        },
        "latency": _quantiles([latency for _, _, latency in results]),
        "examples": shown,
    }
