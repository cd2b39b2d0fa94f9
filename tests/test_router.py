"""The router against real loopback servers: retries, escalation, cooldown, budget, privacy."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from providers.base import ChatRequest, CompletionRequest, Result
from providers.budget import Ledger
from providers.errors import (
    AllTiersFailed,
    BudgetExceeded,
    LocalOnlyViolation,
    MalformedResponse,
    NoTiers,
    QualityFailure,
)
from providers.loopback import LoopbackProvider, Reply
from providers.registry import build_providers, close_all
from providers.router import Router
from tests.conftest import settings_for

pytestmark = pytest.mark.anyio


class Clock:
    """A manual clock and a sleep that advances it, so backoff and cooldown cost no time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_router(clock: Clock) -> AsyncIterator[Any]:
    made: list[Router] = []

    def make(env: dict[str, str] | None = None, **sections: Any) -> Router:
        sections.setdefault("council", {}).setdefault("budget_usd", None)
        settings = settings_for(**sections)
        router = Router(
            settings, build_providers(settings, env=env or {}), clock=clock, sleep=clock.sleep
        )
        made.append(router)
        return router

    yield make
    for router in made:
        await close_all(router.providers)


def two_tiers(a: LoopbackProvider, b: LoopbackProvider, **more: Any) -> dict[str, Any]:
    return {
        "providers": {"a": {"base_url": a.base_url}, "b": {"base_url": b.base_url}},
        "roles": {"generator": ["a:m1", "b:m2"]},
        **more,
    }


async def test_retries_with_backoff_then_falls_back_to_next_tier(
    make_router: Any, clock: Clock, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    loopback.script(Reply(status=500), Reply(status=502), Reply(status=503))
    router = make_router(**two_tiers(loopback, loopback2, router={"cooldown_failures": 10}))
    ledger = router.new_ledger()
    routed = await router.chat("generator", ChatRequest.of("hi"), ledger=ledger)
    assert routed.tier == 1 and routed.result.provider == "b" and routed.result.model == "m2"
    assert len(loopback.requests) == 3 and len(loopback2.requests) == 1
    # Full jitter: each pause is within the doubling ceiling (0.5 s, then 1 s).
    assert len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 0.5 and 0 <= clock.sleeps[1] <= 1.0
    outcomes = [(r.provider, r.outcome) for r in ledger.records]
    assert outcomes == [("a", "error: ServerFault")] * 3 + [("b", "ok")]
    assert "attempt 3" in routed.attempts[-1] and "HTTP 503" in routed.attempts[-1]


async def test_retry_after_is_honoured_inside_the_tier(
    make_router: Any, clock: Clock, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    loopback.script(Reply(status=429, headers={"Retry-After": "3"}))
    router = make_router(**two_tiers(loopback, loopback2))
    routed = await router.chat("generator", ChatRequest.of("hi"))
    assert routed.tier == 0 and clock.sleeps == [3.0]
    assert not loopback2.requests


async def test_long_retry_after_escalates_at_once(
    make_router: Any, clock: Clock, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    loopback.script(Reply(status=429, headers={"Retry-After": "600"}))
    router = make_router(**two_tiers(loopback, loopback2))
    routed = await router.chat("generator", ChatRequest.of("hi"))
    assert routed.tier == 1 and clock.sleeps == [] and len(loopback.requests) == 1
    assert any("exceeds router.retry_after_max_secs" in a for a in routed.attempts)


@pytest.mark.parametrize(
    "fault",
    [Reply(delay=2.0), Reply(reset=True), Reply(malformed=True)],
    ids=["timeout", "reset", "malformed"],
)
async def test_transport_faults_escalate(
    make_router: Any, loopback: LoopbackProvider, loopback2: LoopbackProvider, fault: Reply
) -> None:
    loopback.script(fault, fault, fault)
    sections = two_tiers(loopback, loopback2)
    sections["providers"]["a"]["timeout_secs"] = 0.3
    router = make_router(**sections)
    routed = await router.chat("generator", ChatRequest.of("hi"))
    assert routed.tier == 1 and len(loopback.requests) == 3


async def test_connection_refused_escalates(
    make_router: Any, loopback: LoopbackProvider, closed_port: int
) -> None:
    router = make_router(
        providers={
            "dead": {"base_url": f"http://127.0.0.1:{closed_port}/v1"},
            "b": {"base_url": loopback.base_url},
        },
        roles={"generator": ["dead:m1", "b:m1"]},
        router={"max_retries": 1},
    )
    routed = await router.chat("generator", ChatRequest.of("hi"))
    assert routed.result.provider == "b"
    assert sum("cannot connect" in a for a in routed.attempts) == 2


async def test_rejected_request_escalates_without_retry(
    make_router: Any, clock: Clock, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    loopback.script(Reply(status=400, body='{"error": {"message": "context too long"}}'))
    router = make_router(**two_tiers(loopback, loopback2))
    routed = await router.chat("generator", ChatRequest.of("hi"))
    assert routed.tier == 1 and len(loopback.requests) == 1 and clock.sleeps == []
    assert "context too long" in routed.attempts[0]


async def test_all_tiers_failing_reports_every_attempt(
    make_router: Any, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    loopback.script(*[Reply(status=500)] * 3)
    loopback2.script(*[Reply(status=500)] * 3)
    router = make_router(**two_tiers(loopback, loopback2, router={"cooldown_failures": 10}))
    with pytest.raises(AllTiersFailed) as caught:
        await router.chat("generator", ChatRequest.of("hi"))
    assert len(caught.value.attempts) == 6
    assert "role 'generator'" in str(caught.value)


async def test_cooldown_skips_a_dead_endpoint_then_half_opens(
    make_router: Any, clock: Clock, loopback2: LoopbackProvider, closed_port: int
) -> None:
    router = make_router(
        providers={
            "dead": {"base_url": f"http://127.0.0.1:{closed_port}/v1"},
            "b": {"base_url": loopback2.base_url},
        },
        roles={"generator": ["dead:m1", "b:m1"]},
        router={"max_retries": 2, "cooldown_failures": 3, "cooldown_secs": 30},
    )
    first = await router.chat("generator", ChatRequest.of("one"))
    assert first.result.provider == "b"
    health = {h.name: h for h in router.health_snapshot()}
    assert health["dead"].state == "cooling" and health["dead"].recent_failures == 3
    assert health["dead"].cooldown_remaining_s == 30
    assert "cannot connect" in (health["dead"].last_error or "")

    sleeps_before = len(clock.sleeps)
    second = await router.chat("generator", ChatRequest.of("two"))
    assert second.result.provider == "b"
    assert second.attempts == ["dead:m1: skipped, cooling down (30s left)"]
    assert len(clock.sleeps) == sleeps_before  # no connect attempt, no backoff

    clock.now += 31
    assert router.health.snapshot("dead").state == "half-open"
    third = await router.chat("generator", ChatRequest.of("three"))
    # One trial failure sends it straight back to cooling down: one attempt, not three.
    assert sum(a.startswith("dead:m1 (attempt") for a in third.attempts) == 1
    assert router.health.snapshot("dead").state == "cooling"


async def test_budget_stops_a_run_with_a_clear_error(
    make_router: Any, loopback: LoopbackProvider
) -> None:
    router = make_router(
        providers={
            "paid": {
                "base_url": loopback.base_url,
                "price": {"input_per_mtok": 100_000, "output_per_mtok": 100_000},
            }
        },
        roles={"generator": ["paid:m1"]},
        council={"budget_usd": 0.95},
    )
    ledger = router.new_ledger()
    await router.chat("generator", ChatRequest.of("one two three"), ledger=ledger)
    record = ledger.records[0]
    assert (record.prompt_tokens, record.completion_tokens) == (3, 6)
    assert record.cost_usd == pytest.approx(0.9)
    with pytest.raises(BudgetExceeded) as caught:
        await router.chat("generator", ChatRequest.of("again"), ledger=ledger)
    message = str(caught.value)
    assert "spent $0.9000 of $0.95 over 1 calls" in message and "budget_usd" in message
    assert len(loopback.requests) == 1  # the refused call never left the machine


async def test_token_budget(make_router: Any, loopback: LoopbackProvider) -> None:
    router = make_router(
        providers={"a": {"base_url": loopback.base_url}},
        roles={"generator": ["a:m1"]},
        council={"budget_tokens": 12},
    )
    ledger = router.new_ledger()
    await router.chat("generator", ChatRequest.of("one two three"), ledger=ledger)  # 3 + 6 tokens
    with pytest.raises(BudgetExceeded, match="used 9 of 12 tokens"):
        await router.chat("generator", ChatRequest.of("x" * 40), ledger=ledger)


async def test_model_prices_override_provider_price(
    make_router: Any, loopback: LoopbackProvider
) -> None:
    router = make_router(
        providers={
            "a": {
                "base_url": loopback.base_url,
                "price": {"input_per_mtok": 1.0},
                "model_prices": {"m2": {"input_per_mtok": 2.0, "output_per_mtok": 4.0}},
            }
        },
        roles={"generator": ["a:m2"]},
    )
    ledger = router.new_ledger()
    await router.chat("generator", ChatRequest.of("one two three"), ledger=ledger)
    assert ledger.records[0].cost_usd == pytest.approx((3 * 2.0 + 6 * 4.0) / 1e6)


def cloud_and_local(local: LoopbackProvider, cloud: LoopbackProvider) -> dict[str, Any]:
    return {
        "providers": {
            "cloud": {"base_url": cloud.base_url, "local": False},
            "home": {"base_url": local.base_url},  # loopback host: local by default
        },
        "roles": {"generator": ["cloud:m1", "home:m1"], "orchestrator": ["cloud:m1"]},
    }


async def test_local_only_refuses_cloud_with_a_clear_error(
    make_router: Any, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    router = make_router(**cloud_and_local(loopback, loopback2), council={"local_only": True})
    routed = await router.chat("generator", ChatRequest.of("hi"))
    assert routed.result.provider == "home" and not loopback2.requests
    with pytest.raises(LocalOnlyViolation) as caught:
        await router.chat("orchestrator", ChatRequest.of("hi"))
    message = str(caught.value)
    assert "council.local_only" in message and "refused: cloud:m1" in message
    assert "local = true" in message
    assert not loopback2.requests


async def test_privacy_rules_apply_per_path(
    make_router: Any, loopback: LoopbackProvider, loopback2: LoopbackProvider, tmp_path: Any
) -> None:
    sections = cloud_and_local(loopback, loopback2)
    sections["privacy"] = {"rules": [{"glob": "secret/**"}, {"glob": "secret/public/*"}]}
    router = make_router(**sections)
    router.workspace = tmp_path
    request = ChatRequest.of("hi")
    assert (await router.chat("generator", request, path="src/a.py")).result.provider == "cloud"
    assert (await router.chat("generator", request, path="secret/k.py")).result.provider == "home"
    absolute = tmp_path / "secret" / "deep" / "k.py"
    assert (await router.chat("generator", request, path=absolute)).result.provider == "home"
    with pytest.raises(LocalOnlyViolation, match="privacy rule 'secret/\\*\\*'"):
        await router.chat("orchestrator", request, path="secret/k.py")
    # A later rule with local_only = false is an exception to an earlier one.
    sections["privacy"]["rules"][1]["local_only"] = False
    router2 = make_router(**sections)
    routed = await router2.chat("generator", request, path="secret/public/readme.py")
    assert routed.result.provider == "cloud"


async def test_quality_failure_escalates_after_one_repair(
    make_router: Any, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    loopback.script(Reply(content="not json"), Reply(content="still not json"))
    loopback2.script(Reply(content='{"ok": true}'))
    router = make_router(**two_tiers(loopback, loopback2))

    async def accept(result: Result, retry: Any) -> dict[str, Any]:
        import json

        try:
            return json.loads(result.text)
        except ValueError as first:
            repaired = await retry(ChatRequest.of(f"fix this JSON: {first}"))
            try:
                return json.loads(repaired.text)
            except ValueError as exc:
                raise QualityFailure(f"invalid JSON after one repair: {exc}") from None

    routed = await router.chat("generator", ChatRequest.of("json please"), accept=accept)
    assert routed.value == {"ok": True} and routed.tier == 1
    assert len(loopback.requests) == 2 and loopback.requests[1].body["model"] == "m1"
    assert "invalid JSON after one repair" in routed.attempts[0]


async def test_rule_classifier_sends_math_to_the_math_tier(
    make_router: Any, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    router = make_router(
        providers={"a": {"base_url": loopback.base_url}, "b": {"base_url": loopback2.base_url}},
        roles={"generator": [{"target": "a:m1", "when": ["math"]}, "b:m2"]},
    )
    math = await router.chat("generator", ChatRequest.of("compute the fibonacci numbers"))
    general = await router.chat("generator", ChatRequest.of("add a logout button"))
    assert (math.result.provider, general.result.provider) == ("a", "b")


async def test_llm_classifier_uses_the_router_role_and_falls_back_to_rules(
    make_router: Any, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    loopback.script(Reply(content='{"category": "math"}'), model="router-model")
    with LoopbackProvider(models=("router-model",)) as triage:
        triage.script(Reply(content='{"category": "math"}'), Reply(status=400))
        router = make_router(
            providers={
                "a": {"base_url": loopback.base_url},
                "b": {"base_url": loopback2.base_url},
                "t": {"base_url": triage.base_url},
            },
            roles={
                "generator": [{"target": "a:m1", "when": ["math"]}, "b:m2"],
                "router": ["t:router-model"],
            },
        )
        ledger = router.new_ledger()
        first = await router.chat(
            "generator", ChatRequest.of("tidy the settings page"), ledger=ledger
        )
        assert first.result.provider == "a"  # the model said math; rules would say general
        assert [r.role for r in ledger.records] == ["router", "generator"]
        # Router model fails: the rules decide (general -> b).
        second = await router.chat("generator", ChatRequest.of("rename a variable"))
        assert second.result.provider == "b"


async def test_roles_without_tiers_and_completion_routing(
    make_router: Any, loopback: LoopbackProvider
) -> None:
    router = make_router(providers={"a": {"base_url": loopback.base_url}}, roles={"tester": []})
    with pytest.raises(NoTiers, match=r"roles\.tester"):
        await router.chat("tester", ChatRequest.of("x"))
    router = make_router(
        providers={"a": {"base_url": loopback.base_url}}, roles={"generator": "a:m1"}
    )
    routed = await router.complete("generator", CompletionRequest(prompt="x = ", suffix="\n"))
    assert routed.result.via == "fim" and routed.result.text == "pass"


async def test_stream_escalates_before_first_token_not_after(
    make_router: Any, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    loopback.script(Reply(status=500), Reply(status=500), Reply(status=500))
    router = make_router(**two_tiers(loopback, loopback2, router={"cooldown_failures": 10}))
    ledger = router.new_ledger()
    text = "".join(
        [d.text async for d in router.stream_chat("generator", ChatRequest.of("s"), ledger=ledger)]
    )
    assert text == "loopback reply to: s"
    assert ledger.records[-1].provider == "b" and ledger.records[-1].outcome == "ok"

    loopback.script(Reply(content="a b c d e f", truncate_after=2))
    with pytest.raises(MalformedResponse):
        async for _ in router.stream_chat("generator", ChatRequest.of("s")):
            pass
    assert len(loopback2.requests) == 1  # no silent switch after tokens were shown


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


async def test_api_keys_never_reach_logs_or_errors(
    make_router: Any, all_logs: pytest.LogCaptureFixture, loopback2: LoopbackProvider
) -> None:
    secret = "sk-test-abcdef1234567890SECRET"
    with LoopbackProvider(models=("m1",), require_api_key="the-right-key-123456") as guarded:
        router = make_router(
            env={"CLOUD_KEY": secret},
            providers={
                "cloud": {"base_url": guarded.base_url, "api_key_env": "CLOUD_KEY"},
                "b": {"base_url": loopback2.base_url},
            },
            roles={"generator": ["cloud:m1"], "tester": ["cloud:m1", "b:m1"]},
        )
        # The server echoes the wrong key back in its 401 body, as real providers do.
        with pytest.raises(AllTiersFailed) as caught:
            await router.chat("generator", ChatRequest.of("hi"))
        routed = await router.chat("tester", ChatRequest.of("hi"))
        assert guarded.requests[0].headers["authorization"] == f"Bearer {secret}"
    text = str(caught.value) + repr(caught.value.attempts) + repr(routed.attempts)
    assert "HTTP 401" in text and "Incorrect API key provided" in text
    assert secret not in text
    assert secret not in all_logs.text
    for record in all_logs.records:
        assert secret not in record.getMessage()


async def test_wrong_schema_answer_is_repaired_or_escalated(
    make_router: Any, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    from pydantic import BaseModel, ValidationError

    class Plan(BaseModel):
        steps: list[str]
        risk: int

    wrong = Reply(content='{"steps": "one", "risk": "high"}')  # valid JSON, wrong schema
    loopback.script(wrong, wrong)
    router = make_router(**two_tiers(loopback, loopback2))

    async def accept(result: Result, retry: Any) -> Plan:
        try:
            return Plan.model_validate_json(result.text)
        except ValidationError as first:
            again = await retry(ChatRequest.of(f"Your JSON failed validation: {first}"))
            try:
                return Plan.model_validate_json(again.text)
            except ValidationError as exc:
                raise QualityFailure(f"schema still invalid: {exc.error_count()} errors") from None

    request = ChatRequest.of("plan", json_schema=Plan.model_json_schema())
    routed = await router.chat("generator", request, accept=accept)
    assert routed.tier == 1 and isinstance(routed.value, Plan)
    assert loopback.requests[0].body["response_format"]["type"] == "json_schema"
    assert "schema still invalid: 2 errors" in routed.attempts[0]


# -- what chat, complete and stream_chat share: one loop walks the tiers for all three -----

ENTRY_POINTS = ["chat", "complete", "stream"]


async def ask(
    router: Router,
    entry: str,
    ledger: Ledger | None = None,
    *,
    role: str = "generator",
    prompt: str = "one two three",
) -> str:
    """One call through `entry` (`router.chat`, `router.complete` or `router.stream_chat`)."""
    if entry == "chat":
        return (await router.chat(role, ChatRequest.of(prompt), ledger=ledger)).result.text
    if entry == "complete":
        request = CompletionRequest(prompt=prompt, suffix="\n")
        return (await router.complete(role, request, ledger=ledger)).result.text
    stream = router.stream_chat(role, ChatRequest.of(prompt), ledger=ledger)
    return "".join([delta.text async for delta in stream])


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("fault", "error"),
    [(Reply(status=500), "ServerFault"), (Reply(delay=2.0), "ProviderTimeout")],
    ids=["500", "timeout"],
)
async def test_every_entry_point_retries_then_escalates_alike(
    make_router: Any,
    clock: Clock,
    loopback: LoopbackProvider,
    loopback2: LoopbackProvider,
    entry: str,
    fault: Reply,
    error: str,
) -> None:
    loopback.script(fault, fault)
    sections = two_tiers(loopback, loopback2, router={"max_retries": 1, "cooldown_failures": 10})
    sections["providers"]["a"]["timeout_secs"] = 0.3
    router = make_router(**sections)
    ledger = router.new_ledger()
    assert await ask(router, entry, ledger)
    seen = [(r.provider, r.model, r.tier, r.attempt, r.outcome) for r in ledger.records]
    assert seen == [
        ("a", "m1", 0, 0, f"error: {error}"),
        ("a", "m1", 0, 1, f"error: {error}"),
        ("b", "m2", 1, 0, "ok"),
    ]
    assert len(loopback.requests) == 2 and len(loopback2.requests) == 1
    assert len(clock.sleeps) == 1 and 0 <= clock.sleeps[0] <= 0.5  # one jittered backoff
    assert loopback2.requests[0].body["model"] == "m2"


@pytest.mark.parametrize("entry", ENTRY_POINTS)
async def test_a_cooldown_earned_through_one_entry_point_holds_for_all(
    make_router: Any, clock: Clock, loopback2: LoopbackProvider, closed_port: int, entry: str
) -> None:
    router = make_router(
        providers={
            "dead": {"base_url": f"http://127.0.0.1:{closed_port}/v1"},
            "b": {"base_url": loopback2.base_url},
        },
        roles={"generator": ["dead:m1", "b:m1"]},
        router={"max_retries": 2, "cooldown_failures": 3, "cooldown_secs": 30},
    )
    ledger = router.new_ledger()
    await ask(router, entry, ledger)
    assert [r.outcome for r in ledger.records] == ["error: ConnectionFailed"] * 3 + ["ok"]
    assert router.health.snapshot("dead").state == "cooling"
    sleeps = list(clock.sleeps)
    for other in ENTRY_POINTS:
        later = router.new_ledger()
        await ask(router, other, later)
        assert [(r.provider, r.outcome) for r in later.records] == [("b", "ok")], other
    assert clock.sleeps == sleeps  # the cooling endpoint was not even tried


@pytest.mark.parametrize("entry", ENTRY_POINTS)
async def test_every_entry_point_reports_all_tiers_failed_alike(
    make_router: Any,
    clock: Clock,
    loopback: LoopbackProvider,
    loopback2: LoopbackProvider,
    entry: str,
) -> None:
    refusal = Reply(status=400, body='{"error": {"message": "context too long"}}')
    loopback.script(refusal)
    loopback2.script(refusal)
    router = make_router(**two_tiers(loopback, loopback2))
    with pytest.raises(AllTiersFailed) as caught:
        await ask(router, entry)
    failed = caught.value
    assert "role 'generator'" in str(failed) and len(failed.attempts) == 2  # no retries
    assert failed.attempts[0].startswith("a:m1 (attempt 1)")
    assert failed.attempts[1].startswith("b:m2 (attempt 1)")
    assert all("context too long" in a for a in failed.attempts)
    assert "refused the request" in failed.hint() and clock.sleeps == []


@pytest.mark.parametrize("entry", ENTRY_POINTS)
async def test_every_entry_point_enforces_privacy_and_budget(
    make_router: Any, loopback: LoopbackProvider, loopback2: LoopbackProvider, entry: str
) -> None:
    router = make_router(**cloud_and_local(loopback, loopback2), council={"local_only": True})
    ledger = router.new_ledger()
    await ask(router, entry, ledger)
    assert [r.provider for r in ledger.records] == ["home"]
    with pytest.raises(LocalOnlyViolation, match="refused: cloud:m1"):
        await ask(router, entry, role="orchestrator")
    starved = make_router(**cloud_and_local(loopback, loopback2), council={"budget_tokens": 2})
    with pytest.raises(BudgetExceeded, match="used 0 of 2 tokens"):
        await ask(starved, entry)
    assert not loopback2.requests and len(loopback.requests) == 1


async def test_a_stream_cut_before_its_first_token_is_retried_then_escalated(
    make_router: Any, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    # HTTP 200 and then nothing: the caller has seen no text, so the stream may start over.
    loopback.script(*[Reply(content="a b c", truncate_after=0)] * 3)
    router = make_router(**two_tiers(loopback, loopback2, router={"cooldown_failures": 10}))
    ledger = router.new_ledger()
    text = await ask(router, "stream", ledger, prompt="s")
    assert text == "loopback reply to: s"
    outcomes = [(r.provider, r.outcome) for r in ledger.records]
    assert outcomes == [("a", "error: MalformedResponse")] * 3 + [("b", "ok")]


async def test_a_stream_cut_after_a_token_is_recorded_and_raised_as_is(
    make_router: Any, clock: Clock, loopback: LoopbackProvider, loopback2: LoopbackProvider
) -> None:
    loopback.script(Reply(content="a b c d e f", truncate_after=2))
    router = make_router(**two_tiers(loopback, loopback2, router={"cooldown_failures": 1}))
    ledger = router.new_ledger()
    shown: list[str] = []
    with pytest.raises(MalformedResponse):  # the provider's own error, not AllTiersFailed
        async for delta in router.stream_chat("generator", ChatRequest.of("s"), ledger=ledger):
            shown.append(delta.text)
    assert "".join(shown) == "a b " and clock.sleeps == [] and not loopback2.requests
    assert [(r.provider, r.outcome) for r in ledger.records] == [("a", "error: MalformedResponse")]
    assert router.health.snapshot("a").state == "cooling"  # it still counts against the endpoint
