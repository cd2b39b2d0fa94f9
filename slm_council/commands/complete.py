"""`council complete FILE:LINE:COL`: the language server's inline completer from the
terminal, with the same settings, so a completion can be checked without an editor."""

from __future__ import annotations

import argparse
import json
import sys

from slm_council.commands.common import load, workspace


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council complete` and its flags."""
    p = sub.add_parser(
        "complete",
        help="print the inline completion at FILE:LINE:COL (1-based, as compilers print it)",
        description="Complete at a place in a file with the language server's completer and "
        "settings ([completion]). LINE and COL are 1-based; COL counts characters and may be "
        "the line's length + 1 (its end). Example: council complete app.py:12:5",
    )
    p.add_argument("location", metavar="FILE:LINE:COL")
    p.add_argument(
        "--invoked",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="complete as an explicit request (multi-line allowed); --no-invoked behaves as "
        "an automatic request while typing",
    )
    p.add_argument("--json", action="store_true", help="text, backend, reason and timings")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Complete; exit 1 when no backend could answer, 2 for a bad location."""
    import anyio

    return anyio.run(_complete, args)


async def _complete(args: argparse.Namespace) -> int:
    from council.completion.terminal import LocationError, complete_at, parse_location

    loaded = load(args)
    try:
        location = parse_location(args.location)
        outcome = await complete_at(
            loaded.settings, location, invoked=args.invoked, workspace=workspace(args)
        )
    except LocationError as exc:
        print(f"council: {exc}", file=sys.stderr)
        return 2
    answer = outcome.answer
    if args.json:
        report = {
            "text": answer.text,
            "backend": answer.backend,
            "reason": answer.reason,
            "mode": answer.mode,
            "via": answer.via,
            "finish_reason": answer.finish_reason,
            "error": answer.error,
            "raw": answer.details.get("raw"),
            "timings_ms": {
                "load": round(outcome.load_ms, 1),
                "model": round(answer.model_ms, 1),
                "total": round(answer.total_ms, 1),
            },
        }
        print(json.dumps(report, indent=2))
    elif answer.text:
        print(answer.text)
    else:
        detail = f": {answer.error}" if answer.error else ""
        print(f"council: no completion ({answer.reason}{detail})", file=sys.stderr)
    return 1 if answer.reason in ("unavailable", "error", "timeout") else 0
