"""The refine loop: candidates, review, cross-execution, judgement, feedback, per pass.

Each pass:

1. **Generate** ``council.candidates_per_pass`` candidates concurrently (pass 1 of debug
   mode: the debugger's fixed version). After ``council.escalate_after`` failed passes the
   generator's next tier writes them, and the one after that after as many more (seed 002's
   lead -> senior -> principal, applied to quality as well as to errors). A candidate that
   repeats an earlier one adds nothing and is not kept twice.
2. **Review**: the debugger reads each new candidate while the tester writes this pass's
   suite; as soon as the suite exists every candidate of the run runs it in the sandbox,
   together with the docstring's examples for new candidates (:mod:`council.evidence`).
3. **Judge**: the pool (:mod:`council.pool`) picks the best candidate by all the evidence
   and names the disputed tests. The orchestrator sees the best candidate, its evidence,
   and the disputed tests apart from the others. Its APPROVE stands only when the pick
   passed everything undisputed and the score reaches ``council.consensus_threshold``.
4. **Feedback**: the generator gets the orchestrator's notes and the undisputed failures;
   the tester gets its disputed tests back as suspect, quoting the disagreement.

After the last pass the best candidate so far is the result (``best_effort``), whatever
the last pass produced, and the result says which candidate won and why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar

import anyio
from pydantic import BaseModel

from council import prompts
from council.evidence import CrossExecutor
from council.examples import docstring_examples
from council.pool import Pool
from council.run_scope import RunScope
from council.sandbox import SandboxPathError, safe_relative_path
from council.schemas import (
    Candidate,
    CodeBundle,
    CodeFile,
    CouncilRequest,
    CouncilResult,
    DebugReport,
    Dispute,
    Plan,
    StaticFinding,
    SuiteRecord,
    Synthesis,
    TechManifest,
    TestReport,
    TestSuite,
)
from council.static import analyse
from providers.errors import PolicyError, ProviderError
from providers.settings import Tier

if TYPE_CHECKING:
    from council.pipeline import Council

M = TypeVar("M", bound=BaseModel)


class Refinement:
    """One run's refine loop (see the module docstring); :meth:`run` fills ``result``."""

    def __init__(
        self, council: Council, scope: RunScope, request: CouncilRequest, result: CouncilResult
    ) -> None:
        self.council = council
        self.scope = scope
        self.request = request
        self.result = result
        self.settings = council.settings.council
        self.plan = result.plan or Plan(goal=request.query, tasks=[])
        self.target = target_path(request)
        self.module = PurePosixPath(self.target).stem
        self.pool = Pool()
        ctx = request.context
        examples = (
            docstring_examples(ctx.file_text, ctx.symbol) if ctx.file_text and ctx.symbol else []
        )
        self.executor = CrossExecutor(
            self.pool,
            module=self.module,
            symbol=ctx.symbol,
            examples=examples,
            workspace=council.workspace,
            copy_list=council.copy_list,
            limits=council.limits,
            python=council.python,
        )
        self.reviews: dict[str, DebugReport] = {}
        self.failed_passes = 0

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        max_passes = self.settings.max_refinement_passes
        feedback: dict[str, list[str]] = {}
        for pass_no in range(1, max_passes + 2):
            self.scope.pass_no = pass_no
            self.scope.emit("pass_started", detail=f"pass {pass_no} of at most {max_passes + 1}")
            if feedback.get("researcher") and self.result.tech_manifest is not None:
                self.result.tech_manifest = await self.council._stage(
                    self.scope,
                    "research",
                    "researcher",
                    TechManifest,
                    prompts.RESEARCHER,
                    prompts.research_prompt(self.request, self.plan, feedback["researcher"]),
                    request=self.request,
                )
            new = await self._candidates(feedback)
            suite = await self._review(new, feedback)
            best = self._publish(suite, pass_no)
            tests = self.executor.report(best, suite)
            passes_left = max_passes - pass_no + 1
            disputes = self.pool.disputes()
            synthesis = await self.council._stage(
                self.scope,
                "synthesise",
                "orchestrator",
                Synthesis,
                prompts.ORCHESTRATOR_SYNTHESISE,
                prompts.synthesis_prompt(
                    self.request,
                    self.plan,
                    best.code,
                    self.reviews.get(best.id),
                    tests,
                    pass_no,
                    passes_left,
                    disputed=[_dispute_line(d) for d in disputes],
                    disputed_nodeids=self._disputed_nodeids(disputes),
                    standing=self.result.choice.reason if self.result.choice else "",
                ),
                request=self.request,
            )
            synthesis = self._check_verdict(synthesis, best)
            self.result.synthesis = synthesis
            if synthesis.decision == "APPROVE":
                self.result.status = "approved"
                self.result.summary = self._summary("Approved", pass_no, synthesis)
                return
            self.failed_passes += 1
            if passes_left <= 0:
                self.result.status = "best_effort"
                head = f"Best effort after {max_passes} refinement passes"
                self.result.summary = self._summary(head, pass_no, synthesis)
                return
            feedback = self._route_feedback(synthesis, best, disputes)

    # -- generate -----------------------------------------------------------------------

    def _generator_tiers(self) -> list[Tier] | None:
        """None (the configured walk) until ``escalate_after`` failed passes, then the walk
        from the next tier on, one more tier per ``escalate_after`` failures."""
        level = self.failed_passes // self.settings.escalate_after
        if level == 0:
            return None
        tiers = list(self.council.settings.roles.tiers("generator"))
        if len(tiers) < 2:
            return None
        return tiers[min(level, len(tiers) - 1) :]

    async def _candidates(self, feedback: dict[str, list[str]]) -> list[Candidate]:
        request, ctx, pass_no = self.request, self.request.context, self.scope.pass_no
        if request.mode == "tests":
            if not ctx.file_text:
                raise PolicyError("tests mode needs the code under test (context.file_text)")
            if self.pool.candidates:
                return []
            code = CodeBundle(
                files=[CodeFile(path=self.target, content=ctx.file_text)],
                explanation="The existing code, unchanged; the council writes tests for it.",
            )
            return [self._keep(code, 0, "user", "")]
        if request.mode == "debug" and pass_no == 1:
            return [await self._debugger_fix()]
        count = self.settings.candidates_per_pass
        tiers = self._generator_tiers()
        previous = self.result.code
        prompt = prompts.generate_prompt(
            request,
            self.plan,
            self.result.tech_manifest,
            previous,
            feedback.get("generator", []),
            self.target,
        )
        made: list[tuple[int, CodeBundle, str, str]] = []
        failures: list[ProviderError] = []

        async def one(index: int) -> None:
            label = f"candidate {index + 1} of {count}" if count > 1 else ""
            if tiers is not None:
                label = f"{label + ', ' if label else ''}escalated to {tiers[0].target}"
            try:
                bundle, routed = await self.council.call(
                    self.scope,
                    "generate",
                    "generator",
                    CodeBundle,
                    prompts.GENERATOR,
                    prompt,
                    request=request,
                    tiers=tiers,
                    label=label,
                )
            except PolicyError:
                raise
            except ProviderError as exc:  # the others may still deliver
                failures.append(exc)
                return
            made.append((index, bundle, routed.result.provider, routed.result.model))

        await concurrently([lambda i=i: one(i) for i in range(count)])
        if not made and failures:
            raise failures[0]
        if failures:
            self.scope.errors += [f"generator: {exc}" for exc in failures]
        kept: list[Candidate] = []
        for index, bundle, provider, model in sorted(made, key=lambda m: m[0]):
            candidate = self._keep(self._confine(bundle), index, provider, model)
            if candidate not in kept:
                kept.append(candidate)
        return kept

    async def _debugger_fix(self) -> Candidate:
        ctx = self.request.context
        if not ctx.file_text:
            raise PolicyError("debug mode needs the code to debug (context.file_text)")
        diagnosis, routed = await self.council.call(
            self.scope,
            "generate",
            "debugger",
            DebugReport,
            prompts.DEBUGGER_FIX,
            prompts.describe_request(self.request),
            request=self.request,
        )
        self.result.diagnosis = diagnosis
        code = CodeBundle(
            files=[CodeFile(path=self.target, content=diagnosis.fixed_code or ctx.file_text)],
            explanation=diagnosis.analysis or "Fixed version from the debugger.",
            assumptions=[],
        )
        return self._keep(code, 0, routed.result.provider, routed.result.model)

    def _keep(self, code: CodeBundle, index: int, provider: str, model: str) -> Candidate:
        """Add ``code`` to the pool; code an earlier candidate already has counts as one
        more sample of it, and that candidate is reviewed again (one false alarm of the
        debugger must not sink right code for the rest of the run)."""
        files = [(f.path, f.content) for f in code.files]
        for other in self.pool.candidates:
            if [(f.path, f.content) for f in other.code.files] == files:
                self.pool.resampled(other)
                return other
        return self.pool.add_candidate(
            code,
            self.scope.pass_no,
            index,
            provider=provider,
            model=model,
            static=static_findings(code),
        )

    def _confine(self, bundle: CodeBundle) -> CodeBundle:
        """Keep only files with safe workspace-relative paths; never an empty bundle."""
        kept: list[CodeFile] = []
        for f in bundle.files:
            try:
                kept.append(f.model_copy(update={"path": str(safe_relative_path(f.path))}))
            except SandboxPathError as exc:
                self.scope.errors.append(f"generator wrote an unsafe path, ignored: {exc}")
        if not kept:
            self.scope.errors.append("the generator returned no usable file")
            kept = [CodeFile(path=self.target, content="")]
        # The requested file first: the tester imports it as the module under test.
        kept.sort(key=lambda f: f.path != self.target)
        return bundle.model_copy(update={"files": kept})

    # -- review -------------------------------------------------------------------------

    async def _review(
        self, new: list[Candidate], feedback: dict[str, list[str]]
    ) -> SuiteRecord | None:
        """Debugger per new candidate, concurrently with the tester, whose suite every
        candidate runs as soon as it exists; returns this pass's suite (None: no suite)."""
        suite_record: SuiteRecord | None = None
        shown = new[0] if new else self._best()

        async def debugger(candidate: Candidate) -> None:
            prompt = prompts.debug_prompt(
                self.request, self.plan, candidate.code, feedback.get("debugger", [])
            )
            report = await self._review_call("debugger", DebugReport, prompts.DEBUGGER, prompt)
            if report is not None:
                self.reviews[candidate.id] = report
                self.pool.record_review(candidate, report)

        async def tester() -> None:
            nonlocal suite_record
            prompt = prompts.test_prompt(
                self.request, self.plan, shown.code, self.module, feedback.get("tester", [])
            )
            suite = await self._review_call("tester", TestSuite, prompts.TESTER, prompt)
            if suite is not None:
                suite_record = self._add_suite(suite)
                await self._cross_execute()

        await concurrently([*(lambda c=c: debugger(c) for c in new), tester])
        await self._cross_execute()  # examples of new candidates when the tester failed
        return suite_record

    async def _review_call(self, role: str, model: type[M], system: str, prompt: str) -> M | None:
        """A reviewer's answer, or None when its provider failed (noted in the errors; the
        other reviewer's evidence still counts). Budget and policy stops end the run."""
        try:
            return await self.council._stage(
                self.scope, "review", role, model, system, prompt, request=self.request
            )
        except PolicyError:
            raise
        except ProviderError as exc:
            self.scope.errors.append(f"{role}: {exc}")
            return None

    def _add_suite(self, suite: TestSuite) -> SuiteRecord:
        for record in self.pool.suites:
            if record.suite.content == suite.content:
                return record  # the same tests again: nothing new to run
        return self.pool.add_suite(suite, self.scope.pass_no, self.module)

    async def _cross_execute(self) -> None:
        pending = sum(
            bool(self.pool.pending(c)) or self.executor._needs_examples(c)
            for c in self.pool.candidates
        )
        if not pending:
            return
        self.scope.emit(
            "stage_started",
            stage="review",
            role="sandbox",
            detail=f"running {len(self.pool.suites)} suite(s) against {pending} candidate(s)",
            percent=_review_percent(self.scope),
        )
        runs = await self.executor.run()
        best = self._best()
        self.scope.emit(
            "stage_finished",
            stage="review",
            role="sandbox",
            ok=self.pool.passed_everything(best),
            detail=f"{runs} sandbox run(s); best so far: {self.pool.explain(best)}",
            percent=_review_percent(self.scope),
        )

    # -- judge --------------------------------------------------------------------------

    def _best(self) -> Candidate:
        return self.pool.get(self.pool.choose().winner)

    def _publish(self, suite: SuiteRecord | None, pass_no: int) -> Candidate:
        """Write the pool's pick and its evidence into the result; returns the pick."""
        choice = self.pool.choose()
        best = self.pool.get(choice.winner)
        result = self.result
        result.code = best.code
        result.refinement_passes = pass_no - 1
        result.choice = choice
        result.candidates = list(self.pool.candidates)
        result.suites = list(self.pool.suites)
        result.disputed_tests = self.pool.disputes()
        result.debug_report = self.reviews.get(best.id)
        result.static_findings = static_findings(best.code)
        result.test_report = self.executor.report(best, suite or self._latest_suite())
        return best

    def _latest_suite(self) -> SuiteRecord | None:
        return self.pool.suites[-1] if self.pool.suites else None

    def _disputed_nodeids(
        self, disputes: list[Dispute], *, ignored_only: bool = True
    ) -> frozenset[str]:
        """pytest node ids of the disputes (those left out of the evidence by default)."""
        paths = {s.id: s.path for s in self.pool.suites}
        return frozenset(
            f"{paths[d.suite_id]}::{d.case.split('::', 1)[1]}"
            for d in disputes
            if d.suite_id in paths and (d.ignored or not ignored_only)
        )

    def _check_verdict(self, synthesis: Synthesis, best: Candidate) -> Synthesis:
        """Evidence beats opinion: an approval stands only for a candidate that passed every
        undisputed test and example, with a score at the threshold."""
        threshold = self.settings.consensus_threshold
        if synthesis.decision != "APPROVE":
            return synthesis
        reasons: list[str] = []
        if not self.pool.passed_everything(best):
            reasons.append(f"the evidence does not support it ({self.pool.explain(best)})")
        if synthesis.score < threshold:
            reasons.append(f"score {synthesis.score:.2f} is below consensus_threshold {threshold}")
        if not reasons:
            return synthesis
        note = "Approval withheld: " + "; ".join(reasons) + "."
        return synthesis.model_copy(
            update={"decision": "REFINE", "summary": f"{synthesis.summary} {note}".strip()}
        )

    # -- feedback -----------------------------------------------------------------------

    def _route_feedback(
        self, synthesis: Synthesis, best: Candidate, disputes: list[Dispute]
    ) -> dict[str, list[str]]:
        """Each agent gets only what is addressed to it; the code's fixer also gets the
        undisputed failures, and the tester its disputed tests, as suspect."""
        out: dict[str, list[str]] = {}
        for item in synthesis.feedback:
            out.setdefault(item.agent, []).append(item.message)
        fixer = "tester" if self.request.mode == "tests" else "generator"
        evidence = [e for e in self._failures(best, disputes) if e not in out.get(fixer, [])]
        if evidence:
            out.setdefault(fixer, []).extend(evidence)
        for dispute in disputes:
            out.setdefault("tester", []).append(
                f"Your test {dispute.case.split('::', 1)[1]} may be wrong: it fails code that "
                f"passes every docstring example and that the debugger accepts "
                f"({', '.join(dispute.candidates)}). {dispute.message[:300]} Check its expected "
                "value against the specification; fix or drop it."
            )
        for sid, error in self.pool.broken_suites().items():
            out.setdefault("tester", []).append(
                f"Your test suite {sid} ran no test against any candidate ({error[:200]}); "
                "write a complete pytest module that imports the code under test."
            )
        if not out:
            out[fixer] = [synthesis.summary]
        return out

    def _failures(self, best: Candidate, disputes: list[Dispute]) -> list[str]:
        tests = self.result.test_report or TestReport(verdict="error")
        if tests.execution is None:
            return [f"The tests could not run: {tests.note}"] if tests.note else []
        disputed = self._disputed_nodeids(disputes)
        suspect = self._disputed_nodeids(disputes, ignored_only=False) - disputed
        ex = tests.execution
        out = [
            f"Failing test {c.name}"
            + (
                " (the tester may be wrong here: your code passes the docstring examples)"
                if c.nodeid in suspect
                else ""
            )
            + f": {c.message.strip()[:500]}"
            for c in ex.cases
            if c.outcome in ("failed", "error") and c.nodeid not in disputed
        ][:6]
        examples = best.evidence.examples
        out += [f"Docstring example {name} fails" for name, o in examples.items() if o != "passed"][
            :4
        ]
        if not out and not ex.ok and not disputed:
            out.append(f"Test run: {ex.summary()}")
        return out

    def _summary(self, head: str, pass_no: int, synthesis: Synthesis) -> str:
        passes = "1 pass" if pass_no == 1 else f"{pass_no} passes"
        tests = self.result.test_report
        line = _test_line(tests) if tests else "none"
        choice = self.result.choice
        chosen = f"; chose {choice.reason}" if choice and len(self.pool.candidates) > 1 else ""
        return (
            f"{head} ({passes}; tests: {line}; score {synthesis.score:.2f}{chosen}). "
            + synthesis.summary
        )


# -- helpers ------------------------------------------------------------------------------


async def concurrently(jobs: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run ``jobs`` at once; the first to fail cancels the others and its exception is
    raised as itself (one job alone runs without a task group). The pipeline's error
    handling catches ``PolicyError``/``ProviderError``, which a task group would wrap."""
    if len(jobs) == 1:
        await jobs[0]()
        return
    try:
        async with anyio.create_task_group() as group:
            for job in jobs:
                group.start_soon(job)
    except BaseExceptionGroup as group:
        first = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from group


def target_path(request: CouncilRequest) -> str:
    path = request.context.file_path
    if path:
        try:
            return str(safe_relative_path(Path(path).name if Path(path).is_absolute() else path))
        except SandboxPathError:
            return Path(path).name
    return "solution.py"


def static_findings(code: CodeBundle) -> list[StaticFinding]:
    return [
        StaticFinding(
            path=f.path, **finding.model_dump(include={"line", "severity", "code", "message"})
        )
        for f in code.files
        if f.path.endswith(".py")
        for finding in analyse(f.content, filename=f.path)
    ]


def _test_line(tests: TestReport) -> str:
    if tests.execution is not None:
        return tests.execution.summary()
    return tests.note or tests.verdict


def _dispute_line(dispute: Dispute) -> str:
    standing = (
        "left out of the evidence"
        if dispute.ignored
        else "suspect, still counted: one sample of vouched-for code is not enough to overrule it"
    )
    return (
        f"{dispute.case.split('::', 1)[1]} (suite {dispute.suite_id}; {standing}) fails "
        f"{', '.join(dispute.candidates)}, which pass every docstring example and the "
        f"debugger accepts: {dispute.message[:300]}"
    )


def _review_percent(scope: RunScope) -> int:
    return min(95, 60 + 10 * max(0, scope.pass_no - 1))
