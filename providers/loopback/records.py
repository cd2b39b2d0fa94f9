"""What a scripted reply is and what the server recorded of each request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    """One scripted answer to one request. Fields combine.

    ``delay`` happens first, then ``reset`` (which wins over everything else), then a non-200
    ``status`` (sent with ``body`` or a default OpenAI-style error), then ``malformed``, then a
    verbatim 200 ``body``, then the normal response shape using ``content``/``usage``.
    ``headers`` are added to any response that is sent (a ``Content-Type`` here replaces ours).
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    content: str | None = None
    delay: float = 0.0
    reset: bool = False
    truncate_after: int | None = None
    malformed: bool = False
    usage: tuple[int, int] | None = None


@dataclass
class RequestRecord:
    """What the server saw for one request, and what it did about it.

    Handler threads fill fields in while the request is in flight; ``finished`` is written last,
    so once it is not None every other field is final.
    """

    method: str
    path: str
    model: str | None
    body: Any
    headers: dict[str, str]
    started: float
    finished: float | None = None
    status: int | None = None
    server_time: float | None = None
    client_disconnected_at: float | None = None
    reply: Reply | None = None
    #: a FIM canary (providers.quirks): answered by the "model", listed in ``canaries``
    canary: bool = False
