"""`council demo`: a tour that needs no model, so a fresh clone can see the product work."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council demo` (no flags)."""
    p = sub.add_parser("demo", help="a self-contained tour of what works so far (no model needed)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the tour against loopback providers on 127.0.0.1."""
    import anyio

    from council.demo import run_demo

    return anyio.run(run_demo)
