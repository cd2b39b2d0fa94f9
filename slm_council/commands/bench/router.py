"""`council bench router`: the router's own overhead per call, against a bare httpx2 floor."""

from __future__ import annotations

import argparse

from slm_council.commands.bench.report import emit


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council bench router` and its flags."""
    p = sub.add_parser("router", help="router + client overhead per call vs bare httpx2")
    p.add_argument("--calls", type=int, default=1000, help="calls to time")
    p.add_argument("--warmup", type=int, default=50, help="untimed calls first")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Time the calls against a loopback server and print the report."""
    import anyio

    from providers.bench import bench_router

    return emit(anyio.run(bench_router, args.calls, args.warmup))
