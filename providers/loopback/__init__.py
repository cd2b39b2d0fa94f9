"""A scripted, OpenAI-compatible HTTP server on 127.0.0.1 that stands in for model providers.

Why this exists: the council talks to Ollama, vLLM and OpenAI over real HTTP, and the failures
that decide routing (429 with Retry-After, 5xx, connection resets, streams cut mid-body, slow
first bytes, clients giving up) live in the transport. Mocking the client library would only
test our assumptions about it; a real socket server exercises the real `openai`/`httpx2` code
paths. The test suite, ``council bench router`` and the demo all use this module.

It is stdlib-only (``http.server`` in a daemon thread) so it starts in milliseconds anywhere,
with no model and no network. Behaviour is deterministic by default and scriptable per request
through :class:`Reply` queues, and every request is recorded as a :class:`RequestRecord` so
tests can assert on what the client actually sent and when it hung up.

Order of checks for each request (a scripted reply is only consumed by a request that passes
them, exactly as a real provider would reject the request before "generating"): API key ->
path -> JSON body -> model known -> capability (``suffix``, ``json_schema``) -> ``responder``
-> scripted reply -> default answer.

The optional ``responder`` is a function of the request (its :class:`RequestRecord`, body
parsed) that returns a :class:`Reply` or None to fall through to the queues. It exists for
stand-ins that must answer from the request's content rather than in a fixed order, such as
the simulated council team of ``council bench humaneval --simulate`` (``council/simteam.py``),
whose concurrent requests arrive in no fixed order. It runs on the handler's thread, so it
must be thread-safe; an exception in it is answered with HTTP 500.
"""

from __future__ import annotations

from providers.loopback.cli import main
from providers.loopback.provider import LoopbackProvider
from providers.loopback.records import Reply, RequestRecord
from providers.loopback.schema_example import example_for_schema

__all__ = [
    "LoopbackProvider",
    "Reply",
    "RequestRecord",
    "example_for_schema",
    "main",
]
