"""`council/debugState`: what the server holds, read-only, for tests and bug reports.

The answer is `{"documents": {uri: {"version", "languageId", "text"}}, "runs": [{"sessionId",
"title", "requestId", "uri"}]}`: the server's copy of every open document, to compare with
the editor's (a wrong incremental `didChange` shows up here first), and the council runs in
flight with the id of the request that started each. Params are ignored. It reveals nothing
the client did not send, and costs a copy of the open documents, so it is always on.
"""

from __future__ import annotations

from typing import Any

from server.app import CouncilServer

METHOD = "council/debugState"


def setup(server: CouncilServer) -> None:
    @server.feature(METHOD)
    def debug_state(ls: CouncilServer, params: Any) -> dict[str, Any]:
        documents = {
            doc.uri: {"version": doc.version, "languageId": doc.language_id, "text": doc.source}
            for doc in list(ls.workspace.text_documents.values())
        }
        runs = [
            {"sessionId": r.session_id, "title": r.title, "requestId": r.msg_id, "uri": r.uri}
            for r in ls.active_runs.values()
        ]
        return {"documents": documents, "runs": runs}
