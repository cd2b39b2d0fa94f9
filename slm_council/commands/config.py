"""`council config`: the effective settings, where each came from, and what was wrong."""

from __future__ import annotations

import argparse
import json

from slm_council.commands.common import load


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council config` and its flags."""
    p = sub.add_parser("config", help="print the effective settings, their sources and problems")
    p.add_argument("--strict", action="store_true", help="exit 1 when there are problems")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the settings as JSON; `--strict` turns config problems into exit status 1 (CI)."""
    loaded = load(args)
    data = {
        "sources": list(loaded.sources),
        "problems": [str(p) for p in loaded.problems],
        "settings": loaded.settings.model_dump(mode="json"),
    }
    print(json.dumps(data, indent=2))
    return 1 if (args.strict and loaded.problems) else 0
