"""One run's lifecycle, written once: identity, ledger, events, cancellation, final figures.

The pipeline, local council mode and consensus mode each used to open a run their own way
(their own session id, ledger, event helper and end-of-run bookkeeping), and they drifted:
a crash in the language server's *Deliberate* path ended its progress as "Cancelled.", and
the session id it registered for cancellation was not the one the run reported. A
:class:`RunScope` is now the only place that

* makes the session id (or takes the caller's, so cancellation and the result agree),
* owns the usage ledger (budgets are per run) and the transcript and error list,
* emits events with the running token and cost totals,
* brackets the run with ``run_started`` / ``run_finished``, where ``run_finished`` says how
  the run really ended: its status, ``cancelled`` when it was cancelled, ``failed`` (with
  the exception named) when it crashed,
* and writes the final usage, cost and duration into the result.

A ``stage_finished`` event also says what that stage cost and asked: the ledger's calls of
its role not yet claimed by an earlier stage (exact for calls made one after another; when
two calls of one role overlap, the first to finish may claim both, and the run's totals
stay right) and the transcript entries added since the previous ``stage_finished`` (a
stage's call appends its entry and announces the stage in one step, with no await between).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio

from council.events import NOTE_CHARS, CallNote, Event, Events
from council.schemas import RoleUsage, TranscriptEntry
from providers.budget import Ledger
from providers.router import Router


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class RunScope:
    session_id: str
    ledger: Ledger
    events: Events
    started: float = field(default_factory=time.monotonic)
    pass_no: int = 0
    transcript: list[TranscriptEntry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: how the run ended, set by the code that knows (a status such as ``approved``)
    outcome: str | None = None
    #: the ledger records already claimed by a stage_finished, and how much of the
    #: transcript the stage_finished events have carried (see the module docstring)
    _claimed: set[int] = field(default_factory=set, repr=False)
    _noted: int = field(default=0, repr=False)

    @classmethod
    def open(
        cls, router: Router, *, events: Events | None = None, session_id: str | None = None
    ) -> RunScope:
        return cls(
            session_id=session_id or new_session_id(),
            ledger=router.new_ledger(),
            events=events or Events(),
        )

    def emit(self, kind: str, **fields: Any) -> None:
        fields.setdefault("pass_no", self.pass_no)
        if kind == "stage_finished":
            fields.update(self._stage_share(fields.get("role")))
        self.events.emit(
            Event(
                kind=kind,  # type: ignore[arg-type]
                session_id=self.session_id,
                tokens_so_far=self.ledger.spent_tokens,
                cost_so_far=round(self.ledger.spent_usd, 6),
                **fields,
            )
        )

    def _stage_share(self, role: str | None) -> dict[str, Any]:
        tokens, cost = 0, 0.0
        for i, record in enumerate(list(self.ledger.records)):
            if i not in self._claimed and record.role == role:
                self._claimed.add(i)
                tokens += record.prompt_tokens + record.completion_tokens
                cost += record.cost_usd
        entries, self._noted = self.transcript[self._noted :], len(self.transcript)
        calls = [
            CallNote(
                stage=e.stage,
                role=e.role,
                pass_no=e.pass_no,
                provider=e.provider,
                model=e.model,
                prompt=excerpt(e.prompt),
                response=excerpt(e.response),
                error=excerpt(e.error) if e.error else None,
                seconds=round(e.seconds, 3),
            )
            for e in entries
        ]
        return {"stage_tokens": tokens, "stage_cost": round(cost, 6), "calls": calls}

    @contextlib.contextmanager
    def lifecycle(self, detail: str) -> Iterator[RunScope]:
        """``run_started`` now; ``run_finished`` however the body ends (see the module
        docstring for what it says)."""
        self.emit("run_started", detail=detail)
        try:
            yield self
        except anyio.get_cancelled_exc_class():
            self.outcome = "cancelled"
            raise
        except BaseException as exc:
            self.outcome = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            raise
        finally:
            outcome = self.outcome or "failed"
            self.emit("run_finished", detail=outcome, ok=outcome == "approved", percent=100)

    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def usage(self) -> list[RoleUsage]:
        return usage_by_role(self.ledger)

    def finish(self, result: Any) -> Any:
        """Write duration, usage, cost, transcript and errors into ``result`` (any result
        model with those fields; what it already holds is kept) and return it."""
        result.total_duration_secs = self.seconds()
        result.usage = self.usage()
        result.cost_usd = round(self.ledger.spent_usd, 6)
        result.transcript = [*result.transcript, *self.transcript]
        if hasattr(result, "errors"):
            result.errors = list(dict.fromkeys([*result.errors, *self.errors]))
        return result


def excerpt(text: str, limit: int = NOTE_CHARS) -> str:
    """``text`` cut to about ``limit`` characters, keeping its head and its tail (a prompt's
    instructions come first, the code it is about and the question last)."""
    if len(text) <= limit:
        return text
    head, tail = limit * 2 // 3, limit // 3
    return f"{text[:head]}\n[... {len(text) - head - tail} characters cut ...]\n{text[-tail:]}"


def usage_by_role(ledger: Ledger) -> list[RoleUsage]:
    """Successful calls per (role, provider, model): calls, tokens, cost and latency."""
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
        row.estimated = row.estimated or r.estimated_usage
    return list(rows.values())
