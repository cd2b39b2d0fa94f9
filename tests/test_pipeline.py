"""The council pipeline end to end against a scripted loopback provider and the real sandbox."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from council.events import Event, Events
from council.pipeline import Council
from council.schemas import CouncilRequest, RequestContext
from providers.loopback import LoopbackProvider, Reply
from providers.registry import build_providers, close_all
from providers.router import Router
from tests.conftest import settings_for
from tests.sandbox_probes import alive_with_token, assert_nothing_left, sandbox_runs
from tests.scenarios import (
    LIMITS,
    MANIFEST,
    MODELS,
    bundle,
    debug_ok,
    js,
    plan,
    prompts_to,
    suite,
    synth,
)
from tests.waits import async_wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Any:
    with LoopbackProvider(models=MODELS) as lb:
        yield lb


@pytest.fixture
async def council(server: LoopbackProvider, tmp_path: Path) -> AsyncIterator[Council]:
    settings = settings_for(
        providers={"lb": {"base_url": server.base_url}},
        roles={
            "orchestrator": "lb:orch",
            "researcher": "lb:res",
            "generator": "lb:gen",
            "debugger": "lb:dbg",
            "tester": "lb:tst",
        },
        council={"max_refinement_passes": 2, "budget_usd": None},
        router={"max_retries": 0},
    )
    router = Router(settings, build_providers(settings, env={}))
    yield Council(router, workspace=tmp_path, limits=LIMITS)
    await close_all(router.providers)


async def test_generate_refines_after_failing_tests_then_approves(
    council: Council, server: LoopbackProvider
) -> None:
    server.script(
        plan("researcher", "generator", "debugger", "tester"),
        synth(
            "REFINE",
            0.3,
            [
                {"agent": "generator", "message": "handle negatives"},
                {"agent": "researcher", "message": "mention ints"},
                {"agent": "debugger", "message": "check overflow"},
            ],
        ),
        synth("APPROVE", 0.95),
        model="orch",
    )
    server.script(MANIFEST, MANIFEST, model="res")
    server.script(
        bundle("def add(a, b):\n    return abs(a) + abs(b)\n"),
        bundle("def add(a: int, b: int) -> int:\n    return a + b\n"),
        model="gen",
    )
    server.script(debug_ok(), debug_ok(), model="dbg")
    server.script(suite(), suite(), model="tst")
    seen: list[Event] = []
    events = Events()
    events.subscribe(seen.append)
    result = await council.run(
        CouncilRequest(
            query="write add",
            mode="generate",
            context=RequestContext(file_path="mathx.py", symbol="add"),
        ),
        events=events,
    )
    assert result.status == "approved", result.summary
    assert result.refinement_passes == 1
    assert result.code is not None and "return a + b" in result.code.files[0].content
    ex = result.test_report.execution
    assert ex is not None and (ex.passed, ex.failed) == (2, 0)
    # Pass 1 evidence reached the synthesiser, and the failing test reached the generator.
    synth_prompt = prompts_to(server, "orch")[1]
    assert "FAILED test_adds_negative" in synth_prompt and "1 passed, 1 failed" in synth_prompt
    second_gen = prompts_to(server, "gen")[1]
    assert "handle negatives" in second_gen
    assert "Failing test test_adds_negative" in second_gen and "assert" in second_gen
    # Each agent gets only what is addressed to it.
    assert "handle negatives" not in prompts_to(server, "tst")[1]
    assert "mention ints" in prompts_to(server, "res")[1]
    assert "check overflow" in prompts_to(server, "dbg")[1]
    assert "check overflow" not in second_gen and "mention ints" not in second_gen
    # Usage per role names who answered; the transcript has every stage.
    assert {u.role for u in result.usage} == {
        "orchestrator",
        "researcher",
        "generator",
        "debugger",
        "tester",
    }
    assert all(u.provider == "lb" for u in result.usage)
    stages = [(t.stage, t.role, t.pass_no) for t in result.transcript]
    assert ("decompose", "orchestrator", 0) in stages and (
        "synthesise",
        "orchestrator",
        2,
    ) in stages
    kinds = [e.kind for e in seen]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("pass_started") == 2
    assert seen[-1].tokens_so_far == sum(
        u.prompt_tokens + u.completion_tokens for u in result.usage
    )


async def test_approval_is_withheld_while_tests_fail(
    council: Council, server: LoopbackProvider
) -> None:
    server.script(plan("generator", "tester"), *[synth("APPROVE", 0.99)] * 3, model="orch")
    server.script(MANIFEST, model="res")
    server.script(*[bundle("def add(a, b):\n    return a - b\n")] * 3, model="gen")
    server.script(*[debug_ok()] * 3, model="dbg")
    server.script(*[suite()] * 3, model="tst")
    result = await council.run(CouncilRequest(query="add", mode="generate"))
    assert result.status == "best_effort"
    assert result.refinement_passes == 2
    assert "Approval withheld" in result.synthesis.summary
    assert "Best effort after 2 refinement passes" in result.summary


async def test_debugger_and_tester_overlap_in_time(
    council: Council, server: LoopbackProvider
) -> None:
    server.script(plan("generator"), synth("APPROVE", 0.9), model="orch")
    server.script(MANIFEST, model="res")
    server.script(bundle("def add(a, b):\n    return a + b\n"), model="gen")
    server.script(
        Reply(content=json.dumps({"verdict": "pass", "bugs": []}), delay=0.4), model="dbg"
    )
    server.script(Reply(content=suite().content, delay=0.4), model="tst")
    result = await council.run(CouncilRequest(query="add", mode="generate"))
    assert result.status == "approved"
    by_model = {r.body["model"]: r for r in server.requests if r.body}
    dbg, tst = by_model["dbg"], by_model["tst"]
    overlap = min(dbg.finished, tst.finished) - max(dbg.started, tst.started)
    assert overlap > 0.3, f"debugger and tester overlapped only {overlap:.3f}s"


async def test_malformed_json_is_repaired_once(council: Council, server: LoopbackProvider) -> None:
    server.script(plan("generator"), synth("APPROVE", 0.9), model="orch")
    server.script(MANIFEST, model="res")
    good = json.loads(bundle("def add(a, b):\n    return a + b\n").content)
    server.script(
        Reply(content='Sure! ```json\n{"files": [{"path": "mathx.py", "content": '),
        Reply(content=f"<think>oops</think>\n```json\n{json.dumps(good)}\n```"),
        model="gen",
    )
    server.script(debug_ok(), model="dbg")
    server.script(suite(), model="tst")
    result = await council.run(CouncilRequest(query="add", mode="generate"))
    assert result.status == "approved"
    repair = prompts_to(server, "gen")[1]
    assert "could not be used" in repair and "not valid JSON" in repair


async def test_budget_exhaustion_mid_run_ends_with_a_clear_result(
    server: LoopbackProvider, tmp_path: Path
) -> None:
    settings = settings_for(
        providers={
            "lb": {
                "base_url": server.base_url,
                "price": {"input_per_mtok": 1, "output_per_mtok": 10},
            }
        },
        roles={
            r: f"lb:{m}"
            for r, m in zip(
                ("orchestrator", "researcher", "generator", "debugger", "tester"),
                MODELS,
                strict=True,
            )
        },
        council={"budget_usd": 0.5},
    )
    router = Router(settings, build_providers(settings, env={}))
    server.script(plan("generator"), model="orch")
    costly = MANIFEST.__class__(content=MANIFEST.content, usage=(10, 100_000))  # $1.00
    server.script(costly, model="res")
    try:
        result = await Council(router, workspace=tmp_path, limits=LIMITS).run(
            CouncilRequest(query="add", mode="generate")
        )
    finally:
        await close_all(router.providers)
    assert result.status == "failed"
    assert any("run budget reached" in e for e in result.errors)
    assert "budget_usd" in result.summary
    assert result.cost_usd == pytest.approx(1.0, rel=0.01) and not prompts_to(server, "gen")
    assert result.tech_manifest is not None  # what was done before the cap is kept


async def test_debug_mode_returns_bugs_and_a_fixed_version(
    council: Council, server: LoopbackProvider
) -> None:
    broken = "def add(a, b):\n    return a - b\n"
    fixed = "def add(a, b):\n    return a + b\n"
    server.script(plan("debugger", "tester"), synth("APPROVE", 0.9), model="orch")
    server.script(
        js(
            verdict="fail",
            analysis="subtracts",
            bugs=[{"line": 2, "severity": "critical", "description": "subtracts", "fix": "use +"}],
            fixed_code=fixed,
        ),
        debug_ok(),
        model="dbg",
    )
    server.script(suite(), model="tst")
    result = await council.run(
        CouncilRequest(
            query="add is wrong",
            mode="debug",
            context=RequestContext(
                file_path="mathx.py", file_text=broken, failing_test="assert add(2, 3) == 5"
            ),
        )
    )
    assert result.status == "approved"
    assert result.diagnosis is not None and result.diagnosis.bugs[0].line == 2
    assert result.code.files[0].content == fixed
    assert "assert add(2, 3) == 5" in prompts_to(server, "dbg")[0]
    assert not prompts_to(server, "gen")


async def test_tests_mode_runs_new_tests_against_existing_code(
    council: Council, server: LoopbackProvider
) -> None:
    code = "def add(a, b):\n    return a + b\n"
    server.script(plan("tester"), synth("APPROVE", 0.9), model="orch")
    server.script(debug_ok(), model="dbg")
    server.script(suite(), model="tst")
    result = await council.run(
        CouncilRequest(
            query="add tests",
            mode="tests",
            context=RequestContext(file_path="mathx.py", file_text=code, symbol="add"),
        )
    )
    assert result.status == "approved"
    assert result.code.files[0].content == code  # the code under test is unchanged
    assert result.test_report.suite.path == "tests/test_mathx.py"
    assert result.test_report.execution.passed == 2
    assert not prompts_to(server, "gen") and not prompts_to(server, "res")


async def test_freeform_question_is_answered_directly(
    council: Council, server: LoopbackProvider
) -> None:
    server.script(
        js(goal="explain", tasks=[{"agent": "researcher", "instruction": "explain"}]), model="orch"
    )
    server.script(js(answer="Use `functools.cache`."), model="res")
    result = await council.run(CouncilRequest(query="how do I memoise?"))
    assert result.status == "approved" and result.answer == "Use `functools.cache`."
    assert result.code is None


async def test_unsafe_generated_paths_are_dropped(
    council: Council, server: LoopbackProvider
) -> None:
    server.script(plan("generator"), synth("APPROVE", 0.9), model="orch")
    server.script(MANIFEST, model="res")
    server.script(
        js(
            files=[
                {"path": "../evil.py", "content": "x = 1"},
                {"path": "/etc/evil.py", "content": "x = 1"},
                {"path": "mathx.py", "content": "def add(a, b):\n    return a + b\n"},
            ],
            explanation="",
            assumptions=[],
        ),
        model="gen",
    )
    server.script(debug_ok(), model="dbg")
    server.script(suite(), model="tst")
    result = await council.run(CouncilRequest(query="add", mode="generate"))
    assert [f.path for f in result.code.files] == ["mathx.py"]
    assert sum("unsafe path" in e for e in result.errors) == 2


async def test_cancellation_mid_stage_leaves_nothing_running(
    council: Council, server: LoopbackProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="council.sandbox")  # the run's token, pid, dir
    slow = "import time\n\n\ndef test_slow():\n    time.sleep(60)\n"
    server.script(plan("generator"), model="orch")
    server.script(MANIFEST, model="res")
    server.script(bundle("def add(a, b):\n    return a + b\n"), model="gen")
    server.script(Reply(content=json.dumps({"verdict": "pass"}), delay=30), model="dbg")
    server.script(suite(slow), model="tst")
    seen: list[Event] = []
    events = Events()
    events.subscribe(seen.append)
    before = set(asyncio.all_tasks())

    def sandbox_child_running() -> bool:
        # this run's, not any sandbox's: other test sessions may be running on the machine
        return any(alive_with_token(token) for token, _, _ in sandbox_runs(caplog))

    with anyio.move_on_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: council.run(CouncilRequest(query="add", mode="generate"), events=events)
            )
            await async_wait_until(sandbox_child_running, 15, "the sandbox's child to start")
            group.cancel_scope.cancel()
    assert_nothing_left(caplog)
    assert set(asyncio.all_tasks()) <= before | {asyncio.current_task()}
    assert seen[-1].kind == "run_finished" and seen[-1].detail == "cancelled"
    dbg = next(r for r in server.requests if r.body and r.body.get("model") == "dbg")
    record = await anyio.to_thread.run_sync(
        lambda: server.wait_for(
            lambda r: r.started == dbg.started and r.client_disconnected_at is not None
        )
    )
    assert record.client_disconnected_at is not None  # the debugger's HTTP call was closed


async def test_a_stop_says_what_failed_not_always_check_the_server(
    council: Council, server: LoopbackProvider
) -> None:
    """The server answered, twice, with output that is not the plan: the hint is about the
    output, not about whether the provider runs."""
    server.script(Reply(content="no JSON here"), Reply(content="still none"), model="orch")
    result = await council.run(CouncilRequest(query="add", mode="generate"))
    assert result.status == "failed"
    assert "output could not be used" in result.summary
    assert "Check that the provider is running" not in result.summary


async def test_an_unreachable_provider_gets_the_connection_hint(
    tmp_path: Path, closed_port: int
) -> None:
    settings = settings_for(
        providers={"dead": {"base_url": f"http://127.0.0.1:{closed_port}/v1"}},
        roles={
            r: "dead:m" for r in ("orchestrator", "researcher", "generator", "debugger", "tester")
        },
        council={"engine": "council"},
        router={"max_retries": 0},
    )
    router = Router(settings, build_providers(settings, env={}))
    try:
        result = await Council(router, workspace=tmp_path, limits=LIMITS).run(
            CouncilRequest(query="add", mode="generate")
        )
    finally:
        await close_all(router.providers)
    assert result.status == "failed" and "cannot connect" in result.summary
    assert "Check that the provider is running" in result.summary
