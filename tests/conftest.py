"""Shared fixtures: real loopback provider servers and settings built around them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from providers.loopback import LoopbackProvider
from providers.settings import Settings


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
