"""The OS layers a sandbox run gets on this machine, probed once, and the bwrap command line.

The filesystem, home, /proc and network confinement is built with bubblewrap (`bwrap`,
Debian's `bubblewrap` package), the tool Flatpak and Claude Code's sandbox use. It was chosen
over hand-made `unshare` + mount calls and over Landlock because:

- it builds exactly the view we need in one exec (a few ms): the whole filesystem bound
  read-only, size-capped tmpfs over the run's directory, /tmp and /dev/shm, an empty tmpfs
  over the home directories, a fresh /proc for a new PID namespace, and new user, IPC, UTS
  and network namespaces; mounts are set up in the right order, submounts included, and
  `--die-with-parent` ties the namespace's init to us, so the kernel kills the whole tree;
- it works unprivileged wherever user namespaces are allowed, and as root;
- Landlock confines writes but hides nothing from reading (home, /proc/<pid>/environ) and
  needs a 5.13+ kernel and ctypes glue; a hand-made mount namespace would be our own
  security-critical code where a well-kept tool exists.

Where bwrap is missing or refused (no unprivileged user namespaces, a restrictive AppArmor
profile), runs go on with the layers that still work, and one warning names what is lost.
`council sandbox --check` prints the table below for this machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from council.sandbox.cgroup import cgroup_base

log = logging.getLogger("council.sandbox")


@dataclass(frozen=True)
class Layer:
    name: str
    active: bool
    stops: str
    without: str
    detail: str = ""


_STOPS = {
    "fs-readonly": (
        "writes anywhere but the run's directory and its private /tmp, from any language",
        "a shell command or ctypes call can write or delete any file the user can",
    ),
    "home-hidden": (
        "reading ~/.ssh, ~/.config, ~/.aws, ~/.netrc and other users' homes",
        "generated code can read every secret in the home directory",
    ),
    "pid-ns": (
        "seeing other processes; reading their /proc/<pid>/environ and cmdline",
        "generated code can read the environment (API keys) of the user's other processes",
    ),
    "netns": (
        "any network use, loopback services included",
        "only the Python guard cuts the network; native code and shells reach it",
    ),
    "disk-quota": (
        "filling the disk: new files in the run's directory, /tmp and /dev/shm are capped",
        "a loop writing files can fill the user's disk (RLIMIT_FSIZE caps one file only)",
    ),
    "cgroup-pids": (
        "fork bombs in any language (threads counted); finds every descendant to kill",
        "RLIMIT_NPROC and the Python guard only; RLIMIT_NPROC is not enforced for root",
    ),
    "cgroup-memory": (
        "a tree of processes together taking the machine's memory",
        "each process is held to RLIMIT_AS, but many processes together are not",
    ),
    "process-group": (
        "stray children of the run outliving it",
        "-",
    ),
    "rlimits": (
        "runaway CPU, memory, file size in one process; core dumps",
        "-",
    ),
    "env-scrubbed": (
        "API keys and other secrets inherited through the environment",
        "-",
    ),
    "audit-hook": (
        "Python code writing outside, using the network or spawning past the cap, with a "
        "clear PermissionError and a logged violation",
        "-",
    ),
}
BWRAP_LAYERS = ("fs-readonly", "home-hidden", "pid-ns", "netns", "disk-quota")


@dataclass(frozen=True)
class Probe:
    bwrap: str | None
    bwrap_error: str | None
    unshare: str | None
    """`unshare` that can make a network namespace, the fallback when bwrap is missing."""


def _bwrap_probe_argv(exe: str) -> list[str]:
    return [
        exe,
        *("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"),
        *("--tmpfs", "/tmp", "--unshare-all", "--die-with-parent", "--new-session"),
        *("--cap-drop", "ALL", "--", "/bin/true"),
    ]


def _runs(argv: list[str]) -> str | None:
    """None when `argv` exits 0, else why not (its last stderr line)."""
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=10, stdin=subprocess.DEVNULL, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


@cache
def probe() -> Probe:
    """Which namespace tools work here; run once per process (about 10 ms)."""
    bwrap = shutil.which("bwrap")
    error = None
    if bwrap is None:
        error = "bwrap not found (install Debian's or your distribution's `bubblewrap`)"
    else:
        failure = _runs(_bwrap_probe_argv(bwrap))
        if failure is not None:
            error, bwrap = f"bwrap is installed but refused to run: {failure}", None
    unshare = shutil.which("unshare")
    if unshare and _runs([unshare, "--user", "--map-root-user", "--net", "/bin/true"]):
        unshare = None
    found = Probe(bwrap=bwrap, bwrap_error=error, unshare=unshare)
    log.debug("sandbox probe: %s", found)
    return found


def check_layers() -> list[Layer]:
    """Every layer with whether it is active on this machine, and why not."""
    found = probe()
    active: dict[str, str | None] = {}  # name -> None when active, else why not
    for name in BWRAP_LAYERS:
        active[name] = None if found.bwrap else found.bwrap_error
    if not found.bwrap and found.unshare:
        active["netns"] = None
    elif not found.bwrap:
        active["netns"] = f"{found.bwrap_error}; `unshare --user --net` is refused too"
    for controller in ("pids", "memory"):
        why = "no delegated or writable cgroup for this user"
        active[f"cgroup-{controller}"] = None if cgroup_base(controller) else why
    active["process-group"] = active["rlimits"] = None
    active["env-scrubbed"] = active["audit-hook"] = None
    return [
        Layer(name, why is None, *_STOPS[name], detail=why or "") for name, why in active.items()
    ]


def print_layers(*, as_json: bool = False) -> int:
    """`council sandbox --check`: the table for this machine; 1 when a layer is missing."""
    found = check_layers()
    if as_json:
        print(json.dumps([asdict(layer) for layer in found], indent=2))
    else:
        width = max(len(layer.name) for layer in found)
        for layer in found:
            mark = "active " if layer.active else "MISSING"
            print(f"{layer.name:<{width}}  {mark}  stops {layer.stops}")
            if not layer.active:
                print(f"{'':<{width}}           without it: {layer.without}")
                print(f"{'':<{width}}           why: {layer.detail}")
    return 0 if all(layer.active for layer in found) else 1


_warned = False


def warn_missing_once() -> None:
    """Log one warning per process naming each missing layer and what it costs."""
    global _warned
    if _warned:
        return
    _warned = True
    missing = [layer for layer in check_layers() if not layer.active]
    if missing:
        lines = [f"  - {layer.name}: {layer.without} ({layer.detail})" for layer in missing]
        log.warning(
            "the sandbox runs without %d OS layer(s); `council sandbox --check` shows all:\n%s",
            len(missing),
            "\n".join(lines),
        )


def home_dirs() -> list[Path]:
    """Directories to hide: $HOME, the user's passwd home, /root and /home."""
    found = [os.environ.get("HOME", ""), "/root", "/home"]
    with contextlib.suppress(KeyError):
        found.append(pwd.getpwuid(os.getuid()).pw_dir)
    unique = {Path(p).resolve() for p in found if p and p != "/"}
    return sorted(p for p in unique if p.is_dir() and p != Path("/"))


@cache
def interpreter_paths(python: str) -> tuple[Path, ...]:
    """What `python` needs to start and import pytest: its prefixes and `sys.path`.

    These are bound back read-only where a tmpfs hides them (a virtualenv in the home
    directory or a checkout in /tmp). For our own interpreter the answer is `sys`; for
    another one it is asked once.
    """
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        entries = [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]
    else:
        code = "import sys, json; print(json.dumps([sys.prefix, sys.base_prefix, *sys.path]))"
        try:
            out = subprocess.run(
                [python, "-c", code], capture_output=True, timeout=20, check=True, text=True
            ).stdout
            entries = json.loads(out)
        except (OSError, ValueError, subprocess.SubprocessError):
            entries = []
    entries += [os.path.dirname(python), os.path.dirname(os.path.realpath(python))]
    paths = {Path(e).resolve() for e in entries if e and os.path.isabs(e)}
    return tuple(sorted(p for p in paths if p.exists()))


def _under(path: Path, parents: Iterable[Path]) -> bool:
    return any(path == parent or path.is_relative_to(parent) for parent in parents)


def bwrap_argv(
    exe: str,
    *,
    base: Path,
    work: Path,
    stage: Path,
    out: Path,
    work_bytes: int,
    disk_mb: int,
    network: bool,
    keep: Iterable[Path],
) -> list[str]:
    """The bwrap prefix for one run; paths inside are the same as outside.

    `work` becomes a tmpfs of `work_bytes` (what was staged plus `disk_mb`); the staged
    files are read-only at `stage`, to be copied in; `out` (the parent's bookkeeping) is
    the only host directory bound writable. `keep` are host paths bound back read-only
    after the tmpfs mounts that would hide them (the interpreter, the boot hook).
    """
    size = str(disk_mb * 1024 * 1024)
    hidden = [*home_dirs(), Path("/tmp")]
    argv = [exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for path in home_dirs():
        argv += ["--size", size, "--tmpfs", str(path)]
    argv += ["--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm"]
    rebind = sorted(
        {p for p in keep if _under(p, hidden) and not any(h.is_relative_to(p) for h in hidden)}
    )
    for path in rebind:
        if not any(path != other and path.is_relative_to(other) for other in rebind):
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--dir", str(base)]
    argv += ["--size", str(work_bytes), "--tmpfs", str(work)]
    argv += ["--ro-bind", str(work), str(stage), "--bind", str(out), str(out)]
    argv += ["--unshare-all", *(["--share-net"] if network else [])]
    argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--chdir", str(work)]
    return argv


def copy_in_argv(stage: Path) -> list[str]:
    """Inside the sandbox: copy the staged files into the (empty) work tmpfs, then exec."""
    return ["/bin/sh", "-c", 'cp -a "$0"/. . || exit 96; exec "$@"', str(stage)]
