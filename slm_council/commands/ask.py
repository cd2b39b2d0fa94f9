"""`council ask`: one prompt to one role through the router, streamed; the quickest way to
see which tier answers and what it cost."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slm_council.commands.common import load


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council ask` and its flags."""
    p = sub.add_parser("ask", help="send one prompt to a role through the router (streams)")
    p.add_argument("prompt", nargs="+")
    p.add_argument("--role", default="generator")
    p.add_argument("--max-tokens", type=int, default=512)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Stream the answer to stdout and one usage line per model call to stderr."""
    import anyio

    return anyio.run(_ask, args)


async def _ask(args: argparse.Namespace) -> int:
    from providers.base import ChatRequest
    from providers.errors import ProviderError
    from providers.registry import build_providers, close_all
    from providers.router import Router

    settings = load(args).settings
    providers = build_providers(settings)
    router = Router(settings, providers, workspace=Path.cwd())
    ledger = router.new_ledger()
    request = ChatRequest.of(" ".join(args.prompt), max_tokens=args.max_tokens)
    try:
        async for delta in router.stream_chat(args.role, request, ledger=ledger):
            sys.stdout.write(delta.text)
            sys.stdout.flush()
    except ProviderError as exc:
        print(f"\ncouncil: {exc}", file=sys.stderr)
        return 1
    finally:
        await close_all(providers)
    print()
    for record in ledger.records:
        tokens = f"{record.prompt_tokens}+{record.completion_tokens} tokens"
        if record.estimated_usage:  # the server reported none (llama.cpp streams, e.g.)
            tokens = f"~{tokens} (estimated: the server reported no usage)"
        print(
            f"[{record.role}] {record.provider}:{record.model} tier {record.tier} "
            f"{record.outcome} {tokens} ${record.cost_usd:.5f} {record.latency_s * 1000:.0f} ms",
            file=sys.stderr,
        )
    return 0
