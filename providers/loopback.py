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

import argparse
import contextlib
import copy
import itertools
import json
import logging
import math
import re
import select
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "LoopbackProvider",
    "Reply",
    "RequestRecord",
    "example_for_schema",
    "main",
]

logger = logging.getLogger(__name__)

# How often a waiting handler looks at its socket: small enough that a client giving up is
# noticed within a few milliseconds, large enough not to spin a core.
_POLL_INTERVAL = 0.005
# How long stop() waits for handler threads; they are unblocked first, so this is a safety net.
_JOIN_TIMEOUT = 5.0
_MALFORMED_BODY = b'{"id": "x", "choices": ['
_PIECE_RE = re.compile(r"\S+\s*|\s+")
_CONNECTION_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


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


class _ConnectionGone(Exception):
    """Unwinds a handler whose connection must not be written to any more."""


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that can abort its live connections, so stop() never hangs.

    Keep-alive handler threads sit in ``readline`` until the client closes; the stdlib would
    join them forever on ``server_close``. We track sockets and threads ourselves, shut the
    sockets down to unblock the threads, and join with a timeout.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], provider: LoopbackProvider) -> None:
        self.provider = provider
        self._conn_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._handler_threads: list[threading.Thread] = []
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"loopback-conn-{client_address[1]}",
            daemon=True,
        )
        with self._conn_lock:
            self._conns.add(request)
            self._handler_threads = [t for t in self._handler_threads if t.is_alive()]
            self._handler_threads.append(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            logger.debug("loopback connection %s ended: %r", client_address, exc)
        else:
            logger.exception("loopback handler failed for %s", client_address)

    def abort_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._conn_lock:
            threads = list(self._handler_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("loopback handler thread %s did not exit", thread.name)


class _Handler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive so clients' connection pools behave as in production."""

    protocol_version = "HTTP/1.1"
    server_version = "LoopbackProvider/1.0"
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms on Linux) and every request looks 40 ms slower.
    disable_nagle_algorithm = True
    server: _Server
    _record: RequestRecord | None = None

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    # -- plumbing ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        provider = self.server.provider
        started = time.perf_counter()
        record = RequestRecord(
            method=self.command,
            path=urlsplit(self.path).path,
            model=None,
            body=None,
            headers={k.lower(): v for k, v in self.headers.items()},
            started=started,
        )
        self._record = record
        provider._add_record(record)
        try:
            self._route(record)
        except _ConnectionGone:
            self.close_connection = True
        except _CONNECTION_ERRORS as exc:
            logger.debug("loopback client went away: %r", exc)
            if record.client_disconnected_at is None:
                record.client_disconnected_at = time.perf_counter()
            self.close_connection = True
        finally:
            now = time.perf_counter()
            record.server_time = now - started
            record.finished = now

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)

    def _write_chunk(self, data: bytes) -> None:
        self._write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")

    def _start_response(
        self, status: int, content_type: str, extra: dict[str, str], length: int | None
    ) -> None:
        assert self._record is not None
        self._record.status = status
        self.send_response(status)
        if not any(k.lower() == "content-type" for k in extra):
            self.send_header("Content-Type", content_type)
        for name, value in extra.items():
            if name.lower() not in ("content-length", "transfer-encoding"):
                self.send_header(name, value)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_raw(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        self._start_response(status, content_type, extra or {}, len(body))
        self._write(body)

    def _send_json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode("utf-8"), "application/json", extra)

    def _send_error(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        self._send_json(status, _error_body(message, type_, param, code), extra)

    def _wait(self, seconds: float) -> None:
        """Sleep, but notice within ~5 ms if the client hangs up (or the server stops).

        A readable socket with nothing to peek means EOF: the client closed. Real providers keep
        generating in that case; we abandon the request so tests can measure cancellation.
        """
        assert self._record is not None
        deadline = time.perf_counter() + seconds
        sock = self.connection
        stopping = self.server.provider._stopping
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            if stopping.is_set():
                raise _ConnectionGone("server stopping")
            try:
                readable, _, _ = select.select([sock], [], [], min(_POLL_INTERVAL, remaining))
                peeked = sock.recv(1, socket.MSG_PEEK) if readable else None
            except BlockingIOError:
                continue
            except (OSError, ValueError):
                peeked = b""
            if peeked is None:
                continue
            if not peeked:
                self._record.client_disconnected_at = time.perf_counter()
                logger.debug("loopback client disconnected while we waited")
                raise _ConnectionGone("client disconnected")
            # The client pipelined more bytes; they are not a hang-up. Avoid spinning on them.
            time.sleep(min(_POLL_INTERVAL, remaining))

    def _reset(self) -> None:
        """Close with SO_LINGER 0 so the kernel sends RST: the client sees a connection reset.

        ``detach`` hands us the fd regardless of the buffered reader's reference on the socket
        object, and leaves that object at fd -1 so nothing later writes to a reused fd.
        """
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        socket.close(sock.detach())
        self.close_connection = True

    def _truncate(self) -> None:
        """Cut the connection mid-body (FIN, no terminator) so the client sees a short read."""
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    # -- protocol ---------------------------------------------------------------------------

    def _route(self, record: RequestRecord) -> None:
        provider = self.server.provider
        raw = self._read_body()
        path = record.path.rstrip("/") or "/"
        try:
            body: Any = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            body, body_ok = None, False
        else:
            body_ok = raw != b""
        # Recorded before any check, so even refused requests show what the client sent.
        record.body = body
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            record.model = body["model"]
        if isinstance(body, dict) and path == "/v1/completions":
            record.canary = "13, 14, 15, 16]" in _prompt_text(body.get("prompt")) + str(
                body.get("suffix") or ""
            )

        key = provider.require_api_key
        if key is not None:
            auth = record.headers.get("authorization", "")
            scheme, _, presented = auth.partition(" ")
            if scheme.lower() != "bearer" or presented.strip() != key:
                # Deliberately echoes the presented key, like OpenAI: proves callers redact it.
                shown = presented.strip() if scheme.lower() == "bearer" else auth
                self._send_error(
                    401, f"Incorrect API key provided: {shown}", code="invalid_api_key"
                )
                return

        if self.command == "GET" and path == "/v1/models":
            self._send_json(
                200, {"object": "list", "data": [_model_obj(m) for m in provider.models]}
            )
            return
        if self.command == "GET" and path.startswith("/v1/models/"):
            model_id = path[len("/v1/models/") :]
            if model_id in provider.models:
                self._send_json(200, _model_obj(model_id))
            else:
                self._send_model_not_found(model_id)
            return
        if self.command != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            self._send_error(404, f"Unknown request URL: {self.command} {record.path}")
            return

        if not body_ok:
            self._send_error(400, "We could not parse the JSON body of your request.")
            return
        if not isinstance(body, dict):
            self._send_error(400, "The request body must be a JSON object.")
            return
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._send_error(400, "you must provide a model parameter", param="model")
            return
        if model not in provider.models:
            self._send_model_not_found(model)
            return

        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = (
            stream and isinstance(options, dict) and options.get("include_usage") is True
        )
        chat = path == "/v1/chat/completions"
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                self._send_error(400, "'messages' is a required property", param="messages")
                return
            default = "loopback reply to: " + _last_user_text(messages)[:200]
            fmt = body.get("response_format")
            fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
            if fmt_type == "json_schema":
                if not provider.supports_json_schema or provider.like == "llama-cpp-python":
                    if provider.like == "llama-cpp-python":
                        self._send_error(500, _LLAMA_CPP_SCHEMA_ERROR)
                    else:
                        self._send_error(
                            400,
                            "response_format json_schema is not supported",
                            param="response_format",
                        )
                    return
                spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
                schema = spec.get("schema") if isinstance(spec, dict) else None
                default = json.dumps(example_for_schema(schema if isinstance(schema, dict) else {}))
            elif fmt_type == "json_object":
                if not provider.supports_json_object:
                    self._send_error(
                        400, "response_format json_object is not supported", param="response_format"
                    )
                    return
                schema = fmt.get("schema") if isinstance(fmt, dict) else None
                default = (
                    json.dumps(example_for_schema(schema)) if isinstance(schema, dict) else "{}"
                )
            prompt_words = sum(_count_words(_message_text(m)) for m in messages)
        else:
            suffix = body.get("suffix")
            if suffix is not None and not provider.supports_suffix:
                self._send_error(400, "suffix is not supported for this model", param="suffix")
                return
            default = _completion_default(provider, _prompt_text(body.get("prompt")), suffix)
            prompt_words = _count_words(_prompt_text(body.get("prompt"))) + _count_words(
                suffix if isinstance(suffix, str) else ""
            )

        if provider.like == "llama-cpp-python":
            include_usage = False
        asked = body.get("max_tokens")
        asked = asked if isinstance(asked, int) else 16
        if provider.context is not None and prompt_words + asked > provider.context:
            self._send_error(
                400,
                f"This model's maximum context length is {provider.context} tokens. However, "
                f"you requested {prompt_words + asked} tokens ({prompt_words} in the messages, "
                f"{asked} in the completion). Please reduce the length of the messages or "
                "completion.",
                code="context_length_exceeded",
            )
            return

        reply = None
        canary = record.canary
        if canary:  # the FIM canary (providers.quirks) is answered by the "model" itself,
            pass  # as a real server would, never from scripted replies
        elif provider.responder is not None:
            try:
                reply = provider.responder(record)
            except Exception:
                logger.exception("loopback responder failed")
                reply = Reply(status=500)
        if reply is None and not canary:
            reply = provider._next_reply(model)
        record.reply = reply
        self._answer(
            chat=chat,
            model=model,
            stream=stream,
            include_usage=include_usage,
            default=default,
            prompt_words=prompt_words,
            reply=reply,
        )

    def _send_model_not_found(self, model: str) -> None:
        self._send_error(
            404,
            f"model '{model}' not found",
            param="model",
            code="model_not_found",
        )

    def _answer(
        self,
        *,
        chat: bool,
        model: str,
        stream: bool,
        include_usage: bool,
        default: str,
        prompt_words: int,
        reply: Reply | None,
    ) -> None:
        provider = self.server.provider
        extra = dict(reply.headers) if reply is not None else {}
        if reply is not None:
            if reply.delay > 0:
                self._wait(reply.delay)
            if reply.reset:
                self._reset()
                return
            if reply.status != 200:
                if reply.body is not None:
                    payload = reply.body.encode("utf-8")
                else:
                    payload = json.dumps(_scripted_error_body(reply.status)).encode("utf-8")
                self._send_raw(reply.status, payload, "application/json", extra)
                return
            if reply.malformed:
                if stream:
                    self._send_malformed_stream(extra)
                else:
                    self._send_raw(200, _MALFORMED_BODY, "application/json", extra)
                return
            if reply.body is not None:
                content_type = "text/event-stream" if stream else "application/json"
                self._send_raw(200, reply.body.encode("utf-8"), content_type, extra)
                return

        content = reply.content if reply is not None and reply.content is not None else default
        if reply is not None and reply.usage is not None:
            prompt_tokens, completion_tokens = reply.usage
        else:
            prompt_tokens, completion_tokens = max(1, prompt_words), max(1, _count_words(content))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        ident = f"{'chatcmpl' if chat else 'cmpl'}-loopback-{provider._next_id()}"
        created = int(time.time())
        if not stream:
            choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": "stop"}
            if chat:
                choice["message"] = {"role": "assistant", "content": content, "refusal": None}
            else:
                choice["text"] = content
            self._send_json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion" if chat else "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                },
                extra,
            )
            return
        self._stream(
            chat=chat,
            ident=ident,
            created=created,
            model=model,
            content=content,
            usage=usage if include_usage else None,
            extra=extra,
            truncate_after=reply.truncate_after if reply is not None else None,
        )

    def _stream(
        self,
        *,
        chat: bool,
        ident: str,
        created: int,
        model: str,
        content: str,
        usage: dict[str, int] | None,
        extra: dict[str, str],
        truncate_after: int | None,
    ) -> None:
        chunk_delay = self.server.provider.chunk_delay
        obj = "chat.completion.chunk" if chat else "text_completion"

        def event(choices: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "id": ident,
                "object": obj,
                "created": created,
                "model": model,
                "choices": choices,
            }
            if usage is not None:
                payload["usage"] = None
            payload.update(more)
            return payload

        def piece_choice(index: int, piece: str) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {"content": piece}
                if index == 0:
                    delta = {"role": "assistant", "content": piece}
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            return {"index": 0, "text": piece, "logprobs": None, "finish_reason": None}

        pieces = _PIECE_RE.findall(content) or [""]
        if chat:
            final = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
        else:
            final = {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}
        events = [event([piece_choice(i, p)]) for i, p in enumerate(pieces)]
        events.append(event([final]))
        if usage is not None:
            events.append(event([], usage=usage))

        self._start_response(200, "text/event-stream", extra, None)
        for index, payload in enumerate(events):
            # Cut after `truncate_after` content chunks, and never send the finish chunk.
            if truncate_after is not None and index >= min(truncate_after, len(pieces)):
                self._truncate()
                return
            if index > 0 and chunk_delay > 0:
                self._wait(chunk_delay)
            self._write_chunk(b"data: " + json.dumps(payload).encode("utf-8") + b"\n\n")
        self._write_chunk(b"data: [DONE]\n\n")
        self._write(b"0\r\n\r\n")

    def _send_malformed_stream(self, extra: dict[str, str]) -> None:
        """A stream whose one event is not JSON: SSE clients must fail, not go silent."""
        self._start_response(200, "text/event-stream", extra, None)
        self._write_chunk(b"data: " + _MALFORMED_BODY + b"\n\n")
        self._write_chunk(b"data: [DONE]\n\n")
        self._write(b"0\r\n\r\n")


def _error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _scripted_error_body(status: int) -> dict[str, Any]:
    if status == 429:
        return _error_body(
            "loopback scripted error: HTTP 429 rate limit reached",
            "requests",
            None,
            "rate_limit_exceeded",
        )
    type_ = "server_error" if status >= 500 else "invalid_request_error"
    return _error_body(f"loopback scripted error: HTTP {status}", type_, None, None)


def _model_obj(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "loopback"}


def _message_text(message: Any) -> str:
    """Text of a chat message whose content is a string or a list of typed parts."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(texts)
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text(message)
    return ""


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return " ".join(p if isinstance(p, str) else str(p) for p in prompt)
    return ""


#: what llama-cpp-python 0.3.x answers (HTTP 500) to a json_schema response_format
_LLAMA_CPP_SCHEMA_ERROR = (
    "1 validation error for CreateChatCompletionRequest\nresponse_format\n  Input tag "
    "'json_schema' found using 'type' does not match any of the expected tags: 'text', "
    "'json_object'"
)


def _completion_default(provider: LoopbackProvider, prompt: str, suffix: Any) -> str:
    """The unscripted answer to /v1/completions: ``pass`` for FIM, the canary's ``12`` when
    this model honours the way it was asked (``suffix``, or its raw FIM family), junk when
    FIM is scrambled."""
    from providers.fim_formats import FORMATS
    from providers.quirks import CANARY_PREFIX, CANARY_SUFFIX

    if suffix is not None:
        if provider.fim == "scrambled":
            return '"""\nThis module is a list of'  # what llama-cpp-python answered
        return "12" if suffix == CANARY_SUFFIX and prompt.endswith(CANARY_PREFIX) else "pass"
    fmt = FORMATS.get(provider.raw_fim or "")
    if fmt is not None and prompt == fmt.build(CANARY_PREFIX, CANARY_SUFFIX):
        return "12"
    return "loopback completion"


def _count_words(text: str) -> int:
    return len(text.split())


class LoopbackProvider:
    """An in-process OpenAI-compatible server with scripted replies and a request log.

    Use as a context manager (``with LoopbackProvider() as lp: client(base_url=lp.base_url)``)
    or call :meth:`start`/:meth:`stop`. Thread-safe: handlers run on their own threads while
    tests script replies and read records from the main thread.
    """

    def __init__(
        self,
        *,
        models: Sequence[str] = ("loopback-chat",),
        supports_suffix: bool = True,
        supports_json_schema: bool = True,
        chunk_delay: float = 0.0,
        require_api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        responder: Callable[[RequestRecord], Reply | None] | None = None,
        like: str = "openai",
        context: int | None = None,
        supports_json_object: bool = True,
        fim: str = "honoured",
        raw_fim: str | None = None,
    ) -> None:
        if isinstance(models, str):
            models = (models,)
        self.models: tuple[str, ...] = tuple(models)
        self.supports_suffix = supports_suffix
        self.supports_json_schema = supports_json_schema
        self.supports_json_object = supports_json_object
        if fim not in ("honoured", "scrambled"):
            raise ValueError(f"fim must be 'honoured' or 'scrambled', not {fim!r}")
        #: "scrambled": `suffix` is accepted but the infill is junk (llama-cpp-python with a
        #: model whose sentinels are not the ones it hard-codes); "honoured" answers the FIM
        #: canary of providers.quirks right
        self.fim = fim
        #: the model family (providers.fim_formats) whose raw FIM prompt this model reads
        self.raw_fim = raw_fim
        if like not in ("openai", "llama-cpp-python"):
            raise ValueError(f"like must be 'openai' or 'llama-cpp-python', not {like!r}")
        #: whose quirks to reproduce; "llama-cpp-python" (0.3.x, as measured against the real
        #: server): a json_schema response_format is refused with HTTP 500 (a validation
        #: error naming response_format), json_object with a "schema" is enforced, and
        #: streams carry no usage
        self.like = like
        #: the context window in tokens (words here): a request whose prompt plus max_tokens
        #: exceeds it is refused with llama-cpp-python's 400 "maximum context length"
        self.context = context
        self.chunk_delay = chunk_delay
        self.require_api_key = require_api_key
        self.responder = responder
        self._host = host
        self._requested_port = port
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._scripts: dict[str | None, deque[Reply]] = {}
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> str:
        """Bind and serve on a daemon thread; returns ``base_url``. Idempotent while running."""
        if self._server is not None:
            return self.base_url
        self._stopping.clear()
        server = _Server((self._host, self._requested_port), self)
        self._port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"loopback-provider-{self._port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        logger.info("loopback provider listening on %s", self.base_url)
        return self.base_url

    def stop(self) -> None:
        """Stop accepting, cut live connections, and join every thread (bounded wait)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.abort_connections()
        server.server_close()
        server.join_handlers(_JOIN_TIMEOUT)
        if thread is not None:
            thread.join(_JOIN_TIMEOUT)
        self._server = self._thread = None
        logger.info("loopback provider on port %s stopped", self._port)

    def __enter__(self) -> LoopbackProvider:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LoopbackProvider has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self._host in ("", "0.0.0.0") else self._host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    # -- scripting and inspection -----------------------------------------------------------

    def script(self, *replies: Reply, model: str | None = None) -> None:
        """Queue replies (FIFO). Requests for ``model`` use its queue first, then the shared one."""
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(replies)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log (records are live objects until ``finished`` is set),
        without the client's FIM canaries, which are in :attr:`canaries`."""
        with self._lock:
            return [r for r in self._records if not r.canary]

    @property
    def canaries(self) -> list[RequestRecord]:
        """The FIM canary requests the client made to learn how FIM works here."""
        with self._lock:
            return [r for r in self._records if r.canary]

    def clear(self) -> None:
        """Forget recorded requests and any scripted replies not yet used."""
        with self._lock:
            self._records.clear()
            self._scripts.clear()

    def wait_for(
        self, predicate: Callable[[RequestRecord], bool], timeout: float = 5.0
    ) -> RequestRecord:
        """Poll the log until a record matches; handlers finish asynchronously to the client."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.requests:
                if predicate(record):
                    return record
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no loopback request matched within {timeout}s ({len(self.requests)} recorded)"
                )
            time.sleep(_POLL_INTERVAL)

    # -- used by handlers -------------------------------------------------------------------

    def _add_record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _next_reply(self, model: str | None) -> Reply | None:
        with self._lock:
            for key in (model, None):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        return None

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)


# -- JSON schema examples ---------------------------------------------------------------------

_MAX_DEPTH = 64
_FORMAT_EXAMPLES: dict[str, str] = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00",
    "duration": "PT0S",
    "email": "a@example.com",
    "uri": "http://example.com/",
    "url": "http://example.com/",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}


def example_for_schema(schema: dict[str, Any]) -> Any:
    """Return a minimal instance of ``schema`` (JSON Schema as pydantic v2 emits it).

    Why: a provider that honours ``response_format: json_schema`` must answer with JSON the
    caller can validate; the loopback cannot generate, so it builds the smallest valid value.
    Only required properties are filled; ``const``/``default``/``enum`` win over ``type``.
    ``pattern`` and ``uniqueItems`` are not honoured.
    """
    return _example(schema, schema, 0)


def _resolve_ref(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    node = root
    pointer = ref[1:]
    for raw in pointer.split("/")[1:] if pointer else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ValueError(f"unresolvable $ref {ref!r}") from exc
    return node


def _deref(schema: Any, root: Any) -> Any:
    """Follow ``$ref`` chains; sibling keywords (``default``, ``description``) override."""
    for _ in range(_MAX_DEPTH):
        if not isinstance(schema, dict) or "$ref" not in schema:
            return schema
        target = _resolve_ref(schema["$ref"], root)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **siblings} if isinstance(target, dict) else target
    raise ValueError("$ref chain too deep")


def _is_null_schema(schema: Any, root: Any) -> bool:
    schema = _deref(schema, root)
    return isinstance(schema, dict) and (
        schema.get("type") == "null" or ("const" in schema and schema["const"] is None)
    )


def _merge_all_of(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in schema["allOf"]:
        sub = _deref(sub, root)
        if not isinstance(sub, dict):
            continue
        if "allOf" in sub:
            sub = _merge_all_of(sub, root)
        for key, value in sub.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                existing = list(merged.get("required", []))
                merged["required"] = existing + [r for r in value if r not in existing]
            else:
                merged.setdefault(key, value)
    return merged


def _example(schema: Any, root: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH or not isinstance(schema, dict):
        return None
    schema = _deref(schema, root)
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return copy.deepcopy(schema["const"])
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return copy.deepcopy(enum[0])
    if isinstance(schema.get("allOf"), list):
        return _example(_merge_all_of(schema, root), root, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            for option in options:
                if not _is_null_schema(option, root):
                    return _example(option, root, depth + 1)
            return None

    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [t for t in kind if t != "null"]
        kind = non_null[0] if non_null else "null"
    if kind is None:
        if "properties" in schema or "required" in schema:
            kind = "object"
        elif "items" in schema or "prefixItems" in schema:
            kind = "array"
    if kind == "object":
        return _example_object(schema, root, depth)
    if kind == "array":
        return _example_array(schema, root, depth)
    if kind == "string":
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMAT_EXAMPLES:
            return _FORMAT_EXAMPLES[fmt]
        return "a" * int(schema.get("minLength", 0))
    if kind == "integer":
        return _example_integer(schema)
    if kind == "number":
        return _example_number(schema)
    if kind == "boolean":
        return False
    return None


def _example_object(schema: dict[str, Any], root: Any, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    extra = schema.get("additionalProperties")
    out: dict[str, Any] = {}
    for name in schema.get("required") or []:
        sub = properties.get(name, extra if isinstance(extra, dict) else {})
        out[name] = _example(sub, root, depth + 1)
    return out


def _example_array(schema: dict[str, Any], root: Any, depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    out = [_example(p, root, depth + 1) for p in prefix] if isinstance(prefix, list) else []
    items = schema.get("items")
    while len(out) < int(schema.get("minItems", 0)):
        out.append(_example(items if isinstance(items, dict) else {}, root, depth + 1))
    return out


def _upper_bound(schema: dict[str, Any]) -> float | None:
    bounds: list[float] = []
    if isinstance(schema.get("maximum"), int | float):
        bounds.append(schema["maximum"])
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        bounds.append(schema["exclusiveMaximum"])
    return min(bounds) if bounds else None


def _example_integer(schema: dict[str, Any]) -> int:
    lows: list[int] = []
    if isinstance(schema.get("minimum"), int | float):
        lows.append(math.ceil(schema["minimum"]))
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        lows.append(math.floor(schema["exclusiveMinimum"]) + 1)
    if lows:
        value = max(lows)
    else:
        value = 0
        if isinstance(schema.get("maximum"), int | float) and schema["maximum"] < 0:
            value = math.floor(schema["maximum"])
        if isinstance(schema.get("exclusiveMaximum"), int | float):
            value = min(value, math.ceil(schema["exclusiveMaximum"]) - 1)
    step = schema.get("multipleOf")
    if isinstance(step, int) and step > 0 and value % step:
        value = math.ceil(value / step) * step
    return value


def _example_number(schema: dict[str, Any]) -> float | int:
    upper = _upper_bound(schema)
    minimum = schema.get("minimum")
    exclusive = schema.get("exclusiveMinimum")
    if isinstance(exclusive, int | float) and not isinstance(exclusive, bool):
        low = max(exclusive, minimum) if isinstance(minimum, int | float) else exclusive
        value = low + 1
        if upper is not None and value >= upper:
            value = (low + upper) / 2
        return value
    if isinstance(minimum, int | float) and not isinstance(minimum, bool):
        return minimum
    if upper is not None and upper <= 0:
        if isinstance(schema.get("exclusiveMaximum"), int | float):
            return upper - 1
        return upper
    return 0


# -- CLI ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run a loopback provider in the foreground (for the demo and manual poking)."""
    parser = argparse.ArgumentParser(
        prog="python -m providers.loopback",
        description="Scripted OpenAI-compatible server on 127.0.0.1 (stands in for providers).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--models", default="loopback-chat", help="comma-separated model ids")
    parser.add_argument("--no-suffix", action="store_true", help="refuse FIM `suffix`")
    parser.add_argument("--no-json-schema", action="store_true", help="refuse json_schema")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--api-key", default=None, help="require this bearer token")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models:
        parser.error("--models needs at least one model id")
    provider = LoopbackProvider(
        models=models,
        supports_suffix=not args.no_suffix,
        supports_json_schema=not args.no_json_schema,
        chunk_delay=args.chunk_delay,
        require_api_key=args.api_key,
        host=args.host,
        port=args.port,
    )
    print(provider.start(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        provider.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
