"""`council bench index`: what the workspace index costs, on a real tree and a synthetic one.

For each workspace (this repository's tree, or `--root`, and a generated 5,000-file one):

- **build**: the server's background builder, timed from start to the end of the walk,
  while the main thread queries every `_PROBE_SECS` as requests would, so the report also
  says how fast queries answer *during* the build and how far the build had got;
- **memory**: the index built again in one thread under `tracemalloc` (Python allocations
  still held once it is built, and the peak while building), plus the process's RSS growth
  over the first build;
- **queries**: completion queries (30 lines of a random file, as the completer asks) and
  council queries (`council_snippets` for a random function), p50/p95/max;
- **update**: re-indexing one edited file (a buffer change), p50/p95;
- `--compare` also indexes the same chunks with `bm25s` and `rank-bm25` when installed and
  reports their build, query and one-file-update cost and how far their top ten agree with
  this index's (the evidence for the choice in `council.workspace.index`).
"""

from __future__ import annotations

import gc
import random
import statistics
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from council.symbols import split_lines
from council.workspace.chunks import pieces, tokens
from council.workspace.council_context import council_snippets
from council.workspace.index import Index
from council.workspace.scan import Builder, Limits, build_now, walk
from council.workspace.synthetic import generate

_PROBE_SECS = 0.05


def _q(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values * 2 if len(values) == 1 else values)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49], 3),
        "p95_ms": round(q[94], 3),
        "max_ms": round(max(values), 3),
        "n": len(values),
    }


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _queries(root: Path, limits: Limits, count: int, seed: int) -> list[str]:
    """Windows of 30 lines from random files, as the completer's queries are."""
    rng = random.Random(seed)
    files = walk(root, limits).files
    out: list[str] = []
    while files and len(out) < count:
        _, path = rng.choice(files)
        lines = split_lines(path.read_text(encoding="utf-8", errors="replace"))
        if len(lines) < 5:
            continue
        end = rng.randrange(4, len(lines))
        out.append("".join(lines[max(0, end - 30) : end]))
    return out


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def measure(root: Path, limits: Limits, *, queries: int, seed: int, memory: bool) -> dict[str, Any]:
    """Build, memory, query and update figures for one workspace."""
    probes = _queries(root, limits, queries, seed)
    gc.collect()
    rss_before = _rss_mb()
    builder = Builder(root, limits).start()
    during: list[float] = []
    progress: list[int] = []
    while not builder.done.wait(_PROBE_SECS):
        probe = probes[len(during) % len(probes)] if probes else "x"
        during.append(_timed(lambda p=probe: builder.index.search(p, 4)))
        progress.append(builder.indexed)
    index = builder.index
    gc.collect()
    report: dict[str, Any] = {
        "root": str(root),
        "files": index.stats()["files"],
        "left_out": {"too_big": builder.too_big, "over_max_files": builder.over_limit},
        "chunks": index.stats()["chunks"],
        "terms": index.stats()["terms"],
        "postings": index.stats()["postings"],
        "build_seconds": builder.build_seconds,
        "rss_growth_mb": round(_rss_mb() - rss_before, 1),
        "queries_during_build": {
            **_q(during),
            "files_indexed_at_probes": progress[:1] + progress[-1:],
        },
    }
    builder.stop()
    report["completion_query"] = _q([_timed(lambda p=p: index.search(p, 4)) for p in probes])
    paths = index.paths()
    sample = random.Random(seed).sample(paths, min(len(paths), 200))
    targets = [c for p in sample for c in index.chunks_of(p) if c.kind == "function"][:50]
    council: list[float] = []
    for chunk in targets:
        text = index.text(chunk) or ""
        council.append(
            _timed(
                lambda c=chunk, t=text: council_snippets(index, path=c.path, text=t, symbol=None)
            )
        )
    report["council_query"] = _q(council)
    report["update_one_file"] = _q(_updates(index, root, 30, seed))
    if memory:
        del builder, index
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        kept = build_now(root, limits)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        report["memory_mb"] = {
            "held": round((current - base) / 2**20, 1),
            "peak_while_building": round((peak - base) / 2**20, 1),
        }
        del kept
    return report


def _updates(index: Index, root: Path, count: int, seed: int) -> list[float]:
    """Re-index edited files as a buffer change does (one function body changed)."""
    rng = random.Random(seed)
    paths = index.paths()
    times = []
    for _ in range(min(count, len(paths))):
        rel = rng.choice(paths)
        text = (root / rel).read_text(encoding="utf-8", errors="replace")
        edited = text.replace("return", "return  # edited", 1)
        times.append(_timed(lambda r=rel, t=edited: index.update(r, t)))
    return times


def compare(root: Path, limits: Limits, *, queries: int, seed: int) -> dict[str, Any]:
    """bm25s and rank-bm25 on the same chunks and tokens (those installed)."""
    import numpy as np

    docs: list[list[str]] = []
    ours = Index()
    for rel, path in walk(root, limits).files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for piece in pieces(text):
            docs.append([t for t, n in piece.counts().items() for _ in range(n)])
        ours.update(rel, text)
    probes = [sorted(set(tokens(q))) for q in _queries(root, limits, queries, seed)]
    top_ours = [
        [h.chunk.id for h in ours.search(" ".join(p), 10, max_terms=10_000, names=False)]
        for p in probes
    ]
    out: dict[str, Any] = {"chunks": len(docs)}
    out["ours"] = {
        "query": _q([_timed(lambda p=p: ours.search(" ".join(p), 10)) for p in probes]),
    }
    try:
        import bm25s

        started = time.perf_counter()
        retriever = bm25s.BM25(k1=1.2, b=0.75)
        retriever.index(docs, show_progress=False)
        build = time.perf_counter() - started
        tops: list[list[int]] = []
        times = []
        for p in probes:
            started = time.perf_counter()
            scores = retriever.get_scores(p)
            top = np.argsort(-scores, kind="stable")[:10]
            times.append((time.perf_counter() - started) * 1000)
            tops.append([int(i) for i in top if scores[i] > 0])
        out["bm25s"] = {
            "build_seconds": round(build, 3),
            "query": _q(times),
            "update_one_file_seconds": round(build, 3),  # the index is rebuilt whole
            "top10_agreement": _agreement(top_ours, tops),
        }
    except ImportError:
        out["bm25s"] = "not installed"
    try:
        from rank_bm25 import BM25Okapi

        started = time.perf_counter()
        okapi = BM25Okapi(docs, k1=1.2, b=0.75)
        build = time.perf_counter() - started
        few = probes[: max(1, min(20, len(probes)))]
        times = [_timed(lambda p=p: okapi.get_scores(p)) for p in few]
        out["rank_bm25"] = {
            "build_seconds": round(build, 3),
            "query": _q(times),
            "update_one_file_seconds": round(build, 3),
        }
    except ImportError:
        out["rank_bm25"] = "not installed"
    return out


def _agreement(ours: list[list[int]], theirs: list[list[int]]) -> float:
    """Mean share of our top ten (chunk ids are in corpus order in both) in theirs."""
    shares = [len(set(a) & set(b)) / len(a) for a, b in zip(ours, theirs, strict=True) if a]
    return round(statistics.fmean(shares), 4) if shares else 0.0


def bench_index(
    *,
    root: Path | None,
    synthetic_files: int = 5_000,
    queries: int = 300,
    seed: int = 0,
    memory: bool = True,
    with_compare: bool = False,
) -> dict[str, Any]:
    """The whole report (see the module docstring)."""
    limits = Limits()
    report: dict[str, Any] = {"limits": {"max_files": limits.max_files}}
    if root is not None:
        report["tree"] = measure(root, limits, queries=queries, seed=seed, memory=memory)
    if synthetic_files > 0:
        with tempfile.TemporaryDirectory(prefix="council-synthetic-") as tmp:
            started = time.perf_counter()
            folder = generate(Path(tmp) / "ws", synthetic_files, seed=seed)
            generated = round(time.perf_counter() - started, 1)
            result = measure(folder, limits, queries=queries, seed=seed, memory=memory)
            result["root"] = f"<synthetic: {synthetic_files} files>"
            result["generate_seconds"] = generated
            if with_compare:
                result["libraries"] = compare(folder, limits, queries=min(queries, 100), seed=seed)
            report["synthetic"] = result
    report["threads"] = threading.active_count()
    return report
