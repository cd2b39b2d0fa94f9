"""VS Code: what the council does inside the editor: ghost text, diagnostics with their quick
fix, and a Generate code action whose edit keeps what the user typed during the run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.loopback import LoopbackProvider, Reply
from tests.scenarios import (
    FIM,
    FIXED,
    STUB,
    debug_ok,
    js,
    plan,
    script_generate,
    suite,
    synth,
)
from tests.vscode.harness import Workbench, chat, server_started
from tests.waits import wait_until

pytestmark = pytest.mark.timeout(300)
# These apply edits without the refactor preview (`council.confirm_edits` off), which covers
# the setting's off state; the preview itself is test_review.py's.
APPLIED_AT_ONCE = pytest.mark.vscode_settings({"council.council.confirm_edits": False})


def test_inline_suggestion_appears_as_ghost_text_and_tab_accepts_it(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    server_started(bench)
    lb.script(*[Reply(content="a + b") for _ in range(40)], model=FIM)
    bench.open_file("m.py")
    bench.page.keyboard.press("Control+End")
    bench.page.keyboard.type("    return ", delay=40)
    ghost = bench.page.locator(".editor-instance .ghost-text-decoration")
    ghost.first.wait_for(timeout=20_000)

    def shown() -> str:  # Monaco renders ghost text as one span per token
        return "".join(ghost.all_inner_texts()).replace("\xa0", " ")

    wait_until(lambda: "a + b" in shown(), 10, "the ghost text 'a + b'", shown)
    bench.shot("ghost-text")
    bench.page.keyboard.press("Tab")
    # (the accepted text ends a line, so VS Code asks again and may show a new suggestion;
    # only accepted text is saved)
    bench.page.keyboard.press("Control+S")
    target = workspace / "m.py"
    wait_until(lambda: "return a + b" in target.read_text(), 10, "the saved file", target.read_text)
    bench.shot("accepted")
    assert target.read_text().splitlines()[1] == "    return a + b", target.read_text()
    fim = [r for r in lb.requests if r.model == FIM]
    assert fim, "no completion request reached the provider"
    # workspace context: `add` is defined in mathx.py, which is not open; the index found it
    prompts = [str(r.body.get("prompt", "")) for r in fim if isinstance(r.body, dict)]
    assert any("# mathx.py" in p for p in prompts), prompts[-1]


@APPLIED_AT_ONCE
def test_debug_publishes_diagnostics_and_the_quick_fix_repairs_the_code(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    (workspace / "mathx.py").write_text("def add(a: int, b: int) -> int:\n    return a - b\n")
    server_started(bench)
    lb.script(plan("debugger"), synth("APPROVE", 0.9), model="orch")
    lb.script(
        js(
            verdict="fail",
            analysis="subtracts",
            fixed_code=FIXED,
            bugs=[
                {"line": 2, "severity": "critical", "description": "Subtracts.", "fix": "Use +."}
            ],
        ),
        debug_ok(),
        model="dbg",
    )
    lb.script(suite(), model="tst")
    bench.open_file("mathx.py")
    bench.page.keyboard.press("Control+Home")
    bench.palette("Council: Debug")
    outcome = bench.wait_notification("bug(s) found", 60)
    assert "Council: Debug: 1 bug(s) found" in outcome, outcome
    # the diagnostic is in the editor: a squiggle, and the Problems panel lists it
    bench.page.locator(".editor-instance .squiggly-error").first.wait_for(timeout=10_000)
    bench.palette("View: Focus Problems")
    problems = bench.page.locator(".markers-panel", has_text="Subtracts.")
    problems.first.wait_for(timeout=10_000)
    bench.shot("problems")
    # the quick fix from the lightbulb menu applies the debugger's fixed code
    bench.focus_editor()
    bench.page.keyboard.press("Control+End")
    bench.page.keyboard.press("ArrowUp")
    bench.page.keyboard.press("End")
    bench.page.keyboard.press("Control+.")
    fix = bench.page.locator(".action-widget .monaco-list-row", has_text="Council")
    fix.first.wait_for(timeout=10_000)
    bench.shot("quick-fix-menu")
    fix.first.click()
    bench.editor_shows("return a + b", 10_000)
    bench.page.keyboard.press("Control+S")
    target = workspace / "mathx.py"
    wait_until(lambda: "return a + b" in target.read_text(), 10, "the fixed file", target.read_text)
    bench.shot("fixed")


@APPLIED_AT_ONCE
def test_generate_code_action_replaces_the_function_and_keeps_typing_during_the_run(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    (workspace / "mathx.py").write_text(STUB)
    server_started(bench)
    script_generate(lb, delay=4.0)  # the generator answers after 4 s
    bench.open_file("mathx.py")
    bench.page.keyboard.press("Control+Home")
    # the code action from the lightbulb menu (Ctrl+.), not the palette: the extension routes
    # the server's command through the same notification progress
    bench.page.keyboard.press("Control+.")
    action = bench.page.locator(
        ".action-widget .monaco-list-row", has_text="Council: Generate implementation of add"
    )
    action.first.wait_for(timeout=10_000)
    bench.shot("code-actions")
    action.first.click()
    bench.toast("Council: Generate").wait_for(timeout=15_000)
    wait_until(lambda: chat(lb, "gen"), 20, "the generator's request")
    # the user keeps typing while the council works: a comment above the function
    bench.focus_editor()
    bench.page.keyboard.press("Control+Home")
    bench.page.keyboard.type("# typed during the run\n")
    outcome = bench.wait_notification("Replaced", 60)
    bench.shot("generated")
    assert "Council: Generate: Replaced `add`" in outcome, outcome
    bench.editor_shows("return a + b", 10_000)
    bench.page.keyboard.press("Control+S")
    target = workspace / "mathx.py"
    wait_until(lambda: "return a + b" in target.read_text(), 10, "the saved file", target.read_text)
    text = target.read_text()
    assert text.startswith("# typed during the run\ndef add("), text
    assert "pass" not in text and text.count("def add") == 1, text
    assert 'return "keep me"' in text  # the rest of the file is untouched
