"""The inline completer against a real (loopback) provider: what is sent and how the
answer is cut, FIM fallbacks, cancellation and timeouts closing the HTTP request, cheap
answers, the completion settings, and decoding that stops where post-processing cuts.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from council.completion.backends import CancelToken, RouterBackend, fixed_router
from council.completion.completer import Completer, InlineRequest, Selected
from providers.loopback import LoopbackProvider, Reply
from providers.registry import build_providers, close_all
from providers.router import Router
from providers.settings import CompletionConfig
from tests.conftest import settings_for

# -- the completer against a real (loopback) provider ---------------------------------------------


def _completer(lb: LoopbackProvider, model: str, **completion: object) -> tuple[Completer, Router]:
    settings = settings_for(
        providers={"lb": {"base_url": lb.base_url}},
        router={"max_retries": 0},
        completion={"backend": f"lb:{model}", **completion},
    )
    router = Router(settings, build_providers(settings))
    backend = RouterBackend(
        settings.completion.backend,
        lambda: fixed_router(router),
        settings.completion.fim_format,
    )
    return Completer(settings.completion, backend), router


def _completions(lb: LoopbackProvider) -> list[dict]:
    return [r.body for r in lb.requests if r.path.endswith("/completions") and r.body]


@pytest.mark.anyio
async def test_completer_sends_suffix_and_post_processes() -> None:
    with LoopbackProvider(models=("starcoder2:3b",)) as lb:
        completer, router = _completer(lb, "starcoder2:3b")
        lb.script(Reply(content="a + b)\nmore"))
        text = "def add(a, b):\n    return ()\n"
        answer = await completer.complete(
            InlineRequest(text, text.index("()") + 1, False), CancelToken()
        )
        assert (answer.text, answer.reason, answer.via) == ("a + b", "ok", "fim")
        body = _completions(lb)[0]
        assert body["prompt"].endswith("return (") and body["suffix"] == ")\n"
        assert body["stop"] == ["\n"] and body["max_tokens"] == 48
        again = await completer.complete(
            InlineRequest(text, text.index("()") + 1, False), CancelToken()
        )
        assert again.reason == "cached" and len(_completions(lb)) == 1
        await close_all(router.providers)


@pytest.mark.anyio
async def test_a_named_format_is_sent_raw() -> None:
    with LoopbackProvider(models=("mystery-model",)) as lb:
        completer, router = _completer(lb, "mystery-model", fim_format="codellama")
        lb.script(Reply(content="1"))
        answer = await completer.complete(InlineRequest("x = \n", 4, True), CancelToken())
        body = _completions(lb)[0]
        assert answer.text == "1" and answer.via == "fim-raw:codellama"
        assert body["prompt"] == "<PRE> x =  <SUF>\n <MID>" and "suffix" not in body
        assert "<EOT>" in body["stop"] and len(body["stop"]) <= 4
        await close_all(router.providers)


@pytest.mark.anyio
async def test_refused_suffix_falls_back_to_chat_then_to_the_family_format() -> None:
    """Without the canary's verdict (fim_way unknown, e.g. the provider cannot run it), a
    refused suffix goes over chat, then to the family's raw prompt guessed from the name."""
    with LoopbackProvider(models=("qwen2.5-coder:1.5b",), supports_suffix=False) as lb:
        completer, router = _completer(lb, "qwen2.5-coder:1.5b")
        completer.backend._way = "suffix"  # type: ignore[attr-defined]  # as if not asked
        lb.script(Reply(content="```python\nfirst\n```"), Reply(content="second"))
        a = await completer.complete(InlineRequest("x = \ny = 2\n", 4, False), CancelToken())
        assert (a.text, a.via) == ("first", "fim-over-chat")
        b = await completer.complete(InlineRequest("z = \ny = 2\n", 4, False), CancelToken())
        assert (b.text, b.via) == ("second", "fim-raw:qwen")
        paths = [r.path for r in lb.requests]
        assert paths == ["/v1/completions", "/v1/chat/completions", "/v1/completions"]
        chat = lb.requests[1].body["messages"][-1]["content"]
        assert chat == "x = <FILL>\ny = 2\n"
        raw = lb.requests[2].body
        assert raw["prompt"] == "<|fim_prefix|>z = <|fim_suffix|>\ny = 2\n<|fim_middle|>"
        assert "suffix" not in raw
        await close_all(router.providers)


@pytest.mark.anyio
async def test_suffix_format_stays_on_chat_when_refused() -> None:
    with LoopbackProvider(models=("qwen2.5-coder:1.5b",), supports_suffix=False) as lb:
        completer, router = _completer(lb, "qwen2.5-coder:1.5b", fim_format="suffix")
        lb.script(Reply(content="1"), Reply(content="2"))
        for line in ("x = \n", "y = \n"):
            answer = await completer.complete(InlineRequest(line, 4, False), CancelToken())
            assert answer.via == "fim-over-chat"
        await close_all(router.providers)


@pytest.mark.anyio
async def test_cancel_and_timeout_close_the_http_request() -> None:
    with LoopbackProvider(models=("m",)) as lb:
        completer, router = _completer(lb, "m", timeout_secs=0.3)
        lb.script(Reply(content="slow", delay=5))
        started = time.monotonic()
        answer = await completer.complete(InlineRequest("x = \n", 4, False), CancelToken())
        assert answer.reason == "timeout" and time.monotonic() - started < 2
        record = await asyncio.to_thread(
            lb.wait_for, lambda r: r.client_disconnected_at is not None, 10
        )
        assert record.body["prompt"] == "x = "

        await close_all(router.providers)

        # cancellation, with a timeout long enough that only the token can end the request:
        # with the 0.3 s one, a request slow to go out (seen twice in full-suite runs on the
        # 2-core machine) timed out before the server saw it
        completer, router = _completer(lb, "m", timeout_secs=30)
        lb.script(Reply(content="slow", delay=5))
        token = CancelToken()
        task = asyncio.ensure_future(completer.complete(InlineRequest("y = \n", 4, False), token))
        await asyncio.to_thread(lb.wait_for, lambda r: r.body and r.body["prompt"] == "y = ", 10)
        token.cancel()
        answer = await asyncio.wait_for(task, 2)
        assert answer.reason == "superseded"
        await asyncio.to_thread(
            lb.wait_for,
            lambda r: r.body["prompt"] == "y = " and r.client_disconnected_at is not None,
            10,
        )
        await close_all(router.providers)


@pytest.mark.anyio
async def test_completer_cheap_answers_need_no_model() -> None:
    with LoopbackProvider(models=("m",)) as lb:
        completer, router = _completer(lb, "m")
        skipped = await completer.complete(InlineRequest("x = foo\n", 5, False), CancelToken())
        assert skipped.reason == "skipped"
        off, _ = _completer(lb, "m", enabled=False)
        assert (await off.complete(InlineRequest("x = \n", 4, True), CancelToken())).reason == (
            "disabled"
        )
        assert lb.requests == []
        await close_all(router.providers)


@pytest.mark.anyio
async def test_selected_completion_item_is_part_of_the_prefix_and_the_answer() -> None:
    with LoopbackProvider(models=("m",)) as lb:
        completer, router = _completer(lb, "m")
        lb.script(Reply(content="('a', 'b')"))
        text = "import os\nos.path.jo\n"
        cursor = text.index("\n", 10)
        start = text.index("jo")
        request = InlineRequest(text, cursor, False, Selected(start, cursor, "join"))
        answer = await completer.complete(request, CancelToken())
        assert answer.text == "('a', 'b')" and answer.insert_text == "join('a', 'b')"
        assert _completions(lb)[0]["prompt"].endswith("os.path.join")
        await close_all(router.providers)


def test_settings_validate_completion_fields() -> None:
    assert CompletionConfig().max_context_tokens == 384
    with pytest.raises(ValueError, match="provider:model"):
        CompletionConfig(backend="ollama")
    with pytest.raises(ValueError):
        CompletionConfig(fim_format="gpt")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CompletionConfig(max_tokens=0)


# -- decoding stops early ---------------------------------------------------------------------


class _TypingBackend:
    """A backend that 'decodes' a fixed answer one character per millisecond and honours
    `settled` and `deadline` as the specialist does (the completer is what is under test)."""

    name = "typist"
    ready = True
    error = None

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.emitted = 0

    def start(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 3)

    def prompt_budget(self, configured: int, max_new_tokens: int) -> int:
        return configured

    async def infill(self, prefix, suffix, *, settled=None, deadline=None, **_):
        from council.completion.backends import ModelAnswer

        text, reason = "", "length"
        for ch in self.answer:
            if deadline is not None and time.perf_counter() >= deadline:
                reason = "deadline"
                break
            text += ch
            await asyncio.sleep(0.001)
            if settled is not None and settled(text):
                reason = "stop"
                break
        self.emitted = len(text)
        return ModelAnswer(text, 0.0, reason, "typist")

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_decoding_stops_where_post_processing_cuts_and_within_the_budget():
    body = "total = a + b\n    return total\n\ndef other():\n    pass\n" + "# noise\n" * 40
    prefix, suffix = "def add(a, b):\n    ", "\n"
    request = InlineRequest(text=prefix + suffix, offset=len(prefix), invoked=False)
    backend = _TypingBackend(body)
    completer = Completer(CompletionConfig(max_latency_ms=60_000), backend)
    answer = await completer.complete(request, CancelToken())
    assert answer.text == "total = a + b\n    return total"
    assert answer.finish_reason == "stop"
    assert backend.emitted == len("total = a + b\n    return total\n\n")  # not the whole body
    slow = _TypingBackend("total = a + b\n    return total + " + "x" * 10_000)
    completer = Completer(CompletionConfig(max_latency_ms=200), slow)
    started = time.perf_counter()
    answer = await completer.complete(request, CancelToken())
    assert time.perf_counter() - started < 2.0
    assert answer.finish_reason == "deadline"
    assert answer.text == "total = a + b"  # the last complete line, not the partial one
