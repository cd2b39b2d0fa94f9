"""Document sync hooks: council diagnostics belong to one version of a document."""

from __future__ import annotations

from lsprotocol import types

from server.app import CouncilServer
from server.diagnostics import clear


def setup(server: CouncilServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def changed(ls: CouncilServer, params: types.DidChangeTextDocumentParams) -> None:
        clear(ls, params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def closed(ls: CouncilServer, params: types.DidCloseTextDocumentParams) -> None:
        clear(ls, params.text_document.uri)
