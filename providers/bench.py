"""`council bench router`: what the router and client add on top of the provider itself.

A loopback OpenAI-compatible server answers instantly; the server records how long its own
handler ran for each request. For every call we take the wall time around `Router.chat` and
subtract the server's time, leaving router + SDK + HTTP + loopback socket cost. The same
request sent with a bare `httpx2` client gives the floor that any HTTP client pays, and the
provider client called without the router isolates the router's own share. All three
series run interleaved in one process
so machine noise hits them alike.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import httpx2

from providers.base import ChatRequest
from providers.loopback import LoopbackProvider
from providers.openai_compat import OpenAICompatProvider
from providers.router import Router
from providers.settings import Settings


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1000, 3),
        "p95_ms": round(q[94] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


async def bench_router(calls: int = 1000, warmup: int = 50) -> dict[str, Any]:
    with LoopbackProvider(models=("bench-model",)) as server:
        settings = Settings.model_validate(
            {
                "providers": {"bench": {"base_url": server.base_url}},
                "roles": {"generator": ["bench:bench-model"]},
                "council": {"budget_usd": None},
            }
        )
        provider = OpenAICompatProvider("bench", settings.providers["bench"])
        router = Router(settings, {"bench": provider})
        request = ChatRequest.of("def add(a, b):", max_tokens=16)
        body = {
            "model": "bench-model",
            "messages": [{"role": "user", "content": "def add(a, b):"}],
            "max_tokens": 16,
        }
        routed: list[float] = []
        direct: list[float] = []
        raw: list[float] = []
        asked = request.model_copy(update={"model": "bench-model"})
        async with httpx2.AsyncClient(base_url=server.base_url) as bare:
            for i in range(warmup + calls):
                server.clear()
                started = time.perf_counter()
                await router.chat("generator", request)
                total = time.perf_counter() - started
                record = server.requests[-1]
                started = time.perf_counter()
                await provider.chat(asked)
                direct_total = time.perf_counter() - started
                direct_record = server.requests[-1]
                started = time.perf_counter()
                response = await bare.post("/chat/completions", json=body)
                response.json()
                bare_total = time.perf_counter() - started
                bare_record = server.requests[-1]
                if i >= warmup and record.server_time is not None:
                    routed.append(total - record.server_time)
                    direct.append(direct_total - (direct_record.server_time or 0.0))
                    raw.append(bare_total - (bare_record.server_time or 0.0))
        await provider.aclose()
    ours = _stats(routed)
    client_only = _stats(direct)
    floor = _stats(raw)
    return {
        "benchmark": "router",
        "calls": len(routed),
        "warmup": warmup,
        "what": "wall time of Router.chat minus the loopback server's own handler time",
        "router_plus_client": ours,
        "client_only": client_only,
        "router_share_p50_ms": round(ours["p50_ms"] - client_only["p50_ms"], 3),
        "bare_httpx2_floor": floor,
        "p50_ratio_vs_bare": round(ours["p50_ms"] / floor["p50_ms"], 2)
        if floor["p50_ms"]
        else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
