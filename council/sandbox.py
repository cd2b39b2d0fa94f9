"""Run model-generated code and its tests for real, contained, and always come back with a result.

The tester's pytest run is evidence for the synthesiser, so it has to happen, and it has to
survive the code it runs. Generated code is buggy rather than malicious, but buggy code loops
forever, forks in a loop, writes to `../`, tries the network and reads API keys from the
environment. Every run therefore gets a fresh temporary directory and a child process wrapped
in the layers below; whatever the child does, `run_tests` returns an `ExecutionResult` and
leaves no process behind, also when the awaiting task is cancelled.

Layers (each active one is listed in `ExecutionResult.containment`):

- ``env-scrubbed``: the child's environment is built from an allowlist, never inherited, so
  API keys and other secrets in our environment do not exist for it. Output tails are also
  passed through the secret redactor, as defence in depth.
- ``process-group``: the child gets its own session and process group; on exit, timeout or
  cancellation the whole group is SIGKILLed. Grandchildren that call setsid() leave the group,
  so the cgroup (below) and a /proc scan for this run's `COUNCIL_SANDBOX_ID` token catch those.
- ``rlimits``: CPU seconds, address space, file size, no core dumps and a process count, set
  by the boot hook as the interpreter starts. RLIMIT_NPROC is not enforced for root.
- ``netns``: with ``network=False``, where `unshare --user --map-root-user --net` works, the
  child runs in an empty network namespace (not even loopback is up). Where it does not, only
  the Python guard below cuts the network, and native code can still reach it.
- ``cgroup-pids``: where a pids cgroup (v1, or v2 with the controller delegated) can be
  created, the run gets one with ``pids.max = max_processes + 8``; that caps fork bombs in any
  language and lets cleanup find every descendant. Note that the kernel counts threads too.
- ``audit-hook``: `_sandbox_boot/sitecustomize.py`, loaded by every Python started in the
  sandbox, refuses writes outside the sandbox, network calls and process starts beyond
  ``max_processes`` for the whole run, raising PermissionError and logging a violation.

The audit hook is a safety net against buggy Python, *not a security boundary*: it sees only
what CPython audits, so native extensions, ctypes, or an interpreter started with -I/-S/-E
get past it. Hostile code needs a real isolation layer (a VM or a container runtime); the OS
layers here only bound the damage of accidents.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import anyio
from anyio.abc import ByteReceiveStream, Process
from pydantic import BaseModel, Field

from providers.secrets import REDACTOR

log = logging.getLogger("council.sandbox")

BOOT_DIR = Path(__file__).resolve().parent / "_sandbox_boot"
"""Put first on the child's PYTHONPATH; not a package, only `sitecustomize.py` lives there."""

_RESERVED = ".council"  # the parent's bookkeeping inside the sandbox: junit, violations
_TAIL_CHARS = 4000
_MESSAGE_CHARS = 2000
_TAIL_BYTES = 64 * 1024
_DRAIN_SECS = 2.0
_REAP_SECS = 5.0
_MAX_VIOLATIONS = 50
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_SECRET_NAME = re.compile(r"(?i)(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$")
_DRIVE = re.compile(r"^[A-Za-z]:")


# -- paths ---------------------------------------------------------------------------------


class SandboxPathError(ValueError):
    """A path given for the sandbox is unsafe or unusable; the message names it and says why."""


def safe_relative_path(path: str) -> PurePosixPath:
    """Normalise a model-supplied relative path, rejecting anything that could leave the root.

    Rejected: empty, absolute in POSIX or Windows form, backslashes (Windows separators would
    be literal characters here, a confusing file name at best), NUL bytes, and any `..`.
    """
    if not isinstance(path, str) or not path.strip():
        raise SandboxPathError(f"{path!r}: empty path")
    if "\x00" in path:
        raise SandboxPathError(f"{path!r}: contains a NUL byte")
    if "\\" in path:
        raise SandboxPathError(f"{path!r}: contains a backslash (use '/' separators)")
    if path.startswith("/") or _DRIVE.match(path):
        raise SandboxPathError(f"{path!r}: absolute path; paths must be relative")
    pure = PurePosixPath(path)
    if ".." in pure.parts:
        raise SandboxPathError(f"{path!r}: contains '..'")
    if not pure.parts:
        raise SandboxPathError(f"{path!r}: names the root itself, not a file")
    return pure


def confine(root: Path, path: str) -> Path:
    """`root / path`, resolved, refusing symlinks that lead out of `root`.

    Only components that already exist can be symlinks; a missing tail resolves lexically,
    and `safe_relative_path` has already ruled out `..`.
    """
    relative = safe_relative_path(path)
    base = root.resolve()
    current = base
    for part in relative.parts:
        current = current / part
        if current.is_symlink() and not current.resolve().is_relative_to(base):
            raise SandboxPathError(
                f"{path!r}: {current.relative_to(base)} is a symlink to {current.resolve()}, "
                f"outside {base}"
            )
    target = (base / relative).resolve()
    if not target.is_relative_to(base):  # e.g. a link out and back in that we did not see
        raise SandboxPathError(f"{path!r}: resolves to {target}, outside {base}")
    return target


# -- models --------------------------------------------------------------------------------


class SandboxLimits(BaseModel, frozen=True):
    """What one run may use. Mirrors `providers.settings.SandboxConfig`."""

    timeout_secs: float = Field(30.0, gt=0, description="Wall clock for the whole run.")
    cpu_secs: int = Field(30, ge=1, description="RLIMIT_CPU per process.")
    memory_mb: int = Field(2048, ge=64, description="RLIMIT_AS per process.")
    file_size_mb: int = Field(64, ge=1, description="RLIMIT_FSIZE.")
    max_processes: int = Field(32, ge=1, description="Process starts allowed in the whole run.")
    network: bool = Field(False, description="False: cut where the OS allows, plus the guard.")


DEFAULT_LIMITS = SandboxLimits()


Outcome = Literal["passed", "failed", "error", "skipped"]


class CaseResult(BaseModel):
    nodeid: str
    name: str
    outcome: Outcome
    message: str = ""
    duration_s: float = 0.0


class ExecutionResult(BaseModel):
    """What happened when generated code ran; the synthesiser reads `summary()` and `cases`."""

    exit_code: int | None
    timed_out: bool
    cancelled: bool = Field(
        False, description="Never set by run_tests (cancellation propagates); for callers' records."
    )
    duration_s: float
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    cases: list[CaseResult] = Field(default_factory=list)
    stdout_tail: str = ""
    stderr_tail: str = ""
    containment: list[str] = Field(default_factory=list)
    violations: list[str] = Field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Passing means something actually ran and passed, not merely that nothing failed."""
        return (
            self.exit_code == 0
            and self.failed == 0
            and self.errors == 0
            and not self.timed_out
            and self.passed > 0
        )

    def summary(self) -> str:
        """One line for prompts and logs, e.g. '3 passed, 1 failed in 0.42s'."""
        counts = _counts_text(self.passed, self.failed, self.errors, self.skipped)
        if self.timed_out:
            hung = [c.nodeid for c in self.cases if c.message.startswith(_HUNG)]
            where = f"; hung in {hung[0]}" if hung else ""
            text = f"{self.error or 'timed out'} ({self.passed} passed before the kill{where})"
        elif self.error and not counts:
            text = f"{self.error} ({self.duration_s:.2f}s)"
        elif self.error:
            text = f"{counts} in {self.duration_s:.2f}s ({self.error})"
        else:
            text = f"{counts or 'no tests ran'} in {self.duration_s:.2f}s"
        if self.violations:
            n = len(self.violations)
            text += f"; {n} sandbox violation{'s' if n != 1 else ''}"
        return text


_HUNG = "still running when the run timed out"


def _counts_text(passed: int, failed: int, errors: int, skipped: int) -> str:
    parts = [f"{passed} passed"] if passed else []
    if failed:
        parts.append(f"{failed} failed")
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if skipped:
        parts.append(f"{skipped} skipped")
    return ", ".join(parts)


# -- OS layers: probed once per process ------------------------------------------------------

_netns_ok: bool | None = None
_unshare: str | None = None
_cgroup_probe: tuple[Path, int] | Literal[False] | None = False  # False: not probed yet
_stale_cgroups: list[Path] = []


async def _netns_available() -> bool:
    """Whether an unprivileged network namespace can be made here (cached)."""
    global _netns_ok, _unshare
    if _netns_ok is None:
        exe = shutil.which("unshare")
        ok = False
        if exe:
            try:
                with anyio.fail_after(5):
                    probe = await anyio.run_process(
                        [exe, "--user", "--map-root-user", "--net", "true"],
                        check=False,
                        stdin=subprocess.DEVNULL,
                    )
                ok = probe.returncode == 0
            except (OSError, TimeoutError):
                ok = False
        _netns_ok, _unshare = ok, exe
        log.debug("network namespace available: %s", ok)
    return bool(_netns_ok)


def _own_cgroup(controller: str | None) -> str | None:
    """Our cgroup path in the v1 `controller` hierarchy, or in v2 when `controller` is None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controller is None and hierarchy == "0" and controllers == "":
            return path
        if controller is not None and controller in controllers.split(","):
            return path
    return None


def _cgroup2_mount() -> Path | None:
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return Path(left.split(" ")[4])
    except (OSError, IndexError):
        pass
    return None


def _try_cgroup_base(base: Path, version: int) -> bool:
    """Create and remove a probe child with a pids limit; any failure means 'not here'."""
    probe = base / f"council-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if version == 2 and "pids" not in (base / "cgroup.subtree_control").read_text().split():
            (base / "cgroup.subtree_control").write_text("+pids")
        probe.mkdir()
    except OSError:
        return False
    try:
        (probe / "pids.max").write_text("8")
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


def _cgroup_base() -> tuple[Path, int] | None:
    """Where this process may create pids cgroups, and the cgroup version (cached)."""
    global _cgroup_probe
    if _cgroup_probe is False:
        found: tuple[Path, int] | None = None
        v1_root = Path("/sys/fs/cgroup/pids")
        own_v1 = _own_cgroup("pids")
        if (v1_root / "cgroup.procs").exists() and own_v1 is not None:
            base = v1_root / own_v1.lstrip("/")
            if _try_cgroup_base(base, 1):
                found = (base, 1)
        if found is None:
            mount, own_v2 = _cgroup2_mount(), _own_cgroup(None)
            if mount is not None and own_v2 is not None:
                base = mount / own_v2.lstrip("/")
                controllers = base / "cgroup.controllers"
                if (
                    controllers.exists()
                    and "pids" in controllers.read_text().split()
                    and _try_cgroup_base(base, 2)
                ):
                    found = (base, 2)
        _cgroup_probe = found
        log.debug("pids cgroup base: %s", found)
    return _cgroup_probe


class _PidsCgroup:
    """One run's pids cgroup: a hard cap on tasks, and a list of every descendant to kill."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(cls, run_id: str, limit: int) -> _PidsCgroup | None:
        for stale in list(_stale_cgroups):
            with contextlib.suppress(OSError):
                stale.rmdir()
                _stale_cgroups.remove(stale)
        probe = _cgroup_base()
        if probe is None:
            return None
        base, version = probe
        path = base / f"council-{run_id}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(limit))
        except OSError as exc:
            log.debug("no pids cgroup for this run: %s", exc)
            with contextlib.suppress(OSError):
                path.rmdir()
            return None
        return cls(path, version)

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def add(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            self.procs.write_text(str(pid))

    def members(self) -> list[int]:
        try:
            return [int(p) for p in self.procs.read_text().split()]
        except (OSError, ValueError):
            return []

    def refused_forks(self) -> int:
        """How many forks the pids limit refused (`max N` in pids.events)."""
        try:
            for line in (self.path / "pids.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "max":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    async def kill_all(self) -> None:
        """SIGKILL members until none is left; forks racing the kill are caught next round."""
        if self.version == 2:
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
        for _ in range(200):
            pids = self.members()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            await anyio.sleep(0.005)
        log.warning("processes still alive in %s after repeated SIGKILL", self.path)

    async def remove(self) -> None:
        for _ in range(40):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                await anyio.sleep(0.025)  # killed tasks still exiting
        log.warning("could not remove %s; will retry on the next run", self.path)
        _stale_cgroups.append(self.path)


def _stragglers(token: str, pgid: int | None) -> list[int]:
    """Live (non-zombie) processes of this run: in its process group, or carrying its token.

    The token catches descendants that left the group with setsid(); reading another
    process's /proc/<pid>/environ needs root or the same user, which is what we are.
    Zombies are skipped: they run nothing, and reaping them is their new parent's business.
    """
    needle = f"COUNCIL_SANDBOX_ID={token}".encode()
    own = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            if fields[0] in (b"Z", b"X"):
                continue
            if pgid is not None and int(fields[2]) == pgid:
                found.append(int(entry))
                continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    found.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return found


async def _kill_everything(pgid: int | None, token: str, cgroup: _PidsCgroup | None) -> None:
    """SIGKILL the process group, the cgroup, and any straggler; return once none runs.

    Idempotent, and bounded: a process that will not die (stuck in the kernel) is logged.
    """
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    if cgroup is not None:
        await cgroup.kill_all()
    deadline = time.monotonic() + 2.0
    while pids := _stragglers(token, pgid):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            log.warning("sandbox processes survive SIGKILL: %s", pids)
            return
        await anyio.sleep(0.005)


def _user_task_count(uid: int) -> int:
    """Tasks (threads included) owned by `uid`: RLIMIT_NPROC counts all of them."""
    count = 0
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{entry}").st_uid == uid:
                        count += len(os.listdir(f"/proc/{entry}/task"))
    return count


def _nproc_limit(limits: SandboxLimits) -> int:
    """RLIMIT_NPROC for the child: per user, not per tree, so a non-root limit adds our count."""
    headroom = limits.max_processes + 64  # threads count too
    uid = os.getuid()
    return headroom if uid == 0 else _user_task_count(uid) + headroom


# -- running -------------------------------------------------------------------------------


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


@dataclass
class _Raw:
    """What a finished child left: exit status, output and the files under `.council/`."""

    root: Path
    limits: SandboxLimits
    exit_code: int | None = None
    timed_out: bool = False
    duration_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    python: str = ""
    containment: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    start_error: str | None = None

    @property
    def council(self) -> Path:
        return self.root / _RESERVED


def _child_env(root: Path, token: str, config: dict[str, object]) -> dict[str, str]:
    """An allowlisted environment: nothing secret can be inherited because nothing is."""
    return {
        "PATH": os.environ.get("PATH") or _DEFAULT_PATH,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "LC_ALL": os.environ.get("LC_ALL") or "C.UTF-8",
        "HOME": str(root),
        "TMPDIR": str(root / "tmp"),
        "PYTHONPATH": f"{BOOT_DIR}{os.pathsep}{root}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONUNBUFFERED": "1",
        "COUNCIL_SANDBOX": json.dumps(config),
        "COUNCIL_SANDBOX_ID": token,
    }


def _validate_inputs(files: Mapping[str, str], copy: Sequence[str], workspace: Path | None) -> None:
    """Reject bad paths before anything is created, so the caller's error is immediate."""
    for name in [*files, *copy]:
        if safe_relative_path(name).parts[0] == _RESERVED:
            raise SandboxPathError(f"{name!r}: {_RESERVED}/ is reserved for the sandbox itself")
    if copy and workspace is None:
        raise SandboxPathError(f"{copy[0]!r}: `copy` needs a workspace to copy from")


def _check_tree_links(source: Path, workspace: Path, entry: str) -> None:
    """Every symlink under a copied directory must stay inside the workspace and not loop."""
    for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
        for name in [*dirnames, *filenames]:
            link = Path(dirpath) / name
            if not link.is_symlink():
                continue
            target = link.resolve()
            shown = link.relative_to(workspace)
            if not target.is_relative_to(workspace):
                raise SandboxPathError(
                    f"{entry!r}: {shown} is a symlink to {target}, outside the workspace"
                )
            if link.is_dir() and link.parent.resolve().is_relative_to(target):
                raise SandboxPathError(f"{entry!r}: {shown} is a symlink loop")


def _copy_in(workspace: Path, entries: Sequence[str], root: Path) -> None:
    ws = workspace.resolve()
    for entry in entries:
        source = confine(ws, entry)
        if not source.exists():
            raise SandboxPathError(f"{entry!r}: not found in workspace {ws}")
        destination = root / safe_relative_path(entry)
        try:
            if source.is_dir():
                _check_tree_links(source, ws, entry)
                shutil.copytree(
                    source,
                    destination,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                    ignore_dangling_symlinks=True,
                    dirs_exist_ok=True,
                )
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, destination)
        except OSError as exc:
            raise SandboxPathError(f"{entry!r}: cannot copy into the sandbox: {exc}") from exc


def _write_files(files: Mapping[str, str], root: Path) -> None:
    for name, content in files.items():
        target = confine(root, name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        except OSError as exc:
            raise SandboxPathError(f"{name!r}: cannot write into the sandbox: {exc}") from exc


def _read_violations(council: Path) -> list[str]:
    try:
        with open(council / "violations.log", "rb") as handle:
            raw = handle.read(256 * 1024)
    except OSError:
        return []
    seen: dict[str, None] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.strip():
            seen.setdefault(line.strip(), None)
    lines = list(seen)
    if len(lines) > _MAX_VIOLATIONS:
        extra = len(lines) - _MAX_VIOLATIONS
        lines = [*lines[:_MAX_VIOLATIONS], f"... and {extra} more"]
    return lines


async def _sandboxed(
    files: Mapping[str, str],
    *,
    workspace: Path | None,
    copy: Sequence[str],
    limits: SandboxLimits,
    make_argv: Callable[[Path], list[str]],
    interpret: Callable[[_Raw], ExecutionResult],
) -> ExecutionResult:
    """Prepare a fresh directory, run `make_argv(root)` contained, interpret, clean up."""
    _validate_inputs(files, copy, workspace)
    netns = not limits.network and await _netns_available()
    token = uuid.uuid4().hex
    root = Path(tempfile.mkdtemp(prefix="council-sandbox-")).resolve()
    raw = _Raw(root=root, limits=limits)
    cgroup: _PidsCgroup | None = None
    process: Process | None = None
    spawning = False
    try:
        (root / "tmp").mkdir()
        raw.council.mkdir()
        if copy and workspace is not None:
            _copy_in(workspace, copy, root)
        _write_files(files, root)
        argv = make_argv(root)
        cgroup = _PidsCgroup.create(token, limits.max_processes + 8)
        config: dict[str, object] = {
            "root": str(root),
            "network": limits.network,
            "max_processes": limits.max_processes,
            "cpu_secs": limits.cpu_secs,
            "memory_mb": limits.memory_mb,
            "file_size_mb": limits.file_size_mb,
            "nproc": _nproc_limit(limits),
            "cgroup_procs": str(cgroup.procs) if cgroup else None,
        }
        raw.python = argv[0]
        if shutil.which(argv[0]) is None:
            raw.start_error = f"interpreter not found or not executable: {argv[0]}"
            return interpret(raw)
        if netns and _unshare:
            argv = [_unshare, "--user", "--map-root-user", "--net", "--", *argv]
        raw.containment = ["process-group"]
        started = time.monotonic()
        spawning = True
        try:
            process = await anyio.open_process(
                argv,
                cwd=root,
                env=_child_env(root, token, config),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            raw.start_error = f"could not start {argv[0]}: {exc}"
            return interpret(raw)
        if cgroup is not None:
            cgroup.add(process.pid)  # the boot hook joins too; this covers a child without it
        log.debug("sandbox run %s: pid %d in %s", token, process.pid, root)
        out, err = _Tail(), _Tail()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_pump, process.stdout, out)
            tg.start_soon(_pump, process.stderr, err)
            with anyio.move_on_after(limits.timeout_secs) as deadline:
                raw.exit_code = await process.wait()
            raw.duration_s = time.monotonic() - started
            raw.timed_out = deadline.cancelled_caught
            await _kill_everything(process.pid, token, cgroup)
            with anyio.move_on_after(_DRAIN_SECS):
                code = await process.wait()
                raw.exit_code = None if raw.timed_out else code
                await out.done.wait()
                await err.done.wait()
            tg.cancel_scope.cancel()  # an escaped holder of the pipes must not stall us
        raw.stdout, raw.stderr = out.text(), err.text()
        booted = (raw.council / "violations.log").exists()
        raw.containment += ["rlimits"] if booted else []
        raw.containment += ["netns"] if netns else []
        raw.containment += ["cgroup-pids"] if cgroup else []
        raw.containment += ["audit-hook"] if booted else []
        raw.containment.append("env-scrubbed")
        raw.violations = _read_violations(raw.council)
        refused = cgroup.refused_forks() if cgroup else 0
        if refused:
            raw.violations.append(
                f"process limit reached (cgroup pids.max={limits.max_processes + 8}: "
                f"{refused} forks refused)"
            )
        return interpret(raw)
    finally:
        with anyio.CancelScope(shield=True):
            if spawning:  # also when cancelled inside open_process: the token finds it
                await _kill_everything(process.pid if process else None, token, cgroup)
            if process is not None:
                with anyio.move_on_after(_REAP_SECS):
                    await process.wait()
                with anyio.move_on_after(_REAP_SECS), contextlib.suppress(Exception):
                    await process.aclose()
            if cgroup is not None:
                await cgroup.remove()
            shutil.rmtree(root, ignore_errors=True)


# -- interpreting --------------------------------------------------------------------------


def _redactor() -> Callable[[str], str]:
    """The project redactor, plus the values of our own secret-looking variables.

    The child never had those variables, but it can read files; this costs nothing.
    """
    values = sorted(
        (v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8),
        key=len,
        reverse=True,
    )

    def redact(text: str) -> str:
        for value in values:
            text = text.replace(value, "[redacted]")
        return REDACTOR(text)

    return redact


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    return ""


def _clip(text: str, limit: int = _MESSAGE_CHARS) -> str:
    """About `limit` characters: mostly the start, but keep the end, where the exception is."""
    if len(text) <= limit:
        return text
    head = limit // 3
    return f"{text[:head]}\n[...]\n{text[-(limit - head - 7) :]}"


def _nodeid(classname: str, name: str, root: Path) -> str:
    """Rebuild pytest's node id from JUnit's dotted classname, using the files on disk.

    A collection error comes as classname '' and name 'pkg.test_mod', hence the name is
    tried as part of the file path too.
    """
    parts = [p for p in classname.split(".") if p]
    if not parts:
        parts, name = name.split("."), ""
    for cut in range(len(parts), 0, -1):
        candidate = "/".join(parts[:cut]) + ".py"
        if (root / candidate).is_file():
            return "::".join([candidate, *parts[cut:], *([name] if name else [])])
    return "::".join([*parts, *([name] if name else [])])


_JUNIT_OUTCOMES: dict[str, Outcome] = {"failure": "failed", "error": "error", "skipped": "skipped"}
_CALL_OUTCOMES: dict[str, Outcome] = {"passed": "passed", "failed": "failed", "skipped": "skipped"}


def _parse_junit(path: Path, root: Path) -> list[CaseResult] | None:
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return None
    cases: list[CaseResult] = []
    for case in tree.iter("testcase"):
        outcome: Outcome = "passed"
        message = ""
        for child in case:
            kind = _JUNIT_OUTCOMES.get(child.tag)
            if kind is None:
                continue
            outcome = kind
            head = child.get("message", "")
            body = (child.text or "").strip()
            message = f"{head}\n{body}" if head and body and head not in body else head or body
            if kind != "skipped":
                break
        name = case.get("name", "")
        cases.append(
            CaseResult(
                nodeid=_nodeid(case.get("classname", ""), name, root),
                name=name,
                outcome=outcome,
                message=_clip(message),
                duration_s=float(case.get("time", "0") or 0),
            )
        )
    return cases


def _parse_progress(path: Path, unfinished: str) -> list[CaseResult] | None:
    """Cases from the boot hook's live progress log: what survives a kill.

    A test that started and never reported is an error with the `unfinished` message.
    """
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    cases: dict[str, CaseResult] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        nodeid = str(record.get("nodeid", ""))
        name = nodeid.rsplit("::", 1)[-1]
        if record.get("event") == "start":
            cases[nodeid] = CaseResult(
                nodeid=nodeid, name=name, outcome="error", message=unfinished
            )
            continue
        when, outcome = record.get("when"), record.get("outcome")
        result: Outcome | None = None
        if when == "call":
            result = _CALL_OUTCOMES.get(str(outcome))
            if record.get("xfail"):
                result = "skipped" if outcome == "skipped" else "passed"
        elif outcome == "failed":
            result = "error"
        elif outcome == "skipped":
            result = "skipped"
        elif when == "setup" and nodeid in cases:
            continue
        if result is None:
            continue
        previous = cases.get(nodeid)
        if previous is not None and previous.outcome in ("failed", "error") and when == "teardown":
            continue
        cases[nodeid] = CaseResult(
            nodeid=nodeid,
            name=name,
            outcome=result,
            message=_clip(str(record.get("message", ""))),
            duration_s=float(record.get("duration", 0.0)),
        )
    return list(cases.values())


_SUMMARY_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)")


def _parse_summary(stdout: str) -> dict[str, int] | None:
    """Counts from pytest's last summary line ('1 failed, 2 passed in 0.05s')."""
    for line in reversed(stdout.splitlines()):
        if re.search(r"\bin [\d.]+s\b", line):
            counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
            for number, word in _SUMMARY_COUNT.findall(line):
                key = {"error": "errors", "xfailed": "skipped", "xpassed": "passed"}.get(word, word)
                counts[key] += int(number)
            return counts
    return None


def _failure_reason(raw: _Raw) -> str | None:
    """Why the child produced no usable outcome, or None when it simply ran."""
    if raw.start_error:
        return raw.start_error
    if raw.timed_out:
        return f"timed out after {float(raw.limits.timeout_secs)}s"
    code = raw.exit_code
    if code is None:
        return "the process could not be reaped"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if name == "SIGXCPU":
            return f"killed: CPU limit of {raw.limits.cpu_secs}s exceeded (SIGXCPU)"
        return f"killed by {name}"
    if code == 97 and "council sandbox: bad boot configuration" in raw.stderr:
        return f"sandbox boot failed: {_last_line(raw.stderr)}"
    return None


def _interpret_tests(raw: _Raw) -> ExecutionResult:
    redact = _redactor()
    cases = _parse_junit(raw.council / "junit.xml", raw.root)
    if cases is None:
        if raw.timed_out:
            unfinished = f"{_HUNG} after {float(raw.limits.timeout_secs)}s"
        else:
            unfinished = f"did not finish: {_failure_reason(raw) or 'pytest exited early'}"
        cases = _parse_progress(raw.council / "progress.jsonl", unfinished)
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    key = {"passed": "passed", "failed": "failed", "error": "errors", "skipped": "skipped"}
    for case in cases or []:
        counts[key[case.outcome]] += 1
    if not cases and raw.stdout:
        counts = _parse_summary(raw.stdout) or counts
    error = _failure_reason(raw)
    code = raw.exit_code
    if error is None and code == 1 and "No module named pytest" in raw.stderr and not cases:
        error = f"the sandbox interpreter has no pytest: {raw.python}"
    elif error is None and code not in (0, 1):
        if code == 5:
            error = "no tests collected"
        elif code == 4:
            error = f"pytest usage error: {_last_line(raw.stderr, raw.stdout)}"
        elif code == 3:
            error = f"pytest crashed: internal error: {_last_line(raw.stderr, raw.stdout)}"
        elif not any(counts.values()):
            error = f"pytest crashed (exit code {code}): {_last_line(raw.stderr, raw.stdout)}"
    elif error is None and not any(counts.values()) and code == 1:
        error = f"no test results (exit code 1): {_last_line(raw.stderr, raw.stdout)}"
    cases = [case.model_copy(update={"message": redact(case.message)}) for case in (cases or [])]
    return ExecutionResult(
        exit_code=code,
        timed_out=raw.timed_out,
        duration_s=round(raw.duration_s, 3),
        passed=counts["passed"],
        failed=counts["failed"],
        errors=counts["errors"],
        skipped=counts["skipped"],
        cases=cases,
        stdout_tail=redact(raw.stdout)[-_TAIL_CHARS:],
        stderr_tail=redact(raw.stderr)[-_TAIL_CHARS:],
        containment=raw.containment,
        violations=[redact(v) for v in raw.violations],
        error=redact(error) if error else None,
    )


def _interpret_script(raw: _Raw) -> ExecutionResult:
    redact = _redactor()
    error = _failure_reason(raw)
    success = error is None and raw.exit_code == 0
    return ExecutionResult(
        exit_code=raw.exit_code,
        timed_out=raw.timed_out,
        duration_s=round(raw.duration_s, 3),
        passed=1 if success else 0,
        failed=0 if success else 1,
        stdout_tail=redact(raw.stdout)[-_TAIL_CHARS:],
        stderr_tail=redact(raw.stderr)[-_TAIL_CHARS:],
        containment=raw.containment,
        violations=[redact(v) for v in raw.violations],
        error=redact(error) if error else None,
    )


def _as_argument(path: PurePosixPath, suffix: str = "") -> str:
    """A relative path as a command-line argument that can never be read as an option."""
    text = str(path) + suffix
    return f"./{text}" if text.startswith("-") else text


def _pytest_config_args(root: Path) -> list[str]:
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
    ini = root / _RESERVED / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")
    return ["-c", str(ini)]


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
    `test_paths` entries may carry a `::node` selector.
    """
    paths = list(test_paths) if test_paths is not None else _default_test_paths(files)
    arguments = []
    for entry in paths:
        path, sep, selector = entry.partition("::")
        arguments.append(_as_argument(safe_relative_path(path), sep + selector))

    def make_argv(root: Path) -> list[str]:
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
            str(root / _RESERVED / "junit.xml"),
            *_pytest_config_args(root),
            *arguments,
        ]

    return await _sandboxed(
        files,
        workspace=workspace,
        copy=copy,
        limits=limits,
        make_argv=make_argv,
        interpret=_interpret_tests,
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
    entry_path = safe_relative_path(entry)

    def make_argv(root: Path) -> list[str]:
        if not confine(root, entry).is_file():
            raise SandboxPathError(f"{entry!r}: no such file in the sandbox")
        return [python or sys.executable, _as_argument(entry_path), *args]

    return await _sandboxed(
        files,
        workspace=workspace,
        copy=copy,
        limits=limits,
        make_argv=make_argv,
        interpret=_interpret_script,
    )
