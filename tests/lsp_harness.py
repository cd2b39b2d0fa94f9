"""A tiny editor for driving `council lsp` over stdio in the tests (the demo has its own,
`council/demo_lsp.py`, since it cannot depend on the test suite).

It keeps the text of open documents, applies `workspace/applyEdit` the way an editor does
(refusing edits made against another version), and sends the resulting `didChange`, so the
server sees exactly what a real client would send. Every message the server sends it is
checked against lsprotocol's types (`tests.lsp_wire.watch`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Union

from lsprotocol import types
from pygls.uris import from_fs_path
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.lsp_wire import watch


class AttrDict(dict[str, Any]):
    """Command results are JSON objects; reading them as attributes keeps tests short."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return AttrDict({k: _wrap(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def apply_text_edits(text: str, edits: list[types.TextEdit]) -> str:
    lines = text.splitlines(keepends=True)

    def offset(pos: types.Position) -> int:
        if pos.line >= len(lines):
            return len(text)
        return sum(len(x) for x in lines[: pos.line]) + min(pos.character, len(lines[pos.line]))

    spans = sorted(
        ((offset(e.range.start), offset(e.range.end), e.new_text) for e in edits), reverse=True
    )
    for start, end, new in spans:
        text = text[:start] + new + text[end:]
    return text


class Editor:
    def __init__(self, client: LanguageClient, root: Path) -> None:
        self.client = client
        self.root = root
        self.docs: dict[str, tuple[int, str]] = {}
        self.applied: list[types.ApplyWorkspaceEditParams] = []
        self.refused: list[str] = []
        self.created: list[str] = []
        self.init_result: types.InitializeResult | None = None
        watch(client.protocol)

        @client.feature(types.WORKSPACE_APPLY_EDIT)
        def apply_edit(
            _client: LanguageClient, params: types.ApplyWorkspaceEditParams
        ) -> types.ApplyWorkspaceEditResult:
            return self._apply(params)

    def uri(self, rel: str) -> str:
        return from_fs_path(str(self.root / rel)) or ""

    def open(self, rel: str, text: str | None = None) -> str:
        uri = self.uri(rel)
        if text is None:
            text = (self.root / rel).read_text(encoding="utf-8")
        self.docs[uri] = (1, text)
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=text
                )
            )
        )
        return uri

    def change(self, uri: str, text: str) -> None:
        version = self.docs[uri][0] + 1
        self.docs[uri] = (version, text)
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
            )
        )

    def text(self, uri: str) -> str:
        return self.docs[uri][1]

    def _apply(self, params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        changes = params.edit.document_changes or []
        for change in changes:  # validate everything first: all or nothing, like an editor
            if isinstance(change, types.TextDocumentEdit):
                uri, version = change.text_document.uri, change.text_document.version
                if version is not None and (uri not in self.docs or self.docs[uri][0] != version):
                    reason = f"version mismatch for {uri}"
                    self.refused.append(reason)
                    return types.ApplyWorkspaceEditResult(applied=False, failure_reason=reason)
        for change in changes:
            if isinstance(change, types.CreateFile):
                self.created.append(change.uri)
                if change.uri not in self.docs:
                    self.docs[change.uri] = (0, "")
            elif isinstance(change, types.TextDocumentEdit):
                uri = change.text_document.uri
                if uri not in self.docs:
                    path = Path(uri.removeprefix("file://"))
                    self.docs[uri] = (0, path.read_text(encoding="utf-8") if path.is_file() else "")
                version, text = self.docs[uri]
                new = apply_text_edits(text, list(change.edits))  # type: ignore[arg-type]
                if version == 0:
                    self.open(str(Path(uri.removeprefix("file://")).relative_to(self.root)), new)
                else:
                    self.change(uri, new)
        self.applied.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)

    async def command(self, name: str, args: dict[str, Any], token: str | None = None) -> Any:
        if token is not None:
            self.client.progress_reports.setdefault(token, [])
        result = await self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=[args], work_done_token=token)
        )
        return _wrap(result)

    async def actions(
        self,
        uri: str,
        line: int,
        *,
        end: tuple[int, int] | None = None,
        only: list[str] | None = None,
        diagnostics: list[types.Diagnostic] | None = None,
    ) -> list[types.CodeAction]:
        start = types.Position(line=line, character=0)
        stop = types.Position(line=end[0], character=end[1]) if end else start
        result = await self.client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=types.Range(start=start, end=stop),
                context=types.CodeActionContext(diagnostics=diagnostics or [], only=only),
            )
        )
        return [a for a in result or [] if isinstance(a, types.CodeAction)]


def _fix_code_action_union(client: LanguageClient) -> None:
    """lsprotocol's client-side hook turns every CodeAction that carries a `command` into a
    Command (it only checks for the key); a Command's `command` is a string, a CodeAction's
    is an object. Real editors are not affected; this test client is, so fix it here."""
    converter = client.protocol._converter

    def hook(obj: Any, _: type) -> types.Command | types.CodeAction:
        if isinstance(obj.get("command"), str):
            return converter.structure(obj, types.Command)
        return converter.structure(obj, types.CodeAction)

    converter.register_structure_hook(Union[types.Command, types.CodeAction], hook)  # noqa: UP007


async def start_editor(
    root: Path,
    env: dict[str, str],
    *,
    initialization_options: Any = None,
    configuration: dict[str, Any] | None = None,
    change_annotations: bool = False,
) -> Editor:
    """Start `council lsp` and initialize it as an editor would. ``change_annotations``
    advertises `workspace.workspaceEdit.changeAnnotationSupport` (as VS Code does), which
    makes the server send its edits for review (`council.confirm_edits`)."""
    config = ClientServerConfig(
        server_command=[sys.executable, "-m", "slm_council", "lsp"], server_env=env
    )
    client = await config.start()
    assert isinstance(client, LanguageClient)
    _fix_code_action_union(client)
    if configuration is not None:
        client.set_configuration(configuration, section="council")
    editor = Editor(client, root)
    editor.init_result = await client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                window=types.WindowClientCapabilities(
                    work_done_progress=True,
                    show_document=types.ShowDocumentClientCapabilities(support=True),
                ),
                workspace=types.WorkspaceClientCapabilities(
                    configuration=True,
                    apply_edit=True,
                    workspace_edit=types.WorkspaceEditClientCapabilities(
                        document_changes=True,
                        resource_operations=[types.ResourceOperationKind.Create],
                        change_annotation_support=(
                            types.ChangeAnnotationsSupportOptions(groups_on_label=True)
                            if change_annotations
                            else None
                        ),
                    ),
                ),
            ),
            workspace_folders=[
                types.WorkspaceFolder(uri=from_fs_path(str(root)) or "", name=root.name)
            ],
            initialization_options=initialization_options,
        )
    )
    return editor
