"""One inline completion: checks, window, cache, model, post-processing.

The completer is the same for the language server and `council complete`; the server adds
positions, superseding and the LSP types around it. Its order of work is cheapest first, so
that the commonest answers (nothing, or something cached) cost no model time:

disabled / not ready -> selected completion item applied -> automatic request in a bad spot
-> mode -> window -> cache (exact or typed-through) -> model (raced against cancellation
and a timeout) -> post-processing -> cache.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from council.completion import postprocess as pp
from council.completion.backends import Backend, BackendUnavailable, CancelToken, ModelAnswer
from council.completion.cache import CompletionCache, Key
from council.completion.context import LineTokenCounter, OtherDocument, Related, build_window
from providers.errors import ProviderError
from providers.settings import CompletionConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

# Block-end stops for multi-line answers inside an indented block: a new top-level
# statement can never belong to it.
_TOP_LEVEL_STOPS = ("\ndef ", "\nclass ", "\n@")


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
    reason: str  # ok, cached, typed-through, disabled, loading, unavailable, skipped, empty,
    #              superseded, timeout, error
    backend: str
    insert_text: str = ""  # what replaces the selected item's range (or the cursor)
    mode: pp.Mode | None = None
    model_ms: float = 0.0
    total_ms: float = 0.0
    via: str | None = None
    finish_reason: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def cached(self) -> bool:
        return self.reason in ("cached", "typed-through")


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
        answer = await self._complete(request, cancel)
        answer.total_ms = (time.perf_counter() - started) * 1000
        if answer.text:
            selected = request.selected.text if request.selected else ""
            answer.insert_text = selected + answer.text
        return answer

    async def _complete(self, request: InlineRequest, cancel: CancelToken) -> InlineAnswer:
        cfg, backend = self.config, self.backend
        started = time.perf_counter()  # the latency budget counts from here

        def empty(reason: str, **more: Any) -> InlineAnswer:
            return InlineAnswer("", reason, backend.name, **more)

        if not cfg.enabled:
            return empty("disabled")
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
        cursor = pp.Cursor.at(prefix, suffix)
        if not request.invoked and pp.skip_automatic(cursor):
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
            related=request.related if cfg.workspace_context else None,
        )
        scope = f"{self._scope}|{mode}|{hash(window.snippets)}"
        hit = self.cache.get(scope, prefix, suffix)
        if hit is not None:
            reason = "typed-through" if hit.typed else "cached"
            return InlineAnswer(hit.text, reason if hit.text else "cached", backend.name, mode=mode)

        stops = ["\n"] if mode == "single" else ["\n\n"]
        if mode == "multi" and pp.block_floor(cursor) > 0:
            stops += _TOP_LEVEL_STOPS
        max_lines = cfg.max_lines if mode == "multi" else 1
        try:
            raw = await _race(
                backend.infill(
                    window.prefix,
                    window.suffix,
                    max_tokens=new_tokens,
                    stop=stops,
                    temperature=cfg.temperature,
                    cancel=cancel,
                    path=request.path,
                    settled=lambda text: pp.settled(text, cursor, mode, max_lines),
                    deadline=started + cfg.max_latency_ms / 1000,
                ),
                cancel,
                cfg.timeout_secs,
            )
        except Superseded:
            return empty("superseded", mode=mode)
        except TimeoutError:
            cancel.cancel()
            return empty("timeout", mode=mode, error=f"no answer within {cfg.timeout_secs:g}s")
        except BackendUnavailable as exc:
            return empty("unavailable", mode=mode, error=str(exc))
        except ProviderError as exc:
            return empty("error", mode=mode, error=str(exc))
        except Exception as exc:  # a failing model must not fail the request or the server
            log.exception("inline completion backend %s failed", backend.name)
            return empty("error", mode=mode, error=f"{type(exc).__name__}: {exc}")
        if raw.finish_reason == "cancelled" or cancel.cancelled:
            return empty("superseded", mode=mode, model_ms=raw.model_s * 1000)
        text = raw.text
        if raw.finish_reason == "deadline":  # out of time: only whole lines are trusted
            text = pp.last_complete_line(text)
        suggestion = pp.finish(
            text,
            cursor,
            mode=mode,
            max_lines=max_lines,
            truncated=raw.finish_reason in ("length", "deadline"),
        )
        self.cache.put(Key.of(scope, prefix, suffix), suggestion)
        return InlineAnswer(
            suggestion,
            "ok" if suggestion else "empty",
            backend.name,
            mode=mode,
            model_ms=raw.model_s * 1000,
            via=raw.via,
            finish_reason=raw.finish_reason,
            details={
                "raw": raw.text,
                "prompt_tokens": raw.prompt_tokens,
                "reused_tokens": raw.reused_tokens,
            },
        )


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
