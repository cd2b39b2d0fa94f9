"""Trigger and accept control, and "why no suggestion?", over stdio (pytest-lsp): a manual
trigger, several candidates per request (deduplicated, the first the greedy one), the outcome
of each request in words, the `council/inlineOutcome` notification and
`council/explainCompletion`.

Provider backends are the scripted loopback HTTP server; the specialist is the tiny echo model
from `tests.training_fixtures`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

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
STATS, EXPLAIN = "council/inlineStats", "council/explainCompletion"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def lb() -> Iterator[LoopbackProvider]:
    with LoopbackProvider(models=(QWEN,)) as server:
        yield server


async def _editor(tmp_path: Path, root: Path, lb: LoopbackProvider, extra: str = "") -> Editor:
    config = write_config(tmp_path / "council.toml", lb.base_url, f'backend = "lb:{QWEN}"\n{extra}')
    return await start(root, config)


@pytest.fixture
async def candidates3(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> AsyncIterator[Editor]:
    editor = await _editor(tmp_path, workspace, lb, "candidates = 3")
    yield editor
    await editor.client.shutdown_session()


async def test_manual_trigger_answers_only_invoked_requests(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> None:
    editor = await _editor(tmp_path, workspace, lb, 'trigger = "manual"')
    try:
        uri = editor.open("m.py", "def add(a, b):\n    return \n")
        lb.script(Reply(content="a + b"))
        started = time.monotonic()
        assert texts(await complete(editor, uri, 1, 11)) == []  # automatic: refused at once
        assert time.monotonic() - started < 1.0 and fim_requests(lb) == []
        state = await request(editor, STATS, {"uri": uri})
        assert state.trigger == "manual" and state.candidates == 1
        last = state.lastForDocument
        assert (last.reason, last.outcome, last.trigger) == (
            "manual",
            "manual trigger",
            "automatic",
        )
        assert last.items == 0 and last.modelMs == 0
        # the invoke key: an invoked request is answered
        assert texts(await complete(editor, uri, 1, 11, INVOKED)) == ["a + b"]
        state = await request(editor, STATS, {})
        assert (state.last.reason, state.last.outcome, state.last.items) == ("ok", "suggestion", 1)
        assert state.counters.manual == 1 and len(fim_requests(lb)) == 1
    finally:
        await editor.client.shutdown_session()


async def test_candidates_are_sampled_on_invoked_requests_and_deduplicated(
    candidates3: Editor, lb: LoopbackProvider
) -> None:
    editor = candidates3
    uri = editor.open("m.py", "def add(a, b):\n    return \n\n\nx = 1\n")
    # an automatic request stays at one candidate: one model call
    lb.script(Reply(content="a + b"))
    assert texts(await complete(editor, uri, 1, 11)) == ["a + b"]
    assert len(fim_requests(lb)) == 1
    # invoked (multi-line here, so not the automatic answer's cache entry): three calls in
    # parallel; "a + b\n" post-processes to "a + b", a duplicate
    editor.change(uri, "def add(a, b):\n    return \n\n\ny = 2\n")
    lb.script(Reply(content="a + b"), Reply(content="a + b\n"), Reply(content="a - b"))
    result = await complete(editor, uri, 1, 11, INVOKED)
    calls = fim_requests(lb)[1:]
    assert len(calls) == 3
    assert sorted(c.body["temperature"] for c in calls) == [0.0, 0.7, 0.7]
    greedy = next(c for c in calls if c.body["temperature"] == 0.0)
    assert greedy.reply is not None and greedy.reply.content is not None
    shown = texts(result)
    assert shown[0] == greedy.reply.content.strip()  # the first is the greedy answer
    assert sorted(shown) == ["a + b", "a - b"]
    state = await request(editor, STATS, {"uri": uri})
    assert state.lastForDocument.items == 2 and state.lastForDocument.outcome == "suggestion"
    # asked again: the cache has all of them
    assert texts(await complete(editor, uri, 1, 11, INVOKED)) == shown
    assert len(fim_requests(lb)) == 4


async def test_a_cached_automatic_answer_stays_first_and_only_extras_are_sampled(
    candidates3: Editor, lb: LoopbackProvider
) -> None:
    editor = candidates3
    uri = editor.open("m.py", "total = sum()\n")
    lb.script(Reply(content="values)"))
    assert texts(await complete(editor, uri, 0, 12)) == ["values"]  # automatic, single-line
    # invoked at the same place (single-line too: code after the cursor): the cached answer
    # is kept first, and only the two extras go to the model
    lb.script(Reply(content="items)"), Reply(content="values)"))
    assert texts(await complete(editor, uri, 0, 12, INVOKED)) == ["values", "items"]
    assert [c.body["temperature"] for c in fim_requests(lb)] == [0.0, 0.7, 0.7]


async def test_explain_shows_the_window_the_raw_answer_and_each_step(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> None:
    editor = await _editor(tmp_path, workspace, lb)
    try:
        empty = await request(editor, EXPLAIN, {})
        assert empty.found is False and "No inline completion request" in empty.markdown
        uri = editor.open("m.py", "import os\n\nprint()\n")
        lb.script(Reply(content=")"))  # all of it is the suffix's ")": nothing is left
        assert texts(await complete(editor, uri, 2, 6)) == []
        state = await request(editor, STATS, {"uri": uri})
        assert state.lastForDocument.outcome == "empty after post-processing"
        answer = await request(editor, EXPLAIN, {"uri": uri})
        assert answer.found is True
        md = answer.markdown
        assert "**Outcome:** no suggestion — empty after post-processing." in md
        assert "## Prompt window" in md and "│ print(█)" in md
        assert "## Model answer (greedy" in md and "### Post-processing" in md
        assert "**trim the overlap with the suffix**: `')'` → `''`" in md
        assert "**balance brackets**: unchanged" in md
        ex = answer.explanation
        assert (ex.trigger, ex.reason, ex.mode, ex.via) == ("automatic", "empty", "single", "fim")
        assert ex.suffix.startswith(")\n") and ex.prefix.endswith("print(")
        (candidate,) = ex.candidates
        assert candidate.raw == ")" and candidate.text == ""
        steps = [(s.step, s.before, s.after) for s in candidate.steps]
        assert ("trim the overlap with the suffix", ")", "") in steps
        assert ex.timings.total >= ex.timings.model > 0
        # mid-word: no model call, and the explanation says so
        editor.change(uri, "value = compute_total\n")
        assert texts(await complete(editor, uri, 0, 13)) == []
        state = await request(editor, STATS, {"uri": uri})
        assert state.lastForDocument.outcome == "skipped mid-word"
        md = (await request(editor, EXPLAIN, {})).markdown  # no uri: the last of all
        assert "no suggestion — skipped mid-word" in md and "No model call" in md
        assert len(fim_requests(lb)) == 1
        unknown = await request(editor, EXPLAIN, {"uri": editor.uri("other.py")})
        assert unknown.found is False
    finally:
        await editor.client.shutdown_session()


async def test_outcomes_are_sent_to_clients_that_ask_for_them(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> None:
    config = write_config(tmp_path / "council.toml", lb.base_url, f'backend = "lb:{QWEN}"')
    editor = await start(workspace, config, experimental={"councilInlineOutcome": True})
    seen: list[Any] = []

    @editor.client.feature("council/inlineOutcome")
    def outcome(params: Any) -> None:
        seen.append(params)

    try:
        uri = editor.open("m.py", "value = compute_total\nprint()\n")
        assert texts(await complete(editor, uri, 0, 13)) == []
        lb.script(Reply(content='"hi")'))
        assert texts(await complete(editor, uri, 1, 6)) == ['"hi"']
        await async_wait_until(lambda: len(seen) == 2, 5, "two outcome notifications")
        first, second = seen
        assert (first.reason, first.outcome, first.items) == ("skipped", "skipped mid-word", 0)
        assert (second.reason, second.outcome, second.items) == ("ok", "suggestion", 1)
        assert second.seq == first.seq + 1 and second.uri == uri
    finally:
        await editor.client.shutdown_session()


@pytest.mark.slow
async def test_specialist_candidates_reuse_the_prompt_and_differ_by_seed(
    tmp_path: Path, workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = build_echo_model(tmp_path_factory.getbasetemp() / "echo-model")
    # no workspace index: its numpy import would race the loader's JAX import (council.imports)
    setup = f'model_path = "{model}"\ncandidates = 3\n[workspace]\nindex = false'
    config = write_config(tmp_path / "c.toml", None, setup)
    editor = await start(workspace, config)
    try:

        async def loaded() -> bool:
            state = await request(editor, STATS, {})
            assert state.error is None, state.error
            return bool(state.ready)

        await async_wait_until(loaded, 60, "the specialist to load", interval=0.1)
        uri = editor.open("m.py", "total = fo\n")
        shown = texts(await complete(editor, uri, 0, 10, INVOKED))
        assert shown and len(set(shown)) == len(shown) <= 3
        ex = (await request(editor, EXPLAIN, {"uri": uri})).explanation
        assert [c.temperature for c in ex.candidates] == [0.0, 0.7, 0.7]
        assert ex.candidates[0].text == shown[0]  # the greedy answer leads
        assert all(c.modelMs > 0 for c in ex.candidates)
        # an automatic request: one candidate, as before
        editor.change(uri, "total = ba\n")
        assert len(texts(await complete(editor, uri, 0, 10))) <= 1
        ex = (await request(editor, EXPLAIN, {"uri": uri})).explanation
        assert [c.temperature for c in ex.candidates] == [0.0]
    finally:
        await editor.client.shutdown_session()
