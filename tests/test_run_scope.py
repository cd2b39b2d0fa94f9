"""RunScope: how a run ends is said once, the same way for every kind of run."""

from __future__ import annotations

import anyio
import pytest

from council.events import Event, Events
from council.run_scope import RunScope
from providers.registry import build_providers
from providers.router import Router
from tests.conftest import settings_for

pytestmark = pytest.mark.anyio


def _scope(session_id: str | None = None) -> tuple[RunScope, list[Event]]:
    settings = settings_for()
    seen: list[Event] = []
    events = Events()
    events.subscribe(seen.append)
    router = Router(settings, build_providers(settings, env={}))
    return RunScope.open(router, events=events, session_id=session_id), seen


async def test_a_crash_ends_the_run_as_failed_not_cancelled() -> None:
    scope, seen = _scope("fixed-id")
    with pytest.raises(RuntimeError), scope.lifecycle("x"):
        raise RuntimeError("boom")
    assert [e.kind for e in seen] == ["run_started", "run_finished"]
    assert seen[-1].detail == "failed: RuntimeError: boom" and not seen[-1].ok
    assert {e.session_id for e in seen} == {"fixed-id"}


async def test_cancellation_and_success_are_reported_as_such() -> None:
    scope, seen = _scope()
    with anyio.CancelScope() as cancel:
        with scope.lifecycle("x"):
            cancel.cancel()
            await anyio.sleep(1)
    assert seen[-1].detail == "cancelled"
    scope, seen = _scope()
    with scope.lifecycle("x"):
        scope.outcome = "approved"
    assert seen[-1].detail == "approved" and seen[-1].ok and seen[-1].percent == 100


def test_usage_says_when_its_tokens_are_estimates() -> None:
    from council.run_scope import usage_by_role
    from providers.budget import CallRecord, Ledger

    ledger = Ledger()
    ledger.records += [
        CallRecord("generator", "lb", "m", 0, 0, "ok", 10, 5),
        CallRecord("tester", "lb", "m", 0, 0, "ok", 10, 5, estimated_usage=True),
        CallRecord("tester", "lb", "m", 0, 0, "ok", 10, 5),
    ]
    rows = {u.role: u for u in usage_by_role(ledger)}
    assert not rows["generator"].estimated and rows["tester"].estimated
    assert rows["tester"].calls == 2 and rows["tester"].prompt_tokens == 20
