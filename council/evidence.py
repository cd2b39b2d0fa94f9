"""Cross-execution: every candidate of a run against every test suite and the docstring's
examples, in the sandbox, and the reports built from it.

Why every suite against every candidate (CodeT's dual agreement): one suite run against one
candidate cannot tell a wrong test from wrong code. Run across candidates, a test that fails
code the user's own examples and the debugger accept stands out (a dispute, see
:mod:`council.pool`), and candidates that behave alike on many tests corroborate each other.

It is cheap: a candidate runs only the suites it has not met yet, all of them in one sandbox
run (about 0.2 s), and candidates run two at a time (two cores are the norm here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import anyio

from council.examples import Example, examples_test_module
from council.pool import EXAMPLES_PATH, Pool
from council.sandbox import ExecutionResult, SandboxLimits, SandboxPathError, run_tests
from council.schemas import Candidate, CodeBundle, SuiteRecord, TestReport

log = logging.getLogger(__name__)

#: sandbox runs at once
CONCURRENCY = 2


class CrossExecutor:
    """Runs what each candidate of ``pool`` has not met yet; remembers every run."""

    def __init__(
        self,
        pool: Pool,
        *,
        module: str,
        symbol: str | None,
        examples: Sequence[Example],
        workspace: Path | None,
        copy_list: Callable[[CodeBundle], list[str]],
        limits: SandboxLimits,
        python: str | None,
    ) -> None:
        self.pool = pool
        self.examples_module = (
            examples_test_module(module, symbol, examples) if symbol and examples else None
        )
        pool.examples = len(examples) if self.examples_module else 0
        self.workspace = workspace
        self.copy_list = copy_list
        self.limits = limits
        self.python = python
        #: candidate id -> [(suite ids run, execution)], in order
        self.runs: dict[str, list[tuple[list[str], ExecutionResult]]] = {}

    def _needs_examples(self, candidate: Candidate) -> bool:
        ev = candidate.evidence
        return self.examples_module is not None and not ev.examples and ev.examples_error is None

    async def run(self) -> int:
        """Run every candidate's pending suites (and examples); returns the sandbox runs."""
        jobs = [(c, self.pool.pending(c), self._needs_examples(c)) for c in self.pool.candidates]
        jobs = [(c, suites, ex) for c, suites, ex in jobs if suites or ex]
        limiter = anyio.CapacityLimiter(CONCURRENCY)

        async def one(candidate: Candidate, suites: list[SuiteRecord], examples: bool) -> None:
            async with limiter:
                execution = await self._execute(candidate, suites, examples)
            self.pool.record_execution(candidate, execution, suites, examples=examples)
            self.runs.setdefault(candidate.id, []).append(([s.id for s in suites], execution))

        async with anyio.create_task_group() as group:
            for job in jobs:
                group.start_soon(one, *job)
        return len(jobs)

    async def _execute(
        self, candidate: Candidate, suites: list[SuiteRecord], examples: bool
    ) -> ExecutionResult:
        files = {f.path: f.content for f in candidate.code.files}
        paths = []
        for suite in suites:
            files[suite.path] = suite.suite.content
            paths.append(suite.path)
        if examples and self.examples_module is not None:
            files[EXAMPLES_PATH] = self.examples_module
            paths.append(EXAMPLES_PATH)
        files["conftest.py"] = path_conftest(candidate.code)
        try:
            return await run_tests(
                files,
                workspace=self.workspace,
                copy=self.copy_list(candidate.code),
                test_paths=paths,
                limits=self.limits,
                python=self.python,
            )
        except SandboxPathError as exc:  # a path the sandbox refuses: evidence against it
            return ExecutionResult(
                exit_code=None, timed_out=False, duration_s=0.0, error=f"refused: {exc}"
            )

    def report(self, candidate: Candidate, suite: SuiteRecord | None) -> TestReport:
        """``candidate``'s run of ``suite`` (the pass's newest; None: its latest run of
        anything, e.g. the docstring examples when no tester wrote a suite)."""
        runs = self.runs.get(candidate.id, [])
        for ids, execution in reversed(runs):
            if suite is None or suite.id in ids:
                verdict = "pass" if execution.ok else ("error" if execution.error else "fail")
                shown = suite or next((s for s in self.pool.suites if s.id in ids), None)
                return TestReport(
                    verdict=verdict,
                    suite=shown.suite if shown else None,
                    execution=execution,
                    note="" if ids else "the docstring's examples",
                )
        if suite is None:
            return TestReport(verdict="skipped", note="no tests or docstring examples to run")
        return TestReport(verdict="error", suite=suite.suite, note="not run against this code")


def path_conftest(code: CodeBundle) -> str:
    """Make every written file importable by module name, wherever its folder is."""
    folders = sorted({str(PurePosixPath(f.path).parent) for f in code.files} - {"."})
    lines = ["import sys", "from pathlib import Path", "_root = Path(__file__).parent"]
    lines += [f"sys.path.insert(0, str(_root / {folder!r}))" for folder in folders]
    lines.append("sys.path.insert(0, str(_root))")
    return "\n".join(lines) + "\n"
