"""Workspace chunks for the inline completion prompt.

The completer asks (through `council.completion.context.Related`) with the window's code
above the cursor's line; the answer is the best-scoring chunks of the index, except the
current file's chunks that overlap the window (the model sees those already).

Answers are remembered per (file, query) in a small LRU: the query does not change while
the user types on one line, and neither must the chunks, or the prompt's prefix would
change and the specialist lose its KV cache. So a change to the index (another file saved,
the build progressing) shows from the next line on, not in the middle of one.
"""

from __future__ import annotations

from collections import OrderedDict

from council.completion.context import Related, RelatedCode, RelatedQuery
from council.workspace.index import Chunk, Index

CHUNKS = 4  # the budget (`completion.snippet_tokens`) cuts them further
_MEMO = 64


class CompletionContext:
    """`related(path)` gives the completer's lookup for one document."""

    def __init__(self, index: Index, *, chunks: int = CHUNKS) -> None:
        self.index = index
        self.chunks = chunks
        self._memo: OrderedDict[tuple[str | None, str], list[RelatedCode]] = OrderedDict()

    def related(self, path: str | None) -> Related:
        """The lookup for the document at `path` (relative to the workspace; None if outside)."""

        def lookup(query: RelatedQuery) -> list[RelatedCode]:
            key = (path, query.text)
            found = self._memo.get(key)
            if found is None:
                found = self.find(path, query)
                self._memo[key] = found
                while len(self._memo) > _MEMO:
                    self._memo.popitem(last=False)
            else:
                self._memo.move_to_end(key)
            return found

        return lookup

    def find(self, path: str | None, query: RelatedQuery) -> list[RelatedCode]:
        """The best chunks for `query`, uncached."""

        def keep(chunk: Chunk) -> bool:
            if chunk.path != path:
                return True
            return chunk.end < query.first_line or chunk.start > query.last_line

        found: list[RelatedCode] = []
        for hit in self.index.search(query.text, self.chunks + 2, keep=keep):
            text = self.index.text(hit.chunk)
            if text and not (hit.chunk.kind == "module" and _only_imports(text)):
                found.append(RelatedCode(hit.chunk.path, text))
        return found[: self.chunks]


def _only_imports(text: str) -> bool:
    """A module chunk of imports alone says nothing the current file's imports do not."""
    return all(
        not line.strip() or line.lstrip().startswith(("import ", "from ", "#", ")", "    "))
        for line in text.split("\n")
    )
