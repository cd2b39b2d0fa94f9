"""`council run`: the council pipeline on one request, with live progress on stderr.

Exit status 0 means the council produced code it stands behind (approved, or best effort
after the last refinement pass); 1 means it failed, 2 a bad command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slm_council.commands.common import load, workspace


def register(sub: argparse._SubParsersAction) -> None:
    """Add `council run` and its flags."""
    p = sub.add_parser("run", help="run the council pipeline on a request")
    p.add_argument("query", nargs="+")
    p.add_argument("--mode", choices=["generate", "debug", "tests", "freeform"], default="freeform")
    p.add_argument("--file", help="the file the request is about")
    p.add_argument("--symbol", help="function/class in --file (e.g. parse or Parser.parse)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the pipeline; Ctrl-C cancels the whole run (sandbox included) via anyio."""
    import anyio

    return anyio.run(_run, args)


async def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from council.events import Events
    from council.pipeline import Council
    from council.render import ProgressPrinter, print_result
    from council.schemas import CouncilRequest, RequestContext
    from providers.registry import build_providers, close_all
    from providers.router import Router

    root = workspace(args)
    context = RequestContext(symbol=args.symbol)
    if args.file:
        file = Path(args.file)
        try:
            context.file_text = file.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"council: cannot read {file}: {exc.strerror}", file=sys.stderr)
            return 2
        resolved = file.resolve()
        context.file_path = (
            resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else file.name
        )
    if args.mode in ("debug", "tests") and not context.file_text:
        print(f"council: --mode {args.mode} needs --file", file=sys.stderr)
        return 2
    request = CouncilRequest(query=" ".join(args.query), mode=args.mode, context=context)
    settings = load(args).settings
    if context.file_text and settings.workspace.index:  # the editor's workspace context, once
        from council.workspace.council_context import one_shot

        request.context.workspace_snippets = one_shot(
            root,
            settings.workspace,
            path=context.file_path,
            text=context.file_text,
            symbol=args.symbol,
        )
    providers = build_providers(settings)
    router = Router(settings, providers, workspace=root)
    err = Console(stderr=True)
    events = Events()
    printer = ProgressPrinter(err)
    events.subscribe(printer)
    try:
        result = await Council(router, workspace=root).run(request, events=events)
    finally:
        printer.stop()
        await close_all(providers)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print_result(Console(), result)
    return 0 if result.status in ("approved", "best_effort") else 1
