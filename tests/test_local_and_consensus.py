"""Local council mode (no chat model reachable) and consensus mode, against real servers."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from council.consensus import (
    RankingReply,
    anonymise,
    borda,
    decode_ranking,
    deliberate,
    kendall_tau,
)
from council.local import split_stub, trim_body
from council.pipeline import Council
from council.sandbox import SandboxLimits
from council.schemas import CouncilRequest, RequestContext
from providers.loopback import LoopbackProvider, Reply
from providers.registry import build_providers, close_all
from providers.router import Router
from providers.settings import Tier
from tests.conftest import settings_for

pytestmark = pytest.mark.anyio

STUB = '''\
def add(a, b):
    """Add two numbers.

    >>> add(2, 3)
    5

    assert add(-1, 1) == 0
    """
    pass


def other():
    return 1
'''


async def test_split_stub_and_trim_body() -> None:
    prefix, suffix, indent = split_stub(STUB, "add") or ("", "", "")
    assert prefix.endswith('    """\n    ') and suffix.startswith("\n\n\ndef other")
    assert indent == "    "
    assert trim_body("return a + b\n    # done\nprint('x')\n", "    ") == "return a + b\n    # done"
    assert split_stub("def f():\n    return 1\n", "f") is None
    assert split_stub("class K:\n    def m(self):\n        ...\n", "K.m") is not None


async def test_local_mode_samples_candidates_and_picks_the_one_that_passes(
    tmp_path: Path, closed_port: int
) -> None:
    with LoopbackProvider(models=("fim",)) as fim:
        fim.script(
            Reply(content="return a - b"),
            Reply(content="return a + b"),
            Reply(content="return a * b"),
            model="fim",
        )
        settings = settings_for(
            providers={
                "dead": {"base_url": f"http://127.0.0.1:{closed_port}/v1"},
                "lb": {"base_url": fim.base_url},
            },
            roles={
                r: "dead:m"
                for r in ("orchestrator", "researcher", "generator", "debugger", "tester")
            },
            completion={"backend": "lb:fim"},
            council={"local_candidates": 3},
            router={"max_retries": 0},
        )
        router = Router(settings, build_providers(settings, env={}))
        try:
            result = await Council(
                router, workspace=tmp_path, limits=SandboxLimits(timeout_secs=20)
            ).run(
                CouncilRequest(
                    query="implement add",
                    mode="generate",
                    context=RequestContext(file_path="mathx.py", file_text=STUB, symbol="add"),
                )
            )
        finally:
            await close_all(router.providers)
        suffixes = [r.body.get("suffix") for r in fim.requests if r.path.endswith("/completions")]
    assert result.council_mode == "local"
    assert result.status == "approved", result.summary
    assert "Local council mode: no chat model was reachable" in result.summary
    assert "return a + b" in result.code.files[0].content
    assert "def other" in result.code.files[0].content  # the rest of the file is kept
    assert result.test_report.execution.passed == 2  # the doctest and the assert
    assert len(suffixes) == 3 and all(s and s.startswith("\n\n\ndef other") for s in suffixes)


def _dead_council(closed_port: int, **more: Any) -> Router:
    settings = settings_for(
        providers={"dead": {"base_url": f"http://127.0.0.1:{closed_port}/v1"}},
        roles={
            r: "dead:m" for r in ("orchestrator", "researcher", "generator", "debugger", "tester")
        },
        router={"max_retries": 0},
        **more,
    )
    return Router(settings, build_providers(settings, env={}))


async def _generate_offline(router: Router, tmp_path: Path) -> Any:
    try:
        return await Council(router, workspace=tmp_path).run(
            CouncilRequest(
                query="implement add",
                mode="generate",
                context=RequestContext(file_path="m.py", file_text=STUB, symbol="add"),
            )
        )
    finally:
        await close_all(router.providers)


@pytest.mark.slow
async def test_local_mode_samples_the_shipped_specialist_offline(
    tmp_path: Path, closed_port: int
) -> None:
    """No chat model, default completion backend: the shipped model writes the candidates;
    each is run against the docstring's examples, and one that fails them is not approved."""
    router = _dead_council(closed_port, council={"local_candidates": 2})
    result = await _generate_offline(router, tmp_path)
    assert result.council_mode == "local"
    assert "the built-in specialist" in result.summary, result.summary
    assert result.code is not None and "def other" in result.code.files[0].content
    execution = result.test_report.execution
    assert execution is not None and execution.passed + execution.failed + execution.errors == 2
    if execution.ok:
        assert result.status == "approved"
    else:
        assert result.status == "best_effort"
        assert "not approved" in result.summary


async def test_local_mode_with_a_missing_specialist_says_what_to_configure(
    tmp_path: Path, closed_port: int
) -> None:
    router = _dead_council(closed_port, completion={"model_path": str(tmp_path / "nope")})
    result = await _generate_offline(router, tmp_path)
    assert result.council_mode == "local" and result.status == "failed"
    assert any("model_path" in e for e in result.errors), result.errors
    assert "no usable candidate" in result.summary


def test_borda_and_agreement() -> None:
    rankings = {
        "a": ["b", "c"],
        "b": ["a", "c"],
        "c": ["b", "a"],
    }
    standings = borda(rankings, ["a", "b", "c"])
    assert [s.member for s in standings] == ["b", "a", "c"]
    assert [s.borda for s in standings] == [2, 1, 0]
    assert sum(s.borda for s in standings) == 3  # 3 rankers x (2 choose 2) points
    by = {s.member: s for s in standings}
    assert by["a"].agreement == 1.0 and by["c"].agreement == 1.0
    assert by["b"].agreement == 1.0  # b ranked a over c, as the aggregate does
    assert kendall_tau(["x", "y", "z"], ["z", "y", "x"]) == -1.0
    assert kendall_tau(["x", "y", "z"], ["x", "z", "y"]) == pytest.approx(1 / 3, abs=1e-3)


def test_anonymise_and_decode() -> None:
    labels = anonymise(["m1", "m2", "m3"], random.Random(1))
    assert sorted(labels) == ["A", "B", "C"] and sorted(labels.values()) == ["m1", "m2", "m3"]
    reply = RankingReply(ranking=["Response C", "a.", "A", "Z"])
    order = decode_ranking(reply, labels)
    assert order[:2] == [labels["C"], labels["A"]] and len(order) == 3


def ranking(*labels: str) -> Reply:
    return Reply(content=json.dumps({"ranking": list(labels), "reasons": []}))


async def test_deliberate_end_to_end_with_a_failing_member(closed_port: int) -> None:
    with LoopbackProvider(models=("m1", "m2", "m3", "chair")) as lb:
        for model, answer in (("m1", "Use a dict."), ("m2", "Use a set."), ("m3", "Use a list.")):
            lb.script(Reply(content=answer), ranking("A", "B"), model=model)
        lb.script(
            Reply(content=json.dumps({"answer": "Use a set.", "dissent": ["m3: a list"]})),
            model="chair",
        )
        settings = settings_for(
            providers={
                "lb": {"base_url": lb.base_url},
                "dead": {"base_url": f"http://127.0.0.1:{closed_port}/v1"},
            },
            roles={"orchestrator": "lb:chair"},
            router={"max_retries": 0},
        )
        router = Router(settings, build_providers(settings, env={}))
        members = [Tier(target=t) for t in ("lb:m1", "lb:m2", "lb:m3", "dead:m4")]
        try:
            result = await deliberate(router, "How to dedupe?", members=members, seed=7)
        finally:
            await close_all(router.providers)
        rank_prompts = [
            r.body["messages"][-1]["content"]
            for r in lb.requests
            if r.body and "Labels:" in r.body["messages"][-1]["content"]
        ]
    assert result.status == "approved" and result.final_answer == "Use a set."
    assert result.dissent == ["m3: a list"] and result.chairman == "lb:chair"
    assert any(f.startswith("dead:m4 did not answer") for f in result.failed)
    assert set(result.rankings) == {"lb:m1", "lb:m2", "lb:m3"}
    for ranker, order in result.rankings.items():
        assert ranker not in order and len(order) == 2  # ranks the others only
    assert sum(s.borda for s in result.standings) == 3
    assert {s.member for s in result.standings} == {"lb:m1", "lb:m2", "lb:m3"}
    # Anonymised: no ranker sees member names; each sees the two other answers.
    assert len(rank_prompts) == 3
    for prompt in rank_prompts:
        assert "lb:" not in prompt and prompt.count("## Response ") == 2
    assert all(s.agreement is not None for s in result.standings)
    assert {u.role for u in result.usage} == {"deliberate", "orchestrator"}


async def test_deliberate_chairman_failure_falls_back_to_top_answer() -> None:
    with LoopbackProvider(models=("m1", "m2", "chair")) as lb:
        lb.script(Reply(content="one"), ranking("A"), model="m1")
        lb.script(Reply(content="two"), ranking("A"), model="m2")
        lb.script(Reply(status=400), model="chair")
        settings = settings_for(
            providers={"lb": {"base_url": lb.base_url}},
            roles={"orchestrator": "lb:chair"},
            router={"max_retries": 0},
        )
        router = Router(settings, build_providers(settings, env={}))
        members: list[Any] = [Tier(target="lb:m1"), Tier(target="lb:m2")]
        try:
            result = await deliberate(router, "q", members=members)
        finally:
            await close_all(router.providers)
    assert result.status == "best_effort"
    assert result.final_answer in ("one", "two")
    assert any("chairman failed" in f for f in result.failed)


@pytest.mark.parametrize("mode", ["tests", "debug"])
async def test_local_tests_and_debug_modes_use_examples_and_static_analysis(
    tmp_path: Path, mode: str
) -> None:
    code = STUB.replace("    pass\n", "    return a + b + undefined_name\n")
    settings = settings_for(council={"engine": "local"})
    router = Router(settings, build_providers(settings, env={}))
    try:
        result = await Council(
            router, workspace=tmp_path, limits=SandboxLimits(timeout_secs=20)
        ).run(
            CouncilRequest(
                query="check add",
                mode=mode,
                context=RequestContext(file_path="mathx.py", file_text=code, symbol="add"),
            )
        )
    finally:
        await close_all(router.providers)
    assert result.council_mode == "local" and result.status == "best_effort"
    ex = result.test_report.execution
    assert ex is not None and ex.failed == 2  # both examples hit the NameError
    if mode == "debug":
        assert any(f.code == "undefined-name" and f.line == 9 for f in result.static_findings)
        assert result.diagnosis.verdict == "fail"
    else:
        assert result.code.files[0].path == "tests/test_mathx_examples.py"
