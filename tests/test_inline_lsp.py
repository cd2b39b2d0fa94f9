"""`textDocument/inlineCompletion` end to end over stdio (pytest-lsp).

Provider backends are the scripted loopback HTTP server; the specialist is the tiny echo
model from `tests.training_fixtures` (it repeats the prompt's last token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from providers.loopback import LoopbackProvider, Reply
from tests.inline_client import (
    INVOKED,
    complete,
    fim_requests,
    request,
    start,
    texts,
    write_config,
)
from tests.lsp_harness import Editor
from tests.training_fixtures import build_echo_model
from tests.waits import async_wait_until

pytestmark = pytest.mark.anyio

QWEN = "qwen2.5-coder:1.5b"


async def stats(editor: Editor) -> Any:
    return await request(editor, "council/inlineStats", {})


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def lb() -> Any:
    with LoopbackProvider(models=(QWEN, "other", "x")) as server:
        yield server


@pytest.fixture
async def editor(tmp_path: Path, workspace: Path, lb: LoopbackProvider) -> AsyncIterator[Editor]:
    config = write_config(tmp_path / "council.toml", lb.base_url, f'backend = "lb:{QWEN}"')
    ed = await start(workspace, config)
    yield ed
    await ed.client.shutdown_session()


async def test_capability_and_both_triggers(editor: Editor, lb: LoopbackProvider) -> None:
    assert editor.init_result is not None
    assert isinstance(
        editor.init_result.capabilities.inline_completion_provider, types.InlineCompletionOptions
    )
    uri = editor.open("m.py", "def add(a, b):\n    return \n")
    lb.script(Reply(content="a + b"), Reply(content="a + b\n\n\ndef other():"))
    auto = await complete(editor, uri, 1, 11)
    assert texts(auto) == ["a + b"]
    assert auto is not None and auto.items[0].range == types.Range(
        start=types.Position(line=1, character=11), end=types.Position(line=1, character=11)
    )
    editor.change(uri, "def add(a, b):\n    return \n\n")  # a new context: not cached
    invoked = await complete(editor, uri, 1, 11, INVOKED)
    assert texts(invoked) == ["a + b"]
    first, second = fim_requests(lb)
    assert first.body["suffix"] == "\n" and first.body["stop"] == ["\n"]
    assert second.body["max_tokens"] == 128 and "\n\n" in second.body["stop"]
    # automatic and mid-word: nothing, and no model call
    editor.change(uri, "value = compute_total\n")
    assert texts(await complete(editor, uri, 0, 13)) == []
    assert len(fim_requests(lb)) == 2
    # not Python: nothing
    other = editor.uri("notes.txt")
    editor.client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=other, language_id="plaintext", version=1, text="hello "
            )
        )
    )
    assert texts(await complete(editor, other, 0, 6, INVOKED)) == []
    counters = (await stats(editor)).counters
    assert counters.requests == 4 and counters.ok == 2 and counters.skipped == 1


async def test_overlap_trimmed_and_typed_through_reuse(
    editor: Editor, lb: LoopbackProvider
) -> None:
    uri = editor.open("m.py", "print()\n")
    lb.script(Reply(content='"hello")'))
    assert texts(await complete(editor, uri, 0, 6)) == ['"hello"']
    assert fim_requests(lb)[0].body["suffix"] == ")\n"

    editor.change(uri, "def add(a, b):\n    return \n")
    lb.script(Reply(content="a + b"))
    assert texts(await complete(editor, uri, 1, 11)) == ["a + b"]
    before = len(lb.requests)
    editor.change(uri, "def add(a, b):\n    return a \n")
    assert texts(await complete(editor, uri, 1, 13)) == ["+ b"]
    editor.change(uri, "def add(a, b):\n    return a +\n")
    assert texts(await complete(editor, uri, 1, 14)) == [" b"]
    assert len(lb.requests) == before  # answered from the cache: no model call
    reasons = [r.reason for r in (await stats(editor)).requests]
    assert reasons == ["ok", "ok", "typed-through", "typed-through"]


async def test_selected_completion_item(editor: Editor, lb: LoopbackProvider) -> None:
    uri = editor.open("m.py", "import os\nos.path.jo\n")
    lb.script(Reply(content="(root, name)"))
    selected = types.SelectedCompletionInfo(
        range=types.Range(
            start=types.Position(line=1, character=8), end=types.Position(line=1, character=10)
        ),
        text="join",
    )
    result = await complete(editor, uri, 1, 10, selected=selected)
    assert texts(result) == ["join(root, name)"]
    assert result is not None and result.items[0].range == selected.range
    assert fim_requests(lb)[0].body["prompt"].endswith("os.path.join")


async def test_superseded_request_is_cancelled(editor: Editor, lb: LoopbackProvider) -> None:
    uri = editor.open("m.py", "x = \n")
    lb.script(Reply(content="slow", delay=10), Reply(content="fast"))
    first = asyncio.ensure_future(complete(editor, uri, 0, 4))
    await asyncio.to_thread(lb.wait_for, lambda r: r.body and r.body.get("prompt") == "x = ", 5)
    editor.change(uri, "x = 1\n")
    started = time.monotonic()
    second = await complete(editor, uri, 0, 5)
    older = await asyncio.wait_for(first, 5)
    assert texts(second) == ["fast"] and texts(older) == []
    assert time.monotonic() - started < 3
    await asyncio.to_thread(
        lb.wait_for,
        lambda r: r.body and r.body.get("prompt") == "x = " and r.client_disconnected_at,
        3,
    )
    reasons = [r.reason for r in (await stats(editor)).requests]
    assert sorted(reasons) == ["ok", "superseded"]


async def test_cancel_request_is_honoured(editor: Editor, lb: LoopbackProvider) -> None:
    uri = editor.open("m.py", "y = \n")
    lb.script(Reply(content="slow", delay=10))
    pending = set(editor.client.protocol._request_futures)
    task = asyncio.ensure_future(complete(editor, uri, 0, 4))
    await asyncio.to_thread(lb.wait_for, lambda r: r.body and r.body.get("prompt") == "y = ", 5)
    (msg_id,) = set(editor.client.protocol._request_futures) - pending
    editor.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    with pytest.raises(Exception, match="cancel"):
        await asyncio.wait_for(task, 5)
    await asyncio.to_thread(
        lb.wait_for,
        lambda r: r.body and r.body.get("prompt") == "y = " and r.client_disconnected_at,
        3,
    )
    assert (await stats(editor)).counters.cancelled == 1


async def test_odd_requests_get_answers_not_crashes(editor: Editor, lb: LoopbackProvider) -> None:
    uri = editor.open("m.py", "x = 1\n")
    lb.script(Reply(content="2"), Reply(content="3"))
    assert texts(await complete(editor, uri, 40, 99, INVOKED)) in ([], ["2"])  # past the end
    missing = editor.uri("never_opened.py")
    assert texts(await complete(editor, missing, 0, 0, INVOKED)) == []
    backwards = types.SelectedCompletionInfo(
        range=types.Range(
            start=types.Position(line=0, character=5), end=types.Position(line=0, character=1)
        ),
        text="zz",
    )
    assert isinstance(
        await complete(editor, uri, 0, 3, INVOKED, backwards), types.InlineCompletionList
    )
    with pytest.raises(Exception, match="since must be an integer"):
        await editor.client.protocol.send_request_async("council/inlineStats", {"since": "x"})
    assert (await stats(editor)).counters.requests == 3


async def test_settings_change_swaps_the_backend(editor: Editor, lb: LoopbackProvider) -> None:
    uri = editor.open("m.py", "x = \n")
    lb.script(Reply(content="1"), Reply(content="2"))
    assert texts(await complete(editor, uri, 0, 4)) == ["1"]
    editor.client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"council": {"completion": {"backend": "lb:other", "fim_format": "starcoder"}}}
        )
    )
    assert texts(await complete(editor, uri, 0, 4)) == ["2"]
    last = fim_requests(lb)[-1].body
    assert (
        last["model"] == "other" and last["prompt"] == "<fim_prefix>x = <fim_suffix>\n<fim_middle>"
    )
    assert (await stats(editor)).backend == "lb:other"


async def test_provider_refusing_suffix(tmp_path: Path, workspace: Path) -> None:
    """The canary finds that the server refuses `suffix` but reads the model family's raw
    FIM prompt, so completions go raw from the first request; a server that reads neither
    gets the infill prompt over chat."""
    with LoopbackProvider(models=(QWEN,), supports_suffix=False, raw_fim="qwen") as lb:
        config = write_config(tmp_path / "c.toml", lb.base_url, f'backend = "lb:{QWEN}"')
        editor = await start(workspace, config)
        try:
            uri = editor.open("m.py", "a = \nb = 2\n")
            lb.script(Reply(content="1"), Reply(content="3"))
            assert texts(await complete(editor, uri, 0, 4)) == ["1"]
            editor.change(uri, "a = 1\nc = \n")
            assert texts(await complete(editor, uri, 1, 4)) == ["3"]
            assert [r.path for r in lb.requests] == ["/v1/completions"] * 2
            assert lb.requests[1].body["prompt"] == (
                "<|fim_prefix|>a = 1\nc = <|fim_suffix|>\n<|fim_middle|>"
            )
            assert "suffix" not in lb.requests[1].body
            assert [r.status for r in lb.canaries] == [400, 200]  # suffix, then raw qwen
        finally:
            await editor.client.shutdown_session()
    with LoopbackProvider(models=(QWEN,), supports_suffix=False) as lb:
        config = write_config(tmp_path / "c.toml", lb.base_url, f'backend = "lb:{QWEN}"')
        editor = await start(workspace, config)
        try:
            uri = editor.open("m.py", "a = \nb = 2\n")
            lb.script(Reply(content="1"))
            assert texts(await complete(editor, uri, 0, 4)) == ["1"]
            assert [r.path for r in lb.requests] == ["/v1/chat/completions"]
            assert "a = <FILL>\nb = 2" in lb.requests[0].body["messages"][-1]["content"]
        finally:
            await editor.client.shutdown_session()


async def test_a_server_that_scrambles_suffix_gets_the_raw_prompt(
    tmp_path: Path, workspace: Path
) -> None:
    """llama-cpp-python accepts `suffix` and scrambles it (fixed sentinel ids): the canary
    catches it and the model family's raw FIM prompt is used instead."""
    with LoopbackProvider(models=("council-tiny",), fim="scrambled", raw_fim="starcoder") as lb:
        config = write_config(tmp_path / "c.toml", lb.base_url, 'backend = "lb:council-tiny"')
        editor = await start(workspace, config)
        try:
            uri = editor.open("m.py", "a = \nb = 2\n")
            lb.script(Reply(content="1"))
            assert texts(await complete(editor, uri, 0, 4)) == ["1"]
            (body,) = [r.body for r in lb.requests]
            assert body["prompt"] == "<fim_prefix>a = <fim_suffix>\nb = 2\n<fim_middle>"
        finally:
            await editor.client.shutdown_session()


async def test_broken_model_path_is_reported_and_the_server_carries_on(
    tmp_path: Path, workspace: Path
) -> None:
    missing = tmp_path / "no-model-here"
    config = write_config(tmp_path / "c.toml", None, f'model_path = "{missing}"')
    editor = await start(workspace, config)
    try:
        await async_wait_until(
            lambda: any("no-model-here" in m.message for m in editor.client.messages),
            10,
            "the model_path error to be shown",
        )
        (message,) = [m for m in editor.client.messages if "no-model-here" in m.message]
        assert message.type == types.MessageType.Error
        assert "model_path" in message.message and "is not a model directory" in message.message
        uri = editor.open("m.py", "x = \n")
        assert texts(await complete(editor, uri, 0, 4, INVOKED)) == []
        state = await stats(editor)
        assert state.ready is False and "no-model-here" in state.error
        assert state.counters.unavailable == 1
        assert len([m for m in editor.client.messages if "no-model-here" in m.message]) == 1
    finally:
        await editor.client.shutdown_session()


@pytest.mark.slow
async def test_specialist_empty_until_ready_then_completes(
    tmp_path: Path, workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = build_echo_model(tmp_path_factory.getbasetemp() / "echo-model")
    config = write_config(tmp_path / "c.toml", None, f'model_path = "{model}"')
    editor = await start(workspace, config)
    try:
        uri = editor.open("m.py", "total = fo\n")
        started = time.monotonic()
        early = await complete(editor, uri, 0, 10, INVOKED)
        assert texts(early) == [] and time.monotonic() - started < 1.0
        assert (await stats(editor)).requests[-1].reason == "loading"

        async def loaded() -> bool:
            state = await stats(editor)
            assert state.error is None, state.error
            return bool(state.ready)

        await async_wait_until(loaded, 60, "the specialist to load", interval=0.1)
        result = await complete(editor, uri, 0, 10)
        (text,) = texts(result)
        assert text.strip() and "\n" not in text  # the echo model, single-line
        last = (await stats(editor)).requests[-1]
        assert last.reason == "ok" and 0 < last.modelMs <= last.handlerMs
        # typing through the suggestion: answered from the cache
        editor.change(uri, "total = fo" + text[0] + "\n")
        assert texts(await complete(editor, uri, 0, 11)) == [text[1:]]
        assert (await stats(editor)).requests[-1].reason == "typed-through"
        # a setting that does not change the model keeps it loaded: a new engine (its cache
        # starts empty) on the same, ready specialist, which answers the next request at once
        loaded_in = (await stats(editor)).loadSeconds
        assert (await stats(editor)).cacheEntries > 0
        editor.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"council": {"completion": {"max_lines": 3}}}
            )
        )

        async def new_engine() -> bool:
            return (await stats(editor)).cacheEntries == 0

        await async_wait_until(new_engine, 10, "the new settings to build a new engine")
        state = await stats(editor)
        assert state.ready and state.loadSeconds == loaded_in  # not loaded again
        editor.change(uri, "total = fo\n")
        assert texts(await complete(editor, uri, 0, 10)) == [text]  # not cached: a new engine
        assert (await stats(editor)).requests[-1].reason == "ok"
    finally:
        await editor.client.shutdown_session()
