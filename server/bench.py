"""`council bench server`: start-up cost, responsiveness under load, and memory.

- initialize: wall time from spawning `council lsp` to its `initialize` answer, over 20 cold
  starts (a new process each time, so Python start-up and imports are included), interleaved
  start by start with `python -m server.bare_pygls`, a pygls server that imports nothing
  else, both from cached bytecode (see `cold_starts`). The ratio of the two p50s is the
  figure to watch (goal: at most 1.1): it cancels the machine's speed and most of its noise.
- code actions while 5 council runs are in flight: the runs are held at their generate stage
  by a loopback provider that answers the generator after 15 s; meanwhile 200 code-action
  requests are timed one after another.
- RSS: the server's resident memory after `initialize`/`initialized` and after the runs,
  read from /proc (no model is loaded by the server at any point today).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path

from providers.loopback import LoopbackProvider, Reply

ROLES = ("orchestrator", "researcher", "generator", "debugger", "tester")
STUB = 'def add(a: int, b: int) -> int:\n    """Sum."""\n    pass\n'


def _q(values: list[float]) -> dict[str, float]:
    # quantiles() needs two points; one run (--starts 1) reports that value for all three
    q = statistics.quantiles(
        sorted(values * 2 if len(values) == 1 else values), n=100, method="inclusive"
    )
    return {
        "p50_ms": round(q[49] * 1000, 2),
        "p95_ms": round(q[94] * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


COUNCIL_LSP = ("-m", "slm_council", "lsp")
BARE_PYGLS = ("-m", "server.bare_pygls")
GOAL_RATIO = 1.1


async def _start(
    root: Path, env: dict[str, str], argv: tuple[str, ...] = COUNCIL_LSP
) -> tuple[LanguageClient, float]:
    client = LanguageClient("council-bench", "1")

    @client.feature("council/runsChanged")
    def runs_changed(params: Any) -> None:
        return None  # not measured; unhandled, pygls would log a warning for each

    started = time.perf_counter()
    await client.start_io(sys.executable, *argv, env=env, cwd=str(root))
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(), root_uri=from_fs_path(str(root))
        )
    )
    elapsed = time.perf_counter() - started
    client.initialized(types.InitializedParams())
    return client, elapsed


async def _stop(client: LanguageClient) -> None:
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


def _pid(client: LanguageClient) -> int:
    server = getattr(client, "_server", None)
    return int(server.pid) if server is not None else 0


async def cold_starts(root: Path, env: dict[str, str], starts: int) -> dict[str, Any]:
    """`council lsp` and the bare pygls server, started alternately (A, B, A, B, ...) so
    that drifting machine load hits both alike.

    Both run from cached bytecode, as an installed package does (pip compiles it when it
    installs): each is started once untimed with bytecode writing allowed, since a checkout
    run under PYTHONDONTWRITEBYTECODE would recompile the project's modules at every start
    while pygls and lsprotocol, in site-packages, load compiled."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    servers = (("council_lsp", COUNCIL_LSP), ("bare_pygls", BARE_PYGLS))
    for _, argv in servers:
        client, _ = await _start(root, env, argv)
        await _stop(client)
    times: dict[str, list[float]] = {"council_lsp": [], "bare_pygls": []}
    for _ in range(starts):
        for name, argv in servers:
            client, elapsed = await _start(root, env, argv)
            times[name].append(elapsed)
            await _stop(client)
    council, bare = _q(times["council_lsp"]), _q(times["bare_pygls"])
    return {
        "starts": starts,
        "order": "interleaved",
        "council_lsp": council,
        "bare_pygls": bare,
        "ratio_p50": round(council["p50_ms"] / bare["p50_ms"], 3),
        "goal_ratio": GOAL_RATIO,
    }


async def bench_server(starts: int = 20, actions: int = 200, runs: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, LoopbackProvider(models=ROLES) as lb:
        root = Path(tmp)
        (root / "m.py").write_text(STUB, encoding="utf-8")
        config = root / "council.toml"
        config.write_text(
            f'[providers.lb]\nbase_url = "{lb.base_url}"\n[roles]\n'
            + "".join(f'{r} = "lb:{r}"\n' for r in ROLES),
            encoding="utf-8",
        )
        env = {**os.environ, "COUNCIL_CONFIG": str(config), "XDG_CACHE_HOME": str(root / "c")}

        cold = await cold_starts(root, env, starts)

        client, _ = await _start(root, env)
        pid = _pid(client)
        await asyncio.sleep(0.5)
        rss_idle = _rss_kib(pid)
        uri = from_fs_path(str(root / "m.py")) or ""
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=STUB
                )
            )
        )
        bundle = json.dumps({"files": [{"path": "m.py", "content": STUB}], "explanation": ""})
        for _ in range(runs):
            lb.script(Reply(content=bundle, delay=15.0), model="generator")
        pending = [
            asyncio.ensure_future(
                client.workspace_execute_command_async(
                    types.ExecuteCommandParams(
                        command="council.generate", arguments=[{"uri": uri, "symbol": "add"}]
                    )
                )
            )
            for _ in range(runs)
        ]

        def generating() -> int:
            return sum(
                1
                for r in lb.requests
                if r.body and r.body.get("model") == "generator" and r.finished is None
            )

        deadline = time.monotonic() + 30
        while generating() < runs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        at_start = generating()
        params = types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(
                start=types.Position(line=2, character=0), end=types.Position(line=2, character=0)
            ),
            context=types.CodeActionContext(diagnostics=[]),
        )
        latencies: list[float] = []
        for _ in range(actions):
            t0 = time.perf_counter()
            await client.text_document_code_action_async(params)
            latencies.append(time.perf_counter() - t0)
        at_end = generating()
        rss_busy = _rss_kib(pid)
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="council.cancel", arguments=[{}])
        )
        outcomes: list[str] = []
        for future in pending:
            try:
                outcomes.append(str((await future).get("status")))
            except Exception as exc:  # a cancelled run may answer with an error
                outcomes.append(type(exc).__name__)
        await _stop(client)
    return {
        "benchmark": "server",
        "initialize_cold_start": cold,
        "code_action_under_load": {
            "requests": actions,
            "runs_in_flight": runs,
            "in_flight_at_start": at_start,
            "in_flight_at_end": at_end,
            "run_outcomes": outcomes,
            **_q(latencies),
        },
        "rss_kib": {
            "after_initialize": rss_idle,
            "with_runs_in_flight": rss_busy,
            "model_loaded": False,
        },
        "python": platform.python_version(),
    }
