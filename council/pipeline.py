"""The council pipeline: Decompose -> Research -> Generate -> Review -> Synthesise -> refine.

One `Council` serves many runs; each `run()` is independent (its own :class:`RunScope`:
session id, usage ledger, transcript, events) so the language server can run several at
once. This module opens the run, plans and researches, and handles how a run can stop
(provider errors, budgets, no reachable model: local council mode); the refine loop, where
candidates are written, reviewed, cross-executed and judged, is :mod:`council.refine`.

The orchestrator's verdict is checked against the evidence: the pipeline never reports
APPROVED for code that fails an undisputed test or a docstring example, whatever score the
model gave. After `max_refinement_passes` refinements the best candidate of the run (not the
last) is returned with status `best_effort` and a summary that says what is still failing.

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
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from pydantic import BaseModel

from council import prompts
from council.events import Events
from council.local import LOCAL_NOTE
from council.refine import Refinement
from council.run_scope import RunScope
from council.sandbox import SandboxLimits
from council.schemas import (
    CodeBundle,
    CouncilRequest,
    CouncilResult,
    FreeformAnswer,
    Plan,
    TechManifest,
    TranscriptEntry,
)
from council.structured import ask
from providers.errors import AllTiersFailed, PolicyError, ProviderError
from providers.router import Routed, Router
from providers.settings import Tier

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

STAGE_PERCENT = {"decompose": 5, "research": 15, "generate": 35, "review": 60, "synthesise": 85}


class LocalModeNeeded(Exception):
    """No chat model could be reached: the caller may switch to local council mode."""


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
        self.limits = limits or sandbox
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
        scope = RunScope.open(self.router, events=events, session_id=session_id)
        engine = self.settings.council.engine
        if engine == "local":
            with scope.lifecycle(f"{LOCAL_NOTE}; {request.mode}"):
                return await self._local(scope, request, "council.engine = 'local'")
        with scope.lifecycle(f"{request.mode}: {request.query[:80]}"):
            try:
                result = await self._run(scope, request)
            except LocalModeNeeded as exc:
                if engine != "auto":
                    raise
                scope.emit(
                    "stage_finished",
                    stage="decompose",
                    ok=False,
                    detail="no chat model reachable; switching to local council mode",
                )
                return await self._local(scope, request, str(exc).splitlines()[0])
            scope.outcome = result.status
            return result

    async def _local(self, scope: RunScope, request: CouncilRequest, reason: str) -> CouncilResult:
        from council.local import run_local  # local mode builds on this module

        result = await run_local(
            self.router,
            request,
            scope=scope,
            workspace=self.workspace,
            limits=self.limits,
            python=self.python,
            reason=reason,
        )
        scope.outcome = result.status
        return result

    async def _run(self, scope: RunScope, request: CouncilRequest) -> CouncilResult:
        result = CouncilResult(session_id=scope.session_id, status="failed", mode=request.mode)
        try:
            result.plan = await self._stage(
                scope,
                "decompose",
                "orchestrator",
                Plan,
                prompts.ORCHESTRATOR_DECOMPOSE,
                prompts.describe_request(request),
            )
            if request.mode == "freeform" and not _needs_code(result.plan):
                answer = await self._stage(
                    scope,
                    "generate",
                    "researcher",
                    FreeformAnswer,
                    prompts.FREEFORM,
                    prompts.describe_request(request),
                )
                result.answer, result.code = answer.answer, answer.code
                result.status = "approved"
                result.summary = "Answered directly (no code to generate)."
                return self._finish(scope, result)
            if request.mode in ("generate", "freeform"):
                result.tech_manifest = await self._stage(
                    scope,
                    "research",
                    "researcher",
                    TechManifest,
                    prompts.RESEARCHER,
                    prompts.research_prompt(request, result.plan, []),
                )
            await Refinement(self, scope, request, result).run()
        except AllTiersFailed as exc:
            if (
                _nothing_reachable(exc)
                and not scope.ledger.calls
                and self.settings.council.engine == "auto"
            ):
                raise LocalModeNeeded(str(exc)) from exc
            scope.errors.append(str(exc))
            tried = "; ".join(exc.attempts[-3:])
            result.summary = f"Stopped: {exc.message} ({tried}). {exc.hint()}"
        except PolicyError as exc:
            scope.errors.append(str(exc))
            result.summary = f"Stopped: {exc}"
        except ProviderError as exc:
            scope.errors.append(str(exc))
            result.summary = f"Stopped by a provider error: {exc}"
        if result.status == "failed" and result.code is not None:
            result.status = "best_effort"
        return self._finish(scope, result)

    def copy_list(self, code: CodeBundle) -> list[str]:
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

    # -- one structured call, with events and transcript ---------------------------------------

    async def _stage(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`call` for its value only."""
        value, _ = await self.call(*args, **kwargs)
        return value

    async def call(
        self,
        scope: RunScope,
        stage: str,
        role: str,
        model: type[M],
        system: str,
        prompt: str,
        *,
        request: CouncilRequest | None = None,
        tiers: Sequence[Tier] | None = None,
        label: str = "",
    ) -> tuple[M, Routed]:
        """One structured call for ``role`` (through ``tiers`` when given, e.g. an escalated
        generator), recorded in the transcript and announced as stage events."""
        percent = _percent(scope, stage)
        scope.emit("stage_started", stage=stage, role=role, percent=percent, detail=label)
        started = time.monotonic()
        entry = TranscriptEntry(stage=stage, role=role, pass_no=scope.pass_no, prompt=prompt)
        context = request.context if request is not None else None
        try:
            value, routed = await ask(
                self.router,
                role,
                model,
                system=system,
                prompt=prompt,
                ledger=scope.ledger,
                path=context.file_path if context else None,
                language=request.language if request is not None else None,
                tiers=tiers,
            )
        except ProviderError as exc:
            entry.error, entry.seconds = str(exc), time.monotonic() - started
            scope.transcript.append(entry)
            scope.emit(
                "stage_finished",
                stage=stage,
                role=role,
                ok=False,
                detail=str(exc)[:200],
                percent=percent,
            )
            raise
        entry.provider, entry.model = routed.result.provider, routed.result.model
        entry.response, entry.seconds = routed.result.text, time.monotonic() - started
        scope.transcript.append(entry)
        scope.emit(
            "stage_finished",
            stage=stage,
            role=role,
            provider=routed.result.provider,
            model=routed.result.model,
            percent=percent,
            detail=f"{label + ': ' if label else ''}{entry.seconds:.2f}s",
        )
        return value, routed

    def _finish(self, scope: RunScope, result: CouncilResult) -> CouncilResult:
        scope.finish(result)
        result.prompt_version = prompts.PROMPT_VERSION
        return result


# -- helpers -----------------------------------------------------------------------------------


def _percent(scope: RunScope, stage: str) -> int:
    base = STAGE_PERCENT.get(stage, 50)
    if scope.pass_no <= 1:
        return base
    return min(95, 35 + (base - 35) // 2 + 10 * (scope.pass_no - 1)) if base >= 35 else base


def _needs_code(plan: Plan) -> bool:
    return any(task.agent in ("generator", "tester") for task in plan.tasks)


def _nothing_reachable(exc: AllTiersFailed) -> bool:
    markers = ("cannot connect", "cooling down", "is not configured", "timed out")
    return bool(exc.attempts) and all(any(m in a for m in markers) for a in exc.attempts)
