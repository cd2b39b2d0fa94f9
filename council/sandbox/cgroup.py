"""One cgroup per sandbox run: a hard cap on tasks and memory, and a list of what to kill.

A pids cgroup caps fork bombs in any language (the kernel counts threads too) and lets
cleanup find every descendant, including ones that called setsid(). A memory cgroup caps
the whole tree's memory, tmpfs pages included, so a fork loop where each child stays under
RLIMIT_AS still cannot take the machine's memory. Both are optional: where this process may
not create cgroups (no delegation on cgroup v2, no write access on v1), runs go without and
`council sandbox --check` says so.

The run's first process joins the cgroup itself before it execs anything (see `join_argv`),
so no fork can escape between spawn and join.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio

log = logging.getLogger("council.sandbox")

CONTROLLERS = ("pids", "memory")
_probed: dict[str, tuple[Path, int] | None] = {}
_stale: list[Path] = []


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


_LIMIT_FILE = {("pids", 1): "pids.max", ("pids", 2): "pids.max"}
_LIMIT_FILE |= {("memory", 1): "memory.limit_in_bytes", ("memory", 2): "memory.max"}


def _try_base(base: Path, controller: str, version: int) -> bool:
    """Create and remove a probe child with a limit set; any failure means 'not here'."""
    probe = base / f"council-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        if version == 2:
            enabled = (base / "cgroup.subtree_control").read_text().split()
            if controller not in enabled:
                (base / "cgroup.subtree_control").write_text(f"+{controller}")
        probe.mkdir()
    except OSError:
        return False
    try:
        value = "8" if controller == "pids" else str(64 * 1024 * 1024)
        (probe / _LIMIT_FILE[controller, version]).write_text(value)
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


def cgroup_base(controller: str) -> tuple[Path, int] | None:
    """Where this process may create `controller` cgroups, and the version (cached)."""
    if controller not in _probed:
        found: tuple[Path, int] | None = None
        v1_root = Path("/sys/fs/cgroup") / controller
        own_v1 = _own_cgroup(controller)
        if (v1_root / "cgroup.procs").exists() and own_v1 is not None:
            base = v1_root / own_v1.lstrip("/")
            if _try_base(base, controller, 1):
                found = (base, 1)
        if found is None:
            mount, own_v2 = _cgroup2_mount(), _own_cgroup(None)
            if mount is not None and own_v2 is not None:
                base = mount / own_v2.lstrip("/")
                listed = base / "cgroup.controllers"
                if (
                    listed.exists()
                    and controller in listed.read_text().split()
                    and _try_base(base, controller, 2)
                ):
                    found = (base, 2)
        _probed[controller] = found
        log.debug("%s cgroup base: %s", controller, found)
    return _probed[controller]


@dataclass
class RunCgroup:
    """The run's cgroup directories: one per controller on v1, often one shared on v2."""

    dirs: dict[str, Path]
    versions: dict[str, int]
    pids_max: int
    memory_max: int

    @classmethod
    def create(cls, run_id: str, pids_max: int, memory_max: int) -> RunCgroup | None:
        for stale in list(_stale):
            with contextlib.suppress(OSError):
                stale.rmdir()
                _stale.remove(stale)
        dirs: dict[str, Path] = {}
        versions: dict[str, int] = {}
        limits = {"pids": pids_max, "memory": memory_max}
        for controller in CONTROLLERS:
            probe = cgroup_base(controller)
            if probe is None:
                continue
            base, version = probe
            path = base / f"council-{run_id}"
            try:
                path.mkdir(exist_ok=version == 2)
                (path / _LIMIT_FILE[controller, version]).write_text(str(limits[controller]))
            except OSError as exc:
                log.debug("no %s cgroup for this run: %s", controller, exc)
                with contextlib.suppress(OSError):
                    path.rmdir()
                continue
            dirs[controller], versions[controller] = path, version
        if not dirs:
            return None
        return cls(dirs, versions, pids_max, memory_max)

    @property
    def layers(self) -> list[str]:
        return [f"cgroup-{controller}" for controller in self.dirs]

    def procs_files(self) -> list[str]:
        """Every distinct `cgroup.procs` the run's first process must join."""
        return sorted({str(path / "cgroup.procs") for path in self.dirs.values()})

    def members(self) -> list[int]:
        pids: set[int] = set()
        for path in self.dirs.values():
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return sorted(pids)

    def _event(self, controller: str, v1_file: str, v1_key: str, v2_key: str) -> int:
        path = self.dirs.get(controller)
        if path is None:
            return 0
        v2 = self.versions[controller] == 2
        name = f"{controller}.events" if v2 else v1_file
        key = v2_key if v2 else v1_key
        try:
            for line in (path / name).read_text().splitlines():
                field, _, value = line.partition(" ")
                if field == key:
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def refused_forks(self) -> int:
        """How many forks the pids limit refused (`max N` in pids.events)."""
        return self._event("pids", "pids.events", "max", "max")

    def oom_kills(self) -> int:
        """Processes the kernel killed for reaching the memory limit."""
        return self._event("memory", "memory.oom_control", "oom_kill", "oom_kill")

    async def kill_all(self) -> None:
        """SIGKILL members until none is left; forks racing the kill are caught next round."""
        for controller, path in self.dirs.items():
            if self.versions[controller] == 2:
                with contextlib.suppress(OSError):
                    (path / "cgroup.kill").write_text("1")
        for _ in range(200):
            pids = self.members()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            await anyio.sleep(0.005)
        log.warning("processes still alive in %s after repeated SIGKILL", self.dirs)

    async def remove(self) -> None:
        for path in dict.fromkeys(self.dirs.values()):
            for _ in range(40):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    await anyio.sleep(0.025)  # killed tasks still exiting
            else:
                log.warning("could not remove %s; will retry on the next run", path)
                _stale.append(path)


def join_argv(procs_files: list[str]) -> list[str]:
    """A `/bin/sh` prefix that moves itself into the run's cgroups, then execs the rest.

    Joining from inside the first process (before it execs bwrap or Python) is the only
    race-free way in: nothing has forked yet. A failed join stops the run with exit 98.
    """
    script = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 98; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "council-sandbox", *procs_files, "--"]


def stragglers(token: str, pgid: int | None) -> list[int]:
    """Live (non-zombie) processes of this run: in its process group, or carrying its token.

    The token catches descendants that left the group with setsid() where neither a PID
    namespace nor a cgroup holds them; reading another process's /proc/<pid>/environ needs
    root or the same user, which is what we are. Zombies run nothing and are skipped.
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


async def kill_everything(pgid: int | None, token: str, cgroup: RunCgroup | None) -> None:
    """SIGKILL the process group, the cgroup, and any straggler; return once none runs.

    Idempotent, and bounded: a process that will not die (stuck in the kernel) is logged.
    """
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    if cgroup is not None:
        await cgroup.kill_all()
    deadline = time.monotonic() + 2.0
    while pids := stragglers(token, pgid):
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


def nproc_limit(max_processes: int) -> int:
    """RLIMIT_NPROC for the child: per user, not per tree, so a non-root limit adds our count."""
    headroom = max_processes + 64  # threads count too
    uid = os.getuid()
    return headroom if uid == 0 else _user_task_count(uid) + headroom
