"""VS Code: the *Council* view in the activity bar shows a Generate run after it ended: its
stages with provider:model, time, tokens and cost, its candidate as a diff, its test cases,
its report and its transcript. Screenshots: `run-view`, `candidate-diff`, `run-report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from providers.loopback import LoopbackProvider
from tests.scenarios import STUB, script_generate
from tests.vscode.harness import Workbench, server_started
from tests.waits import wait_until

pytestmark = pytest.mark.timeout(300)


def row(bench: Workbench, text: str) -> Any:
    """A row of the Council view's tree (label and description are both in its text)."""
    return bench.page.locator(".pane-body .monaco-list-row", has_text=text).first


def rows(bench: Workbench) -> list[str]:
    return bench.page.locator(".pane-body .monaco-list-row").all_inner_texts()


@pytest.mark.vscode_settings({"council.council.confirm_edits": False})
def test_council_view_shows_a_finished_run_its_stages_and_the_candidate_diff(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    (workspace / "mathx.py").write_text(STUB)
    server_started(bench)
    script_generate(lb)
    bench.open_file("mathx.py")
    bench.page.keyboard.press("Control+Home")
    bench.palette("Council: Generate")
    assert "Replaced `add`" in bench.wait_notification("Replaced", 60)

    # the view container is in the activity bar; its view lists the run after it ended
    council = bench.page.locator('.activitybar [aria-label^="Council"]')
    council.first.wait_for(timeout=10_000)
    council.first.click()
    run = row(bench, "Council: Generate add")
    run.wait_for(timeout=15_000)
    # a wider side bar, so that the screenshots show the descriptions whole
    bar = bench.page.locator(".part.sidebar").bounding_box()
    edge_x, mid_y = bar["x"] + bar["width"] + 1, bar["y"] + bar["height"] / 2
    bench.page.mouse.move(edge_x, mid_y)
    bench.page.mouse.down()
    bench.page.mouse.move(edge_x + 300, mid_y, steps=5)
    bench.page.mouse.up()
    wait_until(lambda: "approved" in run.inner_text(), 10, "the run's status", lambda: rows(bench))
    assert "tok" in run.inner_text() and "$" in run.inner_text(), run.inner_text()
    run.click()  # expand
    stages = row(bench, "Stages (")
    stages.wait_for(timeout=10_000)
    for group in ("Report", "Candidates (1)", "Tests (2/2 passed)", "Transcript ("):
        row(bench, group).wait_for(timeout=5_000)
    stages.click()
    generator = row(bench, "generate · generator")
    generator.wait_for(timeout=10_000)
    text = generator.inner_text()
    assert "lb:gen" in text and " s" in text and "tok" in text and "$0.0000" in text, text
    for stage in ("decompose · orchestrator", "review · tester", "review · sandbox"):
        row(bench, stage).wait_for(timeout=5_000)
    bench.shot("run-view")
    stages.click()  # collapse: the tree stays short enough to show every row

    row(bench, "Candidates (1)").click()
    candidate = row(bench, "c1 (pass 1) ★ chosen")
    candidate.wait_for(timeout=10_000)
    assert "lb:gen" in candidate.inner_text() and "tests 2/2" in candidate.inner_text()
    candidate.click()
    diff = bench.page.locator(".monaco-diff-editor").first
    diff.wait_for(timeout=15_000)
    bench.page.locator(".tab.active", has_text="original ↔ c1").wait_for(timeout=10_000)

    # the modified side is the file as Generate left it: add replaced, the rest kept
    def side(which: str) -> str:  # Monaco renders spaces as no-break spaces
        # (the modified side also shows the deleted lines, in a view zone of its own)
        lines = bench.page.locator(f".monaco-diff-editor .editor.{which} .lines-content").first
        return str(lines.inner_text()).replace("\xa0", " ")

    wait_until(
        lambda: "return a + b" in side("modified"),
        10,
        "the candidate's code",
        lambda: repr(side("modified")) + repr(side("original")),
    )
    assert "keep me" in side("modified") and "def untouched" in side("modified")
    assert "pass" in side("original") and "return a + b" not in side("original")
    bench.shot("candidate-diff")

    row(bench, "Tests (2/2 passed)").click()
    row(bench, "test_adds_positive").wait_for(timeout=10_000)
    assert "passed" in row(bench, "test_adds_negative").inner_text()

    # a finished run's report opens again from the view
    row(bench, "Report").click()
    bench.page.locator(".tab.active", has_text="report.md").wait_for(timeout=15_000)
    bench.editor_shows("## Stages", 10_000)
    bench.shot("run-report")
    # each model call of the transcript opens as a read-only document
    row(bench, "Transcript (").click()
    call = row(bench, "generate · generator")
    call.wait_for(timeout=10_000)
    call.click()
    bench.page.locator(".tab.active", has_text="generator.md").wait_for(timeout=15_000)
    bench.editor_shows("## Prompt", 10_000)
