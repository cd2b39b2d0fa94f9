"""The `council` command: the project's user interface in the terminal.

Subcommands grow with each capability. This module only parses arguments, sets up logging and
formats output; the work happens in the packages it calls. Heavy packages are imported inside
the subcommand that needs them, so `council --help` stays fast.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from providers.errors import ProviderError
from providers.secrets import RedactingFilter

if TYPE_CHECKING:
    from providers.loading import LoadedSettings

log = logging.getLogger("council")


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _load(args: argparse.Namespace) -> LoadedSettings:
    from providers.loading import load_settings  # pydantic: `council lsp` loads it later

    workspace = Path(args.workspace).resolve() if args.workspace else Path.cwd()
    loaded = load_settings(workspace)
    for problem in loaded.problems:
        print(f"council: config: {problem}", file=sys.stderr)
    return loaded


# -- council providers -------------------------------------------------------------------


async def _providers(args: argparse.Namespace) -> int:
    from providers.health import HealthTracker
    from providers.probe import ProbeCache, default_cache_path, format_table, probe_all
    from providers.registry import build_providers, close_all

    settings = _load(args).settings
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


# -- council config ----------------------------------------------------------------------


def _config(args: argparse.Namespace) -> int:
    loaded = _load(args)
    data = {
        "sources": list(loaded.sources),
        "problems": [str(p) for p in loaded.problems],
        "settings": loaded.settings.model_dump(mode="json"),
    }
    print(json.dumps(data, indent=2))
    return 1 if (args.strict and loaded.problems) else 0


# -- council ask -------------------------------------------------------------------------


async def _ask(args: argparse.Namespace) -> int:
    from providers.base import ChatRequest
    from providers.errors import ProviderError
    from providers.registry import build_providers, close_all
    from providers.router import Router

    settings = _load(args).settings
    providers = build_providers(settings)
    router = Router(settings, providers, workspace=Path.cwd())
    run = router.new_run()
    request = ChatRequest.of(" ".join(args.prompt), max_tokens=args.max_tokens)
    try:
        async for delta in router.stream_chat(args.role, request, run=run):
            sys.stdout.write(delta.text)
            sys.stdout.flush()
    except ProviderError as exc:
        print(f"\ncouncil: {exc}", file=sys.stderr)
        return 1
    finally:
        await close_all(providers)
    print()
    for record in run.records:
        tokens = f"{record.prompt_tokens}+{record.completion_tokens} tokens"
        if record.estimated_usage:  # the server reported none (llama.cpp streams, e.g.)
            tokens = f"~{tokens} (estimated: the server reported no usage)"
        print(
            f"[{record.role}] {record.provider}:{record.model} tier {record.tier} "
            f"{record.outcome} {tokens} ${record.cost_usd:.5f} {record.latency_s * 1000:.0f} ms",
            file=sys.stderr,
        )
    return 0


# -- council lsp ---------------------------------------------------------------------------


def _lsp(args: argparse.Namespace) -> int:
    # What is imported and built here lives as long as the server, so the garbage collector
    # has nothing to free while pygls and lsprotocol load; its passes over their ~50,000 new
    # objects cost 20-30 ms of the editor's wait for `initialize`. Collection resumes as
    # soon as the server is built.
    gc.disable()
    try:
        # The one upward import: the entry point starts the server; nothing else imports it.
        from server.app import build_server

        server = build_server()
    finally:
        gc.enable()
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        server.start_tcp(host or "127.0.0.1", int(port))
    else:
        server.start_io()
    return 0


# -- council run / deliberate -------------------------------------------------------------


async def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from council.events import Events
    from council.pipeline import Council
    from council.render import ProgressPrinter, print_result
    from council.schemas import CouncilRequest, RequestContext
    from providers.registry import build_providers, close_all
    from providers.router import Router

    workspace = Path(args.workspace).resolve() if args.workspace else Path.cwd()
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
            resolved.relative_to(workspace).as_posix()
            if resolved.is_relative_to(workspace)
            else file.name
        )
    if args.mode in ("debug", "tests") and not context.file_text:
        print(f"council: --mode {args.mode} needs --file", file=sys.stderr)
        return 2
    request = CouncilRequest(query=" ".join(args.query), mode=args.mode, context=context)
    settings = _load(args).settings
    providers = build_providers(settings)
    router = Router(settings, providers, workspace=workspace)
    err = Console(stderr=True)
    events = Events()
    printer = ProgressPrinter(err)
    events.subscribe(printer)
    try:
        result = await Council(router, workspace=workspace).run(request, events=events)
    finally:
        printer.stop()
        await close_all(providers)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print_result(Console(), result)
    return 0 if result.status in ("approved", "best_effort") else 1


async def _deliberate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from council.consensus import deliberate
    from council.events import Events
    from council.render import ProgressPrinter, print_deliberation
    from providers.registry import build_providers, close_all
    from providers.router import Router
    from providers.settings import Tier

    settings = _load(args).settings
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


# -- council complete ----------------------------------------------------------------------


async def _complete(args: argparse.Namespace) -> int:
    from council.completion.terminal import LocationError, complete_at, parse_location

    loaded = _load(args)
    workspace = Path(args.workspace).resolve() if args.workspace else Path.cwd()
    try:
        location = parse_location(args.location)
        outcome = await complete_at(
            loaded.settings, location, invoked=args.invoked, workspace=workspace
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


# -- council bench -----------------------------------------------------------------------


def _bench(args: argparse.Namespace) -> int:
    import anyio

    if args.bench == "router":
        from providers.bench import bench_router

        report = anyio.run(bench_router, args.calls, args.warmup)
        print(json.dumps(report, indent=2))
        return 0
    if args.bench == "council":
        from council.bench import bench_council

        report = anyio.run(bench_council, args.runs)
        print(json.dumps(report, indent=2))
        return 0
    if args.bench == "server":
        from server.bench import bench_server  # the entry point may reach the server

        report = anyio.run(bench_server, args.starts)
        print(json.dumps(report, indent=2))
        return 0
    if args.bench == "inline":
        from server.bench_inline import bench_inline

        report = anyio.run(
            lambda: bench_inline(
                requests=args.requests,
                model_path=args.model_path,
                file=args.file,
                fim_cases=args.fim_cases,
                packages=[p for p in (args.packages or "").split(",") if p.strip()] or None,
            )
        )
        print(json.dumps(report, indent=2))
        return 0
    if args.bench == "humaneval":
        from council.bench_humaneval import bench_from_args

        settings = None if args.simulate else _load(args).settings
        try:
            report = anyio.run(bench_from_args, args, settings)
        except ValueError as exc:  # a bad --problems or --simulate
            print(f"council: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(report, indent=2))
        return 0
    if args.bench == "train":
        from training.bench import bench_train  # imports jax

        report = bench_train(
            preset=args.preset,
            steps=args.steps,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            baseline=args.baseline,
            ablation=args.ablation,
        )
        print(json.dumps(report, indent=2))
        return 0
    raise SystemExit(f"unknown benchmark {args.bench!r}")


# -- entry point -------------------------------------------------------------------------


def build_parser(*, train: bool = True) -> argparse.ArgumentParser:
    """The whole command line; `train=False` leaves out `council train`, whose parsers import
    seven modules (see `main`)."""
    parser = argparse.ArgumentParser(
        prog="council",
        description="SLM Coding Council: a council of small language models for your editor.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument(
        "--workspace", help="workspace folder whose council.toml applies (default: cwd)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("providers", help="probe every configured provider/model and show a table")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--refresh", action="store_true", help="re-probe cached capabilities")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")

    p = sub.add_parser("config", help="print the effective settings, their sources and problems")
    p.add_argument("--strict", action="store_true", help="exit 1 when there are problems")

    p = sub.add_parser("ask", help="send one prompt to a role through the router (streams)")
    p.add_argument("prompt", nargs="+")
    p.add_argument("--role", default="generator")
    p.add_argument("--max-tokens", type=int, default=512)

    p = sub.add_parser("lsp", help="run the language server (stdio by default)")
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead, for debugging")
    # vscode-languageclient (TransportKind.stdio) and other clients append --stdio: accepted,
    # stdio is the default anyway
    p.add_argument("--stdio", action="store_true", help="use stdio (the default)")

    p = sub.add_parser("run", help="run the council pipeline on a request")
    p.add_argument("query", nargs="+")
    p.add_argument("--mode", choices=["generate", "debug", "tests", "freeform"], default="freeform")
    p.add_argument("--file", help="the file the request is about")
    p.add_argument("--symbol", help="function/class in --file (e.g. parse or Parser.parse)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")

    p = sub.add_parser("deliberate", help="consensus mode: members answer, rank, chairman sums up")
    p.add_argument("query", nargs="+")
    p.add_argument("--member", action="append", default=[], help="provider:model (repeatable)")
    p.add_argument("--json", action="store_true")

    sub.add_parser("demo", help="a self-contained tour of what works so far (no model needed)")

    p = sub.add_parser(
        "sandbox",
        help="show which OS layers contain generated code on this machine",
        description="Probe the sandbox's layers (bubblewrap namespaces, cgroups, rlimits, ...) "
        "and print what each stops and what happens without it. Exit status 1 when a layer "
        "is missing.",
    )
    p.add_argument("--check", action="store_true", help="probe and print the layers (default)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser(
        "complete",
        help="print the inline completion at FILE:LINE:COL (1-based, as compilers print it)",
        description="Complete at a place in a file with the language server's engine and "
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

    if train:
        from training.commands import add_train_parser  # light: no jax until a command runs

        add_train_parser(sub)

    p = sub.add_parser("bench", help="benchmarks that print JSON")
    p.add_argument("bench", choices=["router", "council", "server", "train", "inline", "humaneval"])
    p.add_argument("--starts", type=int, default=20, help="server: cold starts to time")
    p.add_argument("--calls", type=int, default=1000, help="router: calls to time")
    p.add_argument("--runs", type=int, default=100, help="council: pipeline runs to time")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--preset", default="test", help="train: model preset to time")
    p.add_argument("--steps", type=int, default=10, help="train: timed optimizer steps")
    p.add_argument("--batch-size", type=int, default=8, help="train: sequences per step")
    p.add_argument("--seq-len", type=int, default=0, help="train: context (0 = preset's)")
    p.add_argument(
        "--baseline", action="store_true", help="train: also time the legacy numerics path"
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="train: also time the step with each optimisation undone, one at a time",
    )
    p.add_argument("--requests", type=int, default=200, help="inline: keystrokes to replay")
    p.add_argument("--model-path", default="", help="inline: model dir (default: the shipped one)")
    p.add_argument(
        "--file", help="inline: Python file to type through (default: one of the held-out packages)"
    )
    p.add_argument(
        "--packages",
        help="inline: comma-separated installed packages to score on (default: "
        "council.completion.unseen.HELDOUT_PACKAGES)",
    )
    p.add_argument("--fim-cases", type=int, default=100, help="inline: blanked lines to fill")
    p.add_argument("--limit", type=int, help="humaneval: the first N problems (default: all)")
    p.add_argument(
        "--problems", help="humaneval: comma-separated ids, e.g. HumanEval/0,HumanEval/5"
    )
    p.add_argument("--candidates-per-pass", type=int, help="humaneval: council.candidates_per_pass")
    p.add_argument("--max-passes", type=int, help="humaneval: council.max_refinement_passes")
    p.add_argument("--jobs", type=int, default=1, help="humaneval: problems run concurrently")
    p.add_argument(
        "--simulate",
        metavar="KEY=VALUE,...",
        help="humaneval: every role played by the simulated team on 127.0.0.1, e.g. "
        "generator=0.5,tester=0.85,seed=0 (see council/simteam.py)",
    )
    p.add_argument(
        "--per-problem", action="store_true", help="humaneval: include the per-problem rows"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # An editor that starts `council lsp` waits for `initialize`: skip the training parsers
    # when the command line cannot be `council train` (and asks for no --help).
    lsp = "lsp" in argv and "train" not in argv and not {"-h", "--help"} & set(argv)
    args = build_parser(train=not lsp).parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.command == "lsp":  # first, and before anyio: the editor waits for `initialize`
            return _lsp(args)
        import anyio

        if args.command == "providers":
            return anyio.run(_providers, args)
        if args.command == "config":
            return _config(args)
        if args.command == "ask":
            return anyio.run(_ask, args)
        if args.command == "run":
            return anyio.run(_run, args)
        if args.command == "deliberate":
            return anyio.run(_deliberate, args)
        if args.command == "complete":
            return anyio.run(_complete, args)
        if args.command == "demo":
            from council.demo import run_demo

            return anyio.run(run_demo)
        if args.command == "sandbox":
            from council.sandbox.layers import print_layers

            return print_layers(as_json=args.json)
        if args.command == "bench":
            return _bench(args)
        if args.command == "train":
            from training.commands import run_train

            return run_train(args)
    except KeyboardInterrupt:
        print("council: cancelled", file=sys.stderr)
        return 130
    except ProviderError as exc:  # already redacted and readable; no traceback for users
        print(f"council: {exc}", file=sys.stderr)
        return 1
    raise SystemExit(f"unknown command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
