"""Shared fixtures: real loopback provider servers and settings built around them."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from providers.loopback import LoopbackProvider
from providers.settings import Settings


@pytest.fixture(autouse=True)
def _server_messages_are_valid() -> Iterator[None]:
    """Fail a test in which `council lsp` sent a message that is not valid LSP (see
    `tests.lsp_wire`; only tests that talk to the server import it)."""
    wire = sys.modules.get("tests.lsp_wire")
    if wire is not None:
        wire.PROBLEMS.clear()
    yield
    wire = sys.modules.get("tests.lsp_wire")
    if wire is not None and wire.PROBLEMS:
        problems, wire.PROBLEMS[:] = list(wire.PROBLEMS), []
        pytest.fail("invalid LSP messages from the server:\n" + "\n".join(problems[:10]))


@pytest.fixture(autouse=True)
def _logging_is_restored() -> Iterator[None]:
    """`slm_council.main.main()` run in-process (the bench tests) installs the CLI's stderr
    handler on the root logger, bound to that test's captured stream: later tests then log
    into a closed file, and caplog saw mangled records. Every test leaves logging as found."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def loopback() -> Iterator[LoopbackProvider]:
    with LoopbackProvider(models=("m1", "m2")) as server:
        yield server


@pytest.fixture
def loopback2() -> Iterator[LoopbackProvider]:
    with LoopbackProvider(models=("m1", "m2")) as server:
        yield server


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(**sections: Any) -> Settings:
    """Settings from plain dicts, failing loudly: tests must not rely on silent fallbacks."""
    return Settings.model_validate(sections)
