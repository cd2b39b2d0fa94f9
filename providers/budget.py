"""Per-run usage ledger and budget.

One `Ledger` belongs to one council run. Every call the router makes for that run is
recorded with the provider and model that actually answered, its tokens, cost and latency.
The budget is checked before each call: a run that has spent its cap, or whose next prompt
alone would overshoot it, is stopped with `BudgetExceeded` instead of spending more.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from providers.errors import BudgetExceeded


@dataclass(frozen=True)
class CallRecord:
    role: str
    provider: str
    model: str
    tier: int
    attempt: int
    outcome: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    estimated_usage: bool = False
    via: str = "chat"


@dataclass
class Ledger:
    budget_usd: float | None = None
    budget_tokens: int | None = None
    records: list[CallRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def spent_usd(self) -> float:
        return sum(r.cost_usd for r in self.records)

    @property
    def spent_tokens(self) -> int:
        return sum(r.prompt_tokens + r.completion_tokens for r in self.records)

    @property
    def calls(self) -> int:
        return sum(1 for r in self.records if r.outcome == "ok")

    def record(self, call: CallRecord) -> None:
        with self._lock:
            self.records.append(call)

    def check(
        self, target: str, prompt_tokens: int, prompt_cost_usd: float, *, priced: bool = True
    ) -> None:
        """Refuse the next call when the cap is spent or its prompt alone would exceed it.

        Free calls (`priced=False`, e.g. local models) pass even a zero cap.
        """
        if self.budget_usd is not None and priced:
            spent = self.spent_usd
            if spent >= self.budget_usd or spent + prompt_cost_usd > self.budget_usd:
                raise BudgetExceeded(
                    f"run budget reached: spent ${spent:.4f} of ${self.budget_usd:.2f} over "
                    f"{self.calls} calls; the next call to {target} needs about "
                    f"${prompt_cost_usd:.4f} for its prompt alone. Raise council.budget_usd "
                    "or route this role to a local provider."
                )
        if self.budget_tokens is not None:
            spent_tokens = self.spent_tokens
            if spent_tokens + prompt_tokens > self.budget_tokens:
                raise BudgetExceeded(
                    f"run token budget reached: used {spent_tokens} of {self.budget_tokens} "
                    f"tokens over {self.calls} calls; the next call to {target} needs about "
                    f"{prompt_tokens} prompt tokens. Raise council.budget_tokens."
                )

    def by_role(self) -> dict[str, dict[str, float]]:
        """Totals per role, for result summaries."""
        out: dict[str, dict[str, float]] = {}
        for r in self.records:
            row = out.setdefault(
                r.role, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
            )
            row["calls"] += 1
            row["prompt_tokens"] += r.prompt_tokens
            row["completion_tokens"] += r.completion_tokens
            row["cost_usd"] += r.cost_usd
        return out
