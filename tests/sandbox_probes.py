"""Looking at sandbox runs from outside: their processes, their directories, their traffic.

A run's identity (its COUNCIL_SANDBOX_ID token, its pid and its directory) comes from the
`council.sandbox` debug log record, so leftovers can be looked for precisely without being
confused by other sandbox runs on the same machine; the tests that use `sandbox_runs` turn
that logger up to DEBUG.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from tests.waits import wait_until


def sandbox_processes() -> list[int]:
    """Every live process started by any sandbox run (it carries COUNCIL_SANDBOX=)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"COUNCIL_SANDBOX=" in environ:
            found.append(int(pid))
    return found


def sandbox_runs(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, Path]]:
    """(token, pid, directory) of every sandbox run logged so far in this test."""
    found = []
    for record in caplog.records:
        if record.name == "council.sandbox" and record.msg.startswith("sandbox run"):
            token, pid, root = record.args  # type: ignore[misc]
            found.append((str(token), int(pid), Path(root)))
    return found


def alive_with_token(token: str) -> list[int]:
    needle = f"COUNCIL_SANDBOX_ID={token}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def live_group_members(pgid: int) -> list[int]:
    """Members of a process group that are not zombies (a zombie runs nothing; its reaping
    is up to whoever inherited it)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(entry))
    return members


def assert_nothing_left(caplog: pytest.LogCaptureFixture) -> None:
    runs = sandbox_runs(caplog)
    assert runs, "the sandbox did not log its run"
    for token, pid, root in runs:
        assert alive_with_token(token) == []
        assert live_group_members(pid) == []
        assert not root.exists()


class Listener:
    """A TCP listener on loopback in the test process that counts connections."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []  # who connected, in the order accepted
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        return len(self.peers)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except OSError:
                continue
            self.peers.append(peer)
            conn.close()

    def connections_before_now(self, timeout: float = 5) -> int:
        """How many connections arrived before this call, every one of them counted: connect
        once from here and wait until that connection is accepted. The accept queue is
        first in, first out, so anything that connected earlier was accepted before it
        (waiting for nothing to arrive would need a guess at how long is enough)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as probe:
            me = probe.getsockname()
        wait_until(lambda: me in self.peers, timeout, "the listener to accept our own connection")
        return self.peers.index(me)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
