"""`council providers`: probe every configured provider/model and show what it supports."""

from __future__ import annotations

import argparse
import json

from slm_council.commands.common import load


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council providers` and its flags."""
    p = sub.add_parser("providers", help="probe every configured provider/model and show a table")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--refresh", action="store_true", help="re-probe cached capabilities")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the probe; unreachable providers are rows in the table, not failures."""
    import anyio

    return anyio.run(_providers, args)


async def _providers(args: argparse.Namespace) -> int:
    from providers.health import HealthTracker
    from providers.probe import ProbeCache, default_cache_path, format_table, probe_all
    from providers.registry import build_providers, close_all

    settings = load(args).settings
    providers = build_providers(settings)
    cfg = settings.router
    health = HealthTracker(
        failures=cfg.cooldown_failures,
        window_secs=cfg.cooldown_window_secs,
        cooldown_secs=cfg.cooldown_secs,
    )
    cache = ProbeCache(
        None if args.no_cache else default_cache_path(), settings.router.probe_cache_ttl_secs
    )
    try:
        rows = await probe_all(
            settings, providers, cache=cache, refresh=args.refresh, health=health
        )
    finally:
        await close_all(providers)
    if args.json:
        print(json.dumps([r.model_dump() for r in rows], indent=2))
    else:
        print(format_table(rows))
        if any(not r.reachable for r in rows):
            print(
                "\nUnreachable providers are skipped by the router; start the server or fix "
                "base_url in council.toml (see README 'Providers').",
            )
    return 0
