"""`council bench council`: the pipeline's own cost, and whether review really runs in parallel.

Overhead: 100 generate runs against a zero-latency loopback provider that answers every
stage with a scripted, valid reply (one pass, approved). For each run, wall time minus the
provider's own handler time is the pipeline's cost; the sandbox's pytest run is part of that,
so it is also reported on its own and subtracted in a third figure. `sandbox_run` is the
whole sandboxed run as the pipeline waits for it (from its stage event to the next: the run
directory, namespaces, pytest and clean-up); `sandbox_child_process` only the child's life.
`sandbox_layers` are the OS layers the runs had.

Overlap: the same run with 200 ms of provider latency on the debugger and the tester. The
ratio wall / (debugger + tester) over their two model calls is 0.5 when they run fully in
parallel and 1.0 when serial. The whole review stage (the tester's call plus the sandbox run,
next to the debugger's call) is reported too, with the ratio that perfect overlap would give
for those durations, since the two branches are not equally long.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from council.events import Event, Events
from council.pipeline import Council
from council.schemas import CouncilRequest, RequestContext
from providers.loopback import LoopbackProvider, Reply
from providers.registry import build_providers, close_all
from providers.router import Router
from providers.settings import Settings

MODELS = ("orch", "res", "gen", "dbg", "tst")
CODE = "def add(a: int, b: int) -> int:\n    return a + b\n"
TESTS = "from mathx import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


def _reply(delay: float = 0.0, **data: Any) -> Reply:
    return Reply(content=json.dumps(data), delay=delay)


def _script(server: LoopbackProvider, review_delay: float) -> None:
    server.script(
        _reply(goal="add", tasks=[{"agent": "generator", "instruction": "write add"}]),
        _reply(decision="APPROVE", score=0.95, summary="ok", feedback=[]),
        model="orch",
    )
    server.script(_reply(summary="use +"), model="res")
    server.script(
        _reply(files=[{"path": "mathx.py", "content": CODE}], explanation="adds"), model="gen"
    )
    server.script(_reply(review_delay, verdict="pass", bugs=[]), model="dbg")
    server.script(
        _reply(review_delay, path="tests/test_mathx.py", content=TESTS, cases=["add"]),
        model="tst",
    )


def _quantiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(sorted(values), n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "mean_ms": round(statistics.fmean(values) * 1000, 1),
    }


async def bench_council(runs: int = 100, overlap_runs: int = 5) -> dict[str, Any]:
    with LoopbackProvider(models=MODELS) as server, tempfile.TemporaryDirectory() as tmp:
        settings = Settings.model_validate(
            {
                "providers": {"lb": {"base_url": server.base_url}},
                "roles": dict(
                    zip(
                        ("orchestrator", "researcher", "generator", "debugger", "tester"),
                        (f"lb:{m}" for m in MODELS),
                        strict=True,
                    )
                ),
                "council": {"budget_usd": None},
            }
        )
        router = Router(settings, build_providers(settings, env={}))
        council = Council(router, workspace=Path(tmp))
        request = CouncilRequest(
            query="write add",
            mode="generate",
            context=RequestContext(file_path="mathx.py", symbol="add"),
        )
        overhead: list[float] = []
        without_sandbox: list[float] = []
        sandbox: list[float] = []
        child: list[float] = []
        layers_seen: list[str] = []
        statuses: dict[str, int] = {}
        try:
            for _ in range(runs):
                server.clear()
                _script(server, 0.0)
                seen: list[Event] = []
                events = Events()
                events.subscribe(seen.append)
                started = time.perf_counter()
                result = await council.run(request, events=events)
                wall = time.perf_counter() - started
                provider = sum(r.server_time or 0.0 for r in server.requests)
                # the whole sandboxed run as the pipeline waits for it: directory, copy,
                # namespaces, pytest, reaping and clean-up, not only the child's lifetime
                marks = [e.at for e in seen if e.stage == "review" and e.role == "sandbox"]
                run_sandbox = max(marks) - min(marks) if len(marks) >= 2 else 0.0
                if result.test_report and result.test_report.execution:
                    child.append(result.test_report.execution.duration_s)
                    layers_seen = result.test_report.execution.containment
                statuses[result.status] = statuses.get(result.status, 0) + 1
                overhead.append(wall - provider)
                sandbox.append(run_sandbox)
                without_sandbox.append(wall - provider - run_sandbox)
            overlap = [await _overlap(council, server, request) for _ in range(overlap_runs)]
        finally:
            await close_all(router.providers)
    calls_ratio = statistics.median(o["calls_ratio"] for o in overlap)
    return {
        "benchmark": "council",
        "runs": runs,
        "statuses": statuses,
        "pipeline_overhead": _quantiles(overhead),
        "sandbox_run": _quantiles(sandbox),
        "sandbox_child_process": _quantiles(child) if len(child) > 1 else None,
        "sandbox_layers": layers_seen,
        "pipeline_overhead_excluding_sandbox": _quantiles(without_sandbox),
        "review_overlap": {
            "provider_latency_ms": 200,
            "runs": overlap_runs,
            "model_calls_ratio": round(calls_ratio, 3),
            "review_stage_ratio": round(statistics.median(o["stage_ratio"] for o in overlap), 3),
            "review_stage_ideal_ratio": round(
                statistics.median(o["stage_ideal"] for o in overlap), 3
            ),
            "meaning": "wall / (debugger + tester); 0.5 = fully parallel, 1.0 = serial",
        },
        "python": platform.python_version(),
    }


async def _overlap(
    council: Council, server: LoopbackProvider, request: CouncilRequest
) -> dict[str, float]:
    server.clear()
    _script(server, 0.2)
    seen: list[Event] = []
    events = Events()
    events.subscribe(seen.append)
    await council.run(request, events=events)
    by_model = {r.body["model"]: r for r in server.requests if r.body and "model" in r.body}
    dbg, tst = by_model["dbg"], by_model["tst"]
    calls_wall = max(dbg.finished or 0, tst.finished or 0) - min(dbg.started, tst.started)
    calls_ratio = calls_wall / (
        (dbg.finished or 0) - dbg.started + (tst.finished or 0) - tst.started
    )

    def span(role: str) -> tuple[float, float]:
        times = [e.at for e in seen if e.stage == "review" and e.role == role]
        return min(times), max(times)

    d0, d1 = span("debugger")
    t0, _ = span("tester")
    _, s1 = span("sandbox")
    debugger, tester = d1 - d0, s1 - t0
    stage_wall = max(d1, s1) - min(d0, t0)
    return {
        "calls_ratio": calls_ratio,
        "stage_ratio": stage_wall / (debugger + tester),
        "stage_ideal": max(debugger, tester) / (debugger + tester),
    }
