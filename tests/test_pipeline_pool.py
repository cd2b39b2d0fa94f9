"""The pipeline never does worse than its best candidate: the pool, disputes, k candidates
per pass and escalation on quality, against the scripted loopback provider and the real
sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from council.pipeline import Council
from council.schemas import CouncilRequest, RequestContext
from providers.loopback import LoopbackProvider
from providers.registry import build_providers, close_all
from providers.router import Router
from tests.conftest import settings_for
from tests.scenarios import LIMITS, MANIFEST, bundle, debug_ok, js, plan, prompts_to, synth

pytestmark = pytest.mark.anyio

STUB = '''\
def add(a, b):
    """Add two numbers.

    >>> add(2, 3)
    5
    >>> add(-1, 1)
    0
    """
    pass
'''
RIGHT = STUB.replace("    pass\n", "    return a + b\n")
BUGGY = STUB.replace("    pass\n", "    return a - b if a < 0 else a + b\n")
WORSE = STUB.replace("    pass\n", "    return a * b\n")

WRONG_SUITE = """\
from mathx import add


def test_small():
    assert add(2, 2) == 4


def test_wrong_expectation():
    assert add(1, 1) == 3
"""


def suite(content: str) -> Any:
    return js(path="tests/test_mathx.py", content=content, cases=["small", "wrong"])


def _council(server: LoopbackProvider, tmp_path: Path, **council: Any) -> Council:
    roles = {
        "orchestrator": "lb:orch",
        "researcher": "lb:res",
        "generator": council.pop("generator", "lb:gen"),
        "debugger": "lb:dbg",
        "tester": "lb:tst",
    }
    settings = settings_for(
        providers={"lb": {"base_url": server.base_url}},
        roles=roles,
        council={"max_refinement_passes": 1, "budget_usd": None, **council},
        router={"max_retries": 0},
    )
    return Council(Router(settings, build_providers(settings, env={})), limits=LIMITS)


@pytest.fixture
def server() -> Any:
    with LoopbackProvider(models=("orch", "res", "gen", "gen2", "dbg", "tst")) as lb:
        yield lb


@pytest.fixture
async def closing() -> AsyncIterator[list[Council]]:
    made: list[Council] = []
    yield made
    for council in made:
        await close_all(council.router.providers)


REQUEST = CouncilRequest(
    query="implement add",
    mode="generate",
    context=RequestContext(file_path="mathx.py", file_text=STUB, symbol="add"),
)


async def test_a_correct_first_answer_survives_a_wrong_test_and_a_worse_second_one(
    server: LoopbackProvider, tmp_path: Path, closing: list[Council]
) -> None:
    """The scenario a user hit: a wrong test fails the right first answer, the next pass
    writes buggy code. The run must not end on the buggy code; the wrong test is doubted at
    once (sent back to the tester, shown apart) and, once the right code has been written
    twice, left out of the evidence, so the right code is approved."""
    council = _council(server, tmp_path, max_refinement_passes=2)
    closing.append(council)
    server.script(
        plan("generator", "tester"),
        synth("REFINE", 0.4),
        synth("APPROVE", 0.95),
        synth("APPROVE", 0.95),
        model="orch",
    )
    server.script(MANIFEST, model="res")
    server.script(bundle(RIGHT), bundle(BUGGY), bundle(RIGHT), model="gen")
    server.script(debug_ok(), debug_ok(), debug_ok(), model="dbg")
    server.script(*[suite(WRONG_SUITE)] * 3, model="tst")
    result = await council.run(REQUEST)
    assert result.code is not None and result.code.files[0].content == RIGHT
    assert result.choice is not None and result.choice.winner == "c1"
    assert [(c.id, c.samples) for c in result.candidates] == [("c1", 2), ("c2", 1)]
    assert result.candidates[0].evidence.reviews == ["pass", "pass"]  # reviewed again
    assert any(o != "passed" for o in result.candidates[1].evidence.examples.values())
    [dispute] = result.disputed_tests
    assert dispute.case == "s1::test_wrong_expectation" and dispute.ignored
    assert dispute.weight == 2 and dispute.candidates == ["c1"]
    assert "1 disputed test(s) ignored" in result.choice.reason
    assert result.status == "approved" and result.refinement_passes == 2, result.summary
    # Pass 2: one sample of vouched code is not enough to ignore a test; the approval the
    # orchestrator gave was withheld, and the buggy second candidate did not replace c1.
    synth_2 = prompts_to(server, "orch")[2]
    assert "## Disputed tests" in synth_2 and "suspect, still counted" in synth_2
    # The tester was told at once that its test is suspect...
    assert "test_wrong_expectation may be wrong" in prompts_to(server, "tst")[1]
    # ...and the generator that the tester may be wrong about it.
    second = prompts_to(server, "gen")[1]
    assert "Failing test test_wrong_expectation (the tester may be wrong here" in second


async def test_without_examples_a_failing_test_still_blocks_approval(
    server: LoopbackProvider, tmp_path: Path, closing: list[Council]
) -> None:
    """Nothing vouches for the code, so no test is disputed: evidence still beats opinion."""
    council = _council(server, tmp_path)
    closing.append(council)
    server.script(plan("generator"), synth("APPROVE", 0.99), synth("APPROVE", 0.99), model="orch")
    server.script(MANIFEST, model="res")
    server.script(bundle(RIGHT), bundle(WORSE), model="gen")
    server.script(debug_ok(), debug_ok(), model="dbg")
    server.script(suite(WRONG_SUITE), suite(WRONG_SUITE), model="tst")
    result = await council.run(
        CouncilRequest(query="add", mode="generate", context=RequestContext(file_path="mathx.py"))
    )
    assert result.status == "best_effort" and result.disputed_tests == []
    assert result.code.files[0].content == RIGHT  # 1 of 2 tests beats 0 of 2
    assert "Approval withheld" in result.synthesis.summary


async def test_k_candidates_per_pass_are_reviewed_and_judged_together(
    server: LoopbackProvider, tmp_path: Path, closing: list[Council]
) -> None:
    council = _council(server, tmp_path, candidates_per_pass=3, max_refinement_passes=0)
    closing.append(council)
    server.script(plan("generator"), synth("APPROVE", 0.9), model="orch")
    server.script(MANIFEST, model="res")
    server.script(bundle(WORSE), bundle(RIGHT), bundle(WORSE), model="gen")
    server.script(debug_ok(), debug_ok(), model="dbg")
    server.script(suite(WRONG_SUITE.replace("== 3", "== 2")), model="tst")
    result = await council.run(REQUEST)
    # the third candidate repeats the first: kept once (as two samples), reviewed once a pass
    assert [(c.id, c.samples) for c in result.candidates] == [("c1", 2), ("c2", 1)]
    assert sum(1 for r in server.requests if r.body and r.body.get("model") == "dbg") == 2
    assert result.status == "approved" and result.code.files[0].content == RIGHT
    assert result.choice.winner == "c2" and result.choice.ranking == ["c2", "c1"]


async def test_the_generator_escalates_after_failed_passes(
    server: LoopbackProvider, tmp_path: Path, closing: list[Council]
) -> None:
    council = _council(
        server, tmp_path, generator=["lb:gen", "lb:gen2"], escalate_after=1, max_refinement_passes=1
    )
    closing.append(council)
    server.script(plan("generator"), synth("REFINE", 0.2), synth("APPROVE", 0.9), model="orch")
    server.script(MANIFEST, model="res")
    server.script(bundle(WORSE), model="gen")
    server.script(bundle(RIGHT), model="gen2")
    server.script(debug_ok(), debug_ok(), model="dbg")
    server.script(suite(WRONG_SUITE.replace("== 3", "== 2")), model="tst")
    result = await council.run(REQUEST)
    assert len(prompts_to(server, "gen")) == 1 and len(prompts_to(server, "gen2")) == 1
    assert result.status == "approved" and result.code.files[0].content == RIGHT
    assert [(c.id, c.model) for c in result.candidates] == [("c1", "gen"), ("c2", "gen2")]
