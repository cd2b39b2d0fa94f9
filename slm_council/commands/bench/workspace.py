"""`council bench workspace` (completion quality with and without workspace context, same
cases and model) and `council bench index` (the workspace index's build time, memory and
query latency on this tree and on a synthetic 5,000-file workspace)."""

from __future__ import annotations

import argparse
from pathlib import Path

from slm_council.commands.bench.report import emit


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council bench workspace` and `council bench index`."""
    p = sub.add_parser(
        "workspace", help="inline exact match with and without workspace context (same run)"
    )
    p.add_argument("--model-path", default="", help="model dir (default: the shipped one)")
    p.add_argument(
        "--packages",
        help="comma-separated installed packages to score on (default: "
        "council.completion.unseen.HELDOUT_PACKAGES)",
    )
    p.add_argument("--cases", type=int, default=100, help="blanked lines to fill")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--snippet-tokens",
        type=int,
        help="completion.snippet_tokens for both arms (default: the setting's default)",
    )
    p.add_argument(
        "--max-latency-ms",
        type=int,
        default=2_000,
        help="completion.max_latency_ms for both arms (default 2000, not the setting's 250, so "
        "that what is scored does not depend on how busy the machine is)",
    )
    p.set_defaults(handler=handle_workspace)

    p = sub.add_parser("index", help="workspace index: build time, memory, query latency")
    p.add_argument(
        "--root", default=".", help="the real tree to index (default: the current directory)"
    )
    p.add_argument(
        "--synthetic-files",
        type=int,
        default=5_000,
        help="size of the generated workspace (0: none)",
    )
    p.add_argument("--queries", type=int, default=300, help="queries timed per workspace")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-memory", action="store_true", help="skip the tracemalloc build (halves the time)"
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="also run bm25s and rank-bm25 (when installed) on the synthetic workspace",
    )
    p.set_defaults(handler=handle_index)


def handle_workspace(args: argparse.Namespace) -> int:
    from council.completion.unseen import HELDOUT_PACKAGES
    from council.workspace.bench_context import bench_workspace
    from providers.settings import CompletionConfig
    from providers.specialist import DEFAULT_MODEL_DIR

    packages = [p for p in (args.packages or "").split(",") if p.strip()] or list(HELDOUT_PACKAGES)
    config = CompletionConfig(max_latency_ms=args.max_latency_ms)
    if args.snippet_tokens is not None:
        config = config.model_copy(update={"snippet_tokens": args.snippet_tokens})
    model = Path(args.model_path).expanduser() if args.model_path else DEFAULT_MODEL_DIR
    return emit(bench_workspace(model, packages, cases=args.cases, seed=args.seed, config=config))


def handle_index(args: argparse.Namespace) -> int:
    from council.workspace.bench_index import bench_index

    return emit(
        bench_index(
            root=Path(args.root).resolve() if args.root else None,
            synthetic_files=args.synthetic_files,
            queries=args.queries,
            seed=args.seed,
            memory=not args.no_memory,
            with_compare=args.compare,
        )
    )
