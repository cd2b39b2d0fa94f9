"""Turning council results into safe workspace edits.

Every edit names the document version it was computed against, so an editor that has
changed the document since then rejects it instead of clobbering what the user typed. When the
document changed while the council ran, a generated function is re-anchored on its name in
the current text; anything that cannot be re-anchored is not applied, and the user is told.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lsprotocol import types
from pygls.uris import from_fs_path

from council.schemas import TestSuite
from council.symbols import Symbol, find_symbol, reindent, symbol_source


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
        replacement = "\n".join(reindent(found[0], indent))
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
