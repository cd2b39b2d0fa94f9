"""An incremental BM25 index of code chunks, safe to query from one thread while another
thread fills it.

**Why not a library.** The issue suggested `bm25s` or `rank-bm25`; both were measured
(`council bench index --compare`, which runs all three on the same chunks and tokens) and
neither fits an index that changes while the user types:

- `rank-bm25` 0.2.2 scores a query with a Python loop over every document for every query
  term: on the 5,000-file synthetic workspace (75,329 chunks) a completion query took
  2.0 s at p50 (this index: 1.4 ms).
- `bm25s` 0.3.16 queries fast (a sparse matrix; 6.9 ms at p50 there), but its index is
  built once from the whole corpus (6.9 s there): one edited file means re-indexing every
  chunk, where this index re-indexes the file in 3-8 ms. Its scores are precomputed per
  document, so not even the corpus statistics can move without a rebuild.

So this module keeps the inverted index itself: per term, the (chunk id, term frequency)
pairs of the chunks holding it in one `array` (8 bytes a posting), or, for a term found
once (most terms are), a single int; per chunk its length; per term its document
frequency. Adding or replacing a file touches only its chunks' postings; a removed chunk
is marked dead and its postings are dropped in bulk later (`compact`). A query
is scored with numpy, term by term, over the postings of the query's terms only, with the
same formula as `bm25s`' default (Lucene's BM25: idf = ln(1 + (N - df + 0.5)/(df + 0.5)),
k1 = 1.2, b = 0.75), so the rankings agree with bm25s' (99.7% of the top ten in common on
100 queries); the measured figures are in the README (Workspace context). One addition: a chunk that
defines a name the query uses scores that name once more (see `search`).

Chunk text is not kept for files read from disk (a 20,000-file workspace would hold its
whole source twice): `text()` reads the lines back and checks that the file's stamp (size,
mtime) is still the one indexed. Open buffers, which change without touching the disk, keep
their text.
"""

from __future__ import annotations

import math
import os
import re
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from council.imports import numpy
from council.symbols import split_lines
from council.workspace.chunks import Piece, Prepared, Stamp, identifier_tokens, prepare, tokens

if TYPE_CHECKING:
    import numpy as np

K1 = 1.2
B = 0.75
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Chunk:
    """An indexed chunk: where it is and what it is (its text comes from `Index.text`)."""

    path: str  # relative to the workspace, with '/'
    name: str
    kind: str
    start: int  # 0-based lines, inclusive
    end: int
    id: int


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: Chunk
    score: float


@dataclass
class _File:
    stamp: Stamp
    ids: list[int]
    digests: list[int]
    text: str | None = None  # kept for open buffers only
    absolute: Path | None = None


class Index:
    """The BM25 index (see the module docstring). Every public method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._vocab: dict[str, int] = {}
        # per term: one posting as an int (chunk id << 8 | tf), or an array of (id, tf) pairs;
        # most terms occur once, and an int costs a fifth of an array
        self._post: list[int | array[int]] = []
        self._df = array("i")
        self._chunks: list[Chunk | None] = []
        self._lengths = array("f")
        self._terms: list[array[int] | None] = []  # per chunk: its distinct term ids
        self._files: dict[str, _File] = {}
        self._names: dict[str, list[int]] = {}  # a definition's last name part -> chunk ids
        self._total = 0.0  # summed length of live chunks
        self._live = 0
        self._dead = 0
        self._lines: OrderedDict[tuple[str, Stamp | int], list[str]] = OrderedDict()
        self.generation = 0  # bumped by every change

    # -- updates ------------------------------------------------------------------------------

    def update(
        self, path: str, text: str, *, stamp: Stamp = None, absolute: Path | None = None
    ) -> None:
        """Index (or re-index) one file; unchanged chunks keep their ids."""
        self.apply(prepare(path, text, stamp=stamp, absolute=absolute))

    def apply(self, prepared: Prepared) -> None:
        with self._lock:
            old = self._files.get(prepared.path)
            reusable: dict[int, list[int]] = {}
            if old is not None:
                for digest, cid in zip(old.digests, old.ids, strict=True):
                    reusable.setdefault(digest, []).append(cid)
            ids: list[int] = []
            for piece, counts, digest in zip(
                prepared.pieces, prepared.counts, prepared.digests, strict=True
            ):
                same = reusable.get(digest)
                if same:
                    cid = same.pop()
                    self._chunks[cid] = Chunk(
                        prepared.path, piece.name, piece.kind, piece.start, piece.end, cid
                    )
                else:
                    cid = self._add(prepared.path, piece, counts)
                ids.append(cid)
            for leftover in reusable.values():
                for cid in leftover:
                    self._kill(cid)
            self._files[prepared.path] = _File(
                prepared.stamp, ids, prepared.digests, prepared.text, prepared.absolute
            )
            self.generation += 1

    def remove(self, path: str) -> bool:
        with self._lock:
            old = self._files.pop(path, None)
            if old is None:
                return False
            for cid in old.ids:
                self._kill(cid)
            self.generation += 1
            return True

    def _add(self, path: str, piece: Piece, counts: dict[str, int]) -> int:
        cid = len(self._chunks)
        self._chunks.append(Chunk(path, piece.name, piece.kind, piece.start, piece.end, cid))
        length = float(sum(counts.values()))
        self._lengths.append(length)
        term_ids = array("i")
        vocab = self._vocab
        for term, tf in counts.items():
            tid = vocab.get(term)
            if tid is None:
                tid = vocab[term] = len(self._post)
                self._post.append(cid << 8 | min(tf, 255))
                self._df.append(0)
            else:
                old = self._post[tid]
                if isinstance(old, int):
                    self._post[tid] = old = array("i", (old >> 8, old & 255))
                old.append(cid)
                old.append(tf)
            self._df[tid] += 1
            term_ids.append(tid)
        self._terms.append(term_ids)
        if piece.kind != "module":
            self._names.setdefault(piece.name.rsplit(".", 1)[-1], []).append(cid)
        self._total += length
        self._live += 1
        return cid

    def _kill(self, cid: int) -> None:
        chunk, terms = self._chunks[cid], self._terms[cid]
        if chunk is None or terms is None:
            return
        for tid in terms:
            self._df[tid] -= 1
        self._total -= self._lengths[cid]
        self._lengths[cid] = 0.0
        self._chunks[cid] = None
        self._terms[cid] = None
        owners = self._names.get(chunk.name.rsplit(".", 1)[-1])
        if owners is not None and cid in owners:
            owners.remove(cid)
        self._live -= 1
        self._dead += 1

    def compact(self, *, min_dead: int = 2_000) -> bool:
        """Drop dead chunks' postings once there are many (they only cost time and memory)."""
        np = numpy()

        with self._lock:
            if self._dead < max(min_dead, self._live // 4):
                return False
            alive = np.fromiter(
                (c is not None for c in self._chunks), dtype=bool, count=len(self._chunks)
            )
            for tid, post in enumerate(self._post):
                if isinstance(post, int):
                    continue  # a lone dead posting costs nothing to keep (its df is 0)
                pairs = np.array(post, dtype=np.int32).reshape(-1, 2)
                keep = alive[pairs[:, 0]]
                if keep.all():
                    continue
                kept = pairs[keep]
                if len(kept) == 1:
                    self._post[tid] = int(kept[0, 0]) << 8 | min(int(kept[0, 1]), 255)
                else:
                    packed = array("i")
                    packed.frombytes(kept.tobytes())
                    self._post[tid] = packed
            self._dead = 0
            return True

    # -- queries ------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 8,
        *,
        keep: Callable[[Chunk], bool] | None = None,
        max_terms: int = 64,
        names: bool = True,
    ) -> list[Hit]:
        """The `k` best chunks for the identifiers of `query` that `keep` accepts.

        Only the `max_terms` rarest of the query's terms are scored: the common ones
        (`get`, `value`) cost the most postings and move the ranking least. With `names`,
        a chunk that *defines* an identifier of the query gets that identifier's best
        possible term score once more (a second, name-only field, as in BM25F), so the
        definition of a function the code calls outranks the other places that call it.
        """
        np = numpy()

        wanted = set(tokens(query))
        with self._lock:
            if self._live == 0 or not wanted:
                return []
            n = self._live
            found = [
                (self._df[t], t) for t in (self._vocab.get(w) for w in wanted) if t is not None
            ]
            found = sorted((df, t) for df, t in found if df > 0)[:max_terms]
            if not found:
                return []
            # copies, not views: a live view would stop the arrays from growing
            lengths = np.array(self._lengths, dtype=np.float32)
            norm = K1 * (1 - B + B * lengths / (self._total / n))
            scores = np.zeros(len(lengths), dtype=np.float32)
            for df, tid in found:
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                post = self._post[tid]
                if isinstance(post, int):
                    cid, count = post >> 8, post & 255
                    scores[cid] += idf * count * (K1 + 1) / (count + norm[cid])
                    continue
                pairs = np.array(post, dtype=np.int32).reshape(-1, 2)
                ids, tf = pairs[:, 0], pairs[:, 1].astype(np.float32)
                scores[ids] += idf * tf * (K1 + 1) / (tf + norm[ids])
            if names:
                self._name_field(query, scores, n)
            return self._top(scores, k, keep)

    def _name_field(self, query: str, scores: np.ndarray, n: int) -> None:
        for identifier in set(_IDENT.findall(query)):
            owners = self._names.get(identifier)
            whole = identifier_tokens(identifier)
            tid = self._vocab.get(whole[0]) if owners and whole else None
            if tid is None:
                continue
            df = self._df[tid]
            bonus = math.log(1 + (n - df + 0.5) / (df + 0.5)) * (K1 + 1)
            for cid in owners:
                scores[cid] += bonus

    def _top(self, scores: np.ndarray, k: int, keep: Callable[[Chunk], bool] | None) -> list[Hit]:
        np = numpy()

        positive = int(np.count_nonzero(scores > 0))
        want = min(positive, max(4 * k, 32))
        hits: list[Hit] = []
        while want > 0:
            top = np.argpartition(-scores, want - 1)[:want]
            top = top[np.argsort(-scores[top], kind="stable")]
            hits.clear()
            for cid in top.tolist():
                chunk = self._chunks[cid]
                if chunk is not None and scores[cid] > 0 and (keep is None or keep(chunk)):
                    hits.append(Hit(chunk, float(scores[cid])))
                    if len(hits) == k:
                        return hits
            if want >= positive:
                break
            want = min(positive, want * 4)
        return hits

    def definitions(self, name: str) -> list[Chunk]:
        """Functions and classes named `name` (the last part of their qualified name)."""
        with self._lock:
            found = [self._chunks[cid] for cid in self._names.get(name, ())]
        return sorted((c for c in found if c is not None), key=lambda c: (c.path, c.start))

    def mentions(self, identifier: str) -> int:
        """How many chunks hold `identifier`'s whole token (its document frequency)."""
        whole = identifier_tokens(identifier)
        with self._lock:
            tid = self._vocab.get(whole[0]) if whole else None
            return self._df[tid] if tid is not None else 0

    def text(self, chunk: Chunk) -> str | None:
        """The chunk's source, or None when its file changed on disk since it was indexed."""
        with self._lock:
            entry = self._files.get(chunk.path)
            if entry is None or chunk.id not in entry.ids:
                return None
            stamp, absolute, buffer = entry.stamp, entry.absolute, entry.text
            key = (chunk.path, stamp if buffer is None else hash(buffer))  # str caches its hash
            lines = self._lines.get(key)
            if lines is not None:
                self._lines.move_to_end(key)
        if buffer is None:  # a file on disk: still the version indexed?
            try:
                if absolute is None or file_stamp(absolute) != stamp:
                    return None
                if lines is None:
                    lines = split_lines(absolute.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                return None
        elif lines is None:
            lines = split_lines(buffer)
        with self._lock:
            self._lines[key] = lines
            while len(self._lines) > 32:
                self._lines.popitem(last=False)
        return "".join(lines[chunk.start : chunk.end + 1])

    # -- state --------------------------------------------------------------------------------

    def stamp(self, path: str) -> Stamp | str:
        """The indexed file's stamp, "missing" when it is not indexed."""
        with self._lock:
            entry = self._files.get(path)
            return "missing" if entry is None else entry.stamp

    def paths(self) -> list[str]:
        with self._lock:
            return list(self._files)

    def chunks_of(self, path: str) -> list[Chunk]:
        with self._lock:
            entry = self._files.get(path)
            ids = entry.ids if entry else []
            return [c for c in (self._chunks[i] for i in ids) if c is not None]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            postings = sum(1 if isinstance(p, int) else len(p) // 2 for p in self._post)
            return {
                "files": len(self._files),
                "chunks": self._live,
                "deadChunks": self._dead,
                "terms": len(self._vocab),
                "postings": postings,
                "generation": self.generation,
            }


def file_stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
