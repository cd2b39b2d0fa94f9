"""Which files go in: the seed's filters, decontamination and dedup over a document stream.

The per-file work (filters, ``ast.parse``, the HumanEval n-gram check, the MinHash) is
independent per file, so it runs on worker processes (:func:`examine_all`), in chunks and
in order. Deduplication depends on the order files arrive in, so it runs in the parent
(:func:`select_documents`): the result is the same for any number of workers.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from training import filters
from training.dedup import Decontaminator, NearDedup, minhash_values
from training.packed import SPLITS
from training.sources import Document

log = logging.getLogger(__name__)


class Examined(NamedTuple):
    """A document after the per-file checks (content dropped when it will not be kept)."""

    path: str
    content: str
    group: str
    heldout: bool
    failure: str | None  # the filter that rejected it
    contaminated: bool
    minhash: np.ndarray | None


class Kept(NamedTuple):
    """A selected file, as the split needs it: its split unit and its size."""

    path: str
    group: str
    chars: int


_DECONTAM: Decontaminator | None = None
_DO_DEDUP = True


def _init_worker(decontam: bool, dedup: bool) -> None:
    global _DECONTAM, _DO_DEDUP
    _DECONTAM = Decontaminator.humaneval() if decontam else None
    _DO_DEDUP = dedup


def _examine(doc: Document) -> Examined:
    path, text, group, heldout = doc
    failure = filters.first_failure(text)
    if failure is not None:
        return Examined(path, "", group, heldout, failure, False, None)
    if not heldout and _DECONTAM is not None and _DECONTAM.contaminated(text):
        return Examined(path, "", group, heldout, None, True, None)
    values = minhash_values(text) if _DO_DEDUP else None
    return Examined(path, text, group, heldout, None, False, values)


def _examine_chunk(docs: list[Document]) -> list[Examined]:
    return [_examine(d) for d in docs]


def chunks(it: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``it`` in lists of ``size`` (the last one shorter)."""
    chunk: list[Any] = []
    for item in it:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def examine_all(
    docs: Iterable[Document], *, num_workers: int, decontam: bool, dedup: bool
) -> Iterator[Examined]:
    """Run the per-file checks, in order, on ``num_workers`` processes (bounded in flight)."""
    if num_workers <= 1:
        _init_worker(decontam, dedup)
        yield from (_examine(d) for d in docs)
        return
    import multiprocessing

    # spawn, not fork: the parent may hold JAX or tokenizers threads.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=(decontam, dedup)) as pool:
        pending: collections.deque[Any] = collections.deque()
        for chunk in chunks(docs, 16):
            pending.append(pool.apply_async(_examine_chunk, (chunk,)))
            if len(pending) >= 4 * num_workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()


@dataclass
class FilterReport:
    """What the pipeline did to the corpus; stored in the manifest, printed by the command."""

    files_seen: int = 0
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(filters.FILTER_NAMES, 0))
    decontaminated: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    duplicate_clusters: int = 0
    #: Files of the held-out (``--exclude``) packages indexed for dedup, and corpus files
    #: removed because they copy one of them (a vendored or forked held-out module).
    heldout_indexed: int = 0
    heldout_overlap: int = 0
    files_kept: int = 0
    files: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FilterReport:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def table(self) -> str:
        """A two-column text table, one line per stage."""
        lines: list[tuple[str, int | str]] = [("files seen", self.files_seen)]
        lines += [(f"  removed: {name}", n) for name, n in self.removed.items()]
        lines += [
            ("  removed: HumanEval overlap", self.decontaminated),
            ("  removed: exact duplicates", self.exact_duplicates),
            ("  removed: near duplicates", self.near_duplicates),
            ("  (duplicate clusters)", self.duplicate_clusters),
        ]
        if self.heldout_indexed:
            lines += [
                ("  removed: copies of held-out code", self.heldout_overlap),
                ("  (held-out files indexed)", self.heldout_indexed),
            ]
        lines.append(("files kept", self.files_kept))
        for split in self.files:
            lines.append(
                (
                    f"  {split}",
                    f"{self.files[split]:,} files, {self.tokens[split]:,} tokens, "
                    f"{self.rows[split]:,} rows",
                )
            )
        width = max(len(k) for k, _ in lines)
        return "\n".join(
            f"{k:<{width}}  {v:>10,}" if isinstance(v, int) else f"{k:<{width}}  {v}"
            for k, v in lines
        )


def _progress(iterable: Iterable[Any], desc: str, total: int | None = None) -> Iterable[Any]:
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="file", disable=None, leave=False)


def select_documents(
    docs: Iterable[Document],
    kept_file: Path,
    *,
    num_workers: int,
    dedup: bool,
    decontam: bool,
) -> tuple[FilterReport, list[Kept]]:
    """Filter, decontaminate and dedup ``docs``; survivors go to ``kept_file`` (JSONL).

    Held-out documents (they come first) are only indexed by the deduplicator, so a later
    training file that copies one is removed; they are neither counted as seen nor kept.
    """
    report = FilterReport()
    deduper = NearDedup() if dedup else None
    kept: list[Kept] = []
    with kept_file.open("w", encoding="utf-8") as sink:
        examined = examine_all(docs, num_workers=num_workers, decontam=decontam, dedup=dedup)
        for i, ex in enumerate(_progress(examined, "filtering")):
            if ex.heldout:
                if deduper is not None and ex.failure is None:
                    deduper.check(i, ex.content, ex.minhash, reference=True)
                    report.heldout_indexed += 1
                continue
            report.files_seen += 1
            if ex.failure is not None:
                report.removed[ex.failure] += 1
                continue
            if ex.contaminated:
                report.decontaminated += 1
                log.debug("HumanEval overlap: %s", ex.path)
                continue
            if deduper is not None and deduper.check(i, ex.content, ex.minhash) is not None:
                continue
            sink.write(json.dumps({"path": ex.path, "content": ex.content}) + "\n")
            kept.append(Kept(ex.path, ex.group, len(ex.content)))
    if deduper is not None:
        report.exact_duplicates = deduper.exact_duplicates
        report.near_duplicates = deduper.near_duplicates
        report.duplicate_clusters = len(deduper.clusters)
        report.heldout_overlap = deduper.reference_matches
    report.files_kept = len(kept)
    return report, kept


def read_texts(path: Path) -> Iterator[str]:
    """The contents of a kept-files JSONL, in order."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["content"]
