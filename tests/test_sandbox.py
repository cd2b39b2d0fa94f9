"""The sandbox against real misbehaving children: loops, fork bombs, escapes, network, keys.

Every test runs real subprocesses. A run's identity (its COUNCIL_SANDBOX_ID token and its
directory) comes from the module's debug log record, so that leftovers can be looked for
precisely, without being confused by other sandbox runs on the same machine
(`tests.sandbox_probes`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from pathlib import Path

import anyio
import pytest

from council.sandbox import (
    CaseResult,
    ExecutionResult,
    SandboxLimits,
    SandboxPathError,
    confine,
    run_script,
    run_tests,
    safe_relative_path,
)
from tests.sandbox_probes import Listener, alive_with_token, assert_nothing_left, sandbox_runs
from tests.waits import async_wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="council.sandbox")


# -- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["", "../x", "/etc/passwd", "a/../../x", "C:\\x", "C:/x", "\\\\server\\share", "a\x00b", "."],
)
def test_safe_relative_path_rejects(bad):
    with pytest.raises(SandboxPathError):
        safe_relative_path(bad)


def test_safe_relative_path_normalises_and_names_the_path():
    assert safe_relative_path("./a//b") == safe_relative_path("a/b")
    assert str(safe_relative_path("pkg/mod.py")) == "pkg/mod.py"
    with pytest.raises(SandboxPathError, match=r"\.\./x"):
        safe_relative_path("../x")


def test_confine_rejects_escaping_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "pkg").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out").symlink_to(outside)
    (root / "pkg" / "inner").symlink_to(root / "pkg")
    assert confine(root, "pkg/mod.py") == (root / "pkg" / "mod.py").resolve()
    assert confine(root, "pkg/inner/mod.py") == (root / "pkg" / "mod.py").resolve()
    for bad in ("out", "out/x.py", "../x", "/etc/passwd", "a/../../x", "C:\\x", "x\x00"):
        with pytest.raises(SandboxPathError):
            confine(root, bad)


@pytest.mark.anyio
async def test_run_tests_raises_for_bad_paths(tmp_path):
    with pytest.raises(SandboxPathError):
        await run_tests({"../test_x.py": "def test_x(): pass\n"})
    with pytest.raises(SandboxPathError):
        await run_tests({".council/junit.xml": ""})
    with pytest.raises(SandboxPathError):
        await run_tests({"test_x.py": ""}, test_paths=["/etc/passwd"])
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "leak").symlink_to("/etc")
    with pytest.raises(SandboxPathError, match="outside"):
        await run_tests({}, workspace=tmp_path / "ws", copy=["leak"])
    with pytest.raises(SandboxPathError, match="not found"):
        await run_tests({}, workspace=tmp_path / "ws", copy=["missing.py"])


@pytest.mark.anyio
async def test_copy_from_workspace_is_importable(tmp_path):
    workspace = tmp_path / "ws"
    (workspace / "lib").mkdir(parents=True)
    (workspace / "lib" / "__init__.py").write_text("")
    (workspace / "lib" / "calc.py").write_text("def double(x):\n    return 2 * x\n")
    (workspace / "helper.py").write_text("VALUE = 7\n")
    test = "from lib.calc import double\nfrom helper import VALUE\n\n"
    test += "def test_copy(seven):\n    assert double(VALUE) == 2 * seven\n\n"
    test += "def test_not_selected():\n    assert False\n"
    files = {
        "conftest.py": "import pytest\n\n@pytest.fixture\ndef seven():\n    return 7\n",
        "tests/test_copy.py": test,
    }
    result = await run_tests(
        files,
        workspace=workspace,
        copy=["lib", "helper.py"],
        test_paths=["tests/test_copy.py::test_copy"],
    )
    assert result.ok, result.summary()
    assert result.passed == 1
    assert [c.nodeid for c in result.cases] == ["tests/test_copy.py::test_copy"]


# -- outcomes --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_passing_and_failing_cases_are_counted(caplog):
    files = {
        "calc.py": "def add(a, b):\n    return a + b\n",
        "test_calc.py": (
            "from calc import add\n\n"
            "def test_ok():\n    assert add(1, 2) == 3\n\n"
            "def test_ok_too():\n    assert add(0, 0) == 0\n\n"
            "def test_wrong():\n    assert add(2, 2) == 5, 'two and two'\n"
        ),
    }
    result = await run_tests(files)
    assert (result.passed, result.failed, result.errors) == (2, 1, 0)
    assert result.exit_code == 1 and not result.ok and result.error is None
    wrong = next(c for c in result.cases if c.name == "test_wrong")
    assert isinstance(wrong, CaseResult)
    assert wrong.outcome == "failed"
    assert wrong.nodeid == "test_calc.py::test_wrong"
    assert "two and two" in wrong.message
    assert result.summary().startswith("2 passed, 1 failed in ")
    assert {"process-group", "rlimits", "audit-hook", "env-scrubbed"} <= set(result.containment)
    assert_nothing_left(caplog)


@pytest.mark.anyio
async def test_all_passing_is_ok():
    result = await run_tests({"test_one.py": "def test_one():\n    assert True\n"})
    assert result.ok
    assert result.summary().startswith("1 passed in ")


@pytest.mark.anyio
async def test_syntax_error_in_code_under_test_is_an_error_result():
    files = {
        "broken.py": "def f(:\n    pass\n",
        "test_broken.py": "from broken import f\n\ndef test_f():\n    assert f() is None\n",
    }
    result = await run_tests(files)
    assert isinstance(result, ExecutionResult)
    assert result.errors >= 1 and not result.ok
    assert any(c.outcome == "error" and "SyntaxError" in c.message for c in result.cases)


@pytest.mark.anyio
async def test_no_tests_collected_is_reported():
    result = await run_tests({"test_empty.py": "X = 1\n"})
    assert result.error == "no tests collected"
    assert not result.ok


@pytest.mark.anyio
async def test_run_script_reports_exit_status(monkeypatch):
    monkeypatch.setenv("COUNCIL_TEST_LEAK", "must not be inherited")
    script = "import json, os\nprint(json.dumps(sorted(os.environ)))\n"
    ok = await run_script({"main.py": script}, "main.py")
    assert ok.passed == 1 and ok.exit_code == 0 and ok.ok
    # exactly the allowlist, nothing inherited (PWD is the shell's, set by the copy-in step)
    assert set(json.loads(ok.stdout_tail)) - {"PWD"} == {
        "PATH",
        "LANG",
        "LC_ALL",
        "HOME",
        "TMPDIR",
        "PYTHONPATH",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
        "PYTHONUNBUFFERED",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
        "COUNCIL_SANDBOX",
        "COUNCIL_SANDBOX_ID",
    }
    bad = await run_script({"main.py": "import sys\nsys.exit(3)\n"}, "main.py", args=["x"])
    assert bad.failed == 1 and bad.exit_code == 3 and not bad.ok
    with pytest.raises(SandboxPathError):
        await run_script({"main.py": ""}, "other.py")


# -- misbehaviour ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_infinite_loop_times_out_and_leaves_nothing(caplog):
    files = {
        "test_loop.py": (
            "def test_first():\n    assert True\n\n"
            "def test_spin():\n    while True:\n        pass\n"
        )
    }
    started = time.monotonic()
    result = await run_tests(files, limits=SandboxLimits(timeout_secs=2))
    assert time.monotonic() - started < 6
    assert result.timed_out and result.exit_code is None and not result.ok
    assert result.error == "timed out after 2.0s"
    assert result.passed == 1
    assert "test_loop.py::test_spin" in result.summary()
    assert "(1 passed before the kill" in result.summary()
    assert_nothing_left(caplog)


@pytest.mark.anyio
async def test_fork_bomb_is_capped_and_reaped(caplog):
    test = (
        "import os, time\n\n"
        "def test_bomb():\n"
        "    for _ in range(500):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
    )
    limits = SandboxLimits(timeout_secs=10, max_processes=8)
    result = await run_tests({"test_bomb.py": test}, limits=limits)
    assert not result.ok and result.failed == 1
    assert "process limit reached (8)" in result.violations
    assert "PermissionError" in result.cases[0].message
    assert_nothing_left(caplog)


@pytest.mark.anyio
async def test_setsid_grandchild_is_killed(caplog):
    test = (
        "import subprocess, sys\n\n"
        "def test_daemon():\n"
        "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
        "                     start_new_session=True)\n"
    )
    result = await run_tests({"test_daemon.py": test})
    assert result.ok, result.summary()
    assert_nothing_left(caplog)


@pytest.mark.anyio
async def test_writes_outside_the_sandbox_are_refused(caplog):
    """Python writes outside: the OS refuses them (or the guard does, without bwrap)."""
    # not under /tmp: there the sandbox has its own /tmp, where Python may write freely
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path.home()
    target_dir = Path(tempfile.mkdtemp(prefix="council-test-outside-", dir=base))
    absolute = target_dir / "escape.txt"
    relative_name = f"escape-{uuid.uuid4().hex}.txt"
    test = (
        "import pytest\n\n"
        f"def test_absolute():\n    open({str(absolute)!r}, 'w').write('x')\n\n"
        f"def test_relative():\n    open('../../{relative_name}', 'w').write('x')\n\n"
        "def test_inside(tmp_path):\n"
        "    (tmp_path / 'ok.txt').write_text('fine')\n"
        "    open('inside.txt', 'w').write('fine')\n"
    )
    try:
        result = await run_tests({"test_escape.py": test})
        roots = [root for _, _, root in sandbox_runs(caplog)]
        assert not absolute.exists()
        assert not (roots[0].parent.parent / relative_name).exists()
        assert result.passed >= 1 and result.failed >= 1
        assert "test_escape.py::test_absolute" in [
            c.nodeid for c in result.cases if c.outcome == "failed"
        ]
        # the guard names it before the OS refuses it (tests/test_sandbox_hostile.py)
        assert f"write outside sandbox: {absolute}" in result.violations
    finally:
        absolute.unlink(missing_ok=True)
        target_dir.rmdir()


@pytest.mark.anyio
async def test_api_keys_do_not_reach_the_child(monkeypatch):
    secret = "sk-test-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    test = (
        "import os\n\n"
        "def test_no_key():\n"
        "    print(sorted(os.environ))\n"
        "    assert os.environ.get('OPENAI_API_KEY') is None\n"
    )
    result = await run_tests({"test_env.py": test})
    assert result.ok, result.summary()
    assert "env-scrubbed" in result.containment
    assert secret not in result.stdout_tail + result.stderr_tail


@pytest.mark.anyio
async def test_network_is_cut():
    listener = Listener()
    port = listener.port
    test = (
        "import socket, subprocess, sys\n\n"
        "def test_create_connection():\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n\n"
        "def test_raw_connect():\n"
        "    with socket.socket() as sock:\n"
        "        sock.settimeout(2)\n"
        f"        sock.connect(('127.0.0.1', {port}))\n\n"
        "def test_unix_sockets_still_work():\n"
        "    a, b = socket.socketpair()\n"
        "    a.sendall(b'hi')\n"
        "    assert b.recv(2) == b'hi'\n"
    )
    try:
        result = await run_tests({"test_net.py": test})
        assert listener.connections_before_now() == 0
    finally:
        listener.close()
    assert (result.passed, result.failed) == (1, 2)
    assert f"network: connect ('127.0.0.1', {port})" in result.violations
    assert any(v.startswith("network: getaddrinfo") for v in result.violations)


@pytest.mark.anyio
async def test_network_can_be_allowed():
    listener = Listener()
    test = (
        "import socket\n\n"
        "def test_connect():\n"
        f"    socket.create_connection(('127.0.0.1', {listener.port}), timeout=2).close()\n"
    )
    try:
        result = await run_tests({"test_net.py": test}, limits=SandboxLimits(network=True))
        connections = listener.connections_before_now()
    finally:
        listener.close()
    assert result.ok, result.summary()
    assert "netns" not in result.containment and result.violations == []
    assert connections == 1


@pytest.mark.anyio
async def test_network_namespace_stops_code_the_guard_cannot_see():
    """`python -I` skips the boot hook (no PYTHONPATH): only the namespace stands in the way."""
    listener = Listener()
    connect = f"import socket; socket.socket().connect(('127.0.0.1', {listener.port})); print('in')"
    test = (
        "import subprocess, sys\n\n"
        "def test_unguarded():\n"
        f"    done = subprocess.run([sys.executable, '-I', '-c', {connect!r}])\n"
        "    assert done.returncode != 0\n"
    )
    try:
        result = await run_tests({"test_raw.py": test})
        connections = listener.connections_before_now()
    finally:
        listener.close()
    if "netns" not in result.containment:
        pytest.skip("no network namespace on this machine: only the Python guard cuts the net")
    assert connections == 0
    assert result.ok, result.summary()


@pytest.mark.anyio
async def test_cancellation_kills_the_child_and_removes_the_directory(caplog):
    test = "import time\n\ndef test_sleep():\n    time.sleep(60)\n"
    seen_alive: list[int] = []
    cancelled_at = 0.0

    def alive() -> list[int]:
        runs = sandbox_runs(caplog)
        return alive_with_token(runs[0][0]) if runs else []

    async def cancel_once_running(scope: anyio.CancelScope) -> None:
        nonlocal cancelled_at
        seen_alive.extend(await async_wait_until(alive, 10, "the sandbox's child to start"))
        cancelled_at = time.monotonic()
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_once_running, tg.cancel_scope)
        await run_tests({"test_sleep.py": test})
        pytest.fail("run_tests returned instead of propagating the cancellation")
    assert time.monotonic() - cancelled_at < 1.0
    assert seen_alive, "the child was not running when cancelled: the check proves nothing"
    assert_nothing_left(caplog)


@pytest.mark.anyio
async def test_endless_output_is_bounded():
    script = "while True:\n    print('x' * 1000)\n"
    result = await run_script({"spam.py": script}, "spam.py", limits=SandboxLimits(timeout_secs=2))
    assert result.timed_out and result.failed == 1
    assert 0 < len(result.stdout_tail) <= 4000


# -- layers ------------------------------------------------------------------------------------


def test_sandbox_check_lists_every_layer_and_its_state():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "slm_council", "sandbox", "--check", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    layers = {layer["name"]: layer for layer in json.loads(done.stdout)}
    assert {"fs-readonly", "home-hidden", "pid-ns", "netns", "cgroup-pids", "audit-hook"} <= set(
        layers
    )
    assert all(layer["stops"] and layer["without"] for layer in layers.values())
    missing = [name for name, layer in layers.items() if not layer["active"]]
    assert done.returncode == (1 if missing else 0)
    assert all(layers[name]["detail"] for name in missing)


@pytest.mark.anyio
async def test_missing_layers_are_warned_about_once_and_runs_still_work(monkeypatch, caplog):
    from council.sandbox import layers

    monkeypatch.setattr(layers, "_warned", False)
    monkeypatch.setattr(
        layers,
        "probe",
        lambda: layers.Probe(bwrap=None, bwrap_error="bwrap not found", unshare=None),
    )
    caplog.set_level(logging.WARNING, logger="council.sandbox")
    for _ in range(2):
        result = await run_tests({"test_one.py": "def test_one():\n    assert True\n"})
        assert result.ok and "fs-readonly" not in result.containment
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "fs-readonly" in text and "can write or delete any file" in text
    assert "bwrap not found" in text
