"""Running one sandboxed child: prepare its directory, wrap it in the OS layers, reap it.

Whatever the child does, `_sandboxed` returns an `ExecutionResult` and leaves no process
behind, also when the awaiting task is cancelled: the finally block SIGKILLs the process
group, the run's cgroup and any straggler that carries the run's token, under a shield.

Layout of one run on the host (`base` is a fresh temporary directory):

- ``base/work``: the staged files. Under bwrap the child sees an empty, size-capped tmpfs
  at this same path, and its first step copies the staged files in from ``base/stage``
  (the host's ``base/work`` bound read-only there), so nothing it writes reaches the disk.
- ``base/out``: the parent's bookkeeping (pytest.ini, junit, progress, violations), bound
  writable at the same path; the one host directory the child can write.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath

import anyio
from anyio.abc import ByteReceiveStream, Process

from council.sandbox import layers
from council.sandbox.cgroup import RunCgroup, join_argv, kill_everything, nproc_limit
from council.sandbox.models import DEFAULT_LIMITS, ExecutionResult, SandboxLimits
from council.sandbox.paths import (
    SandboxPathError,
    confine,
    copy_in,
    safe_relative_path,
    tree_bytes,
    validate_inputs,
    write_files,
)
from council.sandbox.report import RawRun, interpret_script, interpret_tests, read_violations

log = logging.getLogger("council.sandbox")

BOOT_DIR = Path(__file__).resolve().parent.parent / "_sandbox_boot"
"""Put first on the child's PYTHONPATH; not a package, only `sitecustomize.py` lives there."""

_TAIL_BYTES = 64 * 1024
_DRAIN_SECS = 2.0
_REAP_SECS = 5.0
_MIB = 1024 * 1024
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class _Tail:
    """Keeps the last bytes of a stream, so a child printing forever cannot eat our memory."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done = anyio.Event()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * _TAIL_BYTES:
            del self.data[:-_TAIL_BYTES]

    def text(self) -> str:
        return bytes(self.data[-_TAIL_BYTES:]).decode("utf-8", "replace")


async def _pump(stream: ByteReceiveStream | None, tail: _Tail) -> None:
    try:
        if stream is not None:
            async for chunk in stream:
                tail.add(chunk)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    finally:
        tail.done.set()


def _child_env(
    work: Path, tmp: Path, token: str, config: dict[str, object], *, own_python: bool
) -> dict[str, str]:
    """An allowlisted environment: nothing secret can be inherited because nothing is.

    PYTEST_DISABLE_PLUGIN_AUTOLOAD keeps pytest from importing every plugin installed next
    to it (a second of start-up with this project's dev tools); the sandbox loads its boot
    hook and the plugins the tests use with `-p`. Another interpreter keeps autoload.
    """
    env = {
        "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "LC_ALL": os.environ.get("LC_ALL") or "C.UTF-8",
        "HOME": str(work),
        "TMPDIR": str(tmp),
        "PYTHONPATH": f"{BOOT_DIR}{os.pathsep}{work}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONUNBUFFERED": "1",
        "COUNCIL_SANDBOX": json.dumps(config),
        "COUNCIL_SANDBOX_ID": token,
    }
    if own_python:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return env


MakeArgv = Callable[[Path, Path], list[str]]
"""(work directory, bookkeeping directory) -> the command to run in the sandbox."""


async def _sandboxed(
    files: Mapping[str, str],
    *,
    workspace: Path | None,
    copy: Sequence[str],
    limits: SandboxLimits,
    make_argv: MakeArgv,
    interpret: Callable[[RawRun], ExecutionResult],
) -> ExecutionResult:
    """Prepare a fresh directory, run `make_argv(work, out)` contained, interpret, clean up."""
    validate_inputs(files, copy, workspace)
    probe = await anyio.to_thread.run_sync(layers.probe)
    layers.warn_missing_once()
    token = uuid.uuid4().hex
    base = Path(tempfile.mkdtemp(prefix="council-sandbox-")).resolve()
    work, out, stage = base / "work", base / "out", base / "stage"
    raw = RawRun(root=work, council=out, limits=limits, wrapped=probe.bwrap is not None)
    cgroup: RunCgroup | None = None
    process: Process | None = None
    spawning = False
    try:
        for folder in (work, out, stage):
            folder.mkdir()
        tmp = Path("/tmp") if probe.bwrap else work / "tmp"
        if copy and workspace is not None:
            copy_in(workspace, copy, work)
        write_files(files, work)
        argv = make_argv(work, out)
        raw.python = argv[0]
        if shutil.which(argv[0]) is None:
            raw.start_error = f"interpreter not found or not executable: {argv[0]}"
            return interpret(raw)
        memory_max = (limits.memory_mb + limits.disk_mb) * _MIB
        cgroup = RunCgroup.create(token, limits.max_processes + 8, memory_max)
        writable = [str(work), str(out), *(["/tmp", "/dev/shm"] if probe.bwrap else [])]
        config: dict[str, object] = {
            "root": str(work),
            "council": str(out),
            "writable": writable,
            "network": limits.network,
            "max_processes": limits.max_processes,
            "cpu_secs": limits.cpu_secs,
            "memory_mb": limits.memory_mb,
            "file_size_mb": limits.file_size_mb,
            "nproc": nproc_limit(limits.max_processes),
        }
        raw.containment = ["process-group", "env-scrubbed"]
        if probe.bwrap:
            staged = tree_bytes(work)
            keep = [*layers.interpreter_paths(argv[0]), BOOT_DIR]
            wrap = layers.bwrap_argv(
                probe.bwrap,
                base=base,
                work=work,
                stage=stage,
                out=out,
                work_bytes=staged + limits.disk_mb * _MIB,
                disk_mb=limits.disk_mb,
                network=limits.network,
                keep=keep,
            )
            argv = [*wrap, "--", *layers.copy_in_argv(stage), *argv]
            cut = [] if limits.network else ["netns"]
            raw.containment += [n for n in layers.BWRAP_LAYERS if n != "netns"] + cut
        else:
            tmp.mkdir()
            if probe.unshare and not limits.network:
                argv = [probe.unshare, "--user", "--map-root-user", "--net", "--", *argv]
                raw.containment.append("netns")
        if cgroup is not None:
            argv = [*join_argv(cgroup.procs_files()), *argv]
            raw.containment += cgroup.layers
        started = time.monotonic()
        spawning = True
        try:
            process = await anyio.open_process(
                argv,
                cwd=work,
                env=_child_env(work, tmp, token, config, own_python=_is_own(raw.python)),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            raw.start_error = f"could not start {argv[0]}: {exc}"
            return interpret(raw)
        log.debug("sandbox run %s: pid %d in %s", token, process.pid, work)
        stdout, stderr = _Tail(), _Tail()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_pump, process.stdout, stdout)
            tg.start_soon(_pump, process.stderr, stderr)
            with anyio.move_on_after(limits.timeout_secs) as deadline:
                raw.exit_code = await process.wait()
            raw.duration_s = time.monotonic() - started
            raw.timed_out = deadline.cancelled_caught
            await kill_everything(process.pid, token, cgroup)
            with anyio.move_on_after(_DRAIN_SECS):
                code = await process.wait()
                raw.exit_code = None if raw.timed_out else code
                await stdout.done.wait()
                await stderr.done.wait()
            tg.cancel_scope.cancel()  # an escaped holder of the pipes must not stall us
        raw.stdout, raw.stderr = stdout.text(), stderr.text()
        if (out / "violations.log").exists():  # the boot hook ran
            raw.containment += ["rlimits", "audit-hook"]
        raw.violations = read_violations(out)
        _cgroup_violations(raw, cgroup)
        return interpret(raw)
    finally:
        with anyio.CancelScope(shield=True):
            if spawning:  # also when cancelled inside open_process: the token finds it
                await kill_everything(process.pid if process else None, token, cgroup)
            if process is not None:
                with anyio.move_on_after(_REAP_SECS):
                    await process.wait()
                with anyio.move_on_after(_REAP_SECS), contextlib.suppress(Exception):
                    await process.aclose()
            if cgroup is not None:
                await cgroup.remove()
            shutil.rmtree(base, ignore_errors=True)


def _is_own(python: str) -> bool:
    return os.path.realpath(shutil.which(python) or python) == os.path.realpath(sys.executable)


def _cgroup_violations(raw: RawRun, cgroup: RunCgroup | None) -> None:
    if cgroup is None:
        return
    refused = cgroup.refused_forks()
    if refused:
        raw.violations.append(
            f"process limit reached (cgroup pids.max={cgroup.pids_max}: {refused} forks refused)"
        )
    killed = cgroup.oom_kills()
    if killed:
        raw.violations.append(
            f"memory limit reached (cgroup limit {cgroup.memory_max // _MIB} MiB: "
            f"{killed} process{'es' if killed != 1 else ''} killed)"
        )


def _as_argument(path: PurePosixPath, suffix: str = "") -> str:
    """A relative path as a command-line argument that can never be read as an option."""
    text = str(path) + suffix
    return f"./{text}" if text.startswith("-") else text


def _pytest_config_args(root: Path, council: Path) -> list[str]:
    """`-c` an empty ini unless the files bring their own pytest configuration.

    Without it pytest would keep searching upwards from the sandbox, into whatever pytest.ini
    or pyproject.toml happens to sit in the temp directory's parents.
    """
    if (root / "pytest.ini").is_file() or (root / ".pytest.ini").is_file():
        return []
    markers = {"pyproject.toml": "tool.pytest", "tox.ini": "[pytest]", "setup.cfg": "[tool:pytest]"}
    for name, marker in markers.items():
        with contextlib.suppress(OSError):
            if marker in (root / name).read_text(encoding="utf-8", errors="replace"):
                return []
    ini = council / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")
    return ["-c", str(ini)]


_PLUGIN_TRIGGERS = {
    "pytest-asyncio": re.compile(r"\basyncio\b"),
    "anyio": re.compile(r"\banyio\b"),
    "pytest-mock": re.compile(r"\bmocker\b"),
    "hypothesis": re.compile(r"\bhypothesis\b"),
    "pytest-timeout": re.compile(r"\btimeout\b"),
}
"""Installed pytest plugins worth loading when the tests mention them (autoload is off)."""


@functools.cache
def _installed_plugins() -> dict[str, str]:
    """Distribution name -> the module its `pytest11` entry point loads, for our interpreter."""
    found = {}
    for point in importlib.metadata.entry_points(group="pytest11"):
        if point.dist is not None:
            found[point.dist.name.lower()] = point.value.split(":")[0]
    return found


def _plugin_args(files: Mapping[str, str], python: str | None) -> list[str]:
    """`-p` for each installed plugin the generated tests use (asyncio marks, mocker, ...).

    Loading only these keeps start-up near pytest's own (about 0.15 s instead of 1.5 s with
    every plugin of this environment). Another interpreter's plugins are unknown here, so
    for it autoload stays on.
    """
    if python is not None and not _is_own(python):
        return []
    text = "\n".join(content for name, content in files.items() if name.endswith(".py"))
    installed = _installed_plugins()
    args = []
    for dist, pattern in _PLUGIN_TRIGGERS.items():
        module = installed.get(dist)
        if module and pattern.search(text):
            args += ["-p", module]
    return args


def _default_test_paths(files: Mapping[str, str]) -> list[str]:
    chosen = []
    for name in files:
        base = safe_relative_path(name).name
        if base.endswith(".py") and (base.startswith("test_") or base.endswith("_test.py")):
            chosen.append(name)
    return chosen


async def run_tests(
    files: Mapping[str, str],
    *,
    workspace: Path | None = None,
    copy: Sequence[str] = (),
    test_paths: Sequence[str] | None = None,
    limits: SandboxLimits = DEFAULT_LIMITS,
    python: str | None = None,
) -> ExecutionResult:
    """Write `files` (after copying `copy` from `workspace`) and run pytest on them, contained.

    Raises SandboxPathError for unsafe or missing paths in `files`, `copy` and `test_paths`;
    everything the child does, however it misbehaves, comes back as the result.
    `test_paths` entries may carry a `::node` selector. `python` (else `limits.python`, else
    council's own interpreter) runs pytest.
    """
    python = python or limits.python
    paths = list(test_paths) if test_paths is not None else _default_test_paths(files)
    arguments = []
    for entry in paths:
        path, sep, selector = entry.partition("::")
        arguments.append(_as_argument(safe_relative_path(path), sep + selector))

    plugins = _plugin_args(files, python)

    def make_argv(root: Path, council: Path) -> list[str]:
        return [
            python or sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "sitecustomize",  # the boot hook's progress reporter (survives a timeout)
            "-o",
            "addopts=",
            "--rootdir",
            str(root),
            "--confcutdir",  # else `-c .council/pytest.ini` would hide a root conftest.py
            str(root),
            "--junitxml",
            str(council / "junit.xml"),
            *_pytest_config_args(root, council),
            *plugins,
            *arguments,
        ]

    return await _sandboxed(
        files,
        workspace=workspace,
        copy=copy,
        limits=limits,
        make_argv=make_argv,
        interpret=interpret_tests,
    )


async def run_script(
    files: Mapping[str, str],
    entry: str,
    *,
    workspace: Path | None = None,
    copy: Sequence[str] = (),
    limits: SandboxLimits = DEFAULT_LIMITS,
    python: str | None = None,
    args: Sequence[str] = (),
) -> ExecutionResult:
    """Run `python entry args...` in the same sandbox (doctests, examples).

    `cases` stays empty; `passed` is 1 when the script exits 0, else `failed` is 1.
    """
    python = python or limits.python
    entry_path = safe_relative_path(entry)

    def make_argv(root: Path, _council: Path) -> list[str]:
        if not confine(root, entry).is_file():
            raise SandboxPathError(f"{entry!r}: no such file in the sandbox")
        return [python or sys.executable, _as_argument(entry_path), *args]

    return await _sandboxed(
        files,
        workspace=workspace,
        copy=copy,
        limits=limits,
        make_argv=make_argv,
        interpret=interpret_script,
    )
