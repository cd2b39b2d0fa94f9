"""The `council` command as a user runs it: a real subprocess, real config files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from providers.loopback import LoopbackProvider
from tests.sandbox_probes import sandbox_processes
from tests.scenarios import MANIFEST, bundle, debug_ok, plan, suite, synth
from tests.scenarios import run_council as council
from tests.waits import wait_until


def test_providers_with_unreachable_ollama_prints_a_row_not_a_traceback(
    tmp_path: Path, closed_port: int
) -> None:
    (tmp_path / "council.toml").write_text(
        f'[providers.ollama]\nbase_url = "http://127.0.0.1:{closed_port}/v1"\n', encoding="utf-8"
    )
    result = council("providers", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].split()[:6] == ["PROVIDER", "MODEL", "ROLES", "LOCAL", "REACHABLE", "LATENCY"]
    row = lines[1].split()
    assert row[:2] == ["ollama", "qwen2.5-coder:7b"] and row[4] == "no"
    assert "cannot connect" in lines[1]

    as_json = json.loads(council("providers", "--json", cwd=tmp_path).stdout)
    assert as_json[0]["reachable"] is False and as_json[0]["provider"] == "ollama"


def test_providers_reports_capabilities_and_caches_them(tmp_path: Path) -> None:
    with LoopbackProvider(models=("m1",), supports_suffix=False) as server:
        (tmp_path / "council.toml").write_text(
            f'[providers.lb]\nbase_url = "{server.base_url}"\n'
            '[roles]\norchestrator = "lb:m1"\nresearcher = "lb:m1"\ngenerator = "lb:m1"\n'
            'debugger = "lb:m1"\ntester = "lb:m1"\n',
            encoding="utf-8",
        )
        rows = json.loads(council("providers", "--json", cwd=tmp_path).stdout)
        (row,) = rows
        assert row["reachable"] and row["fim"] is False and row["json_schema"] is True
        assert row["latency_ms"] is not None and not row["cached_capabilities"]
        assert row["roles"] == ["orchestrator", "researcher", "generator", "debugger", "tester"]
        probes = len(server.requests)
        again = json.loads(council("providers", "--json", cwd=tmp_path).stdout)[0]
        assert again["cached_capabilities"] and again["fim"] is False
        new = server.requests[probes:]
        assert all(r.path == "/v1/models" for r in new)  # only the live reachability check
        # The config's word beats the cache, in the table as at run time.
        with (tmp_path / "council.toml").open("a", encoding="utf-8") as f:
            f.write("[providers.lb.capabilities]\nfim = true\njson_schema = false\n")
        stated = json.loads(council("providers", "--json", cwd=tmp_path).stdout)[0]
        assert stated["cached_capabilities"]
        assert stated["fim"] is True and stated["json_schema"] is False


def test_broken_config_is_reported_and_defaults_used(tmp_path: Path) -> None:
    (tmp_path / "council.toml").write_text("[council]\nconsensus_threshold = 7\n", "utf-8")
    result = council("config", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert (
        "council.toml: council.consensus_threshold: Input should be less than or equal"
        in result.stderr
    )
    assert json.loads(result.stdout)["settings"]["council"]["consensus_threshold"] == 0.8
    assert council("config", "--strict", cwd=tmp_path).returncode == 1


def test_ask_streams_through_the_router_and_reports_usage(tmp_path: Path) -> None:
    with LoopbackProvider(models=("m1",)) as server:
        (tmp_path / "council.toml").write_text(
            f'[providers.lb]\nbase_url = "{server.base_url}"\n[roles]\ngenerator = "lb:m1"\n',
            "utf-8",
        )
        result = council("ask", "hello", "world", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loopback reply to: hello world"
    assert "[generator] lb:m1 tier 0 ok" in result.stderr
    assert "estimated" not in result.stderr  # the server reported the stream's usage


def test_ask_marks_estimated_usage_as_an_estimate(tmp_path: Path) -> None:
    """llama-cpp-python sends no usage in streams; the counts printed are then estimates
    and must say so."""
    with LoopbackProvider(models=("m1",)) as server:
        (tmp_path / "council.toml").write_text(
            f'[providers.lb]\nbase_url = "{server.base_url}"\nstream_usage = false\n'
            '[roles]\ngenerator = "lb:m1"\n',
            "utf-8",
        )
        result = council("ask", "hello", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tokens (estimated: the server reported no usage)" in result.stderr
    assert " ~" in result.stderr


def test_ask_failure_is_one_clear_line(tmp_path: Path, closed_port: int) -> None:
    (tmp_path / "council.toml").write_text(
        f'[providers.x]\nbase_url = "http://127.0.0.1:{closed_port}/v1"\n'
        '[roles]\ngenerator = "x:m"\n[router]\nmax_retries = 0\n',
        "utf-8",
    )
    result = council("ask", "hi", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "role 'generator': no tier could answer" in result.stderr


def test_bench_router_prints_json(tmp_path: Path) -> None:
    result = council("bench", "router", "--calls", "30", "--warmup", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["calls"] == 30
    for series in ("router_plus_client", "bare_httpx2_floor"):
        assert 0 < report[series]["p50_ms"] <= report[series]["p95_ms"]


def test_demo_runs(tmp_path: Path) -> None:
    result = council("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "answer local:qwen2.5-coder:7b" in result.stdout
    assert "refused: local_only is on" in result.stdout
    # The LSP session: local council mode on a fresh machine, the edit applied as a diff.
    assert "councilMode: local" in result.stdout
    assert "+++ b/tests/test_geometry.py" in result.stdout
    assert "[end   ] Created tests/test_geometry.py. Sandbox: 3 passed" in result.stdout


ROLES = ("orchestrator", "researcher", "generator", "debugger", "tester")


def scripted_council(tmp_path: Path, server: LoopbackProvider, *, tests_sleep: float = 0) -> None:
    (tmp_path / "council.toml").write_text(
        f'[providers.lb]\nbase_url = "{server.base_url}"\n[roles]\n'
        + "".join(f'{r} = "lb:{r}"\n' for r in ROLES),
        "utf-8",
    )
    (tmp_path / "mathx.py").write_text("def add(a, b):\n    pass\n", "utf-8")
    body = "import time\nfrom mathx import add\n\n\ndef test_add():\n"
    body += f"    time.sleep({tests_sleep})\n    assert add(2, 3) == 5\n"
    server.script(plan("generator", "tester"), synth("APPROVE", 0.9), model="orchestrator")
    server.script(MANIFEST, model="researcher")
    server.script(bundle("def add(a, b):\n    return a + b\n"), model="generator")
    server.script(debug_ok(), model="debugger")
    server.script(suite(body), model="tester")


def test_run_shows_progress_and_prints_the_result(tmp_path: Path) -> None:
    with LoopbackProvider(models=ROLES) as server:
        scripted_council(tmp_path, server)
        result = council(
            "run",
            "implement add",
            "--mode",
            "generate",
            "--file",
            "mathx.py",
            "--symbol",
            "add",
            "--json",
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "approved" and data["council_mode"] == "council"
    assert data["test_report"]["execution"]["passed"] == 1
    assert data["code"]["files"][0]["path"] == "mathx.py"
    for stage in ("decompose", "research", "generate", "review", "synthesise"):
        assert stage in result.stderr  # live progress lines
    assert (tmp_path / "mathx.py").read_text() == "def add(a, b):\n    pass\n"  # untouched


def test_run_ctrl_c_cancels_cleanly(tmp_path: Path) -> None:
    import signal

    with LoopbackProvider(models=ROLES) as server:
        scripted_council(tmp_path, server, tests_sleep=60)
        env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / ".c")}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "slm_council",
                "run",
                "add",
                "--mode",
                "generate",
                "--file",
                "mathx.py",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # a shell without job control starts background jobs with SIGINT ignored, and
            # an ignored signal is inherited: give the CLI the default, as a terminal would
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        wait_until(sandbox_processes, 30, "the sandbox to start")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "cancelled" in stderr
    assert "Traceback" not in stderr
    assert sandbox_processes() == []


def test_bench_council_prints_json(tmp_path: Path) -> None:
    result = council("bench", "council", "--runs", "2", cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["statuses"] == {"approved": 2}
    assert 0.4 < report["review_overlap"]["model_calls_ratio"] < 0.75


def test_bench_server_prints_json(tmp_path: Path) -> None:
    result = council("bench", "server", "--starts", "2", cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    load = report["code_action_under_load"]
    assert load["in_flight_at_start"] == 5 and load["in_flight_at_end"] == 5
    assert load["run_outcomes"] == ["cancelled"] * 5
    assert report["rss_kib"]["after_initialize"] > 0
