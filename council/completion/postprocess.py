"""Turn a raw model answer into a suggestion an editor can show (pure functions).

Small models ramble: they run past the end of the block, repeat what already follows the
cursor, close brackets the user's code already closes, or stop mid-expression at the token
limit. Each rule below fixes one of those, in the order `finish` applies them:

1. cut at any FIM/end sentinel the model echoed;
2. single-line mode keeps the first line; multi-line mode stops at a blank line, at the first
   line dedented below the block the cursor is in, and after `max_lines` lines;
3. the tail that repeats the start of the suffix is dropped (closing brackets and quotes
   already after the cursor, or the next line of the file);
4. brackets are balanced against the code around the cursor: the completion is cut at a
   closer that the suffix already provides, or that has nothing to close; a completion cut
   short by the token limit is trimmed back to its last balanced point;
5. trailing whitespace goes; an empty or whitespace-only result means "no suggestion".

`choose_mode` and `skip_automatic` (`skip_reason` says why) decide, before any model call,
whether and how much to complete. `finish_steps` is `finish` with each rule's effect recorded
(name, before, after), which *Explain Last Completion* shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from providers.fim_formats import cut_at_sentinel

Mode = Literal["single", "multi"]

OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}
# What may sit right of the cursor for an automatic request to still make sense.
_RIGHT_OK = set(")]}\"'`:;,") | {" ", "\t"}
_SCAN_LIMIT = 2000
_INTERESTING = re.compile(r"[()\[\]{}#'\"]")
# The end of a string: its closing quote (not escaped), or, for one-line strings, the newline.
_STRING_END = {
    "'": re.compile(r"(?:\\.|[^'\\\n])*(?:'|\n)"),
    '"': re.compile(r'(?:\\.|[^"\\\n])*(?:"|\n)'),
    "'''": re.compile(r"(?:\\.|[^\\])*?'''", re.S),
    '"""': re.compile(r'(?:\\.|[^\\])*?"""', re.S),
}


@dataclass(frozen=True)
class Cursor:
    """The text around the cursor that the rules look at."""

    line_prefix: str  # from the start of the cursor's line to the cursor
    line_suffix: str  # from the cursor to the end of its line
    prev_line: str  # the nearest non-blank line above the cursor's line ("" at the top)
    prefix: str  # everything before the cursor (the rules look at its tail only)
    suffix: str  # everything after the cursor (the rules look at its head only)

    @classmethod
    def at(cls, prefix: str, suffix: str) -> Cursor:
        start = prefix.rfind("\n") + 1
        end = suffix.find("\n")
        line_suffix = suffix if end == -1 else suffix[:end]
        prev = ""
        pos = start - 1
        while pos > 0:
            above = prefix.rfind("\n", 0, pos) + 1
            candidate = prefix[above:pos]
            if candidate.strip():
                prev = candidate
                break
            pos = above - 1
        return cls(prefix[start:], line_suffix, prev, prefix[-_SCAN_LIMIT:], suffix[:_SCAN_LIMIT])


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def skip_reason(cursor: Cursor) -> str | None:
    """Why an automatic request here gets no suggestion ("mid-word", or "code after the
    cursor"), or None when it is worth answering. The editor's status shows the reason."""
    right = cursor.line_suffix
    if not right.strip() or set(right) <= _RIGHT_OK:
        return None
    left = cursor.line_prefix[-1:]
    if _is_ident(right[0]) and left and _is_ident(left):
        return "mid-word"
    return "code after the cursor"


def skip_automatic(cursor: Cursor) -> bool:
    """An automatic request mid-word, or with code right of the cursor, gets no suggestion."""
    return skip_reason(cursor) is not None


def choose_mode(cursor: Cursor, *, invoked: bool) -> Mode:
    """Multi-line where a block starts (after a header); single-line elsewhere.

    An explicit (invoked) request may run over several lines wherever the cursor ends its
    line; an automatic one only where a block obviously starts: at the end of a header or
    on the empty line under it. Inside a block an automatic request offers the next line:
    that is what the user is typing, and one line decodes in a fraction of the time of a
    block (automatic requests come at every pause in typing).
    """
    if cursor.line_suffix.strip():
        return "single"
    stripped = cursor.line_prefix.strip()
    if not stripped:
        if invoked or cursor.prev_line.rstrip().endswith(":"):
            return "multi"
        return "single"
    if stripped.endswith(":") or invoked:
        return "multi"
    return "single"


def block_floor(cursor: Cursor) -> int:
    """Lines after the first must be indented at least this much to stay in the block."""
    here = indent_of(cursor.line_prefix) if cursor.line_prefix.strip() else len(cursor.line_prefix)
    if cursor.line_prefix.rstrip().endswith(":"):
        return here + 1  # the body of the header the cursor ends
    return here


def limit_lines(text: str, cursor: Cursor, mode: Mode, max_lines: int) -> str:
    """Single-line: the first line. Multi-line: up to a blank line or a dedent, capped."""
    if mode == "single":
        return text.split("\n", 1)[0]
    floor = block_floor(cursor)
    kept: list[str] = []
    code = 0  # non-blank lines kept
    for number, line in enumerate(text.split("\n")):
        blank = not line.strip()
        if number:
            if blank:
                if code:
                    break
                kept.append(line)  # leading newlines after a header are part of the answer
                continue
            if indent_of(line) < floor:
                break
        kept.append(line)
        code += not blank
        if code >= max_lines:
            break
    return "\n".join(kept)


def settled(text: str, cursor: Cursor, mode: Mode, max_lines: int) -> bool:
    """Whether `limit_lines` has already cut `text` for good: more tokens cannot change it.

    The decoder stops here instead of running to its token cap (the rest would be thrown
    away). A cut is final when it stands whatever comes next: the text is probed with a
    newline, a dedented character and an indented one appended, and each must keep the
    same, shorter answer.
    """
    if mode == "single":
        return "\n" in text
    kept = limit_lines(text, cursor, mode, max_lines)
    if len(kept) >= len(text.rstrip(" \t")):
        return False
    deeper = " " * (block_floor(cursor) + 4) + "x"
    return all(
        limit_lines(text + probe, cursor, mode, max_lines) == kept for probe in ("\n", "x", deeper)
    )


def last_complete_line(text: str) -> str:
    """What a decode stopped by the latency budget may show: its complete lines only."""
    cut = text.rfind("\n")
    return text[:cut] if cut >= 0 else ""


def _is_ident(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def trim_suffix_overlap(text: str, cursor: Cursor) -> str:
    """Drop the tail of `text` that the code after the cursor already has.

    On the cursor's line: the longest tail equal to the start of the rest of the line (not
    splitting an identifier). Below it: from the first completion line that repeats the next
    non-blank line of the file.
    """
    rest = cursor.line_suffix
    if not rest.strip():
        following = [ln.strip() for ln in cursor.suffix.split("\n")[1:6] if ln.strip()]
        if following:
            lines = text.split("\n")
            for number, line in enumerate(lines):
                if number and line.strip() == following[0]:
                    return "\n".join(lines[:number])
        return text
    head = rest.lstrip(" \t") if not text.endswith((" ", "\t")) else rest
    for k in range(min(len(text), len(head)), 0, -1):
        if text.endswith(head[:k]):
            cut = len(text) - k
            if cut > 0 and _is_ident(text[cut - 1]) and _is_ident(text[cut]):
                continue
            return text[:cut]
    return text


@dataclass
class _Scan:
    """String and comment state of Python source, scanned left to right, so that brackets
    inside strings and comments are not counted."""

    quote: str | None = None  # the delimiter of the open string, if any

    def brackets(self, text: str) -> list[tuple[int, str]]:
        """Advance over `text`; returns (index, bracket) for brackets outside strings.

        A regex jumps between the characters that matter, so the scan costs little more
        than one C-level search over the text.
        """
        found: list[tuple[int, str]] = []
        i, n = 0, len(text)
        while i < n:
            if self.quote is not None:
                end = _string_end(text, i, self.quote)
                if end is None:
                    return found  # the text ends inside the string
                self.quote = None
                i = end
                continue
            match = _INTERESTING.search(text, i)
            if match is None:
                return found
            i = match.start()
            ch = text[i]
            if ch == "#":
                newline = text.find("\n", i)
                i = n if newline == -1 else newline
            elif ch in "'\"":
                triple = text[i : i + 3]
                self.quote = triple if triple in ("'''", '"""') else ch
                i += len(self.quote)
            else:
                found.append((i, ch))
                i += 1
        return found


def _string_end(text: str, i: int, quote: str) -> int | None:
    """Where the string open at `i` ends (after its closing quote); None if not in `text`.
    A one-line string ends at the end of its line even when unterminated."""
    pattern = _STRING_END[quote]
    match = pattern.match(text, i)
    if match is None:
        return None
    return match.end()


def open_brackets(prefix: str) -> tuple[list[str], _Scan]:
    """The brackets still open at the end of `prefix` (outermost first), and the string
    state there (the cursor may be inside a string)."""
    scan = _Scan()
    stack: list[str] = []
    for _, ch in scan.brackets(prefix[-_SCAN_LIMIT:]):
        if ch in OPENERS:
            stack.append(ch)
        elif stack and OPENERS[stack[-1]] == ch:
            stack.pop()
        else:
            stack.clear()  # unbalanced text before the window: start afresh
    return stack, scan


def closers_in_suffix(suffix: str, wanted: int, quote: str | None = None) -> int:
    """How many of the prefix's open brackets the code after the cursor closes (`quote`:
    the string the cursor is in, if any)."""
    if wanted == 0:
        return 0
    depth = closed = 0
    for _, ch in _Scan(quote).brackets(suffix[:_SCAN_LIMIT]):
        if ch in OPENERS:
            depth += 1
        elif depth:
            depth -= 1
        else:
            closed += 1
            if closed == wanted:
                break
    return closed


def balance(text: str, cursor: Cursor, *, truncated: bool) -> str:
    """Cut at a closer the suffix already provides (or that closes nothing); trim a
    completion cut short by the token limit back to its last balanced point.

    The prefix leaves `outer` brackets open and the suffix closes `reserved` of them, so the
    completion may close at most `outer - reserved`, innermost first.
    """
    outer, scan = open_brackets(cursor.prefix)
    free = len(outer) - closers_in_suffix(cursor.suffix, len(outer), scan.quote)
    own: list[str] = []
    group_start = 0  # where the outermost bracket the completion opened starts
    for index, ch in scan.brackets(text):
        if ch in OPENERS:
            if not own:
                group_start = index
            own.append(ch)
            continue
        if own:
            if OPENERS[own[-1]] != ch:
                return text[:index]
            own.pop()
        elif free > 0 and OPENERS[outer[-1]] == ch:
            outer.pop()
            free -= 1
        else:
            return text[:index]
    if truncated and own:
        return text[:group_start]
    return text


Step = tuple[str, str, str]  # (name, text before, text after): one rule's effect


def finish_steps(
    raw: str,
    cursor: Cursor,
    *,
    mode: Mode,
    max_lines: int,
    truncated: bool = False,
) -> tuple[str, list[Step]]:
    """`finish`, with each rule's effect recorded, for *Explain Last Completion* (the one
    implementation: `finish` is this without the record)."""
    steps: list[Step] = []

    def step(name: str, before: str, after: str) -> str:
        steps.append((name, before, after))
        return after

    text = step("cut at an echoed FIM sentinel", raw, cut_at_sentinel(raw).replace("\r\n", "\n"))
    lines = "the first line" if mode == "single" else f"the block, at most {max_lines} lines"
    text = step(f"limit lines ({lines})", text, limit_lines(text, cursor, mode, max_lines))
    text = step("trim the overlap with the suffix", text, trim_suffix_overlap(text, cursor))
    text = step("balance brackets", text, balance(text, cursor, truncated=truncated))
    text = step("strip trailing whitespace", text, text.rstrip())
    return (text if text.strip() else ""), steps


def finish(
    raw: str,
    cursor: Cursor,
    *,
    mode: Mode,
    max_lines: int,
    truncated: bool = False,
) -> str:
    """The suggestion for `raw`, or "" when there is nothing worth showing."""
    return finish_steps(raw, cursor, mode=mode, max_lines=max_lines, truncated=truncated)[0]
