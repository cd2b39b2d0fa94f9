"""`council bench inline`: inline completion latency while typing through a real file, and
single-line FIM exact match, through the real server."""

from __future__ import annotations

import argparse

from slm_council.commands.bench.report import emit


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council bench inline` and its flags."""
    p = sub.add_parser("inline", help="inline completion latency and FIM exact match")
    p.add_argument("--requests", type=int, default=200, help="keystrokes to replay")
    p.add_argument("--model-path", default="", help="model dir (default: the shipped one)")
    p.add_argument(
        "--file", help="Python file to type through (default: one of the held-out packages)"
    )
    p.add_argument(
        "--packages",
        help="comma-separated installed packages to score on (default: "
        "council.completion.unseen.HELDOUT_PACKAGES)",
    )
    p.add_argument("--fim-cases", type=int, default=100, help="blanked lines to fill")
    p.add_argument(
        "--candidates",
        type=int,
        default=1,
        choices=range(1, 6),
        metavar="N",
        help="also time invoked requests on the same blanked lines with 1 and with N "
        "candidates (completion.candidates, 2..5)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Replay the keystrokes, fill the blanks and print the report."""
    import anyio

    from server.bench_inline import bench_inline

    packages = [p for p in (args.packages or "").split(",") if p.strip()] or None
    return emit(
        anyio.run(
            lambda: bench_inline(
                requests=args.requests,
                model_path=args.model_path,
                file=args.file,
                fim_cases=args.fim_cases,
                packages=packages,
                candidates=args.candidates,
            )
        )
    )
