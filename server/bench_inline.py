"""`council bench inline`: inline completion latency and quality through a real LSP session.

Everything is measured from a client talking to `council lsp` over stdio, with the
specialist backend (the shipped model, or `--model-path`):

- **Typing replay.** Lines of a real Python file are removed and typed back one keystroke
  at a time (an editor's auto-indent inserts each new line's indentation with the newline).
  Each keystroke is an incremental `didChange` followed by an automatic `inlineCompletion`
  at the cursor; the latency is from sending the change to receiving the answer.
- **Server overhead.** The server reports per request the time its model call took
  (`council/inlineStats`); overhead is latency minus model time: JSON-RPC both ways and
  document sync (in this Python client too), context building, cache, post-processing and
  the hop to the inference thread. `handler_overhead` is the part inside the server's
  handler; `protocol_roundtrip` is a request that does nothing, for scale.
- **Cache hit rate.** Requests answered without the model (exact or typed-through hits);
  and for those that ran the model, the share of prompt tokens whose KV cache the specialist
  kept from the previous keystroke (the prompt window is built to keep it).
- **Unseen packages.** Single-line completion on whole installed packages kept out of the
  training corpus (`council.completion.unseen`, default `HELDOUT_PACKAGES`): the file is
  opened with one statement line reduced to its indentation, an automatic request is made
  after the indentation, and the answer's first line is scored against the original
  (exact match and edit similarity), with each request's latency. `council train eval`
  scores the same cases the same way, in process.

The typing replay types through one of those held-out files too. With `candidates > 1`,
`server.bench_candidates` also measures invoked requests with one candidate and with that
many, on the same cases.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path

STATS = "council/inlineStats"
_SKIP_DIRS = {"test", "tests", "idle_test", "encodings"}  # tests and generated codec tables


def _q(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    if len(values) == 1:
        values = values * 2
    q = statistics.quantiles(sorted(values), n=100, method="inclusive")
    return {
        "p50_ms": round(q[49], 2),
        "p95_ms": round(q[94], 2),
        "max_ms": round(max(values), 2),
    }


def _plain(value: Any) -> Any:
    """pygls hands custom-method results back as namedtuples; make them JSON-like."""
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def heldout_files(packages: list[str]) -> list[tuple[str, Path]]:
    """(package, file) for the held-out packages: the library files `council train data
    --source site-packages` would have trained on had they not been `--exclude`d."""
    from training.site_packages import package_files

    return list(package_files(packages))


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _keystrokes(segment: str) -> list[str]:
    """Characters to type; a newline comes with the next line's indentation (auto-indent)."""
    keys: list[str] = []
    lines = segment.split("\n")
    for number, line in enumerate(lines):
        body = line.lstrip(" \t")
        indent = line[: len(line) - len(body)]
        if number:
            keys.append("\n" + indent)
        elif indent:
            keys.append(indent)
        keys.extend(body)
    return keys


class _Session:
    def __init__(self, client: LanguageClient, root: Path) -> None:
        self.client = client
        self.root = root
        self.version = 0

    async def stats(self, since: int = 0) -> dict[str, Any]:
        return _plain(await self.client.protocol.send_request_async(STATS, {"since": since}))

    def open(self, uri: str, text: str) -> None:
        self.version = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=text
                )
            )
        )

    def replace(self, uri: str, text: str) -> None:
        self.version += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.version),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
            )
        )

    def insert(self, uri: str, at: types.Position, text: str) -> None:
        self.version += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.version),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=at, end=at), text=text
                    )
                ],
            )
        )

    async def complete(
        self, uri: str, at: types.Position
    ) -> types.InlineCompletionList | list[types.InlineCompletionItem] | None:
        return await self.client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=at,
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Automatic
                ),
            )
        )


def _first_text(result: Any) -> str:
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    return str(items[0].insert_text) if items else ""


async def _typing(
    session: _Session, path: Path, requests: int
) -> tuple[list[float], int, dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    # Start a third of the way in, at a non-blank line, and take enough lines to type.
    start = len(lines) // 3
    while start < len(lines) and not lines[start].strip():
        start += 1
    end, keys = start, []
    while end < len(lines) and len(keys) < requests:
        end += 1
        keys = _keystrokes("\n".join(lines[start:end]))
    head = "\n".join(lines[:start]) + "\n"
    tail = "\n" + "\n".join(lines[end:])
    uri = from_fs_path(str(session.root / f"typing_{path.name}")) or ""
    session.open(uri, head + tail)
    before = (await session.stats())["requests"]
    since = before[-1]["seq"] if before else 0
    line, current = start, ""  # the cursor's line and the text left of it
    latencies: list[float] = []
    for key in keys[:requests]:
        at = types.Position(line=line, character=_utf16(current))
        t0 = time.perf_counter()
        session.insert(uri, at, key)
        if key.startswith("\n"):
            line, current = line + 1, key[1:]
        else:
            current += key
        await session.complete(uri, types.Position(line=line, character=_utf16(current)))
        latencies.append((time.perf_counter() - t0) * 1000)
    stats = await session.stats(since)
    return latencies, end - start, stats


async def _unseen(session: _Session, cases: list[Any]) -> dict[str, Any]:
    """Single-line completion on held-out packages: each case's document is sent whole (as
    an editor does on open), then one automatic request after the line's indentation."""
    from council.completion.unseen import summarize

    results = []
    opened: set[str] = set()
    for case in cases:
        uri = from_fs_path(str(session.root / "unseen" / case.package / case.name)) or ""
        if uri in opened:
            session.replace(uri, case.text)
        else:
            session.open(uri, case.text)
            opened.add(uri)
        t0 = time.perf_counter()
        result = await session.complete(uri, types.Position(line=case.line, character=case.column))
        results.append((case, _first_text(result), (time.perf_counter() - t0) * 1000))
    return summarize(results)


async def _start(root: Path, env: dict[str, str]) -> tuple[LanguageClient, float]:
    client = LanguageClient("council-bench-inline", "1")
    started = time.perf_counter()
    await client.start_io(sys.executable, "-m", "slm_council", "lsp", env=env, cwd=str(root))
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                text_document=types.TextDocumentClientCapabilities(
                    inline_completion=types.InlineCompletionClientCapabilities()
                )
            ),
            root_uri=from_fs_path(str(root)),
        )
    )
    elapsed = time.perf_counter() - started
    client.initialized(types.InitializedParams())
    return client, elapsed


async def bench_inline(
    requests: int = 200,
    model_path: str = "",
    file: str | None = None,
    fim_cases: int = 100,
    ready_timeout: float = 300.0,
    packages: list[str] | None = None,
    seed: int = 0,
    candidates: int = 1,
) -> dict[str, Any]:
    from council.completion.unseen import HELDOUT_PACKAGES, build_cases

    names = list(packages or HELDOUT_PACKAGES)
    heldout = heldout_files(names)
    cases = build_cases(heldout, fim_cases, seed=seed) if fim_cases > 0 else []
    typing_file = Path(file) if file else _pick_typing_file([path for _, path in heldout])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "council.toml"
        model_line = f"model_path = {str(Path(model_path).resolve())!r}\n" if model_path else ""
        config.write_text(f'[completion]\nbackend = "specialist"\n{model_line}', encoding="utf-8")
        env = {**os.environ, "COUNCIL_CONFIG": str(config), "XDG_CACHE_HOME": str(root / "c")}
        client, init_s = await _start(root, env)
        session = _Session(client, root)
        try:
            t0 = time.perf_counter()
            while True:
                state = await session.stats()
                if state["ready"] or state["error"]:
                    break
                if time.perf_counter() - t0 > ready_timeout:
                    raise TimeoutError(f"the model was not ready after {ready_timeout:.0f}s")
                await asyncio.sleep(0.1)
            ready_s = time.perf_counter() - t0
            if state["error"]:
                raise RuntimeError(state["error"])
            baseline = []
            for _ in range(100):  # what any request/answer costs over this transport
                t1 = time.perf_counter()
                await session.stats(since=1 << 40)
                baseline.append((time.perf_counter() - t1) * 1000)
            latencies, lines_typed, stats = await _typing(session, typing_file, requests)
            unseen = await _unseen(session, cases) if cases else {}
            cost = None
            if candidates > 1 and cases:
                from server.bench_candidates import candidates_cost

                cost = await candidates_cost(client, root, cases, candidates, STATS)
        finally:
            await client.shutdown_async(None)
            client.exit(None)
            await client.stop()
    records = stats["requests"]
    model = [r["modelMs"] for r in records]
    overhead = [lat - m for lat, m in zip(latencies, model, strict=False)]
    handler_overhead = [r["handlerMs"] - r["modelMs"] for r in records]
    reasons: dict[str, int] = {}
    for r in records:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    cached = sum(reasons.get(k, 0) for k in ("cached", "typed-through"))
    ran = [r for r in records if r["promptTokens"]]
    prompt_tokens = sum(r["promptTokens"] for r in ran)
    reused = sum(r["reusedTokens"] for r in ran)
    latency = _q(latencies)
    over = _q(overhead)
    return {
        "benchmark": "inline",
        "backend": state["backend"],
        "model_path": model_path or "(shipped default)",
        "initialize_s": round(init_s, 3),
        "ready_after_initialized_s": round(ready_s, 2),
        "model_load_s": state.get("loadSeconds"),
        "typing": {
            "file": str(typing_file),
            "lines_typed": lines_typed,
            "requests": len(latencies),
            "latency": latency,
            "model_time": _q([m for m in model if m > 0]),
            "server_overhead": over,
            "handler_overhead": _q(handler_overhead),
            "protocol_roundtrip": _q(baseline),
            "cache_hit_rate": round(cached / len(records), 4) if records else None,
            "kv_reuse": {
                "model_calls": len(ran),
                "prompt_tokens_mean": round(prompt_tokens / len(ran), 1) if ran else None,
                "reused_share": round(reused / prompt_tokens, 4) if prompt_tokens else None,
            },
            "reasons": reasons,
            "suggestions_shown": sum(1 for r in records if r["chars"] > 0),
        },
        "unseen_packages": {"packages": names, "seed": seed, **unseen},
        "candidates": cost,
        "targets": {
            "p50_under_60ms": bool(latency and latency["p50_ms"] < 60),
            "unseen_exact_match_at_least_0.25": bool(
                unseen.get("exact_match") is not None and unseen["exact_match"] >= 0.25
            ),
            "unseen_p50_under_60ms": bool(
                unseen.get("latency") and unseen["latency"]["p50_ms"] < 60
            ),
            "overhead_p50_under_3ms": bool(over and over["p50_ms"] < 3),
        },
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }


def _pick_typing_file(heldout: list[Path]) -> Path:
    """A held-out file of a few hundred lines (deterministic)."""
    sized = []
    for path in heldout:
        try:
            count = path.read_text(encoding="utf-8").count("\n")
        except (OSError, UnicodeDecodeError):
            continue
        if 200 <= count <= 3000:
            sized.append(path)
    if not sized:
        raise RuntimeError("no held-out package file of 200-3000 lines; pass --file")
    return sorted(sized, key=lambda p: p.as_posix())[0]
