"""The prompt context around the cursor: a prefix/suffix window and optional snippets.

The window is cut at line boundaries within a token budget: the prefix gets most of it (it
says what comes next), the suffix the rest. Where the prefix window starts is snapped to a
line number that is a multiple of `SNAP_LINES`, so while the user types the window start
stays put and the specialist can reuse the KV cache of the unchanged part of the prompt.

Snippets are a few lines prepended to the prefix, within their own small budget: the current
file's imports that fell out of the window, and the signatures of functions and classes
defined in other open Python documents whose names the prefix uses (`# geometry.py: def
area(shape):`). Names are read from the prefix *before the cursor's line*, so typing on a
line does not change the snippets (and with them the cached prompt).

With a `related` lookup (the workspace index, `council.workspace.completion`), what is left
of the budget goes to the workspace chunks that best match the window's code above the
cursor's line, as comment lines under their path (`# pkg/geometry.py:` then `# def ...`):
commented, so they cannot change how the code after them parses, and placed first, so the
current file's imports and the signatures stay next to the window.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

Counter = Callable[[str], int]

SNAP_LINES = 8
CHARS_PER_TOKEN = 3  # the estimate when the backend has no tokenizer (code is dense)

_DEF = re.compile(r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+([A-Za-z_]\w*)", re.M)
_IMPORT = re.compile(r"^(?:import[ \t]+\S[^\n]*|from[ \t]+[\w.]+[ \t]+import[ \t]+[^\n]+)$", re.M)
_IDENT = re.compile(r"[A-Za-z_]\w*")
_IMPORTS_SCAN = 20_000  # imports sit at the top; a huge file is not rescanned per keystroke
_DEFS_SCAN = 300_000


def approx_tokens(text: str) -> int:
    """About three characters a token: errs towards a shorter window, never a longer one."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


class LineTokenCounter:
    """Counts tokens line by line, remembering each line's count.

    While the user types only the cursor's line is new, so a keystroke costs one short
    encode instead of several over the whole window. The sum over lines differs from
    encoding the text at once by a few tokens (a newline and the next indentation may merge),
    so callers keep a small margin below the model's limit.
    """

    def __init__(self, count: Counter, capacity: int = 50_000) -> None:
        self._count = count
        self._capacity = capacity
        self._memo: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        memo = self._memo
        total = 0
        for line in text.splitlines(keepends=True):
            n = memo.get(line)
            if n is None:
                if len(memo) >= self._capacity:
                    memo.clear()
                n = memo[line] = self._count(line)
            total += n
        return total


def _line_start_at_or_after(text: str, index: int) -> int:
    if index <= 0:
        return 0
    newline = text.find("\n", index - 1)
    return len(text) if newline == -1 else newline + 1


def fit_prefix(prefix: str, budget: int, count: Counter, *, snap: int = SNAP_LINES) -> str:
    """The longest tail of `prefix` within `budget` tokens that starts at a line start.

    The start is then moved forward to a line number divisible by `snap`, for a stable
    window; only when not even the cursor's line fits is the cut made inside a line.
    """
    if budget <= 0 or not prefix:
        return ""
    cursor_line = prefix.rfind("\n") + 1
    start = _line_start_at_or_after(prefix, len(prefix) - budget * 8)
    start = min(start, cursor_line)
    for _ in range(8):
        tokens = count(prefix[start:])
        if tokens <= budget:
            break
        keep = int((len(prefix) - start) * budget / tokens * 0.9)
        start = _line_start_at_or_after(prefix, len(prefix) - keep)
        if start > cursor_line:  # not even the cursor's line fits: cut inside it
            start = len(prefix) - max(1, keep)
            break
    else:
        start = len(prefix) - budget  # a token is at least one character
    if 0 < start <= cursor_line and snap > 1:
        line = prefix.count("\n", 0, start)
        while line % snap and start < cursor_line:
            start = prefix.index("\n", start) + 1
            line += 1
    return prefix[start:]


def fit_suffix(suffix: str, budget: int, count: Counter) -> str:
    """The longest head of `suffix` within `budget` tokens that ends at a line end."""
    if budget <= 0 or not suffix:
        return ""
    end = min(len(suffix), budget * 8)
    for _ in range(8):
        if end < len(suffix):
            newline = suffix.rfind("\n", 0, end)
            end = newline + 1 if newline > 0 else end
        tokens = count(suffix[:end])
        if tokens <= budget:
            return suffix[:end]
        end = int(end * budget / tokens * 0.9)
        if end <= 0:
            return ""
    return suffix[: min(end, budget)]


@dataclass(frozen=True)
class Definition:
    name: str
    signature: str  # the `def`/`class` line(s) up to the colon, on one line


def definitions(text: str, *, limit: int = 400) -> list[Definition]:
    """Function and class signatures in `text` (regex, so a half-typed file still works);
    only the first `_DEFS_SCAN` characters of a huge file are read."""
    text = text[:_DEFS_SCAN]
    found: list[Definition] = []
    for match in _DEF.finditer(text):
        end = text.find("\n", match.end())
        header = text[match.start() : end if end != -1 else len(text)]
        lines = 1
        while not header.rstrip().endswith(":") and end != -1 and lines < 4:
            nxt = text.find("\n", end + 1)
            header += " " + text[end + 1 : nxt if nxt != -1 else len(text)].strip()
            end, lines = nxt, lines + 1
        found.append(Definition(match.group(1), " ".join(header.split())))
        if len(found) >= limit:
            break
    return found


def imports(text: str) -> list[str]:
    """Top-level import lines."""
    return [m.group(0).rstrip() for m in _IMPORT.finditer(text)]


class SnippetIndex:
    """Definitions per open document, recomputed only when the document changes."""

    def __init__(self) -> None:
        self._docs: dict[str, tuple[object, list[Definition]]] = {}

    def get(self, key: str, version: object, text: str) -> list[Definition]:
        stamp = (version, len(text)) if version is not None else hash(text)
        hit = self._docs.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        defs = definitions(text)
        self._docs[key] = (stamp, defs)
        return defs

    def retain(self, keys: Iterable[str]) -> None:
        """Forget documents that are no longer open."""
        keep = set(keys)
        for key in [k for k in self._docs if k not in keep]:
            del self._docs[key]


@dataclass(frozen=True)
class OtherDocument:
    label: str  # how the snippet names it, e.g. the path relative to the workspace
    definitions: list[Definition]


@dataclass(frozen=True)
class RelatedQuery:
    """What the workspace index is asked for: the window's code above the cursor's line
    (the last `QUERY_LINES`; typing on a line does not change it) and the window's lines in
    the document (0-based, inclusive), whose own chunks it need not repeat."""

    text: str
    first_line: int
    last_line: int


@dataclass(frozen=True)
class RelatedCode:
    label: str  # where it comes from, e.g. the path relative to the workspace
    code: str


Related = Callable[[RelatedQuery], Sequence[RelatedCode]]
QUERY_LINES = 30
_MIN_RELATED_LINES = 2  # a chunk shows at least its first lines, or not at all


def snippets(
    before_window: str,
    window_before_line: str,
    others: Iterable[OtherDocument],
    budget: int,
    count: Counter,
    *,
    related: Related | None = None,
    query: RelatedQuery | None = None,
) -> str:
    """Workspace chunks like the code above the cursor (when `related` is given), imports
    that fell out of the window, then signatures of names the prefix uses."""
    if budget <= 0:
        return ""
    lines: list[str] = []
    used = 0

    def add(line: str, into: list[str] = lines) -> bool:
        nonlocal used
        cost = count(line + "\n")
        if used + cost > budget:
            return False
        into.append(line)
        used += cost
        return True

    for line in imports(before_window[:_IMPORTS_SCAN]):
        if not add(line):
            break
    names: dict[str, int] = {}
    for match in _IDENT.finditer(window_before_line):
        names[match.group(0)] = match.start()
    wanted: list[tuple[int, str, str]] = []
    seen: set[str] = set()
    for doc in others:
        for d in doc.definitions:
            if d.name in names and (doc.label, d.signature) not in seen:
                seen.add((doc.label, d.signature))
                wanted.append((-names[d.name], doc.label, d.signature))
    wanted.sort()  # the most recently used name first
    for _, label, signature in wanted:
        if not add(f"# {label}: {signature}"):
            break
    chunks: list[str] = []
    if related is not None and query is not None:
        for item in related(query):
            block: list[str] = []
            body = item.code.rstrip("\n").split("\n")
            wanted = [f"# {item.label}:", *(f"# {x}".rstrip() for x in body)]
            for line in wanted:
                if not add(line, block):
                    break
            if len(block) == len(wanted) or len(block) > _MIN_RELATED_LINES:
                chunks += block
            if len(block) < len(wanted):  # the budget is spent
                if len(block) <= _MIN_RELATED_LINES:  # too little of it fit: give that back
                    used -= sum(count(line + "\n") for line in block)
                break
    return "".join(line + "\n" for line in [*chunks, *lines])


@dataclass(frozen=True)
class Window:
    """What the model sees: `prefix` (snippets + the prefix window) and `suffix`."""

    prefix: str
    suffix: str
    snippets: str


def build_window(
    prefix: str,
    suffix: str,
    *,
    budget: int,
    count: Counter,
    others: Iterable[OtherDocument] = (),
    snippet_budget: int = 0,
    prefix_share: float = 0.75,
    related: Related | None = None,
) -> Window:
    """Cut the window within `budget` tokens; snippets come out of the prefix's share."""
    suffix_budget = int(budget * (1 - prefix_share))
    prefix_budget = budget - suffix_budget
    head = fit_prefix(prefix, prefix_budget, count)
    tail = fit_suffix(suffix, suffix_budget, count)
    extra = ""
    if snippet_budget > 0:
        cursor_line = head.rfind("\n") + 1
        before = prefix[: len(prefix) - len(head)]
        query = None
        if related is not None:
            first = prefix.count("\n", 0, len(before))
            above = head[:cursor_line].split("\n")[-QUERY_LINES - 1 :]
            last = first + head.count("\n") + tail.count("\n")
            query = RelatedQuery("\n".join(above), first, last)
        extra = snippets(
            before,
            head[:cursor_line],
            others,
            min(snippet_budget, prefix_budget // 2),
            count,
            related=related,
            query=query,
        )
        if extra:
            head = fit_prefix(prefix, prefix_budget - count(extra), count)
    return Window(extra + head, tail, extra)
