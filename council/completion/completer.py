"""One inline completion: checks, window, cache, model, post-processing.

The completer is the same for the language server and `council complete`; the server adds
positions, superseding and the LSP types around it. Its order of work is cheapest first, so
that the commonest answers (nothing, or something cached) cost no model time:

disabled / automatic under a manual trigger / not ready -> selected completion item applied
-> automatic request in a bad spot -> mode -> window -> cache (exact or typed-through) ->
model (raced against cancellation and a timeout) -> post-processing -> cache.

**Candidates.** With `completion.candidates = N > 1`, an *invoked* request (the user asked,
or is cycling: VS Code asks again as invoked on Alt+]) gets up to N distinct suggestions:
the first is the usual answer (at `completion.temperature`, greedy by default, so what is
shown first does not change), the others are sampled at `EXTRA_TEMPERATURE`, deduplicated
after post-processing. Automatic requests, which come at every pause in typing, stay at
one: extra candidates cost model time that nobody may look at. The calls start together:
providers answer in parallel; the specialist runs them one after another on its thread
(each reuses the prompt's KV cache, so an extra costs only its decoding), the extras within
one more `max_latency_ms`, so an invoked request takes at most about twice the budget.

**Explanations.** Every answer carries an `Explanation` (`council.completion.explain`): the
window as sent, each candidate's raw answer and post-processing steps, timings, outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from council.completion import postprocess as pp
from council.completion.backends import Backend, BackendUnavailable, CancelToken, ModelAnswer
from council.completion.cache import CompletionCache, Key
from council.completion.context import LineTokenCounter, OtherDocument, Related, build_window
from council.completion.explain import Candidate, Explanation
from providers.errors import ProviderError
from providers.settings import CompletionConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

# Block-end stops for multi-line answers inside an indented block: a new top-level
# statement can never belong to it.
_TOP_LEVEL_STOPS = ("\ndef ", "\nclass ", "\n@")
EXTRA_TEMPERATURE = 0.7  # diverse enough to differ, cool enough to stay plausible


class Superseded(Exception):
    """The request's cancel token fired (a newer request, or the client cancelled)."""


@dataclass(frozen=True)
class Selected:
    """The completion-menu item the user has selected: it replaces text[start:end]."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class InlineRequest:
    text: str
    offset: int  # the cursor, in code points
    invoked: bool
    selected: Selected | None = None
    path: str | None = None  # for privacy rules
    others: Callable[[], Iterable[OtherDocument]] | None = None  # for snippets, called lazily
    related: Related | None = None  # workspace chunks for the snippets (the workspace index)


@dataclass
class InlineAnswer:
    """The suggestion (`text` inserted at the cursor; "" for none) and how it came about."""

    text: str
    reason: str  # ok, cached, typed-through, disabled, manual, loading, unavailable, skipped,
    #              empty, superseded, timeout, error (council.completion.explain words them)
    backend: str
    insert_text: str = ""  # what replaces the selected item's range (or the cursor)
    more: list[str] = field(default_factory=list)  # other candidates, after `text`
    insert_more: list[str] = field(default_factory=list)
    mode: pp.Mode | None = None
    model_ms: float = 0.0
    total_ms: float = 0.0
    via: str | None = None
    finish_reason: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    explanation: Explanation | None = None

    @property
    def cached(self) -> bool:
        return self.reason in ("cached", "typed-through")

    @property
    def insert_texts(self) -> list[str]:
        """Every suggestion, as the editor inserts it (the first is the one shown)."""
        return [self.insert_text, *self.insert_more] if self.insert_text else []


class Completer:
    def __init__(
        self, config: CompletionConfig, backend: Backend, cache: CompletionCache | None = None
    ) -> None:
        self.config = config
        self.backend = backend
        self.cache = cache or CompletionCache()
        digest = hashlib.sha1(config.model_dump_json().encode(), usedforsecurity=False)
        self._scope = f"{backend.name}|{digest.hexdigest()[:12]}"
        self._count: LineTokenCounter | None = None  # made once the backend is ready

    async def complete(self, request: InlineRequest, cancel: CancelToken) -> InlineAnswer:
        started = time.perf_counter()
        ex = Explanation("invoked" if request.invoked else "automatic", backend=self.backend.name)
        answer = await self._complete(request, cancel, ex)
        answer.total_ms = (time.perf_counter() - started) * 1000
        if answer.text:
            selected = request.selected.text if request.selected else ""
            answer.insert_text = selected + answer.text
            answer.insert_more = [selected + t for t in answer.more]
        ex.reason, ex.error = answer.reason, answer.error
        ex.mode, ex.via = answer.mode, answer.via
        ex.suggestions = answer.insert_texts
        ex.timings["total"] = answer.total_ms
        answer.explanation = ex
        return answer

    async def _complete(
        self, request: InlineRequest, cancel: CancelToken, ex: Explanation
    ) -> InlineAnswer:
        cfg, backend = self.config, self.backend
        started = time.perf_counter()  # the latency budget counts from here

        def empty(reason: str, **more: Any) -> InlineAnswer:
            return InlineAnswer("", reason, backend.name, **more)

        if not cfg.enabled:
            return empty("disabled")
        if not request.invoked and cfg.trigger == "manual":
            return empty("manual")
        if not backend.ready:
            backend.start()
            if backend.error:
                return empty("unavailable", error=backend.error)
            return empty("loading")

        text, offset = request.text, max(0, min(request.offset, len(request.text)))
        sel = request.selected
        if sel is not None:
            end = max(sel.end, offset)
            text = text[: sel.start] + sel.text + text[end:]
            offset = sel.start + len(sel.text)
        prefix, suffix = text[:offset], text[offset:]
        ex.line, ex.column = prefix.count("\n"), offset - (prefix.rfind("\n") + 1)
        cursor = pp.Cursor.at(prefix, suffix)
        why = None if request.invoked else pp.skip_reason(cursor)
        if why is not None:
            ex.why = why
            return empty("skipped")
        mode = pp.choose_mode(cursor, invoked=request.invoked)

        new_tokens = cfg.max_tokens if mode == "single" else cfg.max_tokens_multiline
        budget = backend.prompt_budget(
            cfg.max_context_tokens, max(cfg.max_tokens, cfg.max_tokens_multiline)
        )
        others = request.others() if (cfg.snippets and request.others) else ()
        if self._count is None:
            self._count = LineTokenCounter(backend.count_tokens)
        window = build_window(
            prefix,
            suffix,
            budget=budget,
            count=self._count,
            others=others,
            snippet_budget=cfg.snippet_tokens if cfg.snippets else 0,
            related=request.related if cfg.uses_workspace_context() else None,
        )
        ex.set_window(window.prefix, window.snippets, window.suffix)
        ex.timings["window"] = (time.perf_counter() - started) * 1000
        scope = f"{self._scope}|{mode}|{hash(window.snippets)}"
        extras = cfg.candidates - 1 if request.invoked else 0
        hit = self.cache.get(scope, prefix, suffix)
        if hit is not None and (not extras or hit.sampled):
            reason = "typed-through" if hit.typed else "cached"
            return InlineAnswer(
                hit.text,
                reason if hit.text else "cached",
                backend.name,
                mode=mode,
                more=[*hit.more],
            )

        stops = ["\n"] if mode == "single" else ["\n\n"]
        if mode == "multi" and pp.block_floor(cursor) > 0:
            stops += _TOP_LEVEL_STOPS
        max_lines = cfg.max_lines if mode == "multi" else 1
        budget_s = cfg.max_latency_ms / 1000

        def call(temperature: float, seed: int, deadline: float) -> Awaitable[ModelAnswer]:
            return _race(
                backend.infill(
                    window.prefix,
                    window.suffix,
                    max_tokens=new_tokens,
                    stop=stops,
                    temperature=temperature,
                    cancel=cancel,
                    path=request.path,
                    settled=lambda text: pp.settled(text, cursor, mode, max_lines),
                    deadline=deadline,
                    seed=seed,
                ),
                cancel,
                cfg.timeout_secs,
            )

        # A cached first answer without the extras (an automatic request put it there) is
        # kept: only the extras are sampled, so the suggestion on screen does not change.
        known = hit.text if hit is not None else None
        calls = [] if known is not None else [call(cfg.temperature, 0, started + budget_s)]
        hot = max(cfg.temperature, EXTRA_TEMPERATURE)
        calls += [call(hot, seed, started + 2 * budget_s) for seed in range(1, extras + 1)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        if known is None:
            first = results[0]
            if isinstance(first, BaseException):
                return self._failed(first, cancel, mode)
            results = results[1:]
        else:
            first = None
        ex.timings["model"] = (time.perf_counter() - started) * 1000 - ex.timings["window"]
        if cancel.cancelled or (first is not None and first.finish_reason == "cancelled"):
            return empty("superseded", mode=mode, model_ms=first.model_s * 1000 if first else 0)

        def post(raw: ModelAnswer, temperature: float) -> str:
            text = raw.text
            if raw.finish_reason == "deadline":  # out of time: only whole lines are trusted
                text = pp.last_complete_line(text)
            suggestion, steps = pp.finish_steps(
                text,
                cursor,
                mode=mode,
                max_lines=max_lines,
                truncated=raw.finish_reason in ("length", "deadline"),
            )
            if text != raw.text:
                steps.insert(0, ("keep complete lines (latency budget)", raw.text, text))
            candidate = Candidate(temperature, raw.text, raw.finish_reason, raw.model_s * 1000)
            candidate.steps, candidate.text = steps, suggestion
            candidate.clip()
            ex.candidates.append(candidate)
            return suggestion

        texts: list[str] = []
        if first is not None:
            texts.append(post(first, cfg.temperature))
        elif known is not None:
            texts.append(known)
        for extra in results:
            if isinstance(extra, ModelAnswer):
                texts.append(post(extra, hot))
            else:  # an extra that failed costs its suggestion, not the request's
                ex.candidates.append(Candidate(hot, note=f"failed: {extra!r}"))
        distinct = list(dict.fromkeys(t for t in texts if t))
        shown = distinct[0] if distinct else ""
        self.cache.put(Key.of(scope, prefix, suffix), shown, tuple(distinct[1:]), extras > 0)
        lead = first or next((r for r in results if isinstance(r, ModelAnswer)), None)
        return InlineAnswer(
            shown,
            "ok" if shown else "empty",
            backend.name,
            mode=mode,
            more=distinct[1:],
            model_ms=sum(c.model_ms for c in ex.candidates),
            via=lead.via if lead else None,
            finish_reason=lead.finish_reason if lead else None,
            details={
                "raw": lead.text if lead else "",
                "prompt_tokens": lead.prompt_tokens if lead else 0,
                "reused_tokens": lead.reused_tokens if lead else 0,
            },
        )

    def _failed(self, exc: BaseException, cancel: CancelToken, mode: pp.Mode) -> InlineAnswer:
        """The answer when the first candidate's call raised."""
        name = self.backend.name
        if isinstance(exc, Superseded):
            return InlineAnswer("", "superseded", name, mode=mode)
        if isinstance(exc, TimeoutError):
            cancel.cancel()
            error = f"no answer within {self.config.timeout_secs:g}s"
            return InlineAnswer("", "timeout", name, mode=mode, error=error)
        if isinstance(exc, BackendUnavailable):
            return InlineAnswer("", "unavailable", name, mode=mode, error=str(exc))
        if isinstance(exc, ProviderError):
            return InlineAnswer("", "error", name, mode=mode, error=str(exc))
        if not isinstance(exc, Exception):  # CancelledError and friends: not ours to swallow
            raise exc
        # a failing model must not fail the request or the server
        log.error("inline completion backend %s failed", name, exc_info=exc)
        return InlineAnswer("", "error", name, mode=mode, error=f"{type(exc).__name__}: {exc}")


async def _race(
    call: Coroutine[Any, Any, ModelAnswer], cancel: CancelToken, timeout: float
) -> ModelAnswer:
    """Await `call` unless the token fires or time runs out; either way it is cancelled
    (which closes its HTTP request) and the token is set (which stops the specialist)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(call)
    task.add_done_callback(_retrieve)
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = loop.call_later(timeout, expire)
    cancel.on_cancel(task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the request itself was cancelled ($/cancelRequest): let it through
        if expired:
            raise TimeoutError from None
        raise Superseded from None
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a cancelled/abandoned task's exception as seen (no 'never retrieved' noise)."""
    if not task.cancelled():
        task.exception()
