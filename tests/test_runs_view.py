"""The run view's protocol over stdio: `council/runs`, `council/run`, `council/runsChanged`.

A Generate run against the scripted loopback is announced as it starts, changes stage and
ends; afterwards its details hold each stage's role, provider:model, time, tokens and cost,
the candidate's code with the file as it would be after applying it, the test results case
by case and the transcript. Finished and cancelled runs stay listed; the history is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from council.events import CallNote, Event
from providers.loopback import LoopbackProvider
from server.run_history import RunHistory
from tests.lsp_harness import Editor, start_editor
from tests.scenarios import (
    FIXED,
    MODELS,
    STUB,
    script_add_tests,
    script_generate,
    server_env,
    write_config,
)
from tests.waits import async_wait_until

pytestmark = pytest.mark.anyio

# prices, so that every stage has a cost to show
PRICE = "[providers.lb.price]\ninput_per_mtok = 10.0\noutput_per_mtok = 20.0\n"


@pytest.fixture
def server() -> Any:
    with LoopbackProvider(models=MODELS) as lb:
        yield lb


@pytest.fixture
async def editor(tmp_path: Path, server: LoopbackProvider) -> AsyncIterator[Editor]:
    root = tmp_path / "ws"
    (root / "tests").mkdir(parents=True)
    (root / "mathx.py").write_text(STUB, encoding="utf-8")
    config = tmp_path / "council.toml"
    write_config(config, server.base_url, PRICE)
    ed = await start_editor(root, server_env(tmp_path, config))
    ed.changes = []  # type: ignore[attr-defined]

    @ed.client.feature("council/runsChanged")
    def changed(params: Any) -> None:
        ed.changes.append(plain(params))  # type: ignore[attr-defined]

    yield ed
    await ed.client.shutdown_session()


def plain(value: Any) -> Any:
    """pygls hands custom messages over as namedtuples: back to JSON's shapes."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


async def call(editor: Editor, method: str, params: dict[str, Any]) -> Any:
    return plain(await editor.client.protocol.send_request_async(method, params))


async def test_a_generate_run_is_announced_and_its_details_kept(
    editor: Editor, server: LoopbackProvider
) -> None:
    script_generate(server)
    uri = editor.open("mathx.py")
    result = await editor.command("council.generate", {"uri": uri, "symbol": "add"})
    assert result.status == "approved", result
    session = result.sessionId
    changes: list[dict[str, Any]] = editor.changes  # type: ignore[attr-defined]
    await async_wait_until(
        lambda: any(c["event"] == "finished" for c in changes), 5, "the run's last change"
    )
    mine = [c for c in changes if c["sessionId"] == session]
    assert mine[0] == {"sessionId": session, "status": "running", "event": "started", "stage": None}
    assert mine[-1] == {
        "sessionId": session,
        "status": "approved",
        "event": "finished",
        "stage": None,
    }
    announced = {c["stage"] for c in mine if c["event"] == "stage"}
    assert {"decompose: orchestrator", "generate: generator", "review: tester"} <= announced

    listing = await call(editor, "council/runs", {})
    assert listing["limit"] == 50
    [summary] = listing["runs"]
    assert summary["sessionId"] == session and summary["status"] == "approved"
    assert summary["command"] == "council.generate" and summary["title"] == "Council: Generate add"
    assert summary["tokens"] > 0 and summary["costUsd"] > 0 and summary["finishedAt"]

    details = await call(editor, "council/run", {"sessionId": session})
    stages = details["stages"]
    pairs = [(s["stage"], s["role"]) for s in stages]
    for pair in [
        ("decompose", "orchestrator"),
        ("research", "researcher"),
        ("generate", "generator"),
        ("review", "debugger"),
        ("review", "tester"),
        ("review", "sandbox"),
        ("synthesise", "orchestrator"),
    ]:
        assert pair in pairs, pairs
    gen = next(s for s in stages if s["role"] == "generator")
    assert (gen["provider"], gen["model"], gen["status"]) == ("lb", "gen", "ok"), gen
    assert gen["tokens"] > 0 and gen["costUsd"] > 0 and gen["seconds"] >= 0, gen
    assert all(s["status"] == "ok" for s in stages), stages
    # every model call is one stage's, once: the stages add up to the run
    assert sum(s["tokens"] for s in stages) == details["tokens"]
    assert {u["role"] for u in details["usage"]} >= {"generator", "tester", "orchestrator"}

    assert details["original"] == {"path": "mathx.py", "text": STUB}
    [candidate] = details["candidates"]
    assert candidate["chosen"] and (candidate["provider"], candidate["model"]) == ("lb", "gen")
    assert candidate["files"] == [{"path": "mathx.py", "content": FIXED}]
    # the file as Generate applies it: `add` replaced, the rest kept
    proposed = candidate["proposed"]
    assert "return a + b" in proposed and 'return "keep me"' in proposed and "pass" not in proposed

    cases = {(t["candidate"], t["suite"], t["test"]): t["outcome"] for t in details["tests"]}
    cid = candidate["id"]
    assert cases == {
        (cid, "s1", "test_adds_positive"): "passed",
        (cid, "s1", "test_adds_negative"): "passed",
    }
    assert (
        details["suites"][0]["id"] == "s1"
        and "def test_adds_positive" in (details["suites"][0]["content"])
    )
    roles = [c["role"] for c in details["transcript"]]
    assert {"orchestrator", "researcher", "generator", "debugger", "tester"} <= set(roles)
    generator_call = details["transcript"][roles.index("generator")]
    assert "return a + b" in generator_call["response"] and generator_call["prompt"]
    assert generator_call["provider"] == "lb" and generator_call["model"] == "gen"

    report = await call(editor, "council/run", {"sessionId": session, "markdown": True})
    md = report["markdown"]
    assert "## Stages" in md and "lb:gen" in md and "test_adds_negative" in md, md[:2000]
    assert "## Transcript" in md and "Candidate c1 (chosen)" in md


async def test_finished_and_cancelled_runs_stay_listed_newest_first(
    editor: Editor, server: LoopbackProvider
) -> None:
    script_generate(server)
    uri = editor.open("mathx.py")
    first = await editor.command("council.generate", {"uri": uri, "symbol": "add"})
    script_add_tests(server, delay=30)  # the orchestrator answers after 30 s: cancelled first
    task = asyncio.ensure_future(editor.command("council.addTests", {"uri": uri, "symbol": "add"}))

    async def live() -> Any:
        runs = (await call(editor, "council/runs", {}))["runs"]
        return runs if len(runs) == 2 and runs[0]["stage"] == "decompose: orchestrator" else None

    runs = await async_wait_until(live, 15, "the second run at its first stage")
    second = runs[0]["sessionId"]
    assert runs[0]["status"] == "running" and runs[1]["sessionId"] == first.sessionId
    running = await call(editor, "council/run", {"sessionId": second})
    assert running["stages"][-1]["status"] == "running" and running["finishedAt"] is None

    await editor.command("council.cancel", {"sessionId": second})
    assert (await task).status == "cancelled"
    runs = (await call(editor, "council/runs", {}))["runs"]
    assert [(r["sessionId"], r["status"]) for r in runs] == [
        (second, "cancelled"),
        (first.sessionId, "approved"),
    ]
    cancelled = await call(editor, "council/run", {"sessionId": second})
    assert cancelled["stages"][0]["status"] == "unfinished"
    assert cancelled["original"] is None  # Add tests has no file to diff against
    again = await call(editor, "council/run", {"sessionId": first.sessionId})
    assert again["status"] == "approved" and again["candidates"]  # reopened after the end
    with pytest.raises(Exception, match="no run 'nope'"):
        await editor.client.protocol.send_request_async("council/run", {"sessionId": "nope"})


def _stage_events(session: str, prompt: str) -> list[Event]:
    common = {"session_id": session, "stage": "generate", "role": "generator"}
    note = CallNote(stage="generate", role="generator", prompt=prompt, response="ok")
    return [
        Event(kind="stage_started", **common),
        Event(kind="stage_finished", provider="lb", model="gen", calls=[note], **common),
    ]


def test_the_history_is_bounded_in_runs_and_in_text() -> None:
    history = RunHistory(limit=3)
    live = history.start("live", "Council: Generate", "council.generate", None)
    for event in _stage_events("live", "x" * 100_000):
        history.event(live, event)
    for i in range(6):
        record = history.start(f"r{i}", "Council: Run", "council.run", None)
        history.finish(record, None, "approved", "done " * 1000)
    # the run in flight stays, whatever its age; of the finished ones, the last three
    assert [r["sessionId"] for r in history.summaries()] == ["r5", "r4", "r3", "live"]
    assert len(history.get("r5").summary) < 1100  # type: ignore[union-attr]
    [note] = live.details_json()["transcript"]
    assert 4000 <= len(note["prompt"]) < 4200 and "characters cut" in note["prompt"]
    assert live.details_json()["stages"][0]["provider"] == "lb"
