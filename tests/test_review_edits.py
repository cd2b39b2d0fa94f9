"""Review before apply (`council.confirm_edits`): Generate's edit and Debug's quick fix go to
the editor as changes that need the user's confirmation, when the editor understands change
annotations; otherwise, or with the setting off, as plain versioned edits.

The shape of a reviewed edit is checked directly (`server.apply`); the rest over stdio with
pytest-lsp, the test editor answering `workspace/applyEdit` as VS Code does after its
refactor preview: applied, or `applied: false` with no reason when the user discards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from providers.loopback import LoopbackProvider
from server import apply
from tests.lsp_harness import Editor, start_editor
from tests.scenarios import (
    FIXED,
    MODELS,
    STUB,
    debug_ok,
    js,
    plan,
    script_generate,
    server_env,
    suite,
    synth,
    write_config,
)

URI = "file:///ws/mathx.py"


def _range(line: int) -> types.Range:
    return types.Range(
        start=types.Position(line=line, character=0), end=types.Position(line=line, character=3)
    )


def _plain(version: int | None = 4) -> types.WorkspaceEdit:
    return types.WorkspaceEdit(
        document_changes=[
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(
                    uri=URI, version=version
                ),
                edits=[
                    types.TextEdit(range=_range(0), new_text="import os\n"),
                    types.TextEdit(range=_range(3), new_text="    return a + b"),
                ],
            )
        ]
    )


# -- the edit's shape ---------------------------------------------------------------------------


def test_for_review_annotates_every_edit_and_keeps_the_version() -> None:
    reviewed = apply.for_review(_plain(), "Council: Generate add", "approved: looks right")
    (change,) = reviewed.document_changes or []
    assert isinstance(change, types.TextDocumentEdit)
    assert change.text_document == types.OptionalVersionedTextDocumentIdentifier(uri=URI, version=4)
    assert [type(e) for e in change.edits] == [types.AnnotatedTextEdit] * 2
    assert {e.annotation_id for e in change.edits} == {apply.REVIEW}  # type: ignore[union-attr]
    assert [e.new_text for e in change.edits] == ["import os\n", "    return a + b"]
    assert reviewed.change_annotations == {
        apply.REVIEW: types.ChangeAnnotation(
            label="Council: Generate add",
            needs_confirmation=True,
            description="approved: looks right",
        )
    }


def test_for_review_annotates_file_operations_too() -> None:
    create = types.CreateFile(uri="file:///ws/tests/test_x.py")
    reviewed = apply.for_review(types.WorkspaceEdit(document_changes=[create]), "label")
    (change,) = reviewed.document_changes or []
    assert isinstance(change, types.CreateFile) and change.annotation_id == apply.REVIEW


def test_client_reviews_only_with_change_annotation_support() -> None:
    def caps(support: types.ChangeAnnotationsSupportOptions | None) -> types.ClientCapabilities:
        return types.ClientCapabilities(
            workspace=types.WorkspaceClientCapabilities(
                workspace_edit=types.WorkspaceEditClientCapabilities(
                    change_annotation_support=support
                )
            )
        )

    assert apply.client_reviews(caps(types.ChangeAnnotationsSupportOptions()))
    assert not apply.client_reviews(caps(None))
    assert not apply.client_reviews(types.ClientCapabilities())
    assert not apply.client_reviews(None)


def test_refusal_tells_a_rejection_from_a_stale_edit() -> None:
    edit = _plain(version=4)
    assert not apply.changed_since(edit, {URI: 4})
    assert apply.changed_since(edit, {URI: 5})
    assert not apply.changed_since(_plain(version=None), {URI: 5})
    assert apply.refusal(None, reviewed=True, changed=False) == apply.REJECTED
    assert "document changed" in apply.refusal(None, reviewed=True, changed=True)
    assert apply.refusal("rejected in review", reviewed=True, changed=False) == apply.REJECTED
    assert apply.refusal("disk full", reviewed=False, changed=False) == "disk full"
    assert apply.refusal(None, reviewed=False, changed=False) != apply.REJECTED


# -- over stdio -----------------------------------------------------------------------------------


@pytest.fixture
def lb() -> Any:
    with LoopbackProvider(models=MODELS) as server:
        yield server


@pytest.fixture
def start(tmp_path: Path, lb: LoopbackProvider) -> Any:
    root = tmp_path / "ws"
    (root / "tests").mkdir(parents=True)
    (root / "mathx.py").write_text(STUB, encoding="utf-8")
    config = tmp_path / "council.toml"
    write_config(config, lb.base_url)

    async def go(*, annotations: bool, confirm: bool | None = None) -> Editor:
        configuration = None if confirm is None else {"council": {"confirm_edits": confirm}}
        editor = await start_editor(
            root,
            server_env(tmp_path, config),
            configuration=configuration,
            change_annotations=annotations,
        )
        return editor

    return go  # each test shuts its editor down


def answer_as_vscode(
    editor: Editor, monkeypatch: pytest.MonkeyPatch, *, accept: bool
) -> list[types.ApplyWorkspaceEditParams]:
    """Answer applyEdit as VS Code does after its refactor preview: Apply applies the edit,
    Discard answers `applied: false` without a reason. Returns what was asked."""
    asked: list[types.ApplyWorkspaceEditParams] = []
    plain: Callable[[types.ApplyWorkspaceEditParams], types.ApplyWorkspaceEditResult]
    plain = editor._apply

    def review(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        asked.append(params)
        return plain(params) if accept else types.ApplyWorkspaceEditResult(applied=False)

    monkeypatch.setattr(editor, "_apply", review)
    return asked


def edits_of(params: types.ApplyWorkspaceEditParams) -> list[Any]:
    (change,) = params.edit.document_changes or []
    assert isinstance(change, types.TextDocumentEdit)
    return list(change.edits)


@pytest.mark.anyio
async def test_generate_asks_for_confirmation_and_applies_when_accepted(
    start: Any, lb: LoopbackProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = await start(annotations=True)
    try:
        asked = answer_as_vscode(editor, monkeypatch, accept=True)
        script_generate(lb)
        uri = editor.open("mathx.py")
        result = await editor.command("council.generate", {"uri": uri, "symbol": "add"})
        assert result.applied is True and "Replaced `add`" in result.message, result
        (params,) = asked
        assert all(isinstance(e, types.AnnotatedTextEdit) for e in edits_of(params)), params
        note = (params.edit.change_annotations or {})[apply.REVIEW]
        assert note.needs_confirmation is True and note.label == "Council: Generate add"
        assert note.description and note.description.startswith("approved")
        assert params.edit.document_changes[0].text_document.version == 1  # type: ignore[union-attr]
        assert "return a + b" in editor.text(uri)
    finally:
        await editor.client.shutdown_session()


@pytest.mark.anyio
async def test_generate_rejected_in_review_changes_nothing_and_says_so(
    start: Any, lb: LoopbackProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = await start(annotations=True)
    try:
        asked = answer_as_vscode(editor, monkeypatch, accept=False)
        script_generate(lb)
        uri = editor.open("mathx.py")
        result = await editor.command("council.generate", {"uri": uri, "symbol": "add"}, "t")
        assert result.applied is False and result.reason == "rejected in review", result
        assert result.message == "Not applied: rejected in review.", result
        assert len(asked) == 1 and editor.text(uri) == STUB
        end = editor.client.progress_reports["t"][-1]
        assert "Not applied: rejected in review." in end.message
        # the user's own choice is not repeated back as a warning
        assert not [m for m in editor.client.messages if "not applied" in m.message]
    finally:
        await editor.client.shutdown_session()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("annotations", "confirm"), [(False, None), (True, False)], ids=["no-support", "setting-off"]
)
async def test_plain_edits_without_support_or_with_the_setting_off(
    start: Any, lb: LoopbackProvider, annotations: bool, confirm: bool | None
) -> None:
    editor = await start(annotations=annotations, confirm=confirm)
    try:
        script_generate(lb)
        uri = editor.open("mathx.py")
        result = await editor.command("council.generate", {"uri": uri, "symbol": "add"})
        assert result.applied is True, result
        (params,) = editor.applied
        assert all(type(e) is types.TextEdit for e in edits_of(params)), params
        assert not params.edit.change_annotations
        assert params.edit.document_changes[0].text_document.version == 1  # type: ignore[union-attr]
    finally:
        await editor.client.shutdown_session()


@pytest.mark.anyio
@pytest.mark.parametrize("annotations", [True, False], ids=["annotated", "plain"])
async def test_debug_quick_fix_carries_the_annotation_when_reviewing(
    start: Any, lb: LoopbackProvider, annotations: bool
) -> None:
    editor = await start(annotations=annotations)
    try:
        uri = editor.open("mathx.py", "def add(a: int, b: int) -> int:\n    return a - b\n")
        lb.script(plan("debugger"), synth("APPROVE", 0.9), model="orch")
        bug = {"line": 2, "severity": "critical", "description": "Subtracts.", "fix": "Use +."}
        fixed = js(verdict="fail", analysis="subtracts", fixed_code=FIXED, bugs=[bug])
        lb.script(fixed, debug_ok(), model="dbg")
        lb.script(suite(), model="tst")
        result = await editor.command("council.debug", {"uri": uri, "symbol": "add"})
        assert result.bugs == 1, result
        (diag,) = editor.client.diagnostics[uri]
        (fix,) = await editor.actions(uri, 1, diagnostics=[diag], only=["quickfix.council.fix"])
        assert fix.edit is not None
        params = types.ApplyWorkspaceEditParams(edit=fix.edit)
        kinds = {type(e) for e in edits_of(params)}
        notes = fix.edit.change_annotations or {}
        if annotations:
            assert kinds == {types.AnnotatedTextEdit}
            assert notes[apply.REVIEW].needs_confirmation is True
            assert notes[apply.REVIEW].label == "Council: Debug fix for add"
        else:
            assert kinds == {types.TextEdit} and not notes
        editor._apply(params)  # the user accepts; the edit is still versioned and lands
        assert "return a + b" in editor.text(uri)
    finally:
        await editor.client.shutdown_session()
