"""`textDocument/inlineCompletion` (LSP 3.18) for Python documents, and `council/inlineStats`.

The work is `council.completion.completer`, driven by `server.inline`; this module and that
one add what belongs to the protocol:

- **Positions.** LSP positions (UTF-16 by default) become code-point offsets; a selected
  completion-menu item (`context.selectedCompletionInfo`) is applied before completing, and
  the answer then replaces that item's range and starts with its text.
- **Superseding and cancellation.** A newer request for the same document cancels the older
  one's work (its HTTP request is closed, the specialist stops at the next token) and the
  older answers with an empty list. `$/cancelRequest` cancels the request's task (pygls
  answers RequestCancelled); the same token then stops the model.
- **Warm-up.** After `initialized` (the first settings load), if the client advertises inline
  completions, the specialist is loaded and compiled in a background thread. Until it is
  ready requests get an empty answer at once; a model that fails to load is reported once
  with `window/showMessage` and the server carries on.
- **Settings.** A change to `[completion]` builds a new completer (and backend) for the next
  request; in-flight requests of the old one are cancelled.
- **Statistics.** `council/inlineStats` (params `{"since": seq, "uri": uri}`, both
  optional) returns the backend's state, the trigger and candidates settings, counters, the
  documents with a request in flight (`inFlight`), the last request overall (`last`) and for
  `uri` (`lastForDocument`), and the requests after `since` with their outcome and their time
  in the handler and in the model, so a client (or `council bench inline`) can tell server
  overhead from model time.
- **Why no suggestion.** Each request's outcome in words ("skipped mid-word", "empty after
  post-processing", ...) is in those records, and is sent as the `council/inlineOutcome`
  notification to clients whose `capabilities.experimental.councilInlineOutcome` is true.
  `council/explainCompletion` (params `{"uri": uri}`, optional: the last document) returns
  the last request's explanation: the prompt window as sent, each candidate's raw answer and
  post-processing steps, timings and outcome, as `markdown` and as structured `explanation`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from server.app import CouncilServer

if TYPE_CHECKING:
    from server.inline import InlineCompletions

STATS_METHOD = "council/inlineStats"
EXPLAIN_METHOD = "council/explainCompletion"


def _param(params: Any, name: str) -> Any:
    """A field of a custom request's params (pygls hands them over as objects or dicts)."""
    return params.get(name) if isinstance(params, dict) else getattr(params, name, None)


def _uri(params: Any, method: str) -> str | None:
    uri = _param(params, "uri")
    if uri is not None and not isinstance(uri, str):
        raise JsonRpcInvalidParams(f"{method}: uri must be a string")
    return uri


def setup(server: CouncilServer) -> None:
    @functools.cache
    def feature() -> InlineCompletions:
        # Built on first use (the settings load at `initialized`, at the latest): the completer
        # and its backends are not needed to answer `initialize`.
        from server.inline import InlineCompletions

        return InlineCompletions(server)

    server.settings_listeners.append(lambda settings: feature().configure(settings))

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: CouncilServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        return await feature().handle(params)

    @server.feature(STATS_METHOD)
    def inline_stats(ls: CouncilServer, params: Any) -> dict[str, Any]:
        since = _param(params, "since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            raise JsonRpcInvalidParams(f"{STATS_METHOD}: since must be an integer")
        return feature().stats(since or 0, _uri(params, STATS_METHOD))

    @server.feature(EXPLAIN_METHOD)
    def explain_completion(ls: CouncilServer, params: Any) -> dict[str, Any]:
        return feature().explain(_uri(params, EXPLAIN_METHOD))
