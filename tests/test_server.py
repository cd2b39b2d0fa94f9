"""`council lsp` end to end over stdio (pytest-lsp), against the scripted loopback provider."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from providers.loopback import LoopbackProvider, Reply
from tests.lsp_harness import Editor, start_editor
from tests.sandbox_probes import sandbox_processes
from tests.scenarios import (
    FIXED,
    MANIFEST,
    MODELS,
    STUB,
    bundle,
    debug_ok,
    js,
    plan,
    script_generate,
    server_env,
    suite,
    synth,
    write_config,
)
from tests.waits import async_wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Any:
    with LoopbackProvider(models=MODELS) as lb:
        yield lb


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "tests").mkdir(parents=True)
    (root / "mathx.py").write_text(STUB, encoding="utf-8")
    return root


@pytest.fixture
async def editor(
    tmp_path: Path, workspace: Path, server: LoopbackProvider
) -> AsyncIterator[Editor]:
    config = tmp_path / "council.toml"
    write_config(config, server.base_url)
    ed = await start_editor(workspace, server_env(tmp_path, config))
    yield ed
    await ed.client.shutdown_session()


def kinds(reports: list[Any]) -> list[str]:
    return [type(r).__name__ for r in reports]


def requests_to(server: LoopbackProvider, model: str) -> list[Any]:
    return [r for r in server.requests if r.body and r.body.get("model") == model]


async def test_capabilities_list_every_command_and_action_kind(editor: Editor) -> None:
    assert editor.init_result is not None
    caps = editor.init_result.capabilities
    assert caps.execute_command_provider is not None
    assert sorted(caps.execute_command_provider.commands) == sorted(
        [
            "council.generate",
            "council.debug",
            "council.addTests",
            "council.run",
            "council.deliberate",
            "council.cancel",
            "council.providers",
        ]
    )
    opts = caps.code_action_provider
    assert isinstance(opts, types.CodeActionOptions)
    assert "source.council.addTests" in (opts.code_action_kinds or [])


async def test_code_actions_for_stub_selection_todo_and_only_filter(editor: Editor) -> None:
    uri = editor.open("mathx.py")
    titles = [a.title for a in await editor.actions(uri, 2)]
    assert titles == [
        "Council: Generate implementation of add",
        "Council: Debug add",
        "Council: Add tests for add",
    ]
    assert all(a.command and a.command.arguments for a in await editor.actions(uri, 2))
    only = await editor.actions(uri, 2, only=["source"])
    assert [a.kind for a in only] == ["source.council.addTests"]
    selection = await editor.actions(uri, 5, end=(6, 10))
    assert selection[0].title == "Council: Generate implementation for the selection"
    editor.change(uri, STUB + "\n# TODO: parse the config file\n")
    todo = await editor.actions(uri, 8)
    assert todo[0].title == "Council: Generate: parse the config file"
    diag = types.Diagnostic(
        range=types.Range(
            start=types.Position(line=2, character=4), end=types.Position(line=2, character=8)
        ),
        message="bad",
        source="pyright",
    )
    quick = await editor.actions(uri, 2, diagnostics=[diag], only=["quickfix"])
    assert [a.title for a in quick] == ["Council: Debug add (fix these diagnostics)"]
    text_uri = editor.uri("notes.txt")
    editor.client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=text_uri, language_id="plaintext", version=1, text="def x(): pass"
            )
        )
    )
    assert await editor.actions(text_uri, 0) == []


async def test_generate_applies_a_versioned_edit_with_progress(
    editor: Editor, server: LoopbackProvider
) -> None:
    script_generate(server)
    uri = editor.open("mathx.py")
    result = await editor.command("council.generate", {"uri": uri, "symbol": "add"}, "tok-1")
    assert result.status == "approved" and result.applied is True
    text = editor.text(uri)
    assert "return a + b" in text and 'return "keep me"' in text and "pass" not in text
    edit = editor.applied[0].edit.document_changes[0]
    assert edit.text_document.version == 1  # computed against the version it saw
    reports = editor.client.progress_reports["tok-1"]
    names = kinds(reports)
    assert names[0] == "WorkDoneProgressBegin" and names[-1] == "WorkDoneProgressEnd"
    assert names.count("WorkDoneProgressReport") >= 5
    assert reports[0].cancellable and "Generate add" in reports[0].title
    messages = [r.message for r in reports[1:-1]]
    assert any("lb:gen" in (m or "") for m in messages)
    percents = [r.percentage for r in reports[1:-1]]
    assert percents == sorted(percents) and max(percents) < 100
    assert "Replaced `add`" in reports[-1].message


async def test_server_created_progress_token_when_client_sends_none(
    editor: Editor, server: LoopbackProvider
) -> None:
    script_generate(server)
    uri = editor.open("mathx.py")
    await editor.command("council.generate", {"uri": uri, "symbol": "add"})
    (token,) = [t for t in editor.client.progress_reports if str(t).startswith("council-")]
    assert kinds(editor.client.progress_reports[token])[-1] == "WorkDoneProgressEnd"


async def test_typing_during_a_run_reanchors_or_refuses(
    editor: Editor, server: LoopbackProvider
) -> None:
    script_generate(server, delay=1.0)
    uri = editor.open("mathx.py")
    task = asyncio.ensure_future(editor.command("council.generate", {"uri": uri, "symbol": "add"}))
    # the run has read the document and waits for its code (1 s): the user types meanwhile
    await async_wait_until(lambda: len(requests_to(server, "gen")) == 1, 10, "the generator")
    typed = "# the user typed this line\n" + STUB
    editor.change(uri, typed)
    result = await task
    assert result.applied is True and "re-anchored" in result.message
    text = editor.text(uri)
    assert text.startswith("# the user typed this line\n") and "return a + b" in text

    script_generate(server, delay=1.0)
    task = asyncio.ensure_future(editor.command("council.generate", {"uri": uri, "symbol": "add"}))
    await async_wait_until(lambda: len(requests_to(server, "gen")) == 2, 10, "the generator")
    editor.change(uri, "def renamed():\n    pass\n")
    result = await task
    assert result.applied is False
    assert editor.text(uri) == "def renamed():\n    pass\n"  # nothing clobbered
    assert any("no longer in the document" in m.message for m in editor.client.messages)


async def test_add_tests_creates_then_appends_without_duplicates(
    editor: Editor, server: LoopbackProvider, workspace: Path
) -> None:
    (workspace / "mathx.py").write_text(FIXED, encoding="utf-8")
    uri = editor.open("mathx.py")
    for _ in range(2):
        server.script(plan("tester"), synth("APPROVE", 0.9), model="orch")
        server.script(debug_ok(), model="dbg")
        server.script(suite(), model="tst")
    first = await editor.command("council.addTests", {"uri": uri, "symbol": "add"}, "t1")
    test_uri = editor.uri("tests/test_mathx.py")
    assert first.applied and first.passed == 2 and first.failed == 0
    assert editor.created == [test_uri]
    assert editor.text(test_uri).count("def test_adds_positive") == 1
    assert "2 passed" in editor.client.progress_reports["t1"][-1].message
    second = await editor.command("council.addTests", {"uri": uri, "symbol": "add"})
    assert second.applied is False and "already has every generated test" in second.message
    assert editor.text(test_uri).count("def test_adds_positive") == 1


async def test_debug_publishes_diagnostics_with_a_quick_fix_and_clears_them(
    editor: Editor, server: LoopbackProvider
) -> None:
    broken = "def add(a: int, b: int) -> int:\n    return a - b\n"
    uri = editor.open("mathx.py", broken)
    server.script(plan("debugger"), synth("APPROVE", 0.9), model="orch")
    server.script(
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
    server.script(suite(), model="tst")
    result = await editor.command("council.debug", {"uri": uri, "symbol": "add"})
    assert result.bugs == 1
    (diag,) = editor.client.diagnostics[uri]
    assert diag.source == "council" and diag.range.start.line == 1
    assert diag.severity == types.DiagnosticSeverity.Error and "Subtracts." in diag.message
    fixes = await editor.actions(uri, 1, diagnostics=[diag], only=["quickfix.council.fix"])
    assert fixes and fixes[0].edit is not None
    editor._apply(  # the user picks the quick fix; the editor applies its edit
        types.ApplyWorkspaceEditParams(edit=fixes[0].edit)
    )
    assert "return a + b" in editor.text(uri)
    await async_wait_until(  # the change clears them
        lambda: list(editor.client.diagnostics[uri]) == [], 10, "the diagnostics to be cleared"
    )


async def test_run_shows_a_markdown_report_outside_the_workspace(
    editor: Editor, server: LoopbackProvider, workspace: Path
) -> None:
    server.script(
        js(goal="explain", tasks=[{"agent": "researcher", "instruction": "x"}]), model="orch"
    )
    server.script(js(answer="Use `functools.cache`."), model="res")
    result = await editor.command("council.run", {"query": "how to memoise?"})
    assert result.status == "approved"
    (shown,) = editor.client.shown_documents
    path = Path(shown.uri.removeprefix("file://"))
    assert shown.uri == result.report and not path.is_relative_to(workspace)
    assert "functools.cache" in path.read_text()


async def test_deliberate_reports_standings(editor: Editor, tmp_path: Path) -> None:
    with LoopbackProvider(models=("m1", "m2", "chair")) as lb:
        for m in ("m1", "m2"):
            lb.script(Reply(content=f"answer {m}"), js(ranking=["A"]), model=m)
        lb.script(js(answer="final", dissent=["none"]), model="chair")
        editor.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={
                    "council": {
                        "providers": {"x": {"base_url": lb.base_url}},
                        "roles": {"orchestrator": "x:chair"},
                    }
                }
            )
        )
        members = ["x:m1", "x:m2"]
        result = await editor.command("council.deliberate", {"query": "q", "members": members})
    assert result.status == "approved" and result.finalAnswer == "final"
    assert Path(result.report.removeprefix("file://")).read_text().count("| lb") == 0


async def test_deliberate_runs_like_every_command_one_session_and_cancellable(
    editor: Editor,
) -> None:
    """Deliberate goes through the same run path as the other commands: the session it
    registers for cancellation is the one it reports, and cancelling ends its progress."""
    with LoopbackProvider(models=("m1", "m2")) as lb:
        for m in ("m1", "m2"):
            lb.script(Reply(content="slow", delay=30), model=m)
        editor.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"council": {"providers": {"x": {"base_url": lb.base_url}}}}
            )
        )
        task = asyncio.ensure_future(
            editor.command(
                "council.deliberate", {"query": "q", "members": ["x:m1", "x:m2"]}, "tok-d"
            )
        )
        await async_wait_until(lambda: len(lb.requests) == 2, 10, "both members' requests")
        cancelled = await editor.command("council.cancel", {})
        result = await asyncio.wait_for(task, 10)
    assert cancelled.cancelled == [result.sessionId] and result.status == "cancelled"
    reports = editor.client.progress_reports["tok-d"]
    assert kinds(reports)[-1] == "WorkDoneProgressEnd" and reports[-1].message == "Cancelled."


async def test_cancel_stops_the_run_its_http_and_its_sandbox(
    editor: Editor, server: LoopbackProvider
) -> None:
    slow = "import time\n\n\ndef test_slow():\n    time.sleep(60)\n"
    server.script(plan("generator"), model="orch")
    server.script(MANIFEST, model="res")
    server.script(bundle(FIXED), model="gen")
    server.script(Reply(content='{"verdict": "pass"}', delay=30), model="dbg")
    server.script(suite(slow), model="tst")
    uri = editor.open("mathx.py")
    task = asyncio.ensure_future(
        editor.command("council.generate", {"uri": uri, "symbol": "add"}, "tok-c")
    )
    await async_wait_until(sandbox_processes, 15, "the sandbox to start")
    cancelled = await editor.command("council.cancel", {})
    assert len(cancelled.cancelled) == 1
    result = await asyncio.wait_for(task, 10)
    assert result.status == "cancelled"
    await async_wait_until(
        lambda: sandbox_processes() == [], 5, "the sandbox to be gone", sandbox_processes
    )
    reports = editor.client.progress_reports["tok-c"]
    assert kinds(reports)[-1] == "WorkDoneProgressEnd" and reports[-1].message == "Cancelled."
    dbg = next(r for r in server.requests if r.body and r.body.get("model") == "dbg")
    assert server.wait_for(
        lambda r: r.started == dbg.started and r.client_disconnected_at is not None, timeout=3
    )
    assert "return a + b" not in editor.text(uri)


async def test_progress_cancel_and_cancel_request(editor: Editor, server: LoopbackProvider) -> None:
    for how in ("progress", "request"):
        server.clear()
        server.script(plan("generator"), model="orch")
        server.script(Reply(content="{}", delay=30), model="res")
        uri = editor.open("mathx.py")
        token = f"tok-{how}"
        pending = set(editor.client.protocol._request_futures)
        task = asyncio.ensure_future(
            editor.command("council.generate", {"uri": uri, "symbol": "add"}, token)
        )
        await asyncio.to_thread(server.wait_for, lambda r: r.body and r.body.get("model") == "res")
        if how == "progress":
            editor.client.window_work_done_progress_cancel(
                types.WorkDoneProgressCancelParams(token=token)
            )
            assert (await asyncio.wait_for(task, 10)).status == "cancelled"
        else:
            (msg_id,) = set(editor.client.protocol._request_futures) - pending
            editor.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
            with pytest.raises(Exception, match="cancel"):
                await asyncio.wait_for(task, 10)
        await async_wait_until(
            lambda: kinds(editor.client.progress_reports[token])[-1] == "WorkDoneProgressEnd",  # noqa: B023
            5,
            "the progress to end",
        )
        assert editor.client.progress_reports[token][-1].message == "Cancelled."


async def test_runs_do_not_block_each_other_or_code_actions(
    editor: Editor, server: LoopbackProvider, workspace: Path
) -> None:
    (workspace / "other.py").write_text(STUB.replace("add", "mul"), encoding="utf-8")
    both = FIXED + "\n\n" + FIXED.replace("add", "mul").replace("+", "*")
    # Both runs take replies from the same queues in any order, so every reply suits both,
    # and both plans come before both syntheses.
    server.script(plan("generator"), plan("generator"), model="orch")
    server.script(synth("APPROVE", 0.95), synth("APPROVE", 0.95), model="orch")
    for code in (both, both):
        server.script(MANIFEST, model="res")
        server.script(Reply(content=bundle(code).content, delay=1.0), model="gen")
        server.script(debug_ok(), model="dbg")
        server.script(suite("def test_ok():\n    assert True\n"), model="tst")
    a, b = editor.open("mathx.py"), editor.open("other.py")
    started = time.monotonic()
    runs = [
        asyncio.ensure_future(editor.command("council.generate", {"uri": a, "symbol": "add"})),
        asyncio.ensure_future(editor.command("council.generate", {"uri": b, "symbol": "mul"})),
    ]
    # both runs in flight: each one's generator has been asked and answers after 1 s
    await async_wait_until(lambda: len(requests_to(server, "gen")) == 2, 10, "both generators")
    t0 = time.monotonic()
    await editor.actions(a, 2)
    # Answered while both runs are in flight (generous bound: CI machines are noisy; the
    # measured figures come from `council bench server`).
    assert time.monotonic() - t0 < 1.0
    results = await asyncio.gather(*runs)
    assert all(r.applied for r in results), [(r.message, r.summary) for r in results]
    gens = sorted(
        (r.started, r.finished) for r in server.requests if r.body and r.body.get("model") == "gen"
    )
    assert gens[1][0] < gens[0][1]  # the two generators were in flight together
    assert time.monotonic() - started < 10


async def test_bad_settings_are_reported_and_changes_apply_without_restart(
    tmp_path: Path, workspace: Path, server: LoopbackProvider
) -> None:
    config = tmp_path / "council.toml"
    write_config(config, server.base_url)
    ed = await start_editor(
        workspace,
        server_env(tmp_path, config),
        initialization_options={"council": {"council": {"max_refinement_passes": "lots"}}},
    )
    try:
        await async_wait_until(
            lambda: any("max_refinement_passes" in m.message for m in ed.client.messages),
            10,
            "a message naming the bad setting",
        )
        # Route the generator to another model, live.
        ed.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"council": {"roles": {"generator": "lb:res"}}}
            )
        )
        script_generate(server)
        server.script(bundle(FIXED), model="res")
        uri = ed.open("mathx.py")
        result = await ed.command("council.generate", {"uri": uri, "symbol": "add"})
        assert result.applied
        gen_models = [
            r.body["model"]
            for r in server.requests
            if r.body and "Write the code to" in str(r.body.get("messages"))
        ]
        assert gen_models == ["res"]
    finally:
        await ed.client.shutdown_session()


async def test_provider_outage_mid_run_names_the_provider(
    editor: Editor, server: LoopbackProvider
) -> None:
    server.script(plan("generator"), model="orch")
    server.script(MANIFEST, model="res")
    server.script(Reply(status=503), model="gen")
    uri = editor.open("mathx.py")
    result = await editor.command("council.generate", {"uri": uri, "symbol": "add"}, "tok-o")
    assert result.status == "failed"
    (message,) = [m for m in editor.client.messages if m.type == types.MessageType.Error]
    assert "lb:gen" in message.message and "HTTP 503" in message.message
    assert kinds(editor.client.progress_reports["tok-o"])[-1] == "WorkDoneProgressEnd"


async def test_bad_command_arguments_are_invalid_params(editor: Editor) -> None:
    with pytest.raises(Exception, match="uri"):
        await editor.command("council.generate", {"symbol": "add"})
    with pytest.raises(Exception, match="one object argument"):
        await editor.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="council.run", arguments=["a", "b"])
        )
    providers = await editor.command("council.providers", {})
    assert providers[0]["provider"] == "lb" and providers[0]["reachable"] is True


async def test_missing_sandbox_layers_are_shown_once(
    tmp_path: Path, workspace: Path, server: LoopbackProvider
) -> None:
    """Without bwrap on PATH the runs still work, and the editor is told once what is lost."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in ("/usr/bin", "/bin"):
        for name in os.listdir(folder):
            if name != "bwrap" and not (bin_dir / name).exists():
                (bin_dir / name).symlink_to(Path(folder) / name)
    config = tmp_path / "council.toml"
    write_config(config, server.base_url)
    env = {**server_env(tmp_path, config), "PATH": str(bin_dir)}
    ed = await start_editor(workspace, env)
    try:
        uri = ed.open("mathx.py")
        for _ in range(2):
            script_generate(server)
            result = await ed.command("council.generate", {"uri": uri, "symbol": "add"})
            assert result.status == "approved", result
        warnings = [m.message for m in ed.client.messages if "sandbox" in m.message]
        assert len(warnings) == 1, warnings
        assert "fs-readonly" in warnings[0] and "council sandbox --check" in warnings[0]
    finally:
        await ed.client.shutdown_session()
