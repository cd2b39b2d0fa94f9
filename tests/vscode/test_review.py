"""VS Code: review before apply (`council.confirm_edits`, on by default).

The server sends Generate's edit with a change annotation that needs confirmation;
vscode-languageclient advertises `changeAnnotationSupport` and turns the annotation into the
edit's metadata, and `workspace.applyEdit` then opens VS Code's Refactor Preview instead of
applying. VS Code lists a change that needs confirmation unticked: the user ticks it and
presses Apply, or presses Discard (Apply with nothing ticked is the same as Discard).
Screenshots of the preview land in `build/e2e/vscode/<test>/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from providers.loopback import LoopbackProvider
from tests.scenarios import FIXED, STUB, debug_ok, js, plan, script_generate, suite, synth
from tests.vscode.harness import Workbench, server_started
from tests.waits import wait_until

pytestmark = pytest.mark.timeout(300)

PANEL = ".bulk-edit-panel"

# Generate keeps the stub's docstring: the model's code (FIXED) has none
GENERATED = STUB.replace("    pass\n", "    return a + b\n", 1)


def generate_into_preview(bench: Workbench, lb: LoopbackProvider) -> Any:
    """Runs *Council: Generate* on `add` and waits for the Refactor Preview; returns it."""
    server_started(bench)
    script_generate(lb)
    bench.open_file("mathx.py")
    bench.page.keyboard.press("Control+Home")
    bench.palette("Council: Generate")
    panel = bench.page.locator(PANEL)
    panel.wait_for(state="visible", timeout=60_000)
    # the change is listed under the annotation's label, with the file it touches
    wait_until(
        lambda: "mathx.py" in panel.inner_text(), 10, "mathx.py in the preview", panel.inner_text
    )
    return panel


def test_generate_opens_the_refactor_preview_and_apply_changes_the_file(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    (workspace / "mathx.py").write_text(STUB)
    panel = generate_into_preview(bench, lb)
    # nothing has changed yet: the editor still shows the stub
    bench.editor_shows("pass")
    bench.shot("refactor-preview")
    # VS Code lists changes that need confirmation unticked: tick the file, then Apply
    box = panel.locator(".monaco-list-row .edit-checkbox").first
    box.click()
    wait_until(lambda: box.get_attribute("aria-checked") == "true", 5, "the change to be ticked")
    bench.shot("ticked")
    # selecting the file opens the ticked change as a side-by-side diff
    panel.locator(".monaco-list-row .monaco-icon-label", has_text="mathx.py").first.click()
    diff = bench.page.locator(".editor-instance .monaco-diff-editor").first
    diff.wait_for(timeout=15_000)

    def shown() -> str:  # Monaco renders spaces as no-break spaces
        return str(diff.inner_text()).replace("\xa0", " ")

    wait_until(lambda: "return a + b" in shown(), 10, "the change in the diff", shown)
    bench.shot("refactor-preview-diff")
    panel.locator(".buttons .monaco-button", has_text="Apply").first.click()
    outcome = bench.wait_notification("Replaced", 30)
    assert "Council: Generate: Replaced `add`" in outcome, outcome
    bench.open_file("mathx.py")  # the file's own editor, not the preview's diff
    bench.editor_shows("return a + b", 10_000)
    bench.page.keyboard.press("Control+S")
    target = workspace / "mathx.py"
    wait_until(lambda: "return a + b" in target.read_text(), 10, "the saved file", target.read_text)
    bench.shot("applied")
    assert target.read_text() == GENERATED, target.read_text()


def test_discarding_the_refactor_preview_leaves_the_file_and_says_not_applied(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    (workspace / "mathx.py").write_text(STUB)
    panel = generate_into_preview(bench, lb)
    bench.shot("refactor-preview")
    panel.locator(".buttons .monaco-button", has_text="Discard").first.click()
    outcome = bench.wait_notification("not applied", 30)
    bench.shot("discarded")
    assert "Council: Generate: not applied: rejected in review." in outcome, outcome
    assert (workspace / "mathx.py").read_text() == STUB
    # and the editor holds no unsaved change: its tab is not dirty
    assert bench.page.locator(".tab.dirty", has_text="mathx.py").count() == 0
    bench.editor_shows("pass")


def test_debug_quick_fix_opens_the_refactor_preview_too(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    broken = "def add(a: int, b: int) -> int:\n    return a - b\n"
    (workspace / "mathx.py").write_text(broken)
    server_started(bench)
    lb.script(plan("debugger"), synth("APPROVE", 0.9), model="orch")
    bug = {"line": 2, "severity": "critical", "description": "Subtracts.", "fix": "Use +."}
    lb.script(
        js(verdict="fail", analysis="-", fixed_code=FIXED, bugs=[bug]), debug_ok(), model="dbg"
    )
    lb.script(suite(), model="tst")
    bench.open_file("mathx.py")
    bench.page.keyboard.press("Control+Home")
    bench.palette("Council: Debug")
    bench.wait_notification("bug(s) found", 60)
    bench.page.locator(".editor-instance .squiggly-error").first.wait_for(timeout=10_000)
    bench.focus_editor()
    bench.page.keyboard.press("Control+End")
    bench.page.keyboard.press("ArrowUp")
    bench.page.keyboard.press("End")
    bench.page.keyboard.press("Control+.")
    fix = bench.page.locator(".action-widget .monaco-list-row", has_text="debugger's fix")
    fix.first.wait_for(timeout=10_000)
    fix.first.click()
    panel = bench.page.locator(PANEL)
    panel.wait_for(state="visible", timeout=15_000)
    bench.shot("refactor-preview")
    assert (workspace / "mathx.py").read_text() == broken
    panel.locator(".monaco-list-row .edit-checkbox").first.click()
    panel.locator(".buttons .monaco-button", has_text="Apply").first.click()
    bench.editor_shows("return a + b", 10_000)
    bench.focus_editor()
    bench.page.keyboard.press("Control+S")
    target = workspace / "mathx.py"
    wait_until(lambda: target.read_text() == FIXED, 10, "the fixed file", target.read_text)
    bench.shot("fixed")
