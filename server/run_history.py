"""The server's memory of council runs, live and recent, for the editors' run views.

Users of the peer tools ask "what did it do?" and get a log file. Every tracked run
(`server.run_tracking.track`) gets a :class:`RunRecord` here, filled from the run's events
while it runs (each stage's role, provider:model, time, tokens and cost, and the prompts and
answers of its calls) and from its result when it ends (the candidates' code with the
target file as each would leave it, the test results case by case, usage by role, the full
transcript). `server.features.runs_view` serves them (`council/runs`, `council/run`) and
announces changes (`council/runsChanged`); the protocol is described there and in README.

Memory is bounded: the runs in flight plus the last `LIMIT` finished ones are kept, and
every code text, prompt and answer is cut (`CODE_CHARS`, `council.events.NOTE_CHARS`), as
are the lists (stages, calls, candidates, test cases). This module imports only the standard
library at start-up (the server's own start must not pay for pydantic); results and events
are read by attribute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

LIMIT = 50  # finished runs kept
CODE_CHARS = 40_000  # each code text: the original file, each candidate file, each proposal
TEXT_CHARS = 4_000  # each prompt, answer, error and summary
MAX_STAGES, MAX_CALLS, MAX_CANDIDATES, MAX_TESTS, MAX_FILES = 200, 80, 12, 400, 6

Listener = Callable[["RunRecord", str], None]


def cut(text: str | None, limit: int = TEXT_CHARS) -> str:
    """`text` cut to about `limit` characters, head and tail kept (as the events cut)."""
    text = text or ""
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]}\n[... {len(text) - head - tail} characters cut ...]\n{text[-tail:]}"


@dataclass
class Stage:
    """One stage call of a run, from its `stage_started` to its `stage_finished`."""

    stage: str
    role: str
    pass_no: int
    label: str
    offset: float  # seconds from the run's start
    provider: str | None = None
    model: str | None = None
    status: str = "running"  # running, ok, failed, unfinished
    seconds: float | None = None
    tokens: int = 0
    cost: float = 0.0
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "role": self.role,
            "passNo": self.pass_no,
            "provider": self.provider,
            "model": self.model,
            "status": self.status,
            "offset": round(self.offset, 3),
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "tokens": self.tokens,
            "costUsd": round(self.cost, 6),
            "detail": self.detail,
        }


@dataclass
class RunRecord:
    session_id: str
    title: str
    command: str
    uri: str | None
    started_at: float = field(default_factory=time.time)  # wall clock, for the editors
    started: float = field(default_factory=time.monotonic)  # the events' clock
    status: str = "running"
    finished_at: float | None = None
    seconds: float | None = None
    current: str | None = None  # the stage in progress, as "stage: role"
    tokens: int = 0
    cost: float = 0.0
    summary: str = ""
    mode: str | None = None
    query: str | None = None
    symbol: str | None = None
    council_mode: str | None = None
    original: dict[str, Any] | None = None  # {"path", "text"}: the target before the run
    stages: list[Stage] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    usage: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    suites: list[dict[str, Any]] = field(default_factory=list)
    tests: list[dict[str, Any]] = field(default_factory=list)
    disputed: list[dict[str, Any]] = field(default_factory=list)
    choice: str | None = None
    answer: str | None = None
    errors: list[str] = field(default_factory=list)
    outcome: dict[str, Any] = field(default_factory=dict)  # what the command answered

    def summary_json(self) -> dict[str, Any]:
        seconds = self.seconds if self.seconds is not None else time.monotonic() - self.started
        return {
            "sessionId": self.session_id,
            "title": self.title,
            "command": self.command,
            "status": self.status,
            "uri": self.uri,
            "mode": self.mode,
            "startedAt": round(self.started_at, 3),
            "finishedAt": None if self.finished_at is None else round(self.finished_at, 3),
            "seconds": round(seconds, 3),
            "stage": self.current,
            "tokens": self.tokens,
            "costUsd": round(self.cost, 6),
            "summary": self.summary,
        }

    def details_json(self) -> dict[str, Any]:
        original = None
        if self.original is not None:
            original = {
                "path": self.original["path"],
                "text": cut(self.original["text"], CODE_CHARS),
            }
        return {
            **self.summary_json(),
            "query": self.query,
            "symbol": self.symbol,
            "councilMode": self.council_mode,
            "stages": [s.to_json() for s in self.stages],
            "usage": self.usage,
            "original": original,
            "candidates": self.candidates,
            "suites": self.suites,
            "tests": self.tests,
            "disputed": self.disputed,
            "choice": self.choice,
            "answer": self.answer,
            "transcript": self.calls,
            "errors": self.errors,
            "outcome": self.outcome,
        }


class RunHistory:
    """Runs by session id, oldest first; `listeners` hear of every change (the
    runs view turns them into `council/runsChanged`)."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.runs: dict[str, RunRecord] = {}
        self.listeners: list[Listener] = []

    def start(self, session: str, title: str, command: str, uri: str | None) -> RunRecord:
        record = RunRecord(session, title, command, uri)
        self.runs[session] = record
        self._changed(record, "started")
        return record

    def describe(self, record: RunRecord, request: Any) -> None:
        """What a council run was asked (a `CouncilRequest`), and the target's text: the
        left side of every candidate's diff."""
        record.mode, record.query = request.mode, cut(request.query, 1000)
        ctx = request.context
        record.symbol = ctx.symbol
        if ctx.file_text is not None and ctx.file_path and request.mode != "tests":
            record.original = {"path": ctx.file_path, "text": ctx.file_text}

    def get(self, session: str) -> RunRecord | None:
        return self.runs.get(session)

    def summaries(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [r.summary_json() for r in reversed(self.runs.values())]

    # -- while it runs ------------------------------------------------------------------------

    def event(self, record: RunRecord, event: Any) -> None:
        record.tokens, record.cost = event.tokens_so_far, event.cost_so_far
        if event.kind == "stage_started":
            if len(record.stages) < MAX_STAGES:
                record.stages.append(
                    Stage(
                        event.stage or "",
                        event.role or "",
                        event.pass_no,
                        event.detail,
                        event.at - record.started,
                    )
                )
            record.current = f"{event.stage}: {event.role}" if event.role else event.stage
            self._changed(record, "stage")
        elif event.kind == "stage_finished":
            self._finished_stage(record, event)
            self._changed(record, "stage")

    def _finished_stage(self, record: RunRecord, event: Any) -> None:
        stage = _matching(record.stages, event)
        if stage is None:  # finished without a start (e.g. the switch to local mode)
            stage = Stage(event.stage or "", event.role or "", event.pass_no, "", 0.0)
            stage.offset = event.at - record.started
            if len(record.stages) < MAX_STAGES:
                record.stages.append(stage)
        stage.status = "ok" if event.ok else "failed"
        stage.seconds = max(0.0, event.at - record.started - stage.offset)
        stage.provider, stage.model = event.provider, event.model
        stage.tokens, stage.cost, stage.detail = event.stage_tokens, event.stage_cost, event.detail
        for call in event.calls:
            if len(record.calls) < MAX_CALLS:
                record.calls.append(_call_json(call))
        if not any(s.status == "running" for s in record.stages):
            record.current = None

    # -- when it ends -------------------------------------------------------------------------

    def finish(
        self,
        record: RunRecord,
        result: Any,
        status: str,
        summary: str,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        record.status = status
        record.finished_at = time.time()
        record.seconds = time.monotonic() - record.started
        record.summary = cut(summary, 1000)
        record.current = None
        for stage in record.stages:
            if stage.status == "running":
                stage.status = "unfinished"
        record.outcome = {
            k: v for k, v in (outcome or {}).items() if isinstance(v, str | int | float | bool)
        }
        if result is not None:
            try:
                _from_result(record, result)
            except Exception:  # a view must never fail a run
                log.exception("run %s: could not record its result", record.session_id)
        if record.original is not None:
            record.original["text"] = cut(record.original["text"], CODE_CHARS)
        self._changed(record, "finished")
        self._prune()

    def _prune(self) -> None:
        finished = [s for s, r in self.runs.items() if r.status != "running"]
        for session in finished[: max(0, len(finished) - self.limit)]:
            del self.runs[session]

    def _changed(self, record: RunRecord, why: str) -> None:
        for listener in list(self.listeners):
            try:
                listener(record, why)
            except Exception:
                log.exception("runs listener failed")


def _matching(stages: list[Stage], event: Any) -> Stage | None:
    """The running stage a `stage_finished` closes: same stage, role and pass; among
    concurrent ones (candidates of one pass) the one whose label the detail starts with."""
    same = [
        s
        for s in stages
        if s.status == "running"
        and s.stage == (event.stage or "")
        and s.role == (event.role or "")
        and s.pass_no == event.pass_no
    ]
    labelled = [s for s in same if s.label and event.detail.startswith(s.label)]
    return (labelled or same or [None])[0]


def _call_json(call: Any) -> dict[str, Any]:
    """A `CallNote` or a `TranscriptEntry` (the same fields) as the protocol sends it."""
    return {
        "stage": call.stage,
        "role": call.role,
        "passNo": call.pass_no,
        "provider": call.provider,
        "model": call.model,
        "seconds": round(call.seconds, 3),
        "prompt": cut(call.prompt),
        "response": cut(call.response),
        "error": cut(call.error) if call.error else None,
    }


def _from_result(record: RunRecord, result: Any) -> None:
    record.cost = getattr(result, "cost_usd", record.cost)
    record.council_mode = getattr(result, "council_mode", record.council_mode)
    record.usage = [
        {
            "role": u.role,
            "provider": u.provider,
            "model": u.model,
            "calls": u.calls,
            "tokens": u.prompt_tokens + u.completion_tokens,
            "costUsd": u.cost_usd,
            "seconds": u.latency_s,
            "estimated": u.estimated,
        }
        for u in result.usage
    ]
    if result.usage:
        record.tokens = sum(u["tokens"] for u in record.usage)
    if result.transcript:  # complete, where the events carried only finished stages' calls
        record.calls = [_call_json(e) for e in result.transcript[:MAX_CALLS]]
    answer = getattr(result, "answer", None) or getattr(result, "final_answer", None)
    record.answer = cut(answer, CODE_CHARS) if answer else None
    record.errors = [cut(e, 500) for e in getattr(result, "errors", [])[:20]]
    choice = getattr(result, "choice", None)
    record.choice = choice.reason if choice is not None else None
    record.suites = [
        {
            "id": s.id,
            "passNo": s.pass_no,
            "path": s.suite.path,
            "trusted": s.trusted,
            "content": cut(s.suite.content, CODE_CHARS),
        }
        for s in getattr(result, "suites", [])[: MAX_FILES * 2]
    ]
    record.disputed = [
        {"case": d.case, "ignored": d.ignored, "candidates": d.candidates, "message": d.message}
        for d in getattr(result, "disputed_tests", [])
    ]
    from server.run_evidence import candidates, tests  # the council's models: loaded by now

    record.candidates = candidates(record, result, MAX_CANDIDATES)
    record.tests = tests(result, MAX_TESTS)
