"""`council complete FILE:LINE:COL`: one inline completion from the terminal.

The same completer, settings and backends as the language server. The differences are those of
a one-shot command: the specialist is loaded before completing (a request never arrives
"too early"), the request is invoked (multi-line allowed) unless `--automatic` is given, and
LINE and COL are 1-based, as compilers print them (COL counts characters; the end of a line
is its length + 1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from council.completion.backends import CancelToken, SpecialistBackend, build_backend, fixed_router
from council.completion.completer import Completer, InlineAnswer, InlineRequest
from providers.base import Provider
from providers.router import Router
from providers.settings import Settings


class LocationError(ValueError):
    """A FILE:LINE:COL that does not name a place in a readable file."""


@dataclass(frozen=True)
class Location:
    path: Path
    line: int  # 1-based
    column: int  # 1-based, in characters


def parse_location(spec: str) -> Location:
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise LocationError(f"expected FILE:LINE:COL (1-based), got {spec!r}")
    try:
        line, column = int(parts[1]), int(parts[2])
    except ValueError:
        raise LocationError(f"LINE and COL must be numbers in {spec!r}") from None
    if line < 1 or column < 1:
        raise LocationError(f"LINE and COL are 1-based, got {line}:{column}")
    return Location(Path(parts[0]), line, column)


def offset_of(text: str, line: int, column: int) -> int:
    """The code-point offset of 1-based (line, column); the column may be the line's end."""
    lines = text.split("\n")
    if line > len(lines):
        raise LocationError(f"line {line} is past the end of the file ({len(lines)} lines)")
    length = len(lines[line - 1].rstrip("\r"))
    if column > length + 1:
        raise LocationError(f"column {column} is past the end of line {line} ({length} chars)")
    return sum(len(x) + 1 for x in lines[: line - 1]) + column - 1


@dataclass
class Outcome:
    answer: InlineAnswer
    load_ms: float


async def complete_at(
    settings: Settings,
    location: Location,
    *,
    invoked: bool = True,
    workspace: Path | None = None,
    env: dict[str, str] | None = None,
) -> Outcome:
    try:
        text = location.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LocationError(f"cannot read {location.path}: {exc}") from None
    offset = offset_of(text, location.line, location.column)
    providers: dict[str, Provider] = {}
    if settings.completion.backend != "specialist":
        from providers.registry import build_providers  # the openai SDK: only when needed

        providers = build_providers(settings, env=env)
    router = Router(settings, providers, workspace=workspace)
    backend = build_backend(settings.completion, lambda: fixed_router(router))
    completer = Completer(settings.completion, backend)
    started = time.perf_counter()
    try:
        if isinstance(backend, SpecialistBackend) and settings.completion.enabled:
            backend.start()
            await backend.loaded()
        load_ms = (time.perf_counter() - started) * 1000
        request = InlineRequest(
            text=text, offset=offset, invoked=invoked, path=str(location.path.resolve())
        )
        answer = await completer.complete(request, CancelToken())
    finally:
        await backend.aclose()
        for provider in providers.values():
            await provider.aclose()
    return Outcome(answer, load_ms)
