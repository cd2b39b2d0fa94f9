"""Review before apply in a real headless Neovim (`editors/neovim/lua/council/review.lua`).

With `council.confirm_edits` on (the default) the server sends Generate's edit and Debug's
quick fix as changes that need confirmation; the plugin shows them in a floating window
with a unified diff and waits for a key. The keys here are typed for real: they go through
Neovim's input queue over RPC (`pynvim`, `nvim_input`), so the window's mappings run exactly
as when a person presses them. The plugin comes from the repo (`tests/neovim/init.lua`), the
server is `council lsp` from this interpreter, the providers the scripted loopback server.

What each review window showed (title, footer, diff) is written to
`build/e2e/neovim/<test>.txt` (or `$COUNCIL_E2E_ARTIFACTS/../neovim`), the text-mode
counterpart of the VS Code tests' screenshots.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.loopback import LoopbackProvider
from tests.nvim_harness import start_nvim
from tests.scenarios import (
    FIM,
    FIXED,
    MODELS,
    STUB,
    council_toml,
    debug_ok,
    js,
    plan,
    script_generate,
    suite,
    synth,
)
from tests.waits import wait_until

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "neovim"
ARTIFACTS = REPO / "build" / "e2e" / "neovim"
# Generate keeps the stub's docstring: the model's code (FIXED) has none
GENERATED = STUB.replace("    pass\n", "    return a + b\n", 1)

BROKEN = "def add(a: int, b: int) -> int:\n    return a - b\n"


class Nvim:
    """One `nvim --headless --listen` with the plugin, driven over its socket."""

    def __init__(self, api: Any, proc: subprocess.Popen[bytes], workspace: Path) -> None:
        self.api = api
        self.proc = proc
        self.workspace = workspace

    def lua(self, code: str) -> Any:
        return self.api.exec_lua(code)

    def wait(self, code: str, timeout: float, what: str) -> Any:
        return wait_until(lambda: self.lua(code), timeout, what, self.diag)

    def messages(self) -> list[str]:
        return list(self.lua("return _G.council_messages or {}"))

    def diag(self) -> str:
        return "messages: " + json.dumps(self.messages())

    def edit(self, name: str) -> None:
        self.api.command(f"edit {self.workspace / name}")
        self.wait(
            'local c = vim.lsp.get_clients({ name = "council", bufnr = 0 })[1]'
            " return c ~= nil and c.initialized",
            20,
            "the council client to attach",
        )

    def text(self, name: str = "mathx.py") -> str:
        """The buffer's text (not the current window's: that is the review window)."""
        path = json.dumps(str(self.workspace / name))
        lines = self.lua(f"return vim.api.nvim_buf_get_lines(vim.fn.bufnr({path}), 0, -1, false)")
        return "\n".join(lines) + "\n"

    def review_window(self, timeout: float = 30) -> dict[str, Any]:
        """Waits for the review float; returns what it shows."""
        found: dict[str, Any] = self.wait(
            """
            local r = require("council.review").current
            if not r then return nil end
            local cfg = vim.api.nvim_win_get_config(r.win)
            local function text(chunks)
              if type(chunks) ~= "table" then return chunks end
              local s = ""
              for _, c in ipairs(chunks) do s = s .. c[1] end
              return s
            end
            return { lines = vim.api.nvim_buf_get_lines(r.buf, 0, -1, false),
              relative = cfg.relative, title = text(cfg.title), footer = text(cfg.footer),
              filetype = vim.bo[r.buf].filetype,
              focused = vim.api.nvim_get_current_win() == r.win }
            """,
            timeout,
            "the review window",
        )
        return found


def save_artifact(name: str, window: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    body = "\n".join(
        [f"title: {window['title']}", f"footer: {window['footer']}", "", *window["lines"]]
    )
    (ARTIFACTS / f"{name}.txt").write_text(body + "\n", encoding="utf-8")


@pytest.fixture
def lb() -> Iterator[LoopbackProvider]:
    with LoopbackProvider(models=(*MODELS, FIM)) as server:
        yield server


@pytest.fixture
def nvim(tmp_path: Path, lb: LoopbackProvider) -> Iterator[Nvim]:
    import pynvim

    root = tmp_path / "ws"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'ws'\n", encoding="utf-8")
    # outside the workspace: `council.toml` is the plugin's first root marker
    config = tmp_path / "cfg" / "council.toml"
    config.parent.mkdir()
    config.write_text(council_toml(lb.base_url), encoding="utf-8")
    proc, sock = start_nvim(tmp_path, root)
    try:
        yield Nvim(pynvim.attach("socket", path=str(sock)), proc, root)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_generate_shows_a_diff_and_the_accept_key_applies_it(
    nvim: Nvim, lb: LoopbackProvider
) -> None:
    (nvim.workspace / "mathx.py").write_text(STUB, encoding="utf-8")
    script_generate(lb)
    nvim.edit("mathx.py")
    nvim.api.command("CouncilGenerate")
    window = nvim.review_window()
    save_artifact("generate-review-accept", window)
    assert window["relative"] == "editor" and window["focused"], window
    assert window["filetype"] == "diff" and window["title"].strip() == "Council: Generate add"
    assert "a/<CR> accept" in window["footer"] and "r/q/<Esc> reject" in window["footer"]
    lines = window["lines"]
    assert lines[0].startswith("approved"), lines  # the run's outcome, then the diff
    assert "--- a/mathx.py" in lines and "+++ b/mathx.py" in lines, lines
    assert "-    pass" in lines and "+    return a + b" in lines, lines
    assert nvim.text() == STUB  # nothing changes before the user decides
    nvim.api.input("a")
    wait_until(lambda: "return a + b" in nvim.text(), 10, "the accepted edit", nvim.text)
    assert nvim.lua('return require("council.review").current') is None
    assert nvim.text() == GENERATED, nvim.text()
    msg = nvim.wait(
        "for _, m in ipairs(_G.council_messages or {}) do"
        ' if m:find("council.generate", 1, true) then return m end end',
        10,
        "the result message",
    )
    assert "Replaced `add`" in msg, msg


def test_rejecting_the_diff_leaves_the_buffer_and_the_server_says_not_applied(
    nvim: Nvim, lb: LoopbackProvider
) -> None:
    (nvim.workspace / "mathx.py").write_text(STUB, encoding="utf-8")
    script_generate(lb)
    nvim.edit("mathx.py")
    nvim.api.command("CouncilGenerate")
    window = nvim.review_window()
    save_artifact("generate-review-reject", window)
    nvim.api.input("<Esc>")
    msg = nvim.wait(
        "for _, m in ipairs(_G.council_messages or {}) do"
        ' if m:find("council.generate", 1, true) then return m end end',
        15,
        "the result message",
    )
    assert "Not applied: rejected in review." in msg, msg
    assert nvim.lua('return require("council.review").current') is None
    assert nvim.text() == STUB
    assert not nvim.lua("return vim.bo.modified")
    assert (nvim.workspace / "mathx.py").read_text() == STUB


def test_debug_quick_fix_is_reviewed_before_it_applies(nvim: Nvim, lb: LoopbackProvider) -> None:
    (nvim.workspace / "mathx.py").write_text(BROKEN, encoding="utf-8")
    lb.script(plan("debugger"), synth("APPROVE", 0.9), model="orch")
    bug = {"line": 2, "severity": "critical", "description": "Subtracts.", "fix": "Use +."}
    lb.script(
        js(verdict="fail", analysis="-", fixed_code=FIXED, bugs=[bug]), debug_ok(), model="dbg"
    )
    lb.script(suite(), model="tst")
    nvim.edit("mathx.py")
    nvim.api.command("call cursor(2, 5)")
    nvim.api.command("CouncilDebug")
    nvim.wait("return #vim.diagnostic.get(0) > 0", 30, "the council's diagnostics")
    # the quick fix, picked from vim.lsp.buf.code_action() as a user would
    nvim.lua(
        "vim.lsp.buf.code_action({ apply = true, context = { only = { 'quickfix.council.fix' } },"
        " filter = function(a) return a.kind == 'quickfix.council.fix' end })"
    )
    window = nvim.review_window()
    save_artifact("debug-fix-review", window)
    assert window["title"].strip() == "Council: Debug fix for add", window
    assert "-    return a - b" in window["lines"] and "+    return a + b" in window["lines"]
    assert nvim.text() == BROKEN
    nvim.api.input("<CR>")
    wait_until(lambda: nvim.text() == FIXED, 10, "the fix in the buffer", nvim.text)
