"""Turning what a finished child left (exit status, output, junit, progress log) into a result.

Every failure mode ends here as an `ExecutionResult` with a one-line reason: a timeout names
the test that hung, a kill names its signal or the limit behind it, and pytest's own exit
codes are told apart. All text that leaves is passed through the secret redactor.
"""

from __future__ import annotations

import json
import os
import re
import signal
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from council.sandbox.models import HUNG, CaseResult, ExecutionResult, Outcome, SandboxLimits
from providers.secrets import REDACTOR

_TAIL_CHARS = 4000
_MESSAGE_CHARS = 2000
_MAX_VIOLATIONS = 50
_SECRET_NAME = re.compile(r"(?i)(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$")


@dataclass
class RawRun:
    """What a finished child left: exit status, output and the parent's bookkeeping files.

    `root` is the staged copy of the files on the host (for rebuilding node ids); `council`
    the directory the child wrote junit, progress and violations into.
    """

    root: Path
    council: Path
    limits: SandboxLimits
    exit_code: int | None = None
    timed_out: bool = False
    duration_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    python: str = ""
    containment: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    start_error: str | None = None
    wrapped: bool = False
    """Run under bwrap, which reports a child killed by signal N as exit code 128 + N."""


def read_violations(council: Path) -> list[str]:
    try:
        with open(council / "violations.log", "rb") as handle:
            raw = handle.read(256 * 1024)
    except OSError:
        return []
    seen: dict[str, None] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.strip():
            seen.setdefault(line.strip(), None)
    lines = list(seen)
    if len(lines) > _MAX_VIOLATIONS:
        extra = len(lines) - _MAX_VIOLATIONS
        lines = [*lines[:_MAX_VIOLATIONS], f"... and {extra} more"]
    return lines


def _redactor() -> Callable[[str], str]:
    """The project redactor, plus the values of our own secret-looking variables.

    The child never had those variables, but it can read files; this costs nothing.
    """
    values = sorted(
        (v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8),
        key=len,
        reverse=True,
    )

    def redact(text: str) -> str:
        for value in values:
            text = text.replace(value, "[redacted]")
        return REDACTOR(text)

    return redact


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return ""


def _clip(text: str, limit: int = _MESSAGE_CHARS) -> str:
    """About `limit` characters: mostly the start, but keep the end, where the exception is."""
    if len(text) <= limit:
        return text
    head = limit // 3
    return f"{text[:head]}\n[...]\n{text[-(limit - head - 7) :]}"


def _nodeid(classname: str, name: str, root: Path) -> str:
    """Rebuild pytest's node id from JUnit's dotted classname, using the files on disk.

    A collection error comes as classname '' and name 'pkg.test_mod', hence the name is
    tried as part of the file path too.
    """
    parts = [p for p in classname.split(".") if p]
    if not parts:
        parts, name = name.split("."), ""
    for cut in range(len(parts), 0, -1):
        candidate = "/".join(parts[:cut]) + ".py"
        if (root / candidate).is_file():
            return "::".join([candidate, *parts[cut:], *([name] if name else [])])
    return "::".join([*parts, *([name] if name else [])])


_JUNIT_OUTCOMES: dict[str, Outcome] = {"failure": "failed", "error": "error", "skipped": "skipped"}
_CALL_OUTCOMES: dict[str, Outcome] = {"passed": "passed", "failed": "failed", "skipped": "skipped"}


def _parse_junit(path: Path, root: Path) -> list[CaseResult] | None:
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return None
    cases: list[CaseResult] = []
    for case in tree.iter("testcase"):
        outcome: Outcome = "passed"
        message = ""
        for child in case:
            kind = _JUNIT_OUTCOMES.get(child.tag)
            if kind is None:
                continue
            outcome = kind
            head = child.get("message", "")
            body = (child.text or "").strip()
            message = f"{head}\n{body}" if head and body and head not in body else head or body
            if kind != "skipped":
                break
        name = case.get("name", "")
        cases.append(
            CaseResult(
                nodeid=_nodeid(case.get("classname", ""), name, root),
                name=name,
                outcome=outcome,
                message=_clip(message),
                duration_s=float(case.get("time", "0") or 0),
            )
        )
    return cases


def _parse_progress(path: Path, unfinished: str) -> list[CaseResult] | None:
    """Cases from the boot hook's live progress log: what survives a kill.

    A test that started and never reported is an error with the `unfinished` message.
    """
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    cases: dict[str, CaseResult] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        nodeid = str(record.get("nodeid", ""))
        name = nodeid.rsplit("::", 1)[-1]
        if record.get("event") == "start":
            cases[nodeid] = CaseResult(
                nodeid=nodeid, name=name, outcome="error", message=unfinished
            )
            continue
        when, outcome = record.get("when"), record.get("outcome")
        result: Outcome | None = None
        if when == "call":
            result = _CALL_OUTCOMES.get(str(outcome))
            if record.get("xfail"):
                result = "skipped" if outcome == "skipped" else "passed"
        elif outcome == "failed":
            result = "error"
        elif outcome == "skipped":
            result = "skipped"
        elif when == "setup" and nodeid in cases:
            continue
        if result is None:
            continue
        previous = cases.get(nodeid)
        if previous is not None and previous.outcome in ("failed", "error") and when == "teardown":
            continue
        cases[nodeid] = CaseResult(
            nodeid=nodeid,
            name=name,
            outcome=result,
            message=_clip(str(record.get("message", ""))),
            duration_s=float(record.get("duration", 0.0)),
        )
    return list(cases.values())


_SUMMARY_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")


def _parse_summary(stdout: str) -> dict[str, int] | None:
    """Counts from pytest's last summary line ('1 failed, 2 passed in 0.05s')."""
    for line in reversed(stdout.splitlines()):
        if re.search(r"\bin [\d.]+s\b", line):
            counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
            for number, word in _SUMMARY_COUNT.findall(line):
                key = {"error": "errors", "xfailed": "skipped", "xpassed": "passed"}.get(word, word)
                counts[key] += int(number)
            return counts
    return None


def _failure_reason(raw: RawRun) -> str | None:
    """Why the child produced no usable outcome, or None when it simply ran."""
    if raw.start_error:
        return raw.start_error
    if raw.timed_out:
        return f"timed out after {float(raw.limits.timeout_secs)}s"
    code = raw.exit_code
    if code is None:
        return "the process could not be reaped"
    setup = [line for line in raw.stderr.splitlines() if line.startswith("bwrap: ")]
    if raw.wrapped and setup:
        return f"sandbox setup failed: {setup[-1]}"
    if code == 98 and not raw.stdout:
        return "sandbox setup failed: could not join the run's cgroup"
    if code == 96 and not raw.stdout:
        return f"sandbox setup failed: could not copy the files in: {_last_line(raw.stderr)}"
    signum = -code if code < 0 else code - 128 if raw.wrapped and 128 < code < 160 else 0
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if name == "SIGXCPU":
            return f"killed: CPU limit of {raw.limits.cpu_secs}s exceeded (SIGXCPU)"
        return f"killed by {name}"
    if code == 97 and "council sandbox: bad boot configuration" in raw.stderr:
        return f"sandbox boot failed: {_last_line(raw.stderr)}"
    return None


def interpret_tests(raw: RawRun) -> ExecutionResult:
    redact = _redactor()
    cases = _parse_junit(raw.council / "junit.xml", raw.root)
    if cases is None:
        if raw.timed_out:
            unfinished = f"{HUNG} after {float(raw.limits.timeout_secs)}s"
        else:
            unfinished = f"did not finish: {_failure_reason(raw) or 'pytest exited early'}"
        cases = _parse_progress(raw.council / "progress.jsonl", unfinished)
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    key = {"passed": "passed", "failed": "failed", "error": "errors", "skipped": "skipped"}
    for case in cases or []:
        counts[key[case.outcome]] += 1
    if not cases and raw.stdout:
        counts = _parse_summary(raw.stdout) or counts
    error = _failure_reason(raw)
    code = raw.exit_code
    if error is None and code == 1 and "No module named pytest" in raw.stderr and not cases:
        error = f"the sandbox interpreter has no pytest: {raw.python}"
    elif error is None and code not in (0, 1):
        if code == 5:
            error = "no tests collected"
        elif code == 4:
            error = f"pytest usage error: {_last_line(raw.stderr, raw.stdout)}"
        elif code == 3:
            error = f"pytest crashed: internal error: {_last_line(raw.stderr, raw.stdout)}"
        elif not any(counts.values()):
            error = f"pytest crashed (exit code {code}): {_last_line(raw.stderr, raw.stdout)}"
    elif error is None and not any(counts.values()) and code == 1:
        error = f"no test results (exit code 1): {_last_line(raw.stderr, raw.stdout)}"
    cases = [case.model_copy(update={"message": redact(case.message)}) for case in (cases or [])]
    return ExecutionResult(
        exit_code=code,
        timed_out=raw.timed_out,
        duration_s=round(raw.duration_s, 3),
        passed=counts["passed"],
        failed=counts["failed"],
        errors=counts["errors"],
        skipped=counts["skipped"],
        cases=cases,
        stdout_tail=redact(raw.stdout)[-_TAIL_CHARS:],
        stderr_tail=redact(raw.stderr)[-_TAIL_CHARS:],
        containment=raw.containment,
        violations=[redact(v) for v in raw.violations],
        error=redact(error) if error else None,
    )


def interpret_script(raw: RawRun) -> ExecutionResult:
    redact = _redactor()
    error = _failure_reason(raw)
    success = error is None and raw.exit_code == 0
    return ExecutionResult(
        exit_code=raw.exit_code,
        timed_out=raw.timed_out,
        duration_s=round(raw.duration_s, 3),
        passed=1 if success else 0,
        failed=0 if success else 1,
        stdout_tail=redact(raw.stdout)[-_TAIL_CHARS:],
        stderr_tail=redact(raw.stderr)[-_TAIL_CHARS:],
        containment=raw.containment,
        violations=[redact(v) for v in raw.violations],
        error=redact(error) if error else None,
    )
