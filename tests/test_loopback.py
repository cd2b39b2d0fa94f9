"""Tests for the loopback provider, through real HTTP (httpx2) and the real openai SDK.

The loopback is the ground the rest of the suite stands on, so these tests pin down both its
protocol shapes and the exact client-side exceptions its failure modes produce.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from enum import StrEnum
from typing import Literal

import httpx2
import openai
import pydantic
import pytest

from providers.loopback import LoopbackProvider, Reply, RequestRecord, example_for_schema

pytestmark = pytest.mark.timeout(10)

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "write hello world"},
]


@pytest.fixture
def lp() -> Iterator[LoopbackProvider]:
    with LoopbackProvider(models=("loopback-chat", "coder")) as provider:
        yield provider


@pytest.fixture
def client(lp: LoopbackProvider) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=lp.base_url, timeout=5.0) as c:
        yield c


def chat(client: httpx2.Client, **extra: object) -> httpx2.Response:
    body: dict[str, object] = {"model": "loopback-chat", "messages": MESSAGES}
    body.update(extra)
    return client.post("/chat/completions", json=body)


def sse_events(response: httpx2.Response) -> list[str]:
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


# -- protocol shapes ----------------------------------------------------------------------------


def test_base_url_and_models_list(lp: LoopbackProvider, client: httpx2.Client) -> None:
    assert lp.base_url == f"http://127.0.0.1:{lp.port}/v1"
    response = client.get("/models")
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [
            {"id": "loopback-chat", "object": "model", "created": 0, "owned_by": "loopback"},
            {"id": "coder", "object": "model", "created": 0, "owned_by": "loopback"},
        ],
    }


def test_chat_default_reply_and_record(lp: LoopbackProvider, client: httpx2.Client) -> None:
    response = chat(client)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(response.content))
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "loopback-chat"
    assert data["id"]
    choice = data["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "loopback reply to: write hello world",
        "refusal": None,
    }
    assert choice["finish_reason"] == "stop"
    # 2 + 3 prompt words; 6 completion words.
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}

    record = lp.wait_for(lambda r: r.finished is not None)
    assert record.method == "POST"
    assert record.path == "/v1/chat/completions"
    assert record.model == "loopback-chat"
    assert record.body["messages"] == MESSAGES
    assert record.headers["content-type"] == "application/json"
    assert record.status == 200
    assert record.server_time is not None and 0 <= record.server_time < 1
    assert record.finished >= record.started
    assert record.reply is None
    assert record.client_disconnected_at is None


def test_chat_default_truncates_long_user_text(client: httpx2.Client) -> None:
    long_text = "x" * 500
    data = client.post(
        "/chat/completions",
        json={"model": "coder", "messages": [{"role": "user", "content": long_text}]},
    ).json()
    assert data["choices"][0]["message"]["content"] == "loopback reply to: " + "x" * 200


def test_chat_stream_over_http(lp: LoopbackProvider, client: httpx2.Client) -> None:
    lp.script(Reply(content="one two three"))
    body = {"model": "loopback-chat", "messages": MESSAGES, "stream": True}
    with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["transfer-encoding"] == "chunked"
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "one "}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "one two three"
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all("usage" not in c for c in chunks)


def test_unknown_model_path_and_bad_json(client: httpx2.Client) -> None:
    response = client.post("/chat/completions", json={"model": "nope", "messages": MESSAGES})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "model 'nope' not found"

    assert client.get("/nowhere").status_code == 404
    assert client.post("/embeddings", json={"model": "coder"}).status_code == 404

    response = client.post(
        "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert client.post("/chat/completions", json=[1]).status_code == 400
    assert client.post("/chat/completions", json={"messages": MESSAGES}).status_code == 400


# -- the openai SDK -----------------------------------------------------------------------------


def sdk(lp: LoopbackProvider, **options: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=lp.base_url, api_key="x", max_retries=0, **options)


def test_openai_sdk_chat(lp: LoopbackProvider) -> None:
    lp.script(Reply(content="def f(): pass", usage=(7, 3)))
    completion = sdk(lp).chat.completions.create(model="coder", messages=MESSAGES)
    assert completion.choices[0].message.content == "def f(): pass"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "coder"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 3)
    assert completion.usage.total_tokens == 10
    record = lp.wait_for(lambda r: r.finished is not None)
    assert record.headers["authorization"] == "Bearer x"


def test_openai_sdk_stream_with_usage(lp: LoopbackProvider) -> None:
    stream = sdk(lp).chat.completions.create(
        model="loopback-chat",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts: list[str] = []
    usage = None
    finish = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(parts) == "loopback reply to: write hello world"
    assert finish == "stop"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 6, 11)


def test_openai_sdk_error_classes(lp: LoopbackProvider) -> None:
    """Pins which exceptions callers must map: status errors, connection errors, raw JSON errors."""
    client = sdk(lp)
    lp.script(Reply(status=429, headers={"Retry-After": "2"}))
    with pytest.raises(openai.RateLimitError) as rate:
        client.chat.completions.create(model="coder", messages=MESSAGES)
    assert rate.value.response.headers["retry-after"] == "2"

    lp.script(Reply(reset=True))
    with pytest.raises(openai.APIConnectionError) as reset:
        client.chat.completions.create(model="coder", messages=MESSAGES)
    assert isinstance(reset.value.__cause__, httpx2.TransportError)

    lp.script(Reply(truncate_after=2, content="a b c d e"))
    stream = client.chat.completions.create(model="coder", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIConnectionError) as cut:
        list(stream)
    assert isinstance(cut.value.__cause__, httpx2.RemoteProtocolError)

    # A 200 with a broken JSON body is NOT wrapped by the SDK: it is json.JSONDecodeError.
    lp.script(Reply(malformed=True))
    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model="coder", messages=MESSAGES)
    lp.script(Reply(malformed=True))
    with pytest.raises(json.JSONDecodeError):
        list(client.chat.completions.create(model="coder", messages=MESSAGES, stream=True))

    lp.script(Reply(delay=2.0))
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.2).chat.completions.create(model="coder", messages=MESSAGES)


# -- structured output --------------------------------------------------------------------------


class Severity(StrEnum):
    low = "low"
    high = "high"


class Location(pydantic.BaseModel):
    path: str
    line: int = pydantic.Field(ge=1)


class Finding(pydantic.BaseModel):
    kind: Literal["bug", "style"]
    severity: Severity
    where: Location
    note: str | None
    confidence: float = pydantic.Field(gt=0, le=1)


class Review(pydantic.BaseModel):
    summary: str = pydantic.Field(min_length=3)
    findings: list[Finding] = pydantic.Field(min_length=2)
    tags: list[str]
    fixed: bool
    extra: str | None = None
    pinned: Literal["v1"]
    pair: tuple[int, str]


def json_schema_format(model: type[pydantic.BaseModel]) -> dict[str, object]:
    return {
        "type": "json_schema",
        "json_schema": {"name": model.__name__, "schema": model.model_json_schema()},
    }


def test_example_for_schema_nested_models() -> None:
    schema = Review.model_json_schema()
    assert "$defs" in schema
    example = example_for_schema(schema)
    review = Review.model_validate(example)
    assert review.summary == "aaa"
    assert len(review.findings) == 2
    assert review.findings[0].kind == "bug"
    assert review.findings[0].severity is Severity.low
    assert review.findings[0].where.line == 1
    assert review.findings[0].note is None or isinstance(review.findings[0].note, str)
    assert 0 < review.findings[0].confidence <= 1
    assert review.tags == []
    assert "extra" not in example  # only required properties are filled
    assert review.pinned == "v1"


def test_example_for_schema_keywords() -> None:
    assert example_for_schema({"type": ["null", "integer"], "minimum": 3}) == 3
    assert example_for_schema({"type": "integer", "exclusiveMinimum": 3}) == 4
    assert example_for_schema({"type": "string", "format": "date-time"}) == "1970-01-01T00:00:00Z"
    assert example_for_schema({"type": "string", "format": "nonsense"}) == ""
    assert example_for_schema({"default": [1], "type": "array"}) == [1]
    assert example_for_schema({"anyOf": [{"type": "null"}, {"type": "boolean"}]}) is False
    assert example_for_schema({"oneOf": [{"const": 5}]}) == 5
    merged = example_for_schema(
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "string"}}, "required": ["b"]},
            ]
        }
    )
    assert merged == {"a": 0, "b": ""}
    assert example_for_schema({"type": "null"}) is None


def test_json_schema_default_validates(lp: LoopbackProvider, client: httpx2.Client) -> None:
    response = chat(client, response_format=json_schema_format(Review))
    assert response.status_code == 200
    content = response.json()["choices"][0]["message"]["content"]
    Review.model_validate_json(content)


def test_json_object_and_json_schema_refused() -> None:
    with (
        LoopbackProvider(supports_json_schema=False) as lp,
        httpx2.Client(base_url=lp.base_url) as client,
    ):
        response = chat(client, response_format=json_schema_format(Review))
        assert response.status_code == 400
        assert response.json() == {
            "error": {
                "message": "response_format json_schema is not supported",
                "type": "invalid_request_error",
                "param": "response_format",
                "code": None,
            }
        }
        response = chat(client, response_format={"type": "json_object"})
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "{}"


# -- legacy completions / FIM -------------------------------------------------------------------


def test_completions_with_suffix(lp: LoopbackProvider, client: httpx2.Client) -> None:
    response = client.post(
        "/completions", json={"model": "coder", "prompt": "def f():\n    ", "suffix": "\n# end"}
    )
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "text_completion"
    assert data["choices"][0]["text"] == "pass"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}

    plain = client.post("/completions", json={"model": "coder", "prompt": "x"}).json()
    assert plain["choices"][0]["text"] == "loopback completion"

    body = {
        "model": "coder",
        "prompt": "x",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/completions", json=body) as streamed:
        events = sse_events(streamed)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "loopback completion"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 2


def test_completions_suffix_refused() -> None:
    with LoopbackProvider(supports_suffix=False) as lp:
        with httpx2.Client(base_url=lp.base_url) as client:
            response = client.post(
                "/completions", json={"model": "loopback-chat", "prompt": "a", "suffix": "b"}
            )
            assert response.status_code == 400
            error = response.json()["error"]
            assert error["message"] == "suffix is not supported for this model"
            assert error["param"] == "suffix"
            ok = client.post("/completions", json={"model": "loopback-chat", "prompt": "a"})
            assert ok.status_code == 200
        with pytest.raises(openai.BadRequestError) as refused:
            sdk(lp).completions.create(model="loopback-chat", prompt="a", suffix="b")
        assert refused.value.param == "suffix"


# -- scripted failures --------------------------------------------------------------------------


def test_scripted_429_retry_after(lp: LoopbackProvider, client: httpx2.Client) -> None:
    lp.script(Reply(status=429, headers={"Retry-After": "1"}))
    response = chat(client)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert "429" in response.json()["error"]["message"]
    assert chat(client).status_code == 200  # queue drained -> default behaviour
    first = lp.requests[0]
    assert first.status == 429
    assert first.reply is not None and first.reply.status == 429


def test_scripted_500_with_body(lp: LoopbackProvider, client: httpx2.Client) -> None:
    lp.script(Reply(status=500), Reply(status=503, body="upstream exploded"))
    response = chat(client)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    response = chat(client)
    assert response.status_code == 503
    assert response.text == "upstream exploded"


def test_malformed_json_reply(lp: LoopbackProvider, client: httpx2.Client) -> None:
    lp.script(Reply(malformed=True))
    response = chat(client)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_truncated_stream_raises(lp: LoopbackProvider, client: httpx2.Client) -> None:
    lp.script(Reply(content="alpha beta gamma delta", truncate_after=2))
    body = {"model": "loopback-chat", "messages": MESSAGES, "stream": True}
    received: list[str] = []
    with (
        pytest.raises(httpx2.RemoteProtocolError),
        client.stream("POST", "/chat/completions", json=body) as response,
    ):
        for line in response.iter_lines():
            received.append(line)
    contents = [
        json.loads(line[6:])["choices"][0]["delta"]["content"]
        for line in received
        if line.startswith("data: ")
    ]
    assert contents == ["alpha ", "beta "]
    assert not any("[DONE]" in line for line in received)
    # The connection was dropped; the client's pool recovers on the next request.
    assert chat(client).status_code == 200


def test_reset_raises_connection_error(lp: LoopbackProvider, client: httpx2.Client) -> None:
    lp.script(Reply(reset=True))
    with pytest.raises((httpx2.ReadError, httpx2.RemoteProtocolError)):
        chat(client)
    record = lp.wait_for(lambda r: r.finished is not None)
    assert record.status is None
    assert chat(client).status_code == 200


def test_delay_then_client_timeout_is_noticed(lp: LoopbackProvider) -> None:
    lp.script(Reply(delay=3.0, content="too late"))
    with httpx2.Client(base_url=lp.base_url, timeout=0.3) as client:
        start = time.perf_counter()
        with pytest.raises(httpx2.ReadTimeout):
            chat(client)
        gave_up = time.perf_counter()
    assert gave_up - start < 1.0
    record = lp.wait_for(lambda r: r.finished is not None, timeout=1.0)
    assert record.client_disconnected_at is not None
    assert abs(record.client_disconnected_at - gave_up) < 0.2
    assert record.status is None
    assert record.finished - record.started < 1.0  # abandoned, did not sleep the full delay


def test_delay_is_applied(lp: LoopbackProvider, client: httpx2.Client) -> None:
    lp.script(Reply(delay=0.2))
    start = time.perf_counter()
    assert chat(client).status_code == 200
    assert time.perf_counter() - start >= 0.2
    record = lp.wait_for(lambda r: r.finished is not None)
    assert record.server_time is not None and record.server_time >= 0.2


def test_stream_disconnect_is_recorded() -> None:
    with LoopbackProvider(chunk_delay=0.05) as lp:
        lp.script(Reply(content=" ".join(["word"] * 50)))
        body = {"model": "loopback-chat", "messages": MESSAGES, "stream": True}
        with (
            httpx2.Client(base_url=lp.base_url) as client,
            client.stream("POST", "/chat/completions", json=body) as response,
        ):
            next(response.iter_lines())
        record = lp.wait_for(lambda r: r.finished is not None, timeout=2.0)
        assert record.status == 200
        assert record.client_disconnected_at is not None
        assert record.finished - record.started < 1.0


def test_script_queue_per_model(lp: LoopbackProvider, client: httpx2.Client) -> None:
    lp.script(Reply(content="coder-1"), Reply(content="coder-2"), model="coder")
    lp.script(Reply(content="shared-1"))

    def ask(model: str) -> str:
        response = client.post("/chat/completions", json={"model": model, "messages": MESSAGES})
        return response.json()["choices"][0]["message"]["content"]

    assert ask("loopback-chat") == "shared-1"
    assert ask("coder") == "coder-1"
    assert ask("coder") == "coder-2"
    assert ask("coder") == "loopback reply to: write hello world"

    lp.script(Reply(content="left over"))
    lp.clear()
    assert lp.requests == []
    assert ask("coder") == "loopback reply to: write hello world"
    assert [r.model for r in lp.requests] == ["coder"]


def test_responder_answers_from_the_request_before_the_queue(
    lp: LoopbackProvider, client: httpx2.Client
) -> None:
    """The hook sees the parsed request after the capability checks, wins over the queue,
    and None falls through to the scripts; a failing responder is a 500, not a hang."""
    seen: list[RequestRecord] = []

    def responder(record: RequestRecord) -> Reply | None:
        seen.append(record)
        text = record.body["messages"][-1]["content"]
        if text == "boom":
            raise RuntimeError("responder bug")
        return Reply(content=text.upper(), usage=(7, 3)) if text.startswith("echo") else None

    lp.responder = responder
    lp.script(Reply(content="scripted"))

    def ask(text: str, model: str = "coder") -> httpx2.Response:
        messages = [{"role": "user", "content": text}]
        return client.post("/chat/completions", json={"model": model, "messages": messages})

    answer = ask("echo me").json()
    assert answer["choices"][0]["message"]["content"] == "ECHO ME"
    assert answer["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert ask("something else").json()["choices"][0]["message"]["content"] == "scripted"
    assert ask("boom").status_code == 500
    assert ask("echo unknown model", model="nope").status_code == 404  # checks come first
    assert [r.model for r in seen] == ["coder", "coder", "coder"]


def test_require_api_key() -> None:
    with LoopbackProvider(require_api_key="sk-right") as lp:
        with httpx2.Client(base_url=lp.base_url) as client:
            denied = client.get("/models", headers={"Authorization": "Bearer sk-wrong-123"})
            assert denied.status_code == 401
            assert denied.json()["error"]["message"] == "Incorrect API key provided: sk-wrong-123"
            assert client.get("/models").status_code == 401
            allowed = client.get("/models", headers={"Authorization": "Bearer sk-right"})
            assert allowed.status_code == 200
            client.post("/chat/completions", json={"model": "loopback-chat", "messages": []})
            refused = lp.requests[-1]
            assert refused.status == 401 and refused.model == "loopback-chat"
        with pytest.raises(openai.AuthenticationError) as err:
            sdk(lp).chat.completions.create(model="loopback-chat", messages=MESSAGES)
        assert "Incorrect API key provided: x" in str(err.value)


def test_wait_for_times_out(lp: LoopbackProvider) -> None:
    with pytest.raises(TimeoutError):
        lp.wait_for(lambda r: False, timeout=0.05)


def test_stop_with_idle_keepalive_and_pending_delay() -> None:
    lp = LoopbackProvider()
    lp.start()
    client = httpx2.Client(base_url=lp.base_url, timeout=5.0)
    try:
        assert client.get("/models").status_code == 200  # leaves an idle keep-alive connection
        lp.script(Reply(delay=30.0))
        slow = httpx2.Client(base_url=lp.base_url, timeout=5.0)
        errors: list[BaseException] = []

        def hang() -> None:
            try:
                chat(slow)
            except httpx2.HTTPError as exc:
                errors.append(exc)

        thread = threading.Thread(target=hang)
        thread.start()
        lp.wait_for(lambda r: r.reply is not None)
        start = time.perf_counter()
        lp.stop()
        assert time.perf_counter() - start < 1.0
        thread.join(2.0)
        assert not thread.is_alive()
        assert errors  # the pending request was dropped, not answered
        slow.close()
    finally:
        client.close()
        lp.stop()
