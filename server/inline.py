"""The state behind `textDocument/inlineCompletion`: completer, in-flight tokens, statistics.

`server.features.inline_completion` registers the feature and describes its behaviour; it
builds `InlineCompletions` on the first settings load or request, so the completer
and its backends are not imported before `initialize` is answered.

Each request's outcome is recorded once (`_record`): the history and counters of
`council/inlineStats`, the last outcome per document and overall, the `council/inlineOutcome`
notification for clients that asked for it, and the request's explanation (the last per
document, for `council/explainCompletion`). Status bars, `:checkhealth` and *Explain Last
Completion* all read that one record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from lsprotocol import types

from council.completion.backends import CancelToken, SpecialistBackend, build_backend
from council.completion.completer import Completer, InlineAnswer, InlineRequest, Selected
from council.completion.context import OtherDocument, SnippetIndex
from council.completion.explain import Explanation, outcome, render
from providers.router import Router
from providers.settings import CompletionConfig, Settings
from server.app import CouncilServer

log = logging.getLogger(__name__)

_HISTORY = 1024
_EXPLAINED = 64  # documents whose last explanation is kept (each at most ~2 x 20 kB of prompt)
OUTCOME_METHOD = "council/inlineOutcome"
# A client opts in to the notification with this key in `capabilities.experimental`: a
# client that does not know the method must not receive it.
OUTCOME_CAPABILITY = "councilInlineOutcome"


@dataclass
class RequestStat:
    seq: int
    uri: str
    trigger: str  # "automatic" or "invoked"
    reason: str  # the completer's reason, or "cancelled" for $/cancelRequest
    outcome: str  # the reason in words, for status bars: "skipped mid-word", ...
    items: int  # suggestions sent (completion.candidates may make it more than one)
    handlerMs: float  # JSON field names are camelCase, like the protocol's
    completerMs: float
    modelMs: float
    chars: int
    promptTokens: int
    reusedTokens: int  # prompt tokens whose KV cache the specialist kept from the last call


def _is_python(uri: str, language_id: str | None) -> bool:
    if language_id:
        return language_id == "python"
    return uri.endswith((".py", ".pyi"))


class InlineCompletions:
    """The feature's state: the completer for the current settings, in-flight tokens, stats."""

    def __init__(self, server: CouncilServer) -> None:
        self.server = server
        self.completer: Completer | None = None
        self.inflight: dict[str, CancelToken] = {}
        self.snippets = SnippetIndex()
        self.history: deque[RequestStat] = deque(maxlen=_HISTORY)
        self.last: OrderedDict[str, RequestStat] = OrderedDict()  # per document, newest last
        self.explained: OrderedDict[str, Explanation] = OrderedDict()
        self.counters: Counter[str] = Counter()
        self._seq = 0
        self._reported: set[str] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._asked = False  # an inline request arrived (the client supports it after all)

    # -- configuration and warm-up ----------------------------------------------------------

    def configure(self, settings: Settings) -> None:
        """Settings listener: build a new completer when `[completion]` changed."""
        config = settings.completion
        if self.completer is not None and self.completer.config == config:
            return
        old = self.completer
        reuse = old.backend if old is not None else None
        backend = build_backend(config, self._lease, reuse=reuse)
        self.completer = Completer(config, backend)
        self._reported.clear()
        if old is not None:
            for token in list(self.inflight.values()):
                token.cancel()
            if old.backend is not backend:
                self._spawn(old.backend.aclose())
        if self._wanted():
            self._warm(self.completer)

    def _wanted(self) -> bool:
        caps = self.server.client_capabilities
        advertised = bool(caps and caps.text_document and caps.text_document.inline_completion)
        return advertised or self._asked

    def _warm(self, completer: Completer) -> None:
        if not completer.config.enabled:
            return
        backend = completer.backend
        backend.start()
        if isinstance(backend, SpecialistBackend):
            self._spawn(self._watch_load(completer, backend))

    async def _watch_load(self, completer: Completer, backend: SpecialistBackend) -> None:
        await backend.loaded()
        if backend.error and completer is self.completer:
            self._report("unavailable", backend.error, types.MessageType.Error)
        elif backend.ready:
            log.info("inline completions ready (%s)", backend.name)

    def _current(self) -> Completer:
        if self.completer is None:
            self.configure(self.server.settings)
        assert self.completer is not None
        return self.completer

    @contextlib.asynccontextmanager
    async def _lease(self) -> AsyncIterator[Router]:
        """The server's current router, held so a settings change cannot close it mid-call."""
        epoch = await self.server.ready_epoch()
        epoch.users += 1
        try:
            yield epoch.router
        finally:
            await self.server.release(epoch)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _report(
        self, category: str, message: str, kind: types.MessageType = types.MessageType.Warning
    ) -> None:
        """Show the first problem of each kind once per configuration (a dead provider would
        otherwise pop up a message per keystroke); the rest only go to the log."""
        if category in self._reported:
            log.info("inline completion (%s): %s", category, message)
            return
        self._reported.add(category)
        self.server.window_show_message(
            types.ShowMessageParams(type=kind, message=f"Council inline completions: {message}")
        )

    # -- requests -----------------------------------------------------------------------------

    async def handle(self, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        started = time.perf_counter()
        uri = params.text_document.uri
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        token = CancelToken()
        previous = self.inflight.get(uri)
        if previous is not None:
            previous.cancel()
        self.inflight[uri] = token
        answer: InlineAnswer | None = None
        reason = "cancelled"
        try:
            if not self._asked:
                self._asked = True
                if self.completer is not None:
                    self._warm(self.completer)
            completer = self._current()
            request = self._request(params, invoked)
            if request is None:
                reason = "not-python"
                return types.InlineCompletionList(items=[])
            answer = await completer.complete(request, token)
            reason = answer.reason
            if answer.error and answer.reason in ("unavailable", "error", "timeout"):
                self._report(answer.reason, answer.error)
            return self._result(params, answer)
        finally:
            token.cancel()  # a cancelled task's model work stops at the next token
            if self.inflight.get(uri) is token:
                del self.inflight[uri]
            self._record(uri, invoked, reason, answer, started)
            self._explain(uri, invoked, reason, answer)

    def _request(self, params: types.InlineCompletionParams, invoked: bool) -> InlineRequest | None:
        ls = self.server
        uri = params.text_document.uri
        doc = ls.workspace.get_text_document(uri)
        if not _is_python(uri, doc.language_id):
            return None
        try:
            text = doc.source
        except OSError:
            return None
        offset_of = doc.offset_at_position  # LSP lines and UTF-16 units (server.text)
        offset = offset_of(params.position)
        selected = None
        info = params.context.selected_completion_info
        if info is not None:
            start, end = offset_of(info.range.start), offset_of(info.range.end)
            if start <= offset:
                selected = Selected(start, end, info.text)

        def others() -> list[OtherDocument]:
            open_docs = ls.workspace.text_documents
            self.snippets.retain(open_docs)
            found = []
            for other_uri, other in list(open_docs.items()):
                if other_uri == uri or not _is_python(other_uri, other.language_id):
                    continue
                defs = self.snippets.get(other_uri, other.version, other.source)
                if defs:
                    label = ls.relative(other_uri) or other.filename or other_uri
                    found.append(OtherDocument(label, defs))
            return found

        path = ls.path_of(uri)
        return InlineRequest(
            text=text,
            offset=offset,
            invoked=invoked,
            selected=selected,
            path=str(path) if path else None,
            others=others,
            related=ls.workspace_index.related(uri) if ls.workspace_index else None,
        )

    def _result(
        self, params: types.InlineCompletionParams, answer: InlineAnswer
    ) -> types.InlineCompletionList:
        start = end = params.position
        info = params.context.selected_completion_info
        if info is not None:
            start = info.range.start
            if (info.range.end.line, info.range.end.character) > (end.line, end.character):
                end = info.range.end
        items = [
            types.InlineCompletionItem(insert_text=text, range=types.Range(start=start, end=end))
            for text in answer.insert_texts  # the first is shown; editors cycle to the others
        ]
        return types.InlineCompletionList(items=items)

    def _record(
        self,
        uri: str,
        invoked: bool,
        reason: str,
        answer: InlineAnswer | None,
        started: float,
    ) -> None:
        self._seq += 1
        self.counters["requests"] += 1
        self.counters[reason] += 1
        why = answer.explanation.why if answer and answer.explanation else None
        stat = RequestStat(
            seq=self._seq,
            uri=uri,
            trigger="invoked" if invoked else "automatic",
            reason=reason,
            outcome=outcome(reason, why),
            items=len(answer.insert_texts) if answer else 0,
            handlerMs=round((time.perf_counter() - started) * 1000, 3),
            completerMs=round(answer.total_ms, 3) if answer else 0.0,
            modelMs=round(answer.model_ms, 3) if answer else 0.0,
            chars=len(answer.text) if answer else 0,
            promptTokens=answer.details.get("prompt_tokens", 0) if answer else 0,
            reusedTokens=answer.details.get("reused_tokens", 0) if answer else 0,
        )
        self.history.append(stat)
        self.last.pop(uri, None)
        self.last[uri] = stat
        while len(self.last) > _EXPLAINED:
            self.last.popitem(last=False)
        if self._notify_outcomes():
            self.server.protocol.notify(OUTCOME_METHOD, asdict(stat))

    def _notify_outcomes(self) -> bool:
        caps = self.server.client_capabilities
        experimental = caps.experimental if caps else None
        return isinstance(experimental, dict) and bool(experimental.get(OUTCOME_CAPABILITY))

    def _explain(self, uri: str, invoked: bool, reason: str, answer: InlineAnswer | None) -> None:
        """Keep the request's explanation, the last one per document (bounded)."""
        ex = answer.explanation if answer else None
        if ex is None:  # cancelled by the client, or not a Python document: no completer story
            ex = Explanation("invoked" if invoked else "automatic", reason=reason)
        ex.uri, ex.reason, ex.document = uri, reason, self.server.relative(uri)
        self.explained.pop(uri, None)
        self.explained[uri] = ex
        while len(self.explained) > _EXPLAINED:
            self.explained.popitem(last=False)

    def explain(self, uri: str | None) -> dict[str, Any]:
        """`council/explainCompletion`: the document's last explanation (or the last of all)."""
        if uri is None:
            ex = next(reversed(self.explained.values()), None)
        else:
            ex = self.explained.get(uri)
        return {
            "found": ex is not None,
            "markdown": render(ex),
            "explanation": ex.as_json() if ex else None,
        }

    def stats(self, since: int = 0, uri: str | None = None) -> dict[str, Any]:
        completer = self.completer
        backend = completer.backend if completer else None
        config: CompletionConfig | None = completer.config if completer else None
        load_s = getattr(getattr(backend, "specialist", None), "load_s", None)
        return {
            "backend": backend.name if backend else None,
            "enabled": bool(config and config.enabled),
            "ready": bool(backend and backend.ready),
            "error": backend.error if backend else None,
            "loadSeconds": load_s,
            "cacheEntries": len(completer.cache) if completer else 0,
            "trigger": config.trigger if config else None,
            "candidates": config.candidates if config else None,
            "counters": dict(self.counters),
            "last": asdict(self.history[-1]) if self.history else None,
            "lastForDocument": asdict(self.last[uri]) if uri in self.last else None,
            "inFlight": sorted(self.inflight),  # documents with a request being answered
            "requests": [asdict(r) for r in self.history if r.seq > since],
        }
