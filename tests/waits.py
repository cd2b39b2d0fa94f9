"""Waiting for something to happen, never for a fixed time.

A test that sleeps and then asserts is either slow (the sleep is long enough for a loaded
machine) or flaky (it is not). These poll a condition until it holds, return at once when it
does, and past the deadline fail saying what was awaited (and, with `diag`, what was seen).
`wait_until` blocks (threads, subprocesses, plain tests); `async_wait_until` yields to the
event loop between polls (async tests, where the awaited thing may be this loop's own work),
and its predicate may be a coroutine function (a request to the server under test).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


def _timed_out(timeout: float, what: str, diag: Callable[[], Any] | None) -> AssertionError:
    seen = f"\n{diag()}" if diag is not None else ""
    return AssertionError(f"timed out after {timeout:g}s waiting for {what}{seen}")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10,
    what: str = "the condition",
    diag: Callable[[], Any] | None = None,
    *,
    interval: float = 0.05,
) -> T:
    """`predicate()`'s first truthy value, polled every `interval` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, diag)
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10,
    what: str = "the condition",
    diag: Callable[[], Any] | None = None,
    *,
    interval: float = 0.05,
) -> T:
    """`wait_until` for async tests: the event loop runs between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, diag)
        await anyio.sleep(interval)
