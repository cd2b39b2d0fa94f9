"""`council bench <benchmark>`: one module per benchmark, each its own subparser with only
its own flags (a flat parser made every benchmark accept every other one's flags).

Benchmarks are commands, not timed tests: each prints one JSON report on stdout.
"""

from __future__ import annotations

import argparse

from slm_council.commands.bench import (
    council,
    humaneval,
    inline,
    router,
    server,
    train,
    workspace,
)

#: In the order `council bench --help` lists them.
BENCHMARKS = (router, council, server, train, inline, workspace, humaneval)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council bench` and one subparser per benchmark."""
    p = sub.add_parser("bench", help="benchmarks that print JSON")
    bench = p.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for module in BENCHMARKS:
        module.register(bench)
