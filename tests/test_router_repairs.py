"""A repair request (the `retry` an `accept` check makes) is a call like any other."""

from __future__ import annotations

from typing import Any

import pytest

from providers.base import ChatRequest, Result
from providers.errors import BudgetExceeded
from providers.loopback import LoopbackProvider, Reply
from providers.registry import build_providers, close_all
from providers.router import Router
from tests.conftest import settings_for

pytestmark = pytest.mark.anyio


async def test_a_repair_is_checked_against_the_budget_before_it_goes_out(
    loopback: LoopbackProvider,
) -> None:
    loopback.script(Reply(content="not json"), Reply(content='{"ok": true}'))
    settings = settings_for(
        providers={"a": {"base_url": loopback.base_url}},
        roles={"generator": ["a:m1"]},
        council={"budget_usd": None, "budget_tokens": 12},
    )
    router = Router(settings, build_providers(settings, env={}))

    async def accept(result: Result, retry: Any) -> str:
        repaired = await retry(ChatRequest.of("fix this JSON, it is broken: " + "x" * 40))
        return repaired.text

    try:
        ledger = router.new_ledger()
        with pytest.raises(BudgetExceeded, match="of 12 tokens"):
            await router.chat("generator", ChatRequest.of("json"), ledger=ledger, accept=accept)
        assert len(loopback.requests) == 1  # the repair never left the machine
        assert [r.outcome for r in ledger.records] == ["ok"]
    finally:
        await close_all(router.providers)
