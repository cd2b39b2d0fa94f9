"""`council bench workspace`: single-line completion with and without workspace context, on
the same cases, with the same model, in the same run.

The cases are the unseen-package cases of `council.completion.unseen` (what `council bench
inline` and `council train eval --unseen` score). Each case's workspace is its package: the
package's other files are indexed as they are on disk, and the case's own file as the
editor would have it open (the line to fill reduced to its indentation), so the index
never holds the answer. Each case is then completed twice through the same `Completer` and
specialist the server uses: a pass over every case without the workspace lookup, then a
pass with it (the lookup's time counts in that request's latency), each with its own
answer cache, after a few unmeasured warm-up cases of both kinds (JAX compiles a shape on
first use). Consecutive cases are different files, so no request reuses the previous
one's KV cache in either pass.

Reported per arm: exact match, edit similarity, answered share and latency; and how many
prompts got workspace chunks and how many tokens they took.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from council.workspace.completion import CompletionContext
from council.workspace.index import Index, file_stamp

_WARM_UP = 8  # cases completed by both arms before the measured passes (JAX compiles)


def _locate(case: Any, files: list[Path]) -> Path | None:
    """The file a case was cut from (cases name files by base name only)."""
    for path in files:
        if path.name != case.name:
            continue
        lines = path.read_text(encoding="utf-8").split("\n")
        if case.line < len(lines):
            lines[case.line] = case.text.split("\n")[case.line]
            if "\n".join(lines) == case.text:
                return path
    return None


def _package_root(paths: list[Path]) -> Path:
    """The folder the package's paths are shown relative to (its site-packages)."""
    return Path(os.path.commonpath(paths)).parent


def bench_workspace(
    model_dir: str | Path,
    packages: Sequence[str],
    *,
    cases: int = 100,
    seed: int = 0,
    config: Any = None,
) -> dict[str, Any]:
    """The report (see the module docstring)."""
    from council.completion.backends import CancelToken, SpecialistBackend
    from council.completion.completer import Completer, InlineRequest
    from council.completion.unseen import build_cases, summarize
    from providers.settings import CompletionConfig
    from providers.specialist import Specialist
    from training.site_packages import package_files

    # the arm with context must get it, whatever `auto` would choose for this backend
    cfg = (config or CompletionConfig()).model_copy(update={"workspace_context": "on"})
    files = list(package_files(packages))
    chosen = build_cases(files, cases, seed=seed)
    by_package: dict[str, list[Path]] = defaultdict(list)
    for package, path in files:
        by_package[package].append(path)
    indexes: dict[str, tuple[Index, Path]] = {}
    build_s: dict[str, float] = {}
    for package, paths in by_package.items():
        root = _package_root(paths)
        started = time.perf_counter()
        index = Index()
        for path in paths:
            index.update(
                path.relative_to(root).as_posix(),
                path.read_text(encoding="utf-8"),
                stamp=file_stamp(path),
                absolute=path,
            )
        build_s[package] = round(time.perf_counter() - started, 3)
        indexes[package] = (index, root)

    context = cfg.max_context_tokens + cfg.max_tokens_multiline + 3
    backend = SpecialistBackend(Specialist(model_dir, max_context_tokens=context))
    without: list[tuple[Any, str, float]] = []
    with_ws: list[tuple[Any, str, float]] = []
    used_tokens: list[int] = []
    located = [(case, _locate(case, by_package[case.package])) for case in chosen]
    skipped = sum(source is None for _, source in located)
    located = [(c, s) for c, s in located if s is not None]

    async def arm(results: list[tuple[Any, str, float]] | None, workspace: bool) -> None:
        completer = Completer(cfg, backend)  # its own answer cache
        for case, source in located if results is not None else located[:_WARM_UP]:
            index, root = indexes[case.package]
            rel = source.relative_to(root).as_posix()
            related = None
            if workspace:
                index.update(rel, case.text)  # the open buffer: the answer is not in the index
                related = CompletionContext(index).related(rel)
            request = InlineRequest(
                text=case.text, offset=case.offset, invoked=False, related=related
            )
            started = time.perf_counter()
            answer = await completer.complete(request, CancelToken())
            elapsed = (time.perf_counter() - started) * 1000
            if results is not None:
                results.append((case, answer.text, elapsed))
                if related is not None:
                    used_tokens.append(_workspace_tokens(case, cfg, backend, related))
            if workspace:
                original = source.read_text(encoding="utf-8")
                index.update(rel, original, stamp=file_stamp(source), absolute=source)

    async def run() -> None:
        backend.start()
        await backend.loaded()
        if backend.error:
            raise RuntimeError(backend.error)
        await arm(None, False)  # compile the prompt sizes both arms use, unmeasured
        await arm(None, True)
        await arm(without, False)
        await arm(with_ws, True)
        await backend.aclose()

    asyncio.run(run())
    got = [t for t in used_tokens if t > 0]
    return {
        "packages": list(packages),
        "seed": seed,
        "model": str(model_dir),
        "snippet_tokens": cfg.snippet_tokens,
        "max_latency_ms": cfg.max_latency_ms,
        "max_context_tokens": cfg.max_context_tokens,
        "index_build_seconds": build_s,
        "cases_skipped": skipped,
        "without_workspace": summarize(without, examples=0),
        "with_workspace": summarize(with_ws, examples=0),
        "prompts_with_workspace_chunks": round(len(got) / max(1, len(used_tokens)), 4),
        "workspace_tokens_mean": round(sum(got) / len(got), 1) if got else 0,
        "changed_answers": sum(a[1] != b[1] for a, b in zip(without, with_ws, strict=True)),
        "warm_up_cases": _WARM_UP,
    }


def _workspace_tokens(case: Any, cfg: Any, backend: Any, related: Any) -> int:
    """Tokens the workspace chunks took in the case's prompt: the snippets with the lookup
    minus the snippets without it, the window cut as the completer cuts it."""
    from council.completion.context import build_window

    budget = backend.prompt_budget(
        cfg.max_context_tokens, max(cfg.max_tokens, cfg.max_tokens_multiline)
    )
    prefix, suffix = case.text[: case.offset], case.text[case.offset :]
    count = backend.count_tokens
    sizes = []
    for lookup in (None, related):
        window = build_window(
            prefix,
            suffix,
            budget=budget,
            count=count,
            snippet_budget=cfg.snippet_tokens,
            related=lookup,
        )
        sizes.append(count(window.snippets) if window.snippets else 0)
    return max(0, sizes[1] - sizes[0])
