"""`council bench council`: whole pipeline runs against scripted loopback models, so the
pipeline's own cost (and the overlap of the parallel review) is measured without a model."""

from __future__ import annotations

import argparse

from slm_council.commands.bench.report import emit


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council bench council` and its flags."""
    p = sub.add_parser("council", help="pipeline runs against scripted loopback models")
    p.add_argument("--runs", type=int, default=100, help="pipeline runs to time")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the pipeline ``--runs`` times and print the report."""
    import anyio

    from council.bench import bench_council

    return emit(anyio.run(bench_council, args.runs))
