"""The router: role -> ordered tiers, with retries, escalation, cooldowns, budget and privacy.

For each call the router works out which tiers are eligible (privacy rules, classifier tags),
then walks them in order. Inside a tier, transient failures (429, 5xx, timeouts, refused or
reset connections, cut streams) are retried with exponential backoff and full jitter, or after
the server's `Retry-After` when it sent one; a `Retry-After` longer than
`router.retry_after_max_secs` escalates at once rather than stalling the user. Anything else
(a rejected request, an exhausted retry budget, or a `QualityFailure` raised by the caller's
`accept` check) moves on to the next tier. Policy errors (budget, local-only, no tiers) stop
the call: escalation cannot fix them.

Streaming is retried and escalated only until the first token has reached the caller; after
that a failure is raised as it is, since the caller has already shown part of the answer.
`Router._attempts` is the one loop that does all this for chat, completion and streaming.
"""

from __future__ import annotations

import fnmatch
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import anyio

from providers.base import (
    ChatRequest,
    CompletionRequest,
    Delta,
    Provider,
    Result,
    Usage,
    estimate_tokens,
)
from providers.budget import CallRecord, Ledger
from providers.classify import ROUTER_SYSTEM, parse_category, rule_tags
from providers.errors import (
    AllTiersFailed,
    LocalOnlyViolation,
    NoTiers,
    PolicyError,
    ProviderError,
    Retryable,
)
from providers.health import EndpointHealth, HealthTracker
from providers.secrets import REDACTOR
from providers.settings import Settings, Tier

log = logging.getLogger(__name__)
T = TypeVar("T")
Req = TypeVar("Req", ChatRequest, CompletionRequest)

Accept = Callable[[Result, Callable[[ChatRequest], Awaitable[Result]]], Awaitable[T]]
"""`accept(result, retry)` validates a result; `retry(request)` re-asks the same target once
(e.g. a repair prompt); raising `QualityFailure` escalates to the next tier."""


@dataclass
class Routed:
    """A routed answer: the result plus which tier answered and what came before it."""

    result: Result
    tier: int
    attempts: list[str] = field(default_factory=list)
    value: Any = None


@dataclass(frozen=True)
class Slot:
    """One attempt at one tier: what an entry point's call needs to ask, record and answer."""

    role: str
    tier_index: int
    tier: Tier
    provider: Provider
    attempt: int
    ledger: Ledger
    attempts: list[str]  # what happened so far in this call, shared by all its slots

    def routed(self, result: Result, value: Any = None) -> Routed:
        return Routed(result=result, tier=self.tier_index, attempts=self.attempts, value=value)


async def _first(items: AsyncGenerator[T, None]) -> T:
    """The first item, closing the walk behind it (chat and completion calls yield one)."""
    async with aclosing(items) as opened:
        async for item in opened:
            return item
    raise AssertionError("unreachable: Router._attempts raises when tiers run out")


class Router:
    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        *,
        workspace: Path | None = None,
        health: HealthTracker | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.providers = dict(providers)
        self.workspace = workspace
        cfg = settings.router
        self.health = health or HealthTracker(
            failures=cfg.cooldown_failures,
            window_secs=cfg.cooldown_window_secs,
            cooldown_secs=cfg.cooldown_secs,
            clock=clock,
        )
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._tag_cache: dict[int, set[str]] = {}  # insertion-ordered; bounded below

    # -- public API -------------------------------------------------------------------

    def new_ledger(self) -> Ledger:
        c = self.settings.council
        return Ledger(budget_usd=c.budget_usd, budget_tokens=c.budget_tokens)

    async def chat(
        self,
        role: str,
        request: ChatRequest,
        *,
        ledger: Ledger | None = None,
        path: Path | str | None = None,
        language: str | None = None,
        accept: Accept[Any] | None = None,
        tiers: Sequence[Tier] | None = None,
    ) -> Routed:
        """Route a chat call for `role` (or through explicit `tiers`, e.g. council members)."""

        async def call(slot: Slot, asked: ChatRequest) -> AsyncIterator[Routed]:
            result = await self._call(slot, slot.provider.chat, asked)

            async def retry(again: ChatRequest) -> Result:
                # a repair is a call like any other: the budget is checked before it goes out
                self._check_budget(slot.ledger, slot.tier, again.text())
                again = again.model_copy(update={"model": slot.tier.model})
                return await self._call(slot, slot.provider.chat, again)

            yield slot.routed(result, None if accept is None else await accept(result, retry))

        return await _first(self._attempts(role, request, call, ledger, path, language, tiers))

    async def complete(
        self,
        role: str,
        request: CompletionRequest,
        *,
        ledger: Ledger | None = None,
        path: Path | str | None = None,
        language: str | None = None,
        tiers: Sequence[Tier] | None = None,
    ) -> Routed:
        """Route a completion (FIM when `request.suffix` is set) for `role`."""

        async def call(slot: Slot, asked: CompletionRequest) -> AsyncIterator[Routed]:
            yield slot.routed(await self._call(slot, slot.provider.complete, asked))

        return await _first(self._attempts(role, request, call, ledger, path, language, tiers))

    async def stream_chat(
        self,
        role: str,
        request: ChatRequest,
        *,
        ledger: Ledger | None = None,
        path: Path | str | None = None,
        language: str | None = None,
        tiers: Sequence[Tier] | None = None,
    ) -> AsyncIterator[Delta]:
        """Stream from the first tier that produces a token; see :meth:`_attempts`."""

        async def call(slot: Slot, asked: ChatRequest) -> AsyncIterator[Delta]:
            started = time.perf_counter()  # the caller's pauses between deltas count too
            usage: Usage | None = None
            try:
                async with aclosing(slot.provider.stream_chat(asked)) as stream:
                    async for delta in stream:
                        if delta.usage:
                            usage = delta.usage
                        yield delta
            except PolicyError:
                raise
            except ProviderError as exc:
                self._failed(slot, exc, time.perf_counter() - started)
                raise
            latency = time.perf_counter() - started
            self._succeeded(slot, usage or Usage(estimated=True), latency, "chat")

        walk = self._attempts(
            role, request, call, ledger, path, language, tiers, lambda d: bool(d.text)
        )
        async with aclosing(walk) as deltas:
            async for delta in deltas:
                yield delta

    def health_snapshot(self) -> list[EndpointHealth]:
        return [self.health.snapshot(name) for name in sorted(self.providers)]

    def eligible_tiers(
        self,
        role: str,
        *,
        path: Path | str | None = None,
        tags: set[str] | None = None,
        tiers: Sequence[Tier] | None = None,
    ) -> list[tuple[int, Tier]]:
        """The tiers a call would try, in order, before health is considered."""
        configured = self.settings.roles.tiers(role) if tiers is None else tuple(tiers)
        if not configured:
            raise NoTiers(
                f"role '{role}' has no tiers: set roles.{role} in council.toml "
                '(for example roles.{role} = ["ollama:qwen2.5-coder:7b"])'.replace("{role}", role)
            )
        eligible = list(enumerate(configured))
        reason = self._local_only_reason(path)
        if reason:
            refused = [t.target for _, t in eligible if not self._is_local(t.provider)]
            eligible = [(i, t) for i, t in eligible if self._is_local(t.provider)]
            if not eligible:
                raise LocalOnlyViolation(
                    f"local_only is on ({reason}) and role '{role}' has no local provider; "
                    f"refused: {', '.join(refused)}. Add a local tier to roles.{role}, or mark "
                    "a provider that runs on this machine with local = true."
                )
        if tags is not None:
            eligible = [(i, t) for i, t in eligible if not t.when or set(t.when) & tags]
        return eligible

    # -- the shared tier walk -----------------------------------------------------------

    async def _attempts(
        self,
        role: str,
        request: Req,
        call: Callable[[Slot, Req], AsyncIterator[T]],
        ledger: Ledger | None,
        path: Path | str | None,
        language: str | None,
        override: Sequence[Tier] | None,
        shown: Callable[[T], bool] = lambda _: True,
    ) -> AsyncGenerator[T, None]:
        """The one retry and escalation loop behind `chat`, `complete` and `stream_chat`.

        It applies the policy of the module docstring (tiers, budget, backoff, cooldowns) and
        re-yields, attempt by attempt, what `call(slot, asked)` yields, `asked` being the request
        for the slot's model. The call records its own outcome: only it knows when it is done.

        The stream rule: an attempt is retried or escalated only while nothing it yielded has
        been shown to the caller; `shown(item)` says whether an item is output the caller
        displays (a delta with text; an empty finish or usage delta is not). After that the
        call's own error is raised as it is, not `AllTiersFailed`: another tier's answer must
        not be spliced onto a half-shown one. Chat and completion calls yield one item, the
        whole answer, and their caller stops there, so the rule never applies to them.
        """
        ledger = ledger or self.new_ledger()
        attempts: list[str] = []
        cfg = self.settings.router
        text = request.text()
        tags = await self._tags(role, text, language, ledger, override)
        errors: list[ProviderError] = []
        for index, tier in self.eligible_tiers(role, path=path, tags=tags, tiers=override):
            provider = self.providers.get(tier.provider)
            if provider is None:
                attempts.append(f"{tier.target}: provider '{tier.provider}' is not configured")
                continue
            if not self.health.available(tier.provider):
                wait = self.health.cooldown_remaining(tier.provider)
                attempts.append(f"{tier.target}: skipped, cooling down ({wait:.0f}s left)")
                continue
            for attempt in range(cfg.max_retries + 1):
                self._check_budget(ledger, tier, text)
                slot = Slot(role, index, tier, provider, attempt, ledger, attempts)
                committed = False
                try:
                    asked = request.model_copy(update={"model": tier.model})
                    async with aclosing(call(slot, asked)) as items:
                        async for item in items:
                            committed = committed or shown(item)
                            yield item
                    return
                except PolicyError:
                    raise
                except ProviderError as exc:
                    if committed:
                        raise
                    error = exc  # handled below, so that a backoff runs outside the handler
                attempts.append(f"{tier.target} (attempt {attempt + 1}): {error}")
                errors.append(error)
                if not isinstance(error, Retryable) or attempt == cfg.max_retries:
                    break  # not transient (rejected, QualityFailure), or no retries left
                if not self.health.available(tier.provider):
                    break
                delay = self._backoff(attempt, error.retry_after)
                if delay is None:
                    attempts.append(
                        f"{tier.target}: Retry-After {error.retry_after:.0f}s exceeds "
                        f"router.retry_after_max_secs; escalating"
                    )
                    break
                log.info("retrying %s in %.2fs after: %s", tier.target, delay, error)
                await self._sleep(delay)
        raise AllTiersFailed(f"role '{role}': no tier could answer", attempts, errors)

    async def _call(
        self, slot: Slot, fn: Callable[[Any], Awaitable[Result]], request: Any
    ) -> Result:
        """One request that returns a whole `Result`, its outcome recorded either way."""
        started = time.perf_counter()
        try:
            result = await fn(request)
        except PolicyError:
            raise
        except ProviderError as exc:
            self._failed(slot, exc, time.perf_counter() - started)
            raise
        self._succeeded(slot, result.usage, result.latency_s, result.via, result.model)
        return result

    def _succeeded(
        self,
        slot: Slot,
        usage: Usage,
        latency_s: float,
        via: str,
        model: str | None = None,
    ) -> None:
        self.health.record_success(slot.tier.provider, latency_s)
        config = self.settings.providers.get(slot.tier.provider)
        price = config.price_for(slot.tier.model) if config else None
        cost = price.cost(usage.prompt_tokens, usage.completion_tokens) if price else 0.0
        slot.ledger.record(
            CallRecord(
                role=slot.role,
                provider=slot.tier.provider,
                model=model or slot.tier.model,
                tier=slot.tier_index,
                attempt=slot.attempt,
                outcome="ok",
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=cost,
                latency_s=latency_s,
                estimated_usage=usage.estimated,
                via=via,
            )
        )

    def _failed(self, slot: Slot, exc: ProviderError, latency_s: float) -> None:
        message = REDACTOR(str(exc))
        if isinstance(exc, Retryable) and self.health.record_failure(slot.tier.provider, message):
            log.warning("%s is cooling down after repeated failures", slot.tier.provider)
        slot.ledger.record(
            CallRecord(
                role=slot.role,
                provider=slot.tier.provider,
                model=slot.tier.model,
                tier=slot.tier_index,
                attempt=slot.attempt,
                outcome=f"error: {type(exc).__name__}",
                latency_s=latency_s,
            )
        )

    def _backoff(self, attempt: int, retry_after: float | None) -> float | None:
        cfg = self.settings.router
        if retry_after is not None:
            if retry_after > cfg.retry_after_max_secs:
                return None
            return retry_after
        ceiling = min(cfg.backoff_max_secs, cfg.backoff_base_secs * (2**attempt))
        return self._rng.uniform(0, ceiling)

    def _check_budget(self, ledger: Ledger, tier: Tier, text: str) -> None:
        tokens = estimate_tokens(text)
        config = self.settings.providers.get(tier.provider)
        price = config.price_for(tier.model) if config else None
        cost = price.cost(tokens, 0) if price else 0.0
        priced = bool(price and (price.input_per_mtok or price.output_per_mtok))
        ledger.check(tier.target, tokens, cost, priced=priced)

    # -- privacy and classification -------------------------------------------------------

    def _is_local(self, provider: str) -> bool:
        live = self.providers.get(provider)
        if live is not None:
            return bool(live.local)
        config = self.settings.providers.get(provider)
        return bool(config and config.is_local)

    def _local_only_reason(self, path: Path | str | None) -> str | None:
        if self.settings.council.local_only:
            return "council.local_only"
        if path is None or not self.settings.privacy.rules:
            return None
        candidate = Path(path)
        if self.workspace is not None and candidate.is_absolute():
            with suppress(ValueError):
                candidate = candidate.resolve().relative_to(self.workspace.resolve())
        posix = PurePosixPath(candidate.as_posix())
        decision: str | None = None
        for rule in self.settings.privacy.rules:  # later rules win, like .gitignore
            if posix.match(rule.glob) or fnmatch.fnmatch(str(posix), rule.glob):
                decision = f"privacy rule '{rule.glob}'" if rule.local_only else None
        return decision

    async def _tags(
        self,
        role: str,
        text: str,
        language: str | None,
        ledger: Ledger,
        override: Sequence[Tier] | None = None,
    ) -> set[str] | None:
        """Classify only when some tier of this role is conditional; None means no filter."""
        tiers = self.settings.roles.tiers(role) if override is None else override
        if role == "router" or not any(t.when for t in tiers):
            return None
        cfg = self.settings.router
        tags = rule_tags(text, language=language, large_chars=cfg.large_request_chars)
        if cfg.classifier == "off":
            return {t for t in tags if not t.startswith(("math", "general"))}
        use_llm = cfg.classifier == "llm" or (
            cfg.classifier == "auto" and bool(self.settings.roles.router)
        )
        if not use_llm:
            return tags
        key = hash((text, language))
        if key in self._tag_cache:
            return self._tag_cache[key]
        try:
            routed = await self.chat(
                "router",
                ChatRequest.of(text[:4000], system=ROUTER_SYSTEM, max_tokens=20, temperature=0),
                ledger=ledger,
            )
            category = parse_category(routed.result.text)
        except PolicyError:
            raise
        except ProviderError as exc:
            log.info("router model unavailable, classifying by rules: %s", exc)
            category = None
        if category:
            tags = {t for t in tags if t not in ("math", "general")} | {category}
        if len(self._tag_cache) >= 256:  # a long-lived server must not grow without bound
            self._tag_cache.pop(next(iter(self._tag_cache)))
        self._tag_cache[key] = tags
        return tags
