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
