"""Boot hook for every Python interpreter started inside a council sandbox.

`council.sandbox` puts this folder first on the child's PYTHONPATH, so `site` imports this
module before any test or generated code runs, in pytest and in every Python subprocess the
tests start (they inherit the environment). It reads the run's `COUNCIL_SANDBOX` JSON and:

1. sets resource limits (CPU seconds, address space, file size, process count, no cores);
2. installs an audit hook that refuses writes outside the run's writable places, network use
   (unless allowed), and process creation beyond the run's budget. Each refusal raises
   PermissionError in the offending code and is appended to `violations.log` in the run's
   bookkeeping directory, which the parent reports.

The audit hook is the messenger, not the boundary: it sees only what CPython audits, so
native extensions, ctypes, shells, or a child interpreter started with -I/-S/-E get past it.
The OS layers the parent adds (bubblewrap's read-only filesystem and namespaces, cgroups,
process group, rlimits) are what hold regardless.

The same module doubles as a tiny pytest plugin (the parent passes `-p sitecustomize`):
it streams each test's start and outcome to `progress.jsonl` in the bookkeeping directory,
so that a run killed on timeout still says which tests passed and which one hung.

PYTEST_DONT_REWRITE: this module is imported long before pytest, so pytest must not try to
rewrite its asserts (it has none) or warn that it cannot.

Messages go to stderr with `sys.stderr.write` rather than `logging`: this runs at interpreter
start, in every process, and importing logging there would slow every run for nothing.
"""

from __future__ import annotations

import _thread
import json
import os
import sys
from typing import Any

_CONFIG_ENV = "COUNCIL_SANDBOX"
_MAX_LOGGED = 200
"""Per process: a loop that retries a refused call must not fill the disk with reports."""

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITE_MODE_CHARS = frozenset("wax+")
_ALWAYS_WRITABLE = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr"})
_AF_UNIX = 1  # socket.AF_UNIX on Linux; importing socket at every start costs more

_guard = _thread._local()
_council = ""
_writable: tuple[str, ...] = ()
_writable_prefixes: tuple[str, ...] = ()
_network = True
_max_processes = 0
_violations_fd: int | None = None
_spawn_fd: int | None = None
_logged = 0
_progress_fd: int | None = None


def _outside(path: Any, dir_fd: Any = None) -> str | None:
    """The resolved path when `path` lies outside the root, else None (also for fds)."""
    if isinstance(path, int) or path is None:
        return None
    text = os.fsdecode(os.fspath(path))
    if text in _ALWAYS_WRITABLE:
        return None
    if not os.path.isabs(text):
        if isinstance(dir_fd, int) and dir_fd >= 0:
            base = os.readlink(f"/proc/self/fd/{dir_fd}")
        else:
            base = os.getcwd()
        text = os.path.join(base, text)
    resolved = os.path.realpath(text)
    if resolved in _writable or resolved.startswith(_writable_prefixes):
        return None
    return resolved


def _on_open(args: tuple[Any, ...]) -> str | None:
    path, mode, flags = args[0], args[1], args[2]
    writing = (isinstance(mode, str) and not _WRITE_MODE_CHARS.isdisjoint(mode)) or (
        isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
    )
    if not writing:
        return None
    where = _outside(path)
    return f"write outside sandbox: {where}" if where else None


def _path_check(op: str, path_index: int, dir_fd_index: int | None) -> Any:
    def check(args: tuple[Any, ...]) -> str | None:
        dir_fd = (
            args[dir_fd_index] if dir_fd_index is not None and len(args) > dir_fd_index else None
        )
        where = _outside(args[path_index], dir_fd)
        return f"{op} outside sandbox: {where}" if where else None

    return check


def _on_rename(args: tuple[Any, ...]) -> str | None:
    src = _outside(args[0], args[2] if len(args) > 2 else None)
    dst = _outside(args[1], args[3] if len(args) > 3 else None)
    if src or dst:
        return f"rename outside sandbox: {src or args[0]} -> {dst or args[1]}"
    return None


def _on_link(args: tuple[Any, ...]) -> str | None:
    # A hard link to an outside file would let a later in-sandbox write change that file.
    where = _outside(args[0], args[2] if len(args) > 2 else None) or _outside(
        args[1], args[3] if len(args) > 3 else None
    )
    return f"link outside sandbox: {where}" if where else None


def _on_sqlite(args: tuple[Any, ...]) -> str | None:
    database = args[0] if args else None
    if isinstance(database, bytes | str) and os.fsdecode(database) in (":memory:", ""):
        return None
    if isinstance(database, str) and database.startswith("file:"):
        return None
    where = _outside(database)
    return f"write outside sandbox: {where}" if where else None


def _on_socket(args: tuple[Any, ...], op: str) -> str | None:
    sock, address = args[0], args[1] if len(args) > 1 else None
    if op in ("sendto", "sendmsg") and address is None:
        return None
    try:
        if int(sock.family) == _AF_UNIX:
            return None
    except Exception:
        pass
    return f"network: {op} {address!r}"


def _on_lookup(args: tuple[Any, ...], op: str) -> str | None:
    target = args[:2] if op == "getaddrinfo" else (args[0] if args else None)
    return f"network: {op} {target!r}"


def _on_spawn(_args: tuple[Any, ...]) -> str | None:
    """Count process starts across the whole run in a shared append-only file.

    One byte per start; the file's size is the run-wide count, so forked children (which
    would each inherit a private counter) cannot multiply the budget.
    """
    if _spawn_fd is None:
        return None
    refused = f"process limit reached ({_max_processes})"
    if os.fstat(_spawn_fd).st_size >= _max_processes:
        return refused
    os.write(_spawn_fd, b".")
    return refused if os.fstat(_spawn_fd).st_size > _max_processes else None


_HANDLERS: dict[str, Any] = {
    "open": _on_open,
    "os.remove": _path_check("remove", 0, 1),
    "os.rmdir": _path_check("rmdir", 0, 1),
    "os.mkdir": _path_check("mkdir", 0, 2),
    "os.chmod": _path_check("chmod", 0, 2),
    "os.chown": _path_check("chown", 0, 3),
    "os.truncate": _path_check("truncate", 0, None),
    "os.symlink": _path_check("symlink", 1, 2),
    "shutil.rmtree": _path_check("rmtree", 0, 1),
    "os.rename": _on_rename,
    "os.link": _on_link,
    "sqlite3.connect": _on_sqlite,
}
# `os.exec` is not counted: it replaces a process rather than adding one.
_SPAWN_EVENTS = (
    "os.fork",
    "os.forkpty",
    "os.posix_spawn",
    "os.spawn",
    "os.system",
    "subprocess.Popen",
)
_NETWORK_EVENTS = {
    "socket.connect": "connect",
    "socket.bind": "bind",
    "socket.sendto": "sendto",
    "socket.sendmsg": "sendmsg",
}
_LOOKUP_EVENTS = {
    "socket.getaddrinfo": "getaddrinfo",
    "socket.gethostbyname": "gethostbyname",
    "socket.gethostbyaddr": "gethostbyaddr",
}


def _append(fd: int, text: str) -> bool:
    """One write(2) on an O_APPEND fd: lines from many processes never interleave."""
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    except OSError:
        return False
    return True


def _report(line: str) -> None:
    global _logged
    if _violations_fd is None or _logged >= _MAX_LOGGED:
        return
    _logged += 1
    text = line.replace("\n", "\\n")[:500] + "\n"
    _append(_violations_fd, text)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """The audit hook: cheap dict lookup first, since it sees every audited event."""
    handler = _HANDLERS.get(event)
    if handler is None or getattr(_guard, "busy", False):
        return
    _guard.busy = True
    try:
        try:
            refusal = handler(args)
        except Exception:  # a bug in the guard must not break the code under test
            refusal = None
        if refusal:
            _report(refusal)
            raise PermissionError(f"council sandbox refused: {refusal}")
    finally:
        _guard.busy = False


def _set_limits(config: dict[str, Any]) -> None:
    import resource

    mib = 1024 * 1024
    wanted = [
        (resource.RLIMIT_CPU, config["cpu_secs"], config["cpu_secs"] + 1),
        (resource.RLIMIT_AS, config["memory_mb"] * mib, config["memory_mb"] * mib),
        (resource.RLIMIT_FSIZE, config["file_size_mb"] * mib, config["file_size_mb"] * mib),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    if config.get("nproc"):
        wanted.append((resource.RLIMIT_NPROC, config["nproc"], config["nproc"]))
    for which, soft, hard in wanted:
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError) as exc:
            sys.stderr.write(f"council sandbox: could not set rlimit {which}: {exc}\n")


def _open_shared(name: str, flags: int) -> int | None:
    try:
        return os.open(os.path.join(_council, name), flags | os.O_APPEND, 0o600)
    except OSError:
        return None


def _boot() -> None:
    global _council, _writable, _writable_prefixes, _network, _max_processes
    global _violations_fd, _spawn_fd
    raw = os.environ.get(_CONFIG_ENV)
    if not raw:
        return
    try:
        config = json.loads(raw)
        _set_limits(config)
        _council = config["council"]
        _writable = tuple(os.path.realpath(p) for p in config["writable"])
        _writable_prefixes = tuple(p.rstrip("/") + "/" for p in _writable)
        _network = bool(config["network"])
        _max_processes = int(config["max_processes"])
        _violations_fd = _open_shared("violations.log", os.O_WRONLY | os.O_CREAT)
        _spawn_fd = _open_shared("spawns", os.O_RDWR | os.O_CREAT)
    except Exception as exc:
        # Running unguarded would silently drop containment: refuse to run at all.
        sys.stderr.write(f"council sandbox: bad boot configuration: {exc!r}\n")
        os._exit(97)
    for event in _SPAWN_EVENTS:
        _HANDLERS[event] = _on_spawn
    if not _network:
        for event, op in _NETWORK_EVENTS.items():
            _HANDLERS[event] = lambda args, op=op: _on_socket(args, op)
        for event, op in _LOOKUP_EVENTS.items():
            _HANDLERS[event] = lambda args, op=op: _on_lookup(args, op)
    sys.addaudithook(_audit)


# --- pytest plugin (loaded with `-p sitecustomize`) -------------------------------------


def _progress(record: dict[str, Any]) -> None:
    global _progress_fd
    if not _council:
        return
    if _progress_fd is None:
        _progress_fd = _open_shared("progress.jsonl", os.O_WRONLY | os.O_CREAT)
        if _progress_fd is None:
            return
    _append(_progress_fd, json.dumps(record) + "\n")


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    """Record that a test started, so a hang can be pinned on it."""
    _progress({"event": "start", "nodeid": nodeid})


def pytest_runtest_logreport(report: Any) -> None:
    """Record each phase's outcome as it happens, surviving a later kill."""
    _progress(
        {
            "event": "report",
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "xfail": bool(getattr(report, "wasxfail", "")),
            "duration": float(getattr(report, "duration", 0.0) or 0.0),
            "message": (report.longreprtext or "")[:2000] if report.failed else "",
        }
    )


def pytest_collectreport(report: Any) -> None:
    """Collection errors (a syntax error in imported code) are results too."""
    if report.failed:
        _progress(
            {
                "event": "report",
                "nodeid": report.nodeid,
                "when": "collect",
                "outcome": "failed",
                "xfail": False,
                "duration": 0.0,
                "message": (report.longreprtext or "")[:2000],
            }
        )


_boot()
