"""`council bench server`: `council lsp` cold starts against a bare pygls server, and code
actions while runs are in flight."""

from __future__ import annotations

import argparse

from slm_council.commands.bench.report import emit


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council bench server` and its flags."""
    p = sub.add_parser("server", help="language server cold start and latency under load")
    p.add_argument("--starts", type=int, default=20, help="cold starts to time")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Time the starts (interleaved with the bare server) and print the report."""
    import anyio

    from server.bench import bench_server  # the entry point may reach the server

    return emit(anyio.run(bench_server, args.starts))
