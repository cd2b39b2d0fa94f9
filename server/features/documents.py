"""Document sync hooks: council diagnostics belong to one version of a document, and the
workspace index (`server.features.workspace`) follows the open buffers.

pygls keeps the documents themselves (its built-in handlers run first); each method has one
handler, here, which tells the parts that care.
"""

from __future__ import annotations

from lsprotocol import types

from server.app import CouncilServer
from server.diagnostics import clear


def setup(server: CouncilServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def opened(ls: CouncilServer, params: types.DidOpenTextDocumentParams) -> None:
        if ls.workspace_index is not None:
            ls.workspace_index.opened(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def changed(ls: CouncilServer, params: types.DidChangeTextDocumentParams) -> None:
        clear(ls, params.text_document.uri)
        if ls.workspace_index is not None:
            ls.workspace_index.changed(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def closed(ls: CouncilServer, params: types.DidCloseTextDocumentParams) -> None:
        clear(ls, params.text_document.uri)
        if ls.workspace_index is not None:
            ls.workspace_index.closed(params.text_document.uri)
