"""Council debug findings as diagnostics (source `council`), each with its quick fix.

They describe one version of a document; any change to it clears them, since their line
numbers and fixes would no longer match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lsprotocol import types

from server.app import CouncilServer

if TYPE_CHECKING:
    from council.schemas import Bug  # pydantic: code actions need none of it

SOURCE = "council"
SEVERITY = {
    "critical": types.DiagnosticSeverity.Error,
    "major": types.DiagnosticSeverity.Warning,
    "minor": types.DiagnosticSeverity.Information,
}


@dataclass
class Published:
    version: int | None
    diagnostics: list[types.Diagnostic]
    fix: types.WorkspaceEdit | None
    fix_title: str


def publish(
    server: CouncilServer,
    uri: str,
    version: int | None,
    bugs: list[Bug],
    lines: list[str],
    fix: types.WorkspaceEdit | None,
) -> list[types.Diagnostic]:
    diagnostics = []
    for bug in bugs:
        line = min(max(bug.line - 1, 0), max(len(lines) - 1, 0))
        text = lines[line] if lines else ""
        start = len(text) - len(text.lstrip())
        diagnostics.append(
            types.Diagnostic(
                range=types.Range(
                    start=types.Position(line=line, character=start),
                    end=types.Position(line=line, character=len(text)),
                ),
                message=f"{bug.description} Fix: {bug.fix}",
                severity=SEVERITY.get(bug.severity, types.DiagnosticSeverity.Warning),
                source=SOURCE,
                code=bug.severity,
            )
        )
    server.council_diagnostics[uri] = Published(
        version, diagnostics, fix, "Council: apply the debugger's fix"
    )
    server.text_document_publish_diagnostics(
        types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics, version=version)
    )
    return diagnostics


def published(server: CouncilServer, uri: str) -> Published | None:
    found: Published | None = server.council_diagnostics.get(uri)
    return found


def clear(server: CouncilServer, uri: str) -> None:
    if server.council_diagnostics.pop(uri, None) is not None:
        server.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=[])
        )
