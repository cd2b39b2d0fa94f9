"""`council lsp` imports only what answering `initialize` needs.

The cold-start figure itself is a benchmark (`council bench server` compares `council lsp`
with a bare pygls server, interleaved, and reports the ratio); these tests hold the property
behind it: starting the server imports no pydantic, settings models, providers, pipeline or
completer, and the benchmark's comparison runs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from server.bench import cold_starts

# What `council lsp` has imported when it starts reading `initialize`.
PROBE = """
import sys
from pygls.lsp.server import LanguageServer
LanguageServer.start_io = lambda *args, **kwargs: print("\\n".join(sorted(sys.modules)))
from slm_council.main import main
main(["lsp"])
"""
NOT_BEFORE_INITIALIZE = [
    "training",  # `council train`'s parsers
    "pydantic",  # the settings models alone took 127 ms
    "anyio",
    "httpx",
    "openai",
    "jax",
    "providers.settings",
    "providers.loading",
    "providers.router",
    "council.schemas",
    "council.pipeline",
    "council.completion",
    "server.council_commands",
    "server.run_tracking",
    "server.inline",
]


def test_starting_the_server_imports_nothing_heavy(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path)},
    ).stdout.split()
    loaded = [m for m in out if m.split(".")[0] in {"pygls", "lsprotocol"}]
    assert "lsprotocol.types" in loaded and "pygls.lsp.server" in loaded
    heavy = [m for m in out if any(m == h or m.startswith(h + ".") for h in NOT_BEFORE_INITIALIZE)]
    assert heavy == []


def test_the_benchmark_compares_with_a_bare_pygls_server(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")}
    report = asyncio.run(cold_starts(tmp_path, env, starts=2))
    assert report["order"] == "interleaved"
    for name in ("council_lsp", "bare_pygls"):
        assert report[name]["p50_ms"] > 0
    assert report["ratio_p50"] == round(
        report["council_lsp"]["p50_ms"] / report["bare_pygls"]["p50_ms"], 3
    )
