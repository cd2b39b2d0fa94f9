"""VS Code: the council's commands from the palette, with their progress, cancel and outcome.

The first test also checks the extension starts the server and shows provider health.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from providers.loopback import LoopbackProvider, Reply
from tests.scenarios import (
    js,
    script_add_tests,
)
from tests.vscode.harness import Workbench, chat, server_started
from tests.waits import wait_until

pytestmark = pytest.mark.timeout(300)


def test_extension_starts_server_and_add_tests_runs_from_the_palette(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    waited = server_started(bench)
    bench.shot("server-started")
    status = bench.status_text()
    assert re.search(r"\d+/\d+ up", status), status

    # Show Providers: a quick pick with one row per provider:model, with health and roles
    bench.palette("Council: Show Providers")
    rows = bench.page.locator(".quick-input-list .monaco-list-row", has_text="lb:orch")
    rows.first.wait_for(timeout=15_000)
    row_text = rows.first.inner_text()
    assert "local" in row_text and "orchestrator" in row_text, row_text
    bench.shot("providers")
    bench.page.keyboard.press("Escape")

    script_add_tests(lb, delay=2.0)  # the first call waits, so the progress is seen
    bench.open_file("mathx.py")
    bench.page.keyboard.press("Control+Home")
    bench.palette("Council: Add Tests")
    toast = bench.toast("Council: Add Tests")
    toast.wait_for(timeout=15_000)
    # the server's $/progress reaches the notification: the orchestrator's stage is named
    stage = bench.wait_notification("orchestrator", 10)
    bench.shot("add-tests-progress")
    # a cancellable notification has a Cancel button
    assert toast.locator(".monaco-button", has_text="Cancel").count() >= 1, stage

    bench.page.locator(".tab", has_text="test_mathx.py").first.wait_for(timeout=60_000)
    outcome = bench.wait_notification("passed")
    bench.shot("add-tests-done")
    assert "Created tests/test_mathx.py" in outcome and "2 passed, 0 failed" in outcome, outcome
    # the test file was created and shown; the edit is unsaved until the user saves it
    target = workspace / "tests" / "test_mathx.py"
    assert target.exists()
    bench.editor_shows("def test_adds_positive")
    bench.page.keyboard.press("Control+S")
    wait_until(lambda: "def test_adds_positive" in target.read_text(), 10, "the saved test file")
    assert target.read_text().count("def test_adds_positive") == 1
    # the orchestrator really received the request, and the tester's suite ran in the sandbox
    assert any(r.model == "tst" for r in lb.requests), [r.model for r in lb.requests]
    print(
        json.dumps(
            {
                "install_s": round(bench.install_s, 1),  # type: ignore[attr-defined]
                "workbench_s": round(bench.workbench_s, 1),  # type: ignore[attr-defined]
                "server_ready_s": round(waited, 1),
                "status": status,
            }
        )
    )


def test_cancel_button_in_the_progress_notification_stops_the_run(
    vscode: Workbench, lb: LoopbackProvider
) -> None:
    bench = vscode
    server_started(bench)
    script_add_tests(lb, delay=30)  # the orchestrator would answer only after 30 s
    bench.open_file("mathx.py")
    bench.palette("Council: Add Tests")
    toast = bench.toast("Council: Add Tests")
    toast.wait_for(timeout=15_000)
    wait_until(lambda: chat(lb, "orch"), 15, "the orchestrator's request")
    bench.shot("before-cancel")
    start = time.monotonic()
    toast.hover()  # the buttons of a toast are shown on hover
    toast.locator(".monaco-button", has_text="Cancel").click()
    message = bench.wait_notification("cancelled", 15)
    took = time.monotonic() - start
    bench.shot("cancelled")
    assert "Council: Add Tests: cancelled" in message, message
    # the provider saw the client hang up: the HTTP request was really closed
    orch = chat(lb, "orch")[0]
    wait_until(lambda: orch.client_disconnected_at is not None, 10, "the orchestrator call closed")
    assert took < 15, took
    assert not (bench.server.workspace / "tests" / "test_mathx.py").exists()  # type: ignore[attr-defined]
    # the palette's Council: Cancel stops a run too (all of this window's runs)
    lb.clear()  # the first run's unused replies and records
    script_add_tests(lb, delay=30)
    bench.palette("Council: Add Tests")
    bench.toast("Council: Add Tests").wait_for(timeout=15_000)
    wait_until(lambda: chat(lb, "orch"), 15, "the second run's orchestrator request")
    bench.palette("Council: Cancel")
    assert "cancelled 1 run(s)" in bench.wait_notification("Council: cancelled", 15)
    second = chat(lb, "orch")[0]
    wait_until(
        lambda: second.client_disconnected_at is not None, 10, "the second run's call closed"
    )
    bench.shot("palette-cancel")


def test_run_asks_for_a_query_and_opens_the_markdown_report(
    vscode: Workbench, lb: LoopbackProvider
) -> None:
    bench = vscode
    server_started(bench)
    lb.script(js(goal="explain", tasks=[{"agent": "researcher", "instruction": "x"}]), model="orch")
    lb.script(js(answer="Use `functools.cache` on the function."), model="res")
    bench.open_file("mathx.py")
    bench.palette("Council: Run...")
    box = bench.page.locator(".quick-input-widget input")
    bench.page.locator(".quick-input-widget", has_text="Ask the council").wait_for(timeout=10_000)
    box.fill("how do I memoise add?")
    bench.shot("run-query")
    bench.page.keyboard.press("Enter")
    # the server writes the report outside the workspace and asks VS Code to show it
    bench.page.locator(".tab", has_text=".md").first.wait_for(timeout=30_000)
    bench.editor_shows("functools.cache", 10_000)
    outcome = bench.wait_notification("Open Report")  # the outcome's button
    bench.shot("run-report")
    assert "Council: Run:" in outcome, outcome
    # the open file went along as context
    orch = chat(lb, "orch")[0]
    assert "mathx.py" in json.dumps(orch.body), orch.body


@pytest.mark.vscode_settings({"council.deliberate": {"members": ["lb:res", "lb:gen"]}})
def test_deliberate_asks_for_a_question_and_reports_the_standings(
    vscode: Workbench, lb: LoopbackProvider
) -> None:
    # `council.deliberate` is a whole council.toml table given as a VS Code setting
    bench = vscode
    server_started(bench)
    for m in ("res", "gen"):
        lb.script(Reply(content=f"answer from {m}"), js(ranking=["A"]), model=m)
    lb.script(js(answer="Use a dict with move_to_end.", dissent=["none"]), model="orch")
    bench.palette("Council: Deliberate...")
    bench.page.locator(".quick-input-widget", has_text="deliberate").wait_for(timeout=10_000)
    bench.page.locator(".quick-input-widget input").fill("How should an LRU cache be built?")
    bench.page.keyboard.press("Enter")
    bench.page.locator(".tab", has_text=".md").first.wait_for(timeout=30_000)
    bench.editor_shows("Council deliberation", 10_000)
    bench.editor_shows("move_to_end")
    outcome = bench.wait_notification("Open Report")
    bench.shot("deliberation")
    assert "Council: Deliberate: approved: Use a dict with move_to_end." in outcome, outcome
    # both configured members answered and ranked; the chairman (orchestrator) summed up
    assert len(chat(lb, "res")) == 2 and len(chat(lb, "gen")) == 2, [r.model for r in lb.requests]
    assert len(chat(lb, "orch")) == 1
