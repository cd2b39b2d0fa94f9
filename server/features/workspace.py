"""The workspace index in the server: built after `initialized`, kept current from the
editor's notifications, read by inline completions and the council commands.

- **Building.** When the settings load (`[workspace] index`, on by default) and the client
  named a workspace folder, `council.workspace.scan.Builder` walks it in a background
  thread, in batches, within `max_files`, `max_file_kb` and `exclude`. Requests never wait
  for it: one made during the build uses what is indexed so far. A change to `[workspace]`
  starts a new build; `index = false` drops the index.
- **Open buffers.** `didOpen` indexes the editor's text at once; `didChange` does so once
  typing pauses for `DEBOUNCE_SECS` (re-chunking a big file per keystroke would cost more
  than it brings); `didSave` at once; `didClose` goes back to the file on disk.
- **Other changes.** When the client can watch files, the server registers a watcher for
  `**/*.py` (`client/registerCapability`), and `workspace/didChangeWatchedFiles` updates
  or removes the files. Otherwise each save triggers a rescan, at most every
  `RESCAN_GAP_SECS`, that re-reads only files whose size or mtime changed.
- **`council/workspaceIndex`** (a custom request, no params) returns the index's state:
  `enabled`, `building`, files indexed and found, files left out by the limits, chunks,
  terms, the build's seconds. Tests wait on it; users can see what the index holds.

Importing this module costs nothing (the index loads at `initialized`), as for every feature.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from server.app import CouncilServer

if TYPE_CHECKING:
    from council.completion.context import Related
    from council.schemas import WorkspaceSnippet
    from council.workspace.completion import CompletionContext
    from council.workspace.scan import Builder
    from providers.settings import Settings

log = logging.getLogger(__name__)

STATS_METHOD = "council/workspaceIndex"
DEBOUNCE_SECS = 0.4
RESCAN_GAP_SECS = 2.0
_WATCHER_ID = "council-workspace-py"


class WorkspaceIndex:
    """The server's index (None until the settings load) and what feeds it."""

    def __init__(self, server: CouncilServer) -> None:
        self.server = server
        self.builder: Builder | None = None
        self.completion: CompletionContext | None = None
        self.watching = False
        self._key: tuple[Any, ...] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._last_rescan = 0.0

    # -- settings -------------------------------------------------------------------------------

    def configure(self, settings: Settings) -> None:
        """Settings listener: start, restart or drop the index."""
        root = self.server.state.workspace
        config = settings.workspace
        if not config.index or root is None:
            self._drop()
            return
        from council.workspace.completion import CompletionContext
        from council.workspace.scan import Builder, Limits

        limits = Limits.of(config)
        if self._key == (root, limits):
            return
        self._drop()
        builder = self.builder = Builder(root, limits)
        for uri, doc in list(self.server.workspace.text_documents.items()):
            rel = self._rel(uri)
            if rel is not None:
                builder.buffer(rel, doc.source)
        builder.start()
        self.completion = CompletionContext(builder.index)
        self._key = (root, limits)
        self._watch()

    def _drop(self) -> None:
        if self.builder is not None:
            self.builder.stop()
        self.builder = self.completion = self._key = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _watch(self) -> None:
        caps = self.server.client_capabilities
        dynamic = bool(
            caps
            and caps.workspace
            and caps.workspace.did_change_watched_files
            and caps.workspace.did_change_watched_files.dynamic_registration
        )
        if not dynamic or self.watching:
            return
        self.watching = True
        options = types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern="**/*.py")]
        )
        registration = types.Registration(
            id=_WATCHER_ID,
            method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
            register_options=options,
        )

        def done(result: Any) -> None:
            if isinstance(result, BaseException):  # then saves trigger rescans instead
                log.warning("file watching was refused: %s", result)
                self.watching = False

        self.server.client_register_capability(
            types.RegistrationParams(registrations=[registration]), done
        )

    # -- what the editor reports ----------------------------------------------------------------

    def _rel(self, uri: str) -> str | None:
        """`uri` relative to the indexed root: a Python file inside it, else None."""
        if self.builder is None:
            return None
        try:
            path = self.server.path_of(uri)
        except Exception:  # a URI a client made up must not fail a notification
            return None
        if path is None or path.suffix != ".py":
            return None
        return self.builder.relative(path)

    def opened(self, uri: str) -> None:
        self._send(uri)

    def changed(self, uri: str) -> None:
        if self.builder is None:
            return
        old = self._timers.pop(uri, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[uri] = loop.call_later(DEBOUNCE_SECS, self._send, uri)

    def saved(self, uri: str) -> None:
        self._send(uri)
        now = time.monotonic()
        if self.builder is None or self.watching or now - self._last_rescan < RESCAN_GAP_SECS:
            return
        self._last_rescan = now
        self.builder.rescan()

    def closed(self, uri: str) -> None:
        timer = self._timers.pop(uri, None)
        if timer is not None:
            timer.cancel()
        rel = self._rel(uri)
        if self.builder is not None and rel is not None:
            self.builder.closed(rel)

    def watched(self, params: types.DidChangeWatchedFilesParams) -> None:
        builder = self.builder
        if builder is None:
            return
        for change in params.changes:
            try:
                path = self.server.path_of(change.uri)
            except Exception:
                continue
            rel = builder.relative(path) if path is not None else None
            if rel is None:
                continue
            if change.type == types.FileChangeType.Deleted:
                builder.deleted(rel)
            elif rel.endswith(".py"):
                builder.changed(rel)

    def _send(self, uri: str) -> None:
        """The document's current text to the index (the timer of a pause, or at once)."""
        self._timers.pop(uri, None)
        doc = self.server.workspace.text_documents.get(uri)
        rel = self._rel(uri)
        if self.builder is not None and doc is not None and rel is not None:
            self.builder.buffer(rel, doc.source)

    # -- what requests read ---------------------------------------------------------------------

    def related(self, uri: str) -> Related | None:
        """The inline completer's lookup for the document at `uri` (None: no index)."""
        if self.completion is None:
            return None
        return self.completion.related(self._rel(uri))

    def council_snippets(
        self, uri: str, text: str, symbol: str | None, selection: str | None
    ) -> list[WorkspaceSnippet]:
        """Definitions, tests and similar code for a council request about `uri`."""
        if self.builder is None:
            return []
        from council.workspace.council_context import council_snippets

        try:
            return council_snippets(
                self.builder.index,
                path=self._rel(uri),
                text=text,
                symbol=symbol,
                selection=selection,
                budget=self.server.settings.workspace.council_context_tokens,
            )
        except Exception:  # the context is a help: a failure must not stop the run
            log.exception("workspace context for the council failed")
            return []

    def stats(self) -> dict[str, Any]:
        if self.builder is None:
            return {"enabled": False}
        return {"enabled": True, "watching": self.watching, **self.builder.stats()}


def setup(server: CouncilServer) -> None:
    index = WorkspaceIndex(server)
    server.workspace_index = index
    server.settings_listeners.append(index.configure)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def saved(ls: CouncilServer, params: types.DidSaveTextDocumentParams) -> None:
        index.saved(params.text_document.uri)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def watched(ls: CouncilServer, params: types.DidChangeWatchedFilesParams) -> None:
        index.watched(params)

    @server.feature(STATS_METHOD)
    def stats(ls: CouncilServer, params: Any) -> dict[str, Any]:
        return index.stats()
