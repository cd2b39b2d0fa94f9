"""Turning council results into safe workspace edits.

Every edit names the document version it was computed against, so an editor that has
changed the document since then rejects it instead of clobbering what the user typed. When the
document changed while the council ran, a generated function is re-anchored on its name in
the current text; anything that cannot be re-anchored is not applied, and the user is told.

With `council.confirm_edits` (and a client that honours LSP change annotations), Generate's
edit and Debug's fix are sent for review: every text edit refers to one change annotation
that needs confirmation, so VS Code opens its refactor preview and the Neovim plugin its
diff window, and nothing changes unless the user accepts. Add tests is not reviewed: it only
adds (a new test file, or definitions appended to one, existing names skipped) and never
rewrites the user's code; the editor opens the result unsaved, which is review enough.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import attrs
from lsprotocol import types
from pygls.uris import from_fs_path

from council.schemas import TestSuite
from council.symbols import Symbol, find_symbol, parse, reindent, split_lines, symbol_source


@dataclass
class Planned:
    """An edit to apply, or the reason there is none."""

    edit: types.WorkspaceEdit | None
    message: str
    target_uri: str | None = None


def _line_range(lines: list[str], start: int, end: int) -> types.Range:
    """Whole lines start..end (inclusive), ending at the end of the last line's text."""
    end = min(end, len(lines) - 1)
    return types.Range(
        start=types.Position(line=start, character=0),
        end=types.Position(line=end, character=len(lines[end]) if lines else 0),
    )


def _doc_edit(uri: str, version: int | None, edits: list[types.TextEdit]) -> types.TextDocumentEdit:
    return types.TextDocumentEdit(
        text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
        edits=edits,
    )


def _imports(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines()
    return [
        "\n".join(lines[node.lineno - 1 : (node.end_lineno or node.lineno)])
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]


def _import_insertion_line(lines: list[str], text: str) -> int:
    """After the last top-level import, else after the module docstring, else line 0."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return 0
    last = 0
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom) or (
            last == 0
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and node is tree.body[0]
        ):
            last = node.end_lineno or node.lineno
    return min(last, len(lines))


def missing_imports(current: str, generated: str) -> list[str]:
    have = {" ".join(i.split()) for i in _imports(current)}
    return [i for i in _imports(generated) if " ".join(i.split()) not in have]


def keep_docstring(code: str, before: tuple[str, int] | None) -> str:
    """`code` (one definition, dedented) with the user's docstring when the model dropped it.

    Generate starts from a stub whose docstring is the specification; a model that answers
    with the body alone must not delete what the user wrote. A docstring the model kept or
    rewrote is left as it is.
    """
    new_tree, old_tree = parse(code), parse(before[0]) if before else None
    if new_tree is None or old_tree is None or not new_tree.body or not old_tree.body:
        return code
    new_def, old_def = new_tree.body[0], old_tree.body[0]
    definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    if not isinstance(new_def, definition) or not isinstance(old_def, definition):
        return code
    doc = old_def.body[0] if ast.get_docstring(old_def, clean=False) is not None else None
    if doc is None or ast.get_docstring(new_def, clean=False) is not None or not new_def.body:
        return code
    old_lines = split_lines(before[0]) if before else []
    doc_lines = [line.rstrip("\r\n") for line in old_lines[doc.lineno - 1 : doc.end_lineno]]
    lines = [line.rstrip("\r\n") for line in split_lines(code)]
    first = new_def.body[0]
    body_indent = " " * first.col_offset
    moved = reindent("\n".join(doc_lines), body_indent)
    if first.lineno == new_def.lineno:  # `def f(): return 1`: the body shares the def line
        return code
    at = first.lineno - 1
    return "\n".join([*lines[:at], *moved, *lines[at:]]) + "\n"


def plan_generate(
    uri: str,
    current_text: str,
    current_version: int | None,
    started_version: int | None,
    symbol: str | None,
    generated: str,
) -> Planned:
    lines = current_text.splitlines()
    if symbol:
        found = symbol_source(generated, symbol, loose=True)
        if found is None:
            return Planned(None, f"The council's code has no `{symbol}`; nothing was changed.")
        anchor: Symbol | None = find_symbol(current_text, symbol)
        if anchor is None:
            return Planned(
                None,
                f"`{symbol}` is no longer in the document (it changed while the council ran); "
                "nothing was changed. Run Generate again.",
            )
        original = lines[anchor.start] if anchor.start < len(lines) else ""
        indent = original[: len(original) - len(original.lstrip())]
        code = keep_docstring(found[0], symbol_source(current_text, symbol))
        replacement = "\n".join(reindent(code, indent))
        edits = [
            types.TextEdit(range=_line_range(lines, anchor.start, anchor.end), new_text=replacement)
        ]
        imports = missing_imports(current_text, generated)
        if imports:
            at = _import_insertion_line(lines, current_text)
            if at <= anchor.start:
                position = types.Position(line=at, character=0)
                edits.insert(
                    0,
                    types.TextEdit(
                        range=types.Range(start=position, end=position),
                        new_text="\n".join(imports) + "\n",
                    ),
                )
        note = "" if current_version == started_version else " (re-anchored on the symbol)"
        return Planned(
            types.WorkspaceEdit(document_changes=[_doc_edit(uri, current_version, edits)]),
            f"Replaced `{symbol}`{note}.",
        )
    if current_version != started_version:
        return Planned(
            None,
            "The document changed while the council ran, and without a symbol "
            "the result cannot be re-anchored; nothing was changed.",
        )
    whole = types.Range(
        start=types.Position(line=0, character=0), end=types.Position(line=len(lines), character=0)
    )
    text = generated if generated.endswith("\n") else generated + "\n"
    return Planned(
        types.WorkspaceEdit(
            document_changes=[
                _doc_edit(uri, current_version, [types.TextEdit(range=whole, new_text=text)])
            ]
        ),
        "Replaced the document with the council's version.",
    )


def test_file_for(workspace: Path | None, module_path: str) -> str:
    """Follow the workspace's layout: tests/test_<module>.py when tests/ exists, else beside."""
    module = PurePosixPath(module_path)
    name = f"test_{module.stem}.py"
    if workspace is not None and (workspace / "tests").is_dir():
        return f"tests/{name}"
    return str(module.parent / name) if str(module.parent) != "." else name


def _top_level_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }


def new_test_code(existing: str, generated: str) -> tuple[list[str], str, list[str]]:
    """(imports to add, definitions to append, names skipped as duplicates)."""
    try:
        tree = ast.parse(generated)
    except SyntaxError:
        return [], generated, []
    lines = generated.splitlines()
    have = _top_level_names(existing)
    blocks: list[str] = []
    skipped: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        name = getattr(node, "name", None)
        if name is not None and name in have:
            skipped.append(name)
            continue
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        blocks.append("\n".join(lines[start - 1 : (node.end_lineno or node.lineno)]))
    return missing_imports(existing, generated), "\n\n\n".join(blocks), skipped


def plan_tests(
    workspace: Path | None,
    module_path: str,
    suite: TestSuite,
    existing_text: str | None,
    existing_version: int | None,
) -> Planned:
    rel = test_file_for(workspace, module_path)
    base = workspace or Path.cwd()
    uri = from_fs_path(str(base / rel)) or ""
    if existing_text is None:
        content = suite.content if suite.content.endswith("\n") else suite.content + "\n"
        return Planned(
            types.WorkspaceEdit(
                document_changes=[
                    types.CreateFile(
                        uri=uri, options=types.CreateFileOptions(ignore_if_exists=True)
                    ),
                    _doc_edit(
                        uri,
                        None,
                        [
                            types.TextEdit(
                                range=types.Range(
                                    start=types.Position(line=0, character=0),
                                    end=types.Position(line=0, character=0),
                                ),
                                new_text=content,
                            )
                        ],
                    ),
                ]
            ),
            f"Created {rel}.",
            uri,
        )
    imports, body, skipped = new_test_code(existing_text, suite.content)
    if not body.strip() and not imports:
        return Planned(None, f"{rel} already has every generated test ({', '.join(skipped)}).", uri)
    lines = existing_text.splitlines()
    edits: list[types.TextEdit] = []
    if imports:
        at = _import_insertion_line(lines, existing_text)
        pos = types.Position(line=at, character=0)
        edits.append(
            types.TextEdit(
                range=types.Range(start=pos, end=pos), new_text="\n".join(imports) + "\n"
            )
        )
    end = types.Position(line=len(lines), character=0)
    prefix = "" if existing_text.endswith("\n") or not existing_text else "\n"
    edits.append(
        types.TextEdit(range=types.Range(start=end, end=end), new_text=f"{prefix}\n\n{body}\n")
    )
    note = f"; skipped existing {', '.join(skipped)}" if skipped else ""
    return Planned(
        types.WorkspaceEdit(document_changes=[_doc_edit(uri, existing_version, edits)]),
        f"Appended to {rel}{note}.",
        uri,
    )


# -- review before apply --------------------------------------------------------------------------

REVIEW = "council.review"  # the one change annotation of a reviewed edit
REJECTED = "rejected in review"


def client_reviews(capabilities: types.ClientCapabilities | None) -> bool:
    """Whether the client understands change annotations (and so `needsConfirmation`).

    A client that does not would apply an annotated edit without asking, or refuse it; such
    clients get the plain edit, as with `confirm_edits` off.
    """
    workspace = capabilities.workspace if capabilities else None
    edit = workspace.workspace_edit if workspace else None
    return edit is not None and edit.change_annotation_support is not None


def for_review(
    edit: types.WorkspaceEdit, label: str, description: str | None = None
) -> types.WorkspaceEdit:
    """The same edit, each change referring to one annotation that needs confirmation.

    The documents' versions are kept: a reviewed edit is still refused by an editor whose
    document changed since (while the council ran, or while the user was reviewing)."""
    changes: list[Any] = []
    for change in edit.document_changes or []:
        if isinstance(change, types.TextDocumentEdit):
            change = types.TextDocumentEdit(
                text_document=change.text_document,
                edits=[
                    types.AnnotatedTextEdit(
                        annotation_id=REVIEW, range=e.range, new_text=e.new_text
                    )
                    for e in change.edits
                ],
            )
        else:  # CreateFile, RenameFile, DeleteFile
            change = attrs.evolve(change, annotation_id=REVIEW)
        changes.append(change)
    return types.WorkspaceEdit(
        document_changes=changes,
        change_annotations={
            REVIEW: types.ChangeAnnotation(
                label=label, needs_confirmation=True, description=description or None
            )
        },
    )


def changed_since(edit: types.WorkspaceEdit, versions: dict[str, int | None]) -> bool:
    """Whether a document the edit names is now at another version (``versions``: the
    server's copy, uri -> version) than the edit was computed against."""
    for change in edit.document_changes or []:
        if isinstance(change, types.TextDocumentEdit):
            named = change.text_document.version
            if named is not None and versions.get(change.text_document.uri, named) != named:
                return True
    return False


def refusal(failure_reason: str | None, reviewed: bool, changed: bool) -> str:
    """Why an edit was not applied, in words for the result and the message.

    VS Code answers a discarded refactor preview, and an edit it refused for a stale
    version, alike: `applied: false` with no reason. The server tells them apart by its own
    copy of the document: unchanged means the user said no."""
    if failure_reason:
        return failure_reason
    if changed:
        return "the document changed, so the editor refused the edit"
    if reviewed:
        return REJECTED
    return "the editor refused it (the document changed?)"
