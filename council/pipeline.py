"""The council pipeline: Decompose -> Research -> Generate -> Review -> Synthesise -> refine.

One `Council` serves many runs; each `run()` is independent (its own usage ledger, transcript
and session id) so the language server can run several at once.

The review stage runs the debugger (a model, plus static analysis) and the tester (a model
that writes a pytest module, which the sandbox then really executes) concurrently in one
anyio task group. The orchestrator's verdict is checked against that evidence: the pipeline
never reports APPROVED while executed tests fail, whatever score the model gave, and the
failing tests' names and errors are always passed on to the generator with the
orchestrator's own feedback. After `max_refinement_passes` refinements the best code so far
is returned with status `best_effort` and a summary that says what is still failing.

Mode flows:
- generate: the generator writes the file(s); debugger and tester review.
- debug: the debugger diagnoses the given code (and failing test/traceback) and writes a
  fixed version, which is then reviewed like generated code; refinements go to the generator.
- tests: the tester writes tests for the existing code, which run against it unchanged.
- freeform: the plan decides; a request that needs code runs the generate flow (into the
  given file or `solution.py`), anything else gets a direct answer.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel

from council import prompts
from council.events import Event, Events
from council.sandbox import SandboxLimits, SandboxPathError, run_tests, safe_relative_path
from council.schemas import (
    CodeBundle,
    CodeFile,
    CouncilRequest,
    CouncilResult,
    DebugReport,
    FreeformAnswer,
    Plan,
    RoleUsage,
    StaticFinding,
    Synthesis,
    TechManifest,
    TestReport,
    TestSuite,
    TranscriptEntry,
)
from council.static import analyse
from council.structured import ask
from providers.budget import RunContext
from providers.errors import AllTiersFailed, PolicyError, ProviderError
from providers.router import Router

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

STAGE_PERCENT = {"decompose": 5, "research": 15, "generate": 35, "review": 60, "synthesise": 85}


class LocalModeNeeded(Exception):
    """No chat model could be reached: the caller may switch to local council mode."""


@dataclass
class _Run:
    """Mutable state of one run."""

    request: CouncilRequest
    session_id: str
    ledger: RunContext
    events: Events
    started: float
    transcript: list[TranscriptEntry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pass_no: int = 0

    def emit(self, kind: str, **fields: Any) -> None:
        self.events.emit(
            Event(
                kind=kind,  # type: ignore[arg-type]
                session_id=self.session_id,
                pass_no=self.pass_no,
                tokens_so_far=self.ledger.spent_tokens,
                cost_so_far=round(self.ledger.spent_usd, 6),
                **fields,
            )
        )


class Council:
    def __init__(
        self,
        router: Router,
        *,
        workspace: Path | None = None,
        limits: SandboxLimits | None = None,
        python: str | None = None,
    ) -> None:
        self.router = router
        self.settings = router.settings
        self.workspace = workspace
        sandbox = self.settings.sandbox
        self.limits = limits or SandboxLimits(**sandbox.model_dump(exclude={"python"}))
        self.python = python or sandbox.python

    # -- entry point ------------------------------------------------------------------------

    async def run(
        self,
        request: CouncilRequest,
        *,
        events: Events | None = None,
        session_id: str | None = None,
    ) -> CouncilResult:
        """Run the whole pipeline. Provider failures end in a result, never an exception;
        cancellation propagates (the caller cancelled), after `run_finished` is emitted."""
        state = _Run(
            request=request,
            session_id=session_id or uuid.uuid4().hex[:12],
            ledger=self.router.new_run(),
            events=events or Events(),
            started=time.monotonic(),
        )
        engine = self.settings.council.engine
        if engine == "local":
            return await self._local(state, "council.engine = 'local'")
        state.emit("run_started", detail=f"{request.mode}: {request.query[:80]}")
        outcome = "cancelled"
        try:
            try:
                result = await self._run(state)
            except LocalModeNeeded as exc:
                if engine != "auto":
                    raise
                outcome = "local"
                state.emit(
                    "stage_finished",
                    stage="decompose",
                    ok=False,
                    detail="no chat model reachable; switching to local council mode",
                )
                return await self._local(state, str(exc).splitlines()[0])
            outcome = result.status
            return result
        finally:
            if outcome != "local":
                state.emit("run_finished", detail=outcome, ok=outcome == "approved", percent=100)

    async def _local(self, state: _Run, reason: str) -> CouncilResult:
        from council.local import run_local  # local mode builds on this module

        return await run_local(
            self.router,
            state.request,
            workspace=self.workspace,
            limits=self.limits,
            python=self.python,
            events=state.events,
            reason=reason,
            session_id=state.session_id,
        )

    async def _run(self, state: _Run) -> CouncilResult:
        request = state.request
        result = CouncilResult(session_id=state.session_id, status="failed", mode=request.mode)
        try:
            result.plan = await self._stage(
                state,
                "decompose",
                "orchestrator",
                Plan,
                prompts.ORCHESTRATOR_DECOMPOSE,
                prompts.describe_request(request),
            )
            if request.mode == "freeform" and not _needs_code(result.plan):
                answer = await self._stage(
                    state,
                    "generate",
                    "researcher",
                    FreeformAnswer,
                    prompts.FREEFORM,
                    prompts.describe_request(request),
                )
                result.answer, result.code = answer.answer, answer.code
                result.status = "approved"
                result.summary = "Answered directly (no code to generate)."
                return self._finish(state, result)
            if request.mode in ("generate", "freeform"):
                result.tech_manifest = await self._stage(
                    state,
                    "research",
                    "researcher",
                    TechManifest,
                    prompts.RESEARCHER,
                    prompts.research_prompt(request, result.plan, []),
                )
            await self._refine_loop(state, result)
        except AllTiersFailed as exc:
            if (
                _nothing_reachable(exc)
                and not state.ledger.calls
                and self.settings.council.engine == "auto"
            ):
                raise LocalModeNeeded(str(exc)) from exc
            state.errors.append(str(exc))
            tried = "; ".join(exc.attempts[-3:])
            result.summary = (
                f"Stopped: {exc.message} ({tried}). Check that the provider is running and "
                "configured, or add an escalation tier for that role under [roles]."
            )
        except PolicyError as exc:
            state.errors.append(str(exc))
            result.summary = f"Stopped: {exc}"
        except ProviderError as exc:
            state.errors.append(str(exc))
            result.summary = f"Stopped by a provider error: {exc}"
        if result.status == "failed" and result.code is not None:
            result.status = "best_effort"
        return self._finish(state, result)

    # -- the refine loop ----------------------------------------------------------------------

    async def _refine_loop(self, state: _Run, result: CouncilResult) -> None:
        request = state.request
        plan = result.plan or Plan(goal=request.query, tasks=[])
        max_passes = self.settings.council.max_refinement_passes
        feedback: dict[str, list[str]] = {}
        target = _target_path(request)
        for pass_no in range(1, max_passes + 2):
            state.pass_no = pass_no
            state.emit("pass_started", detail=f"pass {pass_no} of at most {max_passes + 1}")
            if feedback.get("researcher") and result.tech_manifest is not None:
                result.tech_manifest = await self._stage(
                    state,
                    "research",
                    "researcher",
                    TechManifest,
                    prompts.RESEARCHER,
                    prompts.research_prompt(request, plan, feedback["researcher"]),
                )
            code = await self._produce_code(state, result, plan, target, feedback)
            result.code = code
            result.refinement_passes = pass_no - 1
            debug, static, tests = await self._review(state, plan, code, feedback)
            result.debug_report, result.static_findings, result.test_report = debug, static, tests
            passes_left = max_passes - pass_no + 1
            synthesis = await self._stage(
                state,
                "synthesise",
                "orchestrator",
                Synthesis,
                prompts.ORCHESTRATOR_SYNTHESISE,
                prompts.synthesis_prompt(request, plan, code, debug, tests, pass_no, passes_left),
            )
            synthesis = self._check_verdict(synthesis, tests)
            result.synthesis = synthesis
            if synthesis.decision == "APPROVE":
                result.status = "approved"
                result.summary = _summary("Approved", pass_no, synthesis, tests)
                return
            if passes_left <= 0:
                result.status = "best_effort"
                result.summary = _summary(
                    f"Best effort after {max_passes} refinement passes", pass_no, synthesis, tests
                )
                return
            feedback = _route_feedback(synthesis, tests, request.mode)

    async def _produce_code(
        self,
        state: _Run,
        result: CouncilResult,
        plan: Plan,
        target: str,
        feedback: dict[str, list[str]],
    ) -> CodeBundle:
        request = state.request
        ctx = request.context
        if request.mode == "tests":
            if not ctx.file_text:
                raise PolicyError("tests mode needs the code under test (context.file_text)")
            return CodeBundle(
                files=[CodeFile(path=target, content=ctx.file_text)],
                explanation="The existing code, unchanged; the council writes tests for it.",
            )
        if request.mode == "debug" and state.pass_no == 1:
            if not ctx.file_text:
                raise PolicyError("debug mode needs the code to debug (context.file_text)")
            diagnosis = await self._stage(
                state,
                "generate",
                "debugger",
                DebugReport,
                prompts.DEBUGGER_FIX,
                prompts.describe_request(request),
            )
            result.diagnosis = diagnosis
            fixed = diagnosis.fixed_code or ctx.file_text
            return CodeBundle(
                files=[CodeFile(path=target, content=fixed)],
                explanation=diagnosis.analysis or "Fixed version from the debugger.",
                assumptions=[],
            )
        bundle = await self._stage(
            state,
            "generate",
            "generator",
            CodeBundle,
            prompts.GENERATOR,
            prompts.generate_prompt(
                request,
                plan,
                result.tech_manifest,
                result.code,
                feedback.get("generator", []),
                target,
            ),
        )
        return _confine_bundle(bundle, target, state)

    async def _review(
        self, state: _Run, plan: Plan, code: CodeBundle, feedback: dict[str, list[str]]
    ) -> tuple[DebugReport | None, list[StaticFinding], TestReport]:
        """Debugger and tester concurrently; each failure is contained in its own report."""
        request = state.request
        debug: DebugReport | None = None
        tests = TestReport(verdict="error", note="the tester did not run")
        static = [
            StaticFinding(
                path=f.path, **finding.model_dump(include={"line", "severity", "code", "message"})
            )
            for f in code.files
            if f.path.endswith(".py")
            for finding in analyse(f.content, filename=f.path)
        ]

        async def debugger() -> None:
            nonlocal debug
            try:
                debug = await self._stage(
                    state,
                    "review",
                    "debugger",
                    DebugReport,
                    prompts.DEBUGGER,
                    prompts.debug_prompt(request, plan, code, feedback.get("debugger", [])),
                )
            except PolicyError:
                raise
            except ProviderError as exc:
                state.errors.append(f"debugger: {exc}")

        async def tester() -> None:
            nonlocal tests
            tests = await self._test(state, plan, code, feedback.get("tester", []))

        async with anyio.create_task_group() as group:
            group.start_soon(debugger)
            group.start_soon(tester)
        return debug, static, tests

    async def _test(
        self, state: _Run, plan: Plan, code: CodeBundle, feedback: list[str]
    ) -> TestReport:
        module = PurePosixPath(code.files[0].path).stem if code.files else "solution"
        try:
            suite = await self._stage(
                state,
                "review",
                "tester",
                TestSuite,
                prompts.TESTER,
                prompts.test_prompt(state.request, plan, code, module, feedback),
            )
        except PolicyError:
            raise
        except ProviderError as exc:
            state.errors.append(f"tester: {exc}")
            return TestReport(verdict="error", note=f"the tester failed: {exc}")
        try:
            suite_path = str(safe_relative_path(suite.path))
        except SandboxPathError:
            suite_path = f"tests/test_{module}.py"
        if not PurePosixPath(suite_path).name.startswith("test_"):
            suite_path = f"tests/test_{module}.py"
        suite = suite.model_copy(update={"path": suite_path})
        files = {f.path: f.content for f in code.files}
        files[suite_path] = suite.content
        files["conftest.py"] = _path_conftest(code)
        state.emit("stage_started", stage="review", role="sandbox", detail=f"running {suite_path}")
        execution = await run_tests(
            files,
            workspace=self.workspace,
            copy=self._copy_list(code),
            test_paths=[suite_path],
            limits=self.limits,
            python=self.python,
        )
        verdict = "pass" if execution.ok else ("error" if execution.error else "fail")
        state.emit(
            "stage_finished",
            stage="review",
            role="sandbox",
            ok=execution.ok,
            detail=execution.summary(),
        )
        return TestReport(verdict=verdict, suite=suite, execution=execution)

    def _copy_list(self, code: CodeBundle) -> list[str]:
        """Workspace files the tests may need: Python siblings of the files being written."""
        if self.workspace is None:
            return []
        written = {f.path for f in code.files}
        wanted: list[str] = []
        for f in code.files:
            folder = self.workspace / PurePosixPath(f.path).parent
            if folder.is_dir():
                for sibling in sorted(folder.glob("*.py"))[:50]:
                    rel = sibling.relative_to(self.workspace).as_posix()
                    if rel not in written and rel not in wanted and not sibling.is_symlink():
                        wanted.append(rel)
        return wanted

    def _check_verdict(self, synthesis: Synthesis, tests: TestReport) -> Synthesis:
        """Evidence beats opinion: failing tests or a low score cannot be approved."""
        threshold = self.settings.council.consensus_threshold
        if synthesis.decision != "APPROVE":
            return synthesis
        reasons: list[str] = []
        if tests.verdict != "pass":
            reasons.append(f"the executed tests did not pass ({_test_line(tests)})")
        if synthesis.score < threshold:
            reasons.append(f"score {synthesis.score:.2f} is below consensus_threshold {threshold}")
        if not reasons:
            return synthesis
        note = "Approval withheld: " + "; ".join(reasons) + "."
        return synthesis.model_copy(
            update={"decision": "REFINE", "summary": f"{synthesis.summary} {note}".strip()}
        )

    # -- one structured call, with events and transcript ---------------------------------------

    async def _stage(
        self,
        state: _Run,
        stage: str,
        role: str,
        model: type[M],
        system: str,
        prompt: str,
    ) -> M:
        state.emit("stage_started", stage=stage, role=role, percent=_percent(state, stage))
        started = time.monotonic()
        entry = TranscriptEntry(stage=stage, role=role, pass_no=state.pass_no, prompt=prompt)
        try:
            value, routed = await ask(
                self.router,
                role,
                model,
                system=system,
                prompt=prompt,
                run=state.ledger,
                path=state.request.context.file_path,
                language=state.request.language,
            )
        except ProviderError as exc:
            entry.error, entry.seconds = str(exc), time.monotonic() - started
            state.transcript.append(entry)
            state.emit(
                "stage_finished",
                stage=stage,
                role=role,
                ok=False,
                detail=str(exc)[:200],
                percent=_percent(state, stage),
            )
            raise
        entry.provider, entry.model = routed.result.provider, routed.result.model
        entry.response, entry.seconds = routed.result.text, time.monotonic() - started
        state.transcript.append(entry)
        state.emit(
            "stage_finished",
            stage=stage,
            role=role,
            provider=routed.result.provider,
            model=routed.result.model,
            percent=_percent(state, stage),
            detail=f"{entry.seconds:.2f}s",
        )
        return value

    def _finish(self, state: _Run, result: CouncilResult) -> CouncilResult:
        result.total_duration_secs = round(time.monotonic() - state.started, 3)
        result.usage = usage_by_role(state.ledger)
        result.cost_usd = round(state.ledger.spent_usd, 6)
        result.transcript = state.transcript
        result.errors = state.errors
        result.prompt_version = prompts.PROMPT_VERSION
        return result


# -- helpers -----------------------------------------------------------------------------------


def usage_by_role(ledger: RunContext) -> list[RoleUsage]:
    rows: dict[tuple[str, str, str], RoleUsage] = {}
    for r in ledger.records:
        if r.outcome != "ok":
            continue
        row = rows.setdefault(
            (r.role, r.provider, r.model),
            RoleUsage(role=r.role, provider=r.provider, model=r.model),
        )
        row.calls += 1
        row.prompt_tokens += r.prompt_tokens
        row.completion_tokens += r.completion_tokens
        row.cost_usd = round(row.cost_usd + r.cost_usd, 6)
        row.latency_s = round(row.latency_s + r.latency_s, 4)
    return list(rows.values())


def _percent(state: _Run, stage: str) -> int:
    base = STAGE_PERCENT.get(stage, 50)
    if state.pass_no <= 1:
        return base
    return min(95, 35 + (base - 35) // 2 + 10 * (state.pass_no - 1)) if base >= 35 else base


def _needs_code(plan: Plan) -> bool:
    return any(task.agent in ("generator", "tester") for task in plan.tasks)


def _nothing_reachable(exc: AllTiersFailed) -> bool:
    markers = ("cannot connect", "cooling down", "is not configured", "timed out")
    return bool(exc.attempts) and all(any(m in a for m in markers) for a in exc.attempts)


def _target_path(request: CouncilRequest) -> str:
    path = request.context.file_path
    if path:
        try:
            return str(safe_relative_path(Path(path).name if Path(path).is_absolute() else path))
        except SandboxPathError:
            return Path(path).name
    return "solution.py"


def _confine_bundle(bundle: CodeBundle, target: str, state: _Run) -> CodeBundle:
    """Keep only files with safe workspace-relative paths; never an empty bundle."""
    kept: list[CodeFile] = []
    for f in bundle.files:
        try:
            kept.append(f.model_copy(update={"path": str(safe_relative_path(f.path))}))
        except SandboxPathError as exc:
            state.errors.append(f"generator wrote an unsafe path, ignored: {exc}")
    if not kept:
        state.errors.append("the generator returned no usable file")
        kept = [CodeFile(path=target, content="")]
    # The requested file first: the tester imports it as the module under test.
    kept.sort(key=lambda f: f.path != target)
    return bundle.model_copy(update={"files": kept})


def _path_conftest(code: CodeBundle) -> str:
    """Make every written file importable by module name, wherever its folder is."""
    folders = sorted({str(PurePosixPath(f.path).parent) for f in code.files} - {"."})
    lines = ["import sys", "from pathlib import Path", "_root = Path(__file__).parent"]
    lines += [f"sys.path.insert(0, str(_root / {folder!r}))" for folder in folders]
    lines.append("sys.path.insert(0, str(_root))")
    return "\n".join(lines) + "\n"


def _test_line(tests: TestReport) -> str:
    if tests.execution is not None:
        return tests.execution.summary()
    return tests.note or tests.verdict


def _failing_evidence(tests: TestReport) -> list[str]:
    if tests.execution is None:
        return [f"The tests could not run: {tests.note}"] if tests.note else []
    ex = tests.execution
    out = [
        f"Failing test {c.name}: {c.message.strip()[:500]}"
        for c in ex.cases
        if c.outcome in ("failed", "error")
    ][:6]
    if not out and not ex.ok:
        out.append(f"Test run: {ex.summary()}")
    return out


def _route_feedback(synthesis: Synthesis, tests: TestReport, mode: str) -> dict[str, list[str]]:
    """Each agent gets only what is addressed to it; code fixers also get the test evidence."""
    out: dict[str, list[str]] = {}
    for item in synthesis.feedback:
        out.setdefault(item.agent, []).append(item.message)
    fixer = "tester" if mode == "tests" else "generator"
    evidence = [e for e in _failing_evidence(tests) if e not in out.get(fixer, [])]
    if evidence:
        out.setdefault(fixer, []).extend(evidence)
    if not out:
        out[fixer] = [synthesis.summary]
    return out


def _summary(head: str, pass_no: int, synthesis: Synthesis, tests: TestReport) -> str:
    passes = "1 pass" if pass_no == 1 else f"{pass_no} passes"
    return f"{head} ({passes}; tests: {_test_line(tests)}; score {synthesis.score:.2f}). " + (
        synthesis.summary
    )
