"""The main part of `council demo`: drive `council lsp` over stdio as an editor would.

It copies a small bundled workspace to a temporary folder, starts the server as a
subprocess, initializes, opens a file, lists the code actions, runs *Add tests* with its
progress printed live, applies the server's edit to the files like an editor, and prints the
diff and the timings. It uses your configuration (user file, `$COUNCIL_CONFIG`); with no
provider reachable the server runs the local council mode, and the output says so.
"""

from __future__ import annotations

import difflib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Union

from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path, to_fs_path

WORKSPACE = Path(__file__).parent / "demo_workspace"


def _apply(text: str, edits: list[Any]) -> str:
    lines = text.splitlines(keepends=True)

    def offset(pos: types.Position) -> int:
        if pos.line >= len(lines):
            return len(text)
        return sum(len(x) for x in lines[: pos.line]) + pos.character

    for edit in sorted(edits, key=lambda e: offset(e.range.start), reverse=True):
        text = text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end) :]
    return text


async def lsp_demo() -> int:
    root = Path(tempfile.mkdtemp(prefix="council-demo-ws-"))
    shutil.copytree(WORKSPACE, root, dirs_exist_ok=True)
    client = LanguageClient("council-demo", "1")
    converter = client.protocol._converter

    def code_action_hook(obj: Any, _: type) -> types.Command | types.CodeAction:
        # lsprotocol's hook takes any object with a "command" key for a Command; a CodeAction
        # that carries a command object is a CodeAction.
        if isinstance(obj.get("command"), str):
            return converter.structure(obj, types.Command)
        return converter.structure(obj, types.CodeAction)

    converter.register_structure_hook(Union[types.Command, types.CodeAction], code_action_hook)  # noqa: UP007
    diffs: list[str] = []

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        for change in params.edit.document_changes or []:
            if isinstance(change, types.CreateFile):
                Path(to_fs_path(change.uri) or "").touch()
            elif isinstance(change, types.TextDocumentEdit):
                path = Path(to_fs_path(change.text_document.uri) or "")
                before = path.read_text(encoding="utf-8") if path.exists() else ""
                after = _apply(before, list(change.edits))
                path.write_text(after, encoding="utf-8")
                diffs.append(
                    "".join(
                        difflib.unified_diff(
                            before.splitlines(keepends=True),
                            after.splitlines(keepends=True),
                            f"a/{path.relative_to(root)}",
                            f"b/{path.relative_to(root)}",
                        )
                    )
                )
        return types.ApplyWorkspaceEditResult(applied=True)

    @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def create_progress(params: types.WorkDoneProgressCreateParams) -> None:
        return None

    @client.feature(types.PROGRESS)
    def progress(params: types.ProgressParams) -> None:
        value = params.value if isinstance(params.value, dict) else {}
        kind, pct = value.get("kind"), value.get("percentage")
        text = value.get("title") or value.get("message") or ""
        print(f"  [{kind:<6}] {'' if pct is None else f'{pct:>3}% '}{text}", flush=True)

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def show(params: types.ShowMessageParams) -> None:
        print(f"  (server message) {params.message}", flush=True)

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def log_message(params: types.LogMessageParams) -> None:
        return None

    @client.feature("council/runsChanged")
    def runs_changed(params: Any) -> None:
        return None  # the editors' run views refresh on it; the demo prints the progress

    print(f"== council lsp on a copy of the demo workspace: {root}")
    started = time.perf_counter()
    await client.start_io(sys.executable, "-m", "slm_council", "lsp")
    result = await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                window=types.WindowClientCapabilities(work_done_progress=True),
                workspace=types.WorkspaceClientCapabilities(
                    apply_edit=True,
                    workspace_edit=types.WorkspaceEditClientCapabilities(
                        document_changes=True,
                        resource_operations=[types.ResourceOperationKind.Create],
                    ),
                ),
            ),
            root_uri=from_fs_path(str(root)),
        )
    )
    init_ms = (time.perf_counter() - started) * 1000
    client.initialized(types.InitializedParams())
    commands = result.capabilities.execute_command_provider
    print(
        f"  initialize answered in {init_ms:.0f} ms (process start included); commands: "
        f"{', '.join(commands.commands if commands else [])}"
    )

    path = root / "geometry.py"
    uri = from_fs_path(str(path)) or ""
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=1, text=path.read_text(encoding="utf-8")
            )
        )
    )
    t0 = time.perf_counter()
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(
                start=types.Position(line=8, character=0), end=types.Position(line=8, character=0)
            ),
            context=types.CodeActionContext(diagnostics=[]),
        )
    )
    action_ms = (time.perf_counter() - t0) * 1000
    print(f"\n== code actions on circle_area ({action_ms:.0f} ms)")
    for action in actions or []:
        print(f"  - {action.title}  [{getattr(action, 'kind', '')}]")

    print("\n== Council: Add tests for circle_area (live progress)")
    t0 = time.perf_counter()
    outcome = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            command="council.addTests",
            arguments=[{"uri": uri, "symbol": "circle_area"}],
            work_done_token="demo-add-tests",
        )
    )
    run_s = time.perf_counter() - t0
    print(f"\n== result ({run_s:.1f} s)")
    for key in ("status", "councilMode", "summary", "message", "passed", "failed"):
        if isinstance(outcome, dict) and key in outcome:
            print(f"  {key}: {outcome[key]}")
    print("\n== diff applied by the editor")
    print("".join(diffs) or "  (no edit)")
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    shutil.rmtree(root, ignore_errors=True)
    ok = isinstance(outcome, dict) and outcome.get("status") in ("approved", "best_effort")
    print(
        f"== timings: initialize {init_ms:.0f} ms, code actions {action_ms:.0f} ms, "
        f"add tests {run_s:.1f} s"
    )
    return 0 if ok else 1
