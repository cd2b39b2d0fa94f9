"""Hostile generated tests that act through a shell or ctypes, judged from outside the sandbox.

Each generated module does what careless model-written code does (clean-up with `rm -rf`,
scratch files in /tmp, reading config from the home directory) or what a buggy one does
(fork loops, memory and disk bombs, endless loops, daemons), mostly where the Python audit
hook cannot see it. Every check is made here, in the parent, after the run: the files still
exist with their contents, nothing appeared, no process carrying the run's marker lives,
the listener saw no connection. Every run must come back as a result.

These tests need bubblewrap and the cgroups the Makefile's machine has; where a layer is
missing they fail with the layer named, since the product's promise is then not kept.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from council.sandbox import ExecutionResult, SandboxLimits, run_tests
from tests.sandbox_probes import Listener, assert_nothing_left

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parent.parent
SHORT = SandboxLimits(timeout_secs=10)


@pytest.fixture(autouse=True)
def _debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="council.sandbox")  # runs' tokens, for the checks


def _require(result: ExecutionResult, *layers: str) -> None:
    missing = [layer for layer in layers if layer not in result.containment]
    assert not missing, f"layers missing on this machine: {missing} (see `council sandbox --check`)"


def _with_marker(marker: str) -> list[int]:
    """Live processes whose command line carries `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    with open(f"/proc/{entry}/stat", "rb") as stat:
                        if stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X"):
                            found.append(int(entry))
        except OSError:
            continue
    return found


def _everything(result: ExecutionResult) -> str:
    return "\n".join([result.stdout_tail, result.stderr_tail, *(c.message for c in result.cases)])


@pytest.fixture
def outside(request: pytest.FixtureRequest):
    """A fresh host directory outside /tmp (which the sandbox replaces with its own)."""
    path = Path(tempfile.mkdtemp(prefix=".hostile-", dir=REPO))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_shell_and_ctypes_writes_outside_do_not_land(outside, caplog):
    host_tmp = Path(tempfile.mkdtemp(prefix="council-hostile-"))
    system = Path(f"/etc/council-hostile-{uuid.uuid4().hex}")
    targets = [outside / "from-shell", host_tmp / "from-shell", outside / "from-ctypes", system]
    test = (
        "import ctypes, os, subprocess\n\n"
        "def test_shell():\n"
        f"    os.system('echo x > {targets[0]}; echo x > {targets[1]}; echo x > {system}')\n"
        f"    done = subprocess.run(['touch', '{outside}/touched'], capture_output=True,\n"
        "                          text=True)\n"
        "    assert 'Read-only file system' in done.stderr\n\n"
        "def test_ctypes():\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        f"    fd = libc.creat({str(targets[2]).encode()!r}, 0o644)\n"
        "    assert fd < 0, 'created a file outside'\n"
    )
    try:
        result = await run_tests({"test_w.py": test}, limits=SHORT)
        _require(result, "fs-readonly")
        for target in [*targets, outside / "touched"]:
            assert not target.exists(), target
        assert result.passed == 2, result.summary()  # each saw its write refused
        assert_nothing_left(caplog)
    finally:
        shutil.rmtree(host_tmp, ignore_errors=True)
        system.unlink(missing_ok=True)


async def test_workspace_files_survive_rm_unlink_and_overwrite(outside, caplog):
    workspace = outside / "ws"
    (workspace / "pkg").mkdir(parents=True)
    original = {"mod.py": "X = 1\n", "pkg/a.py": "A = 2\n", "keep.txt": "precious\n"}
    for name, text in original.items():
        (workspace / name).write_text(text)
    test = (
        "import ctypes, subprocess\n\n"
        "def test_clean_up():\n"
        f"    subprocess.run(['rm', '-rf', {str(workspace)!r}])\n"
        "    libc = ctypes.CDLL(None)\n"
        f"    libc.unlink({str(workspace / 'mod.py').encode()!r})\n"
        f"    subprocess.run(['sh', '-c', 'echo gone > {workspace / 'keep.txt'}'])\n"
        "    from mod import X\n"
        "    assert X == 1\n"
    )
    result = await run_tests(
        {"test_ws.py": test}, workspace=workspace, copy=["mod.py", "pkg"], limits=SHORT
    )
    _require(result, "fs-readonly")
    for name, text in original.items():
        assert (workspace / name).read_text() == text, name
    assert result.ok, result.summary()  # the copies inside were not touched either
    assert_nothing_left(caplog)


async def test_home_directory_is_not_readable(caplog):
    secret = f"home-canary-{uuid.uuid4().hex}"
    canary = Path.home() / f".council-hostile-{uuid.uuid4().hex[:8]}"
    canary.write_text(secret)
    test = (
        "import ctypes, subprocess\n\n"
        "def test_read_home():\n"
        f"    done = subprocess.run(['cat', {str(canary)!r}], capture_output=True, text=True)\n"
        "    libc = ctypes.CDLL(None)\n"
        f"    fd = libc.open({str(canary).encode()!r}, 0)\n"
        f"    listing = subprocess.run(['ls', '-a', {str(Path.home())!r}], capture_output=True,\n"
        "                             text=True).stdout\n"
        "    raise AssertionError(f'REPORT {done.stdout} {done.stderr} fd={fd} ls={listing}')\n"
    )
    try:
        assert canary.read_text() == secret  # the check below can fail
        result = await run_tests({"test_home.py": test}, limits=SHORT)
    finally:
        canary.unlink()
    _require(result, "home-hidden")
    assert "REPORT" in _everything(result), result.summary()  # the child did look
    assert secret not in _everything(result)
    assert "No such file" in _everything(result) and "fd=-1 " in _everything(result)
    assert_nothing_left(caplog)


DRIVER = """
import anyio, json, os, sys
from council.sandbox import SandboxLimits, run_tests
test = sys.argv[1].replace("PARENT_PID", str(os.getpid()))
result = anyio.run(lambda: run_tests({"test_proc.py": test}, limits=SandboxLimits(timeout_secs=10)))
print(json.dumps(result.model_dump()))
"""


async def test_parent_environment_is_not_readable_through_proc():
    """The council process holds a secret in its environment; the child looks for it."""
    secret = f"proc-canary-{uuid.uuid4().hex}"
    test = (
        "import glob, subprocess\n\n"
        "def test_proc():\n"
        "    seen = []\n"
        "    for path in ['/proc/PARENT_PID/environ', *glob.glob('/proc/*/environ'),\n"
        "                 *glob.glob('/proc/*/cmdline')]:\n"
        "        try:\n"
        "            seen.append(open(path, 'rb').read().decode('latin-1'))\n"
        "        except OSError as exc:\n"
        "            seen.append(repr(exc))\n"
        "    seen.append(subprocess.run(['sh', '-c', 'cat /proc/PARENT_PID/environ'],\n"
        "                               capture_output=True, text=True).stdout)\n"
        "    raise AssertionError('REPORT ' + '\\n'.join(seen))\n"
    )
    env = {**os.environ, "COUNCIL_HOSTILE_CANARY": secret}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, test], env=env, cwd=REPO, stdout=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 5
        environ = b""
        while secret.encode() not in environ and time.monotonic() < deadline:
            environ = Path(f"/proc/{driver.pid}/environ").read_bytes()
        assert secret.encode() in environ  # the secret really is there to be stolen
        stdout, _ = driver.communicate(timeout=45)
    finally:
        driver.kill()
    result = ExecutionResult.model_validate(json.loads(stdout.decode().splitlines()[-1]))
    _require(result, "pid-ns")
    assert "REPORT" in _everything(result), result.summary()  # the child did look
    assert secret not in _everything(result)


async def test_loopback_listener_gets_no_connection(caplog):
    listener = Listener()
    port = listener.port
    connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    test = (
        "import ctypes, subprocess, sys\n\n"
        "def test_connect():\n"
        f"    subprocess.run(['bash', '-c', 'echo hi > /dev/tcp/127.0.0.1/{port}'])\n"
        f"    subprocess.run([sys.executable, '-I', '-c', {connect!r}])\n"
    )
    try:
        result = await run_tests({"test_net.py": test}, limits=SHORT)
        connections = listener.connections_before_now()
    finally:
        listener.close()
    _require(result, "netns")
    assert connections == 0
    assert_nothing_left(caplog)


async def test_setsid_daemon_does_not_outlive_the_run(outside, caplog):
    marker = uuid.uuid4().hex
    late = outside / "late"
    daemon = f"sleep 2; : {marker}; echo late > {late}"
    spawn = f"( setsid sh -c '{daemon}' & ) &"
    test = (
        "import ctypes, os, subprocess, sys, time\n\n"
        "def test_daemon():\n"
        f"    subprocess.run(['sh', '-c', {spawn!r}])\n"
        "    libc = ctypes.CDLL(None)\n"
        "    if libc.fork() == 0:\n"
        "        libc.setsid()\n"
        "        if libc.fork() == 0:\n"
        f"            os.execvp('sh', ['sh', '-c', {daemon!r}])\n"
        "        os._exit(0)\n"
        "    time.sleep(0.3)\n"
    )
    result = await run_tests({"test_d.py": test}, limits=SHORT)
    assert result.passed == 1, result.summary()
    assert _with_marker(marker) == []
    time.sleep(2.5)
    assert not late.exists()
    assert _with_marker(marker) == []
    assert_nothing_left(caplog)


async def test_libc_fork_loop_is_capped(caplog):
    marker = uuid.uuid4().hex
    test = (
        "import ctypes, time\n\n"
        "def test_forks():\n"
        "    libc = ctypes.CDLL(None)\n"
        "    made = 0\n"
        "    for _ in range(100000):\n"
        "        pid = libc.fork()\n"
        "        if pid == 0:\n"
        f"            libc.execlp(b'sleep', b'sleep', b'30', b'{marker}', None)\n"
        "            libc._exit(0)\n"
        "        if pid < 0:\n"
        "            break\n"
        "        made += 1\n"
        "    print('forked', made)\n"
        "    assert made < 1000\n"
    )
    started = time.monotonic()
    result = await run_tests({"test_f.py": test}, limits=SandboxLimits(timeout_secs=10))
    assert time.monotonic() - started < 15
    _require(result, "cgroup-pids")
    assert result.passed == 1, result.summary()
    assert any(v.startswith("process limit reached (cgroup") for v in result.violations)
    assert _with_marker(marker) == []
    assert_nothing_left(caplog)


async def test_memory_bomb_is_capped(caplog):
    """Four children each stay under RLIMIT_AS; together they hit the run's memory cgroup."""
    test = (
        "import ctypes, os, time\n\n"
        "def test_bomb():\n"
        "    libc = ctypes.CDLL(None)\n"
        "    libc.malloc.restype = ctypes.c_void_p\n"
        "    for _ in range(4):\n"
        "        if os.fork() == 0:\n"
        "            for _ in range(20):\n"
        "                block = libc.malloc(10 * 2**20)\n"
        "                if block:\n"
        "                    ctypes.memset(block, 1, 10 * 2**20)\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "    time.sleep(3)\n"
    )
    limits = SandboxLimits(timeout_secs=8, memory_mb=256, disk_mb=16)
    started = time.monotonic()
    result = await run_tests({"test_m.py": test}, limits=limits)
    assert time.monotonic() - started < 15
    _require(result, "cgroup-memory")
    assert any(v.startswith("memory limit reached") for v in result.violations), result
    assert_nothing_left(caplog)


async def test_disk_cannot_be_filled(caplog):
    """The child tries to write 1 GiB in its directory and /tmp; the host's disk barely moves."""
    test = (
        "import subprocess\n\n"
        "def test_fill():\n"
        "    script = 'for i in $(seq 1 64); do dd if=/dev/zero of=$D/f$i bs=1M count=8 "
        "2>/dev/null || break; done; du -smx $D'\n"
        "    report = []\n"
        "    for d in ['.', '/tmp', '/dev/shm']:\n"
        "        env = {'D': d, 'PATH': '/usr/bin:/bin'}\n"
        "        out = subprocess.run(['sh', '-c', script], env=env, capture_output=True,\n"
        "                             text=True).stdout\n"
        "        report.append(f'wrote {out.split()[0]} MiB in {d}')\n"
        "    raise AssertionError('\\n'.join(report))\n"
    )
    lowest: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            lowest.append(shutil.disk_usage(tempfile.gettempdir()).free)
            time.sleep(0.02)

    before = shutil.disk_usage(tempfile.gettempdir()).free
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = await run_tests(
            {"test_disk.py": test}, limits=SandboxLimits(timeout_secs=20, disk_mb=32)
        )
    finally:
        stop.set()
        watcher.join()
    _require(result, "disk-quota")
    report = result.cases[0].message
    written = {place: int(mib) for mib, place in re.findall(r"wrote (\d+) MiB in (\S+)", report)}
    assert set(written) == {".", "/tmp", "/dev/shm"}, report
    assert all(mib <= 34 for mib in written.values()), report
    assert before - min(lowest) < 100 * 2**20  # without the cap: 512 MiB per place
    assert_nothing_left(caplog)


async def test_infinite_loops_in_shell_and_python_are_killed(caplog):
    marker = uuid.uuid4().hex
    test = (
        "import subprocess\n\n"
        "def test_spin():\n"
        f"    subprocess.Popen(['sh', '-c', 'while :; do :; done; : {marker}'])\n"
        "    while True:\n"
        "        pass\n"
    )
    started = time.monotonic()
    result = await run_tests({"test_loop.py": test}, limits=SandboxLimits(timeout_secs=2))
    assert time.monotonic() - started < 6
    assert result.timed_out and not result.ok
    assert "test_loop.py::test_spin" in result.summary()
    assert _with_marker(marker) == []
    assert_nothing_left(caplog)
