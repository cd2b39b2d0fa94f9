"""Typed pipeline events, and a tiny publisher.

The pipeline never talks to an editor or a terminal. It publishes events; the CLI renders
them with rich, the language server maps them to `$/progress`, tests record them. Every
event carries the running totals so a consumer can show "tokens/cost so far" without
keeping state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

Kind = Literal["run_started", "stage_started", "stage_finished", "pass_started", "run_finished"]

#: how much of each prompt and answer a `CallNote` keeps (its head and its tail)
NOTE_CHARS = 4000


class CallNote(BaseModel):
    """One model call of a finished stage, as the run's transcript records it, with its
    prompt and answer cut to about `NOTE_CHARS`: a live view of a run (the editors' run view)
    shows what each call asked and got before the result, with its full transcript, exists,
    and still has it when the run is cancelled or crashes and no result comes."""

    stage: str
    role: str
    pass_no: int = 0
    provider: str | None = None
    model: str | None = None
    prompt: str = ""
    response: str = ""
    error: str | None = None
    seconds: float = 0.0


class Event(BaseModel):
    kind: Kind
    session_id: str
    stage: str | None = None
    role: str | None = None
    pass_no: int = 0
    provider: str | None = None
    model: str | None = None
    ok: bool = True
    detail: str = ""
    percent: int = Field(0, ge=0, le=100)
    tokens_so_far: int = 0
    cost_so_far: float = 0.0
    # stage_finished only: the stage's own share of the run's usage (the ledger's calls of
    # its role that no earlier stage claimed) and its calls' transcript, cut to NOTE_CHARS
    stage_tokens: int = 0
    stage_cost: float = 0.0
    calls: list[CallNote] = Field(default_factory=list)
    at: float = Field(default_factory=time.monotonic)


Subscriber = Callable[[Event], None]


class Events:
    """Fan-out to subscribers; a failing subscriber is logged and never breaks the run."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def emit(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed on %s", event.kind)
