"""Endpoint health: a small circuit breaker per provider.

An endpoint that fails `failures` times within `window` seconds is skipped for `cooldown`
seconds, so a dead Ollama does not cost every request a connect timeout. When the cooldown
ends the endpoint is half-open: the next call is a trial, and one more failure sends it
straight back to cooling down, while a success clears its record.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

State = Literal["healthy", "degraded", "cooling", "half-open"]


@dataclass
class EndpointHealth:
    name: str
    state: State = "healthy"
    recent_failures: int = 0
    cooldown_remaining_s: float = 0.0
    successes: int = 0
    failures: int = 0
    last_error: str | None = None
    last_latency_ms: float | None = None


@dataclass
class _Record:
    recent: deque[float] = field(default_factory=deque)
    cooling_until: float = 0.0
    tripped: bool = False
    successes: int = 0
    failures: int = 0
    last_error: str | None = None
    last_latency_ms: float | None = None


class HealthTracker:
    def __init__(
        self,
        *,
        failures: int = 3,
        window_secs: float = 60.0,
        cooldown_secs: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = failures
        self._window = window_secs
        self._cooldown = cooldown_secs
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def _get(self, name: str) -> _Record:
        return self._records.setdefault(name, _Record())

    def _prune(self, record: _Record, now: float) -> None:
        while record.recent and now - record.recent[0] > self._window:
            record.recent.popleft()

    def available(self, name: str) -> bool:
        return self._get(name).cooling_until <= self._clock()

    def cooldown_remaining(self, name: str) -> float:
        return max(0.0, self._get(name).cooling_until - self._clock())

    def record_failure(self, name: str, error: str) -> bool:
        """Count a failure; returns True when this failure started a cooldown."""
        now = self._clock()
        record = self._get(name)
        record.failures += 1
        record.last_error = error
        self._prune(record, now)
        record.recent.append(now)
        if record.tripped or len(record.recent) >= self._limit:
            record.cooling_until = now + self._cooldown
            record.tripped = True
            return True
        return False

    def record_success(self, name: str, latency_s: float) -> None:
        record = self._get(name)
        record.successes += 1
        record.last_latency_ms = round(latency_s * 1000, 1)
        record.recent.clear()
        record.tripped = False
        record.cooling_until = 0.0

    def snapshot(self, name: str) -> EndpointHealth:
        now = self._clock()
        record = self._get(name)
        self._prune(record, now)
        remaining = max(0.0, record.cooling_until - now)
        state: State
        if remaining > 0:
            state = "cooling"
        elif record.tripped:
            state = "half-open"
        elif record.recent:
            state = "degraded"
        else:
            state = "healthy"
        return EndpointHealth(
            name=name,
            state=state,
            recent_failures=len(record.recent),
            cooldown_remaining_s=round(remaining, 1),
            successes=record.successes,
            failures=record.failures,
            last_error=record.last_error,
            last_latency_ms=record.last_latency_ms,
        )

    def names(self) -> list[str]:
        return sorted(self._records)
