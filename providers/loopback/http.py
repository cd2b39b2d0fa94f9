"""The HTTP side of the loopback server: a threading server whose handler checks each
request as a real provider would, then answers from the script or by default."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import select
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from providers.loopback.bodies import (
    _LLAMA_CPP_SCHEMA_ERROR,
    _completion_default,
    _count_words,
    _error_body,
    _last_user_text,
    _message_text,
    _model_obj,
    _prompt_text,
    _scripted_error_body,
)
from providers.loopback.records import Reply, RequestRecord
from providers.loopback.schema_example import example_for_schema

if TYPE_CHECKING:
    from providers.loopback.provider import LoopbackProvider

logger = logging.getLogger(__name__)

# How often a waiting handler looks at its socket: small enough that a client giving up is
# noticed within a few milliseconds, large enough not to spin a core.
_POLL_INTERVAL = 0.005
# How long stop() waits for handler threads; they are unblocked first, so this is a safety net.
_JOIN_TIMEOUT = 5.0
_MALFORMED_BODY = b'{"id": "x", "choices": ['
_PIECE_RE = re.compile(r"\S+\s*|\s+")
_CONNECTION_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


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
