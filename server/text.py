"""Open documents as the editor sees them: LSP lines and positions, not Python's.

pygls' `TextDocument` splits lines with `str.splitlines`, which also breaks at form feeds
(common in Python sources), `\\x1c`-`\\x1e`, NEL and U+2028/U+2029, while LSP ends a line only
at `\\n`, `\\r\\n` or `\\r`. It also moves a character past the end of the last line to one
before its end, where LSP says "the end of the line". Either way an incremental `didChange`
lands in the wrong place, and from then on the server's copy of the document silently
differs from the editor's. `LspTextDocument` maps positions to offsets the LSP way and applies
a change as one slice of the text; the stateful test in `tests/test_server_stateful.py`
checks the two copies stay equal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def lsp_lines(text: str) -> list[str]:
    """The lines of `text`, each with its terminator, split where LSP splits them."""
    return _LINE.findall(text)


class LspTextDocument(TextDocument):
    @property
    def lines(self) -> Sequence[str]:
        return tuple(lsp_lines(self.source))

    def offset_at_position(self, client_position: types.Position) -> int:
        """The code-point offset of an LSP position (in the negotiated encoding, UTF-16 unless
        the client chose otherwise). A character past the end of its line means the end of
        the line; a line past the last means the end of the document."""
        lines = self.lines
        if client_position.line >= len(lines):
            return len(self.source)
        start = sum(map(len, lines[: client_position.line]))
        line = lines[client_position.line]
        content = line.rstrip("\r\n")  # the terminator: LSP lines hold no other \r or \n
        units = 0
        for index, char in enumerate(content):
            if units >= client_position.character:
                return start + index
            units += self.position_codec.client_num_units(char)
        return start + len(content)

    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        start = self.offset_at_position(change.range.start)
        end = self.offset_at_position(change.range.end)
        if end < start:  # a reversed range: editors never send one, but it names a span too
            start, end = end, start
        source = self.source
        self._source = source[:start] + change.text + source[end:]


class LspWorkspace(Workspace):
    """pygls' workspace, holding `LspTextDocument`s."""

    def _create_text_document(
        self,
        doc_uri: str,
        source: str | None = None,
        version: int | None = None,
        language_id: str | None = None,
    ) -> TextDocument:
        return LspTextDocument(
            doc_uri,
            source=source,
            version=version,
            language_id=language_id,
            sync_kind=self._sync_kind,
            position_codec=self._position_codec,
        )
