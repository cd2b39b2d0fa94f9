"""The Neovim plugin's trigger and accept control, and "why no suggestion?", in a real
`nvim --headless` (0.11) against the real server and the scripted loopback provider.

- a manual trigger in `council.toml`: the plugin learns it and sends no automatic request
  while typing; the invoke key (<M-\\>) asks;
- `completion.candidates = 2`: <M-]> asks again as invoked and shows the second candidate,
  <M-[> goes back;
- accept word (<M-Right>) and accept line (<M-Down>) with real keys in insert mode: the rest
  stays as ghost text;
- an empty answer: `:CouncilExplain` opens the explanation in a scratch buffer and
  `:checkhealth council` shows the last outcome.

The loopback answers by prompt and temperature (`answer_by_prompt`), so the ghost text does
not depend on how many requests were sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.loopback import LoopbackProvider, Reply
from providers.loopback.records import RequestRecord
from tests.nvim_harness import run_nvim, start_nvim
from tests.scenarios import FIM, MODELS, council_toml
from tests.waits import wait_until


def answer_by_prompt(record: RequestRecord) -> Reply | None:
    body = record.body if isinstance(record.body, dict) else {}
    if record.model != FIM or "prompt" not in body:
        return None
    prompt, greedy = str(body["prompt"]), not body.get("temperature")
    if prompt.endswith("def add(a, b):\n    "):
        return Reply(content="total = a + b\n    return total")
    if prompt.endswith("return "):
        return Reply(content="a + b" if greedy else "a - b")
    if prompt.endswith("print("):
        return Reply(content=")")  # the suffix's own ")": empty after post-processing
    return Reply(content="")


@pytest.fixture
def lb() -> Iterator[LoopbackProvider]:
    with LoopbackProvider(models=(*MODELS, FIM), responder=answer_by_prompt) as server:
        yield server


def workspace_with(tmp_path: Path, lb: LoopbackProvider, completion: str = "") -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'ws'\n", encoding="utf-8")
    (root / "m.py").write_text("print()\n", encoding="utf-8")
    (tmp_path / "cfg").mkdir()
    extra = f"[completion]\n{completion}\n" if completion else ""
    (tmp_path / "cfg" / "council.toml").write_text(council_toml(lb.base_url, extra))
    return root


def ok(data: dict[str, Any]) -> dict[str, Any]:
    assert not data["errors"], data["errors"] + [data["_diag"]]
    return data


def test_manual_trigger_sends_no_automatic_request_and_the_invoke_key_asks(
    tmp_path: Path, lb: LoopbackProvider
) -> None:
    data = ok(run_nvim(tmp_path, workspace_with(tmp_path, lb, 'trigger = "manual"'), "manual"))
    assert data["requests_after_typing"] == 0 and data["pending"] is False, data
    assert data["ghost"] == "a + b", data
    assert data["triggers"] == ["invoked"], data  # the server saw the invoked request only


def test_next_and_previous_cycle_through_candidates(tmp_path: Path, lb: LoopbackProvider) -> None:
    data = ok(run_nvim(tmp_path, workspace_with(tmp_path, lb, "candidates = 2"), "cycle"))
    assert data["ghosts"] == ["a + b", "a - b", "a + b", "a - b"], data
    assert data["triggers"] == ["automatic", "invoked"], data


def test_explain_and_checkhealth_say_why_there_was_no_suggestion(
    tmp_path: Path, lb: LoopbackProvider
) -> None:
    data = ok(run_nvim(tmp_path, workspace_with(tmp_path, lb), "explain"))
    text = data["explain"]
    assert (
        data["explain_name"].endswith("council://explain") and data["explain_buftype"] == "nofile"
    )
    assert "**Outcome:** no suggestion — empty after post-processing." in text, text
    for section in ("## Prompt window", "## Model answer", "### Post-processing"):
        assert section in text, text
    assert "│ print(█)" in text and "trim the overlap with the suffix" in text, text
    health = data["health"]
    assert "last completion: no suggestion — empty after post-processing" in health, health
    assert "trigger: automatic, candidates: 1" in health, health


def test_accept_word_and_line_with_real_keys_keep_the_rest_as_ghost_text(
    tmp_path: Path, lb: LoopbackProvider
) -> None:
    """Keys through Neovim's input queue (pynvim): the mappings run in insert mode, and the
    TextChangedI a partial accept causes must not clear (or re-request) the rest."""
    import pynvim

    root = workspace_with(tmp_path, lb)
    (root / "add.py").write_text("def add(a, b):\n", encoding="utf-8")
    proc, sock = start_nvim(tmp_path, root)
    try:
        nvim = pynvim.attach("socket", path=str(sock))
        nvim.command(f"edit {root / 'add.py'}")

        def lua(code: str) -> Any:
            return nvim.exec_lua(code)

        def ghost(expected: str, what: str) -> str:
            return str(
                wait_until(
                    lambda: lua('return require("council.inline").ghost_text()') == expected,
                    10,
                    what,
                    lambda: lua('return require("council.inline").ghost_text()'),
                )
            )

        wait_until(
            lambda: lua(
                'local c = vim.lsp.get_clients({ name = "council", bufnr = 0 })[1]'
                " return c ~= nil and c.initialized"
            ),
            20,
            "the council client to attach",
        )
        # no indent plugin between the keys and the buffer: exactly the four spaces typed
        nvim.command("setlocal noautoindent nosmartindent indentexpr=")
        nvim.input("Go    ")  # a new line under the header, four spaces: add()'s body
        ghost("total = a + b\n    return total", "the two-line ghost text")
        nvim.input("<M-Right>")  # accept word
        ghost(" = a + b\n    return total", "the rest after accepting a word")
        assert nvim.current.buffer[:] == ["def add(a, b):", "    total"]
        nvim.input("<M-Down>")  # accept line
        ghost("\n    return total", "the next line after accepting a line")
        assert nvim.current.buffer[:] == ["def add(a, b):", "    total = a + b"]
        nvim.input("<M-Down>")
        wait_until(
            lambda: (
                nvim.current.buffer[:]
                == ["def add(a, b):", "    total = a + b", "    return total"]
            ),
            10,
            "the second line accepted",
            lambda: nvim.current.buffer[:],
        )
        assert nvim.api.get_mode()["mode"] == "i"
        fim = [r for r in lb.requests if r.model == FIM]
        assert len(fim) >= 1
        nvim.input("<Esc>")
        nvim.command("qall!", async_=True)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
