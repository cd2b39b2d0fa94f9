"""Scripted council scenarios the test modules share (test modules never import each other).

The loopback provider (`providers.loopback`) answers with what a test scripts; these build
those answers: a plan naming the agents, the researcher's manifest, a generator's bundle, a
debugger's verdict, a tester's suite, the orchestrator's synthesis. On top of them: the code
the editor tests work on (`STUB`, `FIXED`), whole runs scripted in one call
(`script_generate`, `script_add_tests`), the `council.toml` pointing every role at the
loopback, and the `council` command run as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from council.sandbox import SandboxLimits
from providers.loopback import LoopbackProvider, Reply

# -- one reply per agent ------------------------------------------------------------------------

ROLES = ("orchestrator", "researcher", "generator", "debugger", "tester")
MODELS = ("orch", "res", "gen", "dbg", "tst")  # the loopback model each role is routed to
FIM = "starcoder2:3b"  # the editors' inline-completion backend model
LIMITS = SandboxLimits(timeout_secs=20)


def js(**data: Any) -> Reply:
    return Reply(content=json.dumps(data))


def plan(*agents: str) -> Reply:
    return js(
        goal="add two numbers",
        tasks=[{"agent": a, "instruction": f"{a} work"} for a in agents],
        acceptance_criteria=["add(2, 3) == 5"],
    )


MANIFEST = js(summary="use +", apis=[], dependencies=[], pitfalls=["negative numbers"])


def bundle(code: str, path: str = "mathx.py") -> Reply:
    return js(files=[{"path": path, "content": code}], explanation="adds", assumptions=[])


def debug_ok() -> Reply:
    return js(verdict="pass", bugs=[], analysis="fine")


TESTS = """\
from mathx import add


def test_adds_positive():
    assert add(2, 3) == 5


def test_adds_negative():
    assert add(-2, -3) == -5
"""


def suite(content: str = TESTS) -> Reply:
    return js(path="tests/test_mathx.py", content=content, cases=["positive", "negative"])


def synth(decision: str, score: float, feedback: list[dict[str, str]] | None = None) -> Reply:
    return js(
        decision=decision, score=score, summary=f"{decision} summary", feedback=feedback or []
    )


def prompts_to(server: LoopbackProvider, model: str) -> list[str]:
    """The last message of every chat request `model` received, in order."""
    return [
        r.body["messages"][-1]["content"]
        for r in server.requests
        if r.body and r.body.get("model") == model
    ]


# -- whole runs, as the editor tests script them ------------------------------------------------

STUB = '''\
def add(a: int, b: int) -> int:
    """Return the sum of a and b."""
    pass


def untouched() -> str:
    return "keep me"
'''
FIXED = "def add(a: int, b: int) -> int:\n    return a + b\n"


def script_generate(server: LoopbackProvider, code: str = FIXED, delay: float = 0.0) -> None:
    """One approved Generate run; the generator answers `code` after `delay` seconds."""
    server.script(plan("generator"), synth("APPROVE", 0.95), model="orch")
    server.script(MANIFEST, model="res")
    reply = bundle(code)
    reply.delay = delay
    server.script(reply, model="gen")
    server.script(debug_ok(), model="dbg")
    server.script(suite(), model="tst")


def script_add_tests(server: LoopbackProvider, delay: float = 0.0) -> None:
    """One approved Add Tests run; the orchestrator's plan comes after `delay` seconds."""
    first = plan("tester")
    first.delay = delay
    server.script(first, synth("APPROVE", 0.9), model="orch")
    server.script(debug_ok(), model="dbg")
    server.script(suite(), model="tst")


def council_toml(base_url: str, extra: str = "") -> str:
    """Every role on the loopback at `base_url` (role -> `MODELS`), no retries."""
    return (
        f'[providers.lb]\nbase_url = "{base_url}"\n[roles]\n'
        + "".join(f'{r} = "lb:{m}"\n' for r, m in zip(ROLES, MODELS, strict=True))
        + "[router]\nmax_retries = 0\n"
        + extra
    )


def write_config(path: Path, base_url: str, extra: str = "") -> None:
    path.write_text(council_toml(base_url, extra), encoding="utf-8")


def server_env(tmp_path: Path, config: Path) -> dict[str, str]:
    """The environment of a `council lsp` under test: its own HOME and cache, `config`."""
    return {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "c"),
        "COUNCIL_CONFIG": str(config),
    }


# -- the command line -----------------------------------------------------------------------------


def run_council(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`council ARGS` in a subprocess with HOME and the cache under `cwd`; COUNCIL_CONFIG is
    dropped from the environment unless `env` sets it."""
    full = {**os.environ, "HOME": str(cwd), "XDG_CACHE_HOME": str(cwd / ".cache"), **(env or {})}
    full.pop("COUNCIL_CONFIG", None) if "COUNCIL_CONFIG" not in (env or {}) else None
    return subprocess.run(
        [sys.executable, "-m", "slm_council", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
