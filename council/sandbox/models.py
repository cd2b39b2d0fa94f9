"""What a sandbox run may use and what it reports back.

What a run may use is `providers.settings.SandboxLimits`, the `[sandbox]` settings table
itself (one definition; see its docstring for why it lives in `providers`), re-exported here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from providers.settings import SandboxLimits

__all__ = ["DEFAULT_LIMITS", "HUNG", "CaseResult", "ExecutionResult", "Outcome", "SandboxLimits"]

DEFAULT_LIMITS = SandboxLimits()


Outcome = Literal["passed", "failed", "error", "skipped"]


class CaseResult(BaseModel):
    nodeid: str
    name: str
    outcome: Outcome
    message: str = ""
    duration_s: float = 0.0


class ExecutionResult(BaseModel):
    """What happened when generated code ran; the synthesiser reads `summary()` and `cases`."""

    exit_code: int | None
    timed_out: bool
    cancelled: bool = Field(
        False, description="Never set by run_tests (cancellation propagates); for callers' records."
    )
    duration_s: float
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    cases: list[CaseResult] = Field(default_factory=list)
    stdout_tail: str = ""
    stderr_tail: str = ""
    containment: list[str] = Field(default_factory=list)
    violations: list[str] = Field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Passing means something actually ran and passed, not merely that nothing failed."""
        return (
            self.exit_code == 0
            and self.failed == 0
            and self.errors == 0
            and not self.timed_out
            and self.passed > 0
        )

    def summary(self) -> str:
        """One line for prompts and logs, e.g. '3 passed, 1 failed in 0.42s'."""
        counts = _counts_text(self.passed, self.failed, self.errors, self.skipped)
        if self.timed_out:
            hung = [c.nodeid for c in self.cases if c.message.startswith(HUNG)]
            where = f"; hung in {hung[0]}" if hung else ""
            text = f"{self.error or 'timed out'} ({self.passed} passed before the kill{where})"
        elif self.error and not counts:
            text = f"{self.error} ({self.duration_s:.2f}s)"
        elif self.error:
            text = f"{counts} in {self.duration_s:.2f}s ({self.error})"
        else:
            text = f"{counts or 'no tests ran'} in {self.duration_s:.2f}s"
        if self.violations:
            n = len(self.violations)
            text += f"; {n} sandbox violation{'s' if n != 1 else ''}"
        return text


HUNG = "still running when the run timed out"


def _counts_text(passed: int, failed: int, errors: int, skipped: int) -> str:
    parts = [f"{passed} passed"] if passed else []
    if failed:
        parts.append(f"{failed} failed")
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if skipped:
        parts.append(f"{skipped} skipped")
    return ", ".join(parts)
