"""VS Code: trigger and accept control, and "why no suggestion?", in a real VS Code.

A manual trigger shows nothing while typing until Alt+\\ (*Trigger Inline Suggestion*); the
completion status item says why each request gave nothing (manual trigger, empty after
post-processing, skipped mid-word); *Council: Explain Last Completion* opens the server's
explanation as a Markdown preview; with `council.completion.candidates` = 2, Alt+] and Alt+[
cycle between the greedy and the sampled candidate; and VS Code's own partial accept (Ctrl+Right
the next word, Ctrl+Down, the extension's binding, the next line) works on our suggestions.

The loopback answers completions through a responder that looks at the prompt and the
temperature (the greedy candidate is asked at 0, the others at 0.7), so what VS Code shows
does not depend on how many requests typing happened to send.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from providers.loopback import LoopbackProvider, Reply
from providers.loopback.records import RequestRecord
from tests.scenarios import FIM
from tests.vscode.harness import Workbench, server_started
from tests.waits import wait_until

pytestmark = pytest.mark.timeout(300)

COMPLETION_ITEM = '.statusbar-item[id$="council.completion"]'
GHOST = ".editor-instance .ghost-text-decoration"  # the suggestion's part on the cursor's line


def answer_by_prompt(record: RequestRecord) -> Reply | None:
    """The loopback's FIM answers: by what precedes the cursor, greedy or sampled."""
    body = record.body if isinstance(record.body, dict) else {}
    if record.model != FIM or not record.path.endswith("/completions") or "prompt" not in body:
        return None
    prompt, greedy = str(body["prompt"]), not body.get("temperature")
    if prompt.endswith("def add(a, b):\n    "):
        return Reply(content="total = a + b\n    return total")
    if prompt.endswith("return "):
        return Reply(content="total" if greedy else "a + b")
    if prompt.endswith("print("):
        return Reply(content=")")  # what the suffix already has: nothing is left to show
    return Reply(content="")


def ghost(bench: Workbench) -> str:
    """The ghost text on screen (Monaco renders it as spans, non-breaking spaces)."""
    found = bench.page.locator(GHOST)
    return "".join(found.all_inner_texts()).replace("\xa0", " ")


def completion_status(bench: Workbench) -> str:
    item = bench.page.locator(COMPLETION_ITEM)
    return item.inner_text(timeout=5000) if item.count() else ""


def wait_status(bench: Workbench, text: str, timeout: float = 20) -> str:
    return str(
        wait_until(
            lambda: text in completion_status(bench) and completion_status(bench),
            timeout,
            f"the completion status item to say {text!r}",
            lambda: completion_status(bench),
        )
    )


def shot_status_bar(bench: Workbench, step: str) -> Path:
    """The status bar alone, as an artefact beside the full-window screenshots."""
    bench.shot(step)
    path = bench.shots / f"{bench.n:02d}-{step}-statusbar.png"
    bench.page.locator("#workbench\\.parts\\.statusbar").screenshot(path=str(path))
    return path


def fim_calls(lb: LoopbackProvider) -> list[Any]:
    return [r for r in lb.requests if r.model == FIM and r.path.endswith("/completions")]


def saved_line(bench: Workbench, path: Path, expected: str, *, strip: bool = False) -> None:
    """Saves, and waits for a line of the file to be `expected` (only accepted text is);
    `strip`: whatever its indentation (which VS Code's auto-indent decides)."""
    bench.page.keyboard.press("Control+S")

    def lines() -> list[str]:
        found = path.read_text().splitlines()
        return [line.strip() for line in found] if strip else found

    wait_until(
        lambda: expected in lines(),
        10,
        f"a line {expected!r} in the saved file",
        path.read_text,
    )


@pytest.mark.vscode_settings({"council.completion.trigger": "manual"})
def test_manual_trigger_the_outcome_in_the_status_bar_and_explain(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    lb.responder = answer_by_prompt
    (workspace / "m.py").write_text("def add(a, b):\n    return \n\nprint()\n")
    server_started(bench)
    bench.open_file("m.py")
    bench.page.keyboard.press("Control+Home")
    bench.page.keyboard.press("ArrowDown")
    bench.page.keyboard.press("End")
    bench.page.keyboard.type(" ", delay=60)
    bench.page.keyboard.press("Backspace")
    # VS Code asks as you type; the server answers at once with nothing, and says why
    wait_status(bench, "no suggestion — manual trigger")
    assert ghost(bench) == "" and fim_calls(lb) == []
    shot_status_bar(bench, "manual-trigger")
    # the invoke key: Alt+\ (Trigger Inline Suggestion) asks as invoked
    bench.page.keyboard.press("Alt+Backslash")
    wait_until(lambda: "total" in ghost(bench), 20, "ghost text after Alt+\\", lambda: ghost(bench))
    wait_status(bench, "Council: suggestion")
    bench.shot("invoked")
    assert [c.body["temperature"] for c in fim_calls(lb)] == [0.0]
    bench.page.keyboard.press("Escape")
    # an answer that post-processing empties: print(|) with the model answering ")"
    bench.page.keyboard.press("Control+End")
    bench.page.keyboard.press("ArrowUp")
    bench.page.keyboard.press("End")
    bench.page.keyboard.press("ArrowLeft")
    bench.page.keyboard.press("Alt+Backslash")
    status = wait_status(bench, "empty after post-processing")
    assert "no suggestion — empty after post-processing" in status, status
    shot_status_bar(bench, "empty-after-post-processing")
    # the item's click (and the palette) explains it
    bench.page.locator(COMPLETION_ITEM).click()

    def preview() -> str:
        texts = []
        for frame in bench.page.frames:
            try:
                texts.append(frame.locator("body").inner_text(timeout=500))
            except Exception:  # frames come and go while the preview loads
                continue
        return "\n".join(texts)

    text = wait_until(
        lambda: "Post-processing" in (t := preview()) and t, 30, "the Explain preview", preview
    )
    assert "no suggestion — empty after post-processing" in text, text
    assert "trim the overlap with the suffix" in text and "Prompt window" in text, text
    bench.page.locator(".tab", has_text="Last completion").first.wait_for(timeout=10_000)
    bench.shot("explain-last-completion")


@pytest.mark.vscode_settings({"council.completion.candidates": 2})
def test_cycling_candidates_partial_accept_and_mid_word(
    vscode: Workbench, workspace: Path, lb: LoopbackProvider
) -> None:
    bench = vscode
    lb.responder = answer_by_prompt
    target = workspace / "m.py"
    target.write_text("def add(a, b):\n")
    server_started(bench)
    bench.open_file("m.py")
    bench.page.keyboard.press("Control+End")
    # under the header: a multi-line suggestion; accept a word, then a line
    bench.page.keyboard.type("    ", delay=60)
    wait_until(
        lambda: "total = a + b" in ghost(bench), 20, "the two-line ghost text", lambda: ghost(bench)
    )
    bench.shot("multi-line-ghost")
    bench.page.keyboard.press("Control+ArrowRight")  # Accept Next Word: "total"
    # the rest stays as ghost text (so only the word was accepted)
    wait_until(
        lambda: ghost(bench).strip() == "= a + b",
        10,
        "the rest as ghost text",
        lambda: ghost(bench),
    )
    bench.shot("accepted-a-word")
    bench.page.keyboard.press("Control+ArrowDown")  # Accept Next Line (the extension's key)
    bench.page.keyboard.press("Escape")
    saved_line(bench, target, "    total = a + b")
    bench.shot("accepted-a-line")
    assert "return total" not in target.read_text()  # the second line was not accepted
    # cycling: the greedy answer first, Alt+] asks again as invoked and shows the other
    bench.page.keyboard.press("Control+End")
    bench.page.keyboard.type("\nreturn ", delay=60)
    wait_until(lambda: ghost(bench) == "total", 20, "the greedy ghost text", lambda: ghost(bench))
    bench.page.keyboard.press("Alt+BracketRight")
    wait_until(lambda: ghost(bench) == "a + b", 20, "the next candidate", lambda: ghost(bench))
    bench.shot("next-candidate")
    sampled = [c.body["temperature"] for c in fim_calls(lb) if c.body["prompt"].endswith("return ")]
    assert 0.7 in sampled, sampled  # the second candidate was sampled, hotter
    bench.page.keyboard.press("Alt+BracketLeft")
    wait_until(lambda: ghost(bench) == "total", 10, "the previous candidate", lambda: ghost(bench))
    bench.page.keyboard.press("Alt+BracketRight")
    wait_until(
        lambda: ghost(bench) == "a + b", 10, "the next candidate again", lambda: ghost(bench)
    )
    bench.page.keyboard.press("Tab")
    saved_line(bench, target, "return a + b", strip=True)
    # mid-word: VS Code asks, the server declines and the status item says why
    bench.page.keyboard.press("Home")
    bench.page.keyboard.press("ArrowRight")
    bench.page.keyboard.press("ArrowRight")
    bench.page.keyboard.type("x", delay=60)  # "rexturn": the cursor is inside a word
    wait_status(bench, "skipped mid-word")
    shot_status_bar(bench, "skipped-mid-word")
