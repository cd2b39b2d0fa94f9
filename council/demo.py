"""`council demo` (what `make demo` runs): the main job as it exists so far, end to end.

It needs no model and no network: a scripted loopback server stands in for a local model
server and another for a cloud API, and the demo says so. What it shows is real: the
configuration loader, the capability probe and `council providers` table, the router
retrying a dead endpoint, escalating to the next tier, recording usage and cost, and the
local-only policy refusing a cloud provider.
"""

from __future__ import annotations

import json
import socket
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from providers.base import ChatRequest
from providers.errors import ProviderError
from providers.loading import load_settings
from providers.loopback import LoopbackProvider, Reply
from providers.probe import ProbeCache, format_table, probe_all
from providers.registry import build_providers, close_all
from providers.router import Router


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _say(title: str) -> None:
    print(f"\n== {title}")


async def run_demo() -> int:
    from council.demo_lsp import lsp_demo

    status = await lsp_demo()
    print("\n\n#### The tour: providers, the router and a full council pass (scripted models)")
    tour = await _tour()
    return status or tour


async def _tour() -> int:
    with (
        LoopbackProvider(models=("qwen2.5-coder:7b",)) as local_stand_in,
        LoopbackProvider(models=("gpt-4.1-mini",), supports_suffix=False) as cloud_stand_in,
        tempfile.TemporaryDirectory(prefix="council-demo-") as tmp,
    ):
        dead = _free_port()
        config = textwrap.dedent(
            f"""\
            # A dead endpoint, a local stand-in and a "cloud" stand-in.
            [providers.offline]
            base_url = "http://127.0.0.1:{dead}/v1"   # nothing listens here
            local = true
            [providers.local]
            base_url = "{local_stand_in.base_url}"
            [providers.cloud]
            base_url = "{cloud_stand_in.base_url}"
            local = false
            price = {{ input_per_mtok = 0.40, output_per_mtok = 1.60 }}

            [roles]
            orchestrator = ["cloud:gpt-4.1-mini"]
            researcher   = ["local:qwen2.5-coder:7b"]
            generator    = ["offline:qwen2.5-coder:7b", "local:qwen2.5-coder:7b"]
            debugger     = ["local:qwen2.5-coder:7b"]
            tester       = ["local:qwen2.5-coder:7b"]

            [router]
            max_retries = 1
            backoff_base_secs = 0.05
            """
        )
        workspace = Path(tmp)
        (workspace / "council.toml").write_text(config, encoding="utf-8")
        print("SLM Coding Council demo: providers and the router.")
        print(
            "Two scripted loopback servers stand in for model servers (their answers are canned);"
            "\nthe configuration, probing, routing, retries, escalation, accounting and policy"
            " are the real code."
        )
        _say(f"workspace council.toml ({workspace / 'council.toml'})")
        print(config.rstrip())

        loaded = load_settings(workspace, env={}, home=workspace / "no-home")
        for problem in loaded.problems:
            print(f"config problem: {problem}")
        settings = loaded.settings
        providers = build_providers(settings, env={})
        router = Router(settings, providers, workspace=workspace)
        try:
            _say("council providers")
            rows = await probe_all(
                settings, providers, cache=ProbeCache(None, 0), health=router.health
            )
            print(format_table(rows))

            _say("role 'generator': tier 1 is offline, tier 2 answers")
            ledger = router.new_ledger()
            try:
                routed = await router.chat(
                    "generator",
                    ChatRequest.of("Write binary search over a sorted list."),
                    ledger=ledger,
                )
            except ProviderError as exc:
                print(f"  failed: {exc}")
                return 1
            for attempt in routed.attempts:
                print(f"  tried  {attempt}")
            print(f"  answer {routed.result.provider}:{routed.result.model}: {routed.result.text}")

            _say("role 'orchestrator' on the priced cloud stand-in")
            await router.chat("orchestrator", ChatRequest.of("Plan the change."), ledger=ledger)
            for r in ledger.records:
                print(
                    f"  {r.role:<12} {r.provider + ':' + r.model:<26} {r.outcome:<24} "
                    f"{r.prompt_tokens:>3}+{r.completion_tokens:<3} tokens  ${r.cost_usd:.6f}"
                    f"  {r.latency_s * 1000:7.1f} ms"
                )
            print(f"  run total: ${ledger.spent_usd:.6f}, {ledger.spent_tokens} tokens")

            _say("local_only = true refuses the cloud provider")
            strict = settings.model_copy(
                update={"council": settings.council.model_copy(update={"local_only": True})}
            )
            try:
                await Router(strict, providers).chat("orchestrator", ChatRequest.of("Plan."))
            except ProviderError as exc:
                print(f"  refused: {exc}")
            print(f"  requests the cloud stand-in saw in total: {len(cloud_stand_in.requests)}")
        finally:
            await close_all(providers)
    await pipeline_demo()
    await offline_demo()
    print("\nNext: copy examples/config/ollama.toml to council.toml and run `council providers`,")
    print('then `council run "..." --mode generate --file F --symbol NAME`.')
    return 0


def _json(**data: object) -> Reply:
    return Reply(content=json.dumps(data))


async def pipeline_demo() -> None:
    """A full council run whose first pass fails its executed tests and whose second passes.

    The models' answers are scripted (a stand-in server); the pipeline, the parallel review,
    the sandboxed pytest run, the approval check and the refine loop are the real code.
    """

    from council.schemas import CouncilRequest, RequestContext

    roles = ("orchestrator", "researcher", "generator", "debugger", "tester")
    tests = (
        "from mathx import mean\n\n\ndef test_mean():\n    assert mean([1, 2, 3]) == 2\n\n\n"
        "def test_empty_is_zero():\n    assert mean([]) == 0\n"
    )
    buggy = "def mean(xs: list[float]) -> float:\n    return sum(xs) / len(xs)\n"
    fixed = (
        "def mean(xs: list[float]) -> float:\n    if not xs:\n        return 0.0\n"
        "    return sum(xs) / len(xs)\n"
    )
    with LoopbackProvider(models=roles) as lb, tempfile.TemporaryDirectory() as tmp:
        lb.script(
            _json(
                goal="mean of a list",
                acceptance_criteria=["mean([]) == 0"],
                tasks=[{"agent": a, "instruction": "..."} for a in roles[1:]],
            ),
            _json(
                decision="REFINE",
                score=0.4,
                summary="Empty input crashes.",
                feedback=[{"agent": "generator", "message": "Return 0 for an empty list."}],
            ),
            _json(decision="APPROVE", score=0.93, summary="Tests pass.", feedback=[]),
            model="orchestrator",
        )
        lb.script(_json(summary="sum/len", pitfalls=["empty list"]), model="researcher")
        for code in (buggy, fixed):
            lb.script(
                _json(files=[{"path": "mathx.py", "content": code}], explanation="mean"),
                model="generator",
            )
            lb.script(_json(verdict="pass", bugs=[]), model="debugger")
            lb.script(_json(path="tests/test_mathx.py", content=tests, cases=[]), model="tester")
        settings = load_settings(
            None,
            env={},
            home=Path(tmp) / "none",
            overrides={
                "providers": {"lb": {"base_url": lb.base_url}},
                "roles": {r: f"lb:{r}" for r in roles},
            },
        ).settings
        _say("council run --mode generate (scripted models, real pipeline and sandbox)")
        await _run_and_print(
            settings,
            Path(tmp),
            CouncilRequest(
                query="Write mean(xs).",
                mode="generate",
                context=RequestContext(file_path="mathx.py", symbol="mean"),
            ),
        )


OFFLINE_STUB = '''\
def clamp(x: int, low: int, high: int) -> int:
    """Limit x to the range [low, high].

    >>> clamp(5, 0, 3)
    3
    >>> clamp(-2, 0, 3)
    0
    """
    pass
'''


async def offline_demo() -> None:
    """Local council mode with no model server at all: the shipped specialist (in process)
    samples candidate bodies, the docstring's examples are run against each in the sandbox,
    and the best is kept; it is approved only if it passes them."""

    from council.schemas import CouncilRequest, RequestContext

    roles = ("orchestrator", "researcher", "generator", "debugger", "tester")
    with tempfile.TemporaryDirectory() as tmp:
        dead = _free_port()
        settings = load_settings(
            None,
            env={},
            home=Path(tmp) / "none",
            overrides={
                "providers": {"offline": {"base_url": f"http://127.0.0.1:{dead}/v1"}},
                "roles": {r: "offline:none" for r in roles},
                "router": {"max_retries": 0},
                "council": {"local_candidates": 4},
            },
        ).settings
        _say("offline: no model server, the shipped specialist fills a stub (local council mode)")
        await _run_and_print(
            settings,
            Path(tmp),
            CouncilRequest(
                query="Implement clamp.",
                mode="generate",
                context=RequestContext(
                    file_path="ranges.py", file_text=OFFLINE_STUB, symbol="clamp"
                ),
            ),
        )


async def _run_and_print(settings: Any, workspace: Path, request: Any) -> None:
    """One council run with live progress, then the result, as `council run` shows them."""
    from rich.console import Console

    from council.events import Events
    from council.pipeline import Council
    from council.render import ProgressPrinter, print_result

    providers = build_providers(settings, env={})
    router = Router(settings, providers)
    console = Console()
    events = Events()
    printer = ProgressPrinter(console)
    events.subscribe(printer)
    try:
        result = await Council(router, workspace=workspace).run(request, events=events)
    finally:
        printer.stop()
        await close_all(providers)
    print_result(console, result)
