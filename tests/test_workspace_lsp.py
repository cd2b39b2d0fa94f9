"""The workspace index in `council lsp`, over stdio (pytest-lsp): an inline completion's
prompt and the council's researcher and generator prompts carry code from other, unopened
files of the workspace, and the index follows saves and watched-file events."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.uris import from_fs_path
from pytest_lsp import ClientServerConfig, LanguageClient

from providers.loopback import LoopbackProvider, Reply
from tests.lsp_harness import Editor
from tests.scenarios import MODELS, council_toml, prompts_to, script_generate, server_env
from tests.waits import async_wait_until

pytestmark = pytest.mark.anyio

QWEN = "qwen2.5-coder:1.5b"
INDEX = "council/workspaceIndex"

GEOMETRY = '''\
"""Shapes."""


def polygon_area(points: list[tuple[float, float]]) -> float:
    """Shoelace formula."""
    pairs = zip(points, points[1:] + points[:1])
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairs)) / 2
'''

REPORT = '''\
from geometry import polygon_area


def describe(points):
    """Describe the polygon's area."""
    area = polygon_area(points)
    pass
'''


@pytest.fixture
def lb() -> Any:
    with LoopbackProvider(models=(*MODELS, QWEN)) as server:
        yield server


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "geometry.py").write_text(GEOMETRY, encoding="utf-8")
    (root / "report.py").write_text(REPORT, encoding="utf-8")
    return root


async def start(root: Path, env: dict[str, str], *, watch: bool) -> tuple[Editor, list[Any]]:
    """`council lsp` with a client that may offer to watch files (`watch`)."""
    client = await ClientServerConfig(
        server_command=[sys.executable, "-m", "slm_council", "lsp"], server_env=env
    ).start()
    assert isinstance(client, LanguageClient)
    registrations: list[Any] = []

    @client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(_client: LanguageClient, params: types.RegistrationParams) -> None:
        registrations.extend(params.registrations)

    editor = Editor(client, root)
    watched = types.DidChangeWatchedFilesClientCapabilities(dynamic_registration=watch)
    editor.init_result = await client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                workspace=types.WorkspaceClientCapabilities(
                    did_change_watched_files=watched, apply_edit=True
                ),
                text_document=types.TextDocumentClientCapabilities(
                    inline_completion=types.InlineCompletionClientCapabilities()
                ),
            ),
            workspace_folders=[types.WorkspaceFolder(uri=from_fs_path(str(root)) or "", name="ws")],
        )
    )
    return editor, registrations


@pytest.fixture
async def editor(tmp_path: Path, workspace: Path, lb: LoopbackProvider) -> AsyncIterator[Editor]:
    config = tmp_path / "council.toml"
    completion = f'[completion]\nbackend = "lb:{QWEN}"\nsnippet_tokens = 160\n'
    config.write_text(council_toml(lb.base_url, completion), encoding="utf-8")
    ed, _ = await start(workspace, server_env(tmp_path, config), watch=False)
    yield ed
    await ed.client.shutdown_session()


async def index_state(editor: Editor) -> Any:
    return await editor.client.protocol.send_request_async(INDEX, {})


async def indexed(editor: Editor) -> Any:
    """Wait until the first build is over; its state."""

    async def ready() -> Any:
        state = await index_state(editor)
        return state if state.enabled and not state.building else None

    return await async_wait_until(ready, 30, "the workspace index")


def fim_prompts(lb: LoopbackProvider) -> list[str]:
    return [r.body["prompt"] for r in lb.requests if r.path.endswith("/completions") and r.body]


async def test_completion_prompt_holds_code_from_an_unopened_file(
    editor: Editor, lb: LoopbackProvider
) -> None:
    state = await indexed(editor)
    assert state.files == 2 and state.chunks >= 3
    text = "from geometry import polygon_area\n\n\ndef perimeter_report(points):\n"
    text += "    area = polygon_area(points)\n    \n"
    uri = editor.open("main.py", text)  # not on disk; geometry.py is never opened
    lb.script(Reply(content="return area"))
    result = await editor.client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=5, character=4),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Invoked
            ),
        )
    )
    assert result is not None and [i.insert_text for i in result.items] == ["return area"]
    (prompt,) = [p for p in fim_prompts(lb) if "perimeter_report" in p]
    assert prompt.startswith(
        "# geometry.py:\n# def polygon_area(points: list[tuple[float, float]])"
    )
    assert prompt.endswith("    area = polygon_area(points)\n    ")


async def test_council_researcher_and_generator_see_the_definition_from_another_file(
    editor: Editor, lb: LoopbackProvider
) -> None:
    await indexed(editor)
    script_generate(lb)
    uri = editor.open("report.py")
    await editor.command("council.generate", {"uri": uri, "symbol": "describe"})
    for model in ("res", "gen"):
        (prompt,) = prompts_to(lb, model)[:1]
        assert "## Workspace code" in prompt
        assert "### geometry.py:4-7 (definition of `polygon_area`" in prompt
        assert "def polygon_area(points: list[tuple[float, float]]) -> float:" in prompt
    (debugger,) = prompts_to(lb, "dbg")[:1]
    assert "## Workspace code" not in debugger  # only the two roles that write get it


async def test_saves_rescan_without_watching_and_watched_events_update(
    tmp_path: Path, workspace: Path, lb: LoopbackProvider, editor: Editor
) -> None:
    await indexed(editor)
    # this client cannot watch files: a save rescans the tree
    (workspace / "later.py").write_text("def appeared_later():\n    return 1\n")
    uri = editor.open("report.py")
    editor.client.text_document_did_save(
        types.DidSaveTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )

    async def has(count: int) -> bool:
        return (await index_state(editor)).files == count

    await async_wait_until(lambda: has(3), 10, "the rescan to find later.py")
    # a client that watches gets a watcher registered, and its events update the index
    config = tmp_path / "council.toml"
    watcher, registrations = await start(workspace, server_env(tmp_path, config), watch=True)
    try:
        await indexed(watcher)
        assert [r.method for r in registrations] == [types.WORKSPACE_DID_CHANGE_WATCHED_FILES]
        assert registrations[0].register_options["watchers"][0]["globPattern"] == "**/*.py"
        assert (await index_state(watcher)).watching is True
        (workspace / "geometry.py").unlink()
        watcher.client.workspace_did_change_watched_files(
            types.DidChangeWatchedFilesParams(
                changes=[
                    types.FileEvent(
                        uri=watcher.uri("geometry.py"), type=types.FileChangeType.Deleted
                    )
                ]
            )
        )

        async def gone() -> bool:
            return (await index_state(watcher)).files == 2

        await async_wait_until(gone, 10, "geometry.py to leave the index")
    finally:
        await watcher.client.shutdown_session()
