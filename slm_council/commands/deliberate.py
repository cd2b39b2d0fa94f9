"""`council deliberate`: consensus mode from the terminal (members answer, rank each other
anonymously, a chairman sums up); disagreement is printed, not hidden."""

from __future__ import annotations

import argparse
from pathlib import Path

from slm_council.commands.common import load


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council deliberate` and its flags."""
    p = sub.add_parser("deliberate", help="consensus mode: members answer, rank, chairman sums up")
    p.add_argument("query", nargs="+")
    p.add_argument("--member", action="append", default=[], help="provider:model (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Deliberate; exit status 1 only when no answer came out at all."""
    import anyio

    return anyio.run(_deliberate, args)


async def _deliberate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from council.consensus import deliberate
    from council.events import Events
    from council.render import ProgressPrinter, print_deliberation
    from providers.registry import build_providers, close_all
    from providers.router import Router
    from providers.settings import Tier

    settings = load(args).settings
    providers = build_providers(settings)
    router = Router(settings, providers, workspace=Path.cwd())
    members = [Tier(target=m) for m in args.member] or None
    events = Events()
    printer = ProgressPrinter(Console(stderr=True))
    events.subscribe(printer)
    try:
        result = await deliberate(router, " ".join(args.query), members=members, events=events)
    finally:
        printer.stop()
        await close_all(providers)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print_deliberation(Console(), result)
    return 0 if result.status != "failed" else 1
