"""The OpenAI-compatible client against a real loopback HTTP server (no client mocks)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import anyio
import pytest
from pydantic import BaseModel

from providers.base import ChatRequest, CompletionRequest
from providers.errors import (
    ConnectionFailed,
    MalformedResponse,
    ProviderTimeout,
    RateLimited,
    RequestRejected,
    Retryable,
    ServerFault,
)
from providers.loopback import LoopbackProvider, Reply
from providers.openai_compat import OpenAICompatProvider, parse_retry_after
from providers.settings import ProviderConfig

pytestmark = pytest.mark.anyio


_open: list[OpenAICompatProvider] = []


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    """Close every client a test made, inside the test's event loop."""
    yield
    while _open:
        await _open.pop().aclose()


def client(
    server: LoopbackProvider, *, timeout: float = 10.0, **config: object
) -> OpenAICompatProvider:
    return at(server.base_url, timeout=timeout, **config)


def at(base_url: str, *, timeout: float = 10.0, **config: object) -> OpenAICompatProvider:
    cfg = ProviderConfig.model_validate({"base_url": base_url, **config})
    provider = OpenAICompatProvider("lb", cfg, timeout_secs=timeout, probe_timeout_secs=2.0)
    _open.append(provider)
    return provider


class Answer(BaseModel):
    name: str
    count: int
    tags: list[str]


async def test_chat_returns_text_usage_and_who_answered(loopback: LoopbackProvider) -> None:
    provider = client(loopback)
    result = await provider.chat(ChatRequest.of("hello there", model="m1"))
    assert result.text == "loopback reply to: hello there"
    assert (result.provider, result.model, result.via) == ("lb", "m1", "chat")
    assert result.usage.prompt_tokens == 2 and result.usage.completion_tokens == 5
    assert not result.usage.estimated
    assert result.latency_s > 0


async def test_streaming_chat_yields_pieces_then_finish_with_usage(
    loopback: LoopbackProvider,
) -> None:
    provider = client(loopback)
    deltas = [d async for d in provider.stream_chat(ChatRequest.of("stream me", model="m1"))]
    assert "".join(d.text for d in deltas) == "loopback reply to: stream me"
    assert len([d for d in deltas if d.text]) > 1
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 5


async def test_json_schema_mode_is_sent_and_answer_validates(loopback: LoopbackProvider) -> None:
    provider = client(loopback)
    schema = Answer.model_json_schema()
    result = await provider.chat(ChatRequest.of("give json", model="m1", json_schema=schema))
    Answer.model_validate_json(result.text)
    sent = loopback.requests[-1].body
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == schema


async def test_json_schema_refused_falls_back_to_json_object_then_the_prompt() -> None:
    with LoopbackProvider(
        models=("m1",), supports_json_schema=False, supports_json_object=False
    ) as server:
        provider = client(server)
        schema = Answer.model_json_schema()
        await provider.chat(ChatRequest.of("give json", model="m1", json_schema=schema))
        first, second, third = server.requests
        assert first.status == 400 and first.body["response_format"]["type"] == "json_schema"
        assert second.status == 400 and second.body["response_format"] == {
            "type": "json_object",
            "schema": schema,
        }
        assert "response_format" not in third.body
        assert "JSON schema" in third.body["messages"][-1]["content"]
        # Learned: the next call goes straight to schema-in-prompt.
        await provider.chat(ChatRequest.of("again", model="m1", json_schema=schema))
        assert len(server.requests) == 4 and "response_format" not in server.requests[3].body


async def test_llama_cpp_python_refuses_json_schema_with_a_500_and_takes_json_object() -> None:
    """llama-cpp-python 0.3.x answers json_schema with HTTP 500 naming response_format; that
    is an unsupported feature, not a server fault: no retry, no cooldown, json_object next,
    and the probe resolves it instead of answering '?'."""
    with LoopbackProvider(models=("m1",), like="llama-cpp-python") as server:
        provider = client(server)
        schema = Answer.model_json_schema()
        result = await provider.chat(ChatRequest.of("give json", model="m1", json_schema=schema))
        Answer.model_validate_json(result.text)  # enforced by the server's grammar
        first, second = server.requests
        assert first.status == 500 and "response_format" in first.body
        assert second.status == 200 and second.body["response_format"]["type"] == "json_object"
        assert "JSON schema" in second.body["messages"][-1]["content"]
        caps = await client(server).probe("m1")
        assert caps.json_schema is False and caps.json_object is True


async def test_a_request_over_the_context_is_refitted_once_and_the_context_remembered() -> None:
    """llama-cpp-python's default context is 2,048 tokens and the structured calls asked for
    4,096: every call failed with HTTP 400 'maximum context length'."""
    with LoopbackProvider(models=("m1",), context=300) as server:
        provider = client(server)
        request = ChatRequest.of("word " * 50, model="m1", max_tokens=4096)
        await provider.chat(request)
        first, second = server.requests
        assert first.status == 400
        # the loopback counts a word as a token, as its refusal reported
        prompt = sum(len(m["content"].split()) for m in first.body["messages"])
        assert second.status == 200 and second.body["max_tokens"] == 300 - prompt - 16
        await provider.chat(request)  # remembered: fitted before sending
        assert server.requests[2].status == 200 and server.requests[2].body["max_tokens"] <= 234
        # A prompt that leaves no room is still refused, clearly, without a loop.
        with pytest.raises(RequestRejected, match="maximum context length"):
            await provider.chat(ChatRequest.of("word " * 295, model="m1", max_tokens=64))


async def test_fim_with_suffix(loopback: LoopbackProvider) -> None:
    provider = client(loopback)
    result = await provider.complete(
        CompletionRequest(prompt="def add(a, b):\n    return ", suffix="\n", model="m1")
    )
    assert result.via == "fim" and result.text == "pass"
    assert loopback.requests[-1].path.endswith("/completions")
    assert loopback.requests[-1].body["suffix"] == "\n"


async def test_fim_refused_falls_back_to_infill_over_chat() -> None:
    with LoopbackProvider(models=("m1",), supports_suffix=False) as server:
        server.script(Reply(content="```python\na + b\n```"))
        provider = client(server)
        result = await provider.complete(
            CompletionRequest(prompt="def add(a, b):\n    return ", suffix="\n", model="m1")
        )
        assert result.via == "fim-over-chat"
        assert result.text == "a + b"
        chat = server.requests[-1]
        assert chat.path.endswith("/chat/completions")
        assert "return <FILL>\n" in chat.body["messages"][-1]["content"]


async def test_probe_reports_capabilities_and_latency() -> None:
    with (
        LoopbackProvider(models=("m1",)) as good,
        LoopbackProvider(
            models=("m1",), supports_suffix=False, supports_json_schema=False
        ) as limited,
    ):
        caps = await client(good).probe("m1")
        assert caps.reachable and caps.fim and caps.json_schema and caps.model_listed
        assert caps.latency_ms is not None and caps.latency_ms >= 0
        caps = await client(limited).probe("m1")
        assert caps.reachable and caps.fim is False and caps.json_schema is False
        caps = await client(good).probe("not-there")
        assert caps.model_listed is False


async def test_probe_respects_capability_overrides(loopback: LoopbackProvider) -> None:
    provider = client(loopback, capabilities={"fim": False, "json_schema": True})
    caps = await provider.probe("m1")
    assert caps.fim is False and caps.json_schema is True
    assert {r.path for r in loopback.requests} == {"/v1/models"}


async def test_probe_unreachable_is_a_row_not_an_exception(closed_port: int) -> None:
    caps = await at(f"http://127.0.0.1:{closed_port}/v1").probe("m")
    assert not caps.reachable
    assert caps.error and "cannot connect" in caps.error


@pytest.mark.parametrize(
    ("reply", "error_type"),
    [
        (Reply(status=429, headers={"Retry-After": "2"}), RateLimited),
        (Reply(status=500), ServerFault),
        (Reply(status=503), ServerFault),
        (Reply(malformed=True), MalformedResponse),
        (Reply(reset=True), Retryable),
        (Reply(status=400, body='{"error": {"message": "bad"}}'), RequestRejected),
    ],
)
async def test_faults_become_typed_errors(
    loopback: LoopbackProvider, reply: Reply, error_type: type
) -> None:
    loopback.script(reply)
    provider = client(loopback)
    with pytest.raises(error_type) as caught:
        await provider.chat(ChatRequest.of("x", model="m1"))
    assert caught.value.target == "lb:m1"
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after == 2.0


async def test_truncated_stream_is_an_error_not_a_short_answer(loopback: LoopbackProvider) -> None:
    loopback.script(Reply(content="one two three four five six", truncate_after=2))
    provider = client(loopback)
    pieces: list[str] = []
    with pytest.raises(MalformedResponse):
        async for delta in provider.stream_chat(ChatRequest.of("x", model="m1")):
            pieces.append(delta.text)
    assert "".join(pieces) == "one two "


async def test_slow_answer_past_timeout_is_a_timeout(loopback: LoopbackProvider) -> None:
    loopback.script(Reply(delay=3.0))
    provider = client(loopback, timeout=0.3)
    started = time.perf_counter()
    with pytest.raises(ProviderTimeout):
        await provider.chat(ChatRequest.of("x", model="m1"))
    assert time.perf_counter() - started < 2.0


async def test_connection_refused(closed_port: int) -> None:
    with pytest.raises(ConnectionFailed):
        await at(f"http://127.0.0.1:{closed_port}/v1").chat(ChatRequest.of("x", model="m"))


@pytest.mark.parametrize("streaming", [False, True])
async def test_cancel_closes_the_in_flight_request_within_200ms(
    loopback: LoopbackProvider, streaming: bool
) -> None:
    loopback.script(Reply(delay=10.0))
    provider = client(loopback)
    request = ChatRequest.of("slow", model="m1")

    async def call() -> None:
        if streaming:
            async for _ in provider.stream_chat(request):
                pass
        else:
            await provider.chat(request)

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await anyio.to_thread.run_sync(
            lambda: loopback.wait_for(lambda r: r.path.endswith("/chat/completions"), timeout=5)
        )
        await anyio.sleep(0.1)
        cancelled_at = time.perf_counter()
        group.cancel_scope.cancel()
    record = await anyio.to_thread.run_sync(
        lambda: loopback.wait_for(lambda r: r.client_disconnected_at is not None, timeout=2)
    )
    assert record.client_disconnected_at is not None
    assert record.client_disconnected_at - cancelled_at < 0.2


async def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({}) is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    assert 50 < (parse_retry_after({"retry-after": future}) or 0) <= 61
    assert parse_retry_after({"retry-after": "soon"}) is None


async def test_missing_usage_is_estimated(loopback: LoopbackProvider) -> None:
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "abcdefgh"},
                "finish_reason": "stop",
            }
        ],
    }
    loopback.script(Reply(body=json.dumps(body), headers={"Content-Type": "application/json"}))
    result = await client(loopback).chat(ChatRequest.of("0123456789abcdef", model="m1"))
    assert result.usage.estimated and result.usage.completion_tokens == 2


async def test_probe_finds_how_fim_really_works() -> None:
    """Accepting `suffix` is not honouring it: the canary tells them apart, then finds the
    raw prompt the model reads (llama-cpp-python with the project's GGUF: starcoder)."""
    with LoopbackProvider(models=("m1",)) as honest:
        caps = await client(honest).probe("m1")
        assert caps.fim is True and caps.fim_format == "suffix"
    with LoopbackProvider(models=("m1",), fim="scrambled", raw_fim="starcoder") as llama:
        caps = await client(llama).probe("m1")
        assert caps.fim is True and caps.fim_format == "starcoder"
        assert llama.canaries[0].body.get("suffix") is not None
    with LoopbackProvider(models=("m1",), fim="scrambled") as junk:
        caps = await client(junk).probe("m1")
        assert caps.fim is False and caps.fim_format is None


async def test_structured_replies_may_hold_raw_control_characters_in_strings() -> None:
    """llama.cpp's JSON grammar lets a model put a raw newline or tab inside a string,
    which strict JSON refuses; the reply is still the object the model meant."""
    from council.structured import parse_as

    got = parse_as(Answer, '{"name": "a\tb\nc", "count": 2, "tags": []}')
    assert got.name == "a\tb\nc" and got.count == 2
