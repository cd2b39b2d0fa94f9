"""Why a completion came out as it did: outcomes in words, and *Explain Last Completion*.

Users of ghost-text tools mostly ask one question: "nothing happens, why?". The completer's
`reason` codes (`ok`, `skipped`, `empty`, ...) answer it for programs; `outcome` turns one
into the short phrase an editor's status bar shows ("skipped mid-word", "empty after
post-processing"). An `Explanation` is the whole story of one request: the prompt window as
sent (snippet lines marked), each candidate's raw model answer and what every
post-processing rule did to it, the timings and the outcome. `render` writes it as Markdown,
on the server, so every editor shows the same text (VS Code as a Markdown preview, Neovim in
a scratch buffer) from one implementation.

Memory stays bounded: prompts and answers are cut to `MAX_TEXT` characters (the end of the
prefix and the start of the suffix, the parts next to the cursor, are kept).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from council.completion.postprocess import Step

MAX_TEXT = 20_000

# reason -> (outcome for the status bar, what it means)
_OUTCOMES: dict[str, tuple[str, str]] = {
    "ok": ("suggestion", "the model answered and the suggestion was shown"),
    "cached": ("suggestion (cached)", "the same context was answered before: no model call"),
    "typed-through": (
        "suggestion (typed through)",
        "you typed the start of the last suggestion; the rest of it is shown, no model call",
    ),
    "disabled": ("disabled", "completions are off (`completion.enabled = false`)"),
    "manual": (
        "manual trigger",
        '`completion.trigger = "manual"`: only invoked requests (the invoke key) are answered',
    ),
    "loading": ("backend loading", "the model is still loading; asked again once it is ready"),
    "unavailable": ("backend error", "the backend cannot answer"),
    "error": ("backend error", "the model call failed"),
    "skipped": ("skipped", "automatic requests are not answered here"),
    "empty": (
        "empty after post-processing",
        "the model answered, but nothing was left once post-processing cut its answer",
    ),
    "superseded": ("cancelled", "a newer request for the same document replaced it"),
    "cancelled": ("cancelled", "the editor cancelled the request ($/cancelRequest)"),
    "timeout": ("timeout", "no answer within `completion.timeout_secs`"),
    "not-python": ("not a Python document", "completions are for Python documents only"),
}
SHOWN = frozenset({"ok", "cached", "typed-through"})


def outcome(reason: str, why: str | None = None) -> str:
    """The short phrase for `reason`: "skipped mid-word", "empty after post-processing"."""
    short = _OUTCOMES.get(reason, (reason, ""))[0]
    if reason == "skipped" and why:
        return f"skipped {why}" if why == "mid-word" else f"skipped: {why}"
    return short


def meaning(reason: str) -> str:
    """What `reason` means, as a sentence."""
    text = _OUTCOMES.get(reason, ("", reason))[1]
    return text[:1].upper() + text[1:]


def clip_end(text: str, limit: int = MAX_TEXT) -> str:
    """The last `limit` characters (a prefix: what is next to the cursor matters)."""
    return text if len(text) <= limit else text[-limit:]


def clip_start(text: str, limit: int = MAX_TEXT) -> str:
    """The first `limit` characters (a suffix or an answer)."""
    return text if len(text) <= limit else text[:limit]


@dataclass
class Candidate:
    """One model call: its sampling, raw answer, each post-processing step and the result."""

    temperature: float
    raw: str = ""
    finish_reason: str | None = None
    model_ms: float = 0.0
    steps: list[Step] = field(default_factory=list)
    text: str = ""
    note: str | None = None  # e.g. "a duplicate of candidate 1", or an error

    def clip(self) -> None:
        self.raw = clip_start(self.raw)
        self.steps = [(n, clip_start(b), clip_start(a)) for n, b, a in self.steps]


@dataclass
class Explanation:
    """The last request of a document, for *Explain Last Completion*."""

    trigger: str  # "automatic" or "invoked"
    reason: str = "cancelled"
    why: str | None = None  # the detail of `reason` (skipped: "mid-word")
    error: str | None = None
    backend: str = ""
    via: str | None = None  # how the provider was asked: fim, fim-raw:qwen, specialist, ...
    mode: str | None = None  # single or multi
    line: int | None = None  # 0-based, of the cursor
    column: int | None = None
    prefix: str = ""  # the prompt window as sent: snippets, then the prefix window
    snippets: str = ""  # the start of `prefix` that is snippets, not the document
    suffix: str = ""
    candidates: list[Candidate] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)  # what the editor got, in order
    timings: dict[str, float] = field(default_factory=dict)  # window, model, total (ms)
    at: float = field(default_factory=time.time)
    uri: str | None = None
    document: str | None = None  # how to name it: the path relative to the workspace

    @property
    def outcome(self) -> str:
        return outcome(self.reason, self.why)

    def set_window(self, prefix: str, snippets: str, suffix: str) -> None:
        self.prefix = clip_end(prefix)
        # the snippets start the prefix; a clipped prefix has lost them
        self.snippets = snippets if len(prefix) <= MAX_TEXT else ""
        self.suffix = clip_start(suffix)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready, with camelCase keys like the rest of the protocol."""
        return {
            "uri": self.uri,
            "document": self.document,
            "trigger": self.trigger,
            "reason": self.reason,
            "outcome": self.outcome,
            "error": self.error,
            "backend": self.backend,
            "via": self.via,
            "mode": self.mode,
            "line": self.line,
            "column": self.column,
            "prefix": self.prefix,
            "snippetChars": len(self.snippets),
            "suffix": self.suffix,
            "candidates": [
                {
                    "temperature": c.temperature,
                    "raw": c.raw,
                    "finishReason": c.finish_reason,
                    "modelMs": round(c.model_ms, 3),
                    "steps": [{"step": n, "before": b, "after": a} for n, b, a in c.steps],
                    "text": c.text,
                    "note": c.note,
                }
                for c in self.candidates
            ],
            "suggestions": self.suggestions,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "at": self.at,
        }


def _fence(text: str, lang: str = "text") -> str:
    """A fenced block that `text` cannot close (a longer fence than any backtick run in it)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    bar = "`" * max(3, longest + 1)
    return f"{bar}{lang}\n{text}\n{bar}"


def _quote(text: str) -> str:
    """Inline code for a short one-line text; `repr` shows whitespace and newlines."""
    return f"`{text!r}`".replace("``", "` `")


def _window(ex: Explanation) -> str:
    """The prompt window: snippet lines marked `»`, document lines `│`, the cursor `█`."""
    lines = [f"» {line}" for line in ex.snippets.splitlines()]
    body = ex.prefix[len(ex.snippets) :] + "█" + ex.suffix
    for line in body.split("\n"):
        lines.append(f"│ {line}")
    return _fence("\n".join(lines))


def _steps(c: Candidate) -> list[str]:
    out = []
    for number, (name, before, after) in enumerate(c.steps, 1):
        if before == after:
            out.append(f"{number}. **{name}**: unchanged")
        elif "\n" in before or "\n" in after or len(before) > 60:
            out.append(f"{number}. **{name}**:")
            out += ["", "   before:", "", _indent(_fence(before)), "", "   after:", ""]
            out.append(_indent(_fence(after)))
        else:
            out.append(f"{number}. **{name}**: {_quote(before)} → {_quote(after)}")
    return out


def _indent(block: str) -> str:
    return "\n".join(f"   {line}" if line else "" for line in block.split("\n"))


def render(ex: Explanation | None) -> str:
    """The Markdown the editors show."""
    if ex is None:
        return (
            "# Council: last inline completion\n\nNo inline completion request has been "
            "answered for this document yet. Type in a Python file (or invoke a suggestion), "
            "then run this again.\n"
        )
    shown = ex.reason in SHOWN
    head = ex.outcome if shown else f"no suggestion — {ex.outcome}"
    where = ""
    if ex.line is not None and ex.column is not None:
        where = f" at line {ex.line + 1}, column {ex.column + 1}"
    lines = [
        "# Council: last inline completion",
        "",
        f"**Outcome:** {head}. {meaning(ex.reason)}"
        + (f" ({ex.why})" if ex.why and ex.reason != "skipped" else "")
        + ".",
    ]
    if ex.error:
        lines.append(f"\n**Error:** {ex.error}")
    lines += [
        "",
        f"- **Request:** {ex.trigger}{where}"
        + (f" in `{ex.document or ex.uri}`" if ex.document or ex.uri else ""),
        f"- **Backend:** `{ex.backend}`" + (f" (asked as {ex.via})" if ex.via else ""),
    ]
    if ex.mode:
        lines.append(f"- **Mode:** {ex.mode}-line")
    if ex.timings:
        parts = [f"{name} {ms:.1f} ms" for name, ms in ex.timings.items()]
        lines.append(f"- **Timing:** {', '.join(parts)}")
    if ex.suggestions:
        lines.append(f"- **Suggestions:** {len(ex.suggestions)}")
    if ex.prefix or ex.suffix:
        marked = len(ex.snippets.splitlines())
        lines += [
            "",
            "## Prompt window",
            "",
            f"As sent to the model: {len(ex.prefix)} characters before the cursor (█), "
            f"{len(ex.suffix)} after; {marked} snippet line(s) marked », "
            "document lines │.",
            "",
            _window(ex),
        ]
    for number, c in enumerate(ex.candidates, 1):
        title = "Model answer" if len(ex.candidates) == 1 else f"Candidate {number}"
        sampling = "greedy" if c.temperature <= 0 else f"temperature {c.temperature:g}"
        lines += [
            "",
            f"## {title} ({sampling}, {c.model_ms:.1f} ms, finish: {c.finish_reason or '—'})",
        ]
        if c.note:
            lines += ["", f"*{c.note}*"]
        lines += ["", "Raw:", "", _fence(c.raw)]
        if c.steps:
            lines += ["", "### Post-processing", "", *_steps(c)]
        lines += ["", "Result: " + (_quote(c.text) if c.text else "*(empty: not shown)*")]
    if not ex.candidates and not shown:
        lines += ["", "No model call was made for this request."]
    elif not ex.candidates:
        lines += ["", "Answered from the cache: no model call was made for this request."]
    return "\n".join(lines) + "\n"
